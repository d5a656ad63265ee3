"""``runctl lyceum``: create, train, monitor, download, list, terminate and reap Lyceum VMs.

Lyceum has no stop and no server-side TTL, so ``create --max-duration`` records a deadline and
arms the VM's own watchdog, which deletes the VM through the Lyceum API when the deadline
passes, with runctl closed; ``reap`` deletes every runctl VM past its deadline from here, for a
VM whose watchdog could not be armed (``create --no-wait``) or was disarmed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import click

from runctl.cli import cloud as common
from runctl.cli.output import emit, json_option, progress, runtime, table
from runctl.cli.params import seconds
from runctl.errors import NotSupportedError
from runctl.models import Instance
from runctl.providers.base import Provider
from runctl.runtime import Runtime

CLOUD = common.Cloud(name="lyceum", noun="VM", id_flag="--vm-id")


@click.group()
def lyceum() -> None:
    """Lyceum Cloud GPU VMs over the Lyceum API (key: LYCEUM_API_KEY or lyceum.api_key).

    \b
    Examples:
      runctl lyceum create --wait
      runctl lyceum train --vm-id vm-42 train.py -- --epochs 3
      runctl lyceum terminate --vm-id vm-42
    """


@lyceum.command(name="create")
@click.option("--profile", help="Hardware profile: a100, b200, b300, h100, h200, l40s "
              "(default: lyceum.default_profile; see `runctl lyceum offers`).")  # fmt: skip
@click.option("--gpu-count", type=click.Choice(["1", "2", "4", "8"]), default="1",
              show_default=True)  # fmt: skip
@click.option("--spot", is_flag=True, help="Spot VM: cheaper, may be reclaimed without notice.")
@click.option("--name", help="Name stem; the VM is named runctl-<stem>-<random>.")
@click.option("--max-duration", metavar="DURATION",
              help="The VM deletes itself after this long (e.g. 8h; its watchdog, armed once "
              "it takes SSH; `runctl lyceum reap` as a fallback). Default: "
              "lyceum.max_duration; none if empty.")  # fmt: skip
@click.option("--wait/--no-wait", "wait_", default=True, show_default=True,
              help="Wait until the VM takes SSH.")  # fmt: skip
@click.option("--timeout", type=seconds(), metavar="SECONDS",
              help="How long --wait waits (default: lyceum.wait_timeout_s).")  # fmt: skip
@json_option
def lyceum_create(profile: str | None, gpu_count: str, spot: bool, name: str | None,
                  max_duration: str | None, wait_: bool,
                  timeout: float | None) -> None:  # fmt: skip
    """Create a VM with runctl's SSH key, and record it with its price and deadline.

    \b
    Examples:
      runctl lyceum create --wait
      runctl lyceum create --gpu-count 2 --max-duration 8h
    """
    import dataclasses

    from runctl.core.cloud import record_launch
    from runctl.providers.lyceum.api import VmRequest
    from runctl.providers.naming import new_name

    rt = runtime()
    cfg = rt.config
    duration = max_duration if max_duration is not None else cfg.get("lyceum.max_duration")
    expires_at = None
    if duration:
        seconds = common.parse_duration_s(duration)
        expires_at = (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat(timespec="seconds")
    request = VmRequest(
        name=new_name(name, "vm"),
        hardware_profile=(profile or cfg.get("lyceum.default_profile")).lower(),
        public_key="",  # the provider fills in runctl's key
        gpu_count=int(gpu_count),
        instance_type="spot" if spot else "on-demand",
    )
    provider = CLOUD.provider(rt)
    progress(f"creating {request.instance_type} VM {request.name} "
             f"({request.hardware_profile} x{request.gpu_count}) ...")  # fmt: skip
    instance = provider.create_instance(request)  # type: ignore[attr-defined]
    if expires_at:
        instance = dataclasses.replace(
            instance, extra={**instance.extra, "expires_at": expires_at}
        )
    record_launch(rt, instance, spot=spot)
    if wait_:
        instance = common.wait_ready(rt, CLOUD, provider, instance.instance_id, timeout)
        if duration:
            _arm_deadline(rt, provider, instance, common.parse_duration_s(duration))
    data = common.instance_json(rt, instance)
    emit(data, lambda: common.show_instance(data))


def _arm_deadline(rt: Runtime, provider: Provider, instance: Instance, seconds: float) -> None:
    """The VM's own watchdog deletes it at the deadline; a failure here leaves `reap`."""
    from runctl.core.targets import Target
    from runctl.core.watchdog import WatchdogPolicy, arm
    from runctl.errors import RunctlError

    policy = WatchdogPolicy(max_duration_s=seconds, action="terminate")
    try:
        arm(rt, Target(provider, instance), policy, progress)
    except RunctlError as exc:
        progress(f"warning: could not arm the VM's watchdog ({exc.message}); "
                 "`runctl lyceum reap` deletes it after the deadline")  # fmt: skip


