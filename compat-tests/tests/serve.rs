//! `woodpecker serve` as an operator sees it: the metrics endpoint, the connection limit, and
//! refusing a configuration that would advertise an unreachable address.

// Real processes answer in real time; waits poll them with deadlines.
#![allow(clippy::disallowed_methods)]

use std::time::Duration;

use anyhow::{Context, Result};
use compat_tests::{Server, woodpecker_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// ApiVersions v0 with correlation id 7 and client id "t".
fn api_versions_v0() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes());
    body.extend_from_slice(&0i16.to_be_bytes());
    body.extend_from_slice(&7i32.to_be_bytes());
    body.extend_from_slice(&1i16.to_be_bytes());
    body.push(b't');
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Sends ApiVersions v0 and returns the correlation id of the answer, or `None` when the
/// server closed the connection instead.
async fn ask(stream: &mut TcpStream) -> Result<Option<i32>> {
    stream.write_all(&api_versions_v0()).await?;
    let mut len = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut len)).await {
        Err(_) => anyhow::bail!("no answer within 30 s"),
        Ok(Err(_)) => return Ok(None),
        Ok(Ok(_)) => {}
    }
    let mut rest = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut rest).await?;
    Ok(Some(i32::from_be_bytes([
        rest[0], rest[1], rest[2], rest[3],
    ])))
}

#[tokio::test]
async fn metrics_count_requests_and_health_answers() -> Result<()> {
    let mut server = Server::start().await?;
    let mut c = TcpStream::connect(server.kafka_addr).await?;
    assert_eq!(ask(&mut c).await?, Some(7));
    let text = server.metrics().await?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains("woodpecker_kafka_requests_total{api=\"ApiVersions\"} 1"),
        "{text}"
    );
    assert!(text.contains("# TYPE woodpecker_kafka_connections gauge"));
    assert!(text.contains("woodpecker_kafka_connections 1"), "{text}");
    // Health and unknown paths.
    let get = |path: &'static str| {
        let addr = server.metrics_addr;
        async move {
            let mut s = TcpStream::connect(addr).await?;
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await?;
            let mut t = String::new();
            s.read_to_string(&mut t).await?;
            Ok::<_, anyhow::Error>(t)
        }
    };
    assert!(get("/healthz").await?.starts_with("HTTP/1.1 200"));
    assert!(get("/nope").await?.starts_with("HTTP/1.1 404"));
    drop(c);
    server.stop().await
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_the_others_served() -> Result<()> {
    let mut server = Server::start_with(&["--max-connections", "1"]).await?;
    let mut first = TcpStream::connect(server.kafka_addr).await?;
    assert_eq!(ask(&mut first).await?, Some(7));
    let mut second = TcpStream::connect(server.kafka_addr).await?;
    assert_eq!(
        ask(&mut second).await?,
        None,
        "the second connection is refused"
    );
    // The first one still works, and a new one is accepted once it is gone.
    assert_eq!(ask(&mut first).await?, Some(7));
    drop(first);
    let mut third = None;
    for _ in 0..100 {
        let mut c = TcpStream::connect(server.kafka_addr).await?;
        if ask(&mut c).await? == Some(7) {
            third = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    third.context("a connection is accepted again after the first closed")?;
    let text = server.metrics().await?;
    assert!(
        !text.contains("woodpecker_kafka_connections_refused_total 0\n"),
        "{text}"
    );
    server.stop().await
}

#[tokio::test]
async fn a_wildcard_listener_needs_an_advertised_address() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let out = tokio::process::Command::new(woodpecker_bin()?)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--kafka-addr", "0.0.0.0:0", "--metrics-addr", "127.0.0.1:0"])
        .args(["--milvus-addr", "127.0.0.1:0"])
        .output()
        .await?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--advertised-kafka-addr"), "{err}");
    Ok(())
}
