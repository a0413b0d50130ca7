"""woodpecker-rs's Kafka listener driven by confluent-kafka (librdkafka).

Scenarios (each prints `RESULT <json>`, see common.py):

  roundtrip BOOTSTRAP TOPIC AUTO_TOPIC GROUP N
      AdminClient create_topics (3 partitions) for TOPIC; an idempotent zstd producer (acks=all)
      writes N keyed records with headers to TOPIC and N // 10 to AUTO_TOPIC, which nobody
      created; a consumer of GROUP subscribes to both, reads everything back (keys, values,
      headers, per-partition order) and commits synchronously; a second consumer of GROUP
      then reads only the sentinels produced after that commit. Along the way the AdminClient
      lists topics, describes the cluster, lists and describes groups, lists group offsets,
      lists offsets and describes the topic's configs.

  codecs BOOTSTRAP TOPIC_PREFIX N
      For each codec (none, gzip, snappy, lz4, zstd): an idempotent producer writes N records
      to partition 0 of TOPIC_PREFIX-CODEC in a few large batches; a consumer without a group
      reads them back (1) from the beginning with tiny fetch limits (fetch.max.bytes and
      max.partition.fetch.bytes far below one batch: the broker must still return a whole
      batch), and (2) from an offset in the middle of a batch; then the low/high watermarks.

  live-producer BOOTSTRAP TOPIC N
      One idempotent producer lives across a server restart: it writes N records to partition 0
      of TOPIC, prints `PAUSED` on stdout and waits for a line on stdin (the test restarts the
      server meanwhile), then writes N more with the same producer id and continuing sequence
      numbers. All 2N must land once, at offsets 0..2N, and read back in order.

  restart-before BOOTSTRAP TOPIC GROUP N
      Creates TOPIC (2 partitions), produces N records with an idempotent producer, consumes
      them in GROUP and commits; reports watermarks and committed offsets.

  restart-after BOOTSTRAP TOPIC GROUP N BEFORE_JSON
      After a server restart: the topic, its watermarks and GROUP's committed offsets are those
      of BEFORE_JSON (the `restart-before` summary); a fresh idempotent producer's N records
      continue at the old end offsets, and GROUP reads exactly those N records.
"""

import functools
import json
import sys

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewTopic,
    OffsetSpec,
    ResourceType,
)

from common import Deadline, Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard


def admin_client(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "compat-ck-admin"})


def idempotent_producer(bootstrap, client_id):
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": "zstd",
            "linger.ms": 5,
            "message.timeout.ms": 60000,
        }
    )


def consumer(bootstrap, group, client_id):
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": client_id,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
        }
    )


def create_topic(run, admin, topic, partitions):
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
        operation_timeout=TIMEOUT,
        request_timeout=TIMEOUT,
    )
    futures[topic].result(timeout=2 * TIMEOUT)
    run.log(f"created {topic} with {partitions} partitions")


def record(i, prefix):
    """The key, value and headers of record `i`: binary values, a null header value."""
    key = f"{prefix}-k-{i}".encode()
    value = f"{prefix}-v-{i}:".encode() + b"x" * (i % 50) + bytes([i % 256, 0, 255])
    headers = [("idx", str(i).encode()), ("kind", b"compat"), ("empty", b""), ("null", None)]
    return key, value, headers


class Delivered:
    """Delivery reports of a producer, by (topic, partition), in delivery order."""

    def __init__(self):
        self.by_tp = {}
        self.errors = []

    def callback(self, sent, err, msg):
        if err is not None:
            self.errors.append(f"{msg.topic()}: {err}")
            return
        key, value, headers = sent
        self.by_tp.setdefault((msg.topic(), msg.partition()), []).append(
            (msg.offset(), key, value, headers)
        )

    def count(self):
        return sum(len(v) for v in self.by_tp.values())


