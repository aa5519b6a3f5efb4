"""``mloop audit``: the registry's audit log and whether its hash chain is intact; also ``mloop search`` and
``mloop models tag`` (registered in main.py), the registry's other annotation and query commands."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from mloop_cli.client import call, console, err

app = typer.Typer(help="The registry's tamper-evident audit log: list entries, verify the chain.", no_args_is_help=True)


@app.command("verify")
def audit_verify() -> None:
    """Walk the audit chain: exit 0 when intact, 1 naming the first edited, deleted or reordered entry."""
    report = call("GET", "registry", "/v1/audit/verify", timeout=300)
    if report["ok"]:
        console.print(f"[green]audit log intact[/]: {report['entries']} entries, head {report['last_hash']}")
        return
    err.print(f"[red]audit log tampered[/] at entry {report['first_bad_id']}: {report['reason']}")
    err.print(f"{report['entries']} entries before it verified")
    raise typer.Exit(1)


@app.command("list")
def audit_list(
    model: Annotated[str | None, typer.Option(help="only this model's entries")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    before_id: Annotated[int | None, typer.Option(min=1, help="entries older than this id (next page)")] = None,
) -> None:
    """Audit entries, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if model:
        params["model"] = model
    if before_id:
        params["before_id"] = before_id
    entries = call("GET", "registry", "/v1/audit", params=params)["entries"]
    table = Table("id", "at", "actor", "action", "model", "version", "detail", "hash")
    for entry in entries:
        table.add_row(
            str(entry["id"]),
            entry["at"],
            entry["actor"],
            entry["action"],
            entry["model"] or "",
            "" if entry["version"] is None else str(entry["version"]),
            ", ".join(f"{k}={v}" for k, v in entry["detail"].items()),
            entry["hash"][:12],
        )
    console.print(table)


def _target(name: str) -> tuple[str, str]:
    """``NAME`` or ``NAME:VERSION`` as (the registry path of the model or version, a label for messages)."""
    model, _, version = name.partition(":")
    if version and not version.isdigit():
        raise typer.BadParameter(f"{name!r}: expected NAME or NAME:VERSION", param_hint="NAME[:V]")
    if version:
        return f"/v1/models/{model}/versions/{version}", f"{model} v{version}"
    return f"/v1/models/{model}", model


def tag(
    name: Annotated[str, typer.Argument(help="NAME or NAME:VERSION")],
    tags: Annotated[list[str] | None, typer.Argument(help="key=value, or a plain label")] = None,
    remove: Annotated[list[str] | None, typer.Option(help="a tag key to remove (repeatable)")] = None,
    description: Annotated[str | None, typer.Option(help="replace the description")] = None,
) -> None:
    """Tag a model or version (``key=value`` or a plain label), remove tags, or set its description."""
    path, label = _target(name)
    if not (tags or remove or description is not None):
        raise typer.BadParameter("give tags, --remove KEY or --description TEXT", param_hint="TAGS")
    if tags:
        pairs = dict(t.partition("=")[::2] for t in tags)
        shown = call("PUT", "registry", f"{path}/tags", json={"tags": pairs})["tags"]
        console.print(f"{label} tags: " + ", ".join(f"{k}={v}" if v else k for k, v in shown.items()))
    for key in remove or []:
        call("DELETE", "registry", f"{path}/tags/{key}")
        console.print(f"{label}: removed tag {key}")
    if description is not None:
        call("PUT", "registry", f"{path}/description", json={"description": description})
        console.print(f"{label}: description set")


def search(
    query: Annotated[str, typer.Argument(help="e.g. 'name = churn AND (metric.roc_auc > 0.8 OR tag.gold)'")],
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """Search model versions by name, tag, status, alias, dataset version and metric (docs/api.md)."""
    page = call("GET", "registry", "/v1/search/versions", params={"q": query, "limit": limit, "offset": offset})
    table = Table("model", "version", "status", "aliases", "tags", "metrics")
    for v in page["versions"]:
        table.add_row(
            v["model"],
            str(v["version"]),
            v["status"],
            ", ".join(v["aliases"]),
            ", ".join(f"{k}={val}" if val else k for k, val in v.get("tags", {}).items()),
            ", ".join(f"{k}={val:.4g}" for k, val in v["metrics"].items()),
        )
    console.print(table)
    if page["next_offset"] is not None:
        console.print(f"more: --offset {page['next_offset']}")
