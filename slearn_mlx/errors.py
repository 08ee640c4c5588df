"""Mistakes a user can fix: the only exceptions `slearn` shows as one line instead of a traceback.

Each is raised where the mistake is detected, with a message that says what is wrong and what to do. Each also
derives from the built-in exception the same problem has always raised (ValueError, FileNotFoundError, OSError),
so code that catches those keeps working. Anything else that escapes a command is a bug and keeps its traceback:
mlx reports shape and dtype mistakes as ValueError, and those must not read as a user's mistake.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix; `slearn` prints its message on one line and exits with 1."""


class ConfigError(UserError, ValueError):
    """An option, a config file, a template or a strategy that cannot be used."""


class MissingInput(UserError, FileNotFoundError):
    """A file or a run directory that is not there, or a stage's output another stage needs first."""


class NotDone(UserError, ValueError):
    """A stage's input is incomplete: an earlier stage has not run on every item yet."""


class ModelNotFound(UserError, FileNotFoundError):
    """A model that is neither installed, nor a local model directory, nor loadable."""


class ModelError(UserError, ValueError):
    """A model or GGUF file this tool cannot use (unsupported architecture, tokenizer or dtype)."""


class FetchError(UserError, OSError):
    """A download (the one `slearn models fetch-default` makes) that failed."""
