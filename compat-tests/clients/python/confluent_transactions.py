"""woodpecker-rs's transactions driven by confluent-kafka (librdkafka).

Scenarios (each prints `RESULT <json>`, see common.py):

  txn BOOTSTRAP IN OUT GROUP N
      AdminClient creates IN and OUT (2 partitions each). A transactional producer writes N
      records to IN in transactions of 10 and aborts every fourth (flushed first, so that the
      aborted records are in the log). A consumer with librdkafka's default isolation
      (read_committed) must read exactly the committed records, in order per partition; one
      with read_uncommitted reads all N. Then a consume-transform-produce loop (a GROUP
      consumer, a second transactional producer, send_offsets_to_transaction with the
      consumer's group metadata) copies the committed records to OUT; OUT read back with
      read_committed holds each of them once, and GROUP's committed offsets are the ends of
      IN (librdkafka commits its positions, one past the end after a partition-EOF event: at or
      past the ends). Finally a producer with the loop's transactional id fences the loop's producer.
"""

import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from common import Deadline, Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard
PARTITIONS = 2


def producer(bootstrap, transactional_id):
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": transactional_id,
            "transaction.timeout.ms": 20000,
            "linger.ms": 5,
        }
    )


def consumer(bootstrap, isolation, group=None):
    conf = {
        "bootstrap.servers": bootstrap,
        "isolation.level": isolation,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "session.timeout.ms": 10000,
    }
    conf["group.id"] = group or "unused-" + isolation
    return Consumer(conf)


def read_all(run, bootstrap, topic, isolation):
    """Every record of `topic`, read with `isolation` from the start to the partition ends."""
    c = consumer(bootstrap, isolation)
    c.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out = []
    at_end = set()
    deadline = Deadline(120)
    try:
        while len(at_end) < PARTITIONS and not deadline.expired():
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            out.append((msg.partition(), msg.offset(), msg.value().decode()))
    finally:
        c.close()
    run.check(len(at_end) == PARTITIONS, f"reading {topic} ({isolation}) did not reach the end")
    return out


def scenario_txn(run, bootstrap, topic_in, topic_out, group, n):
    n = int(n)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics(
        [NewTopic(t, num_partitions=PARTITIONS, replication_factor=1) for t in (topic_in, topic_out)]
    ).values():
        f.result(TIMEOUT)

    committed, aborted = [], 0
    with run.step("transactional producer"):
        p = producer(bootstrap, "ck-txn-writer")
        p.init_transactions(TIMEOUT)
        for t in range(0, (n + 9) // 10):
            abort = t % 4 == 3
            p.begin_transaction()
            for i in range(t * 10, min(n, t * 10 + 10)):
                v = f"aborted-{i}" if abort else f"v{i}"
                p.produce(topic_in, value=v, key=f"k{i}", partition=i % PARTITIONS)
                if abort:
                    aborted += 1
                else:
                    committed.append(v)
            if abort:
                p.flush(TIMEOUT)
                p.abort_transaction(TIMEOUT)
            else:
                p.commit_transaction(TIMEOUT)
    run.result["committed_written"] = len(committed)
    run.result["aborted_written"] = aborted

    with run.step("read_committed"):
        seen = read_all(run, bootstrap, topic_in, "read_committed")
        values = [v for (_, _, v) in seen]
        run.result["read_committed"] = len(values)
        run.check(not any(v.startswith("aborted-") for v in values),
                  "read_committed returned records of aborted transactions")
        run.check(sorted(values) == sorted(committed),
                  f"read_committed read {len(values)} records, expected exactly the {len(committed)} committed")
        for part in range(PARTITIONS):
            nums = [int(v[1:]) for (pp, _, v) in seen if pp == part]
            run.check(nums == sorted(nums), f"partition {part} out of order: {nums}")
    with run.step("read_uncommitted"):
        everything = read_all(run, bootstrap, topic_in, "read_uncommitted")
        run.result["read_uncommitted"] = len(everything)
        run.check(len(everything) == n, f"read_uncommitted read {len(everything)}, expected {n}")

    with run.step("consume-transform-produce"):
        c = consumer(bootstrap, "read_committed", group)
        c.subscribe([topic_in])
        p = producer(bootstrap, "ck-txn-ctp")
        p.init_transactions(TIMEOUT)
        copied, transactions = 0, 0
        at_end = set()
        deadline = Deadline(120)
        while (copied < len(committed) or len(at_end) < PARTITIONS) and not deadline.expired():
            msgs = c.consume(100, 0.5)
            records = []
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(m.partition())
                        continue
                    raise KafkaException(m.error())
                at_end.discard(m.partition())
                records.append(m)
            positions = [tp for tp in c.position(c.assignment()) if tp.offset >= 0]
            if not records and not positions:
                continue
            p.begin_transaction()
            for m in records:
                p.produce(topic_out, value=m.value().decode().upper(), key=m.key(),
                          partition=m.partition())
            # Positions, past the commit markers too, so that the group ends at the ends.
            p.send_offsets_to_transaction(positions, c.consumer_group_metadata(), TIMEOUT)
            p.commit_transaction(TIMEOUT)
            copied += len(records)
            transactions += 1
        run.result["copied"] = copied
        run.result["copy_transactions"] = transactions
        ends = {}
        for part in range(PARTITIONS):
            low, high = c.get_watermark_offsets(TopicPartition(topic_in, part), TIMEOUT)
            ends[part] = high
        got = {tp.partition: tp.offset for tp in c.committed(
            [TopicPartition(topic_in, part) for part in range(PARTITIONS)], TIMEOUT)}
        run.result["group_offsets"] = {str(k): v for k, v in got.items()}
        run.result["in_ends"] = {str(k): v for k, v in ends.items()}
        # librdkafka reports the position after a partition-EOF event one past the end, and
        # commits what it reports (a Kafka broker stores it as given): at or past the ends.
        run.check(all(got.get(p, -1) >= ends[p] for p in ends),
                  f"group offsets {got}, the ends of {topic_in} are {ends}")
        c.close()

        # A new producer with the same transactional id fences the loop's producer.
        fencer = producer(bootstrap, "ck-txn-ctp")
        fencer.init_transactions(TIMEOUT)
        try:
            p.begin_transaction()
            p.produce(topic_out, value="ZOMBIE", partition=0)
            p.commit_transaction(TIMEOUT)
            run.fail("a fenced producer committed a transaction")
        except KafkaException as e:
            err = e.args[0]
            run.result["fenced"] = err.name()
            run.check(err.fatal() or err.code() in (KafkaError._FENCED, KafkaError.PRODUCER_FENCED,
                                                    KafkaError.INVALID_PRODUCER_EPOCH),
                      f"the fenced producer got {err}")

    with run.step("output"):
        out = [v for (_, _, v) in read_all(run, bootstrap, topic_out, "read_committed")]
        run.result["out_read_committed"] = len(out)
        run.check(sorted(out) == sorted(v.upper() for v in committed),
                  f"the output holds {len(out)} records, expected exactly the {len(committed)} transformed inputs")


if __name__ == "__main__":
    main(Run("confluent-txn"), {"txn": scenario_txn}, sys.argv)
