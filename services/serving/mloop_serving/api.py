"""Serving HTTP routes: the simple JSON API, feedback and the Open Inference Protocol v2; they only translate."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from mloop_common.auth import Permission
from mloop_common.errors import Forbidden, InvalidInput, MloopError, NotFound
from mloop_common.http import caller
from mloop_common.jsoncodec import json_record
from mloop_serving.bootstrap import ServingService
from mloop_serving.handlers import Scored, ScoredCall, encode_answer
from mloop_serving.oip import (
    EXTENSIONS,
    INFERENCE_HEADER,
    ErrorBody,
    InferCall,
    InferRequestDoc,
    InferResponseDoc,
    ModelMetadata,
    ModelReady,
    ModelVersionReady,
    ServerLive,
    ServerMetadata,
    ServerReady,
    model_metadata,
    parse_infer_request,
)
from mloop_serving.schemas import Feedback, FeedbackReceipt, PredictRequest, PredictResponse

log = logging.getLogger(__name__)
router = APIRouter()


async def components(request: Request) -> ServingService:
    """The running service's components. Async on purpose: FastAPI runs a plain function dependency in a worker
    thread, a hand-off that cost more than the rest of a single-row prediction."""
    service: ServingService = request.app.state.service
    return service


Service = Annotated[ServingService, Depends(components)]
VersionNumber = Annotated[int, Path(ge=1, le=2**31 - 1)]


# Requests with the same routing key take the same route (canary or production); without one, the first
# request id is the key, which spreads anonymous traffic by the canary's share.
ROUTING_KEY_MAX = 200
RoutingKey = Annotated[str | None, Header(alias="X-Mloop-Routing-Key", max_length=ROUTING_KEY_MAX)]
Log = Annotated[
    bool,
    Query(description="false: answer without logging the predictions (batch scoring); needs predict-unlogged"),
]
VERSION_HEADER = "X-Mloop-Model-Version"
ROUTE_HEADER = "X-Mloop-Route"


Endpoint = Callable[..., Coroutine[Any, Any, Response]]


def _predict_route(path: str) -> Callable[[Endpoint], Endpoint]:
    """A predict route: it answers with ``prediction_response``, documented as ``PredictResponse``."""
    return router.post(path, tags=["predict"], response_model=PredictResponse, response_model_exclude_none=True)


@_predict_route("/v1/models/{name}:predict")
async def predict(
    service: Service, name: str, request: PredictRequest, http: Request, key: RoutingKey = None, log: Log = True
) -> Response:
    """Predict for a list of instances (objects of feature values) with production, or its canary for its share.

    ``X-Mloop-Routing-Key`` makes a client sticky: the same key always takes the same route.
    """
    scored = await service.scorer.score(name, request.instances, key=key, log=log or may_skip_logging(http))
    return prediction_response(scored)


@_predict_route("/v1/models/{name}/versions/{version}:predict")
async def predict_version(
    service: Service, name: str, version: VersionNumber, request: PredictRequest, http: Request, log: Log = True
) -> Response:
    """Predict with a loaded version named by number (production or a challenger, canary or shadow beside it)."""
    scored = await service.scorer.score(name, request.instances, version, log=log or may_skip_logging(http))
    return prediction_response(scored)


@_predict_route("/v1/models/{name}/aliases/{alias}:predict")
async def predict_alias(
    service: Service, name: str, alias: str, request: PredictRequest, http: Request, log: Log = True
) -> Response:
    """Predict with the version an alias names here (``production``, ``canary``, ``shadow``, ``challenger``)."""
    scored = await service.scorer.score(name, request.instances, alias=alias, log=log or may_skip_logging(http))
    return prediction_response(scored)


def may_skip_logging(http: Request) -> bool:
    """False (log nothing), once the caller may turn logging off: unlogged predictions are invisible to drift
    and the audit trail, so only roles with ``predict-unlogged`` may ask."""
    principal = caller(http)
    if not principal.allows(Permission.PREDICT_UNLOGGED):
        raise Forbidden(
            f"role {principal.role!r} may not predict with log=false: that needs "
            f"{Permission.PREDICT_UNLOGGED.value!r} (data-scientist or admin)",
            field="log",
        )
    return False


def answer_headers(version: int, route: str) -> tuple[tuple[str, str], ...]:
    """The headers naming the version that answered and how it was chosen (both APIs)."""
    return (VERSION_HEADER, str(version)), (ROUTE_HEADER, route)


def prediction_response(scored: Scored) -> Response:
    """The answer to a predict request: ``PredictResponse``'s JSON without its None fields, encoded from the
    fields (building and dumping the model cost 5 µs a request), and the headers naming who answered."""
    answer: dict[str, Any] = {
        "predictions": scored.predictions,
        "model_version": scored.model.version,
        "route": scored.route,
        "request_ids": scored.request_ids,
    }
    if scored.probabilities is not None:
        answer["probabilities"] = scored.probabilities
        answer["classes"] = scored.model.classes
    response = Response(json_record(answer), media_type="application/json")
    for header, value in answer_headers(scored.model.version, scored.route):
        response.headers.raw.append((header.lower().encode("latin-1"), value.encode("latin-1")))
    return response


@router.post("/v1/feedback", status_code=202, tags=["feedback"])
async def feedback(service: Service, body: Annotated[Feedback | list[Feedback], Body()]) -> FeedbackReceipt:
    """Ground-truth labels for earlier predictions, by request id (one object or a list).

    Request ids this process did not answer (or has forgotten since a restart) need ``model``.
    """
    return service.scorer.record_feedback(body if isinstance(body, list) else [body])


# --- Open Inference Protocol v2 --------------------------------------------------------


class OipRoute(APIRoute):
    """A protocol route: errors are ``{"error": "<message>"}`` (400 bad input, 404 unknown model or version).

    The rest of the service keeps mloop's richer error objects; OIP clients (Triton's, KServe's) read
    only this shape.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except InvalidInput as exc:
                return JSONResponse({"error": exc.message}, 400)
            except MloopError as exc:
                if exc.status_code >= 500:
                    log.error("%s: %s", type(exc).__name__, exc.message)
                return JSONResponse({"error": exc.message}, exc.status_code)
            except Exception as exc:
                return unexpected_oip_error(exc)

        return answer


