//! The Milvus profile: Milvus 2.6's Kafka WAL contract, checked against `woodpecker serve`
//! through librdkafka 1.9.2 with Milvus's client settings.
//!
//! The first part follows Milvus's walimpls conformance framework: one shared producer, three
//! pchannels written in parallel over three terms (plus a fourth), read back by scanners with
//! every deliver policy, once per consumer variant (before 2.6.8 and since), one run with a
//! server restart between terms 2 and 3. The second part checks the corners of the Kafka
//! protocol that Milvus's traffic reaches: headers, 10 MiB records, compression, offsets,
//! fetches starting mid-batch, offset resets, metadata and concurrency.

// Real processes answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use compat_tests::Server;
use compat_tests::milvus::{
    ConsumerVariant, DeliverPolicy, MESSAGE_MAX_BYTES, Message, Opener, Scanner, consumer_config,
    decode_message_id, encode_message_id,
};
use futures::{StreamExt, TryStreamExt};
use proptest::prelude::*;
use rand::Rng;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Messages per term, the time tick included (Milvus's framework uses 100).
const MESSAGE_COUNT: usize = 100;
/// Appends in flight at once per writer.
const MAX_IN_FLIGHT: usize = 5;
/// Failure guard for anything that should happen promptly; never a timing assertion.
const GUARD: Duration = Duration::from_secs(60);
/// How long a Latest scanner must stay silent.
const LATEST_QUIET: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------------
// Message ids
// ---------------------------------------------------------------------------------------------

#[test]
fn message_id_known_vectors() {
    let vectors: [(i64, &str); 10] = [
        (0, "0"),
        (1, "1"),
        (35, "z"),
        (36, "10"),
        (1295, "zz"),
        (1296, "100"),
        (-1, "-1"),
        (-2, "-2"),
        (i64::MAX, "1y2p0ij32e8e7"),
        (i64::MIN, "-1y2p0ij32e8e8"),
    ];
    for (id, text) in vectors {
        assert_eq!(encode_message_id(id), text, "encoding {id}");
        assert_eq!(decode_message_id(text).unwrap(), id, "decoding {text}");
    }
    assert_eq!(decode_message_id("ZZ").unwrap(), 1295);
    for bad in [
        "",
        "-",
        "1y2p0ij32e8e8",
        "-1y2p0ij32e8e9",
        "12!",
        "zzzzzzzzzzzzzzz",
    ] {
        assert!(decode_message_id(bad).is_err(), "{bad:?} must not parse");
    }
}

proptest! {
    #[test]
    fn message_id_round_trips(id in any::<i64>()) {
        let text = encode_message_id(id);
        prop_assert!(text.bytes().all(|b| b == b'-' || b.is_ascii_digit() || b.is_ascii_lowercase()));
        prop_assert_eq!(decode_message_id(&text).unwrap(), id);
    }

    #[test]
    fn message_id_matches_i128_radix(id in any::<i64>()) {
        // An independent base-36 rendering through i128 arithmetic.
        let mut n = i128::from(id).abs();
        let mut digits = Vec::new();
        loop {
            digits.push(std::char::from_digit((n % 36) as u32, 36).unwrap());
            n /= 36;
            if n == 0 {
                break;
            }
        }
        if id < 0 {
            digits.push('-');
        }
        let expected: String = digits.into_iter().rev().collect();
        prop_assert_eq!(encode_message_id(id), expected);
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn guarded<T>(what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(GUARD * 2, fut)
        .await
        .with_context(|| format!("{what}: no result within {} s", (GUARD * 2).as_secs()))?
}

fn random_letters(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

/// Reads until `stop` says the message just read is the last one.
async fn read_until(
    scanner: &mut Scanner,
    mut stop: impl FnMut(&Message) -> bool,
) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    loop {
        let Some(message) = scanner.next(GUARD).await? else {
            bail!(
                "scanner {}: nothing delivered for {} s after {} messages (last id {:?})",
                scanner.name(),
                GUARD.as_secs(),
                out.len(),
                out.last().map(|m: &Message| m.id)
            );
        };
        let last = stop(&message);
        out.push(message);
        if last {
            return Ok(out);
        }
    }
}

/// Reads exactly `n` messages.
async fn read_n(scanner: &mut Scanner, n: usize) -> Result<Vec<Message>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut count = 0;
    read_until(scanner, |_| {
        count += 1;
        count == n
    })
    .await
}

fn ids(messages: &[Message]) -> Vec<i64> {
    messages.iter().map(|m| m.id).collect()
}

fn ensure_strictly_increasing(what: &str, ids: &[i64]) -> Result<()> {
    if let Some(w) = ids.windows(2).find(|w| w[0] >= w[1]) {
        bail!(
            "{what}: ids not strictly increasing: {} then {} in {ids:?}",
            w[0],
            w[1]
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The walimpls framework
// ---------------------------------------------------------------------------------------------

/// A message the framework appended, as its appender saw it.
#[derive(Debug, Clone)]
struct Written {
    id: i64,
    payload: Vec<u8>,
    properties: BTreeMap<String, String>,
}

/// One pchannel's state across terms.
#[derive(Debug)]
struct Channel {
    name: String,
    term: i64,
    written: Vec<Written>,
}

#[derive(Debug, Clone)]
struct Env {
    bootstrap: String,
    opener: Opener,
    variant: ConsumerVariant,
}

fn is_tick_of(message: &Message, term: i64) -> bool {
    message.property("_t").as_deref() == Some("timetick")
        && message.property("term") == Some(term.to_string())
}

fn milvus_properties(pchannel: &str, term: i64, i: usize) -> Vec<(String, String)> {
    // A TSO: physical milliseconds << 18 | logical.
    let tso: u64 =
        ((1_764_000_000_000u64 + term as u64 * 1_000 + i as u64) << 18) | (i as u64 & 0x3ffff);
    vec![
        ("id".to_string(), i.to_string()),
        ("const".to_string(), "t".to_string()),
        ("_v".to_string(), "2".to_string()),
        ("_t".to_string(), "insert".to_string()),
        ("_tt".to_string(), format!("{tso:x}")),
        (
            "_vc".to_string(),
            format!("{pchannel}_462138485645312000v{term}"),
        ),
    ]
}

impl Channel {
    /// a. Opening read-write: the Kafka WAL only validates and records name and term.
    fn open(&mut self, term: i64) -> Result<()> {
        ensure!(!self.name.is_empty(), "a pchannel needs a name");
        ensure!(
            term >= self.term,
            "term {term} is older than term {}",
            self.term
        );
        self.term = term;
        Ok(())
    }

    async fn append_one(
        &self,
        env: &Env,
        payload: Vec<u8>,
        properties: Vec<(String, String)>,
    ) -> Result<Written> {
        let id = guarded(
            &format!("append to {}", self.name),
            env.opener.append(&self.name, &payload, &properties),
        )
        .await?;
        Ok(Written {
            id,
            payload,
            properties: properties.into_iter().collect(),
        })
    }

    /// b. The writer: `MESSAGE_COUNT - 1` inserts with at most `MAX_IN_FLIGHT` appends in
    /// flight, then the time tick of the term.
    async fn write_term(&self, env: &Env) -> Result<Vec<Written>> {
        let term = self.term;
        let mut written: Vec<Written> = futures::stream::iter(0..MESSAGE_COUNT - 1)
            .map(|i| {
                let len = rand::rng().random_range(0..512);
                let mut payload = format!("insert {} term {term} #{i}:", self.name).into_bytes();
                payload.extend(random_bytes(len));
                self.append_one(env, payload, milvus_properties(&self.name, term, i))
            })
            .buffer_unordered(MAX_IN_FLIGHT)
            .try_collect()
            .await?;
        let tick_properties = vec![
            ("id".to_string(), (MESSAGE_COUNT - 1).to_string()),
            ("const".to_string(), "t".to_string()),
            ("term".to_string(), term.to_string()),
            ("_t".to_string(), "timetick".to_string()),
        ];
        written.push(
            self.append_one(
                env,
                format!("timetick {term}").into_bytes(),
                tick_properties,
            )
            .await?,
        );
        Ok(written)
    }

    fn scanner(&self, env: &Env, name: &str, policy: DeliverPolicy) -> Result<Scanner> {
        Scanner::new(
            &env.bootstrap,
            &format!("{}_{name}", self.name),
            &self.name,
            policy,
            env.variant,
        )
    }

    /// Reads with DeliverPolicyAll until this term's time tick.
    async fn read_all(&self, env: &Env, name: &str) -> Result<Vec<Message>> {
        let mut scanner = self.scanner(env, name, DeliverPolicy::All)?;
        let term = self.term;
        let messages = read_until(&mut scanner, |m| is_tick_of(m, term)).await?;
        scanner.close().await?;
        Ok(messages)
    }

    /// c. A scanner's output against everything written so far.
    fn check_read(&self, what: &str, expected: &[Written], got: &[Message]) -> Result<()> {
        let what = format!("{} term {} {what}", self.name, self.term);
        ensure_strictly_increasing(&what, &ids(got))?;
        ensure!(
            expected.len() == got.len(),
            "{what}: read {} messages, {} were written (read ids {:?}, written ids {:?})",
            got.len(),
            expected.len(),
            ids(got),
            expected.iter().map(|w| w.id).collect::<Vec<_>>()
        );
        for (w, m) in expected.iter().zip(got) {
            ensure!(
                w.id == m.id,
                "{what}: read id {} where {} was written",
                m.id,
                w.id
            );
            let props = m.properties();
            for key in ["id", "const"] {
                ensure!(
                    props.get(key) == w.properties.get(key),
                    "{what}: message {}: property {key} is {:?}, written {:?}",
                    m.id,
                    props.get(key),
                    w.properties.get(key)
                );
            }
            ensure!(
                props == w.properties,
                "{what}: message {}: properties {props:?}, written {:?}",
                m.id,
                w.properties
            );
            ensure!(
                m.payload.as_deref() == Some(&w.payload[..]),
                "{what}: message {}: payload differs ({:?} bytes read, {} written)",
                m.id,
                m.payload.as_ref().map(Vec::len),
                w.payload.len()
            );
        }
        Ok(())
    }

    async fn run_term(&mut self, env: &Env, term: i64) -> Result<()> {
        // a.
        self.open(term)?;
        // b. Writer and two DeliverPolicyAll scanners at once.
        let (written, read1, read2) = tokio::try_join!(
            self.write_term(env),
            self.read_all(env, "scanner_1"),
            self.read_all(env, "scanner_2"),
        )?;
        // c.
        let mut written = written;
        written.sort_by_key(|w| w.id);
        self.written.extend(written);
        let all_ids: Vec<i64> = self.written.iter().map(|w| w.id).collect();
        ensure_strictly_increasing(&format!("{} term {term} written", self.name), &all_ids)?;
        self.check_read("scanner_1 (All)", &self.written, &read1)?;
        self.check_read("scanner_2 (All)", &self.written, &read2)?;
        // d.
        let mid = self.written.len() / 2;
        let pivot = self.written[mid].id;
        let mut scanner = self.scanner(env, "start_from", DeliverPolicy::StartFrom(pivot))?;
        let got = read_until(&mut scanner, |m| is_tick_of(m, term)).await?;
        scanner.close().await?;
        self.check_read(&format!("StartFrom({pivot})"), &self.written[mid..], &got)?;
        let mut scanner = self.scanner(env, "start_after", DeliverPolicy::StartAfter(pivot))?;
        let got = read_until(&mut scanner, |m| is_tick_of(m, term)).await?;
        scanner.close().await?;
        self.check_read(
            &format!("StartAfter({pivot})"),
            &self.written[mid + 1..],
            &got,
        )?;
        // e.
        let mut scanner = self.scanner(env, "latest", DeliverPolicy::Latest)?;
        let got = scanner.next(LATEST_QUIET).await?;
        scanner.close().await?;
        if let Some(m) = got {
            bail!(
                "{} term {term}: a Latest scanner delivered message {} with no write in progress",
                self.name,
                m.id
            );
        }
        // f. Reopen read-only: the Kafka WAL has no writer to refuse; read everything again.
        let reread = self.read_all(env, "read_only").await?;
        self.check_read("read-only reopen (All)", &self.written, &reread)?;
        Ok(())
    }

    /// Term 4: one append, a truncate (a no-op for Kafka), a reopen that reads it back.
    async fn run_last_term(&mut self, env: &Env) -> Result<()> {
        self.open(4)?;
        let properties = vec![
            ("id".to_string(), MESSAGE_COUNT.to_string()),
            ("const".to_string(), "t".to_string()),
            ("term".to_string(), "4".to_string()),
            ("_t".to_string(), "timetick".to_string()),
        ];
        let w = self.append_one(env, b"term 4".to_vec(), properties).await?;
        ensure!(
            w.id > self.written.last().map_or(-1, |l| l.id),
            "{}: term 4's message got id {}, not after every earlier one",
            self.name,
            w.id
        );
        self.written.push(w.clone());
        // Truncate to the new message: nothing to do for Kafka. Then reopen with term 4.
        self.open(4)?;
        let reread = self.read_all(env, "term4").await?;
        self.check_read("term 4 reopen (All)", &self.written, &reread)?;
        let mut scanner = self.scanner(env, "term4_from", DeliverPolicy::StartFrom(w.id))?;
        let got = read_n(&mut scanner, 1).await?;
        scanner.close().await?;
        self.check_read("term 4 StartFrom", std::slice::from_ref(&w), &got)?;
        Ok(())
    }
}

async fn run_framework(variant: ConsumerVariant, restart_before_term_3: bool) -> Result<()> {
    let mut server = Server::start().await.context("starting woodpecker serve")?;
    let bootstrap = server.bootstrap();
    let env = Env {
        bootstrap: bootstrap.clone(),
        opener: Opener::new(&bootstrap)?,
        variant,
    };
    let mut channels: Vec<Channel> = (0..3)
        .map(|i| Channel {
            name: format!("test_{i}_{}", random_letters(4)),
            term: 0,
            written: Vec::new(),
        })
        .collect();
    for term in 1..=3 {
        if restart_before_term_3 && term == 3 {
            server
                .restart()
                .await
                .context("restarting woodpecker serve")?;
        }
        futures::future::try_join_all(channels.iter_mut().map(|c| {
            let env = &env;
            async move {
                c.run_term(env, term)
                    .await
                    .with_context(|| format!("{variant:?}: {} term {term}", c.name))
            }
        }))
        .await?;
    }
    futures::future::try_join_all(channels.iter_mut().map(|c| {
        let env = &env;
        async move {
            c.run_last_term(env)
                .await
                .with_context(|| format!("{variant:?}: {} term 4", c.name))
        }
    }))
    .await?;
    env.opener.close()?;
    server.stop().await.context("stopping woodpecker serve")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walimpls_framework_before_2_6_8_with_restart() -> Result<()> {
    run_framework(ConsumerVariant::AutoCommitLatest, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walimpls_framework_since_2_6_8() -> Result<()> {
    run_framework(ConsumerVariant::NoCommitEarliest, false).await
}

// ---------------------------------------------------------------------------------------------
// Shim-specific checks
// ---------------------------------------------------------------------------------------------

fn topic(prefix: &str) -> String {
    format!("{prefix}_{}", random_letters(6))
}

fn scan(
    bootstrap: &str,
    topic: &str,
    policy: DeliverPolicy,
    variant: ConsumerVariant,
) -> Result<Scanner> {
    Scanner::new(
        bootstrap,
        &format!("{topic}_reader"),
        topic,
        policy,
        variant,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_round_trip_byte_exact() -> Result<()> {
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topic = topic("headers");
    let b64 = base64::engine::general_purpose::STANDARD.encode(random_bytes(768));
    ensure!(b64.len() == 1024);
    let binary: Vec<u8> = (0..=255u8).collect();
    let expected: Vec<(String, Option<Vec<u8>>)> = vec![
        ("empty".into(), Some(Vec::new())),
        ("b64".into(), Some(b64.clone().into_bytes())),
        ("null".into(), None),
        ("binary".into(), Some(binary)),
        ("dup".into(), Some(b"1".to_vec())),
        ("dup".into(), Some(b"2".to_vec())),
        ("".into(), Some(b"empty key".to_vec())),
        ("ключ".into(), Some("значение".as_bytes().to_vec())),
    ];
    let headers = expected.iter().fold(OwnedHeaders::new(), |h, (k, v)| {
        h.insert(Header {
            key: k.as_str(),
            value: v.as_deref(),
        })
    });
    let first = guarded(
        "append",
        opener.append_raw(&topic, b"with headers", headers),
    )
    .await?;
    // Milvus-style: only string properties, some empty.
    let props = [
        ("empty", String::new()),
        ("b64", b64),
        ("const", "t".to_string()),
    ];
    let second = guarded("append", opener.append(&topic, b"", &props)).await?;
    ensure!(second == first + 1, "offsets {first} then {second}");
    for variant in ConsumerVariant::ALL {
        let mut scanner = scan(&bootstrap, &topic, DeliverPolicy::All, variant)?;
        let got = read_n(&mut scanner, 2).await?;
        scanner.close().await?;
        ensure!(
            got[0].id == first && got[1].id == second,
            "ids {:?}",
            ids(&got)
        );
        ensure!(
            got[0].headers == expected,
            "headers came back as {:?}, sent {expected:?}",
            got[0].headers
        );
        ensure!(got[0].payload.as_deref() == Some(&b"with headers"[..]));
        let want: Vec<(String, Option<Vec<u8>>)> = props
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.clone().into_bytes())))
            .collect();
        ensure!(
            got[1].headers == want,
            "headers came back as {:?}, sent {want:?}",
            got[1].headers
        );
        // An empty value may come back as empty or null; librdkafka sends it as empty.
        ensure!(
            got[1].payload.as_deref().unwrap_or_default().is_empty(),
            "empty value came back as {:?}",
            got[1].payload
        );
    }
    opener.close()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_record_round_trips() -> Result<()> {
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topic = topic("big");
    let small = guarded("append", opener.append(&topic, b"before", &[("id", "0")])).await?;
    // Incompressible, so zstd cannot shrink it below the limit.
    let big = random_bytes(MESSAGE_MAX_BYTES - 4096);
    let big_id = guarded(
        "append 10 MiB",
        opener.append(&topic, &big, &[("id", "1"), ("const", "t")]),
    )
    .await?;
    let after = guarded("append", opener.append(&topic, b"after", &[("id", "2")])).await?;
    ensure!(
        [small, big_id, after] == [0, 1, 2],
        "offsets {small}, {big_id}, {after}"
    );
    for variant in ConsumerVariant::ALL {
        let mut scanner = scan(&bootstrap, &topic, DeliverPolicy::All, variant)?;
        let got = read_n(&mut scanner, 3).await?;
        scanner.close().await?;
        ensure!(ids(&got) == [0, 1, 2], "ids {:?}", ids(&got));
        ensure!(
            got[1].payload.as_deref() == Some(&big[..]),
            "the 10 MiB value came back as {:?} bytes",
            got[1].payload.as_ref().map(Vec::len)
        );
        ensure!(got[2].payload.as_deref() == Some(&b"after"[..]));
        let mut scanner = scan(&bootstrap, &topic, DeliverPolicy::StartFrom(1), variant)?;
        let got = read_n(&mut scanner, 1).await?;
        scanner.close().await?;
        ensure!(got[0].id == 1 && got[0].payload.as_deref() == Some(&big[..]));
    }
    opener.close()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_and_uncompressed_both_work() -> Result<()> {
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    for codec in ["zstd", "none"] {
        let opener = Opener::with_compression(&bootstrap, codec)?;
        let topic = topic(&format!("codec_{codec}"));
        // Compressible payloads, appended concurrently so they share batches.
        let payloads: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("{codec} payload {i} ").repeat(40).into_bytes())
            .collect();
        let mut written: Vec<(i64, usize)> =
            futures::future::try_join_all(payloads.iter().enumerate().map(|(i, p)| {
                let opener = &opener;
                let topic = &topic;
                async move {
                    let id = guarded("append", opener.append(topic, p, &[("id", i.to_string())]))
                        .await?;
                    Ok::<_, anyhow::Error>((id, i))
                }
            }))
            .await?;
        written.sort();
        ensure!(
            written.iter().map(|w| w.0).eq(0..50),
            "{codec}: offsets {written:?}"
        );
        for variant in ConsumerVariant::ALL {
            let mut scanner = scan(&bootstrap, &topic, DeliverPolicy::All, variant)?;
            let got = read_n(&mut scanner, 50).await?;
            scanner.close().await?;
            for (m, (id, i)) in got.iter().zip(&written) {
                ensure!(m.id == *id, "{codec}: read id {} for {id}", m.id);
                ensure!(
                    m.payload.as_deref() == Some(&payloads[*i][..]),
                    "{codec}: payload of {id}"
                );
                ensure!(
                    m.property("id") == Some(i.to_string()),
                    "{codec}: property id of {id}"
                );
            }
        }
        opener.close()?;
    }
    Ok(())
}

fn plain_consumer(bootstrap: &str, group: &str, variant: ConsumerVariant) -> Result<BaseConsumer> {
    Ok(consumer_config(bootstrap, group, variant).create()?)
}

async fn watermarks(consumer: &Arc<BaseConsumer>, topic: &str) -> Result<(i64, i64)> {
    let consumer = Arc::clone(consumer);
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || consumer.fetch_watermarks(&topic, 0, GUARD))
        .await?
        .context("ListOffsets (fetch_watermarks)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_offsets_on_empty_and_written_topics() -> Result<()> {
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topic = topic("offsets");
    let consumer = Arc::new(plain_consumer(
        &bootstrap,
        "offsets_probe",
        ConsumerVariant::NoCommitEarliest,
    )?);
    // The topic comes into being through the consumer's metadata request
    // (allow.auto.create.topics=true); creation may take a moment, as with Kafka.
    let empty = {
        let consumer = Arc::clone(&consumer);
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || -> Result<(i64, i64)> {
            let deadline = std::time::Instant::now() + GUARD;
            loop {
                let _ = consumer.fetch_metadata(Some(&topic), Duration::from_secs(5));
                match consumer.fetch_watermarks(&topic, 0, Duration::from_secs(5)) {
                    Ok(w) => return Ok(w),
                    Err(e) if std::time::Instant::now() > deadline => {
                        return Err(e).context("ListOffsets on a new topic");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(200)),
                }
            }
        })
        .await??
    };
    ensure!(empty == (0, 0), "watermarks of an empty topic: {empty:?}");
    for i in 0..7 {
        let id = guarded(
            "append",
            opener.append(&topic, b"x", &[("id", i.to_string())]),
        )
        .await?;
        ensure!(id == i, "append #{i} got offset {id}");
    }
    let after = watermarks(&consumer, &topic).await?;
    ensure!(after == (0, 7), "watermarks after 7 appends: {after:?}");
    // Latest resolves to the end: a Latest scanner sees only what comes after.
    for variant in ConsumerVariant::ALL {
        let mut scanner = scan(&bootstrap, &topic, DeliverPolicy::Latest, variant)?;
        ensure!(
            scanner.next(LATEST_QUIET).await?.is_none(),
            "Latest delivered old data"
        );
        scanner.close().await?;
    }
    opener.close()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_starting_mid_batch_starts_there() -> Result<()> {
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    for codec in ["zstd", "none"] {
        // A longer linger than Milvus's 5 ms so that the ten records surely share one batch.
        let mut config = compat_tests::milvus::producer_config(&bootstrap, codec);
        config.set("linger.ms", "200");
        let opener = Opener::from_config(&config)?;
        let topic = topic(&format!("midbatch_{codec}"));
        let mut offsets = futures::future::try_join_all((0..10).map(|i| {
            let opener = &opener;
            let topic = &topic;
            async move {
                guarded(
                    "append",
                    opener.append(
                        topic,
                        format!("record {i}").as_bytes(),
                        &[("id", i.to_string())],
                    ),
                )
                .await
            }
        }))
        .await?;
        offsets.sort();
        ensure!(
            offsets == (0..10).collect::<Vec<i64>>(),
            "offsets {offsets:?}"
        );
        for variant in ConsumerVariant::ALL {
            for (policy, first) in [
                (DeliverPolicy::StartFrom(2), 2),
                (DeliverPolicy::StartAfter(2), 3),
                (DeliverPolicy::StartFrom(9), 9),
                (DeliverPolicy::StartFrom(0), 0),
            ] {
                let mut scanner = scan(&bootstrap, &topic, policy, variant)?;
                let got = read_n(&mut scanner, (10 - first) as usize).await?;
                scanner.close().await?;
                ensure!(
                    ids(&got) == (first..10).collect::<Vec<i64>>(),
                    "{codec} {variant:?} {policy:?}: ids {:?}",
                    ids(&got)
                );
                for m in &got {
                    ensure!(
                        m.payload.as_deref()
                            == Some(
                                format!("record {}", m.property("id").unwrap_or_default())
                                    .as_bytes()
                            ),
                        "{variant:?} {policy:?}: message {} has payload {:?}",
                        m.id,
                        m.payload
                    );
                }
            }
        }
        opener.close()?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_offset_resets_per_auto_offset_reset() -> Result<()> {
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topic = topic("reset");
    for i in 0..5 {
        let id = guarded(
            "append",
            opener.append(&topic, b"old", &[("id", i.to_string())]),
        )
        .await?;
        ensure!(id == i, "append #{i} got offset {id}");
    }
    // earliest: offset 0 onwards.
    let mut scanner = scan(
        &bootstrap,
        &topic,
        DeliverPolicy::StartFrom(1_000_000),
        ConsumerVariant::NoCommitEarliest,
    )?;
    let got = read_n(&mut scanner, 5).await?;
    scanner.close().await?;
    ensure!(
        ids(&got) == [0, 1, 2, 3, 4],
        "reset to earliest delivered {:?}",
        ids(&got)
    );
    // latest: nothing old; the first delivered message is one appended after the reset.
    let mut scanner = scan(
        &bootstrap,
        &topic,
        DeliverPolicy::StartFrom(1_000_000),
        ConsumerVariant::AutoCommitLatest,
    )?;
    let mut probes = Vec::new();
    let first = loop {
        ensure!(
            probes.len() < 60,
            "reset to latest: none of the probes {probes:?} was delivered"
        );
        let n = probes.len();
        probes.push(
            guarded(
                "append",
                opener.append(&topic, b"probe", &[("id", format!("probe {n}"))]),
            )
            .await?,
        );
        if let Some(m) = scanner.next(Duration::from_secs(1)).await? {
            break m;
        }
    };
    ensure!(
        probes.contains(&first.id) && first.property("id").is_some_and(|p| p.starts_with("probe")),
        "reset to latest delivered id {} ({:?}); probes were {probes:?}",
        first.id,
        first.property("id")
    );
    let rest = probes
        .iter()
        .copied()
        .filter(|p| *p > first.id)
        .collect::<Vec<_>>();
    let got = read_n(&mut scanner, rest.len()).await?;
    ensure!(
        ids(&got) == rest,
        "after the reset: {:?}, expected {rest:?}",
        ids(&got)
    );
    let next = guarded("append", opener.append(&topic, b"probe", &[("id", "last")])).await?;
    let got = read_n(&mut scanner, 1).await?;
    ensure!(
        got[0].id == next,
        "after the reset: got {}, expected {next}",
        got[0].id
    );
    scanner.close().await?;
    opener.close()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_lists_this_broker() -> Result<()> {
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topic = topic("meta");
    guarded("append", opener.append(&topic, b"x", &[("id", "0")])).await?;
    let producer = opener.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        producer.producer().client().fetch_metadata(None, GUARD)
    })
    .await?
    .context("Metadata for all topics (the health check)")?;
    let brokers: Vec<(i32, String, i32)> = metadata
        .brokers()
        .iter()
        .map(|b| (b.id(), b.host().to_string(), b.port()))
        .collect();
    ensure!(brokers.len() == 1, "brokers {brokers:?}");
    let (broker_id, host, port) = &brokers[0];
    let resolved = tokio::net::lookup_host((host.as_str(), *port as u16))
        .await
        .with_context(|| format!("resolving the advertised broker {host}:{port}"))?
        .collect::<Vec<_>>();
    ensure!(
        resolved.contains(&server.kafka_addr),
        "the broker advertises {host}:{port} ({resolved:?}), the server listens on {}",
        server.kafka_addr
    );
    let listed = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .with_context(|| format!("{topic} is not among the topics of a Metadata for all topics"))?;
    ensure!(
        listed.error().is_none(),
        "{topic}: error {:?}",
        listed.error()
    );
    let partitions: Vec<(i32, i32)> = listed
        .partitions()
        .iter()
        .map(|p| (p.id(), p.leader()))
        .collect();
    ensure!(
        partitions.iter().any(|p| p.0 == 0) && partitions.iter().all(|p| p.1 == *broker_id),
        "{topic}: partitions (id, leader) {partitions:?}"
    );
    // The consumers see the same.
    for variant in ConsumerVariant::ALL {
        let consumer = plain_consumer(&bootstrap, "meta_probe", variant)?;
        let metadata =
            tokio::task::spawn_blocking(move || consumer.fetch_metadata(None, GUARD)).await??;
        ensure!(metadata.brokers().len() == 1 && metadata.brokers()[0].id() == *broker_id);
        ensure!(metadata.topics().iter().any(|t| t.name() == topic));
    }
    opener.close()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_topics_five_in_flight_read_back_in_order() -> Result<()> {
    const TOPICS: usize = 16;
    const PER_TOPIC: usize = 100;
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topics: Vec<String> = (0..TOPICS).map(|i| topic(&format!("conc{i}"))).collect();
    // Two consumers per topic (one per variant) read while the writers write.
    let bootstrap = &bootstrap;
    let readers = futures::future::try_join_all(topics.iter().flat_map(|t| {
        ConsumerVariant::ALL
            .into_iter()
            .map(move |variant| async move {
                let mut scanner = Scanner::new(
                    bootstrap,
                    &format!("{t}_{variant:?}"),
                    t,
                    DeliverPolicy::All,
                    variant,
                )?;
                let got = read_n(&mut scanner, PER_TOPIC).await?;
                scanner.close().await?;
                Ok::<_, anyhow::Error>((t.clone(), variant, got))
            })
    }));
    let writers = futures::future::try_join_all(topics.iter().map(|t| {
        let opener = &opener;
        async move {
            let mut written: Vec<(i64, usize)> = futures::stream::iter(0..PER_TOPIC)
                .map(|i| async move {
                    let id = guarded(
                        "append",
                        opener.append(t, format!("{t} {i}").as_bytes(), &[("id", i.to_string())]),
                    )
                    .await?;
                    Ok::<_, anyhow::Error>((id, i))
                })
                .buffer_unordered(MAX_IN_FLIGHT)
                .try_collect()
                .await?;
            written.sort();
            Ok::<_, anyhow::Error>((t.clone(), written))
        }
    }));
    let (read, written) = tokio::try_join!(readers, writers)?;
    let written: BTreeMap<String, Vec<(i64, usize)>> = written.into_iter().collect();
    for (t, w) in &written {
        let offsets: Vec<i64> = w.iter().map(|x| x.0).collect();
        ensure!(
            offsets == (0..PER_TOPIC as i64).collect::<Vec<_>>(),
            "{t}: offsets {offsets:?}"
        );
    }
    for (t, variant, got) in read {
        let expected = &written[&t];
        ensure_strictly_increasing(&format!("{t} {variant:?}"), &ids(&got))?;
        for (m, (id, i)) in got.iter().zip(expected) {
            ensure!(
                m.id == *id,
                "{t} {variant:?}: read id {} where {id} was written",
                m.id
            );
            ensure!(
                m.payload.as_deref() == Some(format!("{t} {i}").as_bytes())
                    && m.property("id") == Some(i.to_string()),
                "{t} {variant:?}: message {id} differs"
            );
        }
    }
    opener.close()?;
    Ok(())
}

async fn committed(bootstrap: &str, group: &str, topic: &str) -> Result<Offset> {
    let consumer = plain_consumer(bootstrap, group, ConsumerVariant::NoCommitEarliest)?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || -> Result<Offset> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, 0);
        let got = consumer
            .committed_offsets(tpl, GUARD)
            .context("OffsetFetch (committed_offsets)")?;
        let entry = got
            .find_partition(&topic, 0)
            .context("OffsetFetch answered without the partition")?;
        entry.error().context("OffsetFetch: partition error")?;
        Ok(entry.offset())
    })
    .await?
}

/// Not Milvus's contract (it always assigns explicit offsets) but the server's: the
/// pre-2.6.8 consumers auto-commit what they consumed, for their manually assigned partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commit_of_assigned_partition_is_stored() -> Result<()> {
    let mut server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topic = topic("commit");
    for i in 0..10 {
        guarded(
            "append",
            opener.append(&topic, b"x", &[("id", i.to_string())]),
        )
        .await?;
    }
    let group = format!("{topic}_auto");
    let mut scanner = Scanner::new(
        &bootstrap,
        &group,
        &topic,
        DeliverPolicy::All,
        ConsumerVariant::AutoCommitLatest,
    )?;
    let got = read_n(&mut scanner, 10).await?;
    ensure!(
        ids(&got) == (0..10).collect::<Vec<i64>>(),
        "ids {:?}",
        ids(&got)
    );
    // auto.commit.interval.ms is 5 s: wait (bounded) for the periodic commit to land.
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let offset = committed(&bootstrap, &group, &topic).await?;
        if offset == Offset::Offset(10) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "group {group}: committed offset is {offset:?}, 10 messages were consumed"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    scanner.close().await?;
    let offset = committed(&bootstrap, &group, &topic).await?;
    ensure!(
        offset == Offset::Offset(10),
        "group {group} after close: {offset:?}"
    );
    server.restart().await?;
    let offset = committed(&bootstrap, &group, &topic).await?;
    ensure!(
        offset == Offset::Offset(10),
        "group {group} after a server restart: {offset:?}, 10 was committed before"
    );
    // The 2.6.8+ consumer commits nothing.
    let group = format!("{topic}_manual");
    let mut scanner = Scanner::new(
        &bootstrap,
        &group,
        &topic,
        DeliverPolicy::All,
        ConsumerVariant::NoCommitEarliest,
    )?;
    read_n(&mut scanner, 10).await?;
    scanner.close().await?;
    let offset = committed(&bootstrap, &group, &topic).await?;
    ensure!(
        offset == Offset::Invalid,
        "group {group} never committed, yet OffsetFetch says {offset:?}"
    );
    opener.close()?;
    Ok(())
}

/// A scanner resuming exactly at the end (StartFrom(end), or StartAfter(end - 1)) waits for
/// new data: an offset equal to the high watermark is not out of range (with the 2.6.8+
/// consumers' `auto.offset.reset=earliest`, treating it as out of range would replay the
/// whole pchannel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_at_the_end_waits_for_new_data() -> Result<()> {
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topic = topic("resume");
    for i in 0..5 {
        guarded(
            "append",
            opener.append(&topic, b"old", &[("id", i.to_string())]),
        )
        .await?;
    }
    let mut end = 5;
    for variant in ConsumerVariant::ALL {
        for after in [false, true] {
            let policy = if after {
                DeliverPolicy::StartAfter(end - 1)
            } else {
                DeliverPolicy::StartFrom(end)
            };
            let mut scanner = scan(&bootstrap, &topic, policy, variant)?;
            if let Some(m) = scanner.next(LATEST_QUIET).await? {
                bail!(
                    "{variant:?} {policy:?} at the end ({end}): delivered old message {}",
                    m.id
                );
            }
            let id = guarded(
                "append",
                opener.append(&topic, b"new", &[("id", end.to_string())]),
            )
            .await?;
            ensure!(id == end, "append got offset {id}, the end was {end}");
            let got = read_n(&mut scanner, 1).await?;
            scanner.close().await?;
            ensure!(
                got[0].id == end && got[0].payload.as_deref() == Some(&b"new"[..]),
                "{variant:?} {policy:?}: first delivered {} ({:?}), expected the new message {end}",
                got[0].id,
                got[0].payload
            );
            end += 1;
        }
    }
    opener.close()?;
    Ok(())
}

/// Topic names as Milvus makes them, and the longest name Kafka allows (249 characters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn milvus_and_maximal_topic_names() -> Result<()> {
    let server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let suffix = random_letters(4);
    let longest = format!("{suffix}{}", "x".repeat(245));
    ensure!(longest.len() == 249);
    let names = [
        format!("by-dev-rootcoord-dml_0_{suffix}"),
        format!("by-dev-rootcoord-dml_15_{suffix}"),
        format!("in01-3f5c.milvus_wal.{suffix}"),
        longest,
    ];
    for name in &names {
        let id = guarded(
            &format!("append to {name}"),
            opener.append(name, b"x", &[("id", "0")]),
        )
        .await?;
        ensure!(id == 0, "{name}: first append got offset {id}");
        let mut scanner = scan(
            &bootstrap,
            name,
            DeliverPolicy::All,
            ConsumerVariant::NoCommitEarliest,
        )
        .with_context(|| format!("scanner of {name}"))?;
        let got = read_n(&mut scanner, 1).await?;
        scanner.close().await?;
        ensure!(got[0].id == 0, "{name}: read {}", got[0].id);
    }
    opener.close()?;
    Ok(())
}

/// Appends Milvus saw acknowledged (acks=all) are there after the server is killed
/// (SIGKILL, no shutdown) and started again on the same data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() -> Result<()> {
    let temp = tempfile::tempdir()?;
    let data_dir = temp.path().join("data");
    let server = Server::start_in(&data_dir, &[]).await?;
    let opener = Opener::new(&server.bootstrap())?;
    let topic = topic("durable");
    let mut written: Vec<(i64, usize)> = futures::stream::iter(0..200usize)
        .map(|i| {
            let opener = &opener;
            let topic = &topic;
            async move {
                let id = guarded(
                    "append",
                    opener.append(
                        topic,
                        format!("durable {i}").as_bytes(),
                        &[("id", i.to_string())],
                    ),
                )
                .await?;
                Ok::<_, anyhow::Error>((id, i))
            }
        })
        .buffer_unordered(MAX_IN_FLIGHT)
        .try_collect()
        .await?;
    written.sort();
    drop(opener);
    // Dropping the server kills it (SIGKILL); the old process may take a moment to go.
    drop(server);
    let mut restarted = None;
    for _ in 0..100 {
        match Server::start_in(&data_dir, &[]).await {
            Ok(s) => {
                restarted = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
    let mut server = match restarted {
        Some(s) => s,
        None => Server::start_in(&data_dir, &[])
            .await
            .context("starting again after SIGKILL")?,
    };
    let bootstrap = server.bootstrap();
    let mut scanner = scan(
        &bootstrap,
        &topic,
        DeliverPolicy::All,
        ConsumerVariant::NoCommitEarliest,
    )?;
    let got = read_n(&mut scanner, written.len()).await?;
    scanner.close().await?;
    for (m, (id, i)) in got.iter().zip(&written) {
        ensure!(
            m.id == *id,
            "after SIGKILL: read id {} where {id} was acknowledged",
            m.id
        );
        ensure!(
            m.payload.as_deref() == Some(format!("durable {i}").as_bytes()),
            "after SIGKILL: message {id} differs"
        );
    }
    // New appends continue after the acknowledged ones.
    let opener = Opener::new(&bootstrap)?;
    let next = guarded(
        "append",
        opener.append(&topic, b"after", &[("id", "after")]),
    )
    .await?;
    ensure!(
        next == written.len() as i64,
        "after SIGKILL the next append got offset {next}, {} were acknowledged before",
        written.len()
    );
    opener.close()?;
    server.stop().await?;
    Ok(())
}

/// SIGTERM while a producer is connected and consumers sit in a Fetch long-poll: the server
/// exits cleanly, comes back on the same port with the same data, and the producer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_long_polling_consumers_exits_cleanly() -> Result<()> {
    let mut server = Server::start().await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topic = topic("sigterm");
    for i in 0..3 {
        guarded(
            "append",
            opener.append(&topic, b"before", &[("id", i.to_string())]),
        )
        .await?;
    }
    let mut waiting = Vec::new();
    for variant in ConsumerVariant::ALL {
        let mut scanner = scan(&bootstrap, &topic, DeliverPolicy::All, variant)?;
        let got = read_n(&mut scanner, 3).await?;
        ensure!(ids(&got) == [0, 1, 2], "{variant:?}: ids {:?}", ids(&got));
        // Nothing more to read: the consumer now waits in Fetch.
        ensure!(scanner.next(LATEST_QUIET).await?.is_none());
        waiting.push(scanner);
    }
    server
        .restart()
        .await
        .context("SIGTERM with consumers in a Fetch long-poll")?;
    // What the old consumers make of the restart is librdkafka's business; close them.
    for scanner in waiting {
        scanner.close().await?;
    }
    let id = guarded(
        "append after restart",
        opener.append(&topic, b"after", &[("id", "3")]),
    )
    .await?;
    ensure!(id == 3, "first append after the restart got offset {id}");
    let mut scanner = scan(
        &bootstrap,
        &topic,
        DeliverPolicy::All,
        ConsumerVariant::NoCommitEarliest,
    )?;
    let got = read_n(&mut scanner, 4).await?;
    scanner.close().await?;
    ensure!(
        ids(&got) == [0, 1, 2, 3],
        "after the restart: ids {:?}",
        ids(&got)
    );
    opener.close()?;
    server.stop().await?;
    Ok(())
}

/// A record over the broker's max.message.bytes (but under the producer's 10 MiB) fails
/// with MESSAGE_TOO_LARGE, which librdkafka does not retry, and the producer goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_over_the_broker_limit_is_refused() -> Result<()> {
    let server = Server::start_with(&["--kafka-max-message-bytes", "1048576"]).await?;
    let bootstrap = server.bootstrap();
    let opener = Opener::new(&bootstrap)?;
    let topic = topic("toolarge");
    let first = guarded("append", opener.append(&topic, b"small", &[("id", "0")])).await?;
    ensure!(first == 0);
    let big = random_bytes(2 * 1024 * 1024);
    let refused = guarded("append of a 2 MiB record", async {
        Ok(opener.append(&topic, &big, &[("id", "1")]).await)
    })
    .await?;
    let err = match refused {
        Ok(id) => bail!("a 2 MiB record was accepted at offset {id} over max.message.bytes=1 MiB"),
        Err(e) => e,
    };
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<rdkafka::error::KafkaError>())
        .and_then(rdkafka::error::KafkaError::rdkafka_error_code);
    ensure!(
        code == Some(rdkafka::types::RDKafkaErrorCode::MessageSizeTooLarge),
        "a record over max.message.bytes failed with {code:?}: {err:#}"
    );
    let next = guarded("append", opener.append(&topic, b"small", &[("id", "2")])).await?;
    ensure!(
        next == 1,
        "the append after the refused one got offset {next}"
    );
    opener.close()?;
    Ok(())
}
