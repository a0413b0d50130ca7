"""woodpecker-rs's admin APIs driven by two independent clients: confluent-kafka's AdminClient
(librdkafka) and kafka-python's KafkaAdminClient. The same checks run through either; the
first argument picks the client.

Scenarios (each prints `RESULT <json>`, see common.py):

  before CLIENT BOOTSTRAP TOPIC
      Creates TOPIC with one partition, then:
      * CreatePartitions: grows it to 3 (Metadata shows 3); 3 again and 2 are
        INVALID_PARTITIONS; validate_only to 5 changes nothing.
      * DeleteRecords: 10 keyed records to partition 0, records before offset 4 deleted (low
        watermark 4, the earliest offset 4); a consumer positioned at offset 2 is out of range
        and resets to 4; (confluent-kafka) a consumer at offset 6 with leader epoch 0 has
        librdkafka validate its position with OffsetForLeaderEpoch and reads from 6; an offset
        beyond the high watermark is OFFSET_OUT_OF_RANGE.
      * (confluent-kafka) authorized operations in Metadata and DescribeCluster: without an
        authorizer, every operation of the topic and of the cluster.
      * AlterConfigs (the legacy API, which replaces the whole set): retention.bytes set, then
        (confluent-kafka; kafka-python merges the current dynamic configs in itself) a set
        without it puts it back to its default.
      * IncrementalAlterConfigs (confluent-kafka) or the same through kafka-python's
        alter_configs(incremental=True): SET retention.ms (DescribeConfigs: the value, source
        DYNAMIC_TOPIC_CONFIG), validate_only changes nothing, DELETE (back to the default
        source), an unknown key is INVALID_CONFIG, APPEND compact to cleanup.policy, SUBTRACT
        delete from it.
      * cleanup.policy=compact: a record without a key is INVALID_RECORD, one with a key is
        stored.
      * compression.type (gzip, snappy, lz4, zstd; kafka-python: gzip): topics made with it
        take uncompressed batches, store them in the codec and serve the same records.

  after CLIENT BOOTSTRAP TOPIC
      After a server restart: TOPIC still has 3 partitions, partition 0 starts at offset 4 (a
      consumer at 0 resets to 4) and cleanup.policy is still compact.
"""

import sys

from common import Run, main

TIMEOUT = 30.0  # seconds, per request: a failure guard
RUN = Run("admin")

# DescribeConfigs' config source codes (v1+).
SOURCES = {1: "DYNAMIC_TOPIC_CONFIG", 4: "STATIC_BROKER_CONFIG", 5: "DEFAULT_CONFIG"}


