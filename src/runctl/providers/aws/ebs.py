"""EBS volumes and snapshots: create (gp3 limits checked), attach, detach, delete, snapshot.

Safety: attach checks the availability zone and that the volume is free; delete refuses
``runctl:persistent``/``runctl:protected`` and attached volumes unless forced (force detaches
first). Detach always names the instance (moto and some compatibles need it). The default AZ
is the region's first available one (never a made-up ``<region>-1a``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runctl.errors import ConflictError, NotFoundError, ProviderError, UsageError
from runctl.providers.aws import ec2
from runctl.providers.aws.session import AwsSession, aws_errors

VOLUME_TYPES = ("gp3", "gp2", "io2", "io1", "st1", "sc1")
GP3 = {"size": (1, 65536), "iops": (3000, 80000), "throughput": (125, 2000)}
MAX_IOPS_PER_GIB, MAX_MIBS_PER_IOPS = 500, 0.25
POLL_S = 2.0


@dataclass
class VolumeSpec:
    size_gb: int | None
    volume_type: str = "gp3"
    availability_zone: str | None = None
    iops: int | None = None
    throughput: int | None = None
    name: str | None = None
    encrypted: bool = False
    persistent: bool = False
    snapshot_id: str | None = None


def check_spec(spec: VolumeSpec) -> None:
    """UsageError for values AWS would reject (gp3 limits from the current API model)."""
    if spec.volume_type not in VOLUME_TYPES:
        raise UsageError(f"unknown volume type {spec.volume_type!r}",
                         hint=f"use one of {', '.join(VOLUME_TYPES)}")  # fmt: skip
    if spec.throughput is not None and spec.volume_type != "gp3":
        raise UsageError("--throughput only applies to gp3")
    if spec.iops is not None and spec.volume_type not in ("gp3", "io1", "io2"):
        raise UsageError("--iops only applies to gp3, io1 and io2")
    if spec.volume_type != "gp3":
        return
    low, high = GP3["size"]
    if spec.size_gb is not None and not low <= spec.size_gb <= high:
        raise UsageError(f"gp3 size must be {low}-{high} GiB, got {spec.size_gb}")
    if spec.iops is not None:
        low, high = GP3["iops"]
        if not low <= spec.iops <= high:
            raise UsageError(f"gp3 IOPS must be {low}-{high}, got {spec.iops}")
        if spec.size_gb and spec.iops > 3000 and spec.iops > spec.size_gb * MAX_IOPS_PER_GIB:
            raise UsageError(
                f"{spec.iops} IOPS needs at least {-(-spec.iops // MAX_IOPS_PER_GIB)} GiB "
                f"(at most {MAX_IOPS_PER_GIB} IOPS per GiB)"
            )
    if spec.throughput is not None:
        low, high = GP3["throughput"]
        if not low <= spec.throughput <= high:
            raise UsageError(f"gp3 throughput must be {low}-{high} MiB/s, got {spec.throughput}")
        iops = spec.iops or 3000
        if spec.throughput > 125 and spec.throughput > iops * MAX_MIBS_PER_IOPS:
            raise UsageError(
                f"{spec.throughput} MiB/s needs at least {int(spec.throughput / 0.25)} IOPS "
                "(0.25 MiB/s per IOPS); raise --iops"
            )


def default_zone(session: AwsSession) -> str:
    with aws_errors("listing availability zones"):
        zones = session.client("ec2").describe_availability_zones(
            Filters=[{"Name": "state", "Values": ["available"]}]
        )["AvailabilityZones"]
    if not zones:
        raise ProviderError(f"no available zone in {session.region}")
    return str(sorted(z["ZoneName"] for z in zones)[0])


def volume_json(raw: dict[str, Any]) -> dict[str, Any]:
    tags = ec2.tags_of(raw)
    attachment = (raw.get("Attachments") or [{}])[0]
    return {
        "volume_id": raw["VolumeId"],
        "name": tags.get("Name", ""),
        "size_gb": raw.get("Size"),
        "volume_type": raw.get("VolumeType"),
        "iops": raw.get("Iops"),
        "throughput": raw.get("Throughput"),
        "state": raw.get("State"),
        "availability_zone": raw.get("AvailabilityZone"),
        "attached_to": attachment.get("InstanceId"),
        "device": attachment.get("Device"),
        "snapshot_id": raw.get("SnapshotId") or None,
        "encrypted": bool(raw.get("Encrypted")),
        "persistent": tags.get(ec2.PERSISTENT) == "true",
        "managed": tags.get(ec2.MANAGED) == "true",
    }


def list_volumes(
    session: AwsSession, *, include_all: bool = False, name: str | None = None
) -> list[dict[str, Any]]:
    filters = [] if include_all else [{"Name": f"tag:{ec2.MANAGED}", "Values": ["true"]}]
    if name:
        filters.append({"Name": "tag:Name", "Values": [name]})
    with aws_errors("listing volumes"):
        pages = session.client("ec2").get_paginator("describe_volumes").paginate(Filters=filters)
        return [v for page in pages for v in page["Volumes"]]


def get_volume(session: AwsSession, volume_id: str) -> dict[str, Any]:
    if not volume_id.startswith("vol-"):
        raise UsageError(f"invalid volume id {volume_id!r}", hint="volume ids look like vol-0123")
    with aws_errors(f"describing {volume_id}"):
        found = session.client("ec2").describe_volumes(VolumeIds=[volume_id])["Volumes"]
    if not found:
        raise NotFoundError(f"volume {volume_id} not found", hint="see `runctl aws ebs list`")
    volume: dict[str, Any] = found[0]
    return volume


def create_volume(session: AwsSession, spec: VolumeSpec, tags: dict[str, str]) -> dict[str, Any]:
    """Create and tag a volume; refuses a Name that a runctl volume already has."""
    check_spec(spec)
    if spec.name and list_volumes(session, name=spec.name):
        raise ConflictError(f"a runctl volume named {spec.name!r} already exists",
                            hint="pick another --name or reuse that volume")  # fmt: skip
    if spec.persistent:
        tags = {**tags, ec2.PERSISTENT: "true", ec2.PROTECTED: "true"}
    args: dict[str, Any] = {
        "AvailabilityZone": spec.availability_zone or default_zone(session),
        "VolumeType": spec.volume_type,
        "Encrypted": spec.encrypted,
        "TagSpecifications": [{"ResourceType": "volume", "Tags": ec2.tag_list(tags)}],
    }
    if spec.size_gb is not None:
        args["Size"] = spec.size_gb
    if spec.snapshot_id:
        args["SnapshotId"] = spec.snapshot_id
    if spec.iops is not None:
        args["Iops"] = spec.iops
    if spec.throughput is not None:
        args["Throughput"] = spec.throughput
    with aws_errors("creating the volume"):
        raw: dict[str, Any] = session.client("ec2").create_volume(**args)
    return raw


def wait_volume(
    session: AwsSession, volume_id: str, wanted: str, timeout_s: float = 300,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while True:
        raw = get_volume(session, volume_id)
        if raw.get("State") == wanted:
            return raw
        if raw.get("State") == "error" or time.monotonic() >= deadline:
            raise ProviderError(f"{volume_id} is {raw.get('State')}, expected {wanted}")
        sleep(POLL_S)


def attach(session: AwsSession, volume_id: str, instance_id: str, device: str) -> dict[str, Any]:
    volume = get_volume(session, volume_id)
    instance = ec2.require(session, instance_id)
    zone = instance.get("Placement", {}).get("AvailabilityZone")
    if volume.get("AvailabilityZone") != zone:
        raise UsageError(
            f"{volume_id} is in {volume.get('AvailabilityZone')} but {instance_id} in {zone}",
            hint="snapshot it and restore the snapshot in the instance's zone",
        )
    if volume.get("Attachments"):
        other = volume["Attachments"][0].get("InstanceId")
        raise ConflictError(
            f"{volume_id} is already attached to {other}",
            hint=f"detach it first: runctl aws ebs detach {volume_id}",
        )
    with aws_errors(f"attaching {volume_id}"):
        session.client("ec2").attach_volume(
            VolumeId=volume_id, InstanceId=instance_id, Device=device
        )
    return wait_volume(session, volume_id, "in-use")


def detach(session: AwsSession, volume_id: str, force: bool = False) -> dict[str, Any]:
    volume = get_volume(session, volume_id)
    if not volume.get("Attachments"):
        return volume
    instance_id = volume["Attachments"][0]["InstanceId"]
    with aws_errors(f"detaching {volume_id}"):
        session.client("ec2").detach_volume(
            VolumeId=volume_id, InstanceId=instance_id, Force=force
        )
    return wait_volume(session, volume_id, "available")


def delete(session: AwsSession, volume_id: str, force: bool = False) -> list[str]:
    """Delete the volume; returns ids of snapshots that remain of it (worth a warning)."""
    volume = get_volume(session, volume_id)
    tags = ec2.tags_of(volume)
    protected = tags.get(ec2.PERSISTENT) == "true" or tags.get(ec2.PROTECTED) == "true"
    if protected and not force:
        raise ConflictError(f"{volume_id} is marked persistent/protected",
                            hint="pass --force to delete it anyway")  # fmt: skip
    if volume.get("Attachments"):
        if not force:
            other = volume["Attachments"][0].get("InstanceId")
            raise ConflictError(
                f"{volume_id} is attached to {other}",
                hint="detach it first, or pass --force (detaches, then deletes)",
            )
        detach(session, volume_id)
    snapshots = list_snapshots(session, volume_id)
    with aws_errors(f"deleting {volume_id}"):
        session.client("ec2").delete_volume(VolumeId=volume_id)
    return [s["SnapshotId"] for s in snapshots]


def snapshot(
    session: AwsSession, volume_id: str, description: str, tags: dict[str, str]
) -> dict[str, Any]:
    get_volume(session, volume_id)
    with aws_errors(f"snapshotting {volume_id}"):
        raw: dict[str, Any] = session.client("ec2").create_snapshot(
            VolumeId=volume_id,
            Description=description,
            TagSpecifications=[{"ResourceType": "snapshot", "Tags": ec2.tag_list(tags)}],
        )
    return raw


def list_snapshots(session: AwsSession, volume_id: str | None = None) -> list[dict[str, Any]]:
    filters = [{"Name": "volume-id", "Values": [volume_id]}] if volume_id else []
    with aws_errors("listing snapshots"):
        pages = (
            session.client("ec2")
            .get_paginator("describe_snapshots")
            .paginate(OwnerIds=["self"], Filters=filters)
        )
        return [s for page in pages for s in page["Snapshots"]]


def snapshot_json(raw: dict[str, Any]) -> dict[str, Any]:
    tags = ec2.tags_of(raw)
    return {
        "snapshot_id": raw["SnapshotId"],
        "volume_id": raw.get("VolumeId"),
        "size_gb": raw.get("VolumeSize"),
        "state": raw.get("State"),
        "progress": raw.get("Progress"),
        "started": str(raw.get("StartTime", "")),
        "description": raw.get("Description", ""),
        "name": tags.get("Name", ""),
        "managed": tags.get(ec2.MANAGED) == "true",
    }


def get_snapshot(session: AwsSession, snapshot_id: str) -> dict[str, Any]:
    if not snapshot_id.startswith("snap-"):
        raise UsageError(f"invalid snapshot id {snapshot_id!r}", hint="snapshot ids: snap-0123")
    with aws_errors(f"describing {snapshot_id}"):
        found = session.client("ec2").describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"]
    if not found:
        raise NotFoundError(f"snapshot {snapshot_id} not found",
                            hint="see `runctl aws ebs snapshot-list`")  # fmt: skip
    snap: dict[str, Any] = found[0]
    return snap


def prewarm_script(volume_id: str, mount_point: str, source: str | None,
                   host_cli: str, cli_flags: list[str]) -> list[str]:  # fmt: skip
    """argv that finds the volume's device on the host by serial, then reads or fills it.

    Without ``source``: read every block once (fio if present, else dd) so a volume restored
    from a snapshot is fully initialised. With ``source``: make a filesystem if the volume is
    blank, mount it at ``mount_point`` and sync the S3 prefix into it.
    """
    serial = volume_id.replace("-", "")
    script = r"""
