//! The admin and metrics HTTP endpoint of a LogStore node (Go: port 9091, spec §7.4):
//!
//! | request | answer |
//! |---|---|
//! | `GET /metrics` | Prometheus text: RPC and append counters, open tenants, live nodes, state |
//! | `GET /healthz` | `ok` |
//! | `GET /admin/node/status` | JSON: node id, endpoint, lifecycle state, local segments not yet reclaimed |
//! | `POST /admin/node/decommission` | starts decommissioning (idempotent); JSON state |
//! | `GET /admin/memberlist` | JSON: the live nodes' `NodeMeta` |
//!
//! HTTP/1.1 with one request per connection; request heads above 16 KiB or slower than 5 s
//! are dropped.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::node::LogStoreNode;

/// Serves the endpoint on `listener` until `stop` turns true.
pub async fn serve_admin(
    listener: TcpListener,
    node: Arc<LogStoreNode>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => return,
        };
        let Ok((mut stream, _)) = accepted else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
                match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
                    Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => return,
                }
            }
            let head = String::from_utf8_lossy(&buf);
            let mut parts = head.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, ctype, body) =
                answer(&node, method, path.split('?').next().unwrap_or("")).await;
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

async fn status_json(node: &LogStoreNode) -> String {
    let me = node.membership().me();
    let pending = node.pending_local_segments().await;
    serde_json::json!({
        "nodeId": me.node_id,
        "endpoint": me.endpoint,
        "az": me.az,
        "resourceGroup": me.resource_group,
        "state": node.lifecycle().as_str(),
        "pendingLocalSegments": pending.len(),
    })
    .to_string()
}

async fn answer(
    node: &LogStoreNode,
    method: &str,
    path: &str,
) -> (&'static str, &'static str, String) {
    const JSON: &str = "application/json";
    match (method, path) {
        ("GET", "/metrics") => {
            let tenants = node.tenants().open_stores().await.len() as f64;
            let live = node.membership().live_nodes().await.len() as f64;
            let state = match node.lifecycle() {
                super::Lifecycle::Active => 0.0,
                super::Lifecycle::Decommissioning => 1.0,
                super::Lifecycle::Decommissioned => 2.0,
            };
            let text = node.metrics().render(&[
                (
                    "woodpecker_logstore_tenants",
                    "Tenants (bucket/rootPath) open on this node.",
                    tenants,
                ),
                (
                    "woodpecker_logstore_live_nodes",
                    "LogStore nodes this node sees live, itself included.",
                    live,
                ),
                (
                    "woodpecker_logstore_node_state",
                    "0 active, 1 decommissioning, 2 decommissioned.",
                    state,
                ),
            ]);
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text)
        }
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        ("GET", "/admin/node/status") => ("200 OK", JSON, status_json(node).await),
        ("POST", "/admin/node/decommission") => match node.decommission().await {
            Ok(_) => ("200 OK", JSON, status_json(node).await),
            Err(e) => (
                "500 Internal Server Error",
                JSON,
                serde_json::json!({ "error": e.to_string() }).to_string(),
            ),
        },
        ("GET", "/admin/memberlist") => {
            let nodes: Vec<_> = node
                .membership()
                .live_nodes()
                .await
                .into_iter()
                .map(|n| {
                    serde_json::json!({
                        "nodeId": n.node_id,
                        "endpoint": n.endpoint,
                        "region": n.region,
                        "az": n.az,
                        "resourceGroup": n.resource_group,
                        "tags": n.tags,
                        "loadFactor": n.load_factor,
                        "loadUpdatedAt": n.load_updated_at,
                    })
                })
                .collect();
            ("200 OK", JSON, serde_json::Value::from(nodes).to_string())
        }
        ("GET" | "POST", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "GET or POST\n".into(),
        ),
    }
}
