"""``aws create``: pick the AMI, price the type, launch spot or on-demand, tag and record it.

Spot asks for at most the on-demand price (unless ``--spot-max-price``). When spot cannot be
had, the fallback to on-demand states what it costs more per hour and needs a yes: from the
prompt when interactive, ``--yes`` otherwise; ``--no-fallback`` never falls back.
"""

from __future__ import annotations

import getpass
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runctl.errors import ConflictError, NoCapacityError, UsageError
from runctl.models import Instance
from runctl.providers.aws import ami as amis
from runctl.providers.aws import ec2, pricing, spot
from runctl.providers.aws.provider import AWSProvider
from runctl.providers.aws.session import aws_errors

Progress = Callable[[str], None]
Confirm = Callable[[str], bool]
_PROJECT_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_RUNNING, WARN_RUNNING = 50, 10


@dataclass
class CreateOptions:
    instance_type: str
    spot: bool = False
    spot_max_price: float | None = None
    no_fallback: bool = False
    yes: bool = False
    key_name: str | None = None
    security_group: str | None = None
    ami_id: str | None = None
    root_volume_gb: int | None = None
    data_volume_gb: int | None = None
    project: str | None = None
    iam_instance_profile: str | None = None
    availability_zone: str | None = None


@dataclass
class Created:
    instance: Instance
    ami: amis.AmiInfo
    spot: bool
    hourly_usd: float | None
    on_demand: pricing.Price | None
    fallback_reason: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        extra = self.instance.extra
        return {
            "instance_id": self.instance.instance_id,
            "name": self.instance.name,
            "instance_type": extra.get("instance_type"),
            "region": extra.get("region"),
            "state": str(self.instance.state),
            "public_ip": extra.get("public_ip"),
            "private_ip": extra.get("private_ip"),
            "market": "spot" if self.spot else "on-demand",
            "hourly_usd": self.hourly_usd,
            "on_demand_hourly_usd": self.on_demand.hourly_usd if self.on_demand else None,
            "price_source": self.on_demand.source if self.on_demand else None,
            "ami": {"image_id": self.ami.image_id, "name": self.ami.name,
                    "source": self.ami.source, "root_device": self.ami.root_device_name},
            "ssh_user": self.instance.ssh.user if self.instance.ssh else None,
            "fallback_reason": self.fallback_reason,
            "tags": self.instance.tags,
        }  # fmt: skip


def project_name(value: str | None, default: str) -> str:
    name = value or re.sub(r"[^A-Za-z0-9._-]+", "-", default).strip("-") or "runctl-project"
    if not _PROJECT_RE.match(name):
        raise UsageError(
            f"invalid project name {name!r}", hint="use up to 64 of A-Z a-z 0-9 . _ -"
        )
    return name


def user_data(login_user: str, data_volume: bool) -> str:
    """Boot script: python3 and rsync for the agent and sync, and the data volume at /mnt/data."""
    lines = [
        "#!/bin/bash",
        "exec >>/var/log/runctl-bootstrap.log 2>&1",
        "for p in python3 rsync; do command -v $p >/dev/null && continue",
        "  (command -v dnf >/dev/null && dnf -y install $p) ||"
        " (apt-get update -q && apt-get install -y -q $p); done",
    ]
    if data_volume:
        lines += [
            'root=$(lsblk -no PKNAME "$(findmnt -no SOURCE /)")',
            "for dev in $(lsblk -dpno NAME,TYPE | awk '$2==\"disk\"{print $1}'); do",
            '  [ "$dev" = "/dev/$root" ] && continue',
            '  lsblk -no MOUNTPOINT "$dev" | grep -q . && continue',
            '  blkid "$dev" >/dev/null || mkfs.ext4 -q "$dev"',
            f'  mkdir -p /mnt/data && mount "$dev" /mnt/data && chown {login_user}: /mnt/data',
            '  uuid=$(blkid -s UUID -o value "$dev")',
            '  echo "UUID=$uuid /mnt/data ext4 defaults,nofail 0 2" >> /etc/fstab; break',
            "done",
        ]
    return "\n".join(lines) + "\n"


