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

Every botocore failure leaves this package as a RunctlError (``client.map_error``). boto3 is
imported inside functions only, so importing this package costs nothing.

Modules: ``uri`` (s3:// URIs), ``client`` (the client, error mapping), ``model`` (data),
``local`` (local files), ``base``/``upload``/``download``/``storage`` (S3Storage, split by
direction), ``direct`` (botocore-free small requests), ``review`` (key kinds, checkpoints).
"""

from __future__ import annotations

from runctl.storage.s3.client import S3Settings, make_client, map_error
from runctl.storage.s3.local import is_selected, safe_destination, walk_local
from runctl.storage.s3.model import (
    META_COMPRESSED,
    META_SHA256,
    MIB,
    CleanupPlan,
    LocalFile,
    NullProgress,
    ObjectInfo,
    Progress,
    TransferOptions,
    TransferSummary,
    WatchEvent,
    WatchPoll,
)
from runctl.storage.s3.review import classify, order_checkpoints, review_objects
from runctl.storage.s3.storage import S3Storage
from runctl.storage.s3.uri import S3Uri, bucket_name_problem, is_s3_uri, parse_uri

__all__ = [
    "CleanupPlan",
    "LocalFile",
    "META_COMPRESSED",
    "META_SHA256",
    "MIB",
    "NullProgress",
    "ObjectInfo",
    "Progress",
    "S3Settings",
    "S3Storage",
    "S3Uri",
    "TransferOptions",
    "TransferSummary",
    "WatchEvent",
    "WatchPoll",
    "bucket_name_problem",
    "classify",
    "is_s3_uri",
    "is_selected",
    "make_client",
    "map_error",
    "order_checkpoints",
    "parse_uri",
    "review_objects",
    "safe_destination",
    "walk_local",
]
