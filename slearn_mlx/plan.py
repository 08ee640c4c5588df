"""`slearn plan`: before a run, what the model knows of a QA set and what adapting it will cost.

The knowledge test is the run's own probe (with an output directory, the very one `slearn run` then reuses). The cost
of each way to train is the batches the trainer will run on the pairs its selection writes (their order and padding
as the trainer makes them), priced by a cost fitted on a few real training steps of the set's own pairs here:
seconds per padded token, a compilation per new batch width, and the setup done once per run.
"""

from __future__ import annotations

import math
import random
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from slearn_mlx.config import RunConfig
from slearn_mlx.errors import ConfigError
from slearn_mlx.models.load import resolve_model
from slearn_mlx.pipeline import SharedModel, stage_probe
from slearn_mlx.probe import PROBE_GRADER, Knowledge
from slearn_mlx.records import Grade
from slearn_mlx.runs import RunDir, load_run_items, read_records, write_json_atomic, write_jsonl_atomic
from slearn_mlx.select import SelectConfig, select_unknown
from slearn_mlx.training.batches import batch_order, batch_width, make_batch, pair_epochs, read_chat_rows
from slearn_mlx.training.config import TrainConfig
from slearn_mlx.training.loop import TrainData, TrainHooks, train_adapters

# Timed: a sample of the pairs (the setup grows with them), at least TIMED_STEPS steps, and until 3 steps after the first
# WARM_UP (slower: the allocator's first rounds) reuse a compiled width.
# 48 pairs and 8-16 steps: 0.09x of the default run on world, its forecasts no worse than 96 pairs' and 10-24 steps
# measured in the same sitting (BENCHMARKS.md, "slearn plan").
TIMED_PAIRS, TIMED_STEPS, MAX_TIMED_STEPS, WARM_UP = 48, 8, 16, 3
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
class StepCost:
    """What training costs here, fitted on a few timed steps: a step's seconds grow with its batch's padded tokens,
    and a batch of a width not seen before compiles the step again."""

    setup: float  # seconds per token of the pairs, once per run: reading them, the frozen blocks' pass
    per_token: float  # seconds per padded token of a training batch
    per_shape: float  # seconds to compile the step for a new batch width

    def seconds(self, shapes: list[tuple[int, int]], valid_tokens: int, epochs: int, pair_tokens: int) -> float:
        """A training of these batches ((rows, width) each) on pairs of `pair_tokens` tokens in all: its setup, its
        steps, the compilations of its widths, and the validation pass each epoch (a forward pass, about a third of
        a step)."""
        tokens = sum(rows * width for rows, width in shapes)
        n_shapes = len({width for _, width in shapes})
        steps = self.per_token * (tokens + epochs * valid_tokens / 3)
        return self.setup * pair_tokens + steps + self.per_shape * n_shapes


@dataclass(frozen=True)
class Plan:
    n_items: int
    n_known: int  # known by the probe's verdict
    n_unread: int  # left unread: none of the items read first was known
    # 95% band: of the share known where items were left unread (the read ones are a sample); else of the share of
    # references the model would write itself, P(reference) summed
    known_band: tuple[float, float]
    threshold: float
    probe_seconds: float
    cost: StepCost  # what training costs here, timed
    ways: list[Way]
    command: str
    why: str
    seconds: float  # what the plan took, model loading included

    def to_json(self) -> dict:
        return asdict(self) | {"accuracy": self.accuracy_line}

    @property
    def accuracy_line(self) -> str:
        """What can be said of held-out accuracy before training: where nothing is known, the default trains what
        full fine-tuning trains; otherwise only the gaps measured on other sets."""
        if self.n_known == 0:
            return ("held-out accuracy: the default's is full fine-tuning's (nothing is known: it trains the same "
                    "pairs, the same way); its level depends on the test set and is not forecast")  # fmt: skip
        return ("held-out accuracy: not forecast (it depends on the test set); the default measured within 1.3 points "
                "of full fine-tuning on average on five sets, every seed within 3 (BENCHMARKS.md, \"The default over "
                "five sets\")")  # fmt: skip

    def __str__(self) -> str:
        low, high = self.known_band
        if self.n_unread:
            read = self.n_items - self.n_unread
            known = (f"known: {self.n_known} of the {read} items read first (P(reference) >= {self.threshold:g}), so "
                     f"the other {self.n_unread} were left unread: the set's share known is {100 * low:.0f}-"
                     f"{100 * high:.0f}% (95%, Wilson)")  # fmt: skip
        else:
            known = (f"known: {self.n_known} of {self.n_items} ({100 * self.n_known / self.n_items:.0f}%) by the probe, "
                     f"P(reference) >= {self.threshold:g}; it would write {100 * (low + high) / 2:.0f}% of the references "
                     f"itself (95% band {100 * low:.0f}-{100 * high:.0f}%, from P(reference))")  # fmt: skip
        lines = [
            f"{known}; read in {self.probe_seconds:.1f} s",
            f"training here (timed on a few steps of these pairs): {1000 * self.cost.per_token:.2f} s per 1,000 "
            f"batch tokens, {self.cost.per_shape:.1f} s to compile each batch width, {1000 * self.cost.setup:.2f} s per "
            "1,000 tokens of setup",
            "",
            f"{'':18} {'pairs (full + once)':>20} {'steps':>6} {'minutes':>8} {'vs full':>8}",
        ]
        for way in self.ways:
            pairs = f"{way.n_full} + {way.n_rehearsed}"
            lines.append(f"{way.name:18} {pairs:>20} {way.steps:>6} {way.seconds / 60:>8.1f} {way.vs_full:>7.2f}x")
        lines += [
            "",
            self.accuracy_line,
            f"recommended: {self.command}",
            f"  {self.why}",
        ]
        return "\n".join(lines)


