"""``runctl resources`` / ``reconcile`` / ``status`` costs against the fake clouds and moto."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from runctl.core import costs
from runctl.state.store import Store
from tests.conftest import CLI
from tests.fakes.lyceum_server import FakeLyceum
from tests.fakes.runpod_server import FakeRunpod
from tests.providers.aws.conftest import MotoAWS, created_id
from tests.resources.conftest import GPU, append_config, ok

RP = ("--platform", "runpod")


def _store(home: Path) -> Store:
    return Store.open(home / "state.db")


def _backdate(home: Path, provider: str, instance_id: str, hours: float) -> None:
    """Move an instance's recorded history ``hours`` into the past (as if launched then)."""
    db = _store(home).db
    rid = db.execute(
        "SELECT resource_id FROM instances WHERE provider = ? AND instance_id = ?",
        (provider, instance_id),
    ).fetchone()[0]
    rows = db.execute("SELECT rowid, at FROM instance_states WHERE resource_id = ?", (rid,))
    for rowid, at in rows.fetchall():
        moved = costs.parse_iso(at) - timedelta(hours=hours)
        db.execute("UPDATE instance_states SET at = ? WHERE rowid = ?",
                   (moved.isoformat().replace("+00:00", "Z"), rowid))  # fmt: skip
    moved_created = (datetime.now(UTC) - timedelta(hours=hours)).isoformat()
    db.execute("UPDATE instances SET created_at = ? WHERE resource_id = ?", (moved_created, rid))
    db.commit()


def test_storage_cost_for_stopped_time_is_labelled() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    history = [("running", "2026-11-23T08:00:00Z"), ("stopped", "2026-11-23T10:00:00Z")]
    rec = {"resource_id": 1, "provider": "aws", "instance_id": "i-1", "name": "n",
           "state": "stopped", "hourly_usd": 1.0, "data": {"storage_gb": 730}}  # fmt: skip
    cost = costs.instance_cost(rec, history, now)
    # 2 h running at $1 + 2 h stopped with 730 GB at $0.08/GB-month (= $0.08/h)
    assert cost.storage_usd == pytest.approx(0.16) and cost.total_usd == pytest.approx(2.16)
    assert cost.storage_known
    unknown = costs.instance_cost({**rec, "data": {}}, history, now)
    assert unknown.total_usd == 2.0 and not unknown.storage_known
    lyceum = costs.instance_cost({**rec, "provider": "lyceum"}, history, now)
    assert not lyceum.storage_known  # no published storage rate: never guessed


def test_list_summary_insights_status_and_prices(
    cli: CLI, pods: FakeRunpod, runctl_home: Path, tmp_path: Path
) -> None:
    a = ok(cli("runpod", "create", "--gpu", GPU, "--name", "a", "--json"))["id"]
    b = ok(cli("runpod", "create", "--gpu", GPU, "--gpu-count", "2", "--name", "b", "--json"))[
        "id"
    ]
    _backdate(runctl_home, "runpod", a, 30)
    rows = ok(cli("resources", "list", *RP, "--json"))
    by_id = {r["instance_id"]: r for r in rows}
    assert by_id[a]["hourly_usd"] == 0.44 and by_id[b]["hourly_usd"] == 0.88  # costPerHr
    assert by_id[a]["total_usd"] == pytest.approx(13.2, abs=0.01)  # 30 h x 0.44
    assert [r["instance_id"] for r in rows] == [a, b]  # --sort cost (default)
    assert [r["instance_id"] for r in ok(cli("resources", "list", *RP, "--sort", "hourly",
                                            "--json"))] == [b, a]  # fmt: skip
    assert len(ok(cli("resources", "list", *RP, "--limit", "1", "--json"))) == 1
    assert ok(cli("resources", "list", *RP, "--state", "stopped", "--json")) == []
    assert ok(cli("resources", "list", *RP, "--user", "nobody", "--json")) == []
    assert ok(cli("resources", "list", *RP, "--project", "nothing", "--json")) == []
    text = cli("resources", "list", *RP)
    assert ">24h" in text.stdout and ">$10" in text.stdout and "$1.32/h now" in text.stdout

    summary = ok(cli("resources", "summary", *RP, "--json"))
    assert summary["running"] == 2 and summary["hourly_burn_usd"] == 1.32
    assert summary["daily_projection_usd"] == 31.68 and summary["weekly_projection_usd"] == 221.76
    assert any("(> 24 h)" in w for w in summary["warnings"])
    assert any("(> $10)" in w for w in summary["warnings"])
    append_config(tmp_path, "\n[costs]\nwarn_hours = 40.0\nwarn_usd = 20.0\n")
    quiet = ok(cli("resources", "summary", "--no-refresh", "--json"))
    assert not [w for w in quiet["warnings"] if "> " in w]

    tips = ok(cli("resources", "insights", "--no-refresh", "--json"))["recommendations"]
    assert any("no daily budget" in t["why"] for t in tips)

    status = ok(cli("status", "--json"))
    assert status["costs"]["hourly_burn_usd"] == 1.32 and status["costs"]["running"] == 2
    assert "projected: $31.68/day, $221.76/week" in cli("status").stdout

    watched = cli("resources", "list", *RP, "--watch", "--interval", "0.1", "--iterations", "2")
    assert watched.returncode == 0 and watched.stdout.count("runctl resources —") == 2
    bad = cli("resources", "list", "--watch", "--json")
    assert bad.returncode == 2 and "hint:" in bad.stderr and len(bad.stderr.splitlines()) == 2


