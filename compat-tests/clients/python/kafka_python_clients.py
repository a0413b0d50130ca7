"""woodpecker-rs's Kafka listener driven by kafka-python (a pure-Python client).

Scenario (prints `RESULT <json>`, see common.py):

  roundtrip BOOTSTRAP TOPIC GROUP N
      KafkaAdminClient creates TOPIC (2 partitions); a gzip producer (acks=all, kafka-python's
      default idempotence) writes N records, record i to partition i % 2 with timestamp
      BASE + i seconds; a consumer of GROUP reads them all back in order and commits; then
      committed(), end_offsets(), beginning_offsets() and offsets_for_times() must agree with
      what was produced.
"""

import sys
import time

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from common import Deadline, Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard
PARTITIONS = 2


def roundtrip(run, bootstrap, topic, group, n):
    n = int(n)
    run.result.update(topic=topic, group=group, n=n)
    # Whole seconds, well in the past, so that broker-side timestamps cannot interfere.
    base_ms = (int(time.time()) - 86400) * 1000

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="compat-kp-admin",
                             request_timeout_ms=int(TIMEOUT * 1000))
    admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                        timeout_ms=int(TIMEOUT * 1000))
    run.log(f"created {topic}")
    with run.step("list_topics"):
        topics = admin.list_topics()
        run.check(topic in topics, f"list_topics: {topic} not in {topics}")
    with run.step("describe_cluster"):
        cluster = admin.describe_cluster()
        run.result["cluster_brokers"] = len(cluster.get("brokers", []))
        run.check(len(cluster.get("brokers", [])) >= 1, f"describe_cluster: {cluster}")
    with run.step("broker_version"):
        # kafka-python infers the broker's Kafka version from its ApiVersions ranges.
        node = cluster["brokers"][0]["broker_id"]
        run.result["broker_version"] = list(admin.get_broker_version_data(node).broker_version)

    producer = KafkaProducer(
        bootstrap_servers=bootstrap,
        client_id="compat-kp-producer",
        compression_type="gzip",
        acks="all",
        linger_ms=5,
        request_timeout_ms=int(TIMEOUT * 1000),
    )
    futures = []
    for i in range(n):
        futures.append(
            producer.send(
                topic,
                key=f"kp-k-{i}".encode(),
                value=f"kp-v-{i}".encode() * (1 + i % 5),
                headers=[("idx", str(i).encode())],
                partition=i % PARTITIONS,
                timestamp_ms=base_ms + i * 1000,
            )
        )
    producer.flush(timeout=2 * TIMEOUT)
    sent = {}  # partition -> [(offset, i)]
    for i, f in enumerate(futures):
        md = f.get(timeout=TIMEOUT)
        sent.setdefault(md.partition, []).append((md.offset, i))
    producer.close(timeout=TIMEOUT)
    for p in range(PARTITIONS):
        offsets = [o for o, _ in sent.get(p, [])]
        run.check(offsets == list(range(len(offsets))), f"partition {p}: produced offsets {offsets[:10]}...")

    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="compat-kp-consumer",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        request_timeout_ms=int(TIMEOUT * 1000) + 5000,
        session_timeout_ms=10000,
        heartbeat_interval_ms=500,
    )
    c.subscribe([topic])
    got = {}  # partition -> [record]
    count = 0
    deadline = Deadline(120)
    while count < n and not deadline.expired():
        for tp, records in c.poll(timeout_ms=1000).items():
            got.setdefault(tp.partition, []).extend(records)
            count += len(records)
    run.check(count == n, f"consumer read {count} of {n} records within {deadline.seconds} s")
    mismatches = 0
    for p in range(PARTITIONS):
        want = sent.get(p, [])
        have = got.get(p, [])
        run.check(len(have) == len(want), f"partition {p}: consumed {len(have)}, produced {len(want)}")
        for (offset, i), r in zip(want, have):
            exp = (offset, f"kp-k-{i}".encode(), f"kp-v-{i}".encode() * (1 + i % 5),
                   base_ms + i * 1000, [("idx", str(i).encode())])
            seen = (r.offset, r.key, r.value, r.timestamp, list(r.headers))
            if seen != exp:
                mismatches += 1
                if mismatches <= 3:
                    run.fail(f"partition {p}: produced {exp!r}, consumed {seen!r}")
    run.result["mismatches"] = mismatches

    c.commit()
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = c.end_offsets(tps)
    begins = c.beginning_offsets(tps)
    run.result["end_offsets"] = {str(tp.partition): o for tp, o in ends.items()}
    run.result["beginning_offsets"] = {str(tp.partition): o for tp, o in begins.items()}
    committed = {}
    for tp in tps:
        want_end = len(sent.get(tp.partition, []))
        run.check(ends.get(tp) == want_end, f"end_offsets {tp.partition}: {ends.get(tp)}, expected {want_end}")
        run.check(begins.get(tp) == 0, f"beginning_offsets {tp.partition}: {begins.get(tp)}, expected 0")
        committed[str(tp.partition)] = c.committed(tp)
        run.check(committed[str(tp.partition)] == want_end,
                  f"committed {tp.partition}: {committed[str(tp.partition)]}, expected {want_end}")
    run.result["committed"] = committed

    # offsets_for_times: the first record with timestamp >= t, per partition.
    with run.step("offsets_for_times"):
        probes = {
            "zero": 0,
            "middle": base_ms + (n // 2) * 1000 + 1,
            "exact": base_ms + (n // 3) * 1000,
            "past_end": base_ms + n * 1000 + 1,
        }
        answers = {}
        for name, ts in probes.items():
            res = c.offsets_for_times({tp: ts for tp in tps})
            answers[name] = {}
            for tp in tps:
                ot = res.get(tp)
                # The expected record: the smallest i on this partition with BASE + i s >= ts.
                want = next(((o, base_ms + i * 1000) for o, i in sent.get(tp.partition, [])
                             if base_ms + i * 1000 >= ts), None)
                have = None if ot is None else (ot.offset, ot.timestamp)
                answers[name][str(tp.partition)] = have
                run.check(have == want, f"offsets_for_times {name} ({ts}) partition {tp.partition}: {have}, expected {want}")
        run.result["offsets_for_times"] = answers
    with run.step("list_groups"):
        groups = sorted(g["group_id"] for g in admin.list_groups())
        run.result["listed_groups"] = groups
        run.check(group in groups, f"list_groups: {group} not in {groups}")
    with run.step("list_group_offsets"):
        listed = admin.list_group_offsets(group).get(group, {})
        listed = {str(tp.partition): om.offset for tp, om in listed.items() if tp.topic == topic}
        run.result["listed_group_offsets"] = listed
        run.check(listed == committed, f"list_group_offsets: {listed}, committed() said {committed}")
    c.close()
    admin.close()


if __name__ == "__main__":
    RUN = Run("kafka-python")
    RUN.result["client"] = f"kafka-python {kafka.__version__}"
    main(RUN, {"roundtrip": roundtrip}, sys.argv)
