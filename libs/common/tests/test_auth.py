from typing import ClassVar

import pytest
from pydantic import ValidationError

from mloop_common.auth import (
    ADMIN,
    DEVELOPMENT_ADMIN_KEY,
    Authenticator,
    Permission,
    Principal,
    bearer_key,
    hash_secret,
    new_key,
    parse_stored_key,
    service_key,
    verify_secret,
)
from mloop_common.settings import CommonSettings, ServiceSettings

SECRET = "s" * 40


class CountingKeys:
    def __init__(self, known: dict[str, Principal]) -> None:
        self.known, self.calls = known, 0

    async def resolve(self, presented: str) -> Principal | None:
        self.calls += 1
        return self.known.get(presented)


def test_a_stored_secret_verifies_and_nothing_else_does():
    stored = hash_secret("right")

    assert verify_secret("right", stored)
    assert not verify_secret("wrong", stored)
    assert not verify_secret("right", stored.replace("scrypt", "md5"))
    assert not verify_secret("right", "garbage")
    assert hash_secret("right") != stored  # salted


def test_a_new_key_parses_back_to_its_id_and_its_hash_checks():
    made = new_key()
    parsed = parse_stored_key(made.key)

    assert parsed is not None and parsed[0] == made.key_id
    assert verify_secret(parsed[1], made.hash)
    assert parse_stored_key(made.key + "x") is None and parse_stored_key("mlk_zz_short") is None


@pytest.mark.parametrize(
    ("header", "key"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer ", None), (None, None)],
)
def test_only_a_bearer_header_carries_a_key(header, key):
    assert bearer_key(header) == key


async def test_the_admin_key_and_genuine_service_keys_need_no_lookup():
    keys = CountingKeys({})
    auth = Authenticator(secret=SECRET, admin_key="the-admin-key", resolver=keys)

    assert await auth.authenticate("the-admin-key") == ADMIN
    validator = await auth.authenticate(service_key(SECRET, "validator"))
    assert validator == Principal("service:validator", "service:validator")
    assert validator.allows(Permission.REGISTER) and not validator.allows(Permission.RELEASE)
    assert not (await auth.authenticate(service_key(SECRET, "serving"))).allows(Permission.REGISTER)  # type: ignore[union-attr]
    assert await auth.authenticate(service_key("another-secret" * 3, "validator")) is None
    assert await auth.authenticate(service_key(SECRET, "intruder")) is None
    assert keys.calls == 0


async def test_a_stored_key_is_resolved_once_then_cached_until_it_expires_and_garbage_is_never_looked_up():
    made = new_key()
    alice = Principal("alice", "viewer", made.key_id)
    keys = CountingKeys({made.key: alice})
    now = [0.0]
    auth = Authenticator(secret=SECRET, admin_key="a", resolver=keys, cache_seconds=30, clock=lambda: now[0])

    assert await auth.authenticate(made.key) == alice
    assert await auth.authenticate(made.key) == alice
    assert keys.calls == 1
    forged = new_key().key
    assert await auth.authenticate(forged) is None and await auth.authenticate(forged) is None
    assert keys.calls == 2  # a refusal is cached too: guessing costs the registry one hash per key
    assert await auth.authenticate("not a key at all") is None and keys.calls == 2
    now[0] = 31
    assert await auth.authenticate(made.key) == alice and keys.calls == 3
    auth.forget(made.key_id)
    assert await auth.authenticate(made.key) == alice and keys.calls == 4


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        ("viewer", Permission.READ, Permission.PUBLISH),
        ("app", Permission.PREDICT, Permission.READ),
        ("data-engineer", Permission.PUBLISH, Permission.SPECS),
        ("data-scientist", Permission.SPECS, Permission.RELEASE),
        ("approver", Permission.RELEASE, Permission.REGISTER),
        ("admin", Permission.ADMIN, None),
    ],
)
def test_each_role_carries_its_permissions_only(role, allowed, refused):
    principal = Principal("x", role)
    assert principal.allows(allowed) and principal.allows(Permission.PUBLIC)
    assert refused is None or not principal.allows(refused)
    assert not Principal("x", "superuser").allows(Permission.READ)


@pytest.mark.parametrize("environment", ["test", "production"])
def test_outside_development_the_public_defaults_and_short_secrets_are_refused(monkeypatch, environment):
    monkeypatch.setenv("MLOOP_ENVIRONMENT", environment)
    with pytest.raises(ValidationError, match="MLOOP_AUTH__SECRET"):
        CommonSettings()
    monkeypatch.setenv("MLOOP_AUTH__SECRET", "x" * 32)
    with pytest.raises(ValidationError, match="MLOOP_AUTH__ADMIN_KEY"):
        CommonSettings(auth={"secret": "x" * 32, "admin_key": DEVELOPMENT_ADMIN_KEY})
    with pytest.raises(ValidationError, match="at least 32"):
        CommonSettings(auth={"secret": "x" * 32, "admin_key": "short"})
    assert CommonSettings(auth={"secret": "x" * 32, "admin_key": "y" * 32}).environment == environment


@pytest.mark.parametrize(
    "url",
    [
        None,  # the local default, with its well-known password
        "postgresql+asyncpg://trainer@db:5432/mloop",  # no password at all
        "postgresql+asyncpg://trainer:trainer@db:5432/mloop",
    ],
)
def test_outside_development_a_service_refuses_a_database_url_without_a_password_of_its_own(monkeypatch, url):
    class TrainerSettings(ServiceSettings):
        service: ClassVar[str] = "trainer"

    monkeypatch.setenv("MLOOP_ENVIRONMENT", "test")
    monkeypatch.setenv("MLOOP_AUTH__SECRET", "x" * 32)
    monkeypatch.setenv("MLOOP_AUTH__ADMIN_KEY", "y" * 32)
    with pytest.raises(ValidationError, match="MLOOP_TRAINER_DATABASE_URL must be set"):
        TrainerSettings(database_url=url)
    assert TrainerSettings(database_url="postgresql+asyncpg://trainer:s3cret@db:5432/mloop").database_url
