"""LyceumApi against the fake Lyceum server on loopback: quirks, states, errors, retries."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from runctl.errors import AuthError, NoCapacityError, ProviderError
from runctl.providers.lyceum.api import LyceumApi, VmRequest, parse_address, vm_from_json
from tests.fakes.fixtures import Sleeps
from tests.fakes.http_fake import fixture
from tests.fakes.lyceum_server import FakeLyceum


@pytest.fixture
def api(lyceum_fake: FakeLyceum, sleeps: Sleeps) -> Iterator[LyceumApi]:
    with httpx.Client(timeout=5) as client:
        yield LyceumApi(
            client, api_key=lyceum_fake.api_key, base_url=lyceum_fake.api_url, sleep=sleeps
        )


def _request(**kw: object) -> VmRequest:
    base: dict[str, object] = {
        "name": "runctl-t-000001",
        "hardware_profile": "h100",
        "public_key": "ssh-ed25519 AAAA test",
    }
    base.update(kw)
    return VmRequest(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("198.51.100.20:22", ("198.51.100.20", 22)),
        ("203.0.113.10", ("203.0.113.10", 22)),
        ("127.0.0.1:2222", ("127.0.0.1", 2222)),
        (None, (None, 22)),
    ],
)
def test_ip_address_is_host_or_host_port(
    value: str | None, expected: tuple[str | None, int]
) -> None:
    assert parse_address(value) == expected


def test_fixtures_parse() -> None:
    pending = vm_from_json(fixture("lyceum", "vm_create_pending.json"))
    assert (pending.status, pending.host, pending.hardware_profile, pending.gpu_count) == (
        "pending",
        None,
        "l40s",
        1,
    )
    ready = vm_from_json(fixture("lyceum", "vm_status_ready_host_port.json"))
    assert (ready.host, ready.port, ready.name) == ("198.51.100.20", 22, "runctl-spot-h100")
    assert vm_from_json(fixture("lyceum", "vm_status_ready_no_ip.json")).host is None
    bare = vm_from_json(fixture("lyceum", "vm_status_ready_bare_ip.json"))
    assert (bare.host, bare.port, bare.gpu_count) == ("203.0.113.10", 22, 2)


def test_prices_are_strings_under_applies_to_or_group_by(api: LyceumApi) -> None:
    assert api.pricing() == {
        "on-demand.h100.1x": 2.79,
        "spot.h100.1x": 1.1,
        "on-demand.h100.2x": 5.58,
        "on-demand.l40s.1x": 1.19,
    }
    offers = {(o.hardware_profile, o.instance_type): o for o in api.availability()}
    assert offers[("h100", "spot")].hourly_usd_per_gpu == 1.1
    assert offers[("l40s", "on-demand")].available_gpus == (1, 2)


def test_create_and_states_until_ready_with_host_port(
    api: LyceumApi, lyceum_fake: FakeLyceum
) -> None:
    vm = api.create_vm(_request(gpu_count=2, instance_type="spot"))
    (sent,) = lyceum_fake.seen("POST /vms/create")
    assert sent.body["instance_specs"] == {"gpu_count": 2}  # nested, as the API requires
    assert sent.body["instance_type"] == "spot" and sent.body["display_name"] == vm.name
    assert (vm.status, vm.gpu_count, vm.hardware_profile) == ("pending", 2, "h100")
    seen = [api.get_vm(vm.vm_id) for _ in range(3)]
    assert [(v.status, v.host) for v in seen if v] == [
        ("provisioning", None),
        ("ready", None),
        ("ready", "127.0.0.1"),
    ]


def test_capacity_500_is_no_capacity_and_never_retried(
    api: LyceumApi, lyceum_fake: FakeLyceum, sleeps: Sleeps
) -> None:
    lyceum_fake.no_capacity.add(("h100", "on-demand"))
    with pytest.raises(NoCapacityError, match="could not be provisioned"):
        api.create_vm(_request())
    assert len(lyceum_fake.seen("POST /vms/create")) == 1
    assert lyceum_fake.seen("GET /vms/list") == [] and sleeps == []


def test_create_that_answers_5xx_but_happened_is_found_by_name(
    api: LyceumApi, lyceum_fake: FakeLyceum, sleeps: Sleeps
) -> None:
    lyceum_fake.inject("POST /vms/create", 502, {"detail": "Bad Gateway"}, after=True)
    vm = api.create_vm(_request())
    assert len(lyceum_fake.seen("POST /vms/create")) == 1 and list(lyceum_fake.vms) == [vm.vm_id]
    assert sleeps == []


def test_unknown_profile_and_validation_are_not_retried(
    api: LyceumApi, lyceum_fake: FakeLyceum, sleeps: Sleeps
) -> None:
    with pytest.raises(ProviderError, match="Unknown hardware_profile 'x100'"):
        api.create_vm(_request(hardware_profile="x100"))
    lyceum_fake.inject("POST /vms/create", 422, fixture("lyceum", "error_validation.json"))
    with pytest.raises(ProviderError, match="instance_specs.gpu_count: value is not a valid"):
        api.create_vm(_request())
    lyceum_fake.inject("GET /vms/list", 402, {"detail": "Insufficient credits"})
    with pytest.raises(ProviderError, match="insufficient credits"):
        api.list_vms()
    assert sleeps == [] and len(lyceum_fake.seen("POST /vms/create")) == 2


def test_unknown_vm_is_none_and_delete_is_idempotent(api: LyceumApi) -> None:
    assert api.get_vm("0123abcd") is None
    vm = api.create_vm(_request())
    api.delete_vm(vm.vm_id)
    api.delete_vm(vm.vm_id)  # 404 the second time: still success
    status = api.get_vm(vm.vm_id)
    assert status is not None and status.status == "terminated"


def test_list_leaves_out_terminated_vms(api: LyceumApi, lyceum_fake: FakeLyceum) -> None:
    gone, live = api.create_vm(_request(name="runctl-a-1")), api.create_vm(_request())
    api.delete_vm(gone.vm_id)
    assert [v.vm_id for v in api.list_vms()] == [live.vm_id]
    assert lyceum_fake.seen("GET /vms/list")[0].query == {
        "include_terminated": "false",
        "include_failed": "false",
    }
    # An older gateway ignoring the filter still gets filtered client-side.
    lyceum_fake.inject("GET /vms/list", 200, fixture("lyceum", "vm_list.json"), after=True)
    assert [v.status for v in api.list_vms()] == ["ready", "provisioning"]


def test_429_retry_after_then_success(
    api: LyceumApi, lyceum_fake: FakeLyceum, sleeps: Sleeps
) -> None:
    lyceum_fake.inject(
        "GET /user/status", 429, {"detail": "slow down"}, headers={"Retry-After": "3"}
    )
    assert api.user_status()["status"] == "authenticated"
    assert sleeps == [3.0]


def test_bad_key_is_auth_error(lyceum_fake: FakeLyceum) -> None:
    with httpx.Client() as client:
        api = LyceumApi(client, api_key="lk_wrong", base_url=lyceum_fake.api_url, sleep=Sleeps())
        with pytest.raises(AuthError, match="rejected the API key") as caught:
            api.user_status()
    assert "lk_wrong" not in caught.value.message and len(lyceum_fake.requests) == 1
