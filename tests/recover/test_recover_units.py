"""Recovery settings, replacement policies, the one-controller lock, and usage errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runctl import config
from runctl.core import launchers
from runctl.core import recover as core
from runctl.errors import ConflictError, UsageError
from runctl.runtime import Runtime
from tests.conftest import CLI
from tests.providers.aws.conftest import MotoAWS


@pytest.fixture
def rt(runctl_home: Path) -> Runtime:
    return Runtime(config=config.load(), home=runctl_home)


def test_recover_spec_refuses_what_cannot_be_replaced() -> None:
    with pytest.raises(UsageError, match="ssh machines are not"):
        core.recover_spec("ssh", {}, max_restarts=1)
    with pytest.raises(UsageError, match="needs AWS"):
        core.recover_spec("runpod", {}, max_restarts=1, policy="other-az")
    with pytest.raises(UsageError, match="needs the regions"):
        core.recover_spec("aws", {"regions": ["us-east-1"]}, max_restarts=1, policy="other-region")
    with pytest.raises(UsageError, match="unknown recovery policy"):
        core.recover_spec("aws", {}, max_restarts=1, policy="cheapest")
    spec = core.recover_spec("lyceum", {"profile": "h100"}, max_restarts=2, policy="on-demand")
    assert spec["max_restarts"] == 2 and spec["attempt"] == 0 and spec["watchdog"] is None


def test_next_launch_policies(rt: Runtime) -> None:
    spot = {"instance_type": "t3.micro", "spot": True, "region": "us-east-1",
            "regions": ["us-east-1", "us-west-2", "eu-west-1"]}  # fmt: skip
    say: list[str] = []
    same = core.next_launch(rt, {"policy": "same", "launch": spot}, "aws", {}, say.append)
    assert same == spot
    od = core.next_launch(rt, {"policy": "on-demand", "launch": spot}, "aws", {}, say.append)
    assert od["spot"] is False and od["instance_type"] == "t3.micro"
    old = {"data": {"region": "us-west-2"}}
    moved = core.next_launch(rt, {"policy": "other-region", "launch": spot}, "aws", old,
                             say.append)  # fmt: skip
    assert moved["region"] == "eu-west-1"
    old = {"data": {"region": "eu-west-1"}}
    wrapped = core.next_launch(rt, {"policy": "other-region", "launch": spot}, "aws", old,
                               say.append)  # fmt: skip
    assert wrapped["region"] == "us-east-1"


@pytest.mark.integration
def test_other_az_launches_in_another_zone(moto_aws: MotoAWS, runctl_home: Path) -> None:
    from runctl.providers.aws.launch import CreateOptions, availability_zones, create_instance
    from runctl.providers.aws.provider import AWSProvider

    rt = Runtime(config=config.load(), home=runctl_home)
    provider = AWSProvider(rt, notify=lambda _m: None)
    zones = availability_zones(provider)
    assert len(zones) > 1 and zones == sorted(zones)
    first = create_instance(provider, CreateOptions("t3.micro", availability_zone=zones[0]),
                            lambda _m: None, None)  # fmt: skip
    raw = moto_aws.instance(first.instance.instance_id)
    assert raw["Placement"]["AvailabilityZone"] == zones[0]
    record = rt.store.get_instance_record("aws", first.instance.instance_id) or {}
    spec = {"policy": "other-az", "launch": {"instance_type": "t3.micro"}}
    options = core.next_launch(rt, spec, "aws", record, lambda _m: None)
    assert options["availability_zone"] == zones[1]
    second = create_instance(provider, CreateOptions("t3.micro", **{
        "availability_zone": options["availability_zone"]}), lambda _m: None, None)  # fmt: skip
    assert (
        moto_aws.instance(second.instance.instance_id)["Placement"]["AvailabilityZone"]
        == (zones[1])
    )


def test_one_controller_per_job(rt: Runtime) -> None:
    assert core.lock_holder(rt, "train-abc123") is None
    with core.controller_lock(rt, "train-abc123"):
        holder = core.lock_holder(rt, "train-abc123")
        assert holder is not None and holder > 0
        with (
            pytest.raises(ConflictError, match=f"pid {holder}"),
            core.controller_lock(rt, "train-abc123"),
        ):
            pass
    assert core.lock_holder(rt, "train-abc123") is None


def test_launch_refuses_providers_without_machines(rt: Runtime) -> None:
    with pytest.raises(UsageError, match="cannot create ssh machines"):
        launchers.launch(rt, "ssh", {}, lambda _m: None)


def test_launch_of_instance_needs_a_recorded_machine(rt: Runtime) -> None:
    with pytest.raises(UsageError, match="not a machine runctl created"):
        core.launch_of_instance(rt, "aws", "i-0123456789abcdef0")


def _err(done: Any) -> str:
    return str(done.stderr)


def test_workflow_usage_errors(cli: CLI, project: Path) -> None:
    (project / "job.py").write_text("print(1)\n")
    spot_local = cli("workflow", "train", "--on", "local", "--spot", "job.py", cwd=project)
    assert spot_local.returncode == 2 and "only applies when the workflow creates" in _err(
        spot_local
    )
    no_type = cli("workflow", "train", "--on", "aws", "job.py", cwd=project)
    assert no_type.returncode == 2 and "--instance-type" in _err(no_type)
    missing = cli("workflow", "train", "--on", "aws", "--instance-type", "t3.micro", "--json",
                  "nope.py", cwd=project)  # fmt: skip
    assert missing.returncode == 5
    assert json.loads(missing.stdout)["error"]["message"] == "script not found: nope.py"
    local_recover = cli("workflow", "train", "--on", "local", "--recover", "job.py", cwd=project)
    assert local_recover.returncode == 2 and "--recover needs a machine" in _err(local_recover)


def test_recover_refuses_a_local_job(cli: CLI, project: Path) -> None:
    (project / "job.py").write_text("print(1)\n")
    done = cli("run", "--wait", "job.py", cwd=project)
    assert done.returncode == 0, done.stderr
    job = done.stdout.strip().splitlines()[-1]
    refused = cli("recover", job, "--json")
    assert refused.returncode == 2
    assert "is not a machine runctl created" in json.loads(refused.stdout)["error"]["message"]


def test_run_recover_refuses_a_machine_it_cannot_replace(cli: CLI, project: Path) -> None:
    (project / "job.py").write_text("print(1)\n")
    done = cli("run", "--recover", "job.py", cwd=project)
    assert done.returncode == 2 and "is not a machine runctl created" in done.stderr
    assert json.loads(cli("jobs", "--json").stdout) == []  # refused before anything started
