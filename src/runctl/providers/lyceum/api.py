"""LyceumApi: the raw Lyceum Cloud VM client (``/api/v2/external``, Bearer ``lk_...`` keys).

Lenient parsing for an API that changes fast: ``ip_address`` may be ``host`` or ``host:port``
(default port 22); ``gpu_count`` and the profile live in ``instance_specs`` on create; prices are
strings keyed ``{instance_type}.{profile}.{count}x`` under ``applies_to`` or ``group_by``.
Errors are FastAPI ``{"detail": ...}``:

    401 -> AuthError      402 -> ProviderError (credits)      404 -> NotFoundError (get: None)
    500 "could not be provisioned" -> NoCapacityError, never retried
    429, other 5xx -> retried (providers.http); a create is first looked up by name
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from runctl.errors import (
    AuthError,
    NoCapacityError,
    NotFoundError,
    ProviderError,
    RunctlError,
    TransportError,
)
from runctl.providers.http import HttpCaller, Sleep, backoff_s

BASE_URL = "https://api.lyceum.technology/api/v2/external"
CREATE_TIMEOUT_S = 150.0  # what lyceum-cli uses
_CAPACITY_TEXT = "could not be provisioned"
_KEY_HINT = "set LYCEUM_API_KEY, or `runctl config set --global lyceum.api_key lk_...`"


@dataclass(frozen=True)
class VmRequest:
    name: str
    hardware_profile: str
    public_key: str
    gpu_count: int = 1
    instance_type: str = "on-demand"  # or "spot"


@dataclass(frozen=True)
class Vm:
    vm_id: str
    name: str  # display_name: the only handle (no tags)
    status: str
    host: str | None
    port: int
    hardware_profile: str | None
    gpu_count: int | None
    instance_type: str | None
    created_at: str | None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class VmOffer:
    hardware_profile: str
    instance_type: str
    hourly_usd_per_gpu: float | None
    allowed_gpus: tuple[int, ...]
    available_gpus: tuple[int, ...]


def parse_address(value: Any) -> tuple[str | None, int]:
    """``"203.0.113.10"`` or ``"198.51.100.20:22"`` -> (host, port); missing -> (None, 22)."""
    if not value:
        return None, 22
    text = str(value).strip()
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit():
            return host, int(port)
    return text, 22


def vm_from_json(data: dict[str, Any]) -> Vm:
    specs = data.get("instance_specs") or {}
    host, port = parse_address(data.get("ip_address"))
    return Vm(
        vm_id=str(data["vm_id"]),
        name=str(data.get("display_name") or data.get("name") or ""),
        status=str(data.get("status") or "unknown").lower(),
        host=host,
        port=port,
        hardware_profile=data.get("hardware_profile") or specs.get("gpu_type"),
        gpu_count=data.get("gpu_count") or specs.get("gpu_count"),
        instance_type=data.get("instance_type"),
        created_at=data.get("created_at"),
        raw=data,
    )


def price_key(instance_type: str, profile: str, gpu_count: int) -> str:
    return f"{instance_type}.{profile}.{gpu_count}x"


def is_capacity_error(response: httpx.Response) -> bool:
    return response.status_code >= 500 and _CAPACITY_TEXT in response.text.lower()


class LyceumApi:
    """Raw Lyceum calls over an injected ``httpx.Client``. Every method blocks briefly."""

    def __init__(
        self, client: httpx.Client, *, api_key: str, base_url: str = BASE_URL,
        sleep: Sleep = time.sleep,
    ) -> None:  # fmt: skip
        self.http = HttpCaller(client, api_key, "Lyceum", sleep=sleep, is_final=is_capacity_error)
        self.base_url = base_url.rstrip("/")

    def user_status(self) -> dict[str, Any]:
        """The key's account (a cheap credential check)."""
        return self._call("GET", "/user/status")

    def availability(self) -> list[VmOffer]:
        body = self._call("GET", "/vms/availability")
        variants = body.get("available_instance_variants") or [
            {**p, "instance_type": "on-demand"}
            for p in body.get("available_hardware_profiles", [])
        ]
        return [
            VmOffer(
                hardware_profile=str(v["hardware_profile"]),
                instance_type=str(v.get("instance_type") or "on-demand"),
                hourly_usd_per_gpu=_float(v.get("price_per_hour")),
                allowed_gpus=tuple(sorted(v.get("allowed_gpus_per_instance") or ())),
                available_gpus=tuple(sorted(v.get("available_gpus_per_instance") or ())),
            )
            for v in variants
        ]

    def pricing(self) -> dict[str, float]:
        """``{instance_type}.{profile}.{count}x`` -> USD per hour of a running VM."""
        body = self._call("GET", "/pricing")
        prices: dict[str, float] = {}
        for entry in body.get("prices", []):
            if entry.get("meter_slug") != "vm_running":
                continue
            scope = entry.get("applies_to") or entry.get("group_by") or {}
            key = scope.get("hardware_profile")
            hourly = _float(entry.get("unit_price_per_hour"))
            if key and hourly is not None:
                prices[str(key)] = hourly
        return prices

    def get_vm(self, vm_id: str) -> Vm | None:
        """The VM, or None when the API does not know it (404)."""
        try:
            return vm_from_json(self._call("GET", f"/vms/{_safe_id(vm_id)}/status"))
        except NotFoundError:
            return None

    def list_vms(self) -> list[Vm]:
        """Live VMs (terminated and failed ones are left out server- and client-side)."""
        params = {"include_terminated": "false", "include_failed": "false"}
        body = self._call("GET", "/vms/list", params=params)
        vms = [vm_from_json(v) for v in body.get("vms", [])]
        return [v for v in vms if v.status not in ("terminated", "failed")]

    def find_vm_by_name(self, name: str) -> Vm | None:
        for vm in self.list_vms():
            if vm.name == name:
                return vm
        return None

    def create_vm(self, request: VmRequest) -> Vm:
        """Create a VM. A 5xx (other than "out of capacity") or a dropped connection may still
        have created it, so the VM is looked up by name before each retry."""
        body = {
            "user_public_key": request.public_key,
            "hardware_profile": request.hardware_profile,
            "instance_type": request.instance_type,
            "instance_specs": {"gpu_count": request.gpu_count},
            "display_name": request.name,
        }
        url = self.base_url + "/vms/create"
        for attempt in range(self.http.max_attempts):
            last = attempt == self.http.max_attempts - 1
            try:
                response = self.http.send(
                    "POST", url, json=body, retry=False, timeout_s=CREATE_TIMEOUT_S
                )
            except TransportError:
                if last:
                    raise
                response = None
            if response is not None:
                if response.status_code < 300:
                    return vm_from_json(response.json())
                if response.status_code == 429 and not last:
                    self.http.sleep(self.http.delay_for(response, attempt))
                    continue
                if response.status_code < 500 or is_capacity_error(response):
                    raise self._error(response)
            found = self.find_vm_by_name(request.name)
            if found is not None:
                return found
            if last:
                assert response is not None
                raise self._error(response)
            self.http.sleep(backoff_s(attempt, self.http.rng))
        raise AssertionError("unreachable")  # pragma: no cover

    def delete_vm(self, vm_id: str) -> None:
        """Terminate the VM (local disk wiped). Idempotent: unknown counts as deleted."""
        try:
            self._call("DELETE", f"/vms/{_safe_id(vm_id)}")
        except NotFoundError:
            return

    def _call(
        self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        response = self.http.send(method, self.base_url + path, json=json, params=params)
        if response.status_code >= 300:
            raise self._error(response)
        if not response.content:
            return {}
        body: dict[str, Any] = response.json()
        return body

    def _error(self, response: httpx.Response) -> RunctlError:
        detail = _detail(response)
        status = response.status_code
        if status == 401:
            return AuthError(f"Lyceum rejected the API key ({detail})", hint=_KEY_HINT)
        if status == 402:
            return ProviderError(f"Lyceum: insufficient credits ({detail})",
                                 hint="top up the account in the Lyceum dashboard",
                                 status=status, body=response.text[:500])  # fmt: skip
        if status == 404:
            return NotFoundError(f"Lyceum: {detail}", hint="see `runctl lyceum list`")
        if is_capacity_error(response):
            return NoCapacityError(
                f"Lyceum has no capacity: {detail}",
                hint="try another --profile or --gpu-count, switch --spot/--on-demand, or retry",
                status=status, body=response.text[:500],
            )  # fmt: skip
        return ProviderError(
            f"Lyceum API error {status}: {detail}",
            hint="retry later" if status >= 500 or status == 429 else "check the request values",
            status=status, body=response.text[:500],
        )  # fmt: skip


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, list):  # 422 HTTPValidationError
        return "; ".join(
            f"{'.'.join(str(p) for p in d.get('loc', []))}: {d.get('msg')}" for d in detail
        )
    return str(detail or response.reason_phrase)


def _float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _safe_id(vm_id: str) -> str:
    """VM ids are hex or UUIDs; refuse anything that could change the URL path."""
    if not vm_id or not vm_id.replace("-", "").isalnum() or len(vm_id) > 64:
        raise NotFoundError(f"invalid Lyceum VM id {vm_id!r}", hint="see `runctl lyceum list`")
    return vm_id
