"""Stage 2 without answering: the knowledge probe.

Answering every question and grading the answers costs a generation per item
before a single training step. The probe reads instead, in one teacher-forced
forward pass per item, how likely the model is to say the reference itself:

- free-text items: the prompt as the model is asked, then a short lead
  (`PROBE_LEAD`, "The correct answer is") and the reference. The lead matters:
  a model that answers in sentences gives a bare reference little probability
  as its first token however well it knows it; after the lead the reference is
  what comes next (BENCHMARKS.md measures the leads tried);
- multiple-choice items: the probability of the correct option's letter as the
  first token of the answer, against the other options' letters.

Per item it records P(reference), its log summed and its least likely token,
and whether greedy decoding would reproduce the reference (`probe.jsonl`). The
score that ranks items from surest known to surest unknown, and that a
threshold turns into a verdict, is P(reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slearn_mlx import distributed
from slearn_mlx.answer import AnswerConfig, encode_chat, question_text, shared_prefix
from slearn_mlx.judge import Prefix
from slearn_mlx.models.heads import logits_at
from slearn_mlx.progress import progress_bar
from slearn_mlx.records import Grade, QAItem, Record
from slearn_mlx.runs import RecordWriter, pending_batches, read_records

PROBE_GRADER = "probe"


@dataclass(frozen=True)
class Knowledge(Record):
    """What the probe read for one item."""

    id: str
    p_reference: float  # P(reference | prompt, lead); for multiple choice, the letter's share among the options'
    logprob: float  # log P(reference), summed over its tokens
    min_logprob: float  # the least likely reference token's log-probability
    n_tokens: int  # reference tokens scored
    greedy: bool  # greedy decoding after the lead would write the reference (the correct letter)


@dataclass(frozen=True)
class ProbeSummary:
    n_items: int
    n_new: int
    n_known: int  # at or above the threshold
    n_greedy: int  # whose reference greedy decoding would reproduce
    threshold: float
    seconds: float

    def __str__(self) -> str:
        return (
            f"probed {self.n_items}: {self.n_items - self.n_known} unknown (P(reference) < {self.threshold:g}), "
            f"{self.n_known} known, of which {self.n_greedy} word for word; {self.n_new} new, in {self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class ProbeRow:
    """One item as the probe reads it: the tokens before the reference, the reference's tokens, and for multiple
    choice the token of every option's letter (the reference's among them)."""

    context: list[int]
    target: list[int]
    choices: list[int] | None = None


def probe_row(tokenizer, item: QAItem, lead: str, answer_config: AnswerConfig = AnswerConfig()) -> ProbeRow:
    """The tokens the probe reads for `item`: its prompt as the answer stage asks it, then the lead and the reference
    (free text), or the correct option's letter (multiple choice)."""
    return probe_rows(tokenizer, item, lead, answer_config)[0]


def probe_rows(tokenizer, item: QAItem, lead: str, answer_config: AnswerConfig = AnswerConfig()) -> list[ProbeRow]:
    """`probe_row` for the reference and then each alias (free text with aliases); one row otherwise."""
    prompt = encode_chat(tokenizer, question_text(item, answer_config))
    letter = item.reference_letter
    if letter is not None:
        choices = [_first_token(tokenizer, option) for option in item.options]
        return [ProbeRow(prompt, [_first_token(tokenizer, letter)], choices)]
    return [ProbeRow(*_split_lead(tokenizer, prompt, lead, reference)) for reference in item.references]


def _first_token(tokenizer, text: str) -> int:
    return tokenizer.encode(text, add_special_tokens=False)[0]


def _split_lead(tokenizer, prompt: list[int], lead: str, reference: str) -> tuple[list[int], list[int]]:
    """(prompt + lead tokens, reference tokens), tokenized together as the model would write them: the lead's
    trailing space belongs to the reference's first token."""
    whole = tokenizer.encode(lead + reference.strip(), add_special_tokens=False)
    head = tokenizer.encode(lead.rstrip(), add_special_tokens=False) if lead.strip() else []
    n = 0
    while n < min(len(head), len(whole) - 1) and head[n] == whole[n]:
        n += 1
    return prompt + whole[:n], whole[n:]


