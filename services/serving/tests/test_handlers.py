"""Serving's reactions through fakes of its ports (no Kafka, no registry process, no HTTP)."""

from __future__ import annotations

import asyncio
import errno
import gc
import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from mloop_common.artifacts import ArtifactStore
from mloop_common.contracts import PRODUCTION
from mloop_common.errors import DigestMismatch, InvalidInput, NotFound, ServiceUnavailable
from mloop_common.events import FeedbackReceived, PredictionRecord, PredictionsLogged
from mloop_common.jsoncodec import json_record
from mloop_common.modelio import UntrustedModelError
from mloop_common.retry import Backoff
from mloop_serving.batching import MicroBatcher
from mloop_serving.handlers import Loader
from mloop_serving.logbook import prediction_fields
from mloop_serving.oip import parse_infer_request
from mloop_serving.schemas import Feedback

from .fakes import Serving, classifier_file, promoted_event, serving, untrusted_file

ROWS = [{"usage": 1.5, "calls": 2.0}, {"usage": -2.0, "calls": -1.0}]
ROW_DATA = [[1.5, 2.0], [-2.0, -1.0]]


@pytest.fixture
def svc(tmp_path: Path) -> Serving:
    return serving(ArtifactStore(tmp_path))


async def serving_v1(svc: Serving) -> None:
    await svc.register(classifier_file(seed=1))
    await svc.loader.sync_all()


async def test_start_loads_the_production_version_of_every_model(svc: Serving) -> None:
    await svc.register(classifier_file())

    await svc.loader.sync_all()

    assert svc.loader.synced
    assert svc.host.current_version("churn") == 1


async def test_a_promotion_swaps_in_the_registrys_production_version(svc: Serving) -> None:
    await serving_v1(svc)
    v2 = await svc.register(classifier_file(seed=2))

    await svc.loader.on_model_promoted(*promoted_event(v2))

    assert svc.host.current_version("churn") == 2
    scored = await svc.scorer.score("churn", ROWS)
    assert scored.model.version == 2 and scored.predictions == ["yes", "no"]


async def test_a_replayed_old_promotion_does_not_bring_back_the_old_version(svc: Serving) -> None:
    await svc.register(classifier_file(seed=1))
    v1_promoted = promoted_event(svc.registry.version("churn", 1))
    await svc.register(classifier_file(seed=2))
    await svc.loader.sync_all()

    await svc.loader.on_model_promoted(*v1_promoted)

    assert svc.host.current_version("churn") == 2


async def test_a_rollback_in_the_registry_is_followed(svc: Serving) -> None:
    await serving_v1(svc)
    await svc.register(classifier_file(seed=2))
    await svc.loader.sync_all()
    svc.registry.promote("churn", 1, PRODUCTION)

    await svc.loader.on_model_promoted(*promoted_event(svc.registry.version("churn", 1)))

    assert svc.host.current_version("churn") == 1


async def test_a_promoted_artifact_with_the_wrong_digest_is_refused_and_v1_keeps_serving(svc: Serving) -> None:
    await serving_v1(svc)
    v2 = await svc.register(classifier_file(seed=2), sha256="0" * 64)

    with pytest.raises(DigestMismatch):
        await svc.loader.on_model_promoted(*promoted_event(v2))

    assert svc.host.current_version("churn") == 1
    assert (await svc.scorer.score("churn", ROWS)).model.version == 1


async def test_a_promoted_model_file_with_untrusted_types_is_refused_and_v1_keeps_serving(svc: Serving) -> None:
    await serving_v1(svc)
    v2 = await svc.register(untrusted_file())

    with pytest.raises(UntrustedModelError, match="sklearn.svm"):
        await svc.loader.on_model_promoted(*promoted_event(v2))

    assert svc.host.current_version("churn") == 1


def load_failed(model: str) -> float | None:
    return REGISTRY.get_sample_value("mloop_serving_model_load_failed", {"model": model})


