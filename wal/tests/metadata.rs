//! The metadata provider, one suite run against the embedded store and a real etcd (the one
//! `scripts/test` starts; `WOODPECKER_TEST_ETCD_ENDPOINT`). On etcd every case works under its
//! own random root prefix.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use proto::meta::{
    QuorumInfo, SegmentCleanupState, SegmentCleanupStatus, SegmentCompactedNotifyState,
    SegmentCompactedNotifyStatus, SegmentMetadata, SegmentState,
};
use wal::clock::{ClockRef, ManualClock, SystemClock};
use wal::meta::embedded::EmbeddedKv;
use wal::meta::etcd::{EtcdConfig, EtcdKv};
use wal::meta::kv::Kv;
use wal::meta::prefix::{PrefixCandidates, PrefixMode, PrefixReason, choose_prefix};
use wal::meta::{KvMetadata, LockOptions, MetaError, MetadataProvider};

const START_MILLIS: u64 = 1_700_000_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Backend {
    Embedded,
    Etcd,
}

/// One backend with a provider on it.
struct Env {
    kv: Arc<dyn Kv>,
    meta: KvMetadata,
    /// The embedded store runs on a manual clock; etcd on real time.
    manual: Option<ManualClock>,
    prefix: String,
    _dir: Option<tempfile::TempDir>,
}

fn etcd_endpoint() -> String {
    std::env::var("WOODPECKER_TEST_ETCD_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "WOODPECKER_TEST_ETCD_ENDPOINT is not set: this test needs the etcd that \
             `scripts/test` starts (or run `eval \"$(scripts/services start)\"` first)"
        )
    })
}

async fn etcd_kv() -> Arc<dyn Kv> {
    let cfg = EtcdConfig {
        endpoints: vec![etcd_endpoint()],
        ..EtcdConfig::default()
    };
    Arc::new(EtcdKv::connect(&cfg).await.unwrap())
}

