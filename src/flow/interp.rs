//! The interpreter: one async task per call walks its flow. It owns no
//! sockets: it asks the call-control task to play audio and hang up, and
//! hears back DTMF, playback ends and the call ending. Hanging up aborts
//! the task, and dropping it cancels whatever it awaited (timers, TTS,
//! provider requests), so nothing leaks.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::model::{Flow, NodeKind};
use super::nodes;
use super::template::Vars;
use crate::media::clips::ClipCache;
use crate::sip::endpoint::CallId;
use crate::tts::{TtsCache, TtsProvider, TtsRequest};

/// What a flow asks of its call.
#[derive(Debug)]
pub enum CallRequest {
    /// Play these samples once; `PlayFinished(generation)` follows.
    Play {
        samples: Arc<[i16]>,
        generation: u32,
    },
    /// Loop these samples until the next request.
    Loop {
        samples: Arc<[i16]>,
        generation: u32,
    },
    /// Silence.
    Silence { generation: u32 },
    /// Ring `targets` (hold audio meanwhile) and bridge the first answer.
    Transfer(TransferRequest),
    /// Blind transfer: REFER the caller to `target`.
    Refer { target: String },
    /// End the call with BYE.
    Hangup,
}

#[derive(Debug)]
pub struct TransferRequest {
    pub targets: Vec<String>,
    pub parallel: bool,
    pub ring_timeout: Duration,
    pub trunk: Option<String>,
    /// Spoken over the music while ringing; `None`: the default hold.
    pub hold_message: Option<Arc<[i16]>>,
    pub repeat_interval: Option<Duration>,
}

/// How a transfer went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferEvent {
    /// An agent answered; the legs are bridged.
    Bridged { target: String },
    /// Nobody answered (408), busy (486), or another final status.
    Failed { status: u16 },
    /// The bridged agent hung up.
    AgentHungUp,
}

/// What a call tells its flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallSignal {
    Dtmf(char),
    PlayFinished(u32),
    Transfer(TransferEvent),
}

/// Services every flow shares.
pub struct Services {
    pub clips: Arc<ClipCache>,
    pub tts: Option<(Box<dyn TtsProvider>, TtsCache)>,
    pub sms: Option<Arc<dyn crate::messaging::MessagingProvider>>,
    pub whatsapp: Option<Arc<dyn crate::messaging::MessagingProvider>>,
    pub http: reqwest::Client,
    pub audio_dir: PathBuf,
    pub store: Option<std::sync::Arc<dyn crate::store::Store>>,
}

/// The call ended (or the call side went away): stop the flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended;

/// How playing something ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayEnd {
    Finished,
    /// A key was pressed (barge-in); the digit stays queued.
    Interrupted,
}

/// A flow's handle on its call.
pub struct FlowCx {
    pub call: CallId,
    pub flow: Arc<Flow>,
    pub vars: Vars,
    pub services: Arc<Services>,
    requests: mpsc::UnboundedSender<(CallId, CallRequest)>,
    signals: mpsc::UnboundedReceiver<CallSignal>,
    digits: VecDeque<char>,
    generation: u32,
}

impl FlowCx {
    pub fn new(
        call: CallId,
        flow: Arc<Flow>,
        vars: Vars,
        services: Arc<Services>,
        requests: mpsc::UnboundedSender<(CallId, CallRequest)>,
        signals: mpsc::UnboundedReceiver<CallSignal>,
    ) -> FlowCx {
        FlowCx {
            call,
            flow,
            vars,
            services,
            requests,
            signals,
            digits: VecDeque::new(),
            generation: 0,
        }
    }

    fn request(&self, r: CallRequest) -> Result<(), Ended> {
        self.requests.send((self.call, r)).map_err(|_| Ended)
    }

    fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    /// Play to the end, or until a key press when `barge_in`.
    pub async fn play(&mut self, samples: Arc<[i16]>, barge_in: bool) -> Result<PlayEnd, Ended> {
        if barge_in && !self.digits.is_empty() {
            return Ok(PlayEnd::Interrupted);
        }
        let generation = self.next_generation();
        self.request(CallRequest::Play {
            samples,
            generation,
        })?;
        loop {
            match self.signals.recv().await.ok_or(Ended)? {
                CallSignal::PlayFinished(g) if g == generation => return Ok(PlayEnd::Finished),
                CallSignal::PlayFinished(_) | CallSignal::Transfer(_) => {}
                CallSignal::Dtmf(d) => {
                    self.digits.push_back(d);
                    if barge_in {
                        self.silence()?;
                        return Ok(PlayEnd::Interrupted);
                    }
                }
            }
        }
    }

    pub fn play_loop(&mut self, samples: Arc<[i16]>) -> Result<(), Ended> {
        let generation = self.next_generation();
        self.request(CallRequest::Loop {
            samples,
            generation,
        })
    }

