"""Container jobs on a remote host: the loopback SSH stand's user reaches the stand's dockerd.

The SSH test user is put in a ``runctl-docker`` group owning the stand's socket (as the
``docker`` group would on a real host); the job's environment carries DOCKER_HOST.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI
from tests.providers.aws.conftest import (  # noqa: F401
    MotoAWS,
    aws_ssh,
    created_id,
    moto_aws,
    moto_endpoint,
)

pytestmark = pytest.mark.integration
GROUP = "runctl-docker"
WHERE = """\
import os, sys
print("in-container", os.path.exists("/.dockerenv"), os.getcwd(), sys.argv[1:], os.getuid())
open(os.path.join(os.environ["RUNCTL_CHECKPOINT_DIR"], "step-1.pt"), "w").write("x")
sys.exit(int(os.environ.get("EXIT", "0")))
"""


@pytest.fixture
def shared_docker(dockerd: Any, sshd: Any) -> Any:
    """Let the SSH stand's user use the docker stand's socket."""
    subprocess.run(["groupadd", "-f", GROUP], check=True, capture_output=True)
    if sshd.user not in grp.getgrnam(GROUP).gr_mem:
        subprocess.run(["usermod", "-aG", GROUP, sshd.user], check=True, capture_output=True)
    os.chmod(dockerd.workdir, 0o711)
    sock = dockerd.host.removeprefix("unix://")
    os.chown(sock, -1, grp.getgrnam(GROUP).gr_gid)
    os.chmod(sock, 0o660)
    return dockerd


@pytest.fixture
def wproject(project: Path) -> Path:
    (project / "sub").mkdir()
    (project / "sub" / "where.py").write_text(WHERE)
    return project


def test_aws_train_docker_image_on_the_host(
    cli: CLI,
    aws_ssh: MotoAWS,  # noqa: F811
    shared_docker: Any,
    sshd: Any,
    wproject: Path,
) -> None:
    iid = created_id(cli("aws", "create", "t3.micro", "--json"))
    aws_ssh.point_ssh_at(iid, sshd)
    done = cli("aws", "train", iid, "sub/where.py", "--docker-image", shared_docker.base_image,
               "--env", f"DOCKER_HOST={shared_docker.host}", "--env", "EXIT=5", "--wait",
               "--json", "--", "a b", cwd=wproject)  # fmt: skip
    assert done.returncode == 5, done.stderr
    job = json.loads(done.stdout)
    log = cli("logs", job["job_id"]).stdout
    uid = int(subprocess.run(["id", "-u", sshd.user], capture_output=True, text=True).stdout)
    # In a container, as the host user (so the checkpoint belongs to them), args intact.
    assert f"in-container True /workspace ['a b'] {uid}" in log
    ckpt = Path(pwd.getpwnam(sshd.user).pw_dir) / job["checkpoint_dir"] / "step-1.pt"
    assert ckpt.is_file() and ckpt.stat().st_uid == uid
    assert shared_docker.containers() == ""


def test_run_docker_pushes_to_the_registry_for_remote_hosts(
    cli: CLI, shared_docker: Any, sshd: Any, ssh_config: Path, wproject: Path
) -> None:
    (wproject / "Dockerfile").write_text(f"FROM {shared_docker.base_image}\n")
    with open(ssh_config, "a") as fh:
        fh.write(f'[docker]\nregistry = "{shared_docker.registry}"\n')
    done = cli("run", "--on", "ssh:testhost", "--docker", "--env",
               f"DOCKER_HOST={shared_docker.host}", "--wait", "--json", "sub/where.py",
               cwd=wproject)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "proj" in shared_docker.catalog()
    job = json.loads(done.stdout)
    assert "in-container True /workspace" in cli("logs", job["job_id"]).stdout
    state = Path(pwd.getpwnam(sshd.user).pw_dir) / job["job_dir"] / "state.json"
    assert f"{shared_docker.registry}/proj:latest" in json.loads(state.read_text())["command"]
