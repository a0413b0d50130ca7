"""Consumer-group features of woodpecker-rs's Kafka listener, driven by confluent-kafka (librdkafka).

Scenarios (each prints `RESULT <json>`, see common.py):

  static BOOTSTRAP TOPIC GROUP
      KIP-345 static membership. Two consumers of GROUP with `group.instance.id` i1 and i2
      share TOPIC (4 partitions, created here). Each in turn closes (a static member does not
      leave) and a new consumer with the same instance id starts: it must get the same
      partitions, and the other consumer's assign/revoke callbacks must not fire (no
      rebalance). Records produced after each restart are all consumed by the two. The
      AdminClient's group description shows both members with their instance ids, client ids
      and host.

  session-bounds BOOTSTRAP TOPIC GROUP MIN_MS
      The server was started with group.min.session.timeout.ms = MIN_MS: a consumer asking
      for less gets INVALID_SESSION_TIMEOUT; one asking for exactly MIN_MS joins.
"""

import sys

from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from common import Deadline, Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard
PARTITIONS = 4


def admin_client(bootstrap):
    return AdminClient({"bootstrap.servers": bootstrap, "client.id": "compat-ck-admin"})


def create_topic(admin, topic, partitions):
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)],
        operation_timeout=TIMEOUT,
        request_timeout=TIMEOUT,
    )
    futures[topic].result(timeout=2 * TIMEOUT)


class Member:
    """A subscribed consumer that records its rebalance callbacks."""

    def __init__(self, run, bootstrap, topic, group, name, instance, session_ms=10000):
        self.run = run
        self.name = name
        self.events = []
        self.errors = []
        self.records = []
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "client.id": f"compat-{name}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": 500,
            "partition.assignment.strategy": "range",
        }
        if instance is not None:
            conf["group.instance.id"] = instance
        self.c = Consumer(conf)
        self.c.subscribe([topic], on_assign=self._assigned, on_revoke=self._revoked)

    def _assigned(self, _c, parts):
        e = ("assign", sorted(p.partition for p in parts))
        self.run.log(f"{self.name}: {e}")
        self.events.append(e)

    def _revoked(self, _c, parts):
        e = ("revoke", sorted(p.partition for p in parts))
        self.run.log(f"{self.name}: {e}")
        self.events.append(e)

    def poll(self):
        msg = self.c.poll(0.1)
        if msg is None:
            return
        if msg.error():
            self.errors.append(msg.error())
            self.run.log(f"{self.name}: error {msg.error()}")
            return
        self.records.append((msg.partition(), msg.offset()))

    def partitions(self):
        return sorted(p.partition for p in self.c.assignment())


def poll_until(run, members, done, what, seconds=60):
    deadline = Deadline(seconds)
    while not done():
        if deadline.expired():
            raise TimeoutError(f"waiting for {what}")
        for m in members:
            m.poll()


def static_membership(run, bootstrap, topic, group):
    admin = admin_client(bootstrap)
    create_topic(admin, topic, PARTITIONS)
    s1 = Member(run, bootstrap, topic, group, "s1", "i1")
    s2 = Member(run, bootstrap, topic, group, "s2", "i2")
    poll_until(
        run,
        [s1, s2],
        lambda: s1.partitions()
        and s2.partitions()
        and sorted(s1.partitions() + s2.partitions()) == list(range(PARTITIONS)),
        "the two static members to share the partitions",
    )
    run.result["split"] = [s1.partitions(), s2.partitions()]
    live = {"i1": s1, "i2": s2}
    p = Producer({"bootstrap.servers": bootstrap, "client.id": "compat-static-producer"})
    restarts = []
    # Each member in turn (so the group's leader is among them) closes and restarts.
    for instance, name, other_instance in [("i2", "s2b", "i1"), ("i1", "s1b", "i2")]:
        old, other = live[instance], live[other_instance]
        other_before = list(other.events)
        had = old.partitions()
        old.c.close()
        run.log(f"{old.name} closed; its instance restarts as {name}")
        again = Member(run, bootstrap, topic, group, name, instance)
        live[instance] = again
        poll_until(run, [other, again], lambda: again.partitions(), f"{name}'s assignment")
        # Records produced now reach both members, which proves both are consuming after the
        # restart (a rebalance would have shown in the other's callbacks before this completes).
        n = 40
        before = len(other.records) + len(again.records)
        for i in range(n):
            p.produce(topic, value=f"{name}-{i}".encode(), partition=i % PARTITIONS)
        run.check(p.flush(TIMEOUT) == 0, "producer did not deliver everything")
        poll_until(
            run,
            [other, again],
            lambda: len(other.records) + len(again.records) - before >= n,
            f"both members to consume the records produced after {name} started",
        )
        restarts.append(
            {"member": name, "had": had, "got": again.partitions(), "other_new_events": other.events[len(other_before):]}
        )
        run.check(again.partitions() == had, f"{name} got {again.partitions()}, its instance had {had}")
        run.check(
            other.events == other_before,
            f"the restart of {instance} made {other.name} rebalance: {other.events[len(other_before):]}",
        )
    run.result["restarts"] = restarts
    s1, s2b = live["i1"], live["i2"]
    with run.step("describe_consumer_groups"):
        desc = admin.describe_consumer_groups([group], request_timeout=TIMEOUT)[group].result()
        members = sorted(
            (m.group_instance_id, m.client_id, m.host) for m in desc.members
        )
        run.result["members"] = members
        run.check(
            members
            == [("i1", "compat-s1b", "/127.0.0.1"), ("i2", "compat-s2b", "/127.0.0.1")],
            f"described members: {members}",
        )
        run.check(str(desc.state).endswith("STABLE"), f"group state {desc.state}")
    s1.c.close()
    s2b.c.close()


def session_bounds(run, bootstrap, topic, group, min_ms):
    min_ms = int(min_ms)
    admin = admin_client(bootstrap)
    create_topic(admin, topic, 1)
    short = Member(run, bootstrap, topic, group, "short", None, session_ms=min_ms - 1)
    poll_until(run, [short], lambda: short.errors, "the join error of a too-short session")
    codes = sorted({e.code() for e in short.errors})
    run.result["short_errors"] = [KafkaError(c).name() for c in codes]
    run.check(
        KafkaError.INVALID_SESSION_TIMEOUT in codes,
        f"a session below the minimum got {run.result['short_errors']}",
    )
    run.check(not short.partitions(), "a member with an invalid session got partitions")
    short.c.close()
    ok = Member(run, bootstrap, topic, group, "ok", None, session_ms=min_ms)
    poll_until(run, [ok], lambda: ok.partitions(), "the join of a session at the minimum")
    run.result["ok_partitions"] = ok.partitions()
    ok.c.close()


if __name__ == "__main__":
    import confluent_kafka

    RUN = Run("confluent-kafka groups")
    RUN.result["client"] = f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}"
    main(RUN, {"static": static_membership, "session-bounds": session_bounds}, sys.argv)
