"""Sessions (expiry, eviction, CSRF) and the pipeline feed (order, duplicates, filters, capacity)."""

from __future__ import annotations

from datetime import UTC, datetime

from mloop_common.auth import Permission, Principal
from mloop_common.events import ALL_TOPICS, Envelope
from mloop_ui.bootstrap import start_backlog
from mloop_ui.feed import Feed
from mloop_ui.sessions import Sessions

VIEWER = Principal("vera", "viewer", key_id="1")


def test_a_session_ends_when_its_time_is_up_or_when_closed_and_the_oldest_goes_past_the_limit() -> None:
    now = [1000.0]
    sessions = Sessions(lifetime_seconds=60, max_sessions=2, clock=lambda: now[0])
    first, second = sessions.open("key-1", VIEWER), sessions.open("key-2", VIEWER)
    assert sessions.get(first.id) == first and sessions.get("made-up") is None and sessions.get(None) is None

    third = sessions.open("key-3", VIEWER)
    assert sessions.get(first.id) is None and len(sessions) == 2  # the oldest made room

    sessions.close(second.id)
    now[0] += 61
    assert sessions.get(second.id) is None and sessions.get(third.id) is None and len(sessions) == 0


def test_a_session_knows_its_roles_permissions_and_its_own_form_token_only() -> None:
    session = Sessions(lifetime_seconds=60, max_sessions=5).open("key", VIEWER)
    other = Sessions(lifetime_seconds=60, max_sessions=5).open("key", VIEWER)

    assert session.allows(Permission.READ) and not session.allows(Permission.RELEASE)
    assert session.csrf_matches(session.csrf)
    assert not session.csrf_matches(other.csrf) and not session.csrf_matches(None) and not session.csrf_matches("")
    assert session.id != other.id


def event(n: int, kind: str = "data.published", correlation: str = "c1", **data: object) -> Envelope:
    return Envelope(
        type=kind,
        source="/mloop/ingest",
        subject="rain",
        data=data or {"dataset": "rain", "version": n, "rows": 10},
        id=f"id-{n}",
        time=datetime(2026, 12, 1, 7, n, tzinfo=UTC),
        correlationid=correlation,
    )


def test_the_feed_lists_new_events_first_once_each_and_what_came_after_a_point() -> None:
    feed = Feed(capacity=10)
    for n in (1, 2, 3):
        feed.add(event(n))
    assert feed.add(event(2)) is None  # redelivered: kept once

    newest = feed.since()
    assert [e.event_id for e in newest] == ["id-3", "id-2", "id-1"]
    assert newest[0].summary == "rain v3, 10 rows" and newest[0].service == "ingest"
    assert [e.event_id for e in feed.since(after=newest[1].seq)] == ["id-3"]
    assert feed.last_seq == newest[0].seq


def test_the_feed_filters_by_chain_and_type_and_forgets_the_oldest_past_its_capacity() -> None:
    feed = Feed(capacity=3)
    feed.add(event(1, correlation="a"))
    feed.add(event(2, kind="spec.changed", correlation="b", spec_version=2))
    feed.add(event(3, correlation="b"))
    feed.add(event(4, correlation="b"))

    assert [e.event_id for e in feed.since()] == ["id-4", "id-3", "id-2"]
    assert [e.event_id for e in feed.since(correlation_id="b", types=["data.published"])] == ["id-4", "id-3"]
    assert feed.add(event(1, correlation="a")) is not None  # forgotten, so new again


def test_at_start_the_feed_reads_back_a_little_of_every_topic_and_only_a_few_of_the_big_batches() -> None:
    backlog = start_backlog(2000)

    assert set(backlog) == set(ALL_TOPICS)
    assert backlog["data.published"] == 100 and backlog["model.promoted"] == 100
    assert backlog["predictions.logged"] == 5 and backlog["feedback.received"] == 5
    assert start_backlog(10)["drift.detected"] == 20
