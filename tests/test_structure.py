"""The shape of the package: imports flow one way (no circle, not even through a function-local or TYPE_CHECKING
import, and never from a lower layer to a higher one), and modules and functions stay small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "slearn_mlx"
# Lowest first: a module may import from its own layer and the layers before it.
LAYERS = (
    (
        "foundation",
        {
            "slearn_mlx",
            "errors",
            "common",
            "records",
            "options",
            "_blas",
            "distributed",
            "progress",
            "prompts",
            "runs",
            "svg",
        },
    ),  # fmt: skip
    ("models", {"models", "environment"}),
    ("data", {"data", "fields"}),
    (
        "stages",
        {
            "answer",
            "judge",
            "probe",
            "calibrate",
            "grade",
            "select",
            "training",
            "evaluate",
            "ask",
            "report",
            "map_report",
            "export",
            "general",
            "knowledge_map",
        },
    ),  # fmt: skip
    ("run", {"config", "fingerprint"}),
    ("pipeline", {"pipeline"}),
    ("experiments", {"compare", "plan"}),
    ("commands", {"cli", "__main__"}),
)
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 450, 80


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every slearn_mlx module `name` imports, wherever the import is written (module level, inside a function,
    under TYPE_CHECKING); `from package import module` counts as importing the module."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([module] if module else []))
            for alias in node.names:
                whole = f"{module}.{alias.name}"
                out.add(whole if whole in known else module)
    return {m for m in out if m in known and m != name}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def layer_of(name: str) -> int:
    short = name.removeprefix("slearn_mlx.") if name != "slearn_mlx" else name
    top = short.split(".")[0]
    return next(i for i, (_, members) in enumerate(LAYERS) if top in members)


def test_the_import_checker_sees_every_kind_of_import(tmp_path):
    """The checks below can fail: a function-local, a TYPE_CHECKING and a relative import are all seen."""
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from slearn_mlx.config import RunConfig\n"
        "def f():\n    from slearn_mlx import pipeline\n    from . import runs\n"
    )
    known = {"slearn_mlx.config", "slearn_mlx.pipeline", "slearn_mlx.runs", "slearn_mlx.mod"}
    assert imports_of("slearn_mlx.mod", source, known) == {
        "slearn_mlx.config",
        "slearn_mlx.pipeline",
        "slearn_mlx.runs",
    }


def test_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for other in sorted(edges[name]):
            if state.get(other) == 1:
                circles.append(path[path.index(other) :] + [other] if other in path else [name, other])
            elif other not in state:
                visit(other, path + [other])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert not circles, [" -> ".join(c) for c in circles]


def test_every_module_has_a_layer_and_imports_only_from_its_own_and_lower_ones():
    edges = graph()
    upward = [f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
              for a, targets in edges.items() for b in targets if layer_of(b) > layer_of(a)]  # fmt: skip
    assert not upward, upward


def test_modules_and_functions_stay_small():
    too_long = []
    for name, path in modules().items():
        source = path.read_text(encoding="utf-8")
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {lines} lines")
    assert not too_long, too_long
