"""Cooldown after a drift event, so a flapping signal cannot start a retraining storm.

After a window emits a drift event, the next `cooldown_windows` windows cannot emit
another one; their drift is still reported, just not acted upon. Window indexes are
per model version and increase; a window at or before the last emitting one (a
replay) never emits again.

Retraining has a cooldown of its own: an "investigate" alert does not hold back a later
"retrain", so a window first judged a covariate shift (alert) whose labels then show a
performance drop (a revised verdict) still asks for retraining, once.

The state also keeps the signals latched by the hysteresis of retrain alarms (mloop_drift.hysteresis).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from mloop_drift.hysteresis import Latch


@dataclass(frozen=True)
class CooldownState:
    """What the policy remembers between windows of one model version."""

    last_emitted_window: int | None = None
    suppressed: int = 0  # drifted windows held back since the last emission
    last_retrain_window: int | None = None
    # Signals a retrain alarm rested on that have not cleared since (hysteresis), by signal name.
    latched: Mapping[str, Latch] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types, for the service's database."""
        out: dict[str, Any] = {
            "last_emitted_window": self.last_emitted_window,
            "suppressed": self.suppressed,
            "last_retrain_window": self.last_retrain_window,
        }
        if self.latched:
            out["latched"] = {name: latch.to_dict() for name, latch in self.latched.items()}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> CooldownState:
        """Rebuild a state from `to_dict` output; None or {} is the initial state."""
        data = data or {}
        last = data.get("last_emitted_window")
        suppressed = data.get("suppressed", 0)
        retrain = data.get("last_retrain_window")
        for name, value in (("last_emitted_window", last), ("last_retrain_window", retrain)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be an integer or null, got {value!r}")
        if isinstance(suppressed, bool) or not isinstance(suppressed, int) or suppressed < 0:
            raise ValueError(f"suppressed must be a non-negative integer, got {suppressed!r}")
        stored = data.get("latched") or {}
        if not isinstance(stored, dict) or not all(isinstance(v, dict) for v in stored.values()):
            raise ValueError(f"latched must map signal names to latches, got {stored!r}")
        return cls(last, suppressed, retrain, {str(k): Latch.from_dict(v) for k, v in stored.items()})


@dataclass(frozen=True)
class CooldownPolicy:
    """Emit at most one drift event per `cooldown_windows + 1` consecutive windows."""

    cooldown_windows: int

    def __post_init__(self) -> None:
        if isinstance(self.cooldown_windows, bool) or not isinstance(self.cooldown_windows, int):
            raise ValueError("cooldown_windows must be an integer")
        if self.cooldown_windows < 0:
            raise ValueError("cooldown_windows must not be negative")

    def in_cooldown(self, state: CooldownState, window_index: int) -> bool:
        """Whether a window falls inside the cooldown of the last emitted event (replays included)."""
        last = state.last_emitted_window
        return last is not None and window_index <= last + self.cooldown_windows

    def should_emit(
        self, state: CooldownState, drift_detected: bool, window_index: int, *, retrain: bool = False
    ) -> tuple[bool, CooldownState]:
        """Decide whether this window emits a drift event (a retrain recommendation or not), and the state after it."""
        if not drift_detected:
            return False, state
        last = state.last_retrain_window if retrain else state.last_emitted_window
        if last is not None and window_index <= last + self.cooldown_windows:
            return False, replace(state, suppressed=state.suppressed + 1)
        emitted = max(window_index, state.last_emitted_window or window_index)
        retrained = (
            max(window_index, state.last_retrain_window or window_index) if retrain else state.last_retrain_window
        )
        return True, CooldownState(
            last_emitted_window=emitted, suppressed=0, last_retrain_window=retrained, latched=state.latched
        )
