"""Consumer-group offsets, read and rewound from outside the services: what an operator's replay does.

Test code only (the product's Kafka code stays in ``mloop_common.bus``). Rewinding works only on a group
with no live member, as with ``kafka-consumer-groups.sh --reset-offsets``: stop its services first.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

Offsets = dict[TopicPartition, int]


async def end_offsets(bootstrap: str, topics: Iterable[str]) -> Offsets:
    """The next offset of every partition of ``topics``."""
    wanted = sorted(set(topics))
    if not wanted:
        return {}
    consumer = AIOKafkaConsumer(*wanted, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()  # without a group it is given every partition of its topics
    try:
        return dict(await consumer.end_offsets(list(consumer.assignment())))
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str) -> Offsets:
    """The offsets ``group`` has committed, by partition."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        found = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in found.items() if meta.offset >= 0}


async def rewind(bootstrap: str, group: str, to: Offsets) -> Offsets:
    """Commit, for every partition ``group`` has consumed, the offset in ``to`` (0 where ``to`` has none).

    Returns what was committed. The group must have no live member, or the broker refuses the commit.
    """
    target = {tp: to.get(tp, 0) for tp in await committed(bootstrap, group)}
    if not target:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(target))
        await consumer.commit(target)
    finally:
        await consumer.stop()
    return target


async def caught_up(bootstrap: str, group: str, ends: Offsets) -> bool:
    """Whether ``group`` has committed at least ``ends`` on each of those partitions it consumes."""
    done = await committed(bootstrap, group)
    return all(done[tp] >= end for tp, end in ends.items() if tp in done)
