"""Serving HTTP routes: the simple JSON API, feedback and the Open Inference Protocol v2; they only translate."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Response

from mloop_common.http import components
from mloop_serving.bootstrap import ServingService
from mloop_serving.oip import (
    InferRequest,
    InferResponse,
    ModelMetadata,
    ModelReady,
    ModelVersionReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    model_metadata,
)
from mloop_serving.schemas import Feedback, FeedbackReceipt, PredictRequest, PredictResponse

router = APIRouter()
Service = Annotated[ServingService, Depends(components)]


@router.post("/v1/models/{name}:predict", tags=["predict"], response_model_exclude_none=True)
async def predict(service: Service, name: str, request: PredictRequest) -> PredictResponse:
    """Predict for a list of instances (objects of feature values) with the production version."""
    scored = await service.scorer.score(name, request.instances)
    classifier = scored.probabilities is not None
    return PredictResponse(
        predictions=scored.predictions,
        model_version=scored.model.version,
        request_ids=scored.request_ids,
        probabilities=scored.probabilities,
        classes=scored.model.classes if classifier else None,
    )


@router.post("/v1/feedback", status_code=202, tags=["feedback"])
async def feedback(service: Service, body: Annotated[Feedback | list[Feedback], Body()]) -> FeedbackReceipt:
    """Ground-truth labels for earlier predictions, by request id (one object or a list).

    Request ids this process did not answer (or has forgotten since a restart) need ``model``.
    """
    return service.scorer.record_feedback(body if isinstance(body, list) else [body])


# --- Open Inference Protocol v2 --------------------------------------------------------


@router.get("/v2/health/live", tags=["oip"])
async def live() -> ServerLive:
    """OIP server liveness."""
    return ServerLive(live=True)


@router.get("/v2/health/ready", tags=["oip"], responses={503: {"model": ServerReady}})
async def ready(service: Service, response: Response) -> ServerReady:
    """OIP server readiness: production models loaded."""
    if not service.loader.synced:
        response.status_code = 503
    return ServerReady(ready=service.loader.synced)


@router.get("/v2", tags=["oip"])
async def server_metadata(service: Service) -> ServerMetadata:
    """OIP server metadata."""
    return ServerMetadata(name="mloop-serving", version="0.1.0", extensions=[], models=service.host.names())


@router.get("/v2/models/{name}", tags=["oip"])
async def get_model_metadata(service: Service, name: str) -> ModelMetadata:
    """OIP model metadata: inputs (one per feature) and outputs."""
    return model_metadata(service.host.get(name))


@router.get("/v2/models/{name}/versions/{version}", tags=["oip"])
async def get_model_version_metadata(service: Service, name: str, version: int) -> ModelMetadata:
    """OIP model metadata for a specific loaded version."""
    return model_metadata(service.host.get(name, version))


@router.get("/v2/models/{name}/ready", tags=["oip"])
async def model_ready(service: Service, name: str) -> ModelReady:
    """OIP model readiness (a model that is not loaded is 404)."""
    service.host.get(name)
    return ModelReady(name=name, ready=True)


@router.get("/v2/models/{name}/versions/{version}/ready", tags=["oip"])
async def model_version_ready(service: Service, name: str, version: int) -> ModelVersionReady:
    """OIP model-version readiness (a version that is not the loaded one is 404)."""
    service.host.get(name, version)
    return ModelVersionReady(name=name, version=str(version), ready=True)


@router.post("/v2/models/{name}/infer", tags=["oip"])
async def infer_latest(service: Service, name: str, request: InferRequest) -> InferResponse:
    """OIP inference with the production version."""
    return await service.scorer.infer(name, request)


@router.post("/v2/models/{name}/versions/{version}/infer", tags=["oip"])
async def infer_version(service: Service, name: str, version: int, request: InferRequest) -> InferResponse:
    """OIP inference with a specific loaded version."""
    return await service.scorer.infer(name, request, version)
