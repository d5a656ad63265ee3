"""EC2 instances: launch (tagged, never orphaned), describe, wait, stop, start, terminate.

Every resource runctl creates carries ``runctl:managed=true``, ``runctl:project``,
``runctl:user``, ``runctl:job`` (the last job started on it; empty until then) and ``Name``,
plus ``runctl:launch`` — a token unique to one ``create``. If ``run_instances`` raises (a read
timeout after AWS already started the machine, a throttled retry ...), the instances carrying
that token are looked up and terminated, so a failed create never leaves a paid machine behind.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runctl.errors import ConfigError, NotFoundError, ProviderError, RunctlError, UsageError
from runctl.models import InstanceState
from runctl.providers.aws.session import AwsSession, aws_errors, error_code

log = logging.getLogger(__name__)
Sleep = Callable[[float], None]

MANAGED, PROJECT, USER, JOB, LAUNCH = (
    "runctl:managed", "runctl:project", "runctl:user", "runctl:job", "runctl:launch",
)  # fmt: skip
SSH_USER, SSH_ENDPOINT, PERSISTENT, PROTECTED = (
    "runctl:ssh-user", "runctl:ssh-endpoint", "runctl:persistent", "runctl:protected",
)  # fmt: skip
POLL_S = 5.0
_STATES: dict[str, InstanceState] = {
    "pending": InstanceState.PENDING,
    "running": InstanceState.RUNNING,
    "stopping": InstanceState.STOPPING,
    "stopped": InstanceState.STOPPED,
    "shutting-down": InstanceState.TERMINATING,
    "terminated": InstanceState.TERMINATED,
}


def map_state(raw: str) -> InstanceState:
    state = _STATES.get(raw)
    if state is None:
        log.warning("unknown EC2 instance state %r", raw)
        return InstanceState.UNKNOWN
    return state


def tags_of(raw: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in raw.get("Tags", []) or []}


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def runctl_tags(name: str, project: str, user: str, job: str = "", **extra: str) -> dict[str, str]:
    tags = {"Name": name, MANAGED: "true", PROJECT: project, USER: user, JOB: job}
    tags.update(extra)
    return tags


@dataclass
class LaunchRequest:
    instance_type: str
    image_id: str
    root_device: str
    root_gb: int
    tags: dict[str, str]
    key_name: str | None = None
    security_group_ids: list[str] = field(default_factory=list)
    iam_profile: str | None = None
    data_gb: int | None = None
    data_device: str = "/dev/sdf"
    user_data: str = ""
    availability_zone: str | None = None  # None: AWS picks (spot recovery asks for another)

    def block_devices(self) -> list[dict[str, Any]]:
        devices: list[dict[str, Any]] = [
            {"DeviceName": self.root_device,
             "Ebs": {"VolumeSize": self.root_gb, "VolumeType": "gp3",
                     "DeleteOnTermination": True}},
        ]  # fmt: skip
        if self.data_gb:
            # Created with the instance, so it is attached before boot (user-data mounts it)
            # and survives termination (DeleteOnTermination false).
            devices.append({"DeviceName": self.data_device,
                            "Ebs": {"VolumeSize": self.data_gb, "VolumeType": "gp3",
                                    "DeleteOnTermination": False}})  # fmt: skip
        return devices

    def launch_spec(self) -> dict[str, Any]:
        """Arguments shared by run_instances and request_spot_instances' LaunchSpecification."""
        spec: dict[str, Any] = {
            "ImageId": self.image_id,
            "InstanceType": self.instance_type,
            "BlockDeviceMappings": self.block_devices(),
        }
        if self.key_name:
            spec["KeyName"] = self.key_name
        if self.security_group_ids:
            spec["SecurityGroupIds"] = list(self.security_group_ids)
        if self.iam_profile:
            spec["IamInstanceProfile"] = {"Name": self.iam_profile}
        if self.user_data:
            spec["UserData"] = self.user_data
        if self.availability_zone:
            spec["Placement"] = {"AvailabilityZone": self.availability_zone}
        return spec


def run_instance(session: AwsSession, request: LaunchRequest) -> dict[str, Any]:
    """Launch one on-demand instance, tagged at creation; cleans up after a failed call."""
    ec2 = session.client("ec2")
    token = request.tags[LAUNCH]
    spec = request.launch_spec()
    if "UserData" in spec:
        spec["UserData"] = base64.b64encode(spec["UserData"].encode()).decode()
    try:
        with aws_errors(f"launching {request.instance_type}"):
            answer = ec2.run_instances(
                MinCount=1,
                MaxCount=1,
                ClientToken=token,
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": tag_list(request.tags)},
                    {"ResourceType": "volume", "Tags": tag_list(request.tags)},
                ],
                MetadataOptions={"HttpTokens": "required", "HttpPutResponseHopLimit": 2},
                **spec,
            )
    except BaseException as exc:
        cleaned = cleanup_launch(session, token)
        if cleaned and isinstance(exc, RunctlError):
            exc.hint = (exc.hint or "") + f" (terminated {', '.join(cleaned)} it had started)"
        raise
    raw: dict[str, Any] = answer["Instances"][0]
    return raw