class Confluent:
    """The checks' operations through confluent-kafka."""

    def __init__(self, bootstrap):
        from confluent_kafka.admin import AdminClient

        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})

    @staticmethod
    def _error_name(exc):
        err = exc.args[0] if exc.args else None
        return err.name() if hasattr(err, "name") else repr(exc)

    def _one(self, futures):
        """The result of the single future of `futures`, or the Kafka error name."""
        (future,) = futures.values()
        try:
            return future.result(timeout=TIMEOUT), None
        except Exception as e:  # noqa: BLE001 - the error is what is checked
            return None, self._error_name(e)

    def create_topic(self, topic, partitions, configs=None):
        from confluent_kafka.admin import NewTopic

        new = NewTopic(topic, partitions, 1, config=configs or {})
        return self._one(self.admin.create_topics([new]))[1]

    def partition_count(self, topic):
        md = self.admin.list_topics(topic, timeout=TIMEOUT)
        return len(md.topics[topic].partitions)

    def create_partitions(self, topic, count, validate_only=False):
        from confluent_kafka.admin import NewPartitions

        return self._one(
            self.admin.create_partitions(
                [NewPartitions(topic, count)], validate_only=validate_only
            )
        )[1]

    def produce(self, topic, partition, records):
        """Produces (key, value) pairs; returns their offsets or error names, in order."""
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 0})
        outcomes = [None] * len(records)

        def report(i):
            def cb(err, msg):
                outcomes[i] = err.name() if err else msg.offset()

            return cb

        for i, (k, v) in enumerate(records):
            producer.produce(topic, key=k, value=v, partition=partition, on_delivery=report(i))
            # One record per request: each gets its own outcome.
            producer.flush(TIMEOUT)
        return outcomes

    def delete_records(self, topic, partition, offset):
        from confluent_kafka import TopicPartition

        result, err = self._one(
            self.admin.delete_records([TopicPartition(topic, partition, offset)])
        )
        return (result.low_watermark if result is not None else None), err

    def earliest(self, topic, partition):
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import OffsetSpec

        result, err = self._one(
            self.admin.list_offsets({TopicPartition(topic, partition): OffsetSpec.earliest()})
        )
        if err:
            raise RuntimeError(f"list_offsets: {err}")
        return result.offset

    def first_offset_from(self, topic, partition, offset, leader_epoch=None):
        """Where a consumer positioned at `offset` (auto.offset.reset=earliest) reads first.
        With a leader epoch, librdkafka validates the position with OffsetForLeaderEpoch
        before it fetches (KIP-320)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"admin-{topic}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        try:
            tp = TopicPartition(topic, partition, offset)
            if leader_epoch is not None:
                tp = TopicPartition(topic, partition, offset, leader_epoch=leader_epoch)
            c.assign([tp])
            for _ in range(int(TIMEOUT)):
                msg = c.poll(1.0)
                if msg is not None and not msg.error():
                    return msg.offset()
            return None
        finally:
            c.close()

    def values_from(self, topic, partition, offset, n):
        """The values of `n` records read from `offset` on."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"values-{topic}"})
        seen = []
        try:
            c.assign([TopicPartition(topic, partition, offset)])
            for _ in range(int(TIMEOUT)):
                msg = c.poll(1.0)
                if msg is not None and not msg.error():
                    seen.append(msg.value())
                    if len(seen) == n:
                        break
        finally:
            c.close()
        return seen

    def alter(self, topic, ops, validate_only=False):
        """IncrementalAlterConfigs of (key, op name, value) on `topic`: the error name."""
        from confluent_kafka.admin import (
            AlterConfigOpType,
            ConfigEntry,
            ConfigResource,
            ResourceType,
        )

        entries = [
            ConfigEntry(k, v, incremental_operation=getattr(AlterConfigOpType, op))
            for k, op, v in ops
        ]
        resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
        return self._one(
            self.admin.incremental_alter_configs([resource], validate_only=validate_only)
        )[1]

    def authorized_operations(self, topic):
        """The operation names Metadata (topic) and DescribeCluster report as allowed."""
        from confluent_kafka import TopicCollection

        cluster = self.admin.describe_cluster(include_authorized_operations=True).result(
            timeout=TIMEOUT
        )
        (future,) = self.admin.describe_topics(
            TopicCollection([topic]), include_authorized_operations=True
        ).values()
        described = future.result(timeout=TIMEOUT)
        return {
            "cluster": sorted(op.name for op in cluster.authorized_operations or []),
            "topic": sorted(op.name for op in described.authorized_operations or []),
        }

    def replace_configs(self, topic, configs):
        """AlterConfigs (the legacy, replacing API) of `topic`: the error name."""
        from confluent_kafka.admin import ConfigResource, ResourceType

        resource = ConfigResource(ResourceType.TOPIC, topic, set_config=configs)
        return self._one(self.admin.alter_configs([resource]))[1]

    def config(self, topic, key):
        """(value, source name) of `key` in DescribeConfigs."""
        from confluent_kafka.admin import ConfigResource, ResourceType

        result, err = self._one(
            self.admin.describe_configs([ConfigResource(ResourceType.TOPIC, topic)])
        )
        if err:
            raise RuntimeError(f"describe_configs: {err}")
        entry = result[key]
        source = entry.source
        # The ConfigSource enum, or its code, depending on the confluent-kafka version.
        name = getattr(source, "name", None) or SOURCES.get(source, str(source))
        return entry.value, name


