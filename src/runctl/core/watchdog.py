"""Arm, inspect and disarm the on-host watchdog (agent ``watchdog``), one per host base dir.

The watchdog runs on the machine itself, so its policies hold with the laptop closed:
``max_duration_s``, ``idle_timeout_s`` (no running job, or with ``idle_gpu_util_pct`` every GPU
below it), ``lost_controller_timeout_s`` (no contact from runctl). When one fires the host
cancels its jobs, then carries out the action: ``none`` (nothing more), ``stop`` or
``terminate`` through the provider's recipe (SupportsWatchdog). On providers that publish spot
notices (an IMDSv2 URL) it also preempts the jobs on a notice, with a final checkpoint upload.

Local and SSH hosts have no recipe of their own: there ``stop`` runs
``watchdog.shutdown_command`` if the user configured one; ``terminate`` is refused.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from runctl.core import agent
from runctl.core.targets import Target
from runctl.errors import NotSupportedError, UsageError
from runctl.providers.base import SupportsWatchdog
from runctl.runtime import Runtime

Progress = Callable[[str], None]
ACTIONS = ("stop", "terminate", "none")


@dataclass(frozen=True)
class WatchdogPolicy:
    max_duration_s: float | None = None
    idle_timeout_s: float | None = None
    idle_gpu_util_pct: float | None = None
    lost_controller_timeout_s: float | None = None
    action: str | None = None  # None: the provider's default (local/ssh: "none")
    spot: bool | None = None  # None: watch spot notices where the provider has them

    def __post_init__(self) -> None:
        if self.action is not None and self.action not in ACTIONS:
            raise UsageError(f"unknown watchdog action {self.action!r}",
                             hint="use stop, terminate or none")  # fmt: skip
        if self.idle_gpu_util_pct is not None and self.idle_timeout_s is None:
            raise UsageError("--idle-gpu-util needs --idle-timeout",
                             hint="e.g. --idle-timeout 30m --idle-gpu-util 5")  # fmt: skip

    @property
    def has_policy(self) -> bool:
        """True when a timeout is set (spot watching alone needs no action)."""
        return any(v is not None for v in (self.max_duration_s, self.idle_timeout_s,
                                           self.lost_controller_timeout_s))  # fmt: skip


def _recipe(runtime: Runtime, target: Target, action: str) -> dict[str, Any] | None:
    if action == "none":
        return None
    provider, instance = target.provider, target.instance
    if isinstance(provider, SupportsWatchdog):
        return provider.watchdog_recipe(instance, action)
    command = str(runtime.config.get("watchdog.shutdown_command"))
    if action == "stop" and command:
        return {"argv": shlex.split(command)}
    reason = provider.unsupported.get("watchdog") or (
        f"{provider.name} hosts are not runctl's to delete" if action == "terminate"
        else f"runctl does not know how {provider.name} hosts stop themselves"
    )  # fmt: skip
    raise NotSupportedError(
        f"cannot {action} {instance.name} from its watchdog: {reason}",
        hint="use --watchdog-action none (the jobs are cancelled, the host stays)"
        + ("" if action == "terminate" else ", or set watchdog.shutdown_command"),
    )


def build_config(
    runtime: Runtime, target: Target, policy: WatchdogPolicy, *, spot_url: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """The agent's config for ``policy`` on ``target`` and the secrets to ship with it.

    Only the policies set are sent: arming merges into what the host already has. Raises
    NotSupportedError when the action or spot watching is impossible there.
    """
    provider, instance = target.provider, target.instance
    watches = provider if isinstance(provider, SupportsWatchdog) else None
    action = policy.action or (watches.default_watchdog_action(instance) if watches else "none")
    config: dict[str, Any] = {"check_s": float(runtime.config.get("watchdog.check_s"))}
    secrets: dict[str, str] = {}
    if policy.has_policy:  # else (spot watching only) the host keeps its policies and action
        for key in ("max_duration_s", "idle_timeout_s", "idle_gpu_util_pct",
                    "lost_controller_timeout_s"):  # fmt: skip
            if getattr(policy, key) is not None:
                config[key] = getattr(policy, key)
        recipe = _recipe(runtime, target, action)
        http = (recipe or {}).get("http")
        if http and "token" in http:  # shipped as B/secrets/<provider>.key, mode 0600
            http = dict(http)
            secrets[f"{provider.name}.key"] = str(http.pop("token"))
            http["token_file"] = f"secrets/{provider.name}.key"
            recipe = {"http": http}
        config.update(action=action, recipe=recipe)
    if policy.spot is not False:
        url = spot_url or (watches.spot_notice_url(instance) if watches else None)
        if url is None and policy.spot:
            raise NotSupportedError(f"{instance.name} has no spot interruption notices",
                                    hint="only AWS spot instances publish them")  # fmt: skip
        if url:
            config["spot"] = {"url": url, "poll_s": float(runtime.config.get("aws.spot_poll_s"))}
    else:
        config["spot"] = None
    return config, secrets


def arm(
    runtime: Runtime,
    target: Target,
    policy: WatchdogPolicy,
    progress: Progress,
    *,
    spot_url: str | None = None,
) -> dict[str, Any]:
    """Arm (or re-arm) the host's watchdog; starts its daemon if none runs. Idempotent."""
    config, secrets = build_config(runtime, target, policy, spot_url=spot_url)
    if not policy.has_policy and not config.get("spot"):
        raise UsageError(
            "nothing for the watchdog to watch",
            hint="give --max-duration, --idle-timeout, --lost-controller-timeout or --spot-url",
        )
    instance = target.instance
    transport = target.provider.connect(instance)
    payload = json.dumps({**config, "secrets": secrets}).encode()
    answer: dict[str, Any] = agent.call_json(
        instance, transport, ["watchdog", "arm", "--base", instance.remote_dir], input=payload
    )
    action = answer.get("config", {}).get("action", "none")
    progress(f"watchdog armed on {instance.name} (pid {answer.get('pid')}, action {action})")
    runtime.store.add_event(
        "watchdog.armed",
        f"{instance.provider}:{instance.instance_id}",
        {"policy": asdict(policy), "action": action,
         "spot": bool(config.get("spot")), "pid": answer.get("pid")},
    )  # fmt: skip
    return answer