def cleanup_launch(session: AwsSession, token: str) -> list[str]:
    """Terminate every instance carrying launch ``token``; returns their ids. Never raises."""
    try:
        found = describe_many(session, [{"Name": f"tag:{LAUNCH}", "Values": [token]}])
        ids = [i["InstanceId"] for i in found if i["State"]["Name"] != "terminated"]
        if ids:
            session.client("ec2").terminate_instances(InstanceIds=ids)
        return ids
    except Exception as exc:  # noqa: BLE001 - best effort while another error is in flight
        log.warning("could not look up instances of launch %s: %s", token, exc)
        return []


def describe_many(session: AwsSession, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with aws_errors("listing instances"):
        pages = session.client("ec2").get_paginator("describe_instances").paginate(Filters=filters)
        return [
            inst for page in pages for res in page["Reservations"] for inst in res["Instances"]
        ]


def describe(session: AwsSession, instance_id: str) -> dict[str, Any] | None:
    """The raw instance, or None when AWS does not know the id."""
    try:
        with aws_errors(f"describing {instance_id}"):
            answer = session.client("ec2").describe_instances(InstanceIds=[instance_id])
    except NotFoundError:
        return None
    for reservation in answer.get("Reservations", []):
        for inst in reservation.get("Instances", []):
            found: dict[str, Any] = inst
            return found
    return None


def require(session: AwsSession, instance_id: str) -> dict[str, Any]:
    raw = describe(session, instance_id)
    if raw is None:
        raise NotFoundError(
            f"instance {instance_id} not found in {session.region}",
            hint="check the id and --region (`runctl aws status ID --region REGION`)",
        )
    return raw


def list_managed(session: AwsSession) -> list[dict[str, Any]]:
    return describe_many(session, [{"Name": f"tag:{MANAGED}", "Values": ["true"]}])


def wait_for(
    session: AwsSession,
    instance_id: str,
    wanted: set[str],
    timeout_s: float,
    sleep: Sleep = time.sleep,
    on_poll: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Poll until the instance reaches one of ``wanted`` states; ProviderError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        raw = require(session, instance_id)
        state = raw["State"]["Name"]
        if state in wanted:
            return raw
        if state in {"terminated", "shutting-down"} and not wanted & {"terminated"}:
            reason = raw.get("StateReason", {}).get("Message", "")
            raise ProviderError(
                f"{instance_id} is {state}" + (f": {reason}" if reason else ""),
                hint="create a new instance with `runctl aws create`",
            )
        if time.monotonic() >= deadline:
            raise ProviderError(
                f"{instance_id} still {state} after {timeout_s:.0f}s",
                hint=f"check again with `runctl aws wait {instance_id}`",
            )
        if on_poll:
            on_poll(state)
        sleep(POLL_S)


def stop(session: AwsSession, instance_id: str) -> None:
    with aws_errors(f"stopping {instance_id}"):
        session.client("ec2").stop_instances(InstanceIds=[instance_id])


def start(session: AwsSession, instance_id: str) -> None:
    with aws_errors(f"starting {instance_id}"):
        session.client("ec2").start_instances(InstanceIds=[instance_id])


def terminate(session: AwsSession, instance_id: str) -> None:
    """Terminate; idempotent (an unknown or terminated instance is success)."""
    try:
        with aws_errors(f"terminating {instance_id}"):
            session.client("ec2").terminate_instances(InstanceIds=[instance_id])
    except NotFoundError:
        return


def set_shutdown_behavior(session: AwsSession, instance_id: str, behavior: str) -> None:
    """What a shutdown from inside the instance does: "stop" or "terminate"."""
    with aws_errors(f"setting the shutdown behaviour of {instance_id}"):
        # The Attribute/Value form (documented for this attribute) is also the one moto knows.
        session.client("ec2").modify_instance_attribute(
            InstanceId=instance_id, Attribute="instanceInitiatedShutdownBehavior", Value=behavior
        )


def set_tags(session: AwsSession, resource_ids: list[str], tags: dict[str, str]) -> None:
    with aws_errors("tagging"):
        session.client("ec2").create_tags(Resources=resource_ids, Tags=tag_list(tags))


def volume_ids(raw: dict[str, Any]) -> list[str]:
    return [m["Ebs"]["VolumeId"] for m in raw.get("BlockDeviceMappings", []) if m.get("Ebs", {})]


# ------------------------------------------------------------- key pairs, security groups


def ensure_key_pair(session: AwsSession, public_key_file: Path) -> str:
    """Import ``public_key_file`` as ``runctl-<hash>`` once; return the key pair name."""
    import hashlib

    try:
        material = public_key_file.read_bytes().strip()
    except OSError:
        raise ConfigError(
            f"public key {public_key_file} not found",
            hint="set aws.ssh_key_file to a private key whose .pub sits beside it, "
            "or pass --key-name",
        ) from None
    name = "runctl-" + hashlib.sha256(material.split()[1]).hexdigest()[:12]
    ec2 = session.client("ec2")
    try:
        with aws_errors("looking up the key pair"):
            ec2.describe_key_pairs(KeyNames=[name])
        return name
    except NotFoundError:
        pass
    except RunctlError as exc:
        if "InvalidKeyPair.NotFound" not in error_code(exc.__cause__ or exc) + exc.message:
            raise
    with aws_errors("importing your SSH public key"):
        ec2.import_key_pair(
            KeyName=name,
            PublicKeyMaterial=material,
            TagSpecifications=[{"ResourceType": "key-pair",
                                "Tags": [{"Key": MANAGED, "Value": "true"}]}],
        )  # fmt: skip
    return name


def resolve_security_group(session: AwsSession, value: str) -> str:
    """An ``sg-`` id as is; a name looked up (so spot and on-demand use the same id)."""
    if value.startswith("sg-"):
        return value
    with aws_errors(f"looking up security group {value}"):
        groups = session.client("ec2").describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [value]}]
        )["SecurityGroups"]
    if not groups:
        raise NotFoundError(
            f"security group {value!r} not found in {session.region}",
            hint="pass an sg-... id or an existing group name",
        )
    return str(groups[0]["GroupId"])


