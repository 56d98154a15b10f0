//! OPTIONS round trips against a SIP UDP listener at a steady rate, for
//! `benches/signalling-latency.sh`: how long a SIP request waits for the
//! gateway's signalling loop.
//!
//! ```sh
//! cargo run --release --example sip_ping -- 127.0.0.1:5060 2000 100
//! ```
//!
//! Arguments: target, count, rate per second. Sends on absolute deadlines
//! (not "sleep then send"), times each request from just before `send_to`
//! to the receipt of its answer (matched by Call-ID), waits up to
//! `SIP_PING_WAIT_SECS` (default 30) after the last send, and prints one
//! summary line: counts, and p50/p90/p99/max in milliseconds. Requests
//! without an answer count as lost, not in the percentiles. With
//! `SIP_PING_CSV=path`, each request's send offset and RTT (µs; -1 lost)
//! go to that file.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const UNSET: u64 = u64::MAX;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(target), Some(count), Some(rate)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<usize>().ok()),
        args.get(3).and_then(|a| a.parse::<f64>().ok()),
    ) else {
        eprintln!("usage: sip_ping TARGET(ip:port) COUNT RATE_PER_SEC");
        std::process::exit(2);
    };
    let wait = std::env::var("SIP_PING_WAIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30u64);
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let local = socket.local_addr().expect("local address");
    let tag: u32 = rand::random();
    let start = Instant::now();
    // Per request: send time and RTT, in ns since `start` (UNSET: not yet).
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(UNSET)).collect());
    let rtt: Arc<Vec<AtomicU64>> = Arc::new((0..count).map(|_| AtomicU64::new(UNSET)).collect());
    let non_200 = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let receiver = {
        let socket = socket.try_clone().expect("clone socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let (sent, rtt, non_200, answered) =
            (sent.clone(), rtt.clone(), non_200.clone(), answered.clone());
        let prefix = format!("ping-{tag:08x}-");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut deadline: Option<Instant> = None;
            loop {
                if answered.load(Ordering::Relaxed) == count {
                    return;
                }
                if let Some(d) = deadline {
                    if Instant::now() > d {
                        return;
                    }
                } else if sent.last().map(|s| s.load(Ordering::Relaxed)) != Some(UNSET) {
                    deadline = Some(Instant::now() + Duration::from_secs(wait));
                }
                let Ok(n) = socket.recv(&mut buf) else {
                    continue;
                };
                let at = start.elapsed().as_nanos() as u64;
                let text = String::from_utf8_lossy(&buf[..n]);
                let Some(i) = text
                    .split(&prefix)
                    .nth(1)
                    .and_then(|r| r.split('@').next())
                    .and_then(|r| r.parse::<usize>().ok())
                else {
                    continue;
                };
                let (Some(s), Some(r)) = (sent.get(i), rtt.get(i)) else {
                    continue;
                };
                let s = s.load(Ordering::Acquire);
                if s == UNSET || r.load(Ordering::Relaxed) != UNSET {
                    continue;
                }
                if !text.starts_with("SIP/2.0 200") {
                    non_200.fetch_add(1, Ordering::Relaxed);
                }
                r.store(at.saturating_sub(s), Ordering::Relaxed);
                answered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let interval = Duration::from_secs_f64(1.0 / rate);
    for i in 0..count {
        let due = start + interval * i as u32;
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(w);
        }
        let msg = format!(
            "OPTIONS sip:ping@{target} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{tag:08x}x{i};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:ping@{local}>;tag={tag:08x}\r\n\
             To: <sip:ping@{target}>\r\n\
             Call-ID: ping-{tag:08x}-{i}@{local}\r\n\
             CSeq: {seq} OPTIONS\r\n\
             Contact: <sip:ping@{local}>\r\n\
             Accept: application/sdp\r\n\
             Content-Length: 0\r\n\r\n",
            seq = i + 1
        );
        sent[i].store(start.elapsed().as_nanos() as u64, Ordering::Release);
        let _ = socket.send_to(msg.as_bytes(), target);
    }
    let _ = receiver.join();
    let mut rtts: Vec<u64> = rtt
        .iter()
        .map(|r| r.load(Ordering::Relaxed))
        .filter(|r| *r != UNSET)
        .collect();
    if let Ok(path) = std::env::var("SIP_PING_CSV") {
        let mut csv = String::from("sent_us,rtt_us\n");
        for (s, r) in sent.iter().zip(rtt.iter()) {
            let r = r.load(Ordering::Relaxed);
            let r = if r == UNSET { -1 } else { (r / 1000) as i64 };
            csv.push_str(&format!("{},{r}\n", s.load(Ordering::Relaxed) / 1000));
        }
        std::fs::write(&path, csv).expect("write the CSV");
    }
    rtts.sort_unstable();
    let pct = |p: f64| -> f64 {
        if rtts.is_empty() {
            return f64::NAN;
        }
        let i = ((rtts.len() as f64 * p).ceil() as usize).clamp(1, rtts.len()) - 1;
        rtts[i] as f64 / 1e6
    };
    println!(
        "sent={count} answered={} lost={} non200={} p50_ms={:.3} p90_ms={:.3} p99_ms={:.3} max_ms={:.3}",
        rtts.len(),
        count - rtts.len(),
        non_200.load(Ordering::Relaxed),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(1.0),
    );
}
