"""Job commands: run, local, exec, jobs, status, logs, wait, cancel, get."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO, cast

import click

from runctl.cli.output import (
    age,
    binary_stdout,
    emit,
    is_json,
    json_option,
    progress,
    runtime,
    table,
    waiting,
)
from runctl.cli.params import seconds, usd
from runctl.cli.recover import check_recoverable, manage, recover_options
from runctl.cli.secret_options import resolve_secrets, with_secret_options
from runctl.cli.watchdog_options import policy_from_options, watchdog_options
from runctl.errors import CommandFailedError, RunctlError, UsageError
from runctl.models import Job, JobState

TIMEOUT_EXIT = 124  # like timeout(1): `wait --timeout` ran out, the job still runs


def _parse_env(pairs: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or not key.replace("_", "a").isalnum() or key[0].isdigit():
            # The name only: the value may be a secret, and errors end up in terminals/logs.
            raise UsageError(f"invalid --env name {key!r}", hint="use --env NAME=VALUE")
        env[key] = value
    return env


def _split_args(script_args: Sequence[str]) -> list[str]:
    args = list(script_args)
    return args[1:] if args[:1] == ["--"] else args


def job_json(job: Job, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "job_id": job.job_id,
        "name": job.name,
        "project": job.project,
        "on": _on(job),
        "state": str(job.state),
        "exit_code": job.exit_code,
        "argv": list(job.argv),
        "created_at": job.created_at,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
        "job_dir": job.job_dir,
        "workdir": job.workdir,
        "checkpoint_dir": job.checkpoint_dir,
    }
    if job.spec.get("note"):  # how runctl settled it (a submit killed before it started)
        data["note"] = job.spec["note"]
    data.update(extra)
    return data


def _on(job: Job) -> str:
    return "local" if job.provider == "local" else f"{job.provider}:{job.instance_id}"


submit_options = [
    click.option("--on", "on", metavar="TARGET", help="local (default), ssh:HOST, a host name."),
    click.option("--name", help="Job name (default: the script's name)."),
    click.option("--project", help="Project name (default: the project root's directory name)."),
    click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Extra environment."),
    click.option("--include", "includes", multiple=True, metavar="PATTERN",
                 help="Sync this ignored path too (gitignore syntax; repeatable); secret "
                 "paths (.env, .ssh/, *.pem...) go only when a pattern names them."),
    click.option("--project-root", "project_root", type=click.Path(path_type=Path),
                 metavar="DIR", help="Sync this directory (default: the nearest one above the "
                 "script with .git or pyproject.toml; none: the script alone)."),
    click.option("-y", "--yes", is_flag=True,
                 help="Sync without asking even above sync.max_files / sync.max_mb."),
    click.option("--exclusive", is_flag=True,
                 help="Refuse to start if this project already runs a job on the host."),
    click.option("--no-resume", is_flag=True,
                 help="Do not set RUNCTL_RESUME_FROM from the latest checkpoint."),
    click.option("--resume-from", metavar="PATH", help="Checkpoint to resume from (on the host)."),
    click.option("--checkpoint-dir", metavar="DIR", help="Checkpoint directory on the host."),
    click.option("--checkpoint-s3", metavar="S3_URI",
                 help="Checkpoint store: restored before start, copied there while the job "
                 "runs and when it ends (needs the AWS CLI on the host: aws.host_cli)."),
    click.option("--checkpoint-sync-s", type=seconds(), default=300,
                 show_default=True, help="Seconds between copies to --checkpoint-s3 (0: on "
                 "exit only)."),
    click.option("--install-deps/--no-install-deps", default=None,
                 help="Make requirements.txt importable: nothing is installed when the host's "
                 "python has it all, else only what is missing goes into a venv that sees "
                 "that python's packages (default: yes on remote hosts, no locally)."),
    click.option("--grace", type=seconds(), metavar="SECONDS",
                 help="SIGTERM-to-SIGKILL grace period on cancel."),
    click.option("--budget", "budget", type=usd(),
                 metavar="USD", help="Cost limit of this job; `runctl resources enforce` "
                 "acts on it per costs.budget_action."),
    # batch-scheduler placement (Slurm); defaults from the slurm.* config keys
    click.option("--nodes", type=click.IntRange(min=1), help="Nodes (Slurm): one agent each."),
    click.option("--gpus-per-node", type=click.IntRange(min=0), help="GPUs per node (Slurm)."),
    click.option("--partition", metavar="NAME", help="Slurm partition."),
    click.option("--time", "time_limit", metavar="LIMIT", help="Slurm time limit (2:00:00)."),
    click.option("--retries", type=click.IntRange(min=0),
                 help="Slurm restarts after preemption / node failure (requeue)."),
    # containers (runctl.cli.docker): the agent runs the job with `docker run`
    click.option("--docker", "docker", is_flag=True,
                 help="Run in a container of the project's image (built here; pushed to "
                 "docker.registry for remote hosts)."),
    click.option("--docker-image", metavar="IMAGE",
                 help="Run in a container of IMAGE (implies --docker)."),
]  # fmt: skip


def _with_submit_options(fn: Any) -> Any:
    for option in reversed(submit_options):
        fn = option(fn)
    return with_secret_options(fn)


def _placement(opts: dict[str, Any]) -> dict[str, Any]:
    keys = {"nodes": "nodes", "gpus_per_node": "gpus_per_node", "partition": "partition",
            "time_limit": "time", "retries": "retries"}  # fmt: skip
    return {name: opts[key] for key, name in keys.items() if opts.get(key) is not None}


def _submit(
    argv: list[str], kind: str, on: str | None, opts: dict[str, Any], *, quiet: bool = False
) -> Job:
    from runctl.core.jobs import SubmitRequest, submit
    from runctl.core.targets import resolve_target

    rt = runtime()
    secrets, env_file = resolve_secrets(opts.get("secrets", ()), opts.get("env_file"))
    target = resolve_target(rt, on)
    request = SubmitRequest(
        argv=argv,
        kind=kind,
        name=opts.get("name"),
        project=opts.get("project"),
        env=_parse_env(opts.get("env", ())),
        secrets=secrets,
        env_file=env_file,
        includes=opts.get("includes", ()),
        exclusive=bool(opts.get("exclusive")),
        resume=not opts.get("no_resume"),
        resume_from=opts.get("resume_from"),
        checkpoint_dir=opts.get("checkpoint_dir"),
        install_requirements=opts.get("install_deps"),
        grace_s=opts.get("grace"),
        checkpoint_store=_checkpoint_store(
            opts.get("checkpoint_s3"), opts.get("checkpoint_sync_s", 300)
        ),  # fmt: skip
        budget_usd=opts.get("budget"),
        placement=_placement(opts),
        project_root=opts.get("project_root"),
        yes=bool(opts.get("yes")),
        confirm=_ask if _interactive() else None,
    )
    if opts.get("docker") or opts.get("docker_image"):
        from runctl.cli.docker import docker_request

        request.docker = docker_request(
            opts, is_local=target.instance.provider == "local", argv=argv, kind=kind,
            includes=opts.get("includes", ()),
        )  # fmt: skip
    from runctl.core.watchdog import build_config, guard, job_policy

    policy = job_policy(rt, target, policy_from_options(**opts), request.budget_usd)
    if policy is not None:  # refuse an impossible policy before anything starts
        build_config(rt, target, policy)
    inst = target.instance
    where = "local" if inst.provider == "local" else f"{inst.provider}:{inst.name}"
    with waiting(f"starting {argv[0]} on {where}: syncing code, launching") as status:
        if request.confirm is not None:  # a big-tree question must not sit under the spinner
            request.confirm = _paused(status, request.confirm)
        result = submit(rt, target, request, progress)
    job = result.job
    if policy is not None or target.instance.provider not in ("local", "ssh"):
        guard(rt, target, policy, progress)
    if not quiet:
        sync_note = ""
        if result.sync is not None:
            s = result.sync
            sync_note = (
                f" (code unchanged, {s.files_total} files)"
                if s.skipped or not s.files_sent
                else f" (synced {s.files_sent}/{s.files_total} files)"
            )
        progress(f"started {job.job_id} on {_on(job)} in {result.seconds:.2f}s{sync_note}")
    return job


def _paused(status: Any, ask: Any) -> Any:
    def confirm(question: str) -> bool:
        with status.paused():
            return bool(ask(question))

    return confirm


def _interactive() -> bool:
    return not is_json() and sys.stdin.isatty() and sys.stderr.isatty()


def _ask(question: str) -> bool:
    return click.confirm(question, default=False, err=True)


dry_run_option = click.option(
    "--dry-run", is_flag=True,
    help="List the files the host would receive (paths, sizes); start nothing.",
)  # fmt: skip


def _dry_run(argv: list[str], kind: str, on: str | None, opts: dict[str, Any]) -> None:
    """--dry-run: print exactly what a submit would sync; records and contacts nothing."""
    from runctl.core.sync import human_size
    from runctl.core.sync_scope import plan, scope_of
    from runctl.core.targets import resolve_target

    rt = runtime()
    target = resolve_target(rt, on)
    scope = scope_of(argv, kind, opts.get("project_root"))
    is_local = target.instance.provider == "local"
    data = plan(rt, scope, opts.get("includes", ()), is_local=is_local)
    data["on"] = "local" if is_local else f"{target.instance.provider}:{target.instance.name}"

    def text() -> None:
        for row in data["files"]:
            click.echo(f"{human_size(row['size']):>9}  {row['path']}")

    emit(data, text)
    progress(data.get("summary") or data["note"])


def _checkpoint_store(uri: str | None, interval_s: float) -> dict[str, Any] | None:
    """Agent steps for --checkpoint-s3: restore before start, copy up while running/at exit."""
    if not uri:
        return None
    from runctl.core.hoststeps import cli_flags, s3_sync_down, s3_sync_up
    from runctl.storage.s3 import parse_uri

    cfg = runtime().config
    target = str(parse_uri(uri))
    host_cli = str(cfg.get("aws.host_cli"))
    flags = cli_flags(
        str(cfg.get("aws.region")), str(cfg.get("s3.endpoint_url") or cfg.get("aws.endpoint_url"))
    )
    return {
        "down": s3_sync_down(host_cli, target, "RUNCTL_CHECKPOINT_DIR", flags),
        "up": s3_sync_up(host_cli, target, "RUNCTL_CHECKPOINT_DIR", flags),
        "interval_s": interval_s,
    }


def _follow_to_end(job: Job, *, cancel_on_interrupt: bool) -> Job:
    from runctl.cli.logtext import log_writer
    from runctl.core import jobs as core

    rt = runtime()
    # Under --json stdout carries only the final JSON document; the live log goes to stderr.
    stream = sys.stderr if is_json() else sys.stdout
    out = log_writer(stream.buffer if is_json() else binary_stdout(), live=True,
                     terminal=stream.isatty())  # fmt: skip
    try:
        job, _ = core.follow(rt, job, cast(BinaryIO, out), progress)
        out.close()
    except KeyboardInterrupt:
        out.close()
        if cancel_on_interrupt:
            progress(f"\ninterrupted: cancelling {job.job_id} ...")
            job = core.cancel(rt, job)
            progress(f"{job.job_id} {job.state}")
            raise
        progress(f"\ndetached; {job.job_id} keeps running. Follow again with "
                 f"`runctl logs {job.job_id} -f`")  # fmt: skip
        sys.exit(0)
    if job.state == JobState.LOST:
        # The tail ended because the agent vanished; one last look settles the final state.
        job, _ = core.refresh_one(rt, job)
    return job


def _finish(job: Job) -> None:
    from runctl.core.jobs import exit_code_of

    code = exit_code_of(job)
    if is_json():
        emit(job_json(job))
    if code != 0:
        raise CommandFailedError(
            f"job {job.job_id} {job.state} with exit code {code}",
            exit_code=code,
            hint=f"see `runctl logs {job.job_id}`",
        )


# Option parsing stops at SCRIPT, as with `python` and `uv run`: runctl's options come before
# it and everything after it goes to the script (a `--` right after SCRIPT is dropped).
_RUN_CONTEXT: dict[str, Any] = {"allow_interspersed_args": False}


@click.command(context_settings=_RUN_CONTEXT)
@_with_submit_options
@watchdog_options
@recover_options
@click.option("-f", "--follow", is_flag=True, help="Stream the log until the job ends.")
@click.option("--wait", "wait_", is_flag=True, help="Wait for the job; exit with its code.")
@dry_run_option
@json_option
@click.argument("script")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def run(script: str, script_args: tuple[str, ...], follow: bool, wait_: bool,
        on: str | None, **opts: Any) -> None:  # fmt: skip
    """Run SCRIPT as a detached job; everything after SCRIPT goes to the script.

    \b
    .py files run with `uv run` when uv is on the host (PEP 723 inline deps honoured),
    else with the host's python; other files are executed directly.
    The project (nearest directory with .git or pyproject.toml) is synced to the host;
    a script outside any project is sent alone. Keys, credentials and .env files stay
    here unless --include names them; --dry-run lists what would be sent.

    \b
    Examples:
      runctl run train.py --epochs 2
      runctl run --on ssh:gpu1 -f train.py --lr 3e-4
      runctl run --on gpu1 --dry-run train.py
    """
    if opts.pop("dry_run"):
        _dry_run([script, *_split_args(script_args)], "script", on, opts)
        return
    if opts["recover"]:
        check_recoverable(on)
    job = _submit([script, *_split_args(script_args)], "script", on, opts)
    if opts["recover"]:
        manage(job, follow=follow, wait=wait_, opts=opts)
        return
    if follow:
        job = _follow_to_end(job, cancel_on_interrupt=False)
        _finish(job)
        return
    if wait_:
        from runctl.core.jobs import wait

        if not is_json():
            click.echo(job.job_id)
        job, _ = wait(runtime(), job, progress)
        _finish(job)
        return
    emit(job_json(job), lambda: click.echo(job.job_id))
    if not is_json():
        progress(f"follow with: runctl logs {job.job_id} -f")


@click.command(context_settings=_RUN_CONTEXT)
@_with_submit_options
@watchdog_options
@dry_run_option
@json_option
@click.argument("script")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def local(script: str, script_args: tuple[str, ...], on: str | None, **opts: Any) -> None:
    """Run SCRIPT here in the foreground; its exit code becomes runctl's. Ctrl-C cancels it.

    \b
    Takes run's options except --recover* and -f/--wait (it always follows); --on only
    as `--on local`: use `runctl run --on TARGET -f` for another machine.

    \b
    Examples:
      runctl local train.py --epochs 1
      runctl local --env SEED=1 --max-duration 2h train.py
    """
    if on not in (None, "local"):
        raise UsageError(
            f"`runctl local` runs on this machine only, not on {on!r}",
            hint=f"to run it there in the foreground: runctl run --on {on} -f {script} ...",
        )
    argv = [script, *_split_args(script_args)]
    if opts.pop("dry_run"):
        _dry_run(argv, "script", "local", opts)
        return
    job = _submit(argv, "script", "local", opts)
    _finish(_follow_to_end(job, cancel_on_interrupt=True))


@click.command(name="exec", context_settings=_RUN_CONTEXT)
@_with_submit_options
@dry_run_option
@json_option
@click.argument("command")
@click.argument("command_args", nargs=-1, type=click.UNPROCESSED)
def exec_(command: str, command_args: tuple[str, ...], on: str | None, **opts: Any) -> None:
    """Run COMMAND on a target (default local) in the foreground, in the synced project.

    Everything after COMMAND goes to it; runctl's options go before COMMAND.

    \b
    Examples:
      runctl exec --on ssh:gpu1 nvidia-smi -L
      runctl exec --on gpu1 -- python -c 'import torch; print(torch.__version__)'
    """
    if command == "--":
        if not command_args:
            raise UsageError("nothing to run", hint="runctl exec --on HOST -- COMMAND [ARGS]")
        command, command_args = command_args[0], command_args[1:]
    command_args = tuple(_split_args(command_args))  # `exec CMD -- ARGS` as before
    from runctl.cli.seed_compat import exec_kind

    kind = exec_kind(command)  # `exec train.py` runs it with python, as the seed did
    if opts.pop("dry_run"):
        _dry_run([command, *command_args], kind, on, opts)
        return
    job = _submit([command, *command_args], kind, on, opts)
    _finish(_follow_to_end(job, cancel_on_interrupt=True))


@click.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([s.value for s in JobState]),
    help="Only jobs in this state.",
)
@click.option("--on", "on", metavar="TARGET", help="Only jobs on this target (local, ssh:HOST).")
@click.option("--project", help="Only jobs of this project.")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--no-refresh", is_flag=True, help="Show state as last recorded; no host queries.")
@json_option
def jobs(states: tuple[str, ...], on: str | None, project: str | None, limit: int,
         no_refresh: bool) -> None:  # fmt: skip
    """List jobs, newest first, refreshing unfinished ones from their hosts.

    \b
    Examples:
      runctl jobs
      runctl jobs --state running --on ssh:gpu1
      runctl jobs prune --older-than 30d --dry-run
    """
    rt = runtime()
    provider = instance_id = None
    if on:
        provider, _, instance_id = on.partition(":")
        if provider == "local":
            instance_id = "local"
    found = rt.store.list_jobs(provider=provider, instance_id=instance_id or None,
                               project=project, limit=limit)  # fmt: skip
    errors: dict[str, str] = {}
    # Finished and lost jobs are never asked about again: with only those on screen, skip
    # importing the refresh machinery at all (start-up is most of a listing's time).
    if not no_refresh and any(not j.state.is_final and j.state != JobState.LOST for j in found):
        from runctl.core.jobs import refresh

        found, errors = refresh(rt, found)
    for where, why in errors.items():
        progress(f"warning: {where} unreachable ({why}); showing last known state")
    if states:
        found = [j for j in found if j.state.value in states]

    def text() -> None:
        if not found:
            click.echo("no jobs yet: start one with `runctl run SCRIPT`")
            return
        table(
            ["job", "state", "on", "command", "age", "exit"],
            [(j.job_id, j.state, _on(j), _short(j.argv), age(j.created_at), j.exit_code)
             for j in found],
        )  # fmt: skip

    emit([job_json(j) for j in found], text)


def _short(argv: Sequence[str], width: int = 40) -> str:
    import shlex

    text = shlex.join(argv)
    return text if len(text) <= width else text[: width - 1] + "…"


_SCHEDULER_KEYS = ("slurm_job_id", "slurm_state", "slurm_reason", "restarts", "nodes",
                   "hourly_usd")  # fmt: skip


@click.command()
@click.argument("job_ref", required=False)
@json_option
def status(job_ref: str | None) -> None:
    """Show JOB in detail, or (without JOB) hosts and recent jobs.

    \b
    Examples:
      runctl status
      runctl status train-3f9a2c
      runctl status train-3f9a2c --json
    """
    from runctl.core.jobs import (
        FINAL_PROBE_S,
        is_settled,
        never_started,
        refresh,
        refresh_one,
        settle_submitting,
    )

    rt = runtime()
    if job_ref is None:
        recent, errors = refresh(rt, rt.store.list_jobs(limit=10))
        active = [j for j in recent if not j.state.is_final]
        hosts = rt.store.list_hosts()
        data = {
            "active_jobs": [job_json(j) for j in active],
            "recent_jobs": [job_json(j) for j in recent],
            "hosts": [h.name for h in hosts],
            "unreachable": errors,
        }
        from runctl.cli.summary import show_summary, summary_data

        cost_data = summary_data(rt)
        data["costs"] = cost_data

        def overview() -> None:
            click.echo(f"{len(active)} active job(s), {len(hosts)} registered host(s)")
            show_summary(cost_data, collapse=True)
            if recent:
                click.echo("")
                table(["job", "state", "on", "age", "exit"],
                      [(j.job_id, j.state, _on(j), age(j.created_at), j.exit_code)
                       for j in recent])  # fmt: skip
            for where, why in errors.items():
                progress(f"warning: {where} unreachable ({why})")

        emit(data, overview)
        return
    job = settle_submitting(rt, rt.store.get_job(job_ref))
    detail: dict[str, Any] = {}
    checkpoints: list[dict[str, Any]] = []
    host_error = None
    if is_settled(job):
        # A past job answers from state; its host gets a few seconds to add log size and
        # checkpoints (a job that never started has nothing there to ask about).
        if not never_started(job):
            try:
                job, detail = refresh_one(rt, job, timeout=FINAL_PROBE_S)
                checkpoints = _list_checkpoints(job, timeout=FINAL_PROBE_S)
            except RunctlError as exc:
                host_error = exc.message
    elif job.state != JobState.SUBMITTING:
        job, detail = refresh_one(rt, job)
        checkpoints = _list_checkpoints(job)
    data = job_json(job, log_bytes=detail.get("log_bytes"),
                    heartbeat_age_s=detail.get("heartbeat_age_s"),
                    resume_from=detail.get("resume_from"), checkpoints=checkpoints)  # fmt: skip
    if detail.get("state") == "missing":  # the outcome stays recorded; the files are gone
        data["job_dir_missing"] = True
    if host_error:
        data["host_error"] = host_error
    # Where the files it wrote into its working directory went when that code version was
    # removed by a later sync (`get JOB workdir/...` fetches them).
    moved = detail.get("workdir_outputs") or job.spec.get("workdir_outputs")
    if moved:
        data["workdir_outputs"] = moved
    scheduler = {k: detail[k] for k in _SCHEDULER_KEYS if detail.get(k) is not None}
    if scheduler:  # batch-scheduled jobs (Slurm): its id, state, restarts, price
        data["scheduler"] = scheduler
        if "hourly_usd" in scheduler and detail.get("started_at"):
            # node-hours x price, from when the agent started on the nodes (not queue time)
            from datetime import UTC, datetime

            from runctl.core.costs import elapsed_s

            seconds = elapsed_s(detail["started_at"], detail.get("ended_at"),
                                datetime.now(UTC)) or 0.0  # fmt: skip
            data["cost_usd"] = round(float(scheduler["hourly_usd"]) * seconds / 3600.0, 6)

    def text() -> None:
        rows = [
            ("job", job.job_id), ("state", job.state), ("on", _on(job)),
            ("command", " ".join(job.argv)), ("exit code", job.exit_code),
            ("created", job.created_at), ("ended", job.ended_at), ("workdir", job.workdir),
            ("workdir files", f"{moved} (moved from the removed code version)" if moved else None),
            ("log", f"{job.job_dir}/log ({detail.get('log_bytes', '?')} bytes)"),
            ("resumed from", detail.get("resume_from")),
            ("checkpoints", f"{job.checkpoint_dir} ({len(checkpoints)})"),
        ]  # fmt: skip
        if data.get("note"):
            rows.append(("note", data["note"]))
        if data.get("job_dir_missing"):
            rows.append(("host", f"{job.job_dir} is gone from the host"))
        for key, value in rows:
            if value not in (None, ""):
                click.echo(f"{key:>13}: {value}")
        for ck in checkpoints[-5:]:
            click.echo(f"{'':>15}{_checkpoint_line(ck)}")
        if host_error:
            progress(f"warning: {host_error}; showing the recorded state")

    emit(data, text)


def _checkpoint_line(ck: dict[str, Any]) -> str:
    """One checkpoint as `status` shows it: name, step/epoch when known, size, and a flag
    when it is incomplete (being written or truncated: never offered for resume)."""
    parts = [Path(ck["path"]).name]
    if ck.get("step") is not None:
        parts.append(f"step {ck['step']}")
    elif ck.get("epoch") is not None:
        parts.append(f"epoch {ck['epoch']}")
    parts.append(f"{ck.get('bytes', 0):,} bytes")
    if ck.get("complete") is False:
        parts.append("INCOMPLETE" + (f" ({ck['problem']})" if ck.get("problem") else ""))
    return "  ".join(parts)


def _list_checkpoints(job: Job, *, timeout: float | None = 60) -> list[dict[str, Any]]:
    from runctl.core import agent
    from runctl.core.targets import instance_of_job

    target = instance_of_job(runtime(), job.provider, job.instance_id)
    transport = target.provider.connect(target.instance)
    found: list[dict[str, Any]] = agent.call_json(
        target.instance, transport, ["checkpoints", "--dir", job.checkpoint_dir], timeout=timeout
    )
    return found


@click.command()
@click.argument("job_ref")
@click.option("-f", "--follow", is_flag=True, help="Keep streaming until the job ends.")
@click.option("-n", "--tail", "tail", type=click.IntRange(min=1), help="Only the last N lines.")
@click.option("--node", type=click.IntRange(min=0), help="Multi-node job: this rank's log (0).")
@json_option
def logs(job_ref: str, follow: bool, tail: int | None, node: int | None) -> None:
    """Print JOB's log (stdout+stderr). Reconnects by byte offset if the host drops.

    \b
    Examples:
      runctl logs train-3f9a2c
      runctl logs train-3f9a2c -f
      runctl logs train-3f9a2c -n 50
    """
    job = runtime().store.get_job(job_ref)
    if node:
        from runctl.core.multinode import node_job  # only here: it imports the sync machinery

        job = node_job(job, node)
    show_log(job, follow=follow, last_lines=tail or 0)


def show_log(
    job: Job, *, follow: bool, last_lines: int, log_key: str = "log", **extra: Any
) -> None:
    """Print ``job``'s log (all of it, or the last N lines), following it if asked.

    Under --json the log is collected into one JSON document (under ``log_key``, with
    ``extra``); otherwise it streams to stdout and Ctrl-C stops following, not the job.
    Shared by `logs` and the providers' `monitor` commands.
    """
    from runctl.cli.logtext import CollapsedWriter, log_writer
    from runctl.core import jobs as core

    rt = runtime()
    if is_json():
        import io

        buffer = io.BytesIO()
        collapsed = CollapsedWriter(buffer)  # progress bars as they last looked, plain text
        job, _ = core.follow(rt, job, cast(BinaryIO, collapsed), progress, follow=follow,
                             last_lines=last_lines)  # fmt: skip
        collapsed.close()
        extra[log_key] = buffer.getvalue().decode(errors="replace")
        emit(job_json(job, **extra))
        return
    # Only `-f` on a terminal shows bars moving; everything else gets each line's last state.
    out = log_writer(binary_stdout(), live=follow, terminal=sys.stdout.isatty())
    try:
        job, _ = core.follow(rt, job, cast(BinaryIO, out), progress, follow=follow,
                             last_lines=last_lines)  # fmt: skip
    except KeyboardInterrupt:
        out.close()
        progress(f"\nstopped following; {job.job_id} keeps running")
        sys.exit(0)
    out.close()
    if follow:
        progress(f"{job.job_id} {job.state} (exit code {job.exit_code})")


@click.command(name="wait")
@click.argument("job_ref")
@click.option("--timeout", type=seconds(), metavar="SECONDS",
              help="Give up after this long (exit 124; 0: check once); the job keeps "
              "running.")  # fmt: skip
@json_option
def wait(job_ref: str, timeout: float | None) -> None:
    """Wait for JOB to end and exit with its exit code (128+N if killed by signal N).

    \b
    Examples:
      runctl wait train-3f9a2c
      runctl wait train-3f9a2c --timeout 600
    """
    from runctl.core import jobs as core

    rt = runtime()
    job = rt.store.get_job(job_ref)
    job, _ = core.wait(rt, job, progress, timeout_s=timeout)
    if not core.is_settled(job):
        emit(job_json(job, timed_out=True))
        raise CommandFailedError(
            f"{job.job_id} still {job.state} after {timeout:g}s",
            exit_code=TIMEOUT_EXIT,
            hint=f"wait longer with `runctl wait {job.job_id}`",
        )
    if not is_json():
        progress(f"{job.job_id} {job.state} (exit code {job.exit_code})")
    _finish(job)


@click.command()
@click.argument("job_ref")
@click.option("--grace", type=seconds(), metavar="SECONDS",
              help="Seconds between SIGTERM and SIGKILL (default: the job's --grace, else "
              "jobs.grace_s).")  # fmt: skip
@json_option
def cancel(job_ref: str, grace: float | None) -> None:
    """Cancel JOB: SIGTERM to its process group, then SIGKILL after the grace period.

    \b
    Examples:
      runctl cancel train-3f9a2c
      runctl cancel train-3f9a2c --grace 60
    """
    from runctl.core import jobs as core

    rt = runtime()
    job = rt.store.get_job(job_ref)
    if job.state.is_final or core.never_started(job):
        progress(f"{job.job_id} already {job.state}")
    else:
        job = core.cancel(rt, job, grace_s=grace)
    emit(job_json(job), f"{job.job_id} {job.state}")


@click.command()
@click.argument("job_ref")
@click.argument("path")
@click.argument("dest", required=False, type=click.Path(path_type=Path))
@click.option("--checkpoints", is_flag=True, help="PATH is relative to the checkpoint dir.")
@click.option("--force", is_flag=True, help="Overwrite DEST if it exists.")
@json_option
def get(job_ref: str, path: str, dest: Path | None, checkpoints: bool, force: bool) -> None:
    """Download PATH (relative to the job dir, e.g. outputs/metrics.json) to DEST.

    \b
    Examples:
      runctl get train-3f9a2c outputs/metrics.json
      runctl get train-3f9a2c log ./train.log
      runctl get --checkpoints train-3f9a2c . ./ckpts
    """
    from runctl.core import jobs as core

    rt = runtime()
    job = rt.store.get_job(job_ref)
    rel = core.check_relative(path)
    target = dest if dest is not None else Path(Path(rel).name or "download")
    with waiting(f"downloading {rel} from {job.job_id} ({_on(job)})"):
        written = core.fetch(rt, job, rel, target, root="checkpoints" if checkpoints else "job",
                             overwrite=force)  # fmt: skip
    emit({"job_id": job.job_id, "path": rel, "dest": str(written)}, f"{written}")
