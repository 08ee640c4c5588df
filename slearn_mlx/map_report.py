"""The knowledge map in the reports: P(reference) by decade for the base and the adapted model (markdown, an SVG
plot, HTML tables), the share known per category, the least known items."""

from __future__ import annotations

import html
import math

from slearn_mlx.common import pct
from slearn_mlx.svg import COLORS, html_table, svg, text


def _p_bin(low: float, high: float) -> str:
    """A bin of log10 P(reference) as a range of P: "1e-3 to 1e-2", "0.8 to 1"; the lowest bin holds all below."""

    def p(x: float) -> str:
        return "1" if x == 0 else f"1e{round(x)}" if abs(x - round(x)) < 1e-9 else f"{10**x:.2g}"

    return f"below {p(high)}" if low <= -12 else f"{p(low)} to {p(high)}"


def map_headline(maps: dict) -> str:
    """Known before and after training, in the frame both were read in, and the verdict's own count where it read the
    base model in another frame."""
    base, adapted = maps["base"], maps["adapted"]
    unread = f" ({base['n_items'] - base['n_read']} unread)" if base["n_read"] < base["n_items"] else ""
    line = (f"Training items known, read in the {maps.get('frame', 'probe')} frame: base {base['n_known']} of "
            f"{base['n_items']}{unread} -> adapted ({maps['strategy']}, first seed) {adapted['n_known']} of "
            f"{adapted['n_items']}.")  # fmt: skip
    verdict = maps.get("verdict")
    if verdict and verdict["frame"] != maps.get("frame"):
        line += (f" The knowledge test reads the base model in the {verdict['frame']} frame: {verdict['n_known']} of "
                 f"{verdict['n_items']} known there.")  # fmt: skip
    return line


def map_markdown(maps: dict) -> list[str]:
    """The knowledge map as markdown: the spread of P(reference) by decade, base and adapted; the share known per
    category; the least known items."""
    base, adapted = maps["base"], maps["adapted"]
    cut = base["threshold"]
    lines = ["", f"## What the model knows: the knowledge map (the probe; known at P(reference) >= {cut:g})", "",
             map_headline(maps), "", "| P(reference) | base | adapted |", "| --- | ---: | ---: |"]  # fmt: skip
    for b, a in reversed(list(zip(base["bins"], adapted["bins"]))):  # surest known first, as in the plot
        mark = " (known)" if b["low"] >= math.log10(cut) - 1e-12 else ""
        lines.append(f"| {_p_bin(b['low'], b['high'])}{mark} | {b['count']} | {a['count']} |")
    if base["categories"]:
        after = {c["name"]: c for c in adapted["categories"]}
        lines += ["", "| category | items | known: base | adapted |", "| --- | ---: | ---: | ---: |"]
        for c in base["categories"]:
            a = after.get(c["name"], {"n_known": 0, "n_items": c["n_items"]})
            lines.append(f"| {c['name']} | {c['n_items']} | {pct(c['n_known'] / c['n_items'])} "
                         f"| {pct(a['n_known'] / a['n_items'])} |")  # fmt: skip
    now = maps.get("moved", {})  # the adapted model's P(reference) of the base model's least known
    lines += ["", "Least known by the base model:", "", "| question | reference | P base | P adapted |",
              "| --- | --- | ---: | ---: |"]  # fmt: skip
    for item in base["least_known"]:
        cell = lambda t: " ".join(t.split()).replace("|", "\\|")[:90]  # noqa: E731
        later = f"{now[item['id']]:.2g}" if item["id"] in now else "-"
        lines.append(f"| {cell(item['question'])} | {cell(item['reference'])} | {item['p_reference']:.2g} | {later} |")
    return lines


def map_plot(maps: dict, width: int = 700) -> str:
    """P(reference) by decade, base and adapted side by side, the threshold as a line: what training moved."""
    base, adapted = maps["base"], maps["adapted"]
    n_bins, bar, left, top = len(base["bins"]), 9, 110, 24
    height = top + n_bins * (2 * bar + 4) + 10
    peak = max([b["count"] for b in base["bins"]] + [a["count"] for a in adapted["bins"]] + [1])
    scale = (width - left - 60) / peak
    body = [f'<rect x="{left}" y="4" width="10" height="10" fill="{COLORS[1]}"/>', text(left + 14, 13, "base"),
            f'<rect x="{left + 60}" y="4" width="10" height="10" fill="{COLORS[0]}"/>',
            text(left + 74, 13, f"adapted ({maps['strategy']})")]  # fmt: skip
    cut = math.log10(base["threshold"])
    for i, (b, a) in enumerate(zip(reversed(base["bins"]), reversed(adapted["bins"]))):
        yy = top + i * (2 * bar + 4)
        body.append(text(left - 6, yy + bar + 4, _p_bin(b["low"], b["high"]), "end"))
        for j, (count, color) in enumerate(((b["count"], COLORS[1]), (a["count"], COLORS[0]))):
            body.append(f'<rect x="{left}" y="{yy + j * bar}" width="{count * scale:.1f}" height="{bar - 1}" '
                        f'fill="{color}"/>')  # fmt: skip
            body.append(text(left + count * scale + 4, yy + j * bar + bar - 1, str(count)))
        if abs(b["low"] - cut) < 1e-12:  # the first bin below the threshold starts after this one
            line_y = yy + 2 * bar + 2
            body.append(f'<line x1="{left - 100}" y1="{line_y}" x2="{width - 10}" y2="{line_y}" stroke="#c44e52" '
                        'stroke-dasharray="4 3"/>')  # fmt: skip
    # The threshold's key in the legend row, where no bar reaches it.
    body += [f'<line x1="{width - 190}" y1="9" x2="{width - 166}" y2="9" stroke="#c44e52" stroke-dasharray="4 3"/>',
             text(width - 12, 13, f"known above: P >= {base['threshold']:g}", "end", fill="#c44e52")]  # fmt: skip
    return svg(width, height, body, "The knowledge map: training items by P(reference), base and adapted")


def map_tables(maps: dict) -> str:
    """The markdown tables of the map, as HTML tables."""
    out, rows_ = [], []
    for line in map_markdown(maps)[3:]:
        if line.startswith("|"):
            rows_.append([c.strip().replace("\\|", "|") for c in line.strip("|").split(" | ")])
        else:
            if rows_:
                out.append(html_table(rows_[0], [r for r in rows_[2:]]))
                rows_ = []
            if line.strip():
                out.append(f"<p>{html.escape(line)}</p>")
    if rows_:
        out.append(html_table(rows_[0], rows_[2:]))
    return "\n".join(out)
