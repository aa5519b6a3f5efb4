"""docker-compose.yml, checked without a Docker engine: valid against the Compose Specification's JSON schema,
the six services built from the Dockerfile with health checks and healthy dependencies, every file a service
mounts present, the artifacts in MinIO's bucket (no shared volume), and Prometheus, the OpenTelemetry
collector and Grafana wired to the compose host names."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from mloop_common.settings import SERVICE_PORTS

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
CHECK_JSONSCHEMA = Path(sys.executable).parent / "check-jsonschema"


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, Any]:
    return compose()["services"]


def bind_mounts(service: dict[str, Any]) -> dict[str, str]:
    """Repository path -> container path, for the short-syntax bind mounts (./...)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[source.removeprefix("./")] = target
    return mounts


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    done = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_file_a_service_mounts_exists() -> None:
    mounted = {name: bind_mounts(service) for name, service in services().items()}
    assert any(mounted.values())
    for name, mounts in mounted.items():
        for source in mounts:
            assert (REPO / source).exists(), f"{name} mounts ./{source}, which does not exist"


def test_the_six_services_are_built_from_the_dockerfile_with_health_checks() -> None:
    declared = services()
    for service, port in SERVICE_PORTS.items():
        spec = declared[service]
        assert spec["build"]["args"]["SERVICE"] == service
        assert (REPO / spec["build"].get("context", ".") / spec["build"].get("dockerfile", "Dockerfile")).is_file()
        assert any(f"{port}/readyz" in part for part in spec["healthcheck"]["test"]), spec["healthcheck"]
        assert spec["environment"][f"MLOOP_{service.upper()}_HOST"] == "0.0.0.0"


def test_dependencies_wait_for_health_checks_that_exist() -> None:
    declared = services()
    for service in SERVICE_PORTS:
        depends = declared[service]["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy"
        if service != "serving":  # serving has no database
            assert depends["postgres"]["condition"] == "service_healthy"
        for name, dependency in depends.items():
            assert name in declared, f"{service} depends on unknown {name}"
            if dependency["condition"] == "service_healthy":
                assert "healthcheck" in declared[name], f"{service} waits for {name}, which has no health check"


def test_services_keep_artifacts_in_the_bucket_minio_init_creates_and_share_no_volume() -> None:
    declared = services()
    init = declared["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = " ".join(init["command"])
    for service in SERVICE_PORTS:
        spec = declared[service]
        environment = spec["environment"]
        root = environment["MLOOP_ARTIFACTS_ROOT"]
        assert root.startswith("s3://"), f"{service}: {root}"
        bucket = root.removeprefix("s3://").split("/")[0]
        assert f"mc mb --ignore-existing minio/{bucket}" in script, f"minio-init does not create {bucket}"
        endpoint = environment["MLOOP_S3__ENDPOINT_URL"]
        host, port = endpoint.removeprefix("http://").split(":")
        assert host == "minio" and f"{port}:{port}" in declared["minio"]["ports"], endpoint
        assert f"http://{host}:{port}" in script  # the bucket is made where the services look for it
        assert environment["MLOOP_S3__ALLOW_HTTP"] == "true"
        # the keys are MinIO's own (the same variables and defaults)
        minio = declared["minio"]["environment"]
        assert environment["MLOOP_S3__ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
        assert environment["MLOOP_S3__SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
        assert init["environment"] == minio
        assert spec["depends_on"]["minio-init"]["condition"] == "service_completed_successfully", service
        named = [v.split(":")[0] for v in spec.get("volumes", []) if not v.startswith((".", "/"))]
        for volume in named:
            users = [
                name
                for name, other in declared.items()
                if any(v.startswith(f"{volume}:") for v in other.get("volumes", []))
            ]
            assert users == [service], f"{service} shares the volume {volume} with {users}"
    assert "artifacts" not in (compose().get("volumes") or {})


def test_database_urls_reach_the_roles_the_init_script_creates() -> None:
    declared = services()
    init = (REPO / "deploy/compose/postgres-init.sh").read_text()
    assert "deploy/compose/postgres-init.sh" in bind_mounts(declared["postgres"])
    db = declared["postgres"]["environment"]["POSTGRES_DB"]
    for service in SERVICE_PORTS:
        url = declared[service]["environment"].get(f"MLOOP_{service.upper()}_DATABASE_URL")
        if service == "serving":
            assert url is None
            continue
        assert url.startswith(f"postgresql+asyncpg://{service}:") and url.endswith(f"@postgres:5432/{db}"), url
        assert service in init.split("SERVICES=(")[1].split(")")[0].split()


def test_prometheus_scrapes_the_services_and_loads_the_alert_rules(promtool: Path, tmp_path: Path) -> None:
    prometheus = services()["prometheus"]
    mounts = bind_mounts(prometheus)
    config_source = next(source for source, target in mounts.items() if target == "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load((REPO / config_source).read_text())
    targets = {t for job in config["scrape_configs"] for group in job["static_configs"] for t in group["targets"]}
    assert {f"{service}:{port}" for service, port in SERVICE_PORTS.items()} <= targets
    for target in targets:
        assert target.split(":")[0] in services(), f"{target} is no compose service"
    # lay the files out as the container sees them, then let promtool load config and rules
    for source, target in mounts.items():
        if target.startswith("/etc/prometheus"):
            destination = tmp_path / target.removeprefix("/etc/prometheus/")
            copy = shutil.copytree if (REPO / source).is_dir() else shutil.copy
            copy(REPO / source, destination)
    done = subprocess.run(
        [str(promtool), "check", "config", "prometheus.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rules found" in done.stdout and "SUCCESS: 0 rules" not in done.stdout, done.stdout


def test_traces_flow_from_the_services_through_the_collector_to_jaeger() -> None:
    declared = services()
    collector = declared["otel-collector"]
    config_source = next(iter(bind_mounts(collector)))
    config = yaml.safe_load((REPO / config_source).read_text())
    pipeline = config["service"]["pipelines"]["traces"]
    assert set(pipeline["receivers"]) <= set(config["receivers"])
    assert set(pipeline["exporters"]) <= set(config["exporters"])
    assert set(pipeline["processors"]) <= set(config["processors"])
    http_port = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    for service in SERVICE_PORTS:
        assert declared[service]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{http_port}"
    for exporter in pipeline["exporters"]:
        host = config["exporters"][exporter]["endpoint"].split("://")[-1].split(":")[0]
        assert host in declared, f"the collector exports to {host}, which is no compose service"


def test_grafana_provisions_the_dashboards_from_the_mounted_folder() -> None:
    mounts = bind_mounts(services()["grafana"])
    dashboards_target = mounts["deploy/grafana/dashboards"]
    provisioning = REPO / next(s for s, t in mounts.items() if t == "/etc/grafana/provisioning")
    providers = yaml.safe_load((provisioning / "dashboards" / "mloop.yml").read_text())["providers"]
    assert [p["options"]["path"] for p in providers] == [dashboards_target]
    datasources = yaml.safe_load((provisioning / "datasources" / "mloop.yml").read_text())["datasources"]
    for source in datasources:
        assert source["url"].split("://")[1].split(":")[0] in services(), source["url"]
