"""The prediction log's spill file: append-only, bounded, replayed in order, and safe across restarts and crashes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from mloop_common.events import Envelope, PredictionRecord, PredictionsLogged, new_event, to_record
from mloop_serving.spill import MemorySpill, SpillFile, encode_line


def event(records: int = 2, model: str = "churn") -> Envelope:
    now = datetime.now(UTC)
    payload = PredictionsLogged(
        model=model,
        version=1,
        records=[
            PredictionRecord(request_id=uuid.uuid4().hex, timestamp=now, inputs={"plan": "pro"}, prediction="no")
            for _ in range(records)
        ],
    )
    return new_event(payload, source="mloop/serving", subject=model).with_trace(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None
    )


def drain(spill: SpillFile | MemorySpill) -> list[tuple[Envelope, int]]:
    out = []
    while (head := spill.head()) is not None:
        out.append(head)
        spill.pop()
    return out


def test_events_come_back_in_order_exactly_as_kafka_would_have_received_them(tmp_path: Path) -> None:
    spill = SpillFile(tmp_path / "log.spill", max_bytes=10_000_000)
    events = [event(1), event(3), event(2)]

    assert spill.append([(e, len(e.data["records"])) for e in events]) == 3
    back = drain(spill)

    assert [to_record(e) for e, _ in back] == [to_record(e) for e in events]
    assert [n for _, n in back] == [1, 3, 2]


def test_a_reopened_spill_resumes_after_what_was_already_replayed(tmp_path: Path) -> None:
    path = tmp_path / "log.spill"
    first = SpillFile(path, max_bytes=10_000_000)
    events = [event(), event(), event()]
    first.append([(e, 2) for e in events])
    first.head()
    first.pop()

    again = SpillFile(path, max_bytes=10_000_000)

    assert [e.id for e, _ in drain(again)] == [e.id for e in events[1:]]


def test_a_fully_replayed_spill_is_emptied(tmp_path: Path) -> None:
    path = tmp_path / "log.spill"
    spill = SpillFile(path, max_bytes=10_000_000)
    spill.append([(event(), 2), (event(), 2)])

    drain(spill)

    assert spill.empty and spill.size == 0
    assert path.stat().st_size == 0 and not path.with_name("log.spill.offset").exists()
    assert SpillFile(path, max_bytes=10_000_000).empty


def test_appends_beyond_the_byte_bound_are_refused(tmp_path: Path) -> None:
    one = event()
    line = len(encode_line(one, 2))
    spill = SpillFile(tmp_path / "log.spill", max_bytes=2 * line + line // 2)
    memory = MemorySpill(max_bytes=2 * line + line // 2)

    taken = spill.append([(one, 2)] * 3)
    taken_in_memory = memory.append([(one, 2)] * 3)

    assert (taken, taken_in_memory) == (2, 2)
    assert spill.size == 2 * line == (tmp_path / "log.spill").stat().st_size
    assert spill.append([(one, 2)]) == 0


def test_an_append_cut_short_by_a_crash_is_dropped_and_does_not_spoil_the_next(tmp_path: Path) -> None:
    path = tmp_path / "log.spill"
    whole, torn, later = event(), event(), event()
    SpillFile(path, max_bytes=10_000_000).append([(whole, 2)])
    with path.open("ab") as file:
        file.write(encode_line(torn, 2)[:-40])  # the process died mid-write

    reopened = SpillFile(path, max_bytes=10_000_000)
    reopened.append([(later, 2)])

    assert [e.id for e, _ in drain(reopened)] == [whole.id, later.id]
    assert reopened.lost_lines == 1


def test_an_unreadable_line_is_skipped_and_the_rest_replayed(tmp_path: Path) -> None:
    path = tmp_path / "log.spill"
    good = event()
    path.write_bytes(b'{"n": 1, "value": "{}", "headers": []}\n' + encode_line(good, 2))

    spill = SpillFile(path, max_bytes=10_000_000)

    assert [e.id for e, _ in drain(spill)] == [good.id]
    assert spill.lost_lines == 1


def test_nothing_is_created_on_disk_until_something_is_spilled(tmp_path: Path) -> None:
    folder = tmp_path / "spill"
    spill = SpillFile(folder / "log.spill", max_bytes=10_000_000)

    assert spill.empty and not folder.exists()
    spill.append([(event(), 2)])
    assert (folder / "log.spill").stat().st_size == spill.size > 0
