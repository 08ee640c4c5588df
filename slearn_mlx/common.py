"""Small helpers every stage shares: values in messages, percentages, file hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def quoted(value: Any, limit: int = 40) -> str:
    """A user's value in a message: quoted as Python writes it, on one line, and short even when the value is not."""
    if isinstance(value, str):
        return repr(value if len(value) <= limit else value[:limit] + "...")
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pct(fraction: float | None, missing: str = "-") -> str:
    """0.8512 -> '85.1%'; `missing` for None."""
    return missing if fraction is None else f"{100 * fraction:.1f}%"


def file_hash(path: Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file's bytes, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
