"""What made a run: the model, the data files' contents and the settings that decide answers and grades.

A run directory keeps its fingerprint in fingerprint.json. Every command compares
the fingerprint of what it was given with it before computing anything, so two
runs are never silently mixed: a difference is refused with a message saying what
differs, and `--force` starts over from the first stage it affects.
"""

from __future__ import annotations

from pathlib import Path

from slearn_mlx.common import file_hash, quoted
from slearn_mlx.config import RunConfig
from slearn_mlx.errors import UserError
from slearn_mlx.models.load import resolve_model
from slearn_mlx.runs import STAGES, RunDir, read_json, write_json_atomic

# Settings that change what a stage computes; batch sizes and the like only change how fast.
ANSWER_KEYS = ("max_tokens", "temperature", "template", "mcq_template")
GRADE_KEYS = ("grader", "judge_mode", "judge_template", "threshold", "f1_threshold", "cot_max_tokens")
PROBE_KEYS = ("probe_frame", "probe_lead", "probe_sample", "answer_grader")  # only where the probe grades
# The first stage each part of the fingerprint feeds: a change there invalidates it and all after it.
FIRST_STAGE = {"model": "answer", "data": "answer", "answer": "answer", "grade": "grade", "test": "evaluate"}


class RunMismatch(UserError, ValueError):
    """The run directory was made with another model, data or config."""


_digests: dict[tuple, str] = {}  # (path, size, mtime) -> sha256, for this process: a stage checks more than once


def file_digest(path: Path, known: dict | None = None) -> dict:
    """sha256 of a file, reused from `known` (or this process's earlier reading) when its path, size and
    mtime are unchanged."""
    stat = path.stat()
    identity = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    key = tuple(identity.values())
    if known and all(known.get(k) == v for k, v in identity.items()) and "sha256" in known:
        _digests[key] = known["sha256"]
    if key not in _digests:
        _digests[key] = file_hash(path)
    return identity | {"sha256": _digests[key]}


def model_fingerprint(model: str | None, known: dict | None = None) -> dict:
    """A local model directory by its files' contents; a Hugging Face id by name."""
    resolved = resolve_model(model)
    path = Path(resolved)
    if not path.is_dir():
        return {"id": resolved}
    known_files = (known or {}).get("files", {})
    files = {
        entry.name: file_digest(entry, known_files.get(entry.name))
        for entry in sorted(path.iterdir())
        if entry.is_file() and not entry.name.startswith(".")
    }
    return {"path": str(path.resolve()), "files": files}


def _data(path: str | None, known: dict | None, fields: dict | None = None) -> dict | None:
    if not path or not Path(path).exists():
        return None  # a data file gone after answering is not needed any more: items.jsonl holds the items
    if Path(path).is_dir():  # a `datasets` directory: its files, as for a model
        return model_fingerprint(path, known) | ({"fields": fields} if fields else {})
    return file_digest(Path(path), known) | ({"fields": fields} if fields else {})


def make_fingerprint(config: RunConfig, known: dict | None = None, parts=FIRST_STAGE) -> dict:
    """The fingerprint of a config, or of some of its `parts`; `known` (a stored fingerprint) spares
    re-hashing unchanged files."""
    known = known or {}

    def grade() -> dict:
        settings = {key: getattr(config.grade, key) for key in GRADE_KEYS}
        settings["threshold"] = config.grade.cut  # the threshold in force, whether set or the grader's default
        if config.grade.grader == "probe":
            settings |= {key: getattr(config.grade, key) for key in PROBE_KEYS}
        if config.grade.judge_model is not None:
            judge = (known.get("grade") or {}).get("judge_model")
            settings["judge_model"] = model_fingerprint(config.grade.judge_model, judge)
        return settings

    mapped = {name: value for name, value in vars(config.fields).items() if value is not None}
    makers = {
        "model": lambda: model_fingerprint(config.model, known.get("model")),
        "data": lambda: _data(config.data, known.get("data"), mapped),
        "test": lambda: _data(config.test, known.get("test"), mapped),
        "answer": lambda: {key: getattr(config.answer, key) for key in ANSWER_KEYS},
        "grade": grade,
    }
    return {part: makers[part]() for part in parts}


def _comparable(part: str, value):
    """What must be equal: contents (and the field names data is read by), not where the files lie."""
    if part in ("model", "data", "test"):
        if "files" in value:
            contents = {name: f["sha256"] for name, f in value["files"].items()}
        else:
            contents = value.get("sha256", value)
        return contents if part == "model" else {"contents": contents, "fields": value.get("fields")}
    if part == "grade" and "judge_model" in value:
        return value | {"judge_model": _comparable("model", value["judge_model"])}
    return value


