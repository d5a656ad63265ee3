#!/usr/bin/env python3
"""runctl's on-host agent: starts a job detached, supervises it, and answers queries about it.

Shipped verbatim to every host (named by its content hash) and run with the host's own python3,
so it uses the standard library only and stays compatible with Python 3.8. Nothing imports it.

A job lives in ``<base>/jobs/<job_id>/``:

    job.json     the spec the CLI sent            log         stdout+stderr, append-only
    state.json   {"state", "pid", "agent_pid"...} exit_code   written once the job ends
    pid          the job's process (group leader)  heartbeat   rewritten every few seconds

Sub-commands (each prints JSON on stdout unless it streams a log):

    start   --base B [--expect-manifest D --code-dir C] [--exclusive]   (spec JSON on stdin)
    status  --base B [JOB_ID ...]
    tail    --job-dir J --offset N [--follow]      raw log bytes; final state on stderr
    wait    --job-dir J [--timeout S]
    cancel  --job-dir J [--grace S]
    resolve --root R --path P                      realpath of P, refusing escapes from R
    prepare-sync --base B --code-dir C             pick the code version to sync into
    apply-manifest --code-dir C                    delete removed files, record the manifest
    checkpoints --dir D [--keep N [--dry-run]]     list (and prune) checkpoints

Exit codes of ``start``: 0 started, 10 code dir does not match the expected manifest (the CLI
re-syncs and retries), 11 another job of the project is running (--exclusive), 12 bad spec.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HEARTBEAT_S = 5.0
FINAL = ("succeeded", "failed", "cancelled", "preempted")
CHECKPOINT_EXTS = (".pt", ".pth", ".ckpt", ".safetensors")
EXIT_STALE, EXIT_BUSY, EXIT_BAD_SPEC = 10, 11, 12
_STEP_RE = re.compile(r"(?:step|epoch|iter|ckpt|checkpoint)[_-]?(\d+)", re.IGNORECASE)
_NUM_RE = re.compile(r"(\d+)")


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


def checkpoint_key(path: str) -> tuple:
    """Order checkpoints: by the step/epoch number in the name, then by modification time."""
    name = os.path.basename(path)
    match = _STEP_RE.search(name) or _NUM_RE.search(name)
    step = int(match.group(1)) if match else -1
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        mtime = 0.0
    return (step, mtime, name)


def list_checkpoints(directory: str) -> list:
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            if name.endswith(CHECKPOINT_EXTS):
                found.append(os.path.join(root, name))
    return sorted(found, key=checkpoint_key)


# ---------------------------------------------------------------- start


def _job_paths(job_dir: str) -> dict:
    names = ("job.json", "state.json", "log", "pid", "exit_code", "heartbeat", "agent.log")
    return {n: os.path.join(job_dir, n) for n in names}


def _project_busy(base: str, project: str) -> str | None:
    jobs_root = os.path.join(base, "jobs")
    if not os.path.isdir(jobs_root):
        return None
    for job_id in sorted(os.listdir(jobs_root)):
        job_dir = os.path.join(jobs_root, job_id)
        spec = _read_json(os.path.join(job_dir, "job.json"))
        if spec.get("project") != project:
            continue
        if _job_status(job_dir)["state"] in ("setup", "running", "starting"):
            return job_id
    return None


def cmd_start(args: argparse.Namespace) -> int:
    try:
        spec = json.loads(sys.stdin.read())
        job_id = spec["job_id"]
    except (ValueError, KeyError) as exc:
        print(json.dumps({"error": f"bad spec: {exc}"}))
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
    if args.exclusive:
        busy = _project_busy(base, spec.get("project", ""))
        if busy:
            print(json.dumps({"error": "busy", "job_id": busy}))
            return EXIT_BUSY
    for key in ("workdir", "checkpoint_dir", "output_dir", "code_dir"):
        if spec.get(key):
            spec[key] = os.path.abspath(os.path.expanduser(spec[key]))
    if spec.get("code_dir"):
        # Run in the code version that is current now; later syncs while this job runs get
        # a new version (see cmd_prepare_sync), so the job's code never changes under it.
        spec["workdir"] = os.path.realpath(spec["code_dir"])
    job_dir = os.path.join(base, "jobs", job_id)
    os.makedirs(job_dir)  # fails loudly if the id was already used on this host
    paths = _job_paths(job_dir)
    for key in ("checkpoint_dir", "output_dir"):
        if spec.get(key):
            os.makedirs(spec[key], exist_ok=True)
    spec["base"] = base
    _write_json(paths["job.json"], spec)
    _write_json(paths["state.json"], {"state": "starting", "created_at": _now()})
    open(paths["log"], "ab").close()

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


# ---------------------------------------------------------------- supervise


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

    def note(self, text: str) -> None:
        os.write(self.log_fd, (f"[runctl] {text}\n").encode())

    def set_state(self, **changes: object) -> None:
        self.state.update(changes)
        _write_json(self.paths["state.json"], self.state)

    def on_signal(self, signum: int, _frame: object) -> None:
        if self.cancel_at is None:
            # `cancel --grace` leaves its wish in a file; otherwise the spec's default applies.
            request = _read_json(os.path.join(self.job_dir, "cancel.json"))
            grace = float(request.get("grace_s", self.spec.get("grace_s", 10.0)))
            self.cancel_at = time.time() + grace
            self.set_state(cancel_requested_at=_now())
        if self.child is not None and self.child.poll() is None:
            _killpg(self.child.pid, signal.SIGTERM)

    def heartbeat(self) -> None:
        with open(self.paths["heartbeat"], "w") as fh:
            fh.write(_now())

    def run_step(self, argv: list, env: dict, cwd: str) -> int:
        """Run one process in its own group, logging to the job log; return its exit code."""
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
            if self.cancel_at is not None and now >= self.cancel_at and not self.killed:
                _killpg(self.child.pid, signal.SIGKILL)
                self.killed = True
        # Take down anything the command left behind in its group (data loaders, shells).
        _killpg(self.child.pid, signal.SIGKILL)
        return rc if rc >= 0 else 128 - rc

    def run_steps(self, commands: list, label: str, env: dict, cwd: str) -> int:
        """Run ``commands`` (argv lists) in order, logged; stop at the first failure."""
        for argv in commands:
            argv = [str(a) for a in argv]
            self.note("{}: {}".format(label, " ".join(argv)))
            try:
                rc = self.run_step(argv, env, cwd)
            except OSError as exc:
                self.note(f"cannot start {argv[0]}: {exc.strerror}")
                return 127 if isinstance(exc, FileNotFoundError) else 126
            if rc != 0:
                self.note(f"{label} step failed with exit code {rc}")
                return rc
        return 0

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        self.heartbeat()
        spec = self.spec
        workdir = spec.get("workdir") or os.getcwd()
        env = dict(os.environ)
        env.update(spec.get("env") or {})
        python = sys.executable or "python3"
        rc = 0
        self.set_state(state="setup", agent_pid=os.getpid(), started_at=_now())
        if (
            rc == 0
            and spec.get("install_requirements")
            and os.path.isfile(os.path.join(workdir, "requirements.txt"))
        ):
            python, rc = self.install_requirements(workdir, env)
        if rc == 0 and self.cancel_at is None:
            resume = spec.get("resume_from")
            if not resume and spec.get("resume", True) and spec.get("checkpoint_dir"):
                found = list_checkpoints(spec["checkpoint_dir"])
                resume = found[-1] if found else None
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
            argv = build_argv(spec, workdir, python)
            self.set_state(state="running", resume_from=resume, command=argv)
            rc = self.run_steps(spec.get("pre_commands") or [], "pre", env, workdir)
            if rc == 0 and self.cancel_at is None:
                try:
                    rc = self.run_step(argv, env, workdir)
                except OSError as exc:
                    self.note(f"cannot start {argv[0]}: {exc.strerror}")
                    rc = 127 if isinstance(exc, FileNotFoundError) else 126
                if self.cancel_at is None:
                    # Post steps (e.g. uploading outputs) run whatever the exit code; their
                    # failure fails a job that had succeeded.
                    post = self.run_steps(spec.get("post_commands") or [], "post", env, workdir)
                    rc = rc or post
        final = "cancelled" if self.cancel_at is not None else "succeeded" if rc == 0 else "failed"
        with open(self.paths["exit_code"], "w") as fh:
            fh.write(str(rc))
        self.set_state(state=final, exit_code=rc, ended_at=_now())
        self.heartbeat()
        return 0

    def install_requirements(self, workdir: str, env: dict) -> tuple:
        """Create/refresh the project's venv from requirements.txt; return (python, rc)."""
        req = os.path.join(workdir, "requirements.txt")
        with open(req, "rb") as fh:
            digest = hashlib.sha256(fh.read()).hexdigest()
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
        uv = shutil.which("uv", path=env.get("PATH"))
        self.note("installing requirements.txt into {} ({})".format(venv, "uv" if uv else "pip"))
        if not os.path.exists(vpython):
            # --system-site-packages: reuse what the image already has (torch on a DLAMI).
            make = (
                [uv, "venv", "--system-site-packages", "--python", sys.executable, venv]
                if uv
                else [sys.executable, "-m", "venv", "--system-site-packages", venv]
            )
            rc = self.run_step(make, env, workdir)
            if rc != 0:
                self.note(f"creating the venv failed with exit code {rc}")
                return vpython, rc
        install = (
            [uv, "pip", "install", "--python", vpython, "-r", req]
            if uv
            else [vpython, "-m", "pip", "install", "--progress-bar", "off", "-r", req]
        )
        rc = self.run_step(install, env, workdir)
        if rc == 0:
            with open(marker, "w") as fh:
                fh.write(digest)
            self.note("requirements installed")
        else:
            self.note(f"installing requirements.txt failed with exit code {rc}")
        return vpython, rc


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


