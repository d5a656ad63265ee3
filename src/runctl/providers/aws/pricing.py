"""Instance prices: the Pricing API when it answers, a shipped dated table when it does not.

The Price List Query API lives only in a few regions (us-east-1, eu-central-1, ap-south-1), so
its client is pinned to us-east-1 and filtered by ``regionCode``; each ``PriceList`` item is a
JSON *string*. Spot prices come from ``describe_spot_price_history`` in the instance's region
(``SpotPrice`` is a string too). ``prices.json`` next to this module is the offline fallback,
dated, for the common CPU and GPU families.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any

from runctl.providers.aws.session import AwsSession

log = logging.getLogger(__name__)
PRICING_REGION = "us-east-1"


@dataclass(frozen=True)
class Price:
    hourly_usd: float
    source: str  # "api" | "table" | "estimate"
    as_of: str = ""


@cache
def price_table() -> dict[str, Any]:
    text = resources.files("runctl.providers.aws").joinpath("prices.json").read_text()
    table: dict[str, Any] = json.loads(text)
    return table


def table_price(instance_type: str, region: str) -> Price | None:
    """The shipped price for ``instance_type`` scaled to ``region``; None if not listed."""
    table = price_table()
    base = table["on_demand"].get(instance_type)
    if base is None:
        return None
    factor = table["region_factor"].get(region)
    source = "table" if factor is not None else "estimate"
    return Price(round(float(base) * (factor or 1.0), 4), source, table["as_of"])


def product_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    """get_products filters for Linux, shared tenancy, no pre-installed software."""
    fields = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
    }
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in fields.items()]


def parse_on_demand(price_list: list[str]) -> float | None:
    """The hourly USD price in a get_products ``PriceList`` (items are JSON strings)."""
    for raw in price_list:
        item = json.loads(raw) if isinstance(raw, str) else raw
        for term in item.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = dim.get("pricePerUnit", {}).get("USD")
                if dim.get("unit") == "Hrs" and usd is not None and float(usd) > 0:
                    return float(usd)
    return None


def on_demand_price(session: AwsSession, instance_type: str) -> Price | None:
    """The on-demand hourly price: Pricing API first, then the shipped table, else None.

    With ``aws.endpoint_url`` set (an AWS-compatible endpoint) only the table is used: the
    Pricing API exists on AWS alone.
    """
    if session.endpoint_url:
        return table_price(instance_type, session.region)
    try:
        client = session.client("pricing", region=PRICING_REGION, attempts=1)
        answer = client.get_products(
            ServiceCode="AmazonEC2",
            Filters=product_filters(instance_type, session.region),
            FormatVersion="aws_v1",
            MaxResults=10,
        )
        value = parse_on_demand(answer.get("PriceList", []))
        if value is not None:
            return Price(value, "api", datetime.now(UTC).date().isoformat())
    except Exception as exc:  # noqa: BLE001 - any failure (no permission, no API) -> table
        log.debug("pricing API unavailable: %s", exc)
    return table_price(instance_type, session.region)


def spot_price(session: AwsSession, instance_type: str) -> float | None:
    """The lowest current spot price across the region's AZs; None if unknown."""
    try:
        answer = session.client("ec2").describe_spot_price_history(
            InstanceTypes=[instance_type],
            ProductDescriptions=["Linux/UNIX"],
            StartTime=datetime.now(UTC),
        )
    except Exception as exc:  # noqa: BLE001 - a price is advisory; never fail a launch on it
        log.debug("spot price history unavailable: %s", exc)
        return None
    prices = [float(p["SpotPrice"]) for p in answer.get("SpotPriceHistory", [])]
    return min(prices) if prices else None