def job_policy(
    runtime: Runtime, target: Target, policy: WatchdogPolicy | None, budget_usd: float | None
) -> WatchdogPolicy | None:
    """``policy`` tightened by a job's ``--budget`` on a priced cloud machine, so the budget
    holds with runctl closed: the host acts (costs.budget_action stop|terminate) once the
    budget is spent at the launch price. ``warn`` (or no price) leaves it to `resources
    enforce` and `status`."""
    from runctl.core.budget import CLOUDS

    instance = target.instance
    action = str(runtime.config.get("costs.budget_action"))
    if (
        budget_usd is None
        or instance.provider not in CLOUDS
        or action not in ("stop", "terminate")
    ):
        return policy
    record = runtime.store.get_instance_record(instance.provider, instance.instance_id)
    hourly = (record or {}).get("hourly_usd")
    if not hourly:
        return policy
    budget_s = float(budget_usd) / float(hourly) * 3600.0
    base = policy or WatchdogPolicy()
    limit = min(budget_s, base.max_duration_s) if base.max_duration_s else budget_s
    return replace(base, max_duration_s=limit, action=base.action or action)


def guard(
    runtime: Runtime, target: Target, policy: WatchdogPolicy | None, progress: Progress
) -> dict[str, Any] | None:
    """Arm ``policy`` on a job's host, and spot-notice watching wherever the host has notices
    (AWS spot instances) even without one; None when there is nothing to watch."""
    if policy is not None:
        return arm(runtime, target, policy, progress)
    provider = target.provider
    if isinstance(provider, SupportsWatchdog) and provider.spot_notice_url(target.instance):
        return arm(runtime, target, WatchdogPolicy(spot=True), progress)
    return None


def status(runtime: Runtime, target: Target) -> dict[str, Any]:
    """The host watchdog's config, liveness, and what it has seen or done."""
    return _call(target, "status")


def disarm(runtime: Runtime, target: Target, progress: Progress) -> dict[str, Any]:
    """Stop the host's watchdog; idempotent."""
    answer = _call(target, "disarm")
    instance = target.instance
    progress(f"watchdog disarmed on {instance.name}")
    runtime.store.add_event("watchdog.disarmed", f"{instance.provider}:{instance.instance_id}",
                            {"pid": answer.get("pid")})  # fmt: skip
    return answer


def _call(target: Target, verb: str) -> dict[str, Any]:
    instance = target.instance
    transport = target.provider.connect(instance)
    answer: dict[str, Any] = agent.call_json(
        instance, transport, ["watchdog", verb, "--base", instance.remote_dir]
    )
    return answer
