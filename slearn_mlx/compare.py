"""`slearn compare`: the paper's experiment in one command, over several seeds.

The same base model is fine-tuned with the same hyperparameters on the full set
(`all`) and on each self-learning strategy (`wrong`, `probe+budget0.6+anchors1+kl1`,
...), and each is evaluated on the held-out file. The base model answers and
grades the training set once (OUT/base), with its test accuracy; a strategy
that selects with the knowledge probe reads it once too (OUT/base-probe). Every
strategy and seed is an ordinary run directory (OUT/STRATEGY, or
OUT/STRATEGY/seedK with `seeds` > 1) seeded with those files, so each resumes
on its own and can be inspected or reused with the other commands.

A seed changes the data order, the replayed and anchor draws and LoRA's
initial weights. Time is what a user would pay for each strategy alone:
answer + grade + select + train for the paper's self-learning, probe
(+ calibration) + select + train with the probe, select + train for the full
set (model loading and evaluation aside). Retention is the adapted model's
accuracy on the training items the base model answered correctly, the same
items for every strategy.
"""

from __future__ import annotations

import math
import re
import shutil
import statistics
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable

from slearn_mlx import distributed
from slearn_mlx.config import RunConfig
from slearn_mlx.errors import ConfigError
from slearn_mlx.general import GeneralSummary, evaluate_general
from slearn_mlx.knowledge_map import knowledge_map, probe_with
from slearn_mlx.pipeline import (
    SharedModel,
    stage_answer,
    stage_calibrate,
    stage_evaluate,
    stage_grade,
    stage_select,
    stage_train,
)
from slearn_mlx.probe import PROBE_GRADER, Frame, Knowledge
from slearn_mlx.records import Grade
from slearn_mlx.report import write_reports
from slearn_mlx.runs import RunDir, load_run_items, lock_run, read_json, read_records
from slearn_mlx.select import SelectConfig
from slearn_mlx.training.batches import read_chat_rows
from slearn_mlx.training.config import TrainConfig

DEFAULT_STRATEGIES = ("all", "paper", "wrong+probe+rehearse1")
# Parts of a strategy's name after its first word, in the order names are written.
_SELECT_PARTS = {"uncertain": "uncertain", "replay": "replay", "max": "max_items", "rehearse": "rehearse",
                 "anchors": "anchors"}  # fmt: skip
_TRAIN_PARTS = {"kl": "kl", "epochs": "epochs", "lr": "learning_rate", "rank": "rank", "layers": "num_layers",
                "loraplus": "lora_plus"}  # fmt: skip
_FLAGS = {"own": "own", "rephrase": "rephrase", "split": "valid_split"}
_TRAIN_FLAGS = {"skip": "skip_learned", "late": "rehearse_last"}
_PART = re.compile(r"^([a-z]+?)(\d+(?:\.\d*)?(?:e-?\d+)?)?$")
# Files a strategy's run directory starts from: the base model's work, done once.
SHARED = ("config", "fingerprint", "items", "answers", "grades", "probe", "calibration", "calibration_answers")
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass(frozen=True)
class Strategy:
    """What a strategy trains on and how: its selection, the training settings it changes, and whether the
    knowledge probe (rather than answering and grading) finds what the model does not know."""

    select: SelectConfig
    train: dict = field(default_factory=dict)  # TrainConfig fields this strategy sets
    probe: bool = False

    @property
    def name(self) -> str:
        head, *rest = self.select.strategy.split("+")
        parts = [head] + (["probe"] if self.probe else []) + rest
        for part, key in _TRAIN_PARTS.items():
            if key in self.train:
                parts.append(f"{part}{self.train[key]:g}")
        parts += [part for part, key in _TRAIN_FLAGS.items() if self.train.get(key)]
        return "+".join(parts)


