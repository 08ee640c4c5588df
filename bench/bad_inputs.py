"""How many bad input files end in a traceback instead of one clear line (target: none).

Generates N bad inputs of many kinds -- random bytes, invalid UTF-8, a BOM, CRLF and lone CR line ends,
multi-megabyte lines, JSON values and fields of the wrong type, empty strings, nulls, duplicate ids,
unpaired surrogate escapes, deep nesting, truncated files, mutated records, a 100,000-line file with one bad
line, a directory, a missing file, no read permission (skipped as root, who reads anything); CSV/TSV with odd
quoting, BOMs, ragged rows and foreign headers, JSON arrays, Parquet files with columns of every type -- and runs each
through the `slearn` command in-process with click's CliRunner, at every entry point that reads a user's file:

    answer --data BAD                       run --data GOOD --test BAD
    grade --calibrate --labels BAD          (a run directory of hand-written items, answers and judge grades)
    answer --template BAD, answer --mcq-template BAD, grade --judge-template BAD
    select --config BAD.yaml

The loader (load_items, read_labels, read_template, resolve_config) is also called directly, to tell input
it accepts ("loaded OK"; the command then stops at a model without weights or a missing run stage) from
input it rejects. A rejection is "clean" when the command exits non-zero with one line "Error: ..." naming
the file, and its line when the loader names one; otherwise "unclear". A traceback is an exception other
than SystemExit out of the command, or "Traceback" in its output. Exits 1 if there is any.

    python bench/bad_inputs.py 1000 --seed 0
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from click.testing import CliRunner

import slearn_mlx  # noqa: F401  (BLAS preload before mlx)
from slearn_mlx.calibrate import read_labels
from slearn_mlx.cli import cli
from slearn_mlx.config import resolve_config
from slearn_mlx.data import load_items
from slearn_mlx.prompts import ANSWER_FIELDS, JUDGE_FIELDS, JUDGE_REQUIRED, MCQ_FIELDS, read_template
from slearn_mlx.runs import RunDir

RUN_IDS = ["q1", "q2", "q3", "q4"]
ODD = ["", " ", "\t", "\u00a0", "\ufeff", "\u2028", "\x00", "\r", "é", "日本", "🙂", "{", "}", '"', "\\", "\u0301"]
WRONG = [0, -1, 1.5, float("nan"), True, False, None, [], ["x"], {}, {"a": 1}, ""]


class Skip(Exception):
    """This kind cannot be made here (no read permission, as root)."""


# --------------------------------------------------------------------------- good rows, to make bad ones from


def text(rng: random.Random) -> str:
    return "".join(rng.choice(ODD[5:] + list("abcdefgh  ?")) for _ in range(rng.randint(1, 20))).strip() or "x"


def qa_row(rng: random.Random) -> dict:
    q, a = text(rng), text(rng)
    rows = [
        {"question": q, "answer": a},
        {"question": q, "answer": "B", "options": {"A": q, "B": a}},
        {"question": q, "answer": a, "options": [q, a, "c"]},
        {"question": q, "answer": "A", "options": "A. one\nB. two"},
        {"prompt": q, "completion": a},
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]},
        {"instruction": q, "input": rng.choice(["", a]), "output": a},
    ]
    row = rng.choice(rows)
    if rng.random() < 0.5:
        row["id"] = rng.choice([f"id{rng.randrange(10**9)}", rng.randrange(10**9)])
    return row


def label_row(rng: random.Random) -> dict:
    return {"id": rng.choice(RUN_IDS + [f"x{rng.randrange(10**6)}"]), "correct": rng.random() < 0.5}


def good_lines(rng: random.Random, row, n: int | None = None) -> list[str]:
    rows = [row(rng) for _ in range(n or rng.randint(1, 8))]
    if row is label_row:  # labels need distinct ids to be good
        rows = list({r["id"]: r for r in rows}.values())
    return [json.dumps(r, ensure_ascii=rng.random() < 0.5) for r in rows]


def join(lines: list[str], eol: str = "\n") -> bytes:
    return (eol.join(lines) + eol).encode()


# --------------------------------------------------------------------------- bad JSONL files (QA data, labels)


def insert(rng: random.Random, lines: list[str], bad: str) -> list[str]:
    lines = list(lines)
    lines.insert(rng.randint(0, len(lines)), bad)
    return lines


def with_field(rng: random.Random, row, value) -> str:
    record = row(rng)
    record[rng.choice(sorted(record))] = value
    return json.dumps(record)


def jsonl_random_bytes(rng, path, row):
    path.write_bytes(rng.randbytes(rng.randint(0, 3000)))


def jsonl_invalid_utf8(rng, path, row):
    lines = [line.encode() for line in good_lines(rng, row)]
    bad = rng.choice([b"\xff", b"\xfe\xff", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\x80"])
    k = rng.randrange(len(lines))
    at = rng.randint(0, len(lines[k]))
    lines[k] = lines[k][:at] + bad + lines[k][at:]
    path.write_bytes(b"\n".join(lines) + b"\n")


def jsonl_bom(rng, path, row):
    lines = good_lines(rng, row)
    if rng.random() < 0.3:
        lines = insert(rng, lines, "\ufeff" + lines[0])  # a BOM in the middle: pasted files
    path.write_bytes(codecs.BOM_UTF8 + join(lines, rng.choice(["\n", "\r\n"])))


def jsonl_line_ends(rng, path, row):
    lines = good_lines(rng, row)
    eol = rng.choice(["\r\n", "\r\n", "\r", "\n\r", "\u2028"])
    path.write_bytes(join(lines, eol)[: -len(eol.encode())] if rng.random() < 0.5 else join(lines, eol))


def jsonl_long_line(rng, path, row):
    size = rng.randint(1, 10) * 1_000_000
    long = rng.choice(["x", "é", "ab "]) * (size // 2)
    bad = rng.choice(
        [
            json.dumps({"question": long, "answer": "a"}),
            json.dumps({"id": long, "correct": True}),
            '{"question": "' + long,  # never closed
            "[" + "1," * (size // 2),
            long,
        ]
    )
    path.write_bytes(join(insert(rng, good_lines(rng, row, 3), bad)))


def jsonl_wrong_json_type(rng, path, row):
    bad = json.dumps(rng.choice([[], [1, 2], ["question", "answer"], 3, -0.5, "text", True, None, 1e308]))
    path.write_bytes(join(insert(rng, good_lines(rng, row), bad)))


def jsonl_wrong_field_type(rng, path, row):
    value = rng.choice([v for v in WRONG if v not in ("", None)])
    path.write_bytes(join(insert(rng, good_lines(rng, row), with_field(rng, row, value))))


def jsonl_empty_strings(rng, path, row):
    choice = rng.randrange(4)
    if choice == 0:
        path.write_bytes(b"")
    elif choice == 1:
        path.write_bytes(rng.choice([b"\n", b"\n\n \n", b"\t\r\n", codecs.BOM_UTF8, codecs.BOM_UTF8 + b"\r\n"]))
    else:
        bad = with_field(rng, row, rng.choice(["", " ", "\n", "\u00a0", "\t"]))
        path.write_bytes(join(insert(rng, good_lines(rng, row), bad)))


def jsonl_nulls(rng, path, row):
    bad = rng.choice(["null", with_field(rng, row, None), '{"messages": [null]}', '{"question": null}'])
    path.write_bytes(join(insert(rng, good_lines(rng, row), bad)))


def jsonl_duplicate_ids(rng, path, row):
    same = rng.choice(["a", "1", 1, "q1", " x "])
    twin = str(same) if isinstance(same, int) and rng.random() < 0.5 else same
    first, second = row(rng), row(rng)
    first["id"], second["id"] = same, twin
    lines = insert(rng, good_lines(rng, row), json.dumps(first))
    path.write_bytes(join(insert(rng, lines, json.dumps(second))))


def jsonl_surrogate(rng, path, row):
    escape = rng.choice(["\\ud800", "\\udfff", "\\udc80", "\\ud83d", "\\ude00\\ud83d"])
    record = row(rng)
    field = rng.choice(sorted(k for k, v in record.items() if isinstance(v, str)) or ["id"])
    record[field] = "SURROGATE"
    bad = json.dumps(record).replace('"SURROGATE"', f'"a{escape}b"')
    path.write_bytes(join(insert(rng, good_lines(rng, row), bad)))


def deep(rng: random.Random, depth: int) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return "[" * depth + "]" * depth * rng.randint(0, 1)
    if kind == 1:
        return '{"a": ' * depth + "1" + "}" * depth * rng.randint(0, 1)
    return '{"question": ' + "[" * depth + "]" * depth + ', "answer": "a"}'


def jsonl_deep_nesting(rng, path, row):
    bad = deep(rng, rng.choice([100, 1_000, 10_000, 100_000, 1_000_000]))
    path.write_bytes(join(insert(rng, good_lines(rng, row), bad)))


def jsonl_truncated(rng, path, row):
    data = join(good_lines(rng, row))
    path.write_bytes(data[: rng.randint(0, len(data) - 1)])


def jsonl_mutated(rng, path, row):
    record = row(rng)
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(sorted(record) + ["options", "messages", "id", "text"])
        action = rng.randrange(3)
        if action == 0:
            record.pop(field, None)
        elif action == 1:
            record[field] = rng.choice(WRONG + [text(rng), [{"role": "user"}], {"A": "x"}, "A. x", ["x"] * 30])
        else:
            record[text(rng)] = record.pop(field, "x")
    path.write_bytes(join(insert(rng, good_lines(rng, row), json.dumps(record))))


def jsonl_100k_lines(rng, path, row):
    lines = [json.dumps({"question": f"What is {i}?", "answer": str(i)}) for i in range(100_000)]
    if row is label_row:
        lines = [json.dumps({"id": f"x{i}", "correct": i % 2 == 0}) for i in range(100_000)]
    if rng.random() < 0.8:
        lines[rng.randrange(len(lines))] = rng.choice(['{"question": "q"}', "[]", '{"id": 1.5, "correct": 1}', "{"])
    path.write_bytes(join(lines))


def directory(rng, path, row):
    path.mkdir()


def missing(rng, path, row):
    pass


def unreadable(rng, path, row):
    if os.geteuid() == 0:
        raise Skip
    path.write_bytes(join(good_lines(rng, row)))
    path.chmod(0)


JSONL_KINDS = [
    jsonl_random_bytes, jsonl_invalid_utf8, jsonl_bom, jsonl_line_ends, jsonl_long_line, jsonl_wrong_json_type,
    jsonl_wrong_field_type, jsonl_empty_strings, jsonl_nulls, jsonl_duplicate_ids, jsonl_surrogate,
    jsonl_deep_nesting, jsonl_truncated, jsonl_mutated, jsonl_100k_lines, directory, missing, unreadable,
]  # fmt: skip


# --------------------------------------------------------------------------- bad tables: CSV/TSV, JSON arrays, Parquet


def suffix(ending: str):
    def mark(maker):
        maker.suffix = ending
        return maker

    return mark


def csv_cell(rng: random.Random) -> str:
    return rng.choice(
        ["q", "a", "", " ", '"', '""', ",", "\t", "\n", "\r", "é", "\x00", "\ufeff", "x" * 200_000, "[1", "{}"]
    )


@suffix(".csv")
def csv_random_bytes(rng, path, row):
    path.write_bytes(rng.randbytes(rng.randint(0, 3000)))


@suffix(".csv")
def csv_cells(rng, path, row):
    """A header (sometimes ours, sometimes not) and rows of odd cells, quoted or not, ragged or not."""
    header = rng.choice([["question", "answer"], ["question", "answer", "id", "options"], ["Q", "A"], ["question"], []])
    rows = [header] + [[csv_cell(rng) for _ in range(rng.choice([len(header), rng.randint(0, 5)]))] for _ in range(5)]
    sep = rng.choice([",", ";"])
    quote = rng.random() < 0.5
    cells = lambda r: sep.join(f'"{c.replace(chr(34), chr(34) * 2)}"' if quote else c for c in r)  # noqa: E731
    eol = rng.choice(["\n", "\r\n", "\r"])
    path.write_bytes((codecs.BOM_UTF8 if rng.random() < 0.3 else b"") + eol.join(map(cells, rows)).encode())


@suffix(".tsv")
def tsv_good_rows_one_bad(rng, path, row):
    lines = ["question\tanswer"] + [f"q{i}\ta{i}" for i in range(rng.randint(1, 50))]
    lines.insert(rng.randint(1, len(lines)), rng.choice(["q\ta\textra", "q", '"q\ta', "\ta", "q\t"]))
    path.write_bytes(join(lines, rng.choice(["\n", "\r\n"])))


@suffix(".json")
def json_array(rng, path, row):
    values = [row(rng) for _ in range(rng.randint(0, 5))]
    if values and rng.random() < 0.8:
        values[rng.randrange(len(values))] = rng.choice([1, None, [], "x", {"question": 1}, {"answer": ["a", 2]}])
    text = json.dumps(values)
    path.write_text(text[: rng.randint(1, len(text))] if rng.random() < 0.3 else text)


@suffix(".parquet")
def parquet_columns(rng, path, row):
    """Parquet files with columns of every type, a truncated file, or no rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pick = [["q", "a"], [1, 2], [["a", "b"], []], [None, None], [0.5, 1.5], [{"k": "v"}, {"k": "w"}], [True, False]]
    table = pa.table({name: pa.array(rng.choice(pick)) for name in ("question", "answer", rng.choice(["id", "x"]))})
    if rng.random() < 0.2:
        table = table.slice(0, 0)
    pq.write_table(table, path)
    if rng.random() < 0.3:
        data = path.read_bytes()
        path.write_bytes(data[: rng.randint(0, len(data))])


