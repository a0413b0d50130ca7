"""woodpecker-rs's TLS, SASL and ACLs driven by confluent-kafka (librdkafka), with the
settings Milvus's Kafka WAL passes to librdkafka (security.protocol, sasl.mechanisms,
sasl.username, sasl.password, ssl.ca.location).

Scenario (prints `RESULT <json>`, see common.py):

  security SASL_SSL_BOOTSTRAP CA_PEM ADMIN_PASSWORD TOPIC
      The admin (a super user) authenticates with SCRAM-SHA-512 over TLS, creates TOPIC and
      the SCRAM-SHA-256 credential of `alice`. A wrong password and an unknown mechanism are
      refused with librdkafka's authentication error. alice (PLAIN and SCRAM-SHA-256) is
      refused by the ACLs (TOPIC_AUTHORIZATION_FAILED) until the admin allows her WRITE and
      READ on TOPIC and READ on her group; then she produces and consumes, with the classic
      protocol and as a KIP-848 member (which is refused with GROUP_AUTHORIZATION_FAILED in a
      group she may not read). DescribeAcls shows the bindings. Her transactional producer is refused (TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
      until WRITE on its transactional id is allowed, then commits a transaction. DeleteAcls
      removes the bindings and alice is refused again.

  mtls SSL_BOOTSTRAP CA_PEM CLIENT_CERT_PEM CLIENT_KEY_PEM TOPIC
      An SSL listener that requires client certificates, with ACLs whose super user is the
      certificate's principal: with the certificate, TOPIC is created, written and read;
      without one, nothing is served.
"""

import sys

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from common import Deadline, Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard


def settings(bootstrap, ca, user, password, mechanism="SCRAM-SHA-512"):
    # What Milvus's Kafka WAL passes through (milvus-wal.md section 5).
    return {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": mechanism,
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": ca,
        "ssl.endpoint.identification.algorithm": "https",
    }


def auth_error(run, conf, what):
    """An admin call with `conf` must fail authentication."""
    errors = []
    conf = dict(conf, error_cb=lambda e: errors.append(e))
    admin = AdminClient(conf)
    try:
        admin.list_topics(timeout=5)
        run.fail(f"{what}: listed topics without authenticating")
    except KafkaException as e:
        run.log(f"{what}: {e}")
    # Error callbacks are served by poll.
    deadline = Deadline(10)
    while not errors and not deadline.expired():
        admin.poll(0.5)
    codes = {e.code() for e in errors}
    run.check(
        KafkaError._AUTHENTICATION in codes,
        f"{what}: librdkafka reported {sorted(str(e) for e in errors)}, not an authentication error",
    )
    return [str(e) for e in errors]


def produce(conf, topic, values):
    """Delivery reports: (error code or None) per value."""
    reports = []
    p = Producer(dict(conf, **{"message.timeout.ms": 10000, "retries": 0}))
    for v in values:
        p.produce(topic, v.encode(), callback=lambda err, msg: reports.append(err))
    p.flush(TIMEOUT)
    return [None if e is None else e.code() for e in reports]


