"""The run directory: where every stage reads and writes, and how it resumes.

A run directory holds one JSONL file per record stage, keyed by item id and
flushed line by line, plus whole-file outputs written atomically (temp + rename):

    config.json           resolved configuration of the run
    fingerprint.json      the model, data hashes and settings that made it; a mismatched rerun is refused
    items.jsonl           the training items, normalised
    answers.jsonl         stage 1: the model's answers
    probe.jsonl           stage 2 with the probe: how likely the model is to say each reference
    grades.jsonl          stage 2: the verdicts
    calibration.json      the fitted threshold of the judge or the probe, and its agreement before and after
    calibration_answers.jsonl  the sample the probe's calibration answered
    rephrased.jsonl       stage 3 with --rephrase: the model's rewrites of the references
    train/train.jsonl     stage 3: the pairs to train on, in mlx-lm chat format
    train/valid.jsonl
    train/losses.jsonl    stage 4: losses per epoch and step
    train/checkpoint.safetensors  stage 4 while it runs: adapters, optimizer state, position
    adapters/             stage 4: LoRA adapters in mlx-lm's format
    eval/                 stage 5: answers and grades on the test file (base, adapted), and retention
    report.json           what happened, per stage
    .lock                 held (flock) by the process working in the directory
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Container, Iterable, Iterator, TypeVar

import jsonlines

from slearn_mlx import distributed
from slearn_mlx.errors import MissingInput, UserError
from slearn_mlx.records import QAItem, Record

STAGES = ("answer", "grade", "select", "train", "evaluate")
# The training directory in mlx-lm's layout (`mlx_lm.lora --data RUN/train` reads it), and what training adds.
TRAIN_FILE, VALID_FILE = "train.jsonl", "valid.jsonl"
ANCHORS_FILE = "anchors.jsonl"  # known pairs the KL term holds in place (select --anchors)
LOSSES_FILE = "losses.jsonl"
CHECKPOINT_FILE = "checkpoint.safetensors"
# The adapters in mlx-lm's format: what `mlx_lm.generate --adapter-path` and `mlx_lm.fuse` load.
ADAPTER_FILE, ADAPTER_CONFIG = "adapters.safetensors", "adapter_config.json"
R = TypeVar("R", bound=Record)
T = TypeVar("T")


class RunDir:
    """Paths of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    config = property(lambda self: self.root / "config.json")
    items = property(lambda self: self.root / "items.jsonl")
    answers = property(lambda self: self.root / "answers.jsonl")
    grades = property(lambda self: self.root / "grades.jsonl")
    probe = property(lambda self: self.root / "probe.jsonl")
    calibration_answers = property(lambda self: self.root / "calibration_answers.jsonl")
    calibration = property(lambda self: self.root / "calibration.json")
    train_dir = property(lambda self: self.root / "train")
    adapters = property(lambda self: self.root / "adapters")
    eval_dir = property(lambda self: self.root / "eval")
    general = property(lambda self: self.root / "eval" / "general.json")  # general skills, base and adapted
    # The probe in the chat frame (the knowledge map's reading of what moved), by the adapted model and the base one.
    adapted_probe = property(lambda self: self.root / "eval" / "adapted_chat_probe.jsonl")
    chat_probe = property(lambda self: self.root / "eval" / "chat_probe.jsonl")
    report = property(lambda self: self.root / "report.json")
    rephrased = property(lambda self: self.root / "rephrased.jsonl")
    fingerprint = property(lambda self: self.root / "fingerprint.json")
    train_file = property(lambda self: self.train_dir / TRAIN_FILE)
    valid_file = property(lambda self: self.train_dir / VALID_FILE)
    anchors = property(lambda self: self.train_dir / ANCHORS_FILE)
    losses = property(lambda self: self.train_dir / LOSSES_FILE)
    checkpoint = property(lambda self: self.train_dir / CHECKPOINT_FILE)

    def eval_answers(self, variant: str) -> Path:
        """evaluate's answers of one variant: base, adapted or retention."""
        return self.eval_dir / f"{variant}_answers.jsonl"

    def eval_grades(self, variant: str) -> Path:
        return self.eval_dir / f"{variant}_grades.jsonl"

    def outputs(self, stage: str) -> list[Path]:
        """What a stage writes, which --force deletes."""
        return {
            "answer": [self.answers],
            "grade": [self.grades, self.probe, self.calibration, self.calibration_answers],
            "select": [self.rephrased, self.train_file, self.valid_file, self.anchors],
            "train": [self.adapters, self.losses, self.checkpoint],
            "evaluate": [self.eval_dir],
        }[stage]

    def require(self, path: Path, stage: str) -> Path:
        """`path`, or a message naming the stage to run first."""
        if not path.exists():
            raise MissingInput(f"{path.name} not found in {self.root}; run `slearn {stage}` first")
        return path


_STORAGE_PROBLEMS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file size limit is reached",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}