TABLE_KINDS = [csv_random_bytes, csv_cells, tsv_good_rows_one_bad, json_array, parquet_columns]


# --------------------------------------------------------------------------- bad prompt templates

TOKENS = ["{question}", "{options}", "{reference}", "{answer}", "{", "}", "{{", "}}", "{x}", "{0}", "{}",
          "{question!r}", "{question:>9}", "{question:{x}}", "{question.upper}", "{question[0]}", "{answer!x}",
          "Q: ", "\n", "\r\n", "\r", "\ufeff", "é", "\x00", " "]  # fmt: skip


def template_text(rng: random.Random) -> str:
    return "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 10)))


def template_tokens(rng, path, row):
    path.write_bytes(template_text(rng).encode())


def template_random_bytes(rng, path, row):
    path.write_bytes(rng.randbytes(rng.randint(0, 500)))


def template_invalid_utf8(rng, path, row):
    data = template_text(rng).encode()
    at = rng.randint(0, len(data))
    path.write_bytes(data[:at] + rng.choice([b"\xff", b"\xc3(", b"\xed\xa0\x80"]) + data[at:])


def template_bom_crlf(rng, path, row):
    body = rng.choice(["{question}", "{question}\n\n{options}", "{question} {reference} {answer}", template_text(rng)])
    path.write_bytes(codecs.BOM_UTF8 * rng.randint(0, 2) + body.replace("\n", rng.choice(["\r\n", "\r"])).encode())


