//! One recognition, on tokio: the caller's audio from the call's tap goes
//! to the recognizer every 20 ms, and through the endpointer, which says
//! when speech starts (barge-in) and ends. The result is the final
//! transcript once speech has ended, or why there is none.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use metrics::{counter, histogram};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::provider::Provider;
use super::vad::{Endpointer, VadEvent};
use crate::media::live::StreamTap;
use crate::media_stream::session::WsStream;
use crate::telemetry::names;

/// Longest utterance listened to.
const MAX_SPEECH: Duration = Duration::from_secs(30);

/// What one `gather` listens for.
#[derive(Debug, Clone)]
pub struct Listen {
    pub language: String,
    pub hints: Vec<String>,
    /// Silence that ends speech.
    pub speech_timeout: Duration,
    /// No speech at all by then: no input.
    pub no_input_timeout: Duration,
    /// After speech ends, how long the final transcript may take.
    pub result_timeout: Duration,
    pub connect_timeout: Duration,
}

/// What the flow hears of a recognition.
#[derive(Debug, Clone, PartialEq)]
pub enum Heard {
    /// The caller started speaking: stop the prompt.
    Started,
    /// What was said, or why nothing was.
    Done(Result<Recognition, Failure>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recognition {
    pub transcript: String,
    pub confidence: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// Nobody spoke in time.
    NoInput,
    /// The recognizer couldn't be reached, dropped the socket or sent
    /// nothing final in time.
    Recognizer(String),
}

impl Failure {
    pub fn label(&self) -> &'static str {
        match self {
            Failure::NoInput => "no_input",
            Failure::Recognizer(_) => "recognizer",
        }
    }
}

/// Run one recognition; `Heard` events go to `out`, the last one `Done`.
pub async fn recognize(
    provider: Provider,
    listen: Listen,
    tap: Arc<StreamTap>,
    out: mpsc::UnboundedSender<Heard>,
) {
    let started = tokio::time::Instant::now();
    let result = run(&provider, &listen, &tap, &out).await;
    let label = match &result {
        Ok(_) => "recognized",
        Err(f) => f.label(),
    };
    if let Err(Failure::Recognizer(e)) = &result {
        tracing::warn!(provider = provider.name(), error = %e, "speech: recognizer failed");
        counter!(names::ASR_PROVIDER_ERRORS, "provider" => provider.name()).increment(1);
    }
    counter!(names::ASR_RECOGNITIONS, "provider" => provider.name(), "result" => label)
        .increment(1);
    histogram!(names::ASR_SESSION_SECONDS).record(started.elapsed().as_secs_f64());
    let _ = out.send(Heard::Done(result));
}

async fn run(
    provider: &Provider,
    listen: &Listen,
    tap: &StreamTap,
    out: &mpsc::UnboundedSender<Heard>,
) -> Result<Recognition, Failure> {
    let (url, auth) = provider
        .connect_to(&listen.language, &listen.hints)
        .map_err(Failure::Recognizer)?;
    let headers: Vec<(&str, String)> = auth.into_iter().map(|a| ("Authorization", a)).collect();
    let mut ws =
        crate::media_stream::session::open(&url, &headers, listen.connect_timeout, 1 << 20)
            .await
            .map_err(Failure::Recognizer)?;
    if let Some(text) = provider.opening(&listen.language, &listen.hints) {
        send(&mut ws, Message::text(text)).await?;
    }
    let mut endpointer = Endpointer::new(listen.speech_timeout);
    let no_input_by = tokio::time::Instant::now() + listen.no_input_timeout;
    // Set once speech ends: the final transcript is due by then.
    let mut result_by: Option<tokio::time::Instant> = None;
    let mut ended_at: Option<tokio::time::Instant> = None;
    let mut finals: Vec<(String, f64)> = Vec::new();
    let mut recognizer_done = false;
    let mut speaking_since: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pcm = [0i16; crate::media::FRAME_SAMPLES];
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let now = tokio::time::Instant::now();
                let mut frames = 0u32;
                let mut speech_ended = false;
                while let Some(frame) = tap.pop() {
                    frames += 1;
                    let bytes = frame.payload();
                    if !recognizer_done {
                        send(&mut ws, Message::binary(bytes.to_vec())).await?;
                    }
                    for chunk in bytes.chunks_exact(crate::media::FRAME_SAMPLES) {
                        crate::media::g711::decode_ulaw(chunk, &mut pcm);
                        let event = endpointer.frame(&pcm);
                        match event {
                            Some(VadEvent::SpeechStarted) => {
                                let _ = out.send(Heard::Started);
                                result_by = None;
                                ended_at = None;
                                speaking_since.get_or_insert(now);
                            }
                            Some(VadEvent::SpeechEnded) => speech_ended = true,
                            None => {}
                        }
                    }
                }
                // A caller that stops sending RTP in silence (DTX) is silent.
                if frames == 0 && endpointer.no_audio() == Some(VadEvent::SpeechEnded) {
                    speech_ended = true;
                }
                // A caller who never stops (noise, a TV) can't hold the
                // recognizer: the utterance ends at MAX_SPEECH.
                if speaking_since.is_some_and(|at| now.duration_since(at) >= MAX_SPEECH) {
                    speech_ended = true;
                }
                if speech_ended && !recognizer_done {
                    ended_at = Some(now);
                    result_by = Some(now + listen.result_timeout);
                    // Ask for what is left; the answer ends it.
                    let _ = send(&mut ws, Message::text(provider.closing())).await;
                    recognizer_done = true;
                }
                if !endpointer.heard_speech() && now >= no_input_by {
                    let _ = send(&mut ws, Message::text(provider.closing())).await;
                    return Err(Failure::NoInput);
                }
                if let Some(by) = result_by {
                    if !finals.is_empty() {
                        return Ok(joined(&finals, ended_at, now));
                    }
                    if now >= by {
                        return Err(Failure::Recognizer(format!(
                            "no final transcript {:?} after the caller stopped speaking",
                            listen.result_timeout
                        )));
                    }
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => {
                    let Some(t) = provider.transcript(text.as_str()) else { continue };
                    if t.is_final && !t.text.trim().is_empty() {
                        finals.push((t.text, t.confidence));
                    }
                    if t.end_of_speech && !finals.is_empty() && endpointer.heard_speech() {
                        let now = tokio::time::Instant::now();
                        return Ok(joined(&finals, ended_at.or(Some(now)), now));
                    }
                }
                Some(Ok(Message::Close(_))) | None => {
                    if !finals.is_empty() && result_by.is_some() {
                        let now = tokio::time::Instant::now();
                        return Ok(joined(&finals, ended_at, now));
                    }
                    return Err(Failure::Recognizer("the recognizer closed the socket".into()));
                }
                Some(Err(e)) => return Err(Failure::Recognizer(format!("WebSocket: {e}"))),
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The finals in order, with the lowest confidence among them; the
/// latency from end of speech is recorded.
fn joined(
    finals: &[(String, f64)],
    ended_at: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
) -> Recognition {
    if let Some(at) = ended_at {
        histogram!(names::ASR_LATENCY_SECONDS)
            .record(now.saturating_duration_since(at).as_secs_f64());
    }
    Recognition {
        transcript: finals
            .iter()
            .map(|(t, _)| t.trim())
            .collect::<Vec<_>>()
            .join(" "),
        confidence: finals
            .iter()
            .map(|(_, c)| *c)
            .fold(f64::INFINITY, f64::min)
            .min(1.0),
    }
}

async fn send(ws: &mut Box<dyn WsStream>, msg: Message) -> Result<(), Failure> {
    ws.send(msg)
        .await
        .map_err(|e| Failure::Recognizer(format!("WebSocket send: {e}")))
}
