"""`runctl aws create/status/wait/start/stop/terminate` against a moto server."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import CLI
from tests.providers.aws.conftest import MotoAWS, created_id

pytestmark = pytest.mark.integration


def _volumes(aws: MotoAWS, instance_id: str, region: str = "us-east-1") -> list[dict]:
    ec2 = aws.client("ec2", region)
    return ec2.describe_volumes(
        Filters=[{"Name": "attachment.instance-id", "Values": [instance_id]}]
    )["Volumes"]


def test_create_cpu_type_uses_al2023_root_device_and_tags(
    cli: CLI, moto_aws: MotoAWS, runctl_home: Path
) -> None:
    done = cli("aws", "create", "t3.micro", "--project-name", "demo", "--json")
    iid = created_id(done)
    data = json.loads(done.stdout)
    assert data["ami"]["image_id"] == "ami-0al2023000000001"
    assert data["ami"]["source"] == "ssm:/runctl-test/al2023/x86_64"
    assert data["market"] == "on-demand"
    assert data["hourly_usd"] == pytest.approx(0.0104)  # shipped table: pricing API is absent
    assert data["price_source"] == "table"
    raw = moto_aws.instance(iid)
    assert raw["ImageId"] == "ami-0al2023000000001"
    # The root size is applied to the AMI's own root device: one volume, not two.
    vols = _volumes(moto_aws, iid)
    assert [(v["Size"], v["Attachments"][0]["Device"]) for v in vols] == [(30, "/dev/xvda")]
    tags = moto_aws.tags(iid)
    assert tags["runctl:managed"] == "true"
    assert tags["runctl:project"] == "demo"
    assert tags["runctl:job"] == ""
    assert tags["runctl:user"]
    assert tags["runctl:ssh-user"] == "ec2-user"
    assert tags["Name"].startswith(f"runctl-{tags['runctl:user']}-demo-")
    assert {t["Key"] for t in vols[0].get("Tags", [])} >= {"runctl:managed", "runctl:project"}
    # runctl's key pair was imported and the ssh security group made.
    assert raw["KeyName"].startswith("runctl-")
    groups = moto_aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["runctl-ssh"]}])["SecurityGroups"]  # fmt: skip
    assert [g["GroupId"] for g in raw["SecurityGroups"]] == [groups[0]["GroupId"]]
    key = runctl_home / "keys" / "runctl_ed25519"
    assert key.stat().st_mode & 0o777 == 0o600
    # Recorded with its launch price, for costs.
    db = sqlite3.connect(runctl_home / "state.db")
    row = db.execute("SELECT hourly_usd, state, data FROM instances WHERE instance_id = ?",
                     (iid,)).fetchone()  # fmt: skip
    assert row[0] == pytest.approx(0.0104) and row[1] in ("pending", "running")
    assert json.loads(row[2])["region"] == "us-east-1"


def test_create_gpu_type_uses_dlami_with_ubuntu_user(cli: CLI, moto_aws: MotoAWS) -> None:
    done = cli("aws", "create", "g5.xlarge", "--root-volume-size", "120", "--json")
    iid = created_id(done)
    data = json.loads(done.stdout)
    assert data["ami"]["image_id"] == "ami-0dlami000000001"
    assert data["hourly_usd"] == pytest.approx(1.006)
    assert moto_aws.tags(iid)["runctl:ssh-user"] == "ubuntu"
    vols = _volumes(moto_aws, iid)
    assert [(v["Size"], v["Attachments"][0]["Device"]) for v in vols] == [(120, "/dev/sda1")]


def test_create_data_volume_survives_terminate(cli: CLI, moto_aws: MotoAWS) -> None:
    iid = created_id(cli("aws", "create", "t3.micro", "--data-volume-size", "50", "--json"))
    sizes = sorted(v["Size"] for v in _volumes(moto_aws, iid))
    assert sizes == [30, 50]
    done = cli("aws", "terminate", iid, "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["state"] == "terminated"
    assert len(data["kept_volumes"]) == 1
    assert "survive termination" in done.stderr


def test_arm_type_gets_arm_ami_and_mismatch_is_refused(cli: CLI, moto_aws: MotoAWS) -> None:
    done = cli("aws", "create", "g5g.xlarge", "--json")
    assert json.loads(done.stdout)["ami"]["image_id"] == "ami-0dlamiarm000001", done.stderr
    bad = cli("aws", "create", "g5g.xlarge", "--ami-id", "ami-0dlami000000001")
    assert bad.returncode == 2
    assert "is x86_64 but g5g.xlarge runs arm64" in bad.stderr
    assert "hint:" in bad.stderr


def test_bad_instance_type_and_ami_have_clear_errors(cli: CLI, moto_aws: MotoAWS) -> None:
    bad_type = cli("aws", "create", "p99.fake")
    assert bad_type.returncode == 2
    assert "unknown instance type 'p99.fake' in us-east-1" in bad_type.stderr
    bad_ami = cli("aws", "create", "t3.micro", "--ami-id", "ami-0123456789abcdef0")
    assert bad_ami.returncode == 5, bad_ami.stderr
    assert bad_ami.stderr.startswith("Error: looking up AMI ami-0123456789abcdef0")
    assert "Traceback" not in bad_ami.stderr
    bad_id = cli("aws", "status", "i-nope")
    assert bad_id.returncode == 2 and "invalid instance id" in bad_id.stderr
    missing = cli("aws", "status", "i-0123456789abcdef0")
    assert missing.returncode == 5 and "not found" in missing.stderr


def test_region_precedence_flag_then_recorded_then_config_then_chain(
    cli: CLI, moto_aws: MotoAWS
) -> None:
    # --region beats aws.region (us-east-1) for every client: AMI lookup, launch, describe.
    iid = created_id(cli("aws", "create", "t3.micro", "--region", "us-west-2", "--json"))
    assert moto_aws.instance(iid, "us-west-2")["Placement"]["AvailabilityZone"].startswith(
        "us-west-2"
    )
    # Later commands find it in its recorded region without --region.
    status = cli("aws", "status", iid, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["region"] == "us-west-2"
    # Without aws.region the AWS chain (AWS_REGION) decides.
    text = moto_aws.config_file.read_text().replace('region = "us-east-1"\n', "")
    moto_aws.config_file.write_text(text)
    chained = cli("aws", "create", "t3.micro", "--json", env={"AWS_REGION": "us-west-2"})
    assert chained.returncode == 0, chained.stderr
    assert json.loads(chained.stdout)["region"] == "us-west-2", chained.stderr
    none = cli("aws", "create", "t3.micro")
    assert none.returncode == 3 and "no AWS region configured" in none.stderr


def test_lifecycle_stop_start_wait_terminate_and_aliases(cli_fast: CLI, moto_aws: MotoAWS) -> None:
    cli = cli_fast
    iid = created_id(cli("aws", "new", "t3.micro", "--wait", "--json"))
    assert json.loads(cli("aws", "wait", iid, "--json").stdout)["state"] == "running"
    stopped = cli("aws", "pause", iid, "--wait", "--json")  # alias of stop
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["state"] == "stopped"
    again = cli("aws", "stop", iid)
    assert again.returncode == 0 and "already stopped" in again.stdout
    refused = cli("aws", "train", iid, "x.py")
    assert refused.returncode == 9 and f"runctl aws start {iid} --wait" in refused.stderr
    started = cli("aws", "resume", iid, "--wait", "--json")
    assert json.loads(started.stdout)["state"] == "running", started.stderr
    gone = cli("aws", "rm", iid, "--json")  # alias of terminate; waits for terminated
    assert json.loads(gone.stdout)["state"] == "terminated", gone.stderr
    assert cli("aws", "terminate", iid).returncode == 0  # idempotent
    quiet = cli("aws", "spawn", "t3.micro", "-q")
    assert quiet.stdout.strip().startswith("i-") and len(quiet.stdout.splitlines()) == 1


def test_create_with_own_key_group_and_profile_uses_ssm(cli_fast: CLI, moto_aws: MotoAWS) -> None:
    ec2 = moto_aws.client("ec2")
    ec2.create_key_pair(KeyName="mine")
    vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
    group = ec2.create_security_group(GroupName="mysg", Description="x", VpcId=vpc)["GroupId"]
    moto_aws.client("iam").create_instance_profile(InstanceProfileName="ssm-profile")
    done = cli_fast("aws", "create", "t3.micro", "--key-name", "mine", "--security-group", "mysg",
                    "--iam-instance-profile", "ssm-profile", "--json")  # fmt: skip
    iid = created_id(done)
    raw = moto_aws.instance(iid)
    assert raw["KeyName"] == "mine"
    assert [g["GroupId"] for g in raw["SecurityGroups"]] == [group]  # name resolved to its id
    assert raw["IamInstanceProfile"]["Arn"].endswith("/ssm-profile")
    status = json.loads(cli_fast("aws", "status", iid, "--json").stdout)
    # No local key for "mine", but an instance profile: auto picks SSM.
    assert status["transport"] == "ssm" and status["ssm_available"] is True
    empty = cli_fast("aws", "create", "t3.micro", "--iam-instance-profile", " ")
    assert empty.returncode == 2


def test_help_lists_verbs_and_aliases(cli: CLI) -> None:
    done = cli("aws", "--help")
    assert done.returncode == 0
    for text in ("create (new, spawn)", "train (run)", "monitor (watch, logs)", "stop (pause)",
                 "terminate (destroy, rm, delete)", "processes", "ebs"):  # fmt: skip
        assert text in done.stdout
