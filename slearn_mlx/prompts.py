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
"""

from __future__ import annotations

import string
from pathlib import Path

QUESTION_TEMPLATE = "{question}"
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
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"not a valid template ({exc}); write fields as {{question}} and a literal brace as {{{{"
    if used - fields:
        return f"unknown field {{{sorted(used - fields)[0]}}}; the fields are " + ", ".join(
            f"{{{f}}}" for f in sorted(fields)
        )
    if required - used:
        return f"the template must use {{{sorted(required - used)[0]}}}"
    return None


def read_template(path: str | Path, fields: set[str], required: set[str] | None = None) -> str:
    """A prompt template from a text file, checked: a user's mistake is one clear line."""
    path = Path(path)
    try:
        template = path.read_text(encoding="utf-8").strip("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the template ({exc})") from None
    problem = template_problem(template, fields, required)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return template
