"""The stage commands: answer, grade, select, train, evaluate, try, run and compare, each a thin wrapper over one
pipeline function."""

from __future__ import annotations

from pathlib import Path

import click

from slearn_mlx.cli.options import (
    CALIBRATE,
    CALIBRATE_SAMPLE,
    COMPARE_SELECT_OPTIONS,
    CONFIG,
    DATA,
    FIELDS,
    FORCE,
    GRADE_OPTIONS,
    LABELS,
    MAX_TOKENS,
    MCQ_TEMPLATE,
    MODEL,
    OUT,
    QUIET,
    SELECT_OPTIONS,
    TEMPERATURE,
    TEMPLATE,
    TEST,
    TRAIN_OPTIONS,
    TRUST_REMOTE_CODE,
    combine,
    run_stage,
    session,
    setting,
    user_errors,
)

GENERAL_HELP = ("Also score the base and the adapted model on the shipped general multiple-choice sets (MMLU, "
                "OpenBookQA, CommonsenseQA; each option's text scored after the question, no generation).")  # fmt: skip


@click.command()
@combine(DATA, OUT, MODEL, TRUST_REMOTE_CODE, CONFIG, MAX_TOKENS, TEMPERATURE, TEMPLATE, MCQ_TEMPLATE, FORCE, QUIET)
@setting("answer__batch_size")
@user_errors
def answer(out, config_file, force, quiet, **overrides):
    """Stage 1: the model answers every question of --data.

    \b
    Example:
      slearn answer --data train.jsonl --out runs/demo --max-tokens 32
    """
    from slearn_mlx import pipeline

    run_stage(pipeline.stage_answer, "answer", out, config_file, force, quiet, overrides)


@click.command()
@combine(OUT, DATA, MODEL, TRUST_REMOTE_CODE, CONFIG, GRADE_OPTIONS, CALIBRATE, CALIBRATE_SAMPLE, LABELS, FORCE, QUIET)
@click.option("--show", type=int, default=0, help="Print N graded items (a random sample) side by side.")
@setting("grade__batch_size")
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

    run, config = session(out, config_file, overrides)
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


@click.command()
@combine(OUT, CONFIG, SELECT_OPTIONS)
@user_errors
def select(out, config_file, **overrides):
    """Stage 3: write the pairs to train on (the wrongly answered ones, by default) as mlx-lm files.

    \b
    Example:
      slearn select --out runs/demo     # -> runs/demo/train/{train,valid}.jsonl
      slearn select --out runs/demo --replay 0.2 --uncertain 0.1
    """
    from slearn_mlx import pipeline

    run_stage(pipeline.stage_select, "select", out, config_file, False, True, overrides)


@click.command()
@combine(OUT, MODEL, TRUST_REMOTE_CODE, CONFIG, TRAIN_OPTIONS, FORCE, QUIET)
@user_errors
def train(out, config_file, force, quiet, **overrides):
    """Stage 4: LoRA fine-tune on the selected pairs; adapters in mlx-lm's format.

    \b
    Example:
      slearn train --out runs/demo --epochs 3 --rank 8
      mlx_lm.generate --model MODEL --adapter-path runs/demo/adapters --prompt "..."
    """
    from slearn_mlx import pipeline

    run_stage(pipeline.stage_train, "train", out, config_file, force, quiet, overrides)


@click.command()
@combine(OUT, TEST, FIELDS, MODEL, TRUST_REMOTE_CODE, CONFIG, MAX_TOKENS, GRADE_OPTIONS, FORCE, QUIET)
@click.option("--general", is_flag=True, help=GENERAL_HELP)
@user_errors
def evaluate(out, config_file, force, quiet, general, **overrides):
    """Stage 5: accuracy of base and base + adapters on --test, side by side; with --general, on general
    multiple-choice sets too (what the adaptation cost outside the domain).

    \b
    Example:
      slearn evaluate --out runs/demo --test test.jsonl
      slearn evaluate --out runs/demo --general
    """
    from slearn_mlx import pipeline
    from slearn_mlx.general import evaluate_general
    from slearn_mlx.runs import lock_run, update_report

    run, config = session(out, config_file, overrides)
    if force:
        pipeline.start_over(run, config, "evaluate")
    models = pipeline.SharedModel(config.model, config.trust_remote_code)
    if config.test or not general:
        click.echo(str(pipeline.stage_evaluate(run, config, models, progress=not quiet)))
    if general:
        if not run.config.exists():
            raise click.ClickException(f"{run.root}: not a run directory (no config.json); give the --out of a run")
        lock_run(run)
        summary = evaluate_general(*models.get(), run)
        update_report(run, general=summary.to_json())
        click.echo(str(summary))


@click.command(name="try")
@click.argument("questions", nargs=-1)
@combine(OUT, CONFIG, MAX_TOKENS, TEMPERATURE, TEMPLATE)
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
    run, config = session(out, config_file, overrides)
    models = pipeline.SharedModel(config.model, config.trust_remote_code)
    if questions:
        click.echo("\n\n".join(map(str, pipeline.ask_run(run, config, models, list(questions)))))
    while interactive:
        question = click.prompt("question", default="", show_default=False, err=True).strip()
        if not question:
            break
        click.echo(str(pipeline.ask_run(run, config, models, [question])[0]))


