"""Progress bars on stderr, so stdout carries only results."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "item") -> tqdm:
    """A tqdm bar on stderr counting `unit`s; silent when disabled or when there is nothing to do."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not enabled or total == 0,
        dynamic_ncols=True,
        leave=False,
    )
