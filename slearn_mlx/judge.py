"""A language model as the judge of answers, in three modes.

- `verdict`: the judge reads question, reference and answer; the verdict is its
  next-token probability of "Yes" against "No", from one batched forward pass.
- `cot` (the paper's self-check with reasoning): the judge first writes a short
  justification (batched generation); the verdict probability is then read
  after it, behind "Verdict:".
- `score`: the judge rates agreement on a 0-9 scale; the score is the
  probability-weighted mean of the digit tokens, divided by 9.
Each returns a number in [0, 1] where higher means "correct"; the grade stage
compares it with a threshold, which calibration can fit.
"""

from __future__ import annotations

from dataclasses import dataclass

from slearn_mlx.answer import encode_chat, prefix_cache, render_options, shared_prefix
from slearn_mlx.errors import ConfigError
from slearn_mlx.models.heads import logits_at
from slearn_mlx.prompts import DEFAULT_TEMPLATES, VERDICT_CUE
from slearn_mlx.records import QAItem

JUDGE_MODES = ("verdict", "cot", "score")

YES_WORDS = ("Yes", " Yes", "yes", " yes", "YES")
NO_WORDS = ("No", " No", "no", " no", "NO")
DIGITS = tuple(str(d) for d in range(10))


def judge_prompt(template: str, item: QAItem, answer: str) -> str:
    question = item.question
    if item.options:
        question = f"{question}\n{render_options(item.options)}"
    return template.format(question=question, reference=item.accepted_text, answer=answer)


def _word_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """First token ids of words (deduplicated)."""
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if encoded and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


