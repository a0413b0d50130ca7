//! The Milvus profile: a Kafka client configured and driven the way Milvus 2.6's Kafka WAL
//! (`walimpls` over confluent-kafka-go, librdkafka 1.9.2) drives its brokers.
//!
//! * One [`Opener`] owns the single producer that every pchannel shares. An append goes to
//!   partition 0 of the topic named after the pchannel, carries the payload as the value, no
//!   key, and one header per message property; the message id is the offset from the delivery
//!   report.
//! * Every [`Scanner`] is a new consumer (its `group.id` is the scanner's name) that assigns
//!   partition 0 at the offset its [`DeliverPolicy`] asks for and polls with a 200 ms timeout
//!   on a thread of its own, timeouts ignored, any other error ending the scan.
//! * Message ids travel as base-36 text ([`encode_message_id`], [`decode_message_id`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::util::Timeout;
use tokio::sync::mpsc;

/// The largest request Milvus's producer sends (`message.max.bytes`).
pub const MESSAGE_MAX_BYTES: usize = 10_485_760;

/// How long a scanner's poll waits before it polls again.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);

/// Failure guard for closing a consumer (a commit on close included).
const CLOSE_GUARD: Duration = Duration::from_secs(60);

/// The settings every Milvus Kafka client has.
pub fn basic_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("api.version.request", "true")
        .set("reconnect.backoff.ms", "20")
        .set("reconnect.backoff.max.ms", "5000");
    config
}

/// The producer settings of Milvus's Kafka WAL, with the given compression codec (Milvus
/// uses `zstd`).
pub fn producer_config(bootstrap: &str, compression: &str) -> ClientConfig {
    let mut config = basic_config(bootstrap);
    config
        .set("message.max.bytes", MESSAGE_MAX_BYTES.to_string())
        .set("compression.codec", compression)
        .set("linger.ms", "5");
    config
}

/// Which Milvus release's consumer settings a scanner uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerVariant {
    /// Before 2.6.8: librdkafka's defaults, auto commit on and `auto.offset.reset=latest`.
    AutoCommitLatest,
    /// 2.6.8 and later: auto commit off and `auto.offset.reset=earliest`.
    NoCommitEarliest,
}

impl ConsumerVariant {
    /// Both variants.
    pub const ALL: [ConsumerVariant; 2] = [
        ConsumerVariant::AutoCommitLatest,
        ConsumerVariant::NoCommitEarliest,
    ];
}

/// The consumer settings of a scanner named `group_id`.
pub fn consumer_config(bootstrap: &str, group_id: &str, variant: ConsumerVariant) -> ClientConfig {
    let mut config = basic_config(bootstrap);
    config
        .set("allow.auto.create.topics", "true")
        .set("group.id", group_id);
    match variant {
        ConsumerVariant::AutoCommitLatest => config
            .set("enable.auto.commit", "true")
            .set("auto.offset.reset", "latest"),
        ConsumerVariant::NoCommitEarliest => config
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest"),
    };
    config
}