async def test_a_model_that_fails_to_load_at_start_is_reported_and_the_models_after_it_still_serve(
    svc: Serving,
) -> None:
    await svc.register(classifier_file(seed=1), sha256="0" * 64)  # churn: its file does not match the digest
    await svc.register(classifier_file(seed=2), model="fraud")

    await svc.loader.sync_all()

    assert svc.loader.synced
    assert svc.host.names() == ["fraud"]
    assert (await svc.scorer.score("fraud", ROWS)).model.version == 1
    [problem] = svc.loader.problems()
    assert problem.startswith("churn: v1 failed to load (DigestMismatch: artifact ")
    assert problem.endswith("; not served")
    assert load_failed("churn") == 1


async def test_a_failed_swap_keeps_the_old_version_serving_until_a_good_one_replaces_it(svc: Serving) -> None:
    await serving_v1(svc)
    v2 = await svc.register(classifier_file(seed=2), sha256="0" * 64)

    with pytest.raises(DigestMismatch):
        await svc.loader.on_model_promoted(*promoted_event(v2))

    assert svc.host.current_version("churn") == 1
    [problem] = svc.loader.problems()
    assert problem.startswith("churn: v2 failed to load (DigestMismatch") and problem.endswith("; serving v1")
    assert load_failed("churn") == 1
    v3 = await svc.register(classifier_file(seed=3))
    await svc.loader.on_model_promoted(*promoted_event(v3))
    assert svc.host.current_version("churn") == 3
    assert svc.loader.problems() == [] and load_failed("churn") == 0


async def test_rolling_production_back_to_the_served_version_clears_a_failed_load(svc: Serving) -> None:
    await serving_v1(svc)
    v2 = await svc.register(classifier_file(seed=2), sha256="0" * 64)
    with pytest.raises(DigestMismatch):
        await svc.loader.on_model_promoted(*promoted_event(v2))

    svc.registry.promote("churn", 1, PRODUCTION)
    await svc.loader.on_model_promoted(*promoted_event(svc.registry.version("churn", 1)))

    assert svc.host.current_version("churn") == 1 and svc.loader.problems() == []


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.01)


