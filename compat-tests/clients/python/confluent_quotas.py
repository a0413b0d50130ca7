"""woodpecker-rs's client quotas as librdkafka (confluent-kafka) sees them: the throttle
times of Produce and Fetch responses, through librdkafka's `throttle_cb` and the `throttle`
window of its per-broker statistics (`stats_cb`).

Scenarios (print `RESULT <json>`, see common.py):

  produce BOOTSTRAP TOPIC CLIENT_ID RECORDS RECORD_SIZE
      Produces RECORDS records of RECORD_SIZE bytes as CLIENT_ID and waits for every
      delivery. Reports `delivered`, `throttle_events` (throttle_cb calls with a throttle
      time above zero), `throttle_ms_max` (the largest of them) and `stats_throttle_max`
      (the largest `throttle.max` of a broker in the statistics).

  consume BOOTSTRAP TOPIC CLIENT_ID RECORDS
      Reads TOPIC from the start as CLIENT_ID until RECORDS records arrived. Reports
      `consumed` and the same throttle observations.

Nothing here measures time: the Rust test asserts on the throttle signals and counts.
"""

import json
import sys

from confluent_kafka import Consumer, Producer

from common import Deadline, Run, main

GUARD = 120.0  # seconds: a failure guard for the whole scenario, never a timing assertion


class Throttles:
    """What librdkafka reported about throttling."""

    def __init__(self, run):
        self.run = run
        self.events = 0
        self.max_ms = 0
        self.stats_max = 0

    def on_throttle(self, event):
        if event.throttle_time > 0:
            self.events += 1
            self.max_ms = max(self.max_ms, int(event.throttle_time * 1000))

    def on_stats(self, text):
        stats = json.loads(text)
        for broker in stats.get("brokers", {}).values():
            self.stats_max = max(self.stats_max, broker.get("throttle", {}).get("max", 0))

    def settings(self):
        return {
            "throttle_cb": self.on_throttle,
            "stats_cb": self.on_stats,
            "statistics.interval.ms": 100,
        }

    def report(self):
        self.run.result["throttle_events"] = self.events
        self.run.result["throttle_ms_max"] = self.max_ms
        self.run.result["stats_throttle_max"] = self.stats_max


def produce(run, bootstrap, topic, client_id, records, record_size):
    records, record_size = int(records), int(record_size)
    throttles = Throttles(run)
    delivered = []
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append(msg.offset())

    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "acks": "all",
            "linger.ms": 5,
            **throttles.settings(),
        }
    )
    payload = b"q" * record_size
    deadline = Deadline(GUARD)
    for _ in range(records):
        while True:
            try:
                p.produce(topic, payload, on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    while len(delivered) + len(errors) < records and not deadline.expired():
        p.poll(0.1)
    p.flush(deadline.left())
    # One more statistics interval, so that the last responses are in the window.
    for _ in range(3):
        p.poll(0.1)
    run.check(not errors, f"delivery errors: {errors[:3]}")
    run.check(len(delivered) == records, f"{len(delivered)} of {records} delivered")
    run.result["delivered"] = len(delivered)
    throttles.report()


def consume(run, bootstrap, topic, client_id, records):
    records = int(records)
    throttles = Throttles(run)
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "client.id": client_id,
            "group.id": f"quota-{client_id}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **throttles.settings(),
        }
    )
    c.subscribe([topic])
    consumed = 0
    deadline = Deadline(GUARD)
    while consumed < records and not deadline.expired():
        msg = c.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            run.fail(f"consume error: {msg.error()}")
            break
        consumed += 1
    for _ in range(3):
        c.poll(0.1)
    c.close()
    run.check(consumed == records, f"{consumed} of {records} consumed")
    run.result["consumed"] = consumed
    throttles.report()


if __name__ == "__main__":
    main(Run("confluent_quotas"), {"produce": produce, "consume": consume}, sys.argv)