/// Formats a message id (a Kafka offset) the way Milvus marshals it: base 36, lowercase
/// digits, a leading `-` for negative values.
pub fn encode_message_id(id: i64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut magnitude = id.unsigned_abs();
    let mut out = Vec::with_capacity(14);
    loop {
        out.push(DIGITS[(magnitude % 36) as usize]);
        magnitude /= 36;
        if magnitude == 0 {
            break;
        }
    }
    if id < 0 {
        out.push(b'-');
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// Parses a message id written by [`encode_message_id`] (or by Milvus): base 36, either case,
/// an optional sign, within the range of `i64`.
pub fn decode_message_id(text: &str) -> Result<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() {
        bail!("message id {text:?} has no digits");
    }
    let mut magnitude: u64 = 0;
    for c in digits.chars() {
        let digit = c
            .to_digit(36)
            .with_context(|| format!("message id {text:?}: {c:?} is not a base-36 digit"))?;
        magnitude = magnitude
            .checked_mul(36)
            .and_then(|m| m.checked_add(u64::from(digit)))
            .with_context(|| format!("message id {text:?} is out of range"))?;
    }
    if negative {
        if magnitude > i64::MIN.unsigned_abs() {
            bail!("message id {text:?} is out of range");
        }
        Ok(0i64.wrapping_sub_unsigned(magnitude))
    } else {
        i64::try_from(magnitude).with_context(|| format!("message id {text:?} is out of range"))
    }
}

/// A message as a scanner delivers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The message id: the record's offset.
    pub id: i64,
    /// The record's value (`None` for a null value).
    pub payload: Option<Vec<u8>>,
    /// The record's headers in order, values raw (`None` for a null header value).
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Message {
    /// The properties as Milvus sees them: header values as strings (a null value reads as
    /// the empty string, a repeated key keeps its last value).
    pub fn properties(&self) -> BTreeMap<String, String> {
        self.headers
            .iter()
            .map(|(k, v)| {
                let value = v.as_deref().unwrap_or_default();
                (k.clone(), String::from_utf8_lossy(value).into_owned())
            })
            .collect()
    }

    /// One property, as [`Message::properties`] would give it.
    pub fn property(&self, key: &str) -> Option<String> {
        self.properties().remove(key)
    }
}

/// The shared producer of Milvus's Kafka WAL ("the opener").
#[derive(Clone)]
pub struct Opener {
    producer: FutureProducer,
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opener").finish_non_exhaustive()
    }
}

impl Opener {
    /// Creates the producer with Milvus's settings and `zstd` compression.
    pub fn new(bootstrap: &str) -> Result<Opener> {
        Self::with_compression(bootstrap, "zstd")
    }

    /// Creates the producer with Milvus's settings and another compression codec.
    pub fn with_compression(bootstrap: &str, compression: &str) -> Result<Opener> {
        let producer = producer_config(bootstrap, compression)
            .create::<FutureProducer>()
            .context("creating the producer")?;
        Ok(Opener { producer })
    }

    /// Creates the producer from settings the caller built from [`producer_config`].
    pub fn from_config(config: &ClientConfig) -> Result<Opener> {
        let producer = config
            .create::<FutureProducer>()
            .context("creating the producer")?;
        Ok(Opener { producer })
    }

    /// Appends a message to `pchannel` (partition 0 of the topic of that name): the payload
    /// as the value, no key, one header per property. Waits for the delivery report and
    /// returns the message id (the offset).
    pub async fn append<K, V>(
        &self,
        pchannel: &str,
        payload: &[u8],
        properties: &[(K, V)],
    ) -> Result<i64>
    where
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let headers = properties
            .iter()
            .fold(OwnedHeaders::new(), |headers, (k, v)| {
                headers.insert(Header {
                    key: k.as_ref(),
                    value: Some(v.as_ref()),
                })
            });
        self.append_raw(pchannel, payload, headers).await
    }

    /// Appends a message with headers built by the caller (for null header values).
    pub async fn append_raw(
        &self,
        pchannel: &str,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<i64> {
        let record = FutureRecord::<(), [u8]>::to(pchannel)
            .partition(0)
            .payload(payload)
            .headers(headers);
        match self.producer.send(record, Timeout::Never).await {
            Ok((partition, offset)) => {
                if partition != 0 {
                    bail!("append to {pchannel} was delivered to partition {partition}");
                }
                Ok(offset)
            }
            Err((e, _)) => Err(e).with_context(|| format!("appending to {pchannel}")),
        }
    }

    /// The producer, for checks that need the client itself (metadata).
    pub fn producer(&self) -> &FutureProducer {
        &self.producer
    }

    /// Flushes whatever is still queued and drops the producer.
    pub fn close(self) -> Result<()> {
        self.producer
            .flush(Timeout::After(Duration::from_secs(60)))
            .context("flushing the producer")
    }
}

/// Where a scanner starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliverPolicy {
    /// From the first message.
    All,
    /// Only messages appended after the scanner started.
    Latest,
    /// From the message with this id.
    StartFrom(i64),
    /// From the message after the one with this id.
    StartAfter(i64),
}

