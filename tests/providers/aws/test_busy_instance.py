"""Cloud `train` on a busy or unreachable instance: refused, or the real ssh error at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI, job_id_of, wait_for_log
from tests.providers.aws.conftest import MotoAWS, created_id

pytestmark = pytest.mark.integration

SLEEPY = "import time\nprint('ready', flush=True)\ntime.sleep(60)\n"


def test_second_train_on_a_busy_instance_needs_allow_concurrent(
    cli: CLI, aws_ssh: MotoAWS, sshd: Any, project: Path
) -> None:
    instance = created_id(cli("aws", "create", "t3.micro", "--json"))
    aws_ssh.point_ssh_at(instance, sshd)
    (project / "sleepy.py").write_text(SLEEPY)
    first = job_id_of(cli("aws", "train", instance, "sleepy.py", cwd=project))
    wait_for_log(cli, first, "ready")

    refused = cli("aws", "train", instance, "hello.py", cwd=project)
    assert refused.returncode == 9, refused.stderr
    assert f"job {first} is running there" in refused.stderr
    assert "--allow-concurrent" in refused.stderr
    jobs = [j["job_id"] for j in json.loads(cli("jobs", "--json").stdout)]
    assert jobs == [first], "a refused train must leave no job behind"

    both = cli("aws", "train", instance, "hello.py", "--allow-concurrent", "--wait", cwd=project)
    assert both.returncode == 0, both.stderr
    assert cli("cancel", first).returncode == 0


def test_train_on_an_instance_refusing_our_key_stops_at_once(
    cli: CLI, aws_ssh: MotoAWS, sshd: Any, project: Path, tmp_path: Path
) -> None:
    import subprocess
    import time

    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)],
                   check=True)  # fmt: skip
    instance = created_id(cli("aws", "create", "t3.micro", "--json"))
    aws_ssh.point_ssh_at(instance, sshd)
    aws_ssh.configure(ssh_key_file=str(stranger))
    started = time.monotonic()
    done = cli("aws", "train", instance, "hello.py", cwd=project)
    assert time.monotonic() - started < 30, "an auth error must not be retried"
    assert done.returncode == 4, done.stderr
    assert "Permission denied" in done.stderr


def test_train_on_an_unreachable_new_instance_shows_the_ssh_error(
    cli: CLI, aws_ssh: MotoAWS, project: Path
) -> None:
    instance = created_id(cli("aws", "create", "t3.micro", "--json"))
    aws_ssh.client("ec2").create_tags(
        Resources=[instance], Tags=[{"Key": "runctl:ssh-endpoint", "Value": "127.0.0.1:1"}]
    )
    aws_ssh.configure(wait_timeout_s=6.0)
    done = cli("aws", "train", instance, "hello.py", cwd=project)
    assert done.returncode == 7, done.stderr
    retries = [ln for ln in done.stderr.splitlines() if "not reachable yet" in ln]
    assert retries and all("Connection refused" in ln for ln in retries), done.stderr
