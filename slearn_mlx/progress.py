"""Progress bars on stderr, so stdout carries only results."""

from __future__ import annotations

import sys

from tqdm import tqdm

from slearn_mlx import distributed


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "item") -> tqdm:
    """A tqdm bar on stderr counting `unit`s; silent when disabled, when there is nothing to do, and on every rank
    of a distributed group but rank 0."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not enabled or total == 0 or not distributed.is_writer(),
        dynamic_ncols=True,
        leave=False,
    )