def template_long_line(rng, path, row):
    end = rng.choice(["{question}", "{", "{" + "q" * 10**6 + "}", "\n" * 100_000 + "\xff"])
    path.write_bytes(("x" * rng.randint(1, 10) * 1_000_000 + end).encode())


def template_empty(rng, path, row):
    path.write_bytes(rng.choice([b"", b"\n", b"\r\n\r\n", codecs.BOM_UTF8, b"   "]))


TEMPLATE_KINDS = [
    template_tokens, template_random_bytes, template_invalid_utf8, template_bom_crlf, template_long_line,
    template_empty, directory, missing, unreadable,
]  # fmt: skip


# --------------------------------------------------------------------------- bad config files


def yaml_value(rng: random.Random):
    return rng.choice(WRONG[:-1] + ["x", "1e999", 10**30, {"max_tokens": "many"}, [1, 2], "{question:{x}}"])


def config_wrong_types(rng, path, row):
    stage = rng.choice(["answer", "grade", "select", "train", "model", "data", "test", "nonsense"])
    field = rng.choice(["max_tokens", "temperature", "template", "grader", "threshold", "epochs", "rank", "x"])
    doc = {stage: {field: yaml_value(rng)} if rng.random() < 0.7 else yaml_value(rng)}
    path.write_bytes(json.dumps(doc).encode())  # JSON is YAML


