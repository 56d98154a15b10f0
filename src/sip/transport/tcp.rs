//! TCP: an accept loop per listener, a reader and a writer task per
//! connection. Framing happens in the endpoint (sans-IO).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::{Inbound, TransportStats};
use crate::sip::endpoint::ConnId;

/// Queued outgoing messages per connection before we give up on it.
const WRITE_QUEUE: usize = 256;

#[derive(Debug, Clone)]
pub struct TcpListenerConfig {
    pub addrs: Vec<SocketAddr>,
    pub max_connections: usize,
    pub max_message_size: usize,
}

struct Conn {
    writer: mpsc::Sender<Bytes>,
    remote: SocketAddr,
    reader: Option<tokio::task::AbortHandle>,
}

struct Shared {
    conns: Mutex<HashMap<ConnId, Conn>>,
    next_id: AtomicU64,
    inbound: mpsc::Sender<Inbound>,
    stats: Arc<TransportStats>,
    max_connections: usize,
    read_chunk: usize,
}

pub(super) struct TcpSide {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
}

impl TcpSide {
    pub(super) async fn bind(
        cfg: TcpListenerConfig,
        inbound: mpsc::Sender<Inbound>,
        stats: Arc<TransportStats>,
    ) -> std::io::Result<TcpSide> {
        let shared = Arc::new(Shared {
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            inbound,
            stats,
            max_connections: cfg.max_connections,
            read_chunk: cfg.max_message_size.clamp(4096, 65_536),
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
                    if shared.open() >= shared.max_connections {
                        shared.stats.tcp_rejected.fetch_add(1, Ordering::Relaxed);
                        drop(stream);
                        continue;
                    }
                    Shared::start(&shared, stream, local, remote);
                }
            });
        }
        Ok(TcpSide { shared, addrs })
    }

    pub(super) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
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
                    match TcpStream::connect(remote).await {
                        Ok(stream) => {
                            let local = stream.local_addr().unwrap_or(remote);
                            let writer = Shared::start(&shared, stream, local, remote);
                            let _ = writer.send(payload).await;
                        }
                        Err(_) => {
                            shared.stats.send_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        }
    }
}

impl Shared {
    fn open(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    fn start(
        shared: &Arc<Shared>,
        stream: TcpStream,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> mpsc::Sender<Bytes> {
        let _ = stream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
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
        let (mut reader, mut writer) = stream.into_split();
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
            let mut buf = vec![0u8; shared.read_chunk];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let data = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                        // Back-pressure: a slow endpoint slows this reader.
                        if shared
                            .inbound
                            .send(Inbound::Stream {
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
