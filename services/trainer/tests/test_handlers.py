"""Trainer handler behaviour that needs no broker or database."""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from types import SimpleNamespace

import pytest

from mloop_common.errors import TransientError
from mloop_common.spec import ModelSpec
from mloop_trainer.handlers import Trainer


class BrokenPool(Executor):
    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise BrokenProcessPool("a worker died")


def spec() -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": "m",
            "dataset": "d",
            "task": "classification",
            "target": "y",
            "estimators": [{"class": "LogisticRegression"}],
            "metric": "accuracy",
        }
    )


async def test_a_dead_training_worker_is_replaced_and_the_event_retried() -> None:
    pools: list[Executor] = [BrokenPool(), ThreadPoolExecutor(1)]
    trainer = Trainer(
        SimpleNamespace(group_id="mloop-trainer"),
        registry=None,  # type: ignore[arg-type]
        new_pool=lambda: pools.pop(0),
    )
    dataset = {"name": "d", "version": 1, "snapshot_sha256": "0" * 64}
    with pytest.raises(TransientError):
        await trainer._train(spec(), 1, dataset, b"", None, trigger="data.published")
    assert isinstance(trainer.pool, ThreadPoolExecutor)  # the next attempt gets fresh workers
    assert trainer.active == {}
    trainer.pool.shutdown()
