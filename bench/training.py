"""LoRA training speed: slearn's train stage against `mlx_lm.lora` and against PyTorch + peft on the CPU.

The same model (the default SmolLM2-135M-Instruct, float32), the same pairs (the
first N shipped MedMCQA items as slearn writes them for training: chat rows, loss
on the answer only), the same settings: LoRA rank 8, scale 20 (alpha 160) on the
query and value projections of the top 16 blocks, Adam at 2e-4, batch 4, one
pass over the pairs. Each variant runs in its own process (OpenBLAS loaded in the
mlx ones, 2 torch threads in PyTorch's) so its peak memory is its own. Timed: the
training steps of the whole pass (compilation included, model loading and
mlx_lm.lora's validation not); tokens: every token of every pair (prompt and
answer), the same count for all. `slearn-mlx-kernels` is slearn with mlx-lm's own
SwiGLU (SLEARN_KERNELS=mlx). Prints median tokens/s over the repeats, peak
resident memory, and the ratios.

    python bench/training.py [--pairs 64] [--repeats 3]

Needs torch and peft for the PyTorch column: `pip install torch==2.13.0 peft`.
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

from common import peak_rss_mb, torch_default_model
from variants import report, run_interleaved

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "slearn_mlx" / "datasets" / "medmcqa" / "train.jsonl"
RANK, SCALE, LAYERS, LR, BATCH = 8, 20.0, 16, 2e-4, 4


def write_pairs(out: Path, n: int) -> Path:
    import slearn_mlx  # noqa: F401
    from slearn_mlx.data import load_items
    from slearn_mlx.select import chat_example

    out.mkdir(parents=True, exist_ok=True)
    rows = [chat_example(item) for item in load_items(DATA)[:n]]
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    return out


def sequence_tokens(data: Path) -> int:
    """Every token of every pair, as mlx-lm's chat dataset tokenizes them."""
    from mlx_lm.tuner.datasets import ChatDataset
    from mlx_lm.utils import load_tokenizer

    from slearn_mlx.models.store import default_model_path

    rows = [json.loads(line) for line in open(data / "train.jsonl")]
    dataset = ChatDataset(rows, load_tokenizer(default_model_path()), mask_prompt=True)
    return sum(len(dataset.process(dataset[i])[0]) for i in range(len(dataset)))


# --------------------------------------------------------------------------- variants (one per process)


def run_slearn(data: Path) -> dict:
    """slearn's loop: train_adapters' compiled step and answer-only loss, timed step by step."""
    import mlx.core as mx

    from slearn_mlx.models.load import load_model
    from slearn_mlx.training.batches import make_batch
    from slearn_mlx.training.config import TrainConfig
    from slearn_mlx.training.loop import TrainHooks, train_adapters

    model, tokenizer = load_model(None)
    times, tokens = [], []

    def timed_batch(*args):  # the step before this batch has finished: mx.eval runs in the loop
        times.append(time.perf_counter())
        batch = make_batch(*args)
        tokens.append(int(batch.bounds[:, 1].sum().item()))
        return batch

    config = TrainConfig(epochs=1, batch_size=BATCH, learning_rate=LR, rank=RANK, num_layers=LAYERS, scale=SCALE)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "train"
        run_dir.mkdir()
        (run_dir / "train.jsonl").write_text((data / "train.jsonl").read_text())
        train_adapters(
            model,
            tokenizer,
            run_dir,
            Path(tmp) / "adapters",
            config,
            progress=False,
            hooks=TrainHooks(make_batch=timed_batch),
        )
    times.append(time.perf_counter())
    return {
        "seconds": times[-1] - times[0],
        "tokens": sum(tokens),
        "peak_mb": peak_rss_mb(),
        "mlx_peak_mb": mx.get_peak_memory() / 2**20,
    }


