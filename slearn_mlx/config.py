"""The run's configuration: one dataclass per stage, resolved and validated once.

Precedence: command-line options > `--config` YAML > the run directory's saved
config.json > defaults. Every problem is reported at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from slearn_mlx.answer import AnswerConfig
from slearn_mlx.common import quoted
from slearn_mlx.data import Fields
from slearn_mlx.errors import ConfigError
from slearn_mlx.grade import GradeConfig
from slearn_mlx.options import option
from slearn_mlx.runs import RunDir, read_json, write_json_atomic
from slearn_mlx.select import SelectConfig
from slearn_mlx.training.config import TrainConfig

STAGE_CONFIGS = {"answer": AnswerConfig, "grade": GradeConfig, "select": SelectConfig, "train": TrainConfig}
SECTIONS = {"fields": Fields, **STAGE_CONFIGS}  # the config's mappings of options


@dataclass
class RunConfig:
    model: str | None = option(
        None, "mlx-lm model: an installed name (slearn models list), a local directory or a Hugging Face id.",
        shown="the embedded SmolLM2-135M-Instruct",
    )  # fmt: skip
    data: str | None = option(
        None, "Training QA file: JSONL, a JSON array, CSV/TSV with a header row, Parquet, or a `datasets` "
        "save_to_disk directory.", shown="none",
    )  # fmt: skip
    test: str | None = option(None, "Held-out QA file for evaluation, as --data.", shown="none")
    trust_remote_code: bool = option(False, "Let a model or tokenizer run the Python code it ships with.")
    fields: Fields = field(default_factory=Fields)  # the data files' field names, where not the usual ones
    answer: AnswerConfig = field(default_factory=AnswerConfig)
    grade: GradeConfig = field(default_factory=GradeConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_json(self) -> dict:
        return asdict(self)

    def problems(self) -> list[str]:
        return [p for name in SECTIONS for p in getattr(self, name).problems()]


def _merge(config: RunConfig, values: dict[str, Any], source: str, problems: list[str]) -> RunConfig:
    """Apply a nested dict ({"model": ..., "train": {"epochs": ...}}) onto a config."""
    top = {}
    for key, value in values.items():
        if key in SECTIONS:
            if not isinstance(value, dict):
                problems.append(f"{source}: '{key}' must be a mapping of options")
                continue
            stage = getattr(config, key)
            known = {f.name: f for f in fields(stage)}
            updates = {}
            for name, v in value.items():
                if name not in known:
                    problems.append(f"{source}: unknown option {quoted(f'{key}.{name}')}")
                    continue
                ok, v = _coerce(known[name].type, v)
                if not ok:
                    problems.append(f"{source}: '{key}.{name}' must be {known[name].type}, got {quoted(v)}")
                    continue
                updates[name] = v
            top[key] = replace(stage, **updates)
        elif key in ("model", "data", "test"):
            if value is not None and not isinstance(value, str):
                problems.append(f"{source}: '{key}' must be a string")
                continue
            top[key] = value
        elif key == "trust_remote_code":
            if not isinstance(value, bool):
                problems.append(f"{source}: '{key}' must be true or false")
                continue
            top[key] = value
        else:
            problems.append(f"{source}: unknown option {quoted(key)}")
    return replace(config, **top)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _coerce(annotation: str, value: Any) -> tuple[bool, Any]:
    """(fits, value) for a field annotated like "int", "float" or "str | None"; ints count as floats."""
    kinds = [k.strip() for k in annotation.split("|")]
    if value is None:
        return "None" in kinds, value
    if isinstance(value, bool):
        return "bool" in kinds, value
    if isinstance(value, int) and "float" in kinds and "int" not in kinds:
        return True, float(value)
    return any(isinstance(value, _TYPES[k]) for k in kinds if k in _TYPES), value


def _nest(overrides: dict[str, Any]) -> dict[str, Any]:
    """{"train__epochs": 2, "model": m} -> {"train": {"epochs": 2}, "model": m}, dropping unset (None) values.

    Command-line option names carry their stage before a double underscore."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        stage, _, name = key.partition("__")
        if name:
            nested.setdefault(stage, {})[name] = value
        else:
            nested[key] = value
    return nested


# The paper's exact method (SLearnLLM): the model answers every question, grades its own answers, and trains on
# the wrongly answered pairs alone, the reference as it is. The defaults are what measured best instead
# (README, "Choosing what to train"): the probe finds the unknown, which trains fully, one rehearsal of the rest,
# the lead.
METHODS = {
    "slearn": {},
    "paper": {
        "grade": {"grader": "judge"},
        "select": {"budget": None, "rehearse": 0.0, "anchors": 0.0, "lead": ""},
    },
}


def resolve_config(
    run: RunDir,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    method: str | None = None,
) -> RunConfig:
    """The run's configuration from defaults, its saved config, a YAML file, a method's settings and command-line
    overrides, each over the ones before."""
    import yaml

    problems: list[str] = []
    config = RunConfig()
    if run.config.exists():
        try:
            saved = read_json(run.config)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"{run.config}: cannot read the run's saved config ({_reason(exc)}); "
                "delete it to start over, or use another --out"
            ) from None
        if not isinstance(saved, dict):
            raise ConfigError(
                f"{run.config}: the run's saved config is not a mapping; delete it to start over, or use another --out"
            )
        config = _merge(config, saved, str(run.config), problems)
    if config_file is not None:
        path = Path(config_file)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8-sig")) or {}
        except (OSError, ValueError, yaml.YAMLError, RecursionError) as exc:
            # ValueError covers invalid UTF-8 and YAML values Python refuses (a 5,000-digit int, 2001-02-30);
            # RecursionError, nesting deeper than the parser goes.
            raise ConfigError(f"{path}: cannot read the config file ({_reason(exc)})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of options")
        config = _merge(config, loaded, str(path), problems)
    if method is not None:
        config = _merge(config, METHODS[method], f"--method {method}", problems)
    config = _merge(config, _nest(overrides or {}), "command line", problems)
    problems += config.problems()
    if problems:
        raise ConfigError("invalid configuration: " + "; ".join(problems))
    return config


def _reason(exc: BaseException) -> str:
    """An exception as a short single line."""
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:160]}"


def save_config(run: RunDir, config: RunConfig) -> None:
    write_json_atomic(run.config, config.to_json())
