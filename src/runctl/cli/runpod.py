"""``runctl runpod``: create, train, monitor, download, list, stop, resume, terminate pods.

The seed's verbs with named flags. On-demand pods go through REST v2, spot pods (``--spot``)
through GraphQL; both are recorded with their price at launch.
"""

from __future__ import annotations

import click

from runctl.cli import cloud as common
from runctl.cli.output import emit, json_option, progress, runtime, table
from runctl.cli.params import seconds, usd
from runctl.errors import UsageError

CLOUD = common.Cloud(name="runpod", noun="pod", id_flag="--pod-id")


@click.group()
def runpod() -> None:
    """RunPod GPU pods over the RunPod API (key: RUNPOD_API_KEY or runpod.api_key).

    \b
    Examples:
      runctl runpod create --gpu 'NVIDIA A40' --wait
      runctl runpod train --pod-id abc123xyz train.py -- --epochs 3
      runctl runpod terminate --pod-id abc123xyz
    """


@runpod.command(name="create")
@click.option("--gpu", help="GPU type id, e.g. 'NVIDIA H100 80GB HBM3' (default: "
              "runpod.default_gpu; see `runctl runpod offers`).")  # fmt: skip
@click.option("--gpu-count", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option("--image", help="Container image (default: runpod.default_image).")
@click.option("--disk", "disk_gb", type=click.IntRange(1, 4096), help="Container disk in GB.")
@click.option("--volume", "volume_gb", type=click.IntRange(0, 65536),
              help="Persistent /workspace volume in GB (kept while stopped).")  # fmt: skip
@click.option("--cloud", "cloud_type", type=click.Choice(["SECURE", "COMMUNITY"]),
              help="RunPod cloud (default: runpod.cloud).")  # fmt: skip
@click.option("--name", help="Name stem; the pod is named runctl-<stem>-<random>.")
@click.option("--spot", is_flag=True, help="Interruptible pod (GraphQL bid; may be reclaimed).")
@click.option("--bid", type=usd(), metavar="USD",
              help="Spot bid per GPU-hour (default: the current minimum).")  # fmt: skip
@click.option("--wait/--no-wait", "wait_", default=True, show_default=True,
              help="Wait until the pod takes SSH.")  # fmt: skip
@click.option("--timeout", type=seconds(), metavar="SECONDS",
              help="How long --wait waits (default: runpod.wait_timeout_s).")  # fmt: skip
@json_option
def runpod_create(gpu: str | None, gpu_count: int, image: str | None, disk_gb: int | None,
                  volume_gb: int | None, cloud_type: str | None, name: str | None, spot: bool,
                  bid: float | None, wait_: bool, timeout: float | None) -> None:  # fmt: skip
    """Create a pod reachable by SSH on its public IP, and record it with its price.

    \b
    Examples:
      runctl runpod create --gpu 'NVIDIA A40' --wait
      runctl runpod create --gpu 'NVIDIA RTX A5000' --spot --bid 0.2
    """
    from runctl.core.cloud import record_launch
    from runctl.providers.naming import new_name
    from runctl.providers.runpod.api import PodRequest

    if bid is not None and not spot:
        raise UsageError("--bid only applies to --spot pods", hint="add --spot, or drop --bid")
    rt = runtime()
    cfg = rt.config
    request = PodRequest(
        name=new_name(name, "pod"),
        gpu_type_id=gpu or cfg.get("runpod.default_gpu"),
        image=image or cfg.get("runpod.default_image"),
        gpu_count=gpu_count,
        disk_gb=disk_gb if disk_gb is not None else cfg.get("runpod.disk_gb"),
        volume_gb=volume_gb if volume_gb is not None else cfg.get("runpod.volume_gb"),
        cloud=cloud_type or cfg.get("runpod.cloud"),
        spot=spot,
        bid_per_gpu_usd=bid,
    )
    provider = CLOUD.provider(rt)
    progress(f"creating {'spot ' if spot else ''}pod {request.name} ({request.gpu_type_id}) ...")
    instance = provider.create_instance(request)  # type: ignore[attr-defined]
    record_launch(rt, instance, spot=spot)
    if wait_:
        instance = common.wait_ready(rt, CLOUD, provider, instance.instance_id, timeout)
    data = common.instance_json(rt, instance)
    emit(data, lambda: common.show_instance(data))


@runpod.command(name="offers")
@click.option("--gpu-count", type=click.IntRange(1, 16), default=1, show_default=True)
@click.option("--spot", is_flag=True, help="Also show the minimum spot bid (GraphQL).")
@json_option
def runpod_offers(gpu_count: int, spot: bool) -> None:
    """List GPU types with on-demand prices per GPU-hour and availability.

    \b
    Examples:
      runctl runpod offers
      runctl runpod offers --gpu-count 2 --spot
    """
    rt = runtime()
    offers = CLOUD.provider(rt).offers(gpu_count, spot=spot)  # type: ignore[attr-defined]
    rows = [
        {"gpu": o.gpu_id, "name": o.name, "memory_gb": o.memory_gb, "secure_usd": o.secure_usd,
         "community_usd": o.community_usd, "spot_min_bid_usd": o.spot_min_bid_usd,
         "availability": o.availability, "max_count": o.max_count}
        for o in offers
    ]  # fmt: skip

    def money(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    def text() -> None:
        headers = ["gpu", "mem", "secure $/h", "community $/h", "availability"]
        headers += ["spot bid $/h"] if spot else []
        table(headers, [
            (r["gpu"], r["memory_gb"], money(r["secure_usd"]), money(r["community_usd"]),
             r["availability"], *([money(r["spot_min_bid_usd"])] if spot else []))
            for r in rows
        ])  # fmt: skip

    emit(rows, text)


@runpod.command(name="stop")
@CLOUD.id_option
@click.option("--force", is_flag=True, help="Even if runctl jobs still run on it.")
@json_option
def runpod_stop(instance_id: str, force: bool) -> None:
    """Stop a pod: the GPU is released, /workspace is kept (and still billed).

    \b
    Examples:
      runctl runpod stop --pod-id abc123xyz
    """
    from runctl.core.cloud import observe

    rt = runtime()
    common.guard_jobs(rt, CLOUD, instance_id, force, "stop")
    provider, _ = common.get_live(rt, CLOUD, instance_id)
    provider.stop_instance(instance_id)  # type: ignore[attr-defined]
    instance = provider.get_instance(instance_id)
    if instance is not None:
        observe(rt, instance)
    emit(
        {"id": instance_id, "state": str(instance.state) if instance else "terminated"},
        f"stopped {instance_id}; resume with `runctl runpod resume --pod-id {instance_id}`",
    )


@runpod.command(name="resume")
@CLOUD.id_option
@click.option("--bid", type=usd(), metavar="USD",
              help="Spot pods: bid per GPU-hour (default: the current minimum).")  # fmt: skip
@click.option("--wait/--no-wait", "wait_", default=True, show_default=True,
              help="Wait until the pod takes SSH.")  # fmt: skip
@click.option("--timeout", type=seconds(), metavar="SECONDS")
@json_option
def runpod_resume(instance_id: str, bid: float | None, wait_: bool, timeout: float | None) -> None:
    """Resume a stopped pod (spot pods re-bid). Warns if it came back without GPUs.

    \b
    Examples:
      runctl runpod resume --pod-id abc123xyz --wait
    """
    from runctl.core.cloud import observe

    rt = runtime()
    provider = CLOUD.provider(rt)
    instance = provider.start_instance(instance_id, bid_per_gpu_usd=bid)  # type: ignore[attr-defined]
    observe(rt, instance)
    if wait_:
        instance = common.wait_ready(rt, CLOUD, provider, instance_id, timeout)
    if instance.extra.get("gpu_count") == 0:
        progress(f"warning: pod {instance_id} resumed with zero GPUs (its host has none free); "
                 "terminate it and create a new one")  # fmt: skip
    data = common.instance_json(rt, instance)
    emit(data, lambda: common.show_instance(data))


runpod.add_command(common.status_command(CLOUD))
runpod.add_command(common.list_command(CLOUD))
runpod.add_command(common.train_command(CLOUD))
runpod.add_command(common.monitor_command(CLOUD))
runpod.add_command(common.download_command(CLOUD))
runpod.add_command(common.terminate_command(CLOUD))
