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
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    tokens = list(metadata["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in metadata["tokenizer.ggml.merges"]]
    vocab = {t: i for i, t in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pre = scalar(metadata, "tokenizer.ggml.pre", "default")
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
