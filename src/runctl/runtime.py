"""The per-invocation context: loaded config, home directory, state store, output mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from runctl.config import Config

if TYPE_CHECKING:
    from runctl.state.store import Store


@dataclass
class Runtime:
    config: Config
    home: Path
    json: bool = False
    _store: Store | None = field(default=None, repr=False)

    @property
    def store(self) -> Store:
        """The state database, opened on first use (commands that need none never touch disk).

        RUNCTL_HOME is made 0700 and the database 0600 first (runctl.perms).
        """
        if self._store is None:
            from runctl.perms import private_dir, private_file
            from runctl.state.db import ensure_home
            from runctl.state.store import Store

            ensure_home(self.home)  # a file, a read-only or foreign dir: a typed error
            db = self.home / "state.db"
            try:
                private_dir(self.home)
                private_file(db)
                for extra in ("state.db-wal", "state.db-shm"):
                    private_file(self.home / extra, create=False)
            except OSError:
                pass  # an unusable RUNCTL_HOME: Store.open says what is wrong with it
            self._store = Store.open(db)
        return self._store
