"""``runctl aws ebs``: volumes and snapshots for datasets and checkpoints."""

from __future__ import annotations

import getpass
from typing import Any

import click

from runctl.cli.aws_options import make_provider, region_option, transport_option
from runctl.cli.output import emit, json_option, progress, runtime, table


def _tags(name: str, project: str | None, **extra: str) -> dict[str, str]:
    from runctl.providers.aws import ec2

    user = getpass.getuser()
    proj = project or runtime().config.get("defaults.project") or ""
    return ec2.runctl_tags(name, proj, user, **extra)


def _volume_text(vol: dict[str, Any], verb: str) -> str:
    where = f" on {vol['attached_to']} ({vol['device']})" if vol.get("attached_to") else ""
    return f"{verb} {vol['volume_id']}: {vol['size_gb']} GB {vol['volume_type']} " \
           f"in {vol['availability_zone']}, {vol['state']}{where}"  # fmt: skip


@click.group()
def ebs() -> None:
    """EBS volumes and snapshots (create, list, attach, detach, delete, snapshot, restore).

    \b
    Examples:
      runctl aws ebs create --size 500 --name data --persistent
      runctl aws ebs attach vol-0abc123 --instance-id i-0abc123
      runctl aws ebs list
    """


@ebs.command(name="create")
@click.option("--size", type=click.IntRange(min=1), required=True, metavar="GB")
@click.option(
    "--volume-type",
    default="gp3",
    show_default=True,
    type=click.Choice(["gp3", "gp2", "io2", "io1", "st1", "sc1"]),
)
@click.option(
    "--availability-zone",
    "--az",
    "zone",
    help="Zone (default: the region's first; must match the instance's).",
)
@click.option("--iops", type=click.IntRange(min=100), help="Provisioned IOPS (gp3/io1/io2).")
@click.option(
    "--throughput", type=click.IntRange(min=125), metavar="MIBS", help="gp3 throughput in MiB/s."
)
@click.option("--name", help="Name tag (unique among runctl volumes).")
@click.option("--encrypted", is_flag=True, help="Encrypt with the account's default KMS key.")
@click.option("--persistent", is_flag=True, help="Protect from delete without --force.")
@click.option("--instance-id", help="Attach to this instance once created.")
@click.option("--device", default="/dev/sdf", show_default=True)
@click.option("--project-name", help="Project tag.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the volume id on stdout.")
@click.option("--output", "output_fmt", hidden=True,
              type=click.Choice(["volume-id", "json", "table", "text"], case_sensitive=False),
              help="Old spelling: volume-id = --quiet, json = --json.")  # fmt: skip
@region_option
@json_option
def ebs_create(size: int, volume_type: str, zone: str | None, iops: int | None,
               throughput: int | None, name: str | None, encrypted: bool, persistent: bool,
               instance_id: str | None, device: str, project_name: str | None,
               region: str | None, quiet: bool = False,
               output_fmt: str | None = None) -> None:  # fmt: skip
    """Create a volume (tagged runctl:managed), optionally attached to an instance.

    \b
    Examples:
      runctl aws ebs create --size 500 --name data --persistent
      runctl aws ebs create --size 200 --volume-type gp3 --az us-east-1a
    """
    from runctl.cli.seed_compat import legacy_output
    from runctl.providers.aws import ebs as vols
    from runctl.providers.aws import ec2

    quiet = legacy_output(output_fmt, "volume-id", "--quiet") or quiet
    provider = make_provider(region)
    session = provider.session(instance_id)
    if instance_id and not zone:
        zone = ec2.require(session, instance_id)["Placement"]["AvailabilityZone"]
    spec = vols.VolumeSpec(size, volume_type, zone, iops, throughput, name, encrypted,
                           persistent)  # fmt: skip
    raw = vols.create_volume(session, spec, _tags(name or "runctl-volume", project_name))
    volume_id = raw["VolumeId"]
    raw = vols.wait_volume(session, volume_id, "available")
    if instance_id:
        raw = vols.attach(session, volume_id, instance_id, device)
    vol = vols.volume_json(raw)
    emit(vol, volume_id if quiet else _volume_text(vol, "created"))


@ebs.command(name="list")
@click.option("--all", "include_all", is_flag=True, help="Also volumes runctl did not create.")
@click.option("--name", help="Only volumes with this Name tag.")
@click.option("--instance-id", help="Only volumes attached to this instance.")
@click.option("-d", "--detailed", is_flag=True, help="Show IOPS, throughput, snapshot.")
@region_option
@json_option
def ebs_list(include_all: bool, name: str | None, instance_id: str | None, detailed: bool,
             region: str | None) -> None:  # fmt: skip
    """List runctl's volumes (--all for every volume in the region).

    \b
    Examples:
      runctl aws ebs list
      runctl aws ebs list --instance-id i-0abc123 -d
    """
    from runctl.providers.aws import ebs as vols

    session = make_provider(region).session()
    found = [vols.volume_json(v) for v in vols.list_volumes(session, include_all=include_all,
                                                            name=name)]  # fmt: skip
    if instance_id:
        found = [v for v in found if v["attached_to"] == instance_id]

    def text() -> None:
        if not found:
            click.echo("no volumes")
            return
        headers = ["volume", "name", "size gb", "type", "state", "zone", "attached", "persist"]
        rows: list[list[Any]] = [
            [v["volume_id"], v["name"], v["size_gb"], v["volume_type"], v["state"],
             v["availability_zone"], v["attached_to"] or "", "yes" if v["persistent"] else ""]
            for v in found
        ]  # fmt: skip
        if detailed:
            headers += ["iops", "mib/s", "snapshot"]
            for row, v in zip(rows, found, strict=True):
                row += [v["iops"], v["throughput"], v["snapshot_id"]]
        table(headers, rows)

    emit({"volumes": found}, text)