def _describe(part: str, old, new) -> str:
    """What changed since the run was made, in words: "the data file q.jsonl changed (sha256 3f2a1c… then, …)"."""
    if part in ("data", "test"):
        what = f"the {'training data' if part == 'data' else 'test'} file"
        if old.get("fields") != new.get("fields"):
            return f"{what}'s field names changed ({_fields(old)} then, {_fields(new)} now)"
        return _describe_files(what, old, new)
    if part == "model":
        if "files" not in old or "files" not in new:
            return f"the model is another one ({_where(old)} then, {_where(new)} now)"
        return _describe_files("the model", old, new)
    changed = [
        key for key in sorted(set(old) | set(new)) if _comparable(part, old).get(key) != _comparable(part, new).get(key)
    ]
    return ", ".join(f"{part}.{key} was {_short(old.get(key))}, is {_short(new.get(key))} now" for key in changed)


def _describe_files(what: str, old: dict, new: dict) -> str:
    moved = old.get("path") != new.get("path")
    if "files" in old and "files" in new:  # a directory: say which of its files differ
        names = sorted(set(old["files"]) | set(new["files"]))
        changed = [
            n for n in names if (old["files"].get(n) or {}).get("sha256") != (new["files"].get(n) or {}).get("sha256")
        ]
        detail = f"{', '.join(changed[:3])}{', ...' if len(changed) > 3 else ''} differ"
    else:
        detail = f"sha256 {old['sha256'][:8]}… then, {new['sha256'][:8]}… now"
    if moved:
        return f"{what} is another one with other contents ({_where(old)} then, {_where(new)} now; {detail})"
    return f"{what} {_where(new)} changed since ({detail})"


def _where(value: dict) -> str:
    return str(value.get("path", value.get("id")))


def _fields(value: dict) -> str:
    fields = value.get("fields") or {}
    return ", ".join(f"{k}={v!r}" for k, v in fields.items()) if fields else "the usual names"


def _short(value) -> str:
    """A setting's value in a message; a model by its path or id."""
    return quoted(value.get("path", value.get("id")) if isinstance(value, dict) else value)


def differences(stored: dict, current: dict) -> dict[str, str]:
    """{part: what differs} between a stored and a current fingerprint; parts missing on either side are new."""
    out = {}
    for part in FIRST_STAGE:
        old, new = stored.get(part), current.get(part)
        if old is None or new is None:
            continue
        if _comparable(part, old) != _comparable(part, new):
            out[part] = _describe(part, old, new)
    return out


def read_fingerprint(run: RunDir) -> dict | None:
    path = run.fingerprint
    return read_json(path) if path.exists() else None


def check_fingerprint(run: RunDir, config: RunConfig) -> tuple[dict, dict[str, str]]:
    """(the current fingerprint of what the run has stored, what differs from it); nothing is written.
    Only stored parts are computed: a run nothing has been done in needs no model to check."""
    stored = read_fingerprint(run) or {}
    current = make_fingerprint(config, stored, [part for part in FIRST_STAGE if stored.get(part) is not None])
    return current, differences(stored, current)


def mismatch_error(run: RunDir, diffs: dict[str, str]) -> RunMismatch:
    return RunMismatch(
        f"{run.root} was made from other inputs: {'; '.join(diffs.values())}; "
        "use another --out, or --force to start over from the stage it affects"
    )


def forget_fingerprint(run: RunDir, stages) -> None:
    """Drop the parts that feed `stages`, whose outputs were just deleted."""
    stored = read_fingerprint(run)
    if stored is not None:
        kept = {part: value for part, value in stored.items() if FIRST_STAGE.get(part) not in stages}
        write_json_atomic(run.fingerprint, kept)


def save_fingerprint(run: RunDir, fingerprint: dict, stage: str) -> None:
    """Store the parts of the fingerprint that `stage` and the stages before it use.

    A part is stored once a stage computes from it: answering fixes the model
    and the data, grading the grade settings, evaluating the test file.
    """
    stored = read_fingerprint(run) or {}
    used = STAGES[: STAGES.index(stage) + 1]
    for part, first in FIRST_STAGE.items():
        if first in used and fingerprint.get(part) is not None:
            stored[part] = fingerprint[part]
    write_json_atomic(run.fingerprint, stored)
