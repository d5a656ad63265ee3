"""What the framework examples share: their command line and the test hook that holds a run.

Each ``train_*.py`` beside this file imports it (the script's directory is on ``sys.path``
when it runs, and runctl syncs the directory), so the examples show only what differs: how
each framework saves and resumes.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable


def make_parser() -> argparse.ArgumentParser:
    """``--steps``, ``--save-every``, ``--sleep`` and the ``--hold-at`` test hook."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--save-every", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument(
        "--hold-at",
        type=int,
        default=0,
        help="test hook: a fresh run waits at this step until it is stopped",
    )
    return parser


def hold(step: int, at: int, stopped: Callable[[], bool] = lambda: False) -> None:
    """Test hook: a fresh run (nothing to resume) waits at step ``at`` until it is stopped, so
    a cancel lands at a known step."""
    if step == at and not os.environ.get("RUNCTL_RESUME_FROM"):
        print(f"HOLDING at step {step}", flush=True)
        deadline = time.monotonic() + 300
        while not stopped() and time.monotonic() < deadline:
            time.sleep(0.1)
