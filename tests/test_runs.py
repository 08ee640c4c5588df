"""The run directory: torn lines, atomic files, and one process at a time."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from slearn_mlx.cli import cli
from slearn_mlx.records import Answer
from slearn_mlx.runs import RunDir, RunInUse, atomic_file, lock_run, read_records


def test_torn_last_line_is_dropped_and_truncated(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"id": "a", "text": "x", "n_tokens": 1}\n{"id": "b", "text": "y", "n_tok')
    assert list(read_records(path, Answer)) == ["a"]
    assert path.read_text() == '{"id": "a", "text": "x", "n_tokens": 1}\n'


def test_atomic_file_leaves_the_old_content_on_error(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_file(path) as handle:
            handle.write("half-written")
            raise RuntimeError("crash")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


@pytest.fixture
def holder(tmp_path):
    """Another process that holds tmp_path/run until the test ends."""
    script = textwrap.dedent(f"""
        import sys, time
        from slearn_mlx.runs import RunDir, lock_run
        lock_run(RunDir({str(tmp_path / "run")!r}))
        print("locked", flush=True)
        time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "locked"
    yield process
    process.kill()
    process.wait()


def test_a_second_process_is_refused_while_the_first_holds_the_run(holder, runner, qa_file, tiny_model, tmp_path):
    out = str(tmp_path / "run")
    with pytest.raises(RunInUse, match=f"pid {holder.pid}"):
        lock_run(RunDir(out))
    result = runner.invoke(cli, ["answer", "--data", str(qa_file), "--model", tiny_model, "--out", out, "--quiet"])
    assert result.exit_code == 1 and f"in use by another slearn process (pid {holder.pid})" in result.output
    assert not (tmp_path / "run" / "answers.jsonl").exists()
    holder.kill()
    holder.wait()  # the operating system releases the lock of a killed holder
    result = runner.invoke(cli, ["answer", "--data", str(qa_file), "--model", tiny_model, "--out", out, "--quiet"])
    assert result.exit_code == 0, result.output
