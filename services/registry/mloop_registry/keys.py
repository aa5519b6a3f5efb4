"""API keys: created, listed and revoked here (the registry keeps their hashes), and checked for others."""

from __future__ import annotations

import asyncio

from mloop_common.auth import Principal, new_key, parse_stored_key, verify_secret
from mloop_common.contracts import KeyList, KeyRequest, KeyView, NewKeyView
from mloop_common.errors import NotFound
from mloop_common.uow import Store
from mloop_registry.entities import ApiKey
from mloop_registry.store import RegistryUnit


class KeyRing:
    """The key table's use cases; also the registry's ``KeyResolver`` (stored keys, checked by hash)."""

    def __init__(self, store: Store[RegistryUnit]) -> None:
        self.store = store

    async def create(self, request: KeyRequest, actor: str) -> NewKeyView:
        made = await asyncio.to_thread(new_key)  # scrypt: tens of ms of CPU, kept off the event loop
        async with self.store.transaction() as unit:
            stored = await unit.add_key(
                ApiKey(
                    key_id=made.key_id,
                    name=request.name,
                    role=request.role,
                    hash=made.hash,
                    created_by=actor,
                )
            )
            await unit.audit(
                actor=actor,
                action="key.created",
                model=None,
                version=None,
                detail={"key_id": made.key_id, "name": request.name, "role": request.role},
            )
        return NewKeyView(**_view(stored).model_dump(), key=made.key)

    async def list(self) -> KeyList:
        async with self.store.transaction() as unit:
            return KeyList(keys=[_view(key) for key in await unit.keys()])

    async def revoke(self, key_id: str, actor: str) -> KeyView:
        async with self.store.transaction() as unit:
            before = await unit.key(key_id)
            if before is None:
                raise NotFound(f"no API key {key_id!r}", field="key_id")
            revoked = await unit.revoke_key(key_id)
            assert revoked is not None
            if before.revoked_at is None:
                await unit.audit(actor=actor, action="key.revoked", model=None, version=None, detail={"key_id": key_id})
        return _view(revoked)

    async def resolve(self, presented: str) -> Principal | None:
        parsed = parse_stored_key(presented)
        if parsed is None:
            return None
        key_id, secret = parsed
        async with self.store.transaction() as unit:
            stored = await unit.key(key_id)
        if stored is None or stored.revoked_at is not None:
            return None
        if not await asyncio.to_thread(verify_secret, secret, stored.hash):
            return None
        return Principal(name=stored.name, role=stored.role, key_id=stored.key_id)


def _view(key: ApiKey) -> KeyView:
    return KeyView.model_validate(key.model_dump(exclude={"hash"}))
