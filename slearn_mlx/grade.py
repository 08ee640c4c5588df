"""Stage 2: grade each answer against its reference.

Graders (`--grader`):
- `judge`: the paper's self-grading, a model judging the answers in one of the
  modes of judge.py (verdict from next-token probabilities, reasoning then
  verdict, or a 0-9 score), its score compared with `threshold`;
- `exact`, `contains`, `f1`, `option`: deterministic, no model; `auto`: `option`
  for multiple-choice items, `contains` for the rest;
- `hybrid`: deterministic where that is decisive (the option a multiple-choice
  answer picks; the reference found in the answer), the judge for the rest;
- `probe`: no answers at all: the knowledge probe (probe.py) reads how likely
  the model is to say the reference, and P(reference) is compared with
  `threshold`. Generated answers (evaluation, calibration samples) are then
  graded by `answer_grader`.
Every record keeps which grader decided, its score and, in cot mode, the
judge's justification. `calibrate_grades` fits the threshold on labelled answers.
"""

from __future__ import annotations

import random
import re
import string
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from slearn_mlx import distributed
from slearn_mlx.calibrate import Calibration, calibrate
from slearn_mlx.errors import ConfigError, NotDone
from slearn_mlx.judge import JUDGE_MODES, Judge
from slearn_mlx.options import option
from slearn_mlx.progress import progress_bar
from slearn_mlx.prompts import PROBE_FRAMES, PROBE_LEAD
from slearn_mlx.records import Answer, Grade, QAItem
from slearn_mlx.runs import RecordWriter, pending_batches, read_records, write_jsonl_atomic

GRADERS = ("judge", "exact", "contains", "f1", "option", "auto", "hybrid", "probe")
DETERMINISTIC = ("exact", "contains", "f1", "option")
ANSWER_GRADERS = ("auto",) + DETERMINISTIC + ("judge", "hybrid")  # answers' grader when the probe grades items
# The probe's P(reference) needed to call an item known, per frame (BENCHMARKS.md, "The knowledge test": at 0.8 the
# few-shot frame calls as many world items known as the chat frame at 0.05, and a third as many it should not);
# every other scored grader's: 0.5.
PROBE_THRESHOLDS = {"fewshot": 0.8, "chat": 0.05}