def run_mlx_lm(data: Path) -> dict:
    """`mlx_lm.lora` itself (its command line, its trainer), with OpenBLAS loaded as slearn loads it.
    Its per-step reports are taken from the trainer's callback: one report per step."""
    import io
    from contextlib import redirect_stdout

    import mlx.core as mx
    from mlx_lm import lora

    from slearn_mlx.models.store import default_model_path

    reports = []

    class Recorder:
        def on_train_loss_report(self, info):
            reports.append(info)

        def on_val_loss_report(self, info):
            pass

    lora.get_reporting_callbacks = lambda *args, **kwargs: Recorder()
    n_pairs = sum(1 for _ in open(data / "train.jsonl"))
    iters = -(-n_pairs // BATCH)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "lora.yaml"
        config.write_text(f"lora_parameters: {{rank: {RANK}, scale: {SCALE}, dropout: 0.0}}\n")
        sys.argv = ["mlx_lm.lora", "--model", str(default_model_path()), "--train", "--data", str(data),
                    "--iters", str(iters), "--batch-size", str(BATCH), "--num-layers", str(LAYERS),
                    "--learning-rate", str(LR), "--mask-prompt", "--steps-per-report", "1",
                    "--steps-per-eval", "100000", "--val-batches", "1", "--save-every", "100000",
                    "--adapter-path", str(Path(tmp) / "adapters"), "-c", str(config)]  # fmt: skip
        with redirect_stdout(io.StringIO()):
            lora.main()
    if len(reports) != iters:
        raise RuntimeError(f"expected {iters} step reports from mlx_lm.lora, got {len(reports)}")
    return {
        "seconds": sum(1.0 / info["iterations_per_second"] for info in reports),
        "tokens": sequence_tokens(data),
        "peak_mb": peak_rss_mb(),
        "mlx_peak_mb": mx.get_peak_memory() / 2**20,
    }


def run_torch(data: Path) -> dict:
    """PyTorch + transformers + peft on the CPU, the same weights read from the same directory."""
    from peft import LoraConfig, get_peft_model

    torch, tokenizer, model = torch_default_model()
    torch.manual_seed(0)
    n_layers = model.config.num_hidden_layers
    lora = LoraConfig(r=RANK, lora_alpha=SCALE * RANK, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                      layers_to_transform=list(range(n_layers - LAYERS, n_layers)))  # fmt: skip
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=LR)

    rows = [json.loads(line) for line in open(data / "train.jsonl")]
    examples = []
    for row in rows:
        prompt = tokenizer.apply_chat_template(
            row["messages"][:1], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        full = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=False)
        examples.append((list(full), len(list(prompt))))
    examples.sort(key=lambda e: len(e[0]))  # batches of similar length, as both mlx loops make them
    steps = []
    for i in range(0, len(examples), BATCH):
        chunk = examples[i : i + BATCH]
        width = max(len(tokens) for tokens, _ in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        labels = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, (tokens, prompt_len) in enumerate(chunk):
            ids[row, : len(tokens)] = torch.tensor(tokens)
            labels[row, prompt_len : len(tokens)] = torch.tensor(tokens[prompt_len:])
            mask[row, : len(tokens)] = 1
        start = time.perf_counter()
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        steps.append((time.perf_counter() - start, sum(len(tokens) for tokens, _ in chunk)))
    return {"seconds": sum(s for s, _ in steps), "tokens": sum(t for _, t in steps), "peak_mb": peak_rss_mb()}


def run_slearn_mlx_kernels(data: Path) -> dict:
    """slearn's loop with mlx-lm's own SwiGLU (SLEARN_KERNELS=mlx), to show what models/kernels.py adds."""
    os.environ["SLEARN_KERNELS"] = "mlx"
    return run_slearn(data)


VARIANTS = {
    "slearn": run_slearn,
    "slearn-mlx-kernels": run_slearn_mlx_kernels,
    "mlx_lm.lora": run_mlx_lm,
    "torch+peft": run_torch,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.variant:  # a child process: run one variant, print its figures as JSON
        import slearn_mlx  # noqa: F401  (OpenBLAS before mlx; not for torch: see variants.run_variant)

        report(VARIANTS[opts.variant](Path(opts.data)))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        data = write_pairs(Path(tmp) / "data", opts.pairs)
        results = run_interleaved(
            __file__, list(VARIANTS), ["--data", str(data)], opts.repeats,
            lambda r: f"{r['tokens']} tokens in {r['seconds']:.1f} s: {r['tokens'] / r['seconds']:7.1f} tok/s, "
                      f"peak {r['peak_mb']:.0f} MB",
        )  # fmt: skip

    rate = {name: statistics.median(r["tokens"] / r["seconds"] for r in runs) for name, runs in results.items()}
    print(f"\n{opts.pairs} pairs, batch {BATCH}, one pass, {opts.repeats} repeats (median)")
    print(f"{'':18s} {'tok/s':>8s} {'peak RSS MB':>12s} {'slearn is':>12s}")
    for name, runs in results.items():
        peak = statistics.median(r["peak_mb"] for r in runs)
        ratio = rate["slearn"] / rate[name]
        print(f"{name:18s} {rate[name]:8.1f} {peak:12.0f} {ratio:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
