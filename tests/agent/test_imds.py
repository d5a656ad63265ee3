"""The fake IMDSv2 server and the agent's client for it: token flow, 401 refresh, notices."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runctl.agent.runctl_agent import Imds
from tests.fakes.imds import TOKEN_PATH, FakeImds

ACTION = "/latest/meta-data/spot/instance-action"


@pytest.fixture
def imds() -> Iterator[FakeImds]:
    fake = FakeImds().start()
    yield fake
    fake.stop()


def _call(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_token_flow_by_hand(imds: FakeImds) -> None:
    assert _call(imds.url + TOKEN_PATH, "PUT")[0] == 400  # no TTL header
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "21600"}
    assert _call(imds.url + TOKEN_PATH, "PUT", {**ttl, "X-Forwarded-For": "1.2.3.4"})[0] == 403
    assert (
        _call(imds.url + TOKEN_PATH, "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "0"})[0]
        == 400
    )
    status, token = _call(imds.url + TOKEN_PATH, "PUT", ttl)
    assert status == 200 and len(token) > 20
    assert _call(imds.url + ACTION)[0] == 401  # IMDSv2 only: no token, no answer
    assert _call(imds.url + ACTION, headers={"X-aws-ec2-metadata-token": "wrong"})[0] == 401
    good = {"X-aws-ec2-metadata-token": token}
    assert _call(imds.url + ACTION, headers=good)[0] == 404  # nothing scheduled
    imds.set_instance_action("stop", in_s=120)
    status, body = _call(imds.url + ACTION, headers=good)
    assert status == 200 and json.loads(body)["action"] == "stop"
    imds.expire_tokens()
    assert _call(imds.url + ACTION, headers=good)[0] == 401


def test_agent_client_refreshes_an_expired_token(imds: FakeImds) -> None:
    client = Imds(imds.url)
    assert client.get("spot/instance-action") is None
    assert client.get("events/recommendations/rebalance") is None
    assert imds.statuses(TOKEN_PATH) == [200]  # one token serves every request
    imds.set_rebalance()
    imds.expire_tokens()
    notice = client.get("events/recommendations/rebalance")
    assert notice is not None and notice["noticeTime"].endswith("Z")
    assert imds.statuses(TOKEN_PATH) == [200, 200]  # 401 -> a new token -> asked again


def test_standalone_script_reads_notices_from_a_state_file(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    state = tmp_path / "notices.json"
    state.write_text(json.dumps({"instance_action": None}))
    script = Path(__file__).resolve().parents[1] / "fakes" / "imds.py"
    argv = [sys.executable, str(script), "--bind", "127.0.0.1", "--port", str(port),
            "--state-file", str(state)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and "fake IMDS on" in proc.stdout.readline().decode()
        client = Imds(f"http://127.0.0.1:{port}")
        assert client.get("spot/instance-action") is None
        state.write_text(json.dumps({"instance_action": {"action": "terminate", "time": "x"}}))
        assert client.get("spot/instance-action") == {"action": "terminate", "time": "x"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
