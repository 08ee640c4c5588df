"""Grading a user can trust: each judge model and mode against deterministic labels, before and after calibration.

Answerers (installed model names) answer real sets whose labels need no judge: the shipped MedMCQA questions
(label: the option the answer picks), NQ-open short answers (`--nq`; label: the answer contains one of the listed
answers) and a fact set (`--facts`, e.g. world capitals; label: contains); tools/make_fact_sets.py writes the
last two. Each judge model then grades every answerer's answers in each
mode (verdict, cot, score). Printed per (set, answerer, judge, mode): agreement and Cohen's kappa at the judge's
default threshold (0.5), and out of sample after calibration: the threshold fitted on a random half (agreement,
as `slearn grade --calibrate` fits it), measured on the other half, averaged over `--splits` random halvings.
Kappa is 0 for a judge that calls everything wrong, whatever its agreement.

    python bench/judges.py [--nq /tmp/facts/nq/train.jsonl] [--facts /tmp/facts/world/test.jsonl] \
        --answerer smollm2-135m --answerer qwen2.5-coder-0.5b --judge qwen2.5-coder-0.5b \
        --judge qwen2.5-coder-1.5b [--n 100] [--modes verdict,cot,score] [--no-medmcqa] [--answers-dir DIR]

With `--answers-dir` the answers stay on disk, so another run (other modes or judges) grades the same answers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
from slearn_mlx.answer import AnswerConfig, answer_items
from slearn_mlx.calibrate import agreement_at, fit_threshold
from slearn_mlx.data import load_items
from slearn_mlx.grade import grade_deterministic
from slearn_mlx.judge import Judge
from slearn_mlx.models.load import load_model
from slearn_mlx.records import Answer
from slearn_mlx.runs import read_records

from common import MEDMCQA


def out_of_sample(scores: list[float], labels: list[bool], splits: int) -> tuple[float, float]:
    """Mean (agreement, kappa) on one half with the threshold fitted on the other, over random halvings."""
    results = []
    for split in range(splits):
        order = random.Random(split).sample(range(len(scores)), len(scores))
        fit, test = order[: len(order) // 2], order[len(order) // 2 :]
        threshold = fit_threshold([scores[i] for i in fit], [labels[i] for i in fit])
        agreement = agreement_at([scores[i] for i in test], [labels[i] for i in test], threshold)
        results.append((agreement.agreement, agreement.kappa))
    return statistics.mean(r[0] for r in results), statistics.mean(r[1] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nq", type=Path, help="NQ-open items with answer lists")
    parser.add_argument("--facts", type=Path, help="a short-answer fact set (e.g. world/test.jsonl), labels: contains")
    parser.add_argument("--answerer", action="append", required=True)
    parser.add_argument("--judge", action="append", required=True)
    parser.add_argument("--n", type=int, default=100, help="items per set")
    parser.add_argument("--modes", default="verdict,cot,score")
    parser.add_argument("--splits", type=int, default=20)
    parser.add_argument("--no-medmcqa", action="store_true", help="leave the shipped MedMCQA questions out")
    parser.add_argument("--answers-dir", type=Path, help="keep the answers here and reuse them in a later run")
    args = parser.parse_args()
    sets = {} if args.no_medmcqa else {"medmcqa": (load_items(MEDMCQA)[: args.n], "option")}
    if args.nq:
        sets["nq-open"] = (load_items(args.nq)[: args.n], "contains")
    if args.facts:
        sets[args.facts.parent.name] = (load_items(args.facts)[: args.n], "contains")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        answers_dir = args.answers_dir or Path(scratch)
        answers_dir.mkdir(parents=True, exist_ok=True)
        answers: dict[tuple[str, str], dict[str, Answer]] = {}
        for answerer in args.answerer:  # every answer first: one model in memory at a time
            model, tokenizer = load_model(answerer)
            for name, (items, _) in sets.items():
                path = answers_dir / f"{answerer}-{name}-{args.n}.jsonl"  # resumed: answered once across runs
                answer_items(model, tokenizer, items, path, AnswerConfig(max_tokens=24), progress=False)
                answers[answerer, name] = read_records(path, Answer)
            del model, tokenizer
        for judge_name in args.judge:
            model, tokenizer = load_model(judge_name)
            for mode in args.modes.split(","):
                judge = Judge(model, tokenizer, mode)
                for (answerer, name), texts in answers.items():
                    items, grader = sets[name]
                    labels = [grade_deterministic(grader, item, texts[item.id].text)[0] for item in items]
                    prompts = [judge.prompt_tokens(item, texts[item.id].text) for item in items]
                    start = time.perf_counter()
                    scores = [v.score for i in range(0, len(prompts), 16) for v in judge.judge(prompts[i : i + 16])]
                    seconds = time.perf_counter() - start
                    default = agreement_at(scores, labels, 0.5)
                    calibrated = out_of_sample(scores, labels, args.splits)
                    rows.append((name, answerer, judge_name, mode, sum(labels), len(labels), default, calibrated,
                                 100 * seconds / len(items)))  # fmt: skip
                    print(f"{name} {answerer} judged by {judge_name} ({mode}): kappa {default.kappa:.2f} at 0.5, "
                          f"{calibrated[1]:.2f} calibrated", flush=True)  # fmt: skip
                judge.close()
            del model, tokenizer
    print("\n| set | answerer | judge | mode | right by label | agreement @0.5 | kappa @0.5 | agreement calibrated "
          "| kappa calibrated | s / 100 |")  # fmt: skip
    print("| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, answerer, judge_name, mode, right, n, default, (agree, kappa), per100 in rows:
        print(f"| {name} | {answerer} | {judge_name} | {mode} | {right}/{n} | {default.agreement:.1%} | "
              f"{default.kappa:.2f} | {agree:.1%} | {kappa:.2f} | {per100:.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
