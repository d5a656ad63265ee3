"""The console entry point, kept free of click so ``runctl`` / ``runctl --help`` start fast.

Importing click costs more than starting Python itself, so the bare top-level help is rendered
here from the same command table the click group uses (a test checks both render the same
text); every other invocation imports the real CLI.
"""

from __future__ import annotations

import os
import sys

from runctl import __version__

# name -> ("module:attribute", one-line help); help lists them in this order.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("runctl.cli.jobs:run", "Run a script as a detached job (local, ssh:HOST, ...)."),
    "local": ("runctl.cli.jobs:local", "Run a script on this machine in the foreground."),
    "exec": ("runctl.cli.jobs:exec_", "Run a command on a target in the foreground."),
    "jobs": ("runctl.cli.prune:jobs", "List jobs; `jobs prune` deletes old finished ones."),
    "status": ("runctl.cli.jobs:status", "Show one job, or an overview of hosts and jobs."),
    "logs": ("runctl.cli.jobs:logs", "Print a job's log; --follow to stream it."),
    "wait": ("runctl.cli.jobs:wait", "Wait for a job; exit with its exit code."),
    "cancel": ("runctl.cli.jobs:cancel", "Stop a job: SIGTERM, grace period, SIGKILL."),
    "get": ("runctl.cli.jobs:get", "Download a file or directory from a job."),
    "workflow": (
        "runctl.cli.workflow:workflow",
        "Whole runs: create, train, fetch outputs, terminate.",
    ),
    "recover": ("runctl.cli.recover:recover", "Restart a job on a new machine when interrupted."),
    "events": ("runctl.cli.events:events", "What happened: job states, recoveries, watchdogs."),
    "hosts": ("runctl.cli.hosts:hosts", "Register and list SSH hosts."),
    "aws": ("runctl.cli.aws:aws", "EC2 instances: create, train, monitor, stop, EBS volumes."),
    "docker": ("runctl.cli.docker:docker", "Build and push container images (ECR, any registry)."),
    "runpod": ("runctl.cli.runpod:runpod", "Create, train on, monitor and stop RunPod pods."),
    "lyceum": ("runctl.cli.lyceum:lyceum", "Create, train on, monitor and delete Lyceum VMs."),
    "monitor": ("runctl.cli.monitor:monitor", "Watch a local log file and checkpoint directory."),
    "s3": ("runctl.cli.s3:s3", "Upload, download, sync, list and clean up S3 objects."),
    "transfer": ("runctl.cli.transfer:transfer", "Copy data between local paths and S3."),
    "checkpoint": (
        "runctl.cli.checkpoint:checkpoint",
        "List, inspect, prune and resume from checkpoints.",
    ),
    "resources": (
        "runctl.cli.resources:resources",
        "Costs, inventory, insights, budgets, cleanup of runctl machines.",
    ),
    "reconcile": (
        "runctl.cli.resources_act:reconcile",
        "Find orphaned, vanished and drifted cloud instances.",
    ),
    "watchdog": (
        "runctl.cli.watchdog:watchdog",
        "Host watchdog: max duration, idle, spot notices.",
    ),
    "top": ("runctl.cli.top:top", "Live dashboard: machines, jobs, utilisation, costs."),
    "doctor": ("runctl.cli.doctor:doctor", "Check RUNCTL_HOME, the state DB, hosts; --fix."),
    "init": ("runctl.cli.config_cmd:init", "Write a commented config file."),
    "config": ("runctl.cli.config_cmd:config", "Show, set and validate configuration."),
    "completion": ("runctl.cli.completion:completion", "Print the shell completion script."),
}

ROOT_HELP = """runctl — run ML training jobs wherever you have compute.

\b
Quick start:
  runctl run --follow examples/train_mnist.py --epochs 3
  runctl jobs
  runctl logs JOB --follow"""

_OPTIONS = [
    ("-c, --config FILE", "Config file to use on top of the user and project files."),
    ("--json", "Print JSON on stdout (every command)."),
    ("-v, --verbose", "More detail on stderr: targets, API calls, commands run."),
    ("--version", "Show the version and exit."),
    ("-h, --help", "Show this message and exit."),
]


def render_root_help() -> str:
    """The top-level help, laid out as click lays it out."""
    body = ROOT_HELP.replace("\b\n", "")
    lines = ["Usage: runctl [OPTIONS] COMMAND [ARGS]...", ""]
    lines += [f"  {ln}" if ln else "" for ln in body.splitlines()]
    lines += ["", "Options:"]
    width = max(len(o) for o, _ in _OPTIONS)
    lines += [f"  {o.ljust(width)}  {h}" for o, h in _OPTIONS]
    lines += ["", "Commands:"]
    width = max(len(n) for n in COMMANDS)
    lines += [f"  {n.ljust(width)}  {h}" for n, (_, h) in COMMANDS.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    args = sys.argv[1:]
    # A shell asking for completions calls `runctl` with no arguments: that is click's job.
    completing = "_RUNCTL_COMPLETE" in os.environ
    if args in ([], ["--help"], ["-h"]) and not completing:
        sys.stdout.write(render_root_help())
        sys.exit(0)
    if args == ["--version"]:
        sys.stdout.write(f"runctl, version {__version__}\n")
        sys.exit(0)
    from runctl.cli import main as cli_main

    cli_main(args)
