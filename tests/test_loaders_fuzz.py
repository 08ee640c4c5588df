"""Bad input never ends in a traceback: every loader of a user's file reads it or says what is wrong in one line.

Hypothesis throws random bytes, odd unicode, JSON values of the wrong type and near-valid records with one
field mutated at the QA loader (`load_items`), the label loader (`read_labels`) and the template loader
(`read_template`), and a few of them through the `slearn` command. A rejection must be a ValueError/OSError
whose message is one line naming the file, and the line for a problem on one line. bench/bad_inputs.py runs
the same kinds of input, and more, through the command a thousand at a time.
"""

from __future__ import annotations

import codecs
import itertools
import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slearn_mlx.calibrate import read_labels
from slearn_mlx.cli import cli
from slearn_mlx.data import DataError, load_items
from slearn_mlx.errors import UserError
from slearn_mlx.prompts import ANSWER_FIELDS, JUDGE_FIELDS, JUDGE_REQUIRED, MCQ_FIELDS, read_template

from conftest import write_jsonl

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The CliRunner fixture is function-scoped but holds no state, so sharing it across examples is fine.
FUZZ_CLI = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
TEMPLATES = {"answer": (ANSWER_FIELDS, None), "mcq": (MCQ_FIELDS, None), "judge": (JUDGE_FIELDS, JUDGE_REQUIRED)}
_names = itertools.count()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """One directory for the module: function-scoped tmp_path is not reset between hypothesis examples."""
    return tmp_path_factory.mktemp("fuzz")


def write(directory: Path, data: bytes, suffix: str = ".jsonl") -> Path:
    path = directory / f"in{next(_names)}{suffix}"
    path.write_bytes(data)
    return path


# --------------------------------------------------------------------------- what a good answer looks like


def assert_user_error(exc: BaseException, path: Path) -> None:
    """A user's mistake: a UserError (what the command shows as one line), one line, naming the file (and the
    line, for a per-line problem)."""
    assert isinstance(exc, UserError), repr(exc)
    message = str(exc)
    assert len(message.splitlines()) == 1, message
    assert str(path) in message, message
    if isinstance(exc, DataError) and exc.line is not None and exc.unit == "line":
        assert message.startswith(f"{path}:{exc.line}: "), message
        # CSV ends lines at a lone \r too; JSONL at \n only (a lone \r stays inside a line).
        ends = path.read_bytes().splitlines() if path.suffix in (".csv", ".tsv") else path.read_bytes().split(b"\n")
        assert 1 <= exc.line <= len(ends) + 1
    elif isinstance(exc, DataError) and exc.line is not None:  # an item of a JSON array, a row of a table
        assert message.startswith(f"{path}: {exc.unit} {exc.line}: "), message


def assert_good_items(items) -> None:
    assert items
    assert len({item.id for item in items}) == len(items)
    for item in items:
        assert item.id.strip() and item.question.strip() and item.reference.strip()
        if item.options is not None:
            assert len(item.options) >= 2
            assert all(len(k) == 1 and "A" <= k <= "Z" and isinstance(v, str) for k, v in item.options.items())
        # The answer stage writes items.jsonl as UTF-8: whatever loads must be writable.
        json.dumps(item.to_json(), ensure_ascii=False).encode("utf-8")


def check_items(path: Path):
    try:
        items = load_items(path)
    except (ValueError, OSError) as exc:
        assert_user_error(exc, path)
        return exc
    assert_good_items(items)
    return items


def check_labels(path: Path):
    try:
        labels = read_labels(path)
    except (ValueError, OSError) as exc:
        assert_user_error(exc, path)
        return exc
    assert labels and all(isinstance(k, str) and isinstance(v, bool) for k, v in labels.items())
    return labels


def check_template(path: Path, kind: str):
    fields, required = TEMPLATES[kind]
    try:
        template = read_template(path, fields, required)
    except (ValueError, OSError) as exc:
        assert_user_error(exc, path)
        return exc
    # An accepted template must format, or the failure would come after the model is loaded.
    values = {name: f"<{name} {len(name)}>" for name in fields}
    prompt = template.format(**values)
    assert all(values[name] in prompt for name in (required or fields)) and "\r" not in template
    assert all(f"{{{name}}}" in template for name in (required or fields))
    return template


# --------------------------------------------------------------------------- strategies

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
odd_text = st.text(
    st.characters(codec="utf-8")
    | st.sampled_from(["\ufeff", "\u2028", "\u0085", "\x00", "\r", "\t", "\u00a0", "{", "}", '"', "\\", "\u0301"]),
    max_size=80,
)
texts = st.text(min_size=1, max_size=30).filter(str.strip)


