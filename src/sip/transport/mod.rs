//! Tokio drivers for SIP transports. They only move bytes: everything they
//! read goes to the endpoint task as a [`Inbound`] over a bounded channel,
//! and [`Transports::send`] writes what the endpoint asks for. TLS and
//! WebSocket slot in as more stream kinds beside TCP.

mod tcp;
mod udp;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::sip::endpoint::{ConnId, Transmit, Transport};

pub use tcp::{StreamTls, TcpListenerConfig};

/// Bytes from the network, for the endpoint.
#[derive(Debug)]
pub enum Inbound {
    Datagram {
        local: SocketAddr,
        remote: SocketAddr,
        data: Bytes,
    },
    Stream {
        /// TCP or TLS.
        transport: Transport,
        conn: ConnId,
        local: SocketAddr,
        remote: SocketAddr,
        data: Bytes,
    },
    Closed {
        conn: ConnId,
    },
    /// A connection to `remote` could not be opened (refused, timed out,
    /// TLS handshake failed): what was sent there is lost.
    Unreachable {
        transport: Transport,
        remote: SocketAddr,
    },
}

/// Drops counted by the drivers.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub inbound_dropped: AtomicU64,
    pub send_errors: AtomicU64,
    pub tcp_rejected: AtomicU64,
    /// Accepts refused: their address already holds its share.
    pub tcp_rejected_per_source: AtomicU64,
    /// Connections closed because their peer sent nothing for too long.
    pub tcp_idle_closed: AtomicU64,
    pub tcp_open: AtomicU64,
    pub tls_handshake_failures: AtomicU64,
}

pub struct Transports {
    udp: HashMap<SocketAddr, Arc<tokio::net::UdpSocket>>,
    tcp: tcp::TcpSide,
    tls: tcp::TcpSide,
    pub stats: Arc<TransportStats>,
}

impl Transports {
    /// Bind every listener. Port 0 binds an ephemeral port; read the real
    /// addresses back with [`Transports::udp_addrs`] and friends.
    pub async fn bind(
        udp_addrs: &[SocketAddr],
        tcp: TcpListenerConfig,
        tls: (TcpListenerConfig, StreamTls),
        inbound: mpsc::Sender<Inbound>,
    ) -> std::io::Result<Transports> {
        let stats = Arc::new(TransportStats::default());
        let mut udp = HashMap::new();
        for addr in udp_addrs {
            let sock = Arc::new(udp::bind(*addr)?);
            let local = sock.local_addr()?;
            udp::spawn_reader(sock.clone(), local, inbound.clone(), stats.clone());
            udp.insert(local, sock);
        }
        let tcp = tcp::TcpSide::bind(tcp, None, inbound.clone(), stats.clone()).await?;
        let tls = tcp::TcpSide::bind(tls.0, Some(tls.1), inbound, stats.clone()).await?;
        Ok(Transports {
            udp,
            tcp,
            tls,
            stats,
        })
    }

    pub fn udp_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self.udp.keys().copied().collect();
        v.sort();
        v
    }

    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp.local_addrs()
    }

    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        self.tls.local_addrs()
    }

    /// TLS connections to `remote` check its certificate for `name` (the
    /// DNS name it was resolved from).
    pub fn set_server_name(&self, remote: SocketAddr, name: &str) {
        self.tls.set_server_name(remote, name);
    }

    /// Close a stream whose bytes the endpoint found broken.
    pub fn close(&self, conn: ConnId) {
        self.tcp.close(conn);
        self.tls.close(conn);
    }

    /// Send without waiting: UDP uses `try_send_to`, TCP queues to the
    /// connection's writer (opening one when needed).
    pub fn send(&self, t: Transmit) {
        match t.peer.transport {
            Transport::Udp => {
                let sock = self
                    .udp
                    .get(&t.peer.local)
                    .or_else(|| self.udp.values().next());
                let Some(sock) = sock else {
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if sock.try_send_to(&t.payload, t.peer.remote).is_err() {
                    // The socket buffer is full or the peer unreachable:
                    // SIP's own retransmissions recover.
                    self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            Transport::Tcp => self.tcp.send(t.peer.conn, t.peer.remote, t.payload),
            Transport::Tls => self.tls.send(t.peer.conn, t.peer.remote, t.payload),
        }
    }
}
