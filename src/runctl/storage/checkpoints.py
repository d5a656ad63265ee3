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


def to_keep_and_delete(
    found: list[Checkpoint], keep_last_n: int
) -> tuple[list[Checkpoint], list[Checkpoint]]:
    """Split oldest-first checkpoints into (kept newest N, to delete)."""
    if keep_last_n < 0:
        raise ValueError("keep_last_n must be >= 0")
    cut = max(len(found) - keep_last_n, 0)
    return found[cut:], found[:cut]


def sidecar_of(path: Path) -> Path:
    """The JSON metadata file a training script may write next to a checkpoint."""
    return path.with_suffix(".json")


_METADATA_KEYS = ("epoch", "step", "global_step", "loss", "val_loss", "accuracy", "lr")


def inspect_checkpoint(path: Path) -> dict[str, object]:
    """Read epoch/step/loss from a checkpoint: its sidecar JSON, else torch (weights_only).

    Never unpickles arbitrary objects: torch is asked for ``weights_only=True``.
    """
    import json

    info: dict[str, object] = {"path": str(path), "bytes": path.stat().st_size,
                               "step_from_name": step_of(path.name), "source": None}  # fmt: skip
    sidecar = sidecar_of(path)
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
        except ValueError:
            meta = None
        if isinstance(meta, dict):
            info.update({k: meta[k] for k in _METADATA_KEYS if k in meta})
            info["source"] = "sidecar"
            return info
    if path.suffix in (".pt", ".pth", ".ckpt"):
        try:
            import torch
        except ImportError:
            info["source"] = "name only (install torch to read the file)"
            return info
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not raised
            info["source"] = f"unreadable: {type(exc).__name__}"
            return info
        if isinstance(data, dict):
            for key in _METADATA_KEYS:
                value = data.get(key)
                if isinstance(value, (int, float)):
                    info[key] = value
                elif isinstance(value, torch.Tensor) and value.numel() == 1:
                    info[key] = value.item()
            info["keys"] = sorted(str(k) for k in data)[:20]
            tensors = _count_tensors(data)
            info["tensors"], info["tensor_elements"] = tensors
        info["source"] = "torch"
    return info


def _count_tensors(obj: object) -> tuple[int, int]:
    import torch

    if isinstance(obj, torch.Tensor):
        return 1, obj.numel()
    count = params = 0
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, list | tuple) else []
    for item in items:
        c, p = _count_tensors(item)
        count, params = count + c, params + p
    return count, params
