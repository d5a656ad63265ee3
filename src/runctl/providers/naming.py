"""Names of the machines runctl creates: ``runctl-<stem>-<6 hex>``.

Clouds without tags (RunPod, Lyceum) give runctl only the name to find its own machines by,
so the prefix marks them for ``list``/reconcile, and the random suffix makes each name unique,
which lets a create that failed with a 5xx be looked up by name before it is retried.
"""

from __future__ import annotations

import re
import secrets

NAME_PREFIX = "runctl-"


def new_name(base: str | None, default: str = "pod") -> str:
    stem = re.sub(r"[^a-z0-9]+", "-", (base or "").lower()).strip("-")[:30].strip("-")
    stem = stem.removeprefix("runctl").strip("-") or default
    return f"{NAME_PREFIX}{stem}-{secrets.token_hex(3)}"


def is_runctl_name(name: str) -> bool:
    return name.startswith(NAME_PREFIX)