def config_yaml_text(rng, path, row):
    lines = ["answer:", "  max_tokens: 8", "grade: {grader: exact}", "- 1", "? [1]", ": 2", "model: a/b", "&a x", "*a",
             "!!python/object:os.system x", "x: !!binary aGk=", "when: 2001-02-30", "  - nested", "\t"]  # fmt: skip
    path.write_bytes("\n".join(rng.choice(lines) for _ in range(rng.randint(0, 6))).encode())


def config_random_bytes(rng, path, row):
    path.write_bytes(rng.randbytes(rng.randint(0, 500)))


def config_invalid_utf8(rng, path, row):
    path.write_bytes(b"answer:\n  max_tokens: 8\nmodel: " + rng.choice([b"\xff", b"\xc3(", b"\xed\xa0\x80"]) + b"\n")


def config_bom_crlf(rng, path, row):
    path.write_bytes(codecs.BOM_UTF8 + b"answer:\r\n  max_tokens: 8\r\ngrade:\r\n  grader: exact\r\n")


def config_deep_nesting(rng, path, row):
    depth = rng.choice([50, 300, 1_000, 10_000])
    path.write_bytes(b"a: " + rng.choice([b"[" * depth + b"]" * depth, b"{a: " * depth + b"1" + b"}" * depth]))


