"""Reading the formats users have, and the one-line errors for bad input."""

from __future__ import annotations

import pytest

from slearn_mlx.cli import cli
from slearn_mlx.data import DataError, load_items

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
