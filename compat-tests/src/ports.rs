//! Ports for the server processes the tests start and restart (LogStore nodes, gossip,
//! Go servers). `cli`'s cluster tests include this file by path.
//!
//! A port found by binding `127.0.0.1:0` comes from the kernel's ephemeral range, which is
//! also where every outgoing connection (the client's gRPC channels, gossip, etcd, MinIO) takes
//! its local port: between the probe and a node's bind, or while a killed node is down, one of
//! them can take it, and the node then fails to start with "Address already in use". These
//! ports come from below the ephemeral range instead, where nothing is handed out
//! automatically, and are checked free for both TCP and UDP before they are returned.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// The first port of the kernel's ephemeral range (Linux's default when it cannot be read).
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768)
}

/// A port below the ephemeral range that is free for TCP and UDP on 127.0.0.1 right now.
/// Successive calls in one process never return the same port.
pub fn free_port() -> u16 {
    const FIRST: u32 = 10_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = ephemeral_low().saturating_sub(FIRST).max(1_000);
    // Test binaries of one run start at different places in the range.
    let start = rand::random::<u32>() % span;
    NEXT.compare_exchange(0, start + 1, Ordering::SeqCst, Ordering::SeqCst)
        .ok();
    for _ in 0..span {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free port between {FIRST} and {}", FIRST + span);
}

/// `127.0.0.1` and a [`free_port`].
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}
