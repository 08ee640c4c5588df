"""The stages on a run directory, one function each, and `run_pipeline` calling them in order.

Each stage function reads its inputs from the run directory, runs the stage
module's core function, records its summary and timing in report.json and
returns the summary. The model is loaded once per process and shared.
"""

from __future__ import annotations

import random
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, replace
from typing import Callable, Iterator

from slearn_mlx import distributed
from slearn_mlx.answer import AnswerSummary, answer_items
from slearn_mlx.ask import SideBySide, ask
from slearn_mlx.calibrate import CALIBRATE_SAMPLE, Calibration, read_labels, save_calibration
from slearn_mlx.config import RunConfig, save_config
from slearn_mlx.data import load_items
from slearn_mlx.environment import environment_info
from slearn_mlx.errors import ConfigError, MissingInput
from slearn_mlx.evaluate import EvalSummary, evaluate_adapters, forget_adapted
from slearn_mlx.fingerprint import (
    FIRST_STAGE,
    check_fingerprint,
    forget_fingerprint,
    make_fingerprint,
    mismatch_error,
    read_fingerprint,
    save_fingerprint,
)
from slearn_mlx.grade import (
    DETERMINISTIC,
    GradeSummary,
    audit_sample,
    calibrate_grades,
    deterministic_labels,
    grade_answers,
    grade_deterministic,
)
from slearn_mlx.judge import Judge
from slearn_mlx.models.load import load_model, resolve_model
from slearn_mlx.probe import (
    PROBE_GRADER,
    Frame,
    Knowledge,
    ProbeSummary,
    probe_grade,
    probe_items,
    probe_summary,
    read_first,
)
from slearn_mlx.records import Answer, Grade, QAItem
from slearn_mlx.runs import (
    STAGES,
    RunDir,
    load_run_items,
    lock_run,
    read_json,
    read_records,
    save_items,
    update_report,
    write_jsonl_atomic,
)
from slearn_mlx.select import SelectSummary, rephrase_items, select_unknown
from slearn_mlx.training.checkpoint import already_trained
from slearn_mlx.training.config import TrainSummary
from slearn_mlx.training.layers import has_adapters
from slearn_mlx.training.loop import train_adapters


class SharedModel:
    """Loads the run's model on first use and keeps it for the following stages."""

    def __init__(self, name: str | None, trust_remote_code: bool = False):
        self.name = name
        self.trust_remote_code = trust_remote_code
        self._loaded = None
        self.load_seconds = 0.0

    def get(self):
        if self._loaded is None:
            start = time.perf_counter()
            self._loaded = load_model(self.name, trust_remote_code=self.trust_remote_code)
            self.load_seconds = time.perf_counter() - start
        return self._loaded


@contextmanager
def judge_for(config: RunConfig, models: SharedModel) -> Iterator[Judge | None]:
    """The judge the grade config asks for, or None when its grader needs none.

    A separate `judge_model` is loaded for the block and freed after it; without
    one, the run's own model judges itself.
    """
    grade = config.grade.for_answers  # the probe judges no answers; its answer grader might
    if not grade.uses_judge:
        yield None
        return
    separate = grade.judge_model is not None
    model, tokenizer = (
        load_model(grade.judge_model, trust_remote_code=config.trust_remote_code) if separate else models.get()
    )
    judge = Judge(model, tokenizer, grade.judge_mode, grade.judge_template, grade.cot_max_tokens)
    del model, tokenizer
    try:
        yield judge
    finally:
        judge.close()
        if separate:
            import mlx.core as mx

            mx.clear_cache()


def clear_stage(run: RunDir, stage: str) -> None:
    """Delete one stage's outputs (rank 0's work in a distributed group)."""
    if not run.root.exists() or not distributed.is_writer():
        return
    lock_run(run)
    for path in run.outputs(stage):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def start_over(run: RunDir, config: RunConfig, stage: str) -> None:
    """`--force`: recompute `stage` and every stage after it, which were computed from it.

    If the run was made with another model, data or config, it starts over from
    the first stage that difference affects, when that comes earlier.
    """
    if not run.root.exists():
        return
    _, diffs = check_fingerprint(run, config)
    first = min([STAGES.index(stage)] + [STAGES.index(FIRST_STAGE[part]) for part in diffs])
    for later in STAGES[first:]:
        clear_stage(run, later)
    forget_fingerprint(run, STAGES[first:])
    if first == 0 and distributed.is_writer():
        run.report.unlink(missing_ok=True)


