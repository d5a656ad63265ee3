"""Spot requests (bid, timeout + cancel, on-demand fallback) and launch clean-up, on moto."""

from __future__ import annotations

import json
from typing import Any

import pytest

from runctl import config
from runctl.errors import NoCapacityError, TransportError
from runctl.providers.aws import ec2
from runctl.providers.aws.launch import CreateOptions, create_instance
from runctl.providers.aws.provider import AWSProvider
from runctl.runtime import Runtime
from tests.conftest import CLI
from tests.providers.aws.conftest import MotoAWS, created_id

pytestmark = pytest.mark.integration


def _provider(messages: list[str]) -> AWSProvider:
    runtime = Runtime(config=config.load(), home=config.home())
    return AWSProvider(runtime, notify=messages.append)


def _hold_spot_open(provider: AWSProvider) -> dict[str, Any]:
    """Make moto's instantly fulfilled request look open until runctl cancels it."""
    seen: dict[str, Any] = {"cancelled": False, "instance_ids": []}
    events = provider.session().client("ec2").meta.events

    def pending(parsed: dict[str, Any], **_kw: Any) -> None:
        if seen["cancelled"]:
            # AWS keeps a cancelled request (with the instance it fulfilled into); moto drops
            # it. Answer as AWS does.
            if not parsed.get("SpotInstanceRequests") and seen["instance_ids"]:
                parsed["SpotInstanceRequests"] = [
                    {"SpotInstanceRequestId": "sir-x", "State": "cancelled",
                     "InstanceId": seen["instance_ids"][-1]}
                ]  # fmt: skip
            return
        for request in parsed.get("SpotInstanceRequests", []):
            if request.get("InstanceId"):
                seen["instance_ids"].append(request.pop("InstanceId"))
            request["State"] = "open"
            request["Status"] = {"Code": "pending-evaluation", "Message": "waiting"}

    def cancelled(**_kw: Any) -> None:
        seen["cancelled"] = True

    events.register("after-call.ec2.DescribeSpotInstanceRequests", pending)
    events.register("before-call.ec2.CancelSpotInstanceRequests", cancelled)
    return seen


def test_spot_bids_the_on_demand_price_and_tags_the_instance(cli: CLI, moto_aws: MotoAWS) -> None:
    done = cli("aws", "create", "g5.xlarge", "--spot", "--json")
    iid = created_id(done)
    data = json.loads(done.stdout)
    assert data["market"] == "spot"
    assert "max $1.0060/h" in done.stderr
    requests = moto_aws.client("ec2").describe_spot_instance_requests()["SpotInstanceRequests"]
    assert [float(r["SpotPrice"]) for r in requests] == [pytest.approx(1.006)]
    assert moto_aws.tags(iid)["runctl:managed"] == "true"
    explicit = cli("aws", "create", "t3.micro", "--spot", "--spot-max-price", "0.005", "--json")
    assert explicit.returncode == 0, explicit.stderr
    prices = {
        r["SpotPrice"]
        for r in moto_aws.client("ec2").describe_spot_instance_requests()["SpotInstanceRequests"]
    }
    assert any(float(p) == pytest.approx(0.005) for p in prices)


def test_spot_timeout_cancels_and_fallback_needs_yes(
    moto_aws: MotoAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ec2, "POLL_S", 0.01)
    moto_aws.configure(spot_timeout_s=0.2)
    messages: list[str] = []
    provider = _provider(messages)
    seen = _hold_spot_open(provider)
    opts = CreateOptions("g5.xlarge", spot=True)
    with pytest.raises(NoCapacityError) as info:
        create_instance(provider, opts, messages.append, confirm=None)
    assert "--yes" in (info.value.hint or "")
    assert "on-demand $1.0060/h vs spot" in info.value.message
    # The request was cancelled and what it had started was terminated: nothing orphaned.
    client = moto_aws.client("ec2")
    states = {r["State"] for r in client.describe_spot_instance_requests()["SpotInstanceRequests"]}
    assert seen["cancelled"] and states <= {"cancelled"}  # moto drops cancelled requests
    assert seen["instance_ids"]
    for iid in set(seen["instance_ids"]):
        assert moto_aws.instance(iid)["State"]["Name"] == "terminated"
    assert any("not fulfilled within" in m for m in messages)