/// A reader of one pchannel: a consumer of its own, polled on a thread of its own.
#[derive(Debug)]
pub struct Scanner {
    name: String,
    messages: mpsc::UnboundedReceiver<Result<Message>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scanner {
    /// Creates a consumer named `name` (its `group.id`), assigns partition 0 of `pchannel` at
    /// the offset `policy` asks for and starts polling.
    pub fn new(
        bootstrap: &str,
        name: &str,
        pchannel: &str,
        policy: DeliverPolicy,
        variant: ConsumerVariant,
    ) -> Result<Scanner> {
        let consumer: BaseConsumer = consumer_config(bootstrap, name, variant)
            .create()
            .with_context(|| format!("creating the consumer of scanner {name}"))?;
        let (offset, skip) = match policy {
            DeliverPolicy::All => (Offset::Beginning, None),
            DeliverPolicy::Latest => (Offset::End, None),
            DeliverPolicy::StartFrom(id) => (Offset::Offset(id), None),
            DeliverPolicy::StartAfter(id) => (Offset::Offset(id), Some(id)),
        };
        Self::assigned(consumer, name, pchannel, offset, skip)
    }

    /// Starts polling a consumer the caller configured, assigned to partition 0 of
    /// `pchannel` at `offset` (checks outside Milvus's settings use it).
    pub fn with_consumer(
        consumer: BaseConsumer,
        name: &str,
        pchannel: &str,
        offset: Offset,
    ) -> Result<Scanner> {
        Self::assigned(consumer, name, pchannel, offset, None)
    }

    fn assigned(
        consumer: BaseConsumer,
        name: &str,
        pchannel: &str,
        offset: Offset,
        skip: Option<i64>,
    ) -> Result<Scanner> {
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(pchannel, 0, offset)
            .with_context(|| format!("scanner {name}: building the assignment"))?;
        consumer
            .assign(&assignment)
            .with_context(|| format!("scanner {name}: assigning {pchannel}[0] at {offset:?}"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread_name = name.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("scanner-{name}"))
            .spawn(move || poll_loop(&consumer, &thread_name, skip, &stopped, &tx))
            .context("starting the scanner thread")?;
        Ok(Scanner {
            name: name.to_string(),
            messages: rx,
            stop,
            thread: Some(thread),
        })
    }

    /// The scanner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next message, `None` if none arrived within `wait`; an error if the consumer
    /// failed.
    pub async fn next(&mut self, wait: Duration) -> Result<Option<Message>> {
        match tokio::time::timeout(wait, self.messages.recv()).await {
            Err(_) => Ok(None),
            Ok(Some(message)) => message.map(Some),
            Ok(None) => bail!("scanner {} stopped", self.name),
        }
    }

    /// Stops polling and closes the consumer (which commits, with auto commit on).
    pub async fn close(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            tokio::time::timeout(CLOSE_GUARD, joined)
                .await
                .with_context(|| {
                    format!(
                        "scanner {}: closing the consumer took more than {} s",
                        self.name,
                        CLOSE_GUARD.as_secs()
                    )
                })?
                .context("joining the scanner thread")?
                .map_err(|_| anyhow::anyhow!("scanner {} panicked", self.name))?;
        }
        Ok(())
    }
}

impl Drop for Scanner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn poll_loop(
    consumer: &BaseConsumer,
    name: &str,
    skip: Option<i64>,
    stop: &AtomicBool,
    tx: &mpsc::UnboundedSender<Result<Message>>,
) {
    while !stop.load(Ordering::SeqCst) {
        let Some(polled) = consumer.poll(POLL_TIMEOUT) else {
            continue;
        };
        let message = match polled {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Err(
                    anyhow::Error::new(e).context(format!("scanner {name}: consuming"))
                ));
                return;
            }
        };
        if Some(message.offset()) == skip {
            continue;
        }
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        let delivered = Message {
            id: message.offset(),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        };
        if tx.send(Ok(delivered)).is_err() {
            return;
        }
    }
}
