"""Which of a QA file's fields hold the question, the answer, the options, the id and the category, where a file
names them otherwise ("query"/"response", "Question"/"Answer", a MedMCQA "subject")."""

from __future__ import annotations

from dataclasses import dataclass

from slearn_mlx.options import option


@dataclass(frozen=True)
class Fields:
    """Which of a file's fields hold the question, the answer, the options and the id; None: the usual names."""

    question: str | None = option(None, "The field holding the question.", flag="--question-field", shown="question")
    answer: str | None = option(None, "The field holding the reference answer.", flag="--answer-field", shown="answer")
    options: str | None = option(None, "The field holding the options.", flag="--options-field", shown="options")
    id: str | None = option(None, "The field holding each item's id.", flag="--id-field", shown="id, else a hash")
    category: str | None = option(
        None, "The field holding each item's category (a subject, a topic): the knowledge map's share known per "
        "category.", flag="--category-field", shown="category",
    )  # fmt: skip

    def problems(self) -> list[str]:
        return [f"fields.{k}: empty" for k, v in vars(self).items() if v is not None and not v.strip()]

    def renamed(self, obj: dict) -> dict:
        """The record with the mapped fields under the usual names ("question", "answer", "options", "id")."""
        mapping = {name: source for name, source in vars(self).items() if source is not None}
        if not mapping:
            return obj
        sources = set(mapping.values())
        renamed = {k: v for k, v in obj.items() if k not in sources and k not in mapping}
        renamed |= {name: obj[source] for name, source in mapping.items() if source in obj}
        return renamed
