"""S3 transfers: ``s3://`` URIs, one configured client, and the operations runctl offers.

A transfer is planned first (which files go where, which are already up to date, what
``--delete`` removes), so ``--dry-run`` shows exactly what would happen; then the jobs run:

- objects below the multipart threshold go through one thread pool sharing one client, a
  single request each (a transfer manager per small file costs more than the request);
- larger uploads are multipart uploads whose parts go up in parallel. The upload id and the
  finished parts are recorded in ``<state_dir>/<hash>.json`` (RUNCTL_HOME/transfers), so
  running the same upload after an interruption sends only the missing parts; ListParts
  confirms which of them the server really holds;
- larger downloads use boto3's transfer manager (parallel ranged GETs) into a temporary file
  that is renamed into place, so an interrupted download never leaves a truncated file.

Downloads never write outside the destination: keys with ``..``, ``.`` or empty segments,
absolute keys, and keys that resolve (through symlinks) outside it are skipped with a warning.

Up to date means: same size, and the destination is not older than the source (downloads get
the object's LastModified as mtime); when it is older, a single-part ETag (the MD5) may still
prove the content equal. With ``verify`` every object carries the SHA-256 of its original
content in metadata (``runctl-sha256``), parts are sent with SHA-256 checksums the server
checks, and the result is compared with the server's own checksum after the transfer.

Every botocore failure leaves this module as a RunctlError (see ``map_error``). boto3 is
imported inside functions only, so importing this module costs nothing.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import gzip
import hashlib
import json
import mimetypes
import os
import re
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from runctl.errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    ProviderError,
    RunctlError,
    TransportError,
    UsageError,
    aws_credentials_error,
)
from runctl.storage.checkpoints import CHECKPOINT_EXTS, step_of
from runctl.storage.s3_direct import DirectFailed, DirectS3

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig
    from mypy_boto3_s3.client import S3Client

MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB  # S3 rejects smaller parts (EntityTooSmall), except the last one
MAX_PARTS = 10_000
MTIME_SLACK_S = 1.0  # LastModified has one-second resolution
META_SHA256 = "runctl-sha256"  # hex SHA-256 of the original (uncompressed) content
META_COMPRESSED = "runctl-compressed"  # "gzip" when runctl compressed the file on upload
_COPY_CHUNK = 4 * MIB
Algorithm = Literal["CRC32", "SHA256"]

# ----------------------------------------------------------------------------- URIs

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
_IPV4_RE = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_URI_HINT = "S3 locations look like s3://bucket/prefix/key"


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str = ""

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    @property
    def prefix(self) -> str:
        """The key read as a directory: "" or ending in "/"."""
        return self.key if not self.key or self.key.endswith("/") else self.key + "/"


def is_s3_uri(text: str) -> bool:
    return text[:5].lower() == "s3://"


def parse_uri(text: str) -> S3Uri:
    """Split ``s3://bucket/key`` and check the bucket name; raise UsageError if invalid."""
    if not is_s3_uri(text):
        raise UsageError(f"not an S3 location: {text!r}", hint=_URI_HINT)
    bucket, _, key = text[5:].partition("/")
    problem = bucket_name_problem(bucket)
    if problem:
        raise UsageError(
            f"invalid bucket name {bucket!r} in {text!r}: {problem}",
            hint="bucket names have 3-63 characters: lowercase letters, digits, '.' and '-'",
        )
    if len(key.encode()) > 1024 or "\x00" in key:
        raise UsageError(f"invalid S3 key in {text!r}", hint="keys are at most 1024 bytes")
    return S3Uri(bucket, key)


