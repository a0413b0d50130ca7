//! Counters and request latencies of the Kafka listener, rendered in the Prometheus text
//! format.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use kafka_protocol::messages::ApiKey;
use telemetry::Stopwatch;
use telemetry::metrics::{Histogram, Instrument as _, Layout, label_set, write_header};

/// The largest API key counted per key.
const MAX_KEY: usize = 80;

/// The shim's counters. Everything is monotonic except the gauges (`connections`,
/// `partitions_open`, `topics`, `fetch_sessions`).
#[derive(Debug)]
pub struct Metrics {
    requests: Vec<AtomicU64>,
    /// Seconds from a request's frame being read to its response being ready, per API key.
    request_latency: Vec<Histogram>,
    /// Bytes of record batches accepted by Produce.
    pub produced_bytes: AtomicU64,
    /// Records accepted by Produce.
    pub produced_records: AtomicU64,
    /// Partitions of Produce requests that got an error.
    pub produce_errors: AtomicU64,
    /// Bytes of record batches returned by Fetch.
    pub fetched_bytes: AtomicU64,
    /// Fetch requests answered within an open fetch session (KIP-227).
    pub incremental_fetches: AtomicU64,
    /// Open fetch sessions.
    pub fetch_sessions: AtomicI64,
    /// Connections accepted.
    pub connections_accepted: AtomicU64,
    /// Connections refused at the connection limit.
    pub connections_refused: AtomicU64,
    /// Idle connections closed at the connection limit to admit new ones.
    pub connections_evicted: AtomicU64,
    /// Connections closed because of a protocol error.
    pub protocol_errors: AtomicU64,
    /// Open connections.
    pub connections: AtomicI64,
    /// Open partitions.
    pub partitions_open: AtomicI64,
    /// Topics.
    pub topics: AtomicI64,
    /// Produce responses that carried a quota throttle time.
    pub produce_throttled: AtomicU64,
    /// Milliseconds of quota throttle time given to producers.
    pub produce_throttle_ms: AtomicU64,
    /// Fetch responses that carried a quota throttle time.
    pub fetch_throttled: AtomicU64,
    /// Milliseconds of quota throttle time given to consumers.
    pub fetch_throttle_ms: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: (0..=MAX_KEY).map(|_| AtomicU64::new(0)).collect(),
            request_latency: (0..=MAX_KEY)
                .map(|_| Histogram::new(&Layout::SECONDS))
                .collect(),
            produced_bytes: AtomicU64::new(0),
            produced_records: AtomicU64::new(0),
            produce_errors: AtomicU64::new(0),
            fetched_bytes: AtomicU64::new(0),
            incremental_fetches: AtomicU64::new(0),
            fetch_sessions: AtomicI64::new(0),
            connections_accepted: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            connections_evicted: AtomicU64::new(0),
            protocol_errors: AtomicU64::new(0),
            connections: AtomicI64::new(0),
            partitions_open: AtomicI64::new(0),
            topics: AtomicI64::new(0),
            produce_throttled: AtomicU64::new(0),
            produce_throttle_ms: AtomicU64::new(0),
            fetch_throttled: AtomicU64::new(0),
            fetch_throttle_ms: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Counts one request.
    pub fn request(&self, key: ApiKey) {
        if let Some(c) = self.requests.get(key as usize) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records how long a request of API `key` took, from its frame to its response.
    pub fn request_done(&self, key: i16, started: Stopwatch) {
        if let Some(h) = usize::try_from(key)
            .ok()
            .and_then(|k| self.request_latency.get(k))
        {
            h.observe(started.elapsed_nanos());
        }
    }

    /// Counts accepted produce data.
    pub fn produced(&self, bytes: u64, records: i64) {
        self.produced_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.produced_records
            .fetch_add(records.max(0) as u64, Ordering::Relaxed);
    }

    /// Counts fetched data.
    pub fn fetched(&self, bytes: u64) {
        self.fetched_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a response throttled by a byte-rate quota for `ms` milliseconds.
    pub fn throttled(&self, key: crate::quotas::QuotaKey, ms: u64) {
        let (count, total) = match key {
            crate::quotas::QuotaKey::ProducerByteRate => {
                (&self.produce_throttled, &self.produce_throttle_ms)
            }
            crate::quotas::QuotaKey::ConsumerByteRate => {
                (&self.fetch_throttled, &self.fetch_throttle_ms)
            }
        };
        count.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(ms, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP woodpecker_kafka_requests_total Kafka requests handled, by API.\n# TYPE woodpecker_kafka_requests_total counter"
        );
        for (i, c) in self.requests.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let Ok(key) = ApiKey::try_from(i as i16) else {
                continue;
            };
            let _ = writeln!(
                out,
                "woodpecker_kafka_requests_total{{api=\"{key:?}\"}} {n}"
            );
        }
        const LATENCY: &str = "woodpecker_kafka_request_latency_seconds";
        write_header(
            &mut out,
            LATENCY,
            "Time from a Kafka request's frame being read to its response being ready, by API.",
            "histogram",
        );
        for (i, h) in self.request_latency.iter().enumerate() {
            if h.snapshot().count == 0 {
                continue;
            }
            let Ok(key) = ApiKey::try_from(i as i16) else {
                continue;
            };
            h.write_samples(&mut out, LATENCY, &label_set(&["api"], &[api_label(key)]));
        }
        let counters = [
            (
                "woodpecker_kafka_produced_bytes_total",
                "Record-batch bytes accepted by Produce.",
                &self.produced_bytes,
            ),
            (
                "woodpecker_kafka_produced_records_total",
                "Records accepted by Produce.",
                &self.produced_records,
            ),
            (
                "woodpecker_kafka_produce_errors_total",
                "Produce partitions answered with an error.",
                &self.produce_errors,
            ),
            (
                "woodpecker_kafka_fetched_bytes_total",
                "Record-batch bytes returned by Fetch.",
                &self.fetched_bytes,
            ),
            (
                "woodpecker_kafka_incremental_fetches_total",
                "Fetch requests answered within an open fetch session (KIP-227).",
                &self.incremental_fetches,
            ),
            (
                "woodpecker_kafka_connections_accepted_total",
                "Connections accepted.",
                &self.connections_accepted,
            ),
            (
                "woodpecker_kafka_connections_refused_total",
                "Connections refused at the connection limit.",
                &self.connections_refused,
            ),
            (
                "woodpecker_kafka_connections_evicted_total",
                "Idle connections closed at the connection limit to admit new ones.",
                &self.connections_evicted,
            ),
            (
                "woodpecker_kafka_protocol_errors_total",
                "Connections closed on a protocol error.",
                &self.protocol_errors,
            ),
        ];
        let throttles = [
            (
                "woodpecker_kafka_quota_throttled_responses_total",
                "Responses that carried a client-quota throttle time, by quota.",
                [&self.produce_throttled, &self.fetch_throttled],
            ),
            (
                "woodpecker_kafka_quota_throttle_time_ms_total",
                "Milliseconds of client-quota throttle time given, by quota.",
                [&self.produce_throttle_ms, &self.fetch_throttle_ms],
            ),
        ];
        for (name, help, [produce, fetch]) in throttles {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{quota=\"produce\"}} {}\n{name}{{quota=\"fetch\"}} {}",
                produce.load(Ordering::Relaxed),
                fetch.load(Ordering::Relaxed)
            );
        }
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "woodpecker_kafka_connections",
                "Open Kafka connections.",
                &self.connections,
            ),
            (
                "woodpecker_kafka_partitions_open",
                "Open topic-partitions.",
                &self.partitions_open,
            ),
            ("woodpecker_kafka_topics", "Topics.", &self.topics),
            (
                "woodpecker_kafka_fetch_sessions",
                "Open fetch sessions (KIP-227).",
                &self.fetch_sessions,
            ),
        ];
        for (name, help, v) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        out
    }
}

