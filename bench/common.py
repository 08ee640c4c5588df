"""What the benchmarks share: where things are, peak memory, and the PyTorch twin of the default model."""

from __future__ import annotations

import os
import resource
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEDMCQA = ROOT / "slearn_mlx" / "datasets" / "medmcqa" / "train.jsonl"  # the shipped 100 questions


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def torch_default_model(padding_side: str | None = None):
    """(torch, tokenizer, model): the default model's imported weights in PyTorch + transformers, float32, on
    every core: the same weights slearn runs, read from the same directory."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from slearn_mlx.models import default_model_path

    torch.set_num_threads(os.cpu_count() or 1)
    path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    if padding_side:
        tokenizer.padding_side = padding_side
    return torch, tokenizer, LlamaForCausalLM.from_pretrained(path, dtype=torch.float32)
