"""Uploads: single requests for small objects, resumable parallel multipart for large."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import mimetypes
import os
import shutil
import time
import uuid
from concurrent.futures import as_completed
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runctl.errors import NotFoundError, RunctlError
from runctl.storage.s3.base import _StorageBase
from runctl.storage.s3.direct import DirectFailed
from runctl.storage.s3.local import (
    _b64,
    _file_digest,
    _is_current,
    _load_json,
    _thread_pool,
    is_selected,
    walk_local,
)
from runctl.storage.s3.model import (
    _COPY_CHUNK,
    META_COMPRESSED,
    META_SHA256,
    MTIME_SLACK_S,
    Algorithm,
    LocalFile,
    ObjectInfo,
    TransferOptions,
    TransferSummary,
    _Done,
    _Job,
)
from runctl.storage.s3.uri import S3Uri


class _Uploads(_StorageBase):
    # ------------------------------------------------------------------------- upload

    def upload(self, src: Path, dst: S3Uri, opts: TransferOptions) -> TransferSummary:
        """Upload a file, or a directory tree under ``dst`` as a prefix."""
        summary = TransferSummary("upload", str(src), str(dst), dry_run=opts.dry_run)
        started = time.monotonic()
        mimetypes.init()  # here, not lazily in racing worker threads
        if not src.exists():
            raise NotFoundError(f"{src} does not exist")
        if src.is_dir():
            files = walk_local(src, opts.include, opts.exclude, self._warner(summary))
            pairs = [(f, dst.prefix + f.rel) for f in files]
            listed_prefix = dst.prefix
        else:
            st = src.stat()
            key = dst.key if dst.key and not dst.key.endswith("/") else dst.prefix + src.name
            pairs = [(LocalFile(src.name, src, st.st_size, st.st_mtime), key)]
            listed_prefix = key
        if opts.compress:
            pairs = [(f, k if k.endswith(".gz") else k + ".gz") for f, k in pairs]
        remote: dict[str, ObjectInfo] = {}
        if opts.skip_unchanged or opts.delete:
            remote = {o.key: o for o in self.iter_objects(dst.bucket, listed_prefix)}
        jobs: list[_Job] = []
        for local, key in pairs:
            have = remote.get(key)
            if (
                opts.skip_unchanged
                and have is not None
                and self._upload_current(local, have, opts)
            ):
                summary.skipped += 1
                continue
            jobs.append(_Job("upload", key, local.size, local.path, local.mtime, str(local.path)))
        doomed: list[str] = []
        if opts.delete and src.is_dir():
            wanted = {k for _, k in pairs}
            doomed = [
                k for k in remote
                if k not in wanted and is_selected(k[len(dst.prefix):], opts.include, opts.exclude)
            ]  # fmt: skip
        self._execute(dst.bucket, jobs, opts, summary)
        self._delete_remote(dst.bucket, doomed, opts, summary)
        summary.seconds = time.monotonic() - started
        return summary

    def _upload_current(self, local: LocalFile, have: ObjectInfo, opts: TransferOptions) -> bool:
        if opts.compress:  # sizes differ by design; the newer side decides
            return have.last_modified >= local.mtime - MTIME_SLACK_S
        return _is_current(local.size, local.mtime, have.size, have.last_modified,
                           have.etag, local.path)  # fmt: skip

    def _upload_one(self, bucket: str, job: _Job, opts: TransferOptions) -> _Done:
        meta: dict[str, str] = {}
        content_type = mimetypes.guess_type(job.path.name)[0] or "application/octet-stream"
        if opts.verify:
            meta[META_SHA256] = _file_digest(job.path, "sha256")
        if not opts.compress:
            return self._put(bucket, job.key, job.path, job, meta, content_type, opts)
        meta[META_COMPRESSED] = "gzip"
        tmp = self._scratch(job.path.name + ".gz")
        try:
            # mtime=0 and no file name: the same input always gives the same bytes, so an
            # interrupted compressed upload can resume.
            with (
                open(job.path, "rb") as fin,
                open(tmp, "wb") as raw,
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
            ):
                shutil.copyfileobj(fin, gz, _COPY_CHUNK)
            return self._put(bucket, job.key, tmp, job, meta, "application/gzip", opts)
        finally:
            tmp.unlink(missing_ok=True)

    def _put(
        self, bucket: str, key: str, data_path: Path, job: _Job, meta: dict[str, str],
        content_type: str, opts: TransferOptions,
    ) -> _Done:  # fmt: skip
        size = data_path.stat().st_size
        if size >= self.settings.multipart_threshold:
            done, expected = self._put_multipart(bucket, key, data_path, job, size, meta,
                                                 content_type, opts)  # fmt: skip
        else:
            body = data_path.read_bytes()
            extra: dict[str, Any] = {"ChecksumAlgorithm": "CRC32"}
            expected = None
            if opts.verify:
                expected = _b64(hashlib.sha256(body).digest())
                extra = {"ChecksumAlgorithm": "SHA256", "ChecksumSHA256": expected}
            try:
                self._direct().put(bucket, key, body, content_type=content_type,
                                   metadata=meta, sha256_b64=expected)  # fmt: skip
            except DirectFailed:
                self.client.put_object(Bucket=bucket, Key=key, Body=body, Metadata=meta,
                                       ContentType=content_type, **extra)  # fmt: skip
            self.progress.advance(size)
            done = _Done(bytes=size)
        if opts.verify:
            self._verify_remote(S3Uri(bucket, key), size, expected, meta.get(META_SHA256))
            done.verified = True
        return done

    def _verify_remote(
        self, uri: S3Uri, size: int, expected: str | None, sha256_hex: str | None
    ) -> None:
        """Compare what the server stored with what we computed locally; raise on mismatch."""
        head = self.head(uri) or {}
        if int(head.get("ContentLength", -1)) != size:
            raise RunctlError(
                f"verification failed for {uri}: {head.get('ContentLength')} bytes stored, "
                f"{size} sent",
                hint="upload it again",
            )
        stored = head.get("ChecksumSHA256")
        if stored and expected:
            ok = stored.split("-")[0] == expected.split("-")[0]
        else:  # servers without checksums: at least the metadata must have arrived intact
            ok = head.get("Metadata", {}).get(META_SHA256) == sha256_hex
        if not ok:
            raise RunctlError(f"verification failed for {uri}: checksum mismatch",
                              hint="upload it again")  # fmt: skip

    # ------------------------------------------------------------------------- multipart

    def _put_multipart(
        self, bucket: str, key: str, data_path: Path, job: _Job, size: int,
        meta: dict[str, str], content_type: str, opts: TransferOptions,
    ) -> tuple[_Done, str | None]:  # fmt: skip
        """Upload ``data_path`` in parts, resuming a recorded upload of the same source."""
        part_size = self.settings.part_size(size)
        algorithm: Algorithm = "SHA256" if opts.verify else "CRC32"
        source = job.path.resolve()
        identity = {
            "endpoint": self.endpoint, "bucket": bucket, "key": key,
            "source": str(source), "source_size": job.size, "source_mtime": job.mtime,
            "size": size, "part_size": part_size, "algorithm": algorithm,
            "compressed": opts.compress,
        }  # fmt: skip
        state_path = self._state_path(bucket, key)
        state, parts = self._resume_state(state_path, identity, opts.resume)
        if state is None:
            with self.errors(f"s3://{bucket}/{key}"):
                created = self.client.create_multipart_upload(
                    Bucket=bucket, Key=key, Metadata=meta, ContentType=content_type,
                    ChecksumAlgorithm=algorithm,
                )  # fmt: skip
            state = {**identity, "upload_id": created["UploadId"], "parts": {},
                     "started_at": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
            self._save_state(state_path, state)
        upload_id = str(state["upload_id"])
        count = max(1, -(-size // part_size))
        resumed = sum(min(part_size, size - (n - 1) * part_size) for n in parts)
        if resumed:
            self.progress.advance(resumed)
        sent = 0
        with open(data_path, "rb") as fh, _thread_pool(self.settings.max_concurrency) as pool:
            futures = {
                pool.submit(self._send_part, fh.fileno(), bucket, key, upload_id, n,
                            (n - 1) * part_size, min(part_size, size - (n - 1) * part_size),
                            algorithm): n
                for n in range(1, count + 1) if n not in parts
            }  # fmt: skip
            for future in as_completed(futures):
                n = futures[future]
                record, nbytes = future.result()  # raises: the state file stays for a resume
                parts[n] = record
                sent += nbytes
                state["parts"] = {str(k): v for k, v in sorted(parts.items())}
                self._save_state(state_path, state)
        finished: list[Any] = [{"PartNumber": n, **parts[n]} for n in sorted(parts)]
        with self.errors(f"s3://{bucket}/{key}"):
            self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": finished}
            )
        if state_path is not None:
            state_path.unlink(missing_ok=True)
        expected = None
        if algorithm == "SHA256":
            digests = b"".join(base64.b64decode(parts[n]["ChecksumSHA256"]) for n in sorted(parts))
            expected = f"{_b64(hashlib.sha256(digests).digest())}-{count}"
        return _Done(bytes=sent, resumed_bytes=resumed), expected

    def _send_part(
        self, fd: int, bucket: str, key: str, upload_id: str, number: int, offset: int,
        length: int, algorithm: Algorithm,
    ) -> tuple[dict[str, str], int]:  # fmt: skip
        data = os.pread(fd, length, offset)
        extra: dict[str, Any] = {"ChecksumAlgorithm": algorithm}
        if algorithm == "SHA256":  # computed here so the composite can be checked later
            extra["ChecksumSHA256"] = _b64(hashlib.sha256(data).digest())
        answer: dict[str, Any] = dict(
            self.client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                    PartNumber=number, Body=data, **extra)
        )  # fmt: skip
        self.progress.advance(len(data))
        record = {"ETag": str(answer["ETag"])}
        checksum = answer.get(f"Checksum{algorithm}") or extra.get(f"Checksum{algorithm}")
        if checksum:
            record[f"Checksum{algorithm}"] = str(checksum)
        return record, len(data)

    def _resume_state(
        self, path: Path | None, identity: dict[str, Any], resume: bool
    ) -> tuple[dict[str, Any] | None, dict[int, dict[str, str]]]:
        """The recorded upload for ``identity`` and its parts the server confirms, if any."""
        from botocore.exceptions import ClientError

        state = _load_json(path) if path is not None else None
        if path is None or state is None:
            return None, {}
        bucket, key = str(state.get("bucket")), str(state.get("key"))
        upload_id = str(state.get("upload_id"))
        same = all(state.get(k) == v for k, v in identity.items())
        if not resume or not same:
            with contextlib.suppress(ClientError):  # already gone: nothing to clean
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            path.unlink(missing_ok=True)
            return None, {}
        try:
            listed: dict[int, str] = {}
            pages = self.client.get_paginator("list_parts")
            for page in pages.paginate(Bucket=bucket, Key=key, UploadId=upload_id):
                listed.update({p["PartNumber"]: p["ETag"] for p in page.get("Parts", [])})
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise
            path.unlink(missing_ok=True)  # completed or aborted meanwhile: start afresh
            return None, {}
        recorded = {int(n): rec for n, rec in state.get("parts", {}).items()}
        parts = {n: rec for n, rec in recorded.items() if listed.get(n) == rec.get("ETag")}
        return state, parts

    def _state_path(self, bucket: str, key: str) -> Path | None:
        if self.state_dir is None:
            return None
        name = hashlib.sha256(f"{self.endpoint}|{bucket}|{key}".encode())
        return self.state_dir / f"{name.hexdigest()[:32]}.json"

    def _save_state(self, path: Path | None, state: dict[str, Any]) -> None:
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(path)

    def _scratch_dir(self) -> Path:
        import tempfile

        return Path(tempfile.gettempdir())

    def _scratch(self, name: str) -> Path:
        base = self.state_dir if self.state_dir is not None else self._scratch_dir()
        base.mkdir(parents=True, exist_ok=True)
        return base / f".{uuid.uuid4().hex[:12]}-{name}"
