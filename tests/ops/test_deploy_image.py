"""The Dockerfile (one image per service, chosen by the SERVICE build argument): hadolint finds nothing, it
installs exactly the chosen workspace member from uv.lock, runs as a non-root user with a health check, and the
.dockerignore lets in what the build copies and nothing else."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mloop_common.settings import SERVICE_PORTS, UI_PORT

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
# The values SERVICE may take: the six pipeline services and the web UI.
DEPLOYED = {**SERVICE_PORTS, "ui": UI_PORT}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in lines]


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def test_dockerfile_passes_hadolint_without_a_warning() -> None:
    done = subprocess.run([str(HADOLINT), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_image_installs_only_the_chosen_member_from_the_lock() -> None:
    runs = " ".join(args for op, args in instructions() if op == "RUN")
    sync = re.search(r"uv sync ([^&;]*)", runs)
    assert sync, "no `uv sync` in the build"
    flags = sync.group(1)
    assert "--frozen" in flags and "--no-dev" in flags, flags
    assert '--package "mloop-${SERVICE}"' in flags, flags
    # every value SERVICE may take is a workspace member whose package runs as `python -m mloop_<service>`
    for service in DEPLOYED:
        member = REPO / "services" / service
        assert tomllib.loads((member / "pyproject.toml").read_text())["project"]["name"] == f"mloop-{service}"
        assert (member / f"mloop_{service}" / "__main__.py").is_file()
    entrypoint = dict(final_stage())["ENTRYPOINT"]
    assert "python -m" in entrypoint and "mloop_${MLOOP_SERVICE}" in entrypoint, entrypoint


def test_final_stage_is_non_root_with_a_health_check_and_no_build_tools() -> None:
    stage = final_stage()
    ops = dict(stage)
    user = ops["USER"].split(":")[0]
    assert user not in ("0", "root"), user
    assert "/healthz" in ops["HEALTHCHECK"]
    copies = [args for op, args in stage if op == "COPY"]
    assert copies and all(args.startswith("--from=build") for args in copies), copies
    assert not any(tool in args for op, args in stage if op == "RUN" for tool in ("pip", "uv ", "apt-get", "gcc"))


def test_the_image_exposes_every_port() -> None:
    exposed = {int(port) for op, args in final_stage() if op == "EXPOSE" for port in args.split()}
    assert set(DEPLOYED.values()) <= exposed


@contextmanager
def answering(path: str) -> Iterator[tuple[int, list[str]]]:
    """A server on a free port answering ``path`` with 200 (anything else 404): its port and the paths asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            asked.append(self.path)
            self.send_response(200 if self.path == path else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], asked
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("service", sorted(DEPLOYED))
def test_the_health_check_command_finds_each_service_s_port(service: str) -> None:
    """The HEALTHCHECK's command, run as the image would for ``service`` (its port moved to a free one): it
    succeeds against a live /healthz and fails where nothing listens."""
    command = json.loads(dict(final_stage())["HEALTHCHECK"].split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLOOP_")} | {"MLOOP_SERVICE": service}
    with answering("/healthz") as (port, asked):
        environ[f"MLOOP_{service.upper()}_PORT"] = str(port)
        done = subprocess.run([sys.executable, *command[1:]], env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and asked == ["/healthz"], done.stderr
    # without the variable the default port is used: nothing of this test listens there, or a service does
    del environ[f"MLOOP_{service.upper()}_PORT"]
    default = subprocess.run([sys.executable, *command[1:]], env=environ, capture_output=True, text=True, timeout=60)
    assert "KeyError" not in default.stderr, default.stderr


def test_dockerignore_admits_what_the_build_copies_and_keeps_the_rest_out() -> None:
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    assert patterns[0] == "*", "start from nothing and admit paths one by one"
    admitted = {p.removeprefix("!").rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for op, args in instructions():
        if op == "COPY" and not args.startswith("--from"):
            copied |= {src.rstrip("/").removeprefix("./") for src in args.split()[:-1] if not src.startswith("--")}
    assert copied, "the build copies nothing from the context"
    assert copied <= admitted, f"copied but ignored: {sorted(copied - admitted)}"
    for source in copied:
        assert (REPO / source).exists(), source