def bucket_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid S3 bucket name (AWS naming rules), or None."""
    if not name:
        return "the bucket is missing"
    if not 3 <= len(name) <= 63:
        return "it must have 3 to 63 characters"
    if not _BUCKET_RE.match(name):
        return "use a-z, 0-9, '.' and '-', starting and ending with a letter or digit"
    if ".." in name or ".-" in name or "-." in name:
        return "'.' must not touch another '.' or '-'"
    if _IPV4_RE.match(name):
        return "it must not look like an IP address"
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3", ".mrap")):
        return "it uses a prefix or suffix that AWS reserves"
    return None


# ----------------------------------------------------------------------------- client


@dataclass(frozen=True)
class S3Settings:
    """Client settings; empty strings mean "let the AWS SDK chain decide"."""

    region: str = ""
    profile: str = ""
    endpoint_url: str = ""
    max_concurrency: int = 16
    multipart_threshold: int = 16 * MIB

    def part_size(self, size: int) -> int:
        """Part size for a ``size``-byte upload: the threshold, grown to stay under 10,000."""
        return max(self.multipart_threshold, MIN_PART_BYTES, -(-size // MAX_PARTS))


def make_client(settings: S3Settings) -> S3Client:
    """One S3 client for all threads: standard retries, a pool as wide as our threads."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    try:
        session = boto3.session.Session(
            profile_name=settings.profile or None, region_name=settings.region or None
        )
    except ProfileNotFound:
        raise ConfigError(
            f"AWS profile {settings.profile!r} not found",
            hint="check aws.profile (`runctl config show`) and ~/.aws/config",
        ) from None
    config = Config(
        retries={"mode": "standard"},  # attempts: AWS_MAX_ATTEMPTS / ~/.aws/config, else 3
        max_pool_connections=2 * settings.max_concurrency + 4,
        connect_timeout=10,
        read_timeout=120,
        tcp_keepalive=True,
    )
    # endpoint_url=None lets boto3 honour AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL itself.
    return session.client("s3", endpoint_url=settings.endpoint_url or None, config=config)


# ----------------------------------------------------------------------------- errors

_AUTH_CODES = {
    "AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AccountProblem", "403",
}  # fmt: skip
_REGION_CODES = {"PermanentRedirect", "AuthorizationHeaderMalformed", "301", "400"}
_MISSING_CODES = {"NoSuchKey", "404", "NotFound"}
# A whole transfer stops on these; anything else fails only the object it happened to.
_FATAL_CODES = _AUTH_CODES | _REGION_CODES | {"NoSuchBucket"}


