//! SCRAM (RFC 5802, RFC 7677) as Kafka uses it: the stored credential and the server side of
//! one exchange, for SCRAM-SHA-256 and SCRAM-SHA-512.
//!
//! A credential is what Kafka keeps (`UserScramCredentialRecord`): the salt, the iteration
//! count, `StoredKey = H(HMAC(SaltedPassword, "Client Key"))` and
//! `ServerKey = HMAC(SaltedPassword, "Server Key")`. The password and the salted password
//! are never stored. No IO here: the caller looks the credential up between the client's
//! first message and the server's.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, hmac, pbkdf2, rand::SecureRandom};
use serde::{Deserialize, Serialize};

/// Kafka's lower bound on iterations (`ScramMechanism.minIterations`).
pub const MIN_ITERATIONS: i32 = 4096;
/// Kafka's upper bound on iterations accepted by AlterUserScramCredentials.
pub const MAX_ITERATIONS: i32 = 16384;

/// A SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ScramMechanism {
    /// SCRAM-SHA-256 (type 1 in the credential APIs).
    Sha256,
    /// SCRAM-SHA-512 (type 2).
    Sha512,
}

impl ScramMechanism {
    /// Both mechanisms, in Kafka's order.
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The SASL mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism of a SASL name.
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The type code of the credential APIs (KIP-554): 1 or 2.
    pub fn code(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism of a credential-API type code.
    pub fn from_code(code: i8) -> Option<ScramMechanism> {
        Self::ALL.into_iter().find(|m| m.code() == code)
    }

    fn hmac(self) -> hmac::Algorithm {
        match self {
            ScramMechanism::Sha256 => hmac::HMAC_SHA256,
            ScramMechanism::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static digest::Algorithm {
        match self {
            ScramMechanism::Sha256 => &digest::SHA256,
            ScramMechanism::Sha512 => &digest::SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            ScramMechanism::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            ScramMechanism::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn len(self) -> usize {
        self.digest().output_len()
    }

    fn mac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(self.hmac(), key), data)
            .as_ref()
            .to_vec()
    }

    /// `Hi(password, salt, i)`: PBKDF2 with this mechanism's HMAC.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        let n = std::num::NonZeroU32::new(iterations.max(1)).expect("at least one");
        pbkdf2::derive(self.pbkdf2(), n, salt, password, &mut out);
        out
    }
}

/// A stored SCRAM credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    /// The salt, as the client generated it.
    #[serde(with = "b64")]
    pub salt: Vec<u8>,
    /// `H(ClientKey)`.
    #[serde(with = "b64")]
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    #[serde(with = "b64")]
    pub server_key: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: i32,
}

impl std::fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramCredential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

impl ScramCredential {
    /// The credential of a salted password (what AlterUserScramCredentials carries).
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salt: &[u8],
        salted_password: &[u8],
        iterations: i32,
    ) -> ScramCredential {
        let client_key = mechanism.mac(salted_password, b"Client Key");
        let stored_key = digest::digest(mechanism.digest(), &client_key)
            .as_ref()
            .to_vec();
        let server_key = mechanism.mac(salted_password, b"Server Key");
        ScramCredential {
            salt: salt.to_vec(),
            stored_key,
            server_key,
            iterations,
        }
    }

