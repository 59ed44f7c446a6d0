"""What the CPU is, read once from /proc/cpuinfo: the GEMM rule and the benchmarks' records use it."""

from __future__ import annotations

import functools
import os


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


def bound_onednn_cache(capacity: int = 16) -> None:
    """Keep at most `capacity` compiled oneDNN primitives, unless the environment already says.

    oneDNN compiles a primitive per shape and keeps 1,024 by default. A server meets batches of
    every size and length, and that cache grew a GPT server's memory by ~10% over a minute of
    load; 16 kept it flat at about the same speed (docs/benchmarks.md, "Continuous batching").
    It must run before the first oneDNN call, which reads the setting once.
    """
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(capacity))
