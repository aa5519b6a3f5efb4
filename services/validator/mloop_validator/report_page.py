"""An evaluation as a self-contained HTML page: tables and inline SVG charts, no scripts, no external assets.

Every value that came from a user (model, slice and check names, slice values) is escaped: a slice
value such as ``<script>`` shows as text.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from mloop_validator.entities import CheckResult, Evaluation

CANDIDATE_COLOUR = "#1f77b4"
CHAMPION_COLOUR = "#aaaaaa"
BAR_WIDTH = 320  # pixels for the longest bar of a chart
ROW_HEIGHT = 16

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5rem 0; } td, th { padding: .2rem .6rem; text-align: left; }
th { background: #f3f3f3; } tr:nth-child(even) td { background: #fafafa; }
.pass { color: #17692c; } .fail { color: #b00020; font-weight: 600; }
.verdict { font-size: 1.1rem; padding: .5rem .8rem; border-radius: 4px; display: inline-block; }
.registered { background: #e6f4ea; } .rejected { background: #fde7ea; }
.legend span { display: inline-block; width: .8rem; height: .8rem; margin: 0 .3rem 0 1rem; vertical-align: middle; }
svg text { font: 12px system-ui, sans-serif; }
"""


def _number(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return escape(str(value))
        return f"{value:.{digits}g}"
    return escape(str(value))


def _legend(with_champion: bool) -> str:
    champion = f'<span style="background:{CHAMPION_COLOUR}"></span>champion' if with_champion else ""
    return f'<p class="legend"><span style="background:{CANDIDATE_COLOUR}"></span>candidate{champion}</p>'


def bar_chart(rows: list[tuple[str, float | None, float | None]], *, title: str) -> str:
    """Paired horizontal bars (candidate, champion) per label, scaled to the largest absolute value."""
    values = [abs(v) for _, a, b in rows for v in (a, b) if v is not None and math.isfinite(v)]
    if not values:
        return ""
    scale = BAR_WIDTH / (max(values) or 1.0)
    label_width = 12 + 7 * max(len(label) for label, _, _ in rows)
    height = len(rows) * (2 * ROW_HEIGHT + 8) + 8
    width = label_width + BAR_WIDTH + 90
    parts = [
        f'<svg role="img" aria-label="{escape(title)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    ]
    y = 4
    for label, candidate, champion in rows:
        parts.append(f'<text x="0" y="{y + ROW_HEIGHT}">{escape(label)}</text>')
        for offset, value, colour in ((0, candidate, CANDIDATE_COLOUR), (ROW_HEIGHT, champion, CHAMPION_COLOUR)):
            if value is None or not math.isfinite(value):
                continue
            length = max(abs(value) * scale, 1.0)
            top = y + offset
            parts.append(
                f'<rect x="{label_width}" y="{top}" width="{length:.1f}" height="{ROW_HEIGHT - 2}" fill="{colour}"/>'
                f'<text x="{label_width + length + 4:.1f}" y="{top + ROW_HEIGHT - 4}">{_number(value)}</text>'
            )
        y += 2 * ROW_HEIGHT + 8
    parts.append("</svg>")
    return "".join(parts)


def calibration_chart(curve: list[dict[str, Any]], *, size: int = 280) -> str:
    """The reliability curve: mean predicted probability (x) against observed frequency (y), and the diagonal."""
    if not curve:
        return ""
    margin = 36
    inner = size - 2 * margin

    def point(predicted: float, observed: float) -> tuple[float, float]:
        return margin + predicted * inner, size - margin - observed * inner

    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (point(p["predicted"], p["observed"]) for p in curve))
    most = max(p["rows"] for p in curve) or 1
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{2 + 4 * math.sqrt(p["rows"] / most):.1f}" fill="{CANDIDATE_COLOUR}">'
        f"<title>predicted {_number(p['predicted'], 3)}, observed {_number(p['observed'], 3)}, "
        f"{int(p['rows'])} rows</title></circle>"
        for p, (x, y) in ((p, point(p["predicted"], p["observed"])) for p in curve)
    )
    x0, y0 = point(0, 0)
    x1, y1 = point(1, 1)
    return (
        f'<svg role="img" aria-label="calibration curve" width="{size}" height="{size}" '
        f'viewBox="0 0 {size} {size}" xmlns="http://www.w3.org/2000/svg"><title>calibration curve</title>'
        f'<rect x="{margin}" y="{margin}" width="{inner}" height="{inner}" fill="none" stroke="#ccc"/>'
        f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#999" stroke-dasharray="4 3"/>'
        f'<polyline points="{path}" fill="none" stroke="{CANDIDATE_COLOUR}" stroke-width="2"/>{dots}'
        f'<text x="{margin}" y="{size - 8}">predicted probability</text>'
        f'<text x="4" y="{margin - 10}">observed frequency</text>'
        f'<text x="{margin - 12}" y="{size - margin + 14}">0</text><text x="{size - margin - 4}" '
        f'y="{size - margin + 14}">1</text></svg>'
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _checks(checks: list[CheckResult]) -> str:
    if not checks:
        return "<p>No checks recorded.</p>"
    rows = [
        [
            f'<span class="{"pass" if c.passed else "fail"}">{"pass" if c.passed else "FAIL"}</span>',
            escape(c.name),
            _number(c.value),
            _number(c.bound),
            escape(c.message),
        ]
        for c in checks
    ]
    return _table(["", "check", "value", "bound", "why"], rows)


def _metrics(evaluation: Evaluation) -> str:
    champion = evaluation.champion_metrics or {}
    names = sorted(set(evaluation.candidate_metrics) | set(champion))
    rows = [[escape(n), _number(evaluation.candidate_metrics.get(n)), _number(champion.get(n))] for n in names]
    chart = bar_chart(
        [(n, evaluation.candidate_metrics.get(n), champion.get(n)) for n in names],
        title="candidate and champion metrics",
    )
    return _legend(bool(champion)) + chart + _table(["metric", "candidate", "champion"], rows)


def _slices(evaluation: Evaluation) -> str:
    candidate = evaluation.slices.candidate
    champion = evaluation.slices.champion or {}
    if not candidate:
        return "<p>No slice columns declared (<code>promotion.slices</code>).</p>"
    parts = []
    for column, values in candidate.items():
        rows = [
            (str(value), facts.get("rows"), facts.get("value"), champion.get(column, {}).get(value, {}).get("value"))
            for value, facts in values.items()
        ]
        parts.append(f"<h3>{escape(column)} ({escape(evaluation.metric)})</h3>")
        parts.append(bar_chart([(v, c, h) for v, _, c, h in rows], title=f"{evaluation.metric} per value of {column}"))
        parts.append(
            _table(
                ["value", "rows", "candidate", "champion"],
                [[escape(v), _number(n), _number(c), _number(h)] for v, n, c, h in rows],
            )
        )
    return _legend(bool(champion)) + "".join(parts)


def _pinned(report: dict[str, Any]) -> str:
    """Candidate and champion on the spec's pinned evaluation set (a section only when the spec pins one)."""
    pinned = report.get("pinned")
    if not pinned:
        return ""
    where = f"{pinned.get('dataset')} v{pinned.get('version')}"
    heading = f"<h2>Pinned evaluation set: {escape(where)}</h2>"
    if pinned.get("error"):
        return f'{heading}<p class="fail">Not measured: {escape(str(pinned["error"]))}</p>'
    candidate, champion = pinned.get("candidate_metrics") or {}, pinned.get("champion_metrics") or {}
    names = sorted(set(candidate) | set(champion))
    note = (
        f"<p>The champion was not measured: {escape(str(pinned['champion_error']))}</p>"
        if pinned.get("champion_error")
        else ""
    )
    return (
        f"{heading}<p>{_number(pinned.get('rows'))} labelled rows, snapshot sha256 "
        f"<code>{escape(str(pinned.get('sha256')))}</code>.</p>{note}"
        + _legend(bool(champion))
        + bar_chart([(n, candidate.get(n), champion.get(n)) for n in names], title=f"metrics on {where}")
        + _table(
            ["metric", "candidate", "champion"],
            [[escape(n), _number(candidate.get(n)), _number(champion.get(n))] for n in names],
        )
    )


def _robustness(report: dict[str, Any]) -> str:
    robustness = report.get("robustness")
    if not robustness:
        return "<p>Not measured.</p>"
    rows = [[escape(str(k).replace("_", " ")), _number(v)] for k, v in robustness.items()]
    return _table(["measure", "value"], rows)


def _fairness(report: dict[str, Any]) -> str:
    fairness = report.get("fairness")
    if not fairness:
        return "<p>Not measured (binary classifiers with declared slice columns only).</p>"
    rows = [
        [escape(column), _number(facts.get("positive_rate_gap")), _number(facts.get("tpr_gap"))]
        for column, facts in fairness.items()
    ]
    return _table(["slice column", "positive-rate gap", "true-positive-rate gap"], rows)


def _profile(report: dict[str, Any]) -> str:
    profile = report.get("profile")
    if not profile:
        return "<p>Not measured.</p>"
    rows = [
        ["artifact size", f"{_number(profile.get('artifact_bytes'))} bytes"],
        ["load time", f"{_number(profile.get('load_seconds'), 3)} s"],
    ]
    for batch, summary in (profile.get("latency") or {}).items():
        rows.append(
            [
                f"latency per row, {escape(batch.replace('_', ' '))}",
                f"median {_number(summary.get('median_ms'), 3)} ms, p99 {_number(summary.get('p99_ms'), 3)} ms",
            ]
        )
    infra = report.get("infra") or {}
    if infra:
        outcome = "loads and predicts identically" if not infra.get("error") else escape(str(infra["error"]))
        rows.append(["clean-process check", f"{outcome} ({_number(infra.get('rows'))} rows)"])
    return _table(["", ""], rows)


def render(evaluation: Evaluation) -> str:
    """The whole page for one evaluation."""
    title = f"{evaluation.model}: evaluation of run {evaluation.run_id}"
    champion = f"v{evaluation.champion_version}" if evaluation.champion_version is not None else "none (first version)"
    registered = (
        f", registered as v{evaluation.registered_version}" if evaluation.registered_version is not None else ""
    )
    reasons = "".join(f"<li>{escape(r)}</li>" for r in evaluation.reasons)
    when = f", {escape(evaluation.created_at.isoformat())}" if evaluation.created_at else ""
    calibration = evaluation.report.get("calibration")
    calibration_section = (
        f"<p>Expected calibration error: <b>{_number(calibration.get('ece'))}</b></p>"
        + calibration_chart(calibration.get("curve", []))
        if calibration
        else "<p>Not measured (classifiers with probabilities only).</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{STYLE}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="verdict {escape(evaluation.decision)}">{escape(evaluation.decision)}{escape(registered)}</p>
<p>Primary metric <b>{escape(evaluation.metric)}</b>, on {evaluation.holdout_rows} held-out rows;
champion {escape(champion)}. Evaluation <code>{escape(evaluation.id)}</code>{when}.</p>
<ul>{reasons}</ul>
<h2>Checks</h2>{_checks(evaluation.checks)}
<h2>Metrics: candidate against champion</h2>{_metrics(evaluation)}
<h2>Slices</h2>{_slices(evaluation)}
{_pinned(evaluation.report)}
<h2>Calibration</h2>{calibration_section}
<h2>Robustness under perturbation</h2>{_robustness(evaluation.report)}
<h2>Fairness</h2>{_fairness(evaluation.report)}
<h2>Profile</h2>{_profile(evaluation.report)}
</body></html>
"""
