//! The server side of SASL authentication on a SASL listener, as Kafka 3.9's
//! `SaslServerAuthenticator` runs it.
//!
//! A connection starts unauthenticated. ApiVersions (answered by the listener) and one
//! SaslHandshake are allowed; anything else closes the connection. A handshake naming a
//! mechanism that is not enabled is answered with `UNSUPPORTED_SASL_MECHANISM` and the
//! enabled list, then the connection is closed. After a v1 handshake the exchange runs in
//! SaslAuthenticate requests; after a v0 handshake in unframed tokens (4-byte length and
//! the token, no request header). A failed exchange is answered with
//! `SASL_AUTHENTICATION_FAILED` (and Kafka's messages) after a 100 ms pause
//! (`connection.failed.authentication.delay.ms`), then the connection is closed. Sessions
//! do not expire (session lifetime 0: no re-authentication).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::SaslMechanism;
use super::credentials::Credentials;
use super::scram::{SaslFailure, ScramServer};
use crate::error::{KafkaCode, ShimError};

/// Kafka's `connection.failed.authentication.delay.ms` default.
pub const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);

#[derive(Debug)]
enum State {
    /// Waiting for the handshake (ApiVersions may come first).
    Handshake,
    /// The exchange of `mechanism`; `framed` after a v1 handshake.
    Authenticate {
        mechanism: SaslMechanism,
        framed: bool,
        scram: Option<Box<ScramServer>>,
    },
    /// Done.
    Complete,
}

/// What the listener does after a SASL step.
#[derive(Debug)]
pub enum Step {
    /// Send `body` (with a response header of `header_version`, or unframed when `None`)
    /// and go on.
    Reply {
        /// The response header version; `None` for an unframed v0 token.
        header_version: Option<i16>,
        /// The response body (or token).
        body: BytesMut,
    },
    /// Send the reply, then the connection is authenticated as `principal`.
    Authenticated {
        /// The response header version; `None` for an unframed v0 token.
        header_version: Option<i16>,
        /// The response body (or token).
        body: BytesMut,
        /// `User:<name>`.
        principal: String,
    },
    /// Send the reply, if any, after [`FAILED_AUTHENTICATION_DELAY`] when `delay`, then
    /// close the connection.
    Fail {
        /// The reply: response header version and body.
        reply: Option<(i16, BytesMut)>,
        /// Wait before replying (failed authentication).
        delay: bool,
        /// Why, for the log.
        reason: String,
    },
}

/// The SASL state of one connection.
#[derive(Debug)]
pub(crate) struct Authenticator {
    mechanisms: Vec<SaslMechanism>,
    credentials: Credentials,
    state: State,
}

fn encode<T: Encodable>(msg: &T, version: i16) -> Result<BytesMut, ShimError> {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, version)
        .map_err(|e| ShimError::Encode(e.to_string()))?;
    Ok(buf)
}

impl Authenticator {
    /// A connection's authenticator for the enabled `mechanisms`.
    pub(crate) fn new(mechanisms: Vec<SaslMechanism>, credentials: Credentials) -> Authenticator {
        Authenticator {
            mechanisms,
            credentials,
            state: State::Handshake,
        }
    }

    /// Whether the next frame is an unframed token (after a v0 handshake).
    pub(crate) fn expects_raw_token(&self) -> bool {
        matches!(self.state, State::Authenticate { framed: false, .. })
    }

    /// Whether the handshake is done and the exchange runs (ApiVersions is then refused).
    pub(crate) fn in_exchange(&self) -> bool {
        matches!(self.state, State::Authenticate { .. })
    }

    fn mechanism_names(&self) -> Vec<StrBytes> {
        self.mechanisms
            .iter()
            .map(|m| StrBytes::from_static_str(m.name()))
            .collect()
    }

    /// A SaslHandshake request of `version`.
    pub(crate) fn handshake(
        &mut self,
        req: SaslHandshakeRequest,
        version: i16,
        header_version: i16,
    ) -> Result<Step, ShimError> {
        let mechanisms = self.mechanism_names();
        if !matches!(self.state, State::Handshake) {
            let body = encode(
                &SaslHandshakeResponse::default()
                    .with_error_code(KafkaCode::IllegalSaslState.code())
                    .with_mechanisms(mechanisms),
                version,
            )?;
            return Ok(Step::Fail {
                reply: Some((header_version, body)),
                delay: true,
                reason: "a second SaslHandshake during SASL authentication".into(),
            });
        }
        let asked = req.mechanism.as_str();
        match SaslMechanism::from_name(asked).filter(|m| self.mechanisms.contains(m)) {
            Some(mechanism) => {
                let body = encode(
                    &SaslHandshakeResponse::default().with_mechanisms(mechanisms),
                    version,
                )?;
                self.state = State::Authenticate {
                    mechanism,
                    framed: version >= 1,
                    scram: match mechanism {
                        SaslMechanism::Scram(m) => Some(Box::new(ScramServer::new(m))),
                        SaslMechanism::Plain => None,
                    },
                };
                Ok(Step::Reply {
                    header_version: Some(header_version),
                    body,
                })
            }
            None => {
                let body = encode(
                    &SaslHandshakeResponse::default()
                        .with_error_code(KafkaCode::UnsupportedSaslMechanism.code())
                        .with_mechanisms(mechanisms),
                    version,
                )?;
                Ok(Step::Fail {
                    reply: Some((header_version, body)),
                    delay: true,
                    reason: format!("SASL mechanism `{asked}` is not enabled"),
                })
            }
        }
    }

