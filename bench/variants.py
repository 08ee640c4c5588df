"""Running one benchmark variant in a child process, so its time and peak memory are its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Callable


def report(result: dict) -> None:
    """In the child: hand the variant's figures to the parent."""
    print("RESULT " + json.dumps(result))


def run_variant(script: str, name: str, args: list[str]) -> dict:
    """In the parent: run `script --variant NAME ARGS` and return the figures it reported; exit if it failed.

    PyTorch variants run without slearn's OpenBLAS preload, which is meant for mlx, not for torch's own BLAS.
    """
    env = dict(os.environ, SLEARN_BLAS="bundled") if name.startswith("torch") else None
    child = subprocess.run([sys.executable, script, "--variant", name, *args], capture_output=True, text=True, env=env)
    line = next((line for line in child.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"{name} failed:\n{child.stdout[-2000:]}\n{child.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def run_interleaved(
    script: str, names: list[str], args: list[str], repeats: int, describe: Callable[[dict], str]
) -> dict[str, list[dict]]:
    """Run every variant once per repeat, the variants interleaved (drift on a shared machine hits all
    alike); prints one line per run, `describe(result)` after its name. The results by variant."""
    results: dict[str, list[dict]] = {name: [] for name in names}
    width = max(map(len, names))
    for repeat in range(repeats):
        for name in names:
            result = run_variant(script, name, args)
            results[name].append(result)
            print(f"repeat {repeat}: {name:{width}s} {describe(result)}", flush=True)
    return results
