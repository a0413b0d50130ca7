package woodpecker.compat;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Drives woodpecker-rs's Kafka listener with the Apache Kafka Java client (kafka-clients 3.9).
 *
 * <p>Usage: {@code java -cp <classpath> woodpecker.compat.KafkaClients group <bootstrap> <topic>
 * <group> <records-per-phase> [range|cooperative-sticky]} (the partition assignor, default range:
 * eager rebalances; cooperative-sticky: incremental ones).
 *
 * <p>The {@code group} scenario: the AdminClient describes the cluster and creates a topic of 4
 * partitions; two consumers of one group (classic protocol, subscribe) poll in their own
 * threads until the partitions are split between them; a default producer (idempotent, acks=all)
 * writes a first phase of records, which the two consumers read; one consumer closes (LeaveGroup)
 * and the other must get every partition after the rebalance and read a second phase of records.
 * Consumers commit synchronously after every batch; at the end the committed offsets must equal
 * the end offsets.
 *
 * <p>Prints one line {@code RESULT <json>} on stdout with what was observed and a list of
 * failures; exits 0 only when that list is empty. Progress goes to stderr.
 */
public final class KafkaClients {
    private static final long STEP_TIMEOUT_S = 60;
    private static final int PARTITIONS = 4;

    private final List<String> failures = new ArrayList<>();
    private final Map<String, Object> result = new LinkedHashMap<>();
    private String assignor = "range";

    private KafkaClients() {}

    public static void main(String[] args) throws Exception {
        boolean group = args.length >= 5 && args.length <= 6 && args[0].equals("group");
        boolean staticGroup = args.length == 4 && args[0].equals("static");
        if (!group && !staticGroup) {
            System.err.println("usage: KafkaClients group <bootstrap> <topic> <group>"
                    + " <records-per-phase> [range|cooperative-sticky]");
            System.err.println("       KafkaClients static <bootstrap> <topic> <group>");
            System.exit(2);
        }
        KafkaClients run = new KafkaClients();
        if (args.length == 6) {
            run.assignor = args[5];
        }
        try {
            if (group) {
                run.group(args[1], args[2], args[3], Integer.parseInt(args[4]));
            } else {
                run.staticMembership(args[1], args[2], args[3]);
            }
        } catch (Throwable e) {
            run.fail("aborted: " + describe(e));
        }
        run.result.put("failures", run.failures);
        System.out.println("RESULT " + Json.write(run.result));
        System.out.flush();
        // Lingering client threads must not keep the JVM alive.
        Runtime.getRuntime().halt(run.failures.isEmpty() ? 0 : 1);
    }

    private void fail(String what) {
        log("FAIL " + what);
        failures.add(what);
    }

    private static void log(String what) {
        System.err.println("[java] " + what);
    }

