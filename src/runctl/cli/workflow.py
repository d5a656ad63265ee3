"""``runctl workflow train``: create → sync → train → follow → fetch outputs → terminate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from runctl.cli.output import duration, emit, is_json, json_option, progress, runtime
from runctl.cli.params import seconds, usd
from runctl.cli.secret_options import resolve_secrets, with_secret_options
from runctl.cli.watchdog_options import policy_from_options, watchdog_options
from runctl.errors import CommandFailedError, NotFoundError, UsageError

# Same convention as `runctl run`: options anywhere before `--`, script arguments after it.
_RUN_CONTEXT: dict[str, Any] = {}


@click.group()
def workflow() -> None:
    """Whole training runs in one command: machine, job, outputs, cleanup.

    \b
    Examples:
      runctl workflow train --on aws --instance-type g5.xlarge --spot train.py
      runctl workflow train --on ssh:gpu1 train.py -- --epochs 3
    """


_OPTIONS = [
    click.option("--on", "on", metavar="TARGET",
                 help="aws, runpod or lyceum: create a machine for this run; or an existing "
                 "target: ssh:HOST, local, aws:ID (default: defaults.on)."),
    click.option("--instance-type", metavar="TYPE", help="EC2 instance type (aws): g5.xlarge."),
    click.option("--gpu-type", metavar="GPU",
                 help="RunPod GPU type id, or Lyceum hardware profile (h100, a100 ...)."),
    click.option("--gpu-count", type=click.IntRange(1, 16), default=1, show_default=True),
    click.option("--image", help="Container image (runpod; default: runpod.default_image)."),
    click.option("--region", help="AWS region (default: aws.region)."),
    click.option("--spot", is_flag=True, help="A spot machine (cheaper, may be interrupted)."),
    click.option("--recover", is_flag=True,
                 help="Managed mode: on a spot interruption or a vanished machine, terminate it, "
                 "launch a replacement and resume from the newest checkpoint (give "
                 "--checkpoint-s3 so checkpoints outlive the machine)."),
    click.option("--max-restarts", type=click.IntRange(min=0), default=3, show_default=True,
                 help="With --recover: replacements before giving up."),
    click.option("--recover-policy", type=click.Choice(["same", "on-demand", "other-az",
                 "other-region"]), default="same", show_default=True,
                 help="The replacement: same kind, on-demand, another zone or region (aws)."),
    click.option("--regions", metavar="R1,R2", help="Regions for --recover-policy other-region."),
    click.option("--checkpoint-s3", metavar="S3_URI",
                 help="Checkpoint store: restored before start, copied while the job runs and "
                 "when it ends (also on a spot notice). Needs the AWS CLI on the host."),
    click.option("--checkpoint-sync-s", type=seconds(), default=300,
                 show_default=True, help="Seconds between copies to --checkpoint-s3."),
    click.option("--budget", type=usd(), metavar="USD",
                 help="Cost limit: no restart once the machines cost this much; a machine "
                 "created here stops itself when it alone reaches it."),
    click.option("--allow-concurrent", is_flag=True,
                 help="On an existing instance (--on aws:ID): start even if another job "
                 "runs there (refused by default, as by `aws train`)."),
    click.option("--name", help="Job name (default: the script's name)."),
    click.option("--project", help="Project name (default: the project root's name)."),
    click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Extra environment."),
    click.option("--include", "includes", multiple=True, metavar="PATTERN",
                 help="Sync this ignored path too (gitignore syntax; repeatable)."),
    click.option("--install-deps/--no-install-deps", default=None,
                 help="Install requirements.txt on the host (default: yes on remote hosts)."),
    click.option("--grace", type=seconds(), metavar="SECONDS", help="SIGTERM-to-SIGKILL grace."),
    click.option("--keep", is_flag=True,
                 help="Keep the machines created (no terminate at the end or on failure)."),
    click.option("-y", "--yes", is_flag=True,
                 help="Never ask: clean up on failure or Ctrl-C, and accept on-demand when spot "
                 "is unavailable."),
    click.option("--output", "output_dir", type=click.Path(file_okay=False, path_type=Path),
                 help="Where the job's outputs/ is copied (default ./runctl-outputs/JOB)."),
    click.option("--poll", "poll_s", type=seconds(0.1), default=2.0,
                 show_default=True, metavar="SECONDS",
                 help="How often the log and the machine are checked."),
]  # fmt: skip


def _existing_cloud_machine(on: str) -> bool:
    """--on aws:ID: an instance that may already be training (like `aws train`)."""
    kind, _, rest = on.partition(":")
    return kind == "aws" and bool(rest)


def _with_options(fn: Any) -> Any:
    for option in reversed(_OPTIONS):
        fn = option(fn)
    return with_secret_options(fn)


@workflow.command(name="train", context_settings=_RUN_CONTEXT)
@_with_options
@watchdog_options
@json_option
@click.argument("script")
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
def workflow_train(script: str, script_args: tuple[str, ...], **opts: Any) -> None:
    """Create a machine, run SCRIPT there, follow it, fetch its outputs/, terminate it.

    \b
    Steps: create (--on aws|runpod|lyceum; an existing ssh:HOST, local or aws:ID is used
    as it is and never terminated) -> sync the project -> start SCRIPT -> stream its log ->
    copy its $RUNCTL_OUTPUT_DIR to --output -> terminate -> print a summary with the cost
    of every machine (--json: one JSON document on stdout, the log on stderr).
    With --recover the run survives spot interruptions and vanished machines.

    \b
    On failure or Ctrl-C the running job is cancelled and the machines created are
    terminated. On a terminal you are asked first (default yes); with --yes, with --json,
    or without a terminal (stdin/stderr not a TTY) it happens without asking. --keep keeps
    the machines (and on Ctrl-C leaves the job running).

    \b
    Examples:
      runctl workflow train --on aws --instance-type g5.xlarge --spot train.py
      runctl workflow train --on runpod --gpu-type 'NVIDIA A40' train.py -- --epochs 3
      runctl workflow train --on ssh:gpu1 --keep train.py
    """
    from runctl.cli.jobs import _checkpoint_store, _parse_env, _split_args
    from runctl.core.jobs import SubmitRequest
    from runctl.core.workflow import Workflow, WorkflowRequest

    if not Path(script).is_file():  # before a machine is paid for
        raise NotFoundError(
            f"script not found: {script}", hint="give a path relative to the current directory"
        )
    rt = runtime()
    secrets, env_file = resolve_secrets(opts["secrets"], opts["env_file"])
    if not opts["on"] and opts["instance_type"]:
        # The seed's form: `workflow train SCRIPT --instance-type T` always meant EC2.
        from runctl.cli.seed_compat import note

        note(f"workflow train --instance-type {opts['instance_type']}",
             f"workflow train --on aws --instance-type {opts['instance_type']}")  # fmt: skip
        opts["on"] = "aws"
    on = (opts["on"] or str(rt.config.get("defaults.on")) or "local").strip()
    policy = policy_from_options(**opts)
    request = WorkflowRequest(
        submit=SubmitRequest(
            argv=[script, *_split_args(script_args)], name=opts["name"],
            project=opts["project"], env=_parse_env(opts["env"]), includes=opts["includes"],
            secrets=secrets, env_file=env_file,
            install_requirements=opts["install_deps"], grace_s=opts["grace"],
            checkpoint_store=_checkpoint_store(opts["checkpoint_s3"], opts["checkpoint_sync_s"]),
            budget_usd=opts["budget"], yes=opts["yes"],  # a big code sync asks nothing either
            exclusive_machine=_existing_cloud_machine(on) and not opts["allow_concurrent"],
        ),
        on=on, launch=_launch_options(on, opts), recover=opts["recover"],
        max_restarts=opts["max_restarts"], policy=opts["recover_policy"],
        watchdog=None if policy is None else _as_dict(policy),
        keep=opts["keep"], output_dir=opts["output_dir"], poll_s=opts["poll_s"],
    )  # fmt: skip
    if opts["recover"] and on.partition(":")[0] not in ("aws", "runpod", "lyceum"):
        raise UsageError(
            f"--recover needs a machine runctl can replace, not {on}",
            hint="use --on aws|runpod|lyceum (or a machine runctl created: --on aws:ID)",
        )
    if opts["recover"] and not opts["checkpoint_s3"]:
        progress("note: without --checkpoint-s3 a replacement machine starts without the "
                 "checkpoints of the one it replaces")  # fmt: skip
    interactive = not is_json() and sys.stdin.isatty() and sys.stderr.isatty()
    flow = Workflow(
        rt, request, progress,
        out=sys.stderr.buffer if is_json() else sys.stdout.buffer,
        confirm_spot=_ask if interactive and not opts["yes"] else None,
        confirm_cleanup=_ask_cleanup if interactive and not opts["yes"] else _yes,
    )  # fmt: skip
    try:
        summary = flow.run()
    except BaseException:
        if is_json():
            emit(flow.summary())
        raise
    emit(summary, lambda: _show(summary))
    _exit_like_the_job(summary)


def _launch_options(on: str, opts: dict[str, Any]) -> dict[str, Any]:
    """What to create, from the flags; {} for an existing target."""
    if on == "aws":
        if not opts["instance_type"]:
            raise UsageError(
                "--on aws needs --instance-type", hint="e.g. --instance-type g5.xlarge"
            )
        regions = [r.strip() for r in (opts["regions"] or "").split(",") if r.strip()]
        region = opts["region"] or (regions[0] if regions else None)
        return {"instance_type": opts["instance_type"], "spot": opts["spot"], "region": region,
                "regions": regions, "yes": opts["yes"], "project": opts["project"]}  # fmt: skip
    if on == "runpod":
        return {"gpu": opts["gpu_type"], "gpu_count": opts["gpu_count"], "image": opts["image"],
                "spot": opts["spot"], "name": opts["name"]}  # fmt: skip
    if on == "lyceum":
        return {"profile": opts["gpu_type"], "gpu_count": opts["gpu_count"],
                "spot": opts["spot"], "name": opts["name"]}  # fmt: skip
    for flag in ("instance_type", "gpu_type", "image", "region", "regions"):
        if opts[flag]:
            raise UsageError(
                f"--{flag.replace('_', '-')} only applies when the workflow creates the machine",
                hint="use --on aws, --on runpod or --on lyceum",
            )
    if opts["spot"]:
        raise UsageError("--spot only applies when the workflow creates the machine",
                         hint="use --on aws, --on runpod or --on lyceum")  # fmt: skip
    return {}


def _as_dict(policy: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(policy)


def _ask(question: str) -> bool:
    return click.confirm(question, default=False, err=True)


def _ask_cleanup(question: str) -> bool:
    try:
        return click.confirm(question.capitalize(), default=True, err=True)
    except (click.Abort, KeyboardInterrupt):
        return True  # a second Ctrl-C at the question: clean up rather than leave a bill


def _yes(_question: str) -> bool:
    return True


def _show(summary: dict[str, Any]) -> None:
    parts = [f"{summary['job_id']} {summary['state']}"]
    if summary.get("restarts"):
        parts.append(f"{summary['restarts']} restart(s)")
    parts.append(f"in {duration(summary['duration_s'])}")
    if summary.get("cost_usd") is not None:
        parts.append(f"cost ${summary['cost_usd']:.4f}")
    progress(", ".join(parts))
    for machine in summary["instances"]:
        cost = machine.get("cost_usd")
        price = "" if cost is None else f" ${cost:.4f}"
        progress(f"  {machine['id']} {machine['state']}{price}")
    if summary.get("outputs"):
        progress(f"  outputs: {summary['outputs']}")


def _exit_like_the_job(summary: dict[str, Any]) -> None:
    if summary["state"] == "succeeded":
        return
    code = summary.get("exit_code") or 1
    raise CommandFailedError(
        f"job {summary['job_id']} {summary['state']}"
        + (
            f" ({summary['interruption']}, no restarts left)"
            if summary.get("interruption")
            else ""
        )
        + f" with exit code {code}",
        exit_code=code,
        hint=f"see `runctl logs {summary['job_id']}`",
    )
