"""A stateful fake of the RunPod API (REST v2 + GraphQL), written from the published specs.

Pods move PROVISIONING -> STARTING -> RUNNING, one step per ``ticks_per_state`` reads of them.
Once RUNNING their SSH endpoint (``ssh.direct`` and ``runtime.ports`` private 22) is the
loopback sshd stand given at construction. GraphQL requests are dispatched on the operation
name and read typed variables, as the spec recommends; inline literals are refused.
"""

from __future__ import annotations

import copy
import secrets
from typing import Any

from tests.fakes.http_fake import FakeApi, Reply, Request, fixture

GQL_CAPACITY = fixture("runpod", "graphql_error_capacity.json")


def _problem(status: int, detail: str, title: str = "") -> Reply:
    titles = {400: "Bad Request", 404: "Not Found", 409: "Conflict", 422: "Unprocessable Entity"}
    return Reply(
        status,
        {"title": title or titles.get(status, "Error"), "status": status, "detail": detail},
        {"Content-Type": "application/problem+json"},
    )


def _gql_error(message: str, path: str) -> Reply:
    return Reply(200, {"errors": [{"message": message, "path": [path]}], "data": {path: None}})


class FakeRunpod(FakeApi):
    def __init__(
        self,
        api_key: str = "rp_test_0123456789",
        *,
        ssh_host: str = "127.0.0.1",
        ssh_port: int = 22,
    ) -> None:
        super().__init__(api_key)
        self.ssh_host = ssh_host
        self.ssh_port = ssh_port
        self.pods: dict[str, dict[str, Any]] = {}
        self.spot: dict[str, float] = {}  # pod id -> bid per GPU
        self.ticks: dict[str, int] = {}
        self.ticks_per_state = 1
        self.no_capacity: set[str] = set()  # GPU ids that are sold out
        self.zero_gpus_on_resume = False
        self.catalog = fixture("runpod", "catalog_gpus.json")
        self.gpu_types = fixture("runpod", "graphql_gpu_types.json")

    @property
    def rest_url(self) -> str:
        return self.origin + "/v2"

    @property
    def graphql_url(self) -> str:
        return self.origin + "/graphql"

    # ------------------------------------------------------------------ routing

    def route(self, request: Request) -> str:
        parts = request.path.strip("/").split("/")
        if parts == ["graphql"]:
            name = (
                (request.body or {}).get("operationName") if isinstance(request.body, dict) else ""
            )
            return f"graphql {name}"
        if parts[:2] == ["v2", "pods"]:
            shape = (
                "/v2/pods"
                + ("/{id}" if len(parts) > 2 else "")
                + ("/" + "/".join(parts[3:]) if len(parts) > 3 else "")
            )
            return f"{request.method} {shape}"
        return f"{request.method} {request.path}"

    def unauthorized(self) -> Reply:
        return Reply(
            401,
            fixture("runpod", "problem_401.json"),
            {"Content-Type": "application/problem+json"},
        )

    def handle(self, request: Request) -> Reply:
        parts = request.path.strip("/").split("/")
        route = request.route
        if route.startswith("graphql"):
            return self._graphql(request)
        if route == "GET /v2/pods":
            for pod_id in list(self.pods):
                self._advance(pod_id)
            return Reply(200, {"pods": [copy.deepcopy(p) for p in self.pods.values()]})
        if route == "POST /v2/pods":
            return self._create(request.body or {})
        if route == "GET /v2/catalog/gpus":
            return Reply(200, copy.deepcopy(self.catalog))
        pod_id = parts[2] if len(parts) > 2 else ""
        if pod_id not in self.pods:
            return _problem(404, "resource not found")
        if route == "GET /v2/pods/{id}":
            self._advance(pod_id)
            return Reply(200, copy.deepcopy(self.pods[pod_id]))
        if route == "DELETE /v2/pods/{id}":
            del self.pods[pod_id]
            return Reply(204)
        if route == "POST /v2/pods/{id}/action":
            return self._action(pod_id, (request.body or {}).get("action", ""))
        return _problem(404, "no such endpoint")

    # ------------------------------------------------------------------- REST

    def _price(self, gpu_id: str, cloud: str) -> float | None:
        for gpu in self.catalog["gpus"]:
            if gpu["id"] == gpu_id:
                price: float | None = gpu["price"][
                    "community" if cloud == "COMMUNITY" else "secure"
                ]
                return price
        return None

    def _create(self, body: dict[str, Any]) -> Reply:
        missing = [k for k in ("name", "image", "gpu") if not body.get(k)]
        if missing:
            return _problem(422, f"missing required field(s): {', '.join(missing)}")
        if not isinstance(body.get("env", {}), dict) or not isinstance(body.get("ports"), list):
            return _problem(400, "env must be an object and ports an array")
        gpu_id = body["gpu"].get("id")
        if gpu_id in self.no_capacity:
            return Reply(
                500,
                fixture("runpod", "create_no_capacity.json"),
                {"Content-Type": "application/problem+json"},
            )
        price = self._price(gpu_id, body.get("cloud", "SECURE"))
        if price is None:
            return _problem(400, f"unknown gpu id {gpu_id!r}")
        pod = self._new_pod(
            body["name"],
            body["image"],
            gpu_id,
            int(body["gpu"].get("count", 1)),
            price,
            body.get("env", {}),
            body.get("ports", []),
        )
        return Reply(201, copy.deepcopy(pod))

    def _new_pod(
        self,
        name: str,
        image: str,
        gpu_id: str,
        count: int,
        price: float,
        env: dict[str, str],
        ports: list[str],
    ) -> dict[str, Any]:
        pod: dict[str, Any] = fixture("runpod", "pod_v2_running.json")
        pod_id = secrets.token_hex(7)[:14]
        pod.update(
            id=pod_id,
            name=name,
            image=image,
            status="PROVISIONING",
            env=dict(env),
            ports=ports,
            gpu={"id": gpu_id, "count": count},
            cost=round(price * count, 4),
            ssh=None,
            runtime=None,
            actions=["terminate"],
        )
        self.pods[pod_id] = pod
        self.ticks[pod_id] = 0
        return pod

    def _advance(self, pod_id: str) -> None:
        pod = self.pods[pod_id]
        order = ["PROVISIONING", "STARTING", "RUNNING"]
        if pod["status"] not in order[:2]:
            return
        self.ticks[pod_id] += 1
        if self.ticks[pod_id] < self.ticks_per_state:
            return
        self.ticks[pod_id] = 0
        pod["status"] = order[order.index(pod["status"]) + 1]
        if pod["status"] == "RUNNING" and "22/tcp" in pod.get("ports", []):
            host, port = self.ssh_host, self.ssh_port
            pod["ssh"] = {
                "proxy": {"host": "ssh.runpod.io", "port": 22, "username": f"{pod_id}-64411eb2"},
                "direct": {
                    "host": host,
                    "port": port,
                    "username": "root",
                    "command": f"ssh root@{host} -p {port}",
                },
            }
            pod["runtime"] = {
                "uptime": 0,
                "ports": [{"private": 22, "public": port, "type": "tcp", "ip": host}],
                "gpus": [{"util": 0, "memoryUtil": 0}] * pod["gpu"]["count"],
            }
            pod["actions"] = ["stop", "restart", "terminate"]

    def _action(self, pod_id: str, action: str) -> Reply:
        pod = self.pods[pod_id]
        if action == "terminate":
            del self.pods[pod_id]
            return Reply(204)
        if action == "stop" and pod["status"] == "RUNNING":
            pod.update(
                status="EXITED", cost=0.0, runtime=None, ssh=None, actions=["start", "terminate"]
            )
            return Reply(200, copy.deepcopy(pod))
        if action == "start" and pod["status"] == "EXITED":
            self._restart(pod_id, bid=None)
            return Reply(200, copy.deepcopy(pod))
        return _problem(409, f"action {action} is not valid for a pod in status {pod['status']}")

    def _restart(self, pod_id: str, bid: float | None) -> None:
        pod = self.pods[pod_id]
        if self.zero_gpus_on_resume:
            pod["gpu"]["count"] = 0
        per_gpu = bid if bid is not None else self._price(pod["gpu"]["id"], "SECURE") or 0.0
        pod.update(status="PROVISIONING", cost=round(per_gpu * max(pod["gpu"]["count"], 1), 4))
        self.ticks[pod_id] = 0

    # ---------------------------------------------------------------- GraphQL

    def _graphql(self, request: Request) -> Reply:
        body = request.body if isinstance(request.body, dict) else {}
        query, variables = str(body.get("query", "")), body.get("variables")
        operation = body.get("operationName")
        if not operation or variables is None:
            return Reply(400, {"errors": [{"message": "send a named operation with variables"}]})
        if operation == "GpuTypes" and "gpuTypes" in query:
            return Reply(200, copy.deepcopy(self.gpu_types))
        if operation == "rentSpotPod" and "PodRentInterruptableInput!" in query:
            return self._rent_spot(variables.get("input") or {})
        if operation == "bidResumePod" and "podBidResume(" in query:
            return self._bid_resume(variables)
        return Reply(400, {"errors": [{"message": f"unknown operation {operation!r}"}]})

    def _min_bid(self, gpu_id: str) -> float | None:
        for gpu in self.gpu_types["data"]["gpuTypes"]:
            if gpu["id"] == gpu_id:
                bid: float | None = gpu["lowestPrice"]["minimumBidPrice"]
                return bid
        return None

    def _rent_spot(self, spec: dict[str, Any]) -> Reply:
        for key in ("bidPerGpu", "gpuTypeId", "name", "imageName", "volumeMountPath"):
            if spec.get(key) in (None, ""):
                return _gql_error(
                    f"Field '{key}' of PodRentInterruptableInput is required",
                    "podRentInterruptable",
                )
        gpu_id = spec["gpuTypeId"]
        minimum = self._min_bid(gpu_id)
        if gpu_id in self.no_capacity or minimum is None:
            return Reply(200, copy.deepcopy(GQL_CAPACITY))
        if float(spec["bidPerGpu"]) < minimum:
            return _gql_error(
                f"Your bid is below the minimum bid price of {minimum}", "podRentInterruptable"
            )
        env = {e["key"]: e["value"] for e in spec.get("env") or []}
        ports = [p.strip() for p in str(spec.get("ports", "")).split(",") if p.strip()]
        count = int(spec.get("gpuCount", 1))
        pod = self._new_pod(
            spec["name"], spec["imageName"], gpu_id, count, float(spec["bidPerGpu"]), env, ports
        )
        self.spot[pod["id"]] = float(spec["bidPerGpu"])
        answer = fixture("runpod", "graphql_rent_interruptable.json")
        answer["data"]["podRentInterruptable"].update(
            id=pod["id"],
            name=pod["name"],
            costPerHr=pod["cost"],
            gpuCount=count,
            imageName=pod["image"],
            runtime=None,
        )
        return Reply(200, answer)

    def _bid_resume(self, variables: dict[str, Any]) -> Reply:
        pod_id = variables.get("podId")
        if pod_id not in self.pods:
            return _gql_error("Pod not found", "podBidResume")
        pod = self.pods[pod_id]
        if pod["status"] != "EXITED":
            return _gql_error(f"Pod is {pod['status']}, not stopped", "podBidResume")
        bid = float(variables["bidPerGpu"])
        self.spot[pod_id] = bid
        self._restart(pod_id, bid)
        answer = fixture("runpod", "graphql_bid_resume.json")
        answer["data"]["podBidResume"].update(id=pod_id, costPerHr=pod["cost"])
        return Reply(200, answer)
