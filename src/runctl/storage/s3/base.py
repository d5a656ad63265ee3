"""The shared core of S3Storage: client, listing, running transfer jobs."""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runctl.errors import RunctlError
from runctl.storage.s3.direct import DirectS3

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3.client import S3Client
from runctl.storage.s3.client import _MISSING_CODES, S3Settings, _is_fatal, make_client, map_error
from runctl.storage.s3.local import _call, _thread_pool
from runctl.storage.s3.model import (
    NullProgress,
    ObjectInfo,
    Progress,
    TransferOptions,
    TransferSummary,
    _Done,
    _Job,
)
from runctl.storage.s3.uri import S3Uri


class _StorageBase(ABC):
    """Client, listing and the job runner shared by uploads and downloads."""

    def __init__(
        self,
        settings: S3Settings,
        *,
        state_dir: Path | None = None,
        progress: Progress | None = None,
        warn: Callable[[str], None] | None = None,
        client: S3Client | None = None,
    ) -> None:
        self.settings = settings
        self.state_dir = state_dir  # None: multipart uploads are not resumable
        self.progress: Progress = progress or NullProgress()
        self._warn_fn = warn
        self._client = client
        self._client_lock = threading.Lock()
        self._direct_s3: DirectS3 | None = None

    @property
    def client(self) -> S3Client:
        with self._client_lock:
            if self._client is None:
                self._client = make_client(self.settings)
            return self._client

    def _direct(self) -> DirectS3:
        """The botocore-free path for small objects (falls back to the client by itself)."""
        with self._client_lock:
            if self._direct_s3 is None:
                client = self._client or make_client(self.settings)
                self._client = client
                self._direct_s3 = DirectS3(client, 2 * self.settings.max_concurrency + 4)
            return self._direct_s3

    @property
    def endpoint(self) -> str:
        """The URL requests go to (settings, else AWS_ENDPOINT_URL_S3, else AWS's own)."""
        return str(self.client.meta.endpoint_url)

    def _endpoint_if_known(self) -> str:
        """``endpoint`` without creating a client (error messages must not fail)."""
        client = self._client
        return str(client.meta.endpoint_url) if client else self.settings.endpoint_url

    def transfer_config(self) -> TransferConfig:
        from boto3.s3.transfer import TransferConfig

        threshold = self.settings.multipart_threshold
        return TransferConfig(
            multipart_threshold=threshold,
            multipart_chunksize=self.settings.part_size(threshold),
            max_concurrency=self.settings.max_concurrency,
            preferred_transfer_client="classic",
        )

    @contextlib.contextmanager
    def errors(self, where: str) -> Iterator[None]:
        """Turn botocore failures inside the block into RunctlErrors about ``where``."""
        try:
            yield
        except RunctlError:
            raise
        except Exception as exc:
            mapped = map_error(exc, where, self._endpoint_if_known())
            if mapped is None:
                raise
            raise mapped from exc

    # ------------------------------------------------------------------------- listing

    def iter_objects(self, bucket: str, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, all pages (ListObjectsV2 returns 1000 at a time)."""
        with self.errors(f"s3://{bucket}/{prefix}"):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item.get("Size", 0)),
                        last_modified=item["LastModified"].timestamp(),
                        etag=str(item.get("ETag", "")),
                    )

    def list_prefix(
        self, uri: S3Uri, recursive: bool = False
    ) -> tuple[list[ObjectInfo], list[str]]:
        """Objects and (unless ``recursive``) "sub-directory" prefixes starting with the key."""
        if recursive:
            return list(self.iter_objects(uri.bucket, uri.key)), []
        objects: list[ObjectInfo] = []
        prefixes: list[str] = []
        with self.errors(str(uri)):
            pages = self.client.get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=uri.bucket, Prefix=uri.key, Delimiter="/"):
                prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
                for item in page.get("Contents", []):
                    objects.append(ObjectInfo(item["Key"], int(item.get("Size", 0)),
                                              item["LastModified"].timestamp(),
                                              str(item.get("ETag", ""))))  # fmt: skip
        return objects, prefixes

    def head(self, uri: S3Uri) -> dict[str, Any] | None:
        """HeadObject's answer (with checksums), or None if there is no such object."""
        from botocore.exceptions import ClientError

        with self.errors(str(uri)):
            try:
                return dict(self.client.head_object(
                    Bucket=uri.bucket, Key=uri.key, ChecksumMode="ENABLED"
                ))  # fmt: skip
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in _MISSING_CODES:
                    return None
                raise

    # ------------------------------------------------------------------------- running jobs

    def _execute(
        self, bucket: str, jobs: list[_Job], opts: TransferOptions, summary: TransferSummary
    ) -> None:
        """Run jobs: small ones on a thread pool, large ones one by one (each is parallel)."""
        if opts.dry_run:
            summary.actions += [
                {"action": j.op, "path": str(j.path), "key": f"s3://{bucket}/{j.key}",
                 "bytes": j.size} for j in jobs
            ]  # fmt: skip
            return
        if not jobs:
            return
        threshold = self.settings.multipart_threshold
        small = [j for j in jobs if j.size < threshold]
        large = [j for j in jobs if j.size >= threshold]
        self.progress.start(len(jobs), sum(j.size for j in jobs))
        try:
            with _thread_pool(self.settings.max_concurrency) as pool:
                futures = {pool.submit(self._run_job, bucket, j, opts): j for j in small}
                for future in as_completed(futures):
                    self._collect(futures[future], summary, future.exception() or future.result())
            for job in large:
                try:
                    outcome: _Done | BaseException = self._run_job(bucket, job, opts)
                except Exception as exc:  # noqa: BLE001 - sorted out by _collect
                    outcome = exc
                self._collect(job, summary, outcome)
        finally:
            self.progress.finish()

    def _run_job(self, bucket: str, job: _Job, opts: TransferOptions) -> _Done:
        if job.op == "upload":
            return self._upload_one(bucket, job, opts)
        return self._download_one(bucket, job, opts)

    def _collect(
        self, job: _Job, summary: TransferSummary, outcome: _Done | BaseException
    ) -> None:
        """Count a finished job; record a per-object failure; re-raise a fatal one."""
        if isinstance(outcome, _Done):
            done = outcome
            summary.files += 1
            summary.bytes += done.bytes
            summary.resumed_bytes += done.resumed_bytes
            summary.verified += int(done.verified)
            if done.warning:
                self._warner(summary)(done.warning)
            return
        exc = outcome
        if _is_fatal(exc):
            if isinstance(exc, RunctlError):
                raise exc
            mapped = map_error(exc, job.label, self._endpoint_if_known())
            if mapped is None:
                raise exc
            raise mapped from exc
        if isinstance(exc, RunctlError):
            message = exc.message
        elif isinstance(exc, OSError):
            message = exc.strerror or str(exc)
        else:
            mapped = map_error(exc, job.label, self._endpoint_if_known())
            message = mapped.message if mapped else str(exc)
        summary.failed.append(f"{job.label}: {message}")

    # ------------------------------------------------------------------------- deleting

    def delete_keys(self, bucket: str, keys: list[str]) -> tuple[list[str], list[str]]:
        """Delete ``keys`` (1000 per request); return (deleted keys, failure messages)."""
        deleted: list[str] = []
        failures: list[str] = []
        with self.errors(f"s3://{bucket}"):
            for start in range(0, len(keys), 1000):
                batch = keys[start : start + 1000]
                answer = self.client.delete_objects(
                    Bucket=bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
                errors = answer.get("Errors", [])
                failures += [f"s3://{bucket}/{e.get('Key')}: {e.get('Code')}" for e in errors]
                refused = {e.get("Key") for e in errors}
                deleted += [k for k in batch if k not in refused]
        return deleted, failures

    def _delete_remote(
        self, bucket: str, keys: list[str], opts: TransferOptions, summary: TransferSummary
    ) -> None:
        if opts.dry_run:
            summary.actions += [{"action": "delete", "key": f"s3://{bucket}/{k}"} for k in keys]
            return
        deleted, failures = self.delete_keys(bucket, keys) if keys else ([], [])
        summary.deleted += len(deleted)
        summary.failed += failures

    def _delete_local(
        self, paths: list[Path], opts: TransferOptions, summary: TransferSummary
    ) -> None:
        for path in paths:
            if opts.dry_run:
                summary.actions.append({"action": "delete", "path": str(path)})
                continue
            try:
                path.unlink()
                summary.deleted += 1
            except OSError as exc:
                summary.failed.append(f"{path}: {exc.strerror}")

    # ------------------------------------------------------------------------- helpers

    def _warn(self, message: str) -> None:
        _call(self._warn_fn, message)

    def _warner(self, summary: TransferSummary) -> Callable[[str], None]:
        def warn(message: str) -> None:
            summary.warnings.append(message)
            self._warn(message)

        return warn

    @abstractmethod
    def _upload_one(self, bucket: str, job: _Job, opts: TransferOptions) -> _Done: ...

    @abstractmethod
    def _download_one(self, bucket: str, job: _Job, opts: TransferOptions) -> _Done: ...