def test_spot_fallback_with_yes_launches_on_demand(
    moto_aws: MotoAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ec2, "POLL_S", 0.01)
    moto_aws.configure(spot_timeout_s=0.2)
    messages: list[str] = []
    provider = _provider(messages)
    _hold_spot_open(provider)
    created = create_instance(provider, CreateOptions("g5.xlarge", spot=True, yes=True),
                              messages.append, confirm=None)  # fmt: skip
    assert not created.spot
    assert created.hourly_usd == pytest.approx(1.006)
    assert created.fallback_reason and "not fulfilled" in created.fallback_reason
    assert moto_aws.instance(created.instance.instance_id).get("InstanceLifecycle") != "spot"
    asked: list[str] = []
    declined = _provider(messages)
    _hold_spot_open(declined)
    with pytest.raises(NoCapacityError, match="declined"):
        create_instance(declined, CreateOptions("g5.xlarge", spot=True), messages.append,
                        confirm=lambda q: asked.append(q) is not None)  # fmt: skip
    assert asked


def test_no_fallback_fails_after_cancelling(
    moto_aws: MotoAWS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ec2, "POLL_S", 0.01)
    moto_aws.configure(spot_timeout_s=0.2)
    provider = _provider([])
    _hold_spot_open(provider)
    with pytest.raises(NoCapacityError, match="was cancelled"):
        create_instance(provider, CreateOptions("t3.micro", spot=True, no_fallback=True),
                        lambda _m: None, confirm=None)  # fmt: skip
    managed = ec2.list_managed(provider.session())
    assert {i["State"]["Name"] for i in managed} <= {"terminated"}


def test_failed_create_terminates_what_it_started(moto_aws: MotoAWS) -> None:
    from botocore.exceptions import ReadTimeoutError

    provider = _provider([])

    def lost_answer(**_kw: Any) -> None:
        raise ReadTimeoutError(endpoint_url=moto_aws.endpoint)

    provider.session().client("ec2").meta.events.register(
        "after-call.ec2.RunInstances", lost_answer
    )
    with pytest.raises(TransportError) as info:
        create_instance(provider, CreateOptions("t3.micro"), lambda _m: None, confirm=None)
    assert "terminated i-" in (info.value.hint or "")
    found = moto_aws.client("ec2").describe_instances(
        Filters=[{"Name": "tag-key", "Values": ["runctl:launch"]}])["Reservations"]  # fmt: skip
    states = {i["State"]["Name"] for r in found for i in r["Instances"]}
    assert states == {"terminated"}


def test_failed_spot_request_is_cancelled_and_its_instance_terminated(moto_aws: MotoAWS) -> None:
    from botocore.exceptions import ReadTimeoutError

    provider = _provider([])

    def lost_answer(**_kw: Any) -> None:
        raise ReadTimeoutError(endpoint_url=moto_aws.endpoint)

    provider.session().client("ec2").meta.events.register(
        "after-call.ec2.RequestSpotInstances", lost_answer
    )
    with pytest.raises(TransportError):
        create_instance(provider, CreateOptions("t3.micro", spot=True, no_fallback=True),
                        lambda _m: None, confirm=None)  # fmt: skip
    client = moto_aws.client("ec2")
    assert client.describe_spot_instance_requests()["SpotInstanceRequests"] == []
    states = {i["State"]["Name"] for r in client.describe_instances()["Reservations"]
              for i in r["Instances"]}  # fmt: skip
    assert states == {"terminated"}
