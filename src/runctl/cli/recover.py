"""``runctl recover JOB``: keep a cloud job running across spot interruptions (managed mode)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from runctl.cli.output import emit, get_ctx, is_json, json_option, progress, runtime
from runctl.cli.params import seconds
from runctl.errors import CommandFailedError, RunctlError

if TYPE_CHECKING:
    from runctl.models import Job
    from runctl.runtime import Runtime

DAEMON_START_S = 10.0


@click.command(name="recover")
@click.argument("job_ref", metavar="JOB")
@click.option("--daemon", is_flag=True,
              help="Run the controller in the background; its log is RUNCTL_HOME/recover/"
              "JOB.log.")  # fmt: skip
@click.option("--max-restarts", type=click.IntRange(min=0),
              help="Replacements before giving up (default: the job's, else 3).")  # fmt: skip
@click.option("--policy", type=click.Choice(["same", "on-demand", "other-az", "other-region"]),
              help="The replacement machine (default: the job's setting, else same).")  # fmt: skip
@click.option("--regions", metavar="R1,R2", help="Regions for --policy other-region.")
@click.option("--poll", "poll_s", type=seconds(0.1), default=5.0, show_default=True,
              metavar="SECONDS", help="How often the job and machine are checked.")  # fmt: skip
@click.option("--unreachable-timeout", type=seconds(), default=120.0,
              show_default=True, metavar="SECONDS",
              help="A machine that runs but does not answer this long is replaced.")  # fmt: skip
@click.option("-f", "--follow", is_flag=True, help="Stream the job's log (foreground only).")
@click.option(
    "--keep",
    is_flag=True,
    help="When giving up, keep the interrupted machine instead of terminating it.",
)
@json_option
def recover(job_ref: str, daemon: bool, max_restarts: int | None, policy: str | None,
            regions: str | None, poll_s: float, unreachable_timeout: float, follow: bool,
            keep: bool) -> None:  # fmt: skip
    """Watch JOB (on aws, runpod or lyceum) and restart it on a new machine when interrupted.

    \b
    On a spot interruption (the host watchdog ends the job `preempted` after a final
    checkpoint upload) or a machine that vanished, stopped or stopped answering, the old
    machine is terminated, a replacement launched (never two at once), and the job resubmitted
    with the same name and checkpoint store, so it resumes from its newest checkpoint.
    Every step is recorded as a `recover.*` event. Ends when the job ends by itself; the
    machine it ended on is left running for its results (terminate it when done).
    Spot replacements stay spot (an on-demand fallback needs --policy on-demand).

    \b
    Examples:
      runctl recover train-3f9a2c
      runctl recover train-3f9a2c --daemon --policy on-demand
    """
    from runctl.core import recover as core

    rt = runtime()
    root = core.root_of(rt, rt.store.get_job(job_ref))
    core.refuse_if_managed(rt, root.job_id)  # before its settings change under a controller
    root = _configure(rt, root, max_restarts, policy, regions)
    if daemon:
        started = _start_daemon(rt, root, poll_s, unreachable_timeout)
        emit(started, lambda: click.echo(started["pid"]))
        return
    out = None
    if follow:
        out = sys.stderr.buffer if is_json() else sys.stdout.buffer
    with core.controller_lock(rt, root.job_id):
        controller = core.Controller(rt, root, progress, poll_s=poll_s, out=out,
                                     unreachable_timeout_s=unreachable_timeout)  # fmt: skip
        outcome = controller.run()
    if outcome.result == "gave-up" and not keep:
        _terminate(rt, outcome.job)
    emit(outcome.to_json(), lambda: progress(_line(outcome.to_json())))
    if outcome.job.state.value != "succeeded":
        from runctl.core.jobs import exit_code_of

        raise CommandFailedError(
            f"job {outcome.job.job_id} {outcome.job.state} after {outcome.restarts} restart(s)",
            exit_code=exit_code_of(outcome.job),
            hint=f"see `runctl logs {outcome.job.job_id}`",
        )


def _configure(rt: Runtime, root: Job, max_restarts: int | None, policy: str | None,
               regions: str | None) -> Job:  # fmt: skip
    """Store the recovery settings on the job: the ones given, else the job's, else defaults."""
    from runctl.core import recover as core

    current: dict[str, Any] = root.spec.get("recover") or {}
    if current and max_restarts is None and policy is None and regions is None:
        return root
    launch = dict(current.get("launch") or {}) or core.launch_of_instance(
        rt, root.provider, root.instance_id
    )
    if regions:
        launch["regions"] = [r.strip() for r in regions.split(",") if r.strip()]
    spec = core.recover_spec(
        root.provider, launch,
        max_restarts=max_restarts if max_restarts is not None else current.get("max_restarts", 3),
        policy=policy or current.get("policy", "same"),
        # Spot notices are watched on replacements even when no policy was asked for.
        watchdog=current.get("watchdog") or {},
    )  # fmt: skip
    return core.enable(rt, root, spec)


