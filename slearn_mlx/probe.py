"""Stage 2 without answering: the knowledge probe.

Answering every question and grading the answers costs a generation per item
before a single training step. The probe reads instead, in one teacher-forced
forward pass per item, how likely the model is to say the reference itself:

- free-text items, in the few-shot frame (the default): a few other items of the
  set as questions and answers ("Q: ...\nA: ..."), then the item's question and
  its reference, no chat template. The shots show the answer's form, so the
  reference's probability says whether the model knows it, not whether it would
  word its answer so; a reference of one sentence or several reads the same way.
  It predicts what the model answers when asked in other words better than the
  chat frame and better than one answer does (BENCHMARKS.md, "The knowledge test");
- free-text items, in the chat frame: the prompt as the model is asked, a short
  lead (`PROBE_LEAD`, "The correct answer is") and the reference;
- multiple-choice items: the probability of the correct option's letter as the
  first token of the answer in the chat frame, against the other options' letters.

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
from slearn_mlx.prompts import FEWSHOT_LEAD, FEWSHOT_QUESTION, FEWSHOT_SHOT, PROBE_LEAD
from slearn_mlx.records import Grade, QAItem, Record
from slearn_mlx.runs import RecordWriter, pending_batches, read_records

PROBE_GRADER = "probe"
N_SHOTS = 3  # other items shown in the few-shot frame


@dataclass(frozen=True)
class Knowledge(Record):
    """What the probe read for one item."""

    id: str
    p_reference: float  # P(reference | its frame); for multiple choice, the letter's share among the options'
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
    n_unread: int = 0  # left unread: none of the sample read first was known

    def __str__(self) -> str:
        unread = (
            f" ({self.n_unread} unread: none of the {self.n_items - self.n_unread} read first was known)"
            if self.n_unread else ""
        )  # fmt: skip
        return (
            f"probed {self.n_items}: {self.n_items - self.n_known} unknown (P(reference) < {self.threshold:g}){unread}, "
            f"{self.n_known} known; greedy decoding writes {self.n_greedy} references; {self.n_new} new, in "
            f"{self.seconds:.1f} s"
        )


@dataclass(frozen=True)
class ProbeRow:
    """One item as the probe reads it: the tokens before the reference, the reference's tokens, and for multiple
    choice the token of every option's letter (the reference's among them)."""

    context: list[int]
    target: list[int]
    choices: list[int] | None = None


@dataclass(frozen=True)
class Frame:
    """How the probe asks a free-text item: the few-shot frame, with `shots` (and a `spare` that stands in for a
    shot when the shot is the item itself), or the chat frame after `lead`."""

    name: str = "fewshot"
    lead: str = PROBE_LEAD
    shots: tuple[QAItem, ...] = ()
    spare: QAItem | None = None

    @classmethod
    def for_items(cls, name: str, items: list[QAItem], lead: str = PROBE_LEAD, seed: int = 0) -> "Frame":
        """The frame `name` for probing `items`: in the few-shot frame, N_SHOTS of them (free text, a seeded draw)
        are the shots."""
        if name == "chat":
            return cls("chat", lead)
        free = [item for item in items if item.reference_letter is None]
        drawn = [free[i] for i in np.random.default_rng(seed).permutation(len(free))[: N_SHOTS + 1]]
        return cls(name, lead, tuple(drawn[:N_SHOTS]), drawn[N_SHOTS] if len(drawn) > N_SHOTS else None)

    def prompt(self, item: QAItem) -> str:
        """The few-shot frame's text before the reference: the shots (none of them the item), then its question."""
        shots = [shot for shot in self.shots if shot.id != item.id]
        if len(shots) < len(self.shots) and self.spare is not None:
            shots.append(self.spare)
        text = "".join(FEWSHOT_SHOT.format(question=s.question, answer=s.reference_text) for s in shots)
        return text + FEWSHOT_QUESTION.format(question=item.question)


def probe_row(
    tokenizer, item: QAItem, frame: Frame = Frame("chat"), answer_config: AnswerConfig = AnswerConfig()
) -> ProbeRow:
    """The tokens the probe reads for `item`: in the frame, the reference (free text), or after its prompt as the
    answer stage asks it, the correct option's letter (multiple choice)."""
    return probe_rows(tokenizer, item, frame, answer_config)[0]


