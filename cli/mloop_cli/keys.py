"""``mloop keys``: API keys and their roles (admin only; the registry keeps only their hashes)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from mloop_cli.client import call, console, err
from mloop_common.auth import HUMAN_ROLES

app = typer.Typer(
    help="API keys: create one for a person or an application, list them, revoke one.", no_args_is_help=True
)


@app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="who or what holds the key (recorded as the actor of its changes)")],
    role: Annotated[str, typer.Option(help=f"one of: {', '.join(HUMAN_ROLES)}")],
) -> None:
    """Create a key. It is printed once, on stdout alone, so it can go straight into a secret store."""
    if role not in HUMAN_ROLES:
        raise typer.BadParameter(f"{role!r} is not a role; choose one of {', '.join(HUMAN_ROLES)}", param_hint="--role")
    created = call("POST", "registry", "/v1/keys", json={"name": name, "role": role})
    err.print(f"key {created['key_id']} for {created['name']} ({created['role']}); it will not be shown again:")
    print(created["key"])


@app.command("list")
def keys_list() -> None:
    """Every key (never the key itself), revoked ones included."""
    table = Table("key id", "name", "role", "created", "by", "revoked")
    for key in call("GET", "registry", "/v1/keys")["keys"]:
        table.add_row(
            key["key_id"],
            key["name"],
            key["role"],
            key["created_at"][:19],
            key["created_by"],
            (key["revoked_at"] or "")[:19],
        )
    console.print(table)


@app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key's id (`mloop keys list`)")]) -> None:
    """Revoke a key: refused by the registry at once, by the other services within MLOOP_AUTH__CACHE_SECONDS."""
    revoked = call("DELETE", "registry", f"/v1/keys/{key_id}")
    console.print(f"key {revoked['key_id']} of {revoked['name']} revoked at {revoked['revoked_at'][:19]}")
