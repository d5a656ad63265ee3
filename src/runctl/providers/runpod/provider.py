"""RunpodProvider: RunPod pods as runctl instances, reached by SSH on their public IP and port.

Pods are found again by name (``runctl-...``; RunPod has no tags). SSH goes to the pod's public
IP and mapped port for 22/tcp as ``runpod.ssh_user`` (default root), never through the
``ssh.runpod.io`` proxy, which offers no scp/rsync. The key runctl injects as ``PUBLIC_KEY`` is
``runpod.ssh_key`` or runctl's own (providers.sshkeys).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from runctl.errors import NoCapacityError, UsageError
from runctl.models import Instance, InstanceState
from runctl.providers.base import Provider, SupportsStop, SupportsWatchdog
from runctl.providers.http import new_client, resolve_api_key
from runctl.providers.naming import NAME_PREFIX
from runctl.providers.runpod.api import GpuOffer, Pod, PodRequest, RunpodApi
from runctl.providers.runpod.api import _safe_id as safe_id
from runctl.providers.sshkeys import cloud_target, connect_cloud, ensure_keypair
from runctl.runtime import Runtime
from runctl.transport.base import Transport

log = logging.getLogger(__name__)

_STATES: dict[str, InstanceState] = {
    "PROVISIONING": InstanceState.PENDING,
    "STARTING": InstanceState.PENDING,
    "RUNNING": InstanceState.RUNNING,
    "EXITED": InstanceState.STOPPED,
    "ERROR": InstanceState.UNKNOWN,
    "TERMINATED": InstanceState.TERMINATED,
}


class RunpodProvider(Provider, SupportsStop, SupportsWatchdog):
    name = "runpod"
    unsupported: ClassVar[dict[str, str]] = {}

    def __init__(self, runtime: Runtime, api: RunpodApi | None = None) -> None:
        self.runtime = runtime
        self._api = api

    @property
    def api(self) -> RunpodApi:
        if self._api is None:
            cfg = self.runtime.config
            key = resolve_api_key(
                "RUNPOD_API_KEY", cfg.get("runpod.api_key"), "RunPod", "runpod.api_key"
            )
            self._api = RunpodApi(
                new_client(),
                api_key=key,
                rest_url=cfg.get("runpod.api_url"),
                graphql_url=cfg.get("runpod.graphql_url"),
            )
        return self._api

    def check(self) -> None:
        self.api.list_pods()

    # ------------------------------------------------------------------ reads

    def to_instance(self, pod: Pod) -> Instance:
        """Map a pod; RUNNING counts as running only once SSH has a public endpoint."""
        cfg = self.runtime.config
        state = _STATES.get(pod.status)
        if state is None:
            log.warning("unknown RunPod status %r for pod %s", pod.status, pod.pod_id)
            state = InstanceState.UNKNOWN
        ssh = None
        if pod.ssh_host and pod.ssh_port and pod.status == "RUNNING":
            ssh = cloud_target(self.runtime, "runpod", pod.pod_id, pod.ssh_host, pod.ssh_port,
                               cfg.get("runpod.ssh_user"), cfg.get("runpod.ssh_key"))  # fmt: skip
        elif state == InstanceState.RUNNING:
            state = InstanceState.PENDING
        return Instance(
            provider="runpod",
            instance_id=pod.pod_id,
            name=pod.name,
            state=state,
            ssh=ssh,
            remote_dir=cfg.get("runpod.remote_dir"),
            hourly_usd=pod.cost_per_hr,
            extra={
                "status": pod.status,
                "failed": pod.status == "ERROR",
                "gpu": pod.gpu_id,
                "gpu_count": pod.gpu_count,
                "image": pod.image,
            },
        )

    def get_instance(self, instance_id: str) -> Instance | None:
        pod = self.api.get_pod(instance_id)
        if pod is None or pod.status == "TERMINATED":
            return None
        return self.to_instance(pod)

    def list_instances(self, *, include_foreign: bool = False) -> list[Instance]:
        """Pods named ``runctl-...`` (every live pod with ``include_foreign``)."""
        return [
            self.to_instance(p)
            for p in self.api.list_pods()
            if p.status != "TERMINATED" and (include_foreign or p.name.startswith(NAME_PREFIX))
        ]

    def offers(self, gpu_count: int = 1, *, spot: bool = False) -> list[GpuOffer]:
        """GPU types with on-demand prices (and the current minimum spot bid with ``spot``)."""
        offers = self.api.gpu_offers(gpu_count)
        if not spot:
            return offers
        import dataclasses

        bids = self.api.spot_bids(gpu_count)
        return [dataclasses.replace(o, spot_min_bid_usd=bids.get(o.gpu_id)) for o in offers]

    # ----------------------------------------------------------------- writes

    def create_instance(self, request: PodRequest) -> Instance:
        """Create a pod with runctl's SSH key; ``hourly_usd`` is the price at launch."""
        if not request.name.startswith(NAME_PREFIX):
            raise UsageError(f"pod names made by runctl start with {NAME_PREFIX!r}")
        _, public_key = ensure_keypair(
            self.runtime.home, self.runtime.config.get("runpod.ssh_key")
        )
        env = {**request.env, "PUBLIC_KEY": public_key, "RUNCTL": "1"}
        import dataclasses

        request = dataclasses.replace(request, env=env)
        if request.spot and request.bid_per_gpu_usd is None:
            request = dataclasses.replace(request, bid_per_gpu_usd=self._min_bid(request))
        pod = self.api.create_pod(request)
        instance = self.to_instance(pod)
        hourly = pod.cost_per_hr or self._list_price(request)
        extra = {**instance.extra, "gpu": request.gpu_type_id, "gpu_count": request.gpu_count,
                 "bid_per_gpu_usd": request.bid_per_gpu_usd}  # fmt: skip
        return dataclasses.replace(instance, hourly_usd=hourly, extra=extra)

    def _min_bid(self, request: PodRequest) -> float:
        bid = self.api.spot_bids(request.gpu_count).get(request.gpu_type_id)
        if bid is None:
            raise NoCapacityError(
                f"RunPod offers no spot {request.gpu_type_id} now",
                hint="pass --bid USD, pick another --gpu, or drop --spot",
            )
        return bid

    def _list_price(self, request: PodRequest) -> float | None:
        """Price from the catalog when the create answer carries none."""
        if request.spot and request.bid_per_gpu_usd is not None:
            return request.bid_per_gpu_usd * request.gpu_count
        for offer in self.api.gpu_offers(request.gpu_count):
            if offer.gpu_id == request.gpu_type_id:
                per_gpu = offer.community_usd if request.cloud == "COMMUNITY" else offer.secure_usd
                return per_gpu * request.gpu_count if per_gpu is not None else None
        return None

    def terminate_instance(self, instance_id: str) -> None:
        """Terminate (disks deleted). Idempotent."""
        self.api.terminate_pod(instance_id)

    def stop_instance(self, instance_id: str) -> None:
        """Stop: the GPU is released, the /workspace volume is kept (and billed)."""
        self.api.stop_pod(instance_id)

    def start_instance(
        self, instance_id: str, *, bid_per_gpu_usd: float | None = None
    ) -> Instance:
        """Resume a stopped pod: spot pods (as recorded at create) re-bid through GraphQL."""
        record = self.runtime.store.get_instance_record("runpod", instance_id) or {}
        if record.get("spot") or bid_per_gpu_usd is not None:
            data = record.get("data") or {}
            gpu_count = int(data.get("gpu_count") or 1)
            bid = bid_per_gpu_usd
            if bid is None:
                gpu = str(data.get("gpu") or "")
                bid = self.api.spot_bids(gpu_count).get(gpu) or data.get("bid_per_gpu_usd")
            if bid is None:
                raise UsageError("cannot tell what to bid", hint="pass --bid USD per GPU-hour")
            self.api.resume_spot_pod(instance_id, float(bid), gpu_count)
        else:
            self.api.start_pod(instance_id)
        instance = self.get_instance(instance_id)
        if instance is None:
            from runctl.errors import NotFoundError

            raise NotFoundError(f"pod {instance_id} is gone", hint="see `runctl runpod list`")
        return instance

    def default_watchdog_action(self, instance: Instance) -> str:
        return "stop"  # the GPU is released, /workspace kept

    def watchdog_recipe(self, instance: Instance, action: str) -> dict[str, Any]:
        """The pod stops or deletes itself through the REST API (the calls stop_pod and
        terminate_pod make)."""
        url = f"{self.api.rest_url}/pods/{safe_id(instance.instance_id)}"
        http: dict[str, Any] = (
            {"method": "POST", "url": f"{url}/action", "body": {"action": "stop"}}
            if action == "stop"
            else {"method": "DELETE", "url": url}
        )
        http.update(token=self.api.http.api_key, auth_header="Authorization",
                    auth_prefix="Bearer ")  # fmt: skip
        return {"http": http}

    def spot_notice_url(self, instance: Instance) -> str | None:
        return None  # RunPod publishes no interruption notice to the pod

    def connect(self, instance: Instance) -> Transport:
        status = f"runctl runpod status --pod-id {instance.instance_id}"
        return connect_cloud(self.runtime, instance, "pod", status)
