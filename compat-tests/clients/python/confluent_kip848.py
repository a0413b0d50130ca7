"""KIP-848 consumer groups (`group.protocol=consumer`) of woodpecker-rs's Kafka listener,
driven by confluent-kafka (librdkafka).

Scenarios (each prints `RESULT <json>`, see common.py):

  share BOOTSTRAP TOPIC GROUP
      TOPIC (6 partitions, created here, 10 records each) is consumed by GROUP: two members in
      this process and a third in a child process (`member`). The three must come to own
      disjoint, non-empty sets of partitions that cover the topic; every member commits what
      it consumed. A classic consumer of GROUP is refused with INCONSISTENT_GROUP_PROTOCOL
      while the group has members. The AdminClient describes the group (consumer type,
      members, assignments). Then one member closes (it leaves): the others take its
      partitions. The child is killed with SIGKILL: once its session times out on the server,
      the last member owns all six partitions. That member commits and closes; a new member
      resumes exactly after the committed offsets. Every record was consumed, and after the
      commits no record was consumed twice.

  member BOOTSTRAP TOPIC GROUP NAME
      One member that prints `ASSIGNED <json list>` whenever its assignment changes and
      commits after each record it consumes; it runs until it is killed.

  commit BOOTSTRAP TOPIC GROUP
      TOPIC (6 partitions, 10 records each) is created; one member consumes it to its end,
      committing, and closes; the result holds the committed offsets.

  produce BOOTSTRAP TOPIC
      One record more to each partition of TOPIC.

  resume BOOTSTRAP TOPIC GROUP
      One record more is produced to each partition; one member joins GROUP and reports the
      first offset it consumes of each partition (after a server restart: the committed
      offsets must have survived).
"""

import json
import os
import signal
import subprocess
import sys
import threading

from confluent_kafka import (
    Consumer,
    ConsumerGroupType,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from common import Deadline, Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard
PARTITIONS = 6
PER_PARTITION = 10


def admin_client(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "compat-kip848-admin"})


def produce(run, bootstrap, topic, per_partition, tag):
    p = Producer({"bootstrap.servers": bootstrap, "client.id": "compat-kip848-producer"})
    for part in range(PARTITIONS):
        for i in range(per_partition):
            p.produce(topic, value=f"{tag}-{part}-{i}".encode(), partition=part)
    run.check(p.flush(TIMEOUT) == 0, "the producer did not deliver everything")


class Member:
    """A consumer-protocol member in this process."""

    def __init__(self, run, bootstrap, topic, group, name):
        self.run = run
        self.name = name
        self.records = []
        self.errors = []
        self.c = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "group.protocol": "consumer",
                "client.id": f"compat-{name}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self.c.subscribe([topic])

    def poll(self, timeout=0.1):
        msg = self.c.poll(timeout)
        if msg is None:
            return
        if msg.error():
            self.errors.append(msg.error())
            self.run.log(f"{self.name}: error {msg.error()}")
            return
        self.records.append((msg.partition(), msg.offset()))
        try:
            self.c.commit(message=msg, asynchronous=False)
        except KafkaException as e:
            # A member fenced (or forgotten by a restarted server) between the fetch and the
            # commit; it rejoins and goes on, as applications do.
            self.errors.append(e.args[0])
            self.run.log(f"{self.name}: commit failed: {e}")

    def partitions(self):
        return sorted(p.partition for p in self.c.assignment())