def supervise(job_dir: str) -> int:
    supervisor = Supervisor(job_dir)
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
    if status.get("state") not in FINAL:
        agent_pid = status.get("agent_pid")
        if status.get("state") == "starting":
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
    return status


def cmd_status(args: argparse.Namespace) -> int:
    jobs_root = os.path.join(os.path.expanduser(args.base), "jobs")
    ids = args.job_ids or (sorted(os.listdir(jobs_root)) if os.path.isdir(jobs_root) else [])
    out = {}
    for job_id in ids:
        job_dir = os.path.join(jobs_root, job_id)
        out[job_id] = _job_status(job_dir) if os.path.isdir(job_dir) else {"state": "missing"}
    print(json.dumps(out))
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    job_dir = os.path.expanduser(args.job_dir)
    paths = _job_paths(job_dir)
    offset = args.offset
    out = sys.stdout.buffer
    try:
        fh = open(paths["log"], "rb")  # noqa: SIM115 - closed by the `with fh` below
    except OSError:
        sys.stderr.write("RUNCTL-END {}\n".format(json.dumps({"state": "missing"})))
        return 0
    with fh:
        if args.last_lines:
            offset = _offset_of_last_lines(fh, args.last_lines)
            sys.stderr.write(f"RUNCTL-OFFSET {offset}\n")
        fh.seek(offset)
        misses = 0
        while True:
            chunk = fh.read(65536)
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if not args.follow:
                break
            status = _job_status(job_dir)
            if status["state"] in ("lost", "unknown"):
                misses += 1  # a transient read must not end the stream; a real loss persists
            if status["state"] in FINAL or misses >= 3:
                # Drain whatever landed between the last read and the state check.
                while fh.tell() < os.path.getsize(paths["log"]):
                    chunk = fh.read(65536)
                    if not chunk:
                        break
                    out.write(chunk)
                out.flush()
                break
            time.sleep(0.1)
    sys.stderr.write(f"RUNCTL-END {json.dumps(_job_status(job_dir))}\n")
    return 0


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
    paths = _job_paths(job_dir)
    status = _job_status(job_dir)
    if status["state"] in FINAL:
        print(json.dumps(status))
        return 0
    grace = args.grace
    agent_pid = status.get("agent_pid")
    _write_json(os.path.join(job_dir, "cancel.json"), {"grace_s": grace, "at": _now()})
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
    if not os.path.exists(target):
        print(json.dumps({"error": "missing", "path": target}))
        return 1
    print(json.dumps({"path": target, "is_dir": os.path.isdir(target)}))
    return 0