@st.composite
def valid_records(draw):
    """One record in one of the accepted formats."""
    q, a = draw(texts), draw(texts)
    record = draw(
        st.sampled_from(
            [
                {"question": q, "answer": a},
                {"question": q, "answer": a, "options": {"A": a, "B": q}},
                {"question": q, "answer": "B", "options": [q, a]},
                {"question": q, "answer": "A", "options": "A. one\nB. two"},
                {"prompt": q, "completion": a},
                {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
                {"instruction": q, "input": "", "output": a},
            ]
        )
    )
    return dict(record)


# A mutation of one record: a field dropped, set to another JSON value, or to a string the file must reject.
MUTABLE = ["question", "answer", "options", "prompt", "completion", "messages", "instruction", "input", "output", "id"]
mutations = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(MUTABLE), st.none()),
    st.tuples(st.just("set"), st.sampled_from(MUTABLE), json_values),
    st.tuples(st.just("set"), st.sampled_from(MUTABLE), st.sampled_from(["", " ", "\n", None, 0, -1, True, [], {}])),
    st.tuples(st.just("surrogate"), st.sampled_from(["question", "answer", "prompt", "id", "output"]), st.none()),
)


def dump_line(record: dict, mutation) -> str:
    action, field, value = mutation
    record = dict(record)
    if action == "drop":
        record.pop(field, None)
    elif action == "set":
        record[field] = value
    else:
        record[field] = "SURROGATE"
    # json.dumps cannot write a lone surrogate; put the escape in the text as a user's tool would.
    return json.dumps(record).replace('"SURROGATE"', '"x\\udc00y"')


# --------------------------------------------------------------------------- the loaders, fuzzed


@FUZZ
@given(data=st.binary(max_size=600))
def test_random_bytes(scratch, data):
    path = write(scratch, data)
    check_items(path)
    check_labels(path)
    for kind in TEMPLATES:
        check_template(path, kind)


@FUZZ
@given(data=st.binary(max_size=600), suffix=st.sampled_from([".csv", ".tsv", ".json", ".parquet"]))
def test_random_bytes_in_the_other_formats(scratch, data, suffix):
    check_items(write(scratch, data, suffix))


csv_cells = st.text(st.sampled_from('ab ,;\t"\n\r\x00\ufeffé'), max_size=6)


@FUZZ
@given(
    header=st.lists(st.sampled_from(["question", "answer", "options", "id", "", "x", '"q"']), max_size=4),
    rows=st.lists(st.lists(csv_cells, max_size=5), max_size=5),
    delimiter=st.sampled_from([",", "\t"]),
    quoting=st.booleans(),
    bom=st.booleans(),
    eol=st.sampled_from(["\n", "\r\n"]),
)
def test_csv_of_any_shape(scratch, header, rows, delimiter, quoting, bom, eol):
    def line(cells):
        return delimiter.join(f'"{c.replace(chr(34), chr(34) * 2)}"' if quoting else c for c in cells)

    text = eol.join(line(cells) for cells in [header, *rows])
    check_items(
        write(scratch, (codecs.BOM_UTF8 if bom else b"") + text.encode(), ".csv" if delimiter == "," else ".tsv")
    )


arrow_columns = st.sampled_from(["string", "int", "list", "null", "float", "struct"])


@FUZZ
@given(kinds=st.fixed_dictionaries({"question": arrow_columns, "answer": arrow_columns}), n=st.integers(0, 3))
def test_parquet_with_columns_of_any_type(scratch, kinds, n):
    import pyarrow as pa
    import pyarrow.parquet as pq

    values = {"string": "s", "int": 1, "list": ["a", "b"], "null": None, "float": 0.5, "struct": {"k": "v"}}
    path = scratch / f"t{next(_names)}.parquet"
    pq.write_table(pa.Table.from_pylist([{k: values[v] for k, v in kinds.items()}] * n, schema=None) if n else
                   pa.table({k: pa.array([], pa.string()) for k in kinds}), path)  # fmt: skip
    result = check_items(path)
    if kinds == {"question": "string", "answer": "string"} and n:
        assert len(result) == n


@FUZZ
@given(lines=st.lists(odd_text, max_size=6), bom=st.booleans(), eol=st.sampled_from(["\n", "\r\n", "\r"]))
def test_odd_text(scratch, lines, bom, eol):
    path = write(scratch, (codecs.BOM_UTF8 if bom else b"") + eol.join(lines).encode("utf-8"))
    check_items(path)
    check_labels(path)
    for kind in TEMPLATES:
        check_template(path, kind)


