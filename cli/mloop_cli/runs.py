"""``mloop runs``: training runs, finished and in progress (trainer API)."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mloop_cli.client import call, console

app = typer.Typer(help="Training runs (trainer): list, show, follow one in progress.", no_args_is_help=True)


def _progress_text(run: dict[str, Any]) -> str:
    total = run.get("trials_total")
    return f"{run['trials_done']}/{total} trials" if total else "starting"


@app.command("list")
def runs_list(
    model: Annotated[str | None, typer.Option(help="only this model's runs")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """Runs in progress, then finished runs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if model:
        params["model"] = model
    body = call("GET", "trainer", "/v1/runs", params=params)
    table = Table("run", "model", "status", "trigger", "dataset", "estimator", "cv score", "finished / progress")
    for run in body["training"]:
        table.add_row(
            run["run_id"][:12],
            run["model"],
            "[yellow]training[/]",
            run["trigger"],
            f"{run['dataset']}:v{run['dataset_version']}",
            "",
            "",
            f"{_progress_text(run)} ({run['stage']})",
        )
    for run in body["runs"]:
        status = "[green]succeeded[/]" if run["status"] == "succeeded" else "[red]failed[/]"
        score = f"{run['cv_score']:.4f}" if run.get("cv_score") is not None else ""
        table.add_row(
            run["run_id"][:12],
            run["model"],
            status,
            run["trigger"],
            f"{run['dataset']}:v{run['dataset_version']}",
            run.get("estimator_class") or "",
            score,
            (run.get("finished_at") or "")[:19].replace("T", " "),
        )
    console.print(table)


def _follow(run_id: str, run: dict[str, Any], interval: float) -> dict[str, Any]:
    """Poll a run in progress with a progress bar until it finishes; returns the finished run."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(run["stage"], total=run.get("trials_total"), completed=run["trials_done"])
        while run.get("status") == "training":
            bar.update(task, description=run["stage"], total=run.get("trials_total"), completed=run["trials_done"])
            time.sleep(interval)
            run = call("GET", "trainer", f"/v1/runs/{run_id}")
    return run


@app.command("show")
def runs_show(
    run_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="wait for a run in progress, with a progress bar")
    ] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="seconds between polls with --follow")] = 1.0,
) -> None:
    """One run: its progress while it trains; afterwards its data, parameters, scores and timings."""
    run = call("GET", "trainer", f"/v1/runs/{run_id}")
    if run.get("status") == "training":
        if not follow:
            console.print(
                f"run [bold]{run['run_id']}[/] of [bold]{run['model']}[/] is training: {_progress_text(run)}, "
                f"{run['stage']} (started {run['started_at'][:19].replace('T', ' ')})"
            )
            return
        run = _follow(run_id, run, interval)
    details = run.get("details") or {}
    colour = "green" if run["status"] == "succeeded" else "red"
    console.print(f"run [bold]{run['run_id']}[/] of [bold]{run['model']}[/]: [{colour}]{run['status']}[/]")
    facts = Table(show_header=False, box=None)
    facts.add_row("trigger", f"{run['trigger']} (event {run['trigger_event_id']})")
    facts.add_row("spec", f"v{run['spec_version']} ({run['spec_digest'][:12]})")
    facts.add_row("dataset", f"{run['dataset']}:v{run['dataset_version']} sha256 {run['dataset_sha256']}")
    if run.get("recent_data_sha256"):
        facts.add_row("recent data", f"sha256 {run['recent_data_sha256']}")
    facts.add_row("code", str(run.get("code_version")))
    facts.add_row("seed", str(details.get("seed")))
    if run.get("error"):
        facts.add_row("error", f"[red]{run['error']}[/] ({details.get('failure')})")
    if details.get("estimator_class"):
        facts.add_row("best", f"{details['estimator_class']} {details.get('params')}")
        facts.add_row("cv score", f"{details['cv_score']:.4f}")
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(details.get("holdout_metrics", {}).items()))
        facts.add_row("holdout", f"{metrics} on {details.get('holdout_rows')} rows")
        facts.add_row("rows", f"{details.get('train_rows')} training, {details.get('recent_rows')} from production")
        timings = ", ".join(f"{k} {v:.1f}s" for k, v in details.get("timings", {}).items())
        facts.add_row("timings", timings)
        facts.add_row("libraries", ", ".join(f"{k} {v}" for k, v in details.get("library_versions", {}).items()))
    console.print(facts)
    candidates = details.get("candidates") or []
    if candidates:
        table = Table("estimator", "params", "mean score", "std")
        for candidate in candidates:
            mean, std = candidate.get("mean_score"), candidate.get("std_score")
            table.add_row(
                candidate["class"],
                str(candidate.get("params")),
                f"{mean:.4f}" if mean is not None else candidate.get("error", ""),
                f"{std:.4f}" if std is not None else "",
            )
        console.print(table)


@app.command("reproduce")
def runs_reproduce(
    run_id: str,
    timeout: Annotated[float, typer.Option(min=1, help="seconds to wait for the training")] = 3600,
) -> None:
    """Train a run again from its recorded inputs; exit 0 when the model and numbers match, 1 when not."""
    with console.status(f"training run {run_id} again from its recorded inputs..."):
        result = call("POST", "trainer", f"/v1/runs/{run_id}/reproduce", timeout=timeout)
    predictions = result["predictions"].replace("_", " ")
    gap = result.get("max_prediction_difference")
    verdict = "[green]matches[/]" if result["matches"] else "[red]does not match[/]"
    console.print(
        f"run [bold]{run_id}[/] {verdict}: predictions on {result['rows_compared']} held-out rows {predictions}"
        + (f" (largest difference {gap:.3g})" if gap else "")
        + f"; {result['seconds']:.1f}s"
    )
    if result["differences"]:
        table = Table("", "what", "recorded", "reproduced")
        for difference in result["differences"]:
            table.add_row(
                difference["kind"], difference["name"], str(difference["recorded"]), str(difference["reproduced"])
            )
        console.print(table)
    raise typer.Exit(0 if result["matches"] else 1)