class Prefix:
    """The keys and values of a token prefix the prompts start with, computed once."""

    def __init__(self, model, tokens: list[int]):
        self.tokens, self.cache = tokens, prefix_cache(model, tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def batch(self, n: int) -> list:
        """A fresh KV cache per layer holding the prefix `n` times, for a forward pass to extend."""
        import mlx.core as mx
        from mlx_lm.models.cache import KVCache

        caches = []
        for layer in self.cache:
            keys, values = layer.keys_and_values()
            cache = KVCache()
            cache.update_and_fetch(mx.repeat(keys, n, axis=0), mx.repeat(values, n, axis=0))
            caches.append(cache)
        return caches

    @staticmethod
    def usable(model) -> bool:
        """Whether the model's cache is a plain KVCache per layer, which `batch` can copy."""
        from mlx_lm.models.cache import KVCache, make_prompt_cache

        return all(type(c) is KVCache for c in make_prompt_cache(model))


def last_token_logprobs(model, prompts: list[list[int]], prefix: Prefix | None = None):
    """Log-probabilities of the next token after each prompt, in one batched forward pass.

    Prompts are right-padded: with a causal mask the padding never reaches the
    real positions. Only the last real position of each row goes through the
    vocabulary projection, which is a fifth of a small model's cost per token.
    With a `prefix`, every prompt starts with its tokens, whose keys and values are reused.
    """
    import mlx.core as mx

    skip = len(prefix) if prefix is not None else 0
    prompts = [p[skip:] for p in prompts]
    lengths = [len(p) for p in prompts]
    width = max(lengths)
    tokens = mx.array([p + [0] * (width - len(p)) for p in prompts])
    last = mx.array([n - 1 for n in lengths])
    cache = prefix.batch(len(prompts)) if prefix is not None else None
    logits = logits_at(model, tokens, last, cache).astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def yes_probabilities(model, tokenizer, prompts: list[list[int]], prefix: Prefix | None = None) -> list[float]:
    """P(Yes) / (P(Yes) + P(No)) as the next token of each prompt."""
    import mlx.core as mx

    yes_ids, no_ids = _word_ids(tokenizer, YES_WORDS), _word_ids(tokenizer, NO_WORDS)
    logprobs = last_token_logprobs(model, prompts, prefix)
    p_yes = mx.logsumexp(logprobs[:, mx.array(yes_ids)], axis=-1)
    p_no = mx.logsumexp(logprobs[:, mx.array(no_ids)], axis=-1)
    return mx.sigmoid(p_yes - p_no).tolist()


def expected_scores(model, tokenizer, prompts: list[list[int]], prefix: Prefix | None = None) -> list[float]:
    """Probability-weighted mean of the digits 0-9 as the next token, divided by 9."""
    import mlx.core as mx

    digit_ids = mx.array([tokenizer.encode(d, add_special_tokens=False)[0] for d in DIGITS])
    logprobs = last_token_logprobs(model, prompts, prefix)[:, digit_ids]
    weights = mx.softmax(logprobs, axis=-1)
    return (weights @ mx.arange(10, dtype=mx.float32) / 9.0).tolist()


@dataclass(frozen=True)
class Judgement:
    score: float  # P(correct) for verdict and cot, the normalised expected score for score
    justification: str | None = None


class Judge:
    """Scores answers with a model in one of JUDGE_MODES.

    The prompts of a batch share a prefix (the chat template's system turn, the template's
    opening words): its keys and values are computed once and reused while it stays the same."""

    def __init__(
        self,
        model,
        tokenizer,
        mode: str = "verdict",
        template: str | None = None,
        cot_max_tokens: int = 48,
        reuse_prefix: bool = True,
    ):
        if mode not in JUDGE_MODES:
            raise ConfigError(f"unknown judge mode {mode!r}; choose one of {', '.join(JUDGE_MODES)}")
        self.model, self.tokenizer, self.mode = model, tokenizer, mode
        self.template = template or DEFAULT_TEMPLATES[mode]
        self.cot_max_tokens = cot_max_tokens
        self.reuse_prefix = reuse_prefix and Prefix.usable(model)
        self._prefix: Prefix | None = None

    def close(self) -> None:
        """Drop the model, so a separate judge's memory can be freed."""
        self.model = self.tokenizer = self._prefix = None

    def prefix(self, prompts: list[list[int]]) -> Prefix | None:
        """The cached prefix all `prompts` start with (recomputed when it changes); None if too short."""
        n = shared_prefix(prompts) if self.reuse_prefix else 0
        if not n:
            return None
        if self._prefix is None or self._prefix.tokens != prompts[0][:n]:
            self._prefix = Prefix(self.model, prompts[0][:n])
        return self._prefix

    def prompt_tokens(self, item: QAItem, answer: str) -> list[int]:
        """The judge's chat prompt for one answer, as token ids."""
        return encode_chat(self.tokenizer, judge_prompt(self.template, item, answer))

    def judge(self, prompts: list[list[int]]) -> list[Judgement]:
        """Judge a batch of prompts (from `prompt_tokens`) together."""
        prefix = self.prefix(prompts)
        if self.mode == "verdict":
            return [Judgement(p) for p in yes_probabilities(self.model, self.tokenizer, prompts, prefix)]
        if self.mode == "score":
            return [Judgement(s) for s in expected_scores(self.model, self.tokenizer, prompts, prefix)]
        return self._reason_then_verdict(prompts, prefix)

    def _reason_then_verdict(self, prompts: list[list[int]], prefix: Prefix | None) -> list[Judgement]:
        from mlx_lm.generate import batch_generate

        skip = len(prefix) if prefix is not None else 0
        response = batch_generate(
            self.model, self.tokenizer, [p[skip:] for p in prompts],
            prompt_caches=[prefix.cache] * len(prompts) if prefix is not None else None,
            max_tokens=self.cot_max_tokens, completion_batch_size=len(prompts), prefill_batch_size=len(prompts),
        )  # fmt: skip
        # A judge that already wrote its verdict is cut there: the verdict is read, not parsed.
        reasons = [text.split("Verdict")[0].strip() for text in response.texts]
        continued = [
            prompt + self.tokenizer.encode(reason + VERDICT_CUE, add_special_tokens=False)
            for prompt, reason in zip(prompts, reasons)
        ]
        probabilities = yes_probabilities(self.model, self.tokenizer, continued, prefix)
        return [Judgement(p, reason) for p, reason in zip(probabilities, reasons)]
