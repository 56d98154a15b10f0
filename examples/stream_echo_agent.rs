//! A load agent for media streams (benches/streams-load.sh): a WebSocket
//! server in the Twilio Media Streams format that sends every `media`
//! payload it receives straight back to the call, so audio flows both
//! ways on every stream. A connection to `/asr` is instead a recognizer
//! stand-in in the generic speech protocol (README, "Speech input"): it
//! takes the audio and answers `{"type":"stop"}` with a final transcript,
//! "agent". Prints its counts every 5 s and on Ctrl-C: connections open and
//! total, media messages (or audio frames) in and out, bad messages.
//!
//!     stream_echo_agent PORT

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Counts {
    open: AtomicU64,
    total: AtomicU64,
    media_in: AtomicU64,
    media_out: AtomicU64,
    bad: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        eprintln!("usage: stream_echo_agent PORT");
        std::process::exit(2);
    };
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bind 127.0.0.1:{port}: {e}");
            std::process::exit(1);
        }
    };
    let counts = Arc::new(Counts::default());
    let report = counts.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            print_counts(&report);
        }
    });
    println!("listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((tcp, _)) = accepted {
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(serve(tcp, counts.clone()));
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    print_counts(&counts);
}

fn print_counts(c: &Counts) {
    println!(
        "open {} total {} media_in {} media_out {} bad {}",
        c.open.load(Relaxed),
        c.total.load(Relaxed),
        c.media_in.load(Relaxed),
        c.media_out.load(Relaxed),
        c.bad.load(Relaxed)
    );
}

async fn serve(tcp: tokio::net::TcpStream, counts: Arc<Counts>) {
    let mut path = String::new();
    // tungstenite's handshake callback fixes the (large) error type.
    #[allow(clippy::result_large_err)]
    let see_path = |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(tcp, see_path).await else {
        counts.bad.fetch_add(1, Relaxed);
        return;
    };
    if path == "/asr" {
        return recognize(ws, counts).await;
    }
    counts.open.fetch_add(1, Relaxed);
    counts.total.fetch_add(1, Relaxed);
    let (mut tx, mut rx) = ws.split();
    let mut stream_sid = String::new();
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(text) = msg else { continue };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            counts.bad.fetch_add(1, Relaxed);
            continue;
        };
        match v.get("event").and_then(Value::as_str) {
            Some("start") => {
                stream_sid = v
                    .pointer("/start/streamSid")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
            }
            Some("media") => {
                counts.media_in.fetch_add(1, Relaxed);
                let Some(payload) = v.pointer("/media/payload").and_then(Value::as_str) else {
                    counts.bad.fetch_add(1, Relaxed);
                    continue;
                };
                let echo = json!({
                    "event": "media",
                    "streamSid": stream_sid,
                    "media": {"payload": payload},
                });
                if tx.send(Message::text(echo.to_string())).await.is_err() {
                    break;
                }
                counts.media_out.fetch_add(1, Relaxed);
            }
            Some("stop") => break,
            _ => {}
        }
    }
    counts.open.fetch_sub(1, Relaxed);
}

/// The recognizer stand-in: audio in, one final transcript at `stop`.
async fn recognize(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    counts: Arc<Counts>,
) {
    counts.open.fetch_add(1, Relaxed);
    counts.total.fetch_add(1, Relaxed);
    let (mut tx, mut rx) = ws.split();
    while let Some(Ok(msg)) = rx.next().await {
        match msg {
            Message::Binary(_) => {
                counts.media_in.fetch_add(1, Relaxed);
            }
            Message::Text(text) if text.as_str().contains("\"stop\"") => {
                let last = json!({"transcript": "agent", "is_final": true, "confidence": 0.9});
                if tx.send(Message::text(last.to_string())).await.is_ok() {
                    counts.media_out.fetch_add(1, Relaxed);
                }
                // The gateway closes once it has the transcript.
            }
            _ => {}
        }
    }
    counts.open.fetch_sub(1, Relaxed);
}
