"""Stage 2: grade each answer against its reference.

`judge` is the paper's self-grading: the model reads the question, the reference
and its own answer, and the verdict is read from its next-token probabilities of
"Yes" and "No" in one batched forward pass (no free text to parse). The
probability is kept with the verdict. Deterministic graders (`exact`,
`contains`, `f1`, `option`) need no model.
"""

from __future__ import annotations

import re
import string
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from slearn_mlx.answer import encode_chat
from slearn_mlx.progress import progress_bar
from slearn_mlx.records import Answer, Grade, QAItem
from slearn_mlx.runs import RecordWriter, read_records

GRADERS = ("judge", "exact", "contains", "f1", "option")

JUDGE_TEMPLATE = (
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Student answer: {answer}\n\n"
    "Does the student answer agree with the reference answer? Reply with Yes or No."
)
YES_WORDS = ("Yes", " Yes", "yes", " yes", "YES")
NO_WORDS = ("No", " No", "no", " no", "NO")


@dataclass
class GradeConfig:
    grader: str = "judge"  # judge (self-grading) | exact | contains | f1 | option
    threshold: float = 0.5  # judge: P(correct) at or above this is correct; f1: F1 at or above this
    batch_size: int = 16  # judge prompts scored together

    def problems(self) -> list[str]:
        out = []
        if self.grader not in GRADERS:
            out.append(f"grade.grader must be one of {', '.join(GRADERS)}, not {self.grader!r}")
        if not 0.0 <= self.threshold <= 1.0:
            out.append("grade.threshold must be between 0 and 1")
        if self.batch_size < 1:
            out.append("grade.batch_size must be at least 1")
        return out


@dataclass(frozen=True)
class GradeSummary:
    n_items: int
    n_new: int
    n_wrong: int
    grader: str
    seconds: float

    def __str__(self) -> str:
        share = 100.0 * self.n_wrong / self.n_items if self.n_items else 0.0
        return (
            f"graded {self.n_items} with {self.grader}: {self.n_wrong} wrong ({share:.1f}%), "
            f"{self.n_new} new, in {self.seconds:.1f} s"
        )


# --------------------------------------------------------------------------- deterministic graders


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or common == 0:
        return float(pred == ref)
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


_LETTER_PATTERNS = (
    re.compile(r"^\s*\(?([A-Z])\)?(?:[.):,\s]|$)"),  # "C", "C.", "(C)", "C) text"
    re.compile(r"\b(?:answer|option)\s*(?:is|:)?\s*\(?([A-Z])\b", re.IGNORECASE),  # "The answer is C"
)


def answer_letter(text: str, options: dict[str, str]) -> str | None:
    """The option an answer picks.

    The one option whose text the answer quotes wins (the content is the
    knowledge; a letter is only a position), else the leading letter ("C",
    "(C)", "C. ..."), else "the answer is C".
    """
    padded = f" {normalize(text)} "
    quoted = [k for k, option in options.items() if normalize(option) and f" {normalize(option)} " in padded]
    if len(quoted) == 1:
        return quoted[0]
    for pattern in _LETTER_PATTERNS:
        match = pattern.search(text)
        if match and match.group(1).upper() in options:
            return match.group(1).upper()
    return None


def grade_deterministic(grader: str, item: QAItem, answer: str, threshold: float) -> tuple[bool, float]:
    """(correct, score) from a deterministic grader."""
    if grader == "exact":
        ok = normalize(answer) == normalize(item.reference)
        return ok, float(ok)
    if grader == "contains":
        ok = bool(normalize(item.reference)) and normalize(item.reference) in normalize(answer)
        return ok, float(ok)
    if grader == "f1":
        score = token_f1(answer, item.reference)
        return score >= threshold, score
    if grader == "option":
        if item.reference_letter is None:
            raise ValueError(
                f"item {item.id}: the option grader needs multiple-choice items whose answer names an option"
            )
        ok = answer_letter(answer, item.options) == item.reference_letter
        return ok, float(ok)
    raise ValueError(f"unknown grader {grader!r}; choose one of {', '.join(GRADERS)}")


# --------------------------------------------------------------------------- the judge


def _word_ids(tokenizer, words: tuple[str, ...]) -> list[int]:
    """First token ids of the verdict words (deduplicated)."""
    ids = []
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if encoded and encoded[0] not in ids:
            ids.append(encoded[0])
    return ids


