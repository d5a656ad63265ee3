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
        """The state database, opened on first use (commands that need none never touch disk)."""
        if self._store is None:
            from runctl.state.store import Store

            self._store = Store.open(self.home / "state.db")
        return self._store