SSH_GROUP = "runctl-ssh"


def ensure_ssh_group(session: AwsSession, cidr: str) -> str:
    """The ``runctl-ssh`` group (tcp/22 from ``cidr``) in the default VPC, created once."""
    ec2 = session.client("ec2")
    with aws_errors("preparing the runctl-ssh security group"):
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise UsageError(
                f"no default VPC in {session.region}",
                hint="pass --security-group (and make sure the subnet assigns public IPs)",
            )
        vpc_id = vpcs[0]["VpcId"]
        groups = ec2.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [SSH_GROUP]},
                     {"Name": "vpc-id", "Values": [vpc_id]}]
        )["SecurityGroups"]  # fmt: skip
        if groups:
            return str(groups[0]["GroupId"])
        group_id = str(
            ec2.create_security_group(
                GroupName=SSH_GROUP,
                Description="runctl: SSH access to training instances",
                VpcId=vpc_id,
                TagSpecifications=[{"ResourceType": "security-group",
                                    "Tags": [{"Key": MANAGED, "Value": "true"}]}],
            )["GroupId"]
        )  # fmt: skip
        ec2.authorize_security_group_ingress(
            GroupId=group_id,
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22,
                            "IpRanges": [{"CidrIp": cidr, "Description": "runctl ssh"}]}],
        )  # fmt: skip
    return group_id


def count_running(session: AwsSession) -> int:
    return len(describe_many(session, [{"Name": "instance-state-name", "Values": ["running"]}]))


# ------------------------------------------- leftovers besides instances (reconcile, cleanup)

_OPEN_SPOT_STATES = ["open", "active"]


def list_spot_requests(session: AwsSession) -> list[dict[str, Any]]:
    """runctl's spot requests (tag ``runctl:managed``) that are still open or active."""
    with aws_errors("listing spot requests"):
        found = session.client("ec2").describe_spot_instance_requests(
            Filters=[{"Name": f"tag:{MANAGED}", "Values": ["true"]},
                     {"Name": "state", "Values": _OPEN_SPOT_STATES}]
        )["SpotInstanceRequests"]  # fmt: skip
    return [r for r in found if r.get("State") in _OPEN_SPOT_STATES]


def list_key_pairs(session: AwsSession) -> list[dict[str, Any]]:
    """Key pairs runctl imported: named ``runctl-<hash>`` or tagged ``runctl:managed``."""
    with aws_errors("listing key pairs"):
        pairs = session.client("ec2").describe_key_pairs()["KeyPairs"]
    return [
        p for p in pairs
        if str(p.get("KeyName", "")).startswith("runctl-") or tags_of(p).get(MANAGED) == "true"
    ]  # fmt: skip
