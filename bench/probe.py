"""The knowledge probe against generate-and-grade: its cost, and how well it tells what the model knows.

On each fact set (tools/make_fact_sets.py), the default model (float32) in one process:
  - answers every training question (the answer stage: batches of 32, `--max-tokens` 24) and every test
    paraphrase, graded with `auto` (contains for free text, the option for multiple choice): the labels;
  - runs the probe over the training items with each lead measured ("" bare, "The answer is ",
    "The correct answer is "), interleaved with the answer stage over `--repeats` rounds: seconds side by side.
Per lead it prints the ROC AUC of P(reference) against the generate-and-grade labels of the training question
and of its paraphrase, and the agreement and Cohen's kappa of the probe's verdict once calibrated as the CLI
does (`--calibrate --calibrate-sample 48`: threshold fitted on 48 answered items, measured on the others, over
`--draws` random samples).

    python bench/probe.py /tmp/facts [--sets capitals,drug-brands,world,medical] [--repeats 2] [--draws 20]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
from slearn_mlx.answer import AnswerConfig, answer_items
from slearn_mlx.calibrate import cohen_kappa, fit_threshold
from slearn_mlx.data import load_items
from slearn_mlx.grade import grade_deterministic
from slearn_mlx.models.load import load_model
from slearn_mlx.probe import Knowledge, probe_items
from slearn_mlx.records import Answer
from slearn_mlx.runs import read_records

LEADS = {"bare": "", "answer-is": "The answer is ", "correct-answer-is": "The correct answer is "}


def auc(scores: list[float], labels: list[bool]) -> float | None:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def agreement(verdicts: list[bool], labels: list[bool]) -> tuple[float, float]:
    """(agreement, Cohen's kappa): kappa is 0 for a verdict that ignores the item, whatever the base rate."""
    return sum(v == y for v, y in zip(verdicts, labels)) / len(labels), cohen_kappa(verdicts, labels)


def calibrated(scores: dict[str, float], labels: dict[str, bool], sample: int, draws: int) -> tuple[float, float]:
    """Mean out-of-sample (agreement, kappa) of a threshold fitted on `sample` labelled items."""
    ids = sorted(scores)
    results = []
    for draw in range(draws):
        chosen = set(random.Random(draw).sample(ids, min(sample, len(ids) - 1)))
        threshold = fit_threshold([scores[i] for i in chosen], [labels[i] for i in chosen])
        rest = [i for i in ids if i not in chosen]
        results.append(agreement([scores[i] >= threshold for i in rest], [labels[i] for i in rest]))
    return statistics.mean(r[0] for r in results), statistics.mean(r[1] for r in results)


def timed_answers(model, tokenizer, items, path: Path) -> float:
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    answer_items(model, tokenizer, items, path, AnswerConfig(max_tokens=24), progress=False)
    return time.perf_counter() - start


def timed_probe(model, tokenizer, items, path: Path, lead: str) -> float:
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    probe_items(model, tokenizer, items, path, lead=lead, batch_size=16, progress=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("facts", type=Path)
    parser.add_argument("--sets", default="capitals,drug-brands,world,medical")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--sample", type=int, default=48)
    args = parser.parse_args()
    model, tokenizer = load_model(None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in args.sets.split(","):
            train, test = load_items(args.facts / name / "train.jsonl"), load_items(args.facts / name / "test.jsonl")
            answer_s, probe_s = [], {lead: [] for lead in LEADS}
            for _ in range(args.repeats):  # interleaved: drift on a shared machine hits both alike
                answer_s.append(timed_answers(model, tokenizer, train, tmp / "answers.jsonl"))
                for lead, text in LEADS.items():
                    probe_s[lead].append(timed_probe(model, tokenizer, train, tmp / f"probe-{lead}.jsonl", text))
            timed_answers(model, tokenizer, test, tmp / "test.jsonl")
            answers = read_records(tmp / "answers.jsonl", Answer)
            paraphrased = read_records(tmp / "test.jsonl", Answer)
            by_id = {item.id: item for item in test}
            labels = {i.id: grade_deterministic("auto", i, answers[i.id].text)[0] for i in train}
            test_labels = {i.id: grade_deterministic("auto", by_id[i.id], paraphrased[i.id].text)[0] for i in train}
            answer_median = statistics.median(answer_s)
            print(f"\n{name}: {len(train)} items, {sum(labels.values())} answered right, "
                  f"{sum(test_labels.values())} right in other words; answer stage {answer_median:.1f} s", flush=True)  # fmt: skip
            for lead in LEADS:
                knowledge = read_records(tmp / f"probe-{lead}.jsonl", Knowledge)
                scores = {i: k.p_reference for i, k in knowledge.items()}
                ids = sorted(scores)
                a_train = auc([scores[i] for i in ids], [labels[i] for i in ids])
                a_test = auc([scores[i] for i in ids], [test_labels[i] for i in ids])
                agree, kappa = calibrated(scores, labels, args.sample, args.draws)
                seconds = statistics.median(probe_s[lead])
                row = (name, lead, seconds, seconds / answer_median, a_train, a_test, agree, kappa)
                rows.append(row)
                print(f"  {lead:18s} probe {seconds:5.1f} s ({seconds / answer_median:.2f}x the answer stage)  "
                      f"AUC answered {_f(a_train)}  AUC in other words {_f(a_test)}  "
                      f"calibrated agreement {100 * agree:.1f}%  kappa {kappa:.2f}", flush=True)  # fmt: skip
            a_greedy = auc([float(labels[i]) for i in sorted(labels)], [test_labels[i] for i in sorted(labels)])
            print(f"  (one greedy answer as the predictor of the paraphrase: AUC {_f(a_greedy)})", flush=True)
    print("\n| set | lead | probe s | vs answer stage | AUC vs answered | AUC vs in other words | agreement | kappa |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, lead, seconds, ratio, a_train, a_test, agree, kappa in rows:
        print(f"| {name} | {lead} | {seconds:.1f} | {ratio:.2f}x | {_f(a_train)} | {_f(a_test)} | "
              f"{100 * agree:.1f}% | {kappa:.2f} |")  # fmt: skip


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
