"""Where the time goes, and how close each stage runs to this CPU's float32 matmul speed (a roofline).

All in one process, default model, float32, OpenBLAS loaded:
1. matmul GFLOP/s of mlx on the model's own shapes: many rows (prefill, training),
   16 rows (a decode step at batch 16) and 1 row (sequential decoding);
2. one prefill forward pass (batch 16 x 115 tokens, the size of a MedMCQA batch)
   split by component, with mlx-lm's SwiGLU and with slearn's (models/kernels.py);
3. each stage run on N shipped MedMCQA items and timed: answering (max 24 tokens),
   the judge's verdict pass, one epoch of LoRA training. For each, the FLOPs it
   needs (counted from the model's shapes and the tokens it processed) and the
   time those FLOPs take at the matmul speed of (1): the roofline, a floor no
   implementation on this CPU goes under. The ratio says how far above it the stage runs.

    python bench/profile_forward.py [--items 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# isort: off
import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
import mlx.core as mx

# isort: on

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "slearn_mlx" / "datasets" / "medmcqa" / "train.jsonl"


def timed(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Shape:
    """FLOP counts of a llama-style model from its config."""

    def __init__(self, args):
        self.h, self.f, self.n = args.hidden_size, args.intermediate_size, args.num_hidden_layers
        self.heads, self.kv = args.num_attention_heads, args.num_key_value_heads
        self.d = getattr(args, "head_dim", None) or self.h // self.heads
        self.vocab = args.vocab_size
        q, kv = self.heads * self.d, self.kv * self.d
        self.layer_params = self.h * q + 2 * self.h * kv + q * self.h + 3 * self.h * self.f
        self.matmuls = [  # (in, out) of each linear layer of a block
            (self.h, q), (self.h, kv), (self.h, kv), (q, self.h), (self.h, self.f), (self.h, self.f), (self.f, self.h)
        ]  # fmt: skip

    def block_flops(self, tokens: int, layers: int | None = None) -> float:
        """Linear layers of `layers` blocks (all by default) for `tokens` tokens."""
        return 2.0 * self.layer_params * (self.n if layers is None else layers) * tokens

    def attention_flops(self, queries: int, context: float) -> float:
        """Scores and weighted values of all blocks: `queries` tokens attending over `context` keys on average."""
        return 4.0 * self.n * self.heads * self.d * queries * context

    def vocab_flops(self, positions: int) -> float:
        return 2.0 * self.h * self.vocab * positions


def matmul_speeds(shape: Shape) -> dict[str, float]:
    """GFLOP/s of the model's block matmuls at 1840 rows (prefill/training), 16 rows and 1 row."""
    speeds = {}
    for rows in (1840, 16, 1):
        seconds, flops = 0.0, 0.0
        for fan_in, fan_out in shape.matmuls:
            x = mx.random.normal((rows, fan_in))
            w = mx.random.normal((fan_out, fan_in))
            mx.eval(x, w)
            seconds += timed(lambda: mx.eval(x @ w.T), 9)
            flops += 2.0 * rows * fan_in * fan_out
        speeds[rows] = flops / seconds / 1e9
    return speeds


