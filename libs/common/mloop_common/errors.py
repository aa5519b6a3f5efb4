"""One error tree for mloop.

    MloopError
    ├── NotFound          404 over HTTP
    ├── Conflict          409
    ├── InvalidInput      422 (names the offending field when it can)
    ├── PayloadTooLarge   413
    ├── IntegrityError    artifact bytes do not match the digest the caller vouched for
    ├── PermanentError    a message that can never succeed: straight to the DLQ, no retries
    └── TransientError    a dependency is unavailable: retried until it is back, never dead-lettered

Anything else raised inside a consumer handler is retried a few times, then dead-lettered.
"""

from __future__ import annotations


class MloopError(Exception):
    """Base of every error mloop raises on purpose."""

    status_code = 500
    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(MloopError):
    status_code = 404
    code = "not_found"


class Conflict(MloopError):
    status_code = 409
    code = "conflict"


class InvalidInput(MloopError):
    status_code = 422
    code = "invalid_input"


class PayloadTooLarge(MloopError):
    status_code = 413
    code = "payload_too_large"


class IntegrityError(MloopError):
    status_code = 500
    code = "integrity"


class PermanentError(MloopError):
    """A message that will fail the same way however often it is retried."""

    code = "permanent"


class TransientError(MloopError):
    """Another service or the database is unreachable; the work is fine and will succeed later."""

    status_code = 503
    code = "unavailable"
