"""deploy/k8s, checked without a cluster or a kustomize binary: the kustomizations list only files that exist,
every manifest (base, overlay resources, and base + overlay patches merged the way kustomize's strategic merge
does for these files) validates against the Kubernetes schemas of a pinned version, and every Deployment (the six
services and the web UI) has probes, resources, a non-root security context, a Service and a PodDisruptionBudget."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from mloop_common.settings import SERVICE_PORTS, UI_PORT

# What runs from the images: the six pipeline services and the web UI.
DEPLOYED = {**SERVICE_PORTS, "ui": UI_PORT}
REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# The oldest Kubernetes release still supported upstream when these manifests were written.
KUBERNETES_VERSION = "1.33.0"

Doc = dict[str, Any]


def kustomization(folder: Path) -> Doc:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize applies it to these files: maps merge, null deletes, lists of named items
    (containers, env, volumes, ports) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = dict(base)
        for k, v in patch.items():
            if v is None:
                merged.pop(k, None)
            else:
                merged[k] = merge(base[k], v) if k in base else v
        return merged
    named = isinstance(base, list) and isinstance(patch, list)
    if named and all(isinstance(item, dict) and "name" in item for item in [*base, *patch]):
        merged_list = [copy.deepcopy(item) for item in base]
        for item in patch:
            index = next((i for i, old in enumerate(merged_list) if old["name"] == item["name"]), None)
            if index is None:
                merged_list.append(item)
            else:
                merged_list[index] = merge(merged_list[index], item)
        return merged_list
    return patch


def build(folder: Path) -> dict[tuple[str, str], Doc]:
    """The resources a kustomization produces (namespace, images, labels and generators left out)."""
    config = kustomization(folder)
    resources: dict[tuple[str, str], Doc] = {}
    for entry in config.get("resources", []):
        path = folder / entry
        for doc in build(path).values() if path.is_dir() else load(path):
            assert key(doc) not in resources, f"{key(doc)} twice in {folder}"
            resources[key(doc)] = doc
    for patch in config.get("patches", []):
        for doc in load(folder / patch["path"]):
            assert key(doc) in resources, f"{folder.name}/{patch['path']} patches {key(doc)}, which is not there"
            resources[key(doc)] = merge(resources[key(doc)], doc)
    return resources


def listed_files(folder: Path) -> list[str]:
    config = kustomization(folder)
    files = list(config.get("resources", [])) + [p["path"] for p in config.get("patches", []) if "path" in p]
    files += list(config.get("components", []))
    for generator in config.get("configMapGenerator", []) + config.get("secretGenerator", []):
        files += [f.split("=")[-1] for f in generator.get("files", []) + generator.get("envs", [])]
    return files


def deployments(resources: dict[tuple[str, str], Doc]) -> list[Doc]:
    return [doc for (kind, _), doc in resources.items() if kind == "Deployment"]


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_kustomization_lists_only_files_that_exist(folder: Path) -> None:
    for entry in listed_files(folder):
        path = folder / entry
        assert path.exists(), f"{folder.name}/kustomization.yaml lists {entry}, which does not exist"
        if path.is_dir():
            assert (path / "kustomization.yaml").is_file(), f"{entry} is a folder without a kustomization"
    on_disk = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
    listed = {Path(entry).name for entry in listed_files(folder) if (folder / entry).is_file()}
    assert on_disk <= listed, f"files in {folder.name} that no kustomization uses: {sorted(on_disk - listed)}"


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_every_manifest_validates_against_the_kubernetes_schemas(folder: Path) -> None:
    resources = build(folder)
    assert resources
    for doc in resources.values():
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            raise AssertionError(f"{folder.name}: {key(doc)}: {path}: {error.message}") from None


def test_the_check_rejects_an_invalid_manifest() -> None:
    doc = copy.deepcopy(build(BASE)[("Deployment", "mloop-serving")])
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_every_deployment_has_probes_resources_and_runs_as_non_root(folder: Path) -> None:
    resources = build(folder)
    found = deployments(resources)
    assert {doc["metadata"]["name"] for doc in found} == {f"mloop-{service}" for service in DEPLOYED}
    for doc in found:
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            where = f"{folder.name}: {doc['metadata']['name']}/{container['name']}"
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", where
            assert container["resources"]["requests"]["cpu"] and container["resources"]["requests"]["memory"], where
            assert container["resources"]["limits"]["memory"], where
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            port = DEPLOYED[container["name"]]
            assert [p["containerPort"] for p in container["ports"]] == [port], where
            assert container["image"] == f"mloop-{container['name']}", where


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_services_budgets_and_autoscalers_select_the_deployments(folder: Path) -> None:
    resources = build(folder)
    for doc in deployments(resources):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = doc["spec"]["template"]["spec"]["containers"][0]["name"]
        # the in-cluster name the other services use (MLOOP_REGISTRY_URL, Prometheus)
        svc = resources[("Service", service)]
        assert svc["spec"]["selector"].items() <= labels.items()
        assert svc["spec"]["ports"][0]["port"] == DEPLOYED[service]
        budget = resources[("PodDisruptionBudget", doc["metadata"]["name"])]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert ("minAvailable" in budget["spec"]) != ("maxUnavailable" in budget["spec"])
    for (kind, name), doc in resources.items():
        if kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            assert (target["kind"], target["name"]) in resources, f"{name} scales a missing {target}"
    assert ("HorizontalPodAutoscaler", "mloop-serving") in resources


def environment(container: Doc, resources: dict[tuple[str, str], Doc]) -> dict[str, Any]:
    """A container's variables: those of the ConfigMaps it loads, then its own (values or their sources)."""
    variables: dict[str, Any] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            variables |= resources[("ConfigMap", source["configMapRef"]["name"])]["data"]
    for entry in container.get("env", []):
        variables[entry["name"]] = entry.get("value", entry.get("valueFrom"))
    return variables


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_services_keep_artifacts_in_a_bucket_and_mount_no_shared_volume(folder: Path) -> None:
    resources = build(folder)
    assert not [name for kind, name in resources if kind == "PersistentVolumeClaim"]
    for doc in resources.values():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            # emptyDir only: a pod's own scratch space, never shared with another pod
            assert set(volume) == {"name", "emptyDir"}, f"{folder.name}: {doc['metadata']['name']} mounts {volume}"
        if doc["kind"] != "Deployment":
            continue
        for container in pod["containers"]:
            where = f"{folder.name}: {doc['metadata']['name']}"
            variables = environment(container, resources)
            if container["name"] == "ui":  # reads no artifacts: gets no keys to the bucket
                assert not {"MLOOP_S3__ACCESS_KEY_ID", "MLOOP_S3__SECRET_ACCESS_KEY"} & set(variables), where
                continue
            assert variables["MLOOP_ARTIFACTS_ROOT"].startswith("s3://"), where
            assert variables["MLOOP_S3__ENDPOINT_URL"].startswith(("http://", "https://")), where
            if variables["MLOOP_S3__ENDPOINT_URL"].startswith("http://"):
                assert variables["MLOOP_S3__ALLOW_HTTP"] == "true", where
            for name, key in (
                ("MLOOP_S3__ACCESS_KEY_ID", "access-key-id"),
                ("MLOOP_S3__SECRET_ACCESS_KEY", "secret-access-key"),
            ):
                assert variables[name] == {"secretKeyRef": {"name": "mloop-s3", "key": key, "optional": True}}, where


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_the_ui_and_retention_reach_the_services_by_their_service_names(folder: Path) -> None:
    resources = build(folder)

    def variables(service: str) -> dict[str, Any]:
        [container] = resources[("Deployment", f"mloop-{service}")]["spec"]["template"]["spec"]["containers"]
        return environment(container, resources)

    ui = variables("ui")
    for service, port in SERVICE_PORTS.items():
        name = "MLOOP_REGISTRY_URL" if service == "registry" else f"MLOOP_UI_{service.upper()}_URL"
        assert ui[name] == f"http://{service}:{port}", f"{folder.name}: {name}"
        assert ("Service", service) in resources
    sources = json.loads(variables("registry")["MLOOP_REGISTRY_RETENTION__SOURCES"])
    assert sources == {service: f"http://{service}:{SERVICE_PORTS[service]}" for service in ("ingest", "trainer")}


