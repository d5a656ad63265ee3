"""Pure parsing: Pricing API answers, the shipped table, nvidia-smi lines, host telemetry,
the S3 pre/post steps and the gp3 limits. No servers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runctl.core import telemetry
from runctl.errors import UsageError
from runctl.providers.aws import ebs, pricing
from runctl.providers.aws.ami import login_user
from runctl.providers.aws.provider import check_instance_id, parse_endpoint

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "aws"

# nvidia-smi --query-gpu=<telemetry.GPU_FIELDS> --format=csv,noheader,nounits, as documented:
# comma+space separated, one line per GPU, unsupported values as [N/A] / [Not Supported].
GPU_LINES = [
    "2026/11/23 17:00:01.123, 0, GPU-6b1c2f6e-0d3a-4c1e-9b55-2d7f0e9a1c11, NVIDIA A10G, 37, 12, "
    "23028, 1234, 21794, 41, 243.51, 300.00, 1710, P0",
    "2026/11/23 17:00:01.124, 1, GPU-0a9d1a55-1111-2222-3333-444455556666, NVIDIA T4, [N/A], "
    "[N/A], 15360, 0, 15360, [Not Supported], [N/A], [Not Supported], 300, [N/A]",
]


class _Pricing:
    def __init__(self, answer: dict[str, Any] | Exception) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    def get_products(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class _Session:
    region = "eu-west-1"
    endpoint_url = ""

    def __init__(self, client: _Pricing) -> None:
        self.pricing = client
        self.regions: list[str | None] = []

    def client(self, service: str, region: str | None = None, attempts: int = 0) -> Any:
        self.regions.append(region)
        return self.pricing


def test_pricing_api_answer_is_parsed_from_json_strings() -> None:
    answer = json.loads((FIXTURES / "get_products_g5_xlarge.json").read_text())
    assert isinstance(answer["PriceList"][0], str)  # the API returns JSON *strings*
    assert pricing.parse_on_demand(answer["PriceList"]) == pytest.approx(1.006)
    client = _Pricing(answer)
    session = _Session(client)
    price = pricing.on_demand_price(session, "g5.xlarge")  # type: ignore[arg-type]
    assert price is not None and price.source == "api" and price.hourly_usd == pytest.approx(1.006)
    assert session.regions == ["us-east-1"]  # the Pricing API lives in few regions
    filters = {f["Field"]: f["Value"] for f in client.calls[0]["Filters"]}
    assert filters["regionCode"] == "eu-west-1" and filters["instanceType"] == "g5.xlarge"
    assert filters["operatingSystem"] == "Linux" and filters["capacitystatus"] == "Used"


def test_pricing_falls_back_to_the_dated_table() -> None:
    session = _Session(_Pricing(RuntimeError("AccessDenied")))
    price = pricing.on_demand_price(session, "g5.xlarge")  # type: ignore[arg-type]
    assert price is not None and price.source == "table"
    assert price.hourly_usd == pytest.approx(round(1.006 * 1.12, 4))
    assert price.as_of == pricing.price_table()["as_of"]
    assert pricing.on_demand_price(session, "zz9.huge") is None  # type: ignore[arg-type]
    assert pricing.table_price("t3.micro", "mars-1") == pricing.Price(0.0104, "estimate",
                                                                      price.as_of)  # fmt: skip


def test_nvidia_smi_lines_with_na_and_not_supported() -> None:
    gpus, status = telemetry.parse_gpu_lines(GPU_LINES)
    assert status == "ok"
    assert gpus[0] == {
        "index": 0, "name": "NVIDIA A10G", "uuid": "GPU-6b1c2f6e-0d3a-4c1e-9b55-2d7f0e9a1c11",
        "pstate": "P0", "util_percent": 37.0, "mem_util_percent": 12.0,
        "memory_total_mib": 23028.0, "memory_used_mib": 1234.0, "memory_free_mib": 21794.0,
        "temperature_c": 41.0, "power_w": 243.51, "power_limit_w": 300.0, "sm_clock_mhz": 1710.0,
    }  # fmt: skip
    t4 = gpus[1]
    assert t4["util_percent"] is None and t4["temperature_c"] is None
    assert t4["power_limit_w"] is None and t4["pstate"] is None
    assert t4["memory_total_mib"] == 15360.0


def test_no_gpu_and_failed_driver() -> None:
    assert telemetry.parse_gpu_lines(["NO-NVIDIA-SMI"]) == ([], "no GPU")
    failed = ["NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
              "NVIDIA-SMI-FAILED"]  # fmt: skip
    gpus, status = telemetry.parse_gpu_lines(failed)
    assert gpus == [] and status.startswith("no GPU (NVIDIA-SMI has failed")


def test_parse_whole_probe_output() -> None:
    out = "\n".join([
        "==cpu", "cpu  100 0 100 800 0 0 0 0 0 0", "cpu  150 0 150 900 0 0 0 0 0 0",
        "==load", "0.50 0.40 0.30 1/200 1234",
        "==mem", "MemTotal:       16000000 kB", "MemAvailable:    4000000 kB",
        "==disk", "Filesystem 1024-blocks Used Available Capacity Mounted on",
        "/dev/root 104857600 52428800 52428800 50% /",
        "==procs", "  4242 ubuntu   97.5  3.2 524288 3600 python3 train.py --epochs 3",
        "==gpu", *GPU_LINES[:1],
    ])  # fmt: skip
    snap = telemetry.parse(out)
    assert snap["cpu_percent"] == 50.0
    assert snap["load"] == [0.5, 0.4, 0.3]
    assert snap["memory"] == {"total_mb": 15625, "used_mb": 11718, "available_mb": 3906,
                              "percent": 75.0}  # fmt: skip
    assert snap["disks"] == [{"filesystem": "/dev/root", "mount": "/", "size_gb": 100.0,
                              "used_gb": 50.0, "percent": 50.0}]  # fmt: skip
    assert snap["processes"][0]["command"] == "python3 train.py --epochs 3"
    assert snap["processes"][0]["rss_mb"] == 512.0
    assert snap["gpus"][0]["name"] == "NVIDIA A10G"


def test_s3_steps_quote_uris_and_pass_endpoint() -> None:
    from runctl.cli.aws_train import s3_commands

    pre, post = s3_commands("aws", "s3://data/set with space/", "s3://out/run;1/",
                            "http://127.0.0.1:9", "eu-west-1")  # fmt: skip
    assert pre[0][:2] == ["sh", "-c"] and pre[0][3] == "aws"
    assert pre[0][-1] == "s3://data/set with space/"
    assert "--endpoint-url" in pre[0] and "eu-west-1" in pre[0]
    assert post[0][4] == "s3://out/run;1/"
    with pytest.raises(UsageError):
        s3_commands("aws", "/local/path", None, "", "us-east-1")


def test_gp3_limits() -> None:
    ebs.check_spec(ebs.VolumeSpec(100, iops=16000, throughput=1000))
    for bad in (ebs.VolumeSpec(0), ebs.VolumeSpec(70000), ebs.VolumeSpec(10, iops=6000),
                ebs.VolumeSpec(100, iops=90000), ebs.VolumeSpec(100, throughput=3000),
                ebs.VolumeSpec(100, iops=3000, throughput=1000),
                ebs.VolumeSpec(100, volume_type="st1", iops=3000)):  # fmt: skip
        with pytest.raises(UsageError):
            ebs.check_spec(bad)


def test_small_validators() -> None:
    assert check_instance_id("i-0123456789abcdef0") == "i-0123456789abcdef0"
    with pytest.raises(UsageError):
        check_instance_id("i-12; rm -rf /")
    assert parse_endpoint("127.0.0.1:2222") == ("127.0.0.1", 2222)
    assert parse_endpoint("bastion.example") == ("bastion.example", None)
    with pytest.raises(UsageError):
        parse_endpoint("host:22 -oProxyCommand=x")
    assert (
        login_user("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04) 2026") == "ubuntu"
    )
    assert login_user("al2023-ami-2023.9") == "ec2-user"