def config_long_line(rng, path, row):
    path.write_bytes(b"model: " + b"x" * rng.randint(1, 10) * 1_000_000 + b"\n")


def config_huge_int(rng, path, row):
    path.write_bytes(b"answer: {max_tokens: " + b"9" * rng.choice([100, 4_301, 50_000]) + b"}\n")


CONFIG_KINDS = [
    config_wrong_types, config_yaml_text, config_random_bytes, config_invalid_utf8, config_bom_crlf,
    config_deep_nesting, config_long_line, config_huge_int, template_empty, directory, missing, unreadable,
]  # fmt: skip


# --------------------------------------------------------------------------- entry points


class Bench:
    """The fixed parts every case needs: good data, a model that resolves but has no weights, a graded run."""

    def __init__(self, root: Path):
        self.root = root
        self.good = root / "good.jsonl"
        self.good.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n")
        self.model = root / "weightless-model"
        self.model.mkdir()
        (self.model / "config.json").write_text("{}")
        self.run = root / "graded-run"
        self.case = 0

    def fresh_run(self) -> Path:
        """The graded run directory as new: every answer judged, so calibrating never loads the model."""
        shutil.rmtree(self.run, ignore_errors=True)
        self.run.mkdir()
        rows = {
            "items.jsonl": [{"id": i, "question": "q", "reference": "a", "options": None} for i in RUN_IDS],
            "answers.jsonl": [{"id": i, "text": "a", "n_tokens": 1} for i in RUN_IDS],
            "grades.jsonl": [
                {"id": i, "correct": s >= 0.5, "score": s, "grader": "judge-verdict"}
                for i, s in zip(RUN_IDS, [0.1, 0.4, 0.6, 0.9])
            ],
        }
        for name, records in rows.items():
            (self.run / name).write_text("".join(json.dumps(r) + "\n" for r in records))
        return self.run

    def out(self) -> str:
        self.case += 1
        return str(self.root / f"out{self.case}")

    # Each entry point: (the command line for a bad file, the loader the command calls on it).
    def data(self, bad: Path):
        return ["answer", "--data", str(bad), "--out", self.out(), "--model", str(self.model), "--quiet"], load_items

    def test(self, bad: Path):
        args = ["run", "--data", str(self.good), "--test", str(bad), "--out", self.out(), "--model", str(self.model)]
        return args + ["--quiet"], load_items

    def labels(self, bad: Path):
        args = ["grade", "--out", str(self.fresh_run()), "--model", str(self.model), "--grader", "judge", "--calibrate"]
        return args + ["--labels", str(bad), "--quiet"], read_labels

    def answer_template(self, bad: Path, option="--template", fields=ANSWER_FIELDS):
        args = ["answer", "--data", str(self.good), option, str(bad), "--out", self.out(), "--model", str(self.model)]
        return args + ["--quiet"], lambda path: read_template(path, fields)

    def mcq_template(self, bad: Path):
        return self.answer_template(bad, "--mcq-template", MCQ_FIELDS)

    def judge_template(self, bad: Path):
        args = ["grade", "--out", self.out(), "--model", str(self.model), "--judge-template", str(bad)]
        return args, lambda path: read_template(path, JUDGE_FIELDS, JUDGE_REQUIRED)

    def config(self, bad: Path):
        args = ["select", "--out", self.out(), "--config", str(bad)]
        return args, lambda path: resolve_config(RunDir(self.root / "no-run"), path, {})


