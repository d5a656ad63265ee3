"""One-time spot requests: bid at most the on-demand price, cancel what does not fulfil.

The default maximum price is the on-demand price of the type (never a fixed bid: a fixed low
bid is why spot "never works" for GPUs). A request still open after ``aws.spot_timeout_s`` is
cancelled, and an instance that fulfilled in the same moment is terminated, so a timed-out
request can never turn into an untracked machine later.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from runctl.errors import NoCapacityError
from runctl.providers.aws import ec2
from runctl.providers.aws.session import AwsSession, aws_errors

# Request states/status codes that will not fulfil without a change on our side.
_FAILED_STATES = {"failed", "cancelled", "closed"}
_HOPELESS = {
    "price-too-low", "capacity-not-available", "capacity-oversubscribed", "bad-parameters",
    "system-error", "constraint-not-fulfillable", "az-group-constraint",
    "launch-group-constraint", "placement-group-constraint", "schedule-expired",
}  # fmt: skip


def request_spot(
    session: AwsSession,
    request: ec2.LaunchRequest,
    max_price: float,
    timeout_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    on_poll: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Launch ``request`` as a one-time spot instance; NoCapacityError if it cannot be had.

    Blocks up to ``timeout_s``; the instance is tagged as soon as it exists.
    """
    client = session.client("ec2")
    spec = request.launch_spec()
    if "UserData" in spec:
        import base64

        spec["UserData"] = base64.b64encode(spec["UserData"].encode()).decode()
    token = request.tags[ec2.LAUNCH]
    try:
        with aws_errors(f"requesting a spot {request.instance_type}"):
            answer = _request(client, request, spec, max_price)
    except BaseException:
        _cleanup_requests(session, token)
        raise
    request_id = answer["SpotInstanceRequests"][0]["SpotInstanceRequestId"]
    try:
        return _await(session, request, request_id, timeout_s, sleep, on_poll)
    except NoCapacityError:
        raise  # already cancelled
    except BaseException:
        # Ctrl-C, a lost connection, a failed tag call: never leave an open request behind.
        with contextlib.suppress(Exception):
            cancel(session, request_id)
        raise


def _request(
    client: Any, request: ec2.LaunchRequest, spec: dict[str, Any], max_price: float
) -> dict[str, Any]:
    answer: dict[str, Any] = client.request_spot_instances(
        SpotPrice=f"{max_price:.4f}",
        InstanceCount=1,
        Type="one-time",
        ClientToken=request.tags[ec2.LAUNCH],
        LaunchSpecification=spec,
        TagSpecifications=[
            {"ResourceType": "spot-instances-request", "Tags": ec2.tag_list(request.tags)}
        ],
    )
    return answer


def _cleanup_requests(session: AwsSession, token: str) -> None:
    """After a failed request call: cancel requests carrying our launch token. Never raises."""
    try:
        found = session.client("ec2").describe_spot_instance_requests(
            Filters=[{"Name": f"tag:{ec2.LAUNCH}", "Values": [token]}]
        )["SpotInstanceRequests"]
        for spot_request in found:
            cancel(session, spot_request["SpotInstanceRequestId"])
    except Exception:  # noqa: BLE001 - best effort while another error is in flight
        return


def _await(
    session: AwsSession,
    request: ec2.LaunchRequest,
    request_id: str,
    timeout_s: float,
    sleep: Callable[[float], None],
    on_poll: Callable[[str], None] | None,
) -> dict[str, Any]:
    client = session.client("ec2")
    deadline = time.monotonic() + timeout_s
    while True:
        with aws_errors(f"checking spot request {request_id}"):
            found = client.describe_spot_instance_requests(SpotInstanceRequestIds=[request_id])
        spot = found["SpotInstanceRequests"][0]
        status = spot.get("Status", {}).get("Code", "")
        instance_id = spot.get("InstanceId")
        if instance_id and spot.get("State") == "active":
            raw = ec2.require(session, instance_id)
            ec2.set_tags(session, [instance_id, *ec2.volume_ids(raw)], request.tags)
            return ec2.require(session, instance_id)
        if spot.get("State") in _FAILED_STATES or status in _HOPELESS:
            cancel(session, request_id)
            raise NoCapacityError(
                f"spot request for {request.instance_type} failed: {status or spot['State']}"
                + (f" ({spot['Status'].get('Message', '')})" if spot.get("Status") else ""),
                hint="raise --spot-max-price, try another type or region, or run on-demand",
            )
        if time.monotonic() >= deadline:
            cancel(session, request_id)
            raise NoCapacityError(
                f"spot request {request_id} for {request.instance_type} not fulfilled "
                f"within {timeout_s:.0f}s ({status or 'open'}); the request was cancelled",
                hint="try another type or region, raise aws.spot_timeout_s, or run on-demand",
            )
        if on_poll:
            on_poll(status or spot.get("State", ""))
        sleep(ec2.POLL_S)


def cancel(session: AwsSession, request_id: str) -> list[str]:
    """Cancel the request and terminate any instance it produced; returns terminated ids."""
    client = session.client("ec2")
    with aws_errors(f"cancelling spot request {request_id}"):
        # Look before and after: it may fulfil in between, and some endpoints forget a
        # cancelled request.
        before = client.describe_spot_instance_requests(SpotInstanceRequestIds=[request_id])
        client.cancel_spot_instance_requests(SpotInstanceRequestIds=[request_id])
        after = client.describe_spot_instance_requests(SpotInstanceRequestIds=[request_id])
    found = before["SpotInstanceRequests"] + after["SpotInstanceRequests"]
    ids = sorted({r["InstanceId"] for r in found if r.get("InstanceId")})
    for instance_id in ids:
        ec2.terminate(session, instance_id)
    return ids
