"""Reading the formats users have, and the one-line errors for bad input."""

from __future__ import annotations

import json
import re

import pytest

from slearn_mlx.cli import cli
from slearn_mlx.data import DataError, Fields, load_items

from conftest import write_jsonl


def test_every_format_reads_to_the_same_item(tmp_path):
    rows = [
        {"question": "Q?", "answer": "A"},
        {"prompt": "Q?", "completion": "A", "id": "p1"},
        {
            "messages": [
                {"role": "system", "content": "s"},
                {"role": "user", "content": "Q?"},
                {"role": "assistant", "content": "A"},
            ]
        },
        {"instruction": "Q?", "input": "", "output": "A", "id": 7},
        {"instruction": "Translate", "input": "chat", "output": "cat", "id": "alp"},
        {"question": "Pick", "answer": "B. two", "options": "A. one\nB. two", "id": "mc1"},
        {"question": "Pick", "answer": "two", "options": ["one", "two"], "id": "mc2"},
        {"question": "Pick", "answer": "B", "options": {"a": "one", "b": "two"}, "id": "mc3"},
    ]
    items = load_items(write_jsonl(tmp_path / "d.jsonl", rows))
    assert [(i.question, i.reference) for i in items[:4]] == [("Q?", "A")] * 4
    assert items[1].id == "p1" and items[3].id == "7"
    assert items[4].question == "Translate\n\nchat"
    assert [i.reference_letter for i in items[5:]] == ["B", "B", "B"]


def test_generated_ids_are_stable_and_unique(tmp_path):
    rows = [{"question": "a", "answer": "1"}, {"question": "b", "answer": "2"}, {"question": "a", "answer": "1"}]
    first = [i.id for i in load_items(write_jsonl(tmp_path / "1.jsonl", rows))]
    again = [i.id for i in load_items(write_jsonl(tmp_path / "2.jsonl", rows))]
    reordered = [i.id for i in load_items(write_jsonl(tmp_path / "3.jsonl", rows[1:2] + rows[:1]))]
    assert first == again and len(set(first)) == 3
    assert reordered == [first[1], first[0]]


def test_bom_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"question": "q", "answer": "a"}\r\n\r\n{"prompt": "p", "completion": "c"}\r\n')
    assert [i.reference for i in load_items(path)] == ["a", "c"]


BAD = [
    ('{"question": "q", "answer": "a"}\n{"question": "q2", "answer": \n', 2, None, "invalid json"),
    ('{"question": "q", "answer": "a"}\n{"question": "q2"}\n', 2, "answer", "missing"),
    ('{"question": 3, "answer": "a"}\n', 1, "question", "expected a string, got int"),
    ('{"question": "q", "answer": ""}\n', 1, "answer", "empty"),
    (
        '{"question": "q", "answer": "a", "id": 1}\n\n{"question": "r", "answer": "b", "id": "1"}\n',
        3,
        "id",
        "duplicate id",
    ),
    ('{"question": "q", "answer": "a", "id": [1]}\n', 1, "id", "expected a string or an integer"),
    ('{"question": "q", "answer": "a", "options": 5}\n', 1, "options", "expected an object"),
    ('{"messages": [{"role": "user", "content": "q"}]}\n', 1, "messages", "last message"),
    ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]}\n', 1, "messages[0].content", "missing"),
    ('{"text": "just text"}\n', 1, None, "no known fields"),
    ("[1, 2]\n", 1, None, "expected a JSON object"),
    ("", None, None, "no items"),
    ("\n\n", None, None, "no items"),
]


