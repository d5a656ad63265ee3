"""Resolve ``--on`` into a provider and one of its instances.

Accepted forms: ``local``; ``ssh:NAME`` (a registered host, an ~/.ssh/config alias or
``[user@]host[:port]``); a bare registered host name.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from runctl.errors import NotFoundError, UsageError
from runctl.models import Instance
from runctl.providers import REGISTRY, get_provider
from runctl.providers.base import Provider
from runctl.runtime import Runtime


def _debug(*args: object) -> None:
    # logging costs start-up; when nothing imported it, nothing configured it to show debug.
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(__name__).debug(*args)


@dataclass(frozen=True)
class Target:
    provider: Provider
    instance: Instance


def resolve_target(runtime: Runtime, on: str | None) -> Target:
    spec = (on or runtime.config.get("defaults.on") or "local").strip()
    if not spec:
        raise UsageError("empty --on value", hint="use local, ssh:HOST or a host name")
    kind, _, rest = spec.partition(":")
    if kind == "local" and not rest:
        provider = get_provider("local", runtime)
        _debug("target local -> this machine")
        return Target(provider, provider.list_instances()[0])
    if kind == "ssh":
        if not rest:
            raise UsageError("ssh target needs a host", hint="use --on ssh:HOST")
        return _instance_of(runtime, "ssh", rest)
    if not rest and runtime.store.get_host(spec) is not None:
        return _instance_of(runtime, "ssh", spec)
    if kind in REGISTRY and rest:
        return _instance_of(runtime, kind, rest)
    raise UsageError(
        f"unknown target {spec!r}",
        hint="use --on local, --on ssh:HOST, or register a host with `runctl hosts add`",
    )


def instance_of_job(runtime: Runtime, provider_name: str, instance_id: str) -> Target:
    return _instance_of(runtime, provider_name, instance_id)


def _instance_of(runtime: Runtime, provider_name: str, instance_id: str) -> Target:
    provider = get_provider(provider_name, runtime)
    instance = provider.get_instance(instance_id)
    if instance is None:
        raise NotFoundError(
            f"{provider_name} instance {instance_id!r} not found",
            hint=f"see `runctl {'hosts list' if provider_name == 'ssh' else 'status'}`",
        )
    ssh = instance.ssh
    _debug("target %s:%s -> %s", provider_name, instance_id,
              f"ssh {ssh.user}@{ssh.host}:{ssh.port}" if ssh else str(instance.state))  # fmt: skip
    return Target(provider, instance)
