"""Stage 5: accuracy of the base model and of base + adapters on a held-out test file,
and retention: the adapted model's accuracy on the training items the base model
already answered correctly.

All are graded by the same grader; with the judge grader the judge is the base
model for all, so only the answers change between the columns.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, ContextManager

from slearn_mlx import distributed
from slearn_mlx.answer import AnswerConfig, answer_items
from slearn_mlx.grade import GradeConfig, grade_answers
from slearn_mlx.judge import Judge
from slearn_mlx.records import Answer, Grade, QAItem
from slearn_mlx.runs import RunDir, read_records
from slearn_mlx.training.layers import adapters_on, has_adapters, remove_adapters


@dataclass(frozen=True)
class EvalSummary:
    n_test: int
    base_accuracy: float
    adapted_accuracy: float | None
    grader: str
    seconds: float
    retention: float | None = None  # adapted accuracy on the training items the base model knew
    n_known: int = 0

    def __str__(self) -> str:
        head = f"evaluated {self.n_test} test items with {self.grader}: base {100 * self.base_accuracy:.1f}%"
        if self.adapted_accuracy is None:
            return f"{head}, no adapters to compare, in {self.seconds:.1f} s"
        delta = 100 * (self.adapted_accuracy - self.base_accuracy)
        kept = f", retention {100 * self.retention:.1f}% of {self.n_known} known" if self.retention is not None else ""
        return (
            f"{head} -> adapted {100 * self.adapted_accuracy:.1f}% ({delta:+.1f} points){kept} in {self.seconds:.1f} s"
        )


def forget_adapted(run: RunDir) -> None:
    """Delete what was evaluated with adapters that are being replaced; the base model's answers stay."""
    if not distributed.is_writer():
        return
    for variant in ("adapted", "retention"):
        run.eval_answers(variant).unlink(missing_ok=True)
        run.eval_grades(variant).unlink(missing_ok=True)
    run.general.unlink(missing_ok=True)
    run.adapted_probe.unlink(missing_ok=True)


def accuracy(items: list[QAItem], grades: dict[str, Grade]) -> float:
    return sum(grades[item.id].correct for item in items) / len(items)


def evaluate_adapters(
    model,
    tokenizer,
    test_items: list[QAItem],
    run: RunDir,
    answer_config: AnswerConfig = AnswerConfig(),
    grade_config: GradeConfig = GradeConfig(),
    *,
    make_judge: Callable[[], ContextManager[Judge | None]] = nullcontext,
    progress: bool = True,
    known_items: list[QAItem] | None = None,
) -> EvalSummary:
    """Answer and grade the test items with the base model, then with the run's adapters, and the `known_items`
    (training items the base model got right) with the adapters: retention.

    `make_judge` gives the judge for judge graders; it is entered after the
    adapters are removed again, so a self-judge is the base model.
    """
    start = time.perf_counter()
    remove_adapters(model)  # the base model, whatever was trained on it in this process
    variants = {"base": test_items}
    answer = lambda variant, items: answer_items(  # noqa: E731
        model, tokenizer, items, run.eval_answers(variant), answer_config, progress=progress
    )
    answer("base", test_items)
    if has_adapters(run.adapters):
        variants["adapted"] = test_items
        if known_items:
            variants["retention"] = known_items
        with adapters_on(model, run.adapters):
            answer("adapted", test_items)
            if known_items:
                answer("retention", known_items)

    results = {}
    with make_judge() as judge:
        for variant, items in variants.items():
            answers = read_records(run.eval_answers(variant), Answer)
            grades_path = run.eval_grades(variant)
            grade_answers(items, answers, grades_path, grade_config, judge=judge, progress=progress)
            results[variant] = accuracy(items, read_records(grades_path, Grade))
    return EvalSummary(
        len(test_items), results["base"], results.get("adapted"), grade_config.grader, time.perf_counter() - start,
        results.get("retention"), len(known_items or []) if "retention" in results else 0,
    )  # fmt: skip
