"""Every prompt slearn-mlx sends, as plain str.format templates a user can override from a file.

Answering (`slearn answer --template FILE`, `--mcq-template FILE`):
- QUESTION_TEMPLATE, field {question}: the user message for a question.
- MCQ_TEMPLATE, fields {question}, {options} ("A. text" lines): the same for multiple choice.

Judging (`slearn grade --judge-template FILE`), fields {question}, {reference},
{answer}, of which {reference} and {answer} are required; one per judge mode:
- VERDICT_TEMPLATE: the next token must be the verdict, Yes or No.
- COT_TEMPLATE: the judge writes a short justification; VERDICT_CUE is appended
  after it and the next token is read as the verdict.
- SCORE_TEMPLATE: the next token must be one digit, 0-9.
Each is sent as the user turn of the model's chat template.

Probing (`slearn grade --grader probe`): in the few-shot frame, FEWSHOT_SHOT for each of a few other items of the
set, then FEWSHOT_QUESTION and FEWSHOT_LEAD before the reference whose probability is read; in the chat frame,
PROBE_LEAD, written as the start of the model's answer before the reference.

Rephrasing (`slearn select --rephrase`), fields {question} (as the model was asked)
and {reference}: REPHRASE_TEMPLATE asks the model to answer again knowing the
right answer, so a training target can be in the model's own words.
"""

from __future__ import annotations

import string
from pathlib import Path

from slearn_mlx.errors import ConfigError

QUESTION_TEMPLATE = "{question}"
# How a base model (no chat template) is asked: the question between these, the answer after.
PLAIN_FRAME = ("Question: ", "\nAnswer:\n")
MCQ_TEMPLATE = "{question}\n\n{options}\n\nAnswer with the letter of the correct option."

VERDICT_TEMPLATE = (
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Student answer: {answer}\n\n"
    "Does the student answer agree with the reference answer? Reply with Yes or No."
)
COT_TEMPLATE = (
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Student answer: {answer}\n\n"
    "Compare the student answer with the reference answer in one or two sentences, "
    "then say whether they agree."
)
SCORE_TEMPLATE = (
    "Question: {question}\n"
    "Reference answer: {reference}\n"
    "Student answer: {answer}\n\n"
    "On a scale from 0 to 9, how well does the student answer agree with the reference answer? "
    "0 means it does not, 9 means it says the same thing. Reply with one digit."
)
REPHRASE_TEMPLATE = (
    "{question}\n\n"
    "The correct answer is: {reference}\n\n"
    "Answer the question as you normally would, using the correct answer."
)
# The knowledge probe (`--grader probe`) reads P(reference) after this lead in the assistant's turn: a model that
# answers in sentences gives a bare reference little probability as its first word however well it knows it
# (BENCHMARKS.md, "The knowledge probe").
PROBE_LEAD = "The correct answer is "
# The probe's few-shot frame (`--probe-frame fewshot`, the default): a few other items of the set as questions and
# their answers, then the item's question and its reference, no chat template. The shots show the answer's form,
# so the reference's probability measures what the model knows rather than how it would phrase it (BENCHMARKS.md,
# "The knowledge test").
FEWSHOT_SHOT = "Q: {question}\nA: {answer}\n\n"
FEWSHOT_QUESTION = "Q: {question}\n"
FEWSHOT_LEAD = "A: "
PROBE_FRAMES = ("fewshot", "chat")
DEFAULT_TEMPLATES = {"verdict": VERDICT_TEMPLATE, "cot": COT_TEMPLATE, "score": SCORE_TEMPLATE}
VERDICT_CUE = "\nVerdict:"  # appended after a cot justification; the verdict word comes next
ANSWER_FIELDS = {"question"}
MCQ_FIELDS = {"question", "options"}
JUDGE_FIELDS = {"question", "reference", "answer"}
JUDGE_REQUIRED = {"reference", "answer"}


def template_problem(template: str, fields: set[str], required: set[str] | None = None) -> str | None:
    """What is wrong with a str.format prompt template, or None.

    It may use only `fields` and must use every field in `required` (default: all of them).
    """
    required = fields if required is None else required
    try:
        parsed = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)]
    except ValueError as exc:
        return f"not a valid template ({exc}); write fields as {{question}} and a literal brace as {{{{"
    used = {name for name, _, _ in parsed if name is not None}
    if used - fields:
        return f"unknown field {_field(sorted(used - fields)[0])}; the fields are " + ", ".join(
            f"{{{f}}}" for f in sorted(fields)
        )
    # A spec or conversion ("{question:d}", "{question!x}", "{question:{x}}") would fail only when the
    # prompt is formatted, after the model is loaded; plain fields cannot fail.
    fancy = next((name for name, spec, conversion in parsed if name is not None and (spec or conversion)), None)
    if fancy is not None:
        return f"write the field {{{fancy}}} plainly, without a format spec (:...) or conversion (!...)"
    if required - used:
        return f"the template must use {{{sorted(required - used)[0]}}}"
    return None


def _field(name: str) -> str:
    """A field name as the user wrote it, kept on one short line."""
    shown = f"{{{name}}}"
    return shown if shown.isprintable() and len(shown) <= 40 else repr(shown[:40] + "...")


def read_template(path: str | Path, fields: set[str], required: set[str] | None = None) -> str:
    """A prompt template from a text file, checked: a user's mistake is one clear line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the template ({exc.strerror or exc})") from None
    try:
        # utf-8-sig: a BOM some editors write would otherwise start every prompt.
        template = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8; save the template as UTF-8") from None
    # Universal newlines, as a text-mode read would give: a CRLF file makes the same prompt.
    template = template.replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    problem = template_problem(template, fields, required)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return template
