"""API keys, roles and permissions: who may call what, decided the same way in every service.

Three kinds of key, all sent as ``Authorization: Bearer <key>``:

- the **admin key** from settings (``MLOOP_AUTH__ADMIN_KEY``), accepted by every service: the first key,
  with which people create the others;
- **service keys** ``mlk_svc-<service>_<hmac>``, derived from the cluster secret (``MLOOP_AUTH__SECRET``)
  so each service can prove who it is to another and be checked without a lookup; a service key carries
  only what that service needs (least privilege);
- **stored keys** ``mlk_<id>_<secret>``, created and revoked through the registry, which keeps only a
  scrypt hash. Other services ask the registry about a stored key they have not seen
  (``POST /v1/auth/introspect``) and remember the answer for ``MLOOP_AUTH__CACHE_SECONDS``, so a revoked
  key stops working everywhere within that time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

DEVELOPMENT_SECRET = "mloop-development-secret-do-not-use-in-production"
DEVELOPMENT_ADMIN_KEY = "mloop-development-admin-key"
MIN_SECRET_CHARS = 32


class Permission(StrEnum):
    """What a route needs. Each route of each service names exactly one (its service's ``access.py``)."""

    PUBLIC = "public"  # health, readiness, metrics: no key
    READ = "read"  # anything that changes nothing
    PUBLISH = "publish"  # dataset versions and their policies
    SPECS = "specs"  # declare or change a model spec
    TRAIN = "train"  # start a run (reproduce)
    ANNOTATE = "annotate"  # tags and descriptions
    RELEASE = "release"  # approve, reject, promote, roll back (aliases)
    REGISTER = "register"  # register a validated version (the validator)
    PREDICT = "predict"
    PREDICT_UNLOGGED = "predict-unlogged"  # predict with ?log=false: batch scoring that drift must not see
    FEEDBACK = "feedback"
    INTROSPECT = "introspect"  # ask the registry who a key belongs to (services)
    ADMIN = "admin"  # create, list and revoke keys


ROLES: dict[str, frozenset[Permission]] = {
    "admin": frozenset(Permission) - {Permission.PUBLIC},
    "data-engineer": frozenset({Permission.READ, Permission.PUBLISH}),
    # Predicting too: scoring a test file (unlogged, so drift never mistakes it for production traffic).
    "data-scientist": frozenset(
        {
            Permission.READ,
            Permission.SPECS,
            Permission.TRAIN,
            Permission.ANNOTATE,
            Permission.PREDICT,
            Permission.PREDICT_UNLOGGED,
        }
    ),
    "approver": frozenset({Permission.READ, Permission.RELEASE, Permission.ANNOTATE}),
    "app": frozenset({Permission.PREDICT, Permission.FEEDBACK}),
    "viewer": frozenset({Permission.READ}),
}
# What each service's own key may do on the others: reading, asking about keys, and the validator registering.
SERVICE_ROLES: dict[str, frozenset[Permission]] = {
    service: frozenset({Permission.READ, Permission.INTROSPECT} | extra)
    for service, extra in {
        "ingest": set(),
        "trainer": set(),
        "validator": {Permission.REGISTER},
        "registry": set(),
        "serving": set(),
        "drift": set(),
        "ui": set(),  # checks the keys people sign in with; reads only with their own key
    }.items()
}
HUMAN_ROLES = tuple(ROLES)


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: recorded as the actor of whatever it changes."""

    name: str
    role: str
    key_id: str | None = None

    @property
    def permissions(self) -> frozenset[Permission]:
        if self.role.startswith("service:"):
            return SERVICE_ROLES.get(self.role.removeprefix("service:"), frozenset())
        return ROLES.get(self.role, frozenset())

    def allows(self, permission: Permission) -> bool:
        return permission is Permission.PUBLIC or permission in self.permissions

    @property
    def actor(self) -> str:
        """The audit log's name for it: ``alice (key 3f9c...)``, ``admin`` or ``service:validator``."""
        return f"{self.name} (key {self.key_id})" if self.key_id else self.name


ADMIN = Principal("admin", "admin")


# --- keys --------------------------------------------------------------------------------------------

_STORED_KEY = re.compile(r"^mlk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_SERVICE_KEY = re.compile(r"^mlk_svc-([a-z]+)_([0-9a-f]{64})$")
# scrypt at N=2^14, r=8: ~16 MiB and tens of ms per check; answers are cached, so it is paid once per key.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class NewKey:
    key_id: str
    key: str  # shown once, never stored
    hash: str


def new_key() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id=key_id, key=f"mlk_{key_id}_{secret}", hash=hash_secret(secret))


def parse_stored_key(presented: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed stored key, else None (no hashing is spent on garbage)."""
    match = _STORED_KEY.match(presented)
    return (match[1], match[2]) if match else None


def hash_secret(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, maxmem=64 * 1024 * 1024, **_SCRYPT)
    encode = base64.urlsafe_b64encode
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${encode(salt).decode()}${encode(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.urlsafe_b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(),
            salt=base64.urlsafe_b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=64 * 1024 * 1024,
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def service_key(secret: str, service: str) -> str:
    """The key ``service`` presents to the others, derived from the cluster secret."""
    mac = hmac.new(secret.encode(), f"mloop-service:{service}".encode(), hashlib.sha256).hexdigest()
    return f"mlk_svc-{service}_{mac}"


def bearer_key(authorization: str | None) -> str | None:
    """The key of an ``Authorization: Bearer <key>`` header."""
    if not authorization:
        return None
    scheme, _, key = authorization.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


# --- deciding who a key belongs to -------------------------------------------------------------------


class KeyResolver(Protocol):
    """Looks up a stored key: the registry's table there, an introspection call everywhere else."""

    async def resolve(self, presented: str) -> Principal | None: ...


class Authenticator:
    """Who presented ``key``: the admin, a service, a stored key (resolved once, then cached), or nobody."""

    def __init__(
        self,
        *,
        secret: str,
        admin_key: str,
        resolver: KeyResolver | None = None,
        cache_seconds: float = 30.0,
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = secret
        self._admin = hashlib.sha256(admin_key.encode()).digest()
        self.resolver = resolver
        self._cache_seconds = cache_seconds
        self._max_cached = max_cached
        self._clock = clock
        self._cache: dict[bytes, tuple[Principal | None, float]] = {}

    def own_key(self, service: str) -> str:
        return service_key(self._secret, service)

    async def authenticate(self, presented: str) -> Principal | None:
        digest = hashlib.sha256(presented.encode()).digest()
        if hmac.compare_digest(digest, self._admin):
            return ADMIN
        if match := _SERVICE_KEY.match(presented):
            service = match[1]
            genuine = service in SERVICE_ROLES and hmac.compare_digest(presented, self.own_key(service))
            return Principal(f"service:{service}", f"service:{service}") if genuine else None
        if parse_stored_key(presented) is None or self.resolver is None:
            return None
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        principal = await self.resolver.resolve(presented)  # raises when the answer cannot be had (503)
        self._remember(digest, principal, now)
        return principal

    def forget(self, key_id: str) -> None:
        """Drop what is cached for ``key_id`` (the registry revoking a key takes effect at once there)."""
        self._cache = {k: v for k, v in self._cache.items() if v[0] is None or v[0].key_id != key_id}

    def _remember(self, digest: bytes, principal: Principal | None, now: float) -> None:
        if len(self._cache) >= self._max_cached:
            self._cache = {k: v for k, v in self._cache.items() if v[1] > now}
            if len(self._cache) >= self._max_cached:
                self._cache.clear()  # a flood of distinct keys: start again rather than grow
        self._cache[digest] = (principal, now + self._cache_seconds)


class StaticKeys:
    """Keys known in advance (tests, and a stack with a fixed set of keys)."""

    def __init__(self, keys: Mapping[str, Principal]) -> None:
        self._keys = dict(keys)

    async def resolve(self, presented: str) -> Principal | None:
        return self._keys.get(presented)