    /// The credential of a password with a fresh random salt.
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &str,
        iterations: i32,
    ) -> ScramCredential {
        let mut salt = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .expect("the system random source works");
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations as u32);
        Self::from_salted_password(mechanism, &salt, &salted, iterations)
    }

    /// Whether `password` is the password of this credential (SASL/PLAIN checks passwords
    /// against the SCRAM credentials).
    pub fn verify_password(&self, mechanism: ScramMechanism, password: &str) -> bool {
        let salted =
            mechanism.salted_password(password.as_bytes(), &self.salt, self.iterations as u32);
        let other = Self::from_salted_password(mechanism, &self.salt, &salted, self.iterations);
        constant_time_eq(&other.stored_key, &self.stored_key)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an exchange failed, as Kafka tells the client: `Generic` failures (Kafka's
/// `SaslException`) are reported with Kafka's fixed "invalid credentials" message so that
/// nothing about the user leaks; `Specific` ones (`SaslAuthenticationException`) carry
/// their own message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SaslFailure {
    /// Reported with the fixed message; the detail is for the broker's log only.
    Generic(String),
    /// Reported with this message.
    Specific(String),
}

#[derive(Debug)]
enum State {
    First,
    Final {
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
        credential: ScramCredential,
    },
    Done,
}

/// The server side of one SCRAM exchange.
#[derive(Debug)]
pub(crate) struct ScramServer {
    mechanism: ScramMechanism,
    state: State,
    /// From the client's first message, until the credential is known.
    pending: Option<ClientFirst>,
    user: Option<String>,
}

#[derive(Debug)]
struct ClientFirst {
    gs2_header: String,
    authzid: String,
    bare: String,
    nonce: String,
}

impl ScramServer {
    /// A new exchange.
    pub(crate) fn new(mechanism: ScramMechanism) -> ScramServer {
        ScramServer {
            mechanism,
            state: State::First,
            pending: None,
            user: None,
        }
    }

    /// Whether the server's first message went out and the client's final one is next.
    pub(crate) fn awaiting_final(&self) -> bool {
        matches!(self.state, State::Final { .. })
    }

    /// The authenticated user, once [`ScramServer::client_final`] succeeded.
    pub(crate) fn user(&self) -> Option<&str> {
        matches!(self.state, State::Done)
            .then_some(self.user.as_deref())
            .flatten()
    }

    /// Reads the client's first message; returns the user name whose credential the caller
    /// must look up for [`ScramServer::server_first`].
    pub(crate) fn client_first(&mut self, token: &[u8]) -> Result<String, SaslFailure> {
        if !matches!(self.state, State::First) || self.pending.is_some() {
            return Err(SaslFailure::Generic(
                "unexpected client-first message".into(),
            ));
        }
        let text = std::str::from_utf8(token)
            .map_err(|_| SaslFailure::Generic("client-first message is not UTF-8".into()))?;
        let bad = || SaslFailure::Generic(format!("invalid SCRAM client first message {text:?}"));
        // gs2-header: ("n" | "y") "," ["a=" authzid] ","; channel binding ("p=") is not
        // offered by Kafka.
        let (flag, rest) = text.split_once(',').ok_or_else(bad)?;
        if flag != "n" && flag != "y" {
            return Err(bad());
        }
        let (authz, bare) = rest.split_once(',').ok_or_else(bad)?;
        let authzid = match authz {
            "" => String::new(),
            a => decode_saslname(a.strip_prefix("a=").ok_or_else(bad)?).ok_or_else(bad)?,
        };
        let mut parts = bare.split(',');
        let user = parts
            .next()
            .and_then(|p| p.strip_prefix("n="))
            .and_then(decode_saslname)
            .ok_or_else(bad)?;
        let nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or_else(bad)?;
        // Extensions (`key=value`) are allowed and ignored, as Kafka ignores unknown ones.
        for ext in parts {
            if !ext.contains('=') {
                return Err(bad());
            }
        }
        self.pending = Some(ClientFirst {
            gs2_header: format!("{flag},{authz},"),
            authzid,
            bare: bare.to_string(),
            nonce: nonce.to_string(),
        });
        self.user = Some(user.clone());
        Ok(user)
    }

    /// The server's first message, given the user's credential (`None`: no such user).
    pub(crate) fn server_first(
        &mut self,
        credential: Option<ScramCredential>,
    ) -> Result<Vec<u8>, SaslFailure> {
        let first = self
            .pending
            .take()
            .ok_or_else(|| SaslFailure::Generic("no client-first message".into()))?;
        let credential = credential.ok_or_else(|| {
            SaslFailure::Generic("Authentication failed: Invalid user credentials".into())
        })?;
        let user = self.user.as_deref().unwrap_or_default();
        if !first.authzid.is_empty() && first.authzid != user {
            return Err(SaslFailure::Specific(
                "Authentication failed: Client requested an authorization id that is different from username".into(),
            ));
        }
        if credential.iterations < MIN_ITERATIONS {
            return Err(SaslFailure::Generic(format!(
                "Iterations {} is less than the minimum {MIN_ITERATIONS}",
                credential.iterations
            )));
        }
        let mut random = [0u8; 18];
        ring::rand::SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| SaslFailure::Generic("no random source".into()))?;
        let nonce = format!(
            "{}{}",
            first.nonce,
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random)
        );
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        self.state = State::Final {
            gs2_header: first.gs2_header,
            client_first_bare: first.bare,
            server_first: server_first.clone(),
            nonce,
            credential,
        };
        Ok(server_first.into_bytes())
    }

    /// Checks the client's final message and returns the server's final message.
    pub(crate) fn client_final(&mut self, token: &[u8]) -> Result<Vec<u8>, SaslFailure> {
        let State::Final {
            gs2_header,
            client_first_bare,
            server_first,
            nonce,
            credential,
        } = std::mem::replace(&mut self.state, State::First)
        else {
            return Err(SaslFailure::Generic(
                "unexpected client-final message".into(),
            ));
        };
        let text = std::str::from_utf8(token)
            .map_err(|_| SaslFailure::Generic("client-final message is not UTF-8".into()))?;
        let bad = || SaslFailure::Generic("invalid SCRAM client final message".into());
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or_else(bad)?;
        let mut parts = without_proof.split(',');
        let binding = parts
            .next()
            .and_then(|p| p.strip_prefix("c="))
            .ok_or_else(bad)?;
        let their_nonce = parts
            .next()
            .and_then(|p| p.strip_prefix("r="))
            .ok_or_else(bad)?;
        if B64.decode(binding).ok().as_deref() != Some(gs2_header.as_bytes()) {
            return Err(SaslFailure::Generic("channel binding mismatch".into()));
        }
        // RFC 5802 wants the nonce of server-first back unchanged. librdkafka before 2.6.1
        // (Milvus 2.6 links 1.9.1) sends its own nonce once more in front of it; Kafka accepts
        // that since 3.8.1 by checking only the end, and so does this broker. The proof still
        // covers the message as sent.
        if !their_nonce.ends_with(nonce.as_str()) {
            return Err(SaslFailure::Generic(
                "Invalid client nonce in the final client message.".into(),
            ));
        }
        let proof = B64.decode(proof).map_err(|_| bad())?;
        let m = self.mechanism;
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature = m.mac(&credential.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(SaslFailure::Generic("Invalid client credentials".into()));
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let computed = digest::digest(m.digest(), &client_key);
        if !constant_time_eq(computed.as_ref(), &credential.stored_key) {
            return Err(SaslFailure::Generic("Invalid client credentials".into()));
        }
        let server_signature = m.mac(&credential.server_key, auth_message.as_bytes());
        self.state = State::Done;
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// A `saslname` with `=2C` and `=3D` decoded; `None` when another `=` escape occurs.
fn decode_saslname(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let esc = rest.get(i..i + 3)?;
        match esc {
            "=2C" => out.push(','),
            "=3D" => out.push('='),
            _ => return None,
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side written from RFC 5802, to drive the server.
    fn client_final(
        m: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        client_final_echoing(m, password, client_first_bare, server_first, "")
    }

    /// The same, sending `prefix` in front of the nonce it echoes.
    fn client_final_echoing(
        m: ScramMechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
        prefix: &str,
    ) -> (String, Vec<u8>) {
        let mut fields = server_first.split(',');
        let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
        let salt = B64
            .decode(fields.next().unwrap().strip_prefix("s=").unwrap())
            .unwrap();
        let iterations: u32 = fields
            .next()
            .unwrap()
            .strip_prefix("i=")
            .unwrap()
            .parse()
            .unwrap();
        let salted = m.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = m.mac(&salted, b"Client Key");
        let stored_key = digest::digest(m.digest(), &client_key);
        let without_proof = format!("c=biws,r={prefix}{nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = m.mac(stored_key.as_ref(), auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.mac(&salted, b"Server Key");
        let expected = m.mac(&server_key, auth.as_bytes());
        (
            format!("{without_proof},p={}", B64.encode(proof)),
            format!("v={}", B64.encode(expected)).into_bytes(),
        )
    }

    #[test]
    fn rfc7677_test_vector_credential() {
        // RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==,
        // 4096 iterations; the server signature it gives follows from ServerKey.
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let m = ScramMechanism::Sha256;
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let cred = ScramCredential::from_salted_password(m, &salt, &salted, 4096);
        let mut server = ScramServer::new(m);
        let first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
        assert_eq!(server.client_first(first.as_bytes()).unwrap(), "user");
        // Replay the RFC's exchange with its server nonce.
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        server.pending = None;
        server.state = State::Final {
            gs2_header: "n,,".into(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".into(),
            server_first: server_first.into(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into(),
            credential: cred,
        };
        let reply = server
            .client_final(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
            .unwrap();
        assert_eq!(
            reply,
            b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
        );
        assert_eq!(server.user(), Some("user"));
    }

    #[test]
    fn librdkafka_before_2_6_1_sends_its_nonce_twice_and_is_accepted_as_kafka_does() {
        let m = ScramMechanism::Sha512;
        let cred = ScramCredential::from_password(m, "s3cret", 4096);
        // librdkafka's doubled nonce, the RFC's, and any other prefix (Kafka checks the end).
        for prefix in ["abcdef", "", "zz"] {
            let mut server = ScramServer::new(m);
            let bare = "n=milvus,r=abcdef";
            server
                .client_first(format!("n,,{bare}").as_bytes())
                .unwrap();
            let sf = String::from_utf8(server.server_first(Some(cred.clone())).unwrap()).unwrap();
            let (cf, expected) = client_final_echoing(m, "s3cret", bare, &sf, prefix);
            assert_eq!(server.client_final(cf.as_bytes()), Ok(expected), "{prefix}");
        }
        // A nonce that does not end with the server's is refused.
        let mut server = ScramServer::new(m);
        let bare = "n=milvus,r=abcdef";
        server
            .client_first(format!("n,,{bare}").as_bytes())
            .unwrap();
        let sf = String::from_utf8(server.server_first(Some(cred.clone())).unwrap()).unwrap();
        let (cf, _) = client_final(m, "s3cret", bare, &sf);
        let truncated = cf.replacen(",p=", "X,p=", 1);
        assert_eq!(
            server.client_final(truncated.as_bytes()),
            Err(SaslFailure::Generic(
                "Invalid client nonce in the final client message.".into()
            ))
        );
    }

    #[test]
    fn exchanges_succeed_with_the_password_and_fail_without() {
        for m in ScramMechanism::ALL {
            let cred = ScramCredential::from_password(m, "s3cret", 4096);
            for (password, ok) in [("s3cret", true), ("wrong", false)] {
                let mut server = ScramServer::new(m);
                let bare = "n=al=2Cice,r=abcdef";
                let user = server
                    .client_first(format!("n,,{bare}").as_bytes())
                    .unwrap();
                assert_eq!(user, "al,ice");
                let sf =
                    String::from_utf8(server.server_first(Some(cred.clone())).unwrap()).unwrap();
                let (cf, expected) = client_final(m, password, bare, &sf);
                let result = server.client_final(cf.as_bytes());
                if ok {
                    assert_eq!(result.unwrap(), expected, "{m:?}");
                } else {
                    assert_eq!(
                        result,
                        Err(SaslFailure::Generic("Invalid client credentials".into()))
                    );
                }
            }
            assert!(cred.verify_password(m, "s3cret"));
            assert!(!cred.verify_password(m, "s3cret!"));
        }
    }

    #[test]
    fn unknown_users_bad_messages_and_authzids_fail() {
        let m = ScramMechanism::Sha256;
        let mut s = ScramServer::new(m);
        s.client_first(b"n,,n=bob,r=x").unwrap();
        assert!(matches!(s.server_first(None), Err(SaslFailure::Generic(_))));
        for bad in [
            &b"p=tls-unique,,n=bob,r=x"[..],
            b"n,,r=x",
            b"n,,n=bob",
            b"n,,n=b=2Xb,r=x",
            b"\xff",
        ] {
            assert!(
                ScramServer::new(m).client_first(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut s = ScramServer::new(m);
        s.client_first(b"n,a=eve,n=bob,r=x").unwrap();
        let cred = ScramCredential::from_password(m, "p", 4096);
        assert!(matches!(
            s.server_first(Some(cred)),
            Err(SaslFailure::Specific(_))
        ));
        // A final message before the first one.
        assert!(
            ScramServer::new(m)
                .client_final(b"c=biws,r=x,p=AA==")
                .is_err()
        );
    }

    #[test]
    fn credentials_serialize_without_secrets_in_debug() {
        let cred = ScramCredential::from_password(ScramMechanism::Sha512, "p", 4096);
        let json = serde_json::to_string(&cred).unwrap();
        let back: ScramCredential = serde_json::from_str(&json).unwrap();
        assert_eq!(back, cred);
        assert!(!format!("{cred:?}").contains("stored"));
    }
}
