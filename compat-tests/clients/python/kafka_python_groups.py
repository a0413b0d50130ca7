"""Consumer-group administration of woodpecker-rs's Kafka listener, driven by kafka-python.

Scenario (prints `RESULT <json>`, see common.py):

  offsets BOOTSTRAP GROUP
      Creates kp-sub (2 partitions) and kp-other (1). A consumer of GROUP (client id
      compat-kp-member) subscribes to kp-sub and commits offsets for kp-sub 0 and 1 and
      kp-other 0. While it is a member: ListGroups finds GROUP with the Stable state filter and
      the classic type filter (v5) and not with the consumer type filter; DescribeGroups shows
      the member's client id and host; OffsetDelete of kp-sub 0 is GROUP_SUBSCRIBED_TO_TOPIC
      and of kp-other 0 succeeds. After the consumer leaves (the group is Empty), OffsetDelete
      of kp-sub 0 succeeds; kp-sub 1 is left committed (for kafka-consumer-groups.sh).

  session-bounds BOOTSTRAP TOPIC GROUP MIN_MS
      The server was started with group.min.session.timeout.ms = MIN_MS: a consumer asking
      for less gets InvalidSessionTimeoutError from poll(); one asking for exactly MIN_MS joins.
"""

import sys

import kafka
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.structs import OffsetAndMetadata

from common import Deadline, Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard


def names(listed):
    out = []
    for g in listed:
        if isinstance(g, dict):
            out.append(g.get("group_id") or g.get("group"))
        else:
            out.append(g[0])
    return sorted(out)


def offsets(run, bootstrap, group):
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="compat-kp-admin", request_timeout_ms=int(TIMEOUT * 1000)
    )
    admin.create_topics(
        [NewTopic("kp-sub", num_partitions=2, replication_factor=1), NewTopic("kp-other", num_partitions=1, replication_factor=1)],
        timeout_ms=int(TIMEOUT * 1000),
    )
    c = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="compat-kp-member",
        enable_auto_commit=False,
        session_timeout_ms=10000,
        heartbeat_interval_ms=500,
        request_timeout_ms=int(TIMEOUT * 1000) + 5000,
    )
    c.subscribe(["kp-sub"])
    deadline = Deadline(60)
    while len(c.assignment()) < 2:
        if deadline.expired():
            raise TimeoutError(f"assignment: {c.assignment()}")
        c.poll(timeout_ms=100)
    sub0, sub1, other0 = TopicPartition("kp-sub", 0), TopicPartition("kp-sub", 1), TopicPartition("kp-other", 0)
    c.commit({tp: OffsetAndMetadata(3 + i, "", -1) for i, tp in enumerate([sub0, sub1, other0])})

    with run.step("list_groups filters"):
        table = [
            ("stable", {"states_filter": ["Stable"]}, True),
            ("empty", {"states_filter": ["Empty"]}, False),
            ("classic", {"types_filter": ["classic"]}, True),
            ("consumer", {"types_filter": ["consumer"]}, False),
        ]
        listed = {}
        for name, kwargs, want in table:
            got = names(admin.list_groups(**kwargs))
            listed[name] = got
            run.check((group in got) == want, f"list_groups({kwargs}): {got}")
        run.result["listed"] = listed
    with run.step("describe_groups"):
        described = admin.describe_groups([group])
        run.log(f"describe_groups: {described}")
        d = described[group] if isinstance(described, dict) else described[0]
        members = d["members"] if isinstance(d, dict) else d.members
        got = []
        for m in members:
            if isinstance(m, dict):
                got.append((m.get("client_id"), m.get("client_host")))
            else:
                got.append((m.client_id, m.client_host))
        run.result["members"] = got
        run.check(got == [("compat-kp-member", "/127.0.0.1")], f"described members: {got}")

    with run.step("delete_group_offsets while subscribed"):
        res = admin.delete_group_offsets(group, [sub0, other0])
        got = {f"{tp.topic}/{tp.partition}": err.__name__ for tp, err in res.items()}
        run.result["delete_while_member"] = got
        run.check(
            got == {"kp-sub/0": "GroupSubscribedToTopicError", "kp-other/0": "NoError"},
            f"delete_group_offsets while a member is subscribed: {got}",
        )
    c.close()  # a dynamic member leaves: the group becomes Empty
    with run.step("delete_group_offsets of an empty group"):
        res = admin.delete_group_offsets(group, [sub0])
        got = {f"{tp.topic}/{tp.partition}": err.__name__ for tp, err in res.items()}
        run.result["delete_when_empty"] = got
        run.check(got == {"kp-sub/0": "NoError"}, f"delete_group_offsets of an Empty group: {got}")
    with run.step("list_group_offsets"):
        left = admin.list_group_offsets(group).get(group, {})
        left = {f"{tp.topic}/{tp.partition}": om.offset for tp, om in left.items() if om.offset >= 0}
        run.result["left"] = left
        run.check(left == {"kp-sub/1": 4}, f"offsets left: {left}")
    admin.close()


def session_bounds(run, bootstrap, topic, group, min_ms):
    min_ms = int(min_ms)
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="compat-kp-admin", request_timeout_ms=int(TIMEOUT * 1000)
    )
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)], timeout_ms=int(TIMEOUT * 1000))

    def member(session_ms):
        c = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            client_id=f"compat-kp-{session_ms}",
            enable_auto_commit=False,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=500,
            request_timeout_ms=int(TIMEOUT * 1000),
        )
        c.subscribe([topic])
        return c

    short = member(min_ms - 1)
    errors = []
    deadline = Deadline(60)
    while not errors:
        if deadline.expired():
            raise TimeoutError("no error for a session below the minimum")
        try:
            short.poll(timeout_ms=100)
        except Exception as e:  # noqa: BLE001 - the error is what is looked for
            errors.append(type(e).__name__)
        run.check(not short.assignment(), "a member with an invalid session got partitions")
    run.result["short_errors"] = errors
    run.check(errors == ["InvalidSessionTimeoutError"], f"a session below the minimum: {errors}")
    short.close()
    ok = member(min_ms)
    deadline = Deadline(60)
    while not ok.assignment():
        if deadline.expired():
            raise TimeoutError("a session at the minimum did not join")
        ok.poll(timeout_ms=100)
    run.result["ok_partitions"] = sorted(tp.partition for tp in ok.assignment())
    ok.close()
    admin.close()


if __name__ == "__main__":
    RUN = Run("kafka-python groups")
    RUN.result["client"] = f"kafka-python {kafka.__version__}"
    main(RUN, {"offsets": offsets, "session-bounds": session_bounds}, sys.argv)