def produce_all(run, producer, delivered, items):
    """Produces `items` = [(topic, partition or None, key, value, headers)] and flushes."""
    for topic, partition, key, value, headers in items:
        sent = (key, value, headers)
        kwargs = {} if partition is None else {"partition": partition}
        while True:
            try:
                producer.produce(
                    topic,
                    value=value,
                    key=key,
                    headers=headers,
                    on_delivery=functools.partial(delivered.callback, sent),
                    **kwargs,
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(2 * TIMEOUT)
    run.check(left == 0, f"producer flush: {left} messages still undelivered")
    run.check(not delivered.errors, f"delivery errors: {delivered.errors[:5]}")


def consume(run, c, want, deadline, what):
    """Polls `c` until `want` messages arrived; returns them as (topic, partition) -> [msg]."""
    got = {}
    n = 0
    while n < want and not deadline.expired():
        msg = c.poll(min(1.0, deadline.left()))
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            run.fail(f"{what}: consumer error {msg.error()}")
            continue
        got.setdefault((msg.topic(), msg.partition()), []).append(msg)
        n += 1
    run.check(n >= want, f"{what}: read {n} of {want} messages within {deadline.seconds} s")
    return got


def norm_headers(headers):
    return [(k, v) for k, v in (headers or [])]


def check_roundtrip(run, delivered, got, what):
    """Per partition, what was delivered (in offset order) is what was consumed, in order."""
    mismatches = 0
    for tp, sent in sorted(delivered.by_tp.items()):
        sent = sorted(sent, key=lambda s: s[0])
        offsets = [s[0] for s in sent]
        run.check(
            offsets == list(range(offsets[0], offsets[0] + len(offsets))),
            f"{what} {tp}: delivered offsets are not consecutive: {offsets[:10]}...",
        )
        msgs = got.get(tp, [])
        if len(msgs) != len(sent):
            run.fail(f"{what} {tp}: consumed {len(msgs)} messages, produced {len(sent)}")
        for (offset, key, value, headers), m in zip(sent, msgs):
            seen = (m.offset(), m.key(), m.value(), norm_headers(m.headers()))
            if seen != (offset, key, value, headers):
                mismatches += 1
                if mismatches <= 3:
                    run.fail(
                        f"{what} {tp}: produced {(offset, key, value, headers)!r}, "
                        f"consumed {seen!r}"
                    )
    for tp in got:
        run.check(tp in delivered.by_tp, f"{what}: consumed from {tp}, where nothing was produced")
    run.result[f"{what}_mismatches"] = mismatches


def watermarks(c, topic, partitions):
    out = {}
    for p in range(partitions):
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=TIMEOUT)
        out[str(p)] = [low, high]
    return out


def committed(c, topic, partitions):
    tps = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=TIMEOUT)
    return {str(tp.partition): tp.offset for tp in tps}


