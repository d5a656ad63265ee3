"""RunpodApi against the fake RunPod server on loopback: parsing, states, errors, retries."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from runctl.errors import (
    AuthError,
    ConflictError,
    NoCapacityError,
    ProviderError,
    TransportError,
)
from runctl.providers.runpod.api import (
    PodRequest,
    RunpodApi,
    pod_from_graphql,
    pod_from_rest,
)
from tests.fakes.fixtures import Sleeps
from tests.fakes.http_fake import fixture
from tests.fakes.runpod_server import FakeRunpod

GPU = "NVIDIA GeForce RTX 4090"


@pytest.fixture
def api(runpod_fake: FakeRunpod, sleeps: Sleeps) -> Iterator[RunpodApi]:
    with httpx.Client(timeout=5) as client:
        yield RunpodApi(
            client,
            api_key=runpod_fake.api_key,
            rest_url=runpod_fake.rest_url,
            graphql_url=runpod_fake.graphql_url,
            sleep=sleeps,
        )


def _request(name: str = "runctl-t-000001", **kw: object) -> PodRequest:
    base: dict[str, object] = {
        "name": name,
        "gpu_type_id": GPU,
        "image": "img:1",
        "env": {"PUBLIC_KEY": "ssh-ed25519 AAAA test"},
    }
    base.update(kw)
    return PodRequest(**base)  # type: ignore[arg-type]


# ----------------------------------------------------------------------- parsing fixtures


def test_rest_pod_fixture_parses_direct_ssh_and_cost() -> None:
    pod = pod_from_rest(fixture("runpod", "pod_v2_running.json"))
    assert (pod.pod_id, pod.status, pod.cost_per_hr) == ("7h9k2m4n6p", "RUNNING", 0.44)
    assert (pod.ssh_host, pod.ssh_port) == ("195.26.233.3", 34446)
    assert (pod.gpu_id, pod.gpu_count) == ("NVIDIA H100 80GB HBM3", 1)


def test_rest_pod_falls_back_to_runtime_ports() -> None:
    data = fixture("runpod", "pod_v2_running.json")
    data["ssh"] = {"proxy": data["ssh"]["proxy"], "direct": None}
    pod = pod_from_rest(data)
    assert (pod.ssh_host, pod.ssh_port) == ("195.26.233.3", 34446)


def test_graphql_pod_uses_public_port_22_only() -> None:
    pod = pod_from_graphql(fixture("runpod", "graphql_pod_running.json")["data"]["pod"])
    assert (pod.ssh_host, pod.ssh_port, pod.status) == ("213.173.108.12", 17445, "RUNNING")
    assert pod.cost_per_hr == 2.99


def test_graphql_rent_answer_without_runtime_is_starting_and_string_cost_parses() -> None:
    data = fixture("runpod", "graphql_rent_interruptable.json")["data"]["podRentInterruptable"]
    data["costPerHr"] = "0.74"  # the v1 spec's own example uses a string
    pod = pod_from_graphql(data)
    assert (pod.status, pod.ssh_host, pod.cost_per_hr) == ("STARTING", None, 0.74)


# ------------------------------------------------------------------- on-demand / spot


def test_on_demand_create_sends_the_spec_shape_and_moves_through_states(
    api: RunpodApi, runpod_fake: FakeRunpod
) -> None:
    pod = api.create_pod(_request(volume_gb=100))
    assert pod.status == "PROVISIONING" and pod.cost_per_hr == 0.44
    (sent,) = runpod_fake.seen("POST /v2/pods")
    assert set(sent.body) == set(fixture("runpod", "pod_v2_create_request.json"))
    assert sent.body["ports"] == ["22/tcp"] and sent.body["startSsh"] is True
    assert sent.headers["authorization"] == f"Bearer {runpod_fake.api_key}"
    seen = [api.get_pod(pod.pod_id) for _ in range(2)]
    assert [p.status for p in seen if p] == ["STARTING", "RUNNING"]
    assert (seen[-1].ssh_host, seen[-1].ssh_port) == ("127.0.0.1", 22)  # type: ignore[union-attr]


def test_spot_create_is_a_named_graphql_operation_with_variables(
    api: RunpodApi, runpod_fake: FakeRunpod
) -> None:
    pod = api.create_pod(_request(spot=True, bid_per_gpu_usd=0.25, env={"A": 'q"u;o`te'}))
    (sent,) = runpod_fake.seen("graphql rentSpotPod")
    assert sent.body["operationName"] == "rentSpotPod"
    assert "$input: PodRentInterruptableInput!" in sent.body["query"]
    assert "runctl-t-000001" not in sent.body["query"]  # values travel only as variables
    spec = sent.body["variables"]["input"]
    assert spec["bidPerGpu"] == 0.25 and spec["ports"] == "22/tcp"
    assert spec["env"] == [{"key": "A", "value": 'q"u;o`te'}]
    assert pod.cost_per_hr == 0.25 and runpod_fake.spot[pod.pod_id] == 0.25
    assert api.get_pod(pod.pod_id) is not None  # the same pod is visible through REST


def test_spot_bid_below_minimum_is_a_graphql_error_not_retried(
    api: RunpodApi, runpod_fake: FakeRunpod
) -> None:
    with pytest.raises(ProviderError, match="below the minimum"):
        api.create_pod(_request(spot=True, bid_per_gpu_usd=0.01))
    assert len(runpod_fake.seen("graphql rentSpotPod")) == 1


def test_gpu_offers_and_spot_bids(api: RunpodApi) -> None:
    offers = {o.gpu_id: o for o in api.gpu_offers()}
    assert offers[GPU].secure_usd == 0.44 and offers[GPU].community_usd == 0.31
    assert offers["NVIDIA H100 80GB HBM3"].community_usd is None
    assert api.spot_bids() == {GPU: 0.2, "NVIDIA H100 80GB HBM3": 1.5}


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("spot", [False, True])
def test_out_of_capacity_is_recognised_and_not_retried(
    api: RunpodApi, runpod_fake: FakeRunpod, sleeps: Sleeps, spot: bool
) -> None:
    runpod_fake.no_capacity.add(GPU)
    with pytest.raises(NoCapacityError, match="no longer any instances"):
        api.create_pod(_request(spot=spot, bid_per_gpu_usd=0.3 if spot else None))
    creates = runpod_fake.seen("graphql rentSpotPod" if spot else "POST /v2/pods")
    assert len(creates) == 1 and sleeps == [] and runpod_fake.seen("GET /v2/pods") == []


def test_bad_key_is_auth_error_without_the_key(runpod_fake: FakeRunpod) -> None:
    with httpx.Client() as client:
        api = RunpodApi(
            client,
            api_key="rp_wrong_secret",
            rest_url=runpod_fake.rest_url,
            graphql_url=runpod_fake.graphql_url,
            sleep=Sleeps(),
        )
        with pytest.raises(AuthError) as caught:
            api.list_pods()
    assert "rp_wrong_secret" not in caught.value.message + str(caught.value.hint)
    assert len(runpod_fake.requests) == 1  # 401 is never retried


def test_4xx_is_not_retried(api: RunpodApi, runpod_fake: FakeRunpod, sleeps: Sleeps) -> None:
    pod = api.create_pod(_request())
    runpod_fake.inject("GET /v2/pods/{id}", 400, {"title": "Bad Request", "detail": "nope"})
    with pytest.raises(ProviderError, match="400: nope"):
        api.get_pod(pod.pod_id)
    assert len(runpod_fake.seen("GET /v2/pods/{id}")) == 1 and sleeps == []


def test_429_honours_retry_after(api: RunpodApi, runpod_fake: FakeRunpod, sleeps: Sleeps) -> None:
    runpod_fake.inject(
        "GET /v2/pods",
        429,
        fixture("runpod", "problem_429.json"),
        headers={"Retry-After": "7"},
        times=2,
    )
    assert api.list_pods() == []
    assert sleeps == [7.0, 7.0] and len(runpod_fake.seen("GET /v2/pods")) == 3


def test_retry_after_beyond_the_cap_gives_up(api: RunpodApi, runpod_fake: FakeRunpod) -> None:
    runpod_fake.inject("GET /v2/pods", 429, headers={"Retry-After": "3600"})
    with pytest.raises(ProviderError, match="rate limit"):
        api.list_pods()


def test_5xx_backs_off_exponentially_with_jitter(
    api: RunpodApi, runpod_fake: FakeRunpod, sleeps: Sleeps
) -> None:
    runpod_fake.inject("GET /v2/pods", 503, fixture("runpod", "problem_500.json"), times=3)
    assert api.list_pods() == []
    assert len(sleeps) == 3
    for attempt, delay in enumerate(sleeps):
        ceiling = 0.5 * 2**attempt
        assert ceiling / 2 <= delay <= ceiling


def test_5xx_retries_are_bounded(api: RunpodApi, runpod_fake: FakeRunpod, sleeps: Sleeps) -> None:
    runpod_fake.inject("GET /v2/pods", 502, {"detail": "bad gateway"}, times=99)
    with pytest.raises(ProviderError, match="502"):
        api.list_pods()
    assert len(runpod_fake.seen("GET /v2/pods")) == 5 and len(sleeps) == 4


@pytest.mark.parametrize("spot", [False, True])
def test_create_that_answers_5xx_but_happened_is_found_by_name(
    api: RunpodApi, runpod_fake: FakeRunpod, sleeps: Sleeps, spot: bool
) -> None:
    route = "graphql rentSpotPod" if spot else "POST /v2/pods"
    runpod_fake.inject(route, 500, fixture("runpod", "problem_500.json"), after=True)
    pod = api.create_pod(_request(spot=spot, bid_per_gpu_usd=0.3 if spot else None))
    assert len(runpod_fake.seen(route)) == 1  # no second create
    assert list(runpod_fake.pods) == [pod.pod_id] and pod.name == "runctl-t-000001"
    assert sleeps == []


def test_create_that_failed_with_5xx_is_retried_after_the_lookup(
    api: RunpodApi, runpod_fake: FakeRunpod, sleeps: Sleeps
) -> None:
    runpod_fake.inject("POST /v2/pods", 503, fixture("runpod", "problem_500.json"))
    pod = api.create_pod(_request())
    assert len(runpod_fake.seen("POST /v2/pods")) == 2
    assert len(runpod_fake.seen("GET /v2/pods")) == 1  # looked up before retrying
    assert list(runpod_fake.pods) == [pod.pod_id] and len(sleeps) == 1


def test_stop_start_and_idempotent_terminate(api: RunpodApi, runpod_fake: FakeRunpod) -> None:
    pod = api.create_pod(_request())
    with pytest.raises(ConflictError):
        api.stop_pod(pod.pod_id)  # 409: not running yet
    for _ in range(2):
        api.get_pod(pod.pod_id)
    assert api.stop_pod(pod.pod_id).status == "EXITED"
    stopped = api.get_pod(pod.pod_id)
    assert stopped is not None and stopped.cost_per_hr == 0.0 and stopped.ssh_host is None
    assert api.start_pod(pod.pod_id).status == "PROVISIONING"
    api.terminate_pod(pod.pod_id)
    api.terminate_pod(pod.pod_id)  # already gone: still success
    assert api.get_pod(pod.pod_id) is None


def test_spot_resume_rebids_through_graphql(api: RunpodApi, runpod_fake: FakeRunpod) -> None:
    pod = api.create_pod(_request(spot=True, bid_per_gpu_usd=0.25))
    for _ in range(2):
        api.get_pod(pod.pod_id)
    api.stop_pod(pod.pod_id)
    resumed = api.resume_spot_pod(pod.pod_id, 0.3, 1)
    (sent,) = runpod_fake.seen("graphql bidResumePod")
    assert sent.body["variables"] == {"podId": pod.pod_id, "bidPerGpu": 0.3, "gpuCount": 1}
    assert resumed.cost_per_hr == 0.3 and runpod_fake.spot[pod.pod_id] == 0.3


def test_unreachable_api_is_a_transport_error(sleeps: Sleeps) -> None:
    with httpx.Client(timeout=1) as client:
        api = RunpodApi(client, api_key="k", rest_url="http://127.0.0.1:9/v2", sleep=sleeps)
        with pytest.raises(TransportError, match="cannot reach the RunPod API"):
            api.list_pods()
    assert len(sleeps) == 4
