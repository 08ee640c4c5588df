"""An exported model checked by llama.cpp itself: the same tokens, the same greedy answers as mlx's fused model.

For a trained run directory, the run's adapters are fused and exported (`slearn export RUN --to gguf`) in each
`--types` type, timed, and sized. llama.cpp (llama-cpp-python) loads each file and is compared with the fused mlx
model on the run's own questions:
  - tokens: llama.cpp's tokenizer against the mlx tokenizer on `--n` strings (questions, references, and strings
    with digits, spaces, newlines and the chat template's special tokens);
  - answers: both models are fed the same prompt token ids (the chat template as slearn asks) and decode greedily
    `--max-tokens` tokens; an answer agrees when both write the same tokens (up to the end of the turn).

Needs llama-cpp-python (a source build; see BENCHMARKS.md for the pinned version and the build time):

    python bench/llama_cpp_check.py RUN [--types F16,Q8_0,Q4_K_M] [--n 100] [--max-tokens 24] [--model DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
from slearn_mlx.answer import encode_chat
from slearn_mlx.data import load_items
from slearn_mlx.export import export_run
from slearn_mlx.models.export import fuse_adapters
from slearn_mlx.models.load import load_model
from slearn_mlx.runs import RunDir

EXTRA = ["Born in 1987, she moved to São Paulo at 12.", "  two  spaces\tand a tab", "line one\nline two\n\nend",
         "3.14159 + 2,718 = 5.85959", "<|im_start|>user\nHi<|im_end|>", "naïve café — déjà vu", "ÆØÅ æøå ß"]  # fmt: skip


def greedy_mlx(model, prompt: list[int], max_tokens: int, eos: set[int]) -> list[int]:
    import mlx.core as mx
    from mlx_lm.generate import generate_step
    from mlx_lm.sample_utils import make_sampler

    out = []
    for token, _ in generate_step(mx.array(prompt), model, max_tokens=max_tokens, sampler=make_sampler(0.0)):
        token = int(token)
        if token in eos:
            break
        out.append(token)
    return out


def greedy_llama(llama, prompt: list[int], max_tokens: int, eos: set[int]) -> list[int]:
    llama.reset()
    out = []
    for token in llama.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True):
        if token in eos or len(out) == max_tokens:
            break
        out.append(token)
    return out


def main() -> None:
    from llama_cpp import Llama

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--types", default="F16,Q8_0,Q4_K_M")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--max-tokens", type=int, default=24)
    parser.add_argument("--model", help="The run's model imported again elsewhere (the same weights) [the run's]")
    args = parser.parse_args()
    run = RunDir(args.run)
    config = json.loads(run.config.read_text())
    items = load_items(config["data"])[: args.n]
    model_dir = args.model or config["model"]
    model, tokenizer = load_model(model_dir, adapter_path=run.adapters)
    fuse_adapters(model)
    eos = {tokenizer.eos_token_id}
    strings = ([item.question for item in items] + [item.reference_text for item in items] + EXTRA)[: args.n]
    prompts = [encode_chat(tokenizer, item.question) for item in items]
    start = time.perf_counter()
    expected = [greedy_mlx(model, p, args.max_tokens, eos) for p in prompts]
    print(f"{args.run}: mlx fused model answered {len(prompts)} questions in {time.perf_counter() - start:.1f} s")
    rows = []
    for qtype in args.types.split(","):
        exported = export_run(run, model_dir, "gguf", qtype.lower(), args.run / "export" / "check")
        llama = Llama(str(exported.path), n_ctx=1024, logits_all=False, verbose=False)
        same_tokens = sum(
            llama.tokenize(s.encode(), add_bos=False, special=True) == tokenizer.encode(s, add_special_tokens=False)
            for s in strings
        )  # fmt: skip
        got = [greedy_llama(llama, p, args.max_tokens, eos) for p in prompts]
        same_answers = sum(a == b for a, b in zip(expected, got))
        rows.append((qtype, exported.seconds, exported.size, same_tokens, len(strings), same_answers, len(prompts)))
        print(f"  {qtype}: exported in {exported.seconds:.1f} s, {exported.size / 2**20:.1f} MiB; tokens identical on "
              f"{same_tokens}/{len(strings)} strings; greedy answers identical on {same_answers}/{len(prompts)}",
              flush=True)  # fmt: skip
        for a, b, item in list(zip(expected, got, items))[:200]:
            if a != b:
                print(
                    f"    differs: {item.question!r}: mlx {tokenizer.decode(a)!r} | llama.cpp {tokenizer.decode(b)!r}"
                )
                break
    print("\n| type | export s | size MiB | same tokens | same greedy answers |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for qtype, seconds, size, st, ns, sa, na in rows:
        print(f"| {qtype} | {seconds:.1f} | {size / 2**20:.1f} | {st}/{ns} | {sa}/{na} ({100 * sa / na:.0f}%) |")


if __name__ == "__main__":
    main()
