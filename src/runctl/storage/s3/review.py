"""Sorting keys into checkpoints, models and logs; checkpoint order; prefix reviews."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from runctl.storage.checkpoints import CHECKPOINT_EXTS, step_of
from runctl.storage.s3.model import ObjectInfo

# .bin is a checkpoint only inside a checkpoint directory or when named so (see
# runctl.storage.checkpoints); here it stays with the generic extensions.
_CHECKPOINT_EXTS = tuple(e for e in CHECKPOINT_EXTS if e != ".bin")
_STEP_WORD_RE = re.compile(r"(step|epoch|iter|ckpt|checkpoint)[_-]?\d+", re.IGNORECASE)
_MODEL_EXTS = (".onnx", ".gguf", ".ggml", ".h5", ".keras", ".tflite", ".mlmodel", ".engine")
_GENERIC_EXTS = (".bin", ".pkl", ".pb", ".joblib")  # models only when the name says so
_MODEL_WORDS = ("model", "best", "final", "export")
_LOG_EXTS = (".log", ".out", ".err")


def classify(key: str) -> str:
    """Sort a key into "checkpoint", "model", "log" or "other" by its name and folders.

    Checkpoint files named best/final/model (without a step number) count as models, which
    is also what keeps ``cleanup`` away from them.
    """
    name = key.rsplit("/", 1)[-1].lower()
    if name.endswith(_LOG_EXTS) or "tfevents" in name or "/logs/" in f"/{key.lower()}":
        return "log"
    named_model = any(word in name for word in _MODEL_WORDS)
    if name.endswith(_CHECKPOINT_EXTS):
        return "model" if named_model and not _STEP_WORD_RE.search(name) else "checkpoint"
    if name.endswith(_MODEL_EXTS) or (name.endswith(_GENERIC_EXTS) and named_model):
        return "model"
    return "other"


def order_checkpoints(objects: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    """Oldest first: by step/epoch number in the file name, then LastModified, then key."""

    def rank(obj: ObjectInfo) -> tuple[int, float, str]:
        step = step_of(obj.key.rsplit("/", 1)[-1])
        return (step if step is not None else -1, obj.last_modified, obj.key)

    return sorted(objects, key=rank)


def review_objects(objects: list[ObjectInfo], top_n: int = 10) -> dict[str, Any]:
    kinds = {k: {"count": 0, "bytes": 0} for k in ("checkpoint", "model", "log", "other")}
    for obj in objects:
        bucket = kinds[classify(obj.key)]
        bucket["count"] += 1
        bucket["bytes"] += obj.size
    checkpoints = order_checkpoints(o for o in objects if classify(o.key) == "checkpoint")
    largest = sorted(objects, key=lambda o: (-o.size, o.key))[:top_n]
    newest = max(objects, key=lambda o: o.last_modified, default=None)
    return {
        "total_objects": len(objects),
        "total_bytes": sum(o.size for o in objects),
        "kinds": kinds,
        "latest_checkpoint": checkpoints[-1].to_dict() if checkpoints else None,
        "last_modified": newest.modified if newest else None,
        "largest": [o.to_dict() for o in largest],
    }
