"""Modules loaded on first use, so a command imports only what it runs (issue 21).

``jobs``, ``status``, ``wait`` and ``logs`` import ``core.jobs`` for its read paths; its submit
path needs sync, sync selection (pathspec), multi-node and secret handling, which cost more
start-up than those commands spend on their work. A module bound with ``lazy_module`` runs
on its first attribute access (``importlib.util.LazyLoader``); type checkers see the real
import under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name`` as a module object whose code runs when an attribute is first read."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ImportError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
