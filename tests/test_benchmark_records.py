"""Every benchmark line says which CPU it was measured on, since a figure holds only for that CPU.

The machines' CPU changes between sessions (an Intel Xeon, an AMD Zen 5, an AMD Zen 4 so far),
and the same benchmark can land on either side of its target depending on which one ran it.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.jsonl"))
RECORDED = ("cpu", "cpu_family_model", "gemm", "matmul_peaks_gflops")
# Lines written before write_result recorded all four say which they lack in "not_recorded".
RECORDED_SINCE = "2026-12-05 00:00:00"


def _lines(path: Path) -> list[tuple[int, dict]]:
    return [(n, json.loads(line)) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
            if line.strip()]


@pytest.mark.parametrize("path", RESULTS, ids=[p.name for p in RESULTS])
def test_every_result_line_records_its_cpu_gemm_and_peaks(path):
    for n, record in _lines(path):
        where = f"{path.name}:{n}"
        missing = [key for key in RECORDED if record.get(key) in (None, "", {})]
        assert sorted(missing) == sorted(record.get("not_recorded", [])), f"{where}: lacks {missing}"
        if missing:
            assert record["time"] < RECORDED_SINCE, f"{where}: a line written now must record {missing}"
        else:
            peaks = record["matmul_peaks_gflops"]
            assert set(peaks) >= {"aten"} and all(v > 0 for v in peaks.values()), f"{where}: peaks {peaks}"


def _common():
    spec = importlib.util.spec_from_file_location("bench_common", ROOT / "benchmarks" / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_result_adds_the_processs_peaks_to_a_line_that_lacks_them(tmp_path, monkeypatch):
    common = _common()
    calls = []
    monkeypatch.setattr(common, "matmul_peaks", lambda: calls.append(1) or {"aten": 100.04, "onednn": 200.0})
    out = tmp_path / "r.jsonl"
    common.write_result("probe", {"x": 1}, str(out))
    common.write_result("probe", {"x": 2}, str(out))
    common.write_result("probe", {"x": 3, "matmul_peaks_gflops": {"aten": 7.0}}, str(out))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["matmul_peaks_gflops"] for line in lines] == [{"aten": 100.0, "onednn": 200.0}] * 2 + [{"aten": 7.0}]
    assert calls == [1]  # measured once per process
    for line in lines:
        assert line["cpu"] and line["gemm"] in ("aten", "onednn") and "cpu_family_model" in line
