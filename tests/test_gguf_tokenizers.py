"""More tokenizers in: byte-level vocabularies with Llama 3's and Mistral's (tekken) pre-tokenizers built by
transformers' GGUF converter, against a from-scratch encoder and llama.cpp's own tokenizer; and whether BOS is added
where the file does not say, as llama.cpp decides it."""

from __future__ import annotations

import json

import pytest
from test_gguf_gemma import CORPUS, pieces

from slearn_mlx.errors import ModelError
from slearn_mlx.models.gguf import import_gguf
from slearn_mlx.models.load import load_model
from slearn_mlx.models.tokenizer import add_bos_default

from bpe_reference import LLAMA3_PATTERN
from bpe_reference import encode as reference_encode
from tiny import MERGES, SPECIALS, tokenizer_metadata, vocabulary, write_tiny_gguf

STRINGS = ["Hello world", "the theory of 1234567 things", "  spaced\tout\n\n", "naïve café 🙂", "It's 3.14!",
           "a\r\nb", "a cat, the Cat and THE CAT'S 2024 cats"]  # fmt: skip
WHOLE = "Ġcat"  # in the vocabulary, reachable by no merge: Llama 3 takes it whole, merges alone cannot


def byte_level(pre: str, add_bos: bool | None = None) -> dict:
    tokens = vocabulary() + [WHOLE]
    out = tokenizer_metadata(tokens, pre) | {"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}
    out["tokenizer.ggml.token_type"] = out["tokenizer.ggml.token_type"] + [1]
    return out | ({} if add_bos is None else {"tokenizer.ggml.add_bos_token": add_bos})


def imported(tmp_path, tokenizer: dict, name: str = "m"):
    source = tmp_path / f"{name}.gguf"
    write_tiny_gguf(source, tokenizer=tokenizer)
    model_dir = import_gguf(source, tmp_path / name, dtype="float32").path
    return source, model_dir, load_model(str(model_dir))[1]


def test_llama3_pre_tokenizer_splits_digits_by_three_and_takes_whole_words_whole(tmp_path):
    _, _, tokenizer = imported(tmp_path, byte_level("llama-bpe"))
    tokens = vocabulary() + [WHOLE]
    for text in STRINGS:
        expected = reference_encode(text, tokens, MERGES, split_digits=False, pattern=LLAMA3_PATTERN,
                                    ignore_merges=True)  # fmt: skip
        assert tokenizer.encode(text, add_special_tokens=False) == expected, text
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert tokenizer.encode(" cat", add_special_tokens=False) == [len(tokens) - 1]
    assert tokenizer.encode(SPECIALS[1] + "hi", add_special_tokens=False)[0] == 1  # control tokens stay whole


def test_an_unknown_pre_tokenizer_is_one_clear_error(tmp_path):
    with pytest.raises(ModelError, match="pre-tokenizer 'no-such-split' is not supported"):
        imported(tmp_path, byte_level("no-such-split"))


@pytest.mark.parametrize("pre", ["llama-bpe", "tekken", "smollm", "qwen2", "gpt-4o"])
def test_imported_tokenizers_encode_as_llama_cpp_does(pre, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    source, _, tokenizer = imported(tmp_path, byte_level(pre))
    llama = llama_cpp.Llama(str(source), n_ctx=64, vocab_only=True, verbose=False)
    for text in STRINGS + [SPECIALS[1] + "user\nHi" + SPECIALS[2]]:
        expected = llama.tokenize(text.encode(), add_bos=False, special=True)
        assert tokenizer.encode(text, add_special_tokens=False) == expected, (pre, text)


def spm_tokenizer(tmp_path, add_bos: bool | None) -> dict:
    spm = pytest.importorskip("sentencepiece")
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_prefix=str(tmp_path / "spm"), model_type="bpe", vocab_size=360,
        byte_fallback=True, pad_id=0, eos_id=1, bos_id=2, unk_id=3, minloglevel=2,
    )  # fmt: skip
    tokens, scores, types = pieces(spm.SentencePieceProcessor(model_file=str(tmp_path / "spm.model")))
    out = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.scores": scores,
           "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 1,
           "tokenizer.ggml.unknown_token_id": 3}  # fmt: skip
    return out | ({} if add_bos is None else {"tokenizer.ggml.add_bos_token": add_bos})


CASES = {  # file -> whether llama.cpp adds BOS
    "sentencepiece, not said": (lambda tmp: spm_tokenizer(tmp, None), True),
    "sentencepiece, said no": (lambda tmp: spm_tokenizer(tmp, False), False),
    "llama3, not said": (lambda tmp: byte_level("llama-bpe"), True),
    "tekken, not said": (lambda tmp: byte_level("tekken"), True),
    "smollm, not said": (lambda tmp: byte_level("smollm"), False),
    "qwen2, said yes": (lambda tmp: byte_level("qwen2", True), True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bos_is_added_where_llama_cpp_adds_it(case, tmp_path):
    make, adds = CASES[case]
    metadata = make(tmp_path)
    assert add_bos_default(metadata) is adds
    _, model_dir, tokenizer = imported(tmp_path, metadata)
    assert json.loads((model_dir / "tokenizer_config.json").read_text())["add_bos_token"] is adds
    assert (tokenizer.encode("Hi")[0] == tokenizer.bos_token_id) is adds


@pytest.mark.parametrize("case", list(CASES))
def test_llama_cpp_adds_bos_where_the_importer_says(case, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    make, adds = CASES[case]
    metadata = make(tmp_path)
    source = tmp_path / "m.gguf"
    write_tiny_gguf(source, tokenizer=metadata)
    llama = llama_cpp.Llama(str(source), n_ctx=64, vocab_only=True, verbose=False)
    assert (llama.tokenize(b"Hi", add_bos=True)[0] == metadata["tokenizer.ggml.bos_token_id"]) is adds


def test_a_sentencepiece_llama_file_encodes_as_llama_cpp_does(tmp_path):
    """Llama 2's and Mistral 7B's kind of file: SentencePiece BPE with the space prefix llama.cpp adds by default."""
    llama_cpp = pytest.importorskip("llama_cpp")
    metadata = spm_tokenizer(tmp_path, None)
    source, _, tokenizer = imported(tmp_path, metadata)
    llama = llama_cpp.Llama(str(source), n_ctx=64, vocab_only=True, verbose=False)
    for text in STRINGS + CORPUS[:6]:
        expected = llama.tokenize(text.encode(), add_bos=False, special=True)
        assert tokenizer.encode(text, add_special_tokens=False) == expected, text