def test_reconcile_orphans_vanished_drifted(cli: CLI, pods: FakeRunpod, runctl_home: Path) -> None:
    gone = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    drift = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    orphan = pods._new_pod("runctl-lost-abcdef", "img", GPU, 1, 0.44, {}, [])["id"]
    pods._new_pod("someone-elses", "img", GPU, 1, 0.44, {}, [])
    del pods.pods[gone]
    pods._action(drift, "stop")

    dry = ok(cli("reconcile", *RP, "--dry-run", "--json"))
    assert [f["instance_id"] for f in dry["orphans"]] == [orphan]
    assert [f["instance_id"] for f in dry["vanished"]] == [gone]
    assert [(f["instance_id"], f["recorded_state"], f["state"]) for f in dry["drifted"]] == [
        (drift, "running", "stopped")
    ]
    store = _store(runctl_home)
    assert store.get_instance_record("runpod", orphan) is None  # --dry-run changed nothing
    assert store.get_instance_record("runpod", gone)["state"] == "running"

    applied = ok(cli("reconcile", *RP, "--json"))
    assert len(applied["orphans"]) == 1 and len(applied["vanished"]) == 1
    store = _store(runctl_home)
    adopted = store.get_instance_record("runpod", orphan)
    assert adopted["hourly_usd"] is None and adopted["data"]["adopted_by_reconcile"]
    assert store.get_instance_record("runpod", gone)["state"] == "terminated"
    assert store.get_instance_record("runpod", drift)["state"] == "stopped"
    again = ok(cli("reconcile", *RP, "--json"))
    assert not again["orphans"] and not again["vanished"] and not again["drifted"]
    assert {f["instance_id"] for f in again["known"]} == {orphan, drift}
    text = cli("reconcile", *RP).stdout
    assert "0 orphan, 0 vanished, 0 drifted, 2 known" in text


def test_cleanup_prompts_dry_run_and_named(cli: CLI, pods: FakeRunpod, runctl_home: Path) -> None:
    one = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    two = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    pods._new_pod("not-runctl", "img", GPU, 1, 0.44, {}, [])

    dry = ok(cli("resources", "cleanup", *RP, "--dry-run", "--json"))
    assert {t["instance"] for t in dry["targets"]} == {f"runpod:{one}", f"runpod:{two}"}
    assert all(t["cost_so_far_usd"] is not None for t in dry["targets"])
    assert len(pods.pods) == 3

    no = cli("resources", "cleanup", *RP, input="n\n")
    assert no.returncode == 130 and "Terminate 2 instance(s)" in no.stdout and len(pods.pods) == 3
    assert "so far" in no.stdout
    needs_yes = cli("resources", "cleanup", *RP, "--json")
    assert needs_yes.returncode == 2 and "--yes" in needs_yes.stderr

    named = cli("resources", "cleanup", f"runpod:{one}", input="y\n")
    assert named.returncode == 0, named.stderr
    assert one not in pods.pods and two in pods.pods
    assert _store(runctl_home).get_instance_record("runpod", one)["state"] == "terminated"
    missing = cli("resources", "cleanup", "runpod:nope")
    assert missing.returncode == 5 and "hint:" in missing.stderr
    young = ok(cli("resources", "cleanup", *RP, "--older-than", "1h", "--dry-run", "--json"))
    assert not young["targets"] and young["refused"][0]["why"] == "younger than 1h00m"

    done = ok(cli("resources", "cleanup", *RP, "--yes", "--json"))
    assert [t["result"] for t in done["targets"]] == ["terminated"]
    assert [p["name"] for p in pods.pods.values()] == ["not-runctl"]  # foreign pod untouched


