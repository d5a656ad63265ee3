"""The watchdog's command-line options, shared by every command that can arm it.

``@watchdog_options`` adds --max-duration, --idle-timeout, --idle-gpu-util,
--lost-controller-timeout and --watchdog-action; ``policy_from_options(**opts)`` turns them
into a ``WatchdogPolicy`` (None when no policy was asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runctl.cli.params import Number

if TYPE_CHECKING:
    from runctl.core.watchdog import WatchdogPolicy

F = TypeVar("F", bound=Callable[..., Any])

_OPTIONS = [
    click.option("--max-duration", metavar="DURATION",
                 help="The host stops (or terminates) itself after this long, even with runctl "
                 "closed: 90m, 2h, 3600."),
    click.option("--idle-timeout", metavar="DURATION",
                 help="... after this long without a running job (see --idle-gpu-util)."),
    click.option("--idle-gpu-util", type=Number(0, 100), metavar="PCT",
                 help="With --idle-timeout: idle also while every GPU is below PCT% busy."),
    click.option("--lost-controller-timeout", metavar="DURATION",
                 help="... after this long without contact from runctl (status, logs)."),
    click.option("--watchdog-action", type=click.Choice(["stop", "terminate", "none"]),
                 help="What the host does when a policy fires, after cancelling its jobs "
                 "(default: stop; terminate on spot and Lyceum; none on local/SSH hosts)."),
]  # fmt: skip


def watchdog_options(fn: F) -> F:
    """Add the watchdog policy options to a click command."""
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return fn


def policy_from_options(**opts: Any) -> WatchdogPolicy | None:
    """The policy the options ask for; None when no policy option was given.

    Other keyword arguments are ignored, so a command can pass all of its options.
    """
    from runctl.cli.cloud import parse_duration_s
    from runctl.core.watchdog import WatchdogPolicy
    from runctl.errors import UsageError

    def seconds(key: str) -> float | None:
        value = opts.get(key)
        return None if value in (None, "") else parse_duration_s(str(value))

    policy = WatchdogPolicy(
        max_duration_s=seconds("max_duration"),
        idle_timeout_s=seconds("idle_timeout"),
        idle_gpu_util_pct=opts.get("idle_gpu_util"),
        lost_controller_timeout_s=seconds("lost_controller_timeout"),
        action=opts.get("watchdog_action"),
    )
    if policy.has_policy:
        return policy
    if policy.action is not None:
        raise UsageError(
            "--watchdog-action needs a policy",
            hint="add --max-duration, --idle-timeout or --lost-controller-timeout",
        )
    return None
