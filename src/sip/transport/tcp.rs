//! Stream transports, TCP and TLS over TCP: an accept loop per listener, a
//! reader and a writer task per connection. Framing happens in the
//! endpoint (sans-IO); TLS is rustls (tokio-rustls) around the same TCP
//! stream.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Inbound, TransportStats};
use crate::sip::endpoint::{ConnId, Transport};

/// Queued outgoing messages per connection before we give up on it.
const WRITE_QUEUE: usize = 256;
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Connection ids are unique across TCP and TLS: the endpoint keys its
/// stream framers by them.
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// What makes a stream side TLS: the server side for its listeners, the
/// client side for connections it opens.
#[derive(Clone)]
pub struct StreamTls {
    pub acceptor: Option<tokio_rustls::TlsAcceptor>,
    pub connector: tokio_rustls::TlsConnector,
}

#[derive(Debug, Clone)]
pub struct TcpListenerConfig {
    pub addrs: Vec<SocketAddr>,
    /// Accepted connections at once, handshakes in progress included.
    pub max_connections: usize,
    /// The same, from one address.
    pub max_per_source: usize,
    /// Close a connection whose peer sends nothing for this long.
    pub idle_timeout: Option<std::time::Duration>,
    pub max_message_size: usize,
}

struct Conn {
    writer: mpsc::Sender<Bytes>,
    remote: SocketAddr,
    reader: Option<tokio::task::AbortHandle>,
}

struct Shared {
    transport: Transport,
    tls: Option<StreamTls>,
    conns: Mutex<HashMap<ConnId, Conn>>,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<TransportStats>,
    idle_timeout: Option<std::time::Duration>,
    /// Accepted connections (and handshakes) held now, in all and by
    /// source; a `Slot` gives its place back when dropped.
    caps: Arc<crate::net::SlotCaps>,
    read_chunk: usize,
    /// The DNS name a TLS peer's certificate must carry, by address (the
    /// domain of the URI it was resolved from, RFC 5922 §4); others must
    /// carry their address.
    server_names: Mutex<HashMap<SocketAddr, String>>,
}

/// Server names remembered; past it the map starts over (names are set
/// again with every resolution).
const MAX_SERVER_NAMES: usize = 4096;

pub(super) struct TcpSide {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
}

impl TcpSide {
    pub(super) async fn bind(
        cfg: TcpListenerConfig,
        tls: Option<StreamTls>,
        inbound: mpsc::Sender<Inbound>,
        stats: Arc<TransportStats>,
    ) -> std::io::Result<TcpSide> {
        let shared = Arc::new(Shared {
            transport: if tls.is_some() {
                Transport::Tls
            } else {
                Transport::Tcp
            },
            tls,
            conns: Mutex::new(HashMap::new()),
            inbound,
            stats,
            idle_timeout: cfg.idle_timeout,
            caps: crate::net::SlotCaps::new(
                cfg.max_connections,
                cfg.max_per_source,
                Arc::new(Vec::new()),
            ),
            read_chunk: cfg.max_message_size.clamp(4096, 65_536),
            server_names: Mutex::new(HashMap::new()),
        });
        let mut addrs = Vec::new();
        for addr in cfg.addrs {
            let listener = TcpListener::bind(addr).await?;
            let local = listener.local_addr()?;
            addrs.push(local);
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, remote)) = listener.accept().await else {
                        continue;
                    };
                    let Some(slot) = Shared::take_slot(&shared, remote.ip()) else {
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    match shared.tls.as_ref().and_then(|t| t.acceptor.clone()) {
                        None => {
                            Shared::start(&shared, stream, local, remote, Some(slot));
                        }
                        // The handshake runs in its own task: a slow or
                        // silent client holds up nobody else.
                        Some(acceptor) => {
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                let shake = tokio::time::timeout(
                                    HANDSHAKE_TIMEOUT,
                                    acceptor.accept(stream),
                                );
                                match shake.await {
                                    Ok(Ok(tls)) => {
                                        Shared::start(&shared, tls, local, remote, Some(slot));
                                    }
                                    _ => {
                                        shared
                                            .stats
                                            .tls_handshake_failures
                                            .fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            });
                        }
                    }
                }
            });
        }
        Ok(TcpSide { shared, addrs })
    }

    pub(super) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Connections we open to `remote` check its certificate for `name`.
    pub(super) fn set_server_name(&self, remote: SocketAddr, name: &str) {
        let mut names = self
            .shared
            .server_names
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if names.len() >= MAX_SERVER_NAMES && !names.contains_key(&remote) {
            names.clear();
        }
        names.insert(remote, name.to_string());
    }

    pub(super) fn send(&self, conn: Option<ConnId>, remote: SocketAddr, payload: Bytes) {
        let writer = {
            let conns = self.shared.conns.lock().unwrap_or_else(|p| p.into_inner());
            conn.and_then(|id| conns.get(&id))
                .or_else(|| conns.values().find(|c| c.remote == remote))
                .map(|c| c.writer.clone())
        };
        match writer {
            Some(w) => {
                if w.try_send(payload).is_err() {
                    self.shared
                        .stats
                        .send_errors
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    let connect =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(remote));
                    let Ok(Ok(stream)) = connect.await else {
                        shared.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                        Shared::unreachable(&shared, remote).await;
                        return;
                    };
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().unwrap_or(remote);
                    let writer = match &shared.tls {
                        None => Shared::start(&shared, stream, local, remote, None),
                        Some(tls) => {
                            let name = shared.server_name(remote);
                            let shake = tokio::time::timeout(
                                HANDSHAKE_TIMEOUT,
                                tls.connector.connect(name, stream),
                            );
                            match shake.await {
                                Ok(Ok(s)) => Shared::start(&shared, s, local, remote, None),
                                failed => {
                                    let why = match failed {
                                        Ok(Err(e)) => e.to_string(),
                                        _ => "timed out".into(),
                                    };
                                    tracing::warn!(%remote, %why, "TLS connection failed");
                                    shared
                                        .stats
                                        .tls_handshake_failures
                                        .fetch_add(1, Ordering::Relaxed);
                                    shared.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                                    Shared::unreachable(&shared, remote).await;
                                    return;
                                }
                            }
                        }
                    };
                    let _ = writer.send(payload).await;
                });
            }
        }
    }
}

