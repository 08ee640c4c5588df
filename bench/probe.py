"""The knowledge test against generate-and-grade: its cost, and how well it tells what the model knows.

On each fact set (tools/make_fact_sets.py), the default model (float32) in one process:
  - answers every training question (the answer stage: batches of 32, `--max-tokens` 24) and every test
    question, which asks the same fact in other words, graded with `auto` (contains for free text, the option
    for multiple choice). An item is known when it is answered right both ways (`known2`); where the test asks
    each fact of a long answer on its own (profiles: test ids `TRAINID-fact`), when every fact is answered right;
  - runs the probe over the training items in each frame (chat: the chat template and "The correct answer is ";
    fewshot: three other items of the set as questions and answers, then the item's), interleaved with the answer
    stage over `--repeats` rounds: seconds side by side.
Per frame it prints the ROC AUC of P(reference) against `known2` and against the test question's label alone, the
agreement and Cohen's kappa of the default verdict (P(reference) at least 0.05 in the chat frame, 0.8 in the
few-shot frame) against `known2`, and the same once calibrated as the CLI does (`--calibrate --calibrate-sample
48`: threshold fitted on 48 items answered in the training wording, measured on the others, over `--draws` random
samples).

    python bench/probe.py /tmp/facts [--sets capitals,world,medical,profiles] [--repeats 2] [--draws 20]
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
from slearn_mlx.grade import PROBE_THRESHOLDS, grade_deterministic
from slearn_mlx.models.load import load_model
from slearn_mlx.probe import Frame, Knowledge, probe_items
from slearn_mlx.prompts import PROBE_FRAMES, PROBE_LEAD
from slearn_mlx.records import Answer
from slearn_mlx.runs import read_records


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


def calibrated(scores: dict[str, float], labels: dict[str, bool], known2: dict[str, bool], sample: int,
               draws: int) -> tuple[float, float]:  # fmt: skip
    """Mean out-of-sample (agreement, kappa) against `known2` of a threshold fitted on `sample` items labelled as the
    CLI labels them (answered right in the training wording)."""
    ids = sorted(scores)
    results = []
    for draw in range(draws):
        chosen = set(random.Random(draw).sample(ids, min(sample, len(ids) - 1)))
        threshold = fit_threshold([scores[i] for i in chosen], [labels[i] for i in chosen])
        rest = [i for i in ids if i not in chosen]
        results.append(agreement([scores[i] >= threshold for i in rest], [known2[i] for i in rest]))
    return statistics.mean(r[0] for r in results), statistics.mean(r[1] for r in results)


def timed_answers(model, tokenizer, items, path: Path) -> float:
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    answer_items(model, tokenizer, items, path, AnswerConfig(max_tokens=24), progress=False)
    return time.perf_counter() - start


def timed_probe(model, tokenizer, items, path: Path, frame: Frame) -> float:
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    probe_items(model, tokenizer, items, path, frame=frame, batch_size=16, progress=False)
    return time.perf_counter() - start


def test_labels(train, test, answers) -> dict[str, bool]:
    """Per training item, whether the test asks it right: its test item, or every test item `ID-...` of its facts."""
    right: dict[str, list[bool]] = {}
    for item in test:
        owner = item.id if item.id in {t.id for t in train} else item.id.rsplit("-", 1)[0]
        right.setdefault(owner, []).append(grade_deterministic("auto", item, answers[item.id].text)[0])
    return {t.id: bool(right.get(t.id)) and all(right[t.id]) for t in train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("facts", type=Path)
    parser.add_argument("--sets", default="capitals,world,medical,profiles")
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
            frames = {frame: Frame.for_items(frame, train, PROBE_LEAD) for frame in PROBE_FRAMES}
            answer_s, probe_s = [], {frame: [] for frame in frames}
            for _ in range(args.repeats):  # interleaved: drift on a shared machine hits both alike
                answer_s.append(timed_answers(model, tokenizer, train, tmp / "answers.jsonl"))
                for frame, how in frames.items():
                    probe_s[frame].append(timed_probe(model, tokenizer, train, tmp / f"probe-{frame}.jsonl", how))
            timed_answers(model, tokenizer, test, tmp / "test.jsonl")
            answers = read_records(tmp / "answers.jsonl", Answer)
            labels = {i.id: grade_deterministic("auto", i, answers[i.id].text)[0] for i in train}
            in_other_words = test_labels(train, test, read_records(tmp / "test.jsonl", Answer))
            # A long answer is never found whole in a generated one: where the test asks its facts one by one,
            # knowing every fact in other words is the label.
            long = any(item.id not in labels for item in test)
            known2 = {i: in_other_words[i] and (labels[i] or long) for i in labels}
            answer_median = statistics.median(answer_s)
            print(f"\n{name}: {len(train)} items, {sum(labels.values())} answered right, "
                  f"{sum(in_other_words.values())} right in other words, {sum(known2.values())} both; "
                  f"answer stage {answer_median:.1f} s", flush=True)  # fmt: skip
            ids = sorted(labels)
            by_id = {item.id: item for item in train}
            for frame in frames:
                knowledge = read_records(tmp / f"probe-{frame}.jsonl", Knowledge)
                scores = {i: k.p_reference for i, k in knowledge.items()}
                # Ranked by the log-probability, which a long reference's tiny P(reference) keeps apart.
                ranks = {
                    i: k.logprob if by_id[i].reference_letter is None else k.p_reference for i, k in knowledge.items()
                }
                a_known2 = auc([ranks[i] for i in ids], [known2[i] for i in ids])
                a_test = auc([ranks[i] for i in ids], [in_other_words[i] for i in ids])
                verdicts = [scores[i] >= PROBE_THRESHOLDS[frame] for i in ids]
                agree, kappa = agreement(verdicts, [known2[i] for i in ids])
                cal_agree, cal_kappa = calibrated(scores, labels, known2, args.sample, args.draws)
                seconds = statistics.median(probe_s[frame])
                rows.append((name, frame, seconds, seconds / answer_median, a_known2, a_test, sum(verdicts), agree,
                             kappa, cal_agree, cal_kappa))  # fmt: skip
                print(f"  {frame:8s} probe {seconds:5.1f} s ({seconds / answer_median:.2f}x the answer stage)  "
                      f"AUC known2 {_f(a_known2)}  AUC in other words {_f(a_test)}  verdict: {sum(verdicts)} known, "
                      f"agreement {100 * agree:.1f}% kappa {kappa:.2f}; calibrated {100 * cal_agree:.1f}% "
                      f"kappa {cal_kappa:.2f}", flush=True)  # fmt: skip
            a_greedy = auc([float(labels[i]) for i in ids], [known2[i] for i in ids])
            a_greedy_test = auc([float(labels[i]) for i in ids], [in_other_words[i] for i in ids])
            answered = agreement([labels[i] for i in ids], [known2[i] for i in ids])[0]
            print(f"  (one greedy answer as the predictor: AUC known2 {_f(a_greedy)}, in other words "
                  f"{_f(a_greedy_test)}, agreement with known2 {100 * answered:.1f}%)", flush=True)  # fmt: skip
    print(
        "\n| set | frame | probe s | vs answer stage | AUC vs known2 | AUC vs in other words | called known | "
        "agreement (kappa) | calibrated agreement (kappa) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, frame, seconds, ratio, a2, a_test, n_known, agree, kappa, cal_agree, cal_kappa in rows:
        print(f"| {name} | {frame} | {seconds:.1f} | {ratio:.2f}x | {_f(a2)} | {_f(a_test)} | {n_known} | "
              f"{100 * agree:.1f}% ({kappa:.2f}) | {100 * cal_agree:.1f}% ({cal_kappa:.2f}) |")  # fmt: skip


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
