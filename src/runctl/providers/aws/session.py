"""One resolved AWS region (and optional endpoint) from which every boto3 client is made.

Region precedence, the same for EC2, SSM, S3 and every other client runctl makes:
``--region`` > the region recorded when runctl created the instance > config ``aws.region`` >
the AWS SDK chain (``AWS_REGION``/``AWS_DEFAULT_REGION``, the profile's ``region``). Only the
Pricing API is different by design: it exists in a few regions (see pricing.py).

``aws.endpoint_url`` points every client at an AWS-compatible endpoint (a moto server in the
tests, LocalStack-likes); empty means real AWS. botocore failures become RunctlErrors through
``map_error`` so no SDK exception reaches the user.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from runctl.config import Config
from runctl.errors import (
    AuthError,
    ConfigError,
    NoCapacityError,
    NotFoundError,
    ProviderError,
    RunctlError,
    TransportError,
    UsageError,
    aws_credentials_error,
)

log = logging.getLogger(__name__)
_AUTH_CODES = {
    "AuthFailure", "UnauthorizedOperation", "AccessDenied", "AccessDeniedException",
    "InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "OptInRequired",
}  # fmt: skip
_CAPACITY_CODES = {
    "InsufficientInstanceCapacity", "MaxSpotInstanceCountExceeded", "VcpuLimitExceeded",
    "InstanceLimitExceeded", "SpotMaxPriceTooLow", "InsufficientCapacity",
}  # fmt: skip
_NOT_FOUND_HINTS = {
    "InvalidInstanceID.NotFound": "see `runctl aws status ID` or the EC2 console; check --region",
    "InvalidInstanceID.Malformed": "instance ids look like i-0123456789abcdef0",
    "InvalidAMIID.NotFound": "the AMI does not exist in this region; drop --ami-id to let "
    "runctl pick one, or check --region",
    "InvalidAMIID.Malformed": "AMI ids look like ami-0123456789abcdef0",
    "InvalidInstanceType": "check the spelling (e.g. g5.xlarge) and that the type exists "
    "in this region",
    "InvalidInstanceType.NotFound": "check the spelling (e.g. g5.xlarge) and that the type "
    "exists in this region",
    "InvalidKeyPair.NotFound": "drop --key-name to let runctl import your public key",
    "InvalidGroup.NotFound": "check --security-group (an sg-... id or a group name)",
    "InvalidVolume.NotFound": "see `runctl aws ebs list`",
    "InvalidSnapshot.NotFound": "see `runctl aws ebs snapshot-list`",
    "ParameterNotFound": "check the SSM parameter name (aws.gpu_ami_parameter / "
    "aws.cpu_ami_parameter) or pass --ami-id",
    "InvalidSpotInstanceRequestID.NotFound": "the spot request is gone",
}


@dataclass
class AwsSession:
    """boto3 clients for one region; all built from a single ``boto3.Session``."""

    region: str
    profile: str = ""
    endpoint_url: str = ""
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    def client(self, service: str, region: str | None = None, attempts: int = 0) -> Any:
        """A cached client for ``service`` (``region`` only for region-pinned APIs).

        ``attempts`` caps retries (0: the SDK default) for calls whose failure is harmless.
        """
        key = f"{service}@{region or self.region}/{attempts}"
        if key not in self._clients:
            from botocore.config import Config as BotoConfig

            retries: dict[str, Any] = {"mode": "standard"}
            if attempts:
                retries["total_max_attempts"] = attempts
            config = BotoConfig(
                retries=retries,  # type: ignore[arg-type]
                connect_timeout=10,
                read_timeout=60,
            )
            client = self._boto().client(
                service,
                region_name=region or self.region,
                endpoint_url=self.endpoint_url or None,
                config=config,
            )
            if log.isEnabledFor(logging.DEBUG):  # runctl -v: one line per API call
                where = f", endpoint {self.endpoint_url}" if self.endpoint_url else ""
                log.debug("aws: %s client, region %s%s", service, region or self.region, where)
                client.meta.events.register("before-call", _log_call)
            self._clients[key] = client
        return self._clients[key]

    def _boto(self) -> Any:
        if self._session is None:
            self._session = _boto_session(self.profile)
        return self._session


def _log_call(model: Any = None, **_kw: Any) -> None:
    service = getattr(getattr(model, "service_model", None), "service_name", "?")
    log.debug("aws: %s.%s", service, getattr(model, "name", "?"))


@cache
def _boto_session(profile: str) -> Any:
    """One boto3 session per profile and process: service models are loaded once."""
    import boto3
    from botocore.exceptions import ProfileNotFound

    try:
        return boto3.session.Session(profile_name=profile or None)
    except ProfileNotFound:
        raise ConfigError(
            f"AWS profile {profile!r} not found",
            hint="check aws.profile (`runctl config show`) and ~/.aws/config",
        ) from None


def resolve_region(
    config: Config, explicit: str | None = None, recorded: str | None = None
) -> str:
    """The region to use: --region > recorded > aws.region > SDK chain; ConfigError if none."""
    for candidate in (explicit, recorded, config.get("aws.region")):
        if candidate:
            return str(candidate)
    # AWS_REGION is the cross-SDK variable; botocore itself reads AWS_DEFAULT_REGION/profile.
    chain = os.environ.get("AWS_REGION") or _boto_session(config.get("aws.profile")).region_name
    if chain:
        return str(chain)
    raise ConfigError(
        "no AWS region configured",
        hint="pass --region, run `runctl config set aws.region us-east-1`, or set AWS_REGION",
    )


def make_session(config: Config, region: str) -> AwsSession:
    return AwsSession(
        region=region,
        profile=config.get("aws.profile"),
        endpoint_url=config.get("aws.endpoint_url"),
    )


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def map_error(exc: BaseException, action: str) -> RunctlError | None:
    """The RunctlError to show for a botocore failure during ``action``; None if not one."""
    from botocore import exceptions as bex

    if isinstance(exc, bex.ClientError):
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")) or code
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _NOT_FOUND_HINTS or code.endswith(".NotFound"):
            cls = UsageError if "Malformed" in code or code == "InvalidInstanceType" else None
            hint = _NOT_FOUND_HINTS.get(code, "check the id and --region")
            return (cls or NotFoundError)(f"{action}: {message}", hint=hint)
        if code in _AUTH_CODES:
            return AuthError(
                f"{action}: AWS refused the request ({code})",
                hint="check the credentials (AWS_PROFILE, aws.profile, `aws configure`) and "
                "the IAM permissions",
            )
        if code in _CAPACITY_CODES:
            return NoCapacityError(
                f"{action}: {code}: {message}",
                hint="try another instance type, region or availability zone, or retry later; "
                "for quotas see the Service Quotas console",
                status=status,
                body=message,
            )
        if code in {"InvalidParameterValue", "InvalidParameterCombination", "Unsupported",
                    "MissingParameter", "ValidationException", "InvalidParameter"}:  # fmt: skip
            return UsageError(f"{action}: {message}", hint="check the options you passed")
        if code in {"IncorrectInstanceState", "VolumeInUse", "IncorrectState"}:
            from runctl.errors import ConflictError

            return ConflictError(f"{action}: {message}", hint="check the current state first")
        return ProviderError(
            f"{action}: {code}: {message}",
            hint="retry; if it keeps failing check the AWS console",
            status=status,
            body=message,
        )
    credentials = aws_credentials_error(exc)
    if credentials is not None:
        return credentials
    if isinstance(exc, bex.NoRegionError):
        return ConfigError("no AWS region configured", hint="pass --region or set aws.region")
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectionError | bex.HTTPClientError):
        return TransportError(
            f"{action}: cannot reach AWS: {exc}",
            hint="check the network, aws.endpoint_url and the region",
        )
    if isinstance(exc, bex.ParamValidationError):
        return UsageError(f"{action}: invalid request: {exc}")
    if isinstance(exc, bex.BotoCoreError):
        # e.g. ResponseParserError when an endpoint answers HTTP 500 with HTML
        return ProviderError(f"{action}: {type(exc).__name__}: {exc}")
    return None


@contextmanager
def aws_errors(action: str) -> Iterator[None]:
    """Turn botocore exceptions raised inside the block into RunctlErrors."""
    try:
        yield
    except RunctlError:
        raise
    except Exception as exc:
        mapped = map_error(exc, action)
        if mapped is None:
            raise
        raise mapped from exc