def _output_projection(model) -> Callable | None:
    """The final vocabulary projection of an mlx-lm model, if its layout is the usual one."""
    if not hasattr(model, "model"):
        return None
    if getattr(model, "lm_head", None) is not None:
        return model.lm_head
    embed = getattr(model.model, "embed_tokens", None)
    return embed.as_linear if embed is not None else None


def last_token_logprobs(model, prompts: list[list[int]]):
    """Log-probabilities of the next token after each prompt, in one batched forward pass.

    Prompts are right-padded: with a causal mask the padding never reaches the
    real positions. Only the last real position of each row goes through the
    vocabulary projection, which is most of the cost for a small model.
    """
    import mlx.core as mx

    lengths = [len(p) for p in prompts]
    width = max(lengths)
    tokens = mx.array([p + [0] * (width - len(p)) for p in prompts])
    last = mx.array([n - 1 for n in lengths])
    rows = mx.arange(len(prompts))
    project = _output_projection(model)
    if project is not None:
        hidden = model.model(tokens)
        logits = project(hidden[rows, last])
    else:
        logits = model(tokens)[rows, last]
    logits = logits.astype(mx.float32)
    return logits - mx.logsumexp(logits, axis=-1, keepdims=True)


def judge_prompt(item: QAItem, answer: str) -> str:
    reference = item.reference
    if item.options and item.reference_letter:
        reference = f"{item.reference_letter}. {item.options[item.reference_letter]}"
    question = item.question
    if item.options:
        question += "\n" + "\n".join(f"{k}. {v}" for k, v in item.options.items())
    return JUDGE_TEMPLATE.format(question=question, reference=reference, answer=answer)


def judge_probabilities(model, tokenizer, prompts: list[list[int]]) -> list[float]:
    """P(Yes) / (P(Yes) + P(No)) for each judge prompt."""
    import mlx.core as mx

    yes_ids, no_ids = _word_ids(tokenizer, YES_WORDS), _word_ids(tokenizer, NO_WORDS)
    logprobs = last_token_logprobs(model, prompts)
    p_yes = mx.logsumexp(logprobs[:, mx.array(yes_ids)], axis=-1)
    p_no = mx.logsumexp(logprobs[:, mx.array(no_ids)], axis=-1)
    return mx.sigmoid(p_yes - p_no).tolist()


# --------------------------------------------------------------------------- the stage


def grade_answers(
    items: list[QAItem],
    answers: dict[str, Answer],
    out_path: Path,
    config: GradeConfig = GradeConfig(),
    *,
    judge=None,
    progress: bool = True,
) -> GradeSummary:
    """Grade every answered item not yet in `out_path`. `judge` is (model, tokenizer) for the judge grader."""
    start = time.perf_counter()
    missing = [item.id for item in items if item.id not in answers]
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(items)} items have no answer (first: {missing[0]}); run `slearn answer` first"
        )
    done = read_records(out_path, Grade)
    todo = [item for item in items if item.id not in done]
    if config.grader == "option":
        unusable = next((item for item in items if item.reference_letter is None), None)
        if unusable is not None:
            raise ValueError(
                f"item {unusable.id}: the option grader needs multiple-choice items whose answer names an option"
            )
    if config.grader == "judge" and judge is None and todo:
        raise ValueError("the judge grader needs a model")

    with RecordWriter(out_path) as writer, progress_bar(len(todo), f"grade ({config.grader})", progress) as bar:
        if config.grader != "judge":
            for item in todo:
                ok, score = grade_deterministic(config.grader, item, answers[item.id].text, config.threshold)
                writer.write(Grade(item.id, ok, score, config.grader))
                bar.update(1)
        else:
            model, tokenizer = judge
            prompts = {
                item.id: encode_chat(tokenizer, judge_prompt(item, answers[item.id].text)) for item in todo
            }
            todo = sorted(todo, key=lambda item: len(prompts[item.id]))
            for i in range(0, len(todo), config.batch_size):
                batch = todo[i : i + config.batch_size]
                probs = judge_probabilities(model, tokenizer, [prompts[item.id] for item in batch])
                for item, p in zip(batch, probs):
                    writer.write(Grade(item.id, p >= config.threshold, round(p, 6), "judge"))
                bar.update(len(batch))

    grades = read_records(out_path, Grade)
    n_wrong = sum(1 for item in items if item.id in grades and not grades[item.id].correct)
    return GradeSummary(len(items), len(todo), n_wrong, config.grader, time.perf_counter() - start)