    pub fn silence(&mut self) -> Result<(), Ended> {
        let generation = self.next_generation();
        self.request(CallRequest::Silence { generation })
    }

    /// Ask for a transfer and wait for the next transfer event (digits
    /// pressed meanwhile are queued).
    pub async fn transfer(&mut self, req: TransferRequest) -> Result<TransferEvent, Ended> {
        self.request(CallRequest::Transfer(req))?;
        self.next_transfer_event().await
    }

    pub async fn refer(&mut self, target: String) -> Result<TransferEvent, Ended> {
        self.request(CallRequest::Refer { target })?;
        self.next_transfer_event().await
    }

    pub async fn next_transfer_event(&mut self) -> Result<TransferEvent, Ended> {
        loop {
            match self.signals.recv().await.ok_or(Ended)? {
                CallSignal::Transfer(e) => return Ok(e),
                CallSignal::Dtmf(d) => self.digits.push_back(d),
                CallSignal::PlayFinished(_) => {}
            }
        }
    }

    pub fn hangup(&self) -> Result<(), Ended> {
        self.request(CallRequest::Hangup)
    }

    /// Wait, queueing any digits that arrive.
    pub async fn sleep(&mut self, d: Duration) -> Result<(), Ended> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                s = self.signals.recv() => match s.ok_or(Ended)? {
                    CallSignal::Dtmf(d) => self.digits.push_back(d),
                    CallSignal::PlayFinished(_) | CallSignal::Transfer(_) => {}
                },
            }
        }
    }

    /// The next digit, waiting at most `timeout`.
    pub async fn next_digit(&mut self, timeout: Duration) -> Result<Option<char>, Ended> {
        if let Some(d) = self.digits.pop_front() {
            return Ok(Some(d));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                s = self.signals.recv() => match s.ok_or(Ended)? {
                    CallSignal::Dtmf(d) => return Ok(Some(d)),
                    CallSignal::PlayFinished(_) | CallSignal::Transfer(_) => {}
                },
            }
        }
    }

    /// A WAV file, decoded once and cached for every call.
    pub async fn clip(&self, file: &Path) -> Result<Arc<[i16]>, String> {
        let path = if file.is_absolute() {
            file.to_path_buf()
        } else {
            self.services.audio_dir.join(file)
        };
        let clips = self.services.clips.clone();
        tokio::task::spawn_blocking(move || clips.get(&path).map_err(|e| e.to_string()))
            .await
            .map_err(|e| e.to_string())?
    }

    /// Render text with the configured TTS provider (cached).
    pub async fn speech(&self, req: &TtsRequest) -> Result<Arc<[i16]>, String> {
        match &self.services.tts {
            Some((provider, cache)) => cache
                .get_or_render(provider.as_ref(), req)
                .await
                .map_err(|e| e.to_string()),
            None => Err("no TTS provider configured".into()),
        }
    }
}

/// Where a node sends the flow.
pub type Next = Option<String>;

/// Run a flow to its end; then hang up (the end of a flow ends the call).
pub async fn run(mut cx: FlowCx) {
    let flow = cx.flow.clone();
    let mut current = Some(flow.start.clone());
    let mut steps = 0u32;
    while let Some(id) = current.take() {
        steps += 1;
        // A loop in the graph (menu → menu) is fine, an endless one isn't.
        if steps > 10_000 {
            tracing::warn!(flow = %flow.name, "flow ran 10000 nodes: stopping");
            break;
        }
        let Some(node) = flow.node(&id) else {
            tracing::error!(flow = %flow.name, node = %id, "no such node");
            break;
        };
        tracing::info!(call = %cx.call, flow = %flow.name, node = %id, kind = node.kind.type_name(), "flow node");
        metrics::counter!("crossline_flow_nodes_total", "flow" => flow.name.clone(), "type" => node.kind.type_name())
            .increment(1);
        let result = match &node.kind {
            NodeKind::Say(n) => nodes::say::run(n, &mut cx).await,
            NodeKind::Play(n) => nodes::play::run(n, &mut cx).await,
            NodeKind::Pause(n) => nodes::pause::run(n, &mut cx).await,
            NodeKind::Gather(n) => nodes::gather::run(n, &mut cx).await,
            NodeKind::Branch(n) => nodes::branch::run(n, &mut cx).await,
            NodeKind::Set(n) => nodes::set::run(n, &mut cx).await,
            NodeKind::Http(n) => nodes::http::run(n, &mut cx).await,
            NodeKind::SendSms(n) => nodes::send_sms::run(n, &mut cx).await,
            NodeKind::SendWhatsApp(n) => nodes::send_whatsapp::run(n, &mut cx).await,
            NodeKind::Transfer(n) => nodes::transfer::run(n, &mut cx).await,
            NodeKind::Hangup(n) => nodes::hangup::run(n, &mut cx).await,
        };
        match result {
            Ok(next) => current = next,
            Err(Ended) => return,
        }
    }
    let _ = cx.hangup();
}
