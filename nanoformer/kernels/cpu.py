"""What the CPU is, read once from /proc/cpuinfo: the GEMM rule and the benchmarks' records use it."""

from __future__ import annotations

import functools


@functools.cache
def cpu_field(key: str) -> str:
    """A field of the first CPU in /proc/cpuinfo ("vendor_id", "model name", "cpu family", "model"), or ""."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return ""


def cpu_vendor() -> str:
    """"AuthenticAMD", "GenuineIntel", ... or "" where /proc/cpuinfo does not say (macOS, ARM)."""
    return cpu_field("vendor_id")
