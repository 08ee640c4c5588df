"""General skills kept: the base and the adapted model on a shipped slice of general multiple-choice sets (MMLU,
OpenBookQA, CommonsenseQA; slearn_mlx/datasets/general), outside any domain a run trains on.

An item counts as right when its correct option's text is the likeliest continuation of the question, by the mean
log-probability per token of each option's text after "Question: ...\nAnswer:" (lm-eval-harness's cloze reading, per
token). The question's keys and values are computed once and every option reads on from them: about one forward pass
of the question per item, no generation. Small models read this way well above chance; the likeliest letter after the
options, the cheaper reading, left both the 135M and the 0.5B model at chance (BENCHMARKS). Retention measures what the
adapted model keeps of the domain's known items; this measures what it keeps of everything else.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from slearn_mlx.probe import ProbeRow, read_rows
from slearn_mlx.records import QAItem
from slearn_mlx.runs import RunDir, read_json, write_json_atomic
from slearn_mlx.training.layers import adapters_on, has_adapters, remove_adapters

GENERAL_DIR = Path(__file__).resolve().parent / "datasets" / "general"
GENERAL_SETS = ("mmlu", "openbookqa", "commonsenseqa")
CHANCE = {"mmlu": 0.25, "openbookqa": 0.25, "commonsenseqa": 0.2}
SCORING = "option text, mean log-probability per token"  # kept with the scores: another reading is not reused
CLOZE_FRAME = ("Question: ", "\nAnswer:")


def load_general(names: tuple[str, ...] = GENERAL_SETS) -> dict[str, list[QAItem]]:
    out = {}
    for name in names:
        rows = [json.loads(line) for line in (GENERAL_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]
        out[name] = [QAItem(row["id"], row["question"], row["answer"], row["options"]) for row in rows]
    return out


def cloze_rows(tokenizer, item: QAItem) -> list[ProbeRow]:
    """One row per option: the question in the cloze frame, then the option's text after a space."""
    before, after = CLOZE_FRAME
    context = list(tokenizer.encode(before + item.question.strip() + after))
    return [ProbeRow(context, tokenizer.encode(" " + text.strip(), add_special_tokens=False))
            for text in item.options.values()]  # fmt: skip


def option_scores(model, tokenizer, item: QAItem, share_prefix: bool | None = None) -> np.ndarray:
    """The mean log-probability per token of each option's text after the question, in the options' order. With
    `share_prefix` (by default: where the model's cache allows it) the question is read once and its keys and values
    reused for every option."""
    from slearn_mlx.judge import Prefix

    rows = cloze_rows(tokenizer, item)
    share = Prefix.usable(model) if share_prefix is None else share_prefix
    prefix = Prefix(model, rows[0].context[:-1]) if share else None
    return np.array([float(lp.mean()) for lp, _, _ in read_rows(model, rows, prefix)])


def right_options(model, tokenizer, items: list[QAItem]) -> list[bool]:
    """Per item, whether its correct option is the one `option_scores` ranks first."""
    from slearn_mlx.judge import Prefix

    share = Prefix.usable(model)  # once: it builds a cache per layer to look
    right = []
    for item in items:
        letters = list(item.options)
        right.append(letters[int(option_scores(model, tokenizer, item, share).argmax())] == item.reference)
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
    scoring: str = SCORING

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> "GeneralSummary":
        scores = lambda s: GeneralScores(**s) if s else None  # noqa: E731
        return cls(scores(obj["base"]), scores(obj.get("adapted")), obj["seconds"], obj.get("scoring", "letters"))

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
        if kept.scoring == SCORING and (kept.adapted is not None or not has_adapters(run.adapters)):
            return kept
    start = time.perf_counter()
    sets = load_general()
    remove_adapters(model)
    if base is None:
        base = GeneralScores.of(sets, {name: right_options(model, tokenizer, items) for name, items in sets.items()})
    adapted = None
    if has_adapters(run.adapters):
        with adapters_on(model, run.adapters):
            right = {name: right_options(model, tokenizer, items) for name, items in sets.items()}
        adapted = GeneralScores.of(sets, right)
    summary = GeneralSummary(base, adapted, time.perf_counter() - start)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, summary.to_json())
    return summary
