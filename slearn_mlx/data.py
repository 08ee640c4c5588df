"""Reading the QA formats people already have into `QAItem`s.

Accepted, one JSON object per line (the format is decided per line):
- `{"question", "answer"}` with optional `"id"` and `"options"` (multiple choice:
  a {"A": text} object, a list of texts, or "A. text\\nB. text" lines);
- `{"prompt", "completion"}`;
- `{"messages": [...]}` chat: the last assistant turn is the reference, the user
  turn before it the question;
- Alpaca `{"instruction", "input", "output"}`.
Items without an `"id"` get a stable one from a hash of their content.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterator

import jsonlines

from slearn_mlx.records import QAItem

FORMATS = "question+answer, prompt+completion, messages, or instruction+output"
_OPTION_LINE = re.compile(r"^\s*\(?([A-Za-z])[.):]\s*(.*)$")


class DataError(ValueError):
    """A problem in a user's data file, located by file, line and field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str):
        where = f"{path}:{line}" if line else str(path)
        what = f"field '{field}': {problem}" if field else problem
        super().__init__(f"{where}: {what}")
        self.path, self.line, self.field, self.problem = str(path), line, field, problem


def quoted(value: str) -> str:
    """A user's value quoted in a message: on one line, and short even when the value is not."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


def _encodable(value: str, field: str, path, line: int) -> str:
    # JSON can escape a lone surrogate ("\\ud800"); it would fail later, when items.jsonl is written.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            path, line, field, "holds an unpaired surrogate escape (\\ud800-\\udfff); fix the text"
        ) from None
    return value


def _text(obj: dict, field: str, path, line: int, *, required: bool = True) -> str | None:
    if field not in obj or obj[field] is None:
        if required:
            raise DataError(path, line, field, "missing")
        return None
    value = obj[field]
    if not isinstance(value, str):
        raise DataError(path, line, field, f"expected a string, got {type(value).__name__}")
    _encodable(value, field, path, line)
    if required and not value.strip():
        raise DataError(path, line, field, "empty")
    return value


def _options(value: Any, path, line: int) -> dict[str, str] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        options = {}
        for key, text in value.items():
            # ASCII only: "ß".upper() is "SS", and prompts and graders read options as A-Z.
            if not (isinstance(key, str) and len(key) == 1 and key.isascii() and key.isalpha()):
                raise DataError(path, line, "options", f"keys must be single letters A-Z, got {quoted(key)}")
            if not isinstance(text, str):
                raise DataError(path, line, "options", f"option {key!r} must be a string")
            if key.upper() in options:
                raise DataError(path, line, "options", f"option {key.upper()} is given twice")
            options[key.upper()] = _encodable(text, "options", path, line)
    elif isinstance(value, list):
        if not all(isinstance(t, str) for t in value):
            raise DataError(path, line, "options", "a list of options must hold only strings")
        if len(value) > 26:
            raise DataError(path, line, "options", "more than 26 options")
        options = {chr(ord("A") + i): _encodable(t, "options", path, line) for i, t in enumerate(value)}
    elif isinstance(value, str):
        options = {}
        for part in value.strip().splitlines():
            match = _OPTION_LINE.match(part)
            if not match:
                raise DataError(path, line, "options", f"cannot read option line {quoted(part)} (expected 'A. text')")
            if match.group(1).upper() in options:
                raise DataError(path, line, "options", f"option {match.group(1).upper()} is given twice")
            options[match.group(1).upper()] = _encodable(match.group(2).strip(), "options", path, line)
    else:
        raise DataError(path, line, "options", f"expected an object, a list or a string, got {type(value).__name__}")
    if len(options) < 2:
        raise DataError(path, line, "options", "a multiple-choice item needs at least two options")
    return options


def _chat_pair(obj: dict, path, line: int) -> tuple[str, str]:
    messages = obj["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(path, line, "messages", "expected a non-empty list of {role, content} objects")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise DataError(path, line, f"messages[{i}]", "expected an object with 'role' and 'content'")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise DataError(path, line, f"messages[{i}].{key}", "missing or not a string")
            _encodable(message[key], f"messages[{i}].{key}", path, line)
    if messages[-1]["role"] != "assistant":
        raise DataError(path, line, "messages", "the last message must be the assistant's reference answer")
    users = [m for m in messages[:-1] if m["role"] == "user"]
    if not users:
        raise DataError(path, line, "messages", "no user message before the assistant's answer")
    question, reference = users[-1]["content"], messages[-1]["content"]
    if not question.strip():
        raise DataError(path, line, "messages", "the user message is empty")
    if not reference.strip():
        raise DataError(path, line, "messages", "the assistant message is empty")
    return question, reference


def parse_item(obj: Any, path, line: int) -> tuple[str | None, str, str, dict[str, str] | None]:
    """One JSON value -> (explicit id or None, question, reference, options)."""
    if not isinstance(obj, dict):
        raise DataError(path, line, None, f"expected a JSON object, got {type(obj).__name__}")
    options = None
    if "messages" in obj:
        question, reference = _chat_pair(obj, path, line)
    elif "instruction" in obj:
        question = _text(obj, "instruction", path, line)
        extra = _text(obj, "input", path, line, required=False)
        question = f"{question}\n\n{extra}" if extra and extra.strip() else question
        reference = _text(obj, "output", path, line)
    elif "prompt" in obj:
        question, reference = _text(obj, "prompt", path, line), _text(obj, "completion", path, line)
    elif "question" in obj:
        question, reference = _text(obj, "question", path, line), _text(obj, "answer", path, line)
        options = _options(obj.get("options"), path, line)
    else:
        raise DataError(path, line, None, f"no known fields (expected {FORMATS})")

    item_id = obj.get("id")
    if item_id is not None:
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            raise DataError(path, line, "id", f"expected a string or an integer, got {type(item_id).__name__}")
        item_id = _encodable(str(item_id), "id", path, line)
        if not item_id.strip():
            raise DataError(path, line, "id", "empty")
    return item_id, question, reference, options


def _content_id(question: str, reference: str, options: dict | None) -> str:
    digest = hashlib.sha1(f"{question}\x00{reference}\x00{options or ''}".encode()).hexdigest()
    return digest[:12]


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) for each non-blank line; DataError for an unreadable file or line."""
    path = Path(path)
    line_no = 0

    def numbered(handle):
        # jsonlines skips blank lines, so the reader's own count is not the file's line.
        nonlocal line_no
        for line_no, raw in enumerate(handle, start=1):
            # A BOM alone on the first line (an "empty" file saved by some editors) is a blank line.
            yield raw.removeprefix(codecs.BOM_UTF8) if line_no == 1 else raw

    try:
        if not path.exists():
            raise DataError(path, None, None, "file not found")
        if path.is_dir():
            raise DataError(path, None, None, "is a directory, not a JSONL file")
        # The standard library's parser, not whichever faster one is installed: the same file must load, or
        # fail with the same message, on every machine.
        with open(path, "rb") as handle, jsonlines.Reader(numbered(handle), loads=json.loads) as reader:
            for obj in reader.iter(skip_empty=True):
                yield line_no, obj
    except jsonlines.InvalidLineError as exc:
        raise DataError(path, line_no, None, str(exc).rsplit(" (line", 1)[0]) from None
    except RecursionError:
        # json raises it, not a ValueError, for deeply nested arrays or objects.
        raise DataError(path, line_no, None, "JSON nested too deeply to read") from None
    except PermissionError:
        # Also from exists() when a parent directory cannot be searched.
        raise DataError(path, None, None, "permission denied; check the file's permissions") from None


def load_items(path: str | Path) -> list[QAItem]:
    """Read a QA file into items; raise DataError naming file, line and field on any problem."""
    items: list[QAItem] = []
    seen: dict[str, int] = {}
    generated: dict[str, int] = {}
    for line_no, obj in iter_jsonl(path):
        item_id, question, reference, options = parse_item(obj, path, line_no)
        if item_id is None:
            # Content hash, so ids survive reordering; a repeat gets a numbered suffix.
            base = _content_id(question, reference, options)
            generated[base] = generated.get(base, 0) + 1
            item_id = base if generated[base] == 1 else f"{base}-{generated[base]}"
        if item_id in seen:
            raise DataError(path, line_no, "id", f"duplicate id {quoted(item_id)} (first on line {seen[item_id]})")
        seen[item_id] = line_no
        items.append(QAItem(item_id, question, reference, options))
    if not items:
        raise DataError(path, None, None, "no items (the file is empty)")
    return items
