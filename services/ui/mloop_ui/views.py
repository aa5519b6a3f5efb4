"""What the pages show, computed from the services' JSON (pure): tables, timelines and Plotly figures.

Figures are plain Plotly JSON (``{"data": [...], "layout": {...}}``); the page hands them to plotly.js, which
the UI serves from the plotly package itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]
Figure = dict[str, Any]

# Colours that stay apart for colour-blind readers (Okabe-Ito).
CANDIDATE, CHAMPION, REFERENCE, CURRENT = "#0072B2", "#E69F00", "#999999", "#D55E00"
GOOD, BAD, THRESHOLD = "#009E73", "#D55E00", "#CC79A7"
ROLLOUT_ALIASES = ("canary", "shadow", "challenger")


def layout(title: str = "", **extra: Any) -> Json:
    return {
        "title": {"text": title, "font": {"size": 14}, "x": 0.01, "y": 0.98, "yanchor": "top"},
        "margin": {"l": 55, "r": 15, "t": 60, "b": 60},
        "height": 320,
        # Above the plot, right of the title: below it, long tick labels would run into it.
        "legend": {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
        "font": {"family": "system-ui, sans-serif", "size": 12},
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        **extra,
    }


# --- models ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    name: str
    dataset: str
    metric: str
    production: int | None
    rollouts: dict[str, int]  # canary / shadow / challenger -> version
    labels: dict[str, int]  # any other alias
    versions: int
    latest_status: str | None
    pending: int  # versions waiting for an approver
    last_promotion: str | None  # when production last moved
    drift: Json | None  # the newest window's verdict


def model_rows(
    models: Sequence[Json],
    versions: Mapping[str, Sequence[Json]],
    drift: Mapping[str, Json | None],
    audit: Sequence[Json],
) -> list[ModelRow]:
    promoted: dict[str, str] = {}
    for entry in audit:  # newest first
        if entry["action"] == "alias.moved" and (entry.get("detail") or {}).get("alias") == "production":
            promoted.setdefault(entry["model"], entry["at"])
    rows = []
    for model in models:
        name = model["name"]
        aliases: dict[str, int] = model.get("aliases") or {}
        of_model = versions.get(name, [])
        rows.append(
            ModelRow(
                name=name,
                dataset=model.get("dataset") or model["spec"].get("dataset", ""),
                metric=model["spec"].get("metric", ""),
                production=aliases.get("production"),
                rollouts={a: v for a, v in aliases.items() if a in ROLLOUT_ALIASES},
                labels={a: v for a, v in aliases.items() if a != "production" and a not in ROLLOUT_ALIASES},
                versions=len(of_model),
                latest_status=of_model[-1]["status"] if of_model else None,
                pending=sum(1 for v in of_model if v["status"] == "pending_approval"),
                last_promotion=promoted.get(name),
                drift=drift.get(name),
            )
        )
    return rows


# --- a model's history ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str  # trained, evaluated, registered, approved, promoted, rejected, failed
    state: str  # done, failed, waiting
    at: str | None
    detail: str = ""
    href: str = ""


@dataclass(frozen=True)
class RunHistory:
    run_id: str
    started_at: str | None
    trigger: str
    version: int | None
    steps: list[Step] = field(default_factory=list)


def _metric(metrics: Mapping[str, Any] | None, metric: str) -> str:
    value = (metrics or {}).get(metric)
    return f"{metric} {value:.4f}" if isinstance(value, int | float) else ""


def history(
    model: str,
    metric: str,
    runs: Sequence[Json],
    evaluations: Sequence[Json],
    versions: Sequence[Json],
    audit: Sequence[Json],
) -> list[RunHistory]:
    """Each run, newest first, as the steps it went through: trained → evaluated → registered → approved →
    promoted, or where it stopped (failed, rejected by the validator or by an approver)."""
    by_run_evaluation = {e["run_id"]: e for e in evaluations}
    by_run_version = {v["run_id"]: v for v in versions}
    approvals: dict[int, Json] = {}
    promotions: dict[int, list[Json]] = {}
    for entry in sorted(audit, key=lambda e: e["id"]):
        version = entry.get("version")
        if version is None:
            continue
        if entry["action"] in ("version.approved", "version.rejected"):
            approvals[version] = entry
        elif entry["action"] == "alias.moved":
            promotions.setdefault(version, []).append(entry)
    histories = []
    for run in runs:
        steps: list[Step] = []
        version = by_run_version.get(run["run_id"])
        evaluation = by_run_evaluation.get(run["run_id"])
        if run["status"] == "failed":
            steps.append(Step("failed", "failed", run.get("finished_at"), run.get("error") or ""))
        else:
            trained = f"{run.get('estimator_class') or ''} · {_metric(run.get('holdout_metrics'), metric)}"
            steps.append(Step("trained", "done", run.get("finished_at"), trained.strip(" ·")))
            if evaluation is None:
                steps.append(Step("evaluated", "waiting", None))
            else:
                rejected = evaluation["decision"] == "rejected"
                steps.append(
                    Step(
                        "evaluated",
                        "failed" if rejected else "done",
                        evaluation.get("settled_at") or evaluation.get("created_at"),
                        "; ".join(evaluation.get("reasons") or [])[:300],
                    )
                )
                if rejected:
                    steps.append(Step("rejected", "failed", evaluation.get("created_at"), "by the validator"))
        if version is not None:
            number = version["version"]
            href = f"/models/{model}/versions/{number}"
            steps.append(Step("registered", "done", version.get("created_at"), f"v{number}", href))
            decided = approvals.get(number)
            if version["status"] == "pending_approval":
                steps.append(Step("approved", "waiting", None, "waits for an approver", href))
            elif decided is not None and decided["action"] == "version.approved":
                comment = (decided.get("detail") or {}).get("comment") or ""
                steps.append(Step("approved", "done", decided["at"], f"{decided['actor']}: {comment}".strip(": ")))
            elif decided is not None:
                comment = (decided.get("detail") or {}).get("comment") or ""
                steps.append(Step("rejected", "failed", decided["at"], f"{decided['actor']}: {comment}".strip(": ")))
            for moved in promotions.get(number, []):
                alias = (moved.get("detail") or {}).get("alias", "")
                name = "promoted" if alias == "production" else alias
                steps.append(Step(name, "done", moved["at"], f"{alias} ({(moved.get('detail') or {}).get('reason')})"))
        histories.append(
            RunHistory(
                run_id=run["run_id"],
                started_at=run.get("started_at"),
                trigger=run.get("trigger", ""),
                version=version["version"] if version else None,
                steps=steps,
            )
        )
    return histories


def metric_over_versions(metric: str, evaluations: Sequence[Json], versions: Sequence[Json]) -> Figure:
    """The primary metric of every evaluated candidate in time order: registered ones labelled with their
    version, rejected ones apart, and the champion each was compared with."""
    version_of_run = {v["run_id"]: v["version"] for v in versions}
    ordered = sorted(evaluations, key=lambda e: e["created_at"])
    traces = []
    for decision, colour, symbol in (("registered", GOOD, "circle"), ("rejected", BAD, "x")):
        chosen = [e for e in ordered if e["decision"] == decision and metric in (e.get("candidate_metrics") or {})]
        traces.append(
            {
                "type": "scatter",
                "mode": "markers+text" if decision == "registered" else "markers",
                "name": f"candidate {decision}",
                "x": [e["created_at"] for e in chosen],
                "y": [e["candidate_metrics"][metric] for e in chosen],
                "text": [f"v{version_of_run[e['run_id']]}" if e["run_id"] in version_of_run else "" for e in chosen],
                "textposition": "top center",
                "marker": {"color": colour, "size": 10, "symbol": symbol},
            }
        )
    compared = [e for e in ordered if metric in (e.get("champion_metrics") or {})]
    traces.append(
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": "champion it was compared with",
            "x": [e["created_at"] for e in compared],
            "y": [e["champion_metrics"][metric] for e in compared],
            "line": {"color": CHAMPION, "dash": "dot"},
        }
    )
    return {"data": traces, "layout": layout(f"{metric} of each candidate", yaxis={"title": {"text": metric}})}


# --- a version's evaluation ------------------------------------------------------------------------------


def metrics_bars(evaluation: Json) -> Figure:
    candidate = evaluation.get("candidate_metrics") or {}
    champion = evaluation.get("champion_metrics") or {}
    names = list(candidate)
    data = [
        {
            "type": "bar",
            "name": "candidate",
            "x": names,
            "y": [candidate[n] for n in names],
            "marker": {"color": CANDIDATE},
        }
    ]
    if champion:
        version = evaluation.get("champion_version")
        data.append(
            {
                "type": "bar",
                "name": f"champion v{version}",
                "x": names,
                "y": [champion.get(n) for n in names],
                "marker": {"color": CHAMPION},
            }
        )
    return {"data": data, "layout": layout("candidate against champion on the same holdout", barmode="group")}


def slice_bars(evaluation: Json) -> list[Figure]:
    """One bar chart per slice column: the primary metric per value, candidate against champion."""
    slices = evaluation.get("slices") or {}
    candidate, champion = slices.get("candidate") or {}, slices.get("champion") or {}
    figures = []
    for column, values in candidate.items():
        labels = list(values)
        data = [
            {
                "type": "bar",
                "name": "candidate",
                "x": labels,
                "y": [values[v].get("value") for v in labels],
                "text": [f"{values[v].get('rows')} rows" for v in labels],
                "marker": {"color": CANDIDATE},
            }
        ]
        if column in champion:
            data.append(
                {
                    "type": "bar",
                    "name": "champion",
                    "x": labels,
                    "y": [(champion[column].get(v) or {}).get("value") for v in labels],
                    "marker": {"color": CHAMPION},
                }
            )
        figures.append({"data": data, "layout": layout(f"{evaluation.get('metric')} by {column}", barmode="group")})
    return figures


def calibration(evaluation: Json) -> Figure | None:
    found = ((evaluation.get("report") or {}).get("calibration") or {}).get("curve")
    if not found:
        return None
    ece = (evaluation["report"]["calibration"] or {}).get("ece")
    return {
        "data": [
            {
                "type": "scatter",
                "mode": "lines",
                "name": "perfectly calibrated",
                "x": [0, 1],
                "y": [0, 1],
                "line": {"color": REFERENCE, "dash": "dash"},
            },
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": "candidate",
                "x": [p["predicted"] for p in found],
                "y": [p["observed"] for p in found],
                "text": [f"{p['rows']} rows" for p in found],
                "line": {"color": CANDIDATE},
            },
        ],
        "layout": layout(
            f"calibration (ECE {ece:.3f})" if isinstance(ece, int | float) else "calibration",
            xaxis={"title": {"text": "predicted probability"}, "range": [0, 1]},
            yaxis={"title": {"text": "observed frequency"}, "range": [0, 1]},
        ),
    }


# --- lineage ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    id: str
    kind: str  # dataset, run, evaluation, version, promotion
    title: str
    lines: list[str]
    href: str
    x: int = 0
    y: int = 0


@dataclass(frozen=True)
class Graph:
    nodes: list[Node]
    edges: list[tuple[Node, Node]]
    width: int
    height: int


NODE_W, NODE_H, GAP_X, GAP_Y = 250, 92, 50, 20


def _halves(digest: str) -> list[str]:
    return [digest[:32], digest[32:]] if len(digest) > 32 else [digest]


def lineage_graph(model: str, version: Json, audit: Sequence[Json]) -> Graph:
    """Dataset snapshot(s) → training run → evaluation → version → its promotions, laid out left to right."""
    lineage = version.get("lineage") or {}
    number = version["version"]
    columns: list[list[Node]] = [[], [], [], [], []]
    if lineage.get("dataset"):
        columns[0].append(
            Node(
                "dataset",
                "dataset",
                f"{lineage['dataset']} v{lineage.get('dataset_version')}",
                ["sha256", *_halves(lineage.get("dataset_sha256") or "")],
                f"/datasets/{lineage['dataset']}#v{lineage.get('dataset_version')}",
            )
        )
    if lineage.get("recent_data_sha256"):
        columns[0].append(
            Node(
                "recent",
                "dataset",
                "labelled production rows",
                ["sha256", *_halves(lineage["recent_data_sha256"])],
                "#run",
            )
        )
    columns[1].append(
        Node(
            "run",
            "run",
            f"run {str(version.get('run_id', ''))[:12]}",
            [
                f"{lineage.get('estimator_class', '')}",
                f"trigger {lineage.get('trigger', '?')}",
                f"code {str(lineage.get('code_version') or '?')[:12]}",
            ],
            "#run",
        )
    )
    champion = lineage.get("champion_version")
    columns[2].append(
        Node(
            "evaluation",
            "evaluation",
            f"evaluation {str(version.get('evaluation_id', ''))[:12]}",
            [f"against v{champion}" if champion else "first version: no champion", f"status {version.get('status')}"],
            "#evaluation",
        )
    )
    artifact = (version.get("artifact") or {}).get("sha256", "")
    columns[3].append(Node("version", "version", f"{model} v{number}", ["model sha256", *_halves(artifact)], "#top"))
    for entry in sorted(audit, key=lambda e: e["id"]):
        if entry["action"] == "alias.moved" and entry.get("version") == number:
            detail = entry.get("detail") or {}
            columns[4].append(
                Node(
                    f"promotion-{entry['id']}",
                    "promotion",
                    f"→ {detail.get('alias')}",
                    [str(entry["at"])[:19].replace("T", " "), f"by {entry['actor']}"[:40], f"({detail.get('reason')})"],
                    f"/models/{model}#audit",
                )
            )
    columns = [c for c in columns if c]
    tallest = max(len(c) for c in columns)
    height = tallest * NODE_H + (tallest - 1) * GAP_Y + 2 * GAP_Y
    placed: list[list[Node]] = []
    for i, column in enumerate(columns):
        top = (height - (len(column) * NODE_H + (len(column) - 1) * GAP_Y)) // 2
        placed.append(
            [
                Node(**{**n.__dict__, "x": GAP_Y + i * (NODE_W + GAP_X), "y": top + j * (NODE_H + GAP_Y)})
                for j, n in enumerate(column)
            ]
        )
    edges = [(a, b) for left, right in zip(placed, placed[1:], strict=False) for a in left for b in right]
    width = GAP_Y * 2 + len(placed) * NODE_W + (len(placed) - 1) * GAP_X
    return Graph([n for c in placed for n in c], edges, width, height)


# --- drift ----------------------------------------------------------------------------------------------------


def _window_label(report: Json) -> str:
    return f"v{report['version']} w{report['window_index']}"


def feature_figures(details: Sequence[Json], limit: int = 12) -> list[Figure]:
    """Each feature's test statistic over the windows (oldest first) with the threshold it is judged by;
    drifted features first."""
    ordered = sorted(details, key=lambda d: (d["created_at"], d["version"], d["window_index"]))
    series: dict[str, dict[str, list[Any]]] = {}
    for report in ordered:
        for name, feature in ((report.get("report") or {}).get("features") or {}).items():
            tests = feature.get("tests") or []
            if not tests:
                continue
            test = tests[0]
            line = series.setdefault(name, {"x": [], "y": [], "threshold": [], "drifted": [], "method": test["method"]})
            line["x"].append(_window_label(report))
            line["y"].append(test.get("statistic"))
            line["threshold"].append(test.get("threshold"))
            line["drifted"].append(bool(test.get("drifted")))
    ranked = sorted(series.items(), key=lambda item: (-sum(item[1]["drifted"]), item[0]))
    figures = []
    for name, line in ranked[:limit]:
        figures.append(
            {
                "data": [
                    {
                        "type": "scatter",
                        "mode": "lines+markers",
                        "name": f"{line['method']} statistic",
                        "x": line["x"],
                        "y": line["y"],
                        "marker": {"color": [BAD if d else CANDIDATE for d in line["drifted"]], "size": 8},
                        "line": {"color": CANDIDATE},
                    },
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "name": "threshold",
                        "x": line["x"],
                        "y": line["threshold"],
                        "line": {"color": THRESHOLD, "dash": "dash"},
                    },
                ],
                "layout": layout(name, height=260, xaxis={"type": "category"}),
            }
        )
    return figures


def performance_figure(details: Sequence[Json]) -> Figure | None:
    """The primary metric per window: measured on labels where there are enough, estimated (with its band)
    where there are not, against the baseline and the tolerated limit."""
    ordered = sorted(details, key=lambda d: (d["created_at"], d["version"], d["window_index"]))
    rows = [(d, (d.get("report") or {}).get("performance") or {}) for d in ordered]
    rows = [(d, p) for d, p in rows if p.get("metric")]
    if not rows:
        return None
    metric = rows[-1][1]["metric"]
    x = [_window_label(d) for d, _ in rows]
    estimated = [(p.get("estimated") or {}).get(metric) or {} for _, p in rows]
    actual = [(p.get("metrics") or {}).get(metric) for _, p in rows]
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": "estimate upper",
            "x": x,
            "y": [e.get("upper") for e in estimated],
            "line": {"width": 0},
            "showlegend": False,
            "hoverinfo": "skip",
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "estimate band",
            "x": x,
            "y": [e.get("lower") for e in estimated],
            "fill": "tonexty",
            "fillcolor": "rgba(0,114,178,0.15)",
            "line": {"width": 0},
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": f"estimated {metric}",
            "x": x,
            "y": [e.get("value") for e in estimated],
            "line": {"color": CANDIDATE, "dash": "dot"},
        },
        {
            "type": "scatter",
            "mode": "lines+markers",
            "name": f"actual {metric} (labels)",
            "x": x,
            "y": actual,
            "line": {"color": GOOD},
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "baseline",
            "x": x,
            "y": [(p.get("baseline") or {}).get(metric) for _, p in rows],
            "line": {"color": REFERENCE},
        },
        {
            "type": "scatter",
            "mode": "lines",
            "name": "tolerated limit",
            "x": x,
            "y": [p.get("limit") for _, p in rows],
            "line": {"color": THRESHOLD, "dash": "dash"},
        },
    ]
    return {"data": data, "layout": layout(f"{metric} over windows", xaxis={"type": "category"})}


def histogram_figures(histograms: Json, first: Iterable[str] = (), limit: int = 12) -> list[Figure]:
    """Reference against current for each feature of one window (``first``: the drifted ones, shown first)."""
    features: Mapping[str, Json] = histograms.get("features") or {}
    order = [f for f in first if f in features] + sorted(f for f in features if f not in set(first))
    figures = []
    for name in order[:limit]:
        histogram = features[name]
        missing = histogram.get("current_missing") or 0
        title = f"{name} ({histogram.get('current_values')} values" + (f", {missing:.0%} missing)" if missing else ")")
        figures.append(
            {
                "data": [
                    {
                        "type": "bar",
                        "name": "reference (training)",
                        "x": histogram["bins"],
                        "y": histogram["reference"],
                        "marker": {"color": REFERENCE},
                    },
                    {
                        "type": "bar",
                        "name": "current window",
                        "x": histogram["bins"],
                        "y": histogram["current"],
                        "marker": {"color": CURRENT},
                    },
                ],
                "layout": layout(
                    title,
                    height=300,
                    barmode="group",
                    yaxis={"tickformat": ".0%"},
                    xaxis={"type": "category", "tickangle": -35, "automargin": True},
                ),
            }
        )
    return figures
