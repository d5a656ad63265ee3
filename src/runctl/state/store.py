"""Typed access to the state tables. One short transaction per write; reads are lock-free."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from runctl.errors import NotFoundError, UsageError
from runctl.models import Host, Instance, Job, JobState, SSHTarget
from runctl.state.db import connect, now_iso, transaction

_JOB_COLUMNS = {
    "state", "started_at", "ended_at", "exit_code", "pid", "job_dir", "workdir",
    "checkpoint_dir", "spec",
}  # fmt: skip


class Store:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    @classmethod
    def open(cls, path: Path) -> Store:
        return cls(connect(path))

    # ------------------------------------------------------------------ hosts

    def add_host(self, host: Host, *, replace: bool = False) -> None:
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        try:
            with transaction(self.db):
                self.db.execute(
                    f"{verb} INTO hosts (name, host, user, port, identity_file, options,"
                    " remote_dir, python, hourly_usd, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        host.name, host.target.host, host.target.user, host.target.port,
                        host.target.identity_file, json.dumps(list(host.target.options)),
                        host.remote_dir, host.python, host.hourly_usd,
                        host.created_at or now_iso(),
                    ),
                )  # fmt: skip
        except sqlite3.IntegrityError:
            raise UsageError(
                f"host {host.name!r} already exists", hint="use --replace to overwrite it"
            ) from None
        self.add_event("host.added", host.name, {"host": host.target.destination})

    def get_host(self, name: str) -> Host | None:
        row = self.db.execute("SELECT * FROM hosts WHERE name = ?", (name,)).fetchone()
        return _host(row) if row else None

    def list_hosts(self) -> list[Host]:
        return [_host(r) for r in self.db.execute("SELECT * FROM hosts ORDER BY name")]

    def remove_host(self, name: str) -> None:
        with transaction(self.db):
            cur = self.db.execute("DELETE FROM hosts WHERE name = ?", (name,))
        if cur.rowcount == 0:
            raise NotFoundError(f"no host named {name!r}", hint="see `runctl hosts list`")
        self.add_event("host.removed", name, {})

    # ------------------------------------------------------------------- jobs

    def insert_job(self, job: Job) -> None:
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO jobs (job_id, name, project, provider, instance_id, state, argv,"
                " job_dir, workdir, checkpoint_dir, spec, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.job_id, job.name, job.project, job.provider, job.instance_id,
                    str(job.state), json.dumps(list(job.argv)), job.job_dir, job.workdir,
                    job.checkpoint_dir, json.dumps(job.spec), job.created_at,
                ),
            )  # fmt: skip
            self._event("job.submitted", job.job_id, {"on": f"{job.provider}:{job.instance_id}"})

    def update_job(self, job_id: str, **fields: Any) -> None:
        unknown = set(fields) - _JOB_COLUMNS
        if unknown:
            raise ValueError(f"not job columns: {unknown}")
        if "spec" in fields:
            fields["spec"] = json.dumps(fields["spec"])
        if "state" in fields:
            fields["state"] = str(fields["state"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        with transaction(self.db):
            before = self.db.execute("SELECT state FROM jobs WHERE job_id = ?", (job_id,))
            row = before.fetchone()
            self.db.execute(f"UPDATE jobs SET {sets} WHERE job_id = ?", (*fields.values(), job_id))
            if row and "state" in fields and row["state"] != fields["state"]:
                self._event("job.state", job_id, {"from": row["state"], "to": fields["state"]})

    def delete_jobs(self, job_ids: list[str]) -> None:
        """Forget jobs (`runctl jobs prune`): their rows and their own events."""
        if not job_ids:
            return
        marks = ", ".join("?" * len(job_ids))
        with transaction(self.db):
            self.db.execute(f"DELETE FROM jobs WHERE job_id IN ({marks})", job_ids)
            self.db.execute(f"DELETE FROM events WHERE subject IN ({marks})", job_ids)

    def get_job(self, ref: str) -> Job:
        """Find a job by id or unique id prefix; NotFoundError / UsageError otherwise."""
        if not ref or len(ref) > 128 or not all(c.isalnum() or c in "-_." for c in ref):
            raise UsageError(
                f"invalid job id {ref!r}", hint="job ids look like train-mnist-3f9a2c"
            )
        row = self.db.execute("SELECT * FROM jobs WHERE job_id = ?", (ref,)).fetchone()
        if row:
            return _job(row)
        escaped = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = self.db.execute(
            "SELECT * FROM jobs WHERE job_id LIKE ? ESCAPE '\\' LIMIT 5", (escaped + "%",)
        ).fetchall()
        if len(rows) == 1:
            return _job(rows[0])
        if rows:
            ids = ", ".join(r["job_id"] for r in rows)
            raise UsageError(f"job id {ref!r} is ambiguous: {ids}", hint="type more characters")
        raise NotFoundError(f"no job {ref!r}", hint="see `runctl jobs`")

    def list_jobs(
        self,
        *,
        states: list[str] | None = None,
        provider: str | None = None,
        instance_id: str | None = None,
        project: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        where, args = [], []
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += states
        for column, value in (("provider", provider), ("instance_id", instance_id),
                              ("project", project)):  # fmt: skip
            if value:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, rowid DESC"
        if limit:
            sql += f" LIMIT {int(limit)}"
        return [_job(r) for r in self.db.execute(sql, args)]

    # -------------------------------------------------------------- instances

    def record_instance(self, instance: Instance, *, spot: bool = False) -> int:
        """Insert or update a provider instance; returns its ``resource_id``.

        A state change is appended to ``instance_states`` (the basis of cost accounting).
        """
        now = now_iso()
        with transaction(self.db):
            row = self.db.execute(
                "SELECT resource_id, state FROM instances WHERE provider = ? AND instance_id = ?",
                (instance.provider, instance.instance_id),
            ).fetchone()
            if row is None:
                cur = self.db.execute(
                    "INSERT INTO instances (provider, instance_id, name, state, hourly_usd, spot,"
                    " tags, data, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        instance.provider, instance.instance_id, instance.name,
                        str(instance.state), instance.hourly_usd, int(spot),
                        json.dumps(instance.tags), json.dumps(instance.extra, default=str),
                        now, now,
                    ),
                )  # fmt: skip
                resource_id = int(cur.lastrowid or 0)
                changed = True
            else:
                resource_id = int(row["resource_id"])
                changed = row["state"] != str(instance.state)
                self.db.execute(
                    "UPDATE instances SET name = ?, state = ?,"
                    " hourly_usd = COALESCE(?, hourly_usd), tags = ?, data = ?, updated_at = ?"
                    " WHERE resource_id = ?",
                    (
                        instance.name, str(instance.state), instance.hourly_usd,
                        json.dumps(instance.tags), json.dumps(instance.extra, default=str),
                        now, resource_id,
                    ),
                )  # fmt: skip
            if changed:
                self.db.execute(
                    "INSERT INTO instance_states (resource_id, state, at) VALUES (?, ?, ?)",
                    (resource_id, str(instance.state), now),
                )
                self._event(
                    "instance.state",
                    f"{instance.provider}:{instance.instance_id}",
                    {"to": str(instance.state)},
                )
        return resource_id

    def get_instance_record(self, provider: str, instance_id: str) -> dict[str, Any] | None:
        row = self.db.execute(
            "SELECT * FROM instances WHERE provider = ? AND instance_id = ?",
            (provider, instance_id),
        ).fetchone()
        return _instance_row(row) if row else None

    def list_instance_records(self, provider: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM instances", []
        if provider:
            sql += " WHERE provider = ?"
            args.append(provider)
        return [_instance_row(r) for r in self.db.execute(sql + " ORDER BY resource_id", args)]

    def instance_history(self, resource_id: int) -> list[tuple[str, str]]:
        """(state, at) transitions of one instance, oldest first."""
        rows = self.db.execute(
            "SELECT state, at FROM instance_states WHERE resource_id = ? ORDER BY rowid",
            (resource_id,),
        )
        return [(r["state"], r["at"]) for r in rows]

    def state_seconds(
        self, now: str, since: str, billed: frozenset[str], storage: frozenset[str]
    ) -> dict[int, tuple[float, float, float, float]]:
        """Per instance: seconds in ``billed`` states (all time, after ``since``) and in
        ``storage`` states (all time, after ``since``), every interval capped at ``now``.

        One aggregate query over all state history (an interval ends where the next state
        starts, the last one at ``now``) instead of a query and a Python pass per instance;
        ``core.costs.billed_seconds`` is the same arithmetic on one history.
        """
        params: dict[str, Any] = {}
        for prefix, states in (("b", billed), ("s", storage)):
            params.update({f"{prefix}{i}": state for i, state in enumerate(sorted(states))})
        in_b = ", ".join(f":{k}" for k in params if k.startswith("b"))
        in_s = ", ".join(f":{k}" for k in params if k.startswith("s"))
        row = self.db.execute("SELECT julianday(?), julianday(?)", (now, since)).fetchone()
        params["now"], params["since"] = row[0], row[1]
        sql = f"""
            WITH spans AS (
                SELECT resource_id, state, julianday(at) AS t0,
                       MIN(COALESCE(LEAD(julianday(at)) OVER (
                           PARTITION BY resource_id ORDER BY rowid), :now), :now) AS t1
                FROM instance_states
            )
            SELECT resource_id,
                SUM(CASE WHEN state IN ({in_b}) THEN MAX(0, t1 - t0) ELSE 0 END),
                SUM(CASE WHEN state IN ({in_b}) THEN MAX(0, t1 - MAX(t0, :since)) ELSE 0 END),
                SUM(CASE WHEN state IN ({in_s}) THEN MAX(0, t1 - t0) ELSE 0 END),
                SUM(CASE WHEN state IN ({in_s}) THEN MAX(0, t1 - MAX(t0, :since)) ELSE 0 END)
            FROM spans GROUP BY resource_id
        """
        day = 86400.0
        return {
            int(r[0]): (r[1] * day, r[2] * day, r[3] * day, r[4] * day)
            for r in self.db.execute(sql, params)
        }

    # ----------------------------------------------------------------- events

    def add_event(self, kind: str, subject: str, data: dict[str, Any]) -> None:
        with transaction(self.db):
            self._event(kind, subject, data)

    def _event(self, kind: str, subject: str, data: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO events (at, kind, subject, data) VALUES (?, ?, ?, ?)",
            (now_iso(), kind, subject, json.dumps(data)),
        )

    def list_events(self, subject: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM events", []
        if subject:
            sql += " WHERE subject = ?"
            args.append(subject)
        rows = self.db.execute(sql + " ORDER BY id", args)
        return [
            {"at": r["at"], "kind": r["kind"], "subject": r["subject"],
             "data": json.loads(r["data"])}
            for r in rows
        ]  # fmt: skip

    def recent_events(
        self, subjects: set[str] | None = None, kind: str | None = None, last: int = 50
    ) -> list[dict[str, Any]]:
        """The newest ``last`` events (of ``subjects``, of kinds starting with ``kind``),
        oldest first: read newest-first by index with a LIMIT, not the whole table."""
        where: list[str] = []
        args: list[Any] = []
        if subjects:
            where.append(f"subject IN ({', '.join('?' * len(subjects))})")
            args += sorted(subjects)
        if kind:
            where.append("substr(kind, 1, ?) = ?")
            args += [len(kind), kind]
        sql = "SELECT * FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, int(last))).fetchall()
        return [
            {"at": r["at"], "kind": r["kind"], "subject": r["subject"],
             "data": json.loads(r["data"])}
            for r in reversed(rows)
        ]  # fmt: skip

    def has_events(self, subjects: set[str]) -> bool:
        marks = ", ".join("?" * len(subjects))
        sql = f"SELECT 1 FROM events WHERE subject IN ({marks}) LIMIT 1"
        return self.db.execute(sql, sorted(subjects)).fetchone() is not None

    # ------------------------------------------------------------------- sync

    def get_sync_digest(self, target: str) -> str | None:
        row = self.db.execute(
            "SELECT digest FROM sync_manifests WHERE target = ?", (target,)
        ).fetchone()
        return str(row["digest"]) if row else None

    def set_sync_digest(self, target: str, digest: str | None) -> None:
        with transaction(self.db):
            if digest is None:
                self.db.execute("DELETE FROM sync_manifests WHERE target = ?", (target,))
            else:
                self.db.execute(
                    "INSERT OR REPLACE INTO sync_manifests VALUES (?, ?, ?)",
                    (target, digest, now_iso()),
                )


def _host(row: sqlite3.Row) -> Host:
    target = SSHTarget(
        host=row["host"],
        user=row["user"],
        port=row["port"],
        identity_file=row["identity_file"],
        options=tuple(json.loads(row["options"])),
    )
    return Host(
        name=row["name"],
        target=target,
        remote_dir=row["remote_dir"],
        python=row["python"],
        hourly_usd=row["hourly_usd"],
        created_at=row["created_at"],
    )


def _job(row: sqlite3.Row) -> Job:
    return Job(
        job_id=row["job_id"],
        name=row["name"],
        project=row["project"],
        provider=row["provider"],
        instance_id=row["instance_id"],
        state=JobState(row["state"]),
        argv=tuple(json.loads(row["argv"])),
        job_dir=row["job_dir"],
        workdir=row["workdir"],
        checkpoint_dir=row["checkpoint_dir"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        exit_code=row["exit_code"],
        pid=row["pid"],
        spec=json.loads(row["spec"]),
    )


def _instance_row(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["tags"] = json.loads(row["tags"])
    data["data"] = json.loads(row["data"])
    data["spot"] = bool(row["spot"])
    return data
