"""LyceumProvider: Lyceum Cloud VMs as runctl instances, reached by SSH as ``lyceum``.

Lyceum VMs can only be created and deleted: there is no stop/start and no server-side TTL, and
a VM bills from ready until DELETE. runctl therefore records a deadline (``--max-duration``)
for each VM it creates and deletes overdue VMs with ``runctl lyceum reap`` (core.cloud).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

from runctl.errors import NotSupportedError, UsageError
from runctl.models import Instance, InstanceState
from runctl.providers.base import Provider, SupportsWatchdog
from runctl.providers.http import new_client, resolve_api_key
from runctl.providers.lyceum.api import LyceumApi, Vm, VmOffer, VmRequest, price_key
from runctl.providers.lyceum.api import _safe_id as safe_id
from runctl.providers.naming import NAME_PREFIX
from runctl.providers.sshkeys import cloud_target, connect_cloud, ensure_keypair
from runctl.runtime import Runtime
from runctl.transport.base import Transport

log = logging.getLogger(__name__)

_STATES: dict[str, InstanceState] = {
    "pending": InstanceState.PENDING,
    "provisioning": InstanceState.PENDING,
    "ready": InstanceState.RUNNING,
    "running": InstanceState.RUNNING,
    "stopped": InstanceState.STOPPED,
    "failed": InstanceState.UNKNOWN,
    "error": InstanceState.UNKNOWN,
    "terminated": InstanceState.TERMINATED,
}
_FAILED = {"failed", "error"}
STOP_REASON = (
    "Lyceum VMs cannot be stopped or resumed: the API only creates and deletes them, "
    "and a VM bills from ready until it is deleted"
)


class LyceumProvider(Provider, SupportsWatchdog):
    """Lyceum VMs. No stop: absent from the API (see ``unsupported``). A watchdog deletes the
    VM from inside it through the API (there is no server-side TTL)."""

    name = "lyceum"
    unsupported: ClassVar[dict[str, str]] = {"stop": STOP_REASON}

    def __init__(self, runtime: Runtime, api: LyceumApi | None = None) -> None:
        self.runtime = runtime
        self._api = api

    @property
    def api(self) -> LyceumApi:
        if self._api is None:
            cfg = self.runtime.config
            key = resolve_api_key(
                "LYCEUM_API_KEY", cfg.get("lyceum.api_key"), "Lyceum", "lyceum.api_key"
            )
            self._api = LyceumApi(new_client(), api_key=key, base_url=cfg.get("lyceum.api_url"))
        return self._api

    def check(self) -> None:
        self.api.user_status()

    def to_instance(self, vm: Vm) -> Instance:
        """Map a VM; "ready" counts as running only once the IP is known (it can lag)."""
        cfg = self.runtime.config
        state = _STATES.get(vm.status)
        if state is None:
            log.warning("unknown Lyceum status %r for VM %s", vm.status, vm.vm_id)
            state = InstanceState.UNKNOWN
        ssh = None
        if state == InstanceState.RUNNING and vm.host:
            ssh = cloud_target(self.runtime, "lyceum", vm.vm_id, vm.host, vm.port,
                               cfg.get("lyceum.ssh_user"), cfg.get("lyceum.ssh_key"))  # fmt: skip
        elif state == InstanceState.RUNNING:
            state = InstanceState.PENDING
        return Instance(
            provider="lyceum",
            instance_id=vm.vm_id,
            name=vm.name,
            state=state,
            ssh=ssh,
            remote_dir=cfg.get("lyceum.remote_dir"),
            extra={
                "status": vm.status,
                "failed": vm.status in _FAILED,
                "profile": vm.hardware_profile,
                "gpu_count": vm.gpu_count,
                "instance_type": vm.instance_type,
            },
        )

    def get_instance(self, instance_id: str) -> Instance | None:
        vm = self.api.get_vm(instance_id)
        if vm is None or vm.status == "terminated":
            return None
        return self.to_instance(vm)

    def list_instances(self, *, include_foreign: bool = False) -> list[Instance]:
        return [
            self.to_instance(vm)
            for vm in self.api.list_vms()
            if include_foreign or vm.name.startswith(NAME_PREFIX)
        ]

    def offers(self) -> list[tuple[VmOffer, float | None]]:
        """Each hardware variant with its price per GPU-hour (pricing, else availability)."""
        prices = self.api.pricing()
        return [
            (o, prices.get(price_key(o.instance_type, o.hardware_profile, 1),
                           o.hourly_usd_per_gpu))
            for o in self.api.availability()
        ]  # fmt: skip

    def hourly_price(self, instance_type: str, profile: str, gpu_count: int) -> float | None:
        prices = self.api.pricing()
        exact = prices.get(price_key(instance_type, profile, gpu_count))
        if exact is not None:
            return exact
        one = prices.get(price_key(instance_type, profile, 1))
        if one is None:
            for offer in self.api.availability():
                if (offer.hardware_profile, offer.instance_type) == (profile, instance_type):
                    one = offer.hourly_usd_per_gpu
        return one * gpu_count if one is not None else None

    def create_instance(self, request: VmRequest) -> Instance:
        """Create a VM with runctl's public key; ``hourly_usd`` is the price at launch."""
        if not request.name.startswith(NAME_PREFIX):
            raise UsageError(f"VM names made by runctl start with {NAME_PREFIX!r}")
        _, public_key = ensure_keypair(
            self.runtime.home, self.runtime.config.get("lyceum.ssh_key")
        )
        request = dataclasses.replace(request, public_key=public_key)
        hourly = self.hourly_price(request.instance_type, request.hardware_profile,
                                   request.gpu_count)  # fmt: skip
        vm = self.api.create_vm(request)
        instance = self.to_instance(vm)
        extra = {
            **instance.extra,
            "profile": request.hardware_profile,
            "gpu_count": request.gpu_count,
            "instance_type": request.instance_type,
        }
        return dataclasses.replace(instance, hourly_usd=hourly, extra=extra)

    def terminate_instance(self, instance_id: str) -> None:
        """Delete the VM. Idempotent."""
        self.api.delete_vm(instance_id)

    def default_watchdog_action(self, instance: Instance) -> str:
        return "terminate"

    def watchdog_recipe(self, instance: Instance, action: str) -> dict[str, Any]:
        """DELETE of the VM through the API, sent by the VM itself (terminate only)."""
        if action != "terminate":
            raise NotSupportedError(
                f"Lyceum has no stop: {STOP_REASON}", hint="use --watchdog-action terminate"
            )
        url = f"{self.api.base_url}/vms/{safe_id(instance.instance_id)}"
        return {"http": {"method": "DELETE", "url": url, "token": self.api.http.api_key,
                         "auth_header": "Authorization", "auth_prefix": "Bearer "}}  # fmt: skip

    def spot_notice_url(self, instance: Instance) -> str | None:
        return None  # Lyceum publishes no interruption notice

    def connect(self, instance: Instance) -> Transport:
        status = f"runctl lyceum status --vm-id {instance.instance_id}"
        return connect_cloud(self.runtime, instance, "VM", status)
