"""AWS leftovers besides instances (moto): detached volumes, spot requests, key pairs."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import CLI
from tests.providers.aws.conftest import MotoAWS, created_id
from tests.resources.conftest import ok

AWS = ("--platform", "aws")


def _data_volume(aws: MotoAWS, instance_id: str) -> str:
    ec2 = aws.client("ec2")
    found = ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["Volumes"]
    (data,) = [v for v in found if v["Size"] == 8]
    return str(data["VolumeId"])


def _volume_state(aws: MotoAWS, volume_id: str) -> str | None:
    found = aws.client("ec2").describe_volumes(
        Filters=[{"Name": "volume-id", "Values": [volume_id]}]
    )["Volumes"]
    return str(found[0]["State"]) if found else None


def test_leftover_volumes_spot_requests_and_key_pairs(
    cli: CLI, cli_fast: CLI, moto_aws: MotoAWS, runctl_home: Path
) -> None:
    fast = cli_fast  # in-process: no interpreter start per call (the prompt needs `cli`)
    ec2 = moto_aws.client("ec2")
    kept = created_id(fast("aws", "create", "t3.micro", "--data-volume-size", "8", "--json"))
    dropped = created_id(fast("aws", "create", "t3.micro", "--data-volume-size", "8", "--json"))
    guarded = created_id(fast("aws", "create", "t3.micro", "--data-volume-size", "8", "--json"))
    kept_vol, dropped_vol, guarded_vol = (
        _data_volume(moto_aws, i) for i in (kept, dropped, guarded)
    )
    ec2.create_tags(Resources=[guarded_vol], Tags=[{"Key": "runctl:protected", "Value": "true"}])
    ok(fast("aws", "terminate", dropped, "--json"))
    ok(fast("aws", "terminate", guarded, "--json"))
    assert _volume_state(moto_aws, dropped_vol) == "available"  # DeleteOnTermination false
    ec2.detach_volume(VolumeId=kept_vol, InstanceId=kept)  # detached, instance alive: not left
    mine = ec2.create_volume(Size=1, AvailabilityZone="us-east-1a", TagSpecifications=[
        {"ResourceType": "volume", "Tags": [{"Key": "runctl:managed", "Value": "true"}]}
    ])["VolumeId"]  # like `aws ebs create`: the user's own volume, never a leftover  # fmt: skip
    tags = [{"Key": "runctl:managed", "Value": "true"}, {"Key": "runctl:launch", "Value": "t1"}]
    spot = ec2.request_spot_instances(
        SpotPrice="0.05", InstanceCount=1, Type="one-time",
        LaunchSpecification={"ImageId": "ami-0al2023000000001", "InstanceType": "t3.micro"},
        TagSpecifications=[{"ResourceType": "spot-instances-request", "Tags": tags}],
    )["SpotInstanceRequests"][0]  # fmt: skip
    ec2.terminate_instances(InstanceIds=[spot["InstanceId"]])  # request still "active"

    report = ok(fast("reconcile", *AWS, "--json"))
    volumes = {v["resource_id"]: v for v in report["volumes"]}
    assert set(volumes) == {dropped_vol, guarded_vol}
    assert volumes[dropped_vol]["action"] == "delete" and volumes[dropped_vol]["size_gb"] == 8
    assert volumes[guarded_vol]["action"] == "keep" and volumes[guarded_vol]["protected"]
    assert [r["resource_id"] for r in report["spot_requests"]] == [spot["SpotInstanceRequestId"]]
    assert report["spot_requests"][0]["action"] == "cancel"
    (pair,) = report["key_pairs"]
    assert pair["resource_id"].startswith("runctl-") and pair["action"] == "keep"
    text = fast("reconcile", *AWS).stdout
    assert dropped_vol in text and "keep (protected)" in text and "resources cleanup" in text

    dry = ok(fast("resources", "cleanup", *AWS, "--dry-run", "--json"))
    assert {t["resource"] for t in dry["leftovers"]["targets"]} == {
        f"aws:{dropped_vol}",
        f"aws:{spot['SpotInstanceRequestId']}",
    }
    assert [r["resource"] for r in dry["leftovers"]["refused"]] == [f"aws:{guarded_vol}"]
    young = ok(fast("resources", "cleanup", *AWS, "--older-than", "1h", "--dry-run", "--json"))
    assert f"aws:{dropped_vol}" in {r["resource"] for r in young["leftovers"]["refused"]}

    no = cli("resources", "cleanup", *AWS, input="n\n")
    assert no.returncode == 130 and "delete 1 volume(s) (8 GB)" in no.stdout
    assert "cancel 1 spot request(s)" in no.stdout
    assert _volume_state(moto_aws, dropped_vol) == "available"

    done = ok(fast("resources", "cleanup", *AWS, "--yes", "--json"))
    assert [t["instance"] for t in done["targets"]] == [f"aws:{kept}"]
    results = {t["resource"]: t["result"] for t in done["leftovers"]["targets"]}
    assert results == {f"aws:{dropped_vol}": "deleted",
                       f"aws:{spot['SpotInstanceRequestId']}": "cancelled"}  # fmt: skip
    assert _volume_state(moto_aws, dropped_vol) is None
    assert _volume_state(moto_aws, guarded_vol) == "available"  # protected: kept
    assert _volume_state(moto_aws, mine) == "available"
    assert not ec2.describe_spot_instance_requests(
        Filters=[{"Name": "state", "Values": ["open", "active"]}]
    )["SpotInstanceRequests"]
    assert ec2.describe_key_pairs()["KeyPairs"]  # free: kept
    again = ok(fast("reconcile", *AWS, "--json"))
    # kept's detached volume is a leftover now that cleanup terminated kept
    assert {v["resource_id"] for v in again["volumes"]} == {guarded_vol, kept_vol}
    assert not again["spot_requests"] and len(again["key_pairs"]) == 1
