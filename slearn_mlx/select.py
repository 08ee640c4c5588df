"""Stage 3: keep the pairs the model got wrong, as mlx-lm training files.

Strategies: the wrongly answered pairs (the default); with `replay`, a share of
the correctly answered ones mixed back in so training does not erase them; with
`uncertain`, judge or probe verdicts within that distance of the threshold
count as unknown too; `max_items` caps the selection, hardest (lowest score)
first; `budget` trains on a share of the whole set ranked by score, from the
surest unknown up, so weakly known items join once the wrong ones are taken
and only the surest known are skipped; and `all` trains on every pair, the
full fine-tuning baseline.

The files use mlx-lm's chat format (`{"messages": [...]}`), so `mlx_lm.lora
--data RUN/train` reads them as they are. The user turn is exactly the prompt
the model answered, the assistant turn the reference answer.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from slearn_mlx.answer import AnswerConfig, answer_items, question_text
from slearn_mlx.errors import NotDone
from slearn_mlx.grade import answer_letter, contains_reference, normalize
from slearn_mlx.options import option
from slearn_mlx.prompts import PROBE_LEAD, REPHRASE_TEMPLATE
from slearn_mlx.records import Answer, Grade, QAItem
from slearn_mlx.runs import ANCHORS_FILE, TRAIN_FILE, VALID_FILE, read_records, write_jsonl_atomic


@dataclass
class SelectConfig:
    valid_fraction: float = option(0.1, "Share of the selected pairs copied to valid.jsonl to watch the loss.")
    valid_split: bool = option(
        False, "Hold the validation pairs out of training (a true split) instead of copying them."
    )
    seed: int = option(0, "Picks the validation sample and the replayed pairs.", flag=False)
    replay: float = option(0.0, "Share of the correctly answered pairs mixed back in.")
    uncertain: float = option(0.0, "Judge or probe verdicts this close above the threshold count as unknown.")
    max_items: int | None = option(None, "At most this many unknown pairs, hardest first.", shown="no cap")
    budget: float | None = option(
        None, "Train on this share of the set fully, least known first (wrong answers, then the weakest right ones).",
        shown="none: every pair graded wrong",
    )  # fmt: skip
    all: bool = option(False, "Train on every pair: the full fine-tuning baseline.")
    own: bool = option(
        False, "Replayed pairs teach the model's own correct answer instead of the reference.", flag="--replay-own"
    )
    rephrase: bool = option(
        False, "The model rewrites each unknown pair's reference in its own words first; kept where it keeps the "
        "reference.",
    )  # fmt: skip
    rehearse: float = option(
        1.0, "Share of the known pairs left out, least known first, that train once (in one epoch), so the new "
        "does not overwrite them.",
    )  # fmt: skip
    anchors: float = option(
        0.0, "Share of the known pairs left out of training that --kl holds in place (train/anchors.jsonl)."
    )
    lead: str = option(PROBE_LEAD, 'What every taught answer starts with, before the reference ("" teaches it bare).')

    def problems(self) -> list[str]:
        out = []
        for name in ("valid_fraction", "replay", "anchors", "rehearse"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                out.append(f"select.{name} must be between 0 and 1")
        if not 0.0 <= self.uncertain <= 1.0:
            out.append("select.uncertain must be between 0 and 1")
        if self.max_items is not None and self.max_items < 1:
            out.append("select.max_items must be at least 1")
        if self.budget is not None and not 0.0 <= self.budget <= 1.0:
            out.append("select.budget must be between 0 and 1 (0: no budget, the wrong ones)")
        return out

    @property
    def strategy(self) -> str:
        """A short name for reports: wrong, wrong+uncertain0.1+replay0.2+max100, all."""
        if self.all:
            return "all" if self.lead else "all+bare"
        parts = [f"budget{self.budget:g}" if self.budget else "wrong"]
        parts += [f"uncertain{self.uncertain:g}"] if self.uncertain else []
        parts += [f"replay{self.replay:g}"] if self.replay else []
        parts += ["own"] if self.own and self.replay else []
        parts += ["rephrase"] if self.rephrase else []
        parts += [f"max{self.max_items}"] if self.max_items else []
        parts += [f"rehearse{self.rehearse:g}"] if self.rehearse else []
        parts += [f"anchors{self.anchors:g}"] if self.anchors else []
        parts += ["bare"] if not self.lead else []
        parts += ["split"] if self.valid_split else []
        return "+".join(parts)


@dataclass(frozen=True)
class SelectSummary:
    n_items: int
    n_selected: int  # pairs in train.jsonl
    n_valid: int
    seconds: float
    strategy: str = "wrong"
    n_wrong: int = 0  # graded wrong
    n_uncertain: int = 0  # graded right, but close enough to the threshold to count as unknown
    n_replay: int = 0  # graded right, mixed back in
    n_rephrased: int = 0  # unknown pairs taught in the model's own words
    n_anchors: int = 0  # known pairs written to anchors.jsonl for the KL term
    n_rehearsed: int = 0  # known pairs trained in one epoch only

    def __str__(self) -> str:
        share = 100.0 * self.n_selected / self.n_items if self.n_items else 0.0
        if self.strategy.startswith("all"):
            what = "pairs (all)"
        else:
            budget = self.strategy.startswith("budget")
            extra = [f"{self.n_wrong} wrong, {self.n_uncertain} weakly known"] if budget else []
            extra += [f"{self.n_wrong} wrong"] if self.n_rehearsed and not budget else []
            extra += [f"{self.n_uncertain} uncertain"] if self.n_uncertain and not budget else []
            extra += [f"{self.n_replay} replayed"] if self.n_replay else []
            extra += [f"{self.n_rephrased} rephrased"] if self.n_rephrased else []
            extra += [f"{self.n_rehearsed} known rehearsed once"] if self.n_rehearsed else []
            extra += [f"{self.n_anchors} known as anchors"] if self.n_anchors else []
            head = "least known pairs" if budget else "pairs" if self.n_rehearsed else "wrongly answered pairs"
            what = head + (f" ({', '.join(extra)})" if extra else "")
        return (
            f"selected {self.n_selected} of {self.n_items} ({share:.1f}%) {what} "
            f"for training, {self.n_valid} for validation, in {self.seconds:.1f} s"
        )


def taught_answer(item: QAItem, lead: str = "") -> str:
    """The answer a pair teaches: the reference, after `lead` when there is one ("The correct answer is Paris.")."""
    reference = item.reference_text
    if not lead:
        return reference
    return f"{lead}{reference}" + ("" if reference.rstrip()[-1:] in ".!?" else ".")


def chat_example(
    item: QAItem, answer_config: AnswerConfig = AnswerConfig(), target: str | None = None, lead: str = ""
) -> dict:
    """One training pair: the prompt exactly as the model was asked, and the reference answer after `lead`
    (or `target`, another answer to teach)."""
    return {
        "id": item.id,
        "messages": [
            {"role": "user", "content": question_text(item, answer_config)},
            {"role": "assistant", "content": taught_answer(item, lead) if target is None else target},
        ],
    }


@dataclass(frozen=True)
class Selection:
    chosen: list[QAItem]  # the pairs to train on, in file order
    unknown: list[QAItem]  # those graded wrong or uncertain (within max_items)
    replayed: list[QAItem]  # those graded right, mixed back in
    n_wrong: int
    n_uncertain: int


def pick(
    items: list[QAItem], grades: dict[str, Grade], config: SelectConfig, threshold: float, rng: random.Random
) -> Selection:
    """Which pairs the strategy trains on; `rng` draws the replayed ones."""
    ungraded = [item.id for item in items if item.id not in grades]
    if ungraded:
        raise NotDone(
            f"{len(ungraded)} of {len(items)} items are not graded (first: {ungraded[0]}); run `slearn grade` first"
        )
    n_wrong = sum(1 for item in items if not grades[item.id].correct)
    if config.all:
        return Selection(list(items), [], [], n_wrong, 0)
    unsure = {item.id for item in items if _uncertain(grades[item.id], config.uncertain, threshold)}
    unknown = [item for item in items if not grades[item.id].correct or item.id in unsure]
    if config.budget:
        # Least known first: wrong answers by score, then the right ones by score; ties keep the file order.
        ranked = sorted(
            items, key=lambda item: (grades[item.id].correct and item.id not in unsure, grades[item.id].score)
        )
        keep = {item.id for item in ranked[: round(config.budget * len(items))]}
        unsure = {item.id for item in items if item.id in keep and grades[item.id].correct}
        unknown = [item for item in items if item.id in keep]
    if config.max_items is not None:
        # Hardest first: the lowest score is the surest wrong. Ties keep the file order.
        keep = {item.id for item in sorted(unknown, key=lambda item: grades[item.id].score)[: config.max_items]}
        unknown = [item for item in unknown if item.id in keep]
    known = [item for item in items if grades[item.id].correct and item.id not in unsure]
    replayed = rng.sample(known, round(config.replay * len(known)))
    ids = {item.id for item in unknown + replayed}
    chosen = [item for item in items if item.id in ids]
    return Selection(chosen, unknown, replayed, n_wrong, len(unsure & ids))


def rephrase_prompt(item: QAItem, answer_config: AnswerConfig = AnswerConfig()) -> str:
    """The request for the model to answer `item` again, in its own words, knowing the reference."""
    return REPHRASE_TEMPLATE.format(question=question_text(item, answer_config), reference=item.reference_text)


def keeps_reference(item: QAItem, text: str) -> bool:
    """A rephrased answer still says the reference: the same option, or the reference's words."""
    if item.reference_letter is not None:
        return answer_letter(text, item.options) == item.reference_letter
    return any(contains_reference(text, reference) for reference in item.references)


