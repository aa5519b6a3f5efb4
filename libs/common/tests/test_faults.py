"""Fault points kill their process only when armed with their own name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mloop_common.faults import CONSUMER_BEFORE_OFFSET_COMMIT, ENV, OUTBOX_BEFORE_MARK_SENT

PROGRAM = (
    "from mloop_common.faults import fault_point\n"
    f"fault_point({CONSUMER_BEFORE_OFFSET_COMMIT!r})\n"
    "print('still alive', flush=True)\n"
)


def run(armed: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if armed is not None:
        env[ENV] = armed
    return subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=60)


def test_an_armed_fault_point_kills_its_process_with_sigkill() -> None:
    done = run(CONSUMER_BEFORE_OFFSET_COMMIT)

    assert done.returncode == -signal.SIGKILL
    assert "still alive" not in done.stdout
    assert f"fault point {CONSUMER_BEFORE_OFFSET_COMMIT} reached" in done.stderr


def test_a_fault_point_does_nothing_unless_armed_with_its_own_name() -> None:
    assert run(None).stdout == "still alive\n"
    assert run(OUTBOX_BEFORE_MARK_SENT).stdout == "still alive\n"
    assert run("").stdout == "still alive\n"
