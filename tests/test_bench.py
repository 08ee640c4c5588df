"""What the benchmarks import from slearn_mlx, and from the helpers they share, still exists: a move in the package
fails here, not in a benchmark run months later. (Benchmarks change the loop through `TrainHooks`, not by patching
the package's names, so what they measure moves with it.)"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH, TESTS = ROOT / "bench", ROOT / "tests"
LOCAL = {"variants": BENCH, "common": BENCH, "killing": TESTS, "tiny": TESTS}


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every `from module import name`, (module, None) for every `import module`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            out += [(node.module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            out += [(alias.name, None) for alias in node.names]
    return out


def top_level_names(path: Path) -> set[str]:
    names = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda path: path.name)
def test_what_a_benchmark_imports_exists(script):
    missing = []
    for module, name in imports(script):
        if module == "slearn_mlx" or module.startswith("slearn_mlx."):
            loaded = importlib.import_module(module)
            if name is not None and not hasattr(loaded, name):
                try:
                    importlib.import_module(f"{module}.{name}")
                except ModuleNotFoundError:
                    missing.append(f"{module}.{name}")
        elif module in LOCAL and name is not None and name not in top_level_names(LOCAL[module] / f"{module}.py"):
            missing.append(f"{module}.{name}")
    assert not missing, missing


def test_the_check_finds_a_name_that_is_gone(tmp_path):
    script = tmp_path / "gone.py"
    script.write_text(
        "from slearn_mlx.training.loop import train_adapters, train_everything\nfrom tiny import nothing\n"
    )
    with pytest.raises(AssertionError, match="train_everything.*tiny.nothing"):
        test_what_a_benchmark_imports_exists(script)
