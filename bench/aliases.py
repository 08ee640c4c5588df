"""What accepting every listed answer changes in grading: NQ-open, whose answers are lists.

The default model (float32) answers the 300 NQ-open questions of tools/make_fact_sets.py (`--max-tokens` 24);
each deterministic grader then grades every answer twice, against the first listed answer only (what a loader
that reads one reference sees) and against all of them (`answer` as a list). Prints the share graded wrong each
way, how many answers the aliases turn from wrong to right, and a few of them.

    python bench/aliases.py /tmp/facts/nq/train.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from pathlib import Path

import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
from slearn_mlx.answer import AnswerConfig, answer_items
from slearn_mlx.data import load_items
from slearn_mlx.grade import grade_deterministic
from slearn_mlx.models.load import load_model
from slearn_mlx.records import Answer
from slearn_mlx.runs import read_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--max-tokens", type=int, default=24)
    args = parser.parse_args()
    items = load_items(args.data)
    model, tokenizer = load_model(None)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "answers.jsonl"
        answer_items(model, tokenizer, items, path, AnswerConfig(max_tokens=args.max_tokens), progress=False)
        answers = read_records(path, Answer)
    with_aliases = sum(bool(item.aliases) for item in items)
    print(f"{len(items)} questions, {with_aliases} with more than one listed answer "
          f"({sum(len(item.references) for item in items) / len(items):.2f} answers per question)\n")  # fmt: skip
    print("| grader | wrong, first answer only | wrong, any listed answer | turned right by the aliases |")
    print("| --- | ---: | ---: | ---: |")
    flipped_examples = []
    for grader in ("exact", "contains", "f1"):
        first = [
            grade_deterministic(grader, dataclasses.replace(i, aliases=None), answers[i.id].text)[0] for i in items
        ]
        every = [grade_deterministic(grader, i, answers[i.id].text)[0] for i in items]
        flipped = [i for i, a, b in zip(items, first, every) if b and not a]
        n = len(items)
        print(f"| {grader} | {100 * (n - sum(first)) / n:.1f}% | {100 * (n - sum(every)) / n:.1f}% | {len(flipped)} |")
        if grader == "contains":
            flipped_examples = flipped[:5]
    for item in flipped_examples:
        print(f"\n{item.question}\n  listed: {item.references}\n  answer: {answers[item.id].text}")


if __name__ == "__main__":
    main()
