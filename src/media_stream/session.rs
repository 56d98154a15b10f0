//! One media stream's WebSocket, on tokio: connect (signed), announce the
//! stream, then every 20 ms forward what the call's tap copied and the
//! marks that have played, while the agent's audio, marks and clears go
//! into the call's [`LiveAudio`]. The audio loop is only ever touched
//! through those lock-free queues.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use metrics::counter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use super::protocol::{self, FromAgent, Identity, Tracks};
use crate::media::live::{LiveAudio, StreamTap, Track, UlawFrame};
use crate::telemetry::names;

/// What a `stream` node (or TwiML `<Stream>`) asks for.
#[derive(Debug, Clone)]
pub struct StreamRequest {
    pub url: String,
    pub tracks: Tracks,
    /// `<Connect>`: the agent talks back, and the flow waits for the end.
    pub bidirectional: bool,
    pub parameters: std::collections::BTreeMap<String, String>,
    pub identity: Identity,
    /// A one-way stream's name, to stop it by (`<Stop><Stream name>`).
    pub name: Option<String>,
}

/// How streams connect, from `[media_streams]`.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// Sent in `start` and `stop` as `accountSid`.
    pub account_sid: String,
    /// Signs the upgrade request (`X-Twilio-Signature`), when set.
    pub auth_token: Option<String>,
    pub connect_timeout: Duration,
    /// Frames the agent may queue ahead of playout.
    pub playout_frames: usize,
    /// Largest WebSocket message taken from the agent.
    pub max_message_bytes: usize,
}

/// How a stream ended without error.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The agent closed the socket.
    Closed,
    /// We stopped it (the call ended, or the flow moved on).
    Stopped,
}

/// The queues a stream shares with the call's audio loop.
pub struct Plumbing {
    pub tap: Arc<StreamTap>,
    pub live: Option<Arc<LiveAudio>>,
}

impl Plumbing {
    pub fn new(req: &StreamRequest, settings: &StreamSettings) -> Plumbing {
        let (inbound, outbound) = req.tracks.wants();
        // A second of audio each way rides out a stalled socket.
        Plumbing {
            tap: Arc::new(StreamTap::new(inbound, outbound, 50)),
            live: req
                .bidirectional
                .then(|| Arc::new(LiveAudio::new(settings.playout_frames))),
        }
    }
}

/// Open the stream's socket, its upgrade signed (`X-Twilio-Signature`)
/// when there is a token.
pub async fn connect(
    req: &StreamRequest,
    settings: &StreamSettings,
) -> Result<Box<dyn WsStream>, String> {
    let signature = settings
        .auth_token
        .as_ref()
        .map(|token| crate::messaging::inbound::twilio_signature(token, &req.url, &[]));
    let headers: Vec<(&str, String)> = signature
        .into_iter()
        .map(|s| ("X-Twilio-Signature", s))
        .collect();
    open(
        &req.url,
        &headers,
        settings.connect_timeout,
        settings.max_message_bytes,
    )
    .await
}

/// Open a WebSocket client: TCP (and TLS for `wss:`, checked against the
/// Mozilla roots), then the upgrade with `headers`, all within `timeout`.
pub async fn open(
    url: &str,
    headers: &[(&str, String)],
    timeout: Duration,
    max_message_bytes: usize,
) -> Result<Box<dyn WsStream>, String> {
    let attempt = async {
        let mut request = url
            .into_client_request()
            .map_err(|e| format!("bad WebSocket URL: {e}"))?;
        for (name, value) in headers {
            let value = value
                .parse()
                .map_err(|_| format!("{name} is not a header value"))?;
            let name =
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| format!("{name} is not a header name"))?;
            request.headers_mut().insert(name, value);
        }
        let uri = request.uri().clone();
        let host = uri.host().ok_or("the URL has no host")?.to_string();
        let tls = uri.scheme_str() == Some("wss");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let bare = host.trim_matches(['[', ']']).to_string();
        let tcp = tokio::net::TcpStream::connect((bare.as_str(), port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let config = WebSocketConfig::default()
            .max_message_size(Some(max_message_bytes))
            .max_frame_size(Some(max_message_bytes));
        if tls {
            let client = crate::tls::client_config(None)?;
            let name = rustls::pki_types::ServerName::try_from(bare)
                .map_err(|e| format!("bad TLS name {host}: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(client)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS to {host}: {e}"))?;
            upgrade(request, stream, config).await
        } else {
            upgrade(request, tcp, config).await
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| format!("no answer in {timeout:?}"))?
}

/// A WebSocket over any transport, boxed so TCP and TLS look the same.
pub trait WsStream:
    futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
    + futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
    + Unpin
    + Send
{
}

impl<T> WsStream for T where
    T: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
        + futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error>
        + Unpin
        + Send
{
}

async fn upgrade<S>(
    request: tokio_tungstenite::tungstenite::handshake::client::Request,
    stream: S,
    config: WebSocketConfig,
) -> Result<Box<dyn WsStream>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config))
        .await
        .map_err(|e| format!("WebSocket upgrade: {e}"))?;
    Ok(Box::new(ws))
}