@FUZZ
@given(values=st.lists(json_values, min_size=1, max_size=5))
def test_json_values_of_any_type(scratch, values):
    path = write(scratch, "\n".join(json.dumps(v) for v in values).encode())
    result = check_items(path)
    if not all(isinstance(v, dict) for v in values):
        first = next(i for i, v in enumerate(values, start=1) if not isinstance(v, dict))
        # A non-object line is named, unless an earlier object line already failed.
        assert isinstance(result, DataError) and result.line <= first
    check_labels(path)


@FUZZ
@given(
    records=st.lists(valid_records(), min_size=1, max_size=6),
    where=st.integers(min_value=0),
    mutation=mutations,
    blank_lines=st.booleans(),
    crlf=st.booleans(),
    bom=st.booleans(),
)
def test_near_valid_records_fail_on_the_mutated_line(scratch, records, where, mutation, blank_lines, crlf, bom):
    k = where % len(records)
    lines = [json.dumps(r) if i != k else dump_line(r, mutation) for i, r in enumerate(records)]
    if blank_lines:
        lines = [part for line in lines for part in (line, "  ")]
    eol = "\r\n" if crlf else "\n"
    path = write(scratch, (codecs.BOM_UTF8 if bom else b"") + (eol.join(lines) + eol).encode())
    result = check_items(path)
    if isinstance(result, DataError):
        mutated_line = (2 * k + 1) if blank_lines else k + 1
        duplicate = "duplicate id" in result.problem
        assert result.line == mutated_line or (duplicate and f"line {mutated_line})" in result.problem), result
    else:
        assert len(result) == len(records)


@FUZZ
@given(ids=st.lists(st.sampled_from(["a", "b", 1, "1", "c"]), min_size=2, max_size=6))
def test_duplicate_ids_name_both_lines(scratch, ids):
    path = write_jsonl(scratch / f"dup{next(_names)}.jsonl", [{"question": "q", "answer": "a", "id": i} for i in ids])
    keys = [str(i) for i in ids]
    result = check_items(path)
    if len(set(keys)) == len(keys):
        assert [item.id for item in result] == keys
    else:
        second = next(n for n in range(len(keys)) if keys[n] in keys[:n])
        assert result.line == second + 1 and f"(first on line {keys.index(keys[second]) + 1})" in str(result)
    labels = check_labels(write_jsonl(scratch / f"lab{next(_names)}.jsonl", [{"id": i, "correct": True} for i in ids]))
    assert isinstance(labels, DataError) == (len(set(keys)) != len(keys))


@FUZZ
@given(
    rows=st.lists(
        st.fixed_dictionaries({"id": json_values | st.text(max_size=5), "correct": json_values | st.booleans()}),
        min_size=1,
        max_size=5,
    )
)
def test_labels_of_wrong_types(scratch, rows):
    path = write(scratch, "\n".join(json.dumps(r) for r in rows).encode())
    result = check_labels(path)
    fine = all(
        isinstance(r["correct"], bool) and isinstance(r["id"], (str, int)) and not isinstance(r["id"], bool)
        for r in rows
    )
    if fine and len({str(r["id"]) for r in rows}) == len(rows):
        assert result == {str(r["id"]): r["correct"] for r in rows}
    else:
        assert isinstance(result, DataError)


template_tokens = st.sampled_from(
    ["{question}", "{options}", "{reference}", "{answer}", "{", "}", "{{", "}}", "!r", "!x", ":", ":>3", "{x}",
     "{0}", "{}", ".upper", "[0]", "question", "\n", "\r\n", " ", "\ufeff", "é", "\x00"]
)  # fmt: skip


@FUZZ
@given(parts=st.lists(template_tokens, max_size=8), kind=st.sampled_from(sorted(TEMPLATES)), bom=st.booleans())
def test_templates(scratch, parts, kind, bom):
    path = write(scratch, (codecs.BOM_UTF8 if bom else b"") + "".join(parts).encode(), ".txt")
    check_template(path, kind)


# --------------------------------------------------------------------------- files that are not there, or huge