@dataclass
class GradeConfig:
    grader: str = option(
        "probe",
        "judge: a model grades the answers; exact/contains/f1/option: deterministic (auto: option for multiple "
        "choice, contains otherwise); hybrid: deterministic where decisive, the judge for the rest; probe: no "
        "answers, one forward pass reads how likely the model is to say each reference.",
        choices=GRADERS,
    )
    judge_mode: str = option(
        "verdict",
        "verdict: P(Yes) as the next token; cot: a short justification, then P(Yes); score: expected 0-9 score.",
        choices=JUDGE_MODES,
    )
    judge_model: str | None = option(
        None, "A separate judge model (an installed name, a directory or a Hugging Face id).",
        shown="the run's model judges itself",
    )  # fmt: skip
    judge_template: str | None = option(
        None, "File with the judge's prompt: fields {question}, {reference}, {answer}.", shown="the mode's own"
    )
    threshold: float | None = option(
        None, "Score needed to count as correct; --calibrate fits it.",
        shown="0.5 for the judge's P(correct); the probe's P(reference): 0.8 in the few-shot frame, 0.05 in the chat "
        "frame",
    )  # fmt: skip
    probe_frame: str = option(
        "fewshot", "How the probe asks: fewshot (a few other items of the set as questions and answers, then the "
        "item's question and reference) or chat (the chat template, then --probe-lead and the reference).",
        choices=PROBE_FRAMES,
    )  # fmt: skip
    probe_lead: str = option(PROBE_LEAD, "In the chat frame, what the probe puts before a free-text reference.")
    answer_grader: str = option(
        "auto", "With --grader probe, how generated answers (evaluation, calibration) are graded; auto: option for "
        "multiple choice, contains otherwise.", choices=ANSWER_GRADERS,
    )  # fmt: skip
    f1_threshold: float = option(0.5, "Token F1 needed to count as correct with the f1 grader.")
    cot_max_tokens: int = option(48, "Tokens of the judge's justification in cot mode.")
    batch_size: int = option(16, "Judge or probe prompts scored together.")
    probe_sample: int = option(
        48, "Items the probe reads first; when none of them is known, the rest train as unknown unread (0: read all).",
    )  # fmt: skip

    def problems(self) -> list[str]:
        from slearn_mlx.prompts import JUDGE_FIELDS, JUDGE_REQUIRED, template_problem

        out = []
        if self.grader not in GRADERS:
            out.append(f"grade.grader must be one of {', '.join(GRADERS)}, not {self.grader!r}")
        if self.judge_mode not in JUDGE_MODES:
            out.append(f"grade.judge_mode must be one of {', '.join(JUDGE_MODES)}, not {self.judge_mode!r}")
        for name in ("threshold", "f1_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                out.append(f"grade.{name} must be between 0 and 1")
        if self.probe_frame not in PROBE_FRAMES:
            out.append(f"grade.probe_frame must be one of {', '.join(PROBE_FRAMES)}, not {self.probe_frame!r}")
        if self.answer_grader not in ANSWER_GRADERS:
            out.append(f"grade.answer_grader must be one of {', '.join(ANSWER_GRADERS)}, not {self.answer_grader!r}")
        if self.probe_sample < 0:
            out.append("grade.probe_sample must not be negative")
        for name in ("batch_size", "cot_max_tokens"):
            if getattr(self, name) < 1:
                out.append(f"grade.{name} must be at least 1")
        if self.judge_template is not None:
            problem = template_problem(self.judge_template, JUDGE_FIELDS, JUDGE_REQUIRED)
            if problem:
                out.append(f"grade.judge_template: {problem}")
        return out

    @property
    def uses_judge(self) -> bool:
        return self.grader in ("judge", "hybrid")

    @property
    def cut(self) -> float:
        """The threshold in force: the configured one, else the grader's default."""
        if self.threshold is not None:
            return self.threshold
        return PROBE_THRESHOLDS[self.probe_frame] if self.grader == "probe" else 0.5

    @property
    def for_answers(self) -> "GradeConfig":
        """How generated answers are graded: as configured, except that the probe, which grades no answers,
        hands them to `answer_grader`."""
        if self.grader != "probe":
            return self
        return replace(self, grader=self.answer_grader, threshold=None)

    @property
    def judge_name(self) -> str:
        return f"judge-{self.judge_mode}"


@dataclass(frozen=True)
class GradeSummary:
    n_items: int
    n_new: int
    n_wrong: int
    grader: str
    seconds: float
    by_grader: dict[str, int] | None = None  # how many verdicts each grader gave

    def __str__(self) -> str:
        share = 100.0 * self.n_wrong / self.n_items if self.n_items else 0.0
        split = ""
        if self.by_grader and len(self.by_grader) > 1:
            split = " (" + ", ".join(f"{n} by {name}" for name, n in sorted(self.by_grader.items())) + ")"
        return (
            f"graded {self.n_items} with {self.grader}{split}: {self.n_wrong} wrong ({share:.1f}%), "
            f"{self.n_new} new, in {self.seconds:.1f} s"
        )


# --------------------------------------------------------------------------- deterministic graders


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def contains_reference(answer: str, reference: str) -> bool:
    """The normalised reference appears in the normalised answer as whole words."""
    ref = normalize(reference)
    return bool(ref) and f" {ref} " in f" {normalize(answer)} "


_LETTER_PATTERNS = (
    re.compile(r"^\s*\(?([A-Z])\)?(?:[.):,\s]|$)"),  # "C", "C.", "(C)", "C) text"
    re.compile(r"\b(?:answer|option)\s*(?:is|:)?\s*\(?([A-Z])\b", re.IGNORECASE),  # "The answer is C"
)


def answer_letter(text: str, options: dict[str, str]) -> str | None:
    """The option an answer picks.

    The one option whose text the answer quotes wins (the content is the
    knowledge; a letter is only a position), else the leading letter ("C",
    "(C)", "C. ..."), else "the answer is C".
    """
    padded = f" {normalize(text)} "
    quoted = [k for k, option in options.items() if normalize(option) and f" {normalize(option)} " in padded]
    if len(quoted) == 1:
        return quoted[0]
    for pattern in _LETTER_PATTERNS:
        match = pattern.search(text)
        if match and match.group(1).upper() in options:
            return match.group(1).upper()
    return None


def _not_multiple_choice(item: QAItem) -> ValueError:
    return ValueError(f"item {item.id}: the option grader needs multiple-choice items whose answer names an option")


def grade_deterministic(grader: str, item: QAItem, answer: str, f1_threshold: float = 0.5) -> tuple[bool, float]:
    """(correct, score) from a deterministic grader; `auto` is `option` for multiple choice, `contains` otherwise."""
    if grader == "auto":
        grader = "option" if item.reference_letter is not None else "contains"
    if grader == "exact":
        ok = any(normalize(answer) == normalize(reference) for reference in item.references)
        return ok, float(ok)
    if grader == "contains":
        ok = any(contains_reference(answer, reference) for reference in item.references)
        return ok, float(ok)
    if grader == "f1":
        score = max(token_f1(answer, reference) for reference in item.references)
        return score >= f1_threshold, score
    if grader == "option":
        if item.reference_letter is None:
            raise _not_multiple_choice(item)
        ok = answer_letter(answer, item.options) == item.reference_letter
        return ok, float(ok)
    raise ConfigError(f"unknown grader {grader!r}; choose one of {', '.join(DETERMINISTIC)}")


def _deterministic_name(grader: str, item: QAItem) -> str:
    if grader == "auto":
        return "option" if item.reference_letter is not None else "contains"
    return grader


def decisive_grade(item: QAItem, answer: str) -> Grade | None:
    """A deterministic verdict where one is decisive, else None (the judge decides).

    Decisive: the option a multiple-choice answer picks; an answer that contains
    the whole reference is correct. A free-text answer that does not is left to
    the judge, which can recognise a paraphrase.
    """
    if item.reference_letter is not None:
        ok, score = grade_deterministic("option", item, answer)
        return Grade(item.id, ok, score, "option")
    if any(contains_reference(answer, reference) for reference in item.references):
        return Grade(item.id, True, 1.0, "contains")
    return None


def deterministic_labels(source: str, items: list[QAItem], answers: dict[str, Answer]) -> dict[str, bool]:
    """Trusted labels from a deterministic grader, or from `decisive_grade` for `auto` (where decisive)."""
    labels = {}
    for item in items:
        text = answers[item.id].text
        if source == "auto":
            grade = decisive_grade(item, text)
            if grade is not None:
                labels[item.id] = grade.correct
        elif source == "option" and item.reference_letter is None:
            continue
        else:
            labels[item.id] = grade_deterministic(source, item, text)[0]
    return labels


# --------------------------------------------------------------------------- the stage


def grade_answers(
    items: list[QAItem],
    answers: dict[str, Answer],
    out_path: Path,
    config: GradeConfig = GradeConfig(),
    *,
    judge: Judge | None = None,
    progress: bool = True,
) -> GradeSummary:
    """Grade every answered item not yet in `out_path`, appending one record per item."""
    start = time.perf_counter()
    missing = [item.id for item in items if item.id not in answers]
    if missing:
        raise NotDone(
            f"{len(missing)} of {len(items)} items have no answer (first: {missing[0]}); run `slearn answer` first"
        )
    if config.grader == "option":
        unusable = next((item for item in items if item.reference_letter is None), None)
        if unusable is not None:
            raise _not_multiple_choice(unusable)
    done = read_records(out_path, Grade)
    n_todo = sum(item.id not in done for item in items)

    with RecordWriter(out_path) as writer, progress_bar(n_todo, f"grade ({config.grader})", progress) as bar:
        to_judge = []
        for item in items:
            text = answers[item.id].text
            if config.grader in DETERMINISTIC or config.grader == "auto":
                ok, score = grade_deterministic(config.grader, item, text, config.f1_threshold)
                grade = Grade(item.id, ok, score, _deterministic_name(config.grader, item))
            elif config.grader == "hybrid":
                grade = decisive_grade(item, text)
            else:
                grade = None
            if grade is None:
                to_judge.append(item)
            elif item.id not in done:
                writer.write(grade)
                bar.update(1)
        if any(item.id not in done for item in to_judge):
            if judge is None:
                raise ConfigError(f"the {config.grader} grader needs a judge model")
            prompts = {item.id: judge.prompt_tokens(item, answers[item.id].text) for item in to_judge}
            batches = list(pending_batches(to_judge, done, config.batch_size, lambda item: len(prompts[item.id])))

            def judged(batch: list[QAItem]) -> list[tuple[float, str | None]]:
                return [(float(j.score), j.justification) for j in judge.judge([prompts[item.id] for item in batch])]

            for batch, judgements in distributed.map_batches(batches, judged):
                for item, (score, justification) in zip(batch, judgements):
                    if item.id in done:
                        continue
                    score = round(score, 6)
                    writer.write(Grade(item.id, score >= config.cut, score, config.judge_name, justification))
                    bar.update(1)

    grades = read_records(out_path, Grade)
    n_wrong = sum(1 for item in items if item.id in grades and not grades[item.id].correct)
    by_grader = Counter(grades[item.id].grader for item in items if item.id in grades)
    return GradeSummary(len(items), n_todo, n_wrong, config.grader, time.perf_counter() - start, dict(by_grader))


def calibrate_grades(grades_path: Path, labels: dict[str, bool], threshold: float, label_source: str) -> Calibration:
    """Fit the threshold of a judge or the probe on labelled items and re-decide their verdicts with it.

    Only verdicts the judge or the probe gave are calibrated and rewritten (atomically);
    deterministic ones stand.
    """
    grades = read_records(grades_path, Grade)
    judged = [g for g in grades.values() if _scored(g) and g.id in labels]
    if not judged:
        raise ConfigError(
            f"no judged answer carries a label ({len(labels)} labels, "
            f"{sum(_scored(g) for g in grades.values())} judged answers); "
            "calibration needs answers graded by a judge and labels for some of them"
        )
    result = calibrate([g.score for g in judged], [labels[g.id] for g in judged], threshold, label_source)
    rewritten = (replace(g, correct=g.score >= result.threshold) if _scored(g) else g for g in grades.values())
    write_jsonl_atomic(grades_path, (g.to_json() for g in rewritten))
    return result


def _scored(grade: Grade) -> bool:
    """A verdict that compares a score with a threshold (a judge's or the probe's), which calibration can move."""
    return grade.grader.startswith("judge") or grade.grader == "probe"


def audit_sample(
    items: list[QAItem], answers: dict[str, Answer], grades: dict[str, Grade], n: int, seed: int = 0
) -> str:
    """N graded items side by side, drawn at random (seeded), for a person to check the grading."""
    graded = [item for item in items if item.id in grades]
    sample = random.Random(seed).sample(graded, min(n, len(graded)))
    blocks = []
    for item in sample:
        grade = grades[item.id]
        verdict = "correct" if grade.correct else "WRONG"
        score = "P(reference)" if grade.grader == "probe" else "score"
        lines = [
            f"[{item.id}] {verdict} by {grade.grader} ({score} {grade.score:.3f})",
            f"  question : {_one_line(item.question)}",
            f"  reference: {_one_line(item.accepted_text)}",
            f"  answer   : {_one_line(answers[item.id].text) if item.id in answers else '(none: the probe reads P(reference))'}",
        ]
        if grade.justification:
            lines.append(f"  judge    : {_one_line(grade.justification)}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _one_line(text: str, width: int = 110) -> str:
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder=" ...") or "(empty)"
