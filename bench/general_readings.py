"""Ways to read a multiple-choice item with one model, side by side on the same items: the likeliest letter (in the
chat frame, or after a few words of the reply) against the likeliest option text (chat frame, or the cloze frame
`Question: ...\\nAnswer:`; summed, per token, per character). What `slearn_mlx/general.py` scores with was chosen
here (BENCHMARKS.md, "General skills kept").

    python bench/general_readings.py [--model M] [--n 40]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import slearn_mlx  # noqa: F401  (OpenBLAS before mlx)
from slearn_mlx.answer import encode_chat, question_text
from slearn_mlx.general import GENERAL_SETS, cloze_rows, load_general
from slearn_mlx.models.load import load_model
from slearn_mlx.probe import ProbeRow, read_rows


def letter_right(model, tokenizer, item, reply_start: str) -> bool:
    """The likeliest of the options' letters as the next token after the chat prompt and `reply_start`."""
    import mlx.core as mx

    from slearn_mlx.models.heads import logits_at

    prompt = encode_chat(tokenizer, question_text(item))
    if reply_start:
        prompt += tokenizer.encode(reply_start, add_special_tokens=False)
    logits = np.array(logits_at(model, mx.array([prompt]), mx.array([len(prompt) - 1])).astype(mx.float32))[0]
    letters = list(item.options)
    space = " " if reply_start else ""
    ids = [tokenizer.encode(space + x, add_special_tokens=False)[-1] for x in letters]
    return letters[int(logits[ids].argmax())] == item.reference


def text_right(model, tokenizer, item, frame: str) -> dict[str, bool]:
    """The likeliest option text after the question, summed, per token and per character."""
    if frame == "chat":
        context = encode_chat(tokenizer, item.question.strip())
        targets = [tokenizer.encode(t.strip(), add_special_tokens=False) for t in item.options.values()]
        rows = [ProbeRow(context, t) for t in targets]
    else:  # the cloze frame slearn scores with
        rows = cloze_rows(tokenizer, item)
        targets = [row.target for row in rows]
    sums = np.array([lp.sum() for lp, _, _ in read_rows(model, rows)])
    n_tokens = np.array([len(t) for t in targets])
    n_chars = np.array([len(t.strip()) for t in item.options.values()])
    letters = list(item.options)
    return {name: letters[int(score.argmax())] == item.reference
            for name, score in (("sum", sums), ("per token", sums / n_tokens), ("per character", sums / n_chars))}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--n", type=int, default=40, help="items of each set, from the first")
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)
    sets = load_general()
    print(f"| reading | {' | '.join(GENERAL_SETS)} | seconds |")
    print(f"| --- | {' | '.join('---:' for _ in GENERAL_SETS)} | ---: |")
    for label, start in (("letter, chat frame", ""), ('letter after "Answer:"', "Answer:"),
                         ('letter after "The correct option is"', "The correct option is")):  # fmt: skip
        began = time.perf_counter()
        cells = [np.mean([letter_right(model, tokenizer, i, start) for i in sets[s][: args.n]]) for s in GENERAL_SETS]
        print(f"| {label} | {' | '.join(f'{100 * c:.0f}%' for c in cells)} | {time.perf_counter() - began:.0f} |")
    for frame in ("chat", "cloze"):
        began = time.perf_counter()
        right = {s: [text_right(model, tokenizer, i, frame) for i in sets[s][: args.n]] for s in GENERAL_SETS}
        seconds = time.perf_counter() - began
        for norm in ("sum", "per token", "per character"):
            cells = [np.mean([r[norm] for r in right[s]]) for s in GENERAL_SETS]
            print(f"| option text, {frame} frame, {norm} | {' | '.join(f'{100 * c:.0f}%' for c in cells)} "
                  f"| {seconds:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
