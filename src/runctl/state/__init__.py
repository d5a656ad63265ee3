"""Local state: SQLite in RUNCTL_HOME (WAL, numbered migrations)."""
