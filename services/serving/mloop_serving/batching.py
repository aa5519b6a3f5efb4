"""Adaptive micro-batching: concurrent small requests for one model version scored by one call of the model.

A model answers 100 rows in little more time than one (the pipeline's fixed cost per call dominates), so
requests that arrive while the model is busy are gathered and scored together when it is free again: under
load the batch grows by itself, and a lone request is scored at once. Only when the last batch held more
than one request (there is concurrency to gather) does the next one wait for company: in slices of ``quiet``
seconds, for as long as each slice brings more requests, at most ``max_wait`` seconds in all. Scoring runs in a
worker thread, so the event loop keeps reading requests meanwhile.

Why wait that long: the pipeline's Python work holds the GIL, so scoring and the event loop take turns rather
than overlap. Without the wait, the clients answered by one batch come back while the next batch, of those
who were waiting, is scored: two half batches alternate, each paying the pipeline's whole fixed cost (4 ms a
call for a scikit-learn pipeline with a ColumnTransformer). Waiting until arrivals stop merges them.

Each request is checked on its own before it joins a batch; if the batch's scoring fails anyway, its
requests are scored one by one, so one request's failure never becomes another's.

A batch's answers are handed to ``on_scored`` in one call before its requests get them (serving logs them
there): one pass over sixty requests' records cost serving 7 µs of CPU a request where sixty passes, each made
between other work, cost 12.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Histogram

from mloop_serving.host import LoadedModel

BATCH_REQUESTS = Histogram(
    "mloop_serving_batch_requests",
    "Requests scored by one call of the model (micro-batching): under load the fixed cost of a call is shared",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
Answer = tuple[list[Any], list[list[float]] | None]
# Called with a batch's model and, for each request, its note (``predict``'s) and its answer
OnScored = Callable[[LoadedModel, list[tuple[Any, Answer]]], None]


@dataclass
class _Waiting:
    rows: list[list[Any]]
    answer: asyncio.Future[Answer]
    note: Any  # the caller's, handed back with the answer to ``on_scored``


@dataclass
class _Queue:
    model: LoadedModel
    waiting: list[_Waiting] = field(default_factory=list)
    last_batch: int = 0  # requests in the previous batch: more than one means concurrent traffic
    worker: asyncio.Task[None] | None = None


class MicroBatcher:
    """Scores checked rows of one request, together with whatever else is waiting for the same model version."""

    def __init__(
        self,
        *,
        max_wait: float = 0.003,
        quiet: float = 0.0007,
        max_rows: int = 256,
        on_scored: OnScored | None = None,
    ) -> None:
        self.max_wait = max_wait
        self.quiet = min(quiet, max_wait)
        self.max_rows = max_rows
        self.on_scored = on_scored
        self._queues: dict[int, _Queue] = {}  # by id(model): a swapped-in version gets a queue of its own

    async def predict(self, model: LoadedModel, rows: list[list[Any]], note: Any = None) -> Answer:
        """The answer for ``rows``; ``note`` goes with it to ``on_scored`` first."""
        queue = self._queues.get(id(model))
        if queue is None or queue.model is not model:
            queue = self._queues[id(model)] = _Queue(model)
        answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        queue.waiting.append(_Waiting(rows, answer, note))
        if queue.worker is None:
            queue.worker = asyncio.create_task(self._work(queue), name=f"batch-{model.name}-v{model.version}")
        return await answer

    async def _work(self, queue: _Queue) -> None:
        try:
            while queue.waiting:
                if queue.last_batch > 1 and self.max_wait > 0:
                    await self._gather(queue)
                batch = self._take(queue)
                queue.last_batch = len(batch)
                await self._score(queue.model, batch)
        except BaseException:  # a bug or a shutdown: nobody may wait for an answer that will not come
            for waiting in queue.waiting:
                waiting.answer.cancel()
            queue.waiting.clear()
            raise
        finally:
            queue.worker = None
            if not queue.waiting and self._queues.get(id(queue.model)) is queue:
                del self._queues[id(queue.model)]

    async def _gather(self, queue: _Queue) -> None:
        """Wait while requests keep joining: until a ``quiet`` slice brings none, ``max_wait`` passes or the
        batch is full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        waiting = len(queue.waiting)
        while (left := deadline - loop.time()) > 0 and sum(len(w.rows) for w in queue.waiting) < self.max_rows:
            await asyncio.sleep(min(self.quiet, left))
            if len(queue.waiting) == waiting:
                return
            waiting = len(queue.waiting)

    def _take(self, queue: _Queue) -> list[_Waiting]:
        """The oldest waiting requests, up to ``max_rows`` rows (always at least one request)."""
        taken, rows = 0, 0
        for waiting in queue.waiting:
            if taken and rows + len(waiting.rows) > self.max_rows:
                break
            taken += 1
            rows += len(waiting.rows)
        batch, queue.waiting[:] = queue.waiting[:taken], queue.waiting[taken:]
        return batch

    async def _score(self, model: LoadedModel, batch: list[_Waiting]) -> None:
        live = [w for w in batch if not w.answer.done()]  # a client gone (cancelled) needs no answer
        if not live:
            return
        rows = [row for waiting in live for row in waiting.rows]
        BATCH_REQUESTS.labels(model.name).observe(len(live))
        try:
            predictions, probabilities = await asyncio.to_thread(_predict, model, rows)
        except Exception as exc:
            if len(live) == 1:
                if not live[0].answer.done():
                    live[0].answer.set_exception(exc)
                return
            for waiting in live:  # alone, so the failure stays with the request that causes it
                await self._score(model, [waiting])
            return
        answered: list[tuple[_Waiting, Answer]] = []
        start = 0
        for waiting in live:
            end = start + len(waiting.rows)
            if not waiting.answer.done():  # a client gone while its batch was scored gets, and logs, nothing
                part = (predictions[start:end], probabilities[start:end] if probabilities is not None else None)
                answered.append((waiting, part))
            start = end
        if self.on_scored is not None:
            try:
                self.on_scored(model, [(waiting.note, part) for waiting, part in answered])
            except Exception as exc:  # as if each request had failed on its own
                for waiting, _ in answered:
                    waiting.answer.set_exception(exc)
                return
        for waiting, part in answered:
            waiting.answer.set_result(part)


def _predict(model: LoadedModel, rows: list[list[Any]]) -> Answer:
    return model.predict(model.frame_of(rows))
