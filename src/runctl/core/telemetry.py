"""Host telemetry in one round trip: CPU, memory, disks, top processes and GPUs.

``PROBE`` is a POSIX shell script run through any Transport; ``parse`` turns its sectioned
output into plain data. GPUs come from ``nvidia-smi --query-gpu=... --format=csv,noheader,
nounits``; values the driver cannot give print as ``[N/A]`` or ``[Not Supported]`` and become
None. A host without nvidia-smi (or whose driver is not loaded) reports no GPUs with the reason.
"""

from __future__ import annotations

import csv
from typing import Any

GPU_FIELDS = (
    "timestamp", "index", "uuid", "name", "utilization.gpu", "utilization.memory",
    "memory.total", "memory.used", "memory.free", "temperature.gpu", "power.draw",
    "power.limit", "clocks.sm", "pstate",
)  # fmt: skip
_GPU_KEYS = {
    "utilization.gpu": "util_percent", "utilization.memory": "mem_util_percent",
    "memory.total": "memory_total_mib", "memory.used": "memory_used_mib",
    "memory.free": "memory_free_mib", "temperature.gpu": "temperature_c",
    "power.draw": "power_w", "power.limit": "power_limit_w", "clocks.sm": "sm_clock_mhz",
}  # fmt: skip
_TEXT_FIELDS = {"timestamp", "uuid", "name", "pstate"}
NO_GPU = "no GPU"

PROBE = f"""\
echo ==cpu; head -n1 /proc/stat; sleep 0.5; head -n1 /proc/stat
echo ==load; cat /proc/loadavg
echo ==mem; grep -E '^(MemTotal|MemAvailable|SwapTotal|SwapFree):' /proc/meminfo
echo ==disk; df -P -k -x tmpfs -x devtmpfs -x overlay -x squashfs 2>/dev/null || df -P -k
echo ==procs
ps -eo pid=,user=,pcpu=,pmem=,rss=,etimes=,args= --sort=-pcpu 2>/dev/null | head -n 25
echo ==gpu
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu={",".join(GPU_FIELDS)} --format=csv,noheader,nounits 2>&1 \
    || echo "NVIDIA-SMI-FAILED"
else echo NO-NVIDIA-SMI; fi
"""


def _number(text: str) -> float | None:
    """A float, or None for ``[N/A]``, ``[Not Supported]``, ``N/A`` and other non-numbers."""
    value = text.strip()
    if not value or value.startswith("[") or value.upper() in {"N/A", "NA"}:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def parse_gpu_lines(lines: list[str]) -> tuple[list[dict[str, Any]], str]:
    """GPUs from nvidia-smi query output, and a status ("ok", "no GPU", or the failure)."""
    body = [ln for ln in lines if ln.strip()]
    if not body or body == ["NO-NVIDIA-SMI"]:
        return [], NO_GPU
    if "NVIDIA-SMI-FAILED" in body or any("NVIDIA-SMI has failed" in ln for ln in body):
        detail = next((ln for ln in body if "failed" in ln.lower()), "nvidia-smi failed")
        return [], f"{NO_GPU} ({detail.strip()})"
    gpus: list[dict[str, Any]] = []
    for row in csv.reader(body, skipinitialspace=True):
        if len(row) != len(GPU_FIELDS):
            continue
        raw = dict(zip(GPU_FIELDS, (c.strip() for c in row), strict=True))
        gpu: dict[str, Any] = {
            "index": int(raw["index"]) if raw["index"].isdigit() else None,
            "name": raw["name"],
            "uuid": raw["uuid"],
            "pstate": None if raw["pstate"].startswith("[") else raw["pstate"],
        }
        for field, key in _GPU_KEYS.items():
            gpu[key] = _number(raw[field])
        gpus.append(gpu)
    return gpus, "ok" if gpus else NO_GPU


def _cpu_percent(lines: list[str]) -> float | None:
    samples = []
    for line in lines:
        parts = line.split()
        if parts[:1] == ["cpu"]:
            values = [int(v) for v in parts[1:]]
            idle = values[3] + (values[4] if len(values) > 4 else 0)
            samples.append((sum(values), idle))
    if len(samples) < 2 or samples[1][0] == samples[0][0]:
        return None
    total = samples[1][0] - samples[0][0]
    idle = samples[1][1] - samples[0][1]
    return round(100.0 * (total - idle) / total, 1)


def _memory(lines: list[str]) -> dict[str, Any]:
    kib = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if rest.split():
            kib[key] = int(rest.split()[0])
    total = kib.get("MemTotal", 0)
    available = kib.get("MemAvailable", 0)
    used = total - available
    return {
        "total_mb": total // 1024,
        "used_mb": used // 1024,
        "available_mb": available // 1024,
        "percent": round(100.0 * used / total, 1) if total else None,
    }


def _disks(lines: list[str]) -> list[dict[str, Any]]:
    disks = []
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < 6 or not parts[1].isdigit():
            continue
        size, used = int(parts[1]), int(parts[2])
        disks.append({
            "filesystem": parts[0],
            "mount": " ".join(parts[5:]),
            "size_gb": round(size / 1024**2, 1),
            "used_gb": round(used / 1024**2, 1),
            "percent": round(100.0 * used / size, 1) if size else None,
        })  # fmt: skip
    return disks


def _processes(lines: list[str]) -> list[dict[str, Any]]:
    procs = []
    for line in lines:
        parts = line.split(None, 6)
        if len(parts) < 7 or not parts[0].isdigit():
            continue
        procs.append({
            "pid": int(parts[0]),
            "user": parts[1],
            "cpu_percent": _number(parts[2]),
            "mem_percent": _number(parts[3]),
            "rss_mb": round(int(parts[4]) / 1024, 1) if parts[4].isdigit() else None,
            "elapsed_s": int(parts[5]) if parts[5].isdigit() else None,
            "command": parts[6],
        })  # fmt: skip
    return procs


def parse(output: str) -> dict[str, Any]:
    """Turn the probe's output into {cpu_percent, load, memory, disks, processes, gpus...}."""
    sections: dict[str, list[str]] = {}
    current = ""
    for line in output.splitlines():
        if line.startswith("==") and line[2:].isalpha():
            current = line[2:]
            sections[current] = []
        elif current:
            sections[current].append(line)
    load = (sections.get("load") or [""])[0].split()[:3]
    gpus, gpu_status = parse_gpu_lines(sections.get("gpu", []))
    return {
        "cpu_percent": _cpu_percent(sections.get("cpu", [])),
        "load": [_number(v) for v in load],
        "memory": _memory(sections.get("mem", [])),
        "disks": _disks(sections.get("disk", [])),
        "processes": _processes(sections.get("procs", [])),
        "gpus": gpus,
        "gpu_status": gpu_status,
    }
