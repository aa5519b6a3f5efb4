"""Traffic routing between a model's production version and its canary (pure: no I/O)."""

from __future__ import annotations

import hashlib

# Shares are resolved to 1/10,000 of the traffic (a canary of 0.01 % still receives requests).
_BUCKETS = 10_000


def bucket(key: str) -> int:
    """Where ``key`` falls in [0, 10,000): the same key always falls in the same place, on every replica."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % _BUCKETS


def takes_canary(key: str, percent: float) -> bool:
    """Whether a request with routing ``key`` goes to a canary taking ``percent`` % of the traffic.

    Keys below the share's boundary go to the canary, so raising the share keeps every client the canary
    already had and adds new ones (a client never flips back and forth while a rollout widens).
    """
    return bucket(key) < round(percent * _BUCKETS / 100)
