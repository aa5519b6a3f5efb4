"""Every environment variable the deployment files give a service or the web UI (docker-compose.yml, deploy/k8s)
is one that it reads: a field of its pydantic settings (services/*/config.py, libs/common settings.py), the log level,
or a standard OpenTelemetry variable. A misspelt setting would otherwise be ignored without a word."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import opentelemetry.sdk.environment_variables as otel_variables
import pytest
import yaml
from pydantic import BaseModel
from pydantic_settings import BaseSettings

from mloop_common.settings import SERVICE_PORTS, UI_PORT, CommonSettings, ServiceSettings

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
# Read with os.environ outside the settings classes: the log level (mloop_common.runtime) and OpenTelemetry's own.
# What the deployment files run: the six pipeline services and the web UI.
DEPLOYED = {**SERVICE_PORTS, "ui": UI_PORT}
OTHER = {"MLOOP_LOG_LEVEL"} | {value for name, value in vars(otel_variables).items() if name.startswith("OTEL_")}


def names(model: type[BaseModel], prefix: str) -> set[str]:
    """The variables that set a field of ``model`` (nested models also field by field, joined with ``__``)."""
    found = set()
    for field, info in model.model_fields.items():
        if field == "common" and issubclass(model, ServiceSettings):
            continue  # read by CommonSettings itself, under MLOOP_
        name = prefix + field.upper()
        found.add(name)
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found |= names(info.annotation, name + "__")
    return found


def settings_class(service: str) -> type[ServiceSettings]:
    module = importlib.import_module(f"mloop_{service}.config")
    (cls,) = [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, ServiceSettings) and c is not ServiceSettings
    ]
    return cls


def known(service: str) -> set[str]:
    cls = settings_class(service)
    prefix = cls.model_config.get("env_prefix", "")
    assert issubclass(cls, BaseSettings) and prefix == f"MLOOP_{service.upper()}_"
    return names(CommonSettings, "MLOOP_") | names(cls, prefix) | OTHER


def unknown(service: str, variables: set[str]) -> set[str]:
    return {name for name in variables if name not in known(service)}


def test_the_check_knows_real_settings_and_catches_misspelt_ones() -> None:
    assert not unknown("trainer", {"MLOOP_TRAINER_WORKERS", "MLOOP_KAFKA__BOOTSTRAP_SERVERS", "MLOOP_TRAINER_LIMITS"})
    assert not unknown("serving", {"MLOOP_SERVING_LOG_SPILL_DIR", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"})
    assert not unknown("ui", {"MLOOP_UI_DRIFT_URL", "MLOOP_REGISTRY_URL", "OTEL_EXPORTER_OTLP_PROTOCOL"})
    assert not unknown("registry", {"MLOOP_REGISTRY_RETENTION__SOURCES"})
    assert unknown("ui", {"MLOOP_UI_DRIFTURL", "MLOOP_UI_DATABASE__URL"}) == {
        "MLOOP_UI_DRIFTURL",
        "MLOOP_UI_DATABASE__URL",
    }
    assert unknown(
        "trainer", {"MLOOP_TRAINER_WORKER", "MLOOP_SERVING_LOG_SPILL_DIR", "MLOOP_KAFKA_BOOTSTRAP_SERVERS"}
    ) == {
        "MLOOP_TRAINER_WORKER",
        "MLOOP_SERVING_LOG_SPILL_DIR",
        "MLOOP_KAFKA_BOOTSTRAP_SERVERS",
    }


@pytest.mark.parametrize("service", sorted(DEPLOYED))
def test_compose_environment_names_only_settings_the_service_reads(service: str) -> None:
    environment = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"][service]["environment"]
    assert not unknown(service, set(environment)), f"{service}: {sorted(unknown(service, set(environment)))}"


def k8s_documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name != "kustomization.yaml":
            docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


def test_kubernetes_settings_name_only_settings_the_services_read() -> None:
    documents = k8s_documents()
    shared = {key for doc in documents if doc["kind"] == "ConfigMap" for key in doc.get("data", {})}
    assert shared, "no ConfigMap with settings"
    every_service = set.intersection(*(known(service) for service in DEPLOYED))
    assert shared <= every_service, f"ConfigMap keys no service reads: {sorted(shared - every_service)}"
    checked = 0
    for doc in documents:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        # overlay patches hold only what they change
        for container in doc["spec"].get("template", {}).get("spec", {}).get("containers", []):
            service = container["name"]
            variables = {entry["name"] for entry in container.get("env", [])}
            assert not unknown(service, variables), (
                f"{doc['metadata']['name']}/{service}: {unknown(service, variables)}"
            )
            checked += 1
    assert checked >= len(DEPLOYED)
