package woodpecker.compat;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.ConsumerGroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InconsistentGroupProtocolException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * KIP-848 consumer groups ({@code group.protocol=consumer}) against woodpecker-rs's Kafka
 * listener, with the Apache Kafka Java client (kafka-clients 3.9).
 *
 * <p>{@code share <bootstrap> <topic> <group>}: the topic (6 partitions, 10 records each) is
 * consumed by the group: two members in threads of this JVM and a third in a child JVM
 * ({@code member}). The three must own disjoint, even, non-empty sets that cover the topic;
 * every member commits after each batch. A classic consumer of the group is refused with
 * INCONSISTENT_GROUP_PROTOCOL. describeConsumerGroups shows a consumer-type group, Stable, with
 * the three members and their assignments. One member closes (leaves): the others take its
 * partitions. The child JVM is killed (SIGKILL): once its session times out on the server, the
 * last member owns all six partitions and everything is committed. It closes; a new member
 * resumes exactly after the committed offsets.
 *
 * <p>{@code member <bootstrap> <topic> <group> <name>}: one member that prints
 * {@code ASSIGNED <partitions>} whenever its assignment changes, until it is killed.
 *
 * <p>Prints one line {@code RESULT <json>} like {@link KafkaClients}.
 */
public final class Kip848Clients {
    private static final long STEP_TIMEOUT_S = 90;
    private static final int PARTITIONS = 6;
    private static final int PER_PARTITION = 10;

    private final List<String> failures = new ArrayList<>();
    private final Map<String, Object> result = new LinkedHashMap<>();

    private Kip848Clients() {}

    public static void main(String[] args) throws Exception {
        if (args.length == 5 && args[0].equals("member")) {
            member(args[1], args[2], args[3], args[4]);
            return;
        }
        if (args.length != 4 || !args[0].equals("share")) {
            System.err.println("usage: Kip848Clients share <bootstrap> <topic> <group>");
            System.err.println("       Kip848Clients member <bootstrap> <topic> <group> <name>");
            System.exit(2);
        }
        Kip848Clients run = new Kip848Clients();
        try {
            run.share(args[1], args[2], args[3]);
        } catch (Throwable e) {
            run.fail("aborted: " + e);
            e.printStackTrace();
        }
        run.result.put("failures", run.failures);
        System.out.println("RESULT " + KafkaClients.Json.write(run.result));
        System.out.flush();
        Runtime.getRuntime().halt(run.failures.isEmpty() ? 0 : 1);
    }

    private void fail(String what) {
        log("FAIL " + what);
        failures.add(what);
    }

    private void check(boolean ok, String what) {
        if (!ok) {
            fail(what);
        }
    }

    private static void log(String what) {
        System.err.println("[java kip848] " + what);
    }