def probe_rows(tokenizer, item: QAItem, frame: Frame, answer_config: AnswerConfig = AnswerConfig()) -> list[ProbeRow]:
    """`probe_row` for the reference and then each alias (free text with aliases); one row otherwise."""
    letter = item.reference_letter
    if letter is not None:
        prompt = encode_chat(tokenizer, question_text(item, answer_config))
        choices = [_first_token(tokenizer, option) for option in item.options]
        return [ProbeRow(prompt, [_first_token(tokenizer, letter)], choices)]
    if frame.name == "chat":
        prompt, lead = encode_chat(tokenizer, question_text(item, answer_config)), frame.lead
    else:
        prompt, lead = list(tokenizer.encode(frame.prompt(item))), FEWSHOT_LEAD
    return [ProbeRow(*_split_lead(tokenizer, prompt, lead, reference)) for reference in item.references]


def _first_token(tokenizer, text: str) -> int:
    """The token a text starts with (an option's letter), as the model would write it first."""
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
    # Six significant digits: a long reference's P(reference) is far below 1e-6, and still ranks it.
    return Knowledge(
        item.id, float(f"{p:.6g}"), round(logprob, 4), round(float(token_lp.min()), 4), len(row.target),
        bool(is_top.all()),
    )  # fmt: skip


def read_sharing(model, rows: list[ProbeRow], prefix: Prefix | None) -> list:
    """`read_rows` over `rows`: those that start with `prefix` in one pass that reuses its keys and values, the others
    in another, whole; in the rows' order."""
    starts = [prefix is not None and row.context[: len(prefix)] == prefix.tokens for row in rows]
    out: list = [None] * len(rows)
    for shared in (True, False):
        picked = [i for i, flag in enumerate(starts) if flag == shared]
        if picked:
            for i, read in zip(picked, read_rows(model, [rows[i] for i in picked], prefix if shared else None)):
                out[i] = read
    return out


def probe_items(
    model,
    tokenizer,
    items: list[QAItem],
    out_path: Path,
    *,
    frame: Frame,
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
    rows = {item.id: probe_rows(tokenizer, item, frame, answer_config) for item in items}
    # The few-shot frame's shots (the chat template's system turn) start most prompts: their keys and values are
    # computed once. The shot items themselves, and multiple-choice items beside free text, start otherwise.
    shots = {shot.id for shot in frame.shots}
    common = [row.context for item in items if item.id not in shots for row in rows[item.id]
              if frame.name == "chat" or item.reference_letter is None]  # fmt: skip
    n_shared = shared_prefix(common) if common else 0
    prefix = Prefix(model, common[0][:n_shared]) if n_shared and Prefix.usable(model) else None
    length = lambda item: max(len(row.context) + len(row.target) for row in rows[item.id])  # noqa: E731

    def probed(batch: list[QAItem]) -> list[dict]:
        reads = iter(read_sharing(model, [row for item in batch for row in rows[item.id]], prefix))
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


def read_first(items: list[QAItem], size: int, seed: int = 0) -> list[QAItem]:
    """The items the probe reads first (`size` of them, a seeded draw, in file order); all of them when there are
    not three times as many (or `size` is 0). When none of these is known, the rest is not worth reading: the most
    it could save is a few percent of training, which reading it costs."""
    if not size or len(items) < 3 * size:
        return list(items)
    chosen = set(np.random.default_rng([seed, 7]).permutation(len(items))[:size].tolist())
    return [item for i, item in enumerate(items) if i in chosen]


def probe_grade(knowledge: Knowledge | None, threshold: float, item_id: str = "") -> Grade:
    """The verdict a probe reading gives: known when P(reference) reaches the threshold; unknown, with score 0, for
    an item left unread."""
    if knowledge is None:
        return Grade(item_id, False, 0.0, PROBE_GRADER)
    return Grade(knowledge.id, knowledge.p_reference >= threshold, knowledge.p_reference, PROBE_GRADER)


def probe_summary(items: list[QAItem], knowledge: dict[str, Knowledge], threshold: float, n_new: int, seconds: float):
    read = [knowledge[item.id] for item in items if item.id in knowledge]
    return ProbeSummary(
        len(items), n_new, sum(k.p_reference >= threshold for k in read), sum(k.greedy for k in read), threshold,
        seconds, len(items) - len(read),
    )  # fmt: skip