def unexpected_oip_error(exc: Exception) -> JSONResponse:
    """A protocol route's answer to an error nobody expected (logged with its traceback): 500, its type named."""
    log.error("unhandled error", exc_info=exc)
    return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, 500)


oip_router = APIRouter(
    route_class=OipRoute, tags=["oip"], responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}}
)
_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/InferRequestDoc"}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": f"JSON request, then binary tensor data; {INFERENCE_HEADER} gives the JSON's length",
            },
        },
    }
}


def _version(name: str, version: str) -> int:
    """An OIP version string as mloop's version number; anything else names no loaded version."""
    if not version.isdigit():
        raise NotFound(f"model {name!r} has no version {version!r}")
    return int(version)


@oip_router.get("/v2/health/live")
async def live() -> ServerLive:
    """OIP server liveness."""
    return ServerLive(live=True)


@oip_router.get("/v2/health/ready", responses={503: {"model": ServerReady}})
async def ready(service: Service, response: Response) -> ServerReady:
    """OIP server readiness: production models loaded."""
    if not service.loader.synced:
        response.status_code = 503
    return ServerReady(ready=service.loader.synced)


@oip_router.get("/v2")
async def server_metadata(service: Service) -> ServerMetadata:
    """OIP server metadata."""
    return ServerMetadata(name="mloop-serving", version="0.1.0", extensions=EXTENSIONS, models=service.host.names())


@oip_router.get("/v2/models/{name}")
async def get_model_metadata(service: Service, name: str) -> ModelMetadata:
    """OIP model metadata: inputs (one per feature) and outputs."""
    return model_metadata(service.host.get(name))


@oip_router.get("/v2/models/{name}/versions/{version}")
async def get_model_version_metadata(service: Service, name: str, version: str) -> ModelMetadata:
    """OIP model metadata for a specific loaded version."""
    return model_metadata(service.host.get(name, _version(name, version)))


@oip_router.get("/v2/models/{name}/ready")
async def model_ready(service: Service, name: str) -> ModelReady:
    """OIP model readiness (a model that is not loaded is 404)."""
    service.host.get(name)
    return ModelReady(name=name, ready=True)


@oip_router.get("/v2/models/{name}/versions/{version}/ready")
async def model_version_ready(service: Service, name: str, version: str) -> ModelVersionReady:
    """OIP model-version readiness (a version that is not loaded is 404)."""
    service.host.get(name, _version(name, version))
    return ModelVersionReady(name=name, version=version, ready=True)


@oip_router.post("/v2/models/{name}/infer", response_model=InferResponseDoc, openapi_extra=_INFER_BODY)
async def infer_latest(service: Service, name: str, request: Request) -> Response:
    """OIP inference with production (or its canary, by ``X-Mloop-Routing-Key`` or the request ``id``); JSON or
    binary tensor data, whatever the content type. The ``route`` response parameter says how it was chosen."""
    return await _infer(service, name, request, None)


@oip_router.post(
    "/v2/models/{name}/versions/{version}/infer", response_model=InferResponseDoc, openapi_extra=_INFER_BODY
)
async def infer_version(service: Service, name: str, version: str, request: Request) -> Response:
    """OIP inference with a specific loaded version."""
    return await _infer(service, name, request, _version(name, version))


async def _infer(service: ServingService, name: str, request: Request, version: int | None) -> Response:
    # The body is read as bytes: Triton's client sends no Content-Type, and binary tensors follow the JSON.
    call = parse_infer_request(await request.body(), request.headers.get(INFERENCE_HEADER))
    return await infer_answer(service, name, call, version, request.headers.get("X-Mloop-Routing-Key"))


async def infer_answer(
    service: ServingService, name: str, call: InferCall, version: int | None, key: str | None
) -> Response:
    """A checked inference request scored and answered."""
    return infer_response(call, await service.scorer.score_call(name, call, version, key=key))


def infer_response(call: InferCall, scored: ScoredCall) -> Response:
    """The answer to a scored inference request (the route's and the fast path's)."""
    encoded = encode_answer(call, scored)
    routed = scored.routed
    return Response(
        encoded.body, headers={**encoded.headers, **dict(answer_headers(routed.model.version, routed.route))}
    )


router.include_router(oip_router)


def configure_oip(app: FastAPI) -> None:
    """What the protocol needs beyond its routes: errors raised before a route runs (413, unknown path) in its
    shape, and the infer request's schema in the OpenAPI document (the route reads raw bytes, so FastAPI
    cannot learn it from a parameter)."""
    app.state.plain_error_prefixes = ("/v2",)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = build()
            schema = InferRequestDoc.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(schema.pop("$defs", {}))
            schemas["InferRequestDoc"] = schema
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]
