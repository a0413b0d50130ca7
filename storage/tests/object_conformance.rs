//! One conformance suite for the object-store layer, run unchanged against process memory,
//! local files and the S3-compatible server `scripts/test` starts.
//!
//! Server needs: every `s3::*` case runs on MinIO; the races (`*_race`) refuse to run on moto,
//! whose conditional PUT lets two racers win now and then. The other cases also pass on moto
//! (`WOODPECKER_TEST_S3_SERVER=moto`).

mod support;

use std::collections::BTreeSet;

use bytes::Bytes;
use object_store::{Attribute, GetOptions};
use storage::Error;
use storage::config::ConditionWriteMode;
use storage::object::probe::{decide_condition_write, probe_condition_write};
use storage::object::{Created, Fence, ObjectStorage};

/// A backend under test and the way to open more clients onto the same data.
enum Backend {
    Memory(ObjectStorage),
    Local(tempfile::TempDir, String),
    S3(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Memory,
    Local,
    S3,
}

impl Backend {
    async fn new(kind: Kind) -> Backend {
        let root = support::fresh_root("conformance");
        match kind {
            Kind::Memory => Backend::Memory(support::memory(&root)),
            Kind::Local => {
                let dir = tempfile::tempdir().expect("temp dir");
                Backend::Local(dir, root)
            }
            Kind::S3 => {
                // Building once creates the bucket.
                support::s3(&root).await;
                Backend::S3(root)
            }
        }
    }

    /// A client of its own (its own HTTP connections on S3, its own handle on local files).
    async fn client(&self) -> ObjectStorage {
        match self {
            Backend::Memory(s) => s.clone(),
            Backend::Local(dir, root) => {
                ObjectStorage::local_dir(dir.path(), root).expect("local storage")
            }
            Backend::S3(root) => support::s3(root).await,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Backend::Memory(_) => Kind::Memory,
            Backend::Local(..) => Kind::Local,
            Backend::S3(_) => Kind::S3,
        }
    }

