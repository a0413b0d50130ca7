//! SCRAM credentials in the engine's metadata store: one key per user and mechanism,
//! `<prefix>/kafka/scram/<mechanism>/<hex of the user name>`, holding the salt, the
//! iteration count, the stored key and the server key (never a password).
//!
//! SASL/PLAIN checks passwords against the same credentials (the SCRAM-SHA-512 one when
//! the user has it, else SCRAM-SHA-256), so a user created with `kafka-configs.sh
//! --alter --add-config 'SCRAM-SHA-256=[password=...]'` can use every enabled mechanism
//! that has a credential for it. Reads go to the store on every authentication, so a
//! credential changed or deleted takes effect at the next login.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::scram::{MIN_ITERATIONS, ScramCredential, ScramMechanism};
use crate::error::ShimError;
use crate::store::{ShimStore, to_json};

#[derive(Serialize, Deserialize)]
struct Stored {
    user: String,
    #[serde(flatten)]
    credential: ScramCredential,
}

/// The SCRAM credential store.
#[derive(Debug, Clone)]
pub struct Credentials {
    store: ShimStore,
    prefix: String,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

impl Credentials {
    /// The credentials under `<root>/scram/`.
    pub fn new(store: ShimStore) -> Credentials {
        let prefix = format!("{}/scram/", store.root());
        Credentials { store, prefix }
    }

    fn key(&self, user: &str, mechanism: ScramMechanism) -> String {
        format!("{}{}/{}", self.prefix, mechanism.name(), hex(user))
    }

    /// The credential of `user` for `mechanism`.
    pub async fn get(
        &self,
        user: &str,
        mechanism: ScramMechanism,
    ) -> Result<Option<ScramCredential>, ShimError> {
        let Some(record) = self.store.get(&self.key(user, mechanism)).await? else {
            return Ok(None);
        };
        let stored: Stored = record.json("SCRAM credential")?;
        Ok(Some(stored.credential))
    }

    /// Sets the credential of `user` for `mechanism`.
    pub async fn put(
        &self,
        user: &str,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    ) -> Result<(), ShimError> {
        let key = self.key(user, mechanism);
        let value = to_json(
            &Stored {
                user: user.to_string(),
                credential,
            },
            &key,
        )?;
        self.store.put(&key, value).await
    }

    /// Deletes the credential; `false` when there was none.
    pub async fn delete(&self, user: &str, mechanism: ScramMechanism) -> Result<bool, ShimError> {
        self.store.delete(&self.key(user, mechanism)).await
    }

    /// Every user with a credential: its mechanisms and iteration counts.
    pub async fn list(&self) -> Result<BTreeMap<String, Vec<(ScramMechanism, i32)>>, ShimError> {
        let mut users: BTreeMap<String, Vec<(ScramMechanism, i32)>> = BTreeMap::new();
        for record in self.store.list(&self.prefix).await? {
            let Some(mechanism) = record
                .key
                .strip_prefix(&self.prefix)
                .and_then(|rest| rest.split('/').next())
                .and_then(ScramMechanism::from_name)
            else {
                continue;
            };
            let stored: Stored = record.json("SCRAM credential")?;
            users
                .entry(stored.user)
                .or_default()
                .push((mechanism, stored.credential.iterations));
        }
        Ok(users)
    }

    /// Creates `user`'s credentials for both mechanisms from `password` where they are
    /// missing (the initial admin user from configuration); existing ones are kept, so a
    /// password changed through the API survives restarts.
    pub async fn ensure(&self, user: &str, password: &str) -> Result<(), ShimError> {
        for m in ScramMechanism::ALL {
            if self.get(user, m).await?.is_none() {
                let credential = ScramCredential::from_password(m, password, MIN_ITERATIONS);
                self.put(user, m, credential).await?;
            }
        }
        Ok(())
    }

    /// SASL/PLAIN: whether `password` is `user`'s password.
    pub async fn verify_plain(&self, user: &str, password: &str) -> Result<bool, ShimError> {
        for m in [ScramMechanism::Sha512, ScramMechanism::Sha256] {
            if let Some(c) = self.get(user, m).await? {
                let password = password.to_string();
                // PBKDF2 takes milliseconds: off the connection tasks' threads.
                return wal::clock::blocking::run(wal::clock::blocking::Io::Read, move || {
                    c.verify_password(m, &password)
                })
                .await
                .map_err(|e| ShimError::Encode(format!("password check failed: {e}")));
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use wal::clock::SystemClock;
    use wal::meta::embedded::EmbeddedKv;
    use wal::meta::kv::Kv;

    #[tokio::test]
    async fn credentials_are_stored_listed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn Kv> = Arc::new(
            EmbeddedKv::open(dir.path(), SystemClock::shared())
                .await
                .unwrap(),
        );
        let c = Credentials::new(ShimStore::new(kv.clone(), "x/kafka"));
        c.ensure("admin", "pw").await.unwrap();
        assert!(c.verify_plain("admin", "pw").await.unwrap());
        assert!(!c.verify_plain("admin", "nope").await.unwrap());
        assert!(!c.verify_plain("nobody", "pw").await.unwrap());
        // ensure keeps what exists.
        c.ensure("admin", "other").await.unwrap();
        assert!(c.verify_plain("admin", "pw").await.unwrap());
        c.put(
            "a/b,c",
            ScramMechanism::Sha256,
            ScramCredential::from_password(ScramMechanism::Sha256, "x", 8192),
        )
        .await
        .unwrap();
        let list = c.list().await.unwrap();
        assert_eq!(list["a/b,c"], vec![(ScramMechanism::Sha256, 8192)]);
        assert_eq!(list["admin"].len(), 2);
        assert!(c.delete("a/b,c", ScramMechanism::Sha256).await.unwrap());
        assert!(!c.delete("a/b,c", ScramMechanism::Sha256).await.unwrap());
        // Nothing secret is stored in the clear.
        let (all, _) = kv.get_prefix("x/kafka/scram/").await.unwrap();
        for kv in all {
            assert!(!String::from_utf8_lossy(&kv.value).contains("\"pw\""));
        }
    }
}
