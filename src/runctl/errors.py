"""User-facing errors and the exit codes they map to.

Every failure a user can cause or meet is a ``RunctlError``: one line of message plus a hint.
The CLI's single error handler prints ``Error: <message>`` and ``hint: <hint>`` on stderr and
exits with ``exit_code``. Anything else escaping is a bug and shows a traceback only with
``RUNCTL_DEBUG=1``.

Exit codes (stable, documented in README.md, "Exit codes"):

    0   success
    1   generic runctl error
    2   usage error (bad flag or argument; click's own code)
    3   configuration error
    4   authentication / credentials
    5   not found (job, host, instance, file)
    6   capability not supported by the provider
    7   transport error (ssh/connection)
    8   provider API error
    9   conflict (busy job dir, refused while running)
    10  state database unusable (corrupt, newer schema, locked by another process)
    11  local or host filesystem (no space left, not writable, not a directory, symlink loop)
    130 interrupted (Ctrl-C)

``runctl wait`` / ``runctl local`` / ``runctl exec`` instead exit with the job's own exit code
(128+N when the job died of signal N), so a failing script fails the calling shell.
"""

from __future__ import annotations


class RunctlError(Exception):
    """Base of every expected failure: a one-line message and an optional hint."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(RunctlError):
    """Invalid argument values that click itself cannot check."""

    exit_code = 2


class ConfigError(RunctlError):
    exit_code = 3


class AuthError(RunctlError):
    exit_code = 4


class NotFoundError(RunctlError):
    exit_code = 5


class NotSupportedError(RunctlError):
    exit_code = 6


class TransportError(RunctlError):
    exit_code = 7


class ProviderError(RunctlError):
    """A provider API answered with an error; carries the HTTP-ish status and body."""

    exit_code = 8

    def __init__(
        self, message: str, hint: str | None = None, status: int | None = None, body: str = ""
    ) -> None:
        super().__init__(message, hint)
        self.status = status
        self.body = body


class NoCapacityError(ProviderError):
    pass


class ConflictError(RunctlError):
    exit_code = 9


class StateError(RunctlError):
    """The state database cannot be used: corrupt, written by a newer runctl, or locked."""

    exit_code = 10


class FileSystemError(RunctlError):
    """The world's filesystem refused: disk full, permission denied, not a directory, loops."""

    exit_code = 11


class CommandFailedError(RunctlError):
    """A job or remote command ended with a non-zero exit code; we exit with the same code."""

    def __init__(self, message: str, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.exit_code = exit_code


def aws_credentials_error(exc: BaseException) -> RunctlError | None:
    """The error to show when botocore could not find or load credentials; else None.

    Shared by every AWS-backed module (EC2, S3, SSM) so the advice is the same everywhere.
    botocore is imported only when an exception needs classifying.
    """
    from botocore import exceptions as bex

    if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return AuthError(
            "no usable AWS credentials found",
            hint="set AWS_PROFILE or aws.profile, export AWS_ACCESS_KEY_ID/"
            "AWS_SECRET_ACCESS_KEY, or run `aws configure`",
        )
    if isinstance(exc, bex.ProfileNotFound):
        return ConfigError(str(exc), hint="check aws.profile and ~/.aws/config")
    return None


# errno -> (what happened, what to do); the failures of the world, not of runctl.
_OS_ERRORS = {
    "ENOSPC": ("no space left on device", "free some space (e.g. `runctl jobs prune`) and retry"),
    "EDQUOT": ("disk quota exceeded", "free some space (e.g. `runctl jobs prune`) and retry"),
    "EACCES": ("permission denied", "check the owner and mode of the path"),
    "EPERM": ("operation not permitted", "check the owner and mode of the path"),
    "EROFS": ("read-only file system", "use a writable location"),
    "ENOTDIR": ("not a directory", "a component of the path is a file"),
    "EISDIR": ("is a directory", "name a file, not a directory"),
    "ELOOP": ("too many levels of symbolic links", "a symlink loop: fix or remove the link"),
    "ENAMETOOLONG": ("file name too long", "use a shorter path"),
    "EEXIST": ("already exists", "remove it or choose another path"),
    "ENOENT": ("no such file or directory", "check the path"),
}


def from_os_error(exc: OSError, doing: str = "") -> RunctlError | None:
    """The typed error for a filesystem failure (disk full, permissions, loops...); else None.

    Used by the CLI's last-resort handler, so a full disk or an unwritable directory is a
    one-line error with a hint and exit 11 (5 for a missing path), never "internal error".
    """
    import errno as errno_mod

    name = errno_mod.errorcode.get(exc.errno or 0, "")
    known = _OS_ERRORS.get(name)
    if known is None:
        return None
    what, hint = known
    where = f": {exc.filename}" if exc.filename is not None else ""
    if exc.filename2 is not None:
        where += f" -> {exc.filename2}"
    prefix = f"{doing}: " if doing else ""
    message = f"{prefix}{what}{where}"
    if name == "ENOENT":
        return NotFoundError(message, hint=hint)
    return FileSystemError(message, hint=hint)
