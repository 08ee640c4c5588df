"""Asking a run's model: the base model's and the adapted model's answers side by side.

It answers in slearn's own process, so with what makes answering fast here (OpenBLAS on Linux, the CPU kernels
slearn swaps in) and through the same prompt templates and chat template as the answer stage.
"""

from __future__ import annotations

import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

from slearn_mlx.answer import AnswerConfig, answer_items
from slearn_mlx.records import Answer, QAItem
from slearn_mlx.runs import read_records
from slearn_mlx.training.layers import adapters_on, remove_adapters


@dataclass(frozen=True)
class SideBySide:
    question: str
    base: str
    adapted: str

    def __str__(self) -> str:
        def block(label: str, text: str) -> str:
            return textwrap.indent(text or "(nothing)", " " * 11).replace(" " * 11, f"{label:>9}: ", 1)

        return "\n".join([f"question : {self.question}", block("base", self.base), block("adapted", self.adapted)])


def ask(model, tokenizer, questions: list[str], adapter_dir: Path, config: AnswerConfig) -> list[SideBySide]:
    """Each question answered by the base model, then by the model with the adapters of `adapter_dir` (which
    `pipeline.ask_run` checks are there before the model loads)."""
    items = [QAItem(str(i), question, "-") for i, question in enumerate(questions)]
    remove_adapters(model)
    with tempfile.TemporaryDirectory(prefix="slearn-ask-") as tmp:
        base, adapted = Path(tmp) / "base.jsonl", Path(tmp) / "adapted.jsonl"
        answer_items(model, tokenizer, items, base, config, progress=False)
        with adapters_on(model, adapter_dir):
            answer_items(model, tokenizer, items, adapted, config, progress=False)
        before, after = read_records(base, Answer), read_records(adapted, Answer)
    return [SideBySide(item.question, before[item.id].text, after[item.id].text) for item in items]
