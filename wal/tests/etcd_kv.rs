//! `EtcdKv` against a real etcd: the one `scripts/test` starts (`WOODPECKER_TEST_ETCD_ENDPOINT`).
//!
//! Every test works under its own random key prefix, so tests share one etcd and may run in
//! parallel. Remember that etcd's store revision is global: other tests move it at any time, so
//! revisions are compared with `<`/`>` or with a key's own revisions, never with a fixed number.
//! The contract cases common to every store live in `kv_conformance.rs`; these are the ones
//! that are about etcd and the client: connecting, timeouts, etcd's limits and error mapping.

// Real processes, sockets and services answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use wal::meta::etcd::{EtcdConfig, EtcdKv};
use wal::meta::kv::{Compare, CompareOp, Kv, KvError, Txn, TxnOp, TxnOpResult};

fn etcd_endpoint() -> String {
    std::env::var("WOODPECKER_TEST_ETCD_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "WOODPECKER_TEST_ETCD_ENDPOINT is not set: these tests need a running etcd. Run them \
             through `scripts/test`, or start the test services first with \
             `eval \"$(scripts/services start)\"` (and `scripts/services stop` afterwards)"
        )
    })
}

fn config(endpoint: impl Into<String>, timeout_ms: u64) -> EtcdConfig {
    EtcdConfig {
        endpoints: vec![endpoint.into()],
        request_timeout: timeout_ms,
        ..EtcdConfig::default()
    }
}

/// A connected store and a fresh key prefix.
async fn store() -> (EtcdKv, String) {
    let kv = EtcdKv::connect(&config(etcd_endpoint(), 10_000))
        .await
        .expect("connect to the test etcd");
    let prefix = format!("etcd-kv-test/{}/", uuid::Uuid::new_v4().simple());
    (kv, prefix)
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// A port on 127.0.0.1 that nothing listens on.
async fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    port
}

#[tokio::test]
async fn put_get_delete_carry_etcd_revisions() {
    let (kv, p) = store().await;
    let k = format!("{p}a");
    assert_eq!(kv.get(&k).await.unwrap(), None);

    let r1 = kv.put(&k, b("one"), None).await.unwrap();
    let got = kv.get(&k).await.unwrap().unwrap();
    assert_eq!(got.key, k);
    assert_eq!(got.value, b("one"));
    assert_eq!(
        (
            got.create_revision,
            got.mod_revision,
            got.version,
            got.lease
        ),
        (r1, r1, 1, 0)
    );

    let r2 = kv.put(&k, b("two"), None).await.unwrap();
    assert!(r2 > r1);
    let got = kv.get(&k).await.unwrap().unwrap();
    assert_eq!(
        (got.create_revision, got.mod_revision, got.version),
        (r1, r2, 2)
    );

    // Binary values survive unchanged.
    let raw = Bytes::from_static(&[0, 159, 146, 150, 255]);
    kv.put(&format!("{p}bin"), raw.clone(), None).await.unwrap();
    assert_eq!(
        kv.get(&format!("{p}bin")).await.unwrap().unwrap().value,
        raw
    );

    let (all, rev) = kv.get_prefix(&p).await.unwrap();
    assert_eq!(all.len(), 2);
    assert!(
        rev >= r2,
        "a read's revision is the store's, at least the last write's"
    );

    assert_eq!(kv.delete(&k).await.unwrap(), 1);
    assert_eq!(kv.get(&k).await.unwrap(), None);
    assert_eq!(kv.delete(&k).await.unwrap(), 0);
    // A new life: new create revision, version starts again at 1.
    let r3 = kv.put(&k, b("three"), None).await.unwrap();
    let got = kv.get(&k).await.unwrap().unwrap();
    assert_eq!((got.create_revision, got.version), (r3, 1));
}

#[tokio::test]
async fn a_prefix_read_is_in_byte_order_and_stops_at_the_prefix() {
    let (kv, p) = store().await;
    for k in [
        "logs/b",
        "logs/a/segments/10",
        "logs/a",
        "logs/a/segments/2",
        "logs0",
        "log",
    ] {
        kv.put(&format!("{p}{k}"), b(k), None).await.unwrap();
    }
    let (kvs, rev) = kv.get_prefix(&format!("{p}logs/")).await.unwrap();
    let keys: Vec<&str> = kvs.iter().map(|kv| &kv.key[p.len()..]).collect();
    assert_eq!(
        keys,
        [
            "logs/a",
            "logs/a/segments/10",
            "logs/a/segments/2",
            "logs/b"
        ]
    );
    assert!(rev >= kvs.iter().map(|kv| kv.mod_revision).max().unwrap());
    assert!(
        kv.get_prefix(&format!("{p}none/"))
            .await
            .unwrap()
            .0
            .is_empty()
    );
}

