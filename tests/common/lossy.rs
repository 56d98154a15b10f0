//! A lossy UDP path on loopback, for kernels without netem: SIP and RTP
//! between one client (SIPp) and the gateway go through relay sockets that
//! drop and reorder datagrams (seeded, so a run can be repeated). SDP ports
//! are rewritten so media takes the lossy path too, and requests get
//! `;rport` so responses come back through it (RFC 3581).

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct RelayStats {
    pub sip_forwarded: AtomicU64,
    pub sip_dropped: AtomicU64,
    pub rtp_forwarded: AtomicU64,
    pub rtp_dropped: AtomicU64,
    /// Datagrams held back and sent after a later one.
    pub reordered: AtomicU64,
}

/// Where each side really is, learned from the traffic.
#[derive(Default)]
struct Peers {
    client_sip: Option<SocketAddr>,
    client_media: Option<SocketAddr>,
    gateway_media: Option<SocketAddr>,
}

pub struct LossyRelay {
    /// Point the client here.
    pub sip_port: u16,
    pub stats: Arc<RelayStats>,
    stop: Arc<AtomicBool>,
}

impl Drop for LossyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One direction's loss and reordering.
struct Impairment {
    rng: u64,
    loss_percent: u64,
    reorder_percent: u64,
    held: Option<(Vec<u8>, SocketAddr)>,
}

impl Impairment {
    fn new(seed: u64, loss_percent: u64, reorder_percent: u64) -> Impairment {
        Impairment {
            rng: seed | 1,
            loss_percent,
            reorder_percent,
            held: None,
        }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % 100 < percent
    }

    /// Send `data` to `to` from `socket`, or drop it, or hold it until the
    /// next one has gone. Returns false when it was dropped.
    fn pass(
        &mut self,
        socket: &UdpSocket,
        data: Vec<u8>,
        to: SocketAddr,
        stats: &RelayStats,
    ) -> bool {
        if self.chance(self.loss_percent) {
            return false;
        }
        if self.held.is_none() && self.chance(self.reorder_percent) {
            self.held = Some((data, to));
            return true;
        }
        let _ = socket.send_to(&data, to);
        if let Some((old, old_to)) = self.held.take() {
            let _ = socket.send_to(&old, old_to);
            stats.reordered.fetch_add(1, Ordering::Relaxed);
        }
        true
    }

