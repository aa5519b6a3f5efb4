"""Serving API: a simple JSON predict API, the Open Inference Protocol v2, and feedback."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mloop_common.clients import RegistryClient
from mloop_common.errors import InvalidInput, NotFound
from mloop_common.events import FeedbackRecord, Payload, PredictionRecord, Topic, new_event
from mloop_common.http import create_app
from mloop_common.runtime import Runtime
from mloop_common.settings import build_settings
from mloop_serving.config import ServingSettings
from mloop_serving.host import LoadedModel, ModelHost
from mloop_serving.loader import Loader
from mloop_serving.logbook import Logbook, RequestIndex
from mloop_serving.oip import InferRequest, datatype_of, oip_instances

SOURCE = "mloop/serving"
INLINE_ROWS = 64  # bigger batches are predicted in a thread so the event loop keeps serving


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instances: list[dict[str, Any]] = Field(min_length=1)


class Feedback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    request_id: str = Field(min_length=1, max_length=100)
    label: Any
    # Lets a label through when this process does not remember the request (a restart, another replica).
    model: str | None = Field(None, min_length=1, max_length=63)


def create_serving_app() -> tuple[FastAPI, ServingSettings]:
    common, settings = build_settings("serving", ServingSettings, uses_database=False)
    runtime = Runtime("serving", common, settings, migrations=None, uses_database=False)
    host = ModelHost()
    requests = RequestIndex()
    registry = RegistryClient(common.registry_url, actor="serving")
    loader = Loader(host, registry, runtime.artifacts)

    async def publish(payload: Payload, subject: str) -> None:
        await runtime.producer.publish(new_event(payload, source=SOURCE, subject=subject))

    logbook = Logbook(publish, batch_size=settings.log_batch_size, interval=settings.log_interval_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.consume([Topic.MODEL_PROMOTED], loader.on_model_promoted, group_suffix=f"-{settings.instance_id}")
        await runtime.start(app)
        await logbook.start()
        sync = asyncio.create_task(_initial_sync())
        app.state.checks["models"] = _models_ready
        yield
        sync.cancel()
        await logbook.stop()
        await runtime.stop()
        await registry.aclose()

    async def _initial_sync() -> None:
        while True:
            try:
                await loader.sync_all()
                return
            except Exception:
                await asyncio.sleep(1)  # the registry may start after us

    async def _models_ready() -> bool | str:
        return True if loader.synced else "production models not loaded yet"

    app = create_app(
        service="serving",
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
        description="Predictions from the production version of each model (simple JSON API and "
        "Open Inference Protocol v2), and ground-truth feedback.",
    )

    async def score(
        model: LoadedModel, instances: list[dict[str, Any]]
    ) -> tuple[list[Any], list[list[float]] | None, list[str]]:
        if len(instances) > settings.max_instances:
            raise InvalidInput(f"at most {settings.max_instances} instances per request", field="instances")
        frame = model.frame(instances)
        if len(instances) <= INLINE_ROWS:
            predictions, probabilities = model.predict(frame)
        else:
            predictions, probabilities = await asyncio.to_thread(model.predict, frame)
        now = datetime.now(UTC)
        request_ids = [uuid.uuid4().hex for _ in instances]
        records = []
        for i, request_id in enumerate(request_ids):
            requests.add(request_id, model.name, model.version)
            records.append(
                PredictionRecord(
                    request_id=request_id,
                    timestamp=now,
                    inputs=instances[i],
                    prediction=predictions[i],
                    probabilities=probabilities[i] if probabilities else None,
                )
            )
        logbook.log_predictions(model.name, model.version, records)
        return predictions, probabilities, request_ids

    @app.post("/v1/models/{name}:predict", tags=["predict"])
    async def predict(name: str, request: PredictRequest) -> dict[str, Any]:
        """Predict for a list of instances (objects of feature values) with the production version."""
        model = host.get(name)
        predictions, probabilities, request_ids = await score(model, request.instances)
        body: dict[str, Any] = {"predictions": predictions, "model_version": model.version, "request_ids": request_ids}
        if probabilities is not None:
            body["probabilities"] = probabilities
            body["classes"] = model.classes
        return body

    @app.post("/v1/feedback", status_code=202, tags=["feedback"])
    async def feedback(body: Annotated[Feedback | list[Feedback], Body()]) -> JSONResponse:
        """Ground-truth labels for earlier predictions, by request id (one object or a list).

        Request ids this process did not answer (or has forgotten since a restart) need ``model``.
        """
        items = body if isinstance(body, list) else [body]
        if not items:
            raise InvalidInput("no feedback given", field="body")
        now = datetime.now(UTC)
        unknown, by_model = [], {}
        for item in items:
            owner = requests.get(item.request_id)
            model_name = owner[0] if owner else item.model
            if model_name is None:
                unknown.append(item.request_id)
                continue
            by_model.setdefault(model_name, []).append(
                FeedbackRecord(request_id=item.request_id, label=item.label, timestamp=now)
            )
        if unknown and not by_model:
            raise NotFound(f"unknown request id(s): {unknown[:10]}", field="request_id")
        for model, records in by_model.items():
            logbook.log_feedback(model, records)
        return JSONResponse({"accepted": len(items) - len(unknown), "unknown": unknown}, status_code=202)

    # --- Open Inference Protocol v2 --------------------------------------------------------

    @app.get("/v2/health/live", tags=["oip"])
    async def live() -> dict[str, bool]:
        """OIP server liveness."""
        return {"live": True}

    @app.get("/v2/health/ready", tags=["oip"])
    async def ready() -> JSONResponse:
        """OIP server readiness: production models loaded."""
        return JSONResponse({"ready": loader.synced}, status_code=200 if loader.synced else 503)

    @app.get("/v2", tags=["oip"])
    async def server_metadata() -> dict[str, Any]:
        """OIP server metadata."""
        return {"name": "mloop-serving", "version": "0.1.0", "extensions": [], "models": host.names()}

    def metadata(model: LoadedModel) -> dict[str, Any]:
        outputs = [
            {"name": "predict", "datatype": datatype_of(model.classes) if model.classes else "FP64", "shape": [-1]}
        ]
        if model.task == "classification":
            outputs.append({"name": "predict_proba", "datatype": "FP64", "shape": [-1, len(model.classes)]})
        return {
            "name": model.name,
            "versions": [str(model.version)],
            "platform": "sklearn",
            "inputs": [
                {"name": f, "datatype": "FP64" if model.kinds.get(f) == "numeric" else "BYTES", "shape": [-1]}
                for f in model.features
            ],
            "outputs": outputs,
        }

    @app.get("/v2/models/{name}", tags=["oip"])
    async def model_metadata(name: str) -> dict[str, Any]:
        """OIP model metadata: inputs (one per feature) and outputs."""
        return metadata(host.get(name))

    @app.get("/v2/models/{name}/versions/{version}", tags=["oip"])
    async def model_version_metadata(name: str, version: int) -> dict[str, Any]:
        """OIP model metadata for a specific loaded version."""
        return metadata(host.get(name, version))

    @app.get("/v2/models/{name}/ready", tags=["oip"])
    async def model_ready(name: str) -> dict[str, Any]:
        """OIP model readiness."""
        return {"name": name, "ready": host.get(name) is not None}

    @app.get("/v2/models/{name}/versions/{version}/ready", tags=["oip"])
    async def model_version_ready(name: str, version: int) -> dict[str, Any]:
        """OIP model-version readiness."""
        return {"name": name, "version": str(version), "ready": host.get(name, version) is not None}

    async def infer(model: LoadedModel, request: InferRequest) -> dict[str, Any]:
        predictions, probabilities, request_ids = await score(model, oip_instances(request, model))
        outputs = [
            {"name": "predict", "shape": [len(predictions)], "datatype": datatype_of(predictions), "data": predictions}
        ]
        if probabilities is not None:
            outputs.append(
                {
                    "name": "predict_proba",
                    "shape": [len(probabilities), len(model.classes)],
                    "datatype": "FP64",
                    "data": [p for row in probabilities for p in row],
                }
            )
        wanted = {o.get("name") for o in request.outputs or []}
        if wanted:
            outputs = [o for o in outputs if o["name"] in wanted]
        return {
            "model_name": model.name,
            "model_version": str(model.version),
            "id": request.id or request_ids[0],
            "outputs": outputs,
            "parameters": {"request_ids": request_ids},
        }

    @app.post("/v2/models/{name}/infer", tags=["oip"])
    async def infer_latest(name: str, request: InferRequest) -> dict[str, Any]:
        """OIP inference with the production version."""
        return await infer(host.get(name), request)

    @app.post("/v2/models/{name}/versions/{version}/infer", tags=["oip"])
    async def infer_version(name: str, version: int, request: InferRequest) -> dict[str, Any]:
        """OIP inference with a specific loaded version."""
        return await infer(host.get(name, version), request)

    return app, settings