impl Shared {
    /// The name `remote`'s certificate must carry: the DNS name it was
    /// resolved from, else its address.
    fn server_name(&self, remote: SocketAddr) -> rustls::pki_types::ServerName<'static> {
        let named = self
            .server_names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&remote)
            .and_then(|n| rustls::pki_types::ServerName::try_from(n.clone()).ok());
        named.unwrap_or(rustls::pki_types::ServerName::IpAddress(remote.ip().into()))
    }

    /// Tell the endpoint that what it sent to `remote` went nowhere.
    async fn unreachable(shared: &Arc<Shared>, remote: SocketAddr) {
        let _ = shared
            .inbound
            .send(Inbound::Unreachable {
                transport: shared.transport,
                remote,
            })
            .await;
    }

    /// A place for a connection accepted from `ip`, if the caps allow.
    fn take_slot(shared: &Arc<Shared>, ip: IpAddr) -> Option<crate::net::Slot> {
        match crate::net::SlotCaps::take(&shared.caps, ip) {
            Ok(slot) => Some(slot),
            Err(crate::net::SlotRefusal::Total) => {
                shared.stats.tcp_rejected.fetch_add(1, Ordering::Relaxed);
                None
            }
            Err(crate::net::SlotRefusal::PerSource) => {
                shared
                    .stats
                    .tcp_rejected_per_source
                    .fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Run a connection: a writer task draining its queue and a reader
    /// task feeding the endpoint. `slot` (accepted ones) is held until the
    /// reader ends.
    fn start<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(
        shared: &Arc<Shared>,
        stream: S,
        local: SocketAddr,
        remote: SocketAddr,
        slot: Option<crate::net::Slot>,
    ) -> mpsc::Sender<Bytes> {
        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel::<Bytes>(WRITE_QUEUE);
        shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id,
                Conn {
                    writer: tx.clone(),
                    remote,
                    reader: None,
                },
            );
        shared.stats.tcp_open.fetch_add(1, Ordering::Relaxed);
        let (mut reader, mut writer) = tokio::io::split(stream);
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if writer.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        });
        let shared2 = shared.clone();
        let reader_task = tokio::spawn(async move {
            let shared = shared2;
            let _slot = slot;
            let mut buf = vec![0u8; shared.read_chunk];
            loop {
                let read = match shared.idle_timeout {
                    Some(idle) => match tokio::time::timeout(idle, reader.read(&mut buf)).await {
                        Ok(r) => r,
                        Err(_) => {
                            shared.stats.tcp_idle_closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    },
                    None => reader.read(&mut buf).await,
                };
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                        // Back-pressure: a slow endpoint slows this reader.
                        if shared
                            .inbound
                            .send(Inbound::Stream {
                                transport: shared.transport,
                                conn: id,
                                local,
                                remote,
                                data,
                            })
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
            // Only the side that removes the entry counts the close.
            let removed = shared
                .conns
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id)
                .is_some();
            if removed {
                shared.stats.tcp_open.fetch_sub(1, Ordering::Relaxed);
            }
            let _ = shared.inbound.send(Inbound::Closed { conn: id }).await;
        });
        if let Some(c) = shared
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&id)
        {
            c.reader = Some(reader_task.abort_handle());
        }
        tx
    }

    /// Close a connection the endpoint found broken.
    fn close(&self, id: ConnId) {
        let conn = self
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(reader) = conn.and_then(|c| c.reader) {
            reader.abort();
            self.stats.tcp_open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl TcpSide {
    pub(super) fn close(&self, id: ConnId) {
        self.shared.close(id);
    }
}
