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
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Drives woodpecker-rs's transactions with the Apache Kafka Java client (kafka-clients 3.9).
 *
 * <p>Modes ({@code java -cp <classpath> woodpecker.compat.TxnClients <mode> <bootstrap> ...}):
 *
 * <ul>
 *   <li>{@code txn <bootstrap> <in> <out> <group> <n>}: a transactional producer writes {@code n}
 *       records to {@code in} in transactions of 10, aborting every fourth; a {@code
 *       read_committed} consumer must see exactly the committed ones in order and a {@code
 *       read_uncommitted} one every record; a consume-transform-produce pass (a group consumer,
 *       a second transactional producer, {@code sendOffsetsToTransaction}) copies the committed
 *       records to {@code out}, whose committed content and the group's offsets are checked; a
 *       third producer with the second one's transactional id fences it.
 *   <li>{@code fill <bootstrap> <topic> <n>}: writes records {@code v0..v(n-1)} in committed
 *       transactions (the input of the {@code ctp} mode).
 *   <li>{@code ctp <bootstrap> <in> <out> <group> <txn-id> <n> <pause-ms> <pause-from>}: a
 *       consume-transform-produce loop until the group's offsets reach the ends of {@code in};
 *       each transaction sends its records, flushes, adds the offsets, prints {@code IN_TXN
 *       <k>}, waits {@code pause-ms} (from transaction {@code pause-from} on), then commits and
 *       prints {@code COMMITTED <k> <records>}. Meant to be killed mid-transaction and started
 *       again: it resumes from the group's committed offsets.
 *   <li>{@code verify <bootstrap> <out> <n>}: reads {@code out} to its end with {@code
 *       read_committed} and reports, for the values {@code V0..V(n-1)}, how many are missing and
 *       how many appear more than once.
 * </ul>
 *
 * <p>Prints one line {@code RESULT <json>} on stdout with what was observed and a list of
 * failures; exits 0 only when that list is empty. Progress goes to stderr.
 */
public final class TxnClients {
    private static final int PARTITIONS = 2;
    private static final Duration POLL = Duration.ofMillis(200);
    private static final long STEP_TIMEOUT_S = 120;

    private final List<String> failures = new ArrayList<>();
    private final Map<String, Object> result = new LinkedHashMap<>();

    private TxnClients() {}

    public static void main(String[] args) throws Exception {
        TxnClients run = new TxnClients();
        try {
            switch (args.length > 0 ? args[0] : "") {
                case "txn" -> run.txn(args[1], args[2], args[3], args[4], Integer.parseInt(args[5]));
                case "fill" -> run.fill(args[1], args[2], Integer.parseInt(args[3]));
                case "ctp" -> run.ctp(args[1], args[2], args[3], args[4], args[5],
                        Integer.parseInt(args[6]), Long.parseLong(args[7]),
                        Integer.parseInt(args[8]));
                case "verify" -> run.verify(args[1], args[2], Integer.parseInt(args[3]));
                default -> {
                    System.err.println("usage: TxnClients txn|fill|ctp|verify <bootstrap> ...");
                    System.exit(2);
                }
            }
        } catch (Throwable e) {
            run.fail("aborted: " + describe(e));
        }
        run.result.put("failures", run.failures);
        System.out.println("RESULT " + json(run.result));
        System.out.flush();
        Runtime.getRuntime().halt(run.failures.isEmpty() ? 0 : 1);
    }

    private void fail(String what) {
        log("FAIL " + what);
        failures.add(what);
    }

    private static void log(String what) {
        System.err.println("[java-txn] " + what);
    }

    private static String describe(Throwable e) {
        StringBuilder s = new StringBuilder(e.toString());
        for (Throwable c = e.getCause(); c != null && c != c.getCause(); c = c.getCause()) {
            s.append(" <- ").append(c);
        }
        return s.toString();
    }

    /**
     * Client settings every client adds (security.protocol, sasl.*, ssl.*): the properties file
     * named by WOODPECKER_COMPAT_CLIENT_PROPERTIES, when it is set.
     */
    private static Properties baseProps() {
        Properties p = new Properties();
        String file = System.getenv("WOODPECKER_COMPAT_CLIENT_PROPERTIES");
        if (file != null && !file.isEmpty()) {
            try (java.io.Reader r = java.nio.file.Files.newBufferedReader(java.nio.file.Path.of(file))) {
                p.load(r);
            } catch (java.io.IOException e) {
                throw new java.io.UncheckedIOException(e);
            }
        }
        return p;
    }

