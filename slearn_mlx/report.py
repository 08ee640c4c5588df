"""The comparison's report: report.json, report.md, and report.html with its plots drawn as inline
SVG, so the page opens offline with nothing beside it."""

from __future__ import annotations

import html
from pathlib import Path

from slearn_mlx.runs import atomic_file, write_json_atomic

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
STAGE_COLORS = {"answer": "#4c72b0", "grade": "#dd8452", "select": "#8c8c8c", "train": "#55a868"}


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def rows(report: dict) -> list[dict]:
    """One row per strategy with its time and accuracy relative to full fine-tuning (`all`)."""
    full = next((s for s in report["strategies"] if s["strategy"] == "all"), None)
    out = []
    for s in report["strategies"]:
        row = dict(s)
        if full and full["total_seconds"]:
            row["time_vs_full"] = s["total_seconds"] / full["total_seconds"]
        if full and full["accuracy"] is not None and s["accuracy"] is not None:
            row["accuracy_vs_full"] = s["accuracy"] - full["accuracy"]
        out.append(row)
    return out


def markdown(report: dict) -> str:
    lines = [
        f"# slearn compare: {report['model']}",
        "",
        f"Training set {report['data']} ({report['n_items']} items, {report['n_wrong']} graded wrong by "
        f"{report['grader']}); held-out {report['test']} ({report['n_test']} items). "
        f"Base model held-out accuracy {_pct(report['base_accuracy'])}.",
        "",
        "| strategy | items trained | answer s | grade s | select s | train s | total s | time vs full "
        "| held-out accuracy | vs full (points) | retention |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows(report):
        sec = row["seconds"]
        cell = lambda stage: f"{sec[stage]:.1f}" if stage in sec else "-"  # noqa: E731
        ratio = f"{row['time_vs_full']:.2f}x" if "time_vs_full" in row else "-"
        delta = f"{100 * row['accuracy_vs_full']:+.1f}" if "accuracy_vs_full" in row else "-"
        lines.append(
            f"| {row['strategy']} | {row['n_trained']} | {cell('answer')} | {cell('grade')} | {cell('select')} "
            f"| {cell('train')} | {row['total_seconds']:.1f} | {ratio} | {_pct(row['accuracy'])} | {delta} "
            f"| {_pct(row['retention'])} |"
        )
    lines += [
        "",
        "Time is what each strategy costs alone: answer + grade + select + train for self-learning, "
        "select + train for the full set (`all`); model loading and evaluation aside. Retention: the "
        "adapted model's accuracy on the training items the base model answered correctly.",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- SVG plots


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f"<figure><figcaption>{html.escape(title)}</figcaption>"
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">{"".join(body)}</svg></figure>'
    )


def _text(x: float, y: float, text: str, anchor: str = "start", **attrs) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{v}"' for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{html.escape(text)}</text>'


def loss_plot(report: dict, width: int = 700, height: int = 300) -> str:
    """Training loss per step (lines) and validation loss per epoch (dots), one colour per strategy."""
    left, right, top, bottom = 50, 200, 10, 30
    series = []
    for i, s in enumerate(report["strategies"]):
        steps = [loss for epoch in s["losses"] for loss in epoch.get("step_losses", [])]
        valid = [(epoch["step"], epoch["val_loss"]) for epoch in s["losses"] if epoch.get("val_loss") is not None]
        if steps:
            series.append((s["strategy"], COLORS[i % len(COLORS)], steps, valid))
    if not series:
        return "<p>No training losses to plot.</p>"
    max_step = max(len(steps) for _, _, steps, _ in series)
    values = [v for _, _, steps, valid in series for v in steps + [v for _, v in valid]]
    low, high = min(values), max(values)
    high = high if high > low else low + 1
    x = lambda step: left + (width - left - right) * (step - 1) / max(max_step - 1, 1)  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (high - v) / (high - low)  # noqa: E731
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#333"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>',
            _text(left - 4, y(high) + 4, f"{high:.2f}", "end"), _text(left - 4, y(low) + 4, f"{low:.2f}", "end"),
            _text((left + width - right) / 2, height - 6, "optimizer step", "middle"),
            _text(left + 4, height - bottom - 4, "1"), _text(width - right, height - bottom - 4, str(max_step), "end")]  # fmt: skip
    for n, (name, color, steps, valid) in enumerate(series):
        points = " ".join(f"{x(i + 1):.1f},{y(v):.1f}" for i, v in enumerate(steps))
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
        body += [
            f'<circle cx="{x(step):.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}" stroke="#000"/>' for step, v in valid
        ]
        body.append(f'<rect x="{width - right + 12}" y="{top + 16 * n}" width="10" height="10" fill="{color}"/>')
        body.append(_text(width - right + 26, top + 16 * n + 9, name))
    return _svg(width, height, body, "Training loss per step (line) and validation loss per epoch (dots)")


