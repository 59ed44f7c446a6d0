"""Shared helpers for side-by-side benchmarks: timing, matmul peak, JSON-lines output.

These machines are shared and noisy, so every benchmark measures the anchor (Hugging Face) and
nanoformer in the same process, interleaved, and reports ratios; absolute numbers are context.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def matmul_peaks(n: int = 2048, repeats: int = 10) -> dict[str, float]:
    """Best-of fp32 matmul GFLOP/s on the CPU of each GEMM torch ships: "aten" (`a @ b`, MKL's sgemm)
    and "onednn" (what nanoformer's linear layers use on AMD CPUs, nanoformer/kernels/gemm.py)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    products = {"aten": lambda: a @ b}
    if hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        bt = b.t().contiguous()
        products["onednn"] = lambda: torch.ops.mkldnn._linear_pointwise(a, bt, None, "none", [], "")
    peaks = {}
    for name, product in products.items():
        for _ in range(2):
            product()
        best = min(_seconds(product) for _ in range(repeats))
        peaks[name] = 2 * n**3 / best / 1e9
    return peaks


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, device: str = "cpu", dtype: torch.dtype = torch.float32) -> float:
    """Best-of matmul throughput in this process, the denominator of MFU (fp32 on the CPU: the faster
    of torch's two GEMMs, see matmul_peaks; bf16 on a GPU)."""
    if device == "cpu" and dtype == torch.float32:
        return max(matmul_peaks(n, repeats).values())
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def flops_per_token(model: torch.nn.Module, context: int) -> float:
    """Training FLOPs per token of a decoder, 6N + 12·L·d·T (PaLM's estimate): N counts every
    matmul weight once (the tied head included); learned position embeddings are a lookup, not a matmul."""
    config = model.config
    n = sum(p.numel() for name, p in model.named_parameters() if "positions" not in name)
    return 6 * n + 12 * config.n_layers * config.d_model * context


def time_interleaved(runners: dict[str, Callable[[], None]], rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Run each runner `rounds` times, alternating between them, so noise hits all alike."""
    for fn in runners.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 0) -> float:
    """Seconds one call of fn takes: the median of `repeats` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return median(times)


def resident_mb() -> int:
    """This process's resident memory in MB (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20


def environment() -> dict:
    from nanoformer.kernels.gemm import gemm_backend

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_family_model": cpu_family_model(),
        "gemm": gemm_backend(),  # the GEMM nanoformer's linear layers used (HF's always use torch's)
    }


def cpu_model() -> str:
    from nanoformer.kernels.cpu import cpu_field

    return cpu_field("model name") or platform.processor()


def cpu_family_model() -> str:
    """"family/model" as /proc/cpuinfo numbers them (e.g. "6/207", an Intel Emerald Rapids), or ""."""
    from nanoformer.kernels.cpu import cpu_field

    family, model = cpu_field("cpu family"), cpu_field("model")
    return f"{family}/{model}" if family and model else ""


_PEAKS: dict[str, float] = {}  # this process's matmul peaks, measured once by the first line that lacks them


def write_result(name: str, result: dict, out: str | None) -> None:
    """Print the result as one JSON line and append it to `out` (JSON lines) if given.

    Every line records the CPU, its family/model, the GEMM and both matmul peaks, since a figure
    holds only for the CPU it was measured on (the machines' CPU changes between sessions). A
    result that did not measure the peaks itself gets this process's, measured once here.
    """
    if "matmul_peaks_gflops" not in result:
        if not _PEAKS:
            _PEAKS.update({gemm: round(gflops, 1) for gemm, gflops in matmul_peaks().items()})
        result = {**result, "matmul_peaks_gflops": dict(_PEAKS)}
    record = {"benchmark": name, "time": time.strftime("%Y-%m-%d %H:%M:%S"), **environment(), **result}
    line = json.dumps(record)
    print(line)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "a", encoding="utf-8") as f:
            f.write(line + "\n")
    sys.stdout.flush()


def sized_config(path: Path, size: str, fixed: dict, overrides: list[str] = ()):
    """A config with its sizing replaced: without the keys `size` sets (run_config.SIZED_KEYS),
    sized by `size` (auto or a rung), or with `fixed` (section -> keys) when size is "fixed": a
    benchmark's record of the shape the config fixed before it was sized."""
    from nanoformer.run_config import build_run_config, drop_sized_keys, tomllib

    sections = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    drop_sized_keys(sections)
    sections["model"].pop("size", None)
    if size == "fixed":
        for section, values in fixed.items():
            sections.setdefault(section, {}).update(values)
    else:
        sections["model"]["size"] = size
    return build_run_config(sections, source=Path(path), overrides=overrides)
