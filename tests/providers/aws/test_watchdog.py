"""The watchdog on an EC2 instance (moto) whose "host" is the loopback sshd stand.

Arming for terminate sets InstanceInitiatedShutdownBehavior=terminate, the host runs the
shutdown command (a marker writer here) when max-duration passes, and a spot instance polls
the metadata service named by aws.imds_url (the fake IMDSv2 server).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CLI
from tests.fakes.imds import FakeImds
from tests.providers.aws.conftest import MotoAWS, created_id

pytestmark = pytest.mark.integration


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the stand's user (not root) can write the marker into."""
    path = Path(f"/tmp/runctl-wd-{os.urandom(4).hex()}")
    path.mkdir(mode=0o777)
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _configure(stand: MotoAWS, **watchdog: Any) -> None:
    import tomllib

    import tomli_w

    data = tomllib.loads(stand.config_file.read_text())
    data["watchdog"] = watchdog
    stand.config_file.write_text(tomli_w.dumps(data))


def test_terminate_sets_shutdown_behaviour_and_host_runs_the_recipe(
    cli: CLI, aws_ssh: MotoAWS, sshd: Any, shared_dir: Path
) -> None:
    marker = shared_dir / "marker"
    imds = FakeImds().start()
    try:
        aws_ssh.configure(imds_url=imds.url, spot_poll_s=0.2)
        _configure(aws_ssh, check_s=0.2, shutdown_command=f"touch {marker}")
        iid = created_id(cli("aws", "create", "t3.micro", "--spot", "--json"))
        aws_ssh.point_ssh_at(iid, sshd)
        on = f"aws:{iid}"

        refused = cli("watchdog", "arm", "--on", on, "--max-duration", "1",
                      "--watchdog-action", "stop")  # fmt: skip
        assert refused.returncode == 6 and "one-time spot instance" in refused.stderr

        done = cli("watchdog", "arm", "--on", on, "--max-duration", "2", "--json")
        assert done.returncode == 0, done.stderr
        cfg = json.loads(done.stdout)["config"]
        assert cfg["action"] == "terminate"  # the default on spot instances
        assert cfg["recipe"] == {"argv": ["touch", str(marker)]}
        assert cfg["spot"] == {"url": imds.url, "poll_s": 0.2}
        attr = aws_ssh.client("ec2").describe_instance_attribute(
            InstanceId=iid, Attribute="instanceInitiatedShutdownBehavior"
        )
        assert attr["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"

        imds.set_instance_action("terminate", in_s=120)
        deadline = time.monotonic() + 20
        while not marker.exists():
            assert time.monotonic() < deadline, cli("watchdog", "status", "--on", on).stdout
            time.sleep(0.1)
    finally:
        imds.stop()
    status = json.loads(cli("watchdog", "status", "--on", on, "--json").stdout)
    assert status["spot_notice"]["action"] == "terminate"
    assert status["fired"]["reason"] == "max-duration"
    assert status["fired"]["action"] == "terminate" and status["fired"]["recipe_done_at"]
