//! Security of the Kafka front door: listeners with their security protocols, TLS, SASL
//! (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) and ACLs, configured with Kafka's own keys.
//!
//! * [`config`]: `listeners`, `advertised.listeners`, `listener.security.protocol.map`,
//!   `ssl.*`, `sasl.enabled.mechanisms`, `authorizer.class.name`, `super.users`,
//!   `allow.everyone.if.no.acl.found`, read from Kafka-style properties.
//! * [`tls`]: rustls server configurations from PEM files, and principals from client
//!   certificates.
//! * [`sasl`]: the server side of the SASL exchange a connection goes through before any
//!   other request (SaslHandshake, SaslAuthenticate, and the v0 unframed tokens).
//! * [`scram`] and [`credentials`]: SCRAM and the credential store.
//! * [`acl`]: ACLs and the authorizer.
//!
//! Nothing here decides which API checks what: that is the broker's dispatch
//! ([`crate::broker`]); the listener ([`crate::server`]) authenticates and builds the
//! [`Session`] every request carries.

pub mod acl;
pub mod config;
pub mod credentials;
pub mod sasl;
pub mod scram;
pub mod tls;

use scram::ScramMechanism;

/// The principal of a connection that did not authenticate (PLAINTEXT, or TLS without a
/// client certificate).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Kafka's security protocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    /// TCP.
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    /// The protocol of a name (case-insensitive, as Kafka reads them).
    pub fn from_name(name: &str) -> Option<SecurityProtocol> {
        use SecurityProtocol::*;
        [Plaintext, Ssl, SaslPlaintext, SaslSsl]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether connections speak TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether connections authenticate with SASL first.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// A SASL mechanism this broker serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SaslMechanism {
    /// PLAIN (RFC 4616).
    Plain,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    Scram(ScramMechanism),
}

impl SaslMechanism {
    /// Every mechanism served, in the default `sasl.enabled.mechanisms` order.
    pub const ALL: [SaslMechanism; 3] = [
        SaslMechanism::Plain,
        SaslMechanism::Scram(ScramMechanism::Sha256),
        SaslMechanism::Scram(ScramMechanism::Sha512),
    ];

    /// The mechanism name.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }

    /// The mechanism of a name (exact, as Kafka compares them).
    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Who sent a request, from where, through which listener: what authorization and the
/// listener-dependent answers (the broker's advertised address) need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `User:<name>` (SASL user, certificate subject, or `User:ANONYMOUS`).
    pub principal: String,
    /// The client's IP address, as ACL hosts name it.
    pub host: String,
    /// The listener's name.
    pub listener: String,
    /// The host clients of this listener are told to connect to.
    pub advertised_host: String,
    /// The port clients of this listener are told to connect to.
    pub advertised_port: i32,
    /// The connection's pause after a throttled response ([`crate::quotas`]).
    pub throttle: crate::quotas::ThrottleGate,
}

impl Session {
    /// An anonymous session of the listener advertised as `host:port`.
    pub fn anonymous(listener: &str, advertised_host: &str, advertised_port: i32) -> Session {
        Session {
            principal: ANONYMOUS.to_string(),
            host: "127.0.0.1".to_string(),
            listener: listener.to_string(),
            advertised_host: advertised_host.to_string(),
            advertised_port,
            throttle: Default::default(),
        }
    }
}
