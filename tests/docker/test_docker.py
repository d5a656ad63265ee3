"""Images and container jobs against a real dockerd and registry (tests/stands/docker.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, job_id_of, wait_for_log

pytestmark = pytest.mark.integration

WHERE = """\
import os, sys
print("in-container", os.path.exists("/.dockerenv"), os.getcwd(), sys.argv[1:])
print("resume=" + os.environ.get("RUNCTL_RESUME_FROM", ""))
print("secret-set", os.environ.get("MY_TOKEN") == "s3cr3t")
ckpt = os.environ["RUNCTL_CHECKPOINT_DIR"]
step = len(os.listdir(ckpt)) + 1
open(os.path.join(ckpt, "step-%d.pt" % step), "w").write("x")
open(os.path.join(os.environ["RUNCTL_OUTPUT_DIR"], "out.txt"), "w").write("done")
sys.exit(int(os.environ.get("EXIT", "0")))
"""

SLEEPY = """\
import signal, sys, time
if "--stubborn" in sys.argv:
    signal.signal(signal.SIGTERM, lambda *a: print("ignoring SIGTERM", flush=True))
print("started", flush=True)
while True:
    time.sleep(0.2)
"""


@pytest.fixture
def dproject(project: Path) -> Path:
    (project / "sub").mkdir()
    (project / "sub" / "where.py").write_text(WHERE)
    (project / "sub" / "sleepy.py").write_text(SLEEPY)
    return project


def _status(cli: CLI, job: str) -> dict[str, Any]:
    done = cli("status", job, "--json")
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_run_in_container_keeps_job_semantics(cli: CLI, dockerd: Any, dproject: Path) -> None:
    image = dockerd.base_image
    done = cli("run", "--docker-image", image, "--env", "EXIT=3", "--env", "MY_TOKEN=s3cr3t",
               "--wait", "--json", "sub/where.py", "--", "a b", "$HOME; echo x",
               cwd=dproject)  # fmt: skip
    assert done.returncode == 3, done.stderr
    first = json.loads(done.stdout)
    assert first["state"] == "failed" and first["exit_code"] == 3
    log = cli("logs", first["job_id"]).stdout
    # Ran in a container, in the project at /workspace, subdirectory and arguments intact.
    assert "in-container True /workspace ['a b', '$HOME; echo x']" in log
    assert "resume=\n" in log and "secret-set True" in log
    assert (Path(first["checkpoint_dir"]) / "step-1.pt").is_file()
    assert (Path(first["job_dir"]) / "outputs" / "out.txt").read_text() == "done"
    # The secret reached the container by name only, never on the docker command line.
    state = json.loads((Path(first["job_dir"]) / "state.json").read_text())
    command = state["command"]
    assert command[:3] == ["docker", "run", "--rm"] and "s3cr3t" not in " ".join(command)
    assert "--gpus" not in command  # no nvidia-smi on this host
    assert command[command.index(image) + 1 :] == ["python3", "./sub/where.py", "a b",
                                                    "$HOME; echo x"]  # fmt: skip
    # A second run resumes from the checkpoint the first one left.
    again = cli("run", "--docker-image", image, "--wait", "--json", "sub/where.py",
                cwd=dproject)  # fmt: skip
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["state"] == "succeeded"
    resume = f"resume={first['checkpoint_dir']}/step-1.pt"
    assert resume in cli("logs", second["job_id"]).stdout
    assert dockerd.containers() == ""  # --rm: nothing left behind


@pytest.mark.parametrize(("extra", "code"), [((), 143), (("--", "--stubborn"), 137)])
def test_cancel_stops_the_container(
    cli: CLI, dockerd: Any, dproject: Path, extra: tuple[str, ...], code: int
) -> None:
    job = job_id_of(cli("run", "--docker-image", dockerd.base_image, "sub/sleepy.py", *extra,
                        cwd=dproject))  # fmt: skip
    wait_for_log(cli, job, "started")
    assert f"runctl-{job}" in dockerd.docker("ps", "--format", "{{.Names}}").stdout
    # A script ignoring SIGTERM is killed after the grace period, container included.
    done = cli("cancel", job, "--grace", "1")
    assert done.returncode == 0, done.stderr
    status = _status(cli, job)
    assert status["state"] == "cancelled" and status["exit_code"] == code
    assert dockerd.containers() == ""


def test_build_push_project_dockerfile(cli: CLI, dockerd: Any, project: Path) -> None:
    # The Dockerfile is found in the project root although we run from a subdirectory.
    (project / "Dockerfile").write_text("FROM scratch\nCOPY pyproject.toml /proj.toml\n")
    (project / "deep").mkdir()
    done = cli("docker", "build-push", "--tag", "proj:v1", "--registry", dockerd.registry,
               "--json", cwd=project / "deep")  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["dockerfile"] == str(project / "Dockerfile") and not data["generated"]
    assert data["push"]["image"] == f"{dockerd.registry}/proj:v1"
    assert data["push"]["digest"].startswith("sha256:")
    assert "proj" in dockerd.catalog()
    # Pull it back from the registry.
    dockerd.docker("rmi", f"{dockerd.registry}/proj:v1", "proj:v1")
    dockerd.docker("pull", f"{dockerd.registry}/proj:v1")
    # `docker push` of an already built image under another tag.
    done = cli("docker", "push", f"{dockerd.registry}/proj:v1", "--tag", "v2", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["image"] == f"{dockerd.registry}/proj:v2"


def test_build_generated_dockerfile_installs_requirements(
    cli: CLI, dockerd: Any, project: Path
) -> None:
    # No Dockerfile: one is generated from --base-image; requirements.txt is installed at build.
    (project / "requirements.txt").write_text("")
    done = cli("docker", "build", "--base-image", dockerd.base_image, "--json", cwd=project)
    assert done.returncode != 0  # the base image has python3 but no pip
    assert "Error: docker build of proj:latest failed: " in done.stderr
    assert "hint: docker output:" in done.stderr and "No module named pip" in done.stderr
    (project / "requirements.txt").unlink()
    done = cli("docker", "build", "--base-image", dockerd.base_image, "--json", cwd=project)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data == {**data, "image": "proj:latest", "generated": True, "dockerfile": None}
    out = dockerd.docker("run", "--rm", "--network", "host", "proj:latest", "python3",
                         "hello.py", "x")  # fmt: skip
    assert "x" in out.stdout


def test_run_docker_builds_the_project_image(cli: CLI, dockerd: Any, dproject: Path) -> None:
    (dproject / "Dockerfile").write_text(f"FROM {dockerd.base_image}\nENV FROM_IMAGE=yes\n")
    (dproject / "sub" / "env.py").write_text(
        "import os; print('from-image', os.environ['FROM_IMAGE'])\n"
    )
    done = cli("run", "--docker", "--wait", "sub/env.py", cwd=dproject)
    assert done.returncode == 0, done.stderr
    assert "from-image yes" in cli("logs", done.stdout.split()[-1]).stdout
    # A remote host would need the image in a registry.
    done = cli("run", "--docker", "--on", "ssh:nowhere.invalid", "sub/env.py", cwd=dproject)
    assert done.returncode != 0


def test_docker_errors_are_one_line_with_hint(cli: CLI, project: Path, tmp_path: Path) -> None:
    done = cli("docker", "build", cwd=project, env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert done.returncode == 1
    assert "Docker daemon is not reachable" in done.stderr and "hint: start dockerd" in done.stderr
    done = cli("docker", "build", cwd=project, env={"PATH": os.path.dirname(os.__file__)})
    assert "docker is not installed" in done.stderr and "hint:" in done.stderr
    done = cli("docker", "build-push", "--tag", "x:1", cwd=project)
    assert done.returncode == 2 and "where to push?" in done.stderr


def test_bad_gpus_setting_is_a_config_error(cli: CLI, project: Path) -> None:
    refused = cli("config", "set", "--global", "docker.gpus", "some")
    assert refused.returncode == 3 and "auto, all, none" in refused.stderr
    # A hand-edited file with the same value fails the run before anything starts.
    (project / ".runctl.toml").write_text('[docker]\ngpus = "some"\n')
    done = cli("run", "--docker-image", "img:1", "hello.py", cwd=project)
    assert done.returncode == 3 and "docker.gpus" in done.stderr and "some" in done.stderr
    assert json.loads(cli("jobs", "--json").stdout) == []
