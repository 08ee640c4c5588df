"""The tokenizer rebuilt from a GGUF file's vocabulary: byte-level BPE from its merges, or SentencePiece BPE from its
scores, encoding as llama.cpp does."""

from __future__ import annotations

import mlx.core as mx

from slearn_mlx.errors import ModelError

_TOKEN_TYPE_NORMAL, _TOKEN_TYPE_CONTROL, _TOKEN_TYPE_USER_DEFINED = 1, 3, 4


def scalar(metadata: dict, key: str, default=None):
    value = metadata.get(key, default)
    if isinstance(value, mx.array) or (hasattr(value, "item") and getattr(value, "size", 1) == 1):
        return value.item()
    return value


QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)


# Pre-tokenizers written here, each checked against llama.cpp's encoding (tests): every other byte-level one a file
# names is built by transformers' GGUF converter.
OWN_PRE_TOKENIZERS = ("smollm", "qwen2", "default", "gpt-2")
# llama.cpp's pre-tokenizers that take a word whole when the vocabulary has it, before any merge, and add BOS where
# the file does not say (read from llama.cpp itself, tests/test_gguf_tokenizers.py).
IGNORE_MERGES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                 "jina-v5-nano", "tekken")  # fmt: skip


def gguf_tokenizer(metadata: dict):
    """Rebuild the tokenizer from the GGUF vocabulary: byte-level BPE from its merges ('gpt2'), or SentencePiece
    BPE from its scores ('llama')."""
    tok_model = scalar(metadata, "tokenizer.ggml.model")
    if tok_model == "llama":
        return _sentencepiece_tokenizer(metadata)
    if tok_model != "gpt2":
        raise ModelError(
            f"GGUF tokenizer model {tok_model!r} is not supported; byte-level BPE ('gpt2') and SentencePiece BPE "
            "('llama') are"
        )
    tokens = list(metadata["tokenizer.ggml.tokens"])
    pre = scalar(metadata, "tokenizer.ggml.pre", "default")
    if pre not in OWN_PRE_TOKENIZERS:
        return _converted_tokenizer(metadata, tokens, pre), tokens
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    # llama.cpp's "smollm" pre-tokenizer splits every digit on its own before the GPT-2 regex.
    if pre == "smollm":
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre == "qwen2":  # Qwen2's own split (single digits, letters with one leading non-letter), then bytes
        split = pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False)
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [split, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    _add_tokens(tokenizer, tokens, _token_types(metadata, tokens), user_defined_special=True)
    return tokenizer, tokens


def converter_splits() -> dict[str, str]:
    """transformers' GGUF converter's split regex by llama.cpp pre-tokenizer name; empty where this transformers has
    no such converter."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    except ImportError:
        return {}
    return GGUF_PRE_TOKENIZER_SPLITS


def _converted_tokenizer(metadata: dict, tokens: list[str], pre: str):
    """A byte-level tokenizer with another pre-tokenizer (Llama 3's, Mistral's tekken, GPT-4o's, ...), built by
    transformers' GGUF converter (no torch needed); words the vocabulary holds whole are taken whole where llama.cpp
    does so."""
    splits = converter_splits()
    if not splits:
        raise ModelError(
            f"GGUF pre-tokenizer {pre!r} is built by transformers' GGUF converter, which this transformers lacks: "
            "pip install -U transformers"
        )
    if pre not in splits:
        known = sorted(set(OWN_PRE_TOKENIZERS) | set(splits))
        raise ModelError(f"GGUF pre-tokenizer {pre!r} is not supported; these are: {', '.join(known)}")
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

    described = {"tokenizer_type": "gpt2", "pre_tokenizer_type": pre, "tokens": tokens,
                 "merges": list(metadata["tokenizer.ggml.merges"]), "token_type": _token_types(metadata, tokens)}  # fmt: skip
    tokenizer, _ = convert_gguf_tokenizer(scalar(metadata, "general.architecture"), described)
    tokenizer.post_processor = None  # BOS is added (or not) by the tokenizer config, as the file says
    if pre in IGNORE_MERGES:
        tokenizer.model.ignore_merges = True
    return tokenizer


def add_bos_default(metadata: dict) -> bool:
    """Whether llama.cpp adds BOS to this file's prompts: its `tokenizer.ggml.add_bos_token`, or where the file does
    not say, llama.cpp's default: yes for SentencePiece vocabularies and the pre-tokenizers of IGNORE_MERGES (Llama 3's,
    Mistral's tekken, ...), no otherwise."""
    said = scalar(metadata, "tokenizer.ggml.add_bos_token")
    if said is not None:
        return bool(said)
    if scalar(metadata, "tokenizer.ggml.model") == "llama":
        return True
    return scalar(metadata, "tokenizer.ggml.pre", "default") in IGNORE_MERGES


def with_bos(tokenizer, bos: str):
    """`tokenizer` adding BOS before text encoded with its special tokens, as llama.cpp does for this file (a chat
    template writes its own and encodes without)."""
    from tokenizers import processors

    bos_id = tokenizer.token_to_id(bos)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 $B:1", special_tokens=[(bos, bos_id)]
    )
    return tokenizer


def _token_types(metadata: dict, tokens: list[str]) -> list[int]:
    types = metadata.get("tokenizer.ggml.token_type")
    return types.tolist() if types is not None else [_TOKEN_TYPE_NORMAL] * len(tokens)


def _add_tokens(tokenizer, tokens: list[str], types: list[int], *, user_defined_special: bool) -> None:
    """Control tokens as special tokens; user-defined ones matched whole in the raw text, as llama.cpp does."""
    from tokenizers import AddedToken

    control = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == _TOKEN_TYPE_CONTROL]
    user = [AddedToken(t, special=user_defined_special, normalized=False)
            for t, k in zip(tokens, types) if k == _TOKEN_TYPE_USER_DEFINED]  # fmt: skip
    tokenizer.add_special_tokens(control + (user if user_defined_special else []))
    if not user_defined_special:
        tokenizer.add_tokens(user)


