"""The knowledge map: how the probe's score, P(reference), spreads over a set, where the verdict's threshold cuts it,
what share of each category is known, and which items are least known; for the base model and for an adapted one,
so that a report shows what training moved.

What moved is read in the chat frame, the frame a run trains and asks in, for both models: training in it leaves the
few-shot frame's reading where it was (world, the default's first seed: 70 of 210 known there before and after,
against 1 and 192 of 210 in the chat frame), so the verdict's own frame cannot show it."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

from slearn_mlx.probe import Knowledge, probe_items
from slearn_mlx.records import QAItem
from slearn_mlx.runs import read_records
from slearn_mlx.training.layers import adapters_on, remove_adapters

FLOOR = -12  # log10 P(reference) below this shares the lowest bin


@dataclass(frozen=True)
class Bin:
    low: float  # log10 P(reference), inclusive
    high: float  # exclusive, but for the last bin
    count: int


@dataclass(frozen=True)
class Category:
    name: str
    n_items: int
    n_known: int


@dataclass(frozen=True)
class Item:
    id: str
    question: str
    reference: str
    p_reference: float


@dataclass(frozen=True)
class KnowledgeMap:
    n_items: int
    n_read: int
    n_known: int
    threshold: float
    bins: list[Bin]
    categories: list[Category]  # empty when the items have none
    least_known: list[Item]

    def to_json(self) -> dict:
        return asdict(self)


def edges(threshold: float) -> list[float]:
    """Bin edges in log10 P(reference): one per decade from FLOOR to 0, and the threshold's, so that the bins above
    it hold exactly the items called known."""
    cut = math.log10(threshold) if threshold > 0 else FLOOR
    return sorted({float(e) for e in range(FLOOR, 1)} | {cut})


def knowledge_map(
    items: list[QAItem], knowledge: dict[str, Knowledge], threshold: float, least: int = 10
) -> KnowledgeMap:
    """The map of `items` as the probe read them (`knowledge`; items left unread count in no bin)."""
    read = [item for item in items if item.id in knowledge]
    cuts = edges(threshold)
    counts = [0] * (len(cuts) - 1)
    for item in read:
        value = max(math.log10(knowledge[item.id].p_reference) if knowledge[item.id].p_reference > 0 else FLOOR, FLOOR)
        index = next((i for i in range(len(counts)) if value < cuts[i + 1]), len(counts) - 1)
        counts[index] += 1
    bins = [Bin(cuts[i], cuts[i + 1], counts[i]) for i in range(len(counts))]
    known = {item.id for item in read if knowledge[item.id].p_reference >= threshold}
    categories: dict[str, list[QAItem]] = {}
    for item in read:
        if item.category:
            categories.setdefault(item.category, []).append(item)
    by_category = sorted(
        (Category(name, len(members), sum(m.id in known for m in members)) for name, members in categories.items()),
        key=lambda c: (c.n_known / c.n_items, -c.n_items, c.name),
    )
    lowest = sorted(read, key=lambda item: knowledge[item.id].p_reference)[:least]
    least_known = [Item(i.id, i.question, i.reference_text, knowledge[i.id].p_reference) for i in lowest]
    return KnowledgeMap(len(items), len(read), len(known), threshold, bins, by_category, least_known)


def probe_with(model, tokenizer, items: list[QAItem], out: Path, frame, answer_config, batch_size: int,
               adapters: Path | None = None, progress: bool = True) -> dict[str, Knowledge]:  # fmt: skip
    """The probe's reading of `items` in `frame` by the base model, or with `adapters` by the adapted one, kept in
    `out` (resumable)."""
    remove_adapters(model)
    with adapters_on(model, adapters) if adapters is not None else nullcontext():
        probe_items(model, tokenizer, items, out, frame=frame, answer_config=answer_config, batch_size=batch_size,
                    progress=progress)  # fmt: skip
    return read_records(out, Knowledge)
