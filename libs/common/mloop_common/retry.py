"""The one retry policy of mloop: exponential backoff with jitter.

Jitter matters here: six services restarting together after a broker or database outage
would otherwise retry in lockstep and hit the dependency at the same instants.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, stop_never

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delays that double from ``initial`` up to ``maximum``, each drawn from its upper half."""

    initial: float = 0.5
    maximum: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        ceiling = min(self.maximum, self.initial * 2 ** max(attempt - 1, 0))
        return ceiling / 2 + random.uniform(0, ceiling / 2)


async def retry_call(
    action: Callable[[], Awaitable[T]],
    *,
    what: str,
    backoff: Backoff,
    attempts: int | None = None,
    retry_if: Callable[[BaseException], bool] = lambda exc: isinstance(exc, Exception),
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Await ``action()`` until it succeeds; after ``attempts`` failures (None: never) its error propagates.

    Errors for which ``retry_if`` is false propagate at once. ``on_retry(attempt, error)`` hears of each
    failure that will be retried.
    """

    def announce(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        limit = f"/{attempts}" if attempts else ""
        log.warning("%s failed (%r); attempt %d%s, retrying", what, error, state.attempt_number, limit)
        if on_retry is not None and error is not None:
            on_retry(state.attempt_number, error)

    retrying = AsyncRetrying(
        stop=stop_after_attempt(attempts) if attempts else stop_never,
        wait=lambda state: backoff.delay(state.attempt_number),
        retry=retry_if_exception(retry_if),
        before_sleep=announce,
        reraise=True,
    )

    async def attempt() -> T:
        # tenacity awaits only functions it sees as coroutine functions; a lambda returning a
        # coroutine would come back unawaited, so every action is wrapped in one.
        return await action()

    return await retrying(attempt)
