"""The `slearn` command: thin click wrappers over the stage functions in pipeline.py (options in `options`, the stage
commands in `stages`, model installs and `info` in `models`)."""

from __future__ import annotations

import os
import sys

import click

from slearn_mlx import __version__
from slearn_mlx.cli import models, stages


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="slearn")
def cli():
    """Self-learning domain adaptation: the model answers, grades itself, and
    fine-tunes with LoRA only on what it got wrong."""


for command in (stages.answer, stages.grade, stages.select, stages.train, stages.evaluate, stages.try_, stages.run,
                stages.compare, stages.plan, models.export, models.info, models.models):  # fmt: skip
    cli.add_command(command)


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
