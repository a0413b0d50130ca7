"""The internal topic __consumer_offsets through confluent-kafka (librdkafka), its records
decoded here from Kafka's published schema (OffsetCommitKey v1: version, group, topic,
partition; OffsetCommitValue v3: version, offset, leader epoch, metadata, commit timestamp;
a null value is a tombstone).

  offsets BOOTSTRAP TOPIC GROUP
      Creates TOPIC (2 partitions) and writes 4 records to each. A consumer of GROUP commits
      offset 3 of partition 0 with metadata "m1" and offset 4 of partition 1; the
      AdminClient then shows __consumer_offsets as internal with 50 partitions and
      cleanup.policy=compact. A consumer assigned to the partition Kafka places GROUP in
      (abs(Java String.hashCode) % 50) reads both commits there in Kafka's format. After
      the group is deleted (DeleteGroups), the same partition ends with a tombstone for each.
      Producing to __consumer_offsets is refused (TOPIC_EXCEPTION, Kafka's
      INVALID_TOPIC_EXCEPTION), creating it is TOPIC_ALREADY_EXISTS, deleting records of it
      INVALID_TOPIC_EXCEPTION (librdkafka: TOPIC_EXCEPTION).
"""

import struct
import sys

from common import Deadline, Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard
OFFSETS = "__consumer_offsets"
RUN = Run("offsets-topic")


def java_hash(s):
    """Java's String.hashCode: over UTF-16 code units, 32-bit wrapping."""
    h = 0
    units = s.encode("utf-16-be")
    for i in range(0, len(units), 2):
        h = (h * 31 + struct.unpack(">H", units[i : i + 2])[0]) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def partition_for(group, partitions=50):
    h = java_hash(group)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def read_string(b, at):
    (n,) = struct.unpack_from(">h", b, at)
    return b[at + 2 : at + 2 + n].decode(), at + 2 + n


def decode(key, value):
    """(group, topic, partition, value) with value None or (offset, epoch, metadata, ts)."""
    (version,) = struct.unpack_from(">h", key, 0)
    if version != 1:
        raise ValueError(f"key version {version}")
    group, at = read_string(key, 2)
    topic, at = read_string(key, at)
    (partition,) = struct.unpack_from(">i", key, at)
    if at + 4 != len(key):
        raise ValueError("trailing key bytes")
    if value is None:
        return group, topic, partition, None
    (version, offset, epoch) = struct.unpack_from(">hqi", value, 0)
    if version != 3:
        raise ValueError(f"value version {version}")
    metadata, at = read_string(value, 14)
    (ts,) = struct.unpack_from(">q", value, at)
    if at + 8 != len(value):
        raise ValueError("trailing value bytes")
    return group, topic, partition, (offset, epoch, metadata, ts)


def read_all(bootstrap, partition):
    """Every record of a partition of __consumer_offsets, as (offset, decoded)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "offsets-topic-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    out = []
    try:
        c.assign([TopicPartition(OFFSETS, partition, 0)])
        deadline = Deadline(TIMEOUT)
        while not deadline.expired():
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == -191:  # _PARTITION_EOF
                    break
                raise RuntimeError(msg.error().str())
            out.append((msg.offset(), decode(msg.key(), msg.value())))
    finally:
        c.close()
    return out


def offsets(run, bootstrap, topic, group):
    from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
    from confluent_kafka.admin import (
        AdminClient,
        ConfigResource,
        NewTopic,
        ResourceType,
    )
    from confluent_kafka import TopicCollection

    admin = AdminClient({"bootstrap.servers": bootstrap})
    (f,) = admin.create_topics([NewTopic(topic, 2, 1)]).values()
    f.result(timeout=TIMEOUT)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    for p in (0, 1):
        for i in range(4):
            producer.produce(topic, key=b"k", value=f"v{i}".encode(), partition=p)
    run.check(producer.flush(TIMEOUT) == 0, "records not delivered")

    with run.step("commit"):
        c = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        c.commit(
            offsets=[
                TopicPartition(topic, 0, 3, "m1"),
                TopicPartition(topic, 1, 4),
            ],
            asynchronous=False,
        )
        c.close()

    with run.step("described"):
        (f,) = admin.describe_topics(TopicCollection([OFFSETS])).values()
        d = f.result(timeout=TIMEOUT)
        run.result["is_internal"] = d.is_internal
        run.result["partitions"] = len(d.partitions)
        (f,) = admin.describe_configs([ConfigResource(ResourceType.TOPIC, OFFSETS)]).values()
        configs = f.result(timeout=TIMEOUT)
        run.result["cleanup_policy"] = configs["cleanup.policy"].value

    p = partition_for(group)
    run.result["partition"] = p
    with run.step("read commits"):
        records = read_all(bootstrap, p)
        mine = [(o, r) for o, r in records if r[0] == group]
        run.result["commits"] = [
            [o, r[1], r[2], r[3][0], r[3][1], r[3][2]] for o, r in mine if r[3] is not None
        ]
        # librdkafka sends a commit's metadata with its C string's NUL: the record holds
        # the bytes as sent (OffsetFetch returns them too).
        run.check(
            [(r[1], r[2], r[3][0], r[3][2].rstrip("\x00")) for _, r in mine]
            == [(topic, 0, 3, "m1"), (topic, 1, 4, "")],
            f"commits in partition {p}: {mine}",
        )
        offs = [o for o, _ in mine]
        run.check(offs == sorted(offs) and len(set(offs)) == len(offs), f"offsets {offs}")

    with run.step("delete group"):
        (f,) = admin.delete_consumer_groups([group]).values()
        f.result(timeout=TIMEOUT)
        records = read_all(bootstrap, p)
        mine = [(r[1], r[2], r[3]) for _, r in records if r[0] == group]
        run.result["after_delete"] = [[t, q, v is None] for t, q, v in mine]
        run.check(
            sorted((t, q) for t, q, v in mine[-2:] if v is None) == [(topic, 0), (topic, 1)],
            f"the last records of {group} are not its tombstones: {mine}",
        )

    with run.step("produce refused"):
        errors = []
        prod = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "retries": 0})
        prod.produce(
            OFFSETS,
            key=b"x",
            value=b"y",
            partition=0,
            on_delivery=lambda err, msg: errors.append(err.name() if err else None),
        )
        prod.flush(TIMEOUT)
        run.result["produce"] = errors
        run.check(errors == ["TOPIC_EXCEPTION"], f"produce to {OFFSETS}: {errors}")

    with run.step("create refused"):
        (f,) = admin.create_topics([NewTopic(OFFSETS, 1, 1)]).values()
        try:
            f.result(timeout=TIMEOUT)
            name = None
        except KafkaException as e:
            name = e.args[0].name()
        run.result["create"] = name
        run.check(name == "TOPIC_ALREADY_EXISTS", f"create {OFFSETS}: {name}")

    with run.step("delete records refused"):
        (f,) = admin.delete_records([TopicPartition(OFFSETS, p, 1)]).values()
        try:
            f.result(timeout=TIMEOUT)
            name = None
        except KafkaException as e:
            name = e.args[0].name()
        run.result["delete_records"] = name
        run.check(name == "TOPIC_EXCEPTION", f"delete records of {OFFSETS}: {name}")


if __name__ == "__main__":
    main(RUN, {"offsets": offsets}, sys.argv)
