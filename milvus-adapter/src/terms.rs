//! The durable term of each pchannel: who may write it.
//!
//! The record ([`PChannelTerm`]: term, owning session, time) lives in the engine's metadata
//! store (etcd or the embedded store) at `<prefix>/milvus/pchannels/<pchannel>`, so it
//! survives restarts and is shared by every server on one etcd. It is only ever replaced by a
//! compare-and-swap on its revision, and only by a term at least as high: a read-write open
//! with a lower term is refused, an equal or higher one becomes the owner (a new owner token
//! per open, so a second open with the same term supersedes the first). The record is never
//! deleted by the adapter: closing a session leaves the term in force.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use proto::milvus::PChannelTerm;
use wal::meta::kv::{Compare, CompareOp, Kv, Revision, Txn, TxnOp};

use crate::error::AdapterError;

/// How many compare-and-swap rounds a claim tries before it reports contention.
const CLAIM_ATTEMPTS: usize = 16;

/// The term records under one metadata prefix.
#[derive(Clone)]
pub(crate) struct Terms {
    kv: Arc<dyn Kv>,
    root: String,
}

impl fmt::Debug for Terms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Terms").field("root", &self.root).finish()
    }
}

impl Terms {
    /// Records under `<prefix>/milvus/pchannels/`.
    pub(crate) fn new(kv: Arc<dyn Kv>, prefix: &str) -> Self {
        let prefix = prefix.trim_end_matches('/');
        Terms {
            kv,
            root: format!("{prefix}/milvus/pchannels/"),
        }
    }

    /// The key of a pchannel's record.
    pub(crate) fn key(&self, pchannel: &str) -> String {
        format!("{}{pchannel}", self.root)
    }

    /// The record and its revision, `None` when no read-write open ever happened.
    pub(crate) async fn current(
        &self,
        pchannel: &str,
    ) -> Result<Option<(PChannelTerm, Revision)>, AdapterError> {
        let Some(kv) = self.kv.get(&self.key(pchannel)).await? else {
            return Ok(None);
        };
        let record =
            PChannelTerm::decode(kv.value.as_ref()).map_err(|e| AdapterError::CorruptTerm {
                pchannel: pchannel.to_string(),
                detail: e.to_string(),
            })?;
        Ok(Some((record, kv.mod_revision)))
    }

    /// Makes `owner` the holder of `pchannel` at `term`: refused with
    /// [`AdapterError::StaleTerm`] when the durable term is higher.
    pub(crate) async fn claim(
        &self,
        pchannel: &str,
        term: i64,
        owner: &str,
        now_ms: i64,
    ) -> Result<(), AdapterError> {
        let key = self.key(pchannel);
        let value = Bytes::from(
            PChannelTerm {
                term,
                owner: owner.to_string(),
                updated_at_ms: now_ms,
            }
            .encode_to_vec(),
        );
        for _ in 0..CLAIM_ATTEMPTS {
            let revision = match self.current(pchannel).await? {
                Some((record, _)) if record.term > term => {
                    return Err(AdapterError::StaleTerm {
                        pchannel: pchannel.to_string(),
                        requested: term,
                        current: record.term,
                    });
                }
                Some((_, revision)) => revision,
                // A missing key compares with revision 0.
                None => 0,
            };
            let out = self
                .kv
                .txn(Txn {
                    compares: vec![Compare::mod_revision(&key, CompareOp::Equal, revision)],
                    success: vec![TxnOp::put(&key, value.clone())],
                    failure: vec![],
                })
                .await?;
            if out.succeeded {
                return Ok(());
            }
        }
        Err(AdapterError::Unavailable(format!(
            "the term of pchannel `{pchannel}` changed concurrently {CLAIM_ATTEMPTS} times"
        )))
    }

    /// Whether `owner` still holds `pchannel` at `term`; `Err(Fenced)` naming the term in
    /// force when not.
    pub(crate) async fn check_owner(
        &self,
        pchannel: &str,
        term: i64,
        owner: &str,
    ) -> Result<(), AdapterError> {
        match self.current(pchannel).await? {
            Some((record, _)) if record.term == term && record.owner == owner => Ok(()),
            Some((record, _)) => Err(AdapterError::Fenced {
                pchannel: pchannel.to_string(),
                term: record.term,
            }),
            None => Err(AdapterError::Fenced {
                pchannel: pchannel.to_string(),
                term: -1,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wal::clock::SystemClock;
    use wal::meta::embedded::EmbeddedKv;

    async fn terms(dir: &std::path::Path) -> Terms {
        let kv: Arc<dyn Kv> = Arc::new(EmbeddedKv::open(dir, SystemClock::shared()).await.unwrap());
        Terms::new(kv, "root/woodpecker/")
    }

    #[tokio::test]
    async fn terms_only_go_up_and_owners_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let t = terms(dir.path()).await;
        assert_eq!(t.key("p"), "root/woodpecker/milvus/pchannels/p");
        assert!(t.current("p").await.unwrap().is_none());
        assert!(matches!(
            t.check_owner("p", 0, "a").await,
            Err(AdapterError::Fenced { term: -1, .. })
        ));

        t.claim("p", 2, "a", 1).await.unwrap();
        t.check_owner("p", 2, "a").await.unwrap();
        match t.claim("p", 1, "b", 2).await {
            Err(AdapterError::StaleTerm {
                requested: 1,
                current: 2,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        // The refused claim changed nothing.
        t.check_owner("p", 2, "a").await.unwrap();

        // The same term again: a new owner, and the first one is fenced.
        t.claim("p", 2, "c", 3).await.unwrap();
        match t.check_owner("p", 2, "a").await {
            Err(AdapterError::Fenced { term: 2, .. }) => {}
            other => panic!("{other:?}"),
        }
        t.claim("p", 5, "d", 4).await.unwrap();
        let (record, _) = t.current("p").await.unwrap().unwrap();
        assert_eq!((record.term, record.owner.as_str()), (5, "d"));
        // Other pchannels are independent.
        t.claim("q", 0, "e", 5).await.unwrap();
    }

    #[tokio::test]
    async fn racing_claims_leave_the_highest_term() {
        let dir = tempfile::tempdir().unwrap();
        let t = terms(dir.path()).await;
        let claims = (0..8i64).map(|term| {
            let t = t.clone();
            tokio::spawn(async move { t.claim("p", term, &format!("o{term}"), term).await })
        });
        for c in futures::future::join_all(claims).await {
            match c.unwrap() {
                Ok(()) | Err(AdapterError::StaleTerm { .. }) => {}
                Err(e) => panic!("{e}"),
            }
        }
        let (record, _) = t.current("p").await.unwrap().unwrap();
        assert_eq!((record.term, record.owner.as_str()), (7, "o7"));
    }
}
