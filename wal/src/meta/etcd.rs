//! [`EtcdKv`]: the key-value contract ([`super::kv`]) on a real etcd (v3 API, 3.4 or later),
//! through the `etcd-client` crate, and [`EtcdConfig`], the Go project's `etcd:` settings.
//!
//! This module owns the mapping between the contract and etcd's gRPC API, the time bound of
//! every call, and the translation of etcd's errors into [`KvError`]. It never interprets keys
//! or values: the Woodpecker layout lives above it, so Go clients and this one share an etcd.
//!
//! Three things about the client library shape the code:
//! * `etcd-client` connects lazily: `Client::connect` returns without talking to the server
//!   unless credentials are set, so [`EtcdKv::connect`] makes one cheap round trip (`Status`) to
//!   report an unreachable etcd at once.
//! * A request to an endpoint that cannot be reached waits in the client's load balancer for a
//!   connection that never comes; the per-request timeout of the transport does not cover that
//!   wait. Every call is therefore wrapped in a timer of `etcd.requestTimeout` here.
//! * A keep-alive answers on a stream whose first reply the library consumes, so
//!   [`Kv::lease_keep_alive`] renews twice on one stream to learn the TTL (one extra message on
//!   an open HTTP/2 stream).

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client as ec;
use serde::{Deserialize, Deserializer};

use super::kv::{
    Compare, CompareOp, CompareTarget, KeyValue, Kv, KvError, LeaseId, Revision, Txn, TxnOp,
    TxnOpResult, TxnResult,
};

/// Interval of HTTP/2 keep-alive pings. etcd answers pings that come more often than its
/// `--grpc-keepalive-min-time` (5 s by default) with GOAWAY, and it does not accept pings on a
/// connection without open streams, so pings are only sent while a call is in flight.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Largest response accepted. The transport's default (4 MiB) is too small for a prefix read of
/// a long log's segments; Go's etcd client allows `math.MaxInt32` bytes, and so do we.
const MAX_RESPONSE_BYTES: usize = i32::MAX as usize;

// --- settings ------------------------------------------------------------------------------

/// A setting of the `etcd:` section is missing or wrong; `setting` names the YAML key to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting `{setting}`: {message}")]
pub struct EtcdConfigError {
    /// The YAML key, such as `etcd.endpoints`.
    pub setting: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl EtcdConfigError {
    fn new(setting: impl Into<String>, message: impl Into<String>) -> Self {
        EtcdConfigError {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

/// The `etcd:` section of `woodpecker.yaml` (and of Milvus's `milvus.yaml`), with the Go
/// project's key names and defaults.
///
/// Keys this crate does not act on (`log`, `use.embed`, `data.dir`: the Go process's embedded
/// etcd server) are accepted so that a Go configuration file loads unchanged. An empty YAML value
/// (`userName:`) reads as empty. `endpoints` may be a list or one comma-separated string (the
/// form of Milvus's `ETCD_ENDPOINTS` environment variable); each endpoint is `host:port`,
/// `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EtcdConfig {
    /// `endpoints`: the etcd members to talk to (default `[localhost:2379]`).
    #[serde(deserialize_with = "endpoint_list")]
    pub endpoints: Vec<String>,
    /// `rootPath`: root of the keys of this deployment (default `by-dev`).
    #[serde(deserialize_with = "nullable")]
    pub root_path: String,
    /// `metaSubPath` (default `meta`).
    #[serde(deserialize_with = "nullable")]
    pub meta_sub_path: String,
    /// `kvSubPath` (default `kv`).
    #[serde(deserialize_with = "nullable")]
    pub kv_sub_path: String,
    /// `log`: the Go embedded etcd server's logging (accepted, not acted on).
    #[serde(deserialize_with = "nullable")]
    pub log: EtcdLogConfig,
    /// `ssl`: TLS to etcd.
    #[serde(deserialize_with = "nullable")]
    pub ssl: EtcdSslConfig,
    /// `requestTimeout`: bound of every etcd call, in milliseconds (default 10000).
    #[serde(deserialize_with = "nullable")]
    pub request_timeout: u64,
    /// `use`: `use.embed` starts an in-process etcd server in Go (accepted, not acted on: the
    /// embedded metadata store plays that part here).
    #[serde(deserialize_with = "nullable")]
    pub r#use: EtcdUseConfig,
    /// `data`: `data.dir` of the Go embedded etcd server (accepted, not acted on).
    #[serde(deserialize_with = "nullable")]
    pub data: EtcdDataConfig,
    /// `auth`: user name and password authentication.
    #[serde(deserialize_with = "nullable")]
    pub auth: EtcdAuthConfig,
}

impl Default for EtcdConfig {
    fn default() -> Self {
        EtcdConfig {
            endpoints: vec!["localhost:2379".to_string()],
            root_path: "by-dev".to_string(),
            meta_sub_path: "meta".to_string(),
            kv_sub_path: "kv".to_string(),
            log: EtcdLogConfig::default(),
            ssl: EtcdSslConfig::default(),
            request_timeout: 10_000,
            r#use: EtcdUseConfig::default(),
            data: EtcdDataConfig::default(),
            auth: EtcdAuthConfig::default(),
        }
    }
}

/// `etcd.log` (accepted for compatibility; logging goes through `tracing`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EtcdLogConfig {
    /// `level` (default `info`).
    #[serde(deserialize_with = "nullable")]
    pub level: String,
    /// `path` (default `stdout`).
    #[serde(deserialize_with = "nullable")]
    pub path: String,
}

impl Default for EtcdLogConfig {
    fn default() -> Self {
        EtcdLogConfig {
            level: "info".to_string(),
            path: "stdout".to_string(),
        }
    }
}

/// `etcd.ssl`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EtcdSslConfig {
    /// `enabled`: talk TLS to etcd (default false).
    pub enabled: bool,
    /// `tlsCert`: PEM client certificate, for mutual TLS (with `tlsKey`).
    #[serde(deserialize_with = "nullable")]
    pub tls_cert: String,
    /// `tlsKey`: PEM private key of `tlsCert`.
    #[serde(deserialize_with = "nullable")]
    pub tls_key: String,
    /// `tlsCACert`: PEM certificate of the CA that signed etcd's server certificates.
    #[serde(
        rename = "tlsCACert",
        alias = "tlsCaCert",
        deserialize_with = "nullable"
    )]
    pub tls_ca_cert: String,
    /// `tlsMinVersion`: `1.0`, `1.1`, `1.2` or `1.3` (default `1.3`). The TLS stack here speaks
    /// only 1.2 and 1.3, so lower minimums mean 1.2; a minimum of 1.3 cannot be enforced by the
    /// transport and is logged as a warning at connect.
    #[serde(deserialize_with = "nullable")]
    pub tls_min_version: String,
}