def _check(run: RunDir, config: RunConfig) -> None:
    """Refuse to add to a run directory made with another model, data or config."""
    _, diffs = check_fingerprint(run, config)
    if diffs:
        raise mismatch_error(run, diffs)


def _record(run: RunDir, stage: str, summary, **totals) -> None:
    """Put a stage's summary and time in report.json; a rerun that found everything done keeps the
    time of the call that did the work."""
    report = read_json(run.report) if run.report.exists() else {}
    if getattr(summary, "n_new", None) == 0 and stage in report.get("stages", {}):
        update_report(run, **totals)
        return
    update_report(run, stages={stage: asdict(summary)}, seconds={stage: round(summary.seconds, 3)}, **totals)


def _begin(run: RunDir, config: RunConfig, stage: str) -> None:
    """Hold the run, save the config, its fingerprint and the environment; called once inputs and model
    are known to be good."""
    lock_run(run)
    _check(run, config)  # again, now that the run is held: another process may have written it meanwhile
    save_fingerprint(run, make_fingerprint(config, read_fingerprint(run)), stage)
    save_config(run, config)
    update_report(run, model=resolve_model(config.model), environment=environment_info())


def _items(config: RunConfig, option: str) -> list[QAItem]:
    """The items of the QA file named by `option` (--data or --test), or a message saying to pass one."""
    path = config.data if option == "--data" else config.test
    if not path:
        raise ConfigError(f"no {option} file given; pass {option} FILE.jsonl")
    return load_items(path, config.fields)


def stage_answer(run: RunDir, config: RunConfig, models: SharedModel, *, progress: bool = True) -> AnswerSummary:
    items = _items(config, "--data")  # bad data is reported before anything about the run or the model
    _check(run, config)
    model, tokenizer = models.get()
    _begin(run, config, "answer")
    save_items(run, items)
    summary = answer_items(model, tokenizer, items, run.answers, config.answer, progress=progress)
    _record(run, "answer", summary, n_items=len(items), data=str(config.data))
    return summary


def stage_grade(
    run: RunDir, config: RunConfig, models: SharedModel, *, progress: bool = True
) -> GradeSummary | ProbeSummary:
    if config.grade.grader == PROBE_GRADER:
        return stage_probe(run, config, models, progress=progress)
    _check(run, config)
    items = load_run_items(run)
    answers = read_records(run.require(run.answers, "answer"), Answer)
    done = read_records(run.grades, Grade, repair=False)
    needs_judge = any(item.id not in done for item in items)
    with judge_for(config, models) if needs_judge else nullcontext() as judge:
        _begin(run, config, "grade")
        summary = grade_answers(items, answers, run.grades, config.grade, judge=judge, progress=progress)
    _record(run, "grade", summary, n_wrong=summary.n_wrong, grader=config.grade.grader)
    return summary


def stage_probe(run: RunDir, config: RunConfig, models: SharedModel, *, progress: bool = True) -> ProbeSummary:
    """Grade the training items with the knowledge probe: probe.jsonl (resumable), then grades.jsonl from it."""
    items = _items(config, "--data")
    _check(run, config)
    start = time.perf_counter()
    done = read_records(run.probe, Knowledge, repair=False)
    cut = config.grade.cut
    first = read_first(items, config.grade.probe_sample)
    chosen = {item.id for item in first}
    rest = [item for item in items if item.id not in chosen]
    # The rest is read only when some item read first is known.
    unread_first = any(item.id not in done for item in first)
    wanted = unread_first or (any(done[i].p_reference >= cut for i in chosen) and any(i.id not in done for i in rest))
    model, tokenizer = models.get() if wanted else (None, None)
    _begin(run, config, "grade")
    save_items(run, items)
    frame = Frame.for_items(config.grade.probe_frame, items, config.grade.probe_lead)
    n_new = 0
    for part in (first, rest):
        n_new += probe_items(
            model, tokenizer, part, run.probe, frame=frame, answer_config=config.answer,
            batch_size=config.grade.batch_size, progress=progress,
        )  # fmt: skip
        knowledge = read_records(run.probe, Knowledge)
        if not any(knowledge[i].p_reference >= cut for i in chosen):
            break
    grades = (probe_grade(knowledge.get(item.id), cut, item.id) for item in items)
    write_jsonl_atomic(run.grades, (grade.to_json() for grade in grades))
    summary = probe_summary(items, knowledge, config.grade.cut, n_new, time.perf_counter() - start)
    _record(run, "grade", summary, n_items=len(items), data=str(config.data), n_wrong=summary.n_items - summary.n_known,
            grader=PROBE_GRADER)  # fmt: skip
    return summary


