"""Typed records passed between stages; each is one JSONL line keyed by `id`."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Record:
    """A JSONL record: `to_json` writes it, `from_json` reads it back."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]):
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in obj and f.default is MISSING]
        if missing:
            raise ValueError(f"missing field {missing[0]!r}")
        return cls(**{k: v for k, v in obj.items() if k in names})


@dataclass(frozen=True)
class QAItem(Record):
    """One question with its reference answer; `options` maps letters to texts for multiple choice; `aliases` are
    other answers that count as right (training teaches the reference)."""

    id: str
    question: str
    reference: str
    options: dict[str, str] | None = None
    aliases: list[str] | None = None
    category: str | None = None  # a subject or topic, for the knowledge map

    def to_json(self) -> dict[str, Any]:
        obj = asdict(self)
        for name in ("aliases", "category"):
            if not obj[name]:
                del obj[name]  # items.jsonl as before for items without them
        return obj

    @property
    def references(self) -> list[str]:
        """Every answer that counts as right: the reference first, then the aliases."""
        return [self.reference, *(self.aliases or [])]

    @property
    def reference_letter(self) -> str | None:
        """The correct option's letter, for multiple-choice items."""
        if not self.options:
            return None
        ref = self.reference.strip()
        head = ref[:1].upper()
        if head in self.options and (len(ref) == 1 or not ref[1].isalnum()):
            return head
        for letter, text in self.options.items():
            if text.strip().lower() == ref.lower():
                return letter
        return None

    @property
    def reference_text(self) -> str:
        """The reference as a person reads it: for multiple choice, the letter and the option's text."""
        letter = self.reference_letter
        return f"{letter}. {self.options[letter]}" if letter else self.reference

    @property
    def accepted_text(self) -> str:
        """What a judge is told is right: the reference, and the aliases that also count."""
        if not self.aliases:
            return self.reference_text
        return f"{self.reference_text} (also correct: {'; '.join(self.aliases)})"


@dataclass(frozen=True)
class Answer(Record):
    """The model's answer to one item."""

    id: str
    text: str
    n_tokens: int


@dataclass(frozen=True)
class Grade(Record):
    """A verdict on one answer.

    `grader` is what decided (a deterministic grader, or `judge-<mode>`); `score`
    is the judge's P(correct) or normalised score, or the grader's own (token F1;
    1.0/0.0 for exact, contains and option); `justification` is what a judge in
    cot mode wrote before its verdict."""

    id: str
    correct: bool
    score: float
    grader: str
    justification: str | None = None
