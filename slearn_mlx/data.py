"""Reading the QA files people already have into `QAItem`s.

Files, told by their extension and checked by their content:
- JSON Lines (`.jsonl`, and any other name), one object per line; `.json` holding one JSON array of objects;
- CSV (`.csv`) and TSV (`.tsv`, `.tab`) with a header row;
- Parquet (`.parquet`, `.pq`), and a `datasets` `save_to_disk` directory, read with pyarrow.

Each record, in any of these shapes (decided per record):
- `{"question", "answer"}` with optional `"id"` and `"options"` (multiple choice:
  a {"A": text} object, a list of texts, or "A. text\\nB. text" lines);
- `{"prompt", "completion"}`;
- `{"messages": [...]}` chat: the last assistant turn is the reference, the user
  turn before it the question;
- Alpaca `{"instruction", "input", "output"}`.
Items without an `"id"` get a stable one from a hash of their content. `Fields` maps other field names
(`query`/`response`, `Question`/`Answer`) onto question, answer, options and id.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterator

import jsonlines

from slearn_mlx.common import quoted
from slearn_mlx.errors import UserError
from slearn_mlx.fields import Fields
from slearn_mlx.records import QAItem

FORMATS = "question+answer, prompt+completion, messages, or instruction+output"
_OPTION_LINE = re.compile(r"^\s*\(?([A-Za-z])[.):]\s*(.*)$")


class DataError(UserError, ValueError):
    """A problem in a user's data file, located by file, line (or row, for tables and arrays) and field."""

    def __init__(self, path: str | Path, line: int | None, field: str | None, problem: str, unit: str = "line"):
        where = str(path) if not line else f"{path}:{line}" if unit == "line" else f"{path}: {unit} {line}"
        what = f"field '{field}': {problem}" if field else problem
        super().__init__(f"{where}: {what}")
        self.path, self.line, self.field, self.problem, self.unit = str(path), line, field, problem, unit


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
    elif isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:  # a list or an object written as JSON text (a CSV cell)
            decoded = json.loads(value)
        except (ValueError, RecursionError):
            raise DataError(path, line, "options", "looks like JSON but cannot be read as JSON") from None
        return _options(decoded, path, line)
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


def _present(obj: dict, fields: Fields, path, line: int, unit: str) -> None:
    """A field the user mapped must be there; the message lists the fields the record does have."""
    for name in ("question", "answer"):
        source = getattr(fields, name)
        if source is not None and obj.get(source) is None:
            raise DataError(path, line, source, f"missing (the record has {_keys(obj)})", unit)


def _keys(obj: dict) -> str:
    names = [str(k) for k in list(obj)[:12]]
    return ", ".join(quoted(n) for n in names) + (", ..." if len(obj) > 12 else "") if names else "no fields"


def parse_item(
    obj: Any, path, line: int, fields: Fields = Fields(), unit: str = "line"
) -> tuple[str | None, str, str, dict[str, str] | None, list[str]]:
    """One record -> (explicit id or None, question, reference, options, aliases)."""
    if not isinstance(obj, dict):
        raise DataError(path, line, None, f"expected a JSON object, got {type(obj).__name__}", unit)
    _present(obj, fields, path, line, unit)
    source = {name: getattr(fields, name) or name for name in ("question", "answer", "options", "id")}
    obj = fields.renamed(obj)
    try:
        return _parse(obj, path, line, source)
    except DataError as exc:
        if unit == "line" and all(source[k] == k for k in source):
            raise
        field = source.get(exc.field, exc.field) if exc.field else None
        raise DataError(path, line, field, exc.problem, unit) from None


def _answers(obj: dict, field: str, path, line: int) -> list[str]:
    """The reference, or a list of acceptable answers (the first is the one taught)."""
    value = obj.get(field)
    if not isinstance(value, list):
        return [_text(obj, field, path, line)]
    if not value:
        raise DataError(path, line, field, "an empty list of answers")
    for i, text in enumerate(value):
        if not isinstance(text, str) or not text.strip():
            raise DataError(path, line, f"{field}[{i}]", "expected a non-empty string")
        _encodable(text, f"{field}[{i}]", path, line)
    return value


