"""Loading 100,000 QA items from each file format `--data` reads: seconds and peak memory, side by side.

Each format loads in a fresh process (peak resident memory is per process), the file written beforehand from the
same items; the load is timed three times and the median kept. Memory is the process's peak resident set minus
its resident set just before loading (the interpreter, pyarrow and slearn already imported).

    python bench/loading.py [--n 100000]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import resource, sys, time, json
import pyarrow, pyarrow.parquet  # imported before the baseline, as a run would have them
from slearn_mlx.data import load_items
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
before = rss_mb()
seconds = []
for _ in range(3):
    start = time.perf_counter()
    items = load_items(sys.argv[1])
    seconds.append(time.perf_counter() - start)
    del items
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": sorted(seconds)[1], "mb": peak - before}))
"""


def write_all(directory: Path, n: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": f"q{i}", "question": f"What is the capital of country number {i}?", "answer": f"City {i}"}
            for i in range(n)]  # fmt: skip
    paths = {name: directory / f"items.{name}" for name in ("jsonl", "json", "csv", "tsv", "parquet")}
    paths["jsonl"].write_text("".join(json.dumps(r) + "\n" for r in rows))
    paths["json"].write_text(json.dumps(rows))
    for name, delimiter in (("csv", ","), ("tsv", "\t")):
        with open(paths[name], "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), delimiter=delimiter)
            writer.writeheader()
            writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), paths["parquet"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, path in write_all(Path(tmp), args.n).items():
            out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
            results[name] = json.loads(out.stdout) | {"mb_file": path.stat().st_size / 2**20}
    base = results["jsonl"]
    print(f"{args.n:,} items per file; median of 3 loads, fresh process per format\n")
    print("| format | file MB | load s | vs JSONL | peak memory over baseline, MB |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, r in results.items():
        print(
            f"| {name} | {r['mb_file']:.1f} | {r['seconds']:.2f} | {r['seconds'] / base['seconds']:.2f}x | {r['mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