def _inside(root: str, rel: str) -> str | None:
    """Absolute path of ``rel`` under ``root``, or None if it would leave ``root``."""
    if os.path.isabs(rel) or ".." in rel.replace("\\", "/").split("/"):
        return None
    path = os.path.normpath(os.path.join(root, rel))
    return path if path.startswith(root + os.sep) else None


def cmd_apply_manifest(args: argparse.Namespace) -> int:
    code_dir = os.path.realpath(os.path.expanduser(args.code_dir))  # through `current`
    request = json.loads(sys.stdin.read())
    deleted = 0
    for rel in request.get("delete", []):
        path = _inside(code_dir, rel)
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
    """Work directories of jobs on this host that are starting or running."""
    jobs_root = os.path.join(base, "jobs")
    live = set()
    if os.path.isdir(jobs_root):
        for job_id in os.listdir(jobs_root):
            job_dir = os.path.join(jobs_root, job_id)
            if _job_status(job_dir)["state"] in ("starting", "setup", "running"):
                live.add(_read_json(os.path.join(job_dir, "job.json")).get("workdir"))
    return live


def cmd_prepare_sync(args: argparse.Namespace) -> int:
    """Make ``<root>/current`` safe to sync into and print it with its manifest.

    ``current`` is a symlink to a version directory. If a live job runs in that version, a
    new version is made from it with hard links (cheap; rsync later replaces changed files
    by rename, never in place) and ``current`` is switched to it. Versions no live job uses
    are removed.
    """
    base = os.path.abspath(os.path.expanduser(args.base))
    current = os.path.abspath(os.path.expanduser(args.code_dir))
    root = os.path.dirname(current)
    os.makedirs(root, exist_ok=True)
    live = _live_workdirs(base)
    if not os.path.isdir(current):
        version = os.path.join(root, "v1")
        os.makedirs(version, exist_ok=True)
        _point(current, "v1")
    real = os.path.realpath(current)
    if real in live:
        numbers = [int(n[1:]) for n in os.listdir(root) if re.match(r"^v\d+$", n)]
        name = f"v{max(numbers) + 1}"
        link_tree(real, os.path.join(root, name), skip_meta=False)
        _point(current, name)
        real = os.path.realpath(current)
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if re.match(r"^v\d+$", name) and path != real and path not in live:
            shutil.rmtree(path, ignore_errors=True)
    try:
        with open(os.path.join(real, ".runctl", "manifest.json")) as fh:
            manifest = fh.read()
    except OSError:
        manifest = None
    print(json.dumps({"dir": real, "manifest": manifest}))
    return 0


