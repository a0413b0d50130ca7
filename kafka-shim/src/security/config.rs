//! The security configuration of the Kafka front door, from Kafka's own property names.
//!
//! | key | meaning |
//! |---|---|
//! | `listeners` | `NAME://HOST:PORT,...` (an empty host listens on every interface) |
//! | `advertised.listeners` | what Metadata tells clients of each listener (default: `listeners`) |
//! | `listener.security.protocol.map` | `NAME:PROTOCOL,...` (default: the four protocol names map to themselves) |
//! | `ssl.keystore.location` | a PEM file with the certificate chain, and the private key unless `ssl.key.location` names one |
//! | `ssl.certificate.location`, `ssl.key.location` | the chain and the key as separate PEM files (librdkafka's names) |
//! | `ssl.truststore.location` (or `ssl.ca.location`) | PEM CA certificates client certificates are checked against |
//! | `ssl.keystore.type`, `ssl.truststore.type` | only `PEM` |
//! | `ssl.client.auth` | `none` (default), `requested` or `required` |
//! | `ssl.principal.mapping.rules` | only `DEFAULT`: the principal is `User:` and the subject's RFC 2253 name |
//! | `sasl.enabled.mechanisms` | from `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` (default: all three) |
//! | `authorizer.class.name` | `org.apache.kafka.metadata.authorizer.StandardAuthorizer` or `kafka.security.authorizer.AclAuthorizer` switches ACLs on; empty (default) leaves them off |
//! | `super.users` | `User:a;User:b` |
//! | `allow.everyone.if.no.acl.found` | `false` (default) or `true` |
//!
//! The `ssl.*` keys and `sasl.enabled.mechanisms` can be set for one listener as
//! `listener.name.<name in lower case>.<key>`, as in Kafka. Any other key is refused, so a
//! typo cannot leave a listener open.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::acl::AuthorizerConfig;
use super::{SaslMechanism, SecurityProtocol};

/// A configuration that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Whether and how TLS clients present certificates (`ssl.client.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// No certificate is asked for.
    #[default]
    None,
    /// A certificate is asked for; a client without one is anonymous.
    Requested,
    /// A certificate is required.
    Required,
}

/// Where a TLS listener finds its certificate, key and client CAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the certificate chain (and the key when `key` is `None`).
    pub certificate: PathBuf,
    /// PEM: the private key.
    pub key: Option<PathBuf>,
    /// PEM: the CAs client certificates must chain to.
    pub client_cas: Option<PathBuf>,
    /// `ssl.client.auth`.
    pub client_auth: ClientAuth,
}

/// One listener, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Its name (upper case, as Kafka normalizes it).
    pub name: String,
    /// Its security protocol.
    pub protocol: SecurityProtocol,
    /// The host to bind (empty: every interface).
    pub host: String,
    /// The port to bind (0: any free port).
    pub port: u16,
    /// The advertised host, when `advertised.listeners` names this listener.
    pub advertised: Option<(String, u16)>,
    /// TLS files (SSL and SASL_SSL listeners).
    pub tls: Option<TlsFiles>,
    /// Enabled SASL mechanisms (SASL listeners), in the configured order.
    pub sasl_mechanisms: Vec<SaslMechanism>,
}

/// The security configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// The listeners, in the configured order.
    pub listeners: Vec<ListenerSpec>,
    /// The authorizer, when ACLs are enforced.
    pub authorizer: Option<AuthorizerConfig>,
}

const AUTHORIZERS: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

const PER_LISTENER: &[&str] = &[
    "ssl.keystore.location",
    "ssl.keystore.type",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.ca.location",
    "ssl.client.auth",
    "ssl.principal.mapping.rules",
    "sasl.enabled.mechanisms",
];

const GLOBAL: &[&str] = &[
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "authorizer.class.name",
    "super.users",
    "allow.everyone.if.no.acl.found",
];