def echoes_prompt(text: str, template: str = REPHRASE_TEMPLATE) -> bool:
    """A rewrite that repeats the rephrasing request's own wording ("The correct answer is: ...", "as you
    normally would") rather than answering as the model would: it teaches the request, not the model's words."""
    said = f" {normalize(text)} "
    scaffold = [normalize(part) for part in re.split(r"\{\w+\}|\n+", template)]
    return any(len(part.split()) >= 3 and f" {part} " in said for part in scaffold)


def rephrase_items(
    model, tokenizer, items: list[QAItem], out_path: Path, answer_config: AnswerConfig, *, progress: bool = True
) -> dict[str, Answer]:
    """The model's rewrite of each item's reference, as it would answer (resumable in `out_path`)."""
    answer_items(
        model, tokenizer, items, out_path, answer_config, progress=progress, desc="rephrase",
        user_message=lambda item: rephrase_prompt(item, answer_config),
    )  # fmt: skip
    return read_records(out_path, Answer)


def select_unknown(
    items: list[QAItem],
    grades: dict[str, Grade],
    train_dir: Path,
    config: SelectConfig = SelectConfig(),
    answer_config: AnswerConfig = AnswerConfig(),
    threshold: float = 0.5,
    answers: dict[str, Answer] | None = None,
    rephrase: Callable[[list[QAItem]], dict[str, Answer]] | None = None,
) -> SelectSummary:
    """Write train.jsonl (the pairs the strategy picks) and valid.jsonl (a sample of them).

    Every selected pair is trained on: the validation file is a copy of some of
    them, for watching the loss, not a held-out split. `answers` are the model's
    own (for `own`); `rephrase` gives its rewrites of the unknown pairs' references (for `rephrase`).
    """
    start = time.perf_counter()
    rng = random.Random(config.seed)
    selection = pick(items, grades, config, threshold, rng)
    targets: dict[str, str] = {}
    # With `own`, a replayed pair keeps the answer the model gave (graded correct): training on the
    # unknown pairs then does not also change how the model phrases what it already knew.
    if config.own and answers:
        targets |= {item.id: answers[item.id].text for item in selection.replayed}
    # With `rephrase`, an unknown pair is taught in the model's own words where its rewrite kept the
    # reference; the reference itself otherwise.
    n_rephrased = 0
    rephrased = rephrase(selection.unknown) if config.rephrase and rephrase and not config.all else None
    if rephrased:
        for item in selection.unknown:
            text = rephrased[item.id].text if item.id in rephrased else ""
            if text and keeps_reference(item, text) and not echoes_prompt(text):
                targets[item.id] = text
                n_rephrased += 1
    chosen = selection.chosen
    n_valid = max(1, round(config.valid_fraction * len(chosen))) if chosen and config.valid_fraction > 0 else 0
    valid = rng.sample(chosen, n_valid)
    if config.valid_split:  # a true split: early stopping then watches pairs the adapters never saw
        held_out = {item.id for item in valid}
        chosen = [item for item in chosen if item.id not in held_out]
    example = lambda item: chat_example(item, answer_config, targets.get(item.id), config.lead)  # noqa: E731
    # What is left out is known (with a budget, by construction the best known). Rehearsed pairs train in one
    # epoch only, so training the new does not overwrite them; anchors hold them with the KL term (train.kl).
    trained = {item.id for item in selection.chosen}
    known = [item for item in items if (grades[item.id].correct or config.budget) and item.id not in trained]
    # The least known of them first (lowest score): the surest known are the last to need it.
    by_score = sorted(known, key=lambda item: grades[item.id].score)
    # Nothing new to train, nothing to protect: no rehearsal.
    rehearsing = config.rehearse and selection.chosen and not config.all
    rehearsed = by_score[: round(config.rehearse * len(known))] if rehearsing else []
    once = {item.id for item in rehearsed}
    rows = [item for item in items if item.id in once or item.id in {c.id for c in chosen}]
    write_jsonl_atomic(
        train_dir / TRAIN_FILE, (example(item) | ({"epochs": 1} if item.id in once else {}) for item in rows)
    )
    write_jsonl_atomic(train_dir / VALID_FILE, (example(item) for item in valid))
    known = [item for item in known if item.id not in once]
    anchors = rng.sample(known, round(config.anchors * len(known))) if config.anchors and not config.all else []
    # The lead is named so that the KL term can leave it free (retention.py).
    write_jsonl_atomic(train_dir / ANCHORS_FILE, (example(item) | {"lead": config.lead} for item in anchors))
    return SelectSummary(
        len(items), len(rows), n_valid, time.perf_counter() - start, config.strategy, selection.n_wrong,
        selection.n_uncertain, len(selection.replayed), n_rephrased, len(anchors), len(rehearsed),
    )  # fmt: skip


def _uncertain(grade: Grade, band: float, threshold: float) -> bool:
    """A judge's or the probe's 'correct' too close to its threshold to be sure of."""
    scored = grade.grader.startswith("judge") or grade.grader == "probe"
    return band > 0 and grade.correct and scored and grade.score < threshold + band
