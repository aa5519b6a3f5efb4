"""The ``mloop`` command: run the local stack, declare models, publish data, predict, watch events."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from mloop_cli import artifacts, audit, datasets, dlq, keys, lineage, rollouts, runs, score, status, trace
from mloop_cli.client import api_key, bootstrap, call, console, err, url
from mloop_common.auth import DEVELOPMENT_ADMIN_KEY
from mloop_common.bus import BusConfig, tail
from mloop_common.contracts import PRODUCTION, AliasView, ModelList, SpecView, VersionList
from mloop_common.events import ALL_TOPICS, dlq_topic

app = typer.Typer(
    help="mloop: event-driven MLOps. Datasets and drift flow to fresh, validated, served models.", no_args_is_help=True
)
models_app = typer.Typer(help="Model specs and versions (registry).", no_args_is_help=True)
events_app = typer.Typer(help="Inspect the Kafka event stream.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(events_app, name="events")
app.add_typer(datasets.app, name="datasets")
app.add_typer(rollouts.app, name="rollouts")
app.add_typer(runs.app, name="runs")
app.add_typer(audit.app, name="audit")
app.add_typer(keys.app, name="keys")
app.add_typer(dlq.app, name="dlq")
app.add_typer(artifacts.app, name="artifacts")
app.command("search")(audit.search)
models_app.command("tag")(audit.tag)
app.command("publish")(datasets.publish)
app.command("lineage")(lineage.lineage)
app.command("score")(score.score)
app.command("trace")(trace.trace)
app.command("status")(status.status)

REPO = Path(__file__).resolve().parents[2]


def _script(name: str, *args: str) -> int:
    return subprocess.call([str(REPO / "deploy" / "local" / name), *args])


@app.command()
def up() -> None:
    """Start PostgreSQL, Kafka and the six services in the background."""
    for script in ("postgres.sh", "kafka.sh", "services.sh"):
        if _script(script, "start") != 0:
            raise typer.Exit(1)


@app.command()
def down() -> None:
    """Stop everything `mloop up` started."""
    for script in ("services.sh", "kafka.sh", "postgres.sh"):
        _script(script, "stop")


@models_app.command("create")
def models_create(spec: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="YAML or JSON spec")]) -> None:
    """Create a model (or a new spec version of it) from a spec file."""
    content_type = "application/json" if spec.suffix == ".json" else "application/yaml"
    body = call("POST", "registry", "/v1/models", content=spec.read_bytes(), headers={"content-type": content_type})
    created = SpecView.model_validate(body)
    console.print(f"model [bold]{created.name}[/] spec version {created.spec_version} ({created.digest[:12]})")


@models_app.command("list")
def models_list() -> None:
    """Every model with its dataset and aliases."""
    table = Table("model", "dataset", "spec", "aliases")
    for model in ModelList.model_validate(call("GET", "registry", "/v1/models")).models:
        aliases = ", ".join(f"{a}=v{v}" for a, v in model.aliases.items())
        table.add_row(model.name, model.dataset, str(model.spec_version), aliases)
    console.print(table)


@models_app.command("versions")
def models_versions(name: str) -> None:
    """Versions of a model with status, metrics and aliases."""
    table = Table("version", "status", "aliases", "metrics", "created")
    for version in VersionList.model_validate(call("GET", "registry", f"/v1/models/{name}/versions")).versions:
        metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(version.metrics.items()))
        created = version.created_at.isoformat(sep=" ", timespec="seconds")
        table.add_row(str(version.version), version.status, ", ".join(version.aliases), metrics, created)
    console.print(table)


def _set_production(name: str, version: int) -> None:
    body = call("PUT", "registry", f"/v1/models/{name}/aliases/{PRODUCTION}", json={"version": version})
    console.print(f"{name}: {PRODUCTION} -> v{AliasView.model_validate(body).version}")


@app.command()
def promote(name: str, version: int) -> None:
    """Point the production alias of NAME at VERSION."""
    _set_production(name, version)


@app.command()
def rollback(name: str, version: int) -> None:
    """Roll NAME's production alias back to an older VERSION."""
    _set_production(name, version)


@app.command()
def alias(
    name: str,
    alias_name: Annotated[str, typer.Argument(metavar="ALIAS", help="a serving alias, or a label such as 'stable'")],
    version: Annotated[int | None, typer.Argument(help="the version it names (omit with --clear)")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="take the alias off its version")] = False,
) -> None:
    """Point ALIAS of NAME at VERSION, or --clear it. Labels are names for people; serving hosts only its aliases."""
    if clear == (version is not None):
        raise typer.BadParameter("give a VERSION, or --clear without one")
    if clear:
        call("DELETE", "registry", f"/v1/models/{name}/aliases/{alias_name}")
        console.print(f"{name}: {alias_name} cleared")
        return
    body = call("PUT", "registry", f"/v1/models/{name}/aliases/{alias_name}", json={"version": version})
    console.print(f"{name}: {alias_name} -> v{body['version']}")


