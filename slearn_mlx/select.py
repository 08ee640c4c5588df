"""Stage 3: keep the pairs the model got wrong, as mlx-lm training files.

The files use mlx-lm's chat format (`{"messages": [...]}`), so `mlx_lm.lora
--data RUN/train` reads them as they are. The user turn is exactly the prompt
the model answered, the assistant turn the reference answer.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from slearn_mlx.answer import AnswerConfig, question_text
from slearn_mlx.records import Grade, QAItem
from slearn_mlx.runs import write_jsonl_atomic


@dataclass
class SelectConfig:
    valid_fraction: float = 0.1  # share of the selected pairs copied to valid.jsonl to watch the loss
    seed: int = 0  # picks the validation sample

    def problems(self) -> list[str]:
        if not 0.0 <= self.valid_fraction <= 1.0:
            return ["select.valid_fraction must be between 0 and 1"]
        return []


@dataclass(frozen=True)
class SelectSummary:
    n_items: int
    n_selected: int
    n_valid: int
    seconds: float

    def __str__(self) -> str:
        share = 100.0 * self.n_selected / self.n_items if self.n_items else 0.0
        return (
            f"selected {self.n_selected} of {self.n_items} ({share:.1f}%) wrongly answered pairs "
            f"for training, {self.n_valid} for validation, in {self.seconds:.1f} s"
        )


def chat_example(item: QAItem, answer_config: AnswerConfig = AnswerConfig()) -> dict:
    """One training pair: the prompt exactly as the model was asked, and the reference answer."""
    return {
        "id": item.id,
        "messages": [
            {"role": "user", "content": question_text(item, answer_config)},
            {"role": "assistant", "content": item.reference_text},
        ],
    }


def select_unknown(
    items: list[QAItem],
    grades: dict[str, Grade],
    train_dir: Path,
    config: SelectConfig = SelectConfig(),
    answer_config: AnswerConfig = AnswerConfig(),
) -> SelectSummary:
    """Write train.jsonl (every wrongly answered pair) and valid.jsonl (a sample of them).

    Every wrong pair is trained on: the validation file is a copy of some of them,
    for watching the loss, not a held-out split.
    """
    start = time.perf_counter()
    ungraded = [item.id for item in items if item.id not in grades]
    if ungraded:
        raise ValueError(
            f"{len(ungraded)} of {len(items)} items are not graded (first: {ungraded[0]}); run `slearn grade` first"
        )
    wrong = [item for item in items if not grades[item.id].correct]
    n_valid = 0
    if wrong and config.valid_fraction > 0:
        n_valid = max(1, round(config.valid_fraction * len(wrong)))
    valid = random.Random(config.seed).sample(wrong, n_valid)
    write_jsonl_atomic(train_dir / "train.jsonl", (chat_example(item, answer_config) for item in wrong))
    write_jsonl_atomic(train_dir / "valid.jsonl", (chat_example(item, answer_config) for item in valid))
    return SelectSummary(len(items), len(wrong), n_valid, time.perf_counter() - start)
