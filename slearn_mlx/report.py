"""The comparison's report: report.json, report.md, and report.html with its plots drawn as inline
SVG, so the page opens offline with nothing beside it."""

from __future__ import annotations

import html
import math
from pathlib import Path

from slearn_mlx.common import pct
from slearn_mlx.map_report import map_markdown, map_plot, map_tables
from slearn_mlx.runs import atomic_file, write_json_atomic
from slearn_mlx.svg import COLORS, html_table, svg, text

STAGE_COLORS = {"answer": "#4c72b0", "grade": "#dd8452", "calibrate": "#da8bc3", "select": "#8c8c8c",
                "train": "#55a868"}  # fmt: skip


def _pm(value: float | None, spread: float | None, percent: bool = True) -> str:
    """A mean with its spread over seeds: 85.0% ± 1.2."""
    if value is None:
        return "-"
    shown = pct(value) if percent else f"{value:.1f}"
    if spread is None:
        return shown
    return f"{shown} ± {100 * spread:.1f}" if percent else f"{shown} ± {spread:.1f}"


def _interval(vs: dict | None) -> str:
    """A paired difference in points, with its 95% interval when there are several seeds."""
    if not vs:
        return "-"
    shown = f"{100 * vs['mean']:+.1f}"
    if vs.get("low") is not None:
        shown += f" [{100 * vs['low']:+.1f}, {100 * vs['high']:+.1f}]"
    return shown


def rows(report: dict) -> list[dict]:
    """One row per strategy with its time and accuracy relative to full fine-tuning (`all`)."""
    full = next((s for s in report["strategies"] if s["strategy"] == "all"), None)
    full = full or next((s for s in report["strategies"] if s["strategy"].startswith("all")), None)
    out = []
    for s in report["strategies"]:
        row = dict(s)
        row.setdefault("spread", {})
        if full and full["total_seconds"]:
            row["time_vs_full"] = s["total_seconds"] / full["total_seconds"]
        if "vs_full" not in row and full and full["accuracy"] is not None and s["accuracy"] is not None:
            row["vs_full"] = {"mean": s["accuracy"] - full["accuracy"], "low": None, "high": None, "n": 1}
        out.append(row)
    return out


STAGE_NAMES = {"answer": "answer", "grade": "grade / probe", "calibrate": "calibrate", "select": "select",
               "train": "train"}  # fmt: skip


def markdown(report: dict) -> str:
    seeds, general = report.get("seeds", 1), report.get("general_base")
    lines = [
        f"# slearn compare: {report['model']}",
        "",
        f"Training set {report['data']} ({report['n_items']} items, {report['n_wrong']} graded wrong by "
        f"{report['grader']}); held-out {report['test']} ({report['n_test']} items). "
        f"Base model held-out accuracy {pct(report['base_accuracy'])}."
        + (f" Every strategy ran with {seeds} seeds: means ± standard deviation over seeds." if seeds > 1 else ""),
        "",
        "| strategy | items trained | "
        + " | ".join(f"{name} s" for name in STAGE_NAMES.values())
        + " | total s | time vs full | held-out accuracy | vs full (points, 95% interval) | retention |"
        + (" general skills | vs base (points, 95% interval) |" if general else ""),
        "| --- | ---: | "
        + " | ".join("---:" for _ in STAGE_NAMES)
        + " | ---: | ---: | ---: | ---: | ---: |"
        + (" ---: | ---: |" if general else ""),
    ]
    for row in rows(report):
        sec, spread = row["seconds"], row["spread"]
        cells = [f"{sec[stage]:.1f}" if stage in sec else "-" for stage in STAGE_NAMES]
        ratio = f"{row['time_vs_full']:.2f}x" if "time_vs_full" in row else "-"
        lines.append(
            f"| {row['strategy']} | {row['n_trained']} | {' | '.join(cells)} "
            f"| {_pm(row['total_seconds'], spread.get('total_seconds'), percent=False)} | {ratio} "
            f"| {_pm(row['accuracy'], spread.get('accuracy'))} | {_interval(row.get('vs_full'))} "
            f"| {_pm(row['retention'], spread.get('retention'))} |"
            + (
                f" {_pm(row.get('general'), spread.get('general'))} | {_interval(row.get('general_change'))} |"
                if general
                else ""
            )  # fmt: skip
        )
    if general:
        sets = ", ".join(f"{name} {pct(value)}" for name, value in general.items() if name != "overall")
        lines += ["", f"General skills (slearn_mlx/datasets/general, the correct option's text the likeliest): the base model "
                      f"{pct(general['overall'])} ({sets}); vs base: the adapted model's change over seeds."]  # fmt: skip
    lines += [
        "",
        "Time is what each strategy costs alone: answer + grade (or the probe, with its calibration) + select + "
        "train for self-learning, select + train for the full set (`all`); model loading and evaluation aside. "
        "vs full: the mean over seeds of the difference to `all` trained with the same seed, with its 95% interval. "
        "Retention: the adapted model's accuracy on the training items the base model answered correctly.",
    ]
    if report.get("knowledge_map"):
        lines += map_markdown(report["knowledge_map"])
    return "\n".join(lines + [""])


