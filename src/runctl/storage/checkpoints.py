"""Recognise checkpoints as the training frameworks write them, order, check and prune them.

A checkpoint is a file or a directory:

    PyTorch Lightning  epoch=E-step=S.ckpt, last.ckpt, last-vN.ckpt (step read from the file)
    HF Trainer         checkpoint-<step>/, complete once trainer_state.json is written
    Accelerate         checkpoint_<n>/ (save_state), complete once random_states_*.pkl is
    torch DCP          any directory holding .metadata (written last)
    DeepSpeed          global_step<N>/ beside a `latest` file naming the newest complete one
    Orbax / JAX        <step>/ (written as <step>.orbax-checkpoint-tmp-*, then renamed)
    plain files        *.pt *.pth *.ckpt *.safetensors *.bin: step_N, epoch_N, best, last...

A directory checkpoint is complete once its framework's marker is there (trainer_state.json,
random_states_*.pkl, .metadata, the tag in ``latest``) *and* none of its weight/optimizer files
of a known format (torch zip, safetensors) is cut short: a crash mid-write or a full disk can
leave the marker beside a truncated optimizer.pt.

The step comes from a sidecar JSON (``x.pt`` -> ``x.json``), else from inside the checkpoint
(trainer_state.json, the global_step Lightning stores), else from the name; the step wins over
the epoch. The same rules work on a local tree and on S3 keys (``rows_from_keys``).

The agent carries its own copy of these rules because it must run with nothing but the
standard library on the host; tests check that both agree.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import struct
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, TypeGuard

CHECKPOINT_EXTS = (".pt", ".pth", ".ckpt", ".safetensors", ".bin")
# Files inside checkpoint directories whose integrity is checked (header or tail only):
# Accelerate's random_states_*.pkl are torch.save zips too.
_INNER_EXTS = CHECKPOINT_EXTS + (".pkl",)
_MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit
FRAMEWORK_KINDS = ("hf", "accelerate", "dcp", "deepspeed", "orbax")
_NOT_CHECKPOINTS = ("training_args.bin",)  # HF Trainer's pickled arguments
_PROTECTED = ("last", "best", "final")  # cleanup keeps these unless named explicitly
_STEP_RE = re.compile(r"(?:^|[^a-z])(?:step|iteration|iter|checkpoint|ckpt)[=_-]?(\d+)", re.I)
_EPOCH_RE = re.compile(r"(?:^|[^a-z])(?:epoch|ep)[=_-]?(\d+)", re.I)
_NUM_RE = re.compile(r"\d+")
_LIGHTNING_VERSION_RE = re.compile(r"-v\d+$")  # Lightning's suffix for a name already taken
_HF_RE = re.compile(r"(?:tmp-)?checkpoint-\d+$")  # tmp-: some versions write, then rename
_HF_FILE_RE = re.compile(
    r"(?:config\.json|training_args\.bin|optimizer\.pt|scheduler\.pt|rng_state.*\.pth"
    r"|(?:adapter_)?model.*\.safetensors(?:\.index\.json)?|pytorch_model.*\.bin)$"
)
_ACCELERATE_RE = re.compile(r"checkpoint_\d+$")
_ACCELERATE_FILE_RE = re.compile(r"(?:optimizer|scheduler|sampler)(?:_\d+)?\.bin$")
_RNG_RE = re.compile(r"random_states_\d+\.pkl$")
_DEEPSPEED_RE = re.compile(r"global_step(\d+)$")
_ORBAX_RE = re.compile(r"(\d+)(\.orbax-checkpoint-tmp-\d+)?$")
_WRITING_S = 5.0  # a checkpoint touched this recently gets a second look before it is used
_METADATA_KEYS = ("epoch", "step", "global_step", "global_steps", "loss", "val_loss",
                  "accuracy", "lr", "best_metric")  # fmt: skip


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: a file, or a directory counted as a whole."""

    path: Path
    step: int | None
    bytes: int
    mtime: float
    name: str = ""  # relative to the listed directory
    kind: str = "file"  # file | dir | hf | accelerate | dcp | deepspeed | orbax
    epoch: float | None = None
    complete: bool = True
    problem: str | None = None  # why it is not complete (or is being written)
    protected: bool = False  # last*/best*/final*
    resume_path: Path | None = None  # what the framework's resume API takes
    tag: str | None = None  # DeepSpeed: the name load_checkpoint(resume_path, tag=) takes
    meta: dict[str, Any] = field(default_factory=dict)  # the sidecar JSON

    @property
    def number(self) -> int | float | None:
        return self.step if self.step is not None else self.epoch

    def to_dict(self) -> dict[str, Any]:
        row: dict[str, Any] = {
            "path": str(self.path), "name": self.name, "kind": self.kind, "step": self.step,
            "epoch": self.epoch, "bytes": self.bytes, "mtime": self.mtime,
            "complete": self.complete, "protected": self.protected,
            "resume_path": str(self.resume_path or self.path),
        }  # fmt: skip
        if self.problem:
            row["problem"] = self.problem
        if self.tag:
            row["tag"] = self.tag
        if self.meta:
            row["meta"] = self.meta
        return row


