"""Dataset commands: ``mloop publish`` (streamed upload or registration by URI) and ``mloop datasets``.

``mloop_cli.main`` registers ``publish`` and the ``datasets`` group on the ``mloop`` command.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from mloop_cli.client import auth_headers, call, console, err, url

app = typer.Typer(help="Dataset versions, their checks and contracts (ingest).", no_args_is_help=True)

CHUNK = 1024 * 1024
SEVERITY_STYLE = {"error": "red", "warning": "yellow", "info": "green"}


def multipart(fields: dict[str, str], filename: str, boundary: str) -> tuple[bytes, bytes]:
    """The bytes before and after the file's content in a ``multipart/form-data`` body."""
    quoted = filename.replace("\\", "\\\\").replace('"', "%22").replace("\r", " ").replace("\n", " ")
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    )
    return head.encode(), f"\r\n--{boundary}--\r\n".encode()


def stream(head: bytes, file: Path, tail: bytes, advance: Callable[[int], Any]) -> Iterator[bytes]:
    """The body, read from disk a chunk at a time (a dataset may be larger than memory)."""
    yield head
    with file.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            advance(len(chunk))
            yield chunk
    yield tail


def _upload(name: str, file: Path, fields: dict[str, str]) -> httpx.Response:
    boundary = f"mloop-{uuid.uuid4().hex}"
    head, tail = multipart(fields, file.name, boundary)
    size = file.stat().st_size
    headers = {
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        # Known in advance, so the service can refuse an oversized file before a byte is sent.
        "Content-Length": str(len(head) + size + len(tail)),
        **auth_headers(),
    }
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=err, transient=True) as progress:
        task = progress.add_task(f"uploading {file.name}", total=size)
        body = stream(head, file, tail, lambda n: progress.advance(task, n))
        try:
            return httpx.post(
                f"{url('ingest')}/v1/datasets/{name}/versions", content=body, headers=headers, timeout=600
            )
        except httpx.TransportError as exc:
            err.print(f"[red]error:[/] ingest is not reachable at {url('ingest')} ({exc})")
            raise typer.Exit(1) from exc


def _register(name: str, uri: str, fields: dict[str, str]) -> httpx.Response:
    try:
        return httpx.post(
            f"{url('ingest')}/v1/datasets/{name}/versions",
            json={"uri": uri, **fields},
            headers=auth_headers(),
            timeout=600,
        )
    except httpx.TransportError as exc:
        err.print(f"[red]error:[/] ingest is not reachable at {url('ingest')} ({exc})")
        raise typer.Exit(1) from exc


def _print_checks(checks: list[dict[str, Any]], severities: tuple[str, ...]) -> None:
    for check in checks:
        if check["severity"] in severities:
            style = SEVERITY_STYLE[check["severity"]]
            err.print(f"  [{style}]{check['severity']:>7}[/]  {check['name']}: {check['message']}")