    private static Properties producerProps(String bootstrap, String transactionalId) {
        Properties p = baseProps();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
        p.put(ProducerConfig.TRANSACTION_TIMEOUT_CONFIG, "20000");
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, "60000");
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, "60000");
        return p;
    }

    private static Properties consumerProps(String bootstrap, String group, String isolation) {
        Properties p = baseProps();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        if (group != null) {
            p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        }
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "10000");
        return p;
    }

    private static void createTopics(String bootstrap, String... topics) throws Exception {
        Properties p = baseProps();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        try (Admin admin = Admin.create(p)) {
            List<NewTopic> list = new ArrayList<>();
            for (String t : topics) {
                list.add(new NewTopic(t, PARTITIONS, (short) 1));
            }
            admin.createTopics(list).all().get(60, TimeUnit.SECONDS);
        }
    }

    /** Reads every partition of {@code topic} from the start to the end offsets it reports. */
    private static List<ConsumerRecord<String, String>> readAll(
            String bootstrap, String topic, String isolation) throws Exception {
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        try (KafkaConsumer<String, String> c =
                new KafkaConsumer<>(consumerProps(bootstrap, null, isolation))) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int i = 0; i < PARTITIONS; i++) {
                tps.add(new TopicPartition(topic, i));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(STEP_TIMEOUT_S);
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) {
                    if (c.position(tp) < end.get(tp)) {
                        done = false;
                    }
                }
                if (done) {
                    break;
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("reading " + topic + " (" + isolation
                            + ") did not reach " + end + " in time");
                }
                for (ConsumerRecord<String, String> r : c.poll(POLL)) {
                    out.add(r);
                }
            }
        }
        return out;
    }

    private void txn(String bootstrap, String in, String out, String group, int n)
            throws Exception {
        createTopics(bootstrap, in, out);
        List<String> committed = new ArrayList<>();
        int aborted = 0;
        try (KafkaProducer<String, String> p =
                new KafkaProducer<>(producerProps(bootstrap, "java-txn-writer"))) {
            p.initTransactions();
            for (int t = 0; t * 10 < n; t++) {
                boolean abort = t % 4 == 3;
                p.beginTransaction();
                for (int i = t * 10; i < Math.min(n, t * 10 + 10); i++) {
                    String v = (abort ? "aborted-" : "v") + i;
                    p.send(new ProducerRecord<>(in, i % PARTITIONS, "k" + i, v));
                    if (!abort) {
                        committed.add(v);
                    } else {
                        aborted++;
                    }
                }
                if (abort) {
                    // Written first: unsent batches would be dropped by the abort itself.
                    p.flush();
                    p.abortTransaction();
                } else {
                    p.commitTransaction();
                }
            }
        }
        result.put("committed_written", committed.size());
        result.put("aborted_written", aborted);

        List<ConsumerRecord<String, String>> rc = readAll(bootstrap, in, "read_committed");
        List<String> seen = new ArrayList<>();
        Map<Integer, List<Integer>> order = new TreeMap<>();
        for (ConsumerRecord<String, String> r : rc) {
            seen.add(r.value());
            order.computeIfAbsent(r.partition(), k -> new ArrayList<>())
                    .add(Integer.parseInt(r.value().replaceAll("\\D", "")));
        }
        result.put("read_committed", seen.size());
        if (seen.stream().anyMatch(v -> v.startsWith("aborted-"))) {
            fail("read_committed returned records of aborted transactions");
        }
        if (!new java.util.TreeSet<>(seen).equals(new java.util.TreeSet<>(committed))
                || seen.size() != committed.size()) {
            fail("read_committed read " + seen.size() + " records, expected exactly the "
                    + committed.size() + " committed ones");
        }
        for (List<Integer> values : order.values()) {
            for (int i = 1; i < values.size(); i++) {
                if (values.get(i) < values.get(i - 1)) {
                    fail("read_committed returned a partition out of order: " + values);
                    break;
                }
            }
        }
        List<ConsumerRecord<String, String>> ru = readAll(bootstrap, in, "read_uncommitted");
        result.put("read_uncommitted", ru.size());
        if (ru.size() != n) {
            fail("read_uncommitted read " + ru.size() + " records, expected all " + n);
        }

        // Consume-transform-produce over the input, offsets in the transaction.
        Properties cp = consumerProps(bootstrap, group, "read_committed");
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp);
                KafkaProducer<String, String> p =
                        new KafkaProducer<>(producerProps(bootstrap, "java-txn-ctp"))) {
            p.initTransactions();
            c.subscribe(List.of(in));
            result.put("copy_transactions", loop(c, p, in, out, 0, 0));
            // A new producer with the same transactional id fences this one.
            try (KafkaProducer<String, String> zombieKiller =
                    new KafkaProducer<>(producerProps(bootstrap, "java-txn-ctp"))) {
                zombieKiller.initTransactions();
                try {
                    p.beginTransaction();
                    p.send(new ProducerRecord<>(out, 0, "zombie", "ZOMBIE")).get();
                    p.commitTransaction();
                    fail("a fenced producer committed a transaction");
                } catch (ProducerFencedException e) {
                    result.put("fenced", "ProducerFencedException");
                } catch (Exception e) {
                    Throwable cause = e.getCause() != null ? e.getCause() : e;
                    if (cause instanceof ProducerFencedException
                            || cause instanceof org.apache.kafka.common.errors.InvalidProducerEpochException) {
                        result.put("fenced", cause.getClass().getSimpleName());
                    } else {
                        fail("the fenced producer got " + describe(e));
                    }
                }
            }
            Map<TopicPartition, OffsetAndMetadata> groupOffsets = c.committed(Set.of(
                    new TopicPartition(in, 0), new TopicPartition(in, 1)));
            Map<TopicPartition, Long> ends = c.endOffsets(groupOffsets.keySet());
            Map<String, Long> committedOffsets = new TreeMap<>();
            for (Map.Entry<TopicPartition, OffsetAndMetadata> e : groupOffsets.entrySet()) {
                long off = e.getValue() == null ? -1 : e.getValue().offset();
                committedOffsets.put(e.getKey().toString(), off);
                if (off != ends.get(e.getKey())) {
                    fail("group offset of " + e.getKey() + " is " + off
                            + ", the read_committed end is " + ends.get(e.getKey()));
                }
            }
            result.put("group_offsets", committedOffsets);
        }
        List<ConsumerRecord<String, String>> outRecords =
                readAll(bootstrap, out, "read_committed");
        List<String> outValues = new ArrayList<>();
        for (ConsumerRecord<String, String> r : outRecords) {
            outValues.add(r.value());
        }
        result.put("out_read_committed", outValues.size());
        List<String> expected = new ArrayList<>();
        for (String v : committed) {
            expected.add(v.toUpperCase());
        }
        if (!new java.util.TreeSet<>(outValues).equals(new java.util.TreeSet<>(expected))
                || outValues.size() != expected.size()) {
            fail("the output holds " + outValues.size() + " records, expected exactly the "
                    + expected.size() + " transformed inputs (no zombie, no duplicate)");
        }
    }

    private void fill(String bootstrap, String topic, int n) throws Exception {
        createTopics(bootstrap, topic);
        try (KafkaProducer<String, String> p =
                new KafkaProducer<>(producerProps(bootstrap, "java-txn-fill"))) {
            p.initTransactions();
            for (int t = 0; t * 50 < n; t++) {
                p.beginTransaction();
                for (int i = t * 50; i < Math.min(n, t * 50 + 50); i++) {
                    p.send(new ProducerRecord<>(topic, i % PARTITIONS, "k" + i, "v" + i));
                }
                p.commitTransaction();
            }
        }
        result.put("written", n);
    }

    /** Positions of the group: its committed offsets, or the start. */
    private static void resetToCommitted(KafkaConsumer<String, String> c) {
        Set<TopicPartition> assigned = c.assignment();
        Map<TopicPartition, OffsetAndMetadata> committed = c.committed(assigned);
        for (TopicPartition tp : assigned) {
            OffsetAndMetadata o = committed.get(tp);
            if (o == null) {
                c.seekToBeginning(List.of(tp));
            } else {
                c.seek(tp, o.offset());
            }
        }
    }

    private void ctp(String bootstrap, String in, String out, String group, String txnId,
            int n, long pauseMs, int pauseFrom) throws Exception {
        try (KafkaConsumer<String, String> c =
                        new KafkaConsumer<>(consumerProps(bootstrap, group, "read_committed"));
                KafkaProducer<String, String> p =
                        new KafkaProducer<>(producerProps(bootstrap, txnId))) {
            p.initTransactions();
            c.subscribe(List.of(in));
            result.put("transactions", loop(c, p, in, out, pauseMs, pauseFrom));
        }
        result.put("expected_inputs", n);
    }

    /**
     * Copies {@code in} to {@code out} (values upper-cased) in transactions that also commit
     * the group's positions, until the group's committed offsets reach the ends of {@code in}.
     * Each transaction sends, flushes, adds the offsets, prints {@code IN_TXN <k>}, waits
     * {@code pauseMs} (from transaction {@code pauseFrom} on), commits and prints {@code
     * COMMITTED <k> <records>}. An abortable error
     * aborts and rewinds to the committed offsets. Returns the transactions committed.
     */
    private int loop(KafkaConsumer<String, String> c, KafkaProducer<String, String> p,
            String in, String out, long pauseMs, int pauseFrom) throws Exception {
        int txns = 0;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(240);
        List<TopicPartition> tps = new ArrayList<>();
        for (int i = 0; i < PARTITIONS; i++) {
            tps.add(new TopicPartition(in, i));
        }
        while (true) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("the loop did not consume its input in time");
            }
            Map<TopicPartition, OffsetAndMetadata> done = c.committed(Set.copyOf(tps));
            Map<TopicPartition, Long> ends = c.endOffsets(tps);
            boolean finished = true;
            for (TopicPartition tp : tps) {
                OffsetAndMetadata o = done.get(tp);
                if (o == null || o.offset() < ends.get(tp)) {
                    finished = false;
                }
            }
            if (finished) {
                return txns;
            }
            ConsumerRecords<String, String> records = c.poll(POLL);
            // Positions, not the last record's offset + 1: they are past the commit markers
            // too, so the group ends exactly at the end offsets.
            Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
            for (TopicPartition tp : c.assignment()) {
                long position = c.position(tp);
                OffsetAndMetadata o = done.get(tp);
                if (o == null || o.offset() < position) {
                    offsets.put(tp, new OffsetAndMetadata(position));
                }
            }
            if (records.isEmpty() && offsets.isEmpty()) {
                continue;
            }
            try {
                p.beginTransaction();
                for (ConsumerRecord<String, String> r : records) {
                    p.send(new ProducerRecord<>(out, r.partition(), r.key(),
                            r.value().toUpperCase()));
                }
                p.flush();
                p.sendOffsetsToTransaction(offsets, c.groupMetadata());
                txns++;
                System.out.println("IN_TXN " + txns);
                System.out.flush();
                if (pauseMs > 0 && txns >= pauseFrom) {
                    Thread.sleep(pauseMs);
                }
                p.commitTransaction();
                System.out.println("COMMITTED " + txns + " " + records.count());
                System.out.flush();
            } catch (ProducerFencedException e) {
                throw e;
            } catch (KafkaException e) {
                // Abortable (a restarted server, a timeout): abort and go back to what the
                // group committed.
                log("aborting after " + describe(e));
                p.abortTransaction();
                resetToCommitted(c);
            }
        }
    }

    private void verify(String bootstrap, String out, int n) throws Exception {
        Map<String, Integer> counts = new HashMap<>();
        for (ConsumerRecord<String, String> r : readAll(bootstrap, out, "read_committed")) {
            counts.merge(r.value(), 1, Integer::sum);
        }
        int missing = 0;
        int duplicated = 0;
        for (int i = 0; i < n; i++) {
            int k = counts.getOrDefault("V" + i, 0);
            if (k == 0) {
                missing++;
            } else if (k > 1) {
                duplicated++;
            }
        }
        int unexpected = 0;
        for (String v : counts.keySet()) {
            if (!v.matches("V\\d+") || Integer.parseInt(v.substring(1)) >= n) {
                unexpected++;
            }
        }
        result.put("distinct", counts.size());
        result.put("missing", missing);
        result.put("duplicated", duplicated);
        result.put("unexpected", unexpected);
        if (missing + duplicated + unexpected > 0) {
            fail("not exactly once: " + missing + " missing, " + duplicated + " duplicated, "
                    + unexpected + " unexpected");
        }
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