def _aliases(obj: dict, path, line: int) -> list[str]:
    """An `aliases` field: more answers that count as right (a string or a list of strings)."""
    value = obj.get("aliases")
    if value is None or value == []:
        return []
    return _answers({"aliases": [value] if isinstance(value, str) else value}, "aliases", path, line)


def _parse(obj: dict, path, line: int, source: dict) -> tuple[str | None, str, str, dict[str, str] | None, list[str]]:
    options, aliases = None, []
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
        question = _text(obj, "question", path, line)
        answers = _answers(obj, "answer", path, line)
        reference, aliases = answers[0], answers[1:]
        options = _options(obj.get("options"), path, line)
        if options and aliases:
            raise DataError(path, line, "answer", "a multiple-choice item takes one answer, not a list")
    else:
        hint = "; name yours with --question-field and --answer-field" if obj else ""
        raise DataError(path, line, None, f"no known fields (expected {FORMATS}; the record has {_keys(obj)}){hint}")

    item_id = obj.get("id")
    if item_id is not None:
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)):
            raise DataError(path, line, "id", f"expected a string or an integer, got {type(item_id).__name__}")
        item_id = _encodable(str(item_id), "id", path, line)
        if not item_id.strip():
            raise DataError(path, line, "id", "empty")
    aliases = [a for a in dict.fromkeys(aliases + _aliases(obj, path, line)) if a != reference]
    if options and aliases:
        raise DataError(path, line, "aliases", "a multiple-choice item takes one answer")
    return item_id, question, reference, options, aliases


def _content_id(question: str, reference: str, options: dict | None, aliases: list[str]) -> str:
    extra = f"\x00{aliases}" if aliases else ""  # ids of items without aliases as they always were
    digest = hashlib.sha1(f"{question}\x00{reference}\x00{options or ''}{extra}".encode()).hexdigest()
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


CSV_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")


def iter_records(path: str | Path) -> tuple[str, Iterator[tuple[int, Any]]]:
    """(unit, (position, record) per record) of any data file read here: the unit is "line" for JSON Lines and
    CSV, "item" for a JSON array, "row" for Parquet; positions count from 1."""
    path = Path(path)
    try:
        if not path.exists():
            raise DataError(path, None, None, "file not found")
        if path.is_dir():
            return "row", _iter_arrow_dir(path)
        suffix = path.suffix.lower()
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except PermissionError:
        raise DataError(path, None, None, "permission denied; check the file's permissions") from None
    if head.startswith(b"PAR1") or suffix in PARQUET_SUFFIXES:
        return "row", _iter_parquet(path, head)
    if suffix in CSV_SUFFIXES:
        return "line", _iter_csv(path, CSV_SUFFIXES[suffix], head)
    if suffix == ".json" and head.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"["):
        return "item", _iter_json_array(path)
    return "line", iter_jsonl(path)


def _iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        values = json.loads(path.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise DataError(path, None, None, "not valid utf-8 text") from None
    except RecursionError:
        raise DataError(path, None, None, "JSON nested too deeply to read") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, exc.lineno, None, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(values, list):
        raise DataError(path, None, None, "expected a JSON array of objects, or one object per line")
    yield from enumerate(values, start=1)


def _iter_csv(path: Path, delimiter: str, head: bytes) -> Iterator[tuple[int, Any]]:
    """Rows of a CSV/TSV file with a header row as {column: cell}; an empty cell is a missing value."""
    if head.removeprefix(codecs.BOM_UTF8).lstrip()[:1] in (b"{", b"["):
        raise DataError(path, 1, None, "looks like JSON, not CSV: name the file .jsonl (or .json for an array)")
    kind = "CSV" if delimiter == "," else "TSV"
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a cell may be as long as a JSON line
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, delimiter=delimiter, strict=True)
            header: list[str] | None = None
            line = 0
            for row in reader:
                start, line = line + 1, reader.line_num
                if not any(cell.strip() for cell in row):
                    continue  # a blank line
                if header is None:
                    header = [cell.strip() for cell in row]
                    blank = next((i for i, name in enumerate(header, start=1) if not name), None)
                    if blank:
                        raise DataError(path, start, None, f"the header row's column {blank} has no name")
                    twice = next((name for name in header if header.count(name) > 1), None)
                    if twice:
                        raise DataError(path, start, None, f"the header row names column {quoted(twice)} twice")
                    continue
                if len(row) != len(header):
                    raise DataError(path, start, None, f"{len(row)} cells, but the header row has {len(header)}")
                yield start, {name: cell for name, cell in zip(header, row) if cell.strip()}
    except csv.Error as exc:
        raise DataError(path, line + 1, None, f"cannot read this {kind} line ({exc})") from None
    except UnicodeDecodeError:
        raise DataError(path, None, None, "not valid utf-8 text") from None


