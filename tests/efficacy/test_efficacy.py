"""Does drift decide well on real data nobody tuned it for? Six replays through the real stack.

All scenarios share one stack (a model name each) and run side by side. The table of outcomes is
printed and saved to bench/results/drift_efficacy.json; the tests then assert on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from tests.efficacy import scenarios
from tests.efficacy.replay import Outcome, Replay
from tests.stack import ServiceStack

pytestmark = [pytest.mark.efficacy, pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "drift_efficacy.json"
BUDGET_SECONDS = 420  # the whole suite must fit in 8 minutes, the stack's start included
STAGE_TIMEOUT = 360.0  # one wait (version served, windows judged, retrained version registered)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def outcomes(stack: ServiceStack, pytestconfig: pytest.Config) -> dict[str, Outcome]:
    replay = Replay(stack.urls, stack.artifacts, STAGE_TIMEOUT, stack.headers)
    started = time.monotonic()
    built = {key: make() for key, make in scenarios.ALL.items()}
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(replay.run(s) for s in built.values())), timeout=BUDGET_SECONDS
        )
    except TimeoutError:
        pytest.fail(f"the efficacy replays took longer than {BUDGET_SECONDS}s (logs in {stack.logs})")
    elapsed = time.monotonic() - started
    by_key = dict(zip(built, results, strict=True))
    _report(by_key, elapsed, pytestconfig)
    return by_key


def _report(by_key: dict[str, Outcome], elapsed: float, config: pytest.Config) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "replay_seconds": round(elapsed, 1),
                "scenarios": {key: {**o.row(), "verdicts": o.verdicts} for key, o in by_key.items()},
            },
            indent=2,
        )
        + "\n"
    )
    lines = [
        f"{'dataset':<44} {'shift at':>8} {'detected at':>11} {'cause':<17} {'retrains':>8}  stale vs retrained",
    ]
    for o in by_key.values():
        metric = (
            f"{o.metric} {o.stale:.3f} vs {o.retrained:.3f}" if o.stale is not None and o.retrained is not None else "-"
        )
        lines.append(
            f"{o.dataset:<44} {_cell(o.shift_at):>8} {_cell(o.detected_at):>11} {o.cause or '-':<17} "
            f"{o.retrains:>8}  {metric}" + (f"  FAILED: {o.failure}" if o.failure else "")
        )
    lines.append(f"replayed in {elapsed:.0f}s; saved to {RESULTS.relative_to(RESULTS.parents[2])}")
    # Shown even when pytest captures output: the table is the suite's result.
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print("\n" + "\n".join(lines), flush=True)


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def _ran(outcome: Outcome) -> Outcome:
    assert outcome.failure is None, f"{outcome.dataset}: {outcome.failure}\nverdicts: {outcome.verdicts}"
    return outcome


@pytest.mark.parametrize("key", list(scenarios.REAL_DRIFT))
async def test_real_drift_is_detected_within_two_windows_and_the_retrained_version_wins(
    outcomes: dict[str, Outcome], key: str
) -> None:
    outcome = _ran(outcomes[key])
    assert outcome.shift_at is not None
    assert outcome.detected_at is not None, f"no retrain verdict: {outcome.verdicts}"
    assert outcome.shift_at <= outcome.detected_at <= outcome.shift_at + 1, outcome.verdicts
    assert outcome.cause in ("performance_drop", "concept_drift")
    assert outcome.retrains >= 1
    assert outcome.stale is not None and outcome.retrained is not None
    if outcome.metric == "rmse":
        assert outcome.retrained < outcome.stale
    else:
        assert outcome.retrained > outcome.stale


@pytest.mark.parametrize("key", list(scenarios.REAL_DRIFT))
async def test_clean_real_data_is_never_judged_broken(outcomes: dict[str, Outcome], key: str) -> None:
    outcome = _ran(outcomes[key])
    assert [v for v in outcome.verdicts if v["cause"] == "data_quality"] == []


async def test_a_stream_without_drift_retrains_nothing_over_ten_windows(outcomes: dict[str, Outcome]) -> None:
    outcome = _ran(outcomes["phishing"])
    assert len(outcome.verdicts) >= 10
    assert [v for v in outcome.verdicts if v["action"] == "retrain"] == []
    assert outcome.retrains == 0


async def test_a_column_gone_missing_is_data_quality_and_retrains_nothing(outcomes: dict[str, Outcome]) -> None:
    outcome = _ran(outcomes["quality"])
    faulty = [v for v in outcome.verdicts if v["window"] >= 2]
    assert faulty and all(v["cause"] == "data_quality" for v in faulty), faulty
    assert all(scenarios.FAULT_COLUMN in v["summary"] for v in faulty)
    assert [v for v in outcome.verdicts if v["action"] == "retrain"] == []
    assert outcome.retrains == 0


async def test_a_season_never_seen_ends_in_a_retrain_not_investigate(outcomes: dict[str, Outcome]) -> None:
    # Bikeshare's weekly windows are judged when the week closed, without labels (regression: performance
    # "needs labels"), and decided again when its labels came.
    outcome = _ran(outcomes["bikeshare"])
    assert outcome.shift_at is not None
    season = [v for v in outcome.verdicts if v["window"] is not None and v["window"] >= outcome.shift_at]
    assert season and all(v["cause"] != "data_quality" for v in season), season
    alarm = next((v for v in season if v["action"] == "retrain" and v["emitted"]), None)
    assert alarm is not None, season
    assert alarm["basis"] == "actual" and alarm["revision"] >= 2, alarm
    decided_on_labels = [v for v in season if v["basis"] == "actual"]
    assert decided_on_labels[-1]["action"] == "retrain", season
    assert outcome.retrains >= 1