def roundtrip(run, bootstrap, topic, auto_topic, group, n):
    n = int(n)
    n_auto = max(1, n // 10)
    run.result.update(topic=topic, auto_topic=auto_topic, group=group, n=n, n_auto=n_auto)
    admin = admin_client(bootstrap)

    create_topic(run, admin, topic, 3)

    # Idempotent zstd producer: N records to the created topic (key-hash partitioning), N // 10
    # to a topic nobody created (auto-creation on metadata).
    delivered = Delivered()
    producer = idempotent_producer(bootstrap, "compat-ck-producer")
    items = [(topic, None, *record(i, "a")) for i in range(n)]
    items += [(auto_topic, None, *record(i, "auto")) for i in range(n_auto)]
    produce_all(run, producer, delivered, items)
    run.result["delivered"] = delivered.count()
    run.result["partitions_written"] = sorted(f"{t}/{p}" for t, p in delivered.by_tp)

    with run.step("list_topics"):
        md = admin.list_topics(timeout=TIMEOUT)
        run.result["brokers"] = sorted(f"{b.id}@{b.host}:{b.port}" for b in md.brokers.values())
        run.check(len(md.brokers) >= 1, "list_topics: no brokers")
        for t, want in ((topic, 3), (auto_topic, None)):
            tm = md.topics.get(t)
            if not run.check(tm is not None, f"list_topics: {t} missing from {sorted(md.topics)}"):
                continue
            run.check(tm.error is None, f"list_topics: {t} has error {tm.error}")
            run.result[f"partitions_{'created' if want else 'auto'}"] = len(tm.partitions)
            if want is not None:
                run.check(len(tm.partitions) == want, f"list_topics: {t} has {len(tm.partitions)} partitions")
            else:
                run.check(len(tm.partitions) >= 1, f"list_topics: {t} has no partitions")

    with run.step("describe_cluster"):
        cluster = admin.describe_cluster(request_timeout=TIMEOUT).result(timeout=2 * TIMEOUT)
        run.result["cluster_id"] = cluster.cluster_id
        run.result["cluster_nodes"] = sorted(f"{n.id}@{n.host}:{n.port}" for n in cluster.nodes)
        run.check(len(cluster.nodes) >= 1, "describe_cluster: no nodes")

    with run.step("describe_configs"):
        res = ConfigResource(ResourceType.TOPIC, topic)
        configs = admin.describe_configs([res], request_timeout=TIMEOUT)[res].result(
            timeout=2 * TIMEOUT
        )
        run.result["topic_config_entries"] = len(configs)
        run.log(f"describe_configs {topic}: {sorted(configs)[:10]}...")

    # Consumer 1: everything, then a synchronous commit.
    c1 = consumer(bootstrap, group, "compat-ck-c1")
    c1.subscribe([topic, auto_topic])
    got = consume(run, c1, n + n_auto, Deadline(120), "consumer 1")
    check_roundtrip(run, delivered, got, "roundtrip")
    with run.step("commit"):
        for tp in c1.commit(asynchronous=False):
            run.check(tp.error is None, f"commit {tp.topic}/{tp.partition}: {tp.error}")

    auto_partitions = run.result.get("partitions_auto", 1)
    ends = {}
    with run.step("watermarks and committed"):
        ends[topic] = watermarks(c1, topic, 3)
        ends[auto_topic] = watermarks(c1, auto_topic, auto_partitions)
        run.result["watermarks"] = ends
        commits = {topic: committed(c1, topic, 3), auto_topic: committed(c1, auto_topic, auto_partitions)}
        run.result["committed"] = commits
        for t in ends:
            for p, (low, high) in ends[t].items():
                n_sent = len(delivered.by_tp.get((t, int(p)), []))
                run.check(
                    [low, high] == [0, n_sent],
                    f"watermarks {t}/{p}: {[low, high]}, expected [0, {n_sent}]",
                )
                run.check(
                    commits[t][p] == high,
                    f"committed {t}/{p}: {commits[t][p]}, expected the end offset {high}",
                )

    with run.step("list_consumer_groups"):
        groups = admin.list_consumer_groups(request_timeout=TIMEOUT).result(timeout=2 * TIMEOUT)
        ids = sorted(g.group_id for g in groups.valid)
        run.result["listed_groups"] = ids
        run.check(group in ids, f"list_consumer_groups: {group} not in {ids}")

    with run.step("describe_consumer_groups"):
        desc = admin.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result(
            timeout=2 * TIMEOUT
        )
        run.result["group_state"] = str(desc.state)
        run.result["group_members"] = len(desc.members)
        run.check(len(desc.members) == 1, f"describe_consumer_groups: {len(desc.members)} members")

    with run.step("list_consumer_group_offsets"):
        res = admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT
        )[group].result(timeout=2 * TIMEOUT)
        listed = {f"{tp.topic}/{tp.partition}": tp.offset for tp in res.topic_partitions}
        run.result["listed_group_offsets"] = listed
        for t in ends:
            for p, (_, high) in ends[t].items():
                run.check(
                    listed.get(f"{t}/{p}") == high,
                    f"list_consumer_group_offsets {t}/{p}: {listed.get(f'{t}/{p}')}, expected {high}",
                )

    with run.step("list_offsets"):
        specs = {TopicPartition(topic, p): OffsetSpec.latest() for p in range(3)}
        res = admin.list_offsets(specs, request_timeout=TIMEOUT)
        for tp, fut in res.items():
            info = fut.result(timeout=2 * TIMEOUT)
            want = ends.get(topic, {}).get(str(tp.partition), [None, None])[1]
            run.check(
                info.offset == want,
                f"list_offsets latest {topic}/{tp.partition}: {info.offset}, expected {want}",
            )
        specs = {TopicPartition(topic, p): OffsetSpec.earliest() for p in range(3)}
        for tp, fut in admin.list_offsets(specs, request_timeout=TIMEOUT).items():
            info = fut.result(timeout=2 * TIMEOUT)
            run.check(info.offset == 0, f"list_offsets earliest {topic}/{tp.partition}: {info.offset}")

    c1.close()

    # Sentinels after the commit; consumer 2 of the same group must start at the committed
    # offsets, so the sentinels are all it reads.
    sentinels = Delivered()
    producer2 = idempotent_producer(bootstrap, "compat-ck-producer2")
    items = [(topic, p, *record(p, "sentinel")) for p in range(3)]
    items += [(auto_topic, p, *record(p, "sentinel")) for p in range(auto_partitions)]
    produce_all(run, producer2, sentinels, items)
    for (t, p), sent in sentinels.by_tp.items():
        want = ends.get(t, {}).get(str(p), [None, None])[1]
        run.check(
            [s[0] for s in sent] == [want],
            f"sentinel {t}/{p}: delivered at {[s[0] for s in sent]}, expected [{want}]",
        )
    c2 = consumer(bootstrap, group, "compat-ck-c2")
    c2.subscribe([topic, auto_topic])
    got2 = consume(run, c2, len(items), Deadline(120), "consumer 2")
    seen = {f"{t}/{p}": [(m.offset(), m.key().decode()) for m in msgs] for (t, p), msgs in got2.items()}
    run.result["consumer2_seen"] = seen
    check_roundtrip(run, sentinels, got2, "after_commit")
    with run.step("commit 2"):
        c2.commit(asynchronous=False)
    c2.close()


