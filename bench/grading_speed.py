"""Grading speed: slearn's verdict pass against judges that write their verdict as text.

The default model first answers N shipped MedMCQA questions (slearn's answer stage,
at most 24 tokens); then each variant judges those same answers with the same judge
prompt (slearn's verdict template through the chat template), float32:
  - slearn: the grade stage with `--grader judge` (verdict mode): P(Yes) read from
    one batched forward pass per batch of 16, the prompts' shared prefix computed once;
  - slearn-no-prefix: the same with the shared prefix recomputed for every prompt;
  - text: mlx_lm.load + mlx_lm.stream_generate one prompt at a time, up to 16 tokens,
    the first Yes/No of the reply taken as the verdict (the usual LLM-as-judge loop);
  - text-batched: the same prompts through mlx_lm's batch_generate at batch 16;
  - torch: PyTorch + transformers, the verdict read from the last position's logits
    of one batched forward pass (batch 16, left-padded, 2 threads).
The mlx_lm variants load the model with mlx_lm.load, as a user would (without
slearn's CPU kernels). Each variant runs in its own process, interleaved over the
repeats; prints items/s (median) and slearn's ratio to each.

    python bench/grading_speed.py [--items 64] [--repeats 3]

Needs torch for its column: `pip install torch==2.13.0`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import MEDMCQA, torch_default_model
from variants import report, run_interleaved, run_variant

DATA = MEDMCQA
BATCH = 16
TEXT_MAX_TOKENS = 16


def items_and_answers(answers_path: Path, n: int):
    import slearn_mlx  # noqa: F401
    from slearn_mlx.data import load_items
    from slearn_mlx.records import Answer
    from slearn_mlx.runs import read_records

    items = load_items(DATA)[:n]
    answers = read_records(answers_path, Answer)
    return items, {item.id: answers[item.id].text for item in items}


def judge_prompts(tokenizer, items, answers) -> list[list[int]]:
    from slearn_mlx.answer import encode_chat
    from slearn_mlx.judge import judge_prompt
    from slearn_mlx.prompts import VERDICT_TEMPLATE

    return [encode_chat(tokenizer, judge_prompt(VERDICT_TEMPLATE, item, answers[item.id])) for item in items]


def make_answers(answers_path: Path, n: int) -> dict:
    from slearn_mlx.answer import AnswerConfig, answer_items
    from slearn_mlx.data import load_items
    from slearn_mlx.models.load import load_model

    model, tokenizer = load_model(None)
    summary = answer_items(
        model, tokenizer, load_items(DATA)[:n], answers_path, AnswerConfig(max_tokens=24), progress=False
    )
    return {"seconds": summary.seconds, "tokens": summary.n_tokens, "wrong": 0}


def _slearn(answers_path: Path, n: int, reuse_prefix: bool) -> dict:
    from slearn_mlx.grade import GradeConfig, grade_answers
    from slearn_mlx.judge import Judge
    from slearn_mlx.models.load import load_model
    from slearn_mlx.records import Answer
    from slearn_mlx.runs import read_records

    items, _ = items_and_answers(answers_path, n)
    model, tokenizer = load_model(None)
    judge = Judge(model, tokenizer, "verdict", reuse_prefix=reuse_prefix)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = grade_answers(
            items, read_records(answers_path, Answer), Path(tmp) / "g.jsonl",
            GradeConfig(grader="judge", batch_size=BATCH), judge=judge, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "wrong": summary.n_wrong}


def run_slearn(answers_path: Path, n: int) -> dict:
    return _slearn(answers_path, n, reuse_prefix=True)


def run_slearn_no_prefix(answers_path: Path, n: int) -> dict:
    return _slearn(answers_path, n, reuse_prefix=False)


VERDICT = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def text_wrong(texts: list[str]) -> int:
    """Answers a text judge did not call correct (no Yes/No counts as not correct)."""
    return sum(1 for text in texts if (m := VERDICT.search(text)) is None or m.group(1).lower() != "yes")


def _plain_mlx_lm():
    from mlx_lm import load

    from slearn_mlx.models.store import default_model_path

    return load(str(default_model_path()))


def run_text(answers_path: Path, n: int) -> dict:
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    model, tokenizer = _plain_mlx_lm()
    items, answers = items_and_answers(answers_path, n)
    prompts = judge_prompts(tokenizer, items, answers)
    sampler = make_sampler(temp=0.0)
    texts = []
    start = time.perf_counter()
    for prompt in prompts:
        text = "".join(
            r.text for r in stream_generate(model, tokenizer, prompt, max_tokens=TEXT_MAX_TOKENS, sampler=sampler)
        )
        texts.append(text)
    return {"seconds": time.perf_counter() - start, "wrong": text_wrong(texts)}


def run_text_batched(answers_path: Path, n: int) -> dict:
    from mlx_lm.generate import batch_generate

    from slearn_mlx.runs import pending_batches

    model, tokenizer = _plain_mlx_lm()
    items, answers = items_and_answers(answers_path, n)
    prompts = dict(zip((item.id for item in items), judge_prompts(tokenizer, items, answers)))
    texts = []
    start = time.perf_counter()
    for batch in pending_batches(items, {}, BATCH, lambda item: len(prompts[item.id])):
        response = batch_generate(
            model, tokenizer, [prompts[item.id] for item in batch], max_tokens=TEXT_MAX_TOKENS,
            completion_batch_size=len(batch), prefill_batch_size=len(batch),
        )  # fmt: skip
        texts += response.texts
    return {"seconds": time.perf_counter() - start, "wrong": text_wrong(texts)}


def run_torch(answers_path: Path, n: int) -> dict:
    from slearn_mlx.judge import NO_WORDS, YES_WORDS

    torch, tokenizer, model = torch_default_model(padding_side="left")
    model.eval()
    from slearn_mlx.judge import judge_prompt
    from slearn_mlx.prompts import VERDICT_TEMPLATE

    items, answers = items_and_answers(answers_path, n)
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": judge_prompt(VERDICT_TEMPLATE, item, answers[item.id])}],
                                      add_generation_prompt=True, tokenize=False)
        for item in items
    ]  # fmt: skip
    prompts = sorted((tokenizer.encode(text, add_special_tokens=False) for text in texts), key=len)
    pad = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def first_ids(words):
        return sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words})

    yes, no = first_ids(YES_WORDS), first_ids(NO_WORDS)
    wrong = 0
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(prompts), BATCH):
            batch = prompts[i : i + BATCH]
            width = max(map(len, batch))
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
            logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits[:, -1].float()
            logprobs = torch.log_softmax(logits, dim=-1)
            p_yes = torch.sigmoid(torch.logsumexp(logprobs[:, yes], -1) - torch.logsumexp(logprobs[:, no], -1))
            wrong += int((p_yes < 0.5).sum())
    return {"seconds": time.perf_counter() - start, "wrong": wrong}


VARIANTS = {
    "slearn": run_slearn,
    "slearn-no-prefix": run_slearn_no_prefix,
    "text": run_text,
    "text-batched": run_text_batched,
    "torch": run_torch,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--answers", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.variant:
        import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)

        run = make_answers if opts.variant == "answers" else VARIANTS[opts.variant]
        report(run(opts.answers, opts.items))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        answers = Path(tmp) / "answers.jsonl"
        args = ["--items", str(opts.items), "--answers", str(answers)]
        made = run_variant(__file__, "answers", args)
        print(f"answers: {opts.items} items, {made['tokens']} tokens in {made['seconds']:.1f} s", flush=True)
        results = run_interleaved(
            __file__, list(VARIANTS), args, opts.repeats, lambda r: f"{r['seconds']:6.1f} s, {r['wrong']} judged wrong"
        )

    print(f"\n{opts.items} MedMCQA answers judged, batch {BATCH}, {opts.repeats} repeats (median)")
    items_s = {name: statistics.median(opts.items / r["seconds"] for r in runs) for name, runs in results.items()}
    print(f"{'':18s} {'items/s':>8s} {'judged wrong':>13s} {'slearn is':>10s}")
    for name in VARIANTS:
        wrong = results[name][0]["wrong"]
        print(f"{name:18s} {items_s[name]:8.2f} {wrong:13d} {items_s['slearn'] / items_s[name]:9.2f}x")
    print(json.dumps({"items_per_s": items_s}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