def read_rows(model, rows: list[ProbeRow], prefix: Prefix | None = None) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """For each row, in one batched forward pass: the log-probability of each target token, whether it is the
    most likely token there, and the log of the target's share among the row's choices (0.0 without choices).

    Rows are right-padded; only the positions that predict a target token go through the vocabulary projection.
    With a `prefix`, every row starts with its tokens, whose keys and values are reused.
    """
    import mlx.core as mx

    skip = len(prefix) if prefix is not None else 0
    sequences = [(row.context + row.target)[skip:] for row in rows]
    width = max(len(s) for s in sequences)
    tokens = mx.array([s + [0] * (width - len(s)) for s in sequences])
    n_target = max(len(row.target) for row in rows)
    positions = np.zeros((len(rows), n_target), np.int32)
    targets = np.zeros((len(rows), n_target), np.int32)
    for r, row in enumerate(rows):
        start = len(row.context) - skip - 1  # the logits at position t predict token t + 1
        positions[r, : len(row.target)] = np.arange(start, start + len(row.target))
        targets[r, : len(row.target)] = row.target
    cache = prefix.batch(len(rows)) if prefix is not None else None
    logits = logits_at(model, tokens, mx.array(positions), cache).astype(mx.float32)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    target_lp = mx.take_along_axis(logprobs, mx.array(targets)[..., None], axis=-1)[..., 0]
    is_top = mx.argmax(logits, axis=-1) == mx.array(targets)
    first = logprobs[:, 0, :]
    mx.eval(target_lp, is_top, first)
    target_lp, is_top = np.array(target_lp), np.array(is_top)
    out = []
    for r, row in enumerate(rows):
        n = len(row.target)
        share = 0.0
        if row.choices:
            options = np.array(first[r, mx.array(row.choices)])
            share = float(target_lp[r, 0] - np.logaddexp.reduce(options))
        out.append((target_lp[r, :n], is_top[r, :n], share))
    return out


def knowledge_of(item: QAItem, row: ProbeRow, read: tuple[np.ndarray, np.ndarray, float]) -> Knowledge:
    token_lp, is_top, share = read
    logprob = float(token_lp.sum())
    p = math.exp(share) if row.choices else math.exp(logprob)
    return Knowledge(
        item.id, round(p, 6), round(logprob, 4), round(float(token_lp.min()), 4), len(row.target), bool(is_top.all())
    )


def probe_items(
    model,
    tokenizer,
    items: list[QAItem],
    out_path: Path,
    *,
    lead: str,
    answer_config: AnswerConfig = AnswerConfig(),
    batch_size: int = 16,
    progress: bool = True,
) -> int:
    """Probe every item not yet in `out_path`, appending one Knowledge record each; returns how many were new.

    Batches are cut from all items sorted by length, so a resumed run reads exactly what an uninterrupted one did.
    """
    done = read_records(out_path, Knowledge)
    n_todo = sum(item.id not in done for item in items)
    if not n_todo:
        return 0
    rows = {item.id: probe_rows(tokenizer, item, lead, answer_config) for item in items}
    # The chat template's system turn starts every prompt: its keys and values are computed once.
    contexts = [row.context for item_rows in rows.values() for row in item_rows]
    n_shared = shared_prefix(contexts)
    prefix = Prefix(model, contexts[0][:n_shared]) if n_shared and Prefix.usable(model) else None
    length = lambda item: max(len(row.context) + len(row.target) for row in rows[item.id])  # noqa: E731

    def probed(batch: list[QAItem]) -> list[dict]:
        reads = iter(read_rows(model, [row for item in batch for row in rows[item.id]], prefix))
        # An item with aliases is as well known as its best known answer.
        best = [max((knowledge_of(item, row, next(reads)) for row in rows[item.id]), key=lambda k: k.logprob)
                for item in batch]  # fmt: skip
        return [k.to_json() for k in best]

    batches = list(pending_batches(items, done, batch_size, length))
    with RecordWriter(out_path) as writer, progress_bar(n_todo, "probe", progress) as bar:
        for batch, readings in distributed.map_batches(batches, probed):
            for item, reading in zip(batch, readings):
                if item.id not in done:
                    writer.write(Knowledge.from_json(reading))
                    bar.update(1)
    return n_todo


def probe_grade(knowledge: Knowledge, threshold: float) -> Grade:
    """The verdict a probe reading gives: known when P(reference) reaches the threshold."""
    return Grade(knowledge.id, knowledge.p_reference >= threshold, knowledge.p_reference, PROBE_GRADER)


def probe_summary(items: list[QAItem], knowledge: dict[str, Knowledge], threshold: float, n_new: int, seconds: float):
    read = [knowledge[item.id] for item in items]
    return ProbeSummary(
        len(items), n_new, sum(k.p_reference >= threshold for k in read), sum(k.greedy for k in read), threshold,
        seconds,
    )  # fmt: skip
