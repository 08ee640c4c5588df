"""A from-scratch byte-level BPE encoder, straight from a GGUF vocabulary and merge list.

Independent of the `tokenizers` library, it is the reference the imported
tokenizer must agree with.
"""

from __future__ import annotations

import regex

from tiny import bytes_to_unicode

# GPT-2's pre-tokenizer pattern; llama.cpp's "smollm" splits every digit first.
GPT2_PATTERN = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


# Qwen2's pattern (its tokenizer.json and llama.cpp's "qwen2" pre-tokenizer): one digit at a time, letters with one
# leading non-letter.
QWEN2_PATTERN = regex.compile(
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


# Llama 3's pattern as llama.cpp writes it ("llama-bpe"): digits in runs of at most three.
LLAMA3_PATTERN = regex.compile(
    r"""(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def encode(
    text: str,
    tokens: list[str],
    merges: list[str],
    split_digits: bool = True,
    pattern=GPT2_PATTERN,
    ignore_merges: bool = False,
) -> list[int]:
    """With `ignore_merges`, a piece the vocabulary holds whole is taken whole before any merge (llama.cpp's Llama 3)."""
    vocab = {t: i for i, t in enumerate(tokens)}
    ranks = {tuple(m.split(" ", 1)): r for r, m in enumerate(merges)}
    byte_char = bytes_to_unicode()
    pieces = []
    for chunk in regex.split(r"(\p{N})", text) if split_digits else [text]:
        if chunk:
            pieces += pattern.findall(chunk)
    ids = []
    for piece in pieces:
        word = [byte_char[b] for b in piece.encode("utf-8")]
        if ignore_merges and "".join(word) in vocab:
            ids.append(vocab["".join(word)])
            continue
        while len(word) > 1:
            pairs = [(ranks.get((a, b), float("inf")), i) for i, (a, b) in enumerate(zip(word, word[1:]))]
            rank, i = min(pairs)
            if rank == float("inf"):
                break
            word = word[:i] + [word[i] + word[i + 1]] + word[i + 2 :]
        ids += [vocab[w] for w in word]
    return ids