    /// Nothing came for a while: let a held datagram go.
    fn flush(&mut self, socket: &UdpSocket, stats: &RelayStats) {
        if let Some((old, to)) = self.held.take() {
            let _ = socket.send_to(&old, to);
            stats.reordered.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn bind() -> UdpSocket {
    loop {
        let port = super::free_port();
        if let Ok(s) = UdpSocket::bind(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_millis(30))).unwrap();
            return s;
        }
    }
}

/// `m=audio <port>` in a SIP message's body, if it has one.
fn sdp_port(msg: &str) -> Option<u16> {
    let (_, body) = msg.split_once("\r\n\r\n")?;
    body.lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The message with its SDP audio port replaced (same digit count, so
/// Content-Length still holds).
fn with_sdp_port(msg: &str, from: u16, to: u16) -> String {
    let (old, new) = (format!("m=audio {from} "), format!("m=audio {to} "));
    assert_eq!(
        old.len(),
        new.len(),
        "relay ports must keep the digit count"
    );
    msg.replacen(&old, &new, 1)
}

/// Ask for the response at the address the request came from.
fn with_rport(msg: &str) -> String {
    if msg.starts_with("SIP/2.0") {
        return msg.to_string();
    }
    let mut out = String::with_capacity(msg.len() + 8);
    let mut done = false;
    for line in msg.split_inclusive("\r\n") {
        let is_via = line
            .get(..4)
            .is_some_and(|h| h.eq_ignore_ascii_case("via:"));
        if !done && is_via && !line.contains("rport") {
            out.push_str(line.trim_end_matches("\r\n"));
            out.push_str(";rport\r\n");
            done = true;
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Relay between one SIP client and the gateway's SIP port, losing
/// `loss_percent` of datagrams each way and holding back
/// `reorder_percent` until the next one has gone.
pub fn start(gateway_sip: SocketAddr, loss_percent: u64, reorder_percent: u64) -> LossyRelay {
    let stats = Arc::new(RelayStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let peers = Arc::new(Mutex::new(Peers::default()));
    // SIP: client <-> a (lossy) b <-> gateway. Media: client <-> ma, mb <-> gateway.
    let (a, b, ma, mb) = (bind(), bind(), bind(), bind());
    let sip_port = a.local_addr().unwrap().port();
    let ports = (
        ma.local_addr().unwrap().port(),
        mb.local_addr().unwrap().port(),
    );
    let (a, b, ma, mb) = (Arc::new(a), Arc::new(b), Arc::new(ma), Arc::new(mb));

    // Client -> gateway SIP: the client's SDP port becomes mb's (the
    // gateway sends media to mb, which passes it on from ma).
    spawn_leg(
        (1, loss_percent, reorder_percent),
        &stop,
        &stats,
        a.clone(),
        b.clone(),
        {
            let peers = peers.clone();
            move |data, from| {
                let mut p = peers.lock().unwrap();
                p.client_sip = Some(from);
                let mut text = with_rport(&String::from_utf8_lossy(&data));
                if let Some(port) = sdp_port(&text) {
                    p.client_media = Some(SocketAddr::from(([127, 0, 0, 1], port)));
                    text = with_sdp_port(&text, port, ports.1);
                }
                Some((text.into_bytes(), gateway_sip, true))
            }
        },
    );
    // Gateway -> client SIP: the gateway's SDP port becomes ma's. The first
    // 200 to an INVITE is always lost, so the gateway must retransmit it.
    let mut lost_first_200 = false;
    spawn_leg((2, loss_percent, reorder_percent), &stop, &stats, b, a, {
        let peers = peers.clone();
        move |data, _| {
            let mut p = peers.lock().unwrap();
            let mut text = String::from_utf8_lossy(&data).into_owned();
            if !lost_first_200 && text.starts_with("SIP/2.0 200") && text.contains(" INVITE\r\n") {
                lost_first_200 = true;
                return Some((Vec::new(), p.client_sip?, true));
            }
            if let Some(port) = sdp_port(&text) {
                p.gateway_media = Some(SocketAddr::from(([127, 0, 0, 1], port)));
                text = with_sdp_port(&text, port, ports.0);
            }
            Some((text.into_bytes(), p.client_sip?, true))
        }
    });
    // Media both ways.
    spawn_leg(
        (3, loss_percent, reorder_percent),
        &stop,
        &stats,
        ma.clone(),
        mb.clone(),
        {
            let peers = peers.clone();
            move |data, _| Some((data, peers.lock().unwrap().gateway_media?, false))
        },
    );
    spawn_leg((4, loss_percent, reorder_percent), &stop, &stats, mb, ma, {
        let peers = peers.clone();
        move |data, _| Some((data, peers.lock().unwrap().client_media?, false))
    });
    LossyRelay {
        sip_port,
        stats,
        stop,
    }
}

/// Datagrams arriving on `inbound` go out of `outbound`, through `route`
/// (which gives the bytes, the destination and whether it is SIP).
fn spawn_leg(
    // (seed, loss %, reorder %)
    seed: (u64, u64, u64),
    stop: &Arc<AtomicBool>,
    stats: &Arc<RelayStats>,
    inbound: Arc<UdpSocket>,
    outbound: Arc<UdpSocket>,
    mut route: impl FnMut(Vec<u8>, SocketAddr) -> Option<(Vec<u8>, SocketAddr, bool)> + Send + 'static,
) {
    let (stop, stats) = (stop.clone(), stats.clone());
    std::thread::spawn(move || {
        let mut way = Impairment::new(0x1234_5678_9ABC_DEF0 ^ seed.0, seed.1, seed.2);
        let mut buf = vec![0u8; 65_536];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = inbound.recv_from(&mut buf) else {
                way.flush(&outbound, &stats);
                continue;
            };
            let Some((data, to, sip)) = route(buf[..n].to_vec(), from) else {
                continue;
            };
            // An empty datagram from `route`: lose this one for sure.
            let passed = !data.is_empty() && way.pass(&outbound, data, to, &stats);
            let counter = match (sip, passed) {
                (true, true) => &stats.sip_forwarded,
                (true, false) => &stats.sip_dropped,
                (false, true) => &stats.rtp_forwarded,
                (false, false) => &stats.rtp_dropped,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
}