def forward_breakdown(model, shape: Shape, batch: int, length: int) -> None:
    from mlx_lm.models.activations import swiglu

    from slearn_mlx.models import kernels

    layer = model.model.layers[0]
    x = mx.random.normal((batch, length, shape.h))
    h = mx.random.normal((batch, length, shape.f))
    mx.eval(x, h)
    attn, mlp = layer.self_attn, layer.mlp
    q = mx.random.normal((batch, shape.heads, length, shape.d))
    k, v = (mx.random.normal((batch, shape.kv, length, shape.d)) for _ in range(2))
    mx.eval(q, k, v)
    linears = (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj)
    parts = {
        "block matmuls": timed(lambda: mx.eval(*[m(x) for m in linears], mlp.down_proj(h))),
        "attention (scores, softmax, values)": timed(
            lambda: mx.eval(mx.fast.scaled_dot_product_attention(q, k, v, scale=shape.d**-0.5, mask="causal"))
        ),
        "  of which the softmax": timed(lambda: mx.eval(mx.softmax(q @ mx.repeat(k, shape.heads // shape.kv, 1).swapaxes(-1, -2), axis=-1)))
        - timed(lambda: mx.eval(q @ mx.repeat(k, shape.heads // shape.kv, 1).swapaxes(-1, -2))),
        "SwiGLU, mlx-lm": timed(lambda: mx.eval(swiglu(h, h))),
        "SwiGLU, slearn": timed(lambda: mx.eval(kernels.fast_swiglu(h, h))),
        "2 RMSNorms, RoPE, residuals": timed(
            lambda: mx.eval(
                layer.input_layernorm(x), layer.post_attention_layernorm(x),
                attn.rope(x.reshape(batch, length, -1, shape.d)), x + x,
            )
        ),
    }  # fmt: skip
    tokens = mx.random.randint(0, 1000, (batch, length))
    from mlx_lm import load

    from slearn_mlx.models.store import default_model_path

    plain, _ = load(str(default_model_path()))  # mlx-lm's kernels
    flops = shape.block_flops(batch * length) + shape.attention_flops(batch * length, (length + 1) / 2)
    print(f"\n2. one prefill forward pass, batch {batch} x {length} tokens, {flops / 1e9:.0f} GFLOP")
    wholes = {}
    for name, m in (("slearn's SwiGLU", model), ("mlx-lm's SwiGLU", plain), ("slearn's SwiGLU, again", model)):
        wholes[name] = timed(lambda: mx.eval(m.model(tokens)), 3)
        print(f"   measured with {name:24s} {wholes[name]:.2f} s ({flops / wholes[name] / 1e9:.0f} GFLOP/s)")
    whole = min(wholes["slearn's SwiGLU"], wholes["slearn's SwiGLU, again"])
    print(f"   {'component (x' + str(shape.n) + ' blocks)':40s} {'seconds':>8s}")
    for name, seconds in parts.items():
        print(f"   {name:40s} {seconds * shape.n:8.2f}")
    print(f"   SwiGLU: slearn's is {parts['SwiGLU, mlx-lm'] / parts['SwiGLU, slearn']:.1f}x faster; "
          f"attention's share {parts['attention (scores, softmax, values)'] * shape.n / whole:.0%} of the pass")  # fmt: skip


def stages(model, tokenizer, shape: Shape, speeds: dict, n: int) -> None:
    from slearn_mlx.answer import AnswerConfig, answer_items, encode_chat, question_text, shared_prefix
    from slearn_mlx.data import load_items
    from slearn_mlx.grade import GradeConfig, grade_answers
    from slearn_mlx.judge import Judge
    from slearn_mlx.records import Answer
    from slearn_mlx.runs import read_records
    from slearn_mlx.select import chat_example
    from slearn_mlx.training.config import TrainConfig
    from slearn_mlx.training.loop import train_adapters

    items = load_items(DATA)[:n]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # answering: prefill of each prompt past the shared prefix, then one token per step
        prompts = [encode_chat(tokenizer, question_text(item)) for item in items]
        skip = shared_prefix(prompts)
        summary = answer_items(model, tokenizer, items, tmp / "a.jsonl", AnswerConfig(max_tokens=24), progress=False)
        prefill = sum(len(p) - skip for p in prompts)
        mean_prompt = statistics.mean(map(len, prompts))
        decode = summary.n_tokens
        flops = (
            shape.block_flops(prefill + decode) + shape.attention_flops(prefill, mean_prompt / 2)
            + shape.attention_flops(decode, mean_prompt) + shape.vocab_flops(n + decode)
        )  # fmt: skip
        # decode steps: at the 16-row matmul speed (the stage's batch is 32, whose matmuls are likely no slower,
        # so this floor is if anything high)
        floor = (flops - shape.block_flops(decode)) / (speeds[1840] * 1e9) + shape.block_flops(decode) / (
            speeds[16] * 1e9
        )
        rows.append(("answer", summary.seconds, flops, floor, f"{prefill} prompt + {decode} generated tokens"))

        # the judge's verdict: one forward pass over each prompt past its shared prefix
        answers = read_records(tmp / "a.jsonl", Answer)
        judge = Judge(model, tokenizer, "verdict")
        judge_prompts = [judge.prompt_tokens(item, answers[item.id].text) for item in items]
        skip = shared_prefix(judge_prompts)
        grades = grade_answers(
            items, answers, tmp / "g.jsonl", GradeConfig(grader="judge"), judge=judge, progress=False
        )
        tokens = sum(len(p) - skip for p in judge_prompts)
        flops = shape.block_flops(tokens) + shape.attention_flops(tokens, statistics.mean(map(len, judge_prompts)) / 2)
        flops += shape.vocab_flops(n)
        rows.append(("judge (verdict)", grades.seconds, flops, flops / (speeds[1840] * 1e9), f"{tokens} prompt tokens"))

        # training: forward through every block, backward through the LoRA blocks only, vocab at answer tokens
        run_dir = tmp / "train"
        run_dir.mkdir()
        examples = [chat_example(item) for item in items]
        (run_dir / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in examples), encoding="utf-8")
        config = TrainConfig(epochs=1)
        summary = train_adapters(model, tokenizer, run_dir, tmp / "adapters", config, progress=False)
        seq, answer_tokens = summary.n_seq_tokens, summary.n_tokens
        mean_len = seq / n
        flops = (
            shape.block_flops(seq) + shape.block_flops(seq, config.num_layers)
            + shape.attention_flops(seq, mean_len / 2) * (1 + config.num_layers / shape.n)
            + 2 * shape.vocab_flops(answer_tokens)
        )  # fmt: skip
        rows.append(("train (1 epoch)", summary.seconds, flops, flops / (speeds[1840] * 1e9),
                     f"{seq} tokens, {answer_tokens} answer tokens"))  # fmt: skip

    print(f"\n3. stages on {n} MedMCQA items: measured time against the roofline (FLOPs / matmul speed)")
    print(f"   {'stage':16s} {'seconds':>8s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'floor s':>8s} {'x floor':>8s}  work")
    for name, seconds, flops, floor, work in rows:
        print(f"   {name:16s} {seconds:8.2f} {flops / 1e9:7.0f} {flops / seconds / 1e9:8.1f} {floor:8.2f} "
              f"{seconds / floor:7.1f}x  {work}")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=32)
    opts = parser.parse_args()
    from slearn_mlx.models.load import load_model

    model, tokenizer = load_model(None)
    shape = Shape(model.args)
    from slearn_mlx import _blas

    print(f"BLAS: {_blas.openblas_config() or 'mlx bundled'}; {os.cpu_count()} CPUs")
    speeds = matmul_speeds(shape)
    print("1. mlx float32 matmul on the model's block shapes (GFLOP/s):")
    for rows, speed in speeds.items():
        print(f"   {rows:5d} rows: {speed:6.1f}")
    forward_breakdown(model, shape, 16, 115)
    stages(model, tokenizer, shape, speeds, opts.items)
    return 0


if __name__ == "__main__":
    sys.exit(main())