#[tokio::test]
async fn every_compare_kind_follows_etcd() {
    let (kv, p) = store().await;
    let k = format!("{p}k");
    let missing = format!("{p}missing");
    let created = kv.put(&k, b("m"), None).await.unwrap();
    let modified = kv.put(&k, b("m"), None).await.unwrap();
    use CompareOp::*;
    let cases = [
        (Compare::value(&k, Equal, b("m")), true),
        (Compare::value(&k, NotEqual, b("m")), false),
        (Compare::value(&k, Greater, b("l")), true),
        (Compare::value(&k, Less, b("n")), true),
        (Compare::value(&k, Less, b("m")), false),
        // A value comparison on a missing key is false, whatever the operator.
        (Compare::value(&missing, Equal, b("")), false),
        (Compare::value(&missing, NotEqual, b("x")), false),
        (Compare::value(&missing, Greater, b("")), false),
        (Compare::value(&missing, Less, b("z")), false),
        (Compare::create_revision(&k, Equal, created), true),
        (Compare::create_revision(&k, Greater, 0), true),
        (Compare::create_revision(&missing, Equal, 0), true),
        (Compare::create_revision(&missing, Less, 1), true),
        (Compare::mod_revision(&k, Equal, modified), true),
        (Compare::mod_revision(&k, Equal, created), false),
        (Compare::mod_revision(&k, Greater, created), true),
        (Compare::mod_revision(&missing, Equal, 0), true),
        (Compare::version(&k, Equal, 2), true),
        (Compare::version(&k, NotEqual, 2), false),
        (Compare::version(&k, Less, 3), true),
        (Compare::version(&missing, Equal, 0), true),
    ];
    for (compare, expected) in cases {
        let out = kv
            .txn(Txn {
                compares: vec![compare.clone()],
                ..Txn::default()
            })
            .await
            .unwrap();
        assert_eq!(out.succeeded, expected, "{compare:?}");
        assert!(out.results.is_empty());
    }
    // All compares must hold.
    let out = kv
        .txn(Txn {
            compares: vec![
                Compare::version(&k, Equal, 2),
                Compare::create_revision(&missing, Equal, 1),
            ],
            ..Txn::default()
        })
        .await
        .unwrap();
    assert!(!out.succeeded);
}

