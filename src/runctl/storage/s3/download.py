"""Downloads: planned, written to a temporary file, renamed into place, verified."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from runctl.errors import NotFoundError, RunctlError, UsageError
from runctl.storage.s3.base import _StorageBase
from runctl.storage.s3.direct import DirectFailed
from runctl.storage.s3.local import (
    _b64,
    _file_digest,
    _is_current,
    is_selected,
    safe_destination,
    walk_local,
)
from runctl.storage.s3.model import (
    _COPY_CHUNK,
    META_COMPRESSED,
    META_SHA256,
    MTIME_SLACK_S,
    TransferOptions,
    TransferSummary,
    _Done,
    _Job,
)
from runctl.storage.s3.uri import S3Uri


class _Downloads(_StorageBase):
    # ------------------------------------------------------------------------- download

    def download(
        self, src: S3Uri, dest: Path, opts: TransferOptions, recursive: bool | None = None
    ) -> TransferSummary:
        """Download one object, or (``recursive``) everything under ``src`` into ``dest``.

        ``recursive=None`` decides by looking: an object at the key is downloaded alone,
        otherwise the key is read as a prefix.
        """
        summary = TransferSummary("download", str(src), str(dest), dry_run=opts.dry_run)
        started = time.monotonic()
        single: dict[str, Any] | None = None
        if recursive is False and (not src.key or src.key.endswith("/")):
            raise UsageError(
                f"{src} is a prefix, not an object",
                hint="pass --recursive to download everything under it",
            )
        if recursive is not True and src.key and not src.key.endswith("/"):
            single = self.head(src)
            if single is None and recursive is False:
                if next(self.iter_objects(src.bucket, src.prefix), None) is not None:
                    raise UsageError(
                        f"{src} is a prefix, not an object",
                        hint="pass --recursive to download everything under it",
                    )
                raise NotFoundError(f"{src} not found", hint="see `runctl s3 list`")
        if single is not None:
            jobs = self._plan_single(src, dest, single, opts, summary)
            local_extra: list[Path] = []
        else:
            jobs, local_extra = self._plan_prefix(src, dest, opts, summary)
        self._execute(src.bucket, jobs, opts, summary)
        self._delete_local(local_extra, opts, summary)
        summary.seconds = time.monotonic() - started
        return summary

    def _plan_single(
        self, src: S3Uri, dest: Path, head: dict[str, Any], opts: TransferOptions,
        summary: TransferSummary,
    ) -> list[_Job]:  # fmt: skip
        name = src.key.rsplit("/", 1)[-1]
        if dest.is_dir() or str(dest).endswith(("/", os.sep)):
            target = safe_destination(dest, name)
            if target is None:
                raise UsageError(f"refusing to write {src} into {dest}: unsafe file name")
        else:
            target = dest
        size = int(head.get("ContentLength", 0))
        modified = head["LastModified"].timestamp()
        job = _Job("download", src.key, size, target, modified, str(src))
        if opts.skip_unchanged and self._download_current(job, str(head.get("ETag", "")), opts):
            summary.skipped += 1
            return []
        return [job]

    def _plan_prefix(
        self, src: S3Uri, dest: Path, opts: TransferOptions, summary: TransferSummary
    ) -> tuple[list[_Job], list[Path]]:
        if dest.exists() and not dest.is_dir():
            raise UsageError(f"{dest} is a file", hint="download a prefix into a directory")
        objects = list(self.iter_objects(src.bucket, src.prefix))
        if not objects and not opts.delete:
            raise NotFoundError(f"nothing under {src}", hint="see `runctl s3 list`")
        jobs: list[_Job] = []
        wanted: set[Path] = set()
        for obj in objects:
            rel = obj.key[len(src.prefix) :]
            if obj.key.endswith("/") or not is_selected(rel, opts.include, opts.exclude):
                continue  # folder markers carry no data
            target = safe_destination(dest, rel)
            if target is None:
                self._warner(summary)(
                    f"skipping s3://{src.bucket}/{obj.key}: its key would write outside {dest}"
                )
                continue
            wanted.add(target)
            if opts.compress and rel.endswith(".gz"):
                wanted.add(target.with_name(target.name[:-3]))
            job = _Job("download", obj.key, obj.size, target, obj.last_modified,
                       f"s3://{src.bucket}/{obj.key}")  # fmt: skip
            if opts.skip_unchanged and self._download_current(job, obj.etag, opts):
                summary.skipped += 1
                continue
            jobs.append(job)
        extra: list[Path] = []
        if opts.delete and dest.is_dir():
            extra = [f.path for f in walk_local(dest, opts.include, opts.exclude)
                     if f.path not in wanted]  # fmt: skip
        return jobs, extra

    def _download_current(self, job: _Job, etag: str, opts: TransferOptions) -> bool:
        if opts.compress and job.path.name.endswith(".gz"):  # compared with the gunzipped file
            plain = job.path.with_name(job.path.name[:-3])
            with contextlib.suppress(OSError):
                return plain.stat().st_mtime >= job.mtime - MTIME_SLACK_S
        try:
            st = job.path.stat()
        except OSError:
            return False
        return _is_current(job.size, job.mtime, st.st_size, st.st_mtime, etag, job.path)

    def _download_one(self, bucket: str, job: _Job, opts: TransferOptions) -> _Done:
        job.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = job.path.with_name(f".{job.path.name}.{uuid.uuid4().hex[:8]}.runctl-part")
        try:
            if job.size < self.settings.multipart_threshold:
                head, data = self._get_small(bucket, job.key, opts.verify)
                tmp.write_bytes(data)
                self.progress.advance(len(data))
            else:
                head = self.head(S3Uri(bucket, job.key)) or {}
                self.client.download_file(bucket, job.key, str(tmp),
                                          Config=self.transfer_config(),
                                          Callback=self.progress.advance)  # fmt: skip
            final = job.path
            compressed = head.get("Metadata", {}).get(META_COMPRESSED) == "gzip"
            if opts.compress and compressed:
                final = job.path.with_name(job.path.name.removesuffix(".gz"))
                plain = tmp.with_name(tmp.name + ".gunzip")
                with gzip.open(tmp, "rb") as gz, open(plain, "wb") as out:
                    shutil.copyfileobj(gz, out, _COPY_CHUNK)
                tmp.unlink()
                tmp = plain
            gunzipped = opts.compress and compressed
            verified = opts.verify and self._verify_local(tmp, head, job, compressed, gunzipped)
            os.replace(tmp, final)
            os.utime(final, (job.mtime, job.mtime))  # so the next sync sees it as current
            unverifiable = opts.verify and not verified
            warning = f"cannot verify {job.label}: no whole-file checksum" if unverifiable else ""
            return _Done(bytes=job.size, verified=verified, warning=warning)
        finally:
            tmp.unlink(missing_ok=True)

    def _get_small(self, bucket: str, key: str, verify: bool) -> tuple[dict[str, Any], bytes]:
        try:
            fetched = self._direct().get(bucket, key, checksum_mode=verify)
            return fetched.headers, fetched.body
        except DirectFailed:
            extra: dict[str, Any] = {"ChecksumMode": "ENABLED"} if verify else {}
            answer = self.client.get_object(Bucket=bucket, Key=key, **extra)
            return dict(answer), answer["Body"].read()

    def _verify_local(
        self, path: Path, head: dict[str, Any], job: _Job, compressed: bool, decompressed: bool
    ) -> bool:
        """Check a downloaded file against the object's checksums; raise on mismatch.

        runctl-sha256 describes the original content: it applies to a compressed object only
        once it is gunzipped; the raw .gz is checked with S3's own checksums.
        """
        want_hex = head.get("Metadata", {}).get(META_SHA256)
        if compressed and not decompressed:
            want_hex = None
        stored = str(head.get("ChecksumSHA256") or "")
        etag = str(head.get("ETag", "")).strip('"')
        if want_hex:
            ok = _file_digest(path, "sha256") == want_hex
        elif stored and "-" not in stored and not decompressed:
            with open(path, "rb") as fh:
                ok = _b64(hashlib.file_digest(fh, "sha256").digest()) == stored
        elif etag and "-" not in etag and not decompressed:
            ok = _file_digest(path, "md5") == etag
        else:
            return False
        if not ok:
            raise RunctlError(f"verification failed for {job.label}: checksum mismatch",
                              hint="download it again; the object may be corrupt")  # fmt: skip
        return True