def _start_daemon(
    rt: Runtime, root: Job, poll_s: float, unreachable_timeout: float
) -> dict[str, Any]:
    """Start the controller detached (its own session); return its pid and log once it holds
    the job's lock."""
    from runctl.core import recover as core
    from runctl.perms import private_dir

    core.refuse_if_managed(rt, root.job_id)
    log = rt.home / "recover" / f"{root.job_id}.log"
    private_dir(log.parent)
    argv = [sys.executable, "-m", "runctl"]
    config_path = get_ctx().config_path
    if config_path:
        argv += ["-c", os.path.abspath(config_path)]
    argv += ["recover", root.job_id, "--poll", str(poll_s),
             "--unreachable-timeout", str(unreachable_timeout)]  # fmt: skip
    with open(log, "ab") as sink:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + DAEMON_START_S
    while core.lock_holder(rt, root.job_id) != proc.pid:
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise RunctlError(
                f"the recovery controller did not start: {' / '.join(tail) or 'no output'}",
                hint=f"see {log}",
            )
        time.sleep(0.05)
    rt.store.add_event("recover.daemon", root.job_id, {"pid": proc.pid, "log": str(log)})
    progress(f"recovery controller for {root.job_id} running (pid {proc.pid}); log: {log}")
    return {"root_job": root.job_id, "pid": proc.pid, "log": str(log)}


def _terminate(rt: Runtime, job: Job) -> None:
    from runctl.core import launchers

    provider = launchers.make_provider(rt, job.provider, {}, progress)
    try:
        launchers.terminate_verified(
            rt, provider, job.instance_id, progress=progress,
            timeout_s=float(rt.config.get(f"{job.provider}.wait_timeout_s")),
        )  # fmt: skip
    except RunctlError as exc:
        progress(f"warning: {exc.message}")


def _line(data: dict[str, Any]) -> str:
    return (f"{data['job_id']} {data['state']} ({data['result']}, {data['restarts']} "
            f"restart(s); jobs: {', '.join(data['jobs'])})")  # fmt: skip


# ------------------------------------------------------------- `runctl run --recover`

_RECOVER_OPTIONS = [
    click.option("--recover", is_flag=True,
                 help="Managed mode (aws|runpod|lyceum machines runctl created): replace the "
                 "machine on a spot interruption or when it vanishes, and resume the job from "
                 "its newest checkpoint (use --checkpoint-s3). With -f/--wait in this process, "
                 "else by a background `runctl recover JOB --daemon`."),
    click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True,
                 help="With --recover: replacements before giving up."),
    click.option("--recover-policy", type=click.Choice(["same", "on-demand", "other-az",
                 "other-region"]), default="same", show_default=True,
                 help="With --recover: the replacement machine."),
]  # fmt: skip


def recover_options(fn: Any) -> Any:
    """Add --recover, --max-restarts and --recover-policy to a command that submits a job."""
    for option in reversed(_RECOVER_OPTIONS):
        fn = option(fn)
    return fn


def check_recoverable(on: str | None) -> None:
    """Refuse --recover before anything starts unless TARGET is a machine runctl made."""
    from runctl.core import recover as core

    rt = runtime()
    provider, _, instance_id = (on or str(rt.config.get("defaults.on")) or "local").partition(":")
    core.launch_of_instance(rt, provider, instance_id)  # UsageError otherwise


def manage(job: Job, *, follow: bool, wait: bool, opts: dict[str, Any]) -> None:
    """`run --recover`: store the recovery settings on the just-submitted ``job``, then follow
    it with a controller here (-f/--wait) or start one in the background."""
    import dataclasses

    from runctl.cli.jobs import _finish, job_json
    from runctl.cli.watchdog_options import policy_from_options
    from runctl.core import recover as core

    rt = runtime()
    policy = policy_from_options(**opts)
    launch = core.launch_of_instance(rt, job.provider, job.instance_id)
    spec = core.recover_spec(job.provider, launch, max_restarts=opts["max_restarts"],
                             policy=opts["recover_policy"],
                             watchdog=dataclasses.asdict(policy) if policy else {})  # fmt: skip
    job = core.enable(rt, job, spec)
    if not (follow or wait):
        started = _start_daemon(rt, job, poll_s=5.0, unreachable_timeout=120.0)
        emit(job_json(job, recover=started), lambda: click.echo(job.job_id))
        return
    out = None
    if follow:
        out = sys.stderr.buffer if is_json() else sys.stdout.buffer
    elif not is_json():
        click.echo(job.job_id)
    with core.controller_lock(rt, job.job_id):
        outcome = core.Controller(rt, job, progress, poll_s=2.0, out=out).run()
    if outcome.result == "gave-up":
        _terminate(rt, outcome.job)
    _finish(outcome.job)