def map_error(exc: BaseException, where: str = "", endpoint: str = "") -> RunctlError | None:
    """The RunctlError to show for a botocore failure, or None when ``exc`` is not one."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", "")) or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            bucket = error.get("BucketName") or where.removeprefix("s3://").split("/")[0]
            return NotFoundError(
                f"bucket {bucket!r} does not exist",
                hint="check the name, the region (aws.region) and the endpoint (s3.endpoint_url)",
            )
        if code in _MISSING_CODES:
            return NotFoundError(f"{where or 'object'} not found", hint="see `runctl s3 list`")
        if code in _AUTH_CODES:
            return AuthError(
                f"S3 refused {exc.operation_name} on {where}: {code}",
                hint="check the credentials (AWS_PROFILE, aws.profile, `aws configure`) "
                "and the bucket policy",
            )
        if code in _REGION_CODES and code != "400":
            return ConfigError(
                f"{where} lives in another region ({code})",
                hint="set aws.region (`runctl config set aws.region REGION`) or AWS_REGION",
            )
        return ProviderError(
            f"S3 {exc.operation_name} failed on {where}: {code}: {message}",
            hint="retry; if it keeps failing, check the endpoint and the object",
            status=status,
            body=message,
        )
    credentials = aws_credentials_error(exc)
    if credentials is not None:
        return credentials
    if isinstance(exc, bex.ConnectionError | bex.HTTPClientError):
        return TransportError(
            f"cannot reach S3 at {endpoint or 'the AWS endpoint'}: {exc}",
            hint="check s3.endpoint_url / AWS_ENDPOINT_URL_S3 and the network",
        )
    if isinstance(exc, bex.ParamValidationError):
        return UsageError(f"invalid S3 request: {exc}")
    if isinstance(exc, bex.BotoCoreError):
        return ProviderError(f"S3 error on {where}: {exc}")
    return None


def _is_fatal(exc: BaseException) -> bool:
    """Whether ``exc`` should stop a whole transfer rather than fail one object."""
    from botocore.exceptions import ClientError

    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "")) in _FATAL_CODES
    if isinstance(exc, RunctlError) and exc.__cause__ is not None:  # mapped by errors()
        return _is_fatal(exc.__cause__)
    # A local file problem or a checksum mismatch fails that object only; credentials,
    # network (BotoCoreError), bugs and interrupts stop everything.
    return not isinstance(exc, OSError | RunctlError)


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    last_modified: float  # seconds since the epoch
    etag: str = ""

    @property
    def modified(self) -> str:
        return datetime.fromtimestamp(self.last_modified, UTC).isoformat(timespec="seconds")

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "last_modified": self.modified}


@dataclass(frozen=True)
class LocalFile:
    rel: str  # POSIX path relative to the transfer root
    path: Path
    size: int
    mtime: float


@dataclass(frozen=True)
class TransferOptions:
    include: tuple[str, ...] = ()  # glob patterns; when given, a file must match one
    exclude: tuple[str, ...] = ()  # glob patterns; a matching file is left out
    compress: bool = False  # gzip on upload (key gets .gz); gunzip such objects on download
    verify: bool = False  # SHA-256 end to end (see the module docstring)
    resume: bool = True  # continue recorded multipart uploads; False aborts and restarts
    skip_unchanged: bool = False  # leave destinations that are already up to date
    delete: bool = False  # sync: remove destination files the source does not have
    dry_run: bool = False


@dataclass
class TransferSummary:
    operation: str
    source: str
    destination: str
    dry_run: bool = False
    files: int = 0  # transferred this run
    bytes: int = 0  # sent or received this run
    skipped: int = 0  # already up to date
    resumed_bytes: int = 0  # parts an interrupted earlier upload had already sent
    deleted: int = 0
    verified: int = 0
    seconds: float = 0.0
    failed: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)  # planned work (dry run)

    @property
    def mb_per_s(self) -> float:
        return round(self.bytes / 1e6 / self.seconds, 2) if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["mb_per_s"] = self.mb_per_s
        if not self.dry_run:
            del data["actions"]
        return data


class Progress(Protocol):
    """Receives transfer progress; ``advance`` is called from worker threads."""

    def start(self, files: int, nbytes: int) -> None: ...
    def advance(self, nbytes: int) -> None: ...
    def finish(self) -> None: ...


class NullProgress:
    def start(self, files: int, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


@dataclass
class _Job:
    op: str  # "upload" | "download"
    key: str
    size: int
    path: Path  # source file (upload) or destination file (download)
    mtime: float = 0.0  # local mtime (upload) or LastModified (download)
    label: str = ""


@dataclass
class _Done:
    bytes: int = 0
    resumed_bytes: int = 0
    verified: bool = False
    warning: str = ""


# ----------------------------------------------------------------------------- local files


def is_selected(rel: str, include: Iterable[str], exclude: Iterable[str]) -> bool:
    """Apply --include/--exclude to a relative POSIX path.

    A pattern with no "/" also matches the file name alone, so ``*.pt`` and ``events.*``
    work at any depth. With includes, a file must match one; any exclude match drops it.
    """
    name = rel.rsplit("/", 1)[-1]

    def hit(pattern: str) -> bool:
        return fnmatch.fnmatchcase(rel, pattern) or (
            "/" not in pattern and fnmatch.fnmatchcase(name, pattern)
        )

    include = list(include)
    if include and not any(hit(p) for p in include):
        return False
    return not any(hit(p) for p in exclude)


def walk_local(
    root: Path, include: Iterable[str] = (), exclude: Iterable[str] = (),
    warn: Callable[[str], None] | None = None,
) -> list[LocalFile]:  # fmt: skip
    """Regular files under ``root`` (symlinked directories are not followed), sorted."""
    include, exclude = tuple(include), tuple(exclude)
    found: list[LocalFile] = []

    def unreadable(exc: OSError) -> None:
        _call(warn, f"skipping {exc.filename}: {exc.strerror}")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if not is_selected(rel, include, exclude):
                continue
            try:
                rel.encode()
                st = path.stat()
            except UnicodeEncodeError:
                _call(warn, f"skipping {path}: the name is not valid UTF-8")
                continue
            except OSError as exc:
                _call(warn, f"skipping {path}: {exc.strerror}")
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(LocalFile(rel, path, st.st_size, st.st_mtime))
    return found


def safe_destination(root: Path, rel: str) -> Path | None:
    """Where key part ``rel`` lands under ``root``, or None if that would leave ``root``."""
    if not rel or rel.startswith("/") or "\x00" in rel:
        return None
    if any(sep in rel for sep in (os.sep, os.altsep) if sep and sep != "/"):
        return None
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    target = root.joinpath(*parts)
    try:
        target.resolve().relative_to(root.resolve())  # also catches symlinks out of root
    except (ValueError, OSError):
        return None
    return target


def _call(fn: Callable[[str], None] | None, message: str) -> None:
    if fn is not None:
        fn(message)


def _is_current(
    src_size: int, src_mtime: float, dst_size: int, dst_mtime: float,
    etag: str, local: Path | None,
) -> bool:  # fmt: skip
    """Whether a destination already matches its source (see the module docstring)."""
    if src_size != dst_size:
        return False
    if dst_mtime >= src_mtime - MTIME_SLACK_S:
        return True
    plain_md5 = etag.strip('"')
    if local is None or not plain_md5 or "-" in plain_md5:
        return False
    return _file_digest(local, "md5") == plain_md5


def _file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


# ----------------------------------------------------------------------------- storage


class S3Storage:
    """S3 operations for one set of settings; safe to share between threads."""

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

    def plan_cleanup(self, uri: S3Uri, keep_last_n: int) -> CleanupPlan:
        """Which checkpoint objects under ``uri`` to keep and which to delete; no side effects."""
        checkpoints = order_checkpoints(
            [
                o
                for o in self.iter_objects(uri.bucket, uri.prefix)
                if classify(o.key) == "checkpoint"
            ]
        )
        cut = max(len(checkpoints) - keep_last_n, 0)
        return CleanupPlan(uri, checkpoints[cut:], checkpoints[:cut])

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

    # ------------------------------------------------------------------------- helpers

    def _warn(self, message: str) -> None:
        _call(self._warn_fn, message)

    def _warner(self, summary: TransferSummary) -> Callable[[str], None]:
        def warn(message: str) -> None:
            summary.warnings.append(message)
            self._warn(message)

        return warn


# ----------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class CleanupPlan:
    uri: S3Uri
    keep: list[ObjectInfo]
    delete: list[ObjectInfo]


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "new" | "changed" | "deleted"
    obj: ObjectInfo


@dataclass(frozen=True)
class WatchPoll:
    number: int
    objects: int
    bytes: int
    events: list[WatchEvent]


_STEP_WORD_RE = re.compile(r"(step|epoch|iter|ckpt|checkpoint)[_-]?\d+", re.IGNORECASE)
_MODEL_EXTS = (".onnx", ".gguf", ".ggml", ".h5", ".keras", ".tflite", ".mlmodel", ".engine")
_GENERIC_EXTS = (".bin", ".pkl", ".pb", ".joblib")  # models only when the name says so
_MODEL_WORDS = ("model", "best", "final", "export")
_LOG_EXTS = (".log", ".out", ".err")


def classify(key: str) -> str:
    """Sort a key into "checkpoint", "model", "log" or "other" by its name and folders.

    Checkpoint files named best/final/model (without a step number) count as models, which
    is also what keeps ``cleanup`` away from them.
    """
    name = key.rsplit("/", 1)[-1].lower()
    if name.endswith(_LOG_EXTS) or "tfevents" in name or "/logs/" in f"/{key.lower()}":
        return "log"
    named_model = any(word in name for word in _MODEL_WORDS)
    if name.endswith(CHECKPOINT_EXTS):
        return "model" if named_model and not _STEP_WORD_RE.search(name) else "checkpoint"
    if name.endswith(_MODEL_EXTS) or (name.endswith(_GENERIC_EXTS) and named_model):
        return "model"
    return "other"


def order_checkpoints(objects: Iterable[ObjectInfo]) -> list[ObjectInfo]:
    """Oldest first: by step/epoch number in the file name, then LastModified, then key."""

    def rank(obj: ObjectInfo) -> tuple[int, float, str]:
        step = step_of(obj.key.rsplit("/", 1)[-1])
        return (step if step is not None else -1, obj.last_modified, obj.key)

    return sorted(objects, key=rank)


def review_objects(objects: list[ObjectInfo], top_n: int = 10) -> dict[str, Any]:
    kinds = {k: {"count": 0, "bytes": 0} for k in ("checkpoint", "model", "log", "other")}
    for obj in objects:
        bucket = kinds[classify(obj.key)]
        bucket["count"] += 1
        bucket["bytes"] += obj.size
    checkpoints = order_checkpoints(o for o in objects if classify(o.key) == "checkpoint")
    largest = sorted(objects, key=lambda o: (-o.size, o.key))[:top_n]
    newest = max(objects, key=lambda o: o.last_modified, default=None)
    return {
        "total_objects": len(objects),
        "total_bytes": sum(o.size for o in objects),
        "kinds": kinds,
        "latest_checkpoint": checkpoints[-1].to_dict() if checkpoints else None,
        "last_modified": newest.modified if newest else None,
        "largest": [o.to_dict() for o in largest],
    }


def _load_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


@contextlib.contextmanager
def _thread_pool(workers: int) -> Iterator[ThreadPoolExecutor]:
    """A pool that, when the block fails (or Ctrl-C), drops queued work instead of running it."""
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="runctl-s3")
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