# --------------------------------------------------------------------------- SVG plots


def smoothed(values: list[float], weight: float | None = None) -> list[float]:
    """An exponential moving average, debiased so its first points are not pulled toward 0; the default weight
    spans about a twentieth of the series."""
    if weight is None:
        weight = 1 - 1 / max(1.0, len(values) / 20)
    out, average = [], 0.0
    for k, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight**k) if weight else value)
    return out


def loss_scale(low: float, high: float) -> tuple[bool, list[float]]:
    """(log scale?, tick values): log where the losses span more than a factor of 20, as a first step's loss
    over a last epoch's does; ticks at powers of ten then, at the ends otherwise."""

    if low > 0 and high / low > 20:
        ticks = [10.0**e for e in range(math.ceil(math.log10(low)), math.floor(math.log10(high)) + 1)]
        return True, ticks or [low, high]
    return False, [low, high]


def loss_plot(report: dict, width: int = 700, height: int = 300) -> str:
    """Training loss per step, smoothed (the raw steps faint behind), and validation loss per epoch (dots), one
    colour per strategy; a log scale where the range calls for it."""

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
    log, ticks = loss_scale(low, high)
    f = (lambda v: math.log10(max(v, low))) if log else (lambda v: v)  # noqa: E731
    x = lambda step: left + (width - left - right) * (step - 1) / max(max_step - 1, 1)  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (f(high) - f(v)) / (f(high) - f(low))  # noqa: E731
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#333"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>',
            text((left + width - right) / 2, height - 6, "optimizer step" + (" (loss on a log scale)" if log else ""),
                  "middle"),
            text(left + 4, height - bottom - 4, "1"), text(width - right, height - bottom - 4, str(max_step), "end")]  # fmt: skip
    for tick in ticks:
        body.append(text(left - 4, y(tick) + 4, f"{tick:g}" if log else f"{tick:.2f}", "end"))
        if log:
            body.append(f'<line x1="{left}" y1="{y(tick):.1f}" x2="{width - right}" y2="{y(tick):.1f}" stroke="#ddd"/>')
    for n, (name, color, steps, valid) in enumerate(series):
        raw = " ".join(f"{x(i + 1):.1f},{y(v):.1f}" for i, v in enumerate(steps))
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="1" stroke-opacity="0.25" points="{raw}"/>')
        smooth = " ".join(f"{x(i + 1):.1f},{y(v):.1f}" for i, v in enumerate(smoothed(steps)))
        body.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{smooth}"/>')
        body += [
            f'<circle cx="{x(step):.1f}" cy="{y(v):.1f}" r="3.5" fill="{color}" stroke="#000"/>' for step, v in valid
        ]
        body.append(f'<rect x="{width - right + 12}" y="{top + 16 * n}" width="10" height="10" fill="{color}"/>')
        body.append(text(width - right + 26, top + 16 * n + 9, name))
    title = "Training loss per step (smoothed; raw steps faint) and validation loss per epoch (dots)"
    return svg(width, height, body, title)


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
        body.append(text(left + 80 * n + 14, 13, stage))
    for i, s in enumerate(strategies):
        yy = top + i * (bar + gap)
        body.append(text(left - 6, yy + bar - 5, s["strategy"], "end"))
        xx = left
        for stage, color in STAGE_COLORS.items():
            seconds = s["seconds"].get(stage, 0.0)
            if seconds:
                body.append(f'<rect x="{xx:.1f}" y="{yy}" width="{seconds * scale:.1f}" height="{bar}" fill="{color}">'
                            f"<title>{stage}: {seconds:.1f} s</title></rect>")  # fmt: skip
                xx += seconds * scale
        body.append(text(xx + 4, yy + bar - 5, f"{s['total_seconds']:.0f} s"))
    return svg(width, height, body, "Wall time per stage (seconds)")


