"""A user's hottest commands start fast: `run`, `jobs`, `status`, `wait`, `logs` import only
what they use (issue 21). Each runs for real (a local job, its state) in a process that
writes, at exit, every module it actually loaded; a module-level import of a cloud SDK, a UI
library or the sync machinery on those paths fails here, long before anyone times it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import CLI, job_id_of

# Never on these paths: cloud SDKs and UI libraries cost more than the whole command.
SDKS = {"boto3", "botocore", "httpx", "rich", "textual"}
# Reading state needs no sync selection (pathspec alone was ~45 ms) and no `resources` group.
SYNC = {"pathspec", "runctl.core.sync_select", "runctl.core.sync", "runctl.core.multinode"}
READ_ONLY = SDKS | SYNC | {"runctl.cli.resources"}

_HARNESS = """
import atexit, json, sys
_out = sys.argv[1]
def _dump():
    # A module bound lazily (runctl.lazy) but never used stays an unexecuted placeholder.
    loaded = [n for n, m in sys.modules.items() if type(m).__name__ != "_LazyModule"]
    with open(_out, "w") as fh:
        json.dump(sorted(loaded), fh)
atexit.register(_dump)
sys.argv = ["runctl", *sys.argv[2:]]
from runctl.entry import main
main()
"""


def loaded_by(tmp_path: Path, cwd: Path, *args: str) -> set[str]:
    """Every module a real `runctl ARGS` process loaded (top packages and full names)."""
    out = tmp_path / f"modules-{len(list(tmp_path.glob('modules-*')))}.json"
    done = subprocess.run(
        [sys.executable, "-c", _HARNESS, str(out), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, f"runctl {' '.join(args)}: {done.stderr}"
    names = set(json.loads(out.read_text()))
    return names | {n.split(".")[0] for n in names}


def test_run_jobs_status_wait_logs_load_no_sdk_and_listings_no_sync(
    cli: CLI, project: Path, runctl_home: Path, tmp_path: Path
) -> None:
    ran = loaded_by(tmp_path, project, "run", "hello.py", "--", "--lines", "2")
    assert not ran & SDKS, f"`run` imported {sorted(ran & SDKS)}"
    job = job_id_of(cli("run", "--wait", "hello.py", "--", "--lines", "2", cwd=project))
    for args in (["jobs"], ["status"], ["wait", job], ["logs", job], ["status", job]):
        extra = loaded_by(tmp_path, project, *args) & READ_ONLY
        assert not extra, f"`runctl {' '.join(args)}` imported {sorted(extra)}"
