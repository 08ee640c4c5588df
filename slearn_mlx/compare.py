"""`slearn compare`: the paper's experiment in one command.

The same base model is fine-tuned with the same hyperparameters on the full set
(`all`) and on each self-learning selection (`wrong`, `wrong+replay0.2`, ...), and
each is evaluated on the held-out file. The base model answers and grades the
training set once, in OUT/base, with its test accuracy; every strategy is an
ordinary run directory OUT/STRATEGY seeded with those files, so each resumes on
its own and can be inspected or reused with the other commands.

Time is what a user would pay for each strategy alone: answer + grade + select +
train for self-learning, select + train for the full set (model loading and
evaluation aside). Retention is the adapted model's accuracy on the training items
the base model already answered correctly.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

from slearn_mlx.config import RunConfig
from slearn_mlx.pipeline import SharedModel, stage_answer, stage_evaluate, stage_grade, stage_select, stage_train
from slearn_mlx.report import write_reports
from slearn_mlx.runs import RunDir, lock_run, read_json
from slearn_mlx.select import SelectConfig
from slearn_mlx.train import read_chat_rows

DEFAULT_STRATEGIES = ("all", "wrong", "wrong+replay0.2")
_PART = re.compile(r"^(uncertain|replay|max)(\d+(?:\.\d*)?)$|^(own|rephrase)$")
# Files a strategy's run directory starts from: the base model's work, done once.
SHARED = ("config.json", "fingerprint.json", "items.jsonl", "answers.jsonl", "grades.jsonl", "calibration.json",
          "eval/base_answers.jsonl", "eval/base_grades.jsonl")  # fmt: skip


def parse_strategy(text: str, base: SelectConfig = SelectConfig()) -> SelectConfig:
    """'all', 'wrong', or 'wrong' joined with '+' to uncertainN, replayN, own, rephrase, maxN
    ('wrong+replay0.2+own+rephrase')."""
    text = text.strip()
    settings: dict = {"all": False, "replay": 0.0, "uncertain": 0.0, "max_items": None, "own": False, "rephrase": False}
    if text == "all":
        return replace(base, **settings | {"all": True})
    first, *parts = text.split("+")
    if first != "wrong":
        raise ValueError(
            f"unknown strategy {text!r}: use all, wrong, or wrong+replay0.2, wrong+uncertain0.1, wrong+max100"
        )
    for part in parts:
        match = _PART.match(part)
        if not match:
            raise ValueError(
                f"unknown part {part!r} in strategy {text!r}: use replayN, own, rephrase, uncertainN or maxN"
            )
        name, value, flag = match.groups()
        if flag:
            settings[flag] = True
        elif name == "max":
            settings["max_items"] = int(float(value))
        else:
            settings[name] = float(value)
    config = replace(base, **settings)
    problems = config.problems()
    if problems:
        raise ValueError(f"strategy {text!r}: {'; '.join(problems)}")
    return config


@dataclass(frozen=True)
class StrategyResult:
    strategy: str
    n_trained: int
    seconds: dict[str, float]  # per stage the strategy pays for
    accuracy: float | None  # held out
    retention: float | None
    losses: list[dict]  # train/losses.jsonl rows

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


def _seed(run: RunDir, base: RunDir) -> None:
    """Start a strategy's run directory from the base model's answers and grades."""
    lock_run(run)
    for name in SHARED:
        source, target = base.root / name, run.root / name
        if source.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def _result(run: RunDir, base_report: dict, select: SelectConfig) -> StrategyResult:
    report = read_json(run.report)
    paid = ["select", "train"] if select.all else ["answer", "grade", "select", "train"]
    spent = {
        stage: float((base_report if stage in ("answer", "grade") else report)["seconds"].get(stage, 0.0))
        for stage in paid
    }
    return StrategyResult(
        select.strategy, int(report.get("n_selected", 0)), spent, report.get("adapted_accuracy"),
        report.get("retention"), read_chat_rows(run.train_dir / "losses.jsonl"),
    )  # fmt: skip


def run_compare(
    out: Path,
    config: RunConfig,
    strategies: list[SelectConfig],
    *,
    echo: Callable[[str], None] = print,
    progress: bool = True,
) -> dict:
    """Run every strategy on the same base, evaluate each, and write OUT/report.{json,md,html}."""
    if not config.test:
        raise ValueError("compare needs a held-out file: pass --test FILE.jsonl")
    out = Path(out)
    models = SharedModel(config.model, config.trust_remote_code)
    base = RunDir(out / "base")
    echo(str(stage_answer(base, config, models, progress=progress)))
    echo(str(stage_grade(base, config, models, progress=progress)))
    echo(str(stage_evaluate(base, config, models, progress=progress)))  # no adapters: the base model's accuracy
    base_report = read_json(base.report)

    results = []
    for select in strategies:
        run = RunDir(out / select.strategy)
        _seed(run, base)
        strategy_config = replace(config, select=select)
        echo(f"[{select.strategy}] {stage_select(run, strategy_config, models, progress=progress)}")
        echo(f"[{select.strategy}] {stage_train(run, strategy_config, models, progress=progress)}")
        echo(f"[{select.strategy}] {stage_evaluate(run, strategy_config, models, progress=progress)}")
        results.append(_result(run, base_report, select))

    report = {
        "model": base_report.get("model"),
        "data": str(config.data),
        "test": str(config.test),
        "n_items": base_report.get("n_items"),
        "n_wrong": base_report.get("n_wrong"),
        "n_test": base_report.get("n_test"),
        "grader": config.grade.grader,
        "base_accuracy": base_report.get("base_accuracy"),
        "train": asdict(config.train),
        "strategies": [_to_json(r) for r in results],
    }
    write_reports(out, report)
    return report


def _to_json(result: StrategyResult) -> dict:
    return {
        "strategy": result.strategy,
        "n_trained": result.n_trained,
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "total_seconds": round(result.total_seconds, 3),
        "accuracy": result.accuracy,
        "retention": result.retention,
        "losses": result.losses,
    }
