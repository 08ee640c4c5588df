"""Fault injection: SIGKILL `slearn run` at random moments, rerun, and count exact resumes.

Each trial starts a fresh run directory and kills `slearn run` (tiny model,
judge grading, training with checkpoints every 2 steps, evaluation) at a
moment drawn uniformly from the length of an uninterrupted run, up to KILLS
times, then lets it finish and compares the run directory file by file with
an uninterrupted reference (report.json's timings aside). A kill that lands
after the process ended is not counted. Prints, per stage the kill hit, kills
and exact resumes; exits 1 if any trial did not resume exactly.

    python bench/kill_resume.py [--trials 20] [--kills 3] [--items 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import slearn_mlx  # noqa: E402,F401  (BLAS preload before mlx)

from killing import compare_runs, finish, kill_when, make_workspace, run_args, stage_reached  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--kills", type=int, default=3, help="kills per trial before it may finish")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    opts = parser.parse_args()
    rng = random.Random(opts.seed)

    with tempfile.TemporaryDirectory(prefix="slearn-kill-") as tmp:
        root = Path(tmp)
        model, data = make_workspace(root, opts.items)
        start = time.perf_counter()
        finish(run_args(model, data, root / "reference"))
        length = time.perf_counter() - start
        print(
            f"uninterrupted run: {length:.1f} s ({opts.items} items); {opts.trials} trials of up to {opts.kills} kills"
        )

        kills_by_stage: Counter = Counter()
        exact_by_stage: Counter = Counter()
        trials_exact = 0
        for trial in range(opts.trials):
            out = root / f"trial{trial}"
            args = run_args(model, data, out)
            stages = []
            for _ in range(opts.kills):
                if kill_when(args, lambda: True, delay=rng.uniform(0, length)):
                    stages.append(stage_reached(out))
            finish(args)
            problems = compare_runs(root / "reference", out)
            trials_exact += not problems
            for stage in stages:
                kills_by_stage[stage] += 1
                exact_by_stage[stage] += not problems
            status = "exact" if not problems else "DIFFERS: " + "; ".join(problems[:4])
            print(f"trial {trial:3d}: killed in {', '.join(stages) or '-':40s} {status}", flush=True)
            shutil.rmtree(out)

    total = sum(kills_by_stage.values())
    print(f"\n{'stage at kill':14s} {'kills':>6s} {'resumed exactly':>16s}")
    for stage in ("start", "answer", "grade", "select", "train", "evaluate", "done"):
        if kills_by_stage[stage]:
            print(f"{stage:14s} {kills_by_stage[stage]:6d} {exact_by_stage[stage]:16d}")
    print(f"{'all':14s} {total:6d} {sum(exact_by_stage.values()):16d}")
    print(f"trials resumed exactly: {trials_exact}/{opts.trials}")
    return 0 if trials_exact == opts.trials else 1


if __name__ == "__main__":
    sys.exit(main())
