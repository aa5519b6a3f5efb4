import asyncio
import threading

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from mloop_serving.batching import MicroBatcher
from mloop_serving.bootstrap import counter_ids
from mloop_serving.host import LoadedModel

FEATURES = ["usage", "calls"]


def fitted(estimator=None):
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"usage": rng.normal(size=200), "calls": rng.normal(size=200)})
    y = np.where(X["usage"] - X["calls"] > 0, "yes", "no")
    return Pipeline([("impute", SimpleImputer()), ("model", estimator or LogisticRegression())]).fit(X, y)


class Counting:
    """An estimator wrapper counting calls, failing on a poisoned value (as a broken input might)."""

    def __init__(self, inner, poison: float | None = None):
        self.inner, self.poison, self.calls = inner, poison, 0
        self.classes_ = inner.classes_

    def predict_proba(self, frame):
        self.calls += 1
        if self.poison is not None and (frame["usage"] == self.poison).any():
            raise ValueError("poisoned row")
        return self.inner.predict_proba(frame)

    def predict(self, frame):
        return self.inner.predict(frame)


def model(estimator) -> LoadedModel:
    return LoadedModel("churn", 1, "classification", FEATURES, dict.fromkeys(FEATURES, "numeric"), estimator)


def rows(count: int, seed: int = 0) -> list[list[float]]:
    return np.random.default_rng(seed).normal(size=(count, 2)).round(3).tolist()


async def test_concurrent_requests_each_get_their_own_answer_from_fewer_model_calls():
    estimator = Counting(fitted())
    served, batcher = model(estimator), MicroBatcher(max_wait=0.001)
    requests = [rows(1 + i % 3, seed=i) for i in range(40)]

    answers = await asyncio.gather(*(batcher.predict(served, r) for r in requests))

    assert estimator.calls < len(requests)  # scored together
    for request, (predictions, probabilities) in zip(requests, answers, strict=True):
        alone_predictions, alone_probabilities = served.predict(served.frame_of(request))
        assert predictions == alone_predictions
        # the same to the last bits or so: BLAS may sum in another order for a larger matrix
        assert probabilities == [pytest.approx(p, rel=1e-12, abs=1e-15) for p in alone_probabilities]


async def test_a_lone_request_is_answered_without_waiting_for_company():
    served = model(fitted())
    batcher = MicroBatcher(max_wait=10.0)  # a wait this long would time the test out

    predictions, _ = await asyncio.wait_for(batcher.predict(served, [[3.0, -3.0]]), 5)

    assert predictions == ["yes"]


class Held(Counting):
    """Scores only once released, so a test decides what arrives while a batch is being scored."""

    def __init__(self, inner):
        super().__init__(inner)
        self.release = threading.Event()

    def predict_proba(self, frame):
        self.release.wait(10)
        return super().predict_proba(frame)


async def test_requests_arriving_while_a_batch_gathers_join_it_until_arrivals_stop():
    estimator = Held(fitted())
    served = model(estimator)
    batcher = MicroBatcher(max_wait=30.0, quiet=1.0)  # arrivals 0.05 s apart keep it gathering; 30 s never ends it
    first = [asyncio.create_task(batcher.predict(served, rows(1, seed=i))) for i in range(2)]
    await asyncio.sleep(0.05)  # the first two are being scored together: there is concurrency
    later = [asyncio.create_task(batcher.predict(served, rows(1, seed=2)))]
    estimator.release.set()
    for seed in range(3, 6):
        await asyncio.sleep(0.05)
        later.append(asyncio.create_task(batcher.predict(served, rows(1, seed=seed))))

    answers = await asyncio.wait_for(asyncio.gather(*first, *later), 20)

    assert estimator.calls == 2  # the first two, then the four that came while the second batch gathered
    assert all(len(predictions) == 1 for predictions, _ in answers)


async def test_a_gathering_batch_goes_once_a_quiet_slice_brings_no_one():
    estimator = Held(fitted())
    served = model(estimator)
    batcher = MicroBatcher(max_wait=30.0, quiet=0.01)  # waiting 30 s would time the test out
    first = [asyncio.create_task(batcher.predict(served, rows(1, seed=i))) for i in range(2)]
    await asyncio.sleep(0.05)
    second = asyncio.create_task(batcher.predict(served, rows(1, seed=2)))
    estimator.release.set()

    await asyncio.wait_for(asyncio.gather(*first, second), 5)

    assert estimator.calls == 2