    fn require_exact_conditional_put(&self) {
        if self.kind() == Kind::S3 {
            let server = support::s3_server();
            assert_eq!(
                server, "minio",
                "race tests need a server whose conditional PUT has exactly one winner (MinIO); \
                 {server} is not one"
            );
        }
    }
}

async fn put_get_range_list_delete(b: Backend) {
    let s = b.client().await;
    s.put("1/0/0.blk", Bytes::from_static(b"hello world"))
        .await
        .unwrap();
    s.put("1/0/1.blk", Bytes::from_static(b"second"))
        .await
        .unwrap();
    s.put("1/1/0.blk", Bytes::from_static(b"other segment"))
        .await
        .unwrap();
    s.put("10/0/0.blk", Bytes::from_static(b"other log"))
        .await
        .unwrap();

    assert_eq!(s.get("1/0/0.blk").await.unwrap(), "hello world");
    assert_eq!(s.get_range("1/0/0.blk", 6..11).await.unwrap(), "world");
    assert_eq!(s.get_range("1/0/0.blk", 0..1).await.unwrap(), "h");
    assert!(
        s.get_range("1/0/0.blk", 5..100).await.is_err(),
        "range past the end"
    );

    // Overwrite replaces.
    s.put("1/0/1.blk", Bytes::from_static(b"replaced"))
        .await
        .unwrap();
    assert_eq!(s.get("1/0/1.blk").await.unwrap(), "replaced");

    // Listing is by path segment: `1` does not include `10`, and is sorted.
    let listed: Vec<String> = s
        .list("1")
        .await
        .unwrap()
        .iter()
        .map(|m| s.relative_key(&m.location).to_string())
        .collect();
    assert_eq!(listed, ["1/0/0.blk", "1/0/1.blk", "1/1/0.blk"]);
    let sizes: Vec<u64> = s
        .list("1/0")
        .await
        .unwrap()
        .iter()
        .map(|m| m.size)
        .collect();
    assert_eq!(sizes, [11, 8]);
    assert!(s.list("2").await.unwrap().is_empty());

    let info = s.stat("1/0/0.blk").await.unwrap().expect("present");
    assert_eq!(info.size, 11);
    assert!(!info.fenced);
    assert_eq!(s.stat("1/0/9.blk").await.unwrap(), None);

    assert!(matches!(
        s.get("1/0/9.blk").await,
        Err(Error::NotFound { .. })
    ));

    s.delete("1/0/0.blk").await.unwrap();
    assert!(matches!(
        s.get("1/0/0.blk").await,
        Err(Error::NotFound { .. })
    ));
    // Deleting what is not there is not an error.
    s.delete("1/0/0.blk").await.unwrap();
    s.delete("never/was").await.unwrap();

    // Another client sees the same data.
    let other = b.client().await;
    assert_eq!(other.get("10/0/0.blk").await.unwrap(), "other log");
}

async fn conditional_create(b: Backend) {
    let s = b.client().await;
    let body = Bytes::from_static(b"block zero");
    assert_eq!(
        s.put_if_absent("3/0/0.blk", body.clone()).await.unwrap(),
        Created::New
    );
    // Our own earlier attempt landed: the same bytes again.
    assert_eq!(
        s.put_if_absent("3/0/0.blk", body.clone()).await.unwrap(),
        Created::AlreadyOurs
    );
    // Somebody else's object.
    assert!(matches!(
        s.put_if_absent("3/0/0.blk", Bytes::from_static(b"block zero, other writer"))
            .await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(
        s.get("3/0/0.blk").await.unwrap(),
        body,
        "loser changed nothing"
    );
}

async fn conditional_create_race(b: Backend) {
    b.require_exact_conditional_put();
    const RACERS: usize = 8;
    let rounds = if b.kind() == Kind::S3 { 25 } else { 50 };
    let mut clients = Vec::new();
    for _ in 0..RACERS {
        clients.push(b.client().await);
    }
    for round in 0..rounds {
        let key = format!("race/{round}.blk");
        let mut tasks = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let c = c.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let body = Bytes::from(format!("racer {i} round {round}"));
                (i, c.put_if_absent(&key, body).await)
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (i, r) = t.await.unwrap();
            match r {
                Ok(Created::New) => winners.push(i),
                Err(Error::AlreadyExists { .. }) => {}
                other => panic!("round {round} racer {i}: unexpected {other:?}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let stored = clients[0].get(&key).await.unwrap();
        assert_eq!(
            stored,
            Bytes::from(format!("racer {} round {round}", winners[0])),
            "round {round}: stored bytes are the winner's"
        );
    }
}

async fn fence_semantics(b: Backend) {
    let s = b.client().await;
    // A fence at the next block number.
    s.put_if_absent("4/0/0.blk", Bytes::from_static(b"data"))
        .await
        .unwrap();
    assert_eq!(s.put_fence("4/0/1.blk").await.unwrap(), Fence::Placed);
    assert_eq!(
        s.put_fence("4/0/1.blk").await.unwrap(),
        Fence::AlreadyFenced
    );
    let info = s.stat("4/0/1.blk").await.unwrap().expect("fence present");
    assert!(info.fenced);
    assert_eq!(info.size, 1);
    assert_eq!(s.get("4/0/1.blk").await.unwrap(), "F");
    // A writer that comes late is fenced out and changes nothing.
    assert!(matches!(
        s.put_if_absent("4/0/1.blk", Bytes::from_static(b"late block"))
            .await,
        Err(Error::Fenced { .. })
    ));
    assert_eq!(s.get("4/0/1.blk").await.unwrap(), "F");
    // A fence never replaces data.
    assert!(matches!(
        s.put_fence("4/0/0.blk").await,
        Err(Error::AlreadyExists { .. })
    ));
    assert_eq!(s.get("4/0/0.blk").await.unwrap(), "data");
    assert!(!s.stat("4/0/0.blk").await.unwrap().unwrap().fenced);

    // On stores with user metadata the fence carries `Fenced: true`, as Go Woodpecker writes it.
    if s.capabilities().user_metadata {
        let got = s
            .store()
            .get_opts(&s.path("4/0/1.blk"), GetOptions::default())
            .await
            .unwrap();
        let fenced = got.attributes.iter().any(|(k, v)| {
            matches!(k, Attribute::Metadata(name) if name.eq_ignore_ascii_case("Fenced"))
                && v.as_ref() == "true"
        });
        assert!(fenced, "fence metadata missing: {:?}", got.attributes);
    }
}

async fn fence_race(b: Backend) {
    b.require_exact_conditional_put();
    let rounds = if b.kind() == Kind::S3 { 15 } else { 40 };
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(b.client().await);
    }
    let mut fence_won = 0;
    for round in 0..rounds {
        let key = format!("fence-race/{round}.blk");
        let mut tasks = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            let c = c.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    (i, c.put_fence(&key).await.map(|f| format!("{f:?}")))
                } else {
                    let body = Bytes::from(format!("writer {i}"));
                    (
                        i,
                        c.put_if_absent(&key, body).await.map(|c| format!("{c:?}")),
                    )
                }
            }));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let stored = clients[0].stat(&key).await.unwrap().expect("something won");
        if stored.fenced {
            fence_won += 1;
            for (i, r) in &outcomes {
                if i % 2 == 0 {
                    assert!(r.is_ok(), "round {round}: fencer {i} got {r:?}");
                } else {
                    assert!(
                        matches!(r, Err(Error::Fenced { .. })),
                        "round {round}: writer {i} got {r:?}"
                    );
                }
            }
            let placed = outcomes
                .iter()
                .filter(|(_, r)| matches!(r, Ok(s) if s == "Placed"))
                .count();
            assert_eq!(placed, 1, "round {round}: {outcomes:?}");
        } else {
            let data_winners: Vec<_> = outcomes
                .iter()
                .filter(|(_, r)| matches!(r, Ok(s) if s == "New"))
                .collect();
            assert_eq!(data_winners.len(), 1, "round {round}: {outcomes:?}");
            for (i, r) in &outcomes {
                if i % 2 == 0 {
                    assert!(
                        matches!(r, Err(Error::AlreadyExists { .. })),
                        "round {round}: fencer {i} got {r:?}"
                    );
                }
            }
        }
    }
    eprintln!("fence won {fence_won} of {rounds} rounds");
}

