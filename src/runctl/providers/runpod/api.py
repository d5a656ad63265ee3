"""RunpodApi: the raw RunPod client, REST v2 and GraphQL behind one interface.

On-demand pods, reads, stop/start, terminate and the GPU catalog use REST v2
(``https://api.runpod.io/v2``); spot pods exist only in GraphQL, so ``create_pod`` with
``spot=True`` sends the named ``podRentInterruptable`` operation with variables (never
string-interpolated literals), and spot resume sends ``podBidResume``. Both surfaces come back
as the same ``Pod``. Errors, from either surface:

    401/403 -> AuthError        404 -> NotFoundError (get: None)        409 -> ConflictError
    "no longer any instances available" (either surface) -> NoCapacityError
    other 4xx, GraphQL ``errors`` -> ProviderError (never retried)
    429, 5xx -> retried (providers.http); a create is first looked up by name
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from runctl.errors import (
    AuthError,
    ConflictError,
    NoCapacityError,
    NotFoundError,
    ProviderError,
    RunctlError,
    TransportError,
)
from runctl.providers.http import HttpCaller, Sleep, backoff_s

REST_URL = "https://api.runpod.io/v2"
GRAPHQL_URL = "https://api.runpod.io/graphql"
CREATE_TIMEOUT_S = 60.0  # creation can take a while; the spec advises >= 30 s
_CAPACITY_TEXT = ("no longer any instances available", "no instances available")
_KEY_HINT = "set RUNPOD_API_KEY, or `runctl config set --global runpod.api_key KEY`"

# GraphQL status words -> the REST v2 vocabulary every Pod uses.
_GQL_STATUS = {
    "CREATED": "PROVISIONING",
    "RUNNING": "RUNNING",
    "RESTARTING": "STARTING",
    "EXITED": "EXITED",
    "PAUSED": "EXITED",
    "DEAD": "ERROR",
    "TERMINATED": "TERMINATED",
}

_POD_FIELDS = (
    "id name desiredStatus costPerHr gpuCount imageName machineId "
    "runtime { uptimeInSeconds ports { ip isIpPublic privatePort publicPort type } } "
    "machine { gpuDisplayName location podHostId }"
)
RENT_SPOT = (
    "mutation rentSpotPod($input: PodRentInterruptableInput!) "
    "{ podRentInterruptable(input: $input) { " + _POD_FIELDS + " } }"
)
BID_RESUME = (
    "mutation bidResumePod($podId: String!, $bidPerGpu: Float!, $gpuCount: Int!) "
    "{ podBidResume(input: {podId: $podId, bidPerGpu: $bidPerGpu, gpuCount: $gpuCount}) "
    "{ id desiredStatus costPerHr imageName lastStatusChange } }"
)
GPU_TYPES = (
    "query GpuTypes($n: Int!) { gpuTypes { id displayName memoryInGb secureSpotPrice "
    "communitySpotPrice lowestPrice(input: {gpuCount: $n}) { gpuTypeId minimumBidPrice "
    "uninterruptablePrice stockStatus } } }"
)


@dataclass(frozen=True)
class PodRequest:
    """What to create; ``spot`` pods need ``bid_per_gpu_usd`` (GraphQL only)."""

    name: str
    gpu_type_id: str
    image: str
    gpu_count: int = 1
    disk_gb: int = 50
    volume_gb: int = 20
    volume_path: str = "/workspace"
    cloud: str = "SECURE"
    env: dict[str, str] = field(default_factory=dict)
    spot: bool = False
    bid_per_gpu_usd: float | None = None


@dataclass(frozen=True)
class Pod:
    """A pod from either API surface, in REST v2 terms."""

    pod_id: str
    name: str
    status: str  # PROVISIONING STARTING RUNNING EXITED ERROR TERMINATED (or unknown text)
    cost_per_hr: float | None
    gpu_id: str | None = None
    gpu_count: int | None = None
    image: str | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class GpuOffer:
    gpu_id: str
    name: str
    memory_gb: int | None
    secure_usd: float | None  # on-demand $/h per GPU
    community_usd: float | None
    availability: str  # NONE LOW MEDIUM HIGH
    max_count: int | None
    spot_min_bid_usd: float | None = None


def _float(value: Any) -> float | None:
    """Costs come as numbers or strings (the v1 spec's own example is "0.74")."""
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def pod_from_rest(data: dict[str, Any]) -> Pod:
    """Parse a REST v2 Pod: SSH from ``ssh.direct``, else ``runtime.ports`` private 22."""
    host, port = None, None
    direct = (data.get("ssh") or {}).get("direct") or {}
    if direct.get("host") and direct.get("port"):
        host, port = str(direct["host"]), int(direct["port"])
    else:
        for entry in (data.get("runtime") or {}).get("ports") or []:
            if entry.get("private") == 22 and entry.get("public") and entry.get("ip"):
                host, port = str(entry["ip"]), int(entry["public"])
    gpu = data.get("gpu") or {}
    return Pod(
        pod_id=str(data["id"]),
        name=str(data.get("name") or ""),
        status=str(data.get("status") or "UNKNOWN"),
        cost_per_hr=_float(data.get("cost")),
        gpu_id=gpu.get("id"),
        gpu_count=gpu.get("count"),
        image=data.get("image"),
        ssh_host=host,
        ssh_port=port,
        raw=data,
    )


def pod_from_graphql(data: dict[str, Any]) -> Pod:
    """Parse a GraphQL pod: RUNNING without ``runtime`` is still starting; public port 22 only."""
    desired = str(data.get("desiredStatus") or "UNKNOWN")
    runtime = data.get("runtime")
    status = _GQL_STATUS.get(desired, desired)
    if status == "RUNNING" and not runtime:
        status = "STARTING"
    host, port = None, None
    for entry in (runtime or {}).get("ports") or []:
        if entry.get("privatePort") == 22 and entry.get("isIpPublic") and entry.get("publicPort"):
            host, port = str(entry["ip"]), int(entry["publicPort"])
    return Pod(
        pod_id=str(data["id"]),
        name=str(data.get("name") or ""),
        status=status,
        cost_per_hr=_float(data.get("costPerHr")),
        gpu_count=data.get("gpuCount"),
        image=data.get("imageName"),
        ssh_host=host,
        ssh_port=port,
        raw=data,
    )


def is_capacity_message(text: str) -> bool:
    lowered = text.lower()
    return any(marker in lowered for marker in _CAPACITY_TEXT)


class RunpodApi:
    """Raw RunPod calls over an injected ``httpx.Client``. Every method blocks briefly."""

    def __init__(
        self,
        client: httpx.Client,
        *,
        api_key: str,
        rest_url: str = REST_URL,
        graphql_url: str = GRAPHQL_URL,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.http = HttpCaller(client, api_key, "RunPod", sleep=sleep)
        self.rest_url = rest_url.rstrip("/")
        self.graphql_url = graphql_url

    # ------------------------------------------------------------------ reads

    def list_pods(self) -> list[Pod]:
        """Every pod of the account (REST v2 has no server-side filter)."""
        body = self._rest("GET", "/pods")
        return [pod_from_rest(p) for p in body.get("pods", [])]

    def get_pod(self, pod_id: str) -> Pod | None:
        """The pod, or None when it is unknown (404)."""
        try:
            return pod_from_rest(self._rest("GET", f"/pods/{_safe_id(pod_id)}"))
        except NotFoundError:
            return None

    def find_pod_by_name(self, name: str) -> Pod | None:
        """A live pod named ``name`` (names are not unique server-side; runctl's are)."""
        for pod in self.list_pods():
            if pod.name == name and pod.status != "TERMINATED":
                return pod
        return None

    def gpu_offers(self, gpu_count: int = 1) -> list[GpuOffer]:
        """The GPU catalog with on-demand prices per GPU per hour (REST v2)."""
        body = self._rest("GET", "/catalog/gpus", params={"gpuCount": str(gpu_count)})
        offers = []
        for gpu in body.get("gpus", []):
            price = gpu.get("price") or {}
            max_count = gpu.get("maxCount") or {}
            offers.append(
                GpuOffer(
                    gpu_id=str(gpu["id"]),
                    name=str(gpu.get("name") or gpu["id"]),
                    memory_gb=gpu.get("memory"),
                    secure_usd=_float(price.get("secure")) if gpu.get("secure") else None,
                    community_usd=_float(price.get("community")) if gpu.get("community") else None,
                    availability=str(gpu.get("availability") or "NONE"),
                    max_count=max(max_count.values(), default=None) if max_count else None,
                )
            )
        return offers

    def spot_bids(self, gpu_count: int = 1) -> dict[str, float]:
        """GPU id -> current minimum spot bid per GPU per hour (GraphQL ``gpuTypes``)."""
        data = self._graphql("GpuTypes", GPU_TYPES, {"n": gpu_count})
        bids: dict[str, float] = {}
        for gpu in data.get("gpuTypes") or []:
            low = gpu.get("lowestPrice") or {}
            bid = _float(low.get("minimumBidPrice"))
            if bid:
                bids[str(gpu["id"])] = bid
        return bids

    # ----------------------------------------------------------------- writes

    def create_pod(self, request: PodRequest) -> Pod:
        """Create a pod: REST v2 on-demand, GraphQL spot. Blocks for the API call only.

        A 5xx or a dropped connection does not prove nothing was created, so before every
        retry the pod is looked up by its (unique, runctl-made) name.
        """
        error = self._gql_error if request.spot else self._rest_error
        for attempt in range(self.http.max_attempts):
            last = attempt == self.http.max_attempts - 1
            try:
                response = self._send_create(request)
            except TransportError:
                if last:
                    raise
                response = None
            if response is not None:
                status = response.status_code
                if status < 300:
                    if request.spot:
                        return pod_from_graphql(
                            self._graphql_data(response)["podRentInterruptable"]
                        )
                    return pod_from_rest(response.json())
                if status == 429 and not last:
                    self.http.sleep(self.http.delay_for(response, attempt))
                    continue  # a 429 was refused before anything was created
                if status < 500 or is_capacity_message(response.text):
                    raise error(response)
            found = self.find_pod_by_name(request.name)
            if found is not None:
                return found
            if last:
                assert response is not None
                raise error(response)
            self.http.sleep(backoff_s(attempt, self.http.rng))
        raise AssertionError("unreachable")  # pragma: no cover

    def _send_create(self, request: PodRequest) -> httpx.Response:
        if request.spot:
            variables = {"input": _spot_input(request)}
            return self._send_graphql(
                "rentSpotPod", RENT_SPOT, variables, retry=False, timeout_s=CREATE_TIMEOUT_S
            )
        return self.http.send(
            "POST", self.rest_url + "/pods", json=_rest_input(request),
            retry=False, timeout_s=CREATE_TIMEOUT_S,
        )  # fmt: skip

    def stop_pod(self, pod_id: str) -> Pod:
        """Stop (EXITED): the GPU is released, /workspace kept. ConflictError if not running."""
        return pod_from_rest(self._action(pod_id, "stop"))

    def start_pod(self, pod_id: str) -> Pod:
        """Resume a stopped on-demand pod (REST v2 ``start``)."""
        return pod_from_rest(self._action(pod_id, "start"))

    def resume_spot_pod(self, pod_id: str, bid_per_gpu_usd: float, gpu_count: int) -> Pod:
        """Resume a stopped spot pod with a new bid (GraphQL ``podBidResume``)."""
        variables = {"podId": pod_id, "bidPerGpu": bid_per_gpu_usd, "gpuCount": gpu_count}
        data = self._graphql("bidResumePod", BID_RESUME, variables)
        return pod_from_graphql(data["podBidResume"])

    def terminate_pod(self, pod_id: str) -> None:
        """Delete the pod and its disks. Idempotent: an unknown pod counts as terminated."""
        try:
            self._rest("DELETE", f"/pods/{_safe_id(pod_id)}")
        except NotFoundError:
            return

    # ------------------------------------------------------------ transports

    def _action(self, pod_id: str, action: str) -> dict[str, Any]:
        return self._rest("POST", f"/pods/{_safe_id(pod_id)}/action", json={"action": action})

    def _rest(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        response = self.http.send(method, self.rest_url + path, json=json, params=params)
        if response.status_code >= 300:
            raise self._rest_error(response)
        if response.status_code == 204 or not response.content:
            return {}
        body: dict[str, Any] = response.json()
        return body

    def _rest_error(self, response: httpx.Response) -> RunctlError:
        """Map an RFC 9457 problem (``{title, status, detail}``) to a runctl error."""
        detail = _problem_text(response)
        status = response.status_code
        if status == 401:
            return AuthError(f"RunPod rejected the API key ({detail})", hint=_KEY_HINT)
        if status == 403:
            return AuthError(
                f"the RunPod API key lacks permission: {detail}",
                hint="create a key with read/write access to pods in the RunPod console",
            )
        if status == 404:
            return NotFoundError(f"RunPod: {detail}", hint="see `runctl runpod list`")
        if status == 409:
            return ConflictError(f"RunPod refused: {detail}", hint="check `runctl runpod status`")
        if is_capacity_message(detail):
            return NoCapacityError(
                f"RunPod has no capacity: {detail}",
                hint="try another --gpu, --cloud COMMUNITY, or later",
                status=status, body=response.text[:500],
            )  # fmt: skip
        return ProviderError(
            f"RunPod API error {status}: {detail}",
            hint="retry later" if status >= 500 or status == 429 else "check the request values",
            status=status, body=response.text[:500],
        )  # fmt: skip

    def _send_graphql(
        self,
        operation: str,
        query: str,
        variables: dict[str, Any],
        *,
        retry: bool = True,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        payload = {"operationName": operation, "query": query, "variables": variables}
        return self.http.send(
            "POST", self.graphql_url, json=payload, retry=retry, timeout_s=timeout_s
        )

    def _graphql(self, operation: str, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        return self._graphql_data(self._send_graphql(operation, query, variables))

    def _graphql_data(self, response: httpx.Response) -> dict[str, Any]:
        """``data`` of a GraphQL answer; errors come as HTTP 200 with an ``errors`` array."""
        if response.status_code != 200:
            raise self._gql_error(response)
        body = response.json()
        if body.get("errors"):
            raise self._gql_error(response)
        data: dict[str, Any] = body.get("data") or {}
        return data

    def _gql_error(self, response: httpx.Response) -> RunctlError:
        if response.status_code in (401, 403):
            return AuthError("RunPod rejected the API key", hint=_KEY_HINT)
        try:
            errors = response.json().get("errors") or []
        except ValueError:
            errors = []
        message = str(errors[0].get("message")) if errors else _problem_text(response)
        if is_capacity_message(message):
            return NoCapacityError(
                f"RunPod has no capacity: {message}",
                hint="raise --bid, try another --gpu, or drop --spot",
                status=response.status_code, body=response.text[:500],
            )  # fmt: skip
        return ProviderError(
            f"RunPod GraphQL error: {message}",
            hint="retry later" if response.status_code >= 500 else "check the request values",
            status=response.status_code, body=response.text[:500],
        )  # fmt: skip


def _problem_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(body, dict):
        for key in ("detail", "message", "title", "error"):
            if body.get(key):
                return str(body[key])
    return response.reason_phrase


def _safe_id(pod_id: str) -> str:
    """Pod ids are short alphanumerics; refuse anything that could change the URL path."""
    if not pod_id or not pod_id.replace("-", "").isalnum() or len(pod_id) > 64:
        raise NotFoundError(f"invalid RunPod pod id {pod_id!r}", hint="see `runctl runpod list`")
    return pod_id


def _rest_input(request: PodRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": request.name,
        "image": request.image,
        "gpu": {"id": request.gpu_type_id, "count": request.gpu_count},
        "cloud": request.cloud,
        "disk": request.disk_gb,
        "ports": ["22/tcp"],
        "startSsh": True,
        "env": dict(request.env),
    }
    if request.volume_gb:
        body["mounts"] = {"persistent": {"size": request.volume_gb, "path": request.volume_path}}
    return body


def _spot_input(request: PodRequest) -> dict[str, Any]:
    if request.bid_per_gpu_usd is None:
        raise ProviderError("a spot pod needs a bid", hint="pass --bid USD (per GPU per hour)")
    return {
        "bidPerGpu": request.bid_per_gpu_usd,
        "cloudType": request.cloud,
        "gpuTypeId": request.gpu_type_id,
        "gpuCount": request.gpu_count,
        "name": request.name,
        "imageName": request.image,
        "containerDiskInGb": request.disk_gb,
        "volumeInGb": request.volume_gb,
        "volumeMountPath": request.volume_path,
        "ports": "22/tcp",
        "startSsh": True,
        "supportPublicIp": True,
        "env": [{"key": k, "value": v} for k, v in request.env.items()],
    }
