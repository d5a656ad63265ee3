"""``s3://`` URIs and S3 bucket-name rules."""

from __future__ import annotations

import re
from dataclasses import dataclass

from runctl.errors import UsageError

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
