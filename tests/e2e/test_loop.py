"""The whole loop with the six services as separate processes on the real broker and database."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from rich.console import Console

from mloop_cli.demo import DemoConfig, DemoResult, load_rainfall, run_demo
from tests.conftest import eventually
from tests.stack import ServiceStack

REQUIRED_HEADERS = {
    "ce_specversion",
    "ce_id",
    "ce_type",
    "ce_source",
    "ce_time",
    "ce_subject",
    "ce_dataschema",
    "ce_correlationid",
    "content-type",
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def loop_result(stack: ServiceStack) -> DemoResult:
    config = DemoConfig(
        ingest_url=stack.urls["ingest"],
        registry_url=stack.urls["registry"],
        serving_url=stack.urls["serving"],
        bootstrap_servers=stack.bootstrap,
        artifacts_root=stack.artifacts,
        stage_timeout=180,
        api_key=stack.admin_key,
    )
    result = await run_demo(config, Console(quiet=True))
    assert result.completed, f"loop failed: {result.failure}\nlogs in {stack.logs}"
    return result


pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_drifted_traffic_brings_a_better_model_into_serving(loop_result: DemoResult) -> None:
    types = [e.type for e in loop_result.timeline if e.subject == loop_result.model]
    for expected in (
        "data.published",
        "model.trained",
        "model.registered",
        "model.promoted",
        "predictions.logged",
        "feedback.received",
        "drift.detected",
    ):
        assert expected in types, f"no {expected} event in the loop"
    assert types.count("model.promoted") >= 2
    assert loop_result.accuracy["v2"] > loop_result.accuracy["v1"]
    assert loop_result.accuracy["served"] == pytest.approx(loop_result.accuracy["v2"])


async def test_lineage_of_v2_reaches_the_dataset_snapshot(
    loop_result: DemoResult, stack: ServiceStack, clients: dict[str, httpx.AsyncClient]
) -> None:
    lineage = (await clients["registry"].get(f"/v1/lineage/{loop_result.model}/2")).json()
    dataset = (await clients["ingest"].get(f"/v1/datasets/{loop_result.model}/versions/1")).json()
    assert lineage["trigger"] == "drift.detected"
    assert lineage["dataset_sha256"] == dataset["sha256"]
    snapshot = stack.artifacts / dataset["snapshot_uri"].removeprefix("artifact:")
    assert hashlib.sha256(snapshot.read_bytes()).hexdigest() == dataset["sha256"]
    run = (await clients["trainer"].get(f"/v1/runs/{lineage['run_id']}")).json()
    assert run["dataset_sha256"] == dataset["sha256"] and run["recent_data_sha256"]


async def test_every_message_is_a_complete_cloudevent(loop_result: DemoResult) -> None:
    assert loop_result.invalid_records == []
    # The broker and consumer groups outlive each module's stack: an event another module left unconsumed
    # may be read (and dead-lettered, its artifacts being elsewhere) by this stack. Only the loop's own count.
    own = [entry for entry in loop_result.timeline if entry.subject == loop_result.model]
    assert len(own) >= 7
    for entry in own:
        missing = REQUIRED_HEADERS - set(entry.headers)
        assert not missing, f"{entry.type} from {entry.source} lacks {missing}"
        assert entry.headers["ce_type"] == entry.type and not entry.type.endswith(".dlq")


async def test_same_bytes_again_return_the_existing_version_without_an_event(
    loop_result: DemoResult, clients: dict[str, httpx.AsyncClient]
) -> None:
    csv = load_rainfall().iloc[:7300].to_csv(index=False).encode()
    response = await clients["ingest"].post(
        f"/v1/datasets/{loop_result.model}/versions",
        data={"target": "rain", "time_column": "day"},
        files={"file": ("again.csv", csv, "text/csv")},
    )
    assert response.status_code == 200
    assert response.json()["version"] == 1
    versions = (await clients["ingest"].get(f"/v1/datasets/{loop_result.model}/versions")).json()["versions"]
    assert len(versions) == 1


async def test_redelivered_trigger_does_not_train_twice(
    loop_result: DemoResult, stack: ServiceStack, clients: dict[str, httpx.AsyncClient]
) -> None:
    published = next(e for e in loop_result.timeline if e.type == "data.published" and e.subject == loop_result.model)
    runs_before = (await clients["trainer"].get("/v1/runs", params={"model": loop_result.model})).json()["runs"]
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap)
    await producer.start()
    try:
        from mloop_common.events import to_record

        key, value, headers = to_record(published.event)
        await producer.send_and_wait("data.published", value=value, key=key, headers=headers)
    finally:
        await producer.stop()
    await eventually(lambda: _consumed_everything(clients["trainer"]), timeout=30)
    runs_after = (await clients["trainer"].get("/v1/runs", params={"model": loop_result.model})).json()["runs"]
    assert len(runs_after) == len(runs_before)


async def _consumed_everything(trainer: httpx.AsyncClient) -> bool:
    metrics = (await trainer.get("/metrics")).text
    handled = [
        line
        for line in metrics.splitlines()
        if line.startswith("mloop_events_consumed_total{") and 'topic="data.published"' in line
    ]
    return any(float(line.rsplit(" ", 1)[1]) >= 2 for line in handled)


async def test_bad_requests_get_clear_errors_and_change_nothing(
    loop_result: DemoResult, clients: dict[str, httpx.AsyncClient]
) -> None:
    serving, ingest, registry = clients["serving"], clients["ingest"], clients["registry"]
    response = await serving.post(f"/v1/models/{loop_result.model}:predict", json={"instances": [{"day": 1}]})
    assert response.status_code == 422 and response.json()["error"]["field"].startswith("instances[0].")
    response = await serving.post("/v1/models/no-such-model:predict", json={"instances": [{"a": 1}]})
    assert response.status_code == 404
    response = await serving.post("/v1/feedback", json={"request_id": "never-issued", "label": 1})
    assert response.status_code == 404 and response.json()["error"]["field"] == "request_id"
    response = await ingest.post(
        f"/v1/datasets/{loop_result.model}/versions",
        data={"target": "nope"},
        files={"file": ("bad.csv", b"a,b\n1,2\n", "text/csv")},
    )
    assert response.status_code == 422 and "nope" in response.json()["error"]["message"]
    response = await registry.post(
        "/v1/models", content=b"name: x\ntask: clustering\n", headers={"content-type": "application/yaml"}
    )
    assert response.status_code == 422 and response.json()["error"]["field"]
    versions = (await registry.get(f"/v1/models/{loop_result.model}/versions")).json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]


async def test_open_inference_protocol_clients_get_the_production_model(
    loop_result: DemoResult, clients: dict[str, httpx.AsyncClient]
) -> None:
    serving, model = clients["serving"], loop_result.model
    metadata = (await serving.get(f"/v2/models/{model}")).json()
    assert metadata["versions"] == ["2"]
    features = [i["name"] for i in metadata["inputs"]]
    rows = load_rainfall().iloc[-3:]
    request = {
        "id": "req-1",
        "inputs": [{"name": f, "shape": [3], "datatype": "FP64", "data": rows[f].tolist()} for f in features],
    }
    body = (await serving.post(f"/v2/models/{model}/infer", json=request)).json()
    assert body["model_name"] == model and body["model_version"] == "2" and body["id"] == "req-1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predict"]["shape"] == [3] and len(outputs["predict"]["data"]) == 3
    assert outputs["predict_proba"]["shape"] == [3, 2]
    assert len(body["parameters"]["request_ids"]) == 3
    assert (await serving.post(f"/v2/models/{model}/versions/1/infer", json=request)).status_code == 404
    assert (await serving.get("/v2/health/ready")).json() == {"ready": True}


async def test_cli_shows_models_and_explains_refusals(
    loop_result: DemoResult, stack: ServiceStack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from mloop_cli.main import app

    for name, url in stack.urls.items():
        monkeypatch.setenv(f"MLOOP_{name.upper()}_URL", url)
    monkeypatch.setenv("MLOOP_API_KEY", stack.admin_key)
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "versions", loop_result.model])
    assert listed.exit_code == 0 and "production" in listed.output
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    refused = runner.invoke(app, ["publish", loop_result.model, str(bad), "--target", "rain"])
    assert refused.exit_code == 1 and "rain" in refused.output
    predicted = runner.invoke(app, ["predict", loop_result.model, "--json", "{not json"])
    assert predicted.exit_code == 2 and "not valid JSON" in predicted.output
    from mloop_cli.main import console as cli_console

    monkeypatch.setattr(cli_console, "width", 200)  # a wide table, not wrapped at 80 columns
    runs = runner.invoke(app, ["runs", "list", "--model", loop_result.model])
    assert runs.exit_code == 0 and runs.output.count("succeeded") == 2
    lineage = loop_result.lineage
    shown = runner.invoke(app, ["runs", "show", lineage["run_id"]])
    assert shown.exit_code == 0 and "succeeded" in shown.output and lineage["dataset_sha256"] in shown.output
    reproduced = runner.invoke(app, ["runs", "reproduce", lineage["run_id"]])
    assert reproduced.exit_code == 0 and "matches" in reproduced.output and "identical" in reproduced.output
    missing = runner.invoke(app, ["runs", "show", "no-such-run"])
    assert missing.exit_code == 1 and "404" in missing.output


async def test_feedback_naming_its_model_is_accepted_by_any_serving_process(
    loop_result: DemoResult, clients: dict[str, httpx.AsyncClient]
) -> None:
    response = await clients["serving"].post(
        "/v1/feedback",
        json=[
            {"request_id": "answered-by-another-replica", "label": 1, "model": loop_result.model},
            {"request_id": "unknown-and-no-model", "label": 0},
        ],
    )
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "unknown": ["unknown-and-no-model"]}


async def test_every_service_exposes_metrics_promtool_accepts(
    loop_result: DemoResult, clients: dict[str, httpx.AsyncClient], promtool: Path
) -> None:

    for name, client in clients.items():
        response = await client.get("/metrics")
        assert response.status_code == 200
        checked = subprocess.run(
            [str(promtool), "check", "metrics"], input=response.text, capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"
    # The loop's own outcomes are visible to the alert rules.
    drift = (await clients["drift"].get("/metrics")).text
    assert 'mloop_drift_detected_total{action="retrain",cause=' in drift
    trainer = (await clients["trainer"].get("/metrics")).text
    assert f'mloop_trainer_runs_total{{model="{loop_result.model}",status="succeeded"}} 2.0' in trainer


async def test_a_prediction_traces_back_to_its_model_run_and_dataset_snapshot(
    loop_result: DemoResult, stack: ServiceStack, clients: dict[str, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mloop_cli.main import app
    from mloop_cli.main import console as cli_console

    for name, url in stack.urls.items():
        monkeypatch.setenv(f"MLOOP_{name.upper()}_URL", url)
    monkeypatch.setenv("MLOOP_API_KEY", stack.admin_key)
    monkeypatch.setattr(cli_console, "width", 250)
    row = load_rainfall().drop(columns=["rain"]).iloc[-1].to_dict()
    answered = (
        await clients["serving"].post(f"/v1/models/{loop_result.model}:predict", json={"instances": [row]})
    ).json()
    [request_id] = answered["request_ids"]

    async def logged() -> bool:
        return (await clients["drift"].get(f"/v1/predictions/{request_id}")).status_code == 200

    await eventually(logged, timeout=30)
    traced = CliRunner().invoke(app, ["lineage", request_id])
    by_version = CliRunner().invoke(app, ["lineage", f"{loop_result.model}:2", "--json"])

    assert traced.exit_code == 0, traced.output
    assert f"{loop_result.model} v{answered['model_version']}" in traced.output
    assert loop_result.lineage["dataset_sha256"] in traced.output and loop_result.lineage["run_id"] in traced.output
    assert (
        by_version.exit_code == 0
        and json.loads(by_version.output)["dataset"]["sha256"] == loop_result.lineage["dataset_sha256"]
    )
    assert CliRunner().invoke(app, ["lineage", "no-such-request"]).exit_code == 1
