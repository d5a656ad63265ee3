#!/usr/bin/env python3
"""runctl's on-host agent: starts a job detached, supervises it, and answers queries about it.

Shipped verbatim to every host (named by its content hash) and run with the host's own python3,
so it uses the standard library only and stays compatible with Python 3.8. Nothing imports it.

A job lives in ``<base>/jobs/<job_id>/``:

    job.json     the spec the CLI sent            log         stdout+stderr, append-only
    state.json   {"state", "pid", "agent_pid"...} exit_code   written once the job ends
    pid          the job's process (group leader)  heartbeat   rewritten every few seconds

Sub-commands (each prints JSON on stdout unless it streams a log):

    start   --base B [--expect-manifest D --code-dir C] [--exclusive[-machine]] [--no-launch]
            (spec JSON on stdin; --no-launch only prepares the job dir for a batch scheduler)
    supervise --job-dir J                          run a prepared job in the foreground
    status  --base B [JOB_ID ...]
    remove  --base B [JOB_ID ...]                  delete finished jobs' dirs (jobs prune)
    index   --base B                               every job dir with spec and status (doctor)
    tail    --job-dir J --offset N [--follow]      raw log bytes; final state on stderr
    wait    --job-dir J [--timeout S]
    cancel  --job-dir J [--grace S]
    resolve --root R --path P                      realpath of P, refusing escapes from R
    prepare-sync --base B --code-dir C [--paths-on-stdin]   pick the code version to sync into
    apply-manifest --code-dir C                    delete removed files, record the manifest
    checkpoints --dir D [--keep N [--dry-run] [--named X] [--only X]]   list (and prune)
    hash --path P                                  sha256 of a file or of every file under P
    watchdog arm|status|disarm|run --base B        host watchdog (see the watchdog section)

Exit codes of ``start``: 0 started, 10 code dir does not match the expected manifest (the CLI
re-syncs and retries), 11 another job of the project (--exclusive) or of any project
(--exclusive-machine) is running, 12 bad spec.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import fcntl
import hashlib
import io
import json
import os
import pickle
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable

HEARTBEAT_S = 5.0
FINAL = ("succeeded", "failed", "cancelled", "preempted")
EXIT_STALE, EXIT_BUSY, EXIT_BAD_SPEC = 10, 11, 12


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z"


def _read_json(path: str) -> dict:
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _write_json(path: str, data: dict) -> None:
    # Write-then-rename so a concurrent reader never sees half a file.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as dead: its parent (the agent) is gone or about to reap it.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


# ---------------------------------------------------------------- checkpoints
#
# A checkpoint is a file or a directory, as the training frameworks write them. The CLI keeps
# a copy of these rules in runctl.storage.checkpoints (this file may import nothing from
# runctl); tests check that both list, order and prune alike.
#
#   PyTorch Lightning  epoch=E-step=S.ckpt, last.ckpt, last-vN.ckpt (step read from the file)
#   HF Trainer         checkpoint-<step>/, complete once trainer_state.json is written
#   Accelerate         checkpoint_<n>/ (save_state), complete once random_states_*.pkl is
#   torch DCP          any directory holding .metadata (written last)
#   DeepSpeed          global_step<N>/ beside a `latest` file naming the newest complete one
#   Orbax / JAX        <step>/ (written as <step>.orbax-checkpoint-tmp-*, then renamed)
#   plain files        *.pt *.pth *.ckpt *.safetensors *.bin: step_N, epoch_N, best, last...
#
# A directory is complete once its marker is there and none of its files of a known format
# (torch zip, safetensors) is cut short (a crash mid-write beside an already written marker).

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


def is_protected(name: str) -> bool:
    """last*, best* and final* checkpoints: cleanup never deletes them unless named."""
    return os.path.basename(name.rstrip("/")).lower().startswith(_PROTECTED)


def is_checkpoint_file(name: str) -> bool:
    """A loose file that is a checkpoint: by its extension; a .bin (also data shards,
    tokenizers) only when its name says model, step or epoch."""
    if name in _NOT_CHECKPOINTS or not name.endswith(CHECKPOINT_EXTS):
        return False
    if name.endswith(".bin"):
        stem = name[:-4]
        return "model" in stem.lower() or bool(_STEP_RE.search(stem) or _EPOCH_RE.search(stem))
    return True


def name_numbers(name: str, is_dir: bool = False) -> tuple:
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


def dir_kind(name: str, files: list, parent_files: list) -> str | None:
    """The framework layout of a directory, or None when it is not one checkpoint."""
    if ".metadata" in files:
        return "dcp"
    if "trainer_state.json" in files or (
        _HF_RE.match(name) and (not files or any(_HF_FILE_RE.match(f) for f in files))
    ):  # a HF Trainer checkpoint, maybe still being written (its files come first)
        return "hf"
    if _DEEPSPEED_RE.match(name) and (
        "latest" in parent_files or any(f.endswith(("model_states.pt", "optim_states.pt"))
                                        for f in files)
    ):  # fmt: skip
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


def torch_file_meta(path: str) -> dict:
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


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def file_problem(path: str, size: int) -> str | None:
    """Why a checkpoint file is not complete (truncated, empty), or None."""
    if size == 0:
        return "empty file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if head[:4] == b"PK\x03\x04":  # torch.save's zip: its end record is written last
                return None if zipfile.is_zipfile(path) else "truncated: no zip end record"
            if path.endswith(".safetensors"):
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


def inner_problem(directory: str, files: list) -> str | None:
    """The first truncated weight/optimizer/state file inside a checkpoint directory, named
    (``optimizer.pt: truncated: no zip end record``), or None. Only files of known formats are
    looked at, and of each only its header or its tail: the cost stays small on big models."""
    for full in sorted(files):
        if not full.endswith(_INNER_EXTS):
            continue
        try:
            size = os.path.getsize(full)
        except OSError:
            continue  # rotated away while we looked
        problem = file_problem(full, size)
        if problem:
            return os.path.relpath(full, directory).replace(os.sep, "/") + ": " + problem
    return None


def _dir_stats(path: str) -> tuple:
    """(bytes, newest mtime, files) of everything under ``path``."""
    total, newest, names = 0, 0.0, []
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_size
            newest = max(newest, st.st_mtime)
            names.append(os.path.join(root, name))
    if not names:
        with contextlib.suppress(OSError):
            newest = os.stat(path).st_mtime
    return total, newest, names


def _sidecar_meta(path: str, is_dir: bool) -> dict:
    sidecar = (path.rstrip("/") if is_dir else os.path.splitext(path)[0]) + ".json"
    meta = _read_json(sidecar) if os.path.isfile(sidecar) else {}
    return meta if isinstance(meta, dict) else {}


def _deepspeed_problem(path: str, step: int | None) -> str | None:
    try:
        with open(os.path.join(os.path.dirname(path), "latest")) as fh:
            tag = fh.read().strip()
    except OSError:
        return "no `latest` file names it yet"
    if tag == os.path.basename(path):
        return None
    match = _DEEPSPEED_RE.match(tag)
    if match and step is not None and step < int(match.group(1)):
        return None
    return f"newer than `latest` ({tag}): still being written"


def _dir_row(path: str, kind: str, files: list) -> dict:
    total, mtime, inner = _dir_stats(path)
    step, epoch = name_numbers(os.path.basename(path), True)
    problem = None
    inside: dict = {}
    if kind == "hf":
        state = _read_json(os.path.join(path, "trainer_state.json"))
        if not state:
            problem = "no trainer_state.json (still being written?)"
        elif os.path.basename(path).startswith("tmp-"):
            problem = "temporary directory (still being written)"
        inside = {"step": state.get("global_step"), "epoch": state.get("epoch")}
    elif kind == "accelerate":
        if not any(_RNG_RE.match(f) for f in files):
            problem = "no random_states_*.pkl (still being written?)"
    elif kind == "deepspeed":
        problem = _deepspeed_problem(path, step)
    elif kind == "orbax":
        if not os.path.basename(path).isdigit():
            problem = "temporary Orbax directory (still being written)"
    elif kind == "dcp":
        with contextlib.suppress(OSError):
            if os.path.getsize(os.path.join(path, ".metadata")) == 0:
                problem = "empty .metadata"
    if problem is None:  # the marker is there: are the files it vouches for whole?
        problem = inner_problem(path, inner)
    by_tag = kind == "deepspeed"  # load_checkpoint(save_dir, tag): `latest` may name another
    row = {"path": path, "kind": kind, "step": step, "epoch": epoch, "bytes": total,
           "mtime": mtime, "complete": problem is None,
           "resume_path": os.path.dirname(path) if by_tag else path}  # fmt: skip
    if by_tag:
        row["tag"] = os.path.basename(path)
    return _apply_meta(row, inside, _sidecar_meta(path, True), problem)


def _file_row(path: str) -> dict | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # deleted while we looked (keep-last-N rotation)
    step, epoch = name_numbers(os.path.basename(path))
    problem = file_problem(path, st.st_size)
    readable = problem is None and path.endswith((".ckpt", ".pt", ".pth"))
    inside = torch_file_meta(path) if readable else {}
    row = {"path": path, "kind": "file", "step": step, "epoch": epoch, "bytes": st.st_size,
           "mtime": st.st_mtime, "complete": problem is None, "resume_path": path}  # fmt: skip
    return _apply_meta(row, inside, _sidecar_meta(path, False), problem)


def _apply_meta(row: dict, inside: dict, sidecar: dict, problem: str | None) -> dict:
    """Metadata wins over the name: a sidecar JSON first, then what the checkpoint stores."""
    for source in (inside, sidecar):
        step = source.get("global_step", source.get("step"))
        if isinstance(step, (int, float)) and not isinstance(step, bool):
            row["step"] = int(step)
        if _is_number(source.get("epoch")):
            row["epoch"] = source["epoch"]
    if sidecar:
        row["meta"] = sidecar
    if problem:
        row["problem"] = problem
    row["protected"] = is_protected(row["path"])
    return row


def order_key(row: dict, numbered: list) -> tuple:
    """Oldest first: by step (else epoch); a checkpoint with neither sits by its time."""
    number = row["step"] if row["step"] is not None else row["epoch"]
    if number is None:  # e.g. last.ckpt without metadata: after everything written before it
        older = [n for n, mtime in numbered if mtime <= row["mtime"]]
        number = max(older) if older else -1
    return (number, row["mtime"], row["name"])


def list_checkpoints(directory: str) -> list:
    """Checkpoints under ``directory`` (files and framework directories), oldest first."""
    directory = os.path.abspath(os.path.expanduser(directory))
    rows: list = []
    if os.path.isdir(directory):
        parent = os.path.dirname(directory)
        parent_files = [f for f in _listdir(parent) if os.path.isfile(os.path.join(parent, f))]
        _scan(directory, rows, parent_files, True)
    elif os.path.isfile(directory):
        row = _file_row(directory)
        rows = [row] if row else []
    for row in rows:
        rel = os.path.relpath(row["path"], directory)
        row["name"] = os.path.basename(row["path"]) if rel == "." else rel
    numbered = [
        (r["step"] if r["step"] is not None else r["epoch"], r["mtime"])
        for r in rows
        if r["step"] is not None or r["epoch"] is not None
    ]
    return sorted(rows, key=lambda r: order_key(r, numbered))


def _listdir(path: str) -> list:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _scan(directory: str, rows: list, parent_files: list, is_root: bool = False) -> None:
    names = _listdir(directory)
    files = [n for n in names if os.path.isfile(os.path.join(directory, n))]
    kind = dir_kind(os.path.basename(directory), files, parent_files)
    if kind is not None and not (is_root and kind in ("orbax", "dir")):  # named by a number
        rows.append(_dir_row(directory, kind, files))
        return
    for name in names:
        path = os.path.join(directory, name)
        if name in files:
            if is_checkpoint_file(name):
                row = _file_row(path)
                if row is not None:
                    rows.append(row)
        elif os.path.isdir(path) and not os.path.islink(path):
            _scan(path, rows, files)


def resolve_resume(path: str) -> tuple:
    """(what the framework's resume API takes, its step or None, its tag or None) for a given
    checkpoint: a file inside a checkpoint directory stands for the directory, a DeepSpeed
    save dir or a directory of checkpoints for its newest complete one; a DeepSpeed
    global_step<N>/ for its save dir and the tag global_step<N>."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path):
        parent = list_checkpoints(os.path.dirname(path))
        if len(parent) == 1 and parent[0]["path"] == os.path.dirname(path):
            return parent[0]["resume_path"], parent[0]["step"], parent[0].get("tag")
        row = _file_row(path)
        return path, row["step"] if row else None, None
    chosen, _skipped = pick_resume(list_checkpoints(path))
    if chosen is None:
        return path, None, None
    return chosen["resume_path"], chosen["step"], chosen.get("tag")


def _signature(path: str) -> tuple:
    if os.path.isdir(path):
        total, mtime, inner = _dir_stats(path)
        return total, mtime, len(inner)
    try:
        st = os.stat(path)
    except OSError:
        return (-1, 0.0, 0)
    return st.st_size, st.st_mtime, 1


def still_changing(rows: list, pause_s: float = 0.3) -> set:
    """Paths among ``rows`` (touched in the last few seconds) whose size changes under a
    second look: someone is writing them."""
    recent = [r["path"] for r in rows if time.time() - r["mtime"] < _WRITING_S]
    if not recent:
        return set()
    before = {p: _signature(p) for p in recent}
    time.sleep(pause_s)
    return {p for p in recent if _signature(p) != before[p]}


def pick_resume(rows: list) -> tuple:
    """(the checkpoint to resume from or None, [skipped newer ones, each with its problem]).

    With framework directories present, only they are candidates (a HF output dir also
    holds the final model.safetensors, which `resume_from_checkpoint` cannot take).
    """
    pool = [r for r in rows if r["kind"] in FRAMEWORK_KINDS] or rows
    skipped: list = []
    for row in reversed(pool):
        if row["complete"] and not still_changing([row]):
            return row, skipped
        row.setdefault("problem", "size changing: still being written")
        skipped.append(row)
    return None, skipped


def plan_cleanup(rows: list, keep: int, named: tuple = ()) -> list:
    """The rows to delete so that ``keep`` complete checkpoints remain: whole checkpoints,
    oldest first. Never the newest complete one, nor one newer than it (it may be being
    written), nor a protected one (last*/best*/final*) or one without a step or epoch,
    unless its name is in ``named``, nor what a protected link points at (Lightning's
    save_last="link")."""
    if keep < 0:
        raise ValueError("keep must be >= 0")
    # Beside framework directories, loose files (a HF output dir's final model) are left be.
    framework = any(r["kind"] in FRAMEWORK_KINDS for r in rows)
    pool = [i for i, r in enumerate(rows) if not framework or r["kind"] in FRAMEWORK_KINDS]
    complete = [i for i in pool if rows[i]["complete"]]
    newest = complete[-1] if complete else -1
    spared = [i for i in complete if not rows[i]["protected"] or rows[i]["name"] in named]
    recent = set(spared[-max(keep, 1) :])  # keep 0 still keeps the newest complete one
    links = {os.path.realpath(r["path"]) for r in rows if r["protected"]}
    doomed = []
    for index in pool:
        row = rows[index]
        if index >= newest or index in recent:
            continue
        unnumbered = row["step"] is None and row["epoch"] is None
        if (row["protected"] or unnumbered) and row["name"] not in named:
            continue  # protected, or not placed by a number (an exported model.pt)
        if not row["protected"] and os.path.realpath(row["path"]) in links:
            continue
        doomed.append(row)
    return doomed


def delete_checkpoint(row: dict) -> None:
    """Remove one whole checkpoint (file or directory) and its sidecar JSON."""
    path = row["path"]
    is_dir = os.path.isdir(path) and not os.path.islink(path)
    if is_dir:
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    sidecar = (path if is_dir else os.path.splitext(path)[0]) + ".json"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sidecar)


