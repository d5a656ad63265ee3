"""The one configured boto3 client, and botocore failures turned into RunctlErrors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

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
from runctl.storage.s3.model import MAX_PARTS, MIB, MIN_PART_BYTES

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

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
    import botocore.session
    from botocore.config import Config
    from botocore.exceptions import ProfileNotFound

    core = botocore.session.get_session()
    # A 10,000-object listing spent ~3 s of CPU in dateutil parsing LastModified; S3 sends
    # ISO 8601 there, which datetime parses far faster (other shapes go to botocore's parser).
    factory = core.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=_parse_timestamp)
    try:
        session = boto3.session.Session(
            botocore_session=core,
            profile_name=settings.profile or None,
            region_name=settings.region or None,
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


def _parse_timestamp(value: Any) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)  # "2026-12-02T01:02:03.000Z" (Python >= 3.11)
    except (TypeError, ValueError):  # HTTP dates, epoch numbers
        from botocore.utils import parse_timestamp

        return parse_timestamp(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
