"""The house's rules, read from the sources: floors, no import cycles, short modules, speed machinery in kernels/.

FLOORS is the one list of nanoformer's floors, bottom to top. A module may import from its own
floor or a lower one, never a higher one (layers know nothing of models, models nothing of
training), and no chain of imports may lead back to where it started. Every import counts, also
those inside functions and under `TYPE_CHECKING`: each is a dependency a reader has to follow.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "nanoformer"

FLOORS: list[list[str]] = [
    ["errors", "config"],  # what everything shares
    ["kernels"],  # speed machinery: the torch ops' contracts, faster
    ["layers"],  # the Transformer of the study note
    ["generation"],  # decoding algorithms over any model with decode_step
    ["models", "quantize"],  # the three families; their int8 form
    ["data", "tokenizer", "tokenizer_training"],  # corpora and text <-> ids
    ["training"],  # the loop, optimiser, schedules, checkpoints, DDP
    ["evaluation", "api", "summary", "run_config"],
    ["interop", "recipes", "viz"],
    ["serve"],  # models behind HTTP: the API, batching, the playground
    ["cli", "__init__"],  # the command line and the package's front door
]
MAX_LINES = 400
KERNEL_ONLY = {
    "torch.ops.mkldnn": re.compile(r"torch\.ops\.mkldnn"),
    "_forward_hooks": re.compile(r"_forward(_pre)?_hooks"),
    "/proc/cpuinfo": re.compile(r"/proc/cpuinfo"),
    "os.environ writes": re.compile(r"os\.environ(\[[^\]]+\]\s*=(?!=)|\.setdefault|\.update|\.pop)|os\.putenv|del os\.environ"),
}


def module_name(path: Path) -> str:
    parts = ["nanoformer", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """The nanoformer modules that `path` imports (a name imported from a package counts as the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                     for a in node.names]
        else:
            continue
        found.update(n for n in names if n == "nanoformer" or n.startswith("nanoformer."))
    return found


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def floor_of(module: str) -> int:
    unit = "__init__" if module == "nanoformer" else module.split(".")[1]
    for level, units in enumerate(FLOORS):
        if unit in units:
            return level
    raise AssertionError(f"{module} is on no floor; add {unit!r} to FLOORS in tests/test_layout.py")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` (module -> imported modules), as a path that ends where it starts."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_checks_see_what_they_check() -> None:
    """The rules below are only as good as the graph: it must hold the imports we know of."""
    assert len(MODULES) > 60
    assert "nanoformer.kernels.gemm" in GRAPH["nanoformer.layers.attention"]
    assert "nanoformer.generation.sampling" in GRAPH["nanoformer.models.decoder"]  # an import inside a method
    assert "nanoformer.tokenizer_training" in GRAPH["nanoformer.tokenizer"]  # `from nanoformer import module`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle() -> None:
    assert find_cycle(GRAPH) is None


def test_no_floor_imports_a_higher_one() -> None:
    wrong = [f"{a} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})"
             for a, targets in GRAPH.items() for b in sorted(targets) if floor_of(b) > floor_of(a)]
    assert wrong == []


def test_no_private_names_imported_across_modules() -> None:
    wrong = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nanoformer"):
                wrong += [f"{name}: {node.module}.{a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
    assert wrong == []


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_short(module: str) -> None:
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines; split it along its concepts"


def test_speed_machinery_lives_in_kernels() -> None:
    wrong = []
    for name, path in MODULES.items():
        if name.startswith("nanoformer.kernels"):
            continue
        text = path.read_text(encoding="utf-8")
        wrong += [f"{name}: {what}" for what, pattern in KERNEL_ONLY.items() if pattern.search(text)]
    assert wrong == []
    assert KERNEL_ONLY["os.environ writes"].search('os.environ["X"] = "1"')
    assert not KERNEL_ONLY["os.environ writes"].search('os.environ.get("X") == "1"')
