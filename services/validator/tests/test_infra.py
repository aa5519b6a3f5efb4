"""The infra check in real fresh processes: a sound artifact passes; a missing library or different outputs fail it."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

from sklearn.linear_model import LogisticRegression

from mloop_common.modelio import dump_model, load_model
from mloop_validator.infra import CleanProcessCheck, InfraReport

from .test_handlers import FEATURES, frame, good_model


async def check(python: str, artifact: bytes, model: object, sample: object) -> InfraReport:
    """One check with its own checker, closed after it (the checker keeps the next process started)."""
    checker = CleanProcessCheck(python, timeout=120)
    try:
        return await checker(artifact, model, sample)  # type: ignore[arg-type]
    finally:
        await checker.close()


async def test_a_sound_artifact_loads_and_predicts_alike_in_a_fresh_process():
    artifact = good_model()

    report = await check(sys.executable, artifact, load_model(artifact), frame()[FEATURES])

    assert report.error is None and report.rows == 400 and report.load_seconds is not None


async def test_each_check_gets_a_process_of_its_own_started_ahead_and_none_is_left_running():
    artifact, other = (
        good_model(),
        dump_model(LogisticRegression(C=1e-4).fit(frame(seed=5)[FEATURES], frame(seed=5)["label"])),
    )
    checker = CleanProcessCheck(sys.executable, timeout=120)
    checker.start()

    first = await checker(artifact, load_model(artifact), frame()[FEATURES])
    second = await checker(other, load_model(other), frame()[FEATURES])
    waiting = await checker._next  # type: ignore[misc]
    await checker.close()

    assert first.error is None and second.error is None
    assert waiting.returncode is not None  # the process started for a next check was stopped


async def test_an_artifact_needing_a_library_the_serving_environment_lacks_fails(tmp_path: Path):
    # A serving environment without scikit-learn: its interpreter finds a package that refuses to import.
    shadow = tmp_path / "without-sklearn" / "sklearn"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'sklearn'\", name='sklearn')\n")
    python = tmp_path / "serving-python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="{shadow.parent}" exec "{sys.executable}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    artifact = good_model()

    report = await check(str(python), artifact, load_model(artifact), frame()[FEATURES])

    assert report.error is not None and "No module named 'sklearn'" in report.error


async def test_outputs_that_differ_from_the_validators_fail_the_check():
    artifact = good_model()
    train = frame(seed=5)
    other = LogisticRegression(C=1e-4).fit(train[FEATURES], train["label"])  # what the validator saw instead

    report = await check(sys.executable, artifact, other, frame()[FEATURES])

    assert report.error is not None and "differ" in report.error
    assert dump_model(other) != artifact


async def test_an_interpreter_that_cannot_start_fails_the_check(tmp_path: Path):
    artifact = good_model()

    report = await check(str(tmp_path / "no-python"), artifact, load_model(artifact), frame()[FEATURES])

    assert report.error is not None and "cannot start" in report.error