impl Default for EtcdSslConfig {
    fn default() -> Self {
        EtcdSslConfig {
            enabled: false,
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca_cert: String::new(),
            tls_min_version: "1.3".to_string(),
        }
    }
}

/// `etcd.use` (accepted for compatibility).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default)]
pub struct EtcdUseConfig {
    /// `embed`: Go starts an in-process etcd server. Not acted on by [`EtcdKv`].
    pub embed: bool,
}

/// `etcd.data` (accepted for compatibility).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct EtcdDataConfig {
    /// `dir`: data directory of the Go embedded etcd server (default `default.etcd`).
    #[serde(deserialize_with = "nullable")]
    pub dir: String,
}

impl Default for EtcdDataConfig {
    fn default() -> Self {
        EtcdDataConfig {
            dir: "default.etcd".to_string(),
        }
    }
}

/// `etcd.auth`. The password never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct EtcdAuthConfig {
    /// `enabled`: authenticate with `userName` and `password` (default false).
    pub enabled: bool,
    /// `userName`.
    #[serde(deserialize_with = "nullable")]
    pub user_name: String,
    /// `password`.
    #[serde(deserialize_with = "nullable")]
    pub password: String,
}

impl fmt::Debug for EtcdAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = if self.password.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("EtcdAuthConfig")
            .field("enabled", &self.enabled)
            .field("user_name", &self.user_name)
            .field("password", &password)
            .finish()
    }
}

/// A missing or `null` value reads as the type's default (`userName:` in the Go file).
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `endpoints`: a list of strings, or one string of comma-separated endpoints.
fn endpoint_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Form {
        One(String),
        Many(Vec<String>),
    }
    let raw = match Option::<Form>::deserialize(d)? {
        None => Vec::new(),
        Some(Form::One(s)) => vec![s],
        Some(Form::Many(v)) => v,
    };
    Ok(raw
        .iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

impl EtcdConfig {
    /// `requestTimeout` as a duration.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout)
    }

    /// The URLs dialled, one per endpoint: `host:port` gets `http://`, or `https://` when
    /// `ssl.enabled`.
    pub(crate) fn endpoint_urls(&self) -> Result<Vec<String>, EtcdConfigError> {
        if self.endpoints.is_empty() {
            return Err(EtcdConfigError::new(
                "etcd.endpoints",
                "empty; list at least one etcd member, such as localhost:2379",
            ));
        }
        self.endpoints
            .iter()
            .map(|e| endpoint_url(e, self.ssl.enabled))
            .collect()
    }

    /// Checks every value [`EtcdKv::connect`] uses and names the key of the first wrong one.
    /// Certificate files are checked for existence (their contents at connect).
    pub fn validate(&self) -> Result<(), EtcdConfigError> {
        self.endpoint_urls()?;
        if self.request_timeout == 0 {
            return Err(EtcdConfigError::new(
                "etcd.requestTimeout",
                "must be greater than 0 (milliseconds)",
            ));
        }
        if self.ssl.enabled {
            let ssl = &self.ssl;
            if ssl.tls_ca_cert.trim().is_empty() {
                return Err(EtcdConfigError::new(
                    "etcd.ssl.tlsCACert",
                    "empty while etcd.ssl.enabled is true; name the PEM file of the CA that \
                     signed etcd's certificates",
                ));
            }
            require_file("etcd.ssl.tlsCACert", &ssl.tls_ca_cert)?;
            match (
                ssl.tls_cert.trim().is_empty(),
                ssl.tls_key.trim().is_empty(),
            ) {
                (true, true) => {}
                (false, false) => {
                    require_file("etcd.ssl.tlsCert", &ssl.tls_cert)?;
                    require_file("etcd.ssl.tlsKey", &ssl.tls_key)?;
                }
                (false, true) => {
                    return Err(EtcdConfigError::new(
                        "etcd.ssl.tlsKey",
                        "empty while etcd.ssl.tlsCert is set; a client certificate needs its key",
                    ));
                }
                (true, false) => {
                    return Err(EtcdConfigError::new(
                        "etcd.ssl.tlsCert",
                        "empty while etcd.ssl.tlsKey is set; a client key needs its certificate",
                    ));
                }
            }
            match ssl.tls_min_version.trim() {
                "" | "1.0" | "1.1" | "1.2" | "1.3" => {}
                other => {
                    return Err(EtcdConfigError::new(
                        "etcd.ssl.tlsMinVersion",
                        format!("`{other}` is not one of 1.0, 1.1, 1.2, 1.3"),
                    ));
                }
            }
        }
        if self.auth.enabled {
            if self.auth.user_name.trim().is_empty() {
                return Err(EtcdConfigError::new(
                    "etcd.auth.userName",
                    "empty while etcd.auth.enabled is true",
                ));
            }
            if self.auth.password.is_empty() {
                return Err(EtcdConfigError::new(
                    "etcd.auth.password",
                    "empty while etcd.auth.enabled is true",
                ));
            }
        }
        Ok(())
    }
}

