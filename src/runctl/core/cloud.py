"""Cloud instance life cycle shared by providers that create machines: record, wait, observe.

Every instance runctl creates is recorded the moment the API answers, with ``hourly_usd`` as
priced at launch (costs are state-change timestamps x that price), and every state seen later
is appended. Polling lives here, not in providers, whose calls all return quickly.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runctl.errors import NotFoundError, ProviderError
from runctl.models import Instance, InstanceState
from runctl.providers.base import Provider
from runctl.runtime import Runtime

Progress = Callable[[str], None]


def record_launch(runtime: Runtime, instance: Instance, *, spot: bool) -> None:
    """Record a just-created instance with its launch price."""
    runtime.store.record_instance(instance, spot=spot)
    runtime.store.add_event(
        "instance.created",
        f"{instance.provider}:{instance.instance_id}",
        {"name": instance.name, "hourly_usd": instance.hourly_usd, "spot": spot},
    )


def observe(runtime: Runtime, instance: Instance) -> None:
    """Record the state just seen, keeping the launch price and what creation stored.

    Only instances runctl created (recorded at launch) are tracked; others are left alone.
    """
    record = runtime.store.get_instance_record(instance.provider, instance.instance_id)
    if record is None:
        return
    seen = {k: v for k, v in instance.extra.items() if v is not None}
    merged: dict[str, Any] = {**record["data"], **seen}
    runtime.store.record_instance(
        dataclasses.replace(instance, hourly_usd=None, extra=merged), spot=record["spot"]
    )


def record_gone(runtime: Runtime, provider: str, instance_id: str) -> None:
    """Mark a recorded instance terminated (no-op for one never recorded)."""
    record = runtime.store.get_instance_record(provider, instance_id)
    if record is None or record["state"] == InstanceState.TERMINATED:
        return
    runtime.store.record_instance(
        Instance(
            provider=provider,
            instance_id=instance_id,
            name=record["name"],
            state=InstanceState.TERMINATED,
            tags=record["tags"],
            extra=record["data"],
        ),
        spot=record["spot"],
    )


def wait_until_ready(
    runtime: Runtime,
    provider: Provider,
    instance_id: str,
    *,
    timeout_s: float,
    poll_s: float,
    progress: Progress,
    sleep: Callable[[float], None] = time.sleep,
) -> Instance:
    """Poll until the instance runs with an SSH endpoint; record each state seen.

    Raises NotFoundError if it disappears, ProviderError if it fails or ``timeout_s`` passes.
    """
    deadline = time.monotonic() + timeout_s
    last_status = None
    while True:
        instance = provider.get_instance(instance_id)
        if instance is None:
            record_gone(runtime, provider.name, instance_id)
            raise NotFoundError(
                f"{provider.name} instance {instance_id} disappeared while starting",
                hint="the provider may have reclaimed it; create another",
            )
        observe(runtime, instance)
        status = instance.extra.get("status", str(instance.state))
        if status != last_status:
            progress(f"{instance_id}: {status}")
            last_status = status
        if instance.state == InstanceState.RUNNING and instance.ssh is not None:
            return instance
        if instance.extra.get("failed") or instance.state == InstanceState.TERMINATED:
            raise ProviderError(
                f"{provider.name} instance {instance_id} failed to start (status {status})",
                hint=f"terminate it with `runctl {provider.name} terminate` and try again",
            )
        if time.monotonic() >= deadline:
            raise ProviderError(
                f"{provider.name} instance {instance_id} not ready after {timeout_s:.0f}s "
                f"(status {status})",
                hint="it keeps starting (and billing); check it again with "
                f"`runctl {provider.name} status --wait`, or terminate it",
            )
        sleep(poll_s)


def overdue(
    runtime: Runtime, instances: list[Instance], now: datetime
) -> list[tuple[Instance, str]]:
    """The live instances whose recorded ``expires_at`` deadline (``--max-duration``) passed."""
    due = []
    for instance in instances:
        record = runtime.store.get_instance_record(instance.provider, instance.instance_id)
        expires_at = (record or {}).get("data", {}).get("expires_at")
        if expires_at and datetime.fromisoformat(expires_at) <= now:
            due.append((instance, str(expires_at)))
    return due
