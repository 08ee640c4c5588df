"""How far a judge can be trusted, and the threshold that makes it most trustworthy.

Given the judge's scores and trusted labels for the same answers (from a
deterministic grader, or a user's own labels), `calibrate` reports agreement,
and precision and recall for "wrong" (the verdict that selects training data),
at the current threshold and at the threshold that maximises agreement.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from slearn_mlx.common import pct, quoted
from slearn_mlx.data import DataError, iter_jsonl
from slearn_mlx.errors import ConfigError

CALIBRATE_SAMPLE = 48  # items the model answers to label for --calibrate with the probe


@dataclass(frozen=True)
class Agreement:
    threshold: float
    n: int
    agreement: float  # share of answers where judge and label agree
    precision_wrong: float | None  # of the answers the judge calls wrong, the share that are wrong
    recall_wrong: float | None  # of the wrong answers, the share the judge calls wrong
    kappa: float = 0.0  # Cohen's kappa: agreement beyond chance; 0 for a judge calling everything wrong (or right)


@dataclass(frozen=True)
class Calibration:
    label_source: str
    before: Agreement
    after: Agreement

    @property
    def threshold(self) -> float:
        return self.after.threshold

    def __str__(self) -> str:
        return (
            f"calibrated on {self.after.n} answers labelled by {self.label_source}: "
            f"agreement {100 * self.before.agreement:.1f}% -> {100 * self.after.agreement:.1f}% "
            f"(kappa {self.before.kappa:.2f} -> {self.after.kappa:.2f}) "
            f"(threshold {self.before.threshold:.3f} -> {self.after.threshold:.3f}); "
            f"wrong precision {pct(self.before.precision_wrong, 'n/a')} -> {pct(self.after.precision_wrong, 'n/a')}, "
            f"recall {pct(self.before.recall_wrong, 'n/a')} -> {pct(self.after.recall_wrong, 'n/a')}"
        )

    def to_json(self) -> dict:
        return {"label_source": self.label_source, "before": asdict(self.before), "after": asdict(self.after)}


def agreement_at(scores: list[float], labels: list[bool], threshold: float) -> Agreement:
    """Agreement of `score >= threshold` (correct) with the labels (True = correct)."""
    verdicts = [s >= threshold for s in scores]
    agree = sum(v == label for v, label in zip(verdicts, labels))
    called_wrong = sum(not v for v in verdicts)
    truly_wrong = sum(not label for label in labels)
    both_wrong = sum(not v and not label for v, label in zip(verdicts, labels))
    return Agreement(
        threshold=threshold,
        n=len(labels),
        agreement=agree / len(labels),
        precision_wrong=both_wrong / called_wrong if called_wrong else None,
        recall_wrong=both_wrong / truly_wrong if truly_wrong else None,
        kappa=cohen_kappa(verdicts, labels),
    )


def cohen_kappa(verdicts: list[bool], labels: list[bool]) -> float:
    """Agreement beyond what two raters with these base rates reach by chance: (po - pe) / (1 - pe)."""
    n = len(labels)
    observed = sum(v == label for v, label in zip(verdicts, labels)) / n
    yes_v, yes_l = sum(verdicts) / n, sum(labels) / n
    chance = yes_v * yes_l + (1 - yes_v) * (1 - yes_l)
    return (observed - chance) / (1 - chance) if chance < 1 else 0.0


def fit_threshold(scores: list[float], labels: list[bool]) -> float:
    """The threshold with the highest agreement; among ties, the one nearest 0.5.

    Candidates are the midpoints between neighbouring distinct scores, plus one
    below and one above all of them, so every distinct split is tried.
    """
    distinct = sorted(set(scores))
    candidates = [(a + b) / 2 for a, b in zip(distinct, distinct[1:])]
    candidates += [max(0.0, distinct[0] - 1e-6), min(1.0, distinct[-1] + 1e-6)]
    return max(candidates, key=lambda t: (agreement_at(scores, labels, t).agreement, -abs(t - 0.5)))


def calibrate(scores: list[float], labels: list[bool], threshold: float, label_source: str) -> Calibration:
    if not labels:
        raise ConfigError("no labelled answers to calibrate on")
    before = agreement_at(scores, labels, threshold)
    after = agreement_at(scores, labels, fit_threshold(scores, labels))
    return Calibration(label_source, before, after)


def read_labels(path: str | Path) -> dict[str, bool]:
    """A user's own labels: JSONL lines of {"id": ..., "correct": true/false}."""
    labels: dict[str, bool] = {}
    first_line: dict[str, int] = {}
    for line_no, obj in iter_jsonl(path):
        if not isinstance(obj, dict):
            raise DataError(path, line_no, None, f"expected a JSON object, got {type(obj).__name__}")
        item_id = obj.get("id")
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            raise DataError(path, line_no, "id", "missing, or not a string or an integer")
        if not isinstance(obj.get("correct"), bool):
            raise DataError(path, line_no, "correct", "missing, or not true/false")
        item_id = str(item_id)
        # Two labels for one answer (say, two label files pasted together) would silently keep the last.
        if item_id in first_line:
            raise DataError(
                path, line_no, "id", f"duplicate id {quoted(item_id)} (first on line {first_line[item_id]})"
            )
        first_line[item_id] = line_no
        labels[item_id] = obj["correct"]
    if not labels:
        raise DataError(path, None, None, "no labels (the file is empty)")
    return labels


def save_calibration(path: Path, calibration: Calibration) -> None:
    from slearn_mlx.runs import write_json_atomic

    write_json_atomic(path, calibration.to_json())
