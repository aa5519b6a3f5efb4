"""The six services as separate processes, for end-to-end and fault tests."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from mloop_common.artifacts import ArtifactStore, S3ArtifactStore, open_artifact_store
from mloop_common.contracts import Lineage, RegisterVersion
from mloop_common.events import ArtifactPointer
from mloop_common.settings import SERVICE_PORTS, S3Settings
from mloop_ui.config import UI_PORT

# 18001..18006 by default: clear of a `make up` stack on 8001..8006.
PORT_OFFSET = int(os.environ.get("MLOOP_TEST_PORT_OFFSET", "10000"))


class ServiceStack:
    """Starts, kills and restarts service processes that share a broker, a database and an artifact folder."""

    def __init__(
        self,
        *,
        bootstrap: str,
        database_url: str,
        root: Path,
        repo: Path,
        artifacts_url: str | None = None,
        s3: S3Settings | None = None,
    ) -> None:
        """``artifacts_url`` (e.g. ``s3://bucket/prefix``, with ``s3`` for its endpoint and keys) puts the
        artifacts there instead of in the folder ``root/artifacts``."""
        self.run_id = uuid.uuid4().hex[:8]
        self.bootstrap = bootstrap
        self.artifacts = root / "artifacts"
        self.artifacts_url = artifacts_url or str(self.artifacts)
        self.s3 = s3
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.repo = repo
        self.ports = {name: port + PORT_OFFSET for name, port in SERVICE_PORTS.items()}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.schemas = [f"e2e_{self.run_id}_{name}" for name in self.ports]
        # Test mode refuses the development secrets, as production does: each stack has its own.
        self.admin_key = f"admin-{secrets.token_urlsafe(32)}"
        self.headers = {"Authorization": f"Bearer {self.admin_key}"}
        self.env = {
            **os.environ,
            "MLOOP_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "MLOOP_ARTIFACTS_ROOT": self.artifacts_url,
            "MLOOP_REGISTRY_URL": self.urls["registry"],
            "MLOOP_ENVIRONMENT": "test",
            "MLOOP_KAFKA__REPLICATION_FACTOR": "1",  # one broker here; outside development the default is 3
            "MLOOP_AUTH__SECRET": secrets.token_urlsafe(32),
            "MLOOP_AUTH__ADMIN_KEY": self.admin_key,
            "MLOOP_API_KEY": self.admin_key,  # for the CLI run against this stack
            "MLOOP_SERVING_INSTANCE_ID": f"e2e-{self.run_id}",
            # Artifact retention asks these services which artifacts they still need.
            "MLOOP_REGISTRY_RETENTION__SOURCES": json.dumps({s: self.urls[s] for s in ("ingest", "trainer")}),
            # One thread per process for the numeric libraries: on a small shared machine, OpenMP's default of
            # a thread per core makes every gradient-boosting fit fight the other processes (measured: a
            # 400-row fit took 59 s instead of 9 s). It is what an operator would set on such a machine.
            **dict.fromkeys(("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"), "1"),
        }
        if s3 is not None:
            self.env.update(s3_environment(s3))
        for name, port in self.ports.items():
            prefix = f"MLOOP_{name.upper()}_"
            self.env.update(
                {
                    prefix + "PORT": str(port),
                    prefix + "DATABASE_URL": database_url,
                    prefix + "DATABASE_SCHEMA": f"e2e_{self.run_id}_{name}",
                }
            )
        self.processes: dict[str, subprocess.Popen] = {}  # type: ignore[type-arg]

    def start(self, *names: str, env: dict[str, str] | None = None, wait: bool = True) -> None:
        """Start services (all by default) and wait until each answers /readyz (unless ``wait`` is false).

        ``env`` adds to (or overrides) the stack's environment for these processes only, e.g. to arm a
        fault point (``mloop_common.faults``) in one service.
        """
        for name in names or tuple(self.ports):
            with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own descriptor
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", f"mloop_{name}"],
                    cwd=self.repo,
                    env={**self.env, **(env or {})},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        if wait:
            self.wait_ready(*(names or tuple(self.ports)))

    def start_replica(self, service: str, replica: str, port: int) -> None:
        """Another process of ``service`` named ``replica``: its own port, the same schema and consumer groups."""
        self.ports[replica] = port
        self.urls[replica] = f"http://127.0.0.1:{port}"
        env = {**self.env, f"MLOOP_{service.upper()}_PORT": str(port)}
        with (self.logs / f"{replica}.log").open("ab") as log:
            self.processes[replica] = subprocess.Popen(
                [sys.executable, "-m", f"mloop_{service}"],
                cwd=self.repo,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.wait_ready(replica)

    def start_ui(self) -> str:
        """The web UI (mloop_ui) against this stack's services; returns its address."""
        port = UI_PORT + PORT_OFFSET
        self.ports["ui"], self.urls["ui"] = port, f"http://127.0.0.1:{port}"
        self.env["MLOOP_UI_PORT"] = str(port)
        for service in ("ingest", "trainer", "validator", "serving", "drift"):
            self.env[f"MLOOP_UI_{service.upper()}_URL"] = self.urls[service]
        self.start("ui")
        return self.urls["ui"]

    def artifact_store(self) -> ArtifactStore | S3ArtifactStore:
        """The store the services of this stack read and write."""
        return open_artifact_store(self.artifacts_url, self.s3)

    def register_directly(
        self, name: str, *, model: bytes, profile: bytes, features: list[str], target: str, estimator: str
    ) -> None:
        """Version 1 of classifier ``name`` straight into the registry (so it becomes production), without
        ingest, trainer or validator: for tests and benchmarks that need only registry and serving."""
        artifacts = self.artifact_store()
        artifact = artifacts.put(model, kind="models")
        reference = artifacts.put(profile, kind="profiles", suffix=".json")
        spec = {
            "name": name,
            "dataset": name,
            "task": "classification",
            "target": target,
            "features": features,
            "estimators": [{"class": estimator}],
            "metric": "accuracy",
        }
        registration = RegisterVersion(
            run_id=uuid.uuid4().hex,
            evaluation_id=uuid.uuid4().hex,
            spec_version=1,
            task="classification",
            artifact=ArtifactPointer(uri=artifact.uri, sha256=artifact.sha256),
            profile=ArtifactPointer(uri=reference.uri, sha256=reference.sha256),
            features=features,
            metrics={"accuracy": 0.9},
            lineage=Lineage(
                dataset=name,
                dataset_version=1,
                dataset_sha256="e" * 64,
                trigger="data.published",
                code_version="test",
                estimator_class=estimator,
                params={},
                seed=1,
                training_seconds=0.1,
                trained_event_id=uuid.uuid4().hex,
                correlation_id=uuid.uuid4().hex,
            ),
        )
        with httpx.Client(base_url=self.urls["registry"], timeout=30, headers=self.headers) as registry:
            registry.post("/v1/models", json=spec).raise_for_status()
            registry.post(f"/v1/models/{name}/versions", json=registration.model_dump(mode="json")).raise_for_status()

    def wait_ready(self, *names: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"{name} exited during start:\n{self.log_tail(name)}")
                try:
                    if httpx.get(self.urls[name] + "/readyz", timeout=2).status_code == 200:
                        pending.discard(name)
                except httpx.TransportError:
                    pass
            time.sleep(0.2)
        if pending:
            tails = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in sorted(pending))
            raise RuntimeError(f"services not ready after {timeout:.0f}s: {sorted(pending)}\n{tails}")

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to finish, commit or publish anything."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def exited(self, name: str) -> int | None:
        """The exit code of ``name``'s process (negative: the signal that ended it), None while it runs."""
        return self.processes[name].poll()

    def terminate(self, name: str, timeout: float = 60) -> int:
        """SIGTERM one service and wait for it to exit; its exit code."""
        process = self.processes[name]
        os.killpg(process.pid, signal.SIGTERM)
        return process.wait(timeout=timeout)

    def stop(self) -> dict[str, int]:
        """SIGTERM every service, wait for a clean exit; returns the exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                codes[name] = process.wait()
        return codes

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


def s3_environment(s3: S3Settings) -> dict[str, str]:
    """``MLOOP_S3__...`` variables that make a service read ``s3`` back."""
    env = {}
    for field, value in s3.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[f"MLOOP_S3__{field.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env
