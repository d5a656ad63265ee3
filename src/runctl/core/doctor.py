"""`runctl doctor`: check what runctl depends on, and (``--fix``) repair what is safe to.

Checks: RUNCTL_HOME (a private, writable directory), the state database (integrity, schema,
lock holders), registered SSH hosts (reachable, python, free disk, clock skew, job dirs the
index does not know), provider credentials (present; no cloud calls) and ssh master sockets.

Fixes: tighten RUNCTL_HOME's permissions; move a corrupt database aside and rebuild the index
(hosts salvaged from the old file where readable; jobs from the agents' job dirs on this
machine and on every registered host; cloud machines through `reconcile`); adopt job dirs the
index lost; remove ssh sockets no master listens on.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runctl.errors import RunctlError
from runctl.models import Host, Instance, Job, JobState, SSHTarget
from runctl.runtime import Runtime
from runctl.state import db as statedb

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"
LOW_DISK_BYTES = 1 << 30
SKEW_WARN_S = 60.0
Progress = Callable[[str], None]


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None  # what --fix does about it (or did, once ``fixed``)
    fixed: bool = False

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run(runtime: Runtime, *, fix: bool, progress: Progress) -> list[Check]:
    checks = [check_home(runtime.home, fix)]
    if checks[0].status == FAIL:
        return checks
    db_check, usable = check_db(runtime.home / "state.db", fix)
    checks.append(db_check)
    if not usable:
        return checks
    if db_check.fixed:
        checks += rebuild(runtime, progress)
    else:
        checks.append(check_local_jobs(runtime, fix))
    checks += check_hosts(runtime, fix, progress)
    checks += check_credentials(runtime)
    checks.append(check_sockets(runtime.home, fix))
    return checks


# ------------------------------------------------------------------------------- home


def check_home(home: Path, fix: bool) -> Check:
    try:
        statedb.ensure_home(home)
    except RunctlError as exc:
        return Check("home", FAIL, exc.message, exc.hint)
    info = home.stat()
    if info.st_uid != os.geteuid():
        return Check("home", FAIL, f"{home} belongs to uid {info.st_uid}, not to you",
                     "set RUNCTL_HOME to a directory of your own")  # fmt: skip
    if info.st_mode & 0o077:
        check = Check("home", WARN, f"{home} is open to other users "
                      f"({stat.S_IMODE(info.st_mode):o})", "chmod 700")  # fmt: skip
        if fix:
            os.chmod(home, 0o700)
            check.fixed = True
        return check
    return Check("home", OK, f"{home} (private, writable)")


# --------------------------------------------------------------------------------- db


def check_db(path: Path, fix: bool) -> tuple[Check, bool]:
    """The database's health; and whether the rest of doctor may open it."""
    if not path.exists():
        backups = sorted(path.parent.glob(f"{path.name}.corrupt-*"))
        if backups:
            detail = f"no state database; a corrupt one was kept as {backups[-1].name}"
            check = Check("state-db", WARN, detail, "rebuild the index from hosts and providers")
            check.fixed = fix
            return check, True
        return Check("state-db", OK, f"{path} not created yet"), True
    holders = statedb.lock_holders(path)
    try:
        ro = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            result = [r[0] for r in ro.execute("PRAGMA integrity_check")]
            names = {r[0] for r in ro.execute("SELECT name FROM _runctl_migrations")}
        finally:
            ro.close()
    except sqlite3.Error as exc:
        result, names = [str(exc)], set()
    problem = None if result == ["ok"] else "; ".join(result)[:200]
    if problem is None and names and not names <= _known_migrations():
        newest = sorted(names - _known_migrations())[-1]
        return Check("state-db", FAIL, f"{path} was written by a newer runctl ({newest})",
                     "upgrade runctl"), False  # fmt: skip
    if problem is not None and "locked" in problem:
        who = f" by pid {', '.join(map(str, holders))}" if holders else ""
        return Check("state-db", WARN, f"{path} is locked{who}", "wait for it"), False
    if problem is not None:
        check = Check("state-db", FAIL, f"{path} is corrupt: {problem}",
                      "move it aside and rebuild the index")  # fmt: skip
        if not fix:
            return check, False
        moved = statedb.move_aside(path)
        check.detail += f"; moved to {moved}"
        check.fixed = True
        return check, True
    pending = len(_known_migrations() - names)
    extra = f", {pending} migration(s) pending" if pending else ""
    held = f", in use by pid {', '.join(map(str, holders))}" if holders else ""
    return Check("state-db", OK, f"{path}: integrity ok{extra}{held}"), True


