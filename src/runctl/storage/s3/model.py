"""Constants and the plain data S3 transfers pass around."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from runctl.storage.s3.uri import S3Uri

MIB = 1024 * 1024
MIN_PART_BYTES = 5 * MIB  # S3 rejects smaller parts (EntityTooSmall), except the last one
MAX_PARTS = 10_000
MTIME_SLACK_S = 1.0  # LastModified has one-second resolution
META_SHA256 = "runctl-sha256"  # hex SHA-256 of the original (uncompressed) content
META_COMPRESSED = "runctl-compressed"  # "gzip" when runctl compressed the file on upload
_COPY_CHUNK = 4 * MIB
Algorithm = Literal["CRC32", "SHA256"]

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


# ----------------------------------------------------------------------------- pure helpers


@dataclass(frozen=True)
class CleanupPlan:
    """Checkpoints to keep and to delete, one ObjectInfo each (a directory checkpoint as its
    prefix ending in "/", with the total size), and every key the deletion removes."""

    uri: S3Uri
    keep: list[ObjectInfo]
    delete: list[ObjectInfo]
    delete_keys: list[str] = field(default_factory=list)


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