def publish(
    name: str,
    source: Annotated[str, typer.Argument(help="CSV or Parquet file, or a URI under a source root (file:///...)")],
    target: Annotated[str, typer.Option(help="label column")],
    time_column: Annotated[str | None, typer.Option(help="event-time column")] = None,
    description: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Publish a new version of dataset NAME: upload a file (with a progress bar) or register a URI."""
    fields = {
        "target": target,
        **({"time_column": time_column} if time_column else {}),
        **({"description": description} if description else {}),
    }
    if "://" in source:
        response = _register(name, source, fields)
    else:
        file = Path(source)
        if not file.is_file():
            raise typer.BadParameter(f"{source} is not a file", param_hint="SOURCE")
        response = _upload(name, file, fields)
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    if response.status_code == 422 and "report" in body:
        err.print(f"[red]rejected:[/] {name} v{body['version']}: {body['error']['message']}")
        _print_checks(body["report"]["checks"], ("error", "warning"))
        raise typer.Exit(1)
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        field = f" (field: {error['field']})" if error.get("field") else ""
        err.print(f"[red]error {response.status_code}:[/] {error.get('message', response.text)}{field}")
        raise typer.Exit(1)
    state = "published" if response.status_code == 201 else "already published (same bytes)"
    console.print(f"{name} v{body['version']} {state}: {body['rows']} rows, sha256 {body['sha256'][:12]}")
    _print_checks(body["report"]["checks"], ("warning",))


@app.command("list")
def datasets_list() -> None:
    """Every dataset with its version count and latest published version."""
    table = Table("dataset", "versions", "latest published")
    for dataset in call("GET", "ingest", "/v1/datasets")["datasets"]:
        latest = dataset["latest_published"]
        table.add_row(dataset["name"], str(dataset["versions"]), "-" if latest is None else f"v{latest}")
    console.print(table)


def _reference(text: str) -> tuple[str, int | None]:
    name, _, version = text.partition(":")
    if not version:
        return name, None
    try:
        return name, int(version)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected NAME or NAME:VERSION (a number)", param_hint="NAME[:V]") from None


def _counts(report: dict[str, Any]) -> str:
    errors = sum(c["severity"] == "error" for c in report["checks"])
    warnings = sum(c["severity"] == "warning" for c in report["checks"])
    return f"{errors} errors, {warnings} warnings"


@app.command("show")
def datasets_show(reference: Annotated[str, typer.Argument(metavar="NAME[:V]")]) -> None:
    """The versions of a dataset, or one version's checks and contract (NAME:V)."""
    name, version = _reference(reference)
    if version is None:
        table = Table("version", "status", "rows", "columns", "checks", "sha256", "publisher", "created")
        for v in call("GET", "ingest", f"/v1/datasets/{name}/versions")["versions"]:
            status = f"[green]{v['status']}[/]" if v["status"] == "published" else f"[red]{v['status']}[/]"
            table.add_row(
                f"v{v['version']}",
                status,
                str(v["rows"]),
                str(len(v["columns"])),
                _counts(v["report"]),
                (v["sha256"] or "-")[:12],
                v["publisher"] or "-",
                (v["created_at"] or "")[:19],
            )
        console.print(table)
        return
    detail = call("GET", "ingest", f"/v1/datasets/{name}/versions/{version}")
    console.print(
        f"[bold]{name} v{version}[/] {detail['status']}: {detail['rows']} rows, target {detail['target']!r}"
        f"{', time ' + repr(detail['time_column']) if detail['time_column'] else ''}"
    )
    console.print(
        f"sha256 {detail['sha256'] or '-'}; compared with v{detail['parent_version'] or '-'}; "
        f"publisher {detail['publisher'] or '-'}; source {detail['source_uri'] or 'upload'}"
    )
    checks = Table("check", "severity", "observed", "threshold", "message")
    for check in detail["report"]["checks"]:
        style = SEVERITY_STYLE[check["severity"]]
        observed, threshold = check["observed"], check["threshold"]
        checks.add_row(
            check["name"],
            f"[{style}]{check['severity']}[/]",
            "-" if observed is None else f"{observed:.4g}",
            "-" if threshold is None else f"{threshold:.4g}",
            check["message"],
        )
    console.print(checks)
    contract = detail["contract"]
    if contract is None:
        return
    columns = Table("column", "type", "nullable", "missing", "categories / range", "declared")
    for column in contract["columns"]:
        if column["categories"] is not None:
            domain = ", ".join(column["categories"][:8]) + (" …" if len(column["categories"]) > 8 else "")
        elif column["observed_range"] is not None:
            domain = f"{column['observed_range']['min']} … {column['observed_range']['max']}"
        else:
            domain = "open"
        declared = column["declared"]
        columns.add_row(
            column["name"],
            column["type"],
            "yes" if column["nullable"] else "no",
            f"{column['missing_rate']:.1%}",
            domain,
            "-" if declared is None else ", ".join(f"{k} {v}" for k, v in declared.items() if v is not None),
        )
    console.print(columns)
    console.print(f"contract digest {contract['digest']}")


@app.command("diff")
def datasets_diff(name: str, before: int, after: int) -> None:
    """How the schema contract of NAME changed from version BEFORE to version AFTER."""
    diff = call("GET", "ingest", f"/v1/datasets/{name}/diff", params={"from": before, "to": after})
    console.print(
        f"[bold]{name} v{before} -> v{after}[/]: "
        + ("same schema (names, types, nullability)" if diff["same_schema"] else "schema changed")
    )
    lines = [f"{role}: {was} -> {now}" for role, (was, now) in diff["roles"].items()]
    lines += [f"[green]+ {column}[/]" for column in diff["added"]]
    lines += [f"[red]- {column}[/]" for column in diff["removed"]]
    lines += [f"~ {c['name']}: {c['before']} -> {c['after']}" for c in diff["retyped"]]
    lines += [f"~ {c['name']}: nullable {c['before']} -> {c['after']}" for c in diff["nullability"]]
    lines += [
        f"~ {c['name']}: categories"
        + (f" +{c['added']}" if c["added"] else "")
        + (f" -{c['removed']}" if c["removed"] else "")
        for c in diff["categories"]
    ]
    for change in diff["ranges"]:
        was, now = change["before"] or {}, change["after"] or {}
        lines.append(
            f"~ {change['name']}: range {was.get('min')} … {was.get('max')} -> {now.get('min')} … {now.get('max')}"
        )
    lines += [f"~ {c['name']}: declared {c['before']} -> {c['after']}" for c in diff["declarations"]]
    for line in lines or ["no change"]:
        console.print(line)