    /// A SaslAuthenticate request of `version`.
    pub(crate) async fn authenticate(
        &mut self,
        req: SaslAuthenticateRequest,
        version: i16,
        header_version: i16,
    ) -> Result<Step, ShimError> {
        let State::Authenticate {
            framed: true,
            mechanism,
            ..
        } = &self.state
        else {
            let body = encode(
                &SaslAuthenticateResponse::default()
                    .with_error_code(KafkaCode::IllegalSaslState.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "Unexpected SaslAuthenticate request before a SaslHandshake v1",
                    ))),
                version,
            )?;
            return Ok(Step::Fail {
                reply: Some((header_version, body)),
                delay: true,
                reason: "SaslAuthenticate without a v1 handshake".into(),
            });
        };
        let mechanism = *mechanism;
        match self.evaluate(&req.auth_bytes).await? {
            Ok((token, user)) => {
                let body = encode(
                    &SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token)),
                    version,
                )?;
                Ok(match user {
                    Some(user) => Step::Authenticated {
                        header_version: Some(header_version),
                        body,
                        principal: format!("User:{user}"),
                    },
                    None => Step::Reply {
                        header_version: Some(header_version),
                        body,
                    },
                })
            }
            Err(failure) => {
                let (message, reason) = match failure {
                    SaslFailure::Specific(m) => (m.clone(), m),
                    SaslFailure::Generic(detail) => (
                        format!(
                            "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                            mechanism.name()
                        ),
                        detail,
                    ),
                };
                let body = encode(
                    &SaslAuthenticateResponse::default()
                        .with_error_code(KafkaCode::SaslAuthenticationFailed.code())
                        .with_error_message(Some(StrBytes::from_string(message))),
                    version,
                )?;
                Ok(Step::Fail {
                    reply: Some((header_version, body)),
                    delay: true,
                    reason,
                })
            }
        }
    }

    /// An unframed token after a v0 handshake.
    pub(crate) async fn raw_token(&mut self, token: Bytes) -> Result<Step, ShimError> {
        match self.evaluate(&token).await? {
            Ok((reply, user)) => Ok(match user {
                Some(user) => Step::Authenticated {
                    header_version: None,
                    body: BytesMut::from(&reply[..]),
                    principal: format!("User:{user}"),
                },
                None => Step::Reply {
                    header_version: None,
                    body: BytesMut::from(&reply[..]),
                },
            }),
            Err(f) => Ok(Step::Fail {
                reply: None,
                delay: true,
                reason: format!("{f:?}"),
            }),
        }
    }

    /// One step of the exchange: the server's token and, when done, the user.
    async fn evaluate(
        &mut self,
        token: &[u8],
    ) -> Result<Result<(Vec<u8>, Option<String>), SaslFailure>, ShimError> {
        let State::Authenticate {
            mechanism, scram, ..
        } = &mut self.state
        else {
            return Ok(Err(SaslFailure::Generic("no exchange in progress".into())));
        };
        let result = match (mechanism, scram) {
            (SaslMechanism::Plain, _) => self.plain(token).await?,
            (SaslMechanism::Scram(m), Some(server)) => {
                if !server.awaiting_final() {
                    match server.client_first(token) {
                        Err(f) => Err(f),
                        Ok(user) => {
                            let credential = self.credentials.get(&user, *m).await?;
                            server.server_first(credential).map(|t| (t, None))
                        }
                    }
                } else {
                    server
                        .client_final(token)
                        .map(|t| (t, server.user().map(str::to_string)))
                }
            }
            (SaslMechanism::Scram(_), None) => {
                Err(SaslFailure::Generic("no SCRAM exchange".into()))
            }
        };
        match &result {
            Ok((_, Some(_))) => self.state = State::Complete,
            Ok(_) => {}
            Err(_) => self.state = State::Complete,
        }
        Ok(result)
    }

    async fn plain(
        &self,
        token: &[u8],
    ) -> Result<Result<(Vec<u8>, Option<String>), SaslFailure>, ShimError> {
        let Ok(text) = std::str::from_utf8(token) else {
            return Ok(Err(SaslFailure::Generic("PLAIN token is not UTF-8".into())));
        };
        let mut parts = text.splitn(3, '\0');
        let (Some(authzid), Some(user), Some(password)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Ok(Err(SaslFailure::Generic(
                "Invalid SASL/PLAIN response: expected 3 tokens".into(),
            )));
        };
        // Kafka reads the password up to the next NUL.
        let password = password.split('\0').next().unwrap_or_default();
        if user.is_empty() {
            return Ok(Err(SaslFailure::Generic(
                "Authentication failed: username not specified".into(),
            )));
        }
        if password.is_empty() {
            return Ok(Err(SaslFailure::Generic(
                "Authentication failed: password not specified".into(),
            )));
        }
        if !self.credentials.verify_plain(user, password).await? {
            return Ok(Err(SaslFailure::Specific(
                "Authentication failed: Invalid username or password".into(),
            )));
        }
        if !authzid.is_empty() && authzid != user {
            return Ok(Err(SaslFailure::Specific(
                "Authentication failed: Client requested an authorization id that is different from username".into(),
            )));
        }
        Ok(Ok((Vec::new(), Some(user.to_string()))))
    }
}
