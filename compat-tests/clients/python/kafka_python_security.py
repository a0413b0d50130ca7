"""woodpecker-rs's TLS and SASL driven by kafka-python (its own protocol code, not librdkafka).

Scenario (prints `RESULT <json>`, see common.py):

  sasl SASL_SSL_BOOTSTRAP CA_PEM ADMIN_PASSWORD TOPIC
      For each of SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN over TLS (the server certificate
      checked against CA_PEM): the admin produces 3 records to TOPIC and reads back the 3 it
      produced. A wrong password is refused with kafka-python's authentication error.
"""

import sys

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from common import Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard
RUN = Run("kafka-python-sasl")
MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]


def settings(bootstrap, ca, mechanism, password):
    return {
        "bootstrap_servers": bootstrap,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "admin",
        "sasl_plain_password": password,
        "ssl_cafile": ca,
        "request_timeout_ms": int(TIMEOUT * 1000),
    }


def sasl(run, bootstrap, ca, password, topic):
    run.result["roundtrips"] = {}
    for mechanism in MECHANISMS:
        with run.step(mechanism):
            conf = settings(bootstrap, ca, mechanism, password)
            producer = KafkaProducer(acks="all", **conf)
            values = [f"{mechanism}-{i}".encode() for i in range(3)]
            offsets = []
            try:
                for v in values:
                    md = producer.send(topic, value=v, partition=0).get(TIMEOUT)
                    offsets.append(md.offset)
            finally:
                producer.close()
            consumer = KafkaConsumer(
                consumer_timeout_ms=int(TIMEOUT * 1000), enable_auto_commit=False, **conf
            )
            seen = []
            try:
                tp = TopicPartition(topic, 0)
                consumer.assign([tp])
                consumer.seek(tp, offsets[0])
                for msg in consumer:
                    seen.append(msg.value)
                    if len(seen) == len(values):
                        break
            finally:
                consumer.close()
            run.result["roundtrips"][mechanism] = len(seen)
            run.check(seen == values, f"{mechanism}: read back {seen}, produced {values}")

    with run.step("wrong password"):
        refused = None
        try:
            producer = KafkaProducer(**settings(bootstrap, ca, "SCRAM-SHA-256", "wrong"))
            producer.close()
        except Exception as e:  # noqa: BLE001 - the error is what is checked
            refused = type(e).__name__
        run.result["wrong_password"] = refused
        run.check(refused is not None, "a wrong password was accepted")


if __name__ == "__main__":
    main(RUN, {"sasl": sasl}, sys.argv)