def accuracy_plot(report: dict, width: int = 700) -> str:
    """Held-out accuracy and retention per strategy, with the base model's held-out accuracy as a line."""
    strategies = report["strategies"]
    left, right, bar, gap, top = 200, 60, 12, 10, 24
    height = top + len(strategies) * (2 * bar + gap) + 10
    scale = width - left - right
    body = [f'<rect x="{left}" y="4" width="10" height="10" fill="{COLORS[0]}"/>', text(left + 14, 13, "held-out"),
            f'<rect x="{left + 90}" y="4" width="10" height="10" fill="{COLORS[2]}"/>', text(left + 104, 13, "retention")]  # fmt: skip
    for i, s in enumerate(strategies):
        yy = top + i * (2 * bar + gap)
        body.append(text(left - 6, yy + bar + 4, s["strategy"], "end"))
        for j, (key, color) in enumerate((("accuracy", COLORS[0]), ("retention", COLORS[2]))):
            value = s.get(key)
            if value is None:
                continue
            body.append(
                f'<rect x="{left}" y="{yy + j * bar}" width="{value * scale:.1f}" height="{bar - 1}" fill="{color}"/>'
            )
            body.append(text(left + value * scale + 4, yy + j * bar + bar - 2, pct(value)))
    base = report.get("base_accuracy")
    if base is not None:
        xx = left + base * scale
        body.append(
            f'<line x1="{xx:.1f}" y1="{top - 4}" x2="{xx:.1f}" y2="{height - 6}" stroke="#c44e52" stroke-dasharray="4 3"/>'
        )
        body.append(text(xx + 3, height - 8, f"base {pct(base)}", fill="#c44e52"))
    return svg(width, height, body, "Accuracy per strategy (0-100%)")


def _table(report: dict) -> str:
    general = report.get("general_base") is not None
    head = ["strategy", "items trained", "total s", "time vs full", "held-out accuracy", "vs full (points, 95%)",
            "retention"] + (["general skills", "vs base (points, 95%)"] if general else [])  # fmt: skip
    cells = []
    for row in rows(report):
        spread = row["spread"]
        cells.append([
            row["strategy"], str(row["n_trained"]), _pm(row["total_seconds"], spread.get("total_seconds"), False),
            f"{row['time_vs_full']:.2f}x" if "time_vs_full" in row else "-",
            _pm(row["accuracy"], spread.get("accuracy")), _interval(row.get("vs_full")),
            _pm(row["retention"], spread.get("retention")),
        ] + ([_pm(row.get("general"), spread.get("general")), _interval(row.get("general_change"))]
             if general else []))  # fmt: skip
    return html_table(head, cells)


