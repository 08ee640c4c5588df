"""Nothing leaves the machine, nothing is unpickled, no shipped code runs unasked, and a run directory
that cannot be written says so in one line."""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from slearn_mlx.cli import cli

from conftest import QA, write_jsonl

NO_NETWORK = """
import socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(args)
    raise OSError("network use blocked by the test")
socket.socket.connect = socket.socket.connect_ex = refuse
socket.create_connection = socket.getaddrinfo = refuse
from slearn_mlx.cli import cli
try:
    cli.main(sys.argv[1:], standalone_mode=False)
finally:
    print("NETWORK ATTEMPTS", len(attempts), attempts[:3])
"""


def test_the_pipeline_runs_with_sockets_blocked(tiny_model, qa_file, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    args = ["run", "--data", str(qa_file), "--test", str(qa_file), "--model", tiny_model, "--out",
            str(tmp_path / "run"), "--grader", "judge", "--threshold", "1", "--max-tokens", "3", "--epochs", "1", "--quiet"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-c", NO_NETWORK, *args], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "NETWORK ATTEMPTS 0 []" in result.stdout
    assert (tmp_path / "run" / "adapters" / "adapters.safetensors").exists()


class _Marker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickled_weights_are_never_loaded(runner, tiny_model, qa_file, tmp_path):
    model = tmp_path / "pickled"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(tiny_model) / name, model / name)
    marker = tmp_path / "unpickled"
    (model / "pytorch_model.bin").write_bytes(pickle.dumps(_Marker(str(marker))))
    result = runner.invoke(cli, ["answer", "--data", str(qa_file), "--model", str(model), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "safetensors" in result.output and not marker.exists()


def test_code_shipped_with_a_model_runs_only_when_asked(runner, tiny_model, qa_file, tmp_path):
    model = Path(shutil.copytree(tiny_model, tmp_path / "custom"))
    marker = tmp_path / "code-ran"
    (model / "custom.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\nfrom mlx_lm.models.llama import Model, ModelArgs\n"
    )
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps(config | {"model_file": "custom.py"}))
    args = ["answer", "--data", str(qa_file), "--model", str(model), "--max-tokens", "2", "--quiet"]
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "--trust-remote-code" in result.output and result.output.count("\n") == 1
    assert not marker.exists()
    result = runner.invoke(cli, [*args, "--out", str(tmp_path / "b"), "--trust-remote-code"])
    assert result.exit_code == 0, result.output
    assert marker.exists()


def _limited(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_is_one_line_and_the_rerun_finishes_the_same(tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "qa.jsonl", QA * 20)  # 120 answers
    base = [sys.executable, "-m", "slearn_mlx", "answer", "--data", str(data), "--model", tiny_model,
            "--max-tokens", "24", "--batch-size", "8", "--quiet"]  # fmt: skip
    reference = subprocess.run([*base, "--out", str(tmp_path / "ref")], capture_output=True, text=True)
    assert reference.returncode == 0, reference.stderr
    full_size = (tmp_path / "ref" / "answers.jsonl").stat().st_size
    others = max(p.stat().st_size for p in (tmp_path / "ref").iterdir() if p.name != "answers.jsonl")
    assert others < full_size
    limit = (others + full_size) // 2
    # The kernel refuses to let a file grow past the limit (EFBIG), as a full disk refuses (ENOSPC).
    out = tmp_path / "full"
    result = subprocess.run([*base, "--out", str(out)], capture_output=True, text=True, preexec_fn=_limited(limit))
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "cannot write" in result.stderr and "answers.jsonl" in result.stderr
    kept = (out / "answers.jsonl").read_text()
    assert 0 < len(kept) <= limit
    again = subprocess.run([*base, "--out", str(out)], capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert (out / "answers.jsonl").read_text() == (tmp_path / "ref" / "answers.jsonl").read_text()


def test_a_read_only_run_directory_is_one_line(tiny_model, qa_file, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o555)
    command = [sys.executable, "-m", "slearn_mlx", "answer", "--data", str(qa_file), "--model", tiny_model,
               "--out", str(out), "--quiet"]  # fmt: skip
    if os.geteuid() == 0:
        # Root writes through any permission: drop the capabilities that let it.
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", *command]
    result = subprocess.run(command, capture_output=True, text=True)
    if "setpriv:" in result.stderr:
        pytest.skip(f"cannot drop capabilities here: {result.stderr.strip()}")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert "cannot write" in result.stderr and "permission denied" in result.stderr