/// The `api` label of a key: Kafka's name of the API (`Produce`, `Fetch`, ...).
pub fn api_label(key: ApiKey) -> &'static str {
    use ApiKey::*;
    match key {
        Produce => "Produce",
        Fetch => "Fetch",
        ListOffsets => "ListOffsets",
        Metadata => "Metadata",
        OffsetCommit => "OffsetCommit",
        OffsetFetch => "OffsetFetch",
        FindCoordinator => "FindCoordinator",
        JoinGroup => "JoinGroup",
        Heartbeat => "Heartbeat",
        LeaveGroup => "LeaveGroup",
        SyncGroup => "SyncGroup",
        DescribeGroups => "DescribeGroups",
        ListGroups => "ListGroups",
        ApiVersions => "ApiVersions",
        CreateTopics => "CreateTopics",
        DeleteTopics => "DeleteTopics",
        InitProducerId => "InitProducerId",
        DescribeConfigs => "DescribeConfigs",
        DeleteGroups => "DeleteGroups",
        OffsetDelete => "OffsetDelete",
        DescribeCluster => "DescribeCluster",
        ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ConsumerGroupDescribe => "ConsumerGroupDescribe",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.request(ApiKey::Produce);
        m.request_done(ApiKey::Produce as i16, Stopwatch::start());
        m.produced(100, 3);
        let text = m.render();
        assert!(text.contains("woodpecker_kafka_requests_total{api=\"Produce\"} 1"));
        assert!(
            text.contains("woodpecker_kafka_request_latency_seconds_count{api=\"Produce\"} 1\n"),
            "{text}"
        );
        assert!(text.contains(
            "woodpecker_kafka_request_latency_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 1\n"
        ));
        assert!(!text.contains("woodpecker_kafka_request_latency_seconds_count{api=\"Fetch\"}"));
        assert!(text.contains("woodpecker_kafka_produced_bytes_total 100"));
        assert!(text.contains("# TYPE woodpecker_kafka_connections gauge"));
        m.throttled(crate::quotas::QuotaKey::ProducerByteRate, 250);
        m.throttled(crate::quotas::QuotaKey::ProducerByteRate, 50);
        let text = m.render();
        assert!(
            text.contains(
                "woodpecker_kafka_quota_throttled_responses_total{quota=\"produce\"} 2\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("woodpecker_kafka_quota_throttle_time_ms_total{quota=\"produce\"} 300\n")
        );
        assert!(
            text.contains("woodpecker_kafka_quota_throttled_responses_total{quota=\"fetch\"} 0\n")
        );
    }
}