def known_band(knowledge: list[Knowledge], n_items: int, threshold: float) -> tuple[float, float]:
    """A 95% band of what the model knows of the set. With items left unread, the share called known among those read
    is a sample of the set's (Wilson's interval). With every item read, the verdict's count is exact; the band is then
    of the share of references the model would write itself in the probe's frame: each item with probability
    P(reference), a sum of Bernoulli draws (its mean and spread)."""
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


def planned_shapes(data: TrainData, config: TrainConfig) -> list[tuple[int, int]]:
    """(rows, width) of every batch the trainer will run on `data`, in its order (its seeds, its padding)."""
    schedule = pair_epochs(data.rows, config.epochs, config.seed, config.rehearse_last)
    batch_size = min(config.batch_size, len(data.rows))
    shapes = []
    for epoch in range(1, config.epochs + 1):
        pool = [i for i in range(len(data.rows)) if epoch in schedule[i]]
        for indices in batch_order(data.train_set, batch_size, np.random.default_rng([config.seed, epoch]), pool):
            shapes.append((len(indices), _width(data.train_set, indices, config.max_seq_length)))
    return shapes


def _width(dataset, indices: list[int], max_seq_length: int) -> int:
    return batch_width([min(len(dataset[i][0]), max_seq_length) for i in indices], max_seq_length)


def pair_tokens(data: TrainData) -> int:
    """The tokens of the pairs themselves, unpadded: what the trainer's setup reads."""
    return sum(len(data.train_set[i][0]) for i in range(len(data.train_set)))


def valid_tokens(data: TrainData, config: TrainConfig) -> int:
    if data.valid_set is None:
        return 0
    batches = batch_order(data.valid_set, min(config.batch_size, len(data.rows)))
    return sum(len(b) * _width(data.valid_set, b, config.max_seq_length) for b in batches)


def time_steps(models: SharedModel, config: RunConfig, train_dir: Path) -> StepCost:
    """Train a seeded sample of the pairs of `train_dir` for a few steps, timed (their adapters thrown away), and fit
    the cost: the setup per token of the pairs, seconds per batch token on the steps after the first few whose width
    was compiled already, the compilation on the steps of a new width. Training changes the model: nothing may use
    it after."""
    model, tokenizer = models.get()
    rows = read_chat_rows(train_dir / "train.jsonl")
    sample = [rows[i] for i in sorted(random.Random(0).sample(range(len(rows)), min(TIMED_PAIRS, len(rows))))]
    marks: list[float] = []
    shapes: list[tuple[int, int]] = []

    def batch(dataset, indices, max_seq_length):
        made = make_batch(dataset, indices, max_seq_length)
        shapes.append((len(indices), made.tokens.shape[1]))
        return made

    def before_step(taken: int) -> bool:
        marks.append(time.perf_counter())
        repeats = len(shapes[WARM_UP:]) - len({w for _, w in shapes[WARM_UP:]})
        return taken >= MAX_TIMED_STEPS or (taken >= TIMED_STEPS and repeats >= 3)

    with tempfile.TemporaryDirectory(prefix="slearn-plan-") as tmp:
        write_jsonl_atomic(Path(tmp) / "train.jsonl", ({"messages": row["messages"]} for row in sample))
        train_config = replace(config.train, checkpoint_every=10**9)
        data = TrainData.read(Path(tmp), tokenizer, train_config)
        start = time.perf_counter()
        train_adapters(model, tokenizer, Path(tmp), Path(tmp) / "adapters", train_config, progress=False,
                       hooks=TrainHooks(make_batch=batch, before_step=before_step))  # fmt: skip
    steps = [(b - a, rows * width, width) for (a, b), (rows, width) in zip(zip(marks, marks[1:]), shapes)]
    seen: set[int] = set()
    again, first = [], []
    for i, (seconds, tokens, width) in enumerate(steps):
        if width not in seen:
            first.append((seconds, tokens))
        elif i >= WARM_UP:
            again.append((seconds, tokens))
        seen.add(width)
    timed = again or first  # every step a new width: compilation is counted in the rate
    per_token = sum(t for t, _ in timed) / sum(n for _, n in timed)
    per_shape = statistics.mean(max(t - per_token * n, 0.0) for t, n in first) if again and first else 0.0
    return StepCost((marks[0] - start) / pair_tokens(data) if marks else 0.0, per_token, per_shape)


