"""`runctl aws ebs ...` against moto: create, list, attach, detach, snapshot, restore, delete."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import CLI
from tests.providers.aws.conftest import MotoAWS, created_id

pytestmark = pytest.mark.integration


def _json(done: Any) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_volume_lifecycle_with_guards(cli_fast: CLI, moto_aws: MotoAWS) -> None:
    cli = cli_fast
    iid = created_id(cli("aws", "create", "t3.micro", "--json"))
    zone = moto_aws.instance(iid)["Placement"]["AvailabilityZone"]
    vol = _json(cli("aws", "ebs", "create", "--size", "20", "--iops", "4000", "--throughput",
                    "250", "--name", "data", "--persistent", "--json"))  # fmt: skip
    vid = vol["volume_id"]
    assert vol["availability_zone"] == "us-east-1a" and vol["persistent"]
    assert (vol["size_gb"], vol["volume_type"], vol["iops"]) == (20, "gp3", 4000)
    tags = {
        t["Key"]: t["Value"]
        for t in moto_aws.client("ec2").describe_volumes(VolumeIds=[vid])["Volumes"][0]["Tags"]
    }
    assert tags["runctl:managed"] == "true" and tags["Name"] == "data"
    assert tags["runctl:protected"] == "true"
    dup = cli("aws", "ebs", "create", "--size", "5", "--name", "data")
    assert dup.returncode == 9 and "already exists" in dup.stderr
    bad = cli("aws", "ebs", "create", "--size", "10", "--iops", "9000")
    assert bad.returncode == 2 and "GiB" in bad.stderr
    listed = _json(cli("aws", "ebs", "list", "--json"))["volumes"]
    assert [v["volume_id"] for v in listed if v["name"] == "data"] == [vid]
    assert zone == "us-east-1a"  # moto's default placement: the default zone matches
    if zone == "us-east-1a":
        attached = _json(cli("aws", "ebs", "attach", vid, "--instance-id", iid, "--json"))
        assert attached["attached_to"] == iid and attached["state"] == "in-use"
        again = cli("aws", "ebs", "attach", vid, "--instance-id", iid)
        assert again.returncode == 9 and "already attached" in again.stderr
        refused = cli("aws", "ebs", "delete", vid)
        assert refused.returncode == 9 and "persistent" in refused.stderr
        assert _json(cli("aws", "ebs", "detach", vid, "--json"))["state"] == "available"
    snap = _json(cli("aws", "ebs", "snapshot", vid, "--name", "s1", "--wait", "--json"))
    assert snap["volume_id"] == vid and snap["state"] == "completed"
    snaps = _json(cli("aws", "ebs", "snapshot-list", "--volume-id", vid, "--json"))["snapshots"]
    assert [s["snapshot_id"] for s in snaps] == [snap["snapshot_id"]]
    restored = _json(cli("aws", "ebs", "restore", snap["snapshot_id"], "--instance-id", iid,
                         "--json"))  # fmt: skip
    assert restored["snapshot_id"] == snap["snapshot_id"] and restored["attached_to"] == iid
    assert restored["availability_zone"] == zone
    # force: detaches first, then deletes; remaining snapshots are reported.
    gone = _json(cli("aws", "ebs", "delete", restored["volume_id"], "--force", "--json"))
    assert gone["deleted"]
    deleted = _json(cli("aws", "ebs", "delete", vid, "--force", "--json"))
    assert deleted["snapshots"] == [snap["snapshot_id"]]
    missing = cli("aws", "ebs", "delete", "vol-0123456789abcdef0")
    assert missing.returncode == 5, missing.stderr


def test_attach_across_zones_is_refused(cli_fast: CLI, moto_aws: MotoAWS) -> None:
    cli = cli_fast
    iid = created_id(cli("aws", "create", "t3.micro", "--json"))
    zone = moto_aws.instance(iid)["Placement"]["AvailabilityZone"]
    other = "us-east-1b" if zone != "us-east-1b" else "us-east-1c"
    vid = _json(cli("aws", "ebs", "create", "--size", "5", "--az", other, "--json"))["volume_id"]
    done = cli("aws", "ebs", "attach", vid, "--instance-id", iid)
    assert done.returncode == 2 and f"is in {other} but {iid} in {zone}" in done.stderr


def test_pre_warm_runs_on_the_host_and_reports_a_missing_device(
    cli: CLI, aws_ssh: MotoAWS, sshd: Any
) -> None:
    iid = created_id(cli("aws", "create", "t3.micro", "--json"))
    aws_ssh.point_ssh_at(iid, sshd)
    vid = _json(cli("aws", "ebs", "create", "--size", "5", "--instance-id", iid,
                    "--json"))["volume_id"]  # fmt: skip
    # The loopback "instance" has no such NVMe device: the script finds none and says so.
    done = cli("aws", "ebs", "pre-warm", vid, "--instance-id", iid)
    assert done.returncode == 3, done.stderr
    assert f"volume {vid.replace('-', '')} is not attached to this host" in done.stderr