# ----------------------------------------------------------------------------- names


def is_protected(name: str) -> bool:
    """last*, best* and final* checkpoints: cleanup never deletes them unless named."""
    return PurePosixPath(name.rstrip("/")).name.lower().startswith(_PROTECTED)


def is_checkpoint_file(name: str) -> bool:
    """A loose file that is a checkpoint: by its extension; a .bin (also data shards,
    tokenizers) only when its name says model, step or epoch."""
    if name in _NOT_CHECKPOINTS or not name.endswith(CHECKPOINT_EXTS):
        return False
    if name.endswith(".bin"):
        stem = name[:-4]
        return "model" in stem.lower() or bool(_STEP_RE.search(stem) or _EPOCH_RE.search(stem))
    return True


def name_numbers(name: str, is_dir: bool = False) -> tuple[int | None, int | None]:
    """(step, epoch) from a checkpoint's name; a lone number counts as the step."""
    stem = name if is_dir else os.path.splitext(name)[0]
    stem = _LIGHTNING_VERSION_RE.sub("", stem)
    orbax = _ORBAX_RE.match(stem) if is_dir else None
    if orbax:
        return int(orbax.group(1)), None
    step = _STEP_RE.search(stem)
    epoch = _EPOCH_RE.search(stem)
    if step is None and epoch is None:
        numbers = _NUM_RE.findall(stem)
        if numbers and not is_protected(stem):
            return int(numbers[-1]), None
    return (int(step.group(1)) if step else None, int(epoch.group(1)) if epoch else None)


def step_of(name: str) -> int | None:
    """The ordering number in a file name: its step, else its epoch."""
    step, epoch = name_numbers(name)
    return step if step is not None else epoch


def dir_kind(name: str, files: Sequence[str], parent_files: Sequence[str]) -> str | None:
    """The framework layout of a directory, or None when it is not one checkpoint."""
    if ".metadata" in files:
        return "dcp"
    if "trainer_state.json" in files or (
        _HF_RE.match(name) and (not files or any(_HF_FILE_RE.match(f) for f in files))
    ):  # a HF Trainer checkpoint, maybe still being written (its files come first)
        return "hf"
    if _DEEPSPEED_RE.match(name) and (
        "latest" in parent_files
        or any(f.endswith(("model_states.pt", "optim_states.pt")) for f in files)
    ):
        return "deepspeed"
    if any(_RNG_RE.match(f) or _ACCELERATE_FILE_RE.match(f) for f in files) or (
        _ACCELERATE_RE.match(name) and not files
    ):
        return "accelerate"
    if _ORBAX_RE.match(name):
        return "orbax"
    if name_numbers(name, True) != (None, None) and any(
        f.endswith(CHECKPOINT_EXTS) for f in files
    ):
        return "dir"
    return None


