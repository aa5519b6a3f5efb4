"""docker-compose.yml, checked without a Docker engine: valid against the Compose Specification's JSON schema,
the six services and the web UI built from the Dockerfile with health checks and healthy dependencies, every
file a service mounts present, the artifacts in MinIO's bucket (no shared volume) reached with a user limited to
that bucket (never MinIO's root), and Prometheus, the OpenTelemetry collector and Grafana wired to the compose
host names."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml
from botocore.exceptions import ClientError

from mloop_common.artifacts import ArtifactStoreUnusable, S3ArtifactStore
from mloop_common.settings import SERVICE_PORTS, UI_PORT, S3Settings
from tests.ops.test_deploy_settings import settings_class

REPO = Path(__file__).resolve().parents[2]
# What compose runs from the Dockerfile: the six pipeline services and the web UI.
DEPLOYED = {**SERVICE_PORTS, "ui": UI_PORT}
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


def test_the_services_and_the_ui_are_built_from_the_dockerfile_with_health_checks_and_published_ports() -> None:
    declared = services()
    for service, port in DEPLOYED.items():
        spec = declared[service]
        assert spec["build"]["args"]["SERVICE"] == service
        assert (REPO / spec["build"].get("context", ".") / spec["build"].get("dockerfile", "Dockerfile")).is_file()
        assert any(f"{port}/readyz" in part for part in spec["healthcheck"]["test"]), spec["healthcheck"]
        assert spec["environment"][f"MLOOP_{service.upper()}_HOST"] == "0.0.0.0"
        assert f"{port}:{port}" in spec["ports"], service
        assert spec["image"].startswith(f"mloop-{service}:")


def test_dependencies_wait_for_health_checks_that_exist() -> None:
    declared = services()
    for service in DEPLOYED:
        depends = declared[service]["depends_on"]
        assert depends["kafka"]["condition"] == "service_healthy"
        if settings_class(service).uses_database:
            assert depends["postgres"]["condition"] == "service_healthy"
        else:
            assert "postgres" not in depends, service
        for name, dependency in depends.items():
            assert name in declared, f"{service} depends on unknown {name}"
            if dependency["condition"] == "service_healthy":
                assert "healthcheck" in declared[name], f"{service} waits for {name}, which has no health check"


def test_the_ui_reaches_every_service_by_its_compose_name() -> None:
    declared = services()
    environment = declared["ui"]["environment"]
    for service, port in SERVICE_PORTS.items():
        name = "MLOOP_REGISTRY_URL" if service == "registry" else f"MLOOP_UI_{service.upper()}_URL"
        assert environment[name] == f"http://{service}:{port}", name
        assert service in declared["ui"]["depends_on"], service
    assert declared["ui"]["depends_on"]["registry"]["condition"] == "service_healthy"  # it checks sign-ins
    # the pages call the services by these names: each must answer that Host
    assert set(SERVICE_PORTS) <= set(json.loads(environment["MLOOP_ALLOWED_HOSTS"]))
    # no database and no artifacts: no credentials for either
    assert not [name for name in environment if name.startswith(("MLOOP_S3__", "MLOOP_UI_DATABASE"))]


def test_retention_asks_ingest_and_trainer_by_their_compose_names() -> None:
    declared = services()
    sources = json.loads(declared["registry"]["environment"]["MLOOP_REGISTRY_RETENTION__SOURCES"])
    assert sources == {service: f"http://{service}:{SERVICE_PORTS[service]}" for service in ("ingest", "trainer")}


def minio_script() -> str:
    return " ".join(services()["minio-init"]["command"])


def test_minio_init_gives_the_services_a_user_limited_to_the_artifact_bucket() -> None:
    declared = services()
    init = declared["minio-init"]
    script = minio_script()
    mounts = bind_mounts(init)
    [(policy_source, policy_target)] = [(s, t) for s, t in mounts.items() if s.endswith(".json")]
    policy = json.loads((REPO / policy_source).read_text())
    user, password = (init["environment"][name] for name in ("MINIO_SERVICES_USER", "MINIO_SERVICES_PASSWORD"))
    assert f"mc admin policy create minio mloop-artifacts {policy_target}" in script
    assert 'mc admin user add minio "$$MINIO_SERVICES_USER" "$$MINIO_SERVICES_PASSWORD"' in script
    assert 'mc admin policy attach minio mloop-artifacts --user "$$MINIO_SERVICES_USER"' in script
    assert script.index("mc mb") < script.index("mc admin policy attach")
    # the policy: the artifact bucket and its objects only, and nothing that administers MinIO or the bucket
    bucket = declared["registry"]["environment"]["MLOOP_ARTIFACTS_ROOT"].removeprefix("s3://").split("/")[0]
    statements = policy["Statement"]
    assert all(statement["Effect"] == "Allow" for statement in statements)
    resources = {r for statement in statements for r in statement["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    actions = {action for statement in statements for action in statement["Action"]}
    # what the artifact store does: list, read, write (multipart too), and delete (the registry's retention)
    assert {"s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"} <= actions
    assert not [a for a in actions if "*" in a or a.startswith(("admin:", "s3:PutBucket", "s3:DeleteBucket"))]
    for service in SERVICE_PORTS:
        environment = declared[service]["environment"]
        assert (environment["MLOOP_S3__ACCESS_KEY_ID"], environment["MLOOP_S3__SECRET_ACCESS_KEY"]) == (user, password)


@contextmanager
def s3_enforcing_iam(unauthenticated: int) -> Iterator[str]:
    """moto's S3 and IAM in server mode, enforcing IAM policies after the first ``unauthenticated`` requests: in a
    process of its own, because that setting is process-wide (the other tests' moto accepts any key). Its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    environ = os.environ | {"INITIAL_NO_AUTH_ACTION_COUNT": str(unauthenticated)}
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/moto-api/", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "moto did not start"
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_services_user_can_do_what_the_artifact_store_does_in_its_bucket_and_nothing_else(
    tmp_path: Path,
) -> None:
    """The policy minio-init attaches, enforced by an S3 with IAM (moto; MinIO reads the same policy language):
    the artifact store checks the bucket, stores (one PUT and multipart), lists and reads; nothing outside it."""
    declared = services()
    root = declared["registry"]["environment"]["MLOOP_ARTIFACTS_ROOT"]
    bucket = root.removeprefix("s3://").split("/")[0]
    policy_source = next(s for s in bind_mounts(declared["minio-init"]) if s.endswith(".json"))
    admin = {"region_name": "us-east-1", "aws_access_key_id": "root", "aws_secret_access_key": "root-secret"}
    with s3_enforcing_iam(unauthenticated=6) as url:  # the six set-up calls below
        s3, iam = boto3.client("s3", endpoint_url=url, **admin), boto3.client("iam", endpoint_url=url, **admin)
        s3.create_bucket(Bucket=bucket)
        s3.create_bucket(Bucket="elsewhere")
        iam.create_user(UserName="mloop-services")
        policy = iam.create_policy(PolicyName="mloop-artifacts", PolicyDocument=(REPO / policy_source).read_text())
        iam.attach_user_policy(UserName="mloop-services", PolicyArn=policy["Policy"]["Arn"])
        key = iam.create_access_key(UserName="mloop-services")["AccessKey"]
        keys = {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
        settings = S3Settings(endpoint_url=url, region="us-east-1", allow_http=True, max_retries=1, **keys)
        store = S3ArtifactStore.from_url(root, settings, part_bytes=5 * 1024 * 1024)

        store.check()
        model = store.put(b"a model", kind="model")
        snapshot = tmp_path / "snapshot.parquet"
        snapshot.write_bytes(os.urandom(11 * 1024 * 1024))  # three parts: a multipart upload
        dataset = store.put_file(snapshot, kind="dataset")
        assert store.get(model.uri, model.sha256) == b"a model"
        assert store.get(dataset.uri, dataset.sha256) == snapshot.read_bytes()
        assert {artifact.uri for artifact in store.stored()} == {model.uri, dataset.uri}
        # Retention deletes. The store's DeleteObjects is authorised per object by S3 and MinIO, but by moto
        # against the bucket; a single DELETE shows the per-object grant.
        services_s3 = boto3.client(
            "s3",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        )
        prefix = root.removeprefix(f"s3://{bucket}/")
        services_s3.delete_object(Bucket=bucket, Key=f"{prefix}/{model.uri.split(':', 1)[1]}")
        assert {artifact.uri for artifact in store.stored()} == {dataset.uri}

        with pytest.raises(ArtifactStoreUnusable, match="refused the credentials"):
            S3ArtifactStore.from_url("s3://elsewhere/artifacts", settings).check()
        for refused in (
            lambda: services_s3.put_object(Bucket="elsewhere", Key="x", Body=b"x"),
            lambda: services_s3.create_bucket(Bucket="another"),
            lambda: services_s3.delete_bucket(Bucket=bucket),
            lambda: services_s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Statement": []})),
        ):
            with pytest.raises(ClientError, match="AccessDenied"):
                refused()


def test_no_mloop_process_gets_minio_root_credentials() -> None:
    declared = services()
    minio = declared["minio"]["environment"]
    root = {minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"]}
    for service in DEPLOYED:
        environment = declared[service]["environment"]
        assert not [name for name in environment if name.startswith("MINIO_ROOT_")], service
        assert not [name for name, value in environment.items() if "MINIO_ROOT_" in str(value)], service
        assert not root & {str(value) for value in environment.values()}, service
    # the services' user is another one, with its own password
    init = declared["minio-init"]["environment"]
    assert init["MINIO_SERVICES_USER"] not in root and init["MINIO_SERVICES_PASSWORD"] not in root


def test_services_keep_artifacts_in_the_bucket_minio_init_creates_and_share_no_volume() -> None:
    declared = services()
    init = declared["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = minio_script()
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
        # minio-init logs in as MinIO's root (the same variables and defaults as MinIO's own)
        minio = declared["minio"]["environment"]
        assert {name: init["environment"][name] for name in minio} == minio
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
    ports = {
        protocol: config["receivers"]["otlp"]["protocols"][protocol]["endpoint"].rsplit(":", 1)[1]
        for protocol in ("grpc", "http")
    }
    for service in DEPLOYED:
        environment = declared[service]["environment"]
        protocol = "grpc" if environment.get("OTEL_EXPORTER_OTLP_PROTOCOL") == "grpc" else "http"
        assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://otel-collector:{ports[protocol]}", service
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