def _iter_parquet(path: Path, head: bytes) -> Iterator[tuple[int, Any]]:
    if not head.startswith(b"PAR1"):
        raise DataError(path, None, None, "not a Parquet file (it does not start with PAR1)")
    pyarrow, parquet = _pyarrow(path, "parquet")
    try:
        table = parquet.read_table(path)
    except (pyarrow.ArrowException, OSError) as exc:
        raise DataError(path, None, None, f"cannot read this Parquet file ({_first_line(exc)})") from None
    yield from _table_rows(table)


def _iter_arrow_dir(path: Path) -> Iterator[tuple[int, Any]]:
    """A `datasets` `save_to_disk` directory: its Arrow files, in the order state.json lists them."""
    if (path / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in path.iterdir() if (p / "state.json").is_file())
        raise DataError(path, None, None, f"holds several splits ({', '.join(splits)}): name one, e.g. {path / splits[0]}"
                        if splits else "a DatasetDict without splits")  # fmt: skip
    state = path / "state.json"
    if not state.is_file():
        raise DataError(path, None, None, "is a directory, not a data file (a `datasets` directory holds state.json)")
    try:
        files = [path / entry["filename"] for entry in json.loads(state.read_text())["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(state, None, None, "cannot read the list of data files (_data_files)") from None
    pyarrow, ipc = _pyarrow(path, "ipc")
    position = 0
    for file in files:
        try:
            with pyarrow.memory_map(str(file)) as source:
                table = ipc.open_stream(source).read_all()
        except (pyarrow.ArrowException, OSError) as exc:
            raise DataError(file, None, None, f"cannot read this Arrow file ({_first_line(exc)})") from None
        for offset, row in _table_rows(table):
            yield position + offset, row
        position += table.num_rows


def _table_rows(table, chunk: int = 10_000) -> Iterator[tuple[int, dict]]:
    for start in range(0, table.num_rows, chunk):
        for offset, row in enumerate(table.slice(start, chunk).to_pylist(), start=start + 1):
            yield offset, {k: v for k, v in row.items() if v is not None}


def _pyarrow(path: Path, module: str):
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise DataError(path, None, None, "reading Parquet and Arrow needs pyarrow: pip install pyarrow") from None
    return pyarrow, getattr(pyarrow, module)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:160] or type(exc).__name__


def _category(obj, fields: Fields) -> str | None:
    """The item's category, where its record has one: a short label, not a field to check."""
    value = fields.renamed(obj).get("category") if isinstance(obj, dict) else None
    return None if value is None or isinstance(value, (dict, list)) else str(value).strip()[:80] or None


def load_items(path: str | Path, fields: Fields = Fields()) -> list[QAItem]:
    """Read a QA file into items; raise DataError naming file, line (or row) and field on any problem."""
    items: list[QAItem] = []
    seen: dict[str, int] = {}
    generated: dict[str, int] = {}
    unit, records = iter_records(path)
    for position, obj in records:
        item_id, question, reference, options, aliases = parse_item(obj, path, position, fields, unit)
        if item_id is None:
            # Content hash, so ids survive reordering; a repeat gets a numbered suffix.
            base = _content_id(question, reference, options, aliases)
            generated[base] = generated.get(base, 0) + 1
            item_id = base if generated[base] == 1 else f"{base}-{generated[base]}"
        if item_id in seen:
            raise DataError(
                path,
                position,
                fields.id or "id",
                f"duplicate id {quoted(item_id)} (first on {unit} {seen[item_id]})",
                unit,
            )
        seen[item_id] = position
        items.append(QAItem(item_id, question, reference, options, aliases or None, _category(obj, fields)))
    if not items:
        raise DataError(path, None, None, "no items (the file is empty)")
    return items