impl Env {
    async fn new(backend: Backend) -> Env {
        match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let clock = ManualClock::new(START_MILLIS);
                let kv: Arc<dyn Kv> = Arc::new(
                    EmbeddedKv::open(dir.path(), Arc::new(clock.clone()))
                        .await
                        .unwrap(),
                );
                let prefix = "by-dev/woodpecker".to_string();
                let meta = KvMetadata::with_prefix(kv.clone(), &prefix, Arc::new(clock.clone()));
                meta.init_if_necessary().await.unwrap();
                Env {
                    kv,
                    meta,
                    manual: Some(clock),
                    prefix,
                    _dir: Some(dir),
                }
            }
            Backend::Etcd => {
                let kv = etcd_kv().await;
                let prefix = format!("test-{}/woodpecker", uuid::Uuid::new_v4().simple());
                let meta = KvMetadata::with_prefix(kv.clone(), &prefix, SystemClock::shared());
                meta.init_if_necessary().await.unwrap();
                Env {
                    kv,
                    meta,
                    manual: None,
                    prefix,
                    _dir: None,
                }
            }
        }
    }

    /// A provider on the same store with a clock pinned at [`START_MILLIS`] (golden bytes).
    fn pinned(&self) -> (KvMetadata, ManualClock) {
        let clock = self
            .manual
            .clone()
            .unwrap_or_else(|| ManualClock::new(START_MILLIS));
        let meta = KvMetadata::with_prefix(self.kv.clone(), &self.prefix, Arc::new(clock.clone()));
        (meta, clock)
    }

    fn clock(&self) -> ClockRef {
        match &self.manual {
            Some(c) => Arc::new(c.clone()),
            None => SystemClock::shared(),
        }
    }

    /// Lets `by` pass in steps of `step`, so background renewals get to run.
    async fn pass(&self, by: Duration, step: Duration) {
        match &self.manual {
            Some(c) => {
                let mut passed = Duration::ZERO;
                while passed < by {
                    c.advance(step);
                    passed += step;
                    for _ in 0..5 {
                        tokio::task::yield_now().await;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            None => tokio::time::sleep(by).await,
        }
    }

    async fn raw(&self, key: &str) -> Option<Bytes> {
        self.kv.get(key).await.unwrap().map(|kv| kv.value)
    }
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

const MINUS_ONE: &str = "ff ff ff ff ff ff ff ff ff 01";

fn segment(id: i64) -> SegmentMetadata {
    SegmentMetadata {
        seg_no: id,
        create_time: 1_700_000_000_000,
        state: SegmentState::Active as i32,
        last_entry_id: -1,
        ..SegmentMetadata::default()
    }
}

async fn init_is_idempotent_and_refuses_partial_state(e: Env) {
    let k = e.meta.keys().clone();
    assert_eq!(e.raw(&k.version()).await.unwrap().as_ref(), hex("08 01"));
    assert_eq!(e.raw(&k.log_id_gen()).await.unwrap(), "0");
    assert_eq!(e.raw(&k.quorum_id_gen()).await.unwrap(), "0");
    let instance = e.raw(&k.instance()).await.unwrap();
    assert!(uuid::Uuid::parse_str(std::str::from_utf8(&instance).unwrap()).is_ok());
    // Again: nothing changes.
    e.meta.init_if_necessary().await.unwrap();
    assert_eq!(e.raw(&k.instance()).await.unwrap(), instance);
    // Partly initialised: refused.
    e.kv.delete(&k.quorum_id_gen()).await.unwrap();
    let err = e.meta.init_if_necessary().await.unwrap_err();
    assert!(matches!(err, MetaError::Init { .. }), "{err}");
    assert_eq!(err.code(), 3000);
}

async fn logs_are_created_listed_and_guarded(e: Env) {
    let a = e.meta.create_log("by-dev-rootcoord-dml_0").await.unwrap();
    assert_eq!(a.log_id, 1);
    assert_eq!((a.truncated_segment_id, a.truncated_entry_id), (-1, -1));
    let b = e.meta.create_log("by-dev-rootcoord-dml_1").await.unwrap();
    assert_eq!(b.log_id, 2);
    e.meta.create_log("other").await.unwrap();
    assert_eq!(e.raw(&e.meta.keys().log_id_gen()).await.unwrap(), "3");

    let err = e.meta.create_log("other").await.unwrap_err();
    assert!(matches!(err, MetaError::LogAlreadyExists { .. }), "{err}");
    assert_eq!(err.code(), 3013);
    for bad in ["", "a/b"] {
        assert!(matches!(
            e.meta.create_log(bad).await,
            Err(MetaError::InvalidLogName { .. })
        ));
    }

    // Segments under a log do not show up as logs.
    e.meta
        .store_segment_metadata("other", &segment(0))
        .await
        .unwrap();
    assert_eq!(
        e.meta.list_logs().await.unwrap(),
        ["by-dev-rootcoord-dml_0", "by-dev-rootcoord-dml_1", "other"]
    );
    assert_eq!(
        e.meta.list_logs_with_prefix("by-dev-").await.unwrap(),
        ["by-dev-rootcoord-dml_0", "by-dev-rootcoord-dml_1"]
    );
    assert!(e.meta.log_exists("other").await.unwrap());
    assert!(!e.meta.log_exists("nope").await.unwrap());
    assert!(matches!(
        e.meta.get_log_meta("nope").await,
        Err(MetaError::LogNotFound { .. })
    ));

    // Truncation is a compare-and-swap on the log key's revision.
    let current = e.meta.get_log_meta("other").await.unwrap();
    let mut truncated = current.value;
    truncated.truncated_segment_id = 0;
    truncated.truncated_entry_id = 9;
    let rev = e
        .meta
        .update_log_meta("other", &truncated, current.revision)
        .await
        .unwrap();
    assert!(rev > current.revision);
    let mut stale = current.value;
    stale.truncated_segment_id = 5;
    let err = e
        .meta
        .update_log_meta("other", &stale, current.revision)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::RevisionInvalid { .. }), "{err}");
    assert_eq!(err.code(), 3011);
    assert_eq!(
        e.meta
            .get_log_meta("other")
            .await
            .unwrap()
            .value
            .truncated_entry_id,
        9
    );
}

async fn racing_creators_get_dense_distinct_ids(e: Env) {
    let meta = Arc::new(e.meta.clone());
    let mut tasks = Vec::new();
    for i in 0..24 {
        let meta = meta.clone();
        tasks.push(tokio::spawn(async move {
            meta.create_log(&format!("log-{i}")).await.unwrap().log_id
        }));
    }
    let mut ids = BTreeSet::new();
    for t in tasks {
        assert!(ids.insert(t.await.unwrap()), "duplicate id");
    }
    assert_eq!(ids, (1..=24).collect::<BTreeSet<i64>>(), "no gaps");
    assert_eq!(e.raw(&e.meta.keys().log_id_gen()).await.unwrap(), "24");

    // Many creators of one name: exactly one wins.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let meta = meta.clone();
        tasks.push(tokio::spawn(async move { meta.create_log("same").await }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(m) => {
                won += 1;
                assert_eq!(m.log_id, 25);
            }
            Err(MetaError::LogAlreadyExists { .. }) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(won, 1);
    assert_eq!(e.raw(&e.meta.keys().log_id_gen()).await.unwrap(), "25");
}

async fn segments_are_guarded(e: Env) {
    e.meta.create_log("l").await.unwrap();
    // Two writers create the same segment: exactly one wins.
    let meta = Arc::new(e.meta.clone());
    let mut tasks = Vec::new();
    for i in 0..6 {
        let meta = meta.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = segment(0);
            s.create_time += i;
            meta.store_segment_metadata("l", &s).await
        }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => winners += 1,
            Err(err @ MetaError::SegmentAlreadyExists { .. }) => assert_eq!(err.code(), 3014),
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(winners, 1);
    assert!(matches!(
        e.meta.store_segment_metadata("missing", &segment(0)).await,
        Err(MetaError::LogNotFound { .. })
    ));

    for id in [1, 2, 10] {
        e.meta
            .store_segment_metadata("l", &segment(id))
            .await
            .unwrap();
    }
    let all = e.meta.get_all_segment_metadata("l").await.unwrap();
    assert_eq!(
        all.keys().copied().collect::<Vec<_>>(),
        [0, 1, 2, 10],
        "numeric order"
    );

    // Completing is a compare-and-swap on the segment's revision; a stale one is a takeover.
    let current = e.meta.get_segment_metadata("l", 1).await.unwrap();
    let mut done = current.value.clone();
    done.state = SegmentState::Completed as i32;
    done.last_entry_id = 41;
    e.meta
        .update_segment_metadata("l", &done, current.revision)
        .await
        .unwrap();
    let err = e
        .meta
        .update_segment_metadata("l", &done, current.revision)
        .await
        .unwrap_err();
    assert!(matches!(err, MetaError::RevisionInvalid { .. }), "{err}");
    assert_eq!(
        e.meta
            .get_segment_metadata("l", 1)
            .await
            .unwrap()
            .value
            .last_entry_id,
        41
    );

    e.meta.delete_segment_metadata("l", 2).await.unwrap();
    assert!(matches!(
        e.meta.delete_segment_metadata("l", 2).await,
        Err(MetaError::KeyNotExists { .. })
    ));
    assert!(matches!(
        e.meta.get_segment_metadata("l", 2).await,
        Err(MetaError::KeyNotExists { .. })
    ));
}

async fn values_are_the_go_encodings(e: Env) {
    let (meta, clock) = e.pinned();
    let created = meta.create_log("golden").await.unwrap();
    let key = meta.keys().log("golden");
    let expected = format!(
        "08 {:02x}
         10 3c
         18 80 80 80 80 01
         20 80 80 80 40
         28 d8 04
         31 00 f1 53 65 00 00 00 00
         39 00 f1 53 65 00 00 00 00
         40 {MINUS_ONE}
         48 {MINUS_ONE}",
        created.log_id
    );
    assert_eq!(created.log_id, 1);
    assert_eq!(
        e.raw(&key).await.unwrap().as_ref(),
        hex(&expected),
        "LogMeta"
    );

    // SegmentMetadata as v0.1.13 writes it (no quorum, quorumId -1).
    #[allow(deprecated)]
    let legacy = SegmentMetadata {
        seg_no: 3,
        create_time: 1_700_000_000_000,
        quorum_id: -1,
        state: SegmentState::Completed as i32,
        completion_time: 1_700_000_005_000,
        last_entry_id: 99,
        size: 4096,
        sealed_time: 0,
        quorum: None,
    };
    meta.store_segment_metadata("golden", &legacy)
        .await
        .unwrap();
    let expected = format!(
        "08 03  10 80 d0 95 ff bc 31  18 {MINUS_ONE}  20 02  28 88 f7 95 ff bc 31  30 63  38 80 20"
    );
    assert_eq!(
        e.raw(&meta.keys().segment("golden", 3))
            .await
            .unwrap()
            .as_ref(),
        hex(&expected),
        "SegmentMetadata without quorum"
    );

    // And with the v0.1.14 `quorum` field, as an embedded client writes it.
    let with_quorum = SegmentMetadata {
        seg_no: 4,
        create_time: 1_700_000_000_000,
        state: SegmentState::Sealed as i32,
        completion_time: 1_700_000_005_000,
        last_entry_id: 99,
        size: 4096,
        sealed_time: 1_700_000_005_000,
        quorum: Some(QuorumInfo {
            id: -1,
            es: 1,
            wq: 1,
            aq: 1,
            nodes: vec!["127.0.0.1:59456".into()],
            replicas: vec![],
        }),
        ..SegmentMetadata::default()
    };
    meta.store_segment_metadata("golden", &with_quorum)
        .await
        .unwrap();
    let expected = format!(
        "08 04  10 80 d0 95 ff bc 31  20 03  28 88 f7 95 ff bc 31  30 63  38 80 20
         40 88 f7 95 ff bc 31
         4a 22  08 {MINUS_ONE}  10 01  18 01  20 01
                2a 0f 31 32 37 2e 30 2e 30 2e 31 3a 35 39 34 35 36"
    );
    assert_eq!(
        e.raw(&meta.keys().segment("golden", 4))
            .await
            .unwrap()
            .as_ref(),
        hex(&expected),
        "SegmentMetadata with quorum"
    );

    // ReaderTempInfo: opened at (2, 5), read up to (2, 9) one second later.
    let reader = meta.register_reader(7, "reader-1", 2, 5).await.unwrap();
    clock.advance(Duration::from_secs(1));
    reader.update(2, 9).await.unwrap();
    assert_eq!(
        e.raw(&meta.keys().reader(7, "reader-1"))
            .await
            .unwrap()
            .as_ref(),
        hex("0a 08 72 65 61 64 65 72 2d 31
             11 00 68 e5 cf 8b 01 00 00
             18 07  20 02  28 05  30 02  38 09
             41 e8 6b e5 cf 8b 01 00 00"),
        "ReaderTempInfo"
    );
    reader.close().await.unwrap();
}

/// The prefix rule on candidates under a root of this test's own (`<root>/woodpecker` plays the
/// legacy prefix, `<root>/by-dev/woodpecker` the configured one), so that it runs on a shared
/// etcd; `a_fresh_store_opens_under_the_published_prefix` covers the real prefixes.
async fn prefix_rule_never_hides_logs(e: Env) {
    let root = format!("rule-{}", uuid::Uuid::new_v4().simple());
    let candidates = PrefixCandidates {
        legacy: format!("{root}/woodpecker"),
        configured: format!("{root}/by-dev/woodpecker"),
    };
    let choose = |mode| {
        let kv = e.kv.clone();
        let candidates = candidates.clone();
        async move { choose_prefix(kv.as_ref(), mode, &candidates, false).await }
    };
    // An empty store: the published Go prefix, unless a mode says otherwise.
    let c = choose(PrefixMode::Auto).await.unwrap();
    assert_eq!(
        (c.prefix.as_str(), c.reason),
        (candidates.legacy.as_str(), PrefixReason::EmptyStore)
    );
    assert!(c.shadowed().is_none());
    assert_eq!(
        choose(PrefixMode::Configured).await.unwrap().prefix,
        candidates.configured
    );
    assert_eq!(
        choose(PrefixMode::Legacy).await.unwrap().prefix,
        candidates.legacy
    );

    // A store initialised under the configured prefix (a newer Go release, or woodpecker-rs
    // before `auto`): kept.
    let configured = KvMetadata::with_prefix(e.kv.clone(), &candidates.configured, e.clock());
    configured.init_if_necessary().await.unwrap();
    configured.create_log("ours").await.unwrap();
    let c = choose(PrefixMode::Auto).await.unwrap();
    assert_eq!(
        (c.prefix.as_str(), c.reason),
        (candidates.configured.as_str(), PrefixReason::OnlyConfigured)
    );

    // Then an older Go client writes its fixed prefix: no silent switch in either direction.
    let legacy = KvMetadata::with_prefix(e.kv.clone(), &candidates.legacy, e.clock());
    legacy.init_if_necessary().await.unwrap();
    legacy.create_log("theirs").await.unwrap();
    let err = choose(PrefixMode::Auto).await.unwrap_err();
    match &err {
        MetaError::PrefixConflict {
            legacy,
            legacy_logs,
            configured,
            configured_logs,
        } => {
            assert_eq!(legacy, &candidates.legacy);
            assert_eq!(legacy_logs, &["theirs"]);
            assert_eq!(configured, &candidates.configured);
            assert_eq!(configured_logs, &["ours"]);
        }
        other => panic!("expected a prefix conflict, got {other:?}"),
    }
    let text = err.to_string();
    for needle in [
        "woodpecker.meta.prefixMode",
        "`legacy`",
        "`configured`",
        "1 log: theirs",
        "1 log: ours",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from: {text}");
    }
    assert_eq!(err.code(), 3000);
    // An explicit choice opens, and says what it does not see.
    let c = choose(PrefixMode::Configured).await.unwrap();
    assert_eq!(c.prefix, candidates.configured);
    let hidden = c.shadowed().expect("the legacy prefix holds a log");
    assert_eq!(hidden.prefix, candidates.legacy);
    assert_eq!(hidden.logs.as_deref(), Some(&["theirs".to_string()][..]));
    let c = choose(PrefixMode::Legacy).await.unwrap();
    assert_eq!(c.prefix, candidates.legacy);
    assert_eq!(c.shadowed().unwrap().prefix, candidates.configured);

    // Only the legacy prefix: used, as every Go release would.
    configured.delete_log_metadata("ours", true).await.unwrap();
    e.kv.txn(wal::meta::kv::Txn {
        success: vec![wal::meta::kv::TxnOp::DeletePrefix {
            prefix: format!("{}/", candidates.configured),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let c = choose(PrefixMode::Auto).await.unwrap();
    assert_eq!(
        (c.prefix.as_str(), c.reason),
        (candidates.legacy.as_str(), PrefixReason::OnlyLegacy)
    );
    // Overridden, it names the logs it passes over.
    let c = choose(PrefixMode::Configured).await.unwrap();
    let hidden = c.shadowed().expect("the legacy prefix holds a log");
    assert_eq!(hidden.logs.as_deref(), Some(&["theirs".to_string()][..]));
    // One prefix for both: nothing to choose.
    let same = PrefixCandidates {
        legacy: candidates.legacy.clone(),
        configured: candidates.legacy.clone(),
    };
    let c = choose_prefix(e.kv.as_ref(), PrefixMode::Auto, &same, true)
        .await
        .unwrap();
    assert_eq!(c.reason, PrefixReason::Same);
    assert_eq!(c.legacy.logs.as_deref(), Some(&["theirs".to_string()][..]));
    e.kv.txn(wal::meta::kv::Txn {
        success: vec![wal::meta::kv::TxnOp::DeletePrefix {
            prefix: format!("{root}/"),
        }],
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn condition_write_first_decision_wins(e: Env) {
    assert_eq!(e.meta.get_condition_write().await.unwrap(), None);
    assert!(e.meta.init_condition_write(true).await.unwrap());
    assert!(
        e.meta.init_condition_write(false).await.unwrap(),
        "stored decision wins"
    );
    assert_eq!(e.meta.get_condition_write().await.unwrap(), Some(true));
    e.kv.put(
        &e.meta.keys().condition_write(),
        Bytes::from_static(b"false"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(e.meta.get_condition_write().await.unwrap(), Some(false));
    e.meta.store_condition_write_enabled().await.unwrap();
    assert_eq!(e.meta.get_condition_write().await.unwrap(), Some(true));
}

async fn corrupt_values_name_their_key(e: Env) {
    e.meta.create_log("c").await.unwrap();
    let key = e.meta.keys().log("c");
    e.kv.put(&key, Bytes::from_static(b"\xff\xff\xff"), None)
        .await
        .unwrap();
    match e.meta.get_log_meta("c").await {
        Err(MetaError::CorruptValue { key: k, .. }) => assert_eq!(k, key),
        other => panic!("{other:?}"),
    }
    e.kv.put(
        &e.meta.keys().log_id_gen(),
        Bytes::from_static(b"twelve"),
        None,
    )
    .await
    .unwrap();
    match e.meta.create_log("d").await {
        Err(err @ MetaError::CorruptValue { .. }) => {
            assert!(err.to_string().contains("logidgen"), "{err}")
        }
        other => panic!("{other:?}"),
    }
    e.kv.put(
        &e.meta.keys().condition_write(),
        Bytes::from_static(b"yes"),
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        e.meta.get_condition_write().await,
        Err(MetaError::CorruptValue { .. })
    ));
}

fn lock_options(e: &Env) -> LockOptions {
    if e.manual.is_some() {
        LockOptions::default()
    } else {
        // Real time on etcd: short enough for a test, long enough for a shared machine.
        LockOptions {
            ttl: Duration::from_secs(3),
            check_interval: Duration::from_millis(500),
            max_failures: 5,
        }
    }
}

async fn writer_lock_excludes_and_frees_after_the_session_ttl(e: Env) {
    e.meta.create_log("w").await.unwrap();
    let opts = lock_options(&e);
    let held = e.meta.acquire_log_writer_lock("w", opts).await.unwrap();
    assert!(
        held.key()
            .starts_with(&format!("{}/logs/w/lock/", e.prefix))
    );
    assert!(held.is_valid());
    let err = e.meta.acquire_log_writer_lock("w", opts).await.unwrap_err();
    assert!(matches!(err, MetaError::LockHeld { .. }), "{err}");

    // A live holder is never preempted: many TTLs pass while it renews.
    e.pass(opts.ttl * 3, opts.check_interval).await;
    assert!(held.is_valid());
    assert!(matches!(
        e.meta.acquire_log_writer_lock("w", opts).await,
        Err(MetaError::LockHeld { .. })
    ));

    // Release frees it at once.
    held.release().await.unwrap();
    let second = e.meta.acquire_log_writer_lock("w", opts).await.unwrap();

    // A holder that dies (stops renewing without releasing) frees it after the TTL.
    drop(second);
    assert!(matches!(
        e.meta.acquire_log_writer_lock("w", opts).await,
        Err(MetaError::LockHeld { .. })
    ));
    let mut freed = None;
    for _ in 0..40 {
        e.pass(opts.check_interval, opts.check_interval).await;
        if let Ok(lock) = e.meta.acquire_log_writer_lock("w", opts).await {
            freed = Some(lock);
            break;
        }
    }
    let third = freed.expect("the dead holder's lock was released after its session TTL");

    // A holder whose session is gone notices and reports the lock lost.
    let lease = i64::from_str_radix(third.key().rsplit('/').next().unwrap(), 16).unwrap();
    e.kv.lease_revoke(lease).await.unwrap();
    let lost = async {
        while third.is_valid() {
            e.pass(opts.check_interval, opts.check_interval).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), lost)
        .await
        .expect("lock loss noticed");
    assert!(matches!(third.check(), Err(MetaError::LockLost { .. })));
}

async fn readers_stay_registered_while_alive(e: Env) {
    let reg = e.meta.register_reader(9, "r1", 0, 0).await.unwrap();
    reg.update(3, 17).await.unwrap();
    let infos = e.meta.get_reader_temp_infos(9).await.unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!(
        (
            infos[0].recent_read_segment_id,
            infos[0].recent_read_entry_id
        ),
        (3, 17)
    );
    if e.manual.is_some() {
        // Kept alive well past the 60 s lease.
        e.pass(Duration::from_secs(200), Duration::from_secs(5))
            .await;
        assert_eq!(e.meta.get_reader_temp_infos(9).await.unwrap().len(), 1);
        // A reader that vanishes without closing is forgotten after its lease.
        let gone = e.meta.register_reader(9, "r2", 0, 0).await.unwrap();
        drop(gone);
        e.pass(Duration::from_secs(70), Duration::from_secs(5))
            .await;
        let names: Vec<String> = e
            .meta
            .get_reader_temp_infos(9)
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.reader_name)
            .collect();
        assert_eq!(names, ["r1"]);
    }
    reg.close().await.unwrap();
    assert!(e.meta.get_reader_temp_infos(9).await.unwrap().is_empty());
}

async fn status_records(e: Env) {
    let mut cleaning = SegmentCleanupStatus {
        log_id: 4,
        segment_id: 1,
        state: SegmentCleanupState::CleanupInProgress as i32,
        start_time: 1,
        last_update_time: 1,
        ..SegmentCleanupStatus::default()
    };
    assert!(matches!(
        e.meta.update_segment_cleanup_status(&cleaning).await,
        Err(MetaError::KeyNotExists { .. })
    ));
    e.meta
        .create_segment_cleanup_status(&cleaning)
        .await
        .unwrap();
    assert!(matches!(
        e.meta.create_segment_cleanup_status(&cleaning).await,
        Err(MetaError::KeyAlreadyExists { .. })
    ));
    cleaning.state = SegmentCleanupState::CleanupCompleted as i32;
    cleaning
        .quorum_cleanup_status
        .insert("127.0.0.1:59456".into(), true);
    e.meta
        .update_segment_cleanup_status(&cleaning)
        .await
        .unwrap();
    assert_eq!(
        e.meta.get_segment_cleanup_status(4, 1).await.unwrap(),
        Some(cleaning.clone())
    );
    assert_eq!(
        e.meta.list_segment_cleanup_status(4).await.unwrap().len(),
        1
    );
    e.meta.delete_segment_cleanup_status(4, 1).await.unwrap();
    assert_eq!(e.meta.get_segment_cleanup_status(4, 1).await.unwrap(), None);

    let mut notify = SegmentCompactedNotifyStatus {
        log_id: 4,
        segment_id: 2,
        state: SegmentCompactedNotifyState::NotifyInProgress as i32,
        ..SegmentCompactedNotifyStatus::default()
    };
    assert!(
        e.meta
            .create_compacted_notify_status(&notify)
            .await
            .unwrap()
    );
    assert!(
        !e.meta
            .create_compacted_notify_status(&notify)
            .await
            .unwrap()
    );
    let current = e
        .meta
        .get_compacted_notify_status(4, 2)
        .await
        .unwrap()
        .unwrap();
    notify.state = SegmentCompactedNotifyState::NotifyCompleted as i32;
    e.meta
        .update_compacted_notify_status(&notify, current.revision)
        .await
        .unwrap();
    assert!(matches!(
        e.meta
            .update_compacted_notify_status(&notify, current.revision)
            .await,
        Err(MetaError::RevisionInvalid { .. })
    ));
    e.meta.delete_compacted_notify_status(4, 2).await.unwrap();
    assert!(
        e.meta
            .get_compacted_notify_status(4, 2)
            .await
            .unwrap()
            .is_none()
    );
}

async fn log_deletion_parks_then_removes(e: Env) {
    let victim = e.meta.create_log("a").await.unwrap();
    let neighbour = e.meta.create_log("ab").await.unwrap();
    for id in 0..3 {
        e.meta
            .store_segment_metadata("a", &segment(id))
            .await
            .unwrap();
    }
    e.meta
        .store_segment_metadata("ab", &segment(0))
        .await
        .unwrap();
    let reader = e
        .meta
        .register_reader(victim.log_id, "r", 0, 0)
        .await
        .unwrap();
    let lock = e
        .meta
        .acquire_log_writer_lock("a", lock_options(&e))
        .await
        .unwrap();
    e.meta
        .create_segment_cleanup_status(&SegmentCleanupStatus {
            log_id: victim.log_id,
            segment_id: 0,
            ..SegmentCleanupStatus::default()
        })
        .await
        .unwrap();
    e.meta
        .create_compacted_notify_status(&SegmentCompactedNotifyStatus {
            log_id: victim.log_id,
            segment_id: 1,
            ..SegmentCompactedNotifyStatus::default()
        })
        .await
        .unwrap();
    let seg1 = e.raw(&e.meta.keys().segment("a", 1)).await.unwrap();

    e.meta.delete_log_metadata("a", false).await.unwrap();
    drop(lock);
    drop(reader);

    assert!(!e.meta.log_exists("a").await.unwrap());
    assert!(
        e.meta
            .get_all_segment_metadata("a")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        e.meta
            .get_reader_temp_infos(victim.log_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        e.meta
            .list_segment_cleanup_status(victim.log_id)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        e.meta
            .get_compacted_notify_status(victim.log_id, 1)
            .await
            .unwrap()
            .is_none()
    );
    let (locks, _) =
        e.kv.get_prefix(&format!("{}/", e.meta.keys().lock("a")))
            .await
            .unwrap();
    assert!(locks.is_empty());

    // Parked copies, byte for byte.
    let (parked, _) =
        e.kv.get_prefix(&format!("{}/logs-deleted/a-", e.prefix))
            .await
            .unwrap();
    assert_eq!(parked.len(), 4, "log + 3 segments");
    let parked_seg1 = parked
        .iter()
        .find(|kv| kv.key.ends_with("/segments/1"))
        .unwrap();
    assert_eq!(parked_seg1.value, seg1);

    // The neighbour whose name extends the deleted one is untouched.
    assert_eq!(
        e.meta.get_log_meta("ab").await.unwrap().value.log_id,
        neighbour.log_id
    );
    assert_eq!(
        e.meta.get_all_segment_metadata("ab").await.unwrap().len(),
        1
    );

    // Forced deletion parks nothing; deleting what is gone is fine.
    e.meta.delete_log_metadata("ab", true).await.unwrap();
    let (parked_ab, _) =
        e.kv.get_prefix(&format!("{}/logs-deleted/ab-", e.prefix))
            .await
            .unwrap();
    assert!(parked_ab.is_empty());
    e.meta.delete_log_metadata("ab", false).await.unwrap();
    // The id generator is never reset: a new log gets a new id.
    assert_eq!(e.meta.create_log("a").await.unwrap().log_id, 3);
}

macro_rules! suite {
    ($backend:ident, $kind:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn init_is_idempotent_and_refuses_partial_state() {
                super::init_is_idempotent_and_refuses_partial_state(Env::new($kind).await).await;
            }

            #[tokio::test]
            async fn logs_are_created_listed_and_guarded() {
                super::logs_are_created_listed_and_guarded(Env::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn racing_creators_get_dense_distinct_ids() {
                super::racing_creators_get_dense_distinct_ids(Env::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn segments_are_guarded() {
                super::segments_are_guarded(Env::new($kind).await).await;
            }

            #[tokio::test]
            async fn values_are_the_go_encodings() {
                super::values_are_the_go_encodings(Env::new($kind).await).await;
            }

            #[tokio::test]
            async fn prefix_rule_never_hides_logs() {
                super::prefix_rule_never_hides_logs(Env::new($kind).await).await;
            }

            #[tokio::test]
            async fn condition_write_first_decision_wins() {
                super::condition_write_first_decision_wins(Env::new($kind).await).await;
            }

            #[tokio::test]
            async fn corrupt_values_name_their_key() {
                super::corrupt_values_name_their_key(Env::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn writer_lock_excludes_and_frees_after_the_session_ttl() {
                super::writer_lock_excludes_and_frees_after_the_session_ttl(Env::new($kind).await)
                    .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn readers_stay_registered_while_alive() {
                super::readers_stay_registered_while_alive(Env::new($kind).await).await;
            }

            #[tokio::test]
            async fn status_records() {
                super::status_records(Env::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn log_deletion_parks_then_removes() {
                super::log_deletion_parks_then_removes(Env::new($kind).await).await;
            }
        }
    };
}

suite!(embedded, Backend::Embedded);
suite!(etcd, Backend::Etcd);

#[tokio::test]
async fn an_unreachable_etcd_names_the_endpoint() {
    let cfg = EtcdConfig {
        endpoints: vec!["127.0.0.1:1".into()],
        request_timeout: 2_000,
        ..EtcdConfig::default()
    };
    let err = EtcdKv::connect(&cfg).await.unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    let meta_err = MetaError::from(err);
    assert!(meta_err.is_retriable());
    assert_eq!(meta_err.code(), 3001);
}

/// The real prefixes on a store of this test's own: a fresh store opens under `woodpecker`, and
/// keys under both prefixes stop `auto` from opening.
#[tokio::test]
async fn a_fresh_store_opens_under_the_published_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let clock: ClockRef = Arc::new(ManualClock::new(START_MILLIS));
    let kv: Arc<dyn Kv> = Arc::new(EmbeddedKv::open(dir.path(), clock.clone()).await.unwrap());
    let open = |mode| {
        let kv = kv.clone();
        let clock = clock.clone();
        async move { KvMetadata::open(kv, "by-dev", "woodpecker", mode, clock).await }
    };
    let m = open(PrefixMode::Auto).await.unwrap();
    assert_eq!(m.prefix(), "woodpecker");
    let choice = m.prefix_choice().unwrap();
    assert_eq!(choice.reason, PrefixReason::EmptyStore);
    assert_eq!(choice.configured.prefix, "by-dev/woodpecker");
    m.init_if_necessary().await.unwrap();
    m.create_log("a").await.unwrap();
    // Reopened: the same prefix, by its keys this time.
    let m = open(PrefixMode::Auto).await.unwrap();
    assert_eq!(m.prefix(), "woodpecker");
    assert_eq!(m.prefix_choice().unwrap().reason, PrefixReason::OnlyLegacy);
    assert_eq!(m.list_logs().await.unwrap(), ["a"]);
    // Someone writes the configured prefix too.
    let c = open(PrefixMode::Configured).await.unwrap();
    assert_eq!(c.prefix(), "by-dev/woodpecker");
    c.init_if_necessary().await.unwrap();
    c.create_log("b").await.unwrap();
    assert!(matches!(
        open(PrefixMode::Auto).await.unwrap_err(),
        MetaError::PrefixConflict { .. }
    ));
    let l = open(PrefixMode::Legacy).await.unwrap();
    assert_eq!(l.list_logs().await.unwrap(), ["a"]);
    let c = open(PrefixMode::Configured).await.unwrap();
    assert_eq!(c.list_logs().await.unwrap(), ["b"]);
}