# ----------------------------------------------------------------------------- contents


class _Stub:
    """Stands in for every class a pickle names: nothing of the file's is ever executed."""

    def __new__(cls, *args: object, **kwargs: object) -> _Stub:
        return object.__new__(cls)

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def append(self, item: object) -> None:
        pass

    def extend(self, items: object) -> None:
        pass


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        return _Stub

    def persistent_load(self, pid: object) -> None:  # tensor storages: not read
        return None


def torch_file_meta(path: Path) -> dict[str, Any]:
    """global_step/step/epoch stored in a torch.save zip (Lightning's .ckpt), without torch.

    Only data.pkl is read, with every class replaced by a stub, so this is safe on any file.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if not pkl or zf.getinfo(pkl[0]).file_size > (16 << 20):
                return {}
            data = _StubUnpickler(io.BytesIO(zf.read(pkl[0]))).load()
    except Exception:  # noqa: BLE001 - an unreadable file just has no metadata
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("global_step", "step", "epoch") if _is_number(data.get(k))}


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def file_problem(path: Path, size: int) -> str | None:
    """Why a checkpoint file is not complete (truncated, empty), or None."""
    if size == 0:
        return "empty file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head[:4] == b"PK\x03\x04":  # torch.save's zip: its end record is written last
                return None if zipfile.is_zipfile(path) else "truncated: no zip end record"
            if path.name.endswith(".safetensors"):
                if len(head) < 8:
                    return "truncated safetensors header"
                length = struct.unpack("<Q", head)[0]
                if length > size - 8:
                    return "truncated safetensors header"
                if length > _MAX_SAFETENSORS_HEADER:  # garbage: never read gigabytes of it
                    return "unreadable"
                header = json.loads(fh.read(length))
                ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"]
                if 8 + length + max(ends or [0]) > size:
                    return "truncated: safetensors data shorter than its header says"
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return "unreadable"
    return None


def inner_problem(directory: Path, files: Iterable[Path]) -> str | None:
    """The first truncated weight/optimizer/state file inside a checkpoint directory, named
    (``optimizer.pt: truncated: no zip end record``), or None. Only files of known formats are
    looked at, and of each only its header or its tail: the cost stays small on big models."""
    for full in sorted(files):
        if not full.name.endswith(_INNER_EXTS):
            continue
        try:
            size = full.stat().st_size
        except OSError:
            continue  # rotated away while we looked
        problem = file_problem(full, size)
        if problem:
            return f"{full.relative_to(directory).as_posix()}: {problem}"
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _dir_stats(path: Path) -> tuple[int, float, list[Path]]:
    """(bytes, newest mtime, files) of everything under ``path``."""
    total, newest, names = 0, 0.0, []
    for root, _dirs, files in os.walk(path):
        for name in files:
            full = Path(root) / name
            try:
                st = full.stat()
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
            names.append(full)
    if not names:
        with contextlib.suppress(OSError):
            newest = path.stat().st_mtime
    return total, newest, names


def sidecar_of(path: Path, is_dir: bool = False) -> Path:
    """The JSON metadata file a training script may write next to a checkpoint."""
    return path.with_name(path.name + ".json") if is_dir else path.with_suffix(".json")


def _deepspeed_problem(path: Path, step: int | None, latest: str | None) -> str | None:
    if latest is None:
        return "no `latest` file names it yet"
    if latest == path.name:
        return None
    match = _DEEPSPEED_RE.match(latest)
    if match and step is not None and step < int(match.group(1)):
        return None
    return f"newer than `latest` ({latest}): still being written"


def _read_latest(directory: Path) -> str | None:
    try:
        return (directory / "latest").read_text().strip()
    except OSError:
        return None


def _dir_row(path: Path, kind: str, files: Sequence[str]) -> Checkpoint:
    total, mtime, inner = _dir_stats(path)
    step, epoch = name_numbers(path.name, True)
    problem = None
    inside: dict[str, Any] = {}
    if kind == "hf":
        state = _read_json(path / "trainer_state.json")
        if not state:
            problem = "no trainer_state.json (still being written?)"
        elif path.name.startswith("tmp-"):
            problem = "temporary directory (still being written)"
        inside = {"step": state.get("global_step"), "epoch": state.get("epoch")}
    elif kind == "accelerate":
        if not any(_RNG_RE.match(f) for f in files):
            problem = "no random_states_*.pkl (still being written?)"
    elif kind == "deepspeed":
        problem = _deepspeed_problem(path, step, _read_latest(path.parent))
    elif kind == "orbax":
        if not path.name.isdigit():
            problem = "temporary Orbax directory (still being written)"
    elif kind == "dcp":
        with contextlib.suppress(OSError):
            if (path / ".metadata").stat().st_size == 0:
                problem = "empty .metadata"
    if problem is None:  # the marker is there: are the files it vouches for whole?
        problem = inner_problem(path, inner)
    by_tag = kind == "deepspeed"  # load_checkpoint(save_dir, tag): `latest` may name another
    row = Checkpoint(path, step, total, mtime, kind=kind, epoch=epoch,
                     resume_path=path.parent if by_tag else path,
                     tag=path.name if by_tag else None)  # fmt: skip
    return _apply_meta(row, inside, _read_json(sidecar_of(path, True)), problem)


def _file_row(path: Path) -> Checkpoint | None:
    try:
        st = path.stat()
    except OSError:
        return None  # deleted while we looked (keep-last-N rotation)
    step, epoch = name_numbers(path.name)
    problem = file_problem(path, st.st_size)
    readable = problem is None and path.name.endswith((".ckpt", ".pt", ".pth"))
    inside = torch_file_meta(path) if readable else {}
    row = Checkpoint(path, step, st.st_size, st.st_mtime, epoch=epoch, resume_path=path)
    return _apply_meta(row, inside, _read_json(sidecar_of(path)), problem)


def _apply_meta(
    row: Checkpoint, inside: dict[str, Any], sidecar: dict[str, Any], problem: str | None
) -> Checkpoint:
    """Metadata wins over the name: a sidecar JSON first, then what the checkpoint stores."""
    step, epoch = row.step, row.epoch
    for source in (inside, sidecar):
        found = source.get("global_step", source.get("step"))
        if _is_number(found):
            step = int(found)
        if _is_number(source.get("epoch")):
            epoch = source["epoch"]
    return replace(row, step=step, epoch=epoch, meta=sidecar, problem=problem,
                   complete=problem is None, protected=is_protected(str(row.path)))  # fmt: skip


# ----------------------------------------------------------------------------- listing


def order_checkpoints(rows: Iterable[Checkpoint]) -> list[Checkpoint]:
    """Oldest first: by step (else epoch); a checkpoint with neither sits by its time
    (last.ckpt without metadata goes after everything written before it)."""
    found = list(rows)
    numbered = [(r.number, r.mtime) for r in found if r.number is not None]

    def key(row: Checkpoint) -> tuple[float, float, str]:
        number = row.number
        if number is None:
            older = [n for n, mtime in numbered if n is not None and mtime <= row.mtime]
            number = max(older) if older else -1
        return (number, row.mtime, row.name)

    return sorted(found, key=key)


def list_checkpoints(directory: Path) -> list[Checkpoint]:
    """Checkpoints under ``directory`` (files and framework directories), oldest first."""
    directory = Path(os.path.abspath(os.path.expanduser(directory)))
    rows: list[Checkpoint] = []
    if directory.is_dir():
        parent = directory.parent
        _scan(directory, rows, [f for f in _listdir(parent) if (parent / f).is_file()], True)
    elif directory.is_file():
        row = _file_row(directory)
        rows = [row] if row else []
    named = []
    for row in rows:
        rel = os.path.relpath(row.path, directory)
        named.append(replace(row, name=row.path.name if rel == "." else Path(rel).as_posix()))
    return order_checkpoints(named)


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _scan(directory: Path, rows: list[Checkpoint], parent_files: list[str],
          is_root: bool = False) -> None:  # fmt: skip
    names = _listdir(directory)
    files = [n for n in names if (directory / n).is_file()]
    kind = dir_kind(directory.name, files, parent_files)
    if kind is not None and not (is_root and kind in ("orbax", "dir")):  # named by a number
        rows.append(_dir_row(directory, kind, files))
        return
    for name in names:
        path = directory / name
        if name in files:
            if is_checkpoint_file(name):
                row = _file_row(path)
                if row is not None:
                    rows.append(row)
        elif path.is_dir() and not path.is_symlink():
            _scan(path, rows, files)


def resolve_resume(path: Path) -> tuple[Path, int | None, str | None]:
    """(what the framework's resume API takes, its step or None, its tag or None) for a given
    checkpoint: a file inside a checkpoint directory stands for the directory, a DeepSpeed
    save dir or a directory of checkpoints for its newest complete one; a DeepSpeed
    global_step<N>/ for its save dir and the tag global_step<N>."""
    path = Path(os.path.abspath(os.path.expanduser(path)))
    if path.is_file():
        parent = list_checkpoints(path.parent)
        if len(parent) == 1 and parent[0].path == path.parent:
            return parent[0].resume_path or path.parent, parent[0].step, parent[0].tag
        row = _file_row(path)
        return path, row.step if row else None, None
    chosen, _skipped = pick_resume(list_checkpoints(path))
    if chosen is None:
        return path, None, None
    return chosen.resume_path or chosen.path, chosen.step, chosen.tag


# ----------------------------------------------------------------------------- resume, prune


def _signature(path: Path) -> tuple[int, float, int]:
    if path.is_dir():
        total, mtime, inner = _dir_stats(path)
        return total, mtime, len(inner)
    try:
        st = path.stat()
    except OSError:
        return (-1, 0.0, 0)
    return st.st_size, st.st_mtime, 1


def still_changing(rows: Sequence[Checkpoint], pause_s: float = 0.3) -> set[Path]:
    """Paths among ``rows`` (touched in the last few seconds) whose size changes under a
    second look: someone is writing them."""
    recent = [r.path for r in rows if time.time() - r.mtime < _WRITING_S]
    if not recent:
        return set()
    before = {p: _signature(p) for p in recent}
    time.sleep(pause_s)
    return {p for p in recent if _signature(p) != before[p]}


def pick_resume(
    rows: Sequence[Checkpoint], changing: Callable[[Sequence[Checkpoint]], set[Path]] | None = None
) -> tuple[Checkpoint | None, list[Checkpoint]]:
    """(the checkpoint to resume from or None, [skipped newer ones, each with its problem]).

    With framework directories present, only they are candidates (a HF output dir also
    holds the final model.safetensors, which `resume_from_checkpoint` cannot take).
    """
    look = changing or still_changing
    pool = [r for r in rows if r.kind in FRAMEWORK_KINDS] or list(rows)
    skipped: list[Checkpoint] = []
    for row in reversed(pool):
        if row.complete and not look([row]):
            return row, skipped
        skipped.append(row if row.problem else replace(
            row, problem="size changing: still being written"))  # fmt: skip
    return None, skipped


def plan_cleanup(
    rows: Sequence[Checkpoint], keep: int, named: Sequence[str] = (),
    realpath: Callable[[str], str] = os.path.realpath,
) -> list[Checkpoint]:  # fmt: skip
    """The rows to delete so that ``keep`` complete checkpoints remain: whole checkpoints,
    oldest first. Never the newest complete one, nor one newer than it (it may be being
    written), nor a protected one (last*/best*/final*) or one without a step or epoch,
    unless its name is in ``named``, nor what a protected link points at (Lightning's
    save_last="link")."""
    if keep < 0:
        raise ValueError("keep must be >= 0")
    # Beside framework directories, loose files (a HF output dir's final model) are left be.
    framework = any(r.kind in FRAMEWORK_KINDS for r in rows)
    pool = [i for i, r in enumerate(rows) if not framework or r.kind in FRAMEWORK_KINDS]
    complete = [i for i in pool if rows[i].complete]
    newest = complete[-1] if complete else -1
    spared = [i for i in complete if not rows[i].protected or rows[i].name in named]
    recent = set(spared[-max(keep, 1) :])  # keep 0 still keeps the newest complete one
    links = {realpath(str(r.path)) for r in rows if r.protected}
    doomed = []
    for index in pool:
        row = rows[index]
        if index >= newest or index in recent:
            continue
        if (row.protected or row.number is None) and row.name not in named:
            continue  # protected, or not placed by a number (an exported model.pt)
        if not row.protected and realpath(str(row.path)) in links:
            continue
        doomed.append(row)
    return doomed


def delete_checkpoint(row: Checkpoint) -> None:
    """Remove one whole checkpoint (file or directory) and its sidecar JSON."""
    import shutil

    path = row.path
    is_dir = path.is_dir() and not path.is_symlink()
    if is_dir:
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    sidecar_of(path, is_dir).unlink(missing_ok=True)


def to_keep_and_delete(
    found: list[Checkpoint], keep_last_n: int
) -> tuple[list[Checkpoint], list[Checkpoint]]:
    """Split oldest-first checkpoints into (kept, to delete) by the cleanup rules."""
    doomed = plan_cleanup(found, keep_last_n)
    return [c for c in found if c not in doomed], doomed


# ----------------------------------------------------------------------------- S3 keys


@dataclass(frozen=True)
class KeyCheckpoint:
    """A checkpoint in an object store: one object, or every object under a directory."""

    row: Checkpoint
    keys: tuple[str, ...]  # its objects, sidecar JSON included


def rows_from_keys(prefix: str, objects: Iterable[tuple[str, int, float]]) -> list[KeyCheckpoint]:
    """Checkpoints among ``(key, size, mtime)`` objects under ``prefix``, oldest first.

    Directory checkpoints are recognised by the same names and marker files as on disk (a
    HF checkpoint uploaded without its trainer_state.json is incomplete); nothing is read,
    so steps come from the names and files count as complete (uploads are atomic).
    """
    base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
    tree: dict[str, Any] = {"files": {}, "dirs": {}}
    for key, size, mtime in objects:
        if not key.startswith(base):
            continue
        node = tree
        parts = key[len(base) :].split("/")
        for part in parts[:-1]:
            node = node["dirs"].setdefault(part, {"files": {}, "dirs": {}})
        if parts[-1]:
            node["files"][parts[-1]] = (key, size, mtime)
    found: list[KeyCheckpoint] = []
    _scan_keys(tree, base, "", [], found)
    rows = order_checkpoints(k.row for k in found)
    by_name = {k.row.name: k for k in found}
    return [by_name[r.name] for r in rows]


def _scan_keys(node: dict[str, Any], base: str, rel: str, parent_files: list[str],
               found: list[KeyCheckpoint]) -> None:  # fmt: skip
    files = sorted(node["files"])
    name = rel.rsplit("/", 1)[-1]
    kind = dir_kind(name, files, parent_files) if rel else None
    if kind is not None:
        found.append(_key_dir_row(node, base, rel, kind, files, parent_files))
        return
    for file in files:
        if is_checkpoint_file(file):
            key, size, mtime = node["files"][file]
            sidecar = os.path.splitext(file)[0] + ".json"
            keys = (key,) + ((node["files"][sidecar][0],) if sidecar in node["files"] else ())
            step, epoch = name_numbers(file)
            name = f"{rel}/{file}" if rel else file
            row = Checkpoint(Path(key), step, size, mtime, name=name, epoch=epoch,
                             protected=is_protected(file))  # fmt: skip
            found.append(KeyCheckpoint(row, keys))
    for sub in sorted(node["dirs"]):
        _scan_keys(node["dirs"][sub], base, f"{rel}/{sub}" if rel else sub, files, found)


def _key_dir_row(node: dict[str, Any], base: str, rel: str, kind: str, files: list[str],
                 parent_files: list[str]) -> KeyCheckpoint:  # fmt: skip
    keys: list[str] = []
    total, mtime = 0, 0.0
    stack = [node]
    while stack:
        current = stack.pop()
        for key, size, modified in current["files"].values():
            keys.append(key)
            total += size
            mtime = max(mtime, modified)
        stack.extend(current["dirs"].values())
    name = rel.rsplit("/", 1)[-1]
    step, epoch = name_numbers(name, True)
    problem = None
    if kind == "hf" and "trainer_state.json" not in files:
        problem = "no trainer_state.json (uploaded in part?)"
    elif kind == "hf" and name.startswith("tmp-"):
        problem = "temporary directory (still being written)"
    elif kind == "accelerate" and not any(_RNG_RE.match(f) for f in files):
        problem = "no random_states_*.pkl (uploaded in part?)"
    elif kind == "deepspeed" and "latest" not in parent_files:  # its content is not read
        problem = "no `latest` file names it yet"
    elif kind == "orbax" and not name.isdigit():
        problem = "temporary Orbax directory (still being written)"
    path = Path(base + rel)
    by_tag = kind == "deepspeed"
    row = Checkpoint(path, step, total, mtime, name=rel, kind=kind, epoch=epoch,
                     complete=problem is None, problem=problem, protected=is_protected(name),
                     resume_path=path.parent if by_tag else path,
                     tag=name if by_tag else None)  # fmt: skip
    return KeyCheckpoint(row, tuple(sorted(keys)))


# ----------------------------------------------------------------------------- inspect


def inspect_checkpoint(path: Path) -> dict[str, object]:
    """Read epoch/step/loss of a checkpoint file or directory.

    A sidecar JSON first; else trainer_state.json (HF), DCP's .metadata, or the file with
    torch. Never unpickles arbitrary objects: torch is asked for ``weights_only=True``.
    """
    if path.is_dir():
        return _inspect_dir(path)
    info: dict[str, object] = {"path": str(path), "kind": "file", "bytes": path.stat().st_size,
                               "step_from_name": step_of(path.name), "source": None}  # fmt: skip
    problem = file_problem(path, path.stat().st_size)
    info["complete"] = problem is None
    if problem:
        info["problem"] = problem
    meta = _read_json(sidecar_of(path))
    if meta:
        info.update({k: meta[k] for k in _METADATA_KEYS if k in meta})
        info["source"] = "sidecar"
        return info
    if path.suffix in (".pt", ".pth", ".ckpt", ".bin"):
        info.update(_torch_info(path))
    elif path.suffix == ".safetensors":
        info.update(_safetensors_info(path))
    return info


def _inspect_dir(path: Path) -> dict[str, object]:
    rows = list_checkpoints(path)
    own = [r for r in rows if r.path == path]
    if not own:  # a directory of checkpoints: its newest complete one
        chosen, _skipped = pick_resume(rows, changing=lambda _rows: set())
        if chosen is None:
            raise FileNotFoundError(f"no checkpoint in {path}")
        if chosen.path.is_file():
            return inspect_checkpoint(chosen.path)
        row = chosen
    else:
        row = own[0]
    info: dict[str, object] = {
        "path": str(row.path), "kind": row.kind, "bytes": row.bytes, "step": row.step,
        "epoch": row.epoch, "complete": row.complete, "resume_path": str(row.resume_path),
        "source": "name",
    }  # fmt: skip
    if row.tag:
        info["tag"] = row.tag
    if row.problem:
        info["problem"] = row.problem
    if row.meta:
        info.update({k: row.meta[k] for k in _METADATA_KEYS if k in row.meta})
        info["source"] = "sidecar"
    if row.kind == "hf":
        state = _read_json(row.path / "trainer_state.json")
        if state:
            info["source"] = "trainer_state.json"
            info["best_metric"] = state.get("best_metric")
            losses = [e["loss"] for e in state.get("log_history", []) if "loss" in e]
            if losses:
                info["loss"] = losses[-1]
    elif row.kind == "dcp":
        info.update(_dcp_info(row.path))
    elif row.kind == "deepspeed":  # engine.save_checkpoint stores global_steps with the model
        states = sorted(row.path.glob("*model_states.pt"))
        stored = _torch_info(states[0]) if states else {}
        if isinstance(stored.get("global_steps"), int):
            info.update(step=stored["global_steps"], source=states[0].name)
    info["files"] = sorted(p.relative_to(row.path).as_posix()
                           for p in _dir_stats(row.path)[2])[:30]  # fmt: skip
    return info


def _torch_info(path: Path) -> dict[str, object]:
    info: dict[str, object] = {}
    try:
        import torch
    except ImportError:
        meta = torch_file_meta(path)  # what can be read without torch
        info.update({k: v for k, v in meta.items() if k != "global_step"})
        if "global_step" in meta:
            info["step"] = meta["global_step"]
        info["source"] = "name only (install torch to read the file)" if not meta else "data.pkl"
        return info
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported, not raised
        meta = torch_file_meta(path)
        if meta:
            info.update(meta)
            info["source"] = f"data.pkl (torch refused it: {type(exc).__name__})"
        else:
            info["source"] = f"unreadable: {type(exc).__name__}"
        return info
    if isinstance(data, dict):
        for key in _METADATA_KEYS:
            value = data.get(key)
            if isinstance(value, int | float):
                info[key] = value
            elif isinstance(value, torch.Tensor) and value.numel() == 1:
                info[key] = value.item()
        if "global_step" in info and "step" not in info:
            info["step"] = info["global_step"]
        info["keys"] = sorted(str(k) for k in data)[:20]
        tensors = _count_tensors(data)
        info["tensors"], info["tensor_elements"] = tensors
    info["source"] = "torch"
    return info


def _safetensors_info(path: Path) -> dict[str, object]:
    try:
        with open(path, "rb") as fh:
            length = struct.unpack("<Q", fh.read(8))[0]
            header = json.loads(fh.read(length))
    except (OSError, ValueError, struct.error):
        return {"source": "unreadable"}
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    elements = 0
    for value in tensors.values():
        count = 1
        for dim in value.get("shape", []):
            count *= int(dim)
        elements += count
    info: dict[str, object] = {
        "tensors": len(tensors),
        "tensor_elements": elements,
        "keys": sorted(tensors)[:20],
        "source": "safetensors header",
    }
    meta = header.get("__metadata__")
    if isinstance(meta, dict):
        for key in _METADATA_KEYS:
            with contextlib.suppress(ValueError):
                if key in meta:
                    info[key] = float(meta[key]) if "." in str(meta[key]) else int(meta[key])
    return info


def _dcp_info(path: Path) -> dict[str, object]:
    """Tensor names and sizes from a torch.distributed.checkpoint's .metadata (needs torch)."""
    try:
        from torch.distributed.checkpoint.filesystem import FileSystemReader
    except ImportError:
        return {"source": "name only (install torch to read .metadata)"}
    try:
        metadata = FileSystemReader(str(path)).read_metadata()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"source": f"unreadable .metadata: {type(exc).__name__}"}
    entries = metadata.state_dict_metadata
    tensors = {k: v for k, v in entries.items() if hasattr(v, "size")}
    elements = 0
    for value in tensors.values():
        count = 1
        for dim in value.size:
            count *= int(dim)
        elements += count
    return {"source": ".metadata", "keys": sorted(entries)[:20], "tensors": len(tensors),
            "tensor_elements": elements}  # fmt: skip


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