def parse_strategy(text: str, base: SelectConfig = SelectConfig()) -> Strategy:
    """'all', 'wrong' or 'budgetF', joined with '+' to parts: probe; uncertainF, replayF, own, rephrase, maxN,
    rehearseF, anchorsF, bare, split (selection); klW, epochsN, lrX, rankN, layersN, loraplusR, skip, late
    (training). E.g. 'wrong+replay0.2+own', 'budget0.6+probe+anchors1+kl1'."""
    text = text.strip()
    if text == "paper":  # SLearnLLM as published: the wrongly answered pairs alone, their references bare
        text = "wrong+bare"
    reset = {"all": False, "replay": 0.0, "uncertain": 0.0, "max_items": None, "own": False, "rephrase": False,
             "budget": None, "anchors": 0.0, "rehearse": 0.0}  # fmt: skip
    first, *parts = text.split("+")
    settings: dict = dict(reset)
    train: dict = {}
    probe = False
    if first == "all":
        settings["all"] = True
    elif first.startswith("budget") and _number(first[6:]) is not None:
        settings["budget"] = _number(first[6:])
    elif first != "wrong":
        raise ConfigError(
            f"unknown strategy {text!r}: use all, wrong or budgetF, e.g. wrong+replay0.2, budget0.6+probe"
        )
    train_types = {f.name: f.type for f in fields(TrainConfig)}
    for part in parts:
        match = _PART.match(part)
        name, value = match.groups() if match else (None, None)
        if value is None and name == "probe":
            probe = True
        elif value is None and name in _FLAGS:
            settings[_FLAGS[name]] = True
        elif value is None and name in _TRAIN_FLAGS:
            train[_TRAIN_FLAGS[name]] = True
        elif value is None and name == "bare":
            settings["lead"] = ""
        elif value is not None and name in _SELECT_PARTS:
            key = _SELECT_PARTS[name]
            settings[key] = int(float(value)) if key == "max_items" else float(value)
        elif value is not None and name in _TRAIN_PARTS:
            key = _TRAIN_PARTS[name]
            train[key] = int(float(value)) if train_types[key] == "int" else float(value)
        else:
            raise ConfigError(
                f"unknown part {part!r} in strategy {text!r}: use probe, replayN, own, rephrase, uncertainN, maxN, "
                "rehearseN, anchorsN, bare, split, klN, epochsN, lrN, rankN, layersN, loraplusN, skip or late"
            )
    if settings["all"] and (probe or any(settings[k] != v for k, v in reset.items() if k != "all")):
        raise ConfigError(f"strategy {text!r}: `all` trains on every pair; only bare and training parts go with it")
    select = replace(base, **settings)
    problems = select.problems() + replace(TrainConfig(), **train).problems()
    if problems:
        raise ConfigError(f"strategy {text!r}: {'; '.join(problems)}")
    return Strategy(select, train, probe)


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class SeedResult:
    seed: int
    n_trained: int
    seconds: dict[str, float]  # per stage the strategy pays for
    accuracy: float | None  # held out
    retention: float | None
    losses: list[dict]  # train/losses.jsonl rows
    general: float | None = None  # the adapted model on the general sets (--general)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def _seed_run(run: RunDir, source: RunDir, base: RunDir) -> None:
    """Start a strategy's run directory from the grades it selects by (`source`: the base model's answers and
    grades, or its probe) and the base model's evaluation, which every strategy shares."""
    lock_run(run)
    copies = [(getattr(source, name), getattr(run, name)) for name in SHARED]
    copies += [
        (base.eval_answers("base"), run.eval_answers("base")),
        (base.eval_grades("base"), run.eval_grades("base")),
    ]
    for origin, copy in copies:
        if origin.exists() and not copy.exists() and distributed.is_writer():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, copy)
    distributed.barrier()  # the copies are in place for every rank


def _seed_result(run: RunDir, base_report: dict, strategy: Strategy, seed: int, general: float | None) -> SeedResult:
    report = read_json(run.report)
    if strategy.select.all:
        paid = {"select": report, "train": report}
    else:
        paid = {"answer": base_report, "grade": base_report, "calibrate": base_report, "select": report,
                "train": report}  # fmt: skip
    spent = {stage: float(src["seconds"][stage]) for stage, src in paid.items() if stage in src.get("seconds", {})}
    return SeedResult(
        seed, int(report.get("n_selected", 0)), spent, report.get("adapted_accuracy"), report.get("retention"),
        read_chat_rows(run.losses), general,
    )  # fmt: skip


