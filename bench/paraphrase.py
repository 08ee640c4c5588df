"""Can the model ask its own training questions in other words? Its rewrites, side by side, for a person to read.

Training an unknown fact under several wordings of its question could teach it in fewer passes, and the test asks in
other words. A template cannot reword an arbitrary question; the model would have to. The default model is shown three
questions with a rewording each, then asked to reword every `--every`-th training question of each set (greedy, one
batch per set). Prints each question beside its rewrite and the seconds per set, for a reader to count the rewrites that
ask the same thing.

    python bench/paraphrase.py /tmp/facts [--sets world,capitals,medical] [--every 25] [--n 10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
from slearn_mlx.data import load_items
from slearn_mlx.models.load import load_model

SHOTS = [
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("Who wrote Hamlet?", "Hamlet was written by which author?"),
    ("How many legs does a spider have?", "A spider has how many legs?"),
]
FRAME = "".join(f"Question: {a}\nSame question in other words: {b}\n\n" for a, b in SHOTS)


def main() -> None:
    from mlx_lm.generate import batch_generate
    from mlx_lm.sample_utils import make_sampler

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("facts", type=Path)
    parser.add_argument("--sets", default="world,capitals,medical")
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--n", type=int, default=10)
    args = parser.parse_args()
    model, tokenizer = load_model(None)
    for name in args.sets.split(","):
        items = load_items(args.facts / name / "train.jsonl")[:: args.every][: args.n]
        prompts = [
            tokenizer.encode(FRAME + f"Question: {item.question}\nSame question in other words:") for item in items
        ]
        start = time.perf_counter()
        response = batch_generate(model, tokenizer, prompts, max_tokens=24, sampler=make_sampler(0.0))
        print(f"\n{name}: {len(items)} questions reworded in {time.perf_counter() - start:.1f} s")
        for item, text in zip(items, response.texts):
            print(f"  {item.question}  ->  {text.strip().splitlines()[0] if text.strip() else ''}")


if __name__ == "__main__":
    main()