def test_missing_directory_and_unreadable(scratch):
    missing, directory = scratch / "no-such-file.jsonl", scratch
    for path in (missing, directory):
        for load in (load_items, read_labels, lambda p: read_template(p, ANSWER_FIELDS)):
            with pytest.raises((ValueError, OSError)) as info:
                load(path)
            assert_user_error(info.value, path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_no_read_permission(scratch):
    path = write_jsonl(scratch / "locked.jsonl", [{"question": "q", "answer": "a"}])
    path.chmod(0)
    try:
        for load in (load_items, read_labels, lambda p: read_template(p, ANSWER_FIELDS)):
            with pytest.raises((ValueError, OSError)) as info:
                load(path)
            assert_user_error(info.value, path)
            assert "ermission" in str(info.value)
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"", "empty"),
        (b"\n \n\t\n", "empty"),
        (codecs.BOM_UTF8, "empty"),
        (codecs.BOM_UTF8 + b"\r\n", "empty"),
        (b"[" * 200_000, "nested too deeply"),
        (b'{"a":' * 100_000, "nested too deeply"),
        (b"\xff" * 10_000_000 + b"\n", "not valid utf-8"),
        (b"null\n", "null"),
        (b'\n\r\n{"question": "q\xc3(", "answer": "a"}\n', ":3: line is not valid utf-8"),
    ],
)
def test_edge_files(scratch, data, problem):
    path = write(scratch, data)
    for load in (load_items, read_labels):
        with pytest.raises(DataError, match=problem) as info:
            load(path)
        assert_user_error(info.value, path)
        assert len(str(info.value)) < 300


def test_bom_crlf_and_a_ten_megabyte_line_load(scratch):
    long = "x" * 10_000_000
    text = json.dumps({"question": long, "answer": "a"}) + "\r\n\r\n" + json.dumps({"prompt": "p", "completion": "c"})
    items = load_items(write(scratch, codecs.BOM_UTF8 + text.encode()))
    assert [len(i.question) for i in items] == [len(long), 1]
    template = read_template(write(scratch, codecs.BOM_UTF8 + b"Q: {question}\r\nA:\r\n", ".txt"), ANSWER_FIELDS)
    assert template == "Q: {question}\nA:"


def test_a_hundred_thousand_lines_load_and_a_bad_last_line_is_named(scratch):
    rows = [json.dumps({"question": f"What is {i}?", "answer": str(i)}) for i in range(100_000)]
    path = write(scratch, ("\n".join(rows) + "\n").encode())
    start = time.perf_counter()
    items = load_items(path)
    seconds = time.perf_counter() - start
    assert len(items) == 100_000 and len({i.id for i in items}) == 100_000
    assert seconds < 20, f"{seconds:.1f} s for 100,000 lines"
    bad = write(scratch, ("\n".join(rows[:-1]) + '\n{"question": "q", "answer": 5}\n').encode())
    with pytest.raises(DataError, match=r":100000: field 'answer'"):
        load_items(bad)


# --------------------------------------------------------------------------- through the command


@pytest.fixture(scope="module")
def not_a_model(scratch) -> str:
    """A model directory without weights: it resolves, so the data is read, and loading it fails in one line."""
    path = scratch / "weightless-model"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return str(path)


def assert_one_line_error(result, path: Path | None = None, breaks=str.splitlines) -> str:
    assert result.exit_code not in (0, None), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in breaks(result.output) if line.startswith("Error: ")]
    assert len(errors) == 1 and result.output.endswith(errors[0] + "\n"), result.output
    if path is not None:
        assert str(path) in errors[0], errors[0]
    return errors[0]


@FUZZ_CLI
@given(
    data=st.binary(max_size=300)
    | st.lists(json_values, min_size=1, max_size=3).map(lambda vs: "\n".join(map(json.dumps, vs)).encode())
    | st.tuples(st.lists(valid_records(), min_size=1, max_size=3), mutations).map(
        lambda rm: "\n".join([json.dumps(r) for r in rm[0]] + [dump_line(rm[0][0], rm[1])]).encode()
    ),
    command=st.sampled_from(["answer", "run-test"]),
)
def test_bad_data_through_the_command(runner, scratch, not_a_model, data, command):
    path = write(scratch, data).resolve()
    good = write_jsonl(scratch / f"good{next(_names)}.jsonl", [{"question": "q", "answer": "a"}]).resolve()
    out = scratch / f"run{next(_names)}"
    args = {
        "answer": ["answer", "--data", str(path)],
        "run-test": ["run", "--data", str(good), "--test", str(path)],
    }[command]
    result = runner.invoke(cli, args + ["--out", str(out), "--model", not_a_model, "--quiet"])
    loaded = check_items(path)
    # Bad data is refused before the model; good data gets as far as the model, which is not one.
    assert_one_line_error(result, path if isinstance(loaded, Exception) else not_a_model)
    assert not out.exists()