@ebs.command(name="attach")
@click.argument("volume_id")
@click.option("--instance-id", required=True)
@click.option("--device", default="/dev/sdf", show_default=True)
@region_option
@json_option
def ebs_attach(volume_id: str, instance_id: str, device: str, region: str | None) -> None:
    """Attach VOLUME_ID to an instance in the same zone; waits until attached.

    \b
    Examples:
      runctl aws ebs attach vol-0abc123 --instance-id i-0abc123
      runctl aws ebs attach vol-0abc123 --instance-id i-0abc123 --device /dev/sdg
    """
    from runctl.providers.aws import ebs as vols

    session = make_provider(region).session(instance_id)
    vol = vols.volume_json(vols.attach(session, volume_id, instance_id, device))
    emit(vol, _volume_text(vol, "attached"))
    progress(
        "on the instance: new volume? `sudo mkfs.ext4 DEV`; then `sudo mount DEV /mnt/data`"
        " (DEV: `lsblk -o NAME,SERIAL`, the serial is the volume id without '-')"
    )


@ebs.command(name="detach")
@click.argument("volume_id")
@click.option("--force", is_flag=True, help="Force-detach (risks data loss if mounted).")
@region_option
@json_option
def ebs_detach(volume_id: str, force: bool, region: str | None) -> None:
    """Detach VOLUME_ID from its instance; waits until available.

    \b
    Examples:
      runctl aws ebs detach vol-0abc123
    """
    from runctl.providers.aws import ebs as vols

    session = make_provider(region).session()
    vol = vols.volume_json(vols.detach(session, volume_id, force))
    emit(vol, _volume_text(vol, "detached"))


@ebs.command(name="delete")
@click.argument("volume_id")
@click.option("--force", is_flag=True, help="Delete even if persistent; detach first.")
@region_option
@json_option
def ebs_delete(volume_id: str, force: bool, region: str | None) -> None:
    """Delete VOLUME_ID (refuses persistent or attached volumes without --force).

    \b
    Examples:
      runctl aws ebs delete vol-0abc123
      runctl aws ebs delete vol-0abc123 --force
    """
    from runctl.providers.aws import ebs as vols

    session = make_provider(region).session()
    snapshots = vols.delete(session, volume_id, force)
    if snapshots:
        progress(f"note: snapshot(s) of it remain: {', '.join(snapshots)}")
    emit({"volume_id": volume_id, "deleted": True, "snapshots": snapshots},
         f"deleted {volume_id}")  # fmt: skip


@ebs.command(name="snapshot")
@click.argument("volume_id")
@click.option("--description", default="runctl snapshot", show_default=True)
@click.option("--name", help="Name tag of the snapshot.")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the snapshot completes.")
@region_option
@json_option
def ebs_snapshot(volume_id: str, description: str, name: str | None, wait_: bool,
                 region: str | None) -> None:  # fmt: skip
    """Snapshot VOLUME_ID.

    \b
    Examples:
      runctl aws ebs snapshot vol-0abc123 --name before-cleanup --wait
    """
    import time

    from runctl.providers.aws import ebs as vols

    session = make_provider(region).session()
    raw = vols.snapshot(session, volume_id, description,
                        _tags(name or f"{volume_id}-snapshot", None))  # fmt: skip
    while wait_ and raw.get("State") == "pending":
        time.sleep(vols.POLL_S * 5)
        raw = vols.get_snapshot(session, raw["SnapshotId"])
    snap = vols.snapshot_json(raw)
    emit(snap, f"snapshot {snap['snapshot_id']} of {volume_id}: {snap['state']}")


@ebs.command(name="snapshot-list")
@click.option("--volume-id", help="Only snapshots of this volume.")
@click.option("-d", "--detailed", is_flag=True, help="Show start time and description.")
@region_option
@json_option
def ebs_snapshot_list(volume_id: str | None, detailed: bool, region: str | None) -> None:
    """List your snapshots.

    \b
    Examples:
      runctl aws ebs snapshot-list
      runctl aws ebs snapshot-list --volume-id vol-0abc123
    """
    from runctl.providers.aws import ebs as vols

    session = make_provider(region).session()
    found = [vols.snapshot_json(s) for s in vols.list_snapshots(session, volume_id)]

    def text() -> None:
        headers = ["snapshot", "volume", "size gb", "state", "name"]
        rows = [
            [s["snapshot_id"], s["volume_id"], s["size_gb"], s["state"], s["name"]]
            + ([s["started"], s["description"]] if detailed else [])
            for s in found
        ]
        table(headers + (["started", "description"] if detailed else []), rows)

    emit({"snapshots": found}, text)


