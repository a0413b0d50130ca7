package woodpecker.compat;

import java.io.FileInputStream;
import java.io.InputStream;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.LogTruncationException;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Single checks of woodpecker-rs's Kafka listener with the Apache Kafka Java client
 * (kafka-clients 3.9), each printing one line {@code RESULT <json>} with what it observed and a
 * list of failures; it exits 0 only when that list is empty.
 *
 * <ul>
 *   <li>{@code epoch <bootstrap> <topic>}: creates the topic (one partition) and writes 10
 *       records. A consumer {@code seek}s to offset 6 with leader epoch 0, which makes it
 *       validate that position with OffsetForLeaderEpoch (KIP-320) before fetching: it must read
 *       from 6 ({@code first_from_6}). Another seeks to offset 20 with epoch 0 and
 *       {@code auto.offset.reset=none}: the broker's answer (epoch 0 ends at 10) tells it that
 *       its position is past the end of its epoch, which the consumer reports as a
 *       {@code LogTruncationException} naming the divergent offset ({@code divergent_from_20}).
 *   <li>{@code authorized <bootstrap> <client-config|-> <topic>}: the Admin client's
 *       {@code describeTopics} and {@code describeCluster} with
 *       {@code includeAuthorizedOperations(true)}, as the principal of the client
 *       configuration (a properties file, or {@code -} for none): {@code topic_operations} and
 *       {@code cluster_operations} (sorted names; {@code null} when the broker sent none).
 * </ul>
 */
public final class BrokerChecks {
    private static final long TIMEOUT_S = 60;

    private final List<String> failures = new ArrayList<>();
    private final Map<String, Object> result = new TreeMap<>();

    private BrokerChecks() {}

    public static void main(String[] args) throws Exception {
        BrokerChecks run = new BrokerChecks();
        try {
            if (args.length == 3 && args[0].equals("epoch")) {
                run.epoch(args[1], args[2]);
            } else if (args.length == 4 && args[0].equals("authorized")) {
                run.authorized(args[1], args[2], args[3]);
            } else {
                System.err.println("usage: BrokerChecks epoch <bootstrap> <topic>");
                System.err.println("       BrokerChecks authorized <bootstrap> <config|-> <topic>");
                System.exit(2);
            }
        } catch (Throwable e) {
            run.fail("aborted: " + e);
        }
        run.result.put("failures", run.failures);
        System.out.println("RESULT " + json(run.result));
        System.out.flush();
        Runtime.getRuntime().halt(run.failures.isEmpty() ? 0 : 1);
    }

    private void fail(String what) {
        System.err.println("FAIL " + what);
        failures.add(what);
    }

    private static Properties common(String bootstrap) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        return p;
    }

    private void epoch(String bootstrap, String topic) throws Exception {
        try (Admin admin = Admin.create(common(bootstrap))) {
            admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1)))
                    .all()
                    .get(TIMEOUT_S, TimeUnit.SECONDS);
        }
        Properties pp = common(bootstrap);
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
            for (int i = 0; i < 10; i++) {
                producer.send(new ProducerRecord<>(topic, 0, "k" + i, "v" + i))
                        .get(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
        TopicPartition tp = new TopicPartition(topic, 0);

        try (KafkaConsumer<String, String> consumer = consumer(bootstrap)) {
            consumer.assign(List.of(tp));
            consumer.seek(tp, new OffsetAndMetadata(6, Optional.of(0), ""));
            long first = -1;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (first < 0 && System.nanoTime() < deadline) {
                ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(500));
                if (!records.isEmpty()) {
                    first = records.iterator().next().offset();
                }
            }
            result.put("first_from_6", first);
            if (first != 6) {
                fail("a consumer at offset 6 of epoch 0 read first at " + first);
            }
        }

        try (KafkaConsumer<String, String> consumer = consumer(bootstrap)) {
            consumer.assign(List.of(tp));
            consumer.seek(tp, new OffsetAndMetadata(20, Optional.of(0), ""));
            Long divergent = null;
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
            while (divergent == null && System.nanoTime() < deadline) {
                try {
                    ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(500));
                    if (!records.isEmpty()) {
                        fail("a consumer past the end of epoch 0 read records at "
                                + records.iterator().next().offset());
                        break;
                    }
                } catch (LogTruncationException e) {
                    OffsetAndMetadata at = e.divergentOffsets().get(tp);
                    divergent = at == null ? -1L : at.offset();
                    result.put("divergent_epoch", at == null ? null : at.leaderEpoch().orElse(-1));
                }
            }
            result.put("divergent_from_20", divergent);
            if (divergent == null || divergent != 10) {
                fail("a consumer at offset 20 of epoch 0 got divergent offset " + divergent
                        + " (expected 10, the end of epoch 0)");
            }
        }
    }

    private static KafkaConsumer<String, String> consumer(String bootstrap) {
        Properties p = common(bootstrap);
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        return new KafkaConsumer<>(p);
    }

    private void authorized(String bootstrap, String config, String topic) throws Exception {
        Properties p = common(bootstrap);
        if (!config.equals("-")) {
            try (InputStream in = new FileInputStream(config)) {
                p.load(in);
            }
        }
        try (Admin admin = Admin.create(p)) {
            DescribeClusterResult cluster = admin.describeCluster(
                    new DescribeClusterOptions().includeAuthorizedOperations(true));
            result.put("cluster_operations",
                    names(cluster.authorizedOperations().get(TIMEOUT_S, TimeUnit.SECONDS)));
            TopicDescription described = admin.describeTopics(
                            List.of(topic), new DescribeTopicsOptions().includeAuthorizedOperations(true))
                    .allTopicNames()
                    .get(TIMEOUT_S, TimeUnit.SECONDS)
                    .get(topic);
            result.put("topic_operations", names(described.authorizedOperations()));
        }
    }

    private static Set<String> names(Set<AclOperation> ops) {
        if (ops == null) {
            return null;
        }
        Set<String> names = new TreeSet<>();
        for (AclOperation op : ops) {
            names.add(op.name());
        }
        return names;
    }

    /** Just enough JSON: maps, collections, strings, numbers. */
    private static String json(Object v) {
        if (v == null) {
            return "null";
        }
        if (v instanceof Map<?, ?> m) {
            List<String> parts = new ArrayList<>();
            for (Map.Entry<?, ?> e : m.entrySet()) {
                parts.add(json(e.getKey().toString()) + ":" + json(e.getValue()));
            }
            return "{" + String.join(",", parts) + "}";
        }
        if (v instanceof Collection<?> c) {
            List<String> parts = new ArrayList<>();
            for (Object o : c) {
                parts.add(json(o));
            }
            return "[" + String.join(",", parts) + "]";
        }
        if (v instanceof Number || v instanceof Boolean) {
            return v.toString();
        }
        StringBuilder s = new StringBuilder("\"");
        for (char ch : v.toString().toCharArray()) {
            if (ch == '"' || ch == '\\') {
                s.append('\\').append(ch);
            } else if (ch < 0x20) {
                s.append(String.format("\\u%04x", (int) ch));
            } else {
                s.append(ch);
            }
        }
        return s.append('"').toString();
    }
}