class StorageError(UserError, OSError):
    """A run directory that cannot be written: full, read-only or not ours."""

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def writing(path: Path):
    """Turn a full disk or a read-only directory met while writing `path` into one clear StorageError."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        if exc.errno not in _STORAGE_PROBLEMS:
            raise
        raise StorageError(
            exc.errno,
            f"cannot write {path}: {_STORAGE_PROBLEMS[exc.errno]}; make room or fix its permissions and run "
            "the same command again (what is finished is kept)",
        ) from None


class RunInUse(UserError, OSError):
    """Another process holds the run directory."""


_held_locks: dict[Path, int] = {}
PARTIAL = ".partial-"  # in the names of files being written, until they are renamed into place


def lock_run(run: RunDir) -> None:
    """Hold the run directory for this process until it exits; refuse if another process holds it.

    An exclusive flock on RUN/.lock: the operating system releases it when the
    holder exits, however it exits, so a killed run never leaves a stale lock.
    """
    root = run.root.resolve()
    if root in _held_locks or not distributed.is_writer():  # one lock for a distributed group: rank 0's
        return
    with writing(root / ".lock"):
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RunInUse(
            f"{run.root} is in use by another slearn process (pid {holder}); wait for it to finish or use another --out"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held_locks[root] = fd
    # Nobody else writes here now: temporary files are what a killed process left half written.
    for stale in root.rglob(f".*{PARTIAL}*"):
        stale.unlink(missing_ok=True)


@contextmanager
def atomic_file(path: Path, mode: str = "w"):
    """A file handle whose content replaces `path` only once the block finishes.

    It is written beside `path` (so the rename is atomic), synced, then renamed
    into place; on any error the temporary file is removed and `path` is untouched.

    In a distributed group only rank 0 writes (the others write to /dev/null), and every rank waits at the end
    until the file is in place.
    """
    if not distributed.is_writer():
        with open(os.devnull, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        distributed.barrier()
        return
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL}", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would surprise a user
    try:
        with writing(path), os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    distributed.barrier()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to `path` atomically."""
    with atomic_file(path) as handle:
        json.dump(obj, handle, indent=2)
        handle.write("\n")


def write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    """Write a whole JSONL file atomically."""
    with atomic_file(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_json(path: Path) -> dict:
    with open(path) as handle:
        return json.load(handle)


def update_report(run: RunDir, **sections: Any) -> dict:
    """Merge sections into report.json (atomically) and return the whole report."""
    report = read_json(run.report) if run.report.exists() else {}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(report.get(key), dict):
            report[key].update(value)
        else:
            report[key] = value
    write_json_atomic(run.report, report)
    return report


def read_records(path: Path, record_type: type[R], *, repair: bool = True) -> dict[str, R]:
    """Records of a stage file by id, in file order.

    A torn last line (a write cut off by a crash) is dropped and, with `repair`,
    truncated from the file so appending continues on a clean line.
    """
    if not path.exists():
        return {}
    records: dict[str, R] = {}
    good_bytes = 0
    with open(path, "rb") as handle:
        data = handle.read()
    for raw in data.splitlines(keepends=True):
        try:
            if not raw.endswith(b"\n"):
                raise ValueError("torn line")
            record = record_type.from_json(json.loads(raw))
        except (ValueError, TypeError):
            break  # everything from the first unreadable line on is recomputed
        records[record.id] = record
        good_bytes += len(raw)
    if repair and good_bytes < len(data) and distributed.is_writer():
        with open(path, "r+b") as handle:
            handle.truncate(good_bytes)
    return records


class RecordWriter:
    """Appends records to a stage file, one flushed line each.

    In a distributed group only rank 0 writes, and closing waits for every rank, so that no rank reads the
    file before it is whole."""

    def __init__(self, path: Path):
        self.path = path
        self._writer = None
        if not distributed.is_writer():
            return
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(path, "a", encoding="utf-8")
        self._writer = jsonlines.Writer(self._handle, flush=True, compact=True)

    def write(self, record: Record) -> None:
        if self._writer is not None:
            with writing(self.path):
                self._writer.write(record.to_json())

    def close(self, sync: bool = True) -> None:
        if self._writer is not None:
            with writing(self.path):
                self._writer.close()
                self._handle.close()
        if sync:  # not on the way out of an error: the other ranks may be in another exchange
            distributed.barrier()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(sync=exc_type is None)


def pending_batches(
    items: list[T], done: Container[str], batch_size: int, length: Callable[[T], int]
) -> Iterator[list[T]]:
    """The batches that still hold an item not `done`, whole.

    Batches are cut from all items sorted by `length` (similar lengths pad
    little), so they are the same however much an earlier, interrupted run did:
    a resumed batch computes exactly what the uninterrupted run computed.
    """
    ordered = sorted(items, key=length)
    for i in range(0, len(ordered), batch_size):
        batch = ordered[i : i + batch_size]
        if any(item.id not in done for item in batch):
            yield batch


def save_items(run: RunDir, items: list[QAItem]) -> None:
    write_jsonl_atomic(run.items, (item.to_json() for item in items))


def load_run_items(run: RunDir) -> list[QAItem]:
    """The run's training items, as the answer stage saved them."""
    return list(read_records(run.require(run.items, "answer"), QAItem, repair=False).values())
