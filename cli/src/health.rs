//! `woodpecker health`: asks a running server's HTTP endpoint whether it is healthy, for
//! container health checks that have no HTTP client in the image.
//!
//! It sends `GET <path>` to `--addr` and exits 0 on a `200` answer, 1 otherwise (refused,
//! timed out, another status), saying why on stderr. It opens no engine and reads no
//! configuration.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Options of `woodpecker health`.
#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// The server's metrics endpoint (`serve --metrics-addr`).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9095")]
    addr: SocketAddr,
    /// The path asked for.
    #[arg(long, default_value = "/healthz")]
    path: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    timeout_secs: u64,
}

pub(crate) async fn run(args: HealthArgs) -> anyhow::Result<()> {
    if !args.path.starts_with('/') || args.path.contains(char::is_whitespace) {
        bail!(
            "--path {:?} must start with `/` and hold no spaces",
            args.path
        );
    }
    let addr = args.addr;
    let ask = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
            args.path
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        // The status line is all that is needed; a health answer is small.
        stream
            .take(64 * 1024)
            .read_to_end(&mut answer)
            .await
            .with_context(|| format!("reading the answer of {addr}"))?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(args.timeout_secs), ask)
        .await
        .with_context(|| format!("{addr} did not answer within {} s", args.timeout_secs))??;
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("GET {} on {addr} answered `{status}`", args.path);
    }
    println!("healthy: GET {} on {addr}: {status}", args.path);
    Ok(())
}