fn require_file(setting: &str, path: &str) -> Result<(), EtcdConfigError> {
    if Path::new(path.trim()).is_file() {
        Ok(())
    } else {
        Err(EtcdConfigError::new(
            setting,
            format!("no such file: {}", path.trim()),
        ))
    }
}

/// The URL dialled for one configured endpoint.
fn endpoint_url(raw: &str, tls: bool) -> Result<String, EtcdConfigError> {
    let trimmed = raw.trim().trim_end_matches('/');
    let bad = |why: String| EtcdConfigError::new("etcd.endpoints", why);
    let (scheme, authority) = if let Some(rest) = trimmed.strip_prefix("http://") {
        if tls {
            return Err(bad(format!(
                "`{raw}` is plain http while etcd.ssl.enabled is true; write https://… or host:port"
            )));
        }
        ("http", rest)
    } else if let Some(rest) = trimmed.strip_prefix("https://") {
        if !tls {
            return Err(EtcdConfigError::new(
                "etcd.ssl.enabled",
                format!(
                    "endpoint `{raw}` asks for TLS: set etcd.ssl.enabled: true and \
                     etcd.ssl.tlsCACert"
                ),
            ));
        }
        ("https", rest)
    } else if trimmed.contains("://") {
        return Err(bad(format!(
            "`{raw}`: only host:port, http://host:port and https://host:port are supported"
        )));
    } else {
        (if tls { "https" } else { "http" }, trimmed)
    };
    if authority.is_empty()
        || authority.contains(['/', '?', '#', '@'])
        || authority.contains(char::is_whitespace)
    {
        return Err(bad(format!("`{raw}` is not host:port")));
    }
    // `[v6]:port`, `[v6]`, `host:port` or `host`.
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| bad(format!("`{raw}`: unclosed `[` in an IPv6 address")))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad(format!("`{raw}` is not [address]:port")))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || (host.contains(':') && !authority.starts_with('[')) {
        return Err(bad(format!(
            "`{raw}` is not host:port (write IPv6 addresses as [address]:port)"
        )));
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(bad(format!("`{raw}`: port `{p}` is not in 1..65535"))),
        }
    }
    Ok(format!("{scheme}://{authority}"))
}

// --- the store -----------------------------------------------------------------------------

/// The key-value contract on a real etcd. Cheap to clone: clones share one connection pool.
#[derive(Clone)]
pub struct EtcdKv {
    inner: Arc<Inner>,
}

struct Inner {
    kv: ec::KvClient,
    lease: ec::LeaseClient,
    /// The endpoints, for messages.
    endpoint: String,
    /// `etcd.requestTimeout`.
    timeout: Duration,
    /// Kept so the client's endpoint set lives as long as the store.
    _client: ec::Client,
}

