"""Fault points: places where the fault suite (tests/faults/) makes a process die on purpose.

A test hook, not a setting. ``MLOOP_FAULT_POINT=<name>`` in a process's environment makes the
first ``fault_point(<name>)`` it reaches kill that process with SIGKILL: no cleanup, no flush, no
commit, exactly as a power cut or the OOM killer would. The names:

- ``consumer-after-handler-before-offset-commit``: a consumer's handler returned (its database
  transaction, with the inbox entry, committed) and the record's offset is not committed yet.
- ``outbox-after-publish-before-mark-sent``: the broker acknowledged the outbox rows of a round
  and they are not marked published yet.

Unset (always, outside the fault suite), a fault point costs one comparison with a value read once
at import.
"""

from __future__ import annotations

import os
import signal
import sys

CONSUMER_BEFORE_OFFSET_COMMIT = "consumer-after-handler-before-offset-commit"
OUTBOX_BEFORE_MARK_SENT = "outbox-after-publish-before-mark-sent"
POINTS = frozenset({CONSUMER_BEFORE_OFFSET_COMMIT, OUTBOX_BEFORE_MARK_SENT})

ENV = "MLOOP_FAULT_POINT"
ARMED: str | None = os.environ.get(ENV) or None


def fault_point(name: str) -> None:
    """Die here with SIGKILL if this process was started with ``MLOOP_FAULT_POINT=name``."""
    if ARMED is not None and ARMED == name:
        # One line for the service's log, so a reader knows the death was asked for.
        sys.stderr.write(f"fault point {name} reached: SIGKILL\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
