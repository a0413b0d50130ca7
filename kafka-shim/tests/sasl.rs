//! The SASL exchange of a SASL_PLAINTEXT listener, byte for byte as Kafka 3.9 answers it:
//! requests before authentication, a mechanism not enabled, a wrong password, a PLAIN login
//! and SCRAM credentials made through AlterUserScramCredentials. (TLS and the real clients are
//! in `compat-tests/tests/security.rs`.)

mod support;

use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, SaslAuthenticateRequest, SaslHandshakeRequest,
    alter_user_scram_credentials_request,
};
use kafka_shim::Listener;
use kafka_shim::security::scram::ScramMechanism;
use kafka_shim::security::{SaslMechanism, SecurityProtocol};
use support::*;

/// A SASL_PLAINTEXT listener (PLAIN and SCRAM-SHA-256) over the harness's broker.
async fn sasl_listener(h: &Harness) -> Result<std::net::SocketAddr> {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    let listener = Listener {
        name: "SASL_PLAINTEXT".into(),
        protocol: SecurityProtocol::SaslPlaintext,
        advertised_host: "127.0.0.1".into(),
        advertised_port: i32::from(addr.port()),
        tls: None,
        sasl_mechanisms: vec![
            SaslMechanism::Plain,
            SaslMechanism::Scram(ScramMechanism::Sha256),
        ],
    };
    let rx = h.stop.subscribe();
    tokio::spawn(kafka_shim::serve_listener(
        socket,
        listener,
        h.broker.clone(),
        ServerConfig::default(),
        rx,
    ));
    Ok(addr)
}

async fn connect(addr: std::net::SocketAddr) -> Result<Conn> {
    Ok(Conn {
        stream: TcpStream::connect(addr).await?,
        next: 1,
    })
}

fn handshake(mechanism: &str) -> SaslHandshakeRequest {
    SaslHandshakeRequest::default().with_mechanism(StrBytes::from_string(mechanism.into()))
}

fn plain(user: &str, password: &str) -> SaslAuthenticateRequest {
    SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(format!("\0{user}\0{password}")))
}

#[tokio::test]
async fn sasl_answers_as_kafka_does() -> Result<()> {
    let h = Harness::start().await?;
    // The credential of `admin`, made through the API on the PLAINTEXT listener (no
    // authorizer: everything is allowed there).
    let mut c = h.connect().await?;
    let resp = c
        .call(
            &AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_static_str("admin"))
                    .with_mechanism(1)
                    .with_iterations(4096)
                    .with_salt(Bytes::from_static(b"0123456789abcdef"))
                    .with_salted_password(Bytes::from(vec![7u8; 32])),
            ]),
            0,
        )
        .await?;
    assert_eq!(resp.results[0].error_code, 0, "{resp:?}");
    let addr = sasl_listener(&h).await?;

    // A request other than ApiVersions/SaslHandshake before authenticating: closed.
    let mut c = connect(addr).await?;
    c.send(&MetadataRequest::default().with_topics(None), 12)
        .await?;
    assert!(
        c.closed().await?,
        "Metadata before SASL must close the connection"
    );

    // ApiVersions is answered first; a mechanism not enabled is UNSUPPORTED_SASL_MECHANISM
    // (33) with the enabled ones, then the connection closes.
    let mut c = connect(addr).await?;
    let versions = c.call(&ApiVersionsRequest::default(), 3).await?;
    assert_eq!(versions.error_code, 0);
    let resp = c.call(&handshake("SCRAM-SHA-512"), 1).await?;
    assert_eq!(resp.error_code, 33);
    let names: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
    assert_eq!(names, ["PLAIN", "SCRAM-SHA-256"]);
    assert!(c.closed().await?);

    // A wrong password: SASL_AUTHENTICATION_FAILED (58) with Kafka's message, then closed.
    // The stored credential is not derived from any password, so every PLAIN login fails.
    let mut c = connect(addr).await?;
    assert_eq!(c.call(&handshake("PLAIN"), 1).await?.error_code, 0);
    let resp = c.call(&plain("admin", "wrong"), 2).await?;
    assert_eq!(resp.error_code, 58);
    assert_eq!(
        resp.error_message.as_deref(),
        Some("Authentication failed: Invalid username or password")
    );
    assert!(c.closed().await?);

    // SaslAuthenticate without a handshake: the connection closes (after an
    // ILLEGAL_SASL_STATE answer).
    let mut c = connect(addr).await?;
    c.send(&plain("admin", "x"), 2).await?;
    while c.read_frame().await?.is_some() {}

    // A user with a password set through the store logs in with PLAIN and is served.
    h.broker.credentials().ensure("bob", "bob-secret").await?;
    let mut c = connect(addr).await?;
    assert_eq!(c.call(&handshake("PLAIN"), 1).await?.error_code, 0);
    assert_eq!(c.call(&plain("bob", "bob-secret"), 2).await?.error_code, 0);
    let md = c
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await?;
    assert_eq!(
        md.brokers[0].port,
        i32::from(addr.port()),
        "advertised per listener"
    );
    h.stop().await
}