impl fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdKv")
            .field("endpoint", &self.inner.endpoint)
            .field("request_timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdKv {
    /// Connects to etcd and checks that it answers, within `requestTimeout`.
    ///
    /// An invalid setting gives [`KvError::Rejected`] naming the key; unreadable certificate
    /// files and refused credentials also give `Rejected`; an etcd that cannot be reached or
    /// does not answer in time gives [`KvError::Unavailable`] naming the endpoints.
    pub async fn connect(cfg: &EtcdConfig) -> Result<EtcdKv, KvError> {
        let label = cfg.endpoints.join(",");
        let rejected = |detail: String| KvError::Rejected {
            endpoint: label.clone(),
            detail,
        };
        cfg.validate().map_err(|e| rejected(e.to_string()))?;
        let urls = cfg.endpoint_urls().map_err(|e| rejected(e.to_string()))?;
        let endpoint = urls.join(",");
        let timeout = cfg.timeout();
        if cfg.r#use.embed {
            tracing::warn!(
                %endpoint,
                "etcd.use.embed is set: there is no in-process etcd here; connecting to etcd.endpoints"
            );
        }

        let mut options = ec::ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(timeout)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, timeout)
            .with_keep_alive_while_idle(false);
        if cfg.auth.enabled {
            // Simple tokens expire (etcd's --auth-token-ttl, 5 minutes by default).
            options = options
                .with_user(cfg.auth.user_name.trim(), cfg.auth.password.as_str())
                .with_auto_token_refresh(true);
        }
        if cfg.ssl.enabled {
            options = options.with_tls(
                tls_options(&cfg.ssl)
                    .await
                    .map_err(|e| rejected(e.to_string()))?,
            );
            if cfg.ssl.tls_min_version.trim() == "1.3" {
                tracing::warn!(
                    %endpoint,
                    "etcd.ssl.tlsMinVersion 1.3 is not enforced: the TLS stack negotiates 1.2 or 1.3"
                );
            }
        }

        let store = Bound {
            endpoint: &endpoint,
            timeout,
        };
        // Without credentials `Client::connect` does not talk to the server (with them it
        // authenticates): `Status` is the cheap round trip that proves etcd answers.
        let (client, status) = store
            .run("connect", None, async {
                let client = ec::Client::connect(&urls, Some(options)).await?;
                let status = client.maintenance_client().status().await?;
                Ok((client, status))
            })
            .await?;
        tracing::debug!(%endpoint, version = status.version(), "connected to etcd");

        Ok(EtcdKv {
            inner: Arc::new(Inner {
                kv: client
                    .kv_client()
                    .max_decoding_message_size(MAX_RESPONSE_BYTES),
                lease: client.lease_client(),
                endpoint,
                timeout,
                _client: client,
            }),
        })
    }

    fn bound(&self) -> Bound<'_> {
        Bound {
            endpoint: &self.inner.endpoint,
            timeout: self.inner.timeout,
        }
    }

    fn header_revision(&self, header: Option<&ec::ResponseHeader>) -> Result<Revision, KvError> {
        header
            .map(|h| h.revision())
            .ok_or_else(|| KvError::Corrupt {
                endpoint: self.inner.endpoint.clone(),
                detail: "etcd answered without a response header".to_string(),
            })
    }

    fn key_value(&self, kv: ec::KeyValue) -> Result<KeyValue, KvError> {
        let (create_revision, mod_revision, version, lease) = (
            kv.create_revision(),
            kv.mod_revision(),
            kv.version(),
            kv.lease(),
        );
        let (key, value) = kv.into_key_value();
        let key = String::from_utf8(key).map_err(|e| KvError::Corrupt {
            endpoint: self.inner.endpoint.clone(),
            detail: format!("key 0x{} is not UTF-8", hex::encode(e.as_bytes())),
        })?;
        Ok(KeyValue {
            key,
            value: Bytes::from(value),
            create_revision,
            mod_revision,
            version,
            lease,
        })
    }

    fn key_values(&self, kvs: Vec<ec::KeyValue>) -> Result<Vec<KeyValue>, KvError> {
        kvs.into_iter().map(|kv| self.key_value(kv)).collect()
    }
}

async fn tls_options(ssl: &EtcdSslConfig) -> Result<ec::TlsOptions, EtcdConfigError> {
    async fn read(setting: &str, path: &str) -> Result<Vec<u8>, EtcdConfigError> {
        crate::clock::blocking::fs::read(path.trim())
            .await
            .map_err(|e| EtcdConfigError::new(setting, format!("cannot read {}: {e}", path.trim())))
    }
    let ca = read("etcd.ssl.tlsCACert", &ssl.tls_ca_cert).await?;
    let mut tls = ec::TlsOptions::new().ca_certificate(ec::Certificate::from_pem(ca));
    if !ssl.tls_cert.trim().is_empty() {
        let cert = read("etcd.ssl.tlsCert", &ssl.tls_cert).await?;
        let key = read("etcd.ssl.tlsKey", &ssl.tls_key).await?;
        tls = tls.identity(ec::Identity::from_pem(cert, key));
    }
    Ok(tls)
}

/// The time bound and error translation of one call.
#[derive(Clone, Copy)]
struct Bound<'a> {
    endpoint: &'a str,
    timeout: Duration,
}

impl Bound<'_> {
    /// Runs `fut` within the request timeout. `lease` is the lease the request names, for
    /// [`KvError::LeaseNotFound`].
    async fn run<T>(
        self,
        what: &str,
        lease: Option<LeaseId>,
        fut: impl Future<Output = Result<T, ec::Error>>,
    ) -> Result<T, KvError> {
        // The timer is the transport's, not the engine clock's: it bounds a network call to a
        // real server, whose own time cannot be simulated.
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            // The transport's own timer (the same duration) often fires first.
            Ok(Err(e)) if is_transport_timeout(&e) => Err(self.timed_out(what)),
            Ok(Err(e)) => Err(classify(self.endpoint, what, e, lease)),
            Err(_) => Err(self.timed_out(what)),
        }
    }

    fn timed_out(self, what: &str) -> KvError {
        KvError::Unavailable {
            endpoint: self.endpoint.to_string(),
            detail: format!(
                "{what}: no answer within {} ms (etcd.requestTimeout); a write may or may not \
                 have been applied",
                self.timeout.as_millis()
            ),
        }
    }
}

/// Whether the error is tonic's request timeout (`ConnectOptions::with_timeout`).
fn is_transport_timeout(e: &ec::Error) -> bool {
    match e {
        ec::Error::GRpcStatus(status) => {
            matches!(
                status.code(),
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
            ) && status.message().contains("Timeout expired")
        }
        _ => false,
    }
}

