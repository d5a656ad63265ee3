"""What goes into an image: the files sync would send, never keys, credentials or `.env`.

A project directory often holds a `.env`, cloud credentials or a private key next to the
code. Images get pushed to registries, so `docker build`, `run --docker` and the generated
Dockerfile's `COPY . /workspace` must not bake those in (issue 17), with the project's own
Dockerfile as much as with a generated one. Runs against the real dockerd stand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI

pytestmark = pytest.mark.integration

# Paths the secret rules keep out of every sync, hence out of every build context.
SECRETS = (".env", ".env.local", ".aws/credentials", "id_rsa", ".ssh/id_ed25519", "tls/server.pem")


@pytest.fixture
def leaky(project: Path) -> Path:
    """A project as people keep them: code, data, and secrets lying beside it."""
    for rel in SECRETS:
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text("TOP-SECRET\n")
    (project / "sub").mkdir()
    (project / "sub" / "train.py").write_text("print('training')\n")
    (project / ".gitignore").write_text("scratch/\n")
    (project / "scratch").mkdir()
    (project / "scratch" / "big.bin").write_text("ignored\n")
    (project / "notes").mkdir()
    (project / "notes" / "todo.md").write_text("dockerignored\n")
    (project / ".dockerignore").write_text("notes\n")
    return project


def _files_in(dockerd: Any, image: str, where: str) -> set[str]:
    """Every regular file below ``where`` in ``image``, relative to it."""
    done = dockerd.docker("run", "--rm", "--network", "none", image,
                          "find", where, "-type", "f", "-printf", "%P\\n")  # fmt: skip
    return set(done.stdout.split())


def _assert_no_secrets(files: set[str]) -> None:
    leaked = {f for f in files if f in SECRETS or f.startswith((".aws/", ".ssh/"))}
    assert leaked == set(), f"secrets baked into the image: {sorted(leaked)}"


def test_generated_dockerfile_image_holds_the_code_and_no_secrets(
    cli: CLI, dockerd: Any, leaky: Path
) -> None:
    done = cli("docker", "build", "--base-image", dockerd.base_image, "--json", cwd=leaky)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["generated"] and data["image"] == "proj:latest"
    # The user is told what stayed out, as for a sync.
    assert {".env", ".aws/", "id_rsa", ".ssh/"} <= set(data["excluded_secrets"])
    assert "docker build context: " in done.stderr and "secret-looking" in done.stderr
    files = _files_in(dockerd, "proj:latest", "/workspace")
    _assert_no_secrets(files)
    # Exactly the code sync would send: gitignored and .dockerignored files stay out, and
    # runctl's own Dockerfile and .dockerignore do not end up in the image either.
    assert files == {"pyproject.toml", "hello.py", "pkg/util.py", "sub/train.py", ".gitignore"}
    out = dockerd.docker("run", "--rm", "--network", "none", "proj:latest",
                         "python3", "sub/train.py")  # fmt: skip
    assert out.stdout == "training\n"


def test_own_dockerfile_copying_everything_gets_no_secrets(
    cli: CLI, dockerd: Any, leaky: Path
) -> None:
    (leaky / "Dockerfile").write_text(f"FROM {dockerd.base_image}\nWORKDIR /app\nCOPY . .\n")
    done = cli("docker", "build", "--tag", "mine:1", "--json", cwd=leaky / "sub")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dockerfile"] == str(leaky / "Dockerfile")
    files = _files_in(dockerd, "mine:1", "/app")
    _assert_no_secrets(files)
    assert files == {"Dockerfile", ".dockerignore", ".gitignore", "pyproject.toml", "hello.py",
                     "pkg/util.py", "sub/train.py"}  # fmt: skip
    # An include that names a path brings it in, as it does for sync.
    done = cli("docker", "build", "--tag", "mine:2", "--include", "scratch/", "--include",
               ".env", cwd=leaky)  # fmt: skip
    assert done.returncode == 0, done.stderr
    files = _files_in(dockerd, "mine:2", "/app")
    assert {"scratch/big.bin", ".env"} <= files and "id_rsa" not in files


def test_dockerignore_excluding_the_dockerfile_keeps_it_out_of_the_image(
    cli: CLI, dockerd: Any, leaky: Path
) -> None:
    (leaky / "docker").mkdir()
    (leaky / "docker" / "Dockerfile").write_text(f"FROM {dockerd.base_image}\nCOPY . /app\n")
    (leaky / ".dockerignore").write_text("notes\ndocker\n.dockerignore\n**/*.md\n!README.md\n")
    (leaky / "README.md").write_text("read me\n")
    (leaky / "pkg" / "notes.md").write_text("ignored\n")
    done = cli("docker", "build", "--tag", "ign:1", cwd=leaky)
    assert done.returncode == 0, done.stderr
    files = _files_in(dockerd, "ign:1", "/app")
    assert files == {".gitignore", "pyproject.toml", "hello.py", "pkg/util.py", "sub/train.py",
                     "README.md"}  # fmt: skip


def test_run_docker_builds_its_image_from_the_synced_files_only(
    cli: CLI, dockerd: Any, leaky: Path
) -> None:
    base = cli("config", "set", "--global", "docker.base_image", dockerd.base_image)
    assert base.returncode == 0, base.stderr
    done = cli("run", "--docker", "--wait", "sub/train.py", cwd=leaky)
    assert done.returncode == 0, done.stderr
    assert "training" in cli("logs", done.stdout.split()[-1]).stdout
    files = _files_in(dockerd, "proj:latest", "/workspace")
    _assert_no_secrets(files)
    assert "sub/train.py" in files and "scratch/big.bin" not in files


def test_outside_any_project_docker_build_refuses_instead_of_sending_the_directory(
    cli: CLI, dockerd: Any, tmp_path: Path
) -> None:
    loose = tmp_path / "loose"
    (loose / ".ssh").mkdir(parents=True)
    (loose / ".ssh" / "id_ed25519").write_text("TOP-SECRET\n")
    (loose / "train.py").write_text("print('x')\n")
    done = cli("docker", "build", "--base-image", dockerd.base_image, cwd=loose)
    assert done.returncode == 2, done.stderr
    assert "no project here" in done.stderr and "--project-dir" in done.stderr
    done = cli("docker", "build", "--base-image", dockerd.base_image, "--tag", "loose:1",
               "--project-dir", str(loose), cwd=loose)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert _files_in(dockerd, "loose:1", "/workspace") == {"train.py"}


# Each name is code for its interpreter when read as an option; the file itself is harmless.
# The code prints PWNED built from parts, so the name alone never contains the word.
OPTION_NAMES = {
    "python": ("-cprint('PW'+'NED')#.py", "print('file ran')\n"),
    "bash": ("-cecho${IFS}PW''NED;#.sh", "echo file ran\n"),
}


@pytest.mark.parametrize("kind", sorted(OPTION_NAMES))
def test_script_named_like_an_option_runs_as_a_file_in_a_container(
    cli: CLI, dockerd: Any, project: Path, kind: str
) -> None:
    name, body = OPTION_NAMES[kind]
    (project / name).write_text(body)
    done = cli("run", "--docker-image", dockerd.base_image, "--follow", str(project / name),
               cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "file ran" in done.stdout
    assert "PWNED" not in done.stdout + done.stderr
