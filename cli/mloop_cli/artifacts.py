"""``mloop artifacts gc``: delete the artifacts no service needs any more (the registry's artifact retention)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table

from mloop_cli.client import call, console

app = typer.Typer(help="The artifact store: retention of what no service references.", no_args_is_help=True)


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{count:,} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"


@app.command("gc")
def gc(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be deleted, delete nothing")] = False,
) -> None:
    """Delete the artifacts that no service references (registry, ingest, trainer) and that are older than the
    grace period (MLOOP_REGISTRY_RETENTION__GRACE_HOURS). If a service cannot be asked, nothing is deleted and
    the command says which and exits 1. Needs an admin key."""
    report = call("POST", "registry", "/v1/artifacts/gc", params={"dry_run": str(dry_run).lower()}, timeout=600)
    now = datetime.now(UTC)
    if report["deleted"]:
        table = Table("artifact", "size", "last written")
        for artifact in report["deleted"]:
            age = now - datetime.fromisoformat(artifact["modified"])
            table.add_row(artifact["uri"], _size(artifact["size"]), f"{age.total_seconds() / 86400:.1f} days ago")
        console.print(table)
    verb = "would delete" if report["dry_run"] else "deleted"
    console.print(
        f"{verb} {len(report['deleted'])} of {report['stored']} artifacts, "
        f"{'would free' if report['dry_run'] else 'freed'} {report['freed_bytes']:,} bytes "
        f"({_size(report['freed_bytes'])}); kept {report['referenced']} referenced and "
        f"{report['young']} written within the last {report['grace_hours']:g} h"
    )
    asked = ", ".join(f"{name} {count}" for name, count in sorted(report["references"].items()))
    console.print(f"references by service: {asked}")
