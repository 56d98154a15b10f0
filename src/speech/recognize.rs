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
    /// The grammar's phrases: what an embedded recognizer listens for
    /// (else the hints).
    pub phrases: Vec<String>,
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
    let mut link = Link::open(provider, listen).await?;
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
                        link.audio(bytes).await?;
                    }
                    for chunk in bytes.chunks_exact(crate::media::FRAME_SAMPLES) {
                        crate::media::g711::decode_ulaw(chunk, &mut pcm);
                        let event = endpointer.frame(&pcm);
                        match event {
                            Some(VadEvent::SpeechStarted) => {
                                let _ = out.send(Heard::Started);
                                link.speech_started();
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
                    link.finish().await?;
                    recognizer_done = true;
                }
                if !endpointer.heard_speech() && now >= no_input_by {
                    link.abandon().await;
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
            said = link.next() => match said {
                Some(Ok(Said::Transcript(t))) => {
                    if t.is_final && !t.text.trim().is_empty() {
                        finals.push((t.text, t.confidence));
                    }
                    if t.end_of_speech && !finals.is_empty() && endpointer.heard_speech() {
                        let now = tokio::time::Instant::now();
                        return Ok(joined(&finals, ended_at.or(Some(now)), now));
                    }
                }
                Some(Ok(Said::Whole(answer))) => {
                    let now = tokio::time::Instant::now();
                    record_latency(ended_at, now);
                    return Ok(answer);
                }
                None => {
                    if !finals.is_empty() && result_by.is_some() {
                        let now = tokio::time::Instant::now();
                        return Ok(joined(&finals, ended_at, now));
                    }
                    return Err(Failure::Recognizer("the recognizer closed the socket".into()));
                }
                Some(Err(e)) => return Err(e),
            },
        }
    }
}

/// What came back from the recognizer.
enum Said {
    /// A streaming recognizer's (interim or final) transcript.
    Transcript(super::provider::Transcript),
    /// A whole-utterance recognizer's answer: the end (empty: nothing the
    /// grammar knows, a no-match).
    Whole(Recognition),
}

/// Where a recognition's audio goes and its transcripts come from.
enum Link<'a> {
    /// A streaming recognizer over a WebSocket.
    Stream {
        ws: Box<dyn WsStream>,
        provider: &'a Provider,
    },
    /// The embedded engine: the utterance is decoded once it has ended.
    Embedded {
        utterance: super::embedded::Utterance,
        answer: Option<tokio::sync::oneshot::Receiver<Result<super::embedded::Decoded, String>>>,
    },
}

impl<'a> Link<'a> {
    async fn open(provider: &'a Provider, listen: &Listen) -> Result<Link<'a>, Failure> {
        if let Provider::PocketSphinx(engine) = provider {
            let phrases = match listen.phrases.is_empty() {
                true => &listen.hints,
                false => &listen.phrases,
            };
            return Ok(Link::Embedded {
                utterance: engine.link(phrases).map_err(Failure::Recognizer)?,
                answer: None,
            });
        }
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
        Ok(Link::Stream { ws, provider })
    }

    async fn audio(&mut self, ulaw: &[u8]) -> Result<(), Failure> {
        match self {
            Link::Stream { ws, .. } => send(ws, Message::binary(ulaw.to_vec())).await,
            Link::Embedded { utterance, .. } => {
                utterance.audio(ulaw);
                Ok(())
            }
        }
    }

    fn speech_started(&mut self) {
        if let Link::Embedded { utterance, .. } = self {
            utterance.speech_started();
        }
    }

    /// Speech ended: ask for the result.
    async fn finish(&mut self) -> Result<(), Failure> {
        match self {
            Link::Stream { ws, provider } => {
                let _ = send(ws, Message::text(provider.closing())).await;
                Ok(())
            }
            Link::Embedded { utterance, answer } => {
                *answer = Some(utterance.finish().map_err(Failure::Recognizer)?);
                Ok(())
            }
        }
    }

    /// Nobody spoke: let the recognizer go.
    async fn abandon(&mut self) {
        if let Link::Stream { ws, provider } = self {
            let _ = send(ws, Message::text(provider.closing())).await;
        }
    }

    /// The next transcript; None: the recognizer went away. Cancel-safe.
    async fn next(&mut self) -> Option<Result<Said, Failure>> {
        match self {
            Link::Stream { ws, provider } => loop {
                match ws.next().await {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(t) = provider.transcript(text.as_str()) {
                            return Some(Ok(Said::Transcript(t)));
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => return None,
                    Some(Err(e)) => {
                        return Some(Err(Failure::Recognizer(format!("WebSocket: {e}"))))
                    }
                    Some(Ok(_)) => {}
                }
            },
            Link::Embedded { answer, .. } => {
                let Some(rx) = answer.as_mut() else {
                    return std::future::pending().await;
                };
                let result = rx.await;
                *answer = None;
                Some(match result {
                    Ok(Ok(decoded)) => Ok(Said::Whole(Recognition {
                        transcript: decoded.text,
                        confidence: decoded.confidence,
                    })),
                    Ok(Err(e)) => Err(Failure::Recognizer(format!("pocketsphinx: {e}"))),
                    Err(_) => Err(Failure::Recognizer("pocketsphinx: the worker died".into())),
                })
            }
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
    record_latency(ended_at, now);
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

fn record_latency(ended_at: Option<tokio::time::Instant>, now: tokio::time::Instant) {
    if let Some(at) = ended_at {
        histogram!(names::ASR_LATENCY_SECONDS)
            .record(now.saturating_duration_since(at).as_secs_f64());
    }
}

async fn send(ws: &mut Box<dyn WsStream>, msg: Message) -> Result<(), Failure> {
    ws.send(msg)
        .await
        .map_err(|e| Failure::Recognizer(format!("WebSocket send: {e}")))
}
