"""One error tree for mloop; each boundary translates it once (HTTP status, retry or DLQ).

    MloopError
    ├── Unauthorized        401 (no API key, or one nobody issued)
    ├── Forbidden           403 (the key's role does not allow it)
    ├── NotFound            404 over HTTP
    ├── Conflict            409 (a uniqueness or state rule refused the change)
    ├── InvalidInput        422 (names the offending field when it can)
    │   ├── SpecError           a model spec that cannot be read (mloop_common.spec)
    │   └── ModelIOError        a model file that cannot be written or read safely (mloop_common.modelio)
    ├── PayloadTooLarge     413 (also: an event too large for the broker)
    ├── DigestMismatch      artifact bytes do not match the digest the caller vouched for
    ├── PermanentError      a message that can never succeed: straight to the DLQ, no retries
    └── TransientError      a dependency is unavailable: retried until it is back, never dead-lettered
        └── ServiceUnavailable  another mloop service did not answer

Services add their own leaves (e.g. the trainer's TrainingError) under the same root.
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


class Unauthorized(MloopError):
    status_code = 401
    code = "unauthorized"


class Forbidden(MloopError):
    status_code = 403
    code = "forbidden"


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


class DigestMismatch(MloopError):
    """Stored bytes that do not hash to the digest their reference names: corruption or tampering."""

    code = "digest_mismatch"


class PermanentError(MloopError):
    """A message that will fail the same way however often it is retried."""

    code = "permanent"


class TransientError(MloopError):
    """Another service or the database is unreachable; the work is fine and will succeed later."""

    status_code = 503
    code = "unavailable"


class ServiceUnavailable(TransientError):
    """Another mloop service did not answer; the caller's message is retried later."""