def security(run, bootstrap, ca, admin_password, topic):
    admin_conf = settings(bootstrap, ca, "admin", admin_password)
    admin = AdminClient(admin_conf)
    with run.step("admin creates the topic over SASL_SSL/SCRAM-SHA-512"):
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(TIMEOUT)
        run.check(topic in admin.list_topics(timeout=TIMEOUT).topics, "topic not listed")
    with run.step("admin creates alice's SCRAM-SHA-256 credential"):
        up = UserScramCredentialUpsertion(
            "alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 8192), b"alice-secret"
        )
        admin.alter_user_scram_credentials([up])["alice"].result(TIMEOUT)
        described = admin.describe_user_scram_credentials(["alice"])
        if isinstance(described, dict):
            described = described["alice"].result(TIMEOUT)
        else:
            described = described.result(TIMEOUT)["alice"]
        mechs = [str(c.mechanism) for c in described.scram_credential_infos]
        run.result["alice_mechanisms"] = mechs
        run.check(any("SHA_256" in m for m in mechs), f"alice's mechanisms {mechs}")
    run.result["wrong_password"] = auth_error(
        run, settings(bootstrap, ca, "admin", "not-the-password"), "wrong password"
    )
    run.result["sha512_without_credential"] = auth_error(
        run, settings(bootstrap, ca, "alice", "alice-secret"), "alice has no SCRAM-SHA-512"
    )
    alice = settings(bootstrap, ca, "alice", "alice-secret", "SCRAM-SHA-256")
    alice_plain = settings(bootstrap, ca, "alice", "alice-secret", "PLAIN")
    with run.step("alice without ACLs"):
        codes = produce(alice, topic, ["denied"])
        run.result["denied_produce"] = [str(c) for c in codes]
        run.check(
            codes == [KafkaError.TOPIC_AUTHORIZATION_FAILED],
            f"produce without WRITE: {codes}",
        )
    with run.step("alice's transactional producer without WRITE on its transactional id"):
        p = Producer(dict(alice, **{"transactional.id": "alice-tx"}))
        try:
            p.init_transactions(TIMEOUT)
            run.fail("init_transactions succeeded without WRITE on the transactional id")
        except KafkaException as e:
            code = e.args[0].code()
            run.result["txn_denied"] = str(code)
            run.check(
                code == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                f"init_transactions without ACLs: {e}",
            )
    with run.step("admin allows alice"):
        bindings = [
            AclBinding(ResourceType.TOPIC, topic, ResourcePatternType.LITERAL, "User:alice", "*",
                       AclOperation.WRITE, AclPermissionType.ALLOW),
            AclBinding(ResourceType.TOPIC, topic[:4], ResourcePatternType.PREFIXED, "User:alice",
                       "*", AclOperation.READ, AclPermissionType.ALLOW),
            AclBinding(ResourceType.GROUP, "alice-", ResourcePatternType.PREFIXED, "User:alice",
                       "*", AclOperation.READ, AclPermissionType.ALLOW),
        ]
        for f in admin.create_acls(bindings).values():
            f.result(TIMEOUT)
        found = admin.describe_acls(
            AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None,
                             AclOperation.ANY, AclPermissionType.ANY)
        ).result(TIMEOUT)
        run.result["described_acls"] = len(found)
        run.check(len(found) == 3, f"DescribeAcls found {found}")
    with run.step("alice produces (SCRAM-SHA-256 and PLAIN) and consumes"):
        codes = produce(alice, topic, ["a1", "a2"]) + produce(alice_plain, topic, ["a3"])
        run.check(codes == [None, None, None], f"allowed produce: {codes}")
        c = Consumer(dict(alice, **{"group.id": "alice-g", "auto.offset.reset": "earliest",
                                    "enable.auto.commit": False}))
        c.subscribe([topic])
        got = []
        deadline = Deadline(60)
        while len(got) < 3 and not deadline.expired():
            m = c.poll(1.0)
            if m is None:
                continue
            if m.error():
                run.log(f"consumer: {m.error()}")
                continue
            got.append(m.value().decode())
        c.commit(asynchronous=False)
        c.close()
        run.result["consumed"] = got
        run.check(got == ["a1", "a2", "a3"], f"consumed {got}")
    with run.step("alice's KIP-848 member: refused in a group she may not read, consumes in hers"):
        kip848 = {"group.protocol": "consumer", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False}
        c = Consumer(dict(alice, **kip848, **{"group.id": "bob-g"}))
        c.subscribe([topic])
        codes = []
        deadline = Deadline(60)
        while not codes and not deadline.expired():
            m = c.poll(0.5)
            if m is not None and m.error():
                codes.append(m.error().code())
        c.close()
        run.result["kip848_denied"] = [KafkaError(code).name() for code in codes]
        run.check(
            codes == [KafkaError.GROUP_AUTHORIZATION_FAILED],
            f"a KIP-848 member without READ on its group got {run.result['kip848_denied']}",
        )
        c = Consumer(dict(alice, **kip848, **{"group.id": "alice-kip848"}))
        c.subscribe([topic])
        got = []
        deadline = Deadline(60)
        while len(got) < 3 and not deadline.expired():
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(m.value().decode())
        c.commit(asynchronous=False)
        c.close()
        run.result["kip848_consumed"] = got
        run.check(got == ["a1", "a2", "a3"], f"KIP-848 member consumed {got}")
    with run.step("alice commits a transaction once WRITE on her transactional id is allowed"):
        binding = AclBinding(ResourceType.TRANSACTIONAL_ID, "alice-tx", ResourcePatternType.LITERAL,
                             "User:alice", "*", AclOperation.WRITE, AclPermissionType.ALLOW)
        admin.create_acls([binding])[binding].result(TIMEOUT)
        p = Producer(dict(alice, **{"transactional.id": "alice-tx"}))
        p.init_transactions(TIMEOUT)
        p.begin_transaction()
        p.produce(topic, b"in a transaction")
        p.commit_transaction(TIMEOUT)
        run.result["txn_committed"] = True
    with run.step("admin deletes alice's ACLs"):
        deleted = admin.delete_acls(
            [AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None,
                              AclOperation.ANY, AclPermissionType.ANY)]
        )
        n = sum(len(f.result(TIMEOUT)) for f in deleted.values())
        run.result["deleted_acls"] = n  # the three above and the transactional id's
        run.check(n == 4, f"deleted {n} bindings")
        codes = produce(alice, topic, ["denied again"])
        run.check(
            codes == [KafkaError.TOPIC_AUTHORIZATION_FAILED],
            f"produce after DeleteAcls: {codes}",
        )


