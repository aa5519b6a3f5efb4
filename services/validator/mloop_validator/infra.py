"""The infra check: the artifact loads and predicts in a fresh process, alike to the validator's own predictions.

The fresh process runs ``python`` (by default this interpreter; a deployment points it at serving's
interpreter, so the check runs with exactly serving's libraries) with a clean environment, loads
the artifact the way serving does (``mloop_common.modelio.load_model``) and predicts a sample of
the holdout. A missing library, a type the loader does not trust, or different outputs fail it.

Starting an interpreter and importing the libraries takes seconds, so the next process is started
ahead of time: it imports, then waits for the paths of one artifact and its sample, checks them and
exits. It has loaded nothing else; each check gets a process of its own.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

_SCRIPT = """
import json, sys, time
import pandas as pd
from mloop_common.modelio import load_model
print("ready", flush=True)
paths = sys.stdin.readline().split("\\t")
if len(paths) != 2:
    sys.exit(0)  # the validator went away before it needed this process
started = time.perf_counter()
with open(paths[0], "rb") as file:
    model = load_model(file.read())
loaded = time.perf_counter() - started
rows = pd.read_parquet(paths[1].strip())
plain = lambda values: [v.item() if hasattr(v, "item") else v for v in values]
answer = {"load_seconds": loaded, "predictions": plain(model.predict(rows))}
if hasattr(model, "predict_proba"):
    answer["probabilities"] = [plain(row) for row in model.predict_proba(rows)]
print(json.dumps(answer))
"""
# What a fresh process keeps of the validator's environment: enough to run, nothing that changes imports.
_KEPT_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
SAMPLE_ROWS = 100
# Probabilities computed by the same code on the same machine agree to the last bits; allow for BLAS threading.
_TOLERANCE = 1e-9


@dataclass(frozen=True)
class InfraReport:
    """The outcome of the clean-process check: None error means it loaded and predicted alike."""

    error: str | None
    load_seconds: float | None = None
    rows: int = 0


class InfraCheck(Protocol):
    """The port the validator checks artifacts through (a real fresh process, or a fake in tests)."""

    async def __call__(self, artifact: bytes, model: Any, sample: pd.DataFrame) -> InfraReport: ...


class CleanProcessCheck:
    """Runs the check in a fresh ``python`` process, within ``timeout`` seconds."""

    def __init__(self, python: str, timeout: float) -> None:
        self.python = python
        self.timeout = timeout
        self._next: asyncio.Task[asyncio.subprocess.Process] | None = None

    def start(self) -> None:
        """Start the process the next check will use (call with a running event loop)."""
        if self._next is None:
            self._next = asyncio.create_task(self._spawn())

    async def close(self) -> None:
        waiting, self._next = self._next, None
        if waiting is None:
            return
        try:
            process = await waiting
        except OSError:
            return
        if process.returncode is None:
            process.kill()
        await process.wait()

    async def _spawn(self) -> asyncio.subprocess.Process:
        environment = {k: v for k, v in os.environ.items() if k in _KEPT_ENVIRONMENT}
        environment |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        return await asyncio.create_subprocess_exec(
            self.python,
            "-c",
            _SCRIPT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=environment,
            cwd=tempfile.gettempdir(),
        )

    async def __call__(self, artifact: bytes, model: Any, sample: pd.DataFrame) -> InfraReport:
        expected = await asyncio.to_thread(_outputs, model, sample)
        self.start()
        assert self._next is not None
        waiting, self._next = self._next, None
        self.start()  # the one after this check, importing while this one runs
        try:
            process = await waiting
        except OSError as exc:
            return InfraReport(error=f"cannot start {self.python}: {exc}")
        with tempfile.TemporaryDirectory(prefix="mloop-infra-") as folder:
            model_path, sample_path = Path(folder) / "model.skops", Path(folder) / "sample.parquet"
            model_path.write_bytes(artifact)
            sample.to_parquet(sample_path, index=False)
            request = f"{model_path}\t{sample_path}\n".encode()
            try:
                out, err = await asyncio.wait_for(process.communicate(request), self.timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
                return InfraReport(error=f"no answer within {self.timeout:g} s")
        if process.returncode != 0:
            return InfraReport(error=_last_line(err.decode(errors="replace")) or f"exit code {process.returncode}")
        _ready_line, _, rest = out.decode().partition("\n")
        try:
            answer = json.loads(rest)
        except ValueError:
            return InfraReport(error=f"unreadable answer: {out[:200]!r}")
        difference = _difference(expected, answer)
        return InfraReport(error=difference, load_seconds=answer["load_seconds"], rows=len(sample))


def _outputs(model: Any, sample: pd.DataFrame) -> dict[str, Any]:
    answer: dict[str, Any] = {"predictions": json.loads(pd.Series(model.predict(sample)).to_json(orient="values"))}
    if hasattr(model, "predict_proba"):
        answer["probabilities"] = model.predict_proba(sample).tolist()
    return answer


def _difference(expected: dict[str, Any], answer: dict[str, Any]) -> str | None:
    """What differs between the two processes' outputs, in words; None when nothing does."""
    ours, theirs = expected["predictions"], answer.get("predictions", [])
    changed = sum(not _same(a, b) for a, b in zip(ours, theirs, strict=False)) + abs(len(ours) - len(theirs))
    if changed:
        return f"{changed} of {len(ours)} predictions differ from the validator's"
    if "probabilities" in expected:
        rows = list(zip(expected["probabilities"], answer.get("probabilities", []), strict=False))
        if len(rows) != len(expected["probabilities"]) or not all(
            len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True)) for a, b in rows
        ):
            return "probabilities differ from the validator's"
    return None


def _same(a: Any, b: Any) -> bool:
    """Equal labels, or numbers equal but for the last bits (native threading may reorder sums)."""
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=_TOLERANCE, abs_tol=_TOLERANCE)
    return bool(a == b)


def _last_line(text: str) -> str:
    """The most specific line of a traceback: the exception itself."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
