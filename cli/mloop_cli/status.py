"""``mloop status``: one screen for an SRE. Each service's readiness and version, the models and the versions
serving answers with, consumer lag and outbox backlog (from each service's /metrics), and dead letters
waiting in the DLQs (from the broker). Exit status 1 when a component is down or not ready.

Everything is read over the same interfaces the services expose to monitoring; nothing is changed.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from mloop_cli.client import auth_headers, bootstrap, console, url
from mloop_common.bus import BusConfig, topic_sizes
from mloop_common.events import ALL_TOPICS, dlq_topic
from mloop_common.settings import SERVICE_PORTS

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 5.0


@dataclass
class Pipeline:
    """What one service's /metrics says about its consumers and its outbox."""

    lag: dict[str, float] = field(default_factory=dict)  # per consumer group, over its partitions
    outbox_pending: float | None = None
    outbox_oldest_seconds: float | None = None


def pipeline_of(metrics_text: str) -> Pipeline:
    """Consumer lag per group and the outbox backlog, from a Prometheus exposition."""
    found = Pipeline()
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "mloop_consumer_lag":
                group = sample.labels.get("group", "?")
                found.lag[group] = found.lag.get(group, 0.0) + sample.value
            elif sample.name == "mloop_outbox_pending_events":
                found.outbox_pending = sample.value
            elif sample.name == "mloop_outbox_oldest_pending_age_seconds":
                found.outbox_oldest_seconds = sample.value
    return found


def served_summary(model: dict[str, Any]) -> tuple[str, str, str]:
    """A model's aliases, what its serving instances answer with, and its problems, from the registry's view."""
    aliases = model.get("aliases", {})
    named = ", ".join(f"{alias} v{version}" for alias, version in sorted(aliases.items())) or "-"
    reports = [r for r in model.get("serving", []) if r.get("alias") == "production"]
    if not reports:
        answering = "no serving report"
    else:
        versions = sorted({r.get("serving_version") for r in reports if r.get("serving_version") is not None})
        loaded = sum(1 for r in reports if r.get("loaded"))
        shown = ", ".join(f"v{v}" for v in versions) or "nothing"
        answering = f"{shown} ({loaded}/{len(reports)} instances loaded production)"
    return named, answering, "; ".join(model.get("problems", []))


def _get(service: str, path: str) -> httpx.Response:
    return httpx.get(url(service) + path, timeout=TIMEOUT, headers=auth_headers())


def _infrastructure(table: Table) -> bool:
    healthy = True
    for name, script in (("kafka", "kafka.sh"), ("postgres", "postgres.sh")):
        running = (
            subprocess.call(
                [str(REPO / "deploy" / "local" / script), "status"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            == 0
        )
        healthy &= running
        table.add_row(name, "[green]running[/]" if running else "[red]stopped[/]", "", "")
    return healthy


def status(
    local: Annotated[
        bool, typer.Option("--local/--remote", help="also check the local Kafka and PostgreSQL processes")
    ] = True,
) -> None:
    """Each service's readiness and version, models and the versions served, consumer lag, outbox backlog and
    dead letters. Exits 1 when a component is down or not ready."""
    services = Table("component", "state", "version", "details", title="components")
    healthy = _infrastructure(services) if local else True
    pipelines: dict[str, Pipeline] = {}
    for service in SERVICE_PORTS:
        try:
            ready_response = _get(service, "/readyz")
            body = ready_response.json()
            ready = ready_response.status_code == 200
            details = ", ".join(f"{k}: {v}" for k, v in body.get("checks", {}).items())
            version = str(_get(service, "/healthz").json().get("version", "?"))
            pipelines[service] = pipeline_of(_get(service, "/metrics").text)
        except (httpx.TransportError, ValueError) as exc:
            ready, details, version = False, f"unreachable ({type(exc).__name__})", "-"
        healthy &= ready
        services.add_row(service, "[green]ready[/]" if ready else "[red]not ready[/]", version, details)
    console.print(services)
    _print_models()
    _print_pipeline(pipelines)
    _print_dead_letters()
    raise typer.Exit(0 if healthy else 1)


def _print_models() -> None:
    try:
        listed = _get("registry", "/v1/models")
        if listed.status_code != 200:
            console.print(f"models: [red]the registry answered {listed.status_code}[/] {listed.text[:200]}")
            return
        names = [m["name"] for m in listed.json()["models"]]
        models = [_get("registry", f"/v1/models/{name}").json() for name in names]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        console.print(f"models: [red]the registry did not answer ({type(exc).__name__})[/]")
        return
    table = Table("model", "aliases", "serving answers with", "problems", title="models")
    for model in models:
        table.add_row(model.get("name", "?"), *served_summary(model))
    console.print(table)


def _print_pipeline(pipelines: dict[str, Pipeline]) -> None:
    table = Table("service", "consumer group", "lag (records)", "outbox pending", "oldest pending", title="pipeline")
    for service, pipeline in pipelines.items():
        outbox = "-" if pipeline.outbox_pending is None else f"{pipeline.outbox_pending:.0f}"
        oldest = "-" if pipeline.outbox_oldest_seconds is None else f"{pipeline.outbox_oldest_seconds:.1f}s"
        for group, lag in sorted(pipeline.lag.items()) or [("-", None)]:
            table.add_row(service, group, "-" if lag is None else f"{lag:.0f}", outbox, oldest)
    console.print(table)


def _print_dead_letters() -> None:
    try:
        sizes = asyncio.run(
            asyncio.wait_for(topic_sizes(BusConfig(bootstrap()), [dlq_topic(t) for t in ALL_TOPICS]), TIMEOUT * 3)
        )
    except Exception as exc:  # the broker away: the rest of the screen still stands
        console.print(f"dead letters: [red]the broker did not answer ({type(exc).__name__})[/]")
        return
    waiting = {topic: size for topic, size in sizes.items() if size}
    if not waiting:
        console.print("dead letters: none")
        return
    listed = ", ".join(f"{topic} {size}" for topic, size in sorted(waiting.items()))
    console.print(f"dead letters: [red]{listed}[/] (mloop dlq list TOPIC)")