def test_stop_all_and_lyceum_cannot_stop(
    cli: CLI, pods: FakeRunpod, vms: FakeLyceum, runctl_home: Path
) -> None:
    pod = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    vm = ok(cli("lyceum", "create", "--no-wait", "--json"))["id"]
    both = ("--platform", "runpod", "--platform", "lyceum")
    for _ in range(3):
        cli("reconcile", *both)  # let the fake VM reach "running"
    dry = ok(cli("resources", "stop-all", *both, "--dry-run", "--json"))
    assert {t["instance"] for t in dry["targets"]} == {f"runpod:{pod}", f"lyceum:{vm}"}
    assert pods.pods[pod]["status"] == "RUNNING"
    done = ok(cli("resources", "stop-all", *both, "--yes", "--json"))
    results = {t["instance"]: t["result"] for t in done["targets"]}
    assert results[f"runpod:{pod}"] == "stopped"
    assert results[f"lyceum:{vm}"].startswith("skipped: Lyceum VMs cannot be stopped")
    assert pods.pods[pod]["status"] == "EXITED"
    assert _store(runctl_home).get_instance_record("runpod", pod)["state"] == "stopped"


def test_aws_protected_tag_storage_and_stop_all(
    cli: CLI, moto_aws: MotoAWS, runctl_home: Path
) -> None:
    keep = created_id(cli("aws", "create", "t3.micro", "--json"))
    drop = created_id(cli("aws", "create", "t3.micro", "--root-volume-size", "40", "--json"))
    ec2 = moto_aws.client("ec2")
    ec2.create_tags(Resources=[keep], Tags=[{"Key": "runctl:protected", "Value": "true"}])
    ec2.run_instances(ImageId="ami-0al2023000000001", InstanceType="t3.micro", MinCount=1,
                      MaxCount=1)  # not runctl's: never a candidate  # fmt: skip
    aws = ("--platform", "aws")
    report = ok(cli("reconcile", *aws, "--json"))
    seen = {f["instance_id"] for f in report["known"] + report["drifted"]}
    assert seen == {keep, drop} and not report["orphans"]
    assert _store(runctl_home).get_instance_record("aws", drop)["data"]["storage_gb"] == 40

    plan = ok(cli("resources", "stop-all", *aws, "--dry-run", "--json"))
    assert [t["instance"] for t in plan["targets"]] == [f"aws:{drop}"]
    assert plan["refused"][0]["why"] == "tagged runctl:protected=true"
    ok(cli("resources", "stop-all", *aws, "--yes", "--json"))
    assert moto_aws.instance(drop)["State"]["Name"] == "stopped"
    assert moto_aws.instance(keep)["State"]["Name"] == "running"
    rows = {r["instance_id"]: r for r in ok(cli("resources", "list", *aws, "--json"))}
    assert rows[drop]["state"] == "stopped" and rows[drop]["storage_known"]
    cleaned = ok(cli("resources", "cleanup", *aws, "--yes", "--json"))
    assert [t["instance"] for t in cleaned["targets"]] == [f"aws:{drop}"]
    assert moto_aws.instance(drop)["State"]["Name"] in ("shutting-down", "terminated")
    assert moto_aws.instance(keep)["State"]["Name"] == "running"


def test_exports_csv_json_html(cli: CLI, pods: FakeRunpod, tmp_path: Path) -> None:
    pod = ok(cli("runpod", "create", "--gpu", GPU, "--json"))["id"]
    csv_text = cli("resources", "list", *RP, "--export", "csv").stdout
    assert csv_text.splitlines()[0].startswith("provider,instance_id,name,state")
    assert f"runpod,{pod}," in csv_text
    dest = tmp_path / "out.json"
    done = cli("resources", "list", *RP, "--export", "json", "--export-file", str(dest))
    assert done.returncode == 0 and json.loads(dest.read_text())[0]["instance_id"] == pod
    page = tmp_path / "costs.html"
    cli("resources", "list", *RP, "--export", "html", "--export-file", str(page))
    text = page.read_text()
    assert '<svg id="cost-over-time"' in text and '<svg id="cost-per-instance"' in text
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )
    lonely = cli("resources", "list", "--export-file", str(dest))
    assert lonely.returncode == 2 and "--export" in lonely.stderr