/// Carry the stream until the agent closes it (`Closed`) or `stop` fires
/// or is dropped (`Stopped`: we send `stop` and close). DTMF heard on the
/// call comes in on `digits` (bidirectional streams only, as Twilio).
pub async fn run(
    ws: Box<dyn WsStream>,
    req: &StreamRequest,
    pipes: &Plumbing,
    digits: mpsc::UnboundedReceiver<char>,
    stop: oneshot::Receiver<()>,
) -> Result<Ended, String> {
    let out = carry(ws, req, pipes, digits, stop).await;
    let dropped = |direction: &'static str, n: u64| {
        if n > 0 {
            counter!(names::MEDIA_STREAM_FRAMES_DROPPED, "direction" => direction).increment(n);
        }
    };
    dropped("to_agent", pipes.tap.dropped());
    if let Some(live) = &pipes.live {
        dropped("from_agent", live.dropped_frames());
    }
    out
}

async fn carry(
    mut ws: Box<dyn WsStream>,
    req: &StreamRequest,
    pipes: &Plumbing,
    mut digits: mpsc::UnboundedReceiver<char>,
    mut stop: oneshot::Receiver<()>,
) -> Result<Ended, String> {
    let id = &req.identity;
    let sid = id.stream_sid.as_str();
    let mut seq = 1u64;
    let mut next_seq = || {
        seq += 1;
        seq - 1
    };
    send(&mut ws, protocol::connected()).await?;
    send(
        &mut ws,
        protocol::start(next_seq(), id, req.tracks, &req.parameters),
    )
    .await?;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut chunks_in, mut chunks_out) = (0u64, 0u64);
    let (mut samples_in, mut samples_out) = (0u64, 0u64);
    let mut marks = Marks::default();
    let mut partial: Vec<u8> = Vec::with_capacity(crate::media::FRAME_SAMPLES);
    let mut digits_open = req.bidirectional;
    // Ten seconds of audio in one message at most.
    let max_audio = crate::media::FRAME_SAMPLES * 500;
    loop {
        tokio::select! {
            _ = &mut stop => {
                let _ = send(&mut ws, protocol::stop(next_seq(), id)).await;
                let _ = ws.close().await;
                return Ok(Ended::Stopped);
            }
            _ = tick.tick() => {
                // Timestamps follow the audio itself: 8 samples a millisecond.
                while let Some(frame) = pipes.tap.pop() {
                    let outbound = frame.track == Track::Outbound;
                    let (chunks, samples) = match outbound {
                        true => (&mut chunks_out, &mut samples_out),
                        false => (&mut chunks_in, &mut samples_in),
                    };
                    *chunks += 1;
                    let at_ms = *samples / 8;
                    *samples += frame.payload().len() as u64;
                    let text = protocol::media(next_seq(), sid, outbound, *chunks, at_ms, frame.payload());
                    send(&mut ws, text).await?;
                }
                if let Some(live) = &pipes.live {
                    while let Some(mark) = live.next_played_mark() {
                        if let Some(name) = marks.played(mark) {
                            send(&mut ws, protocol::mark(next_seq(), sid, &name)).await?;
                        }
                    }
                }
            }
            digit = digits.recv(), if digits_open => match digit {
                Some(d) => send(&mut ws, protocol::dtmf(next_seq(), sid, d)).await?,
                None => digits_open = false,
            },
            msg = ws.next() => match msg {
                None | Some(Ok(Message::Close(_))) => return Ok(Ended::Closed),
                Some(Err(e)) => return Err(format!("WebSocket: {e}")),
                Some(Ok(Message::Text(text))) => match (&pipes.live, protocol::parse(text.as_str(), max_audio)) {
                    (Some(live), Ok(FromAgent::Media(audio))) => feed(live, &mut partial, &audio),
                    (Some(live), Ok(FromAgent::Mark(name))) => {
                        flush(live, &mut partial);
                        live.push_mark(marks.sent(name));
                    }
                    (Some(live), Ok(FromAgent::Clear)) => {
                        partial.clear();
                        live.clear();
                    }
                    // A one-way stream takes nothing back.
                    (None, Ok(_)) => refused("one_way"),
                    (_, Err(why)) => refused(why.label()),
                },
                Some(Ok(Message::Binary(_))) => refused("binary"),
                Some(Ok(_)) => {}
            },
        }
    }
}

