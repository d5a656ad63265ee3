"""Schema migrations, applied in order on connect; each runs once and is recorded by name.

Append new ``m00N_*`` functions; never edit one that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

Migration = Callable[[sqlite3.Connection], None]


def m001_initial(db: sqlite3.Connection) -> None:
    _execute_all(
        db,
        """
        CREATE TABLE hosts (
            name TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            user TEXT,
            port INTEGER,
            identity_file TEXT,
            options TEXT NOT NULL DEFAULT '[]',
            remote_dir TEXT NOT NULL DEFAULT '.runctl',
            python TEXT NOT NULL DEFAULT 'python3',
            hourly_usd REAL,
            tags TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        );
        CREATE TABLE instances (
            resource_id INTEGER PRIMARY KEY AUTOINCREMENT,
            provider TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            name TEXT NOT NULL,
            state TEXT NOT NULL,
            hourly_usd REAL,
            spot INTEGER NOT NULL DEFAULT 0,
            tags TEXT NOT NULL DEFAULT '{}',
            data TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (provider, instance_id)
        );
        CREATE TABLE instance_states (
            resource_id INTEGER NOT NULL REFERENCES instances(resource_id),
            state TEXT NOT NULL,
            at TEXT NOT NULL
        );
        CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            project TEXT NOT NULL,
            provider TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            state TEXT NOT NULL,
            argv TEXT NOT NULL,
            job_dir TEXT NOT NULL,
            workdir TEXT NOT NULL,
            checkpoint_dir TEXT NOT NULL,
            spec TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            started_at TEXT,
            ended_at TEXT,
            exit_code INTEGER,
            pid INTEGER
        );
        CREATE INDEX jobs_by_state ON jobs(state);
        CREATE INDEX jobs_by_instance ON jobs(provider, instance_id);
        CREATE TABLE events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            kind TEXT NOT NULL,
            subject TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX events_by_subject ON events(subject);
        CREATE TABLE sync_manifests (
            target TEXT PRIMARY KEY,
            digest TEXT NOT NULL,
            synced_at TEXT NOT NULL
        );
        """,
    )


def _execute_all(db: sqlite3.Connection, script: str) -> None:
    # Not executescript(): it commits first, and migrations must run inside the caller's
    # transaction so a half-applied schema is never visible.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def m002_listing_indexes(db: sqlite3.Connection) -> None:
    # Listings stay flat in history size (issue 21): `jobs` reads the newest N by created_at
    # and cost accounting reads every instance's state history; without these both scan (or
    # sort) whole tables. `events` needs none: it reads by id, or by events_by_subject.
    _execute_all(
        db,
        """
        CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs(created_at);
        CREATE INDEX IF NOT EXISTS instance_states_by_resource ON instance_states(resource_id);
        """,
    )


MIGRATIONS: list[Migration] = [m001_initial, m002_listing_indexes]
