"""What the commands share: their options, built from the config dataclasses (each option's flag, type, help and
default live on its field), the run directory and configuration they resolve, and the one-line error for a user's
mistake."""

from __future__ import annotations

import functools
import sys

import click

from slearn_mlx import prompts
from slearn_mlx.calibrate import CALIBRATE_SAMPLE


def user_errors(command):
    """Turn a user's mistake (`UserError`) into a one-line error and exit status 1. Anything else is a bug and keeps
    its traceback: mlx reports shape and dtype mistakes as ValueError, which must not read as the user's."""
    from slearn_mlx.errors import UserError

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except UserError as exc:
            from slearn_mlx import distributed

            line = " ".join(str(exc).split("\n"))
            if distributed.launched() and distributed.rank() > 0 and not isinstance(exc, distributed.PeerLost):
                line = f"rank {distributed.rank()} of {distributed.size()}: {line}"
            raise click.ClickException(line) from None
        except KeyboardInterrupt:
            click.echo("interrupted; run the same command again to resume", err=True)
            sys.exit(130)

    return wrapper


def combine(*decorators):
    """Several click decorators as one, applied in the order written."""

    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def _config_field(key: str):
    """The config dataclass field an option key names: "train__epochs", or a top-level one such as "model"."""
    from dataclasses import fields

    from slearn_mlx.config import SECTIONS, RunConfig

    section, _, name = key.rpartition("__")
    config_class = SECTIONS[section] if section else RunConfig
    return next(spec for spec in fields(config_class) if spec.name == name)


_KINDS = {"int": int, "float": float, "str": str}


def setting(key: str, *, flag: str | None = None, kind=None):
    """The option that sets config field `key` ("stage__field") when it is given; its flag, type, choices, help and
    the default its help shows come from the field (options.py)."""
    from slearn_mlx.options import flag_of, shown_default

    spec = _config_field(key)
    text = f"{spec.metadata['help']} [{shown_default(spec)}]"
    flag = flag or flag_of(spec)
    if spec.type == "bool":
        return click.option(flag, key, is_flag=True, default=None, help=text)
    choices = spec.metadata.get("choices")
    kind = kind or (click.Choice(choices) if choices else _KINDS[spec.type.split(" | ")[0]])
    return click.option(flag, key, type=kind, default=None, help=text)


def section(section: str, *, skip: tuple[str, ...] = (), only: tuple[str, ...] | None = None, kinds=None):
    """The options of a config section (a stage's dataclass): all, but those in `skip`, or those in `only`;
    `kinds` gives some another click type (a file name for a template)."""
    from slearn_mlx.config import SECTIONS
    from slearn_mlx.options import option_fields

    kinds = kinds or {}
    specs = [spec for spec in option_fields(SECTIONS[section])
             if spec.name not in skip and (only is None or spec.name in only)]  # fmt: skip
    return combine(*(setting(f"{section}__{spec.name}", kind=kinds.get(spec.name)) for spec in specs))


FILE = click.Path(dir_okay=False)
OUT = click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
FORCE = click.option(
    "--force", is_flag=True, help="Start over: recompute this stage and the ones after it instead of resuming."
)
QUIET = click.option("--quiet", is_flag=True, help="No progress bars.")
CONFIG = click.option("--config", "config_file", type=FILE, help="YAML file of options (command-line options win).")
MODEL = setting("model")
TRUST_REMOTE_CODE = setting("trust_remote_code")
FIELDS = section("fields")
DATA = combine(setting("data", kind=click.Path(resolve_path=True)), FIELDS)
TEST = setting("test", kind=click.Path(resolve_path=True))
MAX_TOKENS = setting("answer__max_tokens")
TEMPERATURE = setting("answer__temperature")
TEMPLATE = setting("answer__template", kind=FILE)
MCQ_TEMPLATE = setting("answer__mcq_template", kind=FILE)
# Every command that grades takes these; the scoring batch is the grade command's own.
GRADE_OPTIONS = section("grade", skip=("batch_size",), kinds={"judge_template": FILE})
CALIBRATE = click.option(
    "--calibrate",
    is_flag=True,
    help="Fit the threshold of the judge or the probe on labelled items (see --labels) and keep it for the run.",
)
CALIBRATE_SAMPLE = click.option(
    "--calibrate-sample",
    type=click.IntRange(min=1),
    default=CALIBRATE_SAMPLE,
    show_default=True,
    help="With the probe: how many items the model answers to label for --calibrate.",
)
LABELS = click.option(
    "--labels",
    default="auto",
    show_default=True,
    help="Trusted labels for --calibrate: auto (option/contains where decisive), exact, contains, f1, option, "
    "or a JSONL file of {id, correct}.",
)
SELECT_OPTIONS = section("select")
TRAIN_OPTIONS = section("train")
# What compare varies per strategy is in the strategy's name; these apply to all of them.
COMPARE_SELECT_OPTIONS = section("select", only=("valid_fraction", "valid_split", "lead"))


# Template options name files; the configuration keeps the templates' text: (fields, required fields).
TEMPLATE_FILES = {
    "answer__template": (prompts.ANSWER_FIELDS, None),
    "answer__mcq_template": (prompts.MCQ_FIELDS, None),
    "grade__judge_template": (prompts.JUDGE_FIELDS, prompts.JUDGE_REQUIRED),
}


def session(out: str, config_file, overrides: dict, method: str | None = None):
    """The run directory and its resolved configuration."""
    from slearn_mlx.config import resolve_config
    from slearn_mlx.runs import RunDir

    for key, (fields, required) in TEMPLATE_FILES.items():
        if overrides.get(key) is not None:
            overrides[key] = prompts.read_template(overrides[key], fields, required)
    run = RunDir(out)
    return run, resolve_config(run, config_file, overrides, method)


def run_stage(function, stage: str, out, config_file, force: bool, quiet: bool, overrides: dict) -> None:
    """Run one stage's pipeline `function` on a run directory and print its summary line."""
    from slearn_mlx import pipeline

    run, config = session(out, config_file, overrides)
    if force:
        pipeline.start_over(run, config, stage)
    summary = function(run, config, pipeline.SharedModel(config.model, config.trust_remote_code), progress=not quiet)
    click.echo(str(summary))
