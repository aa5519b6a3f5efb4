"""Training worker processes: each runs one job at a time, within a memory and a time budget.

A job runs in a long-lived worker process (started with ``spawn``, warmed up once) so the event
loop and the Kafka heartbeat never wait on a fit. Each job has a budget:

- memory: the worker's private memory (``RLIMIT_DATA``: heap and anonymous mappings, the ~300 MB
  of imported libraries included) is capped while the job runs, so an allocation beyond it raises
  ``MemoryError`` inside the job instead of drawing the kernel's out-of-memory killer;
- time: a job still running at its deadline has its worker killed.

A worker logs like the service (``configure_logging``: JSON lines by default, ``MLOOP_LOG_FORMAT=text``
for plain ones), and a job's lines carry the trace id of the run that sent it.

Either way, and when a worker dies mid-job for any other reason (the OOM killer, a crash in
native code), the job fails with a ``JobFailed`` that says why, and a fresh worker takes the dead
one's place. These failures are permanent: running the same job again would end the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, ClassVar, Protocol, TypeVar

from mloop_common.errors import PermanentError
from mloop_trainer.entities import Failure

T = TypeVar("T")
log = logging.getLogger(__name__)
MB = 1024 * 1024


@dataclass(frozen=True)
class Budget:
    """What one job may use: ``memory_mb`` of private memory and ``seconds`` of wall-clock time."""

    memory_mb: int
    seconds: float


class JobFailed(PermanentError):
    """A job that ended without a result for a reason of its own (budget exceeded, worker died)."""

    code = "job_failed"
    kind: ClassVar[Failure] = "job_failed"


class OverBudget(JobFailed):
    """The job needed more memory or time than its budget."""

    code = "over_budget"
    kind: ClassVar[Failure] = "over_budget"


class WorkerDied(JobFailed):
    """The worker process ended while running the job."""

    kind: ClassVar[Failure] = "worker_died"


ProgressSink = Callable[[Any], None]


class Workers(Protocol):
    """The port the trainer runs its jobs through (worker processes here, in place in tests)."""

    async def run(self, budget: Budget, fn: Callable[..., T], /, *args: Any, progress: ProgressSink | None = None) -> T:
        """``fn(*args)`` within ``budget``; JobFailed when the budget or the worker gave out.

        What the job passes to ``report_progress`` while it runs reaches ``progress`` (on a thread)."""
        ...

    def close(self) -> None: ...


# Where report_progress sends to: the pipe to the service in a worker process; set by in-place runners in tests.
progress_sink: ProgressSink | None = None


def report_progress(value: Any) -> None:
    """Tell the service how far the running job is (``value`` must pickle); nothing outside a job."""
    if progress_sink is not None:
        progress_sink(value)


def _serve(connection: Connection, warm_up: Callable[[], None] | None, service_name: str) -> None:
    """A worker's life: warm up, say so, then run jobs until the pool closes the pipe."""
    global progress_sink
    # Only the service decides when a worker stops (it kills it): a SIGTERM or Ctrl-C sent to the whole
    # process group would otherwise end the fit as if it had crashed, and fail its run for good.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    progress_sink = lambda value: connection.send(("progress", value))  # noqa: E731
    if warm_up is not None:
        warm_up()
    # A spawned process starts with Python's default logging (plain text, WARNING and up): set up the service's,
    # with the name the pool resolved (resolving it here keeps ~16 MB of the jobs' memory budget). The telemetry
    # module is imported here and in the pool's methods, not at the top: a worker imports this module before its
    # warm-up, and importing more then reshapes its heap enough to change how a job at the edge of its memory
    # budget fails (test_workers.py).
    from mloop_common.telemetry import configure_logging, continued_trace

    configure_logging(service_name=service_name)
    logging.captureWarnings(True)  # a library's stray warning becomes a log line of the same format, not raw stderr
    connection.send(("ready", None))
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    while True:
        try:
            memory_bytes, fn, args, traceparent = connection.recv()
        except EOFError:
            return
        limit = memory_bytes if hard == resource.RLIM_INFINITY else min(memory_bytes, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
        try:
            with continued_trace(traceparent):
                outcome: tuple[str, Any] = ("ok", fn(*args))
        except MemoryError as exc:
            outcome = ("memory", f"{type(exc).__name__}: {exc}".rstrip(": "))
        except BaseException as exc:  # the pool re-raises it in the service
            outcome = ("error", exc)
        finally:
            resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
        try:
            connection.send(outcome)
        except Exception as exc:  # an exception that does not pickle still reaches the service, as text
            connection.send(("error", RuntimeError(f"{outcome[1]!r} (not transferable: {exc})")))
        if outcome[0] == "memory":
            return  # a process that ran out of memory may hold on to some of it; the pool starts a fresh one


@dataclass
class _Worker:
    process: BaseProcess
    connection: Connection
    ready: bool = False


class WorkerPool:
    """``size`` worker processes; ``run`` waits for a free one."""

    def __init__(self, size: int, *, warm_up: Callable[[], None] | None = None, service: str = "trainer") -> None:
        self._size = size
        self._warm_up = warm_up
        from mloop_common.telemetry import log_service_name  # not at the top: see _serve

        self._log_name = log_service_name(service)  # the workers' log lines are the service's
        # spawn, not fork: forking a process that runs an event loop and Kafka threads is unsafe.
        self._context = multiprocessing.get_context("spawn")
        # A job submitted before start() finishes waits here for its worker.
        self._idle: asyncio.Queue[_Worker] = asyncio.Queue()
        self._all: list[_Worker] = []

    async def start(self) -> None:
        """Start the workers and wait until each has warmed up (imports paid before the first job)."""
        workers = [self._spawn() for _ in range(self._size)]
        await asyncio.gather(*(asyncio.to_thread(self._await_ready, w) for w in workers))
        for worker in workers:
            self._idle.put_nowait(worker)

    def _spawn(self) -> _Worker:
        ours, theirs = self._context.Pipe()
        process = self._context.Process(
            target=_serve, args=(theirs, self._warm_up, self._log_name), name="mloop-trainer-worker", daemon=True
        )
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        self._all.append(worker)
        return worker

    @staticmethod
    def _await_ready(worker: _Worker) -> None:
        try:
            worker.connection.recv()
            worker.ready = True
        except EOFError:
            pass  # died while starting: the first job on it fails over to a replacement

    async def run(self, budget: Budget, fn: Callable[..., T], /, *args: Any, progress: ProgressSink | None = None) -> T:
        worker = await self._idle.get()
        from mloop_common.telemetry import current_trace_headers  # not at the top: see _serve

        traceparent, _ = current_trace_headers()  # the run's trace (the consumer's span), for the job's log lines
        job = asyncio.ensure_future(asyncio.to_thread(self._run_on, worker, budget, fn, args, progress, traceparent))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # The caller gave the job up (the service is stopping): stop the fit now rather than let it run
            # to the end unseen; its event was not committed, so the topic delivers it again.
            log.warning("a training job was cancelled; its worker (pid %s) is stopped", worker.process.pid)
            worker.process.kill()
            # The job's thread sees the worker end and reaps it; reaping here as well would race it, and the
            # loser reads a dead worker as alive.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(job, timeout=10)
            raise
        finally:
            if not worker.process.is_alive():
                self._all.remove(worker)
                worker.connection.close()
                worker = self._spawn()
            self._idle.put_nowait(worker)

    def _run_on(
        self,
        worker: _Worker,
        budget: Budget,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        progress: ProgressSink | None,
        traceparent: str | None = None,
    ) -> T:
        if not worker.ready:
            self._await_ready(worker)
        deadline = time.monotonic() + budget.seconds
        try:
            worker.connection.send((budget.memory_mb * MB, fn, args, traceparent))
            while True:
                if not worker.connection.poll(max(deadline - time.monotonic(), 0)):
                    worker.process.kill()
                    worker.process.join()
                    raise OverBudget(
                        f"the run took longer than its time budget of {budget.seconds:g} s and was stopped"
                    )
                kind, value = worker.connection.recv()
                if kind != "progress":
                    break
                if progress is not None:
                    try:
                        progress(value)
                    except Exception:  # progress is for people watching; it never fails a run
                        log.exception("progress callback failed")
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            worker.process.join()
            raise WorkerDied(_death(worker.process.exitcode, budget)) from exc
        if kind == "memory":
            worker.process.join()
            raise OverBudget(f"the run needed more memory than its budget of {budget.memory_mb} MB ({value})")
        if kind == "error":
            raise value
        result: T = value
        return result

    def close(self) -> None:
        """Stop every worker; a job still running is abandoned."""
        for worker in self._all:
            worker.connection.close()
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join(timeout=5)
        self._all.clear()


def _death(exitcode: int | None, budget: Budget) -> str:
    """Why a worker ended, in words; a kill is most often the kernel's out-of-memory killer."""
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        likely = (
            f", most likely by the kernel's out-of-memory killer (memory budget {budget.memory_mb} MB)"
            if -exitcode == signal.SIGKILL
            else ""
        )
        return f"the training worker was killed by {name} during the run{likely}"
    # Native libraries (OpenBLAS, for one) exit rather than raise when an allocation fails.
    return (
        f"the training worker exited with code {exitcode} during the run, as native code does when an allocation "
        f"fails (memory budget {budget.memory_mb} MB)"
    )