/// Parses `NAME://HOST:PORT`.
fn endpoint(text: &str) -> Result<(String, String, u16), ConfigError> {
    let (name, rest) = text
        .split_once("://")
        .ok_or_else(|| ConfigError(format!("`{text}` is not NAME://HOST:PORT")))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| ConfigError(format!("`{text}` has no port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| ConfigError(format!("`{text}`: the port is not a number")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() {
        return err(format!("`{text}` has no listener name"));
    }
    Ok((name.to_ascii_uppercase(), host.to_string(), port))
}

fn list(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Reads Java-properties text: `key=value` or `key: value` lines, `#` and `!` comments.
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some(i) = line.find(['=', ':']) else {
            return err(format!("line {}: `{line}` is not KEY=VALUE", n + 1));
        };
        out.insert(
            line[..i].trim().to_string(),
            line[i + 1..].trim().to_string(),
        );
    }
    Ok(out)
}

impl SecurityConfig {
    /// The configuration of `props` (see the module docs).
    pub fn from_properties(
        props: &BTreeMap<String, String>,
    ) -> Result<SecurityConfig, ConfigError> {
        let listeners_text = props
            .get("listeners")
            .ok_or_else(|| ConfigError("`listeners` is not set".into()))?;
        let mut protocol_map: BTreeMap<String, SecurityProtocol> = BTreeMap::new();
        match props.get("listener.security.protocol.map") {
            Some(text) => {
                for entry in list(text) {
                    let (name, proto) = entry.split_once(':').ok_or_else(|| {
                        ConfigError(format!(
                            "listener.security.protocol.map: `{entry}` is not NAME:PROTOCOL"
                        ))
                    })?;
                    let proto = SecurityProtocol::from_name(proto.trim()).ok_or_else(|| {
                        ConfigError(format!(
                            "listener.security.protocol.map: unknown security protocol `{proto}` (PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL)"
                        ))
                    })?;
                    protocol_map.insert(name.trim().to_ascii_uppercase(), proto);
                }
            }
            None => {
                use SecurityProtocol::*;
                for p in [Plaintext, Ssl, SaslPlaintext, SaslSsl] {
                    protocol_map.insert(p.name().to_string(), p);
                }
            }
        }
        // Every key must be known.
        for key in props.keys() {
            let known = GLOBAL.contains(&key.as_str())
                || PER_LISTENER.contains(&key.as_str())
                || key.strip_prefix("listener.name.").is_some_and(|rest| {
                    rest.split_once('.')
                        .is_some_and(|(_, k)| PER_LISTENER.contains(&k))
                });
            if !known {
                return err(format!(
                    "unknown or unsupported Kafka setting `{key}` (served: {}, and per listener: listener.name.<name>.{{{}}})",
                    GLOBAL
                        .iter()
                        .chain(PER_LISTENER)
                        .copied()
                        .collect::<Vec<_>>()
                        .join(", "),
                    PER_LISTENER.join(", ")
                ));
            }
        }
        let mut listeners: Vec<ListenerSpec> = Vec::new();
        for text in list(listeners_text) {
            let (name, host, port) = endpoint(text)?;
            if listeners.iter().any(|l| l.name == name) {
                return err(format!("listeners: the name {name} is used twice"));
            }
            if port != 0 && listeners.iter().any(|l| l.port == port && l.host == host) {
                return err(format!("listeners: {host}:{port} is used twice"));
            }
            let protocol = *protocol_map.get(&name).ok_or_else(|| {
                ConfigError(format!(
                    "listener {name} has no security protocol: add it to listener.security.protocol.map"
                ))
            })?;
            let lookup = |key: &str| -> Option<&String> {
                props
                    .get(&format!(
                        "listener.name.{}.{key}",
                        name.to_ascii_lowercase()
                    ))
                    .or_else(|| props.get(key))
            };
            let tls = if protocol.tls() {
                Some(tls_files(&name, &lookup)?)
            } else {
                None
            };
            let sasl_mechanisms = if protocol.sasl() {
                let text = lookup("sasl.enabled.mechanisms")
                    .map(String::as_str)
                    .unwrap_or("PLAIN,SCRAM-SHA-256,SCRAM-SHA-512");
                let mut ms = Vec::new();
                for m in list(text) {
                    let mech = SaslMechanism::from_name(m).ok_or_else(|| {
                        ConfigError(format!(
                            "listener {name}: SASL mechanism `{m}` is not served (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"
                        ))
                    })?;
                    if !ms.contains(&mech) {
                        ms.push(mech);
                    }
                }
                if ms.is_empty() {
                    return err(format!("listener {name}: sasl.enabled.mechanisms is empty"));
                }
                ms
            } else {
                Vec::new()
            };
            listeners.push(ListenerSpec {
                name,
                protocol,
                host,
                port,
                advertised: None,
                tls,
                sasl_mechanisms,
            });
        }
        if listeners.is_empty() {
            return err("`listeners` names no listener");
        }
        if let Some(text) = props.get("advertised.listeners") {
            for entry in list(text) {
                let (name, host, port) = endpoint(entry)?;
                let l = listeners
                    .iter_mut()
                    .find(|l| l.name == name)
                    .ok_or_else(|| {
                        ConfigError(format!(
                            "advertised.listeners: {name} is not one of the listeners"
                        ))
                    })?;
                if host.is_empty() || port == 0 {
                    return err(format!(
                        "advertised.listeners: `{entry}` must name a reachable HOST:PORT"
                    ));
                }
                if l.advertised.replace((host, port)).is_some() {
                    return err(format!("advertised.listeners: {name} is given twice"));
                }
            }
        }
        let authorizer = match props.get("authorizer.class.name").map(|s| s.trim()) {
            None | Some("") => None,
            Some(c) if AUTHORIZERS.contains(&c) => {
                let super_users = props
                    .get("super.users")
                    .map(|s| {
                        s.split(';')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                let allow = match props
                    .get("allow.everyone.if.no.acl.found")
                    .map(|s| s.trim().to_ascii_lowercase())
                    .as_deref()
                {
                    None | Some("false") => false,
                    Some("true") => true,
                    Some(other) => {
                        return err(format!(
                            "allow.everyone.if.no.acl.found: `{other}` is not true or false"
                        ));
                    }
                };
                Some(AuthorizerConfig {
                    super_users,
                    allow_everyone_if_no_acl_found: allow,
                })
            }
            Some(other) => {
                return err(format!(
                    "authorizer.class.name `{other}` is not served (use {})",
                    AUTHORIZERS.join(" or ")
                ));
            }
        };
        if authorizer.is_none()
            && (props.contains_key("super.users")
                || props.contains_key("allow.everyone.if.no.acl.found"))
        {
            return err(
                "super.users and allow.everyone.if.no.acl.found need an authorizer: set authorizer.class.name",
            );
        }
        Ok(SecurityConfig {
            listeners,
            authorizer,
        })
    }
}

fn tls_files<'a>(
    name: &str,
    lookup: &dyn Fn(&str) -> Option<&'a String>,
) -> Result<TlsFiles, ConfigError> {
    for key in ["ssl.keystore.type", "ssl.truststore.type"] {
        if let Some(t) = lookup(key)
            && !t.eq_ignore_ascii_case("PEM")
        {
            return err(format!(
                "listener {name}: {key}={t} is not served; certificates and keys are PEM files"
            ));
        }
    }
    if let Some(rules) = lookup("ssl.principal.mapping.rules")
        && rules.trim() != "DEFAULT"
    {
        return err(format!(
            "listener {name}: ssl.principal.mapping.rules other than DEFAULT are not served"
        ));
    }
    let certificate = lookup("ssl.certificate.location")
        .or_else(|| lookup("ssl.keystore.location"))
        .ok_or_else(|| {
            ConfigError(format!(
                "listener {name} uses TLS: set ssl.keystore.location (PEM with the certificate chain and key) or ssl.certificate.location and ssl.key.location"
            ))
        })?;
    let client_auth = match lookup("ssl.client.auth").map(|s| s.trim().to_ascii_lowercase()) {
        None => ClientAuth::None,
        Some(s) if s == "none" => ClientAuth::None,
        Some(s) if s == "requested" => ClientAuth::Requested,
        Some(s) if s == "required" => ClientAuth::Required,
        Some(s) => {
            return err(format!(
                "listener {name}: ssl.client.auth `{s}` is not none, requested or required"
            ));
        }
    };
    let client_cas = lookup("ssl.truststore.location")
        .or_else(|| lookup("ssl.ca.location"))
        .map(PathBuf::from);
    if client_auth != ClientAuth::None && client_cas.is_none() {
        return err(format!(
            "listener {name}: ssl.client.auth={} needs ssl.truststore.location (PEM CA certificates)",
            match client_auth {
                ClientAuth::Requested => "requested",
                _ => "required",
            }
        ));
    }
    Ok(TlsFiles {
        certificate: PathBuf::from(certificate),
        key: lookup("ssl.key.location").map(PathBuf::from),
        client_cas,
        client_auth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> BTreeMap<String, String> {
        parse_properties(text).unwrap()
    }

    #[test]
    fn listeners_protocols_and_advertised_addresses() {
        let c = SecurityConfig::from_properties(&props(
            "# a comment
             listeners=PLAINTEXT://127.0.0.1:9092,CLIENT://:9094,sasl_ssl://[::1]:9093
             advertised.listeners=CLIENT://kafka.example:19094
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CLIENT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL
             ssl.keystore.location=/certs/server.pem
             listener.name.client.sasl.enabled.mechanisms=SCRAM-SHA-512
             authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
             super.users=User:admin;User:ops",
        ))
        .unwrap();
        assert_eq!(c.listeners.len(), 3);
        let client = &c.listeners[1];
        assert_eq!(client.name, "CLIENT");
        assert_eq!(client.protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(client.host, "");
        assert_eq!(client.advertised, Some(("kafka.example".into(), 19094)));
        assert_eq!(
            client.sasl_mechanisms,
            vec![SaslMechanism::Scram(
                crate::security::scram::ScramMechanism::Sha512
            )]
        );
        let tls = &c.listeners[2];
        assert_eq!(tls.host, "::1");
        assert_eq!(tls.sasl_mechanisms.len(), 3);
        assert_eq!(
            tls.tls.as_ref().unwrap().certificate,
            PathBuf::from("/certs/server.pem")
        );
        let authz = c.authorizer.unwrap();
        assert!(authz.super_users.contains("User:ops"));
        assert!(!authz.allow_everyone_if_no_acl_found);
    }

    #[test]
    fn bad_configurations_are_refused_with_a_reason() {
        for (text, why) in [
            ("", "`listeners` is not set"),
            ("listeners=FOO://:1", "no security protocol"),
            ("listeners=SSL://:1", "uses TLS"),
            ("listeners=PLAINTEXT://:1,PLAINTEXT://:2", "used twice"),
            (
                "listeners=PLAINTEXT://:1\nadvertised.listeners=SSL://h:1",
                "not one of",
            ),
            (
                "listeners=PLAINTEXT://:1\nssl.keystore.pasword=x",
                "unknown",
            ),
            (
                "listeners=SASL_PLAINTEXT://:1\nsasl.enabled.mechanisms=GSSAPI",
                "not served",
            ),
            (
                "listeners=PLAINTEXT://:1\nauthorizer.class.name=x.Y",
                "not served",
            ),
            (
                "listeners=PLAINTEXT://:1\nsuper.users=User:a",
                "need an authorizer",
            ),
            (
                "listeners=SSL://:1\nssl.keystore.location=a\nssl.client.auth=required",
                "truststore",
            ),
            (
                "listeners=SSL://:1\nssl.keystore.location=a\nssl.keystore.type=JKS",
                "PEM",
            ),
            ("listeners=PLAINTEXT://:x", "not a number"),
        ] {
            let e = SecurityConfig::from_properties(&props(text)).unwrap_err();
            assert!(e.0.contains(why), "{text:?}: {e}");
        }
    }
}
