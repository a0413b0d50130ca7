//! One suite for the key-value contract (`wal::meta::kv`), run unchanged against the embedded
//! store and a real etcd (the one `scripts/test` starts; `WOODPECKER_TEST_ETCD_ENDPOINT`).
//!
//! Every case works under its own random prefix, so cases share one etcd.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wal::clock::ManualClock;
use wal::meta::embedded::EmbeddedKv;
use wal::meta::etcd::{EtcdConfig, EtcdKv};
use wal::meta::kv::{Compare, CompareOp, Kv, KvError, Txn, TxnOp, TxnOpResult};

/// A store under test, with a way to let leases run out.
struct Store {
    kv: Arc<dyn Kv>,
    /// `Some` for the embedded store: time moves when the test says so.
    clock: Option<ManualClock>,
    prefix: String,
    _dir: Option<tempfile::TempDir>,
}

impl Store {
    fn key(&self, k: &str) -> String {
        format!("{}/{k}", self.prefix)
    }

    /// Lets `by` pass: instantly on the embedded store, for real on etcd.
    async fn pass(&self, by: Duration) {
        match &self.clock {
            Some(c) => {
                c.advance(by);
                // Let the expiry task observe the new time.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None => tokio::time::sleep(by).await,
        }
    }
}

fn etcd_endpoint() -> String {
    std::env::var("WOODPECKER_TEST_ETCD_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "WOODPECKER_TEST_ETCD_ENDPOINT is not set: this test needs the etcd that \
             `scripts/test` starts (or run `eval \"$(scripts/services start)\"` first)"
        )
    })
}

async fn embedded() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let kv = EmbeddedKv::open(dir.path(), Arc::new(clock.clone()))
        .await
        .unwrap();
    Store {
        kv: Arc::new(kv),
        clock: Some(clock),
        prefix: "t".into(),
        _dir: Some(dir),
    }
}

async fn etcd() -> Store {
    let cfg = EtcdConfig {
        endpoints: vec![etcd_endpoint()],
        ..EtcdConfig::default()
    };
    let kv = EtcdKv::connect(&cfg).await.unwrap();
    Store {
        kv: Arc::new(kv),
        clock: None,
        prefix: format!("kvtest-{}", uuid::Uuid::new_v4().simple()),
        _dir: None,
    }
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn revisions_and_versions(s: Store) {
    let k = s.key("a");
    assert_eq!(s.kv.get(&k).await.unwrap(), None);
    let r1 = s.kv.put(&k, b("1"), None).await.unwrap();
    let kv = s.kv.get(&k).await.unwrap().unwrap();
    assert_eq!(kv.value, b("1"));
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r1, 1)
    );
    assert_eq!(kv.lease, 0);

    let r2 = s.kv.put(&k, b("2"), None).await.unwrap();
    assert!(r2 > r1);
    let kv = s.kv.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (kv.create_revision, kv.mod_revision, kv.version),
        (r1, r2, 2)
    );

    // A write elsewhere moves the store revision, not this key's.
    let r3 = s.kv.put(&s.key("b"), b("x"), None).await.unwrap();
    assert!(r3 > r2);
    assert_eq!(s.kv.get(&k).await.unwrap().unwrap().mod_revision, r2);

    // Delete, then create again: a new life with a new create revision and version 1.
    assert_eq!(s.kv.delete(&k).await.unwrap(), 1);
    assert_eq!(s.kv.get(&k).await.unwrap(), None);
    assert_eq!(
        s.kv.delete(&k).await.unwrap(),
        0,
        "deleting a missing key deletes nothing"
    );
    let r4 = s.kv.put(&k, b("3"), None).await.unwrap();
    let kv = s.kv.get(&k).await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.version), (r4, 1));
    assert!(r4 > r3);
}

async fn prefixes_are_ordered_and_bounded(s: Store) {
    for k in [
        "logs/b",
        "logs/a",
        "logs/a/segments/10",
        "logs/a/segments/2",
        "logsx",
        "log",
    ] {
        s.kv.put(&s.key(k), b(k), None).await.unwrap();
    }
    let (kvs, rev) = s.kv.get_prefix(&s.key("logs/")).await.unwrap();
    let keys: Vec<String> = kvs
        .iter()
        .map(|kv| {
            kv.key
                .trim_start_matches(&format!("{}/", s.prefix))
                .to_string()
        })
        .collect();
    assert_eq!(
        keys,
        [
            "logs/a",
            "logs/a/segments/10",
            "logs/a/segments/2",
            "logs/b"
        ],
        "byte order, prefix only"
    );
    assert!(rev >= kvs.iter().map(|kv| kv.mod_revision).max().unwrap());
    let (none, _) = s.kv.get_prefix(&s.key("nothing/")).await.unwrap();
    assert!(none.is_empty());
    // `has_prefix` agrees with `get_prefix`, on a prefix that is also a key's whole name too.
    assert!(s.kv.has_prefix(&s.key("logs/")).await.unwrap());
    assert!(s.kv.has_prefix(&s.key("logs/a/segments/1")).await.unwrap());
    assert!(s.kv.has_prefix(&s.key("log")).await.unwrap());
    assert!(!s.kv.has_prefix(&s.key("nothing/")).await.unwrap());
    assert!(!s.kv.has_prefix(&s.key("logs/c")).await.unwrap());
}

