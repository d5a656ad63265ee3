"""HTTP calls to cloud APIs with one retry policy: 429 and 5xx retried, other 4xx never.

A 429 waits what ``Retry-After`` asks (seconds or an HTTP date, capped); a 5xx or a dropped
connection backs off exponentially with jitter. Creates are special: the caller passes
``retry=False`` and decides itself, because an API can create a resource and still answer 5xx
(see ``runpod.api.RunpodApi.create_pod``). The API key travels only in the ``Authorization``
header, so neither URLs nor error messages ever contain it.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from runctl.errors import ProviderError, TransportError

Sleep = Callable[[float], None]

MAX_ATTEMPTS = 5
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 30.0
RETRY_AFTER_CAP_S = 120.0


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before retry ``attempt`` (0-based): exponential, capped, with 50-100% jitter."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2.0**attempt)
    return ceiling * (rng or random.Random()).uniform(0.5, 1.0)


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date); None if absent."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_retryable(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass
class HttpCaller:
    """Sends requests through an injected ``httpx.Client`` with the retry policy above."""

    client: httpx.Client
    api_key: str
    service: str  # "RunPod", "Lyceum": used in messages
    sleep: Sleep = time.sleep
    max_attempts: int = MAX_ATTEMPTS
    rng: random.Random = field(default_factory=random.Random)
    #: a 5xx this says is final is returned at once (e.g. Lyceum's "out of capacity" 500)
    is_final: Callable[[httpx.Response], bool] = lambda _response: False

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}

    def send(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        retry: bool = True,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        """Send one request; retried on 429/5xx/connection errors when ``retry``.

        Returns the last response whatever its status (the caller maps 4xx/5xx to errors).
        Raises TransportError when the API cannot be reached at all.
        """
        attempts = self.max_attempts if retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self.client.request(
                    method, url, json=json, params=params, headers=self.headers(),
                    timeout=timeout_s if timeout_s is not None else httpx.USE_CLIENT_DEFAULT,
                )  # fmt: skip
            except httpx.TransportError as exc:
                if last:
                    raise TransportError(
                        f"cannot reach the {self.service} API at {_origin(url)}: "
                        f"{type(exc).__name__}",
                        hint="check the network, or the api_url setting (`runctl config show`)",
                    ) from None
                self.sleep(backoff_s(attempt, self.rng))
                continue
            if last or not is_retryable(response.status_code) or self.is_final(response):
                return response
            self.sleep(self.delay_for(response, attempt))
        raise AssertionError("unreachable")  # pragma: no cover

    def delay_for(self, response: httpx.Response, attempt: int) -> float:
        """How long to wait before retrying after ``response``."""
        if response.status_code == 429:
            asked = retry_after_s(response)
            if asked is not None:
                if asked > RETRY_AFTER_CAP_S:
                    raise ProviderError(
                        f"{self.service} API rate limit: asked to wait {asked:.0f}s",
                        hint="try again later",
                        status=429,
                        body=response.text[:500],
                    )
                return asked
        return backoff_s(attempt, self.rng)


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.port else "")


def new_client(timeout_s: float = 30.0) -> httpx.Client:
    """The default client: no env proxies for loopback fakes, sane timeouts."""
    return httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0), follow_redirects=False)


def resolve_api_key(env_var: str, configured: str, service: str, config_key: str) -> str:
    """The API key: the environment variable wins over the config file (never printed).

    Raises AuthError with a hint when neither is set.
    """
    import os

    from runctl.errors import AuthError

    key = os.environ.get(env_var, "").strip() or (configured or "").strip()
    if not key:
        raise AuthError(
            f"no {service} API key",
            hint=f"export {env_var}=..., or `runctl config set --global {config_key} KEY` "
            "(the file is written with mode 0600)",
        )
    return key