def tradeoff_plot(report: dict, width: int = 700, height: int = 380) -> str:
    """Held-out accuracy against end-to-end time, one point per strategy with its spread over seeds as
    whiskers: the trade-off a user picks from."""
    left, right, top, bottom = 60, 220, 14, 40
    points = [r for r in rows(report) if r["accuracy"] is not None]
    if not points:
        return "<p>No held-out accuracy to plot.</p>"
    spread = lambda r, key: r["spread"].get(key) or 0.0  # noqa: E731
    x_hi = max(r["total_seconds"] + spread(r, "total_seconds") for r in points) * 1.08 or 1.0
    accs = [r["accuracy"] + d * spread(r, "accuracy") for r in points for d in (-1, 1)]
    accs.append(report.get("base_accuracy") or min(accs))
    y_lo, y_hi = max(0.0, min(accs) - 0.03), min(1.0, max(accs) + 0.03)
    y_hi = y_hi if y_hi > y_lo else y_lo + 0.1
    x = lambda v: left + (width - left - right) * v / x_hi  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (y_hi - v) / (y_hi - y_lo)  # noqa: E731
    body = [f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#333"/>',
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#333"/>',
            text((left + width - right) / 2, height - 8, "end-to-end seconds (selection + training)", "middle"),
            text(14, (top + height - bottom) / 2, "held-out accuracy", "middle",
                  transform=f"rotate(-90 14 {(top + height - bottom) / 2:.0f})")]  # fmt: skip
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        sec, acc = x_hi * frac, y_lo + (y_hi - y_lo) * frac
        body += [text(x(sec), height - bottom + 14, f"{sec:.0f}", "middle"),
                 text(left - 4, y(acc) + 4, pct(acc), "end"),
                 f'<line x1="{left}" y1="{y(acc):.1f}" x2="{width - right}" y2="{y(acc):.1f}" stroke="#eee"/>']  # fmt: skip
    base = report.get("base_accuracy")
    if base is not None:
        body += [f'<line x1="{left}" y1="{y(base):.1f}" x2="{width - right}" y2="{y(base):.1f}" stroke="#c44e52" '
                 'stroke-dasharray="4 3"/>', text(width - right - 4, y(base) - 4, f"base {pct(base)}", "end",
                 fill="#c44e52")]  # fmt: skip
    for i, r in enumerate(points):
        color, cx, cy = COLORS[i % len(COLORS)], x(r["total_seconds"]), y(r["accuracy"])
        dx, dy = spread(r, "total_seconds"), spread(r, "accuracy")
        if dx:
            body.append(f'<line x1="{x(r["total_seconds"] - dx):.1f}" y1="{cy:.1f}" x2="{x(r["total_seconds"] + dx):.1f}" '
                        f'y2="{cy:.1f}" stroke="{color}"/>')  # fmt: skip
        if dy:
            body.append(f'<line x1="{cx:.1f}" y1="{y(r["accuracy"] - dy):.1f}" x2="{cx:.1f}" y2="{y(r["accuracy"] + dy):.1f}" '
                        f'stroke="{color}"/>')  # fmt: skip
        body.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="5" fill="{color}" stroke="#000">'
                    f"<title>{html.escape(r['strategy'])}: {pct(r['accuracy'])}, {r['total_seconds']:.0f} s</title>"
                    "</circle>")  # fmt: skip
        body.append(f'<circle cx="{width - right + 17}" cy="{top + 16 * i + 5}" r="5" fill="{color}" stroke="#000"/>')
        body.append(text(width - right + 26, top + 16 * i + 9, r["strategy"]))
    seeds = report.get("seeds", 1)
    whiskers = f"; whiskers: ± one standard deviation over {seeds} seeds" if seeds > 1 else ""
    return svg(width, height, body, f"Held-out accuracy against end-to-end time{whiskers}")


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
        f"base model {pct(report['base_accuracy'])}."
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
<p>Time is what each strategy costs alone: answer + grade (or the probe, with its calibration) + select + train for
self-learning, select + train for the full set (<code>all</code>); model loading and evaluation aside. vs full: the
mean over seeds of the difference to <code>all</code> trained with the same seed, with its 95% interval. Retention:
the adapted model's accuracy on the training items the base model answered correctly.</p>
{tradeoff_plot(report)}
{accuracy_plot(report)}
{time_plot(report)}
{loss_plot(report)}
{_map_section(report)}
</body></html>
"""


def _map_section(report: dict) -> str:
    maps = report.get("knowledge_map")
    if not maps:
        return ""
    return f"<h2>What the model knows</h2>\n{map_plot(maps)}\n{map_tables(maps)}"
