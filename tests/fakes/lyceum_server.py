"""A stateful fake of the Lyceum VM API (``/api/v2/external``), written from the published docs.

VMs move pending -> provisioning -> ready (first without an IP, as seen live) -> ready with
``ip_address`` = ``"host:port"`` of the loopback sshd stand, one step per read. It reproduces
the documented quirks: capacity refusals as HTTP 500, ``gpu_count`` nested in
``instance_specs`` (0 becomes 1), terminated VMs listed unless ``include_terminated=false``.
"""

from __future__ import annotations

import copy
import secrets
from datetime import UTC, datetime
from typing import Any

from tests.fakes.http_fake import FakeApi, Reply, Request, fixture

PREFIX = "/api/v2/external"
PROFILES = ("a100", "b200", "b300", "h100", "h200", "l40s")


class FakeLyceum(FakeApi):
    def __init__(
        self,
        api_key: str = "lk_test_0123456789",
        *,
        ssh_host: str = "127.0.0.1",
        ssh_port: int = 22,
    ) -> None:
        super().__init__(api_key)
        self.ssh_host = ssh_host
        self.ssh_port = ssh_port
        self.vms: dict[str, dict[str, Any]] = {}
        self.keys: dict[str, str] = {}  # vm id -> user_public_key received
        self.no_capacity: set[tuple[str, str]] = set()  # (profile, instance_type)
        self.bare_ip = False  # answer "host" instead of "host:port" (port must be 22)

    @property
    def api_url(self) -> str:
        return self.origin + PREFIX

    def route(self, request: Request) -> str:
        path = request.path.removeprefix(PREFIX)
        parts = path.strip("/").split("/")
        if (
            parts[0] == "vms"
            and len(parts) >= 2
            and parts[1] not in ("create", "list", "availability")
        ):
            shape = "/vms/{id}" + ("/" + "/".join(parts[2:]) if len(parts) > 2 else "")
            return f"{request.method} {shape}"
        return f"{request.method} {path}"

    def unauthorized(self) -> Reply:
        return Reply(401, fixture("lyceum", "error_unauthorized.json"))

    def handle(self, request: Request) -> Reply:
        route = request.route
        if route == "GET /user/status":
            return Reply(200, fixture("lyceum", "user_status.json"))
        if route == "GET /vms/availability":
            return Reply(200, fixture("lyceum", "availability.json"))
        if route == "GET /pricing":
            return Reply(200, fixture("lyceum", "pricing.json"))
        if route == "POST /vms/create":
            return self._create(request.body if isinstance(request.body, dict) else {})
        if route == "GET /vms/list":
            return self._list(request.query)
        vm_id = request.path.removeprefix(PREFIX).strip("/").split("/")[1]
        vm = self.vms.get(vm_id)
        if vm is None or (route == "DELETE /vms/{id}" and vm["status"] == "terminated"):
            return Reply(404, fixture("lyceum", "error_not_found.json"))
        if route == "GET /vms/{id}/status":
            self._advance(vm)
            return Reply(200, copy.deepcopy(vm))
        if route == "DELETE /vms/{id}":
            vm.update(status="terminated", ip_address=None)
            answer = fixture("lyceum", "vm_delete.json")
            answer.update(vm_id=vm_id, message=f"VM {vm_id} has been terminated")
            return Reply(200, answer)
        return Reply(404, {"detail": "Not Found"})

    def _create(self, body: dict[str, Any]) -> Reply:
        missing = [
            k for k in ("user_public_key", "hardware_profile", "instance_type") if not body.get(k)
        ]
        if missing:
            return Reply(
                422,
                {
                    "detail": [
                        {
                            "loc": ["body", k],
                            "msg": "field required",
                            "type": "value_error.missing",
                        }
                        for k in missing
                    ]
                },
            )
        profile, kind = body["hardware_profile"], body["instance_type"]
        if profile not in PROFILES:
            detail = f"Unknown hardware_profile '{profile}'. Valid options: {', '.join(PROFILES)}"
            return Reply(400, {"detail": detail})
        if (profile, kind) in self.no_capacity:
            return Reply(500, fixture("lyceum", "error_capacity.json"))
        count = int((body.get("instance_specs") or {}).get("gpu_count") or 1)  # 0 -> 1 quirk
        vm = fixture("lyceum", "vm_create_pending.json")
        vm_id = secrets.token_hex(16)
        vm.update(
            vm_id=vm_id,
            display_name=body.get("display_name") or f"vm-{vm_id[:8]}",
            instance_specs={"gpu_type": profile, "gpu_count": count},
            instance_type=kind,
            hardware_profile=None,
            gpu_count=None,
            name=f"hyd-production-vm-{vm_id[:8]}",
            created_at=datetime.now(UTC).isoformat(),
            status_check_url=f"{PREFIX}/vms/{vm_id}/status",
        )
        self.keys[vm_id] = body["user_public_key"]
        self.vms[vm_id] = vm
        return Reply(200, copy.deepcopy(vm))

    def _advance(self, vm: dict[str, Any]) -> None:
        status = vm["status"]
        if status == "pending":
            vm["status"] = "provisioning"
        elif status == "provisioning":
            vm.update(
                status="ready",
                ip_address=None,
                hardware_profile=vm["instance_specs"]["gpu_type"],
                gpu_count=vm["instance_specs"]["gpu_count"],
            )
        elif status == "ready" and vm.get("ip_address") is None:
            port_part = "" if self.bare_ip else f":{self.ssh_port}"
            vm["ip_address"] = f"{self.ssh_host}{port_part}"

    def _list(self, query: dict[str, str]) -> Reply:
        def wanted(vm: dict[str, Any]) -> bool:
            # Every include_* defaults to true: terminated VMs are listed unless excluded.
            if vm["status"] == "terminated":
                return query.get("include_terminated", "true") != "false"
            if vm["status"] in ("failed", "error"):
                return query.get("include_failed", "true") != "false"
            return True

        vms = [copy.deepcopy(v) for v in self.vms.values() if wanted(v)]
        return Reply(200, {"vms": vms, "total": len(vms)})