#[tokio::test]
async fn a_transaction_applies_one_branch_and_reports_each_result_in_order() {
    let (kv, p) = store().await;
    let key = |s: &str| format!("{p}{s}");
    for k in ["seg/0", "seg/1", "seg/2", "segx", "old"] {
        kv.put(&key(k), b(k), None).await.unwrap();
    }
    let lease = kv.lease_grant(Duration::from_secs(30)).await.unwrap();
    let guard = Compare::create_revision(key("log"), CompareOp::Equal, 0);
    let txn = Txn {
        compares: vec![guard],
        success: vec![
            TxnOp::put(key("log"), b("meta")),
            TxnOp::Put {
                key: key("reader"),
                value: b("r"),
                lease: Some(lease),
            },
            TxnOp::Get { key: key("log") },
            TxnOp::GetPrefix {
                prefix: key("seg/"),
            },
            TxnOp::Delete { key: key("old") },
            TxnOp::Delete {
                key: key("nothing"),
            },
            TxnOp::DeletePrefix {
                prefix: key("seg/"),
            },
            TxnOp::GetPrefix { prefix: key("seg") },
        ],
        failure: vec![TxnOp::Get { key: key("log") }],
    };
    let out = kv.txn(txn.clone()).await.unwrap();
    assert!(out.succeeded);
    assert_eq!(out.results.len(), 8);
    assert_eq!(out.results[0], TxnOpResult::Put);
    assert_eq!(out.results[1], TxnOpResult::Put);
    match &out.results[2] {
        TxnOpResult::Get(kvs) => {
            assert_eq!(kvs.len(), 1, "reads see the writes before them");
            assert_eq!(kvs[0].value, b("meta"));
            assert_eq!(kvs[0].mod_revision, out.revision);
        }
        other => panic!("{other:?}"),
    }
    match &out.results[3] {
        TxnOpResult::Get(kvs) => {
            let keys: Vec<&str> = kvs.iter().map(|kv| &kv.key[p.len()..]).collect();
            assert_eq!(keys, ["seg/0", "seg/1", "seg/2"]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(out.results[4], TxnOpResult::Delete(1));
    assert_eq!(out.results[5], TxnOpResult::Delete(0));
    assert_eq!(out.results[6], TxnOpResult::Delete(3));
    match &out.results[7] {
        TxnOpResult::Get(kvs) => {
            assert_eq!(kvs.len(), 1);
            assert!(
                kvs[0].key.ends_with("segx"),
                "DeletePrefix stops at its prefix"
            );
        }
        other => panic!("{other:?}"),
    }
    // Everything the transaction wrote carries its revision.
    let log = kv.get(&key("log")).await.unwrap().unwrap();
    let reader = kv.get(&key("reader")).await.unwrap().unwrap();
    assert_eq!(log.mod_revision, out.revision);
    assert_eq!(reader.mod_revision, out.revision);
    assert_eq!(reader.lease, lease);

    // Again: the guard fails and only the failure branch runs.
    let again = kv.txn(txn).await.unwrap();
    assert!(!again.succeeded);
    assert!(again.revision >= out.revision);
    match &again.results[..] {
        [TxnOpResult::Get(kvs)] => assert_eq!(kvs[0].mod_revision, out.revision),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        kv.get(&key("log")).await.unwrap().unwrap().mod_revision,
        out.revision
    );
    kv.lease_revoke(lease).await.unwrap();
}

#[tokio::test]
async fn etcds_operation_limit_is_a_rejection() {
    let (kv, p) = store().await;
    // etcd's --max-txn-ops defaults to 128 (the Go code batches at 120 for this reason).
    let ops: Vec<TxnOp> = (0..129)
        .map(|i| TxnOp::put(format!("{p}k{i}"), b("v")))
        .collect();
    match kv
        .txn(Txn {
            success: ops,
            ..Txn::default()
        })
        .await
    {
        Err(KvError::Rejected { endpoint, detail }) => {
            assert_eq!(endpoint, etcd_endpoint());
            assert!(detail.contains("too many operations"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        kv.get_prefix(&p).await.unwrap().0.is_empty(),
        "nothing applied"
    );

    // Two puts of one key in one transaction are refused too.
    let dup = kv
        .txn(Txn {
            success: vec![
                TxnOp::put(format!("{p}d"), b("1")),
                TxnOp::put(format!("{p}d"), b("2")),
            ],
            ..Txn::default()
        })
        .await;
    assert!(matches!(dup, Err(KvError::Rejected { .. })), "{dup:?}");
}

#[tokio::test]
async fn a_prefix_read_larger_than_grpcs_default_message_limit_succeeds() {
    let (kv, p) = store().await;
    // Six values of 1 MiB: a 6 MiB answer, over the 4 MiB a gRPC client accepts by default.
    let value = Bytes::from(vec![b'x'; 1 << 20]);
    for i in 0..6 {
        kv.put(&format!("{p}big/{i}"), value.clone(), None)
            .await
            .unwrap();
    }
    let (kvs, _) = kv.get_prefix(&format!("{p}big/")).await.unwrap();
    assert_eq!(kvs.len(), 6);
    assert!(kvs.iter().all(|kv| kv.value.len() == 1 << 20));
    let out = kv
        .txn(Txn {
            success: vec![TxnOp::GetPrefix {
                prefix: format!("{p}big/"),
            }],
            ..Txn::default()
        })
        .await
        .unwrap();
    match &out.results[..] {
        [TxnOpResult::Get(kvs)] => assert_eq!(kvs.len(), 6),
        other => panic!("{other:?}"),
    }
    // Keep the test etcd small.
    let deleted = kv
        .txn(Txn {
            success: vec![TxnOp::DeletePrefix { prefix: p.clone() }],
            ..Txn::default()
        })
        .await
        .unwrap();
    assert_eq!(deleted.results, vec![TxnOpResult::Delete(6)]);
}

#[tokio::test]
async fn a_lease_is_kept_alive_then_expires_with_its_keys() {
    let (kv, p) = store().await;
    let lease = kv.lease_grant(Duration::from_secs(2)).await.unwrap();
    assert_ne!(lease, 0);
    let k = format!("{p}reader");
    kv.put(&k, b("pos"), Some(lease)).await.unwrap();
    assert_eq!(kv.get(&k).await.unwrap().unwrap().lease, lease);

    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            kv.lease_keep_alive(lease).await.unwrap(),
            Duration::from_secs(2),
            "etcd renews to the granted TTL"
        );
    }
    assert!(
        kv.get(&k).await.unwrap().is_some(),
        "3.6 s on a 2 s lease, kept alive"
    );

    // No more keep-alives: etcd checks expiry every 500 ms and deletes through raft. The wait
    // is bounded only as a guard against hanging, not as a timing claim.
    tokio::time::timeout(Duration::from_secs(60), async {
        while kv.get(&k).await.unwrap().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the key outlived its 2 s lease");
    match kv.lease_keep_alive(lease).await {
        Err(KvError::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
        other => panic!("{other:?}"),
    }
    match kv.put(&k, b("again"), Some(lease)).await {
        Err(KvError::LeaseNotFound { lease: l }) => assert_eq!(l, lease),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn lease_ttls_are_whole_seconds_and_at_least_etcds_minimum() {
    let (kv, _) = store().await;
    // 2.5 s rounds up to 3 s.
    let lease = kv.lease_grant(Duration::from_millis(2500)).await.unwrap();
    assert_eq!(
        kv.lease_keep_alive(lease).await.unwrap(),
        Duration::from_secs(3)
    );
    kv.lease_revoke(lease).await.unwrap();
    // etcd raises TTLs below its minimum (1.5 election timeouts, rounded up: 2 s with the
    // default 1 s election timeout) to that minimum.
    let short = kv.lease_grant(Duration::from_millis(10)).await.unwrap();
    let ttl = kv.lease_keep_alive(short).await.unwrap();
    assert!(ttl >= Duration::from_secs(1), "{ttl:?}");
    assert_eq!(
        ttl,
        Duration::from_secs(2),
        "etcd 3.4's minimum TTL with default timings"
    );
    kv.lease_revoke(short).await.unwrap();
}

#[tokio::test]
async fn revoking_deletes_the_keys_at_once_and_a_missing_lease_is_no_error() {
    let (kv, p) = store().await;
    let lease = kv.lease_grant(Duration::from_secs(60)).await.unwrap();
    for k in ["a", "b"] {
        kv.put(&format!("{p}{k}"), b(k), Some(lease)).await.unwrap();
    }
    kv.put(&format!("{p}c"), b("c"), None).await.unwrap();
    kv.lease_revoke(lease).await.unwrap();
    let (left, _) = kv.get_prefix(&p).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(left[0].key.ends_with('c'));
    kv.lease_revoke(lease).await.unwrap();
    kv.lease_revoke(0x0123_4567_89ab_cdef).await.unwrap();
    assert!(matches!(
        kv.lease_keep_alive(lease).await,
        Err(KvError::LeaseNotFound { .. })
    ));
}

#[tokio::test]
async fn an_unknown_lease_is_lease_not_found_and_writes_nothing() {
    let (kv, p) = store().await;
    let unknown = 0x0fed_cba9_8765_4321;
    let k = format!("{p}k");
    match kv.put(&k, b("v"), Some(unknown)).await {
        Err(KvError::LeaseNotFound { lease }) => assert_eq!(lease, unknown),
        other => panic!("{other:?}"),
    }
    match kv
        .txn(Txn {
            success: vec![
                TxnOp::put(&k, b("v")),
                TxnOp::Put {
                    key: format!("{p}other"),
                    value: b("v"),
                    lease: Some(unknown),
                },
            ],
            ..Txn::default()
        })
        .await
    {
        Err(KvError::LeaseNotFound { lease }) => assert_eq!(lease, unknown),
        other => panic!("{other:?}"),
    }
    assert!(
        kv.get_prefix(&p).await.unwrap().0.is_empty(),
        "all or nothing"
    );
    assert!(matches!(
        kv.lease_keep_alive(unknown).await,
        Err(KvError::LeaseNotFound { lease }) if lease == unknown
    ));
}

#[tokio::test]
async fn an_unreachable_endpoint_is_unavailable_at_connect_and_names_it() {
    let port = closed_port().await;
    // The outer timeout only guards against a hang; the call is bounded by requestTimeout.
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        EtcdKv::connect(&config(format!("127.0.0.1:{port}"), 2_000)),
    )
    .await
    .expect("connect returned")
    .unwrap_err();
    match &err {
        KvError::Unavailable { endpoint, .. } => {
            assert_eq!(endpoint, &format!("http://127.0.0.1:{port}"))
        }
        other => panic!("{other:?}"),
    }
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

/// A TCP listener that accepts connections and never answers.
async fn silent_server() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (port, task)
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_after_the_request_timeout() {
    let (port, task) = silent_server().await;
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        EtcdKv::connect(&config(format!("http://127.0.0.1:{port}"), 1_000)),
    )
    .await
    .expect("connect returned")
    .unwrap_err();
    match &err {
        KvError::Unavailable { endpoint, detail } => {
            assert_eq!(endpoint, &format!("http://127.0.0.1:{port}"));
            assert!(detail.contains("etcd.requestTimeout"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    task.abort();
}

/// Forwards TCP to `target` until `freeze` turns true; from then on it keeps every connection
/// open and forwards nothing, like a peer that stopped answering.
async fn freezable_proxy(target: String, freeze: watch::Receiver<bool>) -> u16 {
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        freeze: watch::Receiver<bool>,
    ) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if *freeze.borrow() {
                // Hold both halves: the connection stays open and silent.
                std::future::pending::<()>().await;
            }
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&target).await else {
                continue;
            };
            let _ = (client.set_nodelay(true), server.set_nodelay(true));
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, freeze.clone()));
            tokio::spawn(pump(sr, cw, freeze.clone()));
        }
    });
    port
}

#[tokio::test]
async fn every_call_is_bounded_by_the_request_timeout() {
    let target = etcd_endpoint().trim_start_matches("http://").to_string();
    let (freeze_tx, freeze) = watch::channel(false);
    let port = freezable_proxy(target, freeze).await;
    let kv = EtcdKv::connect(&config(format!("127.0.0.1:{port}"), 1_000))
        .await
        .unwrap();
    let p = format!("etcd-kv-test/{}/", uuid::Uuid::new_v4().simple());
    let k = format!("{p}k");
    kv.put(&k, b("v"), None).await.unwrap();
    let lease = kv.lease_grant(Duration::from_secs(30)).await.unwrap();

    freeze_tx.send_replace(true);
    let expect_unavailable = |what: &str, r: Result<(), KvError>| match r {
        Err(KvError::Unavailable { endpoint, detail }) => {
            assert_eq!(endpoint, format!("http://127.0.0.1:{port}"), "{what}");
            assert!(detail.contains("1000 ms"), "{what}: {detail}");
        }
        other => panic!("{what}: {other:?}"),
    };
    expect_unavailable("get", kv.get(&k).await.map(drop));
    expect_unavailable("put", kv.put(&k, b("w"), None).await.map(drop));
    expect_unavailable(
        "txn",
        kv.txn(Txn {
            success: vec![TxnOp::Get { key: k.clone() }],
            ..Txn::default()
        })
        .await
        .map(drop),
    );
    expect_unavailable("keep-alive", kv.lease_keep_alive(lease).await.map(drop));

    // The real etcd still has the old value: the put above never got through.
    let (direct, _) = store().await;
    assert_eq!(direct.get(&k).await.unwrap().unwrap().value, b("v"));
    direct.lease_revoke(lease).await.unwrap();
}

#[tokio::test]
async fn endpoints_without_a_scheme_are_plain_http_and_clones_share_the_store() {
    let endpoint = etcd_endpoint();
    let bare = endpoint.trim_start_matches("http://").to_string();
    let kv = EtcdKv::connect(&config(bare, 10_000)).await.unwrap();
    assert_eq!(kv.endpoint(), endpoint);
    let shown = format!("{kv:?}");
    assert!(shown.contains(&endpoint), "{shown}");

    let p = format!("etcd-kv-test/{}/", uuid::Uuid::new_v4().simple());
    let clone = kv.clone();
    let r = clone.put(&format!("{p}k"), b("v"), None).await.unwrap();
    assert_eq!(
        kv.get(&format!("{p}k"))
            .await
            .unwrap()
            .unwrap()
            .mod_revision,
        r
    );
}