def mtls(run, bootstrap, ca, cert, key, topic):
    """An SSL listener with ssl.client.auth=required and ACLs whose super user is the client
    certificate's principal (User:CN=client): with the certificate the client creates TOPIC,
    produces 3 records and reads them back; without one it cannot even list topics."""
    conf = {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SSL",
        "ssl.ca.location": ca,
        "ssl.certificate.location": cert,
        "ssl.key.location": key,
        "ssl.endpoint.identification.algorithm": "https",
    }
    with run.step("with a client certificate"):
        admin = AdminClient(conf)
        for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
            f.result(TIMEOUT)
        producer = Producer(conf)
        delivered = []
        for i in range(3):
            producer.produce(
                topic, value=f"m{i}".encode(), on_delivery=lambda e, m: delivered.append(e)
            )
        producer.flush(TIMEOUT)
        run.check(delivered == [None] * 3, f"deliveries: {delivered}")
        consumer = Consumer(
            dict(conf, **{"group.id": "mtls", "auto.offset.reset": "earliest"})
        )
        consumer.subscribe([topic])
        seen = []
        deadline = Deadline(TIMEOUT)
        while len(seen) < 3 and not deadline.expired():
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error():
                seen.append(msg.value().decode())
        consumer.close()
        run.result["consumed"] = seen
        run.check(seen == ["m0", "m1", "m2"], f"consumed {seen}")
    with run.step("without a client certificate"):
        bare = {k: v for k, v in conf.items() if k not in ("ssl.certificate.location", "ssl.key.location")}
        admin = AdminClient(dict(bare, error_cb=lambda e: None))
        refused = False
        try:
            admin.list_topics(timeout=5)
        except KafkaException as e:
            refused = True
            run.log(f"refused without a certificate: {e}")
        run.result["refused_without_certificate"] = refused
        run.check(refused, "listed topics without a client certificate")


if __name__ == "__main__":
    main(Run("confluent_security"), {"security": security, "mtls": mtls}, sys.argv)