class KafkaPython:
    """The checks' operations through kafka-python."""

    def __init__(self, bootstrap):
        from kafka import KafkaAdminClient

        self.bootstrap = bootstrap
        self.admin = KafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(TIMEOUT * 1000)
        )

    @staticmethod
    def _error_name(exc):
        return type(exc).__name__

    def create_topic(self, topic, partitions, configs=None):
        from kafka.admin import NewTopic

        try:
            self.admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
            return None
        except Exception as e:  # noqa: BLE001
            return self._error_name(e)

    def partition_count(self, topic):
        (t,) = self.admin.describe_topics([topic])
        return len(t["partitions"])

    def create_partitions(self, topic, count, validate_only=False):
        try:
            self.admin.create_partitions({topic: count}, validate_only=validate_only)
            return None
        except Exception as e:  # noqa: BLE001
            return self._error_name(e)

    def produce(self, topic, partition, records):
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, retries=0)
        outcomes = []
        try:
            for k, v in records:
                try:
                    md = producer.send(topic, key=k, value=v, partition=partition).get(TIMEOUT)
                    outcomes.append(md.offset)
                except Exception as e:  # noqa: BLE001
                    outcomes.append(self._error_name(e))
        finally:
            producer.close()
        return outcomes

    def delete_records(self, topic, partition, offset):
        from kafka import TopicPartition

        try:
            result = self.admin.delete_records({TopicPartition(topic, partition): offset})
        except Exception as e:  # noqa: BLE001
            return None, self._error_name(e)
        (value,) = result.values()
        low = value.get("low_watermark") if isinstance(value, dict) else value
        return low, None

    def _consumer(self):
        from kafka import KafkaConsumer

        return KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=int(TIMEOUT * 1000),
        )

    def earliest(self, topic, partition):
        from kafka import TopicPartition

        c = self._consumer()
        try:
            tp = TopicPartition(topic, partition)
            return c.beginning_offsets([tp])[tp]
        finally:
            c.close()

    def first_offset_from(self, topic, partition, offset):
        from kafka import TopicPartition

        c = self._consumer()
        try:
            tp = TopicPartition(topic, partition)
            c.assign([tp])
            c.seek(tp, offset)
            for msg in c:
                return msg.offset
            return None
        finally:
            c.close()

    def values_from(self, topic, partition, offset, n):
        from kafka import TopicPartition

        c = self._consumer()
        seen = []
        try:
            tp = TopicPartition(topic, partition)
            c.assign([tp])
            c.seek(tp, offset)
            for msg in c:
                seen.append(msg.value)
                if len(seen) == n:
                    break
        finally:
            c.close()
        return seen

    def alter(self, topic, ops, validate_only=False):
        from kafka.admin import ConfigResource, ConfigResourceType

        configs = {k: (op, v) for k, op, v in ops}
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)
        try:
            response = self.admin.alter_configs(
                [resource],
                validate_only=validate_only,
                incremental=True,
                # The broker, not the client, is what must refuse unknown keys here.
                raise_on_unknown=False,
            )
        except Exception as e:  # noqa: BLE001
            return self._error_name(e)
        return _kafka_python_error(response, topic)

    def replace_configs(self, topic, configs):
        from kafka.admin import ConfigResource, ConfigResourceType

        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs=configs)
        try:
            response = self.admin.alter_configs([resource], incremental=False)
        except Exception as e:  # noqa: BLE001
            return self._error_name(e)
        return _kafka_python_error(response, topic)

    def config(self, topic, key):
        from kafka.admin import ConfigResource, ConfigResourceType

        result = self.admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)], config_filter="all"
        )
        # {resource type: {resource name: {key: {"value", "config_source", ...}}}}
        entry = result["topic"][topic][key]
        return entry["value"], entry["config_source"]


def _kafka_python_error(response, topic):
    """The error name in kafka-python's alter_configs result, None when it succeeded."""
    # {resource type: {resource name: "OK" or "[Error N] Name: message"}}
    outcome = str(response["topic"][topic])
    if not outcome.startswith("[Error "):
        return None
    return outcome.split("]", 1)[1].split(":", 1)[0].strip()


CLIENTS = {"confluent": Confluent, "kafka-python": KafkaPython}

# What each client calls the Kafka errors checked here.
ERRORS = {
    "confluent": {
        "INVALID_PARTITIONS": "INVALID_PARTITIONS",
        "OFFSET_OUT_OF_RANGE": "OFFSET_OUT_OF_RANGE",
        "INVALID_CONFIG": "INVALID_CONFIG",
        "INVALID_RECORD": "INVALID_RECORD",
    },
    "kafka-python": {
        "INVALID_PARTITIONS": "InvalidPartitionsError",
        "OFFSET_OUT_OF_RANGE": "OffsetOutOfRangeError",
        "INVALID_CONFIG": "InvalidConfigurationError",
        "INVALID_RECORD": "InvalidRecordError",
    },
}


