"""Who is signed in: a random session id in an HttpOnly cookie, the API key kept here and never sent back.

The UI calls the services with the signed-in person's own key, so each service decides what that person may
see and do, exactly as for the CLI; the UI only hides what the role could not do anyway. Sessions live in
this process's memory: a restart signs everyone out (run one UI replica, or pin sessions to one).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mloop_common.auth import Permission, Principal

COOKIE = "mloop_session"


@dataclass(frozen=True)
class Session:
    id: str
    key: str
    principal: Principal
    csrf: str  # every form that changes something carries it: a cross-site form cannot know it
    expires_at: float

    def allows(self, permission: Permission) -> bool:
        return self.principal.allows(permission)

    def csrf_matches(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


class Sessions:
    """Signed-in sessions, oldest dropped first past ``max_sessions``."""

    def __init__(self, *, lifetime_seconds: float, max_sessions: int, clock: Callable[[], float] = time.time):
        self._lifetime = lifetime_seconds
        self._max = max_sessions
        self._clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, key: str, principal: Principal) -> Session:
        session = Session(
            id=secrets.token_urlsafe(32),
            key=key,
            principal=principal,
            csrf=secrets.token_urlsafe(32),
            expires_at=self._clock() + self._lifetime,
        )
        self._sessions[session.id] = session
        while len(self._sessions) > self._max:
            self._sessions.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= self._clock():
            del self._sessions[session_id]
            return None
        return session

    def close(self, session_id: str | None) -> None:
        if session_id:
            self._sessions.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._sessions)
