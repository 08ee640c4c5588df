"""Config fields that carry their command-line option: each option's default, type and help live in one place.

A stage's config dataclass declares each field with `option(default, help)`; the command line builds its options
from those fields (cli/options.py), so `--help` shows the default the code uses and a new field is an option at once.
"""

from __future__ import annotations

from dataclasses import MISSING, Field, field, fields
from typing import Any


def option(
    default: Any = None,
    help: str = "",
    *,
    flag: str | bool | None = None,
    choices: tuple[str, ...] | None = None,
    shown: str | None = None,
    factory: Any = None,
) -> Any:
    """A config field and its option. `flag`: the option's name where it is not the field's ("--rank" for `rank`),
    False for a field with no option; `choices`: the values it takes; `shown`: how `--help` words a default that is
    not a plain value ("by the model's width")."""
    metadata = {"help": help, "flag": flag, "choices": choices, "shown": shown}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def default_of(spec: Field) -> Any:
    return spec.default_factory() if spec.default is MISSING else spec.default


def shown_default(spec: Field) -> str:
    """The default as `--help` writes it, in brackets after the help."""
    if spec.metadata.get("shown"):
        return spec.metadata["shown"]
    value = default_of(spec)
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return repr(value) if value.strip() != value or not value else value
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def flag_of(spec: Field) -> str | None:
    """The option's flag: the field's name with dashes unless the field names another; None for no option."""
    flag = spec.metadata.get("flag")
    if flag is False or "help" not in spec.metadata:
        return None
    return flag or "--" + spec.name.replace("_", "-")


def option_fields(config_class) -> list[Field]:
    """The fields of a config dataclass that are command-line options."""
    return [spec for spec in fields(config_class) if flag_of(spec) is not None]
