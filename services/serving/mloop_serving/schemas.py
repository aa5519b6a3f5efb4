"""The simple JSON API's bodies: predict requests and answers, feedback and its receipt."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instances: list[dict[str, Any]] = Field(min_length=1)


class PredictResponse(BaseModel):
    """One prediction and one request id per instance; ``probabilities`` and ``classes`` for classifiers only."""

    predictions: list[Any]
    model_version: int = Field(description="the version that answered")
    route: str = Field(description="how it was chosen: champion, canary, or challenger (a version named by the client)")
    request_ids: list[str]
    probabilities: list[list[float]] | None = None
    classes: list[Any] | None = Field(None, description="the column order of probabilities")


class Feedback(BaseModel):
    """The ground-truth label of an earlier prediction."""

    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=100)
    label: Any
    # Lets a label through when this process does not remember the request (a restart, another replica).
    model: str | None = Field(None, min_length=1, max_length=63)


class FeedbackReceipt(BaseModel):
    accepted: int
    unknown: list[str] = Field(description="request ids neither remembered here nor sent with their model")
