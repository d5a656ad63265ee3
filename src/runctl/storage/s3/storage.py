"""S3Storage: uploads and downloads plus delete, sync, cleanup, watch and review."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from runctl.errors import UsageError
from runctl.storage.s3.download import _Downloads
from runctl.storage.s3.model import (
    CleanupPlan,
    ObjectInfo,
    TransferOptions,
    TransferSummary,
    WatchEvent,
    WatchPoll,
)
from runctl.storage.s3.review import review_objects
from runctl.storage.s3.upload import _Uploads
from runctl.storage.s3.uri import S3Uri, is_s3_uri, parse_uri


class S3Storage(_Uploads, _Downloads):
    """S3 operations for one set of settings; safe to share between threads."""

    # ------------------------------------------------------------------------- sync

    def sync(self, src: str, dst: str, opts: TransferOptions) -> TransferSummary:
        """Make ``dst`` match ``src`` (one of them an s3:// prefix, the other a directory)."""
        opts = replace(opts, skip_unchanged=True)
        if is_s3_uri(src) == is_s3_uri(dst):
            raise UsageError(
                "sync needs one local directory and one s3:// location",
                hint="e.g. runctl s3 sync ./checkpoints s3://bucket/run1/",
            )
        if is_s3_uri(dst):
            local = Path(src)
            if not local.is_dir():
                raise UsageError(
                    f"{src} is not a directory",
                    hint="sync copies directories; use `runctl s3 upload` for a file",
                )
            summary = self.upload(local, parse_uri(dst), opts)
        else:
            remote = parse_uri(src)
            local = Path(dst)
            if local.exists() and not local.is_dir():
                raise UsageError(f"{dst} is not a directory")
            summary = self.download(S3Uri(remote.bucket, remote.prefix), local, opts, True)
        summary.operation = "sync"
        return summary

    # ------------------------------------------------------------------------- cleanup

    def plan_cleanup(
        self, uri: S3Uri, keep_last_n: int, named: tuple[str, ...] = ()
    ) -> CleanupPlan:
        """Which checkpoints under ``uri`` to keep and which to delete, whole (a directory
        checkpoint with all its objects, a file with its sidecar JSON); no side effects.

        The rules of ``checkpoint cleanup``: never the newest complete checkpoint, nor
        last*/best*/final* unless ``named``, nor anything newer than the newest complete one.
        """
        from runctl.storage.checkpoints import plan_cleanup, rows_from_keys

        prefix = uri.prefix if not uri.prefix or uri.prefix.endswith("/") else uri.prefix + "/"
        objects = [(o.key, o.size, o.last_modified)
                   for o in self.iter_objects(uri.bucket, prefix)]  # fmt: skip
        found = rows_from_keys(prefix, objects)
        doomed = plan_cleanup([k.row for k in found], keep_last_n, named, realpath=lambda p: p)

        def info(row: Any) -> ObjectInfo:
            key = str(row.path) + ("/" if row.kind != "file" else "")
            return ObjectInfo(key, row.bytes, row.mtime)

        keep = [info(k.row) for k in found if k.row not in doomed and not k.row.protected]
        delete = [info(k.row) for k in found if k.row in doomed]
        keys = [key for k in found if k.row in doomed for key in k.keys]
        return CleanupPlan(uri, keep, delete, keys)

    # ------------------------------------------------------------------------- watch / review

    def watch(
        self, uri: S3Uri, interval_s: float, max_polls: int | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Iterator[WatchPoll]:  # fmt: skip
        """Poll ``uri`` every ``interval_s``; yield each poll with what changed since the last.

        The first poll only takes stock (no events). Blocks in ``sleep`` between polls.
        """
        seen: dict[str, ObjectInfo] | None = None
        number = 0
        while max_polls is None or number < max_polls:
            if number:
                sleep(interval_s)
            number += 1
            now = {o.key: o for o in self.iter_objects(uri.bucket, uri.prefix)}
            events: list[WatchEvent] = []
            if seen is not None:
                for key, obj in now.items():
                    old = seen.get(key)
                    if old is None:
                        events.append(WatchEvent("new", obj))
                    elif (old.etag, old.size, old.last_modified) != (
                        obj.etag, obj.size, obj.last_modified,
                    ):  # fmt: skip
                        events.append(WatchEvent("changed", obj))
                events += [WatchEvent("deleted", o) for k, o in seen.items() if k not in now]
            seen = now
            yield WatchPoll(number, len(now), sum(o.size for o in now.values()), events)

    def review(self, uri: S3Uri, top_n: int = 10) -> dict[str, Any]:
        """Counts and sizes by kind, the largest objects and the latest checkpoint."""
        report = review_objects(list(self.iter_objects(uri.bucket, uri.prefix)), top_n)
        return {"path": str(uri), **report}