@pytest.mark.parametrize("folder", [BASE, *OVERLAYS], ids=lambda p: p.name)
def test_every_deployment_sends_traces_to_the_collector_port_of_its_otlp_protocol(folder: Path) -> None:
    receiver = yaml.safe_load((REPO / "deploy" / "otel" / "collector.yml").read_text())["receivers"]["otlp"]
    ports = {
        "grpc": receiver["protocols"]["grpc"]["endpoint"].rsplit(":", 1)[1],
        "http/protobuf": receiver["protocols"]["http"]["endpoint"].rsplit(":", 1)[1],
    }
    for deployment in deployments(build(folder)):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        variables = environment(container, build(folder))
        protocol = variables.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        endpoint = variables["OTEL_EXPORTER_OTLP_ENDPOINT"]
        assert endpoint.rsplit(":", 1)[1] == ports[protocol], f"{folder.name} {deployment['metadata']['name']}"


def test_migration_job_migrates_every_service_with_a_database() -> None:
    job = build(BASE)[("Job", "mloop-migrate")]
    containers = job["spec"]["template"]["spec"]["containers"]
    with_alembic = {p.parent.name for p in REPO.glob("services/*/alembic.ini")}
    assert {c["name"] for c in containers} == with_alembic
    for container in containers:
        assert container["image"] == f"mloop-{container['name']}"
        assert container["command"][0] == "alembic" and container["command"][-2:] == ["upgrade", "head"]
        env = {e["name"] for e in container["env"]}
        assert f"MLOOP_{container['name'].upper()}_DATABASE_URL" in env


@pytest.mark.parametrize("folder", OVERLAYS, ids=lambda p: p.name)
def test_overlays_name_the_base_images_and_provide_the_database_secret_keys(folder: Path) -> None:
    resources = build(folder)
    used_images = set()
    needed_keys = set()
    for doc in resources.values():
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                used_images.add(container["image"])
                for entry in container.get("env", []):
                    ref = entry.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        needed_keys.add((ref["name"], ref["key"]))
    assert {image["name"] for image in kustomization(folder)["images"]} == used_images
    generated = {
        (generator["name"], literal.split("=", 1)[0])
        for generator in kustomization(folder).get("secretGenerator", [])
        for literal in generator.get("literals", [])
    }
    # an overlay either generates the whole Secret or leaves all of it to the cluster (docs say how)
    assert not generated or needed_keys <= generated, sorted(needed_keys - generated)
