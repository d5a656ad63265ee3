#!/usr/bin/env python3
"""runctl's on-host agent: starts a job detached, supervises it, and answers queries about it.

Shipped verbatim to every host (named by its content hash) and run with the host's own python3,
so it uses the standard library only and stays compatible with Python 3.8. Nothing imports it.

A job lives in ``<base>/jobs/<job_id>/``:

    job.json     the spec the CLI sent            log         stdout+stderr, append-only
    state.json   {"state", "pid", "agent_pid"...} exit_code   written once the job ends
    pid          the job's process (group leader)  heartbeat   rewritten every few seconds

Sub-commands (each prints JSON on stdout unless it streams a log):

    start   --base B [--expect-manifest D --code-dir C] [--exclusive] [--no-launch]
            (spec JSON on stdin; --no-launch only prepares the job dir for a batch scheduler)
    supervise --job-dir J                          run a prepared job in the foreground
    status  --base B [JOB_ID ...]
    tail    --job-dir J --offset N [--follow]      raw log bytes; final state on stderr
    wait    --job-dir J [--timeout S]
    cancel  --job-dir J [--grace S]
    resolve --root R --path P                      realpath of P, refusing escapes from R
    prepare-sync --base B --code-dir C             pick the code version to sync into
    apply-manifest --code-dir C                    delete removed files, record the manifest
    checkpoints --dir D [--keep N [--dry-run]]     list (and prune) checkpoints
    hash --path P                                  sha256 of a file or of every file under P
    watchdog arm|status|disarm|run --base B        host watchdog (see the watchdog section)

Exit codes of ``start``: 0 started, 10 code dir does not match the expected manifest (the CLI
re-syncs and retries), 11 another job of the project is running (--exclusive), 12 bad spec.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable

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

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self.on_signal)
        self.heartbeat()
        spec = self.spec
        workdir = spec.get("workdir") or os.getcwd()
        env = dict(os.environ)
        env.update(spec.get("env") or {})
        env.update(self.node_env)
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
    names = sorted(set(spec.get("env") or {}) | set(node_env or {}) | job_vars)
    for name in names + ["PYTHONUNBUFFERED"]:
        argv += ["-e", name]
    argv += [str(a) for a in opts.get("args") or []]
    argv.append(str(opts["image"]))
    command = [str(a) for a in spec["argv"]]
    if spec.get("kind") == "script":
        script = command[0]
        if script.endswith(".py"):
            command = [str(opts.get("python") or "python3")] + command
        elif script.endswith(".sh") and not os.access(os.path.join(workdir, script), os.X_OK):
            command = ["bash"] + command
        else:
            command = ["./" + script] + command[1:]
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


def cmd_status(args: argparse.Namespace) -> int:
    touch_controller(os.path.expanduser(args.base))
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
    p.add_argument("--no-launch", action="store_true")
    p = sub.add_parser("supervise")
    p.add_argument("--job-dir", required=True)
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
    p = sub.add_parser("hash")
    p.add_argument("--path", required=True)
    p = sub.add_parser("checkpoints")
    p.add_argument("--dir", required=True)
    p.add_argument("--keep", type=int, default=None)
    p.add_argument("--dry-run", action="store_true")
    p = sub.add_parser("watchdog")
    p.add_argument("action", choices=("arm", "status", "disarm", "run"))
    p.add_argument("--base", required=True)
    args = parser.parse_args(argv)
    handler = globals()["cmd_" + args.cmd.replace("-", "_")]
    try:
        return int(handler(args))
    except BrokenPipeError:  # the reader went away (ssh dropped); nothing to report to
        return 0


if __name__ == "__main__":
    sys.exit(main())
