//! The retry, fault-injection and counting decorators, and build-time errors.
//!
//! Decorator cases run on process memory (they test the decorators, not a backend); the
//! build-error cases use the S3-compatible server `scripts/test` starts, or no server at all.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, UpdateVersion};
use storage::Error;
use storage::config::{CloudProvider, MinioConfig};
use storage::object::faults::{FaultInjectingStore, FaultRule, Op};
use storage::object::metrics::{CountingStore, StoreCounters};
use storage::object::retry::{RetryPolicy, RetryingStore};
use storage::object::{BackendKind, BuildOptions, Capabilities, Created, ObjectStorage};

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 5,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        multiplier: 2.0,
    }
}

/// memory <- faults <- counters <- retries, the order `build_object_storage` uses.
struct Stack {
    raw: Arc<InMemory>,
    faults: FaultInjectingStore,
    counters: Arc<StoreCounters>,
    storage: ObjectStorage,
}

fn stack(seed: u64) -> Stack {
    let raw = Arc::new(InMemory::new());
    let faults = FaultInjectingStore::new(raw.clone(), seed);
    let counters = Arc::new(StoreCounters::default());
    let counted = CountingStore::new(Arc::new(faults.clone()), counters.clone());
    let retrying = RetryingStore::new(Arc::new(counted), quick_retries());
    let storage = ObjectStorage::new(
        Arc::new(retrying),
        BackendKind::Memory,
        Capabilities {
            user_metadata: true,
        },
        "memory",
        "root",
    )
    .unwrap();
    Stack {
        raw,
        faults,
        counters,
        storage,
    }
}

