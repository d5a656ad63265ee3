"""``workflow train``: create a machine, sync, train, follow, fetch outputs, terminate.

One call runs the whole life of a training run. The machine is created (AWS, RunPod, Lyceum)
or an existing target is used (``ssh:HOST``, ``local``, ``aws:ID``); the job is submitted with
the usual runner, then a recovery controller (``core.recover``) follows it: it streams the log
and, with ``--recover``, replaces an interrupted machine and resumes the job from its newest
checkpoint. When the job ends its ``outputs/`` are fetched and every machine the workflow
created is terminated (``--keep`` keeps them).

Failure or Ctrl-C cleans up the same way, after asking through ``confirm_cleanup`` (the CLI
asks on a terminal; it answers yes for ``--yes`` and when nobody can be asked). The summary
lists each machine with what it cost (launch price x time billed).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from runctl.core import jobs as core_jobs
from runctl.core import launchers, recover
from runctl.core.targets import Target, resolve_target
from runctl.errors import NotFoundError, RunctlError
from runctl.models import Instance, Job, JobState
from runctl.runtime import Runtime

Progress = Callable[[str], None]
Confirm = Callable[[str], bool]


@dataclass
class WorkflowRequest:
    submit: core_jobs.SubmitRequest
    on: str  # a cloud to create on ("aws", "runpod", "lyceum") or an existing target
    launch: dict[str, Any] = field(default_factory=dict)  # create options (clouds)
    recover: bool = False
    max_restarts: int = 3
    policy: str = "same"
    watchdog: dict[str, Any] | None = None  # a WatchdogPolicy as a dict
    keep: bool = False
    output_dir: Path | None = None
    poll_s: float = 2.0

    @property
    def creates(self) -> bool:
        return self.on in launchers.CLOUDS


@dataclass
class Workflow:
    """One run of ``workflow train``; ``run()`` returns the summary (see ``summary``)."""

    runtime: Runtime
    request: WorkflowRequest
    progress: Progress
    out: BinaryIO | None = None  # where the job's log is streamed
    confirm_spot: Confirm | None = None  # on-demand fallback question (None: --yes decides)
    confirm_cleanup: Confirm = lambda _question: True
    workflow_id: str = field(default_factory=lambda: f"wf-{secrets.token_hex(4)}")
    created: list[Instance] = field(default_factory=list)  # machines this workflow made
    job: Job | None = None
    outcome: recover.Outcome | None = None
    outputs: Path | None = None
    error: str | None = None
    kept: bool = False
    _started: float = field(default_factory=time.monotonic)

    def run(self) -> dict[str, Any]:
        """Run the workflow; re-raises a failure (or Ctrl-C) after cleaning up."""
        self._event("workflow.started", on=self.request.on, argv=list(self.request.submit.argv))
        try:
            target = self._target()
            self._start_job(target)
            self._follow()
            self._fetch_outputs()
        except BaseException as exc:
            self.error = _describe(exc)
            self._event("workflow.failed", error=self.error)
            self._cleanup(interrupted=isinstance(exc, KeyboardInterrupt))
            gone = self.created and all(self._is_gone(i) for i in self.created)
            if isinstance(exc, RunctlError) and gone and not self.kept:
                # The error was raised while the machine still ran ("still billed");
                # cleanup has terminated it since: say what is true now.
                exc.hint = "the machine was terminated; nothing is billed any more"
            raise
        self._cleanup(interrupted=False, ended=True)
        return self.summary()

    # ------------------------------------------------------------------------ steps

    def _target(self) -> Target:
        rt, request = self.runtime, self.request
        if not request.creates:
            return resolve_target(rt, request.on)
        instance = launchers.launch(
            rt, request.on, request.launch, self.progress,
            on_created=self._created, confirm=self.confirm_spot,
        )  # fmt: skip
        provider = launchers.make_provider(rt, request.on, request.launch, self.progress)
        return Target(provider, instance)

    def _created(self, instance: Instance) -> None:
        self.created.append(instance)
        self._event("workflow.created", instance=f"{instance.provider}:{instance.instance_id}")

    def _start_job(self, target: Target) -> None:
        rt, request = self.runtime, self.request
        watchdog = self._watchdog_policy(target.instance)
        spec = None
        if request.recover or request.creates:
            provider = target.instance.provider
            launch = request.launch if request.creates else None
            launch = launch or recover.launch_of_instance(
                rt, provider, target.instance.instance_id
            )
            restarts = request.max_restarts if request.recover else 0
            spec = recover.recover_spec(provider, launch, max_restarts=restarts,
                                        policy=request.policy, watchdog=watchdog)  # fmt: skip
        recover.arm_watchdog(rt, target, watchdog, self.progress)  # and spot notices
        submitted = core_jobs.submit(rt, target, request.submit, self.progress)
        self.job = submitted.job
        self.progress(f"started {self.job.job_id} on {target.instance.provider}:"
                      f"{target.instance.instance_id} in {submitted.seconds:.2f}s")  # fmt: skip
        if spec is not None:
            self.job = recover.enable(rt, self.job, spec)
        self._event("workflow.submitted", job_id=self.job.job_id)

    def _watchdog_policy(self, instance: Instance) -> dict[str, Any] | None:
        """The watchdog policy asked for; with --budget on a machine made here, a max
        duration of what the budget buys of it."""
        policy = dict(self.request.watchdog or {})
        budget = self.request.submit.budget_usd
        if self.request.creates and budget and instance.hourly_usd:
            affordable_s = budget / instance.hourly_usd * 3600.0
            policy["max_duration_s"] = min(policy.get("max_duration_s") or affordable_s,
                                           affordable_s)  # fmt: skip
        return policy or None

    def _follow(self) -> None:
        assert self.job is not None
        rt = self.runtime
        with recover.controller_lock(rt, self.job.job_id):
            controller = recover.Controller(
                rt, self.job, self.progress, poll_s=self.request.poll_s, out=self.out,
                max_restarts=None if self.job.spec.get("recover") else 0,
                on_instance=self._created,
            )  # fmt: skip
            self.outcome = controller.run()
        self.job = self.outcome.job

    def _fetch_outputs(self) -> None:
        job = self.job
        assert job is not None and self.outcome is not None
        if self.outcome.result != "finished":
            return  # the machine is gone or broken: nothing to fetch from it
        dest = self.request.output_dir or Path("runctl-outputs") / self.outcome.root_job
        try:
            self.outputs = core_jobs.fetch(self.runtime, job, "outputs", dest.absolute(),
                                           overwrite=True)  # fmt: skip
        except NotFoundError:
            self.progress(f"{job.job_id} wrote no outputs/")
            return
        self.progress(f"outputs of {job.job_id} copied to {self.outputs}")
        self._event("workflow.fetched", job_id=job.job_id, dest=str(self.outputs))

    # ---------------------------------------------------------------------- cleanup

    def _cleanup(self, *, interrupted: bool, ended: bool = False) -> None:
        """Cancel a job still running and terminate the machines made, unless kept."""
        self.job = self._current_job()
        alive = [i for i in self.created if not self._is_gone(i)]
        running = self.job is not None and not ended and not self._job_final()
        if self.request.keep:
            self.kept = bool(alive)
            if alive or running:
                self._hint_kept(alive)
            return
        if not alive and not running:
            return
        if not ended:
            what = ([f"cancel {self.job.job_id}"] if running and self.job else []) + [
                f"terminate {i.provider}:{i.instance_id}" for i in alive
            ]  # fmt: skip
            spent = recover.spent_usd(self.runtime, [_key(i) for i in self.created])
            question = f"{', '.join(what)} (${spent:.2f} spent so far)?"
            if not self.confirm_cleanup(question):
                self.kept = bool(alive)
                self._hint_kept(alive)
                return
        if running and self.job is not None:
            self._cancel()
        for instance in alive:
            self._terminate(instance)
        if interrupted:
            self._event("workflow.cleaned_up", reason="interrupted")

    def _cancel(self) -> None:
        assert self.job is not None
        try:
            self.progress(f"cancelling {self.job.job_id} ...")
            self.job = core_jobs.cancel(self.runtime, self.job)
        except RunctlError as exc:
            self.progress(f"warning: could not cancel {self.job.job_id}: {exc.message}")

    def _terminate(self, instance: Instance) -> None:
        provider = launchers.make_provider(self.runtime, instance.provider,
                                           self.request.launch, self.progress)  # fmt: skip
        timeout = float(self.runtime.config.get(f"{instance.provider}.wait_timeout_s"))
        self.progress(f"terminating {instance.provider}:{instance.instance_id} ...")
        try:
            launchers.terminate_verified(self.runtime, provider, instance.instance_id,
                                         timeout_s=timeout, progress=self.progress)  # fmt: skip
        except RunctlError as exc:
            self.progress(f"warning: {exc.message}; hint: {exc.hint}")
            return
        self._event("workflow.terminated", instance=_key(instance))

    def _is_gone(self, instance: Instance) -> bool:
        record = self.runtime.store.get_instance_record(instance.provider, instance.instance_id)
        return record is not None and record["state"] == "terminated"

    def _current_job(self) -> Job | None:
        """The latest attempt (after a Ctrl-C during a recovery it is no longer the first)."""
        if self.job is None or not self.job.spec.get("recover"):
            return self.job
        return recover.attempts(self.runtime, recover.root_of(self.runtime, self.job))[-1]

    def _job_final(self) -> bool:
        if self.job is None:
            return True
        job = self.runtime.store.get_job(self.job.job_id)
        return job.state.is_final or job.state == JobState.LOST

    def _hint_kept(self, alive: list[Instance]) -> None:
        for instance in alive:
            self.progress(f"kept {instance.provider}:{instance.instance_id} (still billed); "
                          f"terminate it with `runctl {instance.provider} terminate "
                          f"{_id_flag(instance.provider)}{instance.instance_id}`")  # fmt: skip
        if self.job is not None and not self._job_final():
            job_id = self.job.job_id
            self.progress(f"{job_id} keeps running: `runctl logs {job_id} -f`; "
                          f"manage it with `runctl recover {job_id} --daemon`")  # fmt: skip

    # ---------------------------------------------------------------------- summary

    def summary(self) -> dict[str, Any]:
        """What ran where, how it ended, and what each machine cost."""
        rt = self.runtime
        outcome = self.outcome
        job = self.job = self._current_job()
        chain = [job] if job else []
        if job is not None and job.spec.get("recover"):
            chain = recover.attempts(rt, recover.root_of(rt, job))
        machines = [self._machine(i) for i in self.created]
        took_s = time.monotonic() - self._started
        cost: float | None = sum(m["cost_usd"] or 0.0 for m in machines)
        if not self.created and job is not None:
            cost = _host_cost(rt, job, took_s)  # the host was ours for the whole run
        data: dict[str, Any] = {
            "workflow_id": self.workflow_id,
            "on": self.request.on,
            "argv": list(self.request.submit.argv),
            "job_id": job.job_id if job else None,
            "root_job": chain[0].job_id if chain else None,
            "jobs": [j.job_id for j in chain],
            "state": str(job.state) if job else None,
            "exit_code": job.exit_code if job else None,
            "result": outcome.result if outcome else "failed",
            "restarts": max(len(chain) - 1, 0),
            "interruption": outcome.reason if outcome else None,
            "outputs": str(self.outputs) if self.outputs else None,
            "instances": machines,
            "cost_usd": None if cost is None else round(cost, 6),
            "duration_s": round(took_s, 2),
            "kept": self.kept,
            "error": self.error,
        }
        self._event("workflow.finished", state=data["state"], cost_usd=data["cost_usd"],
                    restarts=data["restarts"])  # fmt: skip
        return data

    def _machine(self, instance: Instance) -> dict[str, Any]:
        from runctl.core.costs import instance_cost

        record = self.runtime.store.get_instance_record(instance.provider, instance.instance_id)
        if record is None:
            return {"id": _key(instance), "hourly_usd": instance.hourly_usd, "cost_usd": None,
                    "spot": None, "state": str(instance.state)}  # fmt: skip
        history = self.runtime.store.instance_history(int(record["resource_id"]))
        cost = instance_cost(record, history, datetime.now(UTC))
        return {"id": _key(instance), "name": record["name"], "hourly_usd": cost.hourly_usd,
                "cost_usd": round(cost.total_usd, 6), "billed_s": round(cost.billed_s, 1),
                "spot": bool(record.get("spot")), "state": record["state"]}  # fmt: skip

    def _event(self, kind: str, **data: Any) -> None:
        self.runtime.store.add_event(kind, self.workflow_id, data)


def _host_cost(runtime: Runtime, job: Job, seconds: float) -> float | None:
    """An existing target for ``seconds``: local costs nothing, an SSH host (or a machine
    made earlier) its $/h; None when no price is known."""
    if job.provider == "local":
        return 0.0
    if job.provider == "ssh":
        host = runtime.store.get_host(job.instance_id)
        hourly = host.hourly_usd if host else None
    else:
        record = runtime.store.get_instance_record(job.provider, job.instance_id)
        hourly = (record or {}).get("hourly_usd")
    return None if hourly is None else float(hourly) * seconds / 3600.0


def _key(instance: Instance) -> str:
    return f"{instance.provider}:{instance.instance_id}"


def _id_flag(provider: str) -> str:
    return {"runpod": "--pod-id ", "lyceum": "--vm-id "}.get(provider, "")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, RunctlError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