async fn compares(s: Store) {
    let k = s.key("k");
    let missing = s.key("missing");
    let r = s.kv.put(&k, b("v"), None).await.unwrap();
    let kv = s.kv.get(&k).await.unwrap().unwrap();
    let cases: Vec<(Compare, bool)> = vec![
        (Compare::value(&k, CompareOp::Equal, b("v")), true),
        (Compare::value(&k, CompareOp::NotEqual, b("v")), false),
        (Compare::value(&k, CompareOp::Greater, b("u")), true),
        (Compare::value(&k, CompareOp::Less, b("u")), false),
        (Compare::value(&missing, CompareOp::Equal, b("")), false),
        (Compare::value(&missing, CompareOp::NotEqual, b("v")), false),
        (Compare::create_revision(&k, CompareOp::Equal, r), true),
        (Compare::create_revision(&k, CompareOp::Equal, 0), false),
        (
            Compare::create_revision(&missing, CompareOp::Equal, 0),
            true,
        ),
        (Compare::create_revision(&k, CompareOp::Greater, 0), true),
        (
            Compare::mod_revision(&k, CompareOp::Equal, kv.mod_revision),
            true,
        ),
        (
            Compare::mod_revision(&k, CompareOp::Less, kv.mod_revision),
            false,
        ),
        (Compare::mod_revision(&missing, CompareOp::Equal, 0), true),
        (Compare::version(&k, CompareOp::Equal, 1), true),
        (Compare::version(&missing, CompareOp::Equal, 0), true),
        (Compare::version(&k, CompareOp::NotEqual, 1), false),
    ];
    for (cmp, expected) in cases {
        let out =
            s.kv.txn(Txn {
                compares: vec![cmp.clone()],
                success: vec![],
                failure: vec![],
            })
            .await
            .unwrap();
        assert_eq!(out.succeeded, expected, "{cmp:?}");
    }
}

async fn transactions(s: Store) {
    let idgen = s.key("idgen");
    let log = s.key("logs/a");
    s.kv.put(&idgen, b("0"), None).await.unwrap();

    // The CreateLog shape: if the generator still holds what we read, claim the next id.
    let txn = Txn {
        compares: vec![Compare::value(&idgen, CompareOp::Equal, b("0"))],
        success: vec![
            TxnOp::put(&log, b("meta")),
            TxnOp::put(&idgen, b("1")),
            TxnOp::Get { key: log.clone() },
        ],
        failure: vec![TxnOp::Get { key: idgen.clone() }],
    };
    let out = s.kv.txn(txn.clone()).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(out.results.len(), 3);
    assert_eq!(out.results[0], TxnOpResult::Put);
    match &out.results[2] {
        TxnOpResult::Get(kvs) => {
            assert_eq!(kvs.len(), 1, "a get sees the puts before it");
            assert_eq!(kvs[0].value, b("meta"));
            assert_eq!(kvs[0].mod_revision, out.revision);
        }
        other => panic!("{other:?}"),
    }
    // Both puts share the transaction's revision.
    let g = s.kv.get(&idgen).await.unwrap().unwrap();
    let l = s.kv.get(&log).await.unwrap().unwrap();
    assert_eq!(g.mod_revision, out.revision);
    assert_eq!(l.mod_revision, out.revision);

    // The same transaction again loses, applies the failure branch, and changes nothing.
    let again = s.kv.txn(txn).await.unwrap();
    assert!(!again.succeeded);
    // A read-only branch changes nothing (other writers may move etcd's global revision).
    assert!(again.revision >= out.revision);
    assert_eq!(
        s.kv.get(&idgen).await.unwrap().unwrap().mod_revision,
        out.revision
    );
    match &again.results[..] {
        [TxnOpResult::Get(kvs)] => assert_eq!(kvs[0].value, b("1")),
        other => panic!("{other:?}"),
    }

    // Delete a prefix (the second phase of log deletion), guarded by a mod revision.
    s.kv.put(&s.key("logs/a/segments/0"), b("s0"), None)
        .await
        .unwrap();
    s.kv.put(&s.key("logs/a/segments/1"), b("s1"), None)
        .await
        .unwrap();
    s.kv.put(&s.key("logs/ab"), b("other"), None).await.unwrap();
    let rev = s.kv.get(&log).await.unwrap().unwrap().mod_revision;
    let out =
        s.kv.txn(Txn {
            compares: vec![Compare::mod_revision(&log, CompareOp::Equal, rev)],
            success: vec![
                TxnOp::Delete { key: log.clone() },
                TxnOp::DeletePrefix {
                    prefix: s.key("logs/a/segments/"),
                },
            ],
            failure: vec![],
        })
        .await
        .unwrap();
    assert!(out.succeeded);
    assert_eq!(
        out.results,
        vec![TxnOpResult::Delete(1), TxnOpResult::Delete(2)]
    );
    let (left, _) = s.kv.get_prefix(&s.key("logs/")).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].key.ends_with("logs/ab"));
}