@pytest.mark.parametrize("content, line, field, problem", BAD)
def test_bad_input_names_file_line_and_field(tmp_path, content, line, field, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_items(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:")
    if field:
        assert f"field '{field}'" in message
    assert problem in message


@pytest.mark.parametrize("content, line, field, problem", BAD)
def test_bad_input_through_the_cli(tmp_path, runner, content, line, field, problem):
    """One clear line, a non-zero exit, no traceback, and nothing written."""
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    out = tmp_path / "run"
    result = runner.invoke(cli, ["run", "--data", str(path), "--out", str(out), "--model", str(tmp_path)])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert problem in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert not out.exists()


def test_missing_file_and_directory(tmp_path, runner):
    for target, problem in ((tmp_path / "none.jsonl", "file not found"), (tmp_path, "is a directory")):
        result = runner.invoke(cli, ["answer", "--data", str(target), "--out", str(tmp_path / "r")])
        assert result.exit_code == 1 and problem in result.output


def test_invalid_utf8_is_located(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a"}\n{"question": "\xff", "answer": "a"}\n')
    with pytest.raises(DataError, match=r"u.jsonl:2: .*utf-8"):
        load_items(path)


# --------------------------------------------------------------------------- other file formats and field names


def _same_items(items):
    return [(i.question, i.reference, i.options) for i in items]


def test_csv_tsv_json_array_parquet_and_a_datasets_directory_read_alike(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"question": "What, said he?", "answer": "two\nlines"},
        {"question": "Q2", "answer": "B", "options": "A. x\nB. y"},
    ]
    expected = _same_items(load_items(write_jsonl(tmp_path / "d.jsonl", rows)))
    (tmp_path / "d.csv").write_text(
        '\ufeffquestion,answer,options\n"What, said he?","two\nlines",\n\nQ2,B,"A. x\nB. y"\n'
    )
    (tmp_path / "d.tsv").write_text(
        'question\tanswer\toptions\nWhat, said he?\t"two\nlines"\t\nQ2\tB\t"[""x"", ""y""]"\n'
    )
    (tmp_path / "d.json").write_text(json.dumps(rows, indent=2))
    table = pa.Table.from_pylist([rows[0] | {"options": None}, rows[1]])  # columns come from the first row
    pq.write_table(table, tmp_path / "d.parquet")
    saved = tmp_path / "saved"  # what datasets' save_to_disk writes: Arrow stream files listed in state.json
    saved.mkdir()
    with pa.OSFile(str(saved / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (saved / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
    for name in ("d.csv", "d.tsv", "d.json", "d.parquet", "saved"):
        assert _same_items(load_items(tmp_path / name)) == expected, name


def test_field_names_are_mapped_and_a_missing_one_lists_what_the_file_has(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"query": "q?", "response": "r", "key": "k1"}])
    items = load_items(path, Fields(question="query", answer="response", id="key"))
    assert [(i.id, i.question, i.reference) for i in items] == [("k1", "q?", "r")]
    with pytest.raises(
        DataError, match=r"f.jsonl:1: field 'answer_text': missing \(the record has 'query', 'response', 'key'\)"
    ):
        load_items(path, Fields(question="query", answer="answer_text"))
    with pytest.raises(DataError, match="the record has 'query', 'response', 'key'.*--question-field"):
        load_items(path)


BAD_TABLES = [
    ("bad.csv", "question,answer\nq,a,extra\n", "bad.csv:2: 3 cells, but the header row has 2"),
    ("bad.csv", "question,answer\nq\n", "bad.csv:2: 1 cells, but the header row has 2"),
    ("bad.csv", 'question,answer\n"q,a\n', "bad.csv:2: cannot read this CSV line"),
    ("bad.csv", "question,answer\nq1,a\n\nq2,\n", "bad.csv:4: field 'answer': missing"),
    ("bad.csv", "question,question\nq,a\n", "bad.csv:1: the header row names column 'question' twice"),
    ("bad.csv", '{"question": "q", "answer": "a"}\n', "bad.csv:1: looks like JSON, not CSV"),
    ("bad.csv", "", "bad.csv: no items"),
    ("bad.tsv", 'question\tanswer\n"q" x\ta\n', "bad.tsv:2: cannot read this TSV line"),
    ("bad.json", '[{"question": "q", "answer": "a"}, {"question": "q"}]', "bad.json: item 2: field 'answer': missing"),
    ("bad.json", '[{"question": "q", "answer": "a"},\n oops]', "bad.json:2: invalid JSON"),
    ("bad.json", "[]", "bad.json: no items"),
    ("bad.parquet", "not parquet", "bad.parquet: not a Parquet file"),
]


@pytest.mark.parametrize("name, content, message", BAD_TABLES)
def test_bad_tables_name_file_row_and_field(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        load_items(path)
    assert str(info.value).startswith(str(tmp_path / message.split(":")[0])) and message.split(":", 1)[1] in str(
        info.value
    )


def test_parquet_with_wrong_column_types_and_a_broken_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"question": ["q1", "q2"], "answer": [1, 2]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t.parquet: row 1: field 'answer': expected a string, got int"):
        load_items(tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut.parquet: cannot read this Parquet file"):
        load_items(tmp_path / "cut.parquet")


def test_a_csv_runs_through_the_command_with_mapped_fields(tmp_path, runner):
    path = tmp_path / "q.csv"
    path.write_text("Question,Answer\nq?,a\n")
    out = tmp_path / "run"
    args = ["run", "--data", str(path), "--out", str(out), "--model", str(tmp_path)]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1 and "--question-field" in result.output and "'Question', 'Answer'" in result.output
    result = runner.invoke(cli, [*args, "--question-field", "Question", "--answer-field", "Answer"])
    assert "q.csv" not in result.output  # the data is read; what fails now is the (missing) model
    assert not (out / "answers.jsonl").exists()


def test_a_list_of_answers_or_an_aliases_field_gives_aliases_and_teaches_the_first(tmp_path):
    rows = [
        {"question": "Capital of Bolivia?", "answer": ["Sucre", "La Paz"]},
        {"prompt": "Seven?", "completion": "7", "aliases": "seven"},
        {"question": "Q", "answer": "a", "aliases": ["a", "A."]},
        {"question": "Plain", "answer": "x"},
    ]
    items = load_items(write_jsonl(tmp_path / "a.jsonl", rows))
    assert [(i.reference, i.aliases) for i in items] == [
        ("Sucre", ["La Paz"]), ("7", ["seven"]), ("a", ["A."]), ("x", None)
    ]  # fmt: skip
    assert "aliases" not in items[3].to_json()
    nq = write_jsonl(tmp_path / "nq.jsonl", [{"question": "Who?", "answer": "Roy", "answers": ["Roy", "Art", "Paul"]}])
    assert load_items(nq, Fields(answer="answers"))[0].references == ["Roy", "Art", "Paul"]


@pytest.mark.parametrize(
    "row, field, problem",
    [
        ({"question": "q", "answer": []}, "answer", "an empty list"),
        ({"question": "q", "answer": ["a", 3]}, "answer[1]", "expected a non-empty string"),
        ({"question": "q", "answer": "a", "aliases": [""]}, "aliases[0]", "expected a non-empty string"),
        ({"question": "q", "answer": ["A", "B"], "options": ["x", "y"]}, "answer", "one answer"),
        ({"question": "q", "answer": "A", "options": ["x", "y"], "aliases": "B"}, "aliases", "one answer"),
    ],
)
def test_bad_answer_lists_are_named(tmp_path, row, field, problem):
    with pytest.raises(DataError, match=rf"l.jsonl:1: field '{re.escape(field)}': .*{problem}"):
        load_items(write_jsonl(tmp_path / "l.jsonl", [row]))