    private static String describe(Throwable e) {
        StringBuilder s = new StringBuilder(e.toString());
        for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            s.append(" <- ").append(c);
        }
        return s.toString();
    }

    private static void waitUntil(String what, BooleanSupplier done, Runnable state)
            throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(STEP_TIMEOUT_S);
        while (!done.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                state.run();
                throw new IllegalStateException(
                        "timed out after " + STEP_TIMEOUT_S + " s waiting for " + what);
            }
            Thread.sleep(50);
        }
    }

    private void group(String bootstrap, String topic, String group, int perPhase)
            throws Exception {
        result.put("topic", topic);
        result.put("group", group);
        result.put("records_per_phase", perPhase);
        result.put("assignor", assignor);

        try (Admin admin = Admin.create(adminProps(bootstrap))) {
            adminCluster(admin);
            adminCreateTopic(admin, topic);
            consumeInGroup(bootstrap, admin, topic, group, perPhase);
        }
    }

    private static Properties adminProps(String bootstrap) {
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ap.put(AdminClientConfig.CLIENT_ID_CONFIG, "compat-java-admin");
        ap.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        ap.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        return ap;
    }

    /**
     * The {@code static} scenario (KIP-345): two static members (group.instance.id i1, i2)
     * share a topic of 4 partitions; each in turn is closed (a static member does not leave)
     * and restarted under the same instance id: it must get its partitions back while the other
     * member's rebalance callbacks do not fire. Records produced afterwards are read by both;
     * describeConsumerGroups shows the instance ids, client ids and host.
     */
    private void staticMembership(String bootstrap, String topic, String group) throws Exception {
        result.put("topic", topic);
        result.put("group", group);
        try (Admin admin = Admin.create(adminProps(bootstrap));
                KafkaProducer<String, String> producer = producer(bootstrap)) {
            adminCreateTopic(admin, topic);
            List<Consumed> sink = java.util.Collections.synchronizedList(new ArrayList<>());
            Map<String, Worker> live = new LinkedHashMap<>();
            live.put("i1", new Worker("s1", staticProps(bootstrap, group, "s1", "i1"), topic, sink));
            live.put("i2", new Worker("s2", staticProps(bootstrap, group, "s2", "i2"), topic, sink));
            Runnable state = () -> {
                for (Worker w : live.values()) {
                    log("state: " + w.name + "=" + w.assignment.get());
                }
            };
            try {
                for (Worker w : live.values()) {
                    w.thread.start();
                }
                waitUntil("the two static members to share the partitions", () -> {
                    Set<Integer> union = new TreeSet<>();
                    int total = 0;
                    for (Worker w : live.values()) {
                        checkWorker(w);
                        if (w.assignment.get().isEmpty()) {
                            return false;
                        }
                        union.addAll(w.assignment.get());
                        total += w.assignment.get().size();
                    }
                    return total == PARTITIONS && union.size() == PARTITIONS;
                }, state);
                result.put("split", List.of(new ArrayList<>(live.get("i1").assignment.get()),
                        new ArrayList<>(live.get("i2").assignment.get())));
                List<Object> restarts = new ArrayList<>();
                for (String[] turn : new String[][] {{"i2", "s2b", "i1"}, {"i1", "s1b", "i2"}}) {
                    Worker old = live.get(turn[0]);
                    Worker other = live.get(turn[2]);
                    List<String> otherBefore = other.events();
                    Set<Integer> had = new TreeSet<>(old.assignment.get());
                    old.stop = true;
                    old.thread.join(TimeUnit.SECONDS.toMillis(STEP_TIMEOUT_S));
                    if (!old.closed) {
                        throw new IllegalStateException(old.name + " did not close");
                    }
                    checkWorker(old);
                    Worker again = new Worker(
                            turn[1], staticProps(bootstrap, group, turn[1], turn[0]), topic, sink);
                    live.put(turn[0], again);
                    again.thread.start();
                    waitUntil(turn[1] + " to be assigned", () -> {
                        checkWorker(again);
                        return !again.assignment.get().isEmpty();
                    }, state);
                    // Records now must reach both: both consume after the restart.
                    String phase = "after-" + turn[1];
                    produce(producer, topic, phase, 40);
                    waitUntil("both members to read the records of " + phase, () -> {
                        checkWorker(again);
                        checkWorker(other);
                        return count(sink, null, phase) >= 40;
                    }, state);
                    Map<String, Object> r = new LinkedHashMap<>();
                    r.put("member", turn[1]);
                    r.put("had", new ArrayList<>(had));
                    r.put("got", new ArrayList<>(again.assignment.get()));
                    r.put("other_new_events", other.events().subList(
                            otherBefore.size(), other.events().size()));
                    restarts.add(r);
                    if (!again.assignment.get().equals(had)) {
                        fail(turn[1] + " got " + again.assignment.get() + ", its instance had "
                                + had);
                    }
                    if (!other.events().equals(otherBefore)) {
                        fail("the restart of " + turn[0] + " made " + other.name
                                + " rebalance: " + r.get("other_new_events"));
                    }
                }
                result.put("restarts", restarts);
                ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group))
                        .all()
                        .get(STEP_TIMEOUT_S, TimeUnit.SECONDS)
                        .get(group);
                List<String> members = new ArrayList<>();
                for (MemberDescription m : d.members()) {
                    members.add(m.groupInstanceId().orElse("-") + " " + m.clientId() + " "
                            + m.host());
                }
                java.util.Collections.sort(members);
                result.put("members", members);
                result.put("state", d.state().toString());
                List<String> want = List.of(
                        "i1 compat-java-s1b /127.0.0.1", "i2 compat-java-s2b /127.0.0.1");
                if (!members.equals(want)) {
                    fail("describeConsumerGroups members " + members + ", expected " + want);
                }
            } finally {
                for (Worker w : live.values()) {
                    w.stop = true;
                }
            }
        }
    }

    private Properties staticProps(String bootstrap, String group, String name, String instance) {
        Properties c = consumerProps(bootstrap, group, "compat-java-" + name);
        c.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, instance);
        return c;
    }

    private void adminCluster(Admin admin) {
        try {
            DescribeClusterResult cluster = admin.describeCluster();
            Collection<Node> nodes = cluster.nodes().get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
            String clusterId = cluster.clusterId().get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
            Node controller = cluster.controller().get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
            List<String> names = new ArrayList<>();
            for (Node n : nodes) {
                names.add(n.id() + "@" + n.host() + ":" + n.port());
            }
            result.put("cluster_nodes", names);
            result.put("cluster_id", clusterId);
            result.put("controller", controller == null ? null : controller.id());
            log("describeCluster: " + names + " id=" + clusterId);
            if (nodes.isEmpty()) {
                fail("describeCluster returned no nodes");
            }
        } catch (Exception e) {
            fail("describeCluster: " + describe(e));
        }
    }

    private void adminCreateTopic(Admin admin, String topic) throws Exception {
        admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1)))
                .all()
                .get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
        log("createTopics " + topic + " ok");
        Set<String> names = admin.listTopics().names().get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
        result.put("listed_topic", names.contains(topic));
        if (!names.contains(topic)) {
            fail("listTopics after createTopics does not contain " + topic + ": " + names);
        }
        Map<String, TopicDescription> described =
                admin.describeTopics(List.of(topic))
                        .allTopicNames()
                        .get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
        int partitions = described.get(topic).partitions().size();
        result.put("described_partitions", partitions);
        if (partitions != PARTITIONS) {
            fail("describeTopics: " + partitions + " partitions, expected " + PARTITIONS);
        }
    }

    private KafkaProducer<String, String> producer(String bootstrap) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.CLIENT_ID_CONFIG, "compat-java-producer");
        // Defaults on purpose: since Kafka 3.0 they are enable.idempotence=true and acks=all.
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        return new KafkaProducer<>(p);
    }

    /** One produced record: where it landed. */
    private record Produced(int partition, long offset, String key, String value) {}

    private List<Produced> produce(
            KafkaProducer<String, String> producer, String topic, String phase, int n)
            throws Exception {
        List<ProducerRecord<String, String>> records = new ArrayList<>();
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            // Explicit partitions so that every partition gets records whatever the key hash.
            ProducerRecord<String, String> r =
                    new ProducerRecord<>(
                            topic, i % PARTITIONS, phase + "-k-" + i, phase + "-v-" + i);
            records.add(r);
            futures.add(producer.send(r));
        }
        producer.flush();
        List<Produced> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            RecordMetadata md = futures.get(i).get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
            out.add(new Produced(md.partition(), md.offset(), records.get(i).key(),
                    records.get(i).value()));
        }
        log("produced " + n + " records (" + phase + ")");
        return out;
    }

    /** A consumed record and who consumed it. */
    private record Consumed(String consumer, int partition, long offset, String key, String value) {}

    /** A consumer of the group that polls in its own thread. */
    private static final class Worker implements Runnable {
        final String name;
        final Properties props;
        final String topic;
        final List<Consumed> sink;
        final List<String> events = new ArrayList<>();
        final AtomicReference<Set<Integer>> assignment = new AtomicReference<>(Set.of());
        final AtomicReference<Throwable> error = new AtomicReference<>();
        volatile boolean stop;
        volatile boolean closed;
        volatile int commits;
        final Thread thread;

        Worker(String name, Properties props, String topic, List<Consumed> sink) {
            this.name = name;
            this.props = props;
            this.topic = topic;
            this.sink = sink;
            this.thread = new Thread(this, name);
            this.thread.setDaemon(true);
        }

        private static Set<Integer> partitions(Collection<TopicPartition> tps) {
            Set<Integer> s = new TreeSet<>();
            for (TopicPartition tp : tps) {
                s.add(tp.partition());
            }
            return s;
        }

        synchronized List<String> events() {
            return new ArrayList<>(events);
        }

        private synchronized void event(String e) {
            events.add(e);
            log(name + ": " + e);
        }

        @Override
        public void run() {
            try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(props)) {
                consumer.subscribe(
                        List.of(topic),
                        new ConsumerRebalanceListener() {
                            @Override
                            public void onPartitionsRevoked(Collection<TopicPartition> tps) {
                                Set<Integer> now = new TreeSet<>(assignment.get());
                                now.removeAll(partitions(tps));
                                assignment.set(now);
                                event("revoked " + partitions(tps));
                            }

                            @Override
                            public void onPartitionsAssigned(Collection<TopicPartition> tps) {
                                Set<Integer> now = new TreeSet<>(assignment.get());
                                now.addAll(partitions(tps));
                                assignment.set(now);
                                event("assigned " + partitions(tps));
                            }

                            @Override
                            public void onPartitionsLost(Collection<TopicPartition> tps) {
                                Set<Integer> now = new TreeSet<>(assignment.get());
                                now.removeAll(partitions(tps));
                                assignment.set(now);
                                event("lost " + partitions(tps));
                            }
                        });
                while (!stop) {
                    ConsumerRecords<String, String> batch = consumer.poll(Duration.ofMillis(100));
                    if (batch.isEmpty()) {
                        continue;
                    }
                    for (ConsumerRecord<String, String> r : batch) {
                        sink.add(new Consumed(name, r.partition(), r.offset(), r.key(), r.value()));
                    }
                    consumer.commitSync(Duration.ofSeconds(STEP_TIMEOUT_S));
                    commits++;
                }
                event("closing");
            } catch (Throwable e) {
                error.set(e);
                log(name + " failed: " + describe(e));
            } finally {
                closed = true;
            }
        }
    }

    private Properties consumerProps(String bootstrap, String group, String clientId) {
        Properties c = new Properties();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        c.put(ConsumerConfig.CLIENT_ID_CONFIG, clientId);
        c.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        c.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG,
                switch (assignor) {
                    case "range" -> RangeAssignor.class.getName();
                    case "cooperative-sticky" -> CooperativeStickyAssignor.class.getName();
                    default -> throw new IllegalArgumentException("unknown assignor " + assignor);
                });
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        c.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "500");
        c.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        c.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        c.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, "20000");
        return c;
    }

    private static int count(List<Consumed> sink, String consumer, String phase) {
        synchronized (sink) {
            int n = 0;
            for (Consumed c : sink) {
                if ((consumer == null || c.consumer().equals(consumer))
                        && c.value().startsWith(phase + "-")) {
                    n++;
                }
            }
            return n;
        }
    }

    private void checkWorker(Worker w) {
        Throwable e = w.error.get();
        if (e != null) {
            throw new IllegalStateException(w.name + " failed: " + describe(e), e);
        }
    }

    private void consumeInGroup(
            String bootstrap, Admin admin, String topic, String group, int perPhase)
            throws Exception {
        List<Consumed> sink = java.util.Collections.synchronizedList(new ArrayList<>());
        Worker c1 = new Worker("c1", consumerProps(bootstrap, group, "compat-java-c1"), topic, sink);
        Worker c2 = new Worker("c2", consumerProps(bootstrap, group, "compat-java-c2"), topic, sink);
        Runnable state =
                () -> log("state: c1=" + c1.assignment.get() + " c2=" + c2.assignment.get()
                        + " consumed=" + sink.size());
        try (KafkaProducer<String, String> producer = producer(bootstrap)) {
            c1.thread.start();
            c2.thread.start();

            // 1. The two members split the partitions.
            waitUntil(
                    "both consumers to own a disjoint, complete share of the partitions",
                    () -> {
                        checkWorker(c1);
                        checkWorker(c2);
                        Set<Integer> a = c1.assignment.get();
                        Set<Integer> b = c2.assignment.get();
                        Set<Integer> union = new TreeSet<>(a);
                        union.addAll(b);
                        return !a.isEmpty() && !b.isEmpty() && a.size() + b.size() == PARTITIONS
                                && union.size() == PARTITIONS;
                    },
                    state);
            result.put("split_c1", new ArrayList<>(c1.assignment.get()));
            result.put("split_c2", new ArrayList<>(c2.assignment.get()));

            // 2. Phase 1 records are read by the two members together.
            List<Produced> produced = new ArrayList<>(produce(producer, topic, "p1", perPhase));
            waitUntil("the group to read every phase-1 record",
                    () -> {
                        checkWorker(c1);
                        checkWorker(c2);
                        return count(sink, null, "p1") >= perPhase;
                    },
                    state);
            int p1c1 = count(sink, "c1", "p1");
            int p1c2 = count(sink, "c2", "p1");
            result.put("phase1_by_c1", p1c1);
            result.put("phase1_by_c2", p1c2);
            if (p1c1 == 0 || p1c2 == 0) {
                fail("phase 1: both consumers should have read records, c1=" + p1c1 + " c2="
                        + p1c2);
            }

            // 3. c2 leaves; c1 must get every partition.
            c2.stop = true;
            c2.thread.join(TimeUnit.SECONDS.toMillis(STEP_TIMEOUT_S));
            if (!c2.closed) {
                throw new IllegalStateException("c2 did not close within " + STEP_TIMEOUT_S + " s");
            }
            checkWorker(c2);
            waitUntil("c1 to own every partition after c2 left",
                    () -> {
                        checkWorker(c1);
                        return c1.assignment.get().size() == PARTITIONS;
                    },
                    state);
            result.put("after_leave_c1", new ArrayList<>(c1.assignment.get()));

            // 4. Phase 2 records are all read by c1.
            produced.addAll(produce(producer, topic, "p2", perPhase));
            waitUntil("c1 to read every phase-2 record",
                    () -> {
                        checkWorker(c1);
                        return count(sink, "c1", "p2") >= perPhase;
                    },
                    state);
            // Let c1 commit its last batch, then close it.
            c1.stop = true;
            c1.thread.join(TimeUnit.SECONDS.toMillis(STEP_TIMEOUT_S));
            if (!c1.closed) {
                throw new IllegalStateException("c1 did not close within " + STEP_TIMEOUT_S + " s");
            }
            checkWorker(c1);
            result.put("phase2_by_c1", count(sink, "c1", "p2"));
            result.put("phase2_by_c2", count(sink, "c2", "p2"));
            result.put("events_c1", c1.events());
            result.put("events_c2", c2.events());
            result.put("commits", c1.commits + c2.commits);

            checkConsumed(produced, sink);
            checkCommitted(admin, topic, group, produced);
        } finally {
            c1.stop = true;
            c2.stop = true;
        }
    }

    private void checkConsumed(List<Produced> produced, List<Consumed> sink) {
        // Per partition: what was produced, in offset order, must be what was consumed, in the
        // order it was consumed: no loss, no duplicate, no reordering.
        Map<Integer, List<String>> want = new TreeMap<>();
        List<Produced> sorted = new ArrayList<>(produced);
        sorted.sort((a, b) -> a.partition() != b.partition()
                ? Integer.compare(a.partition(), b.partition())
                : Long.compare(a.offset(), b.offset()));
        for (Produced p : sorted) {
            want.computeIfAbsent(p.partition(), k -> new ArrayList<>())
                    .add(p.offset() + ":" + p.key() + "=" + p.value());
        }
        Map<Integer, List<String>> got = new TreeMap<>();
        synchronized (sink) {
            for (Consumed c : sink) {
                got.computeIfAbsent(c.partition(), k -> new ArrayList<>())
                        .add(c.offset() + ":" + c.key() + "=" + c.value());
            }
        }
        result.put("consumed_total", sink.size());
        result.put("produced_total", produced.size());
        for (int p = 0; p < PARTITIONS; p++) {
            List<String> w = want.getOrDefault(p, List.of());
            List<String> g = got.getOrDefault(p, List.of());
            if (!w.equals(g)) {
                int i = 0;
                while (i < w.size() && i < g.size() && w.get(i).equals(g.get(i))) {
                    i++;
                }
                fail("partition " + p + ": consumed " + g.size() + " records, produced "
                        + w.size() + "; first difference at index " + i + ": produced "
                        + (i < w.size() ? w.get(i) : "nothing") + ", consumed "
                        + (i < g.size() ? g.get(i) : "nothing"));
            }
        }
        // Offsets of one partition's records must be consecutive from 0 (a fresh topic).
        Map<Integer, Long> next = new HashMap<>();
        for (Produced p : sorted) {
            long expected = next.getOrDefault(p.partition(), 0L);
            if (p.offset() != expected) {
                fail("partition " + p.partition() + ": produced offset " + p.offset()
                        + ", expected " + expected);
                break;
            }
            next.put(p.partition(), expected + 1);
        }
    }

    private void checkCommitted(Admin admin, String topic, String group, List<Produced> produced)
            throws Exception {
        Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
        Map<TopicPartition, OffsetSpec> earliest = new HashMap<>();
        for (int p = 0; p < PARTITIONS; p++) {
            latest.put(new TopicPartition(topic, p), OffsetSpec.latest());
            earliest.put(new TopicPartition(topic, p), OffsetSpec.earliest());
        }
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> ends =
                admin.listOffsets(latest).all().get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
        Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> starts =
                admin.listOffsets(earliest).all().get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
        Map<TopicPartition, OffsetAndMetadata> committed =
                admin.listConsumerGroupOffsets(group)
                        .partitionsToOffsetAndMetadata()
                        .get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
        Map<Integer, Long> producedPerPartition = new TreeMap<>();
        for (Produced p : produced) {
            producedPerPartition.merge(p.partition(), 1L, Long::sum);
        }
        Map<String, Object> endMap = new TreeMap<>();
        Map<String, Object> committedMap = new TreeMap<>();
        for (int p = 0; p < PARTITIONS; p++) {
            TopicPartition tp = new TopicPartition(topic, p);
            long end = ends.get(tp).offset();
            long start = starts.get(tp).offset();
            OffsetAndMetadata c = committed.get(tp);
            long want = producedPerPartition.getOrDefault(p, 0L);
            endMap.put(Integer.toString(p), end);
            committedMap.put(Integer.toString(p), c == null ? null : c.offset());
            if (end != want) {
                fail("listOffsets(latest) partition " + p + ": " + end + ", expected " + want);
            }
            if (start != 0) {
                fail("listOffsets(earliest) partition " + p + ": " + start + ", expected 0");
            }
            if (c == null || c.offset() != end) {
                fail("listConsumerGroupOffsets partition " + p + ": "
                        + (c == null ? "none" : Long.toString(c.offset()))
                        + ", expected the end offset " + end);
            }
        }
        result.put("end_offsets", endMap);
        result.put("committed", committedMap);
        try {
            ConsumerGroupDescription d =
                    admin.describeConsumerGroups(List.of(group))
                            .describedGroups()
                            .get(group)
                            .get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
            result.put("group_state", d.state().toString());
            result.put("group_members", d.members().size());
            if (!d.members().isEmpty()) {
                fail("describeConsumerGroups after both consumers closed: " + d.members().size()
                        + " members, expected 0");
            }
        } catch (Exception e) {
            fail("describeConsumerGroups: " + describe(e));
        }
    }

    /** Just enough JSON for the summary: maps, lists, strings, numbers, booleans, null. */
    static final class Json {
        static String write(Object v) {
            StringBuilder s = new StringBuilder();
            write(s, v);
            return s.toString();
        }

        private static void write(StringBuilder s, Object v) {
            if (v == null) {
                s.append("null");
            } else if (v instanceof Map<?, ?> m) {
                s.append('{');
                boolean first = true;
                for (Map.Entry<?, ?> e : m.entrySet()) {
                    if (!first) {
                        s.append(',');
                    }
                    first = false;
                    string(s, e.getKey().toString());
                    s.append(':');
                    write(s, e.getValue());
                }
                s.append('}');
            } else if (v instanceof Collection<?> c) {
                s.append('[');
                boolean first = true;
                for (Object o : c) {
                    if (!first) {
                        s.append(',');
                    }
                    first = false;
                    write(s, o);
                }
                s.append(']');
            } else if (v instanceof Number || v instanceof Boolean) {
                s.append(v);
            } else {
                string(s, v.toString());
            }
        }

        private static void string(StringBuilder s, String v) {
            s.append('"');
            for (char ch : v.toCharArray()) {
                switch (ch) {
                    case '"' -> s.append("\\\"");
                    case '\\' -> s.append("\\\\");
                    case '\n' -> s.append("\\n");
                    case '\r' -> s.append("\\r");
                    case '\t' -> s.append("\\t");
                    default -> {
                        if (ch < 0x20) {
                            s.append(String.format("\\u%04x", (int) ch));
                        } else {
                            s.append(ch);
                        }
                    }
                }
            }
            s.append('"');
        }
    }
}