def codecs(run, bootstrap, prefix, n):
    n = int(n)
    run.result.update(prefix=prefix, n=n)
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        topic = f"{prefix}-{codec}"
        with run.step(codec):
            delivered = Delivered()
            producer = Producer(
                {
                    "bootstrap.servers": bootstrap,
                    "client.id": f"compat-ck-{codec}",
                    "enable.idempotence": True,
                    "acks": "all",
                    "compression.type": codec,
                    # Few, large batches: many records per batch.
                    "linger.ms": 50,
                    "batch.num.messages": 1000,
                    "message.timeout.ms": 60000,
                }
            )
            produce_all(run, producer, delivered, [(topic, 0, *record(i, codec)) for i in range(n)])
            tp = (topic, 0)

            # (1) Tiny fetch limits: progress needs the first batch in full whatever its size.
            c = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": f"unused-{codec}",
                    "enable.auto.commit": False,
                    "message.max.bytes": 1000,
                    "fetch.max.bytes": 1024,
                    "max.partition.fetch.bytes": 512,
                    # The client's own frame limit stays large: a whole batch must fit.
                    "receive.message.max.bytes": 64 * 1024 * 1024,
                }
            )
            c.assign([TopicPartition(topic, 0, 0)])
            got = consume(run, c, n, Deadline(120), f"{codec} tiny fetches")
            check_roundtrip(run, delivered, got, codec)

            # (2) From the middle of a batch: the first record is exactly the one asked for.
            middle = n // 2 + 1
            c.assign([TopicPartition(topic, 0, middle)])
            rest = consume(run, c, n - middle, Deadline(120), f"{codec} from offset {middle}")
            offsets = [m.offset() for m in rest.get(tp, [])]
            run.check(
                offsets == list(range(middle, n)),
                f"{codec}: reading from offset {middle} gave offsets {offsets[:5]}...{offsets[-3:]}",
            )
            run.result[f"{codec}_watermarks"] = c.get_watermark_offsets(
                TopicPartition(topic, 0), timeout=TIMEOUT
            )
            run.check(
                list(run.result[f"{codec}_watermarks"]) == [0, n],
                f"{codec}: watermarks {run.result[f'{codec}_watermarks']}, expected [0, {n}]",
            )
            c.close()
            run.log(f"{codec}: ok")


def live_producer(run, bootstrap, topic, n):
    n = int(n)
    run.result.update(topic=topic, n=n)
    delivered = Delivered()
    producer = idempotent_producer(bootstrap, "compat-ck-live")
    produce_all(run, producer, delivered, [(topic, 0, *record(i, "live")) for i in range(n)])
    run.result["before_restart"] = delivered.count()
    print("PAUSED", flush=True)
    line = sys.stdin.readline()
    run.check(line.strip() == "go", f"expected `go` on stdin, got {line!r}")
    produce_all(run, producer, delivered, [(topic, 0, *record(i, "live")) for i in range(n, 2 * n)])
    run.result["delivered"] = delivered.count()
    sent = sorted(delivered.by_tp.get((topic, 0), []), key=lambda s: s[0])
    run.check(
        [s[0] for s in sent] == list(range(2 * n)),
        f"delivered offsets {[s[0] for s in sent][n - 2 : n + 3]} around the restart, expected 0..{2 * n}",
    )
    c = consumer(bootstrap, "compat-ck-live", "compat-ck-live")
    c.assign([TopicPartition(topic, 0, 0)])
    got = consume(run, c, 2 * n, Deadline(120), "live producer read-back")
    check_roundtrip(run, delivered, got, "live")
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=TIMEOUT)
    run.result["watermarks"] = [low, high]
    run.check([low, high] == [0, 2 * n], f"watermarks {[low, high]}, expected [0, {2 * n}]")
    c.close()