ENTRY_POINTS = {
    "answer --data": ("data", JSONL_KINDS, qa_row),
    "answer --data (tables)": ("data", TABLE_KINDS, qa_row),
    "run --test": ("test", JSONL_KINDS, qa_row),
    "grade --labels": ("labels", JSONL_KINDS, label_row),
    "answer --template": ("answer_template", TEMPLATE_KINDS, None),
    "answer --mcq-template": ("mcq_template", TEMPLATE_KINDS, None),
    "grade --judge-template": ("judge_template", TEMPLATE_KINDS, None),
    "select --config": ("config", CONFIG_KINDS, None),
}


def kind_name(maker) -> str:
    return maker.__name__.split("_", 1)[-1].replace("_", "-") if "_" in maker.__name__ else maker.__name__


def one_line_error(output: str) -> str | None:
    """The output's one "Error: ..." line, or None when there is not exactly one, last."""
    errors = [line for line in output.split("\n") if line.startswith("Error: ")]
    return errors[0] if len(errors) == 1 and output.endswith(errors[0] + "\n") else None


def judge(bench: Bench, entry: str, maker, rng: random.Random, path: Path) -> tuple[str, str]:
    """(outcome, detail) of one bad file through one entry point."""
    method, _, row = ENTRY_POINTS[entry]
    try:
        maker(rng, path, row)
    except Skip:
        return "skipped", "as root"
    args, loader = getattr(bench, method)(path)
    try:
        loader(path)
        rejection = None
    except (ValueError, OSError) as exc:
        rejection = str(exc)
    except Exception as exc:  # a loader bug; the command shows it too
        rejection = f"{type(exc).__name__}: {exc}"
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    if (result.exception is not None and not isinstance(result.exception, SystemExit)) or "Traceback" in result.output:
        return "traceback", f"{type(result.exception).__name__}: {str(result.exception)[:150]}"
    if rejection is None:
        return "loaded OK", ""
    error = one_line_error(result.output)
    located = re.match(rf"{re.escape(str(path))}:(\d+): ", rejection)
    where = f"{path}:{located.group(1)}:" if located else str(path)
    if result.exit_code != 0 and error is not None and where in error:
        return "clean error", error
    return "unclear", (error or result.output)[:200]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("n", nargs="?", type=int, default=1000, help="how many bad inputs [1000]")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pairs = [(entry, maker) for entry, (_, kinds, _) in ENTRY_POINTS.items() for maker in kinds]
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    examples: dict[str, list[str]] = defaultdict(list)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slearn-bad-") as tmp:
        bench = Bench(Path(tmp).resolve())
        i = tried = 0
        while tried < args.n:  # skipped kinds (no read permission, as root) do not count towards N
            entry, maker = pairs[i % len(pairs)]
            rng = random.Random(f"{args.seed}-{i}")
            ending = ".yaml" if entry == "select --config" else getattr(maker, "suffix", ".jsonl")
            path = bench.root / f"case{i}{ending}"
            outcome, detail = judge(bench, entry, maker, rng, path)
            counts[(entry, kind_name(maker))][outcome] += 1
            tried += outcome != "skipped"
            if outcome in ("traceback", "unclear") and len(examples[outcome]) < 12:
                examples[outcome].append(f"case {i} ({entry}, {kind_name(maker)}): {detail}")
            if path.is_dir():
                path.rmdir()
            elif path.exists():
                path.chmod(0o644)
                path.unlink()
            for out in bench.root.glob("out*"):
                shutil.rmtree(out)
            i += 1
    seconds = time.perf_counter() - start

    columns = ["tried", "clean error", "loaded OK", "unclear", "traceback", "skipped"]
    print(f"{'entry point':24} {'kind':18} " + " ".join(f"{c:>11}" for c in columns))
    total = Counter()
    for (entry, kind), c in counts.items():
        c["tried"] = sum(c.values()) - c["skipped"]
        total.update(c)
        print(f"{entry:24} {kind:18} " + " ".join(f"{c[col]:>11}" for col in columns))
    print(f"{'total':43} " + " ".join(f"{total[col]:>11}" for col in columns))
    for outcome, lines in examples.items():
        print(f"\n{outcome}, first {len(lines)}:")
        print("\n".join(f"  {line}" for line in lines))
    print(f"\n{total['tried']} bad inputs in {seconds:.1f} s: {total['traceback']} tracebacks")
    sys.exit(1 if total["traceback"] else 0)


if __name__ == "__main__":
    main()