serial=$1 mnt=$2 src=$3 cli=$4; shift 4
dev=""
for d in /sys/block/*; do
  s=$(cat "$d/device/serial" 2>/dev/null | tr -d ' ')
  case "$s" in "$serial"*) dev=/dev/$(basename "$d");; esac
done
[ -z "$dev" ] && [ -e "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$serial" ] && \
  dev=$(readlink -f "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_$serial")
if [ -z "$dev" ]; then echo "volume $serial is not attached to this host" >&2; exit 3; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
if [ -z "$src" ]; then
  if command -v fio >/dev/null; then
    exec $SUDO fio --filename="$dev" --rw=read --bs=1M --iodepth=32 --ioengine=libaio \
      --direct=1 --name=volume-initialize
  fi
  exec $SUDO dd if="$dev" of=/dev/null bs=1M
fi
$SUDO blkid "$dev" >/dev/null 2>&1 || $SUDO mkfs.ext4 -q "$dev" || exit 4
$SUDO mkdir -p "$mnt"
findmnt -n "$mnt" >/dev/null || $SUDO mount "$dev" "$mnt" || exit 5
$SUDO chown "$(id -u):$(id -g)" "$mnt"
"$cli" s3 sync --no-progress "$@" "$src" "$mnt" && du -sh "$mnt"
"""
    return ["sh", "-c", script, "sh", serial, mount_point, source or "", host_cli, *cli_flags]