def restart_before(run, bootstrap, topic, group, n):
    n = int(n)
    run.result.update(topic=topic, group=group, n=n)
    admin = admin_client(bootstrap)
    create_topic(run, admin, topic, 2)
    delivered = Delivered()
    producer = idempotent_producer(bootstrap, "compat-ck-before")
    produce_all(run, producer, delivered, [(topic, i % 2, *record(i, "before")) for i in range(n)])
    c = consumer(bootstrap, group, "compat-ck-before")
    c.subscribe([topic])
    got = consume(run, c, n, Deadline(120), "before")
    check_roundtrip(run, delivered, got, "before")
    for tp in c.commit(asynchronous=False):
        run.check(tp.error is None, f"commit {tp.topic}/{tp.partition}: {tp.error}")
    run.result["watermarks"] = watermarks(c, topic, 2)
    run.result["committed"] = committed(c, topic, 2)
    for p, (low, high) in run.result["watermarks"].items():
        run.check(run.result["committed"][p] == high, f"committed {p}: {run.result['committed'][p]} != {high}")
        run.check(high == len(delivered.by_tp.get((topic, int(p)), [])), f"watermark {p}: {high}")
    c.close()


def restart_after(run, bootstrap, topic, group, n, before_json):
    n = int(n)
    before = json.loads(before_json)
    run.result.update(topic=topic, group=group, n=n)
    admin = admin_client(bootstrap)
    with run.step("list_topics after restart"):
        md = admin.list_topics(timeout=TIMEOUT)
        tm = md.topics.get(topic)
        if run.check(tm is not None, f"{topic} is gone after the restart: {sorted(md.topics)}"):
            run.check(len(tm.partitions) == 2, f"{topic} has {len(tm.partitions)} partitions")

    # Watermarks and committed offsets as before the restart.
    probe = consumer(bootstrap, group, "compat-ck-probe")
    marks = watermarks(probe, topic, 2)
    commits = committed(probe, topic, 2)
    probe.close()
    run.result["watermarks_after_restart"] = marks
    run.result["committed_after_restart"] = commits
    run.check(marks == before["watermarks"], f"watermarks {marks}, before the restart {before['watermarks']}")
    run.check(commits == before["committed"], f"committed {commits}, before the restart {before['committed']}")

    # A fresh idempotent producer continues at the old end offsets.
    delivered = Delivered()
    producer = idempotent_producer(bootstrap, "compat-ck-after")
    produce_all(run, producer, delivered, [(topic, i % 2, *record(i, "after")) for i in range(n)])
    for (t, p), sent in sorted(delivered.by_tp.items()):
        first = min(s[0] for s in sent)
        want = before["watermarks"][str(p)][1]
        run.check(first == want, f"after restart {t}/{p}: first new offset {first}, expected {want}")

    # The group resumes at its committed offsets: exactly the new records.
    c = consumer(bootstrap, group, "compat-ck-after")
    c.subscribe([topic])
    got = consume(run, c, n, Deadline(120), "after")
    # Anything more than the new records (an old one, re-read) would show up here.
    extra = 0
    while True:
        msg = c.poll(1.0)
        if msg is None:
            break
        if not msg.error():
            extra += 1
            got.setdefault((msg.topic(), msg.partition()), []).append(msg)
    run.check(extra == 0, f"after restart: {extra} messages beyond the {n} new ones")
    check_roundtrip(run, delivered, got, "after")
    for tp in c.commit(asynchronous=False):
        run.check(tp.error is None, f"commit {tp.topic}/{tp.partition}: {tp.error}")
    final = committed(c, topic, 2)
    run.result["committed_final"] = final
    for p, (_, high) in before["watermarks"].items():
        want = high + len(delivered.by_tp.get((topic, int(p)), []))
        run.check(final[p] == want, f"final committed {p}: {final[p]}, expected {want}")
    c.close()


if __name__ == "__main__":
    import confluent_kafka

    RUN = Run("confluent-kafka")
    RUN.result["client"] = f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}"
    main(
        RUN,
        {"roundtrip": roundtrip, "codecs": codecs, "live-producer": live_producer, "restart-before": restart_before, "restart-after": restart_after},
        sys.argv,
    )