def _known_migrations() -> set[str]:
    from runctl.state.migrations import MIGRATIONS

    return {m.__name__ for m in MIGRATIONS}


# ---------------------------------------------------------------------------- rebuild


def rebuild(runtime: Runtime, progress: Progress) -> list[Check]:
    """Refill a fresh index: hosts from the old file, jobs from agents, machines from clouds."""
    checks = [_salvage_hosts(runtime)]
    progress("rebuilding the job index from this machine and the registered hosts ...")
    targets = [("local", "local")] + [("ssh", h.name) for h in runtime.store.list_hosts()]
    adopted = 0
    for provider, instance_id in targets:
        try:
            adopted += len(adopt_job_dirs(runtime, provider, instance_id))
        except RunctlError as exc:
            checks.append(Check(f"rebuild:{provider}:{instance_id}", WARN, exc.message))
    checks.append(Check("rebuild:jobs", OK, f"{adopted} job(s) re-indexed from job dirs"))
    checks.append(_reconcile_instances(runtime, progress))
    return checks


def _salvage_hosts(runtime: Runtime) -> Check:
    backups = sorted(runtime.home.glob("state.db.corrupt-*"))
    backups = [b for b in backups if not b.name.endswith(("-wal", "-shm"))]
    if not backups:
        return Check("rebuild:hosts", INFO, "no old database to salvage hosts from")
    saved = 0
    try:
        old = sqlite3.connect(f"file:{backups[-1]}?mode=ro", uri=True)
        old.row_factory = sqlite3.Row
        rows = list(old.execute("SELECT * FROM hosts"))
        old.close()
    except sqlite3.Error as exc:
        return Check("rebuild:hosts", WARN, f"no hosts readable in {backups[-1].name} ({exc})",
                     "register them again with `runctl hosts add`")  # fmt: skip
    for row in rows:
        if runtime.store.get_host(row["name"]) is not None:
            continue
        target = SSHTarget(row["host"], row["user"], row["port"], row["identity_file"],
                           tuple(json.loads(row["options"] or "[]")))  # fmt: skip
        runtime.store.add_host(Host(name=row["name"], target=target,
                                    remote_dir=row["remote_dir"], python=row["python"],
                                    hourly_usd=row["hourly_usd"]))  # fmt: skip
        saved += 1
    return Check("rebuild:hosts", OK, f"{saved} host(s) salvaged from {backups[-1].name}")


def adopt_job_dirs(
    runtime: Runtime, provider: str, instance_id: str, *, dry_run: bool = False
) -> list[str]:
    """Index the job dirs the agent on a target has and the state database lacks (with
    ``dry_run`` only name them)."""
    from runctl.core import agent
    from runctl.core.targets import instance_of_job

    target = instance_of_job(runtime, provider, instance_id)
    transport = target.provider.connect(target.instance)
    argv = ["index", "--base", target.instance.remote_dir]
    found = agent.call_json(target.instance, transport, argv, timeout=60)
    listed = runtime.store.list_jobs(provider=provider, instance_id=instance_id)
    known = {j.job_id for j in listed}
    adopted = []
    for job_id, entry in found.items():
        if job_id in known or not isinstance(entry, dict):
            continue
        try:
            runtime.store.get_job(job_id)
            continue  # indexed under another target (a moved host alias)
        except RunctlError:
            pass
        adopted.append(job_id)
        if dry_run:
            continue
        job = _job_from_dir(target.instance, job_id, entry)
        runtime.store.insert_job(job)
        status = entry.get("status") or {}
        runtime.store.update_job(
            job_id,
            started_at=status.get("started_at"),
            ended_at=status.get("ended_at"),
            exit_code=status.get("exit_code"),
            pid=status.get("agent_pid"),
        )
    return adopted


