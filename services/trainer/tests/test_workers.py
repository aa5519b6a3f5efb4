"""The training worker processes (real ones, spawned): results, errors, and jobs over their memory or time budget.

The jobs are standard-library callables, so the spawned workers can import them by name.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import operator
import signal
import time
from collections.abc import AsyncIterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from mloop_trainer.jobs import run_training_job, warm_up
from mloop_trainer.workers import Budget, JobFailed, OverBudget, WorkerDied, WorkerPool

from .test_handlers import frame, spec

ROOMY = Budget(memory_mb=4096, seconds=120)


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    workers = WorkerPool(1)
    await workers.start()
    yield workers
    workers.close()


async def test_a_job_returns_its_result_and_its_error(pool):
    assert await pool.run(ROOMY, operator.add, 2, 3) == 5
    with pytest.raises(ValueError, match="invalid literal"):
        await pool.run(ROOMY, int, "not a number")
    assert await pool.run(ROOMY, operator.mul, 4, 5) == 20  # an error leaves the worker usable


async def test_a_job_allocating_beyond_its_memory_budget_fails_and_the_next_job_runs(pool):
    with pytest.raises(OverBudget, match="budget of 256 MB") as over:
        await pool.run(Budget(memory_mb=256, seconds=120), bytearray, 2 * 1024**3)

    assert over.value.kind == "over_budget"
    assert await pool.run(ROOMY, bytearray, 1024) == bytearray(1024)


async def test_a_job_over_its_time_budget_is_stopped_and_the_next_job_runs(pool):
    started = time.monotonic()

    with pytest.raises(OverBudget, match="time budget of 0.5 s"):
        await pool.run(Budget(memory_mb=4096, seconds=0.5), time.sleep, 60)

    assert time.monotonic() - started < 30  # stopped, not waited out
    assert await pool.run(ROOMY, operator.add, 1, 1) == 2


async def test_a_worker_killed_mid_job_is_reported_as_such_and_replaced(pool):
    with pytest.raises(WorkerDied, match="SIGKILL.*out-of-memory killer") as died:
        await pool.run(ROOMY, signal.raise_signal, signal.SIGKILL)

    assert died.value.kind == "worker_died"
    assert await pool.run(ROOMY, operator.add, 1, 1) == 2


async def test_a_cancelled_job_stops_its_worker_at_once_and_the_pool_goes_on(pool):
    job = asyncio.create_task(pool.run(ROOMY, time.sleep, 600))
    await asyncio.sleep(1)  # the worker is sleeping through the job
    [busy] = [w.process for w in pool._all]

    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job

    assert not busy.is_alive()  # stopped, not left to sleep out its 600 s
    assert await pool.run(ROOMY, operator.add, 1, 1) == 2


async def test_a_real_training_job_over_its_memory_budget_fails_with_the_reason():
    workers = WorkerPool(1, warm_up=warm_up)
    await workers.start()
    rows = frame(rows=200_000)
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    try:
        # Python code raises MemoryError (OverBudget); native code may exit instead (WorkerDied): both say why.
        with pytest.raises(JobFailed, match="memory budget 400 MB|budget of 400 MB"):
            await workers.run(
                Budget(memory_mb=400, seconds=120),
                run_training_job,
                spec().model_dump(by_alias=True),
                buffer.getvalue(),
                None,
            )
    finally:
        workers.close()


async def test_a_training_job_reports_its_progress_from_the_worker_before_its_result(pool):
    buffer = io.BytesIO()
    frame().to_parquet(buffer, index=False)
    reports: list = []

    output = await pool.run(
        ROOMY, run_training_job, spec().model_dump(by_alias=True), buffer.getvalue(), None, progress=reports.append
    )

    assert output.report.estimator_class == "LogisticRegression"
    assert [r.trials_done for r in reports] == sorted(r.trials_done for r in reports)
    assert reports[0].trials_done == 0 and reports[-1].stage.startswith("refitting")
    assert {r.trials_total for r in reports} == {1}


RUN_TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736


async def log_from_a_worker(*args: object) -> None:
    """Run ``logging.warning(*args)`` as a job of a fresh worker, inside the span of a run being handled."""
    workers = WorkerPool(1)
    await workers.start()
    run = SpanContext(trace_id=RUN_TRACE, span_id=0x00F067AA0BA902B7, is_remote=False, trace_flags=TraceFlags(1))
    try:
        with trace.use_span(NonRecordingSpan(run)):
            await workers.run(ROOMY, logging.warning, *args)
    finally:
        workers.close()


async def test_a_workers_log_line_is_the_services_json_with_the_runs_trace_id(capfd, monkeypatch):
    monkeypatch.delenv("MLOOP_LOG_FORMAT", raising=False)  # the default, as in a deployed service

    await log_from_a_worker("fitting %s on %d rows", "churn", 400)

    [line] = [line for line in capfd.readouterr().err.splitlines() if "fitting" in line]
    logged = json.loads(line)
    assert logged["message"] == "fitting churn on 400 rows"
    assert (logged["level"], logged["logger"], logged["service"]) == ("WARNING", "root", "mloop-trainer")
    assert logged["trace_id"] == format(RUN_TRACE, "032x")


async def test_a_workers_log_line_is_plain_text_when_the_service_logs_text(capfd, monkeypatch):
    monkeypatch.setenv("MLOOP_LOG_FORMAT", "text")

    await log_from_a_worker("fitting %s", "churn")

    [line] = [line for line in capfd.readouterr().err.splitlines() if "fitting" in line]
    assert line.endswith(" WARNING root: fitting churn")
