"""``mloop rollouts``: versions served beside production (canary, shadow, challenger): show, promote, abort."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mloop_cli.client import call, console, err

app = typer.Typer(
    help="Rollouts (registry): the canary, shadow or challenger beside production; promote or roll back.",
    no_args_is_help=True,
)
ROLLOUT_ALIASES = ("canary", "shadow", "challenger")
Alias = Annotated[str, typer.Option("--alias", help="canary, shadow or challenger")]


def _check(alias: str) -> None:
    if alias not in ROLLOUT_ALIASES:
        err.print(f"[red]error:[/] --alias must be one of {', '.join(ROLLOUT_ALIASES)}, not {alias!r}")
        raise typer.Exit(2)


@app.command("show")
def show(name: str) -> None:
    """NAME's aliases, the canary's share, and what each serving instance reported loading."""
    model = call("GET", "registry", f"/v1/models/{name}")
    promotion = model["spec"].get("promotion", {})
    console.print(
        f"[bold]{name}[/]: "
        + (", ".join(f"{alias}=v{version}" for alias, version in sorted(model["aliases"].items())) or "no aliases")
        + f"; canary_percent={promotion.get('canary_percent', 0)}, shadow={promotion.get('shadow', False)}"
    )
    table = Table("instance", "alias", "version", "loaded", "serving", "error")
    for report in model.get("serving", []):
        table.add_row(
            report["instance"],
            report["alias"],
            f"v{report['version']}",
            "[green]yes[/]" if report["loaded"] else "[red]no[/]",
            f"v{report['serving_version']}" if report["serving_version"] is not None else "-",
            report["error"] or "",
        )
    console.print(table)
    for problem in model.get("problems", []):
        console.print(f"[red]problem:[/] {problem}")


@app.command("promote")
def promote(name: str, alias: Alias = "canary") -> None:
    """Make the version under NAME's rollout alias production; the alias is cleared."""
    _check(alias)
    version = call("GET", "registry", f"/v1/models/{name}/aliases/{alias}")["version"]
    call("PUT", "registry", f"/v1/models/{name}/aliases/production", json={"version": version})
    console.print(f"{name}: {alias} v{version} is now production")


@app.command("abort")
def abort(name: str, alias: Alias = "canary") -> None:
    """Roll NAME's rollout back: clear the alias, and serving stops routing to its version."""
    _check(alias)
    version = call("GET", "registry", f"/v1/models/{name}/aliases/{alias}")["version"]
    call("DELETE", "registry", f"/v1/models/{name}/aliases/{alias}")
    console.print(f"{name}: {alias} v{version} rolled back; production serves alone")
