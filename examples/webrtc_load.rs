//! Many browser calls at once, without browsers: each leg is a str0m peer
//! on its own UDP socket that does what the web chat's "Call us" does
//! (GET the chat page for a conversation and its cookie, POST the SDP
//! offer to `/chat/call`, ICE, DTLS-SRTP), then talks: one Opus packet of
//! speech-like audio every 20 ms, for the gateway to decode, while it
//! counts the Opus the gateway sends back. For
//! `benches/signalling-latency.sh`.
//!
//! ```sh
//! cargo run --release --example webrtc_load -- 127.0.0.1:8080 100 60
//! ```
//!
//! Arguments: the HTTP listener, legs, seconds to talk once all are up.
//! Prints `all N legs up` once every leg has ICE and DTLS done (or
//! `legs up: K of N` and carries on after 30 s), a line of packet counts
//! every 5 s, and a summary at the end; then hangs every leg up (DELETE).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpAnswer;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Default)]
struct Stats {
    up: AtomicUsize,
    failed: AtomicUsize,
    sent: AtomicU64,
    received: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(http), Some(legs), Some(secs)) = (
        args.get(1).and_then(|a| a.parse::<SocketAddr>().ok()),
        args.get(2).and_then(|a| a.parse::<usize>().ok()),
        args.get(3).and_then(|a| a.parse::<u64>().ok()),
    ) else {
        eprintln!("usage: webrtc_load HTTP(ip:port) LEGS SECONDS");
        std::process::exit(2);
    };
    let frames = Arc::new(speech_like_opus());
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..legs {
        let (frames, stats, stop) = (frames.clone(), stats.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = leg(http, frames, stats.clone(), stop).await {
                eprintln!("leg {i}: {e}");
                stats.failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
        // Spread the set-ups (and the legs' 20 ms ticks).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ramp = Instant::now();
    loop {
        let up = stats.up.load(Ordering::Relaxed);
        let failed = stats.failed.load(Ordering::Relaxed);
        if up == legs {
            println!("all {legs} legs up");
            break;
        }
        if up + failed == legs || ramp.elapsed() > Duration::from_secs(30) {
            println!("legs up: {up} of {legs} ({failed} failed)");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let talk = Instant::now();
    let (mut last_sent, mut last_rx) = (0, 0);
    while talk.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(5).min(Duration::from_secs(secs))).await;
        let (s, r) = (
            stats.sent.load(Ordering::Relaxed),
            stats.received.load(Ordering::Relaxed),
        );
        println!(
            "t={:.0}s legs={} sent/s={} received/s={}",
            talk.elapsed().as_secs_f64(),
            stats.up.load(Ordering::Relaxed),
            (s - last_sent) / 5,
            (r - last_rx) / 5
        );
        (last_sent, last_rx) = (s, r);
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    println!(
        "done: legs_up={} failed={} opus_sent={} opus_received={}",
        stats.up.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.sent.load(Ordering::Relaxed),
        stats.received.load(Ordering::Relaxed)
    );
}

/// 50 Opus packets (1 s) of two tones, one wobbling, like the benches.
fn speech_like_opus() -> Vec<Vec<u8>> {
    crossline::webrtc::transcode::browser_like_opus(60).unwrap_or_default()
}

async fn leg(
    http: SocketAddr,
    frames: Arc<Vec<Vec<u8>>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<(), String> {
    let page = request(http, "GET", "/chat/", &[], "").await?;
    let conversation = page
        .body
        .split("name=\"crossline-conversation\" content=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .ok_or_else(|| format!("not a chat page ({})", page.status))?
        .to_string();
    let cookie = page.cookies();
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().ok_or("no offer")?;
    let answer = request(
        http,
        "POST",
        &format!("/chat/call?c={conversation}"),
        &[("Cookie", &cookie), ("Content-Type", "application/sdp")],
        &offer.to_sdp_string(),
    )
    .await?;
    if answer.status != 201 {
        return Err(format!("call refused: {} {}", answer.status, answer.body));
    }
    let location = answer.header("location").unwrap_or_default();
    let sdp = SdpAnswer::from_sdp_string(&answer.body).map_err(|e| e.to_string())?;
    rtc.sdp_api()
        .accept_answer(pending, sdp)
        .map_err(|e| e.to_string())?;

    let mut buf = vec![0u8; 2048];
    let mut connected = false;
    let mut pt = None;
    let mut next_frame = Instant::now();
    let mut media_time: u64 = 0;
    let mut n = 0usize;
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        // Drain str0m.
        let deadline = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(Event::Connected)) => {
                    if !connected {
                        connected = true;
                        stats.up.fetch_add(1, Ordering::Relaxed);
                        next_frame = Instant::now();
                    }
                }
                Ok(Output::Event(Event::MediaData(_))) => {
                    stats.received.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Output::Event(_)) => {}
                Err(e) => return Err(format!("str0m: {e}")),
            }
        };
        let wake = if connected {
            deadline.min(next_frame)
        } else {
            deadline
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => {
                let Ok((len, source)) = r else { continue };
                if let Ok(rx) = Receive::new(Protocol::Udp, source, local, &buf[..len]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), rx));
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if connected && now >= next_frame {
                    next_frame += Duration::from_millis(20);
                    if let Some(w) = rtc.writer(mid) {
                        if pt.is_none() {
                            pt = w
                                .payload_params()
                                .find(|p| p.spec().codec == str0m::format::Codec::Opus)
                                .map(|p| p.pt());
                        }
                        if let Some(pt) = pt {
                            let time = MediaTime::new(media_time, Frequency::FORTY_EIGHT_KHZ);
                            media_time += 960;
                            let packet = frames[n % frames.len()].clone();
                            n += 1;
                            if w.write(pt, now, time, packet).is_ok() {
                                stats.sent.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                let _ = rtc.handle_input(Input::Timeout(now));
            }
        }
    };
    if !location.is_empty() {
        let _ = request(http, "DELETE", &location, &[], "").await;
    }
    result
}

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// Every Set-Cookie as one Cookie header.
    fn cookies(&self) -> String {
        self.head
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("set-cookie")
                    .then(|| v.trim().split(';').next().unwrap_or("").to_string())
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// One HTTP/1.1 request, Connection: close.
async fn request(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply, String> {
    let mut s = TcpStream::connect(to).await.map_err(|e| e.to_string())?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut text))
        .await
        .map_err(|_| "HTTP timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&text).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Ok(Reply {
        status: head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
        head: head.to_string(),
        body: body.to_string(),
    })
}