@lyceum.command(name="offers")
@json_option
def lyceum_offers() -> None:
    """List hardware profiles with prices per GPU-hour and the GPU counts available now.

    \b
    Examples:
      runctl lyceum offers
    """
    rt = runtime()
    offers = CLOUD.provider(rt).offers()  # type: ignore[attr-defined]
    rows = [
        {"profile": o.hardware_profile, "instance_type": o.instance_type, "hourly_usd_per_gpu": p,
         "allowed_gpus": list(o.allowed_gpus), "available_gpus": list(o.available_gpus)}
        for o, p in offers
    ]  # fmt: skip

    def text() -> None:
        table(["profile", "type", "$/gpu-h", "available gpu counts"], [
            (r["profile"], r["instance_type"],
             "" if r["hourly_usd_per_gpu"] is None else f"{r['hourly_usd_per_gpu']:.2f}",
             ",".join(map(str, r["available_gpus"])) or "none")
            for r in rows
        ])  # fmt: skip

    emit(rows, text)


@lyceum.command(name="stop")
@CLOUD.id_option
@json_option
def lyceum_stop(instance_id: str) -> None:
    """Explain why Lyceum VMs cannot be stopped (the API has no stop).

    \b
    Examples:
      runctl lyceum stop --vm-id vm-42
    """
    from runctl.providers.base import SupportsStop

    provider = CLOUD.provider(runtime())
    if not isinstance(provider, SupportsStop):
        raise NotSupportedError(
            f"cannot stop {instance_id}: {provider.unsupported['stop']}",
            hint=f"to stop paying, terminate it: `runctl lyceum terminate --vm-id {instance_id}`",
        )
    provider.stop_instance(instance_id)
    emit({"id": instance_id, "stopped": True}, f"stopped {instance_id}")


@lyceum.command(name="reap")
@click.option("--dry-run", is_flag=True, help="Only list the VMs past their deadline.")
@json_option
def lyceum_reap(dry_run: bool) -> None:
    """Delete runctl VMs whose --max-duration deadline has passed.

    \b
    Examples:
      runctl lyceum reap --dry-run
      runctl lyceum reap
    """
    from runctl.core.cloud import overdue, record_gone

    rt = runtime()
    provider = CLOUD.provider(rt)
    due = overdue(rt, provider.list_instances(), datetime.now(UTC))
    for instance, expires_at in due:
        if dry_run:
            progress(f"would delete {instance.instance_id} ({instance.name}), due {expires_at}")
            continue
        provider.terminate_instance(instance.instance_id)  # type: ignore[attr-defined]
        record_gone(rt, "lyceum", instance.instance_id)
        rt.store.add_event("instance.reaped", f"lyceum:{instance.instance_id}",
                           {"expires_at": expires_at})  # fmt: skip
        progress(f"deleted {instance.instance_id} ({instance.name}), due {expires_at}")
    data = [{"id": i.instance_id, "name": i.name, "expires_at": e, "deleted": not dry_run}
            for i, e in due]  # fmt: skip
    emit(data, None if due else "nothing overdue")


lyceum.add_command(common.status_command(CLOUD))
lyceum.add_command(common.list_command(CLOUD))
lyceum.add_command(common.train_command(CLOUD))
lyceum.add_command(common.monitor_command(CLOUD))
lyceum.add_command(common.download_command(CLOUD))
lyceum.add_command(common.terminate_command(CLOUD))
