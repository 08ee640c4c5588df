"""`slearn plan`: before a run, what the model knows of a QA set and what adapting it will cost.

The knowledge test is the run's own probe (with an output directory, the very one `slearn run` then reuses). The cost
of each way to train is its steps, counted as the trainer counts them from the pairs each selection writes, times
the seconds a step takes here, timed on a few real training steps of the set's own pairs, plus the setup the trainer
does once per run (the frozen blocks' pass over the pairs, the first compilation).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from slearn_mlx.config import RunConfig
from slearn_mlx.errors import ConfigError
from slearn_mlx.models.load import resolve_model
from slearn_mlx.pipeline import SharedModel, stage_probe
from slearn_mlx.probe import PROBE_GRADER, Knowledge
from slearn_mlx.records import Grade
from slearn_mlx.runs import RunDir, load_run_items, read_records, write_json_atomic
from slearn_mlx.select import SelectConfig, select_unknown
from slearn_mlx.training.batches import pair_epochs, planned_steps, read_chat_rows
from slearn_mlx.training.loop import TrainHooks, train_adapters

TIMED_STEPS = 6  # steps timed after the first (which compiles); more move the forecast by a few percent at most
BUDGETS = (0.25, 0.5)


@dataclass(frozen=True)
class Way:
    """One way to train the set, as forecast."""

    name: str  # "full fine-tuning", "default", "budget 0.5"
    n_full: int  # pairs trained in every epoch
    n_rehearsed: int  # pairs trained in one epoch
    steps: int
    seconds: float  # end to end: the knowledge test where the way needs one, selection and training
    vs_full: float = 1.0


@dataclass(frozen=True)
class Plan:
    n_items: int
    n_known: int  # known by the probe's verdict
    n_unread: int  # left unread: none of the items read first was known
    known_band: tuple[float, float]  # 95% band of the share known
    threshold: float
    probe_seconds: float
    setup_seconds: float  # the trainer's once-per-run work, for the whole set
    step_seconds: float
    ways: list[Way]
    command: str
    why: str
    seconds: float  # what the plan took, model loading included

    def to_json(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        low, high = self.known_band
        unread = f", {self.n_unread} left unread (none of those read first was known)" if self.n_unread else ""
        lines = [
            f"known: {self.n_known} of {self.n_items} ({100 * self.n_known / self.n_items:.0f}%; 95% band "
            f"{100 * low:.0f}-{100 * high:.0f}%) by the probe, P(reference) >= {self.threshold:g}{unread}; "
            f"read in {self.probe_seconds:.1f} s",
            f"a training step takes {self.step_seconds:.2f} s here (timed on {TIMED_STEPS} steps of these pairs), "
            f"plus {self.setup_seconds:.1f} s of setup",
            "",
            f"{'':18} {'pairs (full + once)':>20} {'steps':>6} {'minutes':>8} {'vs full':>8}",
        ]
        for way in self.ways:
            pairs = f"{way.n_full} + {way.n_rehearsed}"
            lines.append(f"{way.name:18} {pairs:>20} {way.steps:>6} {way.seconds / 60:>8.1f} {way.vs_full:>7.2f}x")
        lines += [
            "",
            'held-out accuracy: not forecast (it depends on the test set; BENCHMARKS.md, "Choosing what to train", '
            "measures the default against full fine-tuning on five sets)",
            f"recommended: {self.command}",
            f"  {self.why}",
        ]
        return "\n".join(lines)


def known_band(knowledge: list[Knowledge], n_items: int, threshold: float) -> tuple[float, float]:
    """A 95% band of the share of the set the model knows. Read items count as known with probability P(reference)
    (a sum of Bernoulli draws: its mean and spread); with items left unread, the share among those read is a sample
    of the set (Wilson's interval)."""
    if len(knowledge) < n_items:
        n, k = len(knowledge), sum(item.p_reference >= threshold for item in knowledge)
        if n == 0:
            return 0.0, 1.0
        z, share = 1.96, k / n
        centre = (share + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)
    p = [item.p_reference for item in knowledge]
    mean, spread = sum(p) / n_items, math.sqrt(sum(x * (1 - x) for x in p)) / n_items
    return max(0.0, mean - 1.96 * spread), min(1.0, mean + 1.96 * spread)


def time_steps(config: RunConfig, train_dir: Path, steps: int = TIMED_STEPS) -> tuple[float, float]:
    """(setup seconds, seconds per step) of training the pairs of `train_dir`: a few real steps, timed, their
    adapters thrown away. The model is loaded for this alone, since training changes it."""
    model, tokenizer = SharedModel(config.model, config.trust_remote_code).get()
    marks: list[float] = []

    def before_step(taken: int) -> bool:
        marks.append(time.perf_counter())
        return taken > steps

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slearn-plan-") as tmp:
        train_config = replace(config.train, checkpoint_every=10**9)
        train_adapters(model, tokenizer, train_dir, Path(tmp) / "adapters", train_config, progress=False,
                       hooks=TrainHooks(before_step=before_step))  # fmt: skip
    intervals = [b - a for a, b in zip(marks, marks[1:])]
    if len(intervals) < 2:  # fewer pairs than a couple of batches: the whole training was timed
        return 0.0, (time.perf_counter() - start) / max(len(intervals), 1)
    per_step = statistics.median(intervals[1:])
    setup = (marks[0] - start) + max(intervals[0] - per_step, 0.0)  # the first step compiles
    return setup, per_step


def way_of(name: str, select: SelectConfig, config: RunConfig, run: RunDir, grades: dict[str, Grade],
           tmp: Path) -> tuple[str, Path, int, int, int]:  # fmt: skip
    """Write the pairs `select` picks to a directory of their own: (name, directory, pairs in every epoch, pairs
    once, steps)."""
    train_dir = tmp / name.replace(" ", "-")
    items = load_run_items(run)
    select_unknown(items, grades, train_dir, select, config.answer, config.grade.cut)
    rows = read_chat_rows(train_dir / "train.jsonl")
    schedule = pair_epochs(rows, config.train.epochs, config.train.seed, config.train.rehearse_last)
    once = sum(len(epochs) < config.train.epochs for epochs in schedule)
    batch_size = max(1, min(config.train.batch_size, len(rows)))
    steps = planned_steps(schedule, config.train.epochs, batch_size) if rows else 0
    return name, train_dir, len(rows) - once, once, steps


def make_plan(run: RunDir, config: RunConfig, *, command: str, budgets=BUDGETS, progress: bool = True) -> Plan:
    """Read what the model knows (the probe, into `run`), forecast each way to train, and recommend one."""
    if config.grade.grader != PROBE_GRADER:
        raise ConfigError(f"slearn plan reads what the model knows with the probe, not --grader {config.grade.grader}")
    start = time.perf_counter()
    probe = stage_probe(run, config, SharedModel(config.model, config.trust_remote_code), progress=progress)
    items = load_run_items(run)
    knowledge = read_records(run.probe, Knowledge)
    grades = read_records(run.grades, Grade)
    with tempfile.TemporaryDirectory(prefix="slearn-plan-") as tmp:
        selections = [("full fine-tuning", replace(config.select, all=True, budget=None)), ("default", config.select)]
        selections += [(f"budget {b:g}", replace(config.select, budget=b)) for b in budgets]
        ways = [way_of(name, select, config, run, grades, Path(tmp)) for name, select in selections]
        setup, per_step = time_steps(config, ways[0][1])
    full_rows = ways[0][2] + ways[0][3]
    forecast = []
    for name, _, n_full, n_once, steps in ways:
        probing = name != "full fine-tuning"
        seconds = (probe.seconds if probing else 0.0) + setup * (n_full + n_once) / full_rows + steps * per_step
        forecast.append(Way(name, n_full, n_once, steps, seconds))
    full = forecast[0].seconds
    forecast = [replace(way, vs_full=way.seconds / full) for way in forecast]
    default = forecast[1]
    if default.vs_full >= 0.95:
        why = (f"the model knows little of this set ({probe.n_known} of {probe.n_items}): the default trains nearly "
               f"all of it, at {default.vs_full:.2f}x of full fine-tuning's time, and keeps what it knew")  # fmt: skip
    else:
        why = (f"the default trains the {default.n_full} pairs the model does not know in every epoch and rehearses "
               f"the {default.n_rehearsed} it knows once: {default.vs_full:.2f}x of full fine-tuning's time, measured "
               "within a few points of its accuracy; a budget saves more and loses accuracy where the model does not "
               "know the rest")  # fmt: skip
    return Plan(
        len(items), probe.n_known, probe.n_unread, known_band(list(knowledge.values()), len(items), probe.threshold),
        probe.threshold, probe.seconds, setup, per_step, forecast, command, why, time.perf_counter() - start,
    )  # fmt: skip


def save_plan(run: RunDir, plan: Plan, config: RunConfig) -> Path:
    path = run.root / "plan.json"
    write_json_atomic(path, plan.to_json() | {"model": resolve_model(config.model), "data": config.data})
    return path