def _job_from_dir(instance: Instance, job_id: str, entry: dict[str, Any]) -> Job:
    spec = entry.get("spec") or {}
    status = entry.get("status") or {}
    try:
        state = JobState(str(status.get("state")))
    except ValueError:
        state = JobState.LOST
    return Job(
        job_id=job_id,
        name=str(spec.get("name") or job_id),
        project=str(spec.get("project") or ""),
        provider=instance.provider,
        instance_id=instance.instance_id,
        state=state,
        argv=tuple(str(a) for a in spec.get("argv") or ()),
        job_dir=str(entry.get("job_dir") or ""),
        workdir=str(spec.get("workdir") or ""),
        checkpoint_dir=str(spec.get("checkpoint_dir") or ""),
        created_at=str(status.get("created_at") or statedb.now_iso()),
        spec=dict(spec, note="re-indexed by `runctl doctor --fix`"),
    )


def _reconcile_instances(runtime: Runtime, progress: Progress) -> Check:
    from runctl.core.reconcile import CLOUDS, reconcile

    wanted = [name for name in CLOUDS if _credentials(runtime).get(name)]
    if not wanted:
        return Check("rebuild:machines", INFO, "no cloud credentials: no machines to look up")
    progress(f"looking up runctl machines on {', '.join(wanted)} ...")
    try:
        report = reconcile(runtime, wanted, apply=True)
    except RunctlError as exc:
        return Check("rebuild:machines", WARN, exc.message, "run `runctl reconcile` later")
    adopted = sum(1 for f in report.findings if f.kind == "orphan")
    skipped = "; ".join(f"{k}: {v}" for k, v in report.skipped.items())
    detail = f"{adopted} machine(s) re-adopted" + (f" (skipped {skipped})" if skipped else "")
    return Check("rebuild:machines", WARN if skipped else OK, detail)


def check_local_jobs(runtime: Runtime, fix: bool) -> Check:
    """Job dirs on this machine the index lacks (an emptied or replaced state.db)."""
    try:
        found = adopt_job_dirs(runtime, "local", "local", dry_run=not fix)
    except RunctlError as exc:
        return Check("jobs:local", WARN, f"job dirs not listed: {exc.message}")
    if not found:
        return Check("jobs:local", OK, "every local job dir is in the index")
    check = Check("jobs:local", WARN, f"{len(found)} local job dir(s) not in the index",
                  "re-index them")  # fmt: skip
    check.fixed = fix
    return check


# ------------------------------------------------------------------------------ hosts


_PROBE = (
    'cd "$HOME" && "$1" -c "import sys; print(sys.version.split()[0])" && '
    'd="$2"; [ -d "$d" ] || d=.; df -Pk "$d" | tail -n 1 && date +%s'
)


def check_hosts(runtime: Runtime, fix: bool, progress: Progress) -> list[Check]:
    hosts = runtime.store.list_hosts()
    if not hosts:
        return []
    progress(f"checking {len(hosts)} host(s) ...")
    with ThreadPoolExecutor(max_workers=min(8, len(hosts))) as pool:
        return list(pool.map(lambda h: _check_host(runtime, h, fix), hosts))


