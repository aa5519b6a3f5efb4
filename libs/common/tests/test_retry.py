import pytest

from mloop_common.retry import Backoff, retry_call


def test_backoff_doubles_up_to_its_maximum_with_jitter():
    backoff = Backoff(initial=1.0, maximum=8.0)

    delays = {attempt: [backoff.delay(attempt) for _ in range(200)] for attempt in (1, 2, 3, 4, 10)}

    assert all(0.5 <= d <= 1.0 for d in delays[1])
    assert all(1.0 <= d <= 2.0 for d in delays[2])
    assert all(4.0 <= d <= 8.0 for d in delays[10])
    assert len({round(d, 6) for d in delays[3]}) > 100  # jittered, not one fixed delay


async def test_retry_call_retries_until_the_action_succeeds():
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("not yet")
        return "done"

    result = await retry_call(flaky, what="flaky", backoff=Backoff(0.001, 0.002), attempts=5)

    assert result == "done"
    assert len(calls) == 3


async def test_retry_call_gives_up_after_its_attempts_with_the_last_error():
    calls = []

    async def broken() -> None:
        calls.append(1)
        raise ConnectionError(f"attempt {len(calls)}")

    with pytest.raises(ConnectionError, match="attempt 4"):
        await retry_call(broken, what="broken", backoff=Backoff(0.001, 0.002), attempts=4)
    assert len(calls) == 4


async def test_an_error_the_policy_does_not_retry_propagates_at_once():
    calls = []

    async def refused() -> None:
        calls.append(1)
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        await retry_call(
            refused,
            what="refused",
            backoff=Backoff(0.001, 0.002),
            attempts=5,
            retry_if=lambda exc: isinstance(exc, ConnectionError),
        )
    assert calls == [1]


async def test_an_action_given_as_a_lambda_returning_a_coroutine_is_awaited():
    calls = []

    async def work(value: int) -> int:
        calls.append(value)
        return value * 2

    assert await retry_call(lambda: work(21), what="lambda", backoff=Backoff(0.001, 0.002), attempts=2) == 42
    assert calls == [21]