    private static void waitUntil(String what, BooleanSupplier done) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(STEP_TIMEOUT_S);
        while (!done.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("timed out waiting for " + what);
            }
            Thread.sleep(50);
        }
    }

    private static Properties consumerProps(String bootstrap, String group, String name) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        p.put(ConsumerConfig.CLIENT_ID_CONFIG, "compat-" + name);
        p.put("group.protocol", "consumer");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        return p;
    }

    private static Set<Integer> partitions(Collection<TopicPartition> tps) {
        Set<Integer> s = new TreeSet<>();
        for (TopicPartition tp : tps) {
            s.add(tp.partition());
        }
        return s;
    }

    /** Disjoint, as even as can be, none empty, covering every partition. */
    private static boolean shared(List<Set<Integer>> sets) {
        Set<Integer> all = new HashSet<>();
        int total = 0;
        int min = Integer.MAX_VALUE;
        int max = 0;
        for (Set<Integer> s : sets) {
            all.addAll(s);
            total += s.size();
            min = Math.min(min, s.size());
            max = Math.max(max, s.size());
        }
        return min > 0 && max - min <= 1 && total == PARTITIONS && all.size() == PARTITIONS;
    }

    /** A member polling in its own thread; it commits after every batch. */
    private static final class Worker implements Runnable {
        final String name;
        final KafkaConsumer<String, String> consumer;
        final List<long[]> records = new ArrayList<>();
        volatile Set<Integer> assigned = Set.of();
        volatile boolean stop;
        volatile Throwable error;
        final Thread thread;

        Worker(String bootstrap, String topic, String group, String name) {
            this.name = name;
            this.consumer = new KafkaConsumer<>(consumerProps(bootstrap, group, name));
            consumer.subscribe(List.of(topic));
            thread = new Thread(this, name);
            thread.start();
        }

        @Override
        public void run() {
            try {
                while (!stop) {
                    var batch = consumer.poll(Duration.ofMillis(100));
                    synchronized (records) {
                        for (ConsumerRecord<String, String> r : batch) {
                            records.add(new long[] {r.partition(), r.offset()});
                        }
                    }
                    if (!batch.isEmpty()) {
                        consumer.commitSync();
                    }
                    assigned = partitions(consumer.assignment());
                }
                consumer.close();
            } catch (Throwable e) {
                error = e;
                log(name + ": " + e);
            }
        }

        List<long[]> records() {
            synchronized (records) {
                return new ArrayList<>(records);
            }
        }

        void close() throws InterruptedException {
            stop = true;
            thread.join(TimeUnit.SECONDS.toMillis(STEP_TIMEOUT_S));
        }
    }

    /** A member in a child JVM, read line by line. */
    private static final class Child {
        final Process process;
        volatile Set<Integer> assigned = Set.of();

        Child(String bootstrap, String topic, String group, String name) throws Exception {
            String java = ProcessHandle.current().info().command().orElse("java");
            process = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"),
                    Kip848Clients.class.getName(), "member", bootstrap, topic, group, name)
                    .redirectError(ProcessBuilder.Redirect.INHERIT)
                    .start();
            Thread reader = new Thread(() -> {
                try (BufferedReader in = new BufferedReader(new InputStreamReader(
                        process.getInputStream(), StandardCharsets.UTF_8))) {
                    String line;
                    while ((line = in.readLine()) != null) {
                        if (line.startsWith("ASSIGNED ")) {
                            Set<Integer> s = new TreeSet<>();
                            for (String p : line.substring(9).split(",")) {
                                if (!p.isEmpty()) {
                                    s.add(Integer.parseInt(p));
                                }
                            }
                            assigned = s;
                        }
                    }
                } catch (Exception e) {
                    log("child reader: " + e);
                }
            });
            reader.setDaemon(true);
            reader.start();
        }

        void kill() throws InterruptedException {
            // destroyForcibly is SIGKILL on Linux: the member gets no chance to leave.
            process.destroyForcibly();
            process.waitFor(STEP_TIMEOUT_S, TimeUnit.SECONDS);
        }
    }

    private static void member(String bootstrap, String topic, String group, String name) {
        try (KafkaConsumer<String, String> c =
                new KafkaConsumer<>(consumerProps(bootstrap, group, name))) {
            c.subscribe(List.of(topic));
            Set<Integer> last = null;
            while (true) {
                try {
                    if (!c.poll(Duration.ofMillis(100)).isEmpty()) {
                        c.commitSync();
                    }
                } catch (KafkaException e) {
                    // A commit of a member that was fenced (or forgotten by a restarted
                    // server) fails; the member rejoins and goes on, as applications do.
                    log(name + ": " + e);
                }
                Set<Integer> now = partitions(c.assignment());
                if (!now.equals(last)) {
                    StringBuilder s = new StringBuilder();
                    for (int p : now) {
                        s.append(s.length() == 0 ? "" : ",").append(p);
                    }
                    System.out.println("ASSIGNED " + s);
                    System.out.flush();
                    log(name + ": assigned [" + s + "]");
                    last = now;
                }
            }
        }
    }

    private static void produce(String bootstrap, String topic, int perPartition, String tag)
            throws Exception {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
            for (int part = 0; part < PARTITIONS; part++) {
                for (int i = 0; i < perPartition; i++) {
                    producer.send(new ProducerRecord<>(topic, part, null, tag + "-" + i));
                }
            }
            producer.flush();
        }
    }

    private void share(String bootstrap, String topic, String group) throws Exception {
        Properties ap = new Properties();
        ap.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        ap.put(AdminClientConfig.CLIENT_ID_CONFIG, "compat-java-admin");
        try (Admin admin = Admin.create(ap)) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all()
                    .get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
            produce(bootstrap, topic, PER_PARTITION, "a");
            Worker m1 = new Worker(bootstrap, topic, group, "m1");
            Worker m2 = new Worker(bootstrap, topic, group, "m2");
            Child child = new Child(bootstrap, topic, group, "m3");
            try {
                waitUntil("three members to share the partitions",
                        () -> shared(List.of(m1.assigned, m2.assigned, child.assigned)));
                result.put("split", List.of(m1.assigned, m2.assigned, child.assigned));
                classicIsRefused(bootstrap, topic, group);
                describe(admin, group);
                Set<Integer> gone = m2.assigned;
                m2.close();
                log("m2 left; its partitions " + gone + " must move");
                waitUntil("m1 and m3 to share the partitions after m2 left",
                        () -> shared(List.of(m1.assigned, child.assigned)));
                result.put("after_leave", List.of(m1.assigned, child.assigned));
                child.kill();
                log("m3 killed; waiting for its session to time out");
                waitUntil("m1 to own every partition", () -> m1.assigned.size() == PARTITIONS);
                result.put("after_kill", m1.assigned);
                Set<TopicPartition> all = new HashSet<>();
                for (int p = 0; p < PARTITIONS; p++) {
                    all.add(new TopicPartition(topic, p));
                }
                waitUntil("every record to be consumed and committed", () -> {
                    try {
                        Map<TopicPartition, OffsetAndMetadata> c = admin
                                .listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata()
                                .get(STEP_TIMEOUT_S, TimeUnit.SECONDS);
                        return all.stream().allMatch(tp -> c.get(tp) != null
                                && c.get(tp).offset() == PER_PARTITION);
                    } catch (Exception e) {
                        throw new IllegalStateException(e);
                    }
                });
                m1.close();
                check(m1.error == null && m2.error == null,
                        "member errors: " + m1.error + ", " + m2.error);
            } finally {
                if (child.process.isAlive()) {
                    child.kill();
                }
            }
            Worker m4 = new Worker(bootstrap, topic, group, "m4");
            waitUntil("m4's assignment", () -> m4.assigned.size() == PARTITIONS);
            produce(bootstrap, topic, 2, "b");
            waitUntil("m4 to consume the new records", () -> m4.records().size() >= 2 * PARTITIONS);
            Thread.sleep(500);
            m4.close();
            List<String> resumed = new ArrayList<>();
            for (long[] r : m4.records()) {
                resumed.add(r[0] + "/" + r[1]);
            }
            resumed.sort(null);
            result.put("resumed", resumed);
            List<String> expected = new ArrayList<>();
            for (int p = 0; p < PARTITIONS; p++) {
                expected.add(p + "/10");
                expected.add(p + "/11");
            }
            expected.sort(null);
            check(resumed.equals(expected),
                    "m4 consumed " + resumed + ", not exactly the records after the commits");
        }
    }

    private void classicIsRefused(String bootstrap, String topic, String group) throws Exception {
        Properties p = consumerProps(bootstrap, group, "classic");
        p.put("group.protocol", "classic");
        String outcome = "nothing";
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(p)) {
            c.subscribe(List.of(topic));
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(STEP_TIMEOUT_S);
            while (System.nanoTime() < deadline) {
                try {
                    c.poll(Duration.ofMillis(100));
                    if (!c.assignment().isEmpty()) {
                        outcome = "assigned " + c.assignment();
                        break;
                    }
                } catch (InconsistentGroupProtocolException e) {
                    outcome = "INCONSISTENT_GROUP_PROTOCOL";
                    break;
                }
            }
        }
        result.put("classic", outcome);
        check(outcome.equals("INCONSISTENT_GROUP_PROTOCOL"), "a classic member got " + outcome);
    }

    private void describe(Admin admin, String group) throws Exception {
        ConsumerGroupDescription d = null;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(STEP_TIMEOUT_S);
        while (System.nanoTime() < deadline) {
            d = admin.describeConsumerGroups(List.of(group)).all()
                    .get(STEP_TIMEOUT_S, TimeUnit.SECONDS).get(group);
            if (d.state() == ConsumerGroupState.STABLE) {
                break;
            }
            Thread.sleep(100);
        }
        List<String> clients = new ArrayList<>();
        List<Set<Integer>> sets = new ArrayList<>();
        for (MemberDescription m : d.members()) {
            clients.add(m.clientId());
            sets.add(partitions(m.assignment().topicPartitions()));
        }
        clients.sort(null);
        result.put("described", Map.of("type", String.valueOf(d.type()), "state",
                String.valueOf(d.state()), "clients", clients, "assignor",
                String.valueOf(d.partitionAssignor())));
        check(d.type() == GroupType.CONSUMER, "group type " + d.type());
        check(d.state() == ConsumerGroupState.STABLE, "group state " + d.state());
        check(clients.equals(List.of("compat-m1", "compat-m2", "compat-m3")),
                "described members " + clients);
        check(shared(sets), "described assignments " + sets);
    }
}