def run_compare(
    out: Path,
    config: RunConfig,
    strategies: list[Strategy],
    *,
    seeds: int = 1,
    echo: Callable[[str], None] = print,
    progress: bool = True,
    calibrate_labels: str | None = None,
    general: bool = False,
) -> dict:
    """Run every strategy on the same base with `seeds` seeds, evaluate each (with `general`, also on the general
    sets), and write OUT/report.{json,md,html}."""
    if not config.test:
        raise ConfigError("compare needs a held-out file: pass --test FILE.jsonl")
    if seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    out = Path(out)
    models = SharedModel(config.model, config.trust_remote_code)
    # The base model answers and its answers are graded (with the probe as the grader, by its answer grader): the
    # paper's strategies select from these grades, and every strategy is evaluated the same way.
    answering = replace(config, grade=config.grade.for_answers)
    base = RunDir(out / "base")
    echo(str(stage_answer(base, answering, models, progress=progress)))
    echo(str(stage_grade(base, answering, models, progress=progress)))
    if calibrate_labels and answering.grade.uses_judge and not base.calibration.exists():
        calibration, answering = stage_calibrate(base, answering, calibrate_labels, models, progress=progress)
        echo(str(calibration))
    echo(str(stage_evaluate(base, answering, models, progress=progress)))  # no adapters: the base model's accuracy
    base_general = evaluate_general(*models.get(), base) if general else None
    if base_general is not None:
        echo(str(base_general))
    base_report = read_json(base.report)
    # Retention is measured on the same items for every strategy: those the base model got right.
    base_grades = read_records(base.grades, Grade)
    known = [item for item in load_run_items(base) if base_grades[item.id].correct]

    probe_base, probing = RunDir(out / "base-probe"), None
    if any(s.probe for s in strategies):
        probing = _probe_base(probe_base, config, answering, models, echo, progress, calibrate_labels)

    results: list[tuple[Strategy, list[SeedResult]]] = []
    for strategy in strategies:
        source, source_config = (probe_base, probing) if strategy.probe else (base, answering)
        source_report = read_json(source.report)
        runs = []
        for k in range(seeds):
            run = RunDir(out / strategy.name / f"seed{k}" if seeds > 1 else out / strategy.name)
            _seed_run(run, source, base)
            seeded = replace(
                source_config,
                select=replace(strategy.select, seed=config.select.seed + k),
                train=replace(config.train, **strategy.train, seed=config.train.seed + k),
            )
            tag = f"[{strategy.name}{f' seed {k}' if seeds > 1 else ''}]"
            echo(f"{tag} {stage_select(run, seeded, models, progress=progress)}")
            echo(f"{tag} {stage_train(run, seeded, models, progress=progress)}")
            echo(f"{tag} {stage_evaluate(run, seeded, models, progress=progress, known_items=known)}")
            runs.append(_seed_result(run, source_report, strategy, k, _general(run, base_general, models, echo, tag)))
        results.append((strategy, runs))

    report = {
        "model": base_report.get("model"), "data": str(config.data), "test": str(config.test),
        "n_items": base_report.get("n_items"), "n_wrong": base_report.get("n_wrong"),
        "n_test": base_report.get("n_test"), "grader": answering.grade.grader,
        "base_accuracy": base_report.get("base_accuracy"), "seeds": seeds, "train": asdict(config.train),
        "strategies": summarize(results, base_general.base.overall if base_general else None),
    }  # fmt: skip
    if base_general is not None:
        report["general_base"] = base_general.base.per_set | {"overall": base_general.base.overall}
    mapped = next((s for s in strategies if s.probe and not s.select.all), None)
    if mapped is not None:
        report["knowledge_map"] = _knowledge_maps(probe_base, probing, mapped, seeds, out, models, progress)
    write_reports(out, report)
    return report


def _probe_base(
    run: RunDir,
    config: RunConfig,
    answering: RunConfig,
    models: SharedModel,
    echo,
    progress: bool,
    calibrate_labels: str | None,
) -> RunConfig:
    """The knowledge probe over the training items, once for every strategy that selects with it (OUT/base-probe);
    returns the configuration it ran with (its threshold calibrated when asked)."""
    threshold = config.grade.threshold if config.grade.grader == PROBE_GRADER else None  # a judge's is not the probe's
    probe_grade = replace(config.grade, grader=PROBE_GRADER, answer_grader=answering.grade.grader, threshold=threshold)
    probing = replace(config, grade=probe_grade)
    echo(f"[probe] {stage_grade(run, probing, models, progress=progress)}")
    if calibrate_labels and not run.calibration.exists():
        calibration, probing = stage_calibrate(run, probing, calibrate_labels, models, progress=progress)
        echo(f"[probe] {calibration}")
    return probing


