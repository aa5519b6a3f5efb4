"""Prediction traffic for the fault scenarios: clients asking serving for one rainfall prediction at a time,
remembering every request id serving answered (what the checker then looks for in the prediction log)."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import Counter
from dataclasses import dataclass, field

import httpx

from mloop_cli.demo import TARGET, load_rainfall
from tests.conftest import eventually
from tests.faults.invariants import Observed

# Days the model was trained on, shuffled: a window of them looks like the training data (consecutive days
# would be one season, which drift rightly calls a shift), so no retraining starts mid-scenario.
INSTANCES: list[dict[str, object]] = json.loads(
    load_rainfall().drop(columns=[TARGET]).iloc[:3000].sample(frac=1.0, random_state=7).to_json(orient="records")
)


@dataclass
class Traffic:
    """``clients`` loops of one prediction each, ``pause`` seconds apart (0: as fast as serving answers)."""

    url: str
    model: str
    headers: dict[str, str]
    clients: int = 4
    pause: float = 0.0
    answered: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # no answer: serving restarting (connection refused...)
    failed: list[str] = field(default_factory=list)  # an answer other than 200
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> Traffic:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        """Stop sending and wait for the answers in flight, so ``answered`` is complete."""
        self._stop.set()
        if self._task is not None:
            await self._task

    async def grows(self, by: int, timeout: float = 120) -> None:
        """Wait until ``by`` more predictions were answered."""
        target = len(self.answered) + by
        await eventually(lambda: len(self.answered) >= target, timeout=timeout, interval=0.05)

    def statuses(self) -> str:
        """The answers other than 200, counted by status."""
        counts = Counter(f.split(" ", 1)[0] for f in self.failed)
        return ", ".join(f"{status} x{n}" for status, n in sorted(counts.items())) or "none"

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.url, timeout=30, headers=self.headers) as http:
            await asyncio.gather(*(self._client(http, offset) for offset in range(self.clients)))

    async def _client(self, http: httpx.AsyncClient, offset: int) -> None:
        for instance in itertools.islice(itertools.cycle(INSTANCES), offset * 97, None):
            if self._stop.is_set():
                return
            try:
                response = await http.post(f"/v1/models/{self.model}:predict", json={"instances": [instance]})
            except httpx.TransportError as exc:
                self.refused.append(repr(exc))
                await asyncio.sleep(0.2)
                continue
            if response.status_code == 200:
                self.answered += response.json()["request_ids"]
            else:
                self.failed.append(f"{response.status_code} {response.text[:200]}")
                await asyncio.sleep(0.2)
            if self.pause:
                await asyncio.sleep(self.pause)


def logged_once_of(observed: Observed, request_ids: list[str]) -> int:
    """How many of ``request_ids`` are in exactly one predictions.logged event (redeliveries of it aside)."""
    logged = Counter(r["request_id"] for e in observed.distinct("predictions.logged") for r in e.data["records"])
    return sum(1 for request_id in request_ids if logged[request_id] == 1)