async fn racing_compare_and_swap_has_one_winner_per_round(s: Store) {
    let k = s.key("counter");
    s.kv.put(&k, b("0"), None).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let kv = s.kv.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            let mut wins = 0;
            for _ in 0..10 {
                loop {
                    let cur = kv.get(&k).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    let out = kv
                        .txn(Txn {
                            compares: vec![Compare::mod_revision(
                                &k,
                                CompareOp::Equal,
                                cur.mod_revision,
                            )],
                            success: vec![TxnOp::put(&k, Bytes::from((n + 1).to_string()))],
                            failure: vec![],
                        })
                        .await
                        .unwrap();
                    if out.succeeded {
                        wins += 1;
                        break;
                    }
                }
            }
            (i, wins)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap().1;
    }
    assert_eq!(total, 80);
    let v = s.kv.get(&k).await.unwrap().unwrap();
    assert_eq!(v.value, b("80"), "no lost update");
    assert_eq!(v.version, 81);
}

async fn leases(s: Store) {
    let ttl = Duration::from_secs(2);
    let lease = s.kv.lease_grant(ttl).await.unwrap();
    assert_ne!(lease, 0);
    let k = s.key("reader");
    s.kv.put(&k, b("pos"), Some(lease)).await.unwrap();
    assert_eq!(s.kv.get(&k).await.unwrap().unwrap().lease, lease);

    // Keep-alives hold the key past its TTL.
    for _ in 0..3 {
        s.pass(Duration::from_millis(1200)).await;
        let renewed = s.kv.lease_keep_alive(lease).await.unwrap();
        assert!(renewed >= Duration::from_secs(1), "{renewed:?}");
    }
    assert!(s.kv.get(&k).await.unwrap().is_some(), "kept alive");
    // A second lease has its own id and its own keys.
    let other = s.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    assert_ne!(other, lease);
    let k2 = s.key("other-lease");
    s.kv.put(&k2, b("x"), Some(other)).await.unwrap();

    // Without keep-alives the lease runs out and takes its keys.
    s.pass(Duration::from_secs(4)).await;
    let mut gone = false;
    for _ in 0..30 {
        if s.kv.get(&k).await.unwrap().is_none() {
            gone = true;
            break;
        }
        s.pass(Duration::from_millis(200)).await;
    }
    assert!(gone, "expired lease took its key");
    assert!(
        s.kv.get(&k2).await.unwrap().is_some(),
        "the other lease's key stays"
    );
    s.kv.lease_revoke(other).await.unwrap();
    assert!(matches!(
        s.kv.lease_keep_alive(lease).await,
        Err(KvError::LeaseNotFound { .. })
    ));

    // Put with an unknown lease fails and changes nothing.
    let k3 = s.key("orphan");
    assert!(matches!(
        s.kv.put(&k3, b("x"), Some(lease)).await,
        Err(KvError::LeaseNotFound { .. })
    ));
    assert_eq!(s.kv.get(&k3).await.unwrap(), None);

    // Revoke deletes at once; revoking again is fine.
    let l3 = s.kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    s.kv.put(&k3, b("x"), Some(l3)).await.unwrap();
    s.kv.lease_revoke(l3).await.unwrap();
    assert_eq!(s.kv.get(&k3).await.unwrap(), None);
    s.kv.lease_revoke(l3).await.unwrap();
}

macro_rules! suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test]
            async fn revisions_and_versions() {
                super::revisions_and_versions($make.await).await;
            }

            #[tokio::test]
            async fn prefixes_are_ordered_and_bounded() {
                super::prefixes_are_ordered_and_bounded($make.await).await;
            }

            #[tokio::test]
            async fn compares() {
                super::compares($make.await).await;
            }

            #[tokio::test]
            async fn transactions() {
                super::transactions($make.await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn racing_compare_and_swap_has_one_winner_per_round() {
                super::racing_compare_and_swap_has_one_winner_per_round($make.await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn leases() {
                super::leases($make.await).await;
            }
        }
    };
}

suite!(embedded_store, embedded());
suite!(etcd_store, etcd());