def spm_merges(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """The BPE merges a SentencePiece BPE vocabulary implies: every split of a normal piece into two pieces of the
    vocabulary, the merges of higher-scored pieces first (SentencePiece merges the best-scored pair at each step).
    The splits of one piece go in the order of their parts' ids, as `transformers` converts these vocabularies."""
    index = {t: i for i, t in enumerate(tokens) if types[i] == _TOKEN_TYPE_NORMAL}
    merges = []
    for i, piece in enumerate(tokens):
        if types[i] != _TOKEN_TYPE_NORMAL or len(piece) < 2:
            continue
        splits = [(piece[:k], piece[k:]) for k in range(1, len(piece))]
        found = sorted((index[a], index[b], a, b) for a, b in splits if a in index and b in index)
        merges += [(-scores[i], i, ia, ib, a, b) for ia, ib, a, b in found]
    merges.sort()
    return [(a, b) for *_, a, b in merges]


def _sentencepiece_tokenizer(metadata: dict):
    """SentencePiece BPE (Gemma, Llama 2) from the GGUF vocabulary, scores and token types, encoding as llama.cpp
    does: spaces as '▁', user-defined pieces taken whole, the best-scored pair merged first, unknown characters
    as their UTF-8 bytes."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    tokens = list(metadata["tokenizer.ggml.tokens"])
    types = _token_types(metadata, tokens)
    scores = metadata.get("tokenizer.ggml.scores")
    scores = scores.tolist() if scores is not None else [-float(i) for i in range(len(tokens))]
    unk = scalar(metadata, "tokenizer.ggml.unknown_token_id")
    vocab = {t: i for i, t in enumerate(tokens)}
    model = models.BPE(
        vocab=vocab, merges=spm_merges(tokens, scores, types), unk_token=tokens[int(unk)] if unk is not None else None,
        byte_fallback=True, fuse_unk=True,
    )  # fmt: skip
    tokenizer = Tokenizer(model)
    steps = [normalizers.Replace(" ", "▁")]
    strip = []
    if scalar(metadata, "tokenizer.ggml.add_space_prefix", True):  # a leading space, as SentencePiece adds
        steps.insert(0, normalizers.Prepend("▁"))
        strip = [decoders.Strip(" ", 1, 0)]
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *strip]
    )
    _add_tokens(tokenizer, tokens, types, user_defined_special=False)
    return tokenizer, tokens
