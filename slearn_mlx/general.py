"""General skills kept: the base and the adapted model on a shipped slice of general multiple-choice sets (MMLU,
OpenBookQA, CommonsenseQA; slearn_mlx/datasets/general), outside any domain a run trains on.

An item counts as right when its correct letter is the most likely of the options' letters as the first token of the
answer, in the chat frame the answer stage uses: one forward pass per item, no generation. Retention measures what the
adapted model keeps of the domain's known items; this measures what it keeps of everything else.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from slearn_mlx.answer import AnswerConfig, encode_chat, question_text
from slearn_mlx.probe import first_token
from slearn_mlx.records import QAItem
from slearn_mlx.runs import RunDir, read_json, write_json_atomic
from slearn_mlx.training.layers import adapters_on, has_adapters, remove_adapters

GENERAL_DIR = Path(__file__).resolve().parent / "datasets" / "general"
GENERAL_SETS = ("mmlu", "openbookqa", "commonsenseqa")
CHANCE = {"mmlu": 0.25, "openbookqa": 0.25, "commonsenseqa": 0.2}


def load_general(names: tuple[str, ...] = GENERAL_SETS) -> dict[str, list[QAItem]]:
    out = {}
    for name in names:
        rows = [json.loads(line) for line in (GENERAL_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        out[name] = [QAItem(row["id"], row["question"], row["answer"], row["options"]) for row in rows]
    return out


def right_letters(model, tokenizer, items: list[QAItem], batch_size: int = 16) -> list[bool]:
    """Per item, whether its correct letter is the likeliest of its options' letters after the chat prompt."""
    import mlx.core as mx

    from slearn_mlx.models.heads import logits_at

    config = AnswerConfig()
    prompts = [encode_chat(tokenizer, question_text(item, config)) for item in items]
    order = sorted(range(len(items)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    right = [False] * len(items)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = max(len(prompts[i]) for i in batch)
        tokens = mx.array([prompts[i] + [0] * (width - len(prompts[i])) for i in batch])
        last = mx.array([len(prompts[i]) - 1 for i in batch])
        logits = np.array(logits_at(model, tokens, last).astype(mx.float32))
        for row, i in enumerate(batch):
            letters = list(items[i].options)
            scores = logits[row, [first_token(tokenizer, x) for x in letters]]
            right[i] = letters[int(scores.argmax())] == items[i].reference
    return right


@dataclass(frozen=True)
class GeneralScores:
    """Accuracy per general set, and over all of them (items pooled)."""

    per_set: dict[str, float]
    overall: float
    n_items: int

    @classmethod
    def of(cls, sets: dict[str, list[QAItem]], right: dict[str, list[bool]]) -> "GeneralScores":
        n = sum(len(items) for items in sets.values())
        return cls({name: sum(r) / len(r) for name, r in right.items()}, sum(sum(r) for r in right.values()) / n, n)


@dataclass(frozen=True)
class GeneralSummary:
    base: GeneralScores
    adapted: GeneralScores | None
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "GeneralSummary":
        scores = lambda s: GeneralScores(**s) if s else None  # noqa: E731
        return cls(scores(obj["base"]), scores(obj.get("adapted")), obj["seconds"])

    @property
    def change(self) -> float | None:
        """Points the adapted model lost (negative) or gained outside the domain."""
        return None if self.adapted is None else self.adapted.overall - self.base.overall

    def __str__(self) -> str:
        sets = ", ".join(f"{name} {100 * acc:.1f}%" for name, acc in self.base.per_set.items())
        head = f"general skills ({self.base.n_items} items: {sets}): base {100 * self.base.overall:.1f}%"
        if self.adapted is None:
            return f"{head}, no adapters to compare, in {self.seconds:.1f} s"
        sets = ", ".join(f"{name} {100 * acc:.1f}%" for name, acc in self.adapted.per_set.items())
        return (f"{head} -> adapted {100 * self.adapted.overall:.1f}% ({100 * self.change:+.1f} points; {sets}) in "
                f"{self.seconds:.1f} s")  # fmt: skip


def evaluate_general(model, tokenizer, run: RunDir, base: GeneralScores | None = None) -> GeneralSummary:
    """The base model (unless `base` is given: another run of the same model scored it) and the run's adapted model
    on the general sets; kept in RUN/eval/general.json, which a later call reuses while the adapters stay."""
    path = run.general
    if path.exists():
        kept = GeneralSummary.from_json(read_json(path))
        if kept.adapted is not None or not has_adapters(run.adapters):
            return kept
    start = time.perf_counter()
    sets = load_general()
    remove_adapters(model)
    if base is None:
        base = GeneralScores.of(sets, {name: right_letters(model, tokenizer, items) for name, items in sets.items()})
    adapted = None
    if has_adapters(run.adapters):
        with adapters_on(model, run.adapters):
            right = {name: right_letters(model, tokenizer, items) for name, items in sets.items()}
        adapted = GeneralScores.of(sets, right)
    summary = GeneralSummary(base, adapted, time.perf_counter() - start)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, summary.to_json())
    return summary
