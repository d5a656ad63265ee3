"""`runctl events`: the recorded history, per subject, per kind, across a recovery chain."""

from __future__ import annotations

import json
from pathlib import Path

from runctl import config
from runctl.runtime import Runtime
from tests.conftest import CLI


def _run(cli: CLI, project: Path) -> str:
    done = cli("run", "--wait", "job.py", cwd=project)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_events_of_a_job_by_kind_and_of_its_recovery_chain(
    cli: CLI, project: Path, runctl_home: Path
) -> None:
    (project / "job.py").write_text("print(1)\n")
    first, second = _run(cli, project), _run(cli, project)
    shown = json.loads(cli("events", first, "--json").stdout)
    assert {e["subject"] for e in shown} == {first}
    assert [e["kind"] for e in shown][0] == "job.submitted"
    states = json.loads(cli("events", first, "--kind", "job.state", "--json").stdout)
    assert states and all(e["kind"] == "job.state" for e in states)
    assert states[-1]["data"]["to"] == "succeeded"
    # the second attempt of a recovery chain: asking for either shows both
    rt = Runtime(config=config.load(), home=runctl_home)
    job = rt.store.get_job(second)
    rt.store.update_job(second, spec={**job.spec, "recover": {"root_job": first, "attempt": 1}})
    chain = json.loads(cli("events", second, "--json").stdout)
    assert {e["subject"] for e in chain} == {first, second}
    newest = json.loads(cli("events", "--last", "1", "--json").stdout)
    assert len(newest) == 1 and newest[0]["subject"] == second
    text = cli("events", first)
    assert text.returncode == 0 and "job.submitted" in text.stdout and "KIND" in text.stdout


def test_events_of_an_unknown_subject(cli: CLI) -> None:
    done = cli("events", "nothing-here")
    assert done.returncode != 0 and "no events for nothing-here" in done.stderr
    assert "Traceback" not in done.stderr
