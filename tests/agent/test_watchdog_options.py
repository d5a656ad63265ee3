"""The watchdog options shared by `watchdog arm` (and later `run`, `workflow train`)."""

from __future__ import annotations

import pytest

from runctl.cli.watchdog_options import policy_from_options
from runctl.core.watchdog import WatchdogPolicy
from runctl.errors import UsageError


def test_durations_and_defaults() -> None:
    policy = policy_from_options(max_duration="90m", idle_timeout="2h", idle_gpu_util=5.0,
                                 lost_controller_timeout="3600", on="local", name="x")  # fmt: skip
    assert policy == WatchdogPolicy(
        max_duration_s=5400.0,
        idle_timeout_s=7200.0,
        idle_gpu_util_pct=5.0,
        lost_controller_timeout_s=3600.0,
    )
    assert policy.action is None and policy.spot is None  # the provider decides
    assert policy_from_options(name="x") is None


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"watchdog_action": "stop"}, "needs a policy"),
        ({"idle_gpu_util": 5.0, "max_duration": "1h"}, "needs --idle-timeout"),
        ({"max_duration": "soon"}, "invalid duration"),
    ],
)
def test_bad_combinations(opts: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        policy_from_options(**opts)
