"""Recognise checkpoint files and order them (step/epoch number in the name, then mtime).

The agent carries its own copy of this rule because it must run with nothing but the
standard library on the host; tests check that both agree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

CHECKPOINT_EXTS = (".pt", ".pth", ".ckpt", ".safetensors")
_STEP_RE = re.compile(r"(?:step|epoch|iter|ckpt|checkpoint)[_-]?(\d+)", re.IGNORECASE)
_NUM_RE = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int | None
    bytes: int
    mtime: float


def step_of(name: str) -> int | None:
    match = _STEP_RE.search(name) or _NUM_RE.search(name)
    return int(match.group(1)) if match else None


def list_checkpoints(directory: Path) -> list[Checkpoint]:
    """Checkpoint files under ``directory`` (recursive), oldest first."""
    found: list[Checkpoint] = []
    if not directory.is_dir():
        return found
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(CHECKPOINT_EXTS):
                path = Path(root) / name
                try:
                    st = path.stat()
                except OSError:
                    continue  # deleted while we looked (keep-last-N rotation)
                found.append(Checkpoint(path, step_of(name), st.st_size, st.st_mtime))
    found.sort(key=lambda c: (c.step if c.step is not None else -1, c.mtime, c.path.name))
    return found