def _general(run: RunDir, base: GeneralSummary | None, models: SharedModel, echo, tag: str) -> float | None:
    """The adapted model's general score (with --general), the base model's shared from the base run."""
    if base is None:
        return None
    kept = evaluate_general(*models.get(), run, base.base)
    echo(f"{tag} {kept}")
    return kept.adapted.overall if kept.adapted is not None else None


def _knowledge_maps(probe_base: RunDir, probing: RunConfig, strategy: Strategy, seeds: int, out: Path,
                    models: SharedModel, progress: bool) -> dict:  # fmt: skip
    """The knowledge map of the training items by the base model's probe (the verdict), and what moved: the base model
    and `strategy`'s adapted model (its first seed) both read in the chat frame, where the run trained."""
    items = load_run_items(probe_base)
    cut, grade = probing.grade.cut, probing.grade
    run = RunDir(out / strategy.name / "seed0" if seeds > 1 else out / strategy.name)
    chat = Frame.for_items("chat", items, grade.probe_lead)
    read = lambda path, adapters=None: probe_with(*models.get(), items, path, chat, probing.answer,  # noqa: E731
                                                  grade.batch_size, adapters, progress)  # fmt: skip
    verdict = read_records(probe_base.probe, Knowledge)
    before = verdict if grade.probe_frame == "chat" else read(probe_base.chat_probe)
    adapted = read(run.adapted_probe, run.adapters)
    base = knowledge_map(items, before, cut)
    return {
        "strategy": strategy.name, "frame": "chat", "base": base.to_json(),
        "adapted": knowledge_map(items, adapted, cut).to_json(),
        "verdict": {"frame": grade.probe_frame, **knowledge_map(items, verdict, cut).to_json()},
        "moved": {item.id: adapted[item.id].p_reference for item in base.least_known if item.id in adapted},
    }  # fmt: skip


def summarize(results: list[tuple[Strategy, list[SeedResult]]], general_base: float | None = None) -> list[dict]:
    """Per strategy: every seed's figures, their means and spread, and the paired difference to `all`; with the
    base model's general score, the general skills each seed kept and the change from the base over seeds."""
    full = next((runs for strategy, runs in results if strategy.select.all and not strategy.train), None)
    if full is None:
        full = next((runs for strategy, runs in results if strategy.select.all), None)
    out = []
    for strategy, runs in results:
        row = {
            "strategy": strategy.name,
            "n_trained": round(statistics.mean(r.n_trained for r in runs)),
            "seconds": {k: round(statistics.mean(r.seconds.get(k, 0.0) for r in runs), 3) for k in runs[0].seconds},
            "total_seconds": round(statistics.mean(r.total_seconds for r in runs), 3),
            "accuracy": _mean([r.accuracy for r in runs]),
            "retention": _mean([r.retention for r in runs]),
            "spread": {
                "accuracy": _sd([r.accuracy for r in runs]),
                "retention": _sd([r.retention for r in runs]),
                "total_seconds": _sd([r.total_seconds for r in runs]),
            },
            "seeds": [asdict(r) | {"total_seconds": round(r.total_seconds, 3)} for r in runs],
            "losses": runs[0].losses,
        }
        if general_base is not None:
            row["general"] = _mean([r.general for r in runs])
            row["spread"]["general"] = _sd([r.general for r in runs])
            row["general_change"] = paired([r.general for r in runs], [general_base] * len(runs))
        if full is not None:
            row["vs_full"] = paired([r.accuracy for r in runs], [r.accuracy for r in full[: len(runs)]])
            row["time_ratios"] = [r.total_seconds / f.total_seconds for r, f in zip(runs, full) if f.total_seconds]
        out.append(row)
    return out


def paired(values: list[float | None], reference: list[float | None]) -> dict | None:
    """Mean of the per-seed differences and its 95% interval (Student's t over the seeds)."""
    diffs = [v - r for v, r in zip(values, reference) if v is not None and r is not None]
    if not diffs:
        return None
    mean = statistics.mean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    half = T_975.get(len(diffs) - 1, 1.96) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.mean(present) if present else None


def _sd(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.stdev(present) if len(present) > 1 else None