@click.command()
@combine(
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
@combine(CALIBRATE, CALIBRATE_SAMPLE, LABELS)
@setting("answer__batch_size", flag="--answer-batch-size")
@click.option(
    "--method",
    type=click.Choice(["slearn", "paper"]),
    default=None,
    help="slearn: the measured defaults (the probe, every pair it finds unknown, one rehearsal of the rest); "
    "paper: SLearnLLM as published (answer, self-grade with the judge, train on the wrong pairs alone). "
    "Options given beside it win [slearn].",
)
@combine(FORCE, QUIET)
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

    run_dir, config = session(out, config_file, overrides, method)
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


@click.command()
@combine(DATA, TEST, OUT, MODEL, TRUST_REMOTE_CODE, CONFIG, MAX_TOKENS, TEMPLATE, MCQ_TEMPLATE, GRADE_OPTIONS)
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    help="A strategy to compare (repeatable): all, wrong, budgetF or paper (wrong+bare), joined with + to parts: "
    "probe; replayF, own, rephrase, uncertainF, maxN, rehearseF, anchorsF, bare, split; klW, epochsN, lrX, rankN, "
    "layersN, loraplusR, skip, late [all, paper, wrong+probe+rehearse1].",
)
@click.option(
    "--seeds", type=click.IntRange(min=1), default=1, show_default=True,
    help="Train every strategy this many times with different seeds (data order, draws, LoRA's initial weights).",
)  # fmt: skip
@combine(CALIBRATE, LABELS)
@click.option("--general", is_flag=True, help=GENERAL_HELP)
@combine(COMPARE_SELECT_OPTIONS, TRAIN_OPTIONS)
@combine(QUIET)
@user_errors
def compare(out, config_file, quiet, strategies, seeds, calibrate, labels, general, **overrides):
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

    _, config = session(str(Path(out) / "base"), config_file, overrides)
    selections = [parse_strategy(s, config.select) for s in strategies or DEFAULT_STRATEGIES]
    report = run_compare(
        Path(out), config, selections, seeds=seeds, echo=click.echo, progress=not quiet,
        calibrate_labels=labels if calibrate else None, general=general,
    )  # fmt: skip
    for row in rows(report):
        ratio = f" ({row['time_vs_full']:.2f}x the full set's)" if "time_vs_full" in row else ""
        retention = "-" if row["retention"] is None else f"{100 * row['retention']:.1f}%"
        if row.get("general") is not None:
            retention += f", general skills {100 * row['general']:.1f}%"
        accuracy = "-" if row["accuracy"] is None else f"{100 * row['accuracy']:.1f}%"
        click.echo(
            f"{row['strategy']}: {row['n_trained']} pairs, {row['total_seconds']:.1f} s{ratio}, "
            f"held-out {accuracy}, retention {retention}"
        )
    click.echo(f"report in {Path(out) / 'report.html'}")


def run_command(overrides: dict, config_file: str | None, out: str | None) -> str:
    """The `slearn run` line with the options a plan was given (so that it reuses the plan's knowledge test)."""
    import shlex

    from slearn_mlx.cli.options import _config_field
    from slearn_mlx.options import flag_of

    words = ["slearn", "run"] + (["--config", config_file] if config_file else [])
    for key, value in overrides.items():
        if value is None or value is False:
            continue
        flag = "--answer-batch-size" if key == "answer__batch_size" else flag_of(_config_field(key))
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words + ["--out", out or "runs/NAME"])


@click.command()
@combine(DATA, TEST, MODEL, TRUST_REMOTE_CODE, CONFIG, MAX_TOKENS, TEMPERATURE, TEMPLATE, MCQ_TEMPLATE)
@combine(GRADE_OPTIONS, SELECT_OPTIONS, TRAIN_OPTIONS)
@setting("answer__batch_size", flag="--answer-batch-size")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="A run directory to keep the knowledge test in (and plan.json): `slearn run` with the same options "
              "and this --out reuses the test [none: nothing is written].")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@combine(QUIET)
@user_errors
def plan(out, config_file, as_json, quiet, **overrides):
    """Before a run: what the model knows of --data, and what full fine-tuning, the default and each budget will
    cost here (steps and minutes, from a few timed training steps on the set's own pairs).

    \b
    Example:
      slearn plan --data train.jsonl
      slearn plan --data train.jsonl --model qwen2.5-coder-0.5b --out runs/qwen --json
    """
    import json
    import tempfile

    from slearn_mlx.plan import make_plan, save_plan

    command = run_command(overrides, config_file, out)
    with tempfile.TemporaryDirectory(prefix="slearn-plan-") as scratch:
        run, config = session(out or scratch, config_file, overrides)
        if not config.data:
            raise click.UsageError("pass --data FILE")
        result = make_plan(run, config, command=command, progress=not quiet)
        if out:
            save_plan(run, result, config)
    click.echo(json.dumps(result.to_json(), indent=1) if as_json else str(result))
