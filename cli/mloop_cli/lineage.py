"""``mloop lineage``: from a prediction (or a model version) back to the data and code behind it.

Each hop asks the service that owns the record: drift (the prediction and the version that answered),
the registry (the version's lineage and its approvals), the validator (the evaluation), the trainer (the
run) and ingest (the dataset version and its checks). A hop whose service does not answer is shown as
such; the others still print.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any
from urllib.parse import quote

import httpx
import typer
from rich.tree import Tree

from mloop_cli.client import auth_headers, console, err, url

VERSION_REF = re.compile(r"([a-z0-9][a-z0-9_-]{0,62}):(\d{1,9})")
APPROVAL_ACTIONS = {"version.approved", "version.rejected"}


class Missing(str):
    """Why a hop has no record (service down, or not found)."""


def fetch(service: str, path: str, **params: Any) -> dict[str, Any] | Missing:
    try:
        response = httpx.get(url(service) + path, params=params, headers=auth_headers(), timeout=30)
    except httpx.TransportError as exc:
        return Missing(f"{service} is not reachable ({type(exc).__name__})")
    if response.status_code >= 400:
        try:
            message = response.json().get("error", {}).get("message", response.text)
        except ValueError:
            message = response.text
        return Missing(f"{service}: {response.status_code} {message}")
    body: dict[str, Any] = response.json()
    return body


def chain(target: str) -> dict[str, Any]:
    """Every record from the prediction (or version) back to the dataset, keyed by hop."""
    found: dict[str, Any] = {}
    ref = VERSION_REF.fullmatch(target)
    if ref is None:
        prediction = fetch("drift", f"/v1/predictions/{quote(target, safe='')}")
        found["prediction"] = prediction
        if isinstance(prediction, Missing) or prediction.get("version") is None:
            return found
        model, version = prediction["model"], int(prediction["version"])
    else:
        model, version = ref.group(1), int(ref.group(2))
    lineage = fetch("registry", f"/v1/lineage/{model}/{version}")
    found["version"] = lineage
    if isinstance(lineage, Missing):
        return found
    audit = fetch("registry", "/v1/audit", model=model, limit=1000)
    found["decisions"] = (
        audit
        if isinstance(audit, Missing)
        else [e for e in audit["entries"] if e.get("version") == version and e["action"] in APPROVAL_ACTIONS]
    )
    found["evaluation"] = fetch("validator", f"/v1/evaluations/{lineage['evaluation_id']}")
    found["run"] = fetch("trainer", f"/v1/runs/{lineage['run_id']}")
    found["dataset"] = fetch("ingest", f"/v1/datasets/{lineage['dataset']}/versions/{lineage['dataset_version']}")
    return found


def _missing(tree: Tree, what: str, value: Any) -> bool:
    if isinstance(value, Missing):
        tree.add(f"[red]{what}: {value}[/]")
        return True
    return False


def render(target: str, found: dict[str, Any]) -> Tree:
    root = Tree(f"[bold]{target}[/]")
    node = root
    prediction = found.get("prediction")
    if prediction is not None:
        if _missing(root, "prediction", prediction):
            return root
        label = f", label {prediction['label']!r}" if prediction.get("label") is not None else ", no label yet"
        node = root.add(
            f"prediction {prediction['prediction']!r} at {str(prediction['logged_at'])[:19]}{label} "
            f"by [bold]{prediction['model']} v{prediction['version']}[/]"
        )
    lineage = found.get("version")
    if lineage is None or _missing(node, "model version", lineage):
        return root
    version = node.add(
        f"[bold]{lineage['model']} v{lineage['version']}[/] ({lineage['estimator_class']} {lineage['params']}, "
        f"seed {lineage['seed']}, code {lineage['code_version']}), artifact sha256 {lineage['artifact']['sha256']}"
    )
    evaluation = found["evaluation"]
    if not _missing(version, "evaluation", evaluation):
        metric = evaluation["metric"]
        champion = evaluation.get("champion_metrics") or {}
        against = (
            f" against champion v{evaluation['champion_version']} {champion.get(metric)}"
            if evaluation.get("champion_version")
            else " (first version)"
        )
        version.add(
            f"evaluation {evaluation['id']}: {evaluation['decision']}, {metric} "
            f"{evaluation['candidate_metrics'].get(metric)}{against}"
        )
    decisions = found["decisions"]
    if not _missing(version, "approvals", decisions):
        for entry in decisions:
            comment = entry["detail"].get("comment")
            version.add(
                f"{entry['action']} by {entry['actor']} at {entry['at'][:19]}" + (f": {comment}" if comment else "")
            )
    run = found["run"]
    if _missing(version, "run", run):
        return root
    trained = version.add(
        f"run {run['run_id']} ({run['trigger']}, spec v{run['spec_version']} {run['spec_digest'][:12]}, "
        f"{run['status']}, finished {str(run['finished_at'])[:19]})"
    )
    dataset = found["dataset"]
    if not _missing(trained, "dataset", dataset):
        checks = dataset.get("report", {}).get("checks", [])
        warnings = sum(1 for c in checks if c.get("severity") == "warning")
        trained.add(
            f"dataset [bold]{dataset['dataset']} v{dataset['version']}[/] sha256 {dataset.get('sha256')} "
            f"({dataset['status']}, {dataset['rows']} rows, {len(checks)} checks, {warnings} warnings)"
        )
    if run.get("recent_data_sha256"):
        trained.add(f"recent production rows sha256 {run['recent_data_sha256']}")
    return root


def lineage(
    target: Annotated[str, typer.Argument(help="a prediction's request id, or NAME:VERSION")],
    as_json: Annotated[bool, typer.Option("--json", help="every record of the chain as JSON")] = False,
) -> None:
    """Trace a prediction (by request id) or a model version back to its evaluation, run, code and data."""
    found = chain(target)
    if as_json:
        console.print_json(json.dumps(found, default=str))
    else:
        console.print(render(target, found))
    first = found.get("prediction", found.get("version"))
    if isinstance(first, Missing):
        err.print(f"[red]error:[/] {first}")
        raise typer.Exit(1)
