"""docs/tour.md points at code that exists and at figures that `make figures` regenerates."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOUR = ROOT / "docs" / "tour.md"
LINK = re.compile(r"\[`([\w.]+)`\]\(\.\./(nanoformer/[\w/]+\.py)\)")


def defined_names(path: Path) -> set[str]:
    """Top-level functions/classes and Class.method names of a module."""
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f"{node.name}.{item.name}" for item in node.body if isinstance(item, ast.FunctionDef)}
    return names


def test_tour_code_links_exist():
    links = LINK.findall(TOUR.read_text(encoding="utf-8"))
    assert len(links) > 40
    missing = [f"{path}: {name}" for name, path in links
               if not (ROOT / path).is_file() or name not in defined_names(ROOT / path)]
    assert missing == []


def load_driver():
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_every_tour_figure_is_committed_and_small():
    figures = load_driver().tour_figures()
    assert {"translation_alignment.png", "positions_sinusoidal.png", "positions_rope.png",
            "gpt_metrics.png", "bert_attention_grid.png"} <= figures
    for name in figures:
        path = ROOT / "docs" / "figures" / name
        assert path.is_file(), f"{name}: run `make figures`"
        assert path.stat().st_size < 200_000, f"{name} is {path.stat().st_size} bytes"


def test_make_figures_driver_on_tiny_models(tmp_path):
    """What `make figures` runs, with tiny models and 3 training steps per family (about 30 s): in the
    default suite, so a change that breaks the regeneration of the tour's figures fails `make test`."""
    data = os.environ.get("NANOFORMER_DATA") or str(ROOT.parent / "shared" / "data")
    if not Path(data, "tinyshakespeare").is_dir():
        pytest.skip("the standard corpora are not available offline (set NANOFORMER_DATA)")
    driver = load_driver()
    assert driver.main(["--quick", "--out", str(tmp_path / "figures"), "--runs", str(tmp_path / "runs")]) == 0
    written = {p.name for p in (tmp_path / "figures").iterdir()}
    assert driver.tour_figures() <= written
    record = json.loads((tmp_path / "figures" / driver.PROVENANCE).read_text(encoding="utf-8"))
    assert record["command"].endswith("--quick") and driver.tour_figures() <= set(record["figures"])


def test_committed_figures_come_from_the_committed_code():
    """docs/figures/provenance.json, written by `make figures`, names the inputs it drew from: the
    committed driver, drawing code and configs must be those, and the figures those it wrote."""
    driver = load_driver()
    record = json.loads((ROOT / "docs" / "figures" / driver.PROVENANCE).read_text(encoding="utf-8"))
    current = driver.inputs_digest()
    changed = sorted(name for name in set(current) | set(record["inputs"])
                     if current.get(name) != record["inputs"].get(name))
    assert not changed, f"changed since the figures were drawn: {', '.join(changed)}; run `make figures`"
    for name in driver.tour_figures():
        digest = hashlib.sha256((ROOT / "docs" / "figures" / name).read_bytes()).hexdigest()
        assert record["figures"].get(name) == digest, f"{name} is not the figure `make figures` wrote; run it"
    assert "--quick" not in record["command"]