def stage_calibrate(
    run: RunDir,
    config: RunConfig,
    labels: str,
    models: SharedModel | None = None,
    *,
    sample: int = CALIBRATE_SAMPLE,
    progress: bool = True,
) -> tuple[Calibration, RunConfig]:
    """Fit the threshold of the judge or the probe on labelled items; the run keeps it (config.json,
    calibration.json).

    `labels` is a deterministic grader (exact, contains, f1, option), `auto` (the
    hybrid grader's decisive verdicts; with the probe, `grade.answer_grader`), or a
    JSONL file of {"id", "correct"}. The probe has no answers to label: the model
    answers a seeded sample of `sample` items (calibration_answers.jsonl), which
    the labels' grader grades.
    """
    start = time.perf_counter()
    items = load_run_items(run)
    probing = config.grade.grader == PROBE_GRADER
    run.require(run.grades, "grade")
    lock_run(run)
    if labels not in ("auto",) + DETERMINISTIC:
        trusted = read_labels(labels)
    elif probing:
        trusted = _sample_labels(run, config, items, labels, models, sample, progress)
    else:
        trusted = deterministic_labels(labels, items, read_records(run.require(run.answers, "answer"), Answer))
    _check(run, config)
    calibration = calibrate_grades(run.grades, trusted, config.grade.cut, labels)
    config = replace(config, grade=replace(config.grade, threshold=round(calibration.threshold, 6)))
    save_calibration(run.calibration, calibration)
    save_fingerprint(run, make_fingerprint(config, read_fingerprint(run)), "grade")
    save_config(run, config)
    grades = read_records(run.grades, Grade)
    n_wrong = sum(1 for item in items if not grades[item.id].correct)
    update_report(
        run, calibration=calibration.to_json(), n_wrong=n_wrong, seconds={"calibrate": time.perf_counter() - start}
    )
    return calibration, config


def _sample_labels(
    run: RunDir,
    config: RunConfig,
    items: list[QAItem],
    labels: str,
    models: SharedModel | None,
    sample: int,
    progress: bool,
) -> dict[str, bool]:
    """Labels for the probe's calibration: the model answers a seeded sample, a deterministic grader grades it."""
    chosen = random.Random(0).sample(items, min(sample, len(items)))
    done = read_records(run.calibration_answers, Answer, repair=False)
    if any(item.id not in done for item in chosen):
        model, tokenizer = (models or SharedModel(config.model, config.trust_remote_code)).get()
        answer_items(model, tokenizer, chosen, run.calibration_answers, config.answer, progress=progress,
                     desc="calibrate")  # fmt: skip
    answers = read_records(run.calibration_answers, Answer)
    grader = config.grade.answer_grader if labels == "auto" else labels
    return {item.id: grade_deterministic(grader, item, answers[item.id].text)[0] for item in chosen}


def audit(run: RunDir, n: int, seed: int = 0) -> str:
    """N graded items side by side, for a person to check the grading."""
    items = load_run_items(run)
    grades = read_records(run.require(run.grades, "grade"), Grade)
    if run.answers.exists() or not run.probe.exists():
        answers = read_records(run.require(run.answers, "answer"), Answer)
    else:  # the probe graded without answers; the calibration sample has some
        answers = read_records(run.calibration_answers, Answer)
    return audit_sample(items, answers, grades, n, seed)


def stage_select(
    run: RunDir, config: RunConfig, models: SharedModel | None = None, *, progress: bool = True
) -> SelectSummary:
    """Pick the pairs to train on; with `rephrase`, the model first rewrites the unknown ones' references
    in its own words (run/rephrased.jsonl, resumable), which takes it time, counted here."""
    start = time.perf_counter()
    items = load_run_items(run)
    grades = read_records(run.require(run.grades, "grade"), Grade)
    lock_run(run)
    _check(run, config)
    save_config(run, config)
    select = config.select
    answers = read_records(run.answers, Answer) if select.own else None
    models = models or SharedModel(config.model, config.trust_remote_code)

    def rephrase(unknown: list[QAItem]) -> dict[str, Answer]:
        return rephrase_items(*models.get(), unknown, run.rephrased, config.answer, progress=progress)

    summary = select_unknown(items, grades, run.train_dir, select, config.answer, config.grade.cut, answers, rephrase)
    summary = replace(summary, seconds=time.perf_counter() - start)
    _record(run, "select", summary, n_selected=summary.n_selected)
    return summary