class FlakyArtifacts(ArtifactStore):
    """An artifact store whose reads of some files fail as a network store's do, a given number of times."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failures_left: dict[str, int] = {}

    def get(self, uri: str, sha256: str) -> bytes:
        if self.failures_left.get(uri, 0) > 0:
            self.failures_left[uri] -= 1
            raise ConnectionResetError(errno.ECONNRESET, "connection reset by peer")
        return super().get(uri, sha256)


async def test_a_transient_failure_at_start_is_retried_in_the_background_while_the_others_serve(
    tmp_path: Path,
) -> None:
    artifacts = FlakyArtifacts(tmp_path)
    svc = serving(artifacts)
    churn = await svc.register(classifier_file(seed=1))
    await svc.register(classifier_file(seed=2), model="fraud")
    artifacts.failures_left[churn.artifact.uri] = 2
    loader = Loader(
        registry=svc.registry, artifacts=artifacts, host=svc.host, retry_backoff=Backoff(initial=0.01, maximum=0.02)
    )

    await loader.sync_all()
    first = loader.problems()
    try:
        await asyncio.wait_for(until(lambda: svc.host.current_version("churn") == 1), timeout=5)
    finally:
        await loader.close()

    assert svc.host.current_version("fraud") == 1
    assert first == [
        "churn: v1 failed to load (ConnectionResetError: [Errno 104] connection reset by peer); not served, retrying"
    ]
    assert loader.problems() == [] and artifacts.failures_left[churn.artifact.uri] == 0


async def test_a_registry_that_cannot_list_models_fails_the_start_sync_to_be_retried(svc: Serving) -> None:
    svc.registry.unavailable = True

    with pytest.raises(ServiceUnavailable):
        await svc.loader.sync_all()

    assert not svc.loader.synced


async def test_scoring_answers_with_request_ids_and_logs_the_predictions(svc: Serving) -> None:
    await serving_v1(svc)

    scored = await svc.scorer.score("churn", ROWS)
    await svc.logbook.flush()

    assert scored.predictions == ["yes", "no"] and scored.request_ids == ["req-1", "req-2"]
    assert scored.probabilities is not None and scored.probabilities[0][1] > 0.5
    [logged] = svc.publisher.payloads(PredictionsLogged)
    assert (logged.model, logged.version) == ("churn", 1)
    assert [r.request_id for r in logged.records] == scored.request_ids
    assert [r.inputs for r in logged.records] == ROWS
    assert [r.prediction for r in logged.records] == ["yes", "no"]
    assert all(r.timestamp == svc.clock.now for r in logged.records)
    [event] = svc.publisher.sent
    assert (event.subject, event.source) == ("churn", "mloop/serving")


async def test_a_large_batch_is_scored_off_the_event_loop_with_the_same_answers(svc: Serving) -> None:
    await serving_v1(svc)

    scored = await svc.scorer.score("churn", ROWS * 50)

    assert scored.predictions == ["yes", "no"] * 50 and len(set(scored.request_ids)) == 100


async def test_concurrent_requests_batched_together_get_the_answers_and_logs_they_get_alone(svc: Serving) -> None:
    await serving_v1(svc)
    requests = [[ROWS[i % 2]] * (1 + i % 3) for i in range(12)]
    alone = [await svc.scorer.score("churn", request) for request in requests]
    svc.scorer.batch_with(MicroBatcher(max_wait=0.001))

    together = await asyncio.gather(*(svc.scorer.score("churn", request) for request in requests))
    await svc.logbook.flush()

    assert [s.predictions for s in together] == [s.predictions for s in alone]
    logged = [r for p in svc.publisher.payloads(PredictionsLogged) for r in p.records]
    batched_ids = [i for s in together for i in s.request_ids]
    assert len(set(batched_ids)) == sum(len(r) for r in requests)
    assert {r.request_id: r.prediction for r in logged if r.request_id in batched_ids} == {
        i: p for s in together for i, p in zip(s.request_ids, s.predictions, strict=True)
    }


async def test_with_prediction_logging_off_requests_are_answered_and_nothing_is_logged(svc: Serving) -> None:
    await serving_v1(svc)
    svc.scorer.log_predictions = False

    scored = await svc.scorer.score("churn", ROWS)
    await svc.logbook.flush()

    assert scored.predictions == ["yes", "no"]
    assert svc.publisher.payloads(PredictionsLogged) == []


async def test_too_many_instances_are_refused_and_nothing_is_logged(svc: Serving) -> None:
    await serving_v1(svc)

    with pytest.raises(InvalidInput) as refused:
        await svc.scorer.score("churn", ROWS * 51)
    await svc.logbook.flush()

    assert refused.value.field == "instances"
    assert svc.publisher.sent == []


async def test_scoring_a_model_that_is_not_loaded_is_not_found(svc: Serving) -> None:
    await serving_v1(svc)

    with pytest.raises(NotFound):
        await svc.scorer.score("fraud", ROWS)
    with pytest.raises(NotFound):
        await svc.scorer.score("churn", ROWS, version=2)


async def test_an_inference_protocol_request_is_scored_and_logged_like_any_other(svc: Serving) -> None:
    await serving_v1(svc)
    call = parse_infer_request(
        json.dumps(
            {"id": "client-1", "inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": ROW_DATA}]}
        ).encode()
    )

    answer = json.loads((await svc.scorer.infer("churn", call, version=1))[0].body)
    await svc.logbook.flush()

    assert answer["id"] == "client-1" and answer["model_version"] == "1"
    assert [(o["name"], o["shape"]) for o in answer["outputs"]] == [("predict", [2]), ("predict_proba", [2, 2])]
    assert answer["outputs"][0]["data"] == ["yes", "no"]
    [logged] = svc.publisher.payloads(PredictionsLogged)
    assert [r.request_id for r in logged.records] == answer["parameters"]["request_ids"]
    assert [r.inputs for r in logged.records] == ROWS


async def test_an_inference_request_for_an_output_the_model_lacks_is_refused_and_nothing_is_logged(
    svc: Serving,
) -> None:
    await serving_v1(svc)
    call = parse_infer_request(
        json.dumps(
            {
                "inputs": [{"name": "input-0", "shape": [2, 2], "datatype": "FP64", "data": ROW_DATA}],
                "outputs": [{"name": "explanation"}],
            }
        ).encode()
    )

    with pytest.raises(InvalidInput, match="has no output 'explanation'"):
        await svc.scorer.infer("churn", call)
    await svc.logbook.flush()

    assert svc.publisher.sent == []


async def test_feedback_for_a_known_request_goes_to_the_model_that_answered(svc: Serving) -> None:
    await serving_v1(svc)
    scored = await svc.scorer.score("churn", ROWS)
    svc.clock.advance(3600)

    receipt = svc.scorer.record_feedback([Feedback(request_id=scored.request_ids[1], label="no")])
    await svc.logbook.flush()

    assert (receipt.accepted, receipt.unknown) == (1, [])
    [received] = svc.publisher.payloads(FeedbackReceived)
    assert received.model == "churn"
    assert [(r.request_id, r.label, r.timestamp) for r in received.records] == [
        (scored.request_ids[1], "no", svc.clock.now)
    ]


async def test_feedback_naming_its_model_is_accepted_without_the_request_being_remembered(svc: Serving) -> None:
    receipt = svc.scorer.record_feedback(
        [Feedback(request_id="another-replica-1", label="yes", model="churn"), Feedback(request_id="lost", label=1)]
    )
    await svc.logbook.flush()

    assert (receipt.accepted, receipt.unknown) == (1, ["lost"])
    [received] = svc.publisher.payloads(FeedbackReceived)
    assert (received.model, [r.request_id for r in received.records]) == ("churn", ["another-replica-1"])


async def test_feedback_for_an_unknown_request_without_a_model_is_not_found(svc: Serving) -> None:
    with pytest.raises(NotFound) as refused:
        svc.scorer.record_feedback([Feedback(request_id="never-issued", label=1)])
    await svc.logbook.flush()

    assert refused.value.field == "request_id"
    assert svc.publisher.sent == []


async def test_no_feedback_at_all_is_invalid(svc: Serving) -> None:
    with pytest.raises(InvalidInput):
        svc.scorer.record_feedback([])


async def test_once_started_the_libraries_and_models_are_out_of_the_collectors_sight(svc: Serving) -> None:
    # A full collection walked them all, on the event loop, every few seconds under load: serving's p99.
    gc.unfreeze()
    await svc.register(classifier_file(seed=1))

    await svc.loader.sync_all()

    assert svc.host.get("churn").version == 1
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] >= 20_000  # a young collection per 700 objects caught every request in flight


@pytest.mark.parametrize("probabilities", [[0.25, 0.75], None])
@pytest.mark.parametrize("moment", [datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)])
def test_a_prediction_is_logged_as_the_json_of_its_prediction_record(probabilities, moment):
    values = {"request_id": "r-1", "timestamp": moment, "inputs": {"usage": 1.5, "plan": None}, "prediction": "yes"}

    logged = json_record(prediction_fields(*values.values(), probabilities, "canary"))

    # A field added to PredictionRecord must be added to prediction_fields too.
    record = PredictionRecord(**values, probabilities=probabilities, route="canary")
    assert logged == record.model_dump_json().encode()
    assert PredictionRecord.model_validate_json(logged) == record
