"""Off-request-path batching of prediction and feedback records into events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable

from prometheus_client import Counter, Gauge

from mloop_common.events import FeedbackReceived, FeedbackRecord, Payload, PredictionRecord, PredictionsLogged

log = logging.getLogger(__name__)

Publish = Callable[[Payload, str], Awaitable[None]]
PENDING = Gauge("mloop_serving_log_pending_records", "Prediction/feedback records waiting to be published")
DROPPED = Counter("mloop_serving_log_dropped_records_total", "Records dropped because the log buffer was full")


class RequestIndex:
    """Which model and version answered a request id (bounded, oldest forgotten first)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[str, int]] = OrderedDict()

    def add(self, request_id: str, model: str, version: int) -> None:
        self._entries[request_id] = (model, version)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def get(self, request_id: str) -> tuple[str, int] | None:
        return self._entries.get(request_id)


class Logbook:
    """Buffers records and publishes them in batches every ``interval`` seconds or ``batch_size`` records."""

    def __init__(
        self, publish: Publish, *, batch_size: int = 500, interval: float = 0.5, capacity: int = 200_000
    ) -> None:
        self._publish = publish
        self._batch_size = batch_size
        self._interval = interval
        self._capacity = capacity
        self._predictions: dict[tuple[str, int], list[PredictionRecord]] = defaultdict(list)
        self._feedback: dict[str, list[FeedbackRecord]] = defaultdict(list)
        self._size = 0
        self._full = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def log_predictions(self, model: str, version: int, records: list[PredictionRecord]) -> None:
        self._add(self._predictions[(model, version)], records)

    def log_feedback(self, model: str, records: list[FeedbackRecord]) -> None:
        self._add(self._feedback[model], records)

    def _add(self, bucket: list, records: list) -> None:  # type: ignore[type-arg]
        room = self._capacity - self._size
        if room < len(records):
            DROPPED.inc(len(records) - max(room, 0))
            log.error("log buffer full: dropping %d records (Kafka unreachable?)", len(records) - max(room, 0))
            records = records[: max(room, 0)]
        bucket.extend(records)
        self._size += len(records)
        PENDING.set(self._size)
        if self._size >= self._batch_size:
            self._full.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-logbook")

    async def stop(self) -> None:
        """Flush what is buffered, then stop."""
        self._stopping = True
        self._full.set()
        if self._task:
            await self._task
        await self.flush()

    async def flush(self) -> None:
        predictions, self._predictions = self._predictions, defaultdict(list)
        feedback, self._feedback = self._feedback, defaultdict(list)
        self._size = 0
        PENDING.set(0)
        try:
            for (model, version), records in predictions.items():
                for start in range(0, len(records), self._batch_size):
                    chunk = records[start : start + self._batch_size]
                    await self._publish(PredictionsLogged(model=model, version=version, records=chunk), model)
            for model, records in feedback.items():
                for start in range(0, len(records), self._batch_size):
                    chunk = records[start : start + self._batch_size]
                    await self._publish(FeedbackReceived(model=model, records=chunk), model)
        except Exception:
            # Put everything back; the next flush retries (duplicates are possible, loss is not).
            for key, records in predictions.items():
                self._add(self._predictions[key], records)
            for key, records in feedback.items():
                self._add(self._feedback[key], records)
            raise

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._interval)
            self._full.clear()
            if self._size:
                try:
                    await self.flush()
                except Exception as exc:
                    log.warning("publishing the prediction log failed (%r); will retry", exc)
                    await asyncio.sleep(1)