def way_of(name: str, select: SelectConfig, config: RunConfig, run: RunDir, grades: dict[str, Grade], tmp: Path,
           tokenizer) -> tuple[str, Path, int, int, TrainData | None]:  # fmt: skip
    """Write the pairs `select` picks to a directory of their own: (name, directory, pairs in every epoch, pairs
    once, the pairs as the trainer reads them)."""
    train_dir = tmp / name.replace(" ", "-")
    select_unknown(load_run_items(run), grades, train_dir, select, config.answer, config.grade.cut)
    data = TrainData.read(train_dir, tokenizer, config.train)
    if data is None:
        return name, train_dir, 0, 0, None
    schedule = pair_epochs(data.rows, config.train.epochs, config.train.seed, config.train.rehearse_last)
    once = sum(len(epochs) < config.train.epochs for epochs in schedule)
    return name, train_dir, len(data.rows) - once, once, data


def make_plan(run: RunDir, config: RunConfig, *, command: str, budgets=BUDGETS, progress: bool = True) -> Plan:
    """Read what the model knows (the probe, into `run`), forecast each way to train, and recommend one."""
    if config.grade.grader != PROBE_GRADER:
        raise ConfigError(f"slearn plan reads what the model knows with the probe, not --grader {config.grade.grader}")
    start = time.perf_counter()
    models = SharedModel(config.model, config.trust_remote_code)
    probe = stage_probe(run, config, models, progress=progress)
    items, knowledge, grades = load_run_items(run), read_records(run.probe, Knowledge), read_records(run.grades, Grade)
    selections = [("full fine-tuning", replace(config.select, all=True, budget=None)), ("default", config.select)]
    selections += [(f"budget {b:g}", replace(config.select, budget=b)) for b in budgets]
    with tempfile.TemporaryDirectory(prefix="slearn-plan-") as tmp:
        ways = [way_of(name, select, config, run, grades, Path(tmp), models.get()[1]) for name, select in selections]
        cost = time_steps(models, config, ways[0][1])
    forecast = []
    for name, _, n_full, n_once, data in ways:
        shapes, seconds = [], 0.0
        if data is not None:
            shapes = planned_shapes(data, config.train)
            seconds = cost.seconds(shapes, valid_tokens(data, config.train), config.train.epochs, pair_tokens(data))
        probing = name != "full fine-tuning"
        forecast.append(Way(name, n_full, n_once, len(shapes), seconds + (probe.seconds if probing else 0.0)))
    full = forecast[0].seconds
    forecast = [replace(way, vs_full=way.seconds / full) for way in forecast]
    return Plan(
        len(items), probe.n_known, probe.n_unread, known_band(list(knowledge.values()), len(items), probe.threshold),
        probe.threshold, probe.seconds, cost, forecast, command, recommendation(probe, forecast[1]),
        time.perf_counter() - start,
    )  # fmt: skip


def recommendation(probe, default: Way) -> str:
    if default.vs_full >= 0.95:
        return (f"the model knows little of this set ({probe.n_known} of {probe.n_items}): the default trains nearly "
                f"all of it, at {default.vs_full:.2f}x of full fine-tuning's time, and keeps what it knew")  # fmt: skip
    return (f"the default trains the {default.n_full} pairs the model does not know in every epoch and rehearses the "
            f"{default.n_rehearsed} it knows once: {default.vs_full:.2f}x of full fine-tuning's time, measured within "
            "a few points of its accuracy; a budget saves more and loses accuracy where the model does not know the "
            "rest")  # fmt: skip


def save_plan(run: RunDir, plan: Plan, config: RunConfig) -> Path:
    path = run.root / "plan.json"
    write_json_atomic(path, plan.to_json() | {"model": resolve_model(config.model), "data": config.data})
    return path