def _check_host(runtime: Runtime, host: Host, fix: bool) -> Check:
    from runctl.core.targets import instance_of_job

    name = f"host:{host.name}"
    try:
        target = instance_of_job(runtime, "ssh", host.name)
        transport = target.provider.connect(target.instance)
        sent = time.time()
        done = transport.run(["sh", "-c", _PROBE, "sh", host.python, host.remote_dir],
                             timeout=30)  # fmt: skip
        back = time.time()
    except RunctlError as exc:
        return Check(name, FAIL, f"unreachable: {exc.message}", exc.hint)
    lines = done.text.strip().splitlines()
    if done.returncode != 0 or len(lines) < 3:
        why = (done.stderr.decode(errors="replace").strip().splitlines() or ["no answer"])[-1]
        return Check(name, FAIL, f"reachable, but the probe failed: {why[:200]}",
                     f"check that {host.python} runs on the host")  # fmt: skip
    python, df_line, epoch = lines[-3], lines[-2], lines[-1]
    notes, status = [f"python {python}"], OK
    try:
        free = int(df_line.split()[3]) * 1024
        notes.append(f"{free / 2**30:.1f} GiB free")
        if free < LOW_DISK_BYTES:
            status = WARN
            notes.append("low disk: `runctl jobs prune`")
    except (IndexError, ValueError):
        pass
    try:
        skew = float(epoch) - (sent + back) / 2
        if abs(skew) > SKEW_WARN_S:
            status = WARN
            notes.append(f"clock off by {skew:+.0f} s")
    except ValueError:
        pass
    try:
        adopted = adopt_job_dirs(runtime, "ssh", host.name, dry_run=not fix)
        if adopted and fix:
            notes.append(f"{len(adopted)} unindexed job dir(s) re-indexed")
        elif adopted:
            status = WARN
            notes.append(f"{len(adopted)} job dir(s) not in the index (--fix re-indexes)")
    except RunctlError as exc:
        notes.append(f"job dirs not listed: {exc.message}")
    return Check(name, status, ", ".join(notes))


# ------------------------------------------------------------------------ credentials


def _credentials(runtime: Runtime) -> dict[str, bool]:
    env = os.environ
    aws_files = any(Path(p).expanduser().is_file() for p in ("~/.aws/credentials",
                                                             "~/.aws/config"))  # fmt: skip
    return {
        "aws": bool(
            env.get("AWS_ACCESS_KEY_ID")
            or env.get("AWS_PROFILE")
            or runtime.config.get("aws.profile")
            or aws_files
        ),  # fmt: skip
        "runpod": bool(env.get("RUNPOD_API_KEY") or runtime.config.get("runpod.api_key")),
        "lyceum": bool(env.get("LYCEUM_API_KEY") or runtime.config.get("lyceum.api_key")),
    }


def check_credentials(runtime: Runtime) -> list[Check]:
    return [
        Check(f"credentials:{name}", INFO, "configured" if present else "not configured")
        for name, present in _credentials(runtime).items()
    ]


# ---------------------------------------------------------------------------- sockets


def check_sockets(home: Path, fix: bool) -> Check:
    from runctl.transport.ssh import control_dir

    try:
        directory = control_dir(home)
        entries = list(directory.iterdir())
    except (OSError, RunctlError) as exc:
        return Check("ssh-sockets", WARN, f"socket dir unusable: {exc}")
    stale = [p for p in entries if _is_stale_socket(p)]
    if not stale:
        return Check("ssh-sockets", OK, f"{len(entries)} socket(s) in {directory}")
    check = Check("ssh-sockets", WARN, f"{len(stale)} stale ssh socket(s) in {directory}",
                  "remove them")  # fmt: skip
    if fix:
        for path in stale:
            path.unlink(missing_ok=True)
        check.fixed = True
    return check


def _is_stale_socket(path: Path) -> bool:
    try:
        if not stat.S_ISSOCK(path.lstat().st_mode):
            return False
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1)
    try:
        probe.connect(str(path))
    except ConnectionRefusedError:
        return True  # nobody listens: the master is gone
    except OSError:
        return False
    finally:
        probe.close()
    return False