def create_instance(
    provider: AWSProvider,
    opts: CreateOptions,
    progress: Progress,
    confirm: Confirm | None,
) -> Created:
    """Launch and record one instance. ``confirm`` None means non-interactive (needs --yes)."""
    session = provider.session()
    config = provider.runtime.config
    running = ec2.count_running(session)
    if running >= MAX_RUNNING:
        raise ConflictError(
            f"{running} instances already run in {session.region}; refusing to add more",
            hint="terminate some (`runctl aws terminate ID`) before creating another",
        )
    if running >= WARN_RUNNING:
        progress(f"warning: {running} instances already running in {session.region}")
    info = amis.describe_type(session, opts.instance_type)
    ami = amis.resolve_ami(session, config, info, opts.ami_id)
    progress(f"AMI {ami.image_id} ({ami.name or 'unnamed'}) from {ami.source}")
    project = project_name(opts.project or config.get("defaults.project"), Path.cwd().name)
    user = re.sub(r"[^A-Za-z0-9._-]+", "-", getpass.getuser()) or "unknown"
    key_name = opts.key_name or config.get("aws.key_name") or ""
    if not key_name:
        key_name = ec2.ensure_key_pair(session, _pub(provider.ensure_local_key()))
    group = opts.security_group or config.get("aws.security_group")
    groups = [
        ec2.resolve_security_group(session, group)
        if group
        else ec2.ensure_ssh_group(session, config.get("aws.ssh_cidr"))
    ]
    token = secrets.token_hex(8)
    default_root = 100 if info.is_gpu else 30
    root_gb = max(opts.root_volume_gb or default_root, ami.root_gb)
    if opts.root_volume_gb and opts.root_volume_gb < ami.root_gb:
        progress(f"note: root volume raised to {ami.root_gb} GB (the AMI's snapshot size)")
    profile = opts.iam_instance_profile or config.get("aws.iam_instance_profile") or None
    request = ec2.LaunchRequest(
        instance_type=opts.instance_type,
        image_id=ami.image_id,
        root_device=ami.root_device_name,
        root_gb=root_gb,
        tags=ec2.runctl_tags(
            f"runctl-{user}-{project}-{token[:8]}",
            project,
            user,
            **{ec2.LAUNCH: token, ec2.SSH_USER: ami.login_user},
        ),  # fmt: skip
        key_name=key_name,
        security_group_ids=groups,
        iam_profile=profile,
        data_gb=opts.data_volume_gb,
        user_data=user_data(ami.login_user, bool(opts.data_volume_gb)),
        availability_zone=opts.availability_zone,
    )
    on_demand = pricing.on_demand_price(session, opts.instance_type)
    fallback_reason = None
    raw: dict[str, Any] | None = None
    hourly = on_demand.hourly_usd if on_demand else None
    if opts.spot:
        raw, fallback_reason, spot_hourly = _try_spot(provider, request, opts, on_demand,
                                                      progress, confirm)  # fmt: skip
        if raw is not None:
            hourly = spot_hourly
    is_spot = raw is not None
    if raw is None:
        raw = ec2.run_instance(session, request)
    instance = provider.record(raw, session.region, hourly)
    if is_spot and not instance.extra.get("spot"):
        instance.extra["spot"] = True
        provider.runtime.store.record_instance(instance, spot=True)
    provider.runtime.store.add_event(
        "aws.created", instance.instance_id,
        {"type": opts.instance_type, "spot": is_spot, "hourly_usd": hourly,
         "region": session.region, "ami": ami.image_id},
    )  # fmt: skip
    return Created(instance, ami, is_spot, hourly, on_demand, fallback_reason)


def availability_zones(provider: AWSProvider) -> list[str]:
    """The zones of the provider's region that are available now, sorted."""
    session = provider.session()
    with aws_errors(f"listing availability zones in {session.region}"):
        found = session.client("ec2").describe_availability_zones(
            Filters=[{"Name": "state", "Values": ["available"]}]
        )["AvailabilityZones"]
    return sorted(z["ZoneName"] for z in found)


def _pub(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def _try_spot(
    provider: AWSProvider,
    request: ec2.LaunchRequest,
    opts: CreateOptions,
    on_demand: pricing.Price | None,
    progress: Progress,
    confirm: Confirm | None,
) -> tuple[dict[str, Any] | None, str | None, float | None]:
    """(raw instance or None to fall back, why spot failed, the spot hourly price)."""
    session = provider.session()
    max_price = opts.spot_max_price or (on_demand.hourly_usd if on_demand else None)
    if max_price is None:
        raise UsageError(
            f"no on-demand price known for {opts.instance_type} to cap the spot bid",
            hint="pass --spot-max-price USD_PER_HOUR",
        )
    current = pricing.spot_price(session, opts.instance_type)
    progress(
        f"requesting spot {opts.instance_type}: max ${max_price:.4f}/h"
        + (f", current ${current:.4f}/h" if current is not None else "")
    )
    timeout = float(provider.runtime.config.get("aws.spot_timeout_s"))
    try:
        raw = spot.request_spot(session, request, max_price, timeout,
                                on_poll=lambda s: progress(f"  spot request: {s}"))  # fmt: skip
        return raw, None, current if current is not None else max_price
    except NoCapacityError as exc:
        if opts.no_fallback:
            raise
        reason = exc.message
    od = on_demand.hourly_usd if on_demand else None
    compare = ""
    if od is not None:
        base = current if current is not None else max_price
        compare = f": on-demand ${od:.4f}/h vs spot ${base:.4f}/h (+${od - base:.4f}/h)"
    question = f"spot unavailable ({reason}); launch on-demand instead{compare}?"
    progress(question)
    if opts.yes:
        return None, reason, None
    if confirm is None:
        raise NoCapacityError(
            f"spot capacity unavailable and on-demand needs confirmation{compare}",
            hint="pass --yes to accept on-demand, or --no-fallback to fail without asking",
        )
    if not confirm("launch on-demand?"):
        raise NoCapacityError("spot unavailable; on-demand declined", hint="retry later")
    return None, reason, None
