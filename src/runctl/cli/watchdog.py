"""``runctl watchdog``: arm, inspect and disarm the watchdog that runs on a host itself."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from runctl.cli.output import duration, emit, json_option, progress, runtime
from runctl.cli.watchdog_options import policy_from_options, watchdog_options

if TYPE_CHECKING:
    from runctl.core.targets import Target
    from runctl.runtime import Runtime

_ON = click.option("--on", "on", required=True, metavar="TARGET",
                   help="local, ssh:HOST, aws:ID, runpod:ID, lyceum:ID.")  # fmt: skip


@click.group()
def watchdog() -> None:
    """Policies the host enforces by itself (max duration, idle, lost controller) and spot
    interruption handling; they hold with runctl closed.

    \b
    Examples:
      runctl watchdog arm --on ssh:gpu1 --idle-timeout 30m
      runctl watchdog status --on aws:i-0abc123
      runctl watchdog disarm --on ssh:gpu1
    """


@watchdog.command(name="arm")
@_ON
@watchdog_options
@click.option(
    "--spot/--no-spot",
    default=None,
    help="Watch spot interruption notices (default: where the provider has them).",
)
@click.option(
    "--spot-url",
    metavar="URL",
    help="IMDSv2-style metadata service to poll (default: the provider's).",
)
@json_option
def watchdog_arm(on: str, spot: bool | None, spot_url: str | None, **opts: Any) -> None:
    """Arm (or re-arm) the watchdog on TARGET; policies given again replace earlier ones,
    others stay.

    \b
    Examples:
      runctl watchdog arm --on aws:i-0abc123 --max-duration 8h --idle-timeout 30m
      runctl watchdog arm --on ssh:gpu1 --idle-timeout 1h --idle-gpu-util 5
    """
    import dataclasses

    from runctl.core import watchdog as core
    from runctl.core.targets import resolve_target

    rt = runtime()
    policy = policy_from_options(**opts) or core.WatchdogPolicy()
    policy = dataclasses.replace(policy, spot=spot)
    answer = core.arm(rt, resolve_target(rt, on), policy, progress, spot_url=spot_url)
    emit(answer, lambda: _show(answer))


@watchdog.command(name="status")
@_ON
@json_option
def watchdog_status(on: str) -> None:
    """Show the watchdog's policies, whether it runs, and what it has seen or done.

    \b
    Examples:
      runctl watchdog status --on aws:i-0abc123
    """
    from runctl.core import watchdog as core

    answer = core.status(*_target(on))
    emit(answer, lambda: _show(answer))


@watchdog.command(name="disarm")
@_ON
@json_option
def watchdog_disarm(on: str) -> None:
    """Stop the watchdog on TARGET (running jobs are left alone).

    \b
    Examples:
      runctl watchdog disarm --on aws:i-0abc123
    """
    from runctl.core import watchdog as core

    emit(core.disarm(*_target(on), progress))


def _target(on: str) -> tuple[Runtime, Target]:
    from runctl.core.targets import resolve_target

    rt = runtime()
    return rt, resolve_target(rt, on)


def _show(answer: dict[str, Any]) -> None:
    cfg = answer.get("config") or {}
    alive = answer.get("alive", answer.get("pid") is not None)
    state = "armed" if answer.get("armed") else "not armed"
    click.echo(f"watchdog: {state}" + (f" (pid {answer['pid']})" if alive else ", not running"))
    rows = []
    if cfg.get("deadline_at"):
        rows.append(("max duration", f"in {duration(cfg['deadline_at'] - time.time())}"))
    if cfg.get("idle_timeout_s"):
        gpu = cfg.get("idle_gpu_util_pct")
        rows.append(("idle timeout", duration(cfg["idle_timeout_s"])
                     + (f" (or every GPU < {gpu:g}%)" if gpu is not None else "")))  # fmt: skip
    if cfg.get("lost_controller_timeout_s"):
        rows.append(("lost controller", duration(cfg["lost_controller_timeout_s"])))
    if cfg.get("action"):
        rows.append(("action", cfg["action"]))
    if cfg.get("spot"):
        rows.append(("spot notices", f"{cfg['spot']['url']} every {cfg['spot']['poll_s']:g}s"))
    for key, label in (("fired", "fired"), ("spot_notice", "spot notice"),
                       ("rebalance", "rebalance")):  # fmt: skip
        seen = answer.get(key)
        if seen:
            rows.append((label, ", ".join(f"{k} {v}" for k, v in seen.items())))
    if answer.get("last_check_at"):
        rows.append(("last check", answer["last_check_at"]))
    for label, value in rows:
        click.echo(f"  {label + ':':<17}{value}")