# ---------------------------------------------------------------- start


SECRETS_FILE = "secrets.json"  # {name: value}, 0600; deleted when the job ends


def private_dir(path: str) -> None:
    """Create ``path`` as 0700, or tighten it (one line on stderr) if others may enter it."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError:
        return
    shared = os.path.realpath(path) in ("/", os.path.realpath(os.path.expanduser("~")))
    if info.st_mode & 0o077 and info.st_uid == os.getuid() and not shared:
        os.chmod(path, 0o700)  # (never the home itself: --remote-dir ~ is the user's choice)
        was = info.st_mode & 0o777
        sys.stderr.write(f"runctl: {path} was open to other users ({was:o}); made it 0700\n")


def _write_private(path: str, text: str) -> None:
    """Write ``text`` to a new file only this user can read (whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def drop_secrets(job_dir: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(job_dir, SECRETS_FILE))


def _job_paths(job_dir: str) -> dict:
    names = ("job.json", "state.json", "log", "pid", "exit_code", "heartbeat", "agent.log")
    return {n: os.path.join(job_dir, n) for n in names}


def _project_busy(base: str, project: str | None) -> str | None:
    """A running job of ``project`` under ``base`` (of any project when None)."""
    jobs_root = os.path.join(base, "jobs")
    if not os.path.isdir(jobs_root):
        return None
    for job_id in sorted(os.listdir(jobs_root)):
        job_dir = os.path.join(jobs_root, job_id)
        spec = _read_json(os.path.join(job_dir, "job.json"))
        if project is not None and spec.get("project") != project:
            continue
        if _job_status(job_dir)["state"] in ("setup", "running", "starting"):
            return job_id
    return None


def cmd_start(args: argparse.Namespace) -> int:
    try:
        spec = json.loads(sys.stdin.read())
        # Secret values came on stdin with the spec; they never go into job.json.
        secrets = spec.pop("secret_env", None) or {}
        job_id = spec["job_id"]
    except (ValueError, KeyError, AttributeError) as exc:
        print(json.dumps({"error": f"bad spec: {type(exc).__name__}"}))
        return EXIT_BAD_SPEC
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", job_id):
        print(json.dumps({"error": "bad job id"}))
        return EXIT_BAD_SPEC
    base = os.path.abspath(os.path.expanduser(args.base))
    if args.expect_manifest:
        digest_file = os.path.join(os.path.expanduser(args.code_dir), ".runctl", "manifest.digest")
        try:
            with open(digest_file) as fh:
                have = fh.read().strip()
        except OSError:
            have = ""
        if have != args.expect_manifest:
            print(json.dumps({"error": "stale", "have": have}))
            return EXIT_STALE
    if args.exclusive or args.exclusive_machine:
        # --exclusive-machine: any job of any project (a second training on one GPU
        # machine); --exclusive: another job of the same project.
        busy = _project_busy(base, None if args.exclusive_machine else spec.get("project", ""))
        if busy:
            print(json.dumps({"error": "busy", "job_id": busy}))
            return EXIT_BUSY
    for key in ("workdir", "checkpoint_dir", "output_dir", "code_dir"):
        if spec.get(key):
            spec[key] = os.path.abspath(os.path.expanduser(spec[key]))
    if spec.get("resume_from"):  # a checkpoint a job wrote into a since-removed code version
        spec["resume_from"] = _relocated(spec["resume_from"])
        # absolute here: `supervise` may run elsewhere (Slurm), the job in its code dir
        spec["resume_from"] = os.path.abspath(os.path.expanduser(spec["resume_from"]))
    if spec.get("code_dir"):
        # Run in the code version that is current now; later syncs while this job runs get
        # a new version (see cmd_prepare_sync), so the job's code never changes under it.
        spec["workdir"] = os.path.realpath(spec["code_dir"])
    job_dir = os.path.join(base, "jobs", job_id)
    private_dir(base)
    os.makedirs(job_dir, mode=0o700)  # fails loudly if the id was already used on this host
    paths = _job_paths(job_dir)
    if secrets:
        _write_private(os.path.join(job_dir, SECRETS_FILE), json.dumps(secrets))
    for key in ("checkpoint_dir", "output_dir"):
        if spec.get(key):
            os.makedirs(spec[key], exist_ok=True)
    spec["base"] = base
    _write_json(paths["job.json"], spec)
    _write_json(paths["state.json"], {"state": "starting", "created_at": _now()})
    open(paths["log"], "ab").close()
    if args.no_launch:
        # A batch scheduler (Slurm) runs `supervise` later; the job waits in its queue.
        _write_json(paths["state.json"], {"state": "pending", "created_at": _now()})
        answer = {"job_dir": job_dir, "agent_pid": None, "workdir": spec["workdir"]}
        answer.update(agent=os.path.abspath(__file__), python=sys.executable)
        print(json.dumps(answer))
        return 0

    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first == 0:  # first child: new session, then fork again so init adopts the agent
        os.close(read_fd)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        _daemonize(paths["agent.log"])
        os.write(write_fd, str(os.getpid()).encode())
        os.close(write_fd)
        code = 1
        try:
            code = supervise(job_dir)
        finally:
            os._exit(code)
    os.close(write_fd)
    agent_pid = int(os.read(read_fd, 32) or b"0")
    os.close(read_fd)
    os.waitpid(first, 0)
    print(json.dumps({"job_dir": job_dir, "agent_pid": agent_pid, "workdir": spec["workdir"]}))
    return 0


def _daemonize(agent_log: str) -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    log = os.open(agent_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)


# ---------------------------------------------------------------- requirements

# Builds a job venv never replaces: a requirements.txt naming torch must not pull another
# (CUDA) build of it, or of the libraries built against it, over what the host's python has.
_TORCH_KIN = ("torch", "torchvision", "torchaudio", "torchtext", "torchdata", "triton")
_COMPILED = ("pytorch-triton", "pytorch-triton-rocm", "xformers", "flash-attn", "deepspeed")
PINNED_NAMES = frozenset(_TORCH_KIN + _COMPILED + ("jax", "jaxlib", "tensorflow"))
PINNED_PREFIXES = ("nvidia-", "jax-cuda", "tensorflow-", "cupy")
VENV_LAYOUT = "2"  # bump when the venv's make-up changes: older venvs are rebuilt
_REQ_NAME_RE = re.compile(r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(.*)$")
_REQ_SPEC_RE = re.compile(r"^\s*(===|~=|==|!=|<=|>=|<|>)\s*([A-Za-z0-9.*+!_-]+)\s*$")
_VERSION_RE = re.compile(
    r"^v?(?:(\d+)!)?(\d+(?:\.\d+)*)"
    r"(?:[-_.]?(a|b|c|rc|alpha|beta|pre|preview)[-_.]?(\d*))?"
    r"(?:-(\d+)|[-_.]?(post|rev|r)[-_.]?(\d*))?"
    r"(?:[-_.]?(dev)[-_.]?(\d*))?"
    r"(?:\+([a-z0-9]+(?:[-_.][a-z0-9]+)*))?$"
)
# Options that choose where packages come from, not which: they do not change what is needed.
_SOURCE_OPTIONS = ("-i", "--index-url", "--extra-index-url", "--no-index", "-f", "--find-links",
                   "--trusted-host", "--pre", "--prefer-binary", "--only-binary", "--no-binary",
                   "-c", "--constraint", "--use-feature", "--require-hashes")  # fmt: skip


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_dists() -> dict:
    """{canonical name: version} of the distributions this python imports (first one on
    sys.path wins, as for imports)."""
    import importlib.metadata

    found: dict = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(canonical_name(name), dist.version)
    return found


def _version_key(text: str) -> tuple | None:
    """A sort key for a PEP 440 version (local label ignored); None if it is not one."""
    m = _VERSION_RE.match(text.strip().lower())
    if not m:
        return None
    release = tuple(int(p) for p in m.group(2).split("."))
    while len(release) > 1 and release[-1] == 0:
        release = release[:-1]
    has_post = bool(m.group(5) or m.group(6))
    has_dev = bool(m.group(8))
    if m.group(3):
        pre: tuple = (0, {"a": 0, "alpha": 0, "b": 1, "beta": 1}.get(m.group(3), 2),
                      int(m.group(4) or 0))  # fmt: skip
    elif has_dev and not has_post:
        pre = (-1,)  # 1.0.dev1 sorts before 1.0a1
    else:
        pre = (1,)
    post = (int(m.group(5) or m.group(7) or 0),) if has_post else (-1,)
    dev = (int(m.group(9) or 0),) if has_dev else (float("inf"),)
    return (int(m.group(1) or 0), release, pre, post, dev)


def _release(text: str) -> list:
    m = _VERSION_RE.match(text.strip().lower())
    return [int(p) for p in m.group(2).split(".")] if m else []


def version_matches(version: str, op: str, wanted: str) -> bool | None:
    """Does ``version`` satisfy ``op wanted``? None when either is not a version we parse."""
    if op == "===":
        return version == wanted
    if op in ("==", "!=") and wanted.endswith(".*"):
        head, release = _release(wanted[:-2]), _release(version)
        if not head or not release:
            return None
        release += [0] * max(0, len(head) - len(release))
        same = release[: len(head)] == head
        return same if op == "==" else not same
    have, want = _version_key(version), _version_key(wanted)
    if have is None or want is None:
        return None
    if op in ("==", "!="):
        equal = have == want
        if "+" in wanted:  # a local label in the specifier must match too
            equal = equal and version.partition("+")[2] == wanted.partition("+")[2]
        return equal if op == "==" else not equal
    if op == "~=":
        prefix = _release(wanted)[:-1]
        if not prefix:
            return None
        have_release = _release(version) + [0] * len(prefix)
        return have >= want and have_release[: len(prefix)] == prefix
    return {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want}[op]


def _marker_true(marker: str) -> bool | None:
    """Evaluate a simple environment marker (and/or of comparisons, no parentheses)."""
    import platform

    if "(" in marker or ")" in marker:
        return None
    values = {
        "python_version": "{}.{}".format(*sys.version_info[:2]),
        "python_full_version": platform.python_version(),
        "sys_platform": sys.platform,
        "platform_system": platform.system(),
        "platform_machine": platform.machine(),
        "os_name": os.name,
        "implementation_name": sys.implementation.name,
        "platform_python_implementation": platform.python_implementation(),
    }
    atom = re.compile(r"""^\s*(\S+?)\s*(===|~=|==|!=|<=|>=|<|>|not in|in)\s*(\S+)\s*$""")
    any_true = False
    for clause in re.split(r"\s+or\s+", marker.strip()):
        all_true = True
        for part in re.split(r"\s+and\s+", clause):
            m = atom.match(part)
            if not m:
                return None
            left, op, right = m.groups()
            if left in values and right[:1] in "'\"":
                have, want = values[left], right.strip("'\"")
            elif right in values and left[:1] in "'\"" and op in ("==", "!=", "in", "not in"):
                have, want = left.strip("'\""), values[right]
                if op in ("in", "not in"):  # "'linux' in sys_platform"
                    have, want = want, have
                    op = "contains" if op == "in" else "lacks"
            else:
                return None
            if op in ("in", "not in", "contains", "lacks"):
                found = have in want if op in ("in", "not in") else want in have
                result: bool | None = found if op in ("in", "contains") else not found
            elif left.endswith("version") or right.endswith("version"):
                result = version_matches(have, op, want)
            elif op in ("==", "!="):
                result = (have == want) == (op == "==")
            else:
                return None
            if result is None:
                return None
            all_true = all_true and result
        any_true = any_true or all_true
    return any_true


def unmet_requirements(path: str, have: dict, depth: int = 0) -> list:
    """Lines of requirements file ``path`` that ``have`` ({canonical name: version}) does not
    satisfy, or that cannot be judged without pip (URLs, paths, extras, editables): those are
    listed too, so an empty answer means there is surely nothing to install."""
    unmet = []
    with open(path) as fh:
        text = fh.read().replace("\\\n", " ")
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        line = re.sub(r"\s--hash[=\s]\S+", "", line).strip()
        if not line:
            continue
        if line.startswith("-"):
            option, _, value = line.replace("=", " ", 1).partition(" ")
            if option in ("-r", "--requirement") and value.strip() and depth < 5:
                nested = os.path.join(os.path.dirname(path), value.strip())
                try:
                    unmet += unmet_requirements(nested, have, depth + 1)
                except OSError:
                    unmet.append(line)
            elif option not in _SOURCE_OPTIONS:
                unmet.append(line)
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip():
            applies = _marker_true(marker)
            if applies is False:
                continue
            if applies is None:
                unmet.append(line)
                continue
        m = _REQ_NAME_RE.match(requirement.strip())
        rest = m.group(2).strip() if m else ""
        if not m or rest.startswith(("[", "@")) or "/" in requirement or "$" in requirement:
            unmet.append(line)
            continue
        version = have.get(canonical_name(m.group(1)))
        specs = [s for s in rest.strip("()").split(",") if s.strip()]
        parsed = [_REQ_SPEC_RE.match(s) for s in specs]
        if version is None or not all(p and version_matches(version, *p.groups()) for p in parsed):
            unmet.append(line)
    return unmet


def pinned_builds(have: dict) -> dict:
    """The installed packages a job venv must keep as they are (torch and its kin)."""
    return {
        name: version
        for name, version in have.items()
        if name in PINNED_NAMES or name.startswith(PINNED_PREFIXES)
    }


def host_site_dirs() -> list:
    """Where this python's own packages live when it is a venv: a job venv made from it would
    otherwise see only the base interpreter's packages (``--system-site-packages``)."""
    import site

    listed = getattr(site, "getsitepackages", None)  # missing in very old virtualenvs
    if sys.prefix == getattr(sys, "base_prefix", sys.prefix) or listed is None:
        return []
    return [d for d in listed() if os.path.isdir(d)]


# ---------------------------------------------------------------- supervise

# Set to "1" for every job unless already set: its output is a file, not a terminal (see run).
PROGRESS_ENV = ("TQDM_MININTERVAL", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


class Supervisor:
    """Runs one job: optional setup, the command, signal forwarding, heartbeat, exit code."""

    def __init__(self, job_dir: str) -> None:
        self.job_dir = job_dir
        self.paths = _job_paths(job_dir)
        self.spec = _read_json(self.paths["job.json"])
        self.state = _read_json(self.paths["state.json"])
        self.child: subprocess.Popen | None = None
        self.cancel_at: float | None = None
        self.killed = False
        self.log_fd = os.open(self.paths["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.node_env: dict = {}

    def note(self, text: str) -> None:
        os.write(self.log_fd, (f"[runctl] {text}\n").encode())

    def set_state(self, **changes: object) -> None:
        self.state.update(changes)
        _write_json(self.paths["state.json"], self.state)

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.cancel_at is None:
            # `cancel --grace` (or the watchdog's spot notice) leaves its wish in a file;
            # otherwise the spec's default applies.
            request = _read_json(os.path.join(self.job_dir, "cancel.json"))
            preempt = _read_json(os.path.join(self.job_dir, "preempt.json"))
            grace = float((request or preempt).get("grace_s", self.spec.get("grace_s", 10.0)))
            self.cancel_at = time.time() + grace
            self.set_state(cancel_requested_at=_now())
            why = request.get("reason")
            if preempt and not request:
                why = "{} ({} at {})".format(
                    *(preempt.get(k) for k in ("reason", "action", "time"))
                )
            if why:
                self.note(f"{why}: stopping the job (SIGTERM, SIGKILL after {grace:.0f}s)")
        if self.child is not None and self.child.poll() is None:
            _killpg(self.child.pid, signal.SIGTERM)

    def heartbeat(self) -> None:
        with open(self.paths["heartbeat"], "w") as fh:
            fh.write(_now())

    def run_step(
        self, argv: list, env: dict, cwd: str, periodic: Callable[[float], None] | None = None,
        escalate: bool = True,
    ) -> int:  # fmt: skip
        """Run one process in its own group, logging to the job log; return its exit code.

        With ``escalate`` a cancel's grace period ending SIGKILLs it; the final checkpoint
        upload runs without, since it starts only after the job has stopped (a job that
        stopped well within its grace must not lose its last checkpoint to the clock).
        """
        self.child = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with open(self.paths["pid"], "w") as fh:
            fh.write(str(self.child.pid))
        guard = _guard_group(self.child.pid, self.paths["log"])
        last_beat = 0.0
        while True:
            try:
                rc = self.child.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.time()
            if now - last_beat >= HEARTBEAT_S:
                self.heartbeat()
                last_beat = now
            if periodic is not None:
                periodic(now)
            overdue = self.cancel_at is not None and now >= self.cancel_at
            if escalate and overdue and not self.killed:
                _killpg(self.child.pid, signal.SIGKILL)
                self.killed = True
        # Take down anything the command left behind in its group (data loaders, shells).
        _killpg(self.child.pid, signal.SIGKILL)
        _release_guard(guard)
        return rc if rc >= 0 else 128 - rc

    def run_steps(
        self, commands: list, label: str, env: dict, cwd: str, escalate: bool = True
    ) -> int:
        """Run ``commands`` (argv lists) in order, logged; stop at the first failure."""
        for argv in commands:
            argv = [str(a) for a in argv]
            self.note("{}: {}".format(label, " ".join(argv)))
            try:
                rc = self.run_step(argv, env, cwd, escalate=escalate)
            except OSError as exc:
                self.note(f"cannot start {argv[0]}: {exc.strerror}")
                return 127 if isinstance(exc, FileNotFoundError) else 126
            if rc != 0:
                self.note(f"{label} step failed with exit code {rc}")
                return rc
        return 0

    def pick_resume(self) -> tuple:
        """(RUNCTL_RESUME_FROM, RUNCTL_RESUME_STEP, RUNCTL_RESUME_TAG): --resume-from as the
        framework takes it, else the newest complete checkpoint; newer incomplete ones are
        named in the log. The tag (DeepSpeed's global_step<N>) makes the framework load the
        checkpoint chosen here, not the one its `latest` file names."""
        spec = self.spec
        if spec.get("resume_from"):
            return resolve_resume(spec["resume_from"])
        if not spec.get("resume", True) or not spec.get("checkpoint_dir"):
            return None, None, None
        chosen, skipped = pick_resume(list_checkpoints(spec["checkpoint_dir"]))
        used = f"resuming from {chosen['name']}" if chosen else "starting without a checkpoint"
        for row in skipped:
            self.note(f"skipped checkpoint {row['name']} ({row['problem']}); {used}")
        if chosen is None:
            return None, None, None
        return chosen["resume_path"], chosen["step"], chosen.get("tag")

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        self.heartbeat()
        spec = self.spec
        workdir = spec.get("workdir") or os.getcwd()
        env = dict(os.environ)
        hidden = set(spec.get("secrets") or [])  # recorded as "***": the values come below
        env.update({k: v for k, v in (spec.get("env") or {}).items() if k not in hidden})
        secrets = _read_json(os.path.join(self.job_dir, SECRETS_FILE))
        env.update(secrets)
        if hidden - set(secrets):
            self.note("secrets not available here: " + ", ".join(sorted(hidden - set(secrets))))
        env.update(self.node_env)
        # The job's output is a file. Progress bars there: tqdm redraws at most once a second
        # (not ten times), and rich, Lightning's default bar wherever rich is importable, draws
        # with carriage returns instead of nothing until the bar ends (`logs` shows each line's
        # last state, `logs -f` on a terminal the moving bar). What the user sets wins.
        for name in PROGRESS_ENV:
            env.setdefault(name, "1")
        # Known before the setup steps: the checkpoint restore syncs into it.
        env["RUNCTL_CHECKPOINT_DIR"] = spec.get("checkpoint_dir", "")
        python = sys.executable or "python3"
        rc = 0
        self.set_state(state="setup", agent_pid=os.getpid(), started_at=_now())
        if (
            rc == 0
            and spec.get("install_requirements")
            and os.path.isfile(os.path.join(workdir, "requirements.txt"))
        ):
            python, rc = self.install_requirements(workdir, env)
        store = spec.get("checkpoint_store") or {}
        # Restore the store's checkpoints first, so the latest one is found below.
        restore = [store["down"]] if store.get("down") else []
        if (
            rc == 0
            and self.cancel_at is None
            and restore
            and self.run_steps(restore, "checkpoint restore", env, workdir)
        ):
            self.note("checkpoint restore failed; starting without it")
        if rc == 0 and self.cancel_at is None:
            resume, resume_step, resume_tag = self.pick_resume()
            env.update(
                {
                    "RUNCTL_JOB_ID": spec["job_id"],
                    "RUNCTL_JOB_DIR": self.job_dir,
                    "RUNCTL_CHECKPOINT_DIR": spec.get("checkpoint_dir", ""),
                    "RUNCTL_OUTPUT_DIR": spec.get("output_dir", ""),
                    # per-project data cache on the host (train --data-s3 syncs into it)
                    "RUNCTL_DATA_DIR": os.path.join(
                        spec.get("base", ""), "data", spec.get("project") or "default"
                    ),
                    "RUNCTL_RESUME_FROM": resume or "",
                    "PYTHONUNBUFFERED": "1",
                }
            )
            env.pop("RUNCTL_RESUME_STEP", None)
            if resume_step is not None:
                env["RUNCTL_RESUME_STEP"] = str(resume_step)
            env.pop("RUNCTL_RESUME_TAG", None)  # never one inherited from an outer job
            if resume_tag:
                env["RUNCTL_RESUME_TAG"] = resume_tag
            argv = build_argv(spec, workdir, python)
            if spec.get("docker"):  # run inside a container (runctl run --docker-image)
                argv = docker_argv(spec, workdir, env, resume, self.node_env)
            self.set_state(state="running", resume_from=resume, command=argv)
            rc = self.run_steps(spec.get("pre_commands") or [], "pre", env, workdir)
            if rc == 0 and self.cancel_at is None:
                uploader = CheckpointUploader(self, store, env, workdir)
                try:
                    rc = self.run_step(argv, env, workdir, periodic=uploader.tick)
                except OSError as exc:
                    self.note(f"cannot start {argv[0]}: {exc.strerror}")
                    rc = 127 if isinstance(exc, FileNotFoundError) else 126
                if spec.get("docker"):
                    remove_container(spec, env)  # after a SIGKILLed `docker run` it still runs
                # On exit too (also after a cancel or preemption: the job's last checkpoint).
                if uploader.finish() != 0 and rc == 0:
                    rc = 1
                if self.cancel_at is None:
                    # Post steps (e.g. uploading outputs) run whatever the exit code; their
                    # failure fails a job that had succeeded.
                    post = self.run_steps(spec.get("post_commands") or [], "post", env, workdir)
                    rc = rc or post
        final = "cancelled" if self.cancel_at is not None else "succeeded" if rc == 0 else "failed"
        # SIGTERM without `runctl cancel` (no cancel.json): Slurm preempted or requeued us.
        requested = os.path.exists(os.path.join(self.job_dir, "cancel.json"))
        if final == "cancelled" and self.spec.get("launcher") == "slurm" and not requested:
            final = "preempted"
        preempt = _read_json(os.path.join(self.job_dir, "preempt.json"))
        if final == "cancelled" and preempt and not requested:  # the watchdog's spot notice
            final = "preempted"
            self.set_state(preempted_reason=preempt.get("reason"))
        with open(self.paths["exit_code"], "w") as fh:
            fh.write(str(rc))
        self.set_state(state=final, exit_code=rc, ended_at=_now())
        self.heartbeat()
        return 0

    def install_requirements(self, workdir: str, env: dict) -> tuple:
        """Make requirements.txt importable; return (python to run the job with, rc).

        The host's python (``hosts add --python``: a venv, a conda env, the system's) is
        used as it is when it already satisfies every line. Otherwise a per-project venv that
        sees that python's packages gets only what is missing; torch and its kin keep the
        host's builds (a constraints file pins them), so no other CUDA build is pulled in.
        """
        req = os.path.join(workdir, "requirements.txt")
        host = sys.executable
        have = installed_dists()
        try:
            with open(req, "rb") as fh:
                content = fh.read()
            unmet = unmet_requirements(req, have)
        except UnicodeDecodeError:
            unmet = ["(not UTF-8: pip reads it)"]
        except OSError as exc:
            self.note(f"cannot read requirements.txt: {exc.strerror}")
            return host, 1
        if not unmet:
            self.note(f"requirements.txt already satisfied by {host}; installing nothing")
            return host, 0
        layout = "\0".join((VENV_LAYOUT, host, "")).encode()
        digest = hashlib.sha256(layout + content).hexdigest()
        venv = os.path.join(self.spec["base"], "venvs", self.spec.get("project") or "default")
        vpython = os.path.join(venv, "bin", "python")
        marker = os.path.join(venv, ".runctl-requirements.sha256")
        try:
            with open(marker) as fh:
                if fh.read().strip() == digest and os.path.exists(vpython):
                    self.note(f"requirements.txt unchanged; using {venv}")
                    return vpython, 0
        except OSError:
            pass
        shown = ", ".join(unmet[:5]) + (f" (+{len(unmet) - 5} more)" if len(unmet) > 5 else "")
        self.note(f"not satisfied by {host}: {shown}")
        pip, rc = self.make_venv(venv, host, env, workdir)
        if rc != 0:
            return vpython, rc
        install = [*pip, "-r", req]
        pins = pinned_builds(have)
        if pins:
            constraints = os.path.join(venv, ".runctl-constraints.txt")
            with open(constraints, "w") as fh:
                fh.writelines(f"{name}=={version}\n" for name, version in sorted(pins.items()))
            install += ["-c", constraints]
        tool = "uv" if pip[0] != vpython else "pip"
        self.note(f"installing requirements.txt into {venv} ({tool}; it sees {host}'s packages)")
        rc = self.run_step(install, env, workdir)
        if rc == 0:
            with open(marker, "w") as fh:
                fh.write(digest)
            self.note("requirements installed")
        else:
            self.note(f"installing requirements.txt failed with exit code {rc}")
            if pins:
                kept = ", ".join(f"{n} {v}" for n, v in sorted(pins.items())[:4])
                self.note(
                    f"runctl keeps {host}'s builds of {kept}: if requirements.txt needs "
                    "other versions of these, install them into that python instead"
                )
        return vpython, rc

    def make_venv(self, venv: str, host: str, env: dict, workdir: str) -> tuple:
        """Create (or reuse) the project venv on top of ``host``; return (pip argv, rc)."""
        vpython = os.path.join(venv, "bin", "python")
        layout_file = os.path.join(venv, ".runctl-layout")
        layout = f"{VENV_LAYOUT} {host}"
        try:
            with open(layout_file) as fh:
                fresh = fh.read() != layout
        except OSError:
            fresh = True
        uv = shutil.which("uv", path=env.get("PATH"))
        uses_uv = os.path.exists(os.path.join(venv, ".runctl-uv"))
        if fresh or not os.path.exists(vpython):
            # Made by another python or an older runctl (which could hold its own torch).
            shutil.rmtree(venv, ignore_errors=True)
            make = [host, "-m", "venv", "--system-site-packages", venv]
            uses_uv = False
            rc = self.run_step(make, env, workdir)
            if rc != 0 and uv:
                # No ensurepip on this python (Debian without python3-venv): let uv make it.
                # uv may not see a host venv's own packages when installing (the job does).
                self.note("python -m venv failed; making the venv with uv")
                shutil.rmtree(venv, ignore_errors=True)
                uses_uv = True
                rc = self.run_step([uv, "venv", "--system-site-packages", "--python", host, venv],
                                   env, workdir)  # fmt: skip
            site_dirs = host_site_dirs()
            purelib = _venv_purelib(vpython) if rc == 0 and site_dirs else ""
            if rc != 0 or (site_dirs and not purelib):
                self.note(f"creating the venv failed with exit code {rc}")
                return [], rc or 1
            if purelib:  # the job venv sees the host venv's packages too, after its own
                with open(os.path.join(purelib, "_runctl_host_python.pth"), "w") as fh:
                    fh.writelines(d + "\n" for d in site_dirs)
            if uses_uv:
                open(os.path.join(venv, ".runctl-uv"), "w").close()
            with open(layout_file, "w") as fh:
                fh.write(layout)
        if uses_uv and uv:
            return [uv, "pip", "install", "--python", vpython], 0
        return [vpython, "-m", "pip", "install", "--progress-bar", "off"], 0


def _venv_purelib(vpython: str) -> str:
    """The site-packages directory of a venv, as its own python names it ('' on failure)."""
    code = "import sysconfig; print(sysconfig.get_path('purelib'))"
    try:
        done = subprocess.run([vpython, "-c", code], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    path = done.stdout.decode(errors="replace").strip()
    return path if done.returncode == 0 and os.path.isdir(path) else ""


class CheckpointUploader:
    """Copies the checkpoint dir to the job's checkpoint store every ``interval_s`` (never two
    copies at once) while the job runs, and once more when it ends."""

    def __init__(self, supervisor: Supervisor, store: dict, env: dict, cwd: str) -> None:
        self.supervisor = supervisor
        self.argv = [str(a) for a in store.get("up") or []]
        self.interval = float(store.get("interval_s") or 0)
        self.env = env
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.next_at = time.time() + self.interval

    def tick(self, now: float) -> None:
        # <job_dir>/sync-now (the watchdog, on a rebalance recommendation) asks for a copy now.
        flag = os.path.join(self.supervisor.job_dir, "sync-now")
        asked = os.path.exists(flag)
        if not self.argv or (not asked and (self.interval <= 0 or now < self.next_at)):
            return
        if self.proc is not None and self.proc.poll() is None:
            return  # the previous copy is still running
        if asked:
            with contextlib.suppress(OSError):
                os.unlink(flag)
            self.supervisor.note("checkpoint upload requested by the watchdog (rebalance)")
        self.next_at = now + self.interval
        self.proc = subprocess.Popen(
            self.argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=self.supervisor.log_fd, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def finish(self) -> int:
        if not self.argv:
            return 0
        if self.proc is not None:
            self.proc.wait()
        rc = self.supervisor.run_steps(
            [self.argv], "checkpoint upload", self.env, self.cwd, escalate=False
        )
        if rc == 0:
            self.supervisor.set_state(checkpoints_uploaded_at=_now())
        return rc


def has_inline_metadata(path: str) -> bool:
    """True when a script carries a PEP 723 ``# /// script`` block."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return any(line.rstrip() == "# /// script" for line in fh)
    except OSError:
        return False


def build_argv(spec: dict, workdir: str, python: str) -> list:
    """The command to exec: .py through uv (if present) or python; other files directly."""
    argv = [str(a) for a in spec["argv"]]
    if spec.get("kind") != "script":
        return argv
    script = argv[0]
    path = os.path.join(workdir, script)
    if not os.path.isabs(script):
        # "./" so that a file named "-c<code>#.py" is read as a path, never as an option
        # of python, uv or bash (issue 17).
        script = "./" + script
    if spec.get("python"):
        python = spec["python"]
    if script.endswith(".py"):
        uv = shutil.which("uv")
        if uv:
            # uv honours PEP 723 inline dependencies; --no-project keeps it from syncing a
            # pyproject it finds in the project tree.
            return [uv, "run", "--no-project", "--python", python, script] + argv[1:]
        return [python, script] + argv[1:]
    if script.endswith(".sh") and not os.access(path, os.X_OK):
        return ["bash", script] + argv[1:]
    return [os.path.abspath(path)] + argv[1:]


def container_name(spec: dict) -> str:
    return "runctl-" + re.sub(r"[^A-Za-z0-9_.-]", "-", spec["job_id"])


def host_has_gpus() -> bool:
    """True when nvidia-smi lists at least one GPU on this host."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        done = subprocess.run(["nvidia-smi", "-L"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and b"GPU" in done.stdout


def docker_argv(
    spec: dict, workdir: str, env: dict, resume: str | None, node_env: dict | None = None
) -> list:
    """`docker run` for the job: project at /workspace, job dirs mounted at their host paths.

    Environment values travel as ``-e NAME`` (docker reads them from its own environment),
    so they never show on a command line. ``--init`` makes SIGTERM from the sig-proxy reach
    the script, so a cancel behaves as for a bare job; the exit code is the container's.
    """
    opts = spec["docker"]
    argv = ["docker", "run", "--rm", "--init", "--name", container_name(spec)]
    if opts.get("network"):
        argv += ["--network", str(opts["network"])]
    gpus = opts.get("gpus", "auto")
    if gpus == "all" or (gpus == "auto" and host_has_gpus()):
        argv += ["--gpus", "all"]
    if os.getuid() != 0:  # files in the mounted dirs belong to the job's user, not root
        argv += ["--user", f"{os.getuid()}:{os.getgid()}", "-e", "HOME=/tmp"]
    argv += ["-v", workdir + ":/workspace", "-w", "/workspace"]
    mounts = [spec.get("checkpoint_dir"), spec.get("output_dir"), env.get("RUNCTL_DATA_DIR")]
    if resume:  # a --resume-from outside the checkpoint dir
        mounts.append(os.path.dirname(os.path.abspath(resume)))
    seen = set()
    for path in mounts:
        if path and os.path.isdir(path) and path not in seen:
            seen.add(path)
            argv += ["-v", f"{path}:{path}"]
    job_vars = {k for k in env if k.startswith("RUNCTL_") and k != "RUNCTL_HOME"}
    secret_names = set(spec.get("secrets") or [])
    names = sorted(set(spec.get("env") or {}) | secret_names | set(node_env or {}) | job_vars)
    for name in names + ["PYTHONUNBUFFERED", *PROGRESS_ENV]:
        argv += ["-e", name]
    argv += [str(a) for a in opts.get("args") or []]
    argv.append(str(opts["image"]))
    command = [str(a) for a in spec["argv"]]
    if spec.get("kind") == "script":
        script = command[0]
        path = os.path.join(workdir, script)
        if not os.path.isabs(script):
            # "./" so that a file named "-c<code>#.py" is read as a path, never as an option
            # of python or bash (issue 17; as in build_argv).
            script = "./" + script
        if script.endswith(".py"):
            command = [str(opts.get("python") or "python3"), script] + command[1:]
        elif script.endswith(".sh") and not os.access(path, os.X_OK):
            command = ["bash", script] + command[1:]
        else:
            command = [script] + command[1:]
    return argv + command


def remove_container(spec: dict, env: dict) -> None:
    """Force-remove the job's container (a no-op when `docker run --rm` already did)."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            ["docker", "rm", "-f", container_name(spec)],
            env=env,  # the job's DOCKER_HOST, if it set one
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
        )


def supervise(job_dir: str, supervisor: Supervisor | None = None) -> int:
    supervisor = supervisor or Supervisor(job_dir)
    try:
        return _supervise(supervisor)
    finally:
        # A job requeued by Slurm runs `supervise` again and needs its secrets then.
        if not (
            supervisor.state.get("state") == "preempted"
            and supervisor.spec.get("launcher") == "slurm"
        ):
            drop_secrets(job_dir)


def _supervise(supervisor: Supervisor) -> int:
    try:
        return supervisor.run()
    except Exception as exc:  # noqa: BLE001 - a bug must end as a failed job, not "lost"
        import traceback

        traceback.print_exc()
        sys.stderr.flush()
        supervisor.note(f"agent error: {type(exc).__name__}: {exc}")
        with open(supervisor.paths["exit_code"], "w") as fh:
            fh.write("1")
        supervisor.set_state(state="failed", exit_code=1, ended_at=_now(), error=str(exc))
        return 1


def _guard_group(pgid: int, log_path: str) -> tuple | None:
    """Fork a tiny guard that stops the job's process group if this agent dies first.

    The agent holds the write end of a pipe the guard blocks on. A normal end writes one byte;
    EOF without it means the agent was killed (OOM killer, kill -9), and a job left running
    would be unsupervised: no heartbeat, no cancel, no exit code. Returns (pid, fd) or None.
    """
    try:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
    except OSError:
        return None
    if pid == 0:  # the guard: only os-level calls, it may have been forked beside threads
        try:
            os.closerange(3, read_fd)
            os.closerange(read_fd + 1, 65536)
            _guard_wait(read_fd, pgid, log_path)
        finally:
            os._exit(0)
    os.close(read_fd)
    return (pid, write_fd)


def _guard_wait(read_fd: int, pgid: int, log_path: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    if os.read(read_fd, 1) != b"":
        return  # the agent saw its job end
    _killpg(pgid, signal.SIGTERM)  # EOF: the agent is gone
    for _ in range(20):  # a moment to save a checkpoint, then SIGKILL
        time.sleep(0.1)
        try:
            os.killpg(pgid, 0)
        except OSError:
            break
    _killpg(pgid, signal.SIGKILL)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, b"[runctl] the agent supervising this job died; job stopped\n")


def _release_guard(guard: tuple | None) -> None:
    if guard is None:
        return
    pid, fd = guard
    with contextlib.suppress(OSError):
        os.write(fd, b"x")
        os.close(fd)
        os.waitpid(pid, 0)


def _killpg(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


# ---------------------------------------------------------------- queries


def _job_status(job_dir: str) -> dict:
    paths = _job_paths(job_dir)
    state = _read_json(paths["state.json"])
    if not state:
        return {"state": "unknown"}
    status = dict(state)
    try:
        status["log_bytes"] = os.path.getsize(paths["log"])
    except OSError:
        status["log_bytes"] = 0
    try:
        status["heartbeat_age_s"] = round(time.time() - os.path.getmtime(paths["heartbeat"]), 1)
    except OSError:
        status["heartbeat_age_s"] = None
    slurm = _read_json(os.path.join(job_dir, "slurm.json"))
    if slurm.get("slurm_job_id"):
        return _slurm_status(job_dir, status, slurm)
    if status.get("state") not in FINAL:
        agent_pid = status.get("agent_pid")
        if status.get("state") == "pending":
            pass  # prepared for a batch scheduler that has not been told yet (no slurm.json)
        elif status.get("state") == "starting":
            # Between fork and the agent's first write; give it a moment before calling it lost.
            created = os.path.getmtime(paths["state.json"])
            if time.time() - created > 30:
                status["state"] = "lost"
        elif not _alive(agent_pid):
            # Re-read: the agent may have finished between the two reads.
            state = _read_json(paths["state.json"])
            if state.get("state") in FINAL:
                return _job_status(job_dir)
            status["state"] = "lost"
    if status.get("state") in FINAL or status.get("state") == "lost":
        # The supervisor deletes them at the end; this covers one that died (kill -9, reboot).
        drop_secrets(job_dir)
    return status


# ---------------------------------------------------------------- slurm

# Slurm's job states -> runctl's, used while the agent is not (or no longer) running the job.
SLURM_STATES = {
    "PENDING": "pending", "CONFIGURING": "pending", "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending", "REQUEUE_FED": "pending", "RESIZING": "pending",
    "SUSPENDED": "pending", "RUNNING": "running", "COMPLETING": "running",
    "STAGE_OUT": "running", "SIGNALING": "running", "COMPLETED": "succeeded",
    "CANCELLED": "cancelled", "PREEMPTED": "preempted", "TIMEOUT": "failed",
    "NODE_FAIL": "failed", "FAILED": "failed", "BOOT_FAIL": "failed", "DEADLINE": "failed",
    "OUT_OF_MEMORY": "failed", "SPECIAL_EXIT": "failed", "REVOKED": "failed",
}  # fmt: skip


def _slurm_cmd(argv: list, conf: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, SLURM_CONF=conf) if conf else None  # slurm.conf_file, if set
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=20, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(argv, 127, "", str(exc))


def _scontrol_job(slurm_id: str, conf: str | None) -> dict:
    """``scontrol show job -o ID`` as a dict; {} once Slurm has forgotten the job."""
    done = _slurm_cmd(["scontrol", "show", "job", "-o", slurm_id], conf)
    fields = {}
    if done.returncode == 0:
        for word in done.stdout.split():
            key, sep, value = word.partition("=")
            if sep and key not in fields:
                fields[key] = value
    return fields


def _slurm_status(job_dir: str, status: dict, slurm: dict) -> dict:
    """Merge the agent's view with Slurm's for a job submitted with sbatch.

    The agent's own files win while it runs or once it recorded an end; Slurm's state covers
    the rest: queued (pending), requeued after a preemption, or killed without a word
    (TIMEOUT, NODE_FAIL, scancel of a queued job).
    """
    state = status.get("state")
    slurm_id = str(slurm["slurm_job_id"])
    status["slurm_job_id"] = slurm_id
    rate = _read_json(_job_paths(job_dir)["job.json"]).get("hourly_usd")
    if rate is not None:
        status["hourly_usd"] = rate  # slurm.hourly_usd_per_node x nodes
    if state in ("succeeded", "failed", "cancelled"):
        return _other_ranks(job_dir, status, slurm)
    beat = status.get("heartbeat_age_s")
    if state in ("setup", "running") and beat is not None and beat < 3 * HEARTBEAT_S:
        return status
    info = _scontrol_job(slurm_id, slurm.get("slurm_conf"))
    raw = info.get("JobState", "")
    mapped = SLURM_STATES.get(raw)
    if raw:
        restarts = int(info.get("Restarts") or 0)
        status.update(slurm_state=raw, slurm_reason=info.get("Reason"),
                      nodes=info.get("NodeList"), restarts=restarts)  # fmt: skip
    if mapped == "pending" or (mapped == "running" and state in ("pending", "preempted")):
        status["state"] = "pending"  # queued, or requeued and about to run again
    elif mapped == "running":
        pass  # the agent runs; its heartbeat is late but Slurm vouches for it
    elif mapped is not None:
        # Slurm ended the job but the agent recorded no end: it was killed (or never ran).
        again = _read_json(_job_paths(job_dir)["state.json"])
        if again.get("state") in FINAL:
            return _job_status(job_dir)
        if state == "preempted" or mapped != "succeeded":
            status["state"] = state if state == "preempted" else mapped
        else:
            status["state"] = "lost"
    elif state != "preempted":
        status["state"] = "lost"  # Slurm no longer knows the job and the agent is silent
    return status


def _other_ranks(job_dir: str, status: dict, slurm: dict) -> dict:
    """A multi-node job ends when every rank has; it fails if any rank failed."""
    nodes = int((slurm.get("options") or {}).get("nodes") or 1)
    for rank in range(1, nodes):
        other = _read_json(os.path.join(job_dir, "nodes", str(rank), "state.json"))
        if other.get("state") not in FINAL:
            info = _scontrol_job(str(slurm["slurm_job_id"]), slurm.get("slurm_conf"))
            if SLURM_STATES.get(info.get("JobState", "")) in ("pending", "running"):
                return dict(status, state="running", waiting_for_rank=rank)
        elif other["state"] != "succeeded" and status.get("state") == "succeeded":
            status = dict(status, state=other["state"], exit_code=other.get("exit_code"))
            status["failed_rank"] = rank
    return status


def _slurm_cancel(job_dir: str, slurm: dict, status: dict, grace: float) -> dict:
    """scancel: a running agent gets SIGTERM (it forwards it and records "cancelled")."""
    slurm_id, conf = str(slurm["slurm_job_id"]), slurm.get("slurm_conf")
    if status.get("state") in ("setup", "running"):
        _slurm_cmd(["scancel", "--signal=TERM", "--full", slurm_id], conf)
        deadline = time.time() + grace + 15
        while time.time() < deadline and _job_status(job_dir)["state"] not in FINAL:
            time.sleep(0.2)
    _slurm_cmd(["scancel", slurm_id], conf)  # the queued job, or one that ignored the signal
    path = _job_paths(job_dir)["state.json"]
    state = _read_json(path)
    if state.get("state") not in FINAL or state.get("state") == "preempted":
        state.update(state="cancelled", exit_code=state.get("exit_code") or 143, ended_at=_now())
        _write_json(path, state)
    return _job_status(job_dir)


def _node_env() -> dict:
    """Rank, node list and rendezvous for a multi-node job, from Slurm's environment."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return {}
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or 1)
    rank = int(os.environ.get("SLURM_NODEID") or 0)
    nodelist = os.environ.get("SLURM_JOB_NODELIST") or ""
    done = _slurm_cmd(["scontrol", "show", "hostnames", nodelist])
    hosts = done.stdout.split() if done.returncode == 0 else []
    addrs = {}  # NodeName -> NodeAddr: what Slurm itself uses to reach the node
    shown = _slurm_cmd(["scontrol", "show", "node", "-o", nodelist])
    for line in shown.stdout.splitlines() if shown.returncode == 0 else []:
        fields = dict(w.split("=", 1) for w in line.split() if "=" in w)
        addrs[fields.get("NodeName")] = fields.get("NodeAddr")
    ips = []
    for host in hosts or [socket.gethostname()]:
        addr = addrs.get(host) or host
        try:
            ips.append(socket.gethostbyname(addr))
        except OSError:
            ips.append(addr)
    port = 20000 + int(re.sub(r"\D", "", job_id) or 0) % 20000
    return {
        "RUNCTL_NODE_RANK": str(rank), "RUNCTL_NUM_NODES": str(nodes),
        "RUNCTL_NODE_IPS": ",".join(ips), "MASTER_ADDR": ips[0], "MASTER_PORT": str(port),
        "NODE_RANK": str(rank), "NNODES": str(nodes), "RANK": str(rank),
        "WORLD_SIZE": str(nodes),
        # torchrun's PET_<OPTION> defaults: a bare `torchrun script.py` joins the other nodes
        "PET_NNODES": str(nodes), "PET_NODE_RANK": str(rank), "PET_MASTER_ADDR": ips[0],
        "PET_MASTER_PORT": str(port),
    }  # fmt: skip


def cmd_supervise(args: argparse.Namespace) -> int:
    """Run a job prepared by ``start --no-launch`` in the foreground (a Slurm batch step).

    Rank 0 uses the job dir itself; other nodes get ``nodes/<rank>/`` with their own log and
    state. A requeued job runs this again: the log is appended to, and RUNCTL_RESUME_FROM
    points at the newest checkpoint the earlier run left.
    """
    job_dir = os.path.abspath(os.path.expanduser(args.job_dir))
    node_env = _node_env()
    rank = int(node_env.get("RUNCTL_NODE_RANK", "0"))
    if rank > 0:
        node_dir = os.path.join(job_dir, "nodes", str(rank))
        os.makedirs(node_dir, exist_ok=True)
        shutil.copy(os.path.join(job_dir, "job.json"), os.path.join(node_dir, "job.json"))
        if os.path.exists(os.path.join(job_dir, SECRETS_FILE)):  # copy keeps the 0600 mode
            shutil.copy(os.path.join(job_dir, SECRETS_FILE), os.path.join(node_dir, SECRETS_FILE))
        job_dir = node_dir
    with contextlib.suppress(OSError):
        os.unlink(_job_paths(job_dir)["exit_code"])
    restarts = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    supervisor = Supervisor(job_dir)
    supervisor.node_env = node_env
    if restarts:
        supervisor.note(f"restart {restarts}: requeued by Slurm, running again")
    supervisor.set_state(restarts=restarts, node=socket.gethostname(), rank=rank)
    return supervise(job_dir, supervisor)


def cmd_remove(args: argparse.Namespace) -> int:
    """Delete finished jobs' directories (`runctl jobs prune`); never a running job's."""
    jobs_root = os.path.join(os.path.abspath(os.path.expanduser(args.base)), "jobs")
    answer = {}
    for job_id in args.job_ids:
        job_dir = os.path.join(jobs_root, job_id)
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$", job_id):
            answer[job_id] = "bad id"
        elif not os.path.isdir(job_dir) or os.path.islink(job_dir):
            answer[job_id] = "missing"
        elif _job_status(job_dir)["state"] not in FINAL + ("lost", "unknown"):
            answer[job_id] = "running"
        else:
            shutil.rmtree(job_dir, ignore_errors=True)
            answer[job_id] = "removed" if not os.path.exists(job_dir) else "failed"
    print(json.dumps(answer))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    """Every job dir under B with its spec and status (`runctl doctor --fix` rebuilds the
    CLI's job index from these after the local state database was lost)."""
    jobs_root = os.path.join(os.path.expanduser(args.base), "jobs")
    out = {}
    for job_id in sorted(os.listdir(jobs_root)) if os.path.isdir(jobs_root) else []:
        job_dir = os.path.join(jobs_root, job_id)
        if os.path.isdir(job_dir):
            spec = _read_json(os.path.join(job_dir, "job.json"))
            out[job_id] = {"job_dir": job_dir, "spec": spec, "status": _job_status(job_dir)}
    print(json.dumps(out))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    touch_controller(os.path.expanduser(args.base))
    jobs_root = os.path.join(os.path.expanduser(args.base), "jobs")
    ids = args.job_ids or (sorted(os.listdir(jobs_root)) if os.path.isdir(jobs_root) else [])
    out = {}
    for job_id in ids:
        job_dir = os.path.join(jobs_root, job_id)
        out[job_id] = _job_status(job_dir) if os.path.isdir(job_dir) else {"state": "missing"}
        if getattr(args, "last_lines", 0) > 0 and out[job_id]["state"] != "missing":
            # The dashboard's last-line column comes with the state: one call per host.
            out[job_id]["last_lines"] = _tail_text(job_dir, args.last_lines)
    print(json.dumps(out))
    return 0


def _tail_text(job_dir: str, count: int) -> str:
    """The last ``count`` lines of the job's log, each cut to its last progress state."""
    try:
        with open(_job_paths(job_dir)["log"], "rb") as fh:
            start = _offset_of_last_lines(fh, count)
            window = _last_states(fh, start, fh.seek(0, os.SEEK_END))
    except OSError:
        return ""
    return window.decode("utf-8", "replace")


def cmd_tail(args: argparse.Namespace) -> int:
    job_dir = os.path.expanduser(args.job_dir)
    paths = _job_paths(job_dir)
    offset = args.offset
    base = _read_json(paths["job.json"]).get("base")
    touched = touch_controller(base)
    out = sys.stdout.buffer
    try:
        fh = open(paths["log"], "rb")  # noqa: SIM115 - closed by the `with fh` below
    except OSError:
        sys.stderr.write("RUNCTL-END {}\n".format(json.dumps({"state": "missing"})))
        return 0
    with fh:
        if args.last_lines:
            start = _offset_of_last_lines(fh, args.last_lines)
            offset = fh.seek(0, os.SEEK_END)
            window = _last_states(fh, start, offset)
            # The caller adds what it received to this, which makes the file offset where the
            # stream goes on: the lines printed stand for all of [start, offset).
            sys.stderr.write(f"RUNCTL-OFFSET {offset - len(window)}\n")
            out.write(window)
            out.flush()
        fh.seek(offset)
        misses = 0
        waiter = _DirWaiter([job_dir, os.path.dirname(paths["log"])]) if args.follow else None
        delay = TAIL_FAST_S
        while True:
            chunk = fh.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                delay = TAIL_FAST_S  # output again: poll fast again
                continue
            if waiter is None:
                break
            status = _job_status(job_dir)
            if status["state"] in ("lost", "unknown"):
                misses += 1  # a transient read must not end the stream; a real loss persists
            if time.time() - touched >= HEARTBEAT_S:  # a follower is a live controller
                touched = touch_controller(base)
            if status["state"] in FINAL or misses >= 3:
                # Drain whatever landed between the last read and the state check.
                while fh.tell() < os.path.getsize(paths["log"]):
                    chunk = fh.read(65536)
                    if not chunk:
                        break
                    out.write(chunk)
                out.flush()
                break
            waiter.wait(delay)
            if not waiter.fd_ok:  # no inotify: back off while idle, up to TAIL_IDLE_S
                delay = min(delay * 1.5, TAIL_IDLE_S)
        if waiter is not None:
            waiter.close()
    sys.stderr.write(f"RUNCTL-END {json.dumps(_job_status(job_dir))}\n")
    return 0


TAIL_FAST_S = 0.1  # `tail --follow`: poll interval while the log grows
TAIL_IDLE_S = 1.0  # ... and the longest one while it is idle (state checks, heartbeat)


class _DirWaiter:
    """Sleeps until a file in the watched directories changes (Linux inotify through ctypes)
    or ``TAIL_IDLE_S`` passes, so an idle ``logs -f`` costs ~nothing instead of 10 polls a
    second. Without inotify (another OS, a seccomp'd container) ``wait`` sleeps ``timeout``
    (the caller backs that off while the log is idle)."""

    _MASK = 0x2 | 0x8 | 0x80 | 0x100  # IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE

    def __init__(self, directories: list) -> None:
        self.fd = -1
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                return
            for directory in set(directories):
                if libc.inotify_add_watch(fd, os.fsencode(directory or "."), self._MASK) < 0:
                    os.close(fd)
                    return
            self.fd = fd
        except (ImportError, OSError, AttributeError):
            return

    @property
    def fd_ok(self) -> bool:
        return self.fd >= 0

    def wait(self, timeout: float) -> None:
        if self.fd < 0:
            time.sleep(timeout)
            return
        import select

        if select.select([self.fd], [], [], TAIL_IDLE_S)[0]:
            with contextlib.suppress(OSError):
                os.read(self.fd, 65536)  # drain the events: only "something changed" matters
            time.sleep(TAIL_FAST_S / 2)  # let a burst of writes land: one read, not hundreds

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _last_state(line: bytes) -> bytes:
    """``line`` from its last carriage return on (CRs that end it do not count): a progress
    bar redraws its line with CRs, and a terminal shows only the last state."""
    return line[line.rstrip(b"\r").rfind(b"\r") + 1 :]


def _last_states(fh: object, start: int, end: int) -> bytes:
    """Bytes [start, end) of the open log with each line cut to its last state (a tqdm bar
    is one "line" of thousands of states). Only the newest state is kept while reading."""
    fh.seek(start)  # type: ignore[attr-defined]
    lines: list = []
    line, left = b"", end - start
    while left > 0:
        block = fh.read(min(65536, left))  # type: ignore[attr-defined]
        if not block:
            break
        left -= len(block)
        parts = (line + block).split(b"\n")
        line = _last_state(parts.pop())
        lines.extend(_last_state(part) + b"\n" for part in parts)
    return b"".join(lines) + line


def _offset_of_last_lines(fh: object, count: int) -> int:
    """Byte offset where the last ``count`` lines of the open file start."""
    fh.seek(0, os.SEEK_END)  # type: ignore[attr-defined]
    end = pos = fh.tell()  # type: ignore[attr-defined]
    found = 0
    while pos > 0:
        step = min(65536, pos)
        pos -= step
        fh.seek(pos)  # type: ignore[attr-defined]
        block = fh.read(step)  # type: ignore[attr-defined]
        # A trailing newline ends the last line; it does not start another one.
        if pos + step == end and block.endswith(b"\n"):
            block = block[:-1]
        idx = len(block)
        while True:
            idx = block.rfind(b"\n", 0, idx)
            if idx < 0:
                break
            found += 1
            if found == count:
                return pos + idx + 1
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    job_dir = os.path.expanduser(args.job_dir)
    touch_controller(_read_json(_job_paths(job_dir)["job.json"]).get("base"))
    deadline = time.time() + args.timeout if args.timeout else None
    while True:
        status = _job_status(job_dir)
        if status["state"] in FINAL or status["state"] in ("lost", "unknown"):
            break
        if deadline is not None and time.time() >= deadline:
            break
        time.sleep(0.2)
    print(json.dumps(status))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    job_dir = os.path.expanduser(args.job_dir)
    if not os.path.isdir(job_dir):  # never started here, or its directory was removed
        print(json.dumps({"state": "missing"}))
        return 0
    paths = _job_paths(job_dir)
    status = _job_status(job_dir)
    if status["state"] in FINAL:
        print(json.dumps(status))
        return 0
    grace = args.grace
    agent_pid = status.get("agent_pid")
    _write_json(os.path.join(job_dir, "cancel.json"), {"grace_s": grace, "at": _now()})
    slurm = _read_json(os.path.join(job_dir, "slurm.json"))
    if slurm.get("slurm_job_id"):
        print(json.dumps(_slurm_cancel(job_dir, slurm, status, grace)))
        return 0
    if status["state"] != "lost" and agent_pid and _alive(agent_pid):
        os.kill(int(agent_pid), signal.SIGTERM)  # the agent forwards it and escalates after grace
        deadline = time.time() + grace + 10
        while time.time() < deadline and _job_status(job_dir)["state"] not in FINAL:
            time.sleep(0.1)
    else:
        # The agent died: act on the job's process group ourselves.
        try:
            with open(paths["pid"]) as fh:
                pid = int(fh.read().strip())
        except (OSError, ValueError):
            pid = 0
        if pid:
            _killpg(pid, signal.SIGTERM)
            deadline = time.time() + grace
            while time.time() < deadline and _alive(pid):
                time.sleep(0.1)
            _killpg(pid, signal.SIGKILL)
        state = _read_json(paths["state.json"])
        state.update(state="cancelled", exit_code=state.get("exit_code", 143), ended_at=_now())
        _write_json(paths["state.json"], state)
    print(json.dumps(_job_status(job_dir)))
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    root = os.path.realpath(os.path.expanduser(args.root))
    target = os.path.realpath(os.path.join(root, args.path))
    if target != root and not target.startswith(root + os.sep):
        print(json.dumps({"error": "outside", "root": root}))
        return 1
    if os.path.basename(target) == SECRETS_FILE and os.path.dirname(target) == root:
        # A running job's secrets never leave the host, not even through `get`.
        print(json.dumps({"error": "private", "path": target}))
        return 1
    if not os.path.exists(target):
        print(json.dumps({"error": "missing", "path": target}))
        return 1
    exclude = [SECRETS_FILE] if target == root else []
    print(json.dumps({"path": target, "is_dir": os.path.isdir(target), "exclude": exclude}))
    return 0


def _inside(root: str, rel: str) -> str | None:
    """Absolute path of ``rel`` under ``root``, or None if it would leave ``root``."""
    if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
        return None
    path = os.path.normpath(os.path.join(root, rel))
    return path if path.startswith(root + os.sep) else None


def _manifest_files(code_dir: str) -> set | None:
    """Paths runctl synced into ``code_dir`` (its recorded manifest); None when unreadable."""
    try:
        with open(os.path.join(code_dir, ".runctl", "manifest.json")) as fh:
            return set(json.load(fh)["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cmd_apply_manifest(args: argparse.Namespace) -> int:
    code_dir = os.path.realpath(os.path.expanduser(args.code_dir))  # through `current`
    request = json.loads(sys.stdin.read())
    # Only files runctl itself synced here may go: whatever a job wrote into its working
    # directory is not in the manifest and is never deleted by a sync.
    synced = _manifest_files(code_dir) or set()
    deleted = 0
    for rel in request.get("delete", []):
        path = _inside(code_dir, rel) if rel in synced else None
        if path is None or os.path.islink(os.path.dirname(path)):
            continue
        try:
            os.unlink(path)
            deleted += 1
        except OSError:
            continue
        # Prune directories the deletion emptied, never climbing out of the code dir.
        parent = os.path.dirname(path)
        while parent != code_dir:
            try:
                os.rmdir(parent)
            except OSError:
                break
            parent = os.path.dirname(parent)
    meta = os.path.join(code_dir, ".runctl")
    os.makedirs(meta, exist_ok=True)
    with open(os.path.join(meta, "manifest.json.tmp"), "w") as fh:
        fh.write(request["manifest"])
    os.replace(os.path.join(meta, "manifest.json.tmp"), os.path.join(meta, "manifest.json"))
    with open(os.path.join(meta, "manifest.digest.tmp"), "w") as fh:
        fh.write(request["digest"])
    os.replace(os.path.join(meta, "manifest.digest.tmp"), os.path.join(meta, "manifest.digest"))
    print(json.dumps({"deleted": deleted}))
    return 0


def _live_workdirs(base: str) -> set:
    """Work directories of jobs on this host that are queued, starting or running."""
    jobs_root = os.path.join(base, "jobs")
    live = set()
    if os.path.isdir(jobs_root):
        for job_id in os.listdir(jobs_root):
            job_dir = os.path.join(jobs_root, job_id)
            # pending: queued in a batch scheduler, it will run in the version it recorded
            if _job_status(job_dir)["state"] in ("pending", "starting", "setup", "running"):
                live.add(_read_json(os.path.join(job_dir, "job.json")).get("workdir"))
    return live


def cmd_prepare_sync(args: argparse.Namespace) -> int:
    """Make ``<root>/current`` safe to sync into and print it with its manifest.

    ``current`` is a symlink to a version directory. If a live job runs in that version, a
    new version is made from it with hard links (cheap; rsync later replaces changed files
    by rename, never in place) and ``current`` is switched to it. Versions no live job uses
    are removed; files jobs wrote into a removed version are moved into those jobs' dirs
    first (see ``_retire_version``), so a sync never deletes a job's outputs.
    """
    base = os.path.abspath(os.path.expanduser(args.base))
    current = os.path.abspath(os.path.expanduser(args.code_dir))
    os.makedirs(os.path.dirname(current), exist_ok=True)
    # Real paths throughout: jobs record the real path of the version they run in.
    root = os.path.realpath(os.path.dirname(current))
    current = os.path.join(root, os.path.basename(current))
    live = _live_workdirs(base)
    if not os.path.isdir(current):
        version = os.path.join(root, "v1")
        os.makedirs(version, exist_ok=True)
        _point(current, "v1")
    real = os.path.realpath(current)
    if real in live:
        numbers = [int(n[1:]) for n in os.listdir(root) if re.match(r"^v\d+$", n)]
        name = f"v{max(numbers) + 1}"
        # Only the synced files: what the running job writes (./checkpoints) stays its own;
        # a hard link shared with the next job would let that job overwrite it in place.
        # (No manifest: nothing is linked, and the sync sends every file.)
        tracked = _manifest_files(real) or set()
        link_tree(real, os.path.join(root, name), skip_meta=False, only=tracked)
        _point(current, name)
        real = os.path.realpath(current)
    moved: dict = {}
    incoming = json.loads(sys.stdin.read() or "{}").get("files") if args.paths_on_stdin else None
    synced = _manifest_files(real)
    if incoming and synced is not None:
        # A file a finished job wrote here at a path about to be synced would be replaced:
        # it goes aside first, like the files of a removed version.
        clashes = [p for p in incoming if p not in synced and _inside(real, p)]
        clashes = [p for p in clashes if os.path.lexists(os.path.join(real, p))]
        moved.update(_move_aside(base, real, clashes)[0])
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if re.match(r"^v\d+$", name) and path != real and path not in live:
            moved.update(_retire_version(base, path))
    try:
        with open(os.path.join(real, ".runctl", "manifest.json")) as fh:
            manifest = fh.read()
    except OSError:
        manifest = None
    print(json.dumps({"dir": real, "manifest": manifest, "moved": moved}))
    return 0


WORKDIR_OUTPUTS = "workdir"  # in a job's dir: what it left in its removed code version
MOVED_RECORD = ".moved.json"  # in <code root>: {"vN": [dirs its job files were moved to]}
_DISPOSABLE_DIRS = ("__pycache__",)  # bytecode python writes beside imported modules


def _untracked(version: str) -> list:
    """Relative paths under ``version`` that no sync put there: what jobs wrote (files and
    symlinks; empty directories and bytecode caches do not count)."""
    synced = _manifest_files(version)
    found = []
    for top, dirs, names in os.walk(version):
        rel_top = os.path.relpath(top, version)
        if rel_top == ".":
            dirs[:] = [d for d in dirs if d != ".runctl"]
        dirs[:] = [d for d in dirs if d not in _DISPOSABLE_DIRS]
        # os.walk lists a symlink to a directory under dirs and does not enter it
        names = names + [d for d in dirs if os.path.islink(os.path.join(top, d))]
        for name in names:
            rel = os.path.normpath(os.path.join(rel_top, name))
            if synced is None or rel not in synced:  # no manifest: keep everything
                found.append(rel)
    return sorted(found)


def _owners(base: str, version: str) -> list:
    """(start time, job dir) of the jobs that ran in ``version``, oldest first."""
    jobs_root = os.path.join(base, "jobs")
    owners = []
    for job_id in os.listdir(jobs_root) if os.path.isdir(jobs_root) else ():
        spec_file = os.path.join(jobs_root, job_id, "job.json")
        if _read_json(spec_file).get("workdir") == version:
            owners.append((os.path.getmtime(spec_file), os.path.join(jobs_root, job_id)))
    return sorted(owners)


def _relocated(path: str) -> str:
    """``path``, or where it went if it lay in a code version removed since (the user saw the
    path in a job's status or log before a later sync moved that job's files aside)."""
    full = os.path.abspath(os.path.expanduser(path))
    if os.path.lexists(full):
        return path
    parts = full.split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        if re.match(r"^v\d+$", parts[i]):
            record = _read_json(os.path.join(os.sep.join(parts[:i]), MOVED_RECORD))
            for dest_root in record.get(parts[i], ()):
                candidate = os.path.join(dest_root, *parts[i + 1 :])
                if os.path.lexists(candidate):
                    return candidate
    return path


def _retire_version(base: str, version: str) -> dict:
    """Remove a code version no job uses any more, after moving every file jobs wrote into
    it aside (``_move_aside``); returns {job_id: where its files went}."""
    moved, complete = _move_aside(base, version, _untracked(version))
    if complete:  # else keep the version rather than lose a file; retried next sync
        shutil.rmtree(version, ignore_errors=True)
    return moved


def _move_aside(base: str, version: str, rels: list) -> tuple:
    """Move files jobs wrote into ``version`` to ``<job dir>/workdir/<same relative path>``;
    return ({job_id: that dir}, whether all of them moved).

    A file goes to the newest job that had started when the file was last written (jobs that
    ran one after another in the same version each get their own files). With no job on
    record the files go to ``<code root>/orphaned-vN/``.
    """
    moved: dict = {}
    roots: set = set()
    owners = _owners(base, version)
    name_of_version = os.path.basename(version)
    complete = True
    for rel in rels:
        source = os.path.join(version, rel)
        try:
            written = os.lstat(source).st_mtime
        except OSError:
            continue
        if owners:
            started_before = [o for o in owners if o[0] <= written + 1.0]
            job_dir = (started_before or owners)[-1][1]
            dest_root = os.path.join(job_dir, WORKDIR_OUTPUTS)
        else:
            job_dir = ""
            dest_root = os.path.join(os.path.dirname(version), "orphaned-" + name_of_version)
        dest = os.path.join(dest_root, rel)
        if os.path.lexists(dest):
            dest = f"{dest}.{int(written)}"
        try:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.move(source, dest)
        except OSError:
            complete = False
            break
        if job_dir:
            moved[os.path.basename(job_dir)] = dest_root
        roots.add(dest_root)
    if roots:  # lets `--resume-from <old version>/checkpoints/...` find the file (_relocated)
        record_file = os.path.join(os.path.dirname(version), MOVED_RECORD)
        record = _read_json(record_file)
        record[name_of_version] = sorted(roots | set(record.get(name_of_version, ())))
        _write_json(record_file, record)
    for job_id, dest_root in moved.items():
        state_file = os.path.join(base, "jobs", job_id, "state.json")
        state = _read_json(state_file)
        if state and state.get("workdir_outputs") != dest_root:
            state["workdir_outputs"] = dest_root
            _write_json(state_file, state)
    return moved, complete


def _point(link: str, target: str) -> None:
    tmp = f"{link}.{os.getpid()}.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, link)


def link_tree(src: str, dst: str, skip_meta: bool = True, only: set | None = None) -> int:
    """Hard-link copy of ``src`` into ``dst`` (copy across filesystems); skips ``.runctl/``.

    rsync replaces changed files by rename, so a job's linked snapshot keeps the exact code it
    started with while later submits update the shared tree. With ``only`` (relative paths),
    just those files and ``.runctl/`` are linked.
    """
    count = 0
    os.makedirs(dst, exist_ok=True)
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        if rel == "." and skip_meta:
            dirs[:] = [d for d in dirs if d != ".runctl"]
        target_root = os.path.normpath(os.path.join(dst, rel))
        if only is not None and rel.split(os.sep)[0] != ".runctl":
            files = [n for n in files if os.path.normpath(os.path.join(rel, n)) in only]
        if files or only is None:
            os.makedirs(target_root, exist_ok=True)
        for name in files:
            source = os.path.join(root, name)
            target = os.path.join(target_root, name)
            try:
                os.link(source, target, follow_symlinks=False)
            except OSError:
                shutil.copy2(source, target, follow_symlinks=False)
            count += 1
    return count


def cmd_hash(args: argparse.Namespace) -> int:
    """sha256 of a file, or of every file under a directory (keys relative to it)."""
    root = os.path.expanduser(args.path)
    files = {}
    if os.path.isfile(root):
        targets = [("", root)]
    else:
        targets = []
        for top, _dirs, names in os.walk(root):
            for name in names:
                full = os.path.join(top, name)
                targets.append((os.path.relpath(full, root), full))
    for rel, full in targets:
        digest = hashlib.sha256()
        with open(full, "rb") as fh:
            block = fh.read(1 << 20)
            while block:
                digest.update(block)
                block = fh.read(1 << 20)
        files[rel] = digest.hexdigest()
    print(json.dumps(files))
    return 0


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """List checkpoints oldest first; with --keep N mark (and, without --dry-run, delete) those
    beyond the newest N complete ones; --only restricts deletion to names the CLI showed."""
    rows = list_checkpoints(args.dir)
    if args.keep is not None:
        doomed = plan_cleanup(rows, args.keep, tuple(args.named or ()))
        if args.only is not None:
            doomed = [r for r in doomed if r["name"] in args.only]
        writing = still_changing(doomed)
        for row in doomed:
            if row["path"] in writing:
                row["problem"] = "size changing: still being written"
                continue
            row["deleted"] = True
            if not args.dry_run:
                delete_checkpoint(row)
    print(json.dumps(rows))
    return 0


# ---------------------------------------------------------------- watchdog
#
# One daemon per base dir B (single instance: flock on B/watchdog.lock) enforces policies
# even with the laptop closed. Config in B/watchdog.json (written by `watchdog arm`):
#   check_s, spot {url, poll_s} | null, deadline_at, idle_timeout_s, idle_gpu_util_pct,
#   lost_controller_timeout_s, action (stop|terminate|none), recipe {argv} | {http} | null.
# A spot notice (IMDSv2) preempts the running jobs: preempt.json + SIGTERM; their agents end
# them as "preempted" after the grace period and the final checkpoint upload. A rebalance
# recommendation asks each job for an immediate upload (<job_dir>/sync-now). When a policy
# fires: B/watchdog-fired.json, running jobs cancelled gracefully, then the recipe (the host
# stops or deletes itself), retried until it succeeds. Notes go to B/watchdog.log.

WD_FILES = ("watchdog.json", "watchdog.lock", "watchdog.pid", "watchdog.log",
            "watchdog-fired.json", "watchdog-state.json", "spot-notice.json", "rebalance.json",
            "controller.heartbeat")  # fmt: skip
LIVE = ("starting", "setup", "running")
IMDS_TOKEN_TTL_S = 21600
FINAL_SYNC_RESERVE_S = 30.0  # of the ~2 min spot notice, kept for the final checkpoint upload
RECIPE_RETRY_MAX_S = 60.0


def _wd(base: str) -> dict:
    return {n: os.path.join(base, n) for n in WD_FILES}


def touch_controller(base: str | None) -> float:
    """Record contact from runctl (the lost-controller policy's clock); returns now."""
    now = time.time()
    if base and os.path.isfile(os.path.join(base, "watchdog.json")):
        path = os.path.join(base, "controller.heartbeat")
        with contextlib.suppress(OSError), open(path, "w") as fh:
            fh.write(_now())
    return now


def _epoch(text: object) -> float | None:
    try:
        return float(calendar.timegm(time.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


class Imds:
    """IMDSv2: a session token (PUT, TTL header), then GETs carrying it; 401 -> new token."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.token: str | None = None
        self.token_until = 0.0
        # Never through an http_proxy: the metadata service is link-local.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _token(self) -> str:
        if self.token is None or time.time() >= self.token_until:
            ttl = {"X-aws-ec2-metadata-token-ttl-seconds": str(IMDS_TOKEN_TTL_S)}
            req = urllib.request.Request(self.url + "/latest/api/token", method="PUT", headers=ttl)
            with self.opener.open(req, timeout=self.timeout_s) as resp:
                self.token = resp.read().decode().strip()
            self.token_until = time.time() + IMDS_TOKEN_TTL_S - 60
        return self.token

    def get(self, path: str) -> dict | None:
        """The JSON document at meta-data/``path``; None when there is none (404)."""
        for attempt in (0, 1):
            headers = {"X-aws-ec2-metadata-token": self._token()}
            req = urllib.request.Request(self.url + "/latest/meta-data/" + path, headers=headers)
            try:
                with self.opener.open(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read() or b"{}")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code != 401 or attempt:
                    raise
                self.token = None  # expired: fetch a new one and ask again
        return None


def gpu_utilization_pct() -> list | None:
    """Utilisation of every GPU (nvidia-smi), or None when it cannot be read."""
    argv = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    values = []
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        with contextlib.suppress(ValueError):
            values.append(float(line.strip().rstrip("%").strip()))
    return values or None


def live_jobs(base: str) -> list:
    """(job_dir, status) of every job on this host that is starting, in setup or running."""
    root = os.path.join(base, "jobs")
    found = []
    for job_id in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        status = _job_status(os.path.join(root, job_id))
        if status["state"] in LIVE:
            found.append((os.path.join(root, job_id), status))
    return found


def signal_jobs(base: str, request_file: str, request: dict, grace_cap_s: float | None) -> list:
    """Ask every live job to stop (``request_file`` says why), wait until they have ended."""
    jobs = live_jobs(base)
    longest = 0.0
    for job_dir, status in jobs:
        grace = float(_read_json(_job_paths(job_dir)["job.json"]).get("grace_s") or 10.0)
        if grace_cap_s is not None:
            grace = max(min(grace, grace_cap_s), 1.0)
        longest = max(longest, grace)
        _write_json(os.path.join(job_dir, request_file), dict(request, grace_s=grace, at=_now()))
        if _alive(status.get("agent_pid")):
            os.kill(int(status["agent_pid"]), signal.SIGTERM)
    deadline = time.time() + longest + 15  # grace, then SIGKILL, then the final upload
    while time.time() < deadline and any(
        _job_status(d)["state"] not in FINAL + ("lost",) for d, _ in jobs
    ):
        time.sleep(0.2)
    return [os.path.basename(d) for d, _ in jobs]


class Watchdog:
    """The daemon loop: spot notices, rebalance, and the policies of B/watchdog.json."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.files = _wd(base)
        self.imds: Imds | None = None
        self.spot_at = 0.0
        self.spot_error = ""
        self.idle_since: float | None = None

    def note(self, text: str) -> None:
        with open(self.files["watchdog.log"], "a") as fh:
            fh.write(f"{_now()} {text}\n")

    def run(self, ready_fd: int | None = None) -> int:
        lock = os.open(self.files["watchdog.lock"], os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another daemon already watches this base
            if ready_fd is not None:
                os.close(ready_fd)
            return 0
        with open(self.files["watchdog.pid"], "w") as fh:
            fh.write(str(os.getpid()))
        if ready_fd is not None:
            os.write(ready_fd, str(os.getpid()).encode())
            os.close(ready_fd)
        self.note(f"watchdog started (pid {os.getpid()})")
        while True:
            cfg = _read_json(self.files["watchdog.json"])
            if not cfg.get("armed"):
                self.note("watchdog disarmed; exiting")
                return 0
            if self.check(cfg, time.time()):
                self.note("the host is stopping or going away; watchdog done")
                return 0
            state = {"pid": os.getpid(), "last_check_at": _now(), "idle_since": self.idle_since}
            _write_json(self.files["watchdog-state.json"], state)
            poll = float((cfg.get("spot") or {}).get("poll_s") or 5.0)
            time.sleep(max(0.05, min(float(cfg.get("check_s") or 5.0), poll)))

    def check(self, cfg: dict, now: float) -> bool:
        """One round; True once the action's recipe ran (nothing is left to watch)."""
        spot = cfg.get("spot")
        if spot and spot.get("url") and now >= self.spot_at:
            self.spot_at = now + float(spot.get("poll_s") or 5.0)
            self.check_spot(spot["url"])
        if os.path.exists(self.files["watchdog-fired.json"]):
            return False
        reason = self.due(cfg, now)
        return self.fire(cfg, reason) if reason else False

    def check_spot(self, url: str) -> None:
        if self.imds is None or self.imds.url != url.rstrip("/"):
            self.imds = Imds(url)
        try:
            notice = self.imds.get("spot/instance-action")
            rebalance = self.imds.get("events/recommendations/rebalance")
        except (OSError, ValueError) as exc:  # URLError, HTTPError, timeouts, bad JSON
            if str(exc) != self.spot_error:  # say it once, not every poll
                self.note(f"spot notices unreadable at {url}: {exc}")
            self.spot_error = str(exc)
            return
        self.spot_error = ""
        if rebalance and _read_json(self.files["rebalance.json"]).get("time") != rebalance.get(
            "noticeTime"
        ):
            _write_json(self.files["rebalance.json"],
                        {"time": rebalance.get("noticeTime"), "seen_at": _now()})  # fmt: skip
            jobs = live_jobs(self.base)
            for job_dir, _status in jobs:
                open(os.path.join(job_dir, "sync-now"), "w").close()
            self.note(f"rebalance recommendation: checkpoint upload asked of {len(jobs)} job(s)")
        if notice and not os.path.exists(self.files["spot-notice.json"]):
            record = {
                "action": notice.get("action"),
                "time": notice.get("time"),
                "seen_at": _now(),
            }
            _write_json(self.files["spot-notice.json"], record)
            self.note("spot interruption notice: {action} at {time}".format(**record))
            until = _epoch(notice.get("time"))
            cap = None if until is None else until - time.time() - FINAL_SYNC_RESERVE_S
            request = {"reason": "spot interruption notice", "action": record["action"],
                       "time": record["time"]}  # fmt: skip
            ended = signal_jobs(self.base, "preempt.json", request, cap)
            self.note(f"preempted job(s): {', '.join(ended) or 'none'}")

    def due(self, cfg: dict, now: float) -> str | None:
        """The policy that fires now, if any."""
        if cfg.get("deadline_at") and now >= float(cfg["deadline_at"]):
            return "max-duration"
        lost_s = cfg.get("lost_controller_timeout_s")
        if lost_s:
            try:
                last = os.path.getmtime(self.files["controller.heartbeat"])
            except OSError:
                last = 0.0
            if now - max(last, float(cfg.get("armed_at") or now)) >= float(lost_s):
                return "lost-controller"
        idle_s = cfg.get("idle_timeout_s")
        if idle_s:
            idle = not live_jobs(self.base)
            pct = cfg.get("idle_gpu_util_pct")
            if not idle and pct is not None:
                utils = gpu_utilization_pct()
                idle = utils is not None and all(u < float(pct) for u in utils)
            self.idle_since = (self.idle_since or now) if idle else None
            if self.idle_since is not None and now - self.idle_since >= float(idle_s):
                return "idle"
        return None

    def fire(self, cfg: dict, reason: str) -> bool:
        action = cfg.get("action") or "none"
        record = {"reason": reason, "action": action, "at": _now()}
        _write_json(self.files["watchdog-fired.json"], record)
        self.note(f"{reason} policy fired (action: {action}); cancelling running jobs")
        ended = signal_jobs(self.base, "cancel.json", {"reason": f"watchdog: {reason}"}, None)
        self.note(f"cancelled job(s): {', '.join(ended) or 'none'}")
        recipe = cfg.get("recipe")
        if action == "none" or not recipe:
            return False
        delay = float(cfg.get("check_s") or 5.0)
        while not self.run_recipe(recipe):
            if not _read_json(self.files["watchdog.json"]).get("armed"):
                return False  # disarmed while retrying
            time.sleep(delay)
            delay = min(delay * 2, RECIPE_RETRY_MAX_S)
        record["recipe_done_at"] = _now()
        _write_json(self.files["watchdog-fired.json"], record)
        return True

    def run_recipe(self, recipe: dict) -> bool:
        """Carry out the action once: a command, or an HTTP call to the provider's API."""
        if recipe.get("argv"):
            argv = [str(a) for a in recipe["argv"]]
            self.note("running: " + " ".join(argv))
            try:
                with open(self.files["watchdog.log"], "a") as log:
                    done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, timeout=120)  # fmt: skip
            except (OSError, subprocess.TimeoutExpired) as exc:
                self.note(f"cannot run {argv[0]}: {exc}")
                return False
            self.note(f"exit code {done.returncode}")
            return done.returncode == 0
        spec = recipe.get("http") or {}
        headers = dict(spec.get("headers") or {})
        if spec.get("token_file"):
            with open(os.path.join(self.base, spec["token_file"])) as fh:
                token = fh.read().strip()
            headers[spec.get("auth_header") or "Authorization"] = (
                spec.get("auth_prefix", "Bearer ") + token
            )
        data = None
        if spec.get("body") is not None:
            data = json.dumps(spec["body"]).encode()
            headers["Content-Type"] = "application/json"
        method = spec.get("method") or "POST"
        self.note(f"{method} {spec.get('url')}")  # never the headers: they carry the key
        req = urllib.request.Request(spec["url"], data=data, method=method, headers=headers)
        opener = urllib.request.build_opener()
        try:
            with opener.open(req, timeout=30) as resp:
                self.note(f"HTTP {resp.status}")
            return True
        except urllib.error.HTTPError as exc:
            self.note(f"HTTP {exc.code}")
            return exc.code == 404  # already gone
        except OSError as exc:
            self.note(f"request failed: {exc}")
            return False


def _wd_pid(base: str) -> int | None:
    """The pid of the daemon holding B/watchdog.lock, or None when none runs."""
    files = _wd(base)
    if not os.path.exists(files["watchdog.lock"]):
        return None  # never armed here
    fd = os.open(files["watchdog.lock"], os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            with open(files["watchdog.pid"]) as fh:
                return int(fh.read().strip() or 0) or None
        except (OSError, ValueError):
            return None
    finally:
        os.close(fd)  # also drops our lock, if we got it
    return None


def _spawn_watchdog(base: str) -> int | None:
    read_fd, write_fd = os.pipe()
    first = os.fork()
    if first == 0:  # as in cmd_start: a new session, adopted by init
        os.close(read_fd)
        os.setsid()
        if os.fork() != 0:
            os._exit(0)
        _daemonize(_wd(base)["watchdog.log"])
        os.chdir(base)
        code = 1
        try:
            code = Watchdog(base).run(ready_fd=write_fd)
        finally:
            os._exit(code)
    os.close(write_fd)
    pid = int(os.read(read_fd, 32) or b"0")
    os.close(read_fd)
    os.waitpid(first, 0)
    return pid or _wd_pid(base)  # 0: another arm started one first


def _write_secret(base: str, name: str, value: str) -> None:
    """B/secrets/<name>, readable by this user only (the recipe's API key)."""
    folder = os.path.join(base, "secrets")
    os.makedirs(folder, mode=0o700, exist_ok=True)
    os.chmod(folder, 0o700)
    path = os.path.join(folder, os.path.basename(name))
    fd = os.open(f"{path}.tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    os.replace(f"{path}.tmp", path)


def cmd_watchdog(args: argparse.Namespace) -> int:
    base = os.path.abspath(os.path.expanduser(args.base))
    files = _wd(base)
    if args.action in ("arm", "run"):
        os.makedirs(base, exist_ok=True)
    if args.action == "run":
        return Watchdog(base).run()
    cfg = _read_json(files["watchdog.json"])
    if args.action == "arm":
        request = json.loads(sys.stdin.read() or "{}")
        for name, value in (request.pop("secrets", None) or {}).items():
            _write_secret(base, name, value)
        now = time.time()
        if "max_duration_s" in request:
            seconds = request.pop("max_duration_s")
            request["deadline_at"] = now + float(seconds) if seconds is not None else None
        cfg.update(request, armed=True, armed_at=now)
        with contextlib.suppress(OSError):
            os.unlink(files["watchdog-fired.json"])  # a new arming starts afresh
        _write_json(files["watchdog.json"], cfg)
        touch_controller(base)
        pid = _wd_pid(base) or _spawn_watchdog(base)
        print(json.dumps({"armed": True, "pid": pid, "config": cfg}))
        return 0
    touch_controller(base)
    pid = _wd_pid(base)
    if args.action == "disarm":
        if cfg:
            cfg["armed"] = False
            _write_json(files["watchdog.json"], cfg)
        if pid:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.time() + 5
            while time.time() < deadline and _wd_pid(base):
                time.sleep(0.05)
        print(json.dumps({"armed": False, "pid": pid, "stopped": bool(pid)}))
        return 0
    answer = {"armed": bool(cfg.get("armed")), "pid": pid, "alive": pid is not None,
              "config": cfg or None}  # fmt: skip
    for key, name in (("fired", "watchdog-fired.json"), ("spot_notice", "spot-notice.json"),
                      ("rebalance", "rebalance.json")):  # fmt: skip
        answer[key] = _read_json(files[name]) or None
    answer["last_check_at"] = _read_json(files["watchdog-state.json"]).get("last_check_at")
    print(json.dumps(answer))
    return 0


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runctl-agent")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start")
    p.add_argument("--base", required=True)
    p.add_argument("--expect-manifest", default="")
    p.add_argument("--code-dir", default="")
    p.add_argument("--exclusive", action="store_true")
    p.add_argument("--exclusive-machine", action="store_true")
    p.add_argument("--no-launch", action="store_true")
    p = sub.add_parser("supervise")
    p.add_argument("--job-dir", required=True)
    p = sub.add_parser("status")
    p.add_argument("--base", required=True)
    p.add_argument("--last-lines", type=int, default=0)
    p.add_argument("job_ids", nargs="*")
    p = sub.add_parser("index")
    p.add_argument("--base", required=True)
    p = sub.add_parser("remove")
    p.add_argument("--base", required=True)
    p.add_argument("job_ids", nargs="*")
    p = sub.add_parser("tail")
    p.add_argument("--job-dir", required=True)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--follow", action="store_true")
    p.add_argument("--last-lines", type=int, default=0)
    p = sub.add_parser("wait")
    p.add_argument("--job-dir", required=True)
    p.add_argument("--timeout", type=float, default=0)
    p = sub.add_parser("cancel")
    p.add_argument("--job-dir", required=True)
    p.add_argument("--grace", type=float, default=10.0)
    p = sub.add_parser("resolve")
    p.add_argument("--root", required=True)
    p.add_argument("--path", required=True)
    p = sub.add_parser("prepare-sync")
    p.add_argument("--base", required=True)
    p.add_argument("--code-dir", required=True)
    p.add_argument("--paths-on-stdin", action="store_true")  # {"files": [paths to be synced]}
    p = sub.add_parser("apply-manifest")
    p.add_argument("--code-dir", required=True)
    p = sub.add_parser("hash")
    p.add_argument("--path", required=True)
    p = sub.add_parser("checkpoints")
    p.add_argument("--dir", required=True)
    p.add_argument("--keep", type=int, default=None)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--named", action="append")  # protected ones the user named
    p.add_argument("--only", action="append")
    p = sub.add_parser("watchdog")
    p.add_argument("action", choices=("arm", "status", "disarm", "run"))
    p.add_argument("--base", required=True)
    args = parser.parse_args(argv)
    # Everything runctl and its jobs write on the host is private to this user: job specs,
    # logs, secrets, checkpoints (docs/security.md).
    os.umask(0o077)
    if getattr(args, "base", None) and os.path.isdir(os.path.expanduser(args.base)):
        private_dir(os.path.abspath(os.path.expanduser(args.base)))
    handler = globals()["cmd_" + args.cmd.replace("-", "_")]
    try:
        return int(handler(args))
    except BrokenPipeError:  # the reader went away (ssh dropped); nothing to report to
        return 0


if __name__ == "__main__":
    sys.exit(main())