class Child:
    """A member in a child process (the `member` scenario), read line by line."""

    def __init__(self, run, bootstrap, topic, group, name):
        self.run = run
        self.name = name
        self.assigned = []
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "member", bootstrap, topic, group, name],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("ASSIGNED "):
                with self.lock:
                    self.assigned = json.loads(line[len("ASSIGNED "):])

    def partitions(self):
        with self.lock:
            return list(self.assigned)

    def kill(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(TIMEOUT)


def poll_until(members, done, what, seconds=90):
    deadline = Deadline(seconds)
    while not done():
        if deadline.expired():
            raise TimeoutError(f"waiting for {what}")
        for m in members:
            if isinstance(m, Member):
                m.poll()


def shared(sets):
    """True when the sets are disjoint, cover every partition and are as even as can be
    (none idle)."""
    flat = [p for s in sets for p in s]
    sizes = [len(s) for s in sets]
    return min(sizes) > 0 and max(sizes) - min(sizes) <= 1 and sorted(flat) == list(range(PARTITIONS))


def share(run, bootstrap, topic, group):
    admin = admin_client(bootstrap)
    admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
        operation_timeout=TIMEOUT,
    )[topic].result(timeout=2 * TIMEOUT)
    produce(run, bootstrap, topic, PER_PARTITION, "a")
    m1 = Member(run, bootstrap, topic, group, "m1")
    m2 = Member(run, bootstrap, topic, group, "m2")
    child = Child(run, bootstrap, topic, group, "m3")
    local = [m1, m2]
    try:
        poll_until(
            local,
            lambda: shared([m1.partitions(), m2.partitions(), child.partitions()]),
            "three members to share the partitions",
        )
        run.result["split"] = [m1.partitions(), m2.partitions(), child.partitions()]
        with run.step("a classic consumer is refused"):
            classic = Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": group,
                    "client.id": "compat-classic",
                    "session.timeout.ms": 6000,
                }
            )
            errors = []
            classic.subscribe([topic], on_assign=lambda _c, ps: errors.append(f"assigned {ps}"))
            deadline = Deadline(60)
            while not errors and not deadline.expired():
                msg = classic.poll(0.1)
                if msg is not None and msg.error():
                    errors.append(msg.error().code())
                for m in local:
                    m.poll(0)
            classic.close()
            run.result["classic_errors"] = [
                KafkaError(e).name() if isinstance(e, int) else e for e in errors
            ]
            run.check(
                errors[:1] == [KafkaError.INCONSISTENT_GROUP_PROTOCOL],
                f"a classic member got {run.result['classic_errors']}",
            )
        with run.step("describe_consumer_groups"):
            deadline = Deadline(60)
            while True:
                desc = admin.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result()
                if str(desc.state).endswith("STABLE") or deadline.expired():
                    break
                for m in local:
                    m.poll()
            run.check(str(desc.state).endswith("STABLE"), f"group state {desc.state}")
            described = sorted(
                (m.client_id, sorted(tp.partition for tp in m.assignment.topic_partitions))
                for m in desc.members
            )
            run.result["described"] = described
            run.check(str(desc.type).endswith("CONSUMER"), f"group type {desc.type}")
            run.check(
                [c for c, _ in described] == ["compat-m1", "compat-m2", "compat-m3"],
                f"described members {described}",
            )
            run.check(
                shared([ps for _, ps in described]), f"described assignments {described}"
            )
        with run.step("list_consumer_groups by type"):
            res = admin.list_consumer_groups(
                request_timeout=TIMEOUT, types={ConsumerGroupType.CONSUMER}
            ).result()
            listed = [g.group_id for g in res.valid]
            run.check(group in listed, f"consumer groups listed: {listed}")
            res = admin.list_consumer_groups(
                request_timeout=TIMEOUT, types={ConsumerGroupType.CLASSIC}
            ).result()
            run.check(group not in [g.group_id for g in res.valid], "listed as classic")
        # Everything produced so far is consumed (and committed record by record).
        poll_until(
            local,
            lambda: len(m1.records) + len(m2.records) >= PER_PARTITION * (6 - len(child.partitions())),
            "m1 and m2 to consume their partitions",
        )
        gone = m2.partitions()
        m2.c.close()
        local = [m1]
        run.log(f"m2 left; its partitions {gone} must move")
        poll_until(
            local,
            lambda: shared([m1.partitions(), child.partitions()]),
            "m1 and m3 to share the partitions after m2 left",
        )
        run.result["after_leave"] = [m1.partitions(), child.partitions()]
        run.check(
            all(p in m1.partitions() + child.partitions() for p in gone), "m2's partitions moved"
        )
        child.kill()
        run.log("m3 killed with SIGKILL; waiting for its session to time out")
        poll_until(local, lambda: m1.partitions() == list(range(PARTITIONS)), "m1 to own everything")
        run.result["after_kill"] = m1.partitions()
        def consumed_all():
            wanted = [TopicPartition(topic, p) for p in range(PARTITIONS)]
            return all(tp.offset == PER_PARTITION for tp in m1.c.committed(wanted, timeout=TIMEOUT))

        poll_until(local, consumed_all, "every record to be consumed and committed")
        m1.c.close()
    finally:
        if child.proc.poll() is None:
            child.kill()
    # A new member resumes after the committed offsets: it sees only what is produced now.
    m4 = Member(run, bootstrap, topic, group, "m4")
    poll_until([m4], lambda: m4.partitions() == list(range(PARTITIONS)), "m4's assignment")
    produce(run, bootstrap, topic, 2, "b")
    poll_until([m4], lambda: len(m4.records) >= 2 * PARTITIONS, "m4 to consume the new records")
    m4.poll(1.0)
    run.result["resumed"] = sorted(m4.records)
    run.check(
        sorted(m4.records) == sorted((p, o) for p in range(PARTITIONS) for o in (10, 11)),
        f"m4 consumed {sorted(m4.records)}, not exactly the records after the commits",
    )
    run.check(not m4.errors, f"m4 errors: {m4.errors}")
    m4.c.close()


def member(run, bootstrap, topic, group, name):
    m = Member(run, bootstrap, topic, group, name)
    last = None
    while True:
        m.poll()
        now = m.partitions()
        if now != last:
            print("ASSIGNED " + json.dumps(now), flush=True)
            last = now


def commit(run, bootstrap, topic, group):
    admin = admin_client(bootstrap)  # kept alive until its future resolves
    admin.create_topics(
        [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
        operation_timeout=TIMEOUT,
    )[topic].result(timeout=2 * TIMEOUT)
    produce(run, bootstrap, topic, PER_PARTITION, "c")
    m = Member(run, bootstrap, topic, group, "committer")
    poll_until([m], lambda: len(m.records) >= PARTITIONS * PER_PARTITION, "consuming the topic")
    committed = m.c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=TIMEOUT)
    run.result["committed"] = sorted([tp.partition, tp.offset] for tp in committed)
    m.c.close()


def produce_more(run, bootstrap, topic):
    produce(run, bootstrap, topic, 1, "more")


def resume(run, bootstrap, topic, group):
    produce(run, bootstrap, topic, 1, "r")
    m = Member(run, bootstrap, topic, group, "resumer")
    poll_until([m], lambda: len({p for p, _ in m.records}) == PARTITIONS, "a record of each partition")
    first = {}
    for p, o in m.records:
        first.setdefault(p, o)
    run.result["first"] = sorted([p, o] for p, o in first.items())
    m.c.close()


if __name__ == "__main__":
    import confluent_kafka

    RUN = Run("confluent-kafka KIP-848")
    RUN.result["client"] = f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}"
    main(
        RUN,
        {
            "share": share,
            "member": member,
            "commit": commit,
            "produce": produce_more,
            "resume": resume,
        },
        sys.argv,
    )
