"""The audit hash chain: hashing is canonical, and verification names an edited, deleted or reordered entry."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from mloop_registry.audit_chain import GENESIS, ChainedEntry, content_hash, entry_hash, verify_chain

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def chain(n: int) -> list[ChainedEntry]:
    entries: list[ChainedEntry] = []
    for i in range(1, n + 1):
        prev = entries[-1].hash if entries else GENESIS
        fields = {
            "at": T0 + timedelta(seconds=i),
            "actor": "alice",
            "action": "alias.moved",
            "model": "churn",
            "version": i,
            "detail": {"alias": "production", "metrics": {"f1": 0.5 + i / 100}},
        }
        entries.append(ChainedEntry(id=i, **fields, prev_hash=prev, hash=entry_hash(**fields, prev_hash=prev)))
    return entries


def test_an_untouched_chain_verifies_and_reports_its_head():
    entries = chain(5)

    report = verify_chain(entries)

    assert (report.ok, report.entries, report.first_bad_id, report.last_hash) == (True, 5, None, entries[-1].hash)


def test_an_empty_log_verifies_with_the_genesis_head():
    assert verify_chain([]).model_dump() == {
        "ok": True,
        "entries": 0,
        "first_bad_id": None,
        "reason": "",
        "last_hash": GENESIS,
    }


def test_the_hash_does_not_depend_on_key_order_or_time_zone():
    fields = {"actor": "a", "action": "x", "model": None, "version": None, "prev_hash": GENESIS}
    one = entry_hash(at=T0, detail={"a": 1, "b": [1, 2]}, **fields)
    other = entry_hash(at=T0.astimezone(timezone(timedelta(hours=2))), detail={"b": [1, 2], "a": 1}, **fields)

    assert one == other
    assert one != entry_hash(at=T0, detail={"a": 1, "b": [2, 1]}, **fields)


def test_every_field_and_the_predecessor_are_covered_by_the_hash():
    entry = chain(1)[0]
    changes = {
        "at": T0,
        "actor": "mallory",
        "action": "version.approved",
        "model": "fraud",
        "version": 99,
        "detail": {"alias": "canary"},
        "prev_hash": "f" * 64,
    }

    for field, value in changes.items():
        assert content_hash(entry.model_copy(update={field: value})) != entry.hash, field


def test_an_edited_entry_is_named():
    entries = chain(5)
    entries[2] = entries[2].model_copy(update={"detail": {"alias": "production", "metrics": {"f1": 0.99}}})

    report = verify_chain(entries)

    assert (report.ok, report.first_bad_id, report.entries) == (False, 3, 2)
    assert report.reason.startswith("edited: entry 3")


def test_a_deleted_entry_is_named_by_the_gap_it_leaves():
    entries = chain(5)
    del entries[2]

    report = verify_chain(entries)

    assert (report.ok, report.first_bad_id) == (False, 4)
    assert report.reason.startswith("deleted:") and "entries 3..3 are missing" in report.reason


def test_deleting_the_first_entry_is_detected():
    report = verify_chain(chain(3)[1:])

    assert (report.ok, report.first_bad_id) == (False, 2)
    assert report.reason.startswith("deleted:") and "1..1" in report.reason


def test_swapped_entries_are_reported_as_reordered():
    entries = chain(4)
    second, third = entries[1], entries[2]
    entries[1], entries[2] = third.model_copy(update={"id": 2}), second.model_copy(update={"id": 3})

    report = verify_chain(entries)

    assert (report.ok, report.first_bad_id) == (False, 2)
    assert report.reason.startswith("reordered: entry 2 does not follow entry 1")


def test_an_entry_rewritten_with_a_fresh_hash_breaks_the_link_after_it():
    entries = chain(4)
    forged = entries[1].model_copy(update={"actor": "mallory"})
    entries[1] = forged.model_copy(update={"hash": content_hash(forged)})

    report = verify_chain(entries)

    assert (report.ok, report.first_bad_id) == (False, 3)
    assert report.reason.startswith("reordered: entry 3")