def stage_train(run: RunDir, config: RunConfig, models: SharedModel, *, progress: bool = True) -> TrainSummary:
    _check(run, config)
    run.require(run.train_file, "select")
    if already_trained(run.adapters, run.train_dir, config.train):
        return TrainSummary.skip(f"adapters already trained in {run.adapters}; --force retrains")
    # New or changed selection or settings: older adapters and what was evaluated with them are stale. A checkpoint
    # stays: train_adapters resumes it only if it comes from this very training (same data and config).
    lock_run(run)
    if distributed.is_writer():
        shutil.rmtree(run.adapters, ignore_errors=True)
    forget_adapted(run)
    model, tokenizer = models.get()
    _begin(run, config, "train")
    summary = train_adapters(
        model, tokenizer, run.train_dir, run.adapters, config.train,
        model_name=resolve_model(config.model), progress=progress,
    )  # fmt: skip
    _record(run, "train", summary)
    return summary


def stage_evaluate(
    run: RunDir,
    config: RunConfig,
    models: SharedModel,
    *,
    progress: bool = True,
    known_items: list[QAItem] | None = None,
) -> EvalSummary:
    """Held-out accuracy of the base model and of base + adapters, and retention on `known_items` (by default the
    training items the run graded correct)."""
    _check(run, config)
    test_items = _items(config, "--test")
    known = known_items
    if known is None and run.grades.exists():  # the training items the base model answered right
        grades = read_records(run.grades, Grade, repair=False)
        known = [item for item in load_run_items(run) if item.id in grades and grades[item.id].correct]
    model, tokenizer = models.get()
    _begin(run, config, "evaluate")
    summary = evaluate_adapters(
        model, tokenizer, test_items, run, config.answer, config.grade.for_answers,
        make_judge=lambda: judge_for(config, models), progress=progress, known_items=known,
    )  # fmt: skip
    _record(
        run, "evaluate", summary, test=str(config.test), n_test=len(test_items),
        base_accuracy=summary.base_accuracy, adapted_accuracy=summary.adapted_accuracy, retention=summary.retention,
    )  # fmt: skip
    return summary


def ask_run(run: RunDir, config: RunConfig, models: SharedModel, questions: list[str]) -> list[SideBySide]:
    """The run's base and adapted model answering `questions`, side by side; nothing is written to the run."""
    if not run.config.exists():
        raise MissingInput(f"{run.root}: not a run directory (no config.json); give the --out of a run")
    if not has_adapters(run.adapters):
        raise MissingInput(f"{run.root}: no adapters yet; train first (slearn train --out {run.root})")
    model, tokenizer = models.get()
    return ask(model, tokenizer, questions, run.adapters, config.answer)


def run_pipeline(
    run: RunDir,
    config: RunConfig,
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    force: bool = False,
    calibrate_labels: str | None = None,
    calibrate_sample: int = CALIBRATE_SAMPLE,
) -> dict:
    """answer -> grade [-> calibrate] -> select -> train -> evaluate (with a test file), resuming what is done."""
    _items(config, "--data")  # bad input fails here, before anything is written
    if config.test:
        _items(config, "--test")
    if force:
        start_over(run, config, STAGES[0])
    models = SharedModel(config.model, config.trust_remote_code)
    start = time.perf_counter()
    if config.grade.grader != PROBE_GRADER:  # the probe needs no answers
        echo(str(stage_answer(run, config, models, progress=progress)))
    echo(str(stage_grade(run, config, models, progress=progress)))
    if calibrate_labels and not run.calibration.exists():  # a resumed run keeps its calibration
        calibration, config = stage_calibrate(
            run, config, calibrate_labels, models, sample=calibrate_sample, progress=progress
        )
        echo(str(calibration))
    echo(str(stage_select(run, config, models, progress=progress)))
    echo(str(stage_train(run, config, models, progress=progress)))
    if config.test:
        echo(str(stage_evaluate(run, config, models, progress=progress)))
    return update_report(
        run, seconds={"load": round(models.load_seconds, 3), "total": round(time.perf_counter() - start, 3)}
    )