def _point(link: str, target: str) -> None:
    tmp = f"{link}.{os.getpid()}.tmp"
    os.symlink(target, tmp)
    os.replace(tmp, link)


def link_tree(src: str, dst: str, skip_meta: bool = True) -> int:
    """Hard-link copy of ``src`` into ``dst`` (copy across filesystems); skips ``.runctl/``.

    rsync replaces changed files by rename, so a job's linked snapshot keeps the exact code it
    started with while later submits update the shared tree.
    """
    count = 0
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        if rel == "." and skip_meta:
            dirs[:] = [d for d in dirs if d != ".runctl"]
        target_root = os.path.normpath(os.path.join(dst, rel))
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


def cmd_checkpoints(args: argparse.Namespace) -> int:
    """List checkpoints oldest first; with --keep N (and not --dry-run) delete all but N."""
    directory = os.path.expanduser(args.dir)
    found = list_checkpoints(directory)
    cut = max(len(found) - args.keep, 0) if args.keep is not None else 0
    rows = []
    for index, path in enumerate(found):
        st = os.stat(path)
        row = {"path": path, "bytes": st.st_size, "mtime": st.st_mtime}
        sidecar = os.path.splitext(path)[0] + ".json"
        meta = _read_json(sidecar) if os.path.isfile(sidecar) else {}
        if isinstance(meta, dict) and meta:
            row["meta"] = meta
        if index < cut:
            row["deleted"] = True
            if not args.dry_run:
                os.unlink(path)
                if os.path.isfile(sidecar):
                    os.unlink(sidecar)
        rows.append(row)
    print(json.dumps(rows))
    return 0


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(prog="runctl-agent")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start")
    p.add_argument("--base", required=True)
    p.add_argument("--expect-manifest", default="")
    p.add_argument("--code-dir", default="")
    p.add_argument("--exclusive", action="store_true")
    p = sub.add_parser("status")
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
    p = sub.add_parser("apply-manifest")
    p.add_argument("--code-dir", required=True)
    p = sub.add_parser("checkpoints")
    p.add_argument("--dir", required=True)
    p.add_argument("--keep", type=int, default=None)
    p.add_argument("--dry-run", action="store_true")
    args = parser.parse_args(argv)
    handler = globals()["cmd_" + args.cmd.replace("-", "_")]
    try:
        return int(handler(args))
    except BrokenPipeError:  # the reader went away (ssh dropped); nothing to report to
        return 0


if __name__ == "__main__":
    sys.exit(main())