@FUZZ_CLI
@given(parts=st.lists(template_tokens, max_size=6), option=st.sampled_from(["--template", "--mcq-template"]))
def test_bad_templates_through_the_command(runner, scratch, not_a_model, parts, option):
    path = write(scratch, "".join(parts).encode(), ".txt")
    good = write_jsonl(scratch / f"good{next(_names)}.jsonl", [{"question": "q", "answer": "a"}])
    out = scratch / f"run{next(_names)}"
    args = ["answer", "--data", str(good), option, str(path), "--out", str(out), "--model", not_a_model]
    result = runner.invoke(cli, args)
    loaded = check_template(path, "answer" if option == "--template" else "mcq")
    assert_one_line_error(result, path if isinstance(loaded, Exception) else not_a_model)


@pytest.fixture(scope="module")
def graded_run(scratch, not_a_model) -> tuple[Path, str]:
    """A run directory with items, answers and judge grades written by hand; every answer is graded, so the
    model (which only has to resolve) is never loaded."""
    run = scratch / "graded-run"
    ids = ["q1", "q2", "q3", "q4"]
    run.mkdir()
    write_jsonl(run / "items.jsonl", [{"id": i, "question": "q", "reference": "a", "options": None} for i in ids])
    write_jsonl(run / "answers.jsonl", [{"id": i, "text": "a", "n_tokens": 1} for i in ids])
    scores = [0.1, 0.4, 0.6, 0.9]
    grades = [{"id": i, "correct": s >= 0.5, "score": s, "grader": "judge-verdict"} for i, s in zip(ids, scores)]
    write_jsonl(run / "grades.jsonl", grades)
    return run, not_a_model


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"\xff\xfe", ":1: line is not valid utf-8"),
        (b'{"id": "q1", "correct": true}\n[1]\n', ":2: expected a JSON object"),
        (b'{"id": "q1", "correct": "yes"}\n', ":1: field 'correct'"),
        (b'{"id": null, "correct": true}\n', ":1: field 'id'"),
        (b'{"id": "q1", "correct": true}\n{"id": "q1", "correct": false}\n', ":2: field 'id': duplicate id 'q1'"),
        (b"", "no labels"),
        (None, "file not found"),
    ],
)
def test_bad_labels_through_the_command(runner, scratch, graded_run, content, problem):
    run, model = graded_run
    path = scratch / f"labels{next(_names)}.jsonl"
    if content is not None:
        path.write_bytes(content)
    result = runner.invoke(
        cli, ["grade", "--out", str(run), "--model", model, "--grader", "judge", "--calibrate", "--labels", str(path)]
    )
    assert problem in assert_one_line_error(result, path)


def test_good_labels_through_the_command(runner, scratch, graded_run):
    run, model = graded_run
    labels = write(scratch, b'\xef\xbb\xbf{"id": "q1", "correct": false}\r\n\r\n{"id": "q4", "correct": true}\r\n')
    result = runner.invoke(
        cli, ["grade", "--out", str(run), "--model", model, "--grader", "judge", "--calibrate", "--labels", str(labels)]
    )
    assert result.exit_code == 0 and "calibrated on 2 answers" in result.output, result.output


# --------------------------------------------------------------------------- the config file (config.py)


@FUZZ_CLI
@given(data=st.binary(max_size=200) | odd_text.map(str.encode) | json_values.map(lambda v: json.dumps(v).encode()))
def test_config_files_never_end_in_a_traceback(runner, scratch, data):
    path = write(scratch, data, ".yaml")
    result = runner.invoke(cli, ["select", "--out", str(scratch / "no-run"), "--config", str(path)])
    # Only "\n" counts as a line break here: config.py quotes an unknown key as it is, "\x0b" or "\r" included.
    assert_one_line_error(result, breaks=lambda text: text.split("\n"))


@pytest.mark.parametrize(
    "data",
    [b"model: \xff\n", b"a: " + b"[" * 2000 + b"]" * 2000 + b"\n", b"answer: {max_tokens: " + b"9" * 5000 + b"}\n"],
    ids=["invalid-utf8", "nested-2000-deep", "5000-digit-int"],
)
def test_config_file_problems_name_the_file(runner, scratch, data):
    path = write(scratch, data, ".yaml")
    result = runner.invoke(cli, ["select", "--out", str(scratch / "no-run"), "--config", str(path)])
    assert_one_line_error(result, path)
