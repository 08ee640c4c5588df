"""The training pairs as the model reads them: which epochs each pair trains in, the order of the batches, and each
batch padded and marked with the positions whose next token is scored (the answer's)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

# Batches are zero-padded to a multiple of this many tokens: each new width costs a compilation of the step,
# each padding token the work of a real one: 8 measured fastest (BENCHMARKS.md, "Training: padding and the
# frozen blocks").
PAD_MULTIPLE = 8


def read_chat_rows(path: Path) -> list[dict]:
    """The rows of a JSONL file (mlx-lm's chat format for training files); none when it does not exist."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def chat_dataset(rows: list[dict], tokenizer):
    """mlx-lm's chat dataset of `rows`, prompt masked (the loss is on the answer only), tokenized once: each item is
    (tokens, the offset where the answer starts)."""
    from mlx_lm.tuner.datasets import CacheDataset, ChatDataset

    return CacheDataset(ChatDataset(rows, tokenizer, mask_prompt=True))


def pair_epochs(rows: list[dict], epochs: int, seed: int, last: bool = False) -> list[set[int]]:
    """The epochs each pair trains in: all of them, or, for a row that says `"epochs": k` (select --rehearse),
    k consecutive ones: the last k with `last`, else the rows spread evenly over the epochs in a seeded order."""
    every = set(range(1, epochs + 1))
    fewer = [i for i, row in enumerate(rows) if _epochs_field(row, epochs) < epochs]
    out = [every for _ in rows]
    for rank, i in enumerate(np.random.default_rng([seed, 104729]).permutation(fewer) if fewer else []):
        k = _epochs_field(rows[i], epochs)
        start = epochs - k if last else rank
        out[i] = {(start + j) % epochs + 1 for j in range(k)}
    return out


def planned_steps(schedule: list[set[int]], epochs: int, batch_size: int) -> int:
    """The steps a training of these pairs takes: each epoch, its pairs in batches (a pair rehearsed once is in one
    epoch's batches only)."""
    return sum(math.ceil(sum(e in pair for pair in schedule) / batch_size) for e in range(1, epochs + 1))


def _epochs_field(row: dict, epochs: int) -> int:
    k = row.get("epochs", epochs)
    return k if isinstance(k, int) and not isinstance(k, bool) and k >= 1 else epochs


def batch_order(
    dataset, batch_size: int, rng: np.random.Generator | None = None, pool: list[int] | None = None
) -> list[list[int]]:
    """Every example (of `pool`, when given) once, in batches of at most `batch_size`, as lists of indices.

    Shuffled when `rng` is given; examples of similar length share a batch so
    padding stays small.
    """
    pool = np.arange(len(dataset)) if pool is None else np.array(pool, dtype=np.int64)
    order = pool[rng.permutation(len(pool))] if rng is not None else pool
    window = batch_size * 8
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: len(dataset[i][0]))
        batches += [[int(i) for i in chunk[j : j + batch_size]] for j in range(0, len(chunk), batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


class Batch(NamedTuple):
    tokens: Any  # (rows, width) token ids, zero-padded to a multiple of the pad multiple
    bounds: Any  # (rows, 2): [offset, length], the prompt's length and the example's, as mlx-lm's loss takes them
    positions: Any  # (rows, window): the positions whose next token is scored, i.e. the answer's
    scored: Any  # (rows, window): False where a row's window is only padding


def make_batch(dataset, indices: list[int], max_seq_length: int, pad_multiple: int = PAD_MULTIPLE) -> Batch:
    """The examples at `indices` as one padded batch."""
    import mlx.core as mx

    examples = [dataset[i] for i in indices]
    lengths = [min(len(tokens), max_seq_length) for tokens, _ in examples]
    width = batch_width(lengths, max_seq_length, pad_multiple)
    array = np.zeros((len(indices), width), np.int32)
    for row, ((tokens, _), n) in enumerate(zip(examples, lengths)):
        array[row, :n] = tokens[:n]
    bounds = [(offset, n) for (_, offset), n in zip(examples, lengths)]
    # The logits for target t come from position t - 1. The window is padded to a multiple of 8,
    # again for few shapes.
    spans = [scored_span(offset, n, width) for offset, n in bounds]
    counts = [max(last - first + 1, 0) for first, last in spans]
    window = 8 * max(1, math.ceil(max(counts) / 8))
    positions = np.zeros((len(indices), window), np.int32)
    scored = np.zeros((len(indices), window), bool)
    for row, ((first, _), count) in enumerate(zip(spans, counts)):
        positions[row, :count] = np.arange(first - 1, first - 1 + count)
        scored[row, :count] = True
    return Batch(mx.array(array), mx.array(bounds), mx.array(positions), mx.array(scored))


def batch_width(lengths: list[int], max_seq_length: int, pad_multiple: int = PAD_MULTIPLE) -> int:
    """How wide a batch of examples this long is: the longest plus one, padded to the multiple, at most the cap."""
    return min(pad_multiple * math.ceil((max(lengths) + 1) / pad_multiple), max_seq_length)


def scored_span(offset: int, length: int, width: int) -> tuple[int, int]:
    """First and last target scored in a row of `length` tokens whose answer starts at `offset`,
    in a batch `width` wide: mlx-lm's loss scores targets t with offset <= t <= length, t < width.
    Empty (first > last) when a prompt cut to max_seq_length leaves nothing to score."""
    return max(offset, 1), min(length, width - 1)


def scores_any_answer(dataset, max_seq_length: int) -> bool:
    """Whether some example, cut to max_seq_length, keeps an answer token to score.
    A batch is at most max_seq_length wide, so that is the widest row a cut example gets."""
    for i in range(len(dataset)):
        tokens, offset = dataset[i]
        first, last = scored_span(offset, min(len(tokens), max_seq_length), max_seq_length)
        if first <= last:
            return True
    return False