def before(run, client, bootstrap, topic):
    c = CLIENTS[client](bootstrap)
    errors = ERRORS[client]
    run.result["client"] = client
    with run.step("create topic"):
        run.check(c.create_topic(topic, 1) is None, "creating the topic failed")

    with run.step("create partitions"):
        err = c.create_partitions(topic, 3)
        run.check(err is None, f"growing to 3 partitions: {err}")
        run.result["partitions"] = c.partition_count(topic)
        run.check(run.result["partitions"] == 3, f"partitions: {run.result['partitions']}")
        for count in (3, 2):
            err = c.create_partitions(topic, count)
            run.check(
                err == errors["INVALID_PARTITIONS"],
                f"growing to {count} of 3 partitions gave {err}",
            )
        err = c.create_partitions(topic, 5, validate_only=True)
        run.check(err is None, f"validate_only to 5: {err}")
        n = c.partition_count(topic)
        run.check(n == 3, f"validate_only changed the partition count to {n}")

    with run.step("delete records"):
        offsets = c.produce(topic, 0, [(f"k{i}".encode(), f"v{i}".encode()) for i in range(10)])
        run.check(offsets == list(range(10)), f"produced at {offsets}")
        low, err = c.delete_records(topic, 0, 4)
        run.result["low_watermark"] = low
        run.check(err is None and low == 4, f"delete_records before 4: low {low}, error {err}")
        run.result["earliest"] = c.earliest(topic, 0)
        run.check(run.result["earliest"] == 4, f"earliest offset {run.result['earliest']}")
        first = c.first_offset_from(topic, 0, 2)
        run.result["first_from_2"] = first
        run.check(first == 4, f"a consumer at offset 2 read first at {first}")
        if client == "confluent":
            first = c.first_offset_from(topic, 0, 6, leader_epoch=0)
            run.result["first_from_6_epoch_0"] = first
            run.check(first == 6, f"a consumer at offset 6 of epoch 0 read first at {first}")
        low, err = c.delete_records(topic, 0, 100)
        run.check(
            err == errors["OFFSET_OUT_OF_RANGE"],
            f"delete_records beyond the high watermark: low {low}, error {err}",
        )

    if client == "confluent":
        with run.step("authorized operations"):
            # No authorizer: every operation of the resource type, as Kafka computes it.
            ops = c.authorized_operations(topic)
            run.result["authorized_operations"] = ops
            run.check(
                set(ops["topic"])
                == {
                    "READ",
                    "WRITE",
                    "CREATE",
                    "DELETE",
                    "ALTER",
                    "DESCRIBE",
                    "DESCRIBE_CONFIGS",
                    "ALTER_CONFIGS",
                },
                f"topic operations: {ops['topic']}",
            )
            run.check(
                {"ALTER", "DESCRIBE", "CLUSTER_ACTION", "ALTER_CONFIGS", "IDEMPOTENT_WRITE"}
                <= set(ops["cluster"]),
                f"cluster operations: {ops['cluster']}",
            )

    with run.step("legacy alter configs"):
        err = c.replace_configs(topic, {"retention.bytes": "1048576"})
        run.check(err is None, f"AlterConfigs retention.bytes: {err}")
        value, source = c.config(topic, "retention.bytes")
        run.result["retention_bytes_set"] = [value, source]
        run.check(
            value == "1048576" and source == "DYNAMIC_TOPIC_CONFIG",
            f"retention.bytes after AlterConfigs: {value} ({source})",
        )
        err = c.replace_configs(topic, {"retention.ms": "86400000"})
        run.check(err is None, f"AlterConfigs retention.ms: {err}")
        value, source = c.config(topic, "retention.bytes")
        # kafka-python adds the dynamic configs the request leaves out (read from
        # DescribeConfigs first), so only a raw AlterConfigs resets them.
        if client == "confluent":
            run.check(
                source == "DEFAULT_CONFIG",
                f"AlterConfigs without retention.bytes left it at {value} ({source})",
            )
        err = c.replace_configs(topic, {})
        run.check(err is None, f"AlterConfigs of nothing: {err}")

    with run.step("alter configs"):
        err = c.alter(topic, [("retention.ms", "SET", "123456789")])
        run.check(err is None, f"SET retention.ms: {err}")
        value, source = c.config(topic, "retention.ms")
        run.result["retention_set"] = [value, source]
        run.check(
            value == "123456789" and source == "DYNAMIC_TOPIC_CONFIG",
            f"retention.ms after SET: {value} ({source})",
        )
        err = c.alter(topic, [("retention.ms", "SET", "42")], validate_only=True)
        run.check(err is None, f"validate_only SET: {err}")
        value, _ = c.config(topic, "retention.ms")
        run.check(value == "123456789", f"validate_only changed retention.ms to {value}")
        err = c.alter(topic, [("retention.ms", "DELETE", None)])
        run.check(err is None, f"DELETE retention.ms: {err}")
        value, source = c.config(topic, "retention.ms")
        run.result["retention_deleted"] = [value, source]
        run.check(source == "DEFAULT_CONFIG", f"retention.ms after DELETE: {value} ({source})")
        err = c.alter(topic, [("no.such.config", "SET", "1")])
        run.check(err == errors["INVALID_CONFIG"], f"an unknown key gave {err}")
        err = c.alter(topic, [("cleanup.policy", "APPEND", "compact")])
        run.check(err is None, f"APPEND compact: {err}")
        value, _ = c.config(topic, "cleanup.policy")
        run.check(value == "delete,compact", f"cleanup.policy after APPEND: {value}")
        err = c.alter(topic, [("cleanup.policy", "SUBTRACT", "delete")])
        run.check(err is None, f"SUBTRACT delete: {err}")
        value, _ = c.config(topic, "cleanup.policy")
        run.result["cleanup_policy"] = value
        run.check(value == "compact", f"cleanup.policy after SUBTRACT: {value}")

    with run.step("compacted topic"):
        outcomes = c.produce(topic, 1, [(None, b"no key"), (b"key", b"keyed")])
        run.result["compacted_produce"] = outcomes
        run.check(
            outcomes[0] == errors["INVALID_RECORD"],
            f"a record without a key gave {outcomes[0]}",
        )
        run.check(outcomes[1] == 0, f"the keyed record landed at {outcomes[1]}")


    with run.step("compression.type"):
        # The producer sends uncompressed batches; the broker stores them in the topic's
        # codec, and the consumer reads the same records (kafka-python has only gzip here).
        codecs = ["gzip", "snappy", "lz4", "zstd"] if client == "confluent" else ["gzip"]
        run.result["codecs_read"] = {}
        for codec in codecs:
            t = f"{topic}-{codec}"
            err = c.create_topic(t, 1, {"compression.type": codec})
            run.check(err is None, f"creating {t}: {err}")
            values = [f"{codec}-{i}".encode() for i in range(3)]
            offsets = c.produce(t, 0, [(b"k", v) for v in values])
            run.check(offsets == [0, 1, 2], f"{t}: produced at {offsets}")
            seen = c.values_from(t, 0, 0, 3)
            run.result["codecs_read"][codec] = len(seen)
            run.check(seen == values, f"{t}: read {seen}")
            value, source = c.config(t, "compression.type")
            run.check(
                value == codec and source == "DYNAMIC_TOPIC_CONFIG",
                f"{t}: compression.type {value} ({source})",
            )


def after(run, client, bootstrap, topic):
    c = CLIENTS[client](bootstrap)
    run.result["client"] = client
    with run.step("after restart"):
        run.result["partitions"] = c.partition_count(topic)
        run.check(run.result["partitions"] == 3, f"partitions: {run.result['partitions']}")
        run.result["earliest"] = c.earliest(topic, 0)
        run.check(run.result["earliest"] == 4, f"earliest offset {run.result['earliest']}")
        first = c.first_offset_from(topic, 0, 0)
        run.check(first == 4, f"a consumer at offset 0 read first at {first}")
        value, source = c.config(topic, "cleanup.policy")
        run.result["cleanup_policy"] = value
        run.check(
            value == "compact" and source == "DYNAMIC_TOPIC_CONFIG",
            f"cleanup.policy: {value} ({source})",
        )


if __name__ == "__main__":
    main(RUN, {"before": before, "after": after}, sys.argv)