@ebs.command(name="restore")
@click.argument("snapshot_id")
@click.option(
    "--size", type=click.IntRange(min=1), metavar="GB", help="Size (default: the snapshot's)."
)
@click.option(
    "--volume-type",
    default="gp3",
    show_default=True,
    type=click.Choice(["gp3", "gp2", "io2", "io1", "st1", "sc1"]),
)
@click.option(
    "--availability-zone",
    "--az",
    "zone",
    help="Zone (default: the instance's with --instance-id, else the first).",
)
@click.option("--instance-id", help="Create in this instance's zone and attach it.")
@click.option("--device", default="/dev/sdf", show_default=True)
@click.option("--name", help="Name tag.")
@region_option
@json_option
def ebs_restore(snapshot_id: str, size: int | None, volume_type: str, zone: str | None,
                instance_id: str | None, device: str, name: str | None,
                region: str | None) -> None:  # fmt: skip
    """Create a volume from SNAPSHOT_ID (blocks load lazily: see `pre-warm`).

    \b
    Examples:
      runctl aws ebs restore snap-0abc123 --az us-east-1a --name data-copy
    """
    from runctl.providers.aws import ebs as vols
    from runctl.providers.aws import ec2

    session = make_provider(region).session(instance_id)
    snap = vols.get_snapshot(session, snapshot_id)
    if instance_id and not zone:
        zone = ec2.require(session, instance_id)["Placement"]["AvailabilityZone"]
    if size is not None and size < int(snap.get("VolumeSize", 0)):
        from runctl.errors import UsageError

        raise UsageError(f"--size {size} is smaller than the snapshot ({snap['VolumeSize']} GB)")
    spec = vols.VolumeSpec(size, volume_type, zone, name=name, snapshot_id=snapshot_id)
    tags = _tags(name or f"{snapshot_id}-restored", None, **{"runctl:restored-from": snapshot_id})
    raw = vols.wait_volume(session, vols.create_volume(session, spec, tags)["VolumeId"],
                           "available")  # fmt: skip
    if instance_id:
        raw = vols.attach(session, raw["VolumeId"], instance_id, device)
    vol = vols.volume_json(raw)
    emit(vol, _volume_text(vol, "restored"))


@ebs.command(name="pre-warm")
@click.argument("volume_id")
@click.argument("s3_source", required=False)
@click.option("--instance-id", required=True, help="Instance the volume is (or gets) attached to.")
@click.option("--mount-point", default="/mnt/data", show_default=True)
@click.option("--device", default="/dev/sdf", show_default=True)
@transport_option
@region_option
@json_option
def ebs_pre_warm(volume_id: str, s3_source: str | None, instance_id: str, mount_point: str,
                 device: str, transport: str | None, region: str | None) -> None:  # fmt: skip
    """Read VOLUME_ID fully once (restored volumes load lazily), or fill it from S3_SOURCE.

    \b
    Examples:
      runctl aws ebs pre-warm vol-0abc123 s3://my-bucket/datasets/imagenet --instance-id i-0abc123
    """
    from runctl.errors import CommandFailedError
    from runctl.providers.aws import ebs as vols
    from runctl.storage.s3 import parse_uri

    provider = make_provider(region, transport)
    session = provider.session(instance_id)
    source = str(parse_uri(s3_source)) if s3_source else None
    volume = vols.get_volume(session, volume_id)
    attached = (volume.get("Attachments") or [{}])[0].get("InstanceId")
    if attached != instance_id:
        progress(f"attaching {volume_id} to {instance_id} ...")
        vols.attach(session, volume_id, instance_id, device)
    instance = provider.require_instance(instance_id)
    cfg = runtime().config
    flags = ["--region", session.region]
    if cfg.get("aws.endpoint_url"):
        flags += ["--endpoint-url", cfg.get("aws.endpoint_url")]
    argv = vols.prewarm_script(volume_id, mount_point, source, cfg.get("aws.host_cli"), flags)
    progress(f"{'filling' if source else 'reading'} {volume_id} on {instance_id} ...")
    done = provider.connect(instance).run(argv, timeout=None)
    output = done.text.strip()
    err = done.stderr.decode(errors="replace").strip()
    if done.returncode != 0:
        raise CommandFailedError(
            f"pre-warm of {volume_id} failed on {instance_id}: "
            f"{(err or output).splitlines()[-1] if (err or output) else done.returncode}",
            exit_code=done.returncode,
            hint="the volume must be attached to that instance; filling needs the AWS CLI "
            "(aws.host_cli) and S3 read access on the host",
        )
    emit(
        {
            "volume_id": volume_id,
            "instance_id": instance_id,
            "source": source,
            "mount_point": mount_point if source else None,
            "output": output,
        },
        f"pre-warmed {volume_id}" + (f" from {source} at {mount_point}" if source else ""),
    )
