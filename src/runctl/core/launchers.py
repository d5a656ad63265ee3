"""Create a cloud machine and wait until a job can start on it: one call for every cloud.

``launch(runtime, provider, options, progress)`` creates an instance (AWS, RunPod, Lyceum),
records it with its launch price, waits until it runs, and returns once a command over its
transport succeeds. ``options`` is a plain dict (stored in a job's spec so a recovery can
launch the same machine again)::

    aws:    {"instance_type", "spot", "region", "availability_zone", "yes", "no_fallback",
             "spot_max_price", "project", "ami_id", "iam_instance_profile"}
    runpod: {"gpu", "gpu_count", "image", "disk_gb", "volume_gb", "cloud", "spot", "bid", "name"}
    lyceum: {"profile", "gpu_count", "spot", "name"}

The caller hears of the instance through ``on_created`` as soon as the API answers, so it can
clean up an instance that never became ready (a timeout, Ctrl-C) by its own policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from runctl.errors import NotFoundError, ProviderError, TransportError, UsageError
from runctl.models import Instance, InstanceState
from runctl.providers import get_provider
from runctl.providers.base import Provider
from runctl.runtime import Runtime

Progress = Callable[[str], None]
Confirm = Callable[[str], bool]
OnCreated = Callable[[Instance], None]
CLOUDS = ("aws", "runpod", "lyceum")
GONE = frozenset({InstanceState.TERMINATED, InstanceState.TERMINATING})
_PROBE_FIRST_S, _PROBE_MAX_S = 0.2, 2.0


def launch(
    runtime: Runtime,
    provider_name: str,
    options: dict[str, Any],
    progress: Progress,
    *,
    on_created: OnCreated | None = None,
    confirm: Confirm | None = None,
) -> Instance:
    """Create an instance and return it once it takes commands; blocks (minutes at most).

    Raises UsageError for a provider that creates no machines, the provider's errors when the
    create fails, ProviderError / NotFoundError when it never becomes ready.
    """
    if provider_name not in CLOUDS:
        raise UsageError(
            f"runctl cannot create {provider_name} machines",
            hint="create machines on aws, runpod or lyceum; use an existing host with "
            "--on ssh:HOST or --on local",
        )
    notify = on_created or (lambda _instance: None)
    if provider_name == "aws":
        return _launch_aws(runtime, options, progress, notify, confirm)
    provider = make_provider(runtime, provider_name, options, progress)
    instance = _create_api_cloud(runtime, provider, options, progress)
    notify(instance)
    from runctl.core.cloud import wait_until_ready

    cfg = runtime.config
    ready = wait_until_ready(
        runtime,
        provider,
        instance.instance_id,
        timeout_s=float(cfg.get(f"{provider_name}.wait_timeout_s")),
        poll_s=float(cfg.get(f"{provider_name}.poll_interval_s")),
        progress=progress,
    )
    timeout = float(cfg.get(f"{provider_name}.wait_timeout_s"))
    return wait_reachable(provider, ready.instance_id, timeout_s=timeout, progress=progress)


def make_provider(
    runtime: Runtime, provider_name: str, options: dict[str, Any], progress: Progress
) -> Provider:
    """The provider to launch with (AWS: in the options' region, reporting to ``progress``)."""
    if provider_name == "aws":
        from runctl.providers.aws.provider import AWSProvider

        return AWSProvider(runtime, region=options.get("region") or None, notify=progress)
    return get_provider(provider_name, runtime)


def _launch_aws(
    runtime: Runtime,
    options: dict[str, Any],
    progress: Progress,
    on_created: OnCreated,
    confirm: Confirm | None,
) -> Instance:
    from runctl.providers.aws.launch import CreateOptions, create_instance
    from runctl.providers.aws.provider import AWSProvider

    provider = make_provider(runtime, "aws", options, progress)
    assert isinstance(provider, AWSProvider)
    if not options.get("instance_type"):
        raise UsageError("no instance type to launch", hint="pass --instance-type, e.g. g5.xlarge")
    opts = CreateOptions(
        instance_type=str(options["instance_type"]),
        spot=bool(options.get("spot")),
        spot_max_price=options.get("spot_max_price"),
        no_fallback=bool(options.get("no_fallback")),
        yes=bool(options.get("yes")),
        ami_id=options.get("ami_id"),
        project=options.get("project"),
        iam_instance_profile=options.get("iam_instance_profile"),
        availability_zone=options.get("availability_zone"),
    )
    created = create_instance(provider, opts, progress, confirm)
    on_created(created.instance)
    iid = created.instance.instance_id
    timeout = float(runtime.config.get("aws.wait_timeout_s"))
    provider.wait_state(iid, {"running"}, timeout, on_poll=lambda s: progress(f"  {iid}: {s}"))
    return wait_reachable(provider, iid, timeout_s=timeout, progress=progress)


def _create_api_cloud(
    runtime: Runtime, provider: Provider, options: dict[str, Any], progress: Progress
) -> Instance:
    """RunPod / Lyceum: create and record (AWS records inside its own create)."""
    from runctl.core.cloud import record_launch
    from runctl.providers.naming import new_name

    cfg = runtime.config
    spot = bool(options.get("spot"))
    request: Any
    if provider.name == "runpod":
        from runctl.providers.runpod.api import PodRequest

        request = PodRequest(
            name=new_name(options.get("name"), "pod"),
            gpu_type_id=options.get("gpu") or cfg.get("runpod.default_gpu"),
            image=options.get("image") or cfg.get("runpod.default_image"),
            gpu_count=int(options.get("gpu_count") or 1),
            disk_gb=int(options.get("disk_gb") or cfg.get("runpod.disk_gb")),
            volume_gb=int(options.get("volume_gb", cfg.get("runpod.volume_gb"))),
            cloud=options.get("cloud") or cfg.get("runpod.cloud"),
            spot=spot,
            bid_per_gpu_usd=options.get("bid"),
        )
        what = f"{'spot ' if spot else ''}pod {request.name} ({request.gpu_type_id})"
    else:
        from runctl.providers.lyceum.api import VmRequest

        request = VmRequest(
            name=new_name(options.get("name"), "vm"),
            hardware_profile=str(
                options.get("profile") or cfg.get("lyceum.default_profile")
            ).lower(),
            public_key="",  # the provider fills in runctl's key
            gpu_count=int(options.get("gpu_count") or 1),
            instance_type="spot" if spot else "on-demand",
        )
        what = f"{request.instance_type} VM {request.name} ({request.hardware_profile})"
    progress(f"creating {what} ...")
    instance: Instance = provider.create_instance(request)  # type: ignore[attr-defined]
    record_launch(runtime, instance, spot=spot)
    return instance


def wait_reachable(
    provider: Provider,
    instance_id: str,
    *,
    timeout_s: float,
    progress: Progress,
    sleep: Callable[[float], None] = time.sleep,
) -> Instance:
    """Poll until a command over the instance's transport succeeds; return the instance.

    The instance is read again before every try (its address may appear or change while it
    boots). NotFoundError when it disappears, ProviderError after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    delay = _PROBE_FIRST_S
    reason = "no SSH endpoint yet"
    announced = False
    while True:
        instance = provider.get_instance(instance_id)
        if instance is None or instance.state in GONE:
            raise NotFoundError(
                f"{provider.name} instance {instance_id} disappeared while starting",
                hint="the provider may have reclaimed it; try again",
            )
        if instance.state == InstanceState.RUNNING:
            try:
                provider.connect(instance).run(["true"], timeout=30)
                return instance
            except TransportError as exc:
                reason = exc.message
        if time.monotonic() >= deadline:
            raise ProviderError(
                f"{provider.name} instance {instance_id} not reachable after {timeout_s:.0f}s "
                f"({reason})",
                hint="it is still billed; terminate it, or check its network / SSH key",
            )
        if not announced:
            progress(f"waiting for {instance_id} to accept commands ...")
            announced = True
        sleep(delay)
        delay = min(delay * 1.5, _PROBE_MAX_S)


def is_gone(instance: Instance | None) -> bool:
    """True when the provider no longer runs the instance (deleted, terminated, terminating)."""
    return instance is None or instance.state in GONE


def terminate_verified(
    runtime: Runtime,
    provider: Provider,
    instance_id: str,
    *,
    timeout_s: float,
    progress: Progress,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Terminate and poll until the provider reports the instance gone; idempotent.

    Records the end in state (costs stop there). ProviderError if it is still there after
    ``timeout_s``.
    """
    from runctl.core.cloud import record_gone

    terminate = getattr(provider, "terminate_instance", None)
    if terminate is None:
        raise UsageError(f"{provider.name} machines are not runctl's to terminate")
    deadline = time.monotonic() + timeout_s
    terminate(instance_id)
    delay = 0.2
    while True:
        instance = provider.get_instance(instance_id)
        if instance is None or instance.state == InstanceState.TERMINATED:
            record_gone(runtime, provider.name, instance_id)
            return
        if time.monotonic() >= deadline:
            raise ProviderError(
                f"{provider.name} instance {instance_id} still {instance.state} "
                f"{timeout_s:.0f}s after terminating it",
                hint=f"check it with `runctl {provider.name} status` and terminate it by hand",
            )
        progress(f"  {instance_id}: {instance.state} ...")
        sleep(delay)
        delay = min(delay * 1.5, 5.0)
