//! `woodpecker logstore --tls-cert --tls-key`: the gRPC service over TLS (rustls). A client
//! that trusts the certificate is served; a plaintext client is not. Needs no other service.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use proto::logstore::log_store_client::LogStoreClient;
use proto::logstore::{AffinityMode, NodeFilter, SelectNodesRequest, StrategyType};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

const BIN: &str = env!("CARGO_BIN_EXE_woodpecker");

fn select() -> SelectNodesRequest {
    SelectNodesRequest {
        strategy: StrategyType::Random as i32,
        affinity_mode: AffinityMode::Soft as i32,
        filters: vec![NodeFilter {
            limit: 3,
            ..NodeFilter::default()
        }],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_speaks_tls_when_given_a_certificate() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = certified.cert.pem();
    let cert = dir.path().join("node.pem");
    let key = dir.path().join("node.key");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();

    let mut child = Command::new(BIN)
        .arg("logstore")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args([
            "--service-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("logstore listening on ")
        .unwrap_or_else(|| panic!("unexpected line {first:?}"))
        .to_string();
    std::thread::spawn(move || for _ in lines {});
    let port = addr.rsplit_once(':').unwrap().1;

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r = LogStoreClient::new(channel)
        .select_nodes(select())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status.unwrap().code, 0);
    assert_eq!(r.total_count, 1);

    // Plaintext HTTP/2 to the TLS port gets no answer.
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect()
        .await;
    let refused = match plain {
        Err(_) => true,
        Ok(ch) => LogStoreClient::new(ch)
            .select_nodes(select())
            .await
            .is_err(),
    };
    assert!(refused);

    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(child.wait().unwrap().success());
}