async fn capability_probe(b: Backend) {
    let s = b.client().await;
    let report = probe_condition_write(&s).await.unwrap();
    assert!(report.supported(), "probe failed:\n{report}");
    assert_eq!(report.steps.len(), 6);
    // The scratch objects are gone.
    let left: BTreeSet<String> = s
        .list("")
        .await
        .unwrap()
        .iter()
        .map(|m| m.location.to_string())
        .filter(|p| p.contains("conditional_write_"))
        .collect();
    assert!(left.is_empty(), "probe left {left:?}");

    // The modes.
    let d = decide_condition_write(&s, ConditionWriteMode::Auto, None)
        .await
        .unwrap();
    assert!(d.enabled && d.store == Some(true) && d.report.is_some());
    let d = decide_condition_write(&s, ConditionWriteMode::Auto, Some(true))
        .await
        .unwrap();
    assert!(d.enabled && d.store.is_none() && d.report.is_none());
    let d = decide_condition_write(&s, ConditionWriteMode::Auto, Some(false))
        .await
        .unwrap();
    assert!(!d.enabled && d.report.is_none());
    assert!(!s.condition_write_enabled());
    let d = decide_condition_write(&s, ConditionWriteMode::Enable, Some(false))
        .await
        .unwrap();
    assert!(d.enabled && d.store == Some(true));
    assert!(s.condition_write_enabled());
    let d = decide_condition_write(&s, ConditionWriteMode::Disable, None)
        .await
        .unwrap();
    assert!(!d.enabled && d.report.is_none());
    assert!(!s.condition_write_enabled());
}

async fn condition_write_disabled(b: Backend) {
    let s = b.client().await;
    s.set_condition_write(false);
    assert_eq!(
        s.put_if_absent("5/0/0.blk", Bytes::from_static(b"one"))
            .await
            .unwrap(),
        Created::New
    );
    // Without conditions the store cannot refuse; single-writer safety comes from the lock.
    s.put_if_absent("5/0/0.blk", Bytes::from_static(b"two"))
        .await
        .unwrap();
    assert_eq!(s.get("5/0/0.blk").await.unwrap(), "two");
    // Fences still mark the end and never replace data that is visible.
    assert_eq!(s.put_fence("5/0/1.blk").await.unwrap(), Fence::Placed);
    assert_eq!(
        s.put_fence("5/0/1.blk").await.unwrap(),
        Fence::AlreadyFenced
    );
    assert!(s.stat("5/0/1.blk").await.unwrap().unwrap().fenced);
    assert!(matches!(
        s.put_fence("5/0/0.blk").await,
        Err(Error::AlreadyExists { .. })
    ));
}

macro_rules! conformance {
    ($backend:ident, $kind:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn put_get_range_list_delete() {
                super::put_get_range_list_delete(Backend::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn conditional_create() {
                super::conditional_create(Backend::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn conditional_create_race() {
                super::conditional_create_race(Backend::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn fence_semantics() {
                super::fence_semantics(Backend::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn fence_race() {
                super::fence_race(Backend::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn capability_probe() {
                super::capability_probe(Backend::new($kind).await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn condition_write_disabled() {
                super::condition_write_disabled(Backend::new($kind).await).await;
            }
        }
    };
}

conformance!(memory, Kind::Memory);
conformance!(local_files, Kind::Local);
conformance!(s3, Kind::S3);
