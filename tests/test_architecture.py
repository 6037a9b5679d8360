"""The package's shape: imports flow one way between the stages, with no cycles and no shims.

Every import is counted, function-level ones included, so a cycle cannot hide behind a lazy
import. Layers, lowest first; a module may import its own layer and the ones below it:
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dfdetect"
LAYERS = [
    ["media"],
    ["config"],
    ["labels"],
    ["extraction"],
    ["augment"],
    ["data"],
    ["models"],
    ["viz"],
    ["training"],
    ["inference"],
    ["demo"],
    ["colab", "cli"],
    ["__init__", "__main__"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """dfdetect modules that ``path`` imports anywhere (``from a import b`` counts a.b if a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dfdetect")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dfdetect"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.add(full if full in modules else node.module)
    return {m for m in found if m in modules}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: _imports(p, set(files)) - {m} for m, p in files.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    key = parts[1] if len(parts) > 1 else "__init__"
    return RANK[key]


def test_every_module_has_a_layer(graph):
    for module in graph:
        parts = module.split(".")
        assert len(parts) == 1 or parts[1] in RANK, f"{module}: add its stage to LAYERS"


def test_imports_never_go_up_a_layer(graph):
    wrong = [f"{m} imports {d}" for m, deps in graph.items() for d in deps
             if d != "dfdetect" and _layer(d) > _layer(m)]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycles(graph):
    edges = {m: {d for d in deps if d != "dfdetect"} for m, deps in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_no_module_level_getattr_shims():
    shims = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__"
                    for n in ast.parse(p.read_text()).body)]
    assert not shims, f"module-level __getattr__ in {shims}: import the name from its module"


def test_only_viz_imports_matplotlib_and_only_blazeface_imports_litert():
    def importers(top: str) -> list[str]:
        out = []
        for p in PACKAGE.rglob("*.py"):
            for n in ast.walk(ast.parse(p.read_text())):
                names = ([a.name for a in n.names] if isinstance(n, ast.Import)
                         else [n.module or ""] if isinstance(n, ast.ImportFrom) else [])
                if any(x == top or x.startswith(top + ".") for x in names):
                    out.append(str(p.relative_to(PACKAGE)))
                    break
        return sorted(out)

    assert importers("matplotlib") == ["viz.py"]
    assert importers("ai_edge_litert") == ["extraction/blazeface.py"]
    assert importers("mediapipe") == []  # the tests' reference detector only


def test_the_core_never_imports_the_demo(graph):
    core = [m for m in graph if not m.startswith(("dfdetect.demo", "dfdetect.cli"))
            and m not in ("dfdetect.__main__",)]
    wrong = [f"{m} imports {d}" for m in core for d in graph[m] if d.startswith("dfdetect.demo")]
    assert not wrong, wrong


def test_the_module_map_lists_exactly_the_modules():
    """docs/CONTRACTS.md is the one map of the package: it names every module, and only those."""
    import re

    table = (PACKAGE.parent / "docs" / "CONTRACTS.md").read_text()
    listed = set(re.findall(r"^\| `([\w/]+\.py)` \|", table, flags=re.MULTILINE))
    present = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")}
    assert listed == present, (f"missing from docs/CONTRACTS.md: {sorted(present - listed)}; "
                               f"listed but gone: {sorted(listed - present)}")