fn refused(reason: &'static str) {
    counter!(names::MEDIA_STREAM_MESSAGES_REFUSED, "reason" => reason).increment(1);
}

async fn send(ws: &mut Box<dyn WsStream>, text: String) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("WebSocket send: {e}"))
}

/// Cut the agent's audio into 20 ms frames, keeping a remainder for the
/// next message.
fn feed(live: &LiveAudio, partial: &mut Vec<u8>, audio: &[u8]) {
    let frame_len = crate::media::FRAME_SAMPLES;
    let mut rest = audio;
    if !partial.is_empty() {
        let take = (frame_len - partial.len()).min(rest.len());
        let (head, tail) = rest.split_at(take);
        partial.extend_from_slice(head);
        rest = tail;
        if partial.len() == frame_len {
            push(live, partial);
            partial.clear();
        }
    }
    let mut chunks = rest.chunks_exact(frame_len);
    for chunk in &mut chunks {
        push(live, chunk);
    }
    partial.extend_from_slice(chunks.remainder());
}

/// A mark comes after all audio sent before it: a partial frame is
/// padded with silence and played first.
fn flush(live: &LiveAudio, partial: &mut Vec<u8>) {
    if !partial.is_empty() {
        partial.resize(crate::media::FRAME_SAMPLES, 0xff);
        push(live, partial);
        partial.clear();
    }
}

fn push(live: &LiveAudio, bytes: &[u8]) {
    let mut frame: UlawFrame = [0xff; crate::media::FRAME_SAMPLES];
    for (out, b) in frame.iter_mut().zip(bytes) {
        *out = *b;
    }
    live.push_frame(frame);
}

/// Mark names by the numbers the audio loop carries.
#[derive(Default)]
struct Marks {
    next: u32,
    names: std::collections::HashMap<u32, String>,
}

impl Marks {
    fn sent(&mut self, name: String) -> u32 {
        self.next = self.next.wrapping_add(1);
        // Bounded by the playout queue: a mark pushed out of it comes back.
        self.names.insert(self.next, name);
        self.next
    }

    fn played(&mut self, id: u32) -> Option<String> {
        self.names.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_audio_is_cut_into_frames_and_a_mark_flushes_the_rest() {
        let live = LiveAudio::new(20);
        let mut partial = Vec::new();
        feed(&live, &mut partial, &[1u8; 100]);
        assert_eq!(live.queued(), 0);
        feed(&live, &mut partial, &[2u8; 300]);
        // 400 bytes: two whole frames, 80 left over.
        assert_eq!(live.queued(), 2);
        assert_eq!(partial.len(), 80);
        flush(&live, &mut partial);
        live.push_mark(1);
        assert_eq!(live.queued(), 4);
        let mut out = [0i16; crate::media::FRAME_SAMPLES];
        for _ in 0..3 {
            live.fill(&mut out);
        }
        // The padded frame ends in μ-law silence (0xff decodes to 0).
        assert_eq!(out[crate::media::FRAME_SAMPLES - 1], 0);
        assert_eq!(out[0], crate::media::g711::ulaw_to_linear(2));
        // The mark comes back once that frame has had its 20 ms.
        assert_eq!(live.next_played_mark(), None);
        live.fill(&mut out);
        assert_eq!(live.next_played_mark(), Some(1));
    }
}