async def test_a_request_that_fails_the_model_fails_alone():
    served = model(Counting(fitted(), poison=7.5))
    batcher = MicroBatcher(max_wait=0.001)

    results = await asyncio.gather(
        *(batcher.predict(served, [[float(i), 0.0]]) for i in range(5)),
        batcher.predict(served, [[7.5, 0.0]]),
        *(batcher.predict(served, [[-float(i), 0.0]]) for i in range(1, 5)),
        return_exceptions=True,
    )

    failed = [r for r in results if isinstance(r, Exception)]
    assert len(failed) == 1 and str(failed[0]) == "poisoned row"
    assert isinstance(results[5], ValueError)
    assert all(isinstance(r, tuple) and r[0] in (["yes"], ["no"]) for i, r in enumerate(results) if i != 5)


async def test_a_batchs_answers_are_handed_over_in_one_call_with_their_notes_before_any_request_gets_them():
    handed: list[list[tuple[object, tuple[list, list | None]]]] = []
    answered_before_handing: list[bool] = []
    futures: list[asyncio.Task] = []

    def on_scored(served: LoadedModel, answered: list) -> None:
        answered_before_handing.append(any(f.done() for f in futures))
        handed.append(answered)

    served, batcher = model(Counting(fitted())), MicroBatcher(max_wait=0.001, on_scored=on_scored)
    requests = [rows(1 + i % 2, seed=i) for i in range(12)]
    futures += [asyncio.ensure_future(batcher.predict(served, r, note=f"request-{i}")) for i, r in enumerate(requests)]
    answers = await asyncio.gather(*futures)

    assert 1 <= len(handed) < len(requests) and answered_before_handing == [False] * len(handed)
    notes = {note: answer for batch in handed for note, answer in batch}
    assert notes == {f"request-{i}": answer for i, answer in enumerate(answers)}


async def test_a_request_whose_client_left_is_neither_answered_nor_handed_over():
    handed: list = []
    started = threading.Event()
    release = threading.Event()

    class Slow(Counting):
        def predict_proba(self, frame):
            started.set()
            release.wait(5)
            return super().predict_proba(frame)

    estimator = Slow(fitted())
    served = model(estimator)
    batcher = MicroBatcher(max_wait=0.001, on_scored=lambda _, answered: handed.extend(answered))
    staying = asyncio.ensure_future(batcher.predict(served, rows(1), note="stays"))
    leaving = asyncio.ensure_future(batcher.predict(served, rows(1, seed=2), note="leaves"))
    await asyncio.to_thread(started.wait, 5)
    leaving.cancel()
    release.set()

    await staying
    assert estimator.calls == 1  # the two were scored together; one left while the model worked
    assert [note for note, _ in handed] == ["stays"]


async def test_when_handing_over_fails_each_request_of_the_batch_gets_that_error():
    def broken(served: LoadedModel, answered: list) -> None:
        raise RuntimeError("log unavailable")

    served, batcher = model(Counting(fitted())), MicroBatcher(max_wait=0.001, on_scored=broken)

    results = await asyncio.gather(
        *(batcher.predict(served, rows(1, seed=i)) for i in range(6)), return_exceptions=True
    )

    assert [str(r) for r in results] == ["log unavailable"] * 6


async def test_batches_hold_at_most_max_rows_but_a_larger_request_still_goes_through():
    estimator = Counting(fitted())
    served, batcher = model(estimator), MicroBatcher(max_wait=0.001, max_rows=4)

    answers = await asyncio.gather(
        batcher.predict(served, rows(10)), *(batcher.predict(served, rows(3)) for _ in range(3))
    )

    assert [len(a[0]) for a in answers] == [10, 3, 3, 3]
    assert estimator.calls == 4  # the large request alone, then each 3-row request (two would exceed 4 rows)


@pytest.mark.parametrize("estimator", [LogisticRegression(), HistGradientBoostingClassifier(max_iter=20)])
def test_labels_read_off_the_probabilities_are_the_estimators_predictions(estimator):
    served = model(fitted(estimator))
    frame = served.frame_of(rows(500, seed=5) + [[None, 0.0], [0.0, None]])

    predictions, _ = served.predict(frame)

    assert predictions == served.estimator.predict(frame).tolist()


def test_request_ids_are_unique_within_a_process_and_across_processes():
    first, second = counter_ids(), counter_ids()

    ids = [first() for _ in range(1000)] + [second() for _ in range(1000)]

    assert len(set(ids)) == 2000 and all(len(i) <= 100 for i in ids)  # feedback takes ids of up to 100 chars
