"""SIGKILL a batch of runctl CLIs at chosen points: shared by the leak test (cloud create/train/
terminate) and the state-truth kill test (submits to SSH/AWS/RunPod)."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass


@dataclass
class Trial:
    proc: subprocess.Popen[bytes]
    kind: str
    delay: float  # armed: seconds from the job's record to the kill
    at: float | None  # monotonic time of the kill; None: armed, waiting for the record


def has_job(db: sqlite3.Connection, pid: int) -> bool:
    """Whether the CLI with this pid has recorded its job (the submit is under way)."""
    try:
        row = db.execute("SELECT 1 FROM jobs WHERE json_extract(spec, '$.submitted_by.pid') = ?",
                         (pid,)).fetchone()  # fmt: skip
    except sqlite3.OperationalError:  # no jobs table yet, or locked for a moment
        return False
    return row is not None


def kill_batch(batch: list[Trial], db: sqlite3.Connection) -> tuple[int, dict[str, int]]:
    """Run the batch to its end: each trial is killed at its time (an armed one ``delay``
    seconds after its job is recorded) unless it ends first. Returns (how many ended on
    their own, kills per kind)."""
    finished, killed = 0, dict[str, int]()
    while any(t.proc.returncode is None for t in batch):
        for trial in batch:
            if trial.proc.returncode is not None:
                continue
            if trial.proc.poll() is not None:
                finished += 1
            elif trial.at is None:
                if has_job(db, trial.proc.pid):
                    trial.at = time.monotonic() + trial.delay
            elif time.monotonic() >= trial.at:
                trial.proc.send_signal(signal.SIGKILL)
                trial.proc.wait(timeout=30)
                killed[trial.kind] = killed.get(trial.kind, 0) + 1
        time.sleep(0.005)
    return finished, killed