#[tokio::test]
async fn transient_errors_are_retried_until_success() {
    let s = stack(1);
    s.faults
        .add_rule(FaultRule::fail(&[Op::Put, Op::Get]).times(3));
    s.storage.put("a", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(s.storage.get("a").await.unwrap(), "x");
    let puts = s.counters.snapshot(Op::Put);
    let gets = s.counters.snapshot(Op::Get);
    assert_eq!(
        puts.requests + gets.requests,
        5,
        "3 failures then 2 successes"
    );
    assert_eq!(puts.errors + gets.errors, 3);
    assert_eq!(s.faults.stats().before, 3);
}

#[tokio::test]
async fn permanent_errors_are_not_retried() {
    let s = stack(2);
    s.faults.add_rule(FaultRule::fail(&[Op::Put]).permanent());
    let err = s
        .storage
        .put("a", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    assert!(!err.is_retriable(), "{err}");
    assert_eq!(s.counters.snapshot(Op::Put).requests, 1);
}

#[tokio::test]
async fn retries_give_up_after_the_policy_limit() {
    let s = stack(3);
    s.faults.add_rule(FaultRule::fail(&[Op::Get]));
    let err = s.storage.get("a").await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert_eq!(
        s.counters.snapshot(Op::Get).requests,
        6,
        "1 try + 5 retries"
    );
}

#[tokio::test]
async fn an_ambiguous_create_that_landed_is_ours() {
    let s = stack(4);
    // The first create is applied, then its answer is lost.
    s.faults
        .add_rule(FaultRule::fail(&[Op::Put]).after_applying().times(1));
    let body = Bytes::from_static(b"block");
    assert_eq!(
        s.storage
            .put_if_absent("0.blk", body.clone())
            .await
            .unwrap(),
        Created::New
    );
    assert_eq!(s.storage.get("0.blk").await.unwrap(), body);
    assert_eq!(s.faults.stats().after, 1);
    assert_eq!(s.counters.snapshot(Op::Put).requests, 2);
}

#[tokio::test]
async fn an_ambiguous_create_never_claims_a_foreign_object() {
    let s = stack(5);
    // Somebody else's object is already there; our create fails ambiguously, is retried, and
    // the retry finds the key taken by bytes that are not ours.
    s.raw
        .put(
            &Path::from("root/0.blk"),
            Bytes::from_static(b"foreign").into(),
        )
        .await
        .unwrap();
    s.faults
        .add_rule(FaultRule::fail(&[Op::Put]).after_applying().times(1));
    let r = s
        .storage
        .put_if_absent("0.blk", Bytes::from_static(b"ours"))
        .await;
    assert!(matches!(r, Err(Error::AlreadyExists { .. })), "{r:?}");
    assert_eq!(s.storage.get("0.blk").await.unwrap(), "foreign");
}

#[tokio::test]
async fn a_create_refused_outright_is_not_resolved_as_ours() {
    let s = stack(6);
    let body = Bytes::from_static(b"same bytes");
    // At the store level, an unambiguous AlreadyExists goes straight back to the caller...
    s.raw
        .put(&Path::from("root/0.blk"), body.clone().into())
        .await
        .unwrap();
    let raw_retrying = RetryingStore::new(s.raw.clone(), quick_retries());
    let r = raw_retrying
        .put_opts(
            &Path::from("root/0.blk"),
            body.clone().into(),
            PutOptions::from(PutMode::Create),
        )
        .await;
    assert!(
        matches!(r, Err(object_store::Error::AlreadyExists { .. })),
        "{r:?}"
    );
    // ...and the storage layer tells "same bytes as ours" apart explicitly.
    assert_eq!(
        s.storage.put_if_absent("0.blk", body).await.unwrap(),
        Created::AlreadyOurs
    );
}

#[tokio::test]
async fn conditional_updates_are_not_resent_after_an_ambiguous_failure() {
    let s = stack(7);
    let path = Path::from("root/meta");
    let first = s
        .raw
        .put(&path, Bytes::from_static(b"v1").into())
        .await
        .unwrap();
    s.faults
        .add_rule(FaultRule::fail(&[Op::Put]).after_applying().times(1));
    let store = s.storage.store().clone();
    let r = store
        .put_opts(
            &path,
            Bytes::from_static(b"v2").into(),
            PutOptions::from(PutMode::Update(UpdateVersion::from(first))),
        )
        .await;
    assert!(r.is_err(), "the ambiguous failure is reported, not retried");
    assert_eq!(s.counters.snapshot(Op::Put).requests, 1);
}

#[tokio::test]
async fn faults_target_operations_and_prefixes() {
    let s = stack(8);
    s.faults
        .add_rule(FaultRule::fail(&[Op::Put]).under("root/1/").permanent());
    s.storage
        .put("2/0.blk", Bytes::from_static(b"ok"))
        .await
        .unwrap();
    assert!(
        s.storage
            .put("1/0.blk", Bytes::from_static(b"no"))
            .await
            .is_err()
    );
    // Reads under the prefix are untouched.
    assert!(matches!(
        s.storage.get("1/0.blk").await,
        Err(Error::NotFound { .. })
    ));
    s.faults.clear();
    s.storage
        .put("1/0.blk", Bytes::from_static(b"now"))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_partial_error_rate_is_reproducible_from_its_seed() {
    async fn failures(seed: u64) -> Vec<bool> {
        let raw: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let faults = FaultInjectingStore::new(raw, seed);
        faults.add_rule(FaultRule::fail(&[Op::Put]).rate(0.3).permanent());
        let mut out = Vec::new();
        for i in 0..64 {
            let r = faults
                .put(
                    &Path::from(format!("k{i}")),
                    Bytes::from_static(b"x").into(),
                )
                .await;
            out.push(r.is_err());
        }
        out
    }
    let a = failures(42).await;
    assert_eq!(a, failures(42).await);
    let n = a.iter().filter(|f| **f).count();
    assert!((5..=40).contains(&n), "{n} of 64 failed at rate 0.3");
}

#[tokio::test(start_paused = true)]
// Measures tokio's paused time, which the system clock follows.
#[allow(clippy::disallowed_methods)]
async fn injected_latency_delays_matching_operations() {
    let s = stack(9);
    s.faults
        .add_rule(FaultRule::delay(&[Op::Put], Duration::from_secs(5)));
    let started = tokio::time::Instant::now();
    s.storage.put("a", Bytes::from_static(b"x")).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(5));
    let started = tokio::time::Instant::now();
    s.storage.get("a").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn counters_count_bytes_and_errors() {
    let s = stack(10);
    s.storage
        .put("a", Bytes::from(vec![7u8; 1000]))
        .await
        .unwrap();
    s.storage.get("a").await.unwrap();
    s.storage.stat("a").await.unwrap();
    let _ = s.storage.get("missing").await;
    assert_eq!(s.counters.snapshot(Op::Put).bytes, 1000);
    let gets = s.counters.snapshot(Op::Get);
    assert_eq!(gets.requests, 2);
    assert_eq!(gets.errors, 1);
    assert_eq!(gets.bytes, 1000);
    assert_eq!(s.counters.snapshot(Op::Head).requests, 1);
}

// ---- build-time errors name the setting to fix ----

fn setting(err: Error) -> String {
    match err {
        Error::Config { setting, .. } => setting,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_names_the_address() {
    // Nothing listens on port 1.
    let cfg = MinioConfig {
        address: "127.0.0.1".into(),
        port: 1,
        request_timeout_ms: 2_000,
        ..MinioConfig::default()
    };
    let err = storage::object::build_object_storage(&cfg, BuildOptions::default())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(setting(err), "minio.address", "{msg}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    // The bucket check goes out as a pre-signed URL: its query (access key id, signature)
    // is never quoted.
    assert!(!msg.contains("X-Amz"), "{msg}");
    assert!(!msg.contains(&cfg.access_key_id), "{msg}");
    assert!(!msg.contains(&cfg.secret_access_key), "{msg}");
}

#[tokio::test]
async fn a_malformed_section_is_refused_before_any_request() {
    let cfg = MinioConfig {
        bucket_name: "Not_A_Bucket".into(),
        ..MinioConfig::default()
    };
    let err = storage::object::build_object_storage(&cfg, BuildOptions::default())
        .await
        .unwrap_err();
    assert_eq!(setting(err), "minio.bucketName");
}

#[tokio::test]
async fn wrong_credentials_name_the_key() {
    let mut cfg = support::s3_config("creds");
    cfg.secret_access_key = "not-the-secret".into();
    let err = storage::object::build_object_storage(&cfg, BuildOptions::default())
        .await
        .unwrap_err();
    assert_eq!(setting(err), "minio.accessKeyID");
}

#[tokio::test]
async fn a_missing_bucket_names_the_bucket() {
    let mut cfg = support::s3_config("missing");
    cfg.bucket_name = format!(
        "absent-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    cfg.create_bucket = false;
    let built = storage::object::build_object_storage(&cfg, BuildOptions::default())
        .await
        .unwrap();
    let err = built
        .storage
        .put("1/0/0.blk", Bytes::from_static(b"x"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert_eq!(setting(err), "minio.bucketName", "{msg}");
    assert!(
        msg.contains(&format!(
            "bucket `{}` does not exist at {}",
            cfg.bucket_name,
            cfg.endpoint_url()
        )),
        "{msg}"
    );
    assert!(!msg.contains(&cfg.secret_access_key), "{msg}");
}

#[tokio::test]
async fn create_bucket_makes_a_missing_bucket() {
    let mut cfg = support::s3_config("created");
    cfg.bucket_name = format!("made-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let built = storage::object::build_object_storage(&cfg, BuildOptions::default())
        .await
        .unwrap();
    built
        .storage
        .put("1/0/0.blk", Bytes::from_static(b"x"))
        .await
        .unwrap();
    // Building again finds it.
    storage::object::build_object_storage(&cfg, BuildOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn local_and_memory_providers_build_from_the_section() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = MinioConfig {
        cloud_provider: CloudProvider::Local,
        address: dir.path().join("objects").display().to_string(),
        ..MinioConfig::default()
    };
    let built = storage::object::build_object_storage(&cfg, BuildOptions::default())
        .await
        .unwrap();
    assert_eq!(built.storage.kind(), BackendKind::LocalFiles);
    built
        .storage
        .put("1/0/0.blk", Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(dir.path().join("objects/files/1/0/0.blk").is_file());

    let cfg = MinioConfig {
        cloud_provider: CloudProvider::Memory,
        ..MinioConfig::default()
    };
    let built = storage::object::build_object_storage(
        &cfg,
        BuildOptions {
            fault_seed: Some(1),
            ..BuildOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(built.storage.kind(), BackendKind::Memory);
    assert!(built.faults.is_some());
}