/// A message and the chain of its sources, on one line, without the repetitions of wrapped
/// messages ("transport error: transport error: ...").
fn chain(first: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    let mut parts = vec![first];
    while let Some(cause) = source {
        let c = cause.to_string();
        match parts.last_mut() {
            Some(last) if c.starts_with(last.as_str()) => *last = c,
            Some(last) if last.contains(&c) => {}
            _ => parts.push(c),
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// Translates an `etcd-client` error into the contract's kinds.
fn classify(endpoint: &str, what: &str, err: ec::Error, lease: Option<LeaseId>) -> KvError {
    use tonic::Code;
    enum Kind {
        Unavailable,
        Rejected,
        Corrupt,
        LeaseNotFound,
    }
    let detail = match &err {
        ec::Error::GRpcStatus(status) => format!(
            "{what}: {:?}: {}",
            status.code(),
            chain(
                status.message().to_string(),
                std::error::Error::source(status)
            )
        ),
        // `etcd_client::Error` does not expose its inner error as a source.
        ec::Error::TransportError(e) => {
            let source = std::error::Error::source(e);
            format!("{what}: {}", chain(e.to_string(), source))
        }
        other => format!("{what}: {other}"),
    };
    let kind = match &err {
        // A certificate etcd or we refuse will be refused again: a setting to fix.
        _ if detail.contains("invalid peer certificate") => Kind::Rejected,
        ec::Error::GRpcStatus(status) => {
            let msg = status.message();
            match status.code() {
                Code::NotFound if msg.contains("lease not found") => Kind::LeaseNotFound,
                // "etcdserver: too many requests" is load shedding; "database space exceeded"
                // needs an operator.
                Code::ResourceExhausted if msg.contains("too many requests") => Kind::Unavailable,
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::Unknown
                | Code::Internal => Kind::Unavailable,
                Code::DataLoss => Kind::Corrupt,
                _ => Kind::Rejected,
            }
        }
        ec::Error::LeaseKeepAliveError(msg) if msg.contains("lease not found") => {
            Kind::LeaseNotFound
        }
        ec::Error::InvalidArgs(_)
        | ec::Error::InvalidUri(_)
        | ec::Error::InvalidMetadataValue(_)
        | ec::Error::ElectError(_) => Kind::Rejected,
        ec::Error::Utf8Error(_) => Kind::Corrupt,
        _ => Kind::Unavailable,
    };
    let endpoint = endpoint.to_string();
    match (kind, lease) {
        (Kind::LeaseNotFound, Some(lease)) => KvError::LeaseNotFound { lease },
        (Kind::LeaseNotFound | Kind::Rejected, _) => KvError::Rejected { endpoint, detail },
        (Kind::Unavailable, _) => KvError::Unavailable { endpoint, detail },
        (Kind::Corrupt, _) => KvError::Corrupt { endpoint, detail },
    }
}

/// etcd's TTL for a requested lease duration: whole seconds, rounded up, at least 1.
fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

fn etcd_compare(c: Compare) -> ec::Compare {
    let op = match c.op {
        CompareOp::Equal => ec::CompareOp::Equal,
        CompareOp::NotEqual => ec::CompareOp::NotEqual,
        CompareOp::Greater => ec::CompareOp::Greater,
        CompareOp::Less => ec::CompareOp::Less,
    };
    match c.target {
        CompareTarget::Value(v) => ec::Compare::value(c.key, op, Vec::from(v)),
        CompareTarget::CreateRevision(r) => ec::Compare::create_revision(c.key, op, r),
        CompareTarget::ModRevision(r) => ec::Compare::mod_revision(c.key, op, r),
        CompareTarget::Version(v) => ec::Compare::version(c.key, op, v),
    }
}

fn etcd_op(op: TxnOp) -> ec::TxnOp {
    match op {
        TxnOp::Put { key, value, lease } => {
            ec::TxnOp::put(key, Vec::from(value), put_options(lease))
        }
        TxnOp::Get { key } => ec::TxnOp::get(key, None),
        TxnOp::GetPrefix { prefix } => {
            ec::TxnOp::get(prefix, Some(ec::GetOptions::new().with_prefix()))
        }
        TxnOp::Delete { key } => ec::TxnOp::delete(key, None),
        TxnOp::DeletePrefix { prefix } => {
            ec::TxnOp::delete(prefix, Some(ec::DeleteOptions::new().with_prefix()))
        }
    }
}

fn put_options(lease: Option<LeaseId>) -> Option<ec::PutOptions> {
    lease
        .filter(|&l| l != 0)
        .map(|l| ec::PutOptions::new().with_lease(l))
}

/// The first lease a transaction's puts name: the one etcd reports as missing, if any.
fn txn_lease(txn: &Txn) -> Option<LeaseId> {
    txn.success
        .iter()
        .chain(&txn.failure)
        .find_map(|op| match op {
            TxnOp::Put { lease: Some(l), .. } if *l != 0 => Some(*l),
            _ => None,
        })
}

#[async_trait]
impl Kv for EtcdKv {
    fn endpoint(&self) -> String {
        self.inner.endpoint.clone()
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, KvError> {
        let mut kv = self.inner.kv.clone();
        let mut resp = self.bound().run("get", None, kv.get(key, None)).await?;
        match resp.take_kvs().into_iter().next() {
            Some(found) => Ok(Some(self.key_value(found)?)),
            None => Ok(None),
        }
    }

    async fn get_prefix(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), KvError> {
        let mut kv = self.inner.kv.clone();
        // Without a sort order etcd returns a range in key (byte) order.
        let mut resp = self
            .bound()
            .run(
                "get prefix",
                None,
                kv.get(prefix, Some(ec::GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = self.header_revision(resp.header())?;
        Ok((self.key_values(resp.take_kvs())?, revision))
    }

    async fn has_prefix(&self, prefix: &str) -> Result<bool, KvError> {
        let mut kv = self.inner.kv.clone();
        let options = ec::GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_limit(1);
        let resp = self
            .bound()
            .run("get prefix", None, kv.get(prefix, Some(options)))
            .await?;
        Ok(!resp.kvs().is_empty())
    }

    async fn put(
        &self,
        key: &str,
        value: Bytes,
        lease: Option<LeaseId>,
    ) -> Result<Revision, KvError> {
        let mut kv = self.inner.kv.clone();
        let resp = self
            .bound()
            .run(
                "put",
                lease,
                kv.put(key, Vec::from(value), put_options(lease)),
            )
            .await?;
        self.header_revision(resp.header())
    }

    async fn delete(&self, key: &str) -> Result<u64, KvError> {
        let mut kv = self.inner.kv.clone();
        let resp = self
            .bound()
            .run("delete", None, kv.delete(key, None))
            .await?;
        Ok(u64::try_from(resp.deleted()).unwrap_or(0))
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, KvError> {
        let lease = txn_lease(&txn);
        let (n_success, n_failure) = (txn.success.len(), txn.failure.len());
        let request = ec::Txn::new()
            .when(
                txn.compares
                    .into_iter()
                    .map(etcd_compare)
                    .collect::<Vec<_>>(),
            )
            .and_then(txn.success.into_iter().map(etcd_op).collect::<Vec<_>>())
            .or_else(txn.failure.into_iter().map(etcd_op).collect::<Vec<_>>());
        let mut kv = self.inner.kv.clone();
        let resp = self.bound().run("txn", lease, kv.txn(request)).await?;
        let revision = self.header_revision(resp.header())?;
        let succeeded = resp.succeeded();
        let responses = resp.op_responses();
        let expected = if succeeded { n_success } else { n_failure };
        if responses.len() != expected {
            return Err(KvError::Corrupt {
                endpoint: self.inner.endpoint.clone(),
                detail: format!("txn: {} results for {expected} operations", responses.len()),
            });
        }
        let mut results = Vec::with_capacity(responses.len());
        for r in responses {
            results.push(match r {
                ec::TxnOpResponse::Put(_) => TxnOpResult::Put,
                ec::TxnOpResponse::Get(mut g) => TxnOpResult::Get(self.key_values(g.take_kvs())?),
                ec::TxnOpResponse::Delete(d) => {
                    TxnOpResult::Delete(u64::try_from(d.deleted()).unwrap_or(0))
                }
                ec::TxnOpResponse::Txn(_) => {
                    return Err(KvError::Corrupt {
                        endpoint: self.inner.endpoint.clone(),
                        detail: "txn: a nested transaction result that was never asked for"
                            .to_string(),
                    });
                }
            });
        }
        Ok(TxnResult {
            succeeded,
            revision,
            results,
        })
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<LeaseId, KvError> {
        let mut lease = self.inner.lease.clone();
        let resp = self
            .bound()
            .run("lease grant", None, lease.grant(ttl_seconds(ttl), None))
            .await?;
        if !resp.error().is_empty() {
            return Err(KvError::Rejected {
                endpoint: self.inner.endpoint.clone(),
                detail: format!("lease grant: {}", resp.error()),
            });
        }
        Ok(resp.id())
    }

    async fn lease_keep_alive(&self, id: LeaseId) -> Result<Duration, KvError> {
        let mut lease = self.inner.lease.clone();
        // The library reads the stream's first reply itself (and fails on TTL 0); the second
        // renewal's reply carries the TTL.
        let renew = async move {
            let (mut keeper, mut replies) = lease.keep_alive(id).await?;
            keeper.keep_alive().await?;
            replies.message().await
        };
        match self
            .bound()
            .run("lease keep-alive", Some(id), renew)
            .await?
        {
            Some(reply) if reply.ttl() > 0 => {
                Ok(Duration::from_secs(u64::try_from(reply.ttl()).unwrap_or(0)))
            }
            Some(_) => Err(KvError::LeaseNotFound { lease: id }),
            None => Err(KvError::Unavailable {
                endpoint: self.inner.endpoint.clone(),
                detail: "lease keep-alive: the stream closed before the reply".to_string(),
            }),
        }
    }

    async fn lease_revoke(&self, id: LeaseId) -> Result<(), KvError> {
        let mut lease = self.inner.lease.clone();
        match self
            .bound()
            .run("lease revoke", Some(id), lease.revoke(id))
            .await
        {
            Ok(_) | Err(KvError::LeaseNotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> EtcdConfig {
        #[derive(Deserialize)]
        struct Root {
            etcd: EtcdConfig,
        }
        serde_yaml_ng::from_str::<Root>(yaml).unwrap().etcd
    }

    /// The `etcd:` section of the Go project's `config/woodpecker.yaml`, as shipped.
    const GO_SECTION: &str = r#"
etcd:
  endpoints:
    - localhost:2379
  rootPath: by-dev
  metaSubPath: meta
  kvSubPath: kv
  log:
    level: info
    path: stdout
  ssl:
    enabled: false
    tlsCert: /path/to/etcd-client.pem
    tlsKey: /path/to/etcd-client-key.pem
    tlsCACert: /path/to/ca.pem
    tlsMinVersion: 1.3
  requestTimeout: 10000
  use:
    embed: false
  data:
    dir: default.etcd
  auth:
    enabled: false
    userName:
    password:
"#;

    #[test]
    fn the_go_reference_section_loads_and_validates() {
        let cfg = parse(GO_SECTION);
        assert_eq!(cfg.endpoints, ["localhost:2379"]);
        assert_eq!(cfg.root_path, "by-dev");
        assert_eq!(cfg.meta_sub_path, "meta");
        assert_eq!(cfg.kv_sub_path, "kv");
        assert_eq!(cfg.timeout(), Duration::from_secs(10));
        assert_eq!(cfg.ssl.tls_ca_cert, "/path/to/ca.pem");
        assert_eq!(cfg.ssl.tls_min_version, "1.3");
        assert!(!cfg.ssl.enabled && !cfg.auth.enabled && !cfg.r#use.embed);
        assert_eq!(cfg.data.dir, "default.etcd");
        assert_eq!(cfg.auth.user_name, "");
        // Placeholder certificate paths do not matter while ssl is off.
        cfg.validate().unwrap();
        assert_eq!(cfg.endpoint_urls().unwrap(), ["http://localhost:2379"]);
    }

    #[test]
    fn an_empty_section_takes_the_go_defaults() {
        let cfg = parse("etcd: {}\n");
        assert_eq!(cfg, EtcdConfig::default());
        let cfg = parse("etcd:\n  ssl:\n  auth:\n  log:\n");
        assert_eq!(cfg, EtcdConfig::default());
        assert_eq!(cfg.endpoints, ["localhost:2379"]);
        assert_eq!(cfg.root_path, "by-dev");
        assert_eq!(cfg.request_timeout, 10_000);
        assert_eq!(cfg.ssl.tls_min_version, "1.3");
        cfg.validate().unwrap();
    }

    #[test]
    fn endpoints_may_be_a_list_or_a_comma_separated_string() {
        let cfg = parse("etcd:\n  endpoints: a:2379, http://b:2379 ,c:1\n");
        assert_eq!(cfg.endpoints, ["a:2379", "http://b:2379", "c:1"]);
        assert_eq!(
            cfg.endpoint_urls().unwrap(),
            ["http://a:2379", "http://b:2379", "http://c:1"]
        );
        let cfg = parse("etcd:\n  endpoints: [\"[::1]:2379\", \"10.0.0.1:2379/\"]\n");
        assert_eq!(
            cfg.endpoint_urls().unwrap(),
            ["http://[::1]:2379", "http://10.0.0.1:2379"]
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let cfg = parse("etcd:\n  somethingNew: 1\n  ssl:\n    other: x\n");
        assert_eq!(cfg, EtcdConfig::default());
    }

    fn setting_of(cfg: &EtcdConfig) -> String {
        cfg.validate().unwrap_err().setting
    }

    #[test]
    fn validation_names_the_setting_to_fix() {
        let mut cfg = parse("etcd:\n  endpoints: []\n");
        assert_eq!(setting_of(&cfg), "etcd.endpoints");
        cfg.endpoints = vec!["unix:///run/etcd.sock".into()];
        assert_eq!(setting_of(&cfg), "etcd.endpoints");
        cfg.endpoints = vec!["host:notaport".into()];
        assert_eq!(setting_of(&cfg), "etcd.endpoints");
        cfg.endpoints = vec!["host:0".into()];
        assert_eq!(setting_of(&cfg), "etcd.endpoints");
        cfg.endpoints = vec!["::1:2379".into()];
        assert_eq!(setting_of(&cfg), "etcd.endpoints");
        cfg.endpoints = vec!["http://host:2379/path".into()];
        assert_eq!(setting_of(&cfg), "etcd.endpoints");
        cfg.endpoints = vec!["https://host:2379".into()];
        assert_eq!(setting_of(&cfg), "etcd.ssl.enabled");

        let mut cfg = EtcdConfig {
            request_timeout: 0,
            ..EtcdConfig::default()
        };
        assert_eq!(setting_of(&cfg), "etcd.requestTimeout");
        cfg.request_timeout = 1;

        cfg.auth.enabled = true;
        assert_eq!(setting_of(&cfg), "etcd.auth.userName");
        cfg.auth.user_name = "root".into();
        assert_eq!(setting_of(&cfg), "etcd.auth.password");
        cfg.auth.password = "secret".into();
        cfg.validate().unwrap();
    }

    #[test]
    fn ssl_needs_a_readable_ca_and_a_complete_client_pair() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, "pem").unwrap();
            p.to_string_lossy().into_owned()
        };
        let mut cfg = EtcdConfig::default();
        cfg.ssl.enabled = true;
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.setting, "etcd.ssl.tlsCACert");
        assert!(err.message.contains("empty"), "{err}");

        cfg.ssl.tls_ca_cert = dir
            .path()
            .join("missing.pem")
            .to_string_lossy()
            .into_owned();
        let err = cfg.validate().unwrap_err();
        assert_eq!(err.setting, "etcd.ssl.tlsCACert");
        assert!(err.message.contains("no such file"), "{err}");

        cfg.ssl.tls_ca_cert = file("ca.pem");
        cfg.validate().unwrap();
        assert_eq!(cfg.endpoint_urls().unwrap(), ["https://localhost:2379"]);

        cfg.ssl.tls_cert = file("client.pem");
        assert_eq!(setting_of(&cfg), "etcd.ssl.tlsKey");
        cfg.ssl.tls_key = dir.path().join("nokey.pem").to_string_lossy().into_owned();
        assert_eq!(setting_of(&cfg), "etcd.ssl.tlsKey");
        cfg.ssl.tls_key = file("client-key.pem");
        cfg.validate().unwrap();
        cfg.ssl.tls_cert = String::new();
        assert_eq!(setting_of(&cfg), "etcd.ssl.tlsCert");
        cfg.ssl.tls_cert = file("client.pem");

        cfg.ssl.tls_min_version = "1.4".into();
        assert_eq!(setting_of(&cfg), "etcd.ssl.tlsMinVersion");
        cfg.ssl.tls_min_version = "1.2".into();
        cfg.validate().unwrap();

        cfg.endpoints = vec!["http://localhost:2379".into()];
        assert_eq!(setting_of(&cfg), "etcd.endpoints");
        cfg.endpoints = vec!["https://localhost:2379".into()];
        cfg.validate().unwrap();
    }

    #[test]
    fn debug_output_hides_the_password() {
        let cfg = parse(
            "etcd:\n  auth:\n    enabled: true\n    userName: root\n    password: hunter2-secret\n",
        );
        assert_eq!(cfg.auth.password, "hunter2-secret");
        let shown = format!("{cfg:?} {cfg:#?} {:?}", cfg.auth);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("<redacted>") && shown.contains("root"),
            "{shown}"
        );
    }

    #[test]
    fn lease_ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(15)), 15);
        assert_eq!(ttl_seconds(Duration::MAX), i64::MAX);
    }

    #[test]
    fn etcd_errors_map_to_the_contract() {
        let status = |code, msg: &str| ec::Error::GRpcStatus(tonic::Status::new(code, msg));
        let ep = "http://127.0.0.1:2379";
        use tonic::Code;
        assert!(matches!(
            classify(
                ep,
                "put",
                status(Code::NotFound, "etcdserver: requested lease not found"),
                Some(7)
            ),
            KvError::LeaseNotFound { lease: 7 }
        ));
        assert!(matches!(
            classify(
                ep,
                "keep-alive",
                ec::Error::LeaseKeepAliveError("lease not found".into()),
                Some(9)
            ),
            KvError::LeaseNotFound { lease: 9 }
        ));
        match classify(
            ep,
            "txn",
            status(
                Code::InvalidArgument,
                "etcdserver: too many operations in txn request",
            ),
            None,
        ) {
            KvError::Rejected { endpoint, detail } => {
                assert_eq!(endpoint, ep);
                assert!(detail.contains("too many operations"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
        for (code, msg) in [
            (
                Code::InvalidArgument,
                "etcdserver: authentication failed, invalid user ID or password",
            ),
            (Code::PermissionDenied, "etcdserver: permission denied"),
            (
                Code::ResourceExhausted,
                "etcdserver: mvcc: database space exceeded",
            ),
            (Code::OutOfRange, "etcdserver: too large lease TTL"),
        ] {
            assert!(
                matches!(
                    classify(ep, "x", status(code, msg), None),
                    KvError::Rejected { .. }
                ),
                "{msg}"
            );
        }
        for (code, msg) in [
            (Code::Unavailable, "etcdserver: no leader"),
            (Code::Unavailable, "tcp connect error"),
            (Code::DeadlineExceeded, "etcdserver: request timed out"),
            (Code::ResourceExhausted, "etcdserver: too many requests"),
            (Code::Unknown, "transport error"),
        ] {
            match classify(ep, "get", status(code, msg), None) {
                KvError::Unavailable { endpoint, detail } => {
                    assert_eq!(endpoint, ep);
                    assert!(
                        detail.starts_with("get: ") && detail.contains(msg),
                        "{detail}"
                    );
                }
                other => panic!("{msg}: {other:?}"),
            }
        }
        assert!(matches!(
            classify(
                ep,
                "get",
                status(Code::DataLoss, "etcdserver: corrupt cluster"),
                None
            ),
            KvError::Corrupt { .. }
        ));
        // A server certificate our CA did not sign: retrying cannot help.
        assert!(matches!(
            classify(
                ep,
                "status",
                status(Code::Unavailable, "invalid peer certificate: UnknownIssuer"),
                None
            ),
            KvError::Rejected { .. }
        ));
        // A "lease not found" for a request that named no lease cannot be blamed on one.
        assert!(matches!(
            classify(
                ep,
                "get",
                status(Code::NotFound, "etcdserver: requested lease not found"),
                None
            ),
            KvError::Rejected { .. }
        ));
    }

    #[test]
    fn transaction_leases_are_found_in_either_branch() {
        let put = |lease| TxnOp::Put {
            key: "k".into(),
            value: Bytes::new(),
            lease,
        };
        let txn = Txn {
            compares: vec![],
            success: vec![put(None), put(Some(0))],
            failure: vec![put(Some(42))],
        };
        assert_eq!(txn_lease(&txn), Some(42));
        assert_eq!(txn_lease(&Txn::default()), None);
    }

    #[tokio::test]
    async fn connect_rejects_an_invalid_config_before_dialling() {
        let cfg = EtcdConfig {
            endpoints: vec![],
            ..EtcdConfig::default()
        };
        match EtcdKv::connect(&cfg).await {
            Err(KvError::Rejected { detail, .. }) => {
                assert!(detail.contains("etcd.endpoints"), "{detail}")
            }
            other => panic!("{other:?}"),
        }
    }
}
