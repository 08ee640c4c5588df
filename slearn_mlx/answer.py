"""Stage 1: the model answers every question, batched, through its chat template."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from slearn_mlx import distributed
from slearn_mlx.options import option
from slearn_mlx.progress import progress_bar
from slearn_mlx.prompts import (
    ANSWER_FIELDS,
    MCQ_FIELDS,
    MCQ_TEMPLATE,
    PLAIN_FRAME,
    QUESTION_TEMPLATE,
    template_problem,
)
from slearn_mlx.records import Answer, QAItem
from slearn_mlx.runs import RecordWriter, pending_batches, read_records


@dataclass
class AnswerConfig:
    max_tokens: int = option(64, "Most tokens per answer.")
    # 32 was the fastest on a 2-core CPU (bench/batch_sizes.py).
    batch_size: int = option(32, "Prompts generated together.")
    temperature: float = option(0.0, "Sampling temperature; 0 is greedy, which makes answers reproducible.")
    template: str = option(
        QUESTION_TEMPLATE, "File with the question prompt: field {question}.", shown="the question as it is"
    )
    mcq_template: str = option(
        MCQ_TEMPLATE, "File with the multiple-choice prompt: fields {question}, {options}.",
        shown="the question, its options, then: Answer with the letter of the correct option",
    )  # fmt: skip

    def problems(self) -> list[str]:
        out = []
        if self.max_tokens < 1:
            out.append("answer.max_tokens must be at least 1")
        if self.batch_size < 1:
            out.append("answer.batch_size must be at least 1")
        if self.temperature < 0:
            out.append("answer.temperature must not be negative")
        for name, fields in (("template", ANSWER_FIELDS), ("mcq_template", MCQ_FIELDS)):
            problem = template_problem(getattr(self, name), fields)
            if problem:
                out.append(f"answer.{name}: {problem}")
        return out


@dataclass(frozen=True)
class AnswerSummary:
    n_items: int
    n_new: int
    n_tokens: int
    seconds: float

    def __str__(self) -> str:
        rate = self.n_tokens / self.seconds if self.seconds else 0.0
        return (
            f"answered {self.n_items}: {self.n_new} new, {self.n_items - self.n_new} already done, "
            f"{self.n_tokens} tokens generated in {self.seconds:.1f} s ({rate:.0f} tok/s)"
        )


def render_options(options: dict[str, str]) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in options.items())


def question_text(item: QAItem, config: AnswerConfig = AnswerConfig()) -> str:
    """The user message for an item, from the answer templates."""
    if item.options:
        return config.mcq_template.format(question=item.question.rstrip(), options=render_options(item.options))
    return config.template.format(question=item.question)


def encode_chat(tokenizer, user_message: str) -> list[int]:
    """Token ids of a one-turn chat ready for the assistant's reply."""
    if getattr(tokenizer, "chat_template", None):
        return list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": user_message}], add_generation_prompt=True, tokenize=True
            )
        )
    # Base models without a chat template: the plain frame an imported base model's template writes.
    return list(tokenizer.encode(PLAIN_FRAME[0] + user_message + PLAIN_FRAME[1]))


def answer_items(
    model,
    tokenizer,
    items: list[QAItem],
    out_path: Path,
    config: AnswerConfig = AnswerConfig(),
    *,
    progress: bool = True,
    user_message: Callable[[QAItem], str] | None = None,
    desc: str = "answer",
) -> AnswerSummary:
    """Answer every item not yet in `out_path`, appending one record per answer.

    `user_message` replaces the question prompt (e.g. to have the model rephrase a reference)."""
    from mlx_lm.generate import batch_generate
    from mlx_lm.sample_utils import make_sampler

    start = time.perf_counter()
    done = read_records(out_path, Answer)
    n_todo = sum(item.id not in done for item in items)
    message = user_message or (lambda item: question_text(item, config))
    prompts = {item.id: encode_chat(tokenizer, message(item)) for item in items}
    # The chat template's system turn starts every prompt: its keys and values are computed once.
    shared = shared_prefix(list(prompts.values())) if n_todo else 0
    caches = prefix_cache(model, next(iter(prompts.values()))[:shared]) if shared else None
    sampler = make_sampler(temp=config.temperature)

    def generate(batch: list[QAItem]) -> list[tuple[str, int]]:
        response = batch_generate(
            model,
            tokenizer,
            [prompts[item.id][shared:] for item in batch],
            prompt_caches=[caches] * len(batch) if caches else None,
            max_tokens=config.max_tokens,
            sampler=sampler,
            completion_batch_size=len(batch),
            prefill_batch_size=len(batch),
            return_token_ids=True,
        )
        return [(text.strip(), len(ids)) for text, ids in zip(response.texts, response.token_ids)]

    n_tokens = 0
    batches = list(pending_batches(items, done, config.batch_size, lambda item: len(prompts[item.id])))
    with RecordWriter(out_path) as writer, progress_bar(n_todo, desc, progress) as bar:
        for batch, replies in distributed.map_batches(batches, generate):  # one process: each batch in turn
            for item, (text, n) in zip(batch, replies):
                if item.id not in done:
                    writer.write(Answer(item.id, text, n))
                    n_tokens += n
                    bar.update(1)
    return AnswerSummary(len(items), n_todo, n_tokens, time.perf_counter() - start)


MIN_SHARED_PREFIX = 8  # tokens; below this the saved work is smaller than the cache's overhead


def shared_prefix(prompts: list[list[int]]) -> int:
    """Length of the token prefix every prompt starts with, leaving at least one token of each;
    0 when it is too short to be worth caching."""
    shortest = min(len(p) for p in prompts) - 1
    n = 0
    while n < shortest and all(p[n] == prompts[0][n] for p in prompts):
        n += 1
    return n if n >= MIN_SHARED_PREFIX else 0


def prefix_cache(model, prefix: list[int]) -> list:
    """The model's KV cache after reading `prefix`; batch_generate copies it for each prompt."""
    import mlx.core as mx
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    model(mx.array(prefix)[None], cache=cache)
    mx.eval([c.state for c in cache])
    return cache