@app.command()
def approve(
    name: str, version: int, comment: Annotated[str, typer.Option(help="why, kept in the audit log")] = ""
) -> None:
    """Approve a version waiting for a human; it becomes production."""
    body = call("POST", "registry", f"/v1/models/{name}/versions/{version}/approve", json={"comment": comment})
    console.print(f"{name} v{version}: {body['status']}")


@app.command()
def reject(
    name: str, version: int, comment: Annotated[str, typer.Option(help="why, kept in the audit log")] = ""
) -> None:
    """Reject a version waiting for a human; production stays as it is."""
    body = call("POST", "registry", f"/v1/models/{name}/versions/{version}/reject", json={"comment": comment})
    console.print(f"{name} v{version}: {body['status']}")


@app.command()
def predict(name: str, json_rows: Annotated[str, typer.Option("--json", help="a JSON object or list of them")]) -> None:
    """Ask serving for predictions from NAME's production version."""
    try:
        rows = json.loads(json_rows)
    except ValueError as exc:
        err.print(f"[red]error:[/] --json is not valid JSON: {exc}")
        raise typer.Exit(2) from exc
    instances = rows if isinstance(rows, list) else [rows]
    console.print_json(data=call("POST", "serving", f"/v1/models/{name}:predict", json={"instances": instances}))


@events_app.command("tail")
def events_tail(
    topics: Annotated[list[str] | None, typer.Argument(help="topics (default: all, with DLQs)")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    limit: Annotated[int, typer.Option(help="stop after this many events (0: never)")] = 0,
) -> None:
    """Print CloudEvents as they arrive: type, source, subject, ids and payload."""
    chosen = topics or [*ALL_TOPICS, *(dlq_topic(t) for t in ALL_TOPICS)]

    async def run() -> None:
        seen = 0
        async with tail(BusConfig(bootstrap()), chosen, from_beginning=from_beginning) as records:
            async for record, event in records:
                headers = {k: v.decode(errors="replace") for k, v in record.headers or ()}
                if event is None:
                    console.print(
                        f"[red]{record.topic}[/] p{record.partition}@{record.offset} (not a CloudEvent)", headers
                    )
                else:
                    console.rule(f"[bold]{event.type}[/] from {event.source} about {event.subject}")
                    console.print(
                        f"id {event.id}  time {event.time.isoformat()}  correlation {event.correlationid}"
                        f"  causation {event.causationid}"
                    )
                    if record.topic.endswith(".dlq"):
                        console.print(f"[red]dead-lettered:[/] {headers.get('x-mloop-error')}")
                    console.print_json(data=_shorten(event.data))
                seen += 1
                if limit and seen >= limit:
                    return

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def _shorten(data: dict[str, Any]) -> dict[str, Any]:
    """Long record lists are summarised so a batch fits on a screen."""
    if isinstance(data.get("records"), list) and len(data["records"]) > 3:
        return {**data, "records": [*data["records"][:3], f"... {len(data['records']) - 3} more"]}
    return data


@app.command()
def demo(
    traffic_rows: Annotated[int, typer.Option(help="most production rows to replay")] = 5000,
    timeout: Annotated[float, typer.Option(help="seconds to wait for each stage")] = 300,
) -> None:
    """Run the whole loop on the rainfall benchmark: v1 served, drift, retraining, v2 served."""
    from mloop_cli.demo import DemoConfig, print_result, run_demo

    config = DemoConfig(
        ingest_url=url("ingest"),
        registry_url=url("registry"),
        serving_url=url("serving"),
        bootstrap_servers=bootstrap(),
        traffic_rows=traffic_rows,
        stage_timeout=timeout,
    )
    result = asyncio.run(run_demo(config, console))
    print_result(result, console)
    print_ui_address(result.model)
    sys.exit(0 if result.completed else 1)


def print_ui_address(model: str) -> None:
    """Where to look at what the demo did, in pictures (the web UI, if it runs)."""
    address = url("ui")
    try:
        up = httpx.get(f"{address}/healthz", timeout=3).status_code == 200
    except httpx.HTTPError:
        up = False
    if not up:
        console.print(f"web UI: not running at {address} (deploy/local/services.sh start ui)")
        return
    # Only the development key, which is public anyway, is ever printed.
    how = f"the development admin key {DEVELOPMENT_ADMIN_KEY}" if api_key() == DEVELOPMENT_ADMIN_KEY else "your API key"
    console.print(f"web UI: [bold]{address}/models/{model}[/] (sign in with {how})", soft_wrap=True)


if __name__ == "__main__":
    app()