def time_plot(report: dict, width: int = 700) -> str:
    """Seconds per stage, stacked, one bar per strategy."""
    strategies = report["strategies"]
    left, right, bar, gap, top = 200, 60, 18, 8, 24
    height = top + len(strategies) * (bar + gap) + 10
    longest = max((s["total_seconds"] for s in strategies), default=0) or 1
    scale = (width - left - right) / longest
    body = []
    for n, stage in enumerate(STAGE_COLORS):
        body.append(f'<rect x="{left + 80 * n}" y="4" width="10" height="10" fill="{STAGE_COLORS[stage]}"/>')
        body.append(_text(left + 80 * n + 14, 13, stage))
    for i, s in enumerate(strategies):
        yy = top + i * (bar + gap)
        body.append(_text(left - 6, yy + bar - 5, s["strategy"], "end"))
        xx = left
        for stage, color in STAGE_COLORS.items():
            seconds = s["seconds"].get(stage, 0.0)
            if seconds:
                body.append(f'<rect x="{xx:.1f}" y="{yy}" width="{seconds * scale:.1f}" height="{bar}" fill="{color}">'
                            f"<title>{stage}: {seconds:.1f} s</title></rect>")  # fmt: skip
                xx += seconds * scale
        body.append(_text(xx + 4, yy + bar - 5, f"{s['total_seconds']:.0f} s"))
    return _svg(width, height, body, "Wall time per stage (seconds)")


def accuracy_plot(report: dict, width: int = 700) -> str:
    """Held-out accuracy and retention per strategy, with the base model's held-out accuracy as a line."""
    strategies = report["strategies"]
    left, right, bar, gap, top = 200, 60, 12, 10, 24
    height = top + len(strategies) * (2 * bar + gap) + 10
    scale = width - left - right
    body = [f'<rect x="{left}" y="4" width="10" height="10" fill="{COLORS[0]}"/>', _text(left + 14, 13, "held-out"),
            f'<rect x="{left + 90}" y="4" width="10" height="10" fill="{COLORS[2]}"/>', _text(left + 104, 13, "retention")]  # fmt: skip
    for i, s in enumerate(strategies):
        yy = top + i * (2 * bar + gap)
        body.append(_text(left - 6, yy + bar + 4, s["strategy"], "end"))
        for j, (key, color) in enumerate((("accuracy", COLORS[0]), ("retention", COLORS[2]))):
            value = s.get(key)
            if value is None:
                continue
            body.append(
                f'<rect x="{left}" y="{yy + j * bar}" width="{value * scale:.1f}" height="{bar - 1}" fill="{color}"/>'
            )
            body.append(_text(left + value * scale + 4, yy + j * bar + bar - 2, _pct(value)))
    base = report.get("base_accuracy")
    if base is not None:
        xx = left + base * scale
        body.append(
            f'<line x1="{xx:.1f}" y1="{top - 4}" x2="{xx:.1f}" y2="{height - 6}" stroke="#c44e52" stroke-dasharray="4 3"/>'
        )
        body.append(_text(xx + 3, height - 8, f"base {_pct(base)}", fill="#c44e52"))
    return _svg(width, height, body, "Accuracy per strategy (0-100%)")


def _table(report: dict) -> str:
    head = ["strategy", "items trained", "total s", "time vs full", "held-out accuracy", "vs full (points)",
            "retention"]  # fmt: skip
    cells = []
    for row in rows(report):
        cells.append([
            row["strategy"], str(row["n_trained"]), f"{row['total_seconds']:.1f}",
            f"{row['time_vs_full']:.2f}x" if "time_vs_full" in row else "-", _pct(row["accuracy"]),
            f"{100 * row['accuracy_vs_full']:+.1f}" if "accuracy_vs_full" in row else "-", _pct(row["retention"]),
        ])  # fmt: skip
    header = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells)
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def write_reports(out: Path, report: dict) -> None:
    """report.json, report.md and report.html in `out`, each replaced atomically."""
    write_json_atomic(out / "report.json", report)
    with atomic_file(out / "report.md") as handle:
        handle.write(markdown(report))
    with atomic_file(out / "report.html") as handle:
        handle.write(page(report))


def page(report: dict) -> str:
    summary = (
        f"Training set {html.escape(report['data'])}: {report['n_items']} items, {report['n_wrong']} graded wrong "
        f"by {html.escape(report['grader'])}. Held-out {html.escape(report['test'])}: {report['n_test']} items; "
        f"base model {_pct(report['base_accuracy'])}."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>slearn compare</title>
<style>
body {{ font-family: sans-serif; max-width: 900px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
figure {{ margin: 1.5em 0; }} figcaption {{ font-weight: bold; margin-bottom: .4em; }}
</style></head><body>
<h1>slearn compare: {html.escape(str(report["model"]))}</h1>
<p>{summary}</p>
{_table(report)}
<p>Time is what each strategy costs alone: answer + grade + select + train for self-learning, select + train for
the full set (<code>all</code>); model loading and evaluation aside. Retention: the adapted model's accuracy on the
training items the base model answered correctly.</p>
{accuracy_plot(report)}
{time_plot(report)}
{loss_plot(report)}
</body></html>
"""
