"""docs/tour.md points at code that exists and at figures that `make figures` regenerates."""

from __future__ import annotations

import ast
import importlib.util
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
