//! UDP: one reader task per listener socket.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Inbound, TransportStats};

/// Larger kernel buffers ride out bursts of a few thousand calls per second.
const SOCKET_BUFFER: libc::c_int = 4 * 1024 * 1024;
/// Biggest datagram we read; larger ones are truncated and fail to parse.
const MAX_DATAGRAM: usize = 65_535;

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::UdpSocket> {
    let std_sock = std::net::UdpSocket::bind(addr)?;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: setsockopt on a socket we own, with a c_int value.
        unsafe {
            libc::setsockopt(
                std_sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&SOCKET_BUFFER as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    std_sock.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(std_sock)
}

pub(super) fn spawn_reader(
    sock: Arc<tokio::net::UdpSocket>,
    local: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<TransportStats>,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let (n, remote) = match sock.recv_from(&mut buf).await {
                Ok(v) => v,
                // ICMP port-unreachable surfaces here on Linux: ignore it.
                Err(_) => continue,
            };
            let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
            let msg = Inbound::Datagram {
                local,
                remote,
                data,
            };
            // A full queue means the endpoint is overloaded: drop, count,
            // and let the peer retransmit.
            match inbound.try_send(msg) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    stats.inbound_dropped.fetch_add(1, Ordering::Relaxed);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
    });
}
