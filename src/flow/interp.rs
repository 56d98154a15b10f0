//! The interpreter: one async task per call or chat walks its flow. It owns
//! no sockets. On a call it asks the call-control task to play audio and
//! hang up, and hears back DTMF, playback ends and the call ending; in a
//! chat it posts to the conversation and reads the visitor's inputs.
//! Hanging up aborts the task, and dropping it cancels whatever it awaited
//! (timers, TTS, provider requests), so nothing leaks.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::Instrument;

use super::model::{Flow, NodeKind};
use super::nodes;
use super::template::Vars;
use crate::media::clips::ClipCache;
use crate::sip::endpoint::CallId;
use crate::telemetry::names;
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
    /// Wait music, with `message` spoken over it every `repeat_interval`
    /// (`None`: music only).
    Hold {
        message: Option<Arc<[i16]>>,
        repeat_interval: Option<Duration>,
        /// Empty: the configured music.
        music: Vec<Arc<[i16]>>,
    },
    /// Keep `name = value` with the call's record (CDR).
    Keep { name: String, value: String },
    /// End the call with BYE (before the answer: refuse it with 480).
    Hangup,
    /// Copy the call's audio to a media stream's tap (`None`: stop).
    Tap(Option<Arc<crate::media::live::StreamTap>>),
    /// Play audio fed from outside as it comes (a media stream's agent).
    Live {
        audio: Arc<crate::media::live::LiveAudio>,
        generation: u32,
    },
    /// Answer a call whose app started before the answer;
    /// `CallSignal::Answered` follows once its stream runs.
    Answer,
    /// Refuse a call not yet answered with this final status.
    Reject { status: u16 },
    /// Hang up the agent bridged to the call (the caller stays):
    /// `TransferEvent::AgentHungUp` follows; or stop ringing the agents of
    /// a transfer not yet answered: `TransferEvent::Failed` (487) follows.
    HangUpAgent,
    /// Send DTMF (`,` pauses) to the caller, or to the bridged agent;
    /// `DigitsSent` follows.
    SendDigits {
        digits: String,
        duration_ms: u32,
        to_agent: bool,
    },
    /// Start, stop, pause or resume recording the call.
    Record(crate::recording::RecordAction),
    /// Bridge the call with another answered call of ours: both flows
    /// hear `Transfer(Bridged)` (its target the other's CallSid), then
    /// `AgentHungUp` when either leaves or asks `HangUpAgent`; or this
    /// one hears `Failed` (480) when the other can't be joined.
    Join { with: CallId },
}

#[derive(Debug)]
pub struct TransferRequest {
    pub targets: Vec<String>,
    pub parallel: bool,
    pub ring_timeout: Duration,
    pub trunk: Option<String>,
    /// Spoken over the music while ringing; `None`: the default hold.
    pub hold_message: Option<Arc<[i16]>>,
    /// The transfer's own wait music; empty: the configured music.
    pub hold_music: Vec<Arc<[i16]>>,
    pub repeat_interval: Option<Duration>,
    /// The caller ID the legs show; unset: the trunk's, else the caller's.
    pub caller_id: Option<String>,
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
    /// The digits of a `SendDigits` are all out.
    DigitsSent,
    /// The call's stream runs: it was answered (after `Answer`).
    Answered,
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
    pub chat: Arc<crate::chat::ChatHub>,
    pub switchboard: Arc<crate::chat::Switchboard>,
    pub breakouts: Arc<crate::breakout::Breakouts>,
    pub callbacks: Arc<crate::callback::Callbacks>,
    /// Browser calls (WebRTC); None when `[webrtc] enabled = false`.
    pub webcalls: Option<Arc<crate::webrtc::WebCalls>>,
    /// What inbound webhooks are checked against.
    pub inbound: crate::messaging::InboundKeys,
    /// The flows, replaced on reload; a running flow keeps its own `Arc`.
    pub flow_set: std::sync::RwLock<Arc<super::FlowSet>>,
    /// Where links sent to phones point, e.g. "https://chat.example.com".
    pub public_base_url: String,
    pub chat_texts: crate::config::ChatConfig,
    /// What public paths may send to phones (texts and calls).
    pub policy: Arc<crate::messaging::policy::OutboundPolicy>,
    /// How media streams connect (`[media_streams]`).
    pub media_streams: crate::media_stream::session::StreamSettings,
    /// The speech recognizer (`[asr]`), if any.
    pub asr: Option<crate::speech::Recognizer>,
    /// Call recording: the writer, the files, commands to live calls.
    pub recordings: Arc<crate::recording::Recordings>,
    /// What webhook apps share: the signed HTTP client, limits, audio.
    pub twiml: Arc<crate::twiml::Apps>,
    /// `[[queues]]`: callers waiting for agents.
    pub queues: Arc<crate::queue::Queues>,
}

impl Services {
    /// Ask for a callback, checking `flow` names a voice flow.
    pub fn place_callback(
        &self,
        req: crate::callback::NewCallback,
        requested_by: &str,
    ) -> Result<crate::store::CallbackRecord, crate::callback::CallbackError> {
        self.callbacks
            .create(req, requested_by, |name| match self.flow(name) {
                Some(f) if f.channel == super::Channel::Voice => Ok(()),
                Some(_) => Err(format!(
                    "flow {name:?} is a chat flow; a callback needs a voice flow"
                )),
                None if name == "demo" || name == "hold" => Ok(()),
                None => Err(format!("no flow named {name:?}")),
            })
    }

    pub fn flow(&self, name: &str) -> Option<Arc<Flow>> {
        self.flow_set
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
    }
}

/// A recognition running for a `gather`; dropping it stops it.
pub struct Listening {
    pub heard: mpsc::UnboundedReceiver<crate::speech::recognize::Heard>,
    task: tokio::task::JoinHandle<()>,
    _relay: Option<Relay>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies the call's one tap to a fork and to whatever else listens
/// meanwhile (a recognition, a connected stream); dropping it stops it.
struct Relay(tokio::task::JoinHandle<()>);

impl Drop for Relay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every 20 ms, what `from` copied goes to each of `to` (each takes the
/// tracks it wants); already μ-law, so nothing is re-coded.
async fn relay(
    from: Arc<crate::media::live::StreamTap>,
    to: Vec<Arc<crate::media::live::StreamTap>>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        while let Some(frame) = from.pop() {
            for tap in &to {
                tap.push(frame.track, frame.payload(), false);
            }
        }
    }
}

/// What [`FlowCx::heed`] saw first.
#[derive(Debug)]
pub enum Heeded {
    Finished,
    Digit,
    Heard(crate::speech::recognize::Heard),
    Timeout,
}

/// What happens next on a bridged call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bridged {
    Transfer(TransferEvent),
    /// The caller pressed a key.
    Digit(char),
    /// The deadline given passed.
    TimeUp,
}

/// What [`FlowCx::wait_for`] saw first.
#[derive(Debug)]
pub enum Waited<T> {
    Done(T),
    /// The caller pressed a key.
    Digit(char),
    TimeUp,
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

/// Who a flow runs for, for logs.
#[derive(Debug, Clone)]
pub enum Label {
    Call(CallId),
    Chat(String),
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Label::Call(c) => write!(f, "{c}"),
            Label::Chat(id) => write!(f, "chat:{id}"),
        }
    }
}

/// Asks of a call apart from its [`FlowCx`] (see [`FlowCx::requester`]).
pub struct Requester {
    call: CallId,
    requests: mpsc::UnboundedSender<(CallId, CallRequest)>,
}

impl Requester {
    pub fn send(&self, r: CallRequest) -> Result<(), Ended> {
        self.requests.send((self.call, r)).map_err(|_| Ended)
    }
}

/// A call's side of a flow.
pub struct Voice {
    pub call: CallId,
    requests: mpsc::UnboundedSender<(CallId, CallRequest)>,
    signals: mpsc::UnboundedReceiver<CallSignal>,
    digits: VecDeque<char>,
    generation: u32,
    /// False while a webhook app decides whether to answer.
    answered: bool,
}

/// A chat's side of a flow.
pub struct Chat {
    pub conversation: Arc<crate::chat::Conversation>,
    inputs: mpsc::UnboundedReceiver<crate::chat::VisitorInput>,
    /// Set when the chat was opened from a Breakout: To chat link.
    pub breakout: Option<Arc<crate::breakout::Session>>,
}

pub enum Io {
    Voice(Voice),
    Chat(Chat),
}

/// A flow's handle on its call or chat.
pub struct FlowCx {
    pub label: Label,
    pub flow: Arc<Flow>,
    pub vars: Vars,
    pub services: Arc<Services>,
    pub io: Io,
    /// How often each node has been entered in this run.
    pub visits: std::collections::HashMap<String, u32>,
    /// One-way media streams running beside the flow: dropping these
    /// (the flow ends with its call) stops them.
    forks: Vec<Fork>,
}

/// A one-way media stream left running beside the flow.
struct Fork {
    name: Option<String>,
    tap: Arc<crate::media::live::StreamTap>,
    /// Dropped: the session says `stop` to the agent and closes.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl FlowCx {
    pub fn new(
        call: CallId,
        flow: Arc<Flow>,
        vars: Vars,
        services: Arc<Services>,
        requests: mpsc::UnboundedSender<(CallId, CallRequest)>,
        signals: mpsc::UnboundedReceiver<CallSignal>,
        answered: bool,
    ) -> FlowCx {
        FlowCx {
            label: Label::Call(call),
            flow,
            vars,
            services,
            visits: Default::default(),
            forks: Vec::new(),
            io: Io::Voice(Voice {
                call,
                requests,
                signals,
                digits: VecDeque::new(),
                generation: 0,
                answered,
            }),
        }
    }

    pub fn chat(
        conversation: Arc<crate::chat::Conversation>,
        inputs: mpsc::UnboundedReceiver<crate::chat::VisitorInput>,
        breakout: Option<Arc<crate::breakout::Session>>,
        flow: Arc<Flow>,
        vars: Vars,
        services: Arc<Services>,
    ) -> FlowCx {
        FlowCx {
            label: Label::Chat(conversation.id.clone()),
            flow,
            vars,
            services,
            visits: Default::default(),
            forks: Vec::new(),
            io: Io::Chat(Chat {
                conversation,
                inputs,
                breakout,
            }),
        }
    }

    /// The call side; a voice node in a chat flow (which validation
    /// rejects) just ends the flow.
    fn voice(&mut self) -> Result<&mut Voice, Ended> {
        match &mut self.io {
            Io::Voice(v) => Ok(v),
            Io::Chat(_) => {
                tracing::error!(flow = %self.flow.name, "voice node in a chat flow");
                Err(Ended)
            }
        }
    }

    pub fn chat_side(&mut self) -> Result<&mut Chat, Ended> {
        match &mut self.io {
            Io::Chat(c) => Ok(c),
            Io::Voice(_) => {
                tracing::error!(flow = %self.flow.name, "chat node in a voice flow");
                Err(Ended)
            }
        }
    }

    /// A handle that asks of the call while something else holds `self`.
    pub(crate) fn requester(&mut self) -> Result<Requester, Ended> {
        let v = self.voice()?;
        Ok(Requester {
            call: v.call,
            requests: v.requests.clone(),
        })
    }

    pub(crate) fn request(&mut self, r: CallRequest) -> Result<(), Ended> {
        let v = self.voice()?;
        v.requests.send((v.call, r)).map_err(|_| Ended)
    }

    fn next_generation(&mut self) -> Result<u32, Ended> {
        let v = self.voice()?;
        v.generation = v.generation.wrapping_add(1);
        Ok(v.generation)
    }

    /// Play to the end, or until a key press when `barge_in`.
    pub async fn play(&mut self, samples: Arc<[i16]>, barge_in: bool) -> Result<PlayEnd, Ended> {
        if barge_in && !self.voice()?.digits.is_empty() {
            return Ok(PlayEnd::Interrupted);
        }
        let generation = self.next_generation()?;
        self.request(CallRequest::Play {
            samples,
            generation,
        })?;
        loop {
            let v = self.voice()?;
            match v.signals.recv().await.ok_or(Ended)? {
                CallSignal::PlayFinished(g) if g == generation => return Ok(PlayEnd::Finished),
                CallSignal::PlayFinished(_)
                | CallSignal::Transfer(_)
                | CallSignal::DigitsSent
                | CallSignal::Answered => {}
                CallSignal::Dtmf(d) => {
                    v.digits.push_back(d);
                    if barge_in {
                        self.silence()?;
                        return Ok(PlayEnd::Interrupted);
                    }
                }
            }
        }
    }

    pub fn play_loop(&mut self, samples: Arc<[i16]>) -> Result<(), Ended> {
        let generation = self.next_generation()?;
        self.request(CallRequest::Loop {
            samples,
            generation,
        })
    }

    pub fn silence(&mut self) -> Result<(), Ended> {
        let generation = self.next_generation()?;
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
        let v = self.voice()?;
        loop {
            match v.signals.recv().await.ok_or(Ended)? {
                CallSignal::Transfer(e) => return Ok(e),
                CallSignal::Dtmf(d) => v.digits.push_back(d),
                CallSignal::PlayFinished(_) | CallSignal::DigitsSent | CallSignal::Answered => {}
            }
        }
    }

    /// While bridged: the next transfer event, a key the caller pressed,
    /// or `until` passing.
    pub async fn while_bridged(
        &mut self,
        until: Option<tokio::time::Instant>,
    ) -> Result<Bridged, Ended> {
        let v = self.voice()?;
        let deadline = async {
            match until {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => return Ok(Bridged::TimeUp),
                s = v.signals.recv() => match s.ok_or(Ended)? {
                    CallSignal::Transfer(e) => return Ok(Bridged::Transfer(e)),
                    CallSignal::Dtmf(d) => return Ok(Bridged::Digit(d)),
                    CallSignal::PlayFinished(_) | CallSignal::DigitsSent | CallSignal::Answered => {}
                },
            }
        }
    }

    /// Send `digits` to the caller and wait until they are all out;
    /// DTMF heard meanwhile is kept for the next gather.
    pub async fn send_digits(&mut self, digits: String, duration_ms: u32) -> Result<(), Ended> {
        self.request(CallRequest::SendDigits {
            digits,
            duration_ms,
            to_agent: false,
        })?;
        let v = self.voice()?;
        loop {
            match v.signals.recv().await.ok_or(Ended)? {
                CallSignal::DigitsSent => return Ok(()),
                CallSignal::Dtmf(d) => v.digits.push_back(d),
                CallSignal::PlayFinished(_) | CallSignal::Transfer(_) | CallSignal::Answered => {}
            }
        }
    }

    /// Run a media stream. Bidirectional: until the agent closes it (or
    /// it fails), forwarding the caller's digits. One-way: started, and
    /// left running until the call ends. `Ok(Err(why))`: it failed.
    pub async fn media_stream(
        &mut self,
        req: crate::media_stream::session::StreamRequest,
    ) -> Result<Result<crate::media_stream::session::Ended, String>, Ended> {
        use crate::media_stream::session;
        let settings = self.services.media_streams.clone();
        let pipes = session::Plumbing::new(&req, &settings);
        let ws = match self.call_wait(session::connect(&req, &settings)).await? {
            Ok(ws) => ws,
            Err(e) => return Ok(Err(e)),
        };
        // A connected stream shares the tap with a running fork; a new
        // fork takes it over.
        let relay = match req.bidirectional {
            true => self.tap_beside_fork(pipes.tap.clone())?,
            false => {
                self.request(CallRequest::Tap(Some(pipes.tap.clone())))?;
                None
            }
        };
        let (req_name, fork_tap) = (req.name.clone(), pipes.tap.clone());
        let (digit_tx, digit_rx) = tokio::sync::mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let live = pipes.live.clone();
        let task = tokio::spawn(
            async move { session::run(ws, &req, &pipes, digit_rx, stop_rx).await }
                .in_current_span(),
        );
        let Some(live) = live else {
            self.forks.push(Fork {
                name: req_name,
                tap: fork_tap,
                _stop: stop_tx,
            });
            return Ok(Ok(session::Ended::Stopped));
        };
        let generation = self.next_generation()?;
        self.request(CallRequest::Live {
            audio: live,
            generation,
        })?;
        // The stop sender lives here: if the call ends, the flow is
        // dropped with it and the session says `stop` to the agent.
        let _stop = stop_tx;
        tokio::pin!(task);
        let v = self.voice()?;
        let out = loop {
            tokio::select! {
                out = &mut task => break out.unwrap_or_else(|e| Err(format!("stream task: {e}"))),
                s = v.signals.recv() => match s.ok_or(Ended)? {
                    CallSignal::Dtmf(d) => {
                        let _ = digit_tx.send(d);
                    }
                    CallSignal::PlayFinished(_)
                    | CallSignal::Transfer(_)
                    | CallSignal::DigitsSent
                    | CallSignal::Answered => {}
                },
            }
        };
        drop(relay);
        self.request(CallRequest::Tap(self.fork_tap()))?;
        self.silence()?;
        Ok(out)
    }

    /// Point the call's one tap at `tap`. With a fork running, the tap
    /// copies both tracks and a relay feeds the fork and `tap` from it, so
    /// the fork hears on.
    fn tap_beside_fork(
        &mut self,
        tap: Arc<crate::media::live::StreamTap>,
    ) -> Result<Option<Relay>, Ended> {
        let Some(fork) = self.fork_tap() else {
            self.request(CallRequest::Tap(Some(tap)))?;
            return Ok(None);
        };
        let both = Arc::new(crate::media::live::StreamTap::new(true, true, 100));
        self.request(CallRequest::Tap(Some(both.clone())))?;
        let task = tokio::spawn(relay(both, vec![fork, tap]).in_current_span());
        Ok(Some(Relay(task)))
    }

    /// The tap of the newest fork still kept, which the call's one tap
    /// slot goes back to when a recognition or a connected stream is done.
    fn fork_tap(&self) -> Option<Arc<crate::media::live::StreamTap>> {
        self.forks.last().map(|f| f.tap.clone())
    }

    /// Stop the forks named `name` (`None`: every fork); how many.
    pub fn stop_forks(&mut self, name: Option<&str>) -> Result<usize, Ended> {
        let before = self.forks.len();
        self.forks
            .retain(|f| name.is_some_and(|n| f.name.as_deref() != Some(n)));
        let stopped = before - self.forks.len();
        if stopped > 0 {
            self.request(CallRequest::Tap(self.fork_tap()))?;
        }
        Ok(stopped)
    }

    /// Start playing `samples` without waiting; its generation, for
    /// [`FlowCx::heed`].
    pub fn play_start(&mut self, samples: Arc<[i16]>) -> Result<u32, Ended> {
        let generation = self.next_generation()?;
        self.request(CallRequest::Play {
            samples,
            generation,
        })?;
        Ok(generation)
    }

    /// Start recognizing the caller's speech: the call's tap feeds a
    /// recognition on its own task, whose events come on the returned
    /// receiver. `None`: no recognizer is configured. Dropping the
    /// [`Listening`] stops it.
    pub fn listen(
        &mut self,
        listen: crate::speech::recognize::Listen,
    ) -> Result<Option<Listening>, Ended> {
        let Some(asr) = self.services.asr.clone() else {
            return Ok(None);
        };
        let provider = asr.provider;
        let tap = Arc::new(crate::media::live::StreamTap::new(true, false, 100));
        let relay = self.tap_beside_fork(tap.clone())?;
        let (tx, heard) = mpsc::unbounded_channel();
        let task = tokio::spawn(
            crate::speech::recognize::recognize(provider, listen, tap, tx).in_current_span(),
        );
        Ok(Some(Listening {
            heard,
            task,
            _relay: relay,
        }))
    }

    /// Stop listening: the tap goes back to a running fork, else off.
    pub fn stop_listening(&mut self, listening: Listening) -> Result<(), Ended> {
        drop(listening);
        self.request(CallRequest::Tap(self.fork_tap()))
    }

    /// Wait for the first of: the play of `playing` finishing, a digit
    /// (when `digits`; it stays queued), something `heard`, `deadline`.
    pub async fn heed(
        &mut self,
        playing: Option<u32>,
        digits: bool,
        heard: &mut mpsc::UnboundedReceiver<crate::speech::recognize::Heard>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Heeded, Ended> {
        let v = self.voice()?;
        if digits && !v.digits.is_empty() {
            return Ok(Heeded::Digit);
        }
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return Ok(Heeded::Timeout),
                h = heard.recv() => return Ok(match h {
                    Some(h) => Heeded::Heard(h),
                    None => Heeded::Heard(crate::speech::recognize::Heard::Done(Err(
                        crate::speech::recognize::Failure::Recognizer("recognition ended".into()),
                    ))),
                }),
                s = v.signals.recv() => match s.ok_or(Ended)? {
                    CallSignal::Dtmf(d) => {
                        v.digits.push_back(d);
                        if digits {
                            return Ok(Heeded::Digit);
                        }
                    }
                    CallSignal::PlayFinished(g) if Some(g) == playing => return Ok(Heeded::Finished),
                    CallSignal::PlayFinished(_)
                    | CallSignal::Transfer(_)
                    | CallSignal::DigitsSent
                    | CallSignal::Answered => {}
                },
            }
        }
    }

    pub fn hangup(&mut self) -> Result<(), Ended> {
        self.request(CallRequest::Hangup)
    }

    /// Whether the call is answered (a webhook app's may not be yet).
    pub fn answered(&mut self) -> Result<bool, Ended> {
        Ok(self.voice()?.answered)
    }

    /// Answer the call if it isn't yet, and wait until its stream runs
    /// (digits meanwhile are queued).
    pub async fn answer(&mut self) -> Result<(), Ended> {
        if self.voice()?.answered {
            return Ok(());
        }
        self.request(CallRequest::Answer)?;
        let v = self.voice()?;
        loop {
            match v.signals.recv().await.ok_or(Ended)? {
                CallSignal::Answered => {
                    v.answered = true;
                    return Ok(());
                }
                CallSignal::Dtmf(d) => v.digits.push_back(d),
                CallSignal::PlayFinished(_) | CallSignal::Transfer(_) | CallSignal::DigitsSent => {}
            }
        }
    }

    /// Refuse the call (not yet answered) with `status`.
    pub fn reject(&mut self, status: u16) -> Result<(), Ended> {
        self.request(CallRequest::Reject { status })
    }

    /// Wait music with an optional message on repeat.
    pub fn hold(
        &mut self,
        message: Option<Arc<[i16]>>,
        repeat_interval: Option<Duration>,
        music: Vec<Arc<[i16]>>,
    ) -> Result<(), Ended> {
        self.request(CallRequest::Hold {
            message,
            repeat_interval,
            music,
        })
    }

    /// A node's own wait music, decoded; a file that can't be read is
    /// logged and left out (music beats dead air, and the rest still plays).
    pub async fn hold_music(&self, node: &str, files: &[PathBuf]) -> Vec<Arc<[i16]>> {
        let mut music = Vec::with_capacity(files.len());
        for file in files {
            match self.clip(file).await {
                Ok(clip) => music.push(clip),
                Err(e) => {
                    tracing::error!(on = %self.label, %node, file = %file.display(), %e, "hold music unreadable")
                }
            }
        }
        music
    }

    /// Keep a value with the call's record.
    pub fn keep(&mut self, name: &str, value: &str) -> Result<(), Ended> {
        self.request(CallRequest::Keep {
            name: name.into(),
            value: value.into(),
        })
    }

    /// Wait on `fut`, queueing any digits that arrive meanwhile; `Ended`
    /// if the call ends first.
    pub async fn call_wait<T>(
        &mut self,
        fut: impl std::future::Future<Output = T>,
    ) -> Result<T, Ended> {
        let v = self.voice()?;
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                s = v.signals.recv() => match s.ok_or(Ended)? {
                    CallSignal::Dtmf(d) => v.digits.push_back(d),
                    CallSignal::PlayFinished(_)
                | CallSignal::Transfer(_)
                | CallSignal::DigitsSent
                | CallSignal::Answered => {}
                },
            }
        }
    }

    /// Wait for `fut`, a key press (one queued before counts) or `until`,
    /// whichever comes first.
    pub async fn wait_for<T>(
        &mut self,
        fut: impl std::future::Future<Output = T>,
        until: tokio::time::Instant,
    ) -> Result<Waited<T>, Ended> {
        let v = self.voice()?;
        if let Some(d) = v.digits.pop_front() {
            return Ok(Waited::Digit(d));
        }
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(Waited::Done(out)),
                _ = tokio::time::sleep_until(until) => return Ok(Waited::TimeUp),
                s = v.signals.recv() => match s.ok_or(Ended)? {
                    CallSignal::Dtmf(d) => return Ok(Waited::Digit(d)),
                    CallSignal::PlayFinished(_)
                    | CallSignal::Transfer(_)
                    | CallSignal::DigitsSent
                    | CallSignal::Answered => {}
                },
            }
        }
    }

    /// Wait: on a call, queueing any digits that arrive.
    pub async fn sleep(&mut self, d: Duration) -> Result<(), Ended> {
        match self.io {
            Io::Voice(_) => self.call_wait(tokio::time::sleep(d)).await,
            Io::Chat(_) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }

    /// The next digit, waiting at most `timeout`.
    pub async fn next_digit(&mut self, timeout: Duration) -> Result<Option<char>, Ended> {
        let v = self.voice()?;
        if let Some(d) = v.digits.pop_front() {
            return Ok(Some(d));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(None),
                s = v.signals.recv() => match s.ok_or(Ended)? {
                    CallSignal::Dtmf(d) => return Ok(Some(d)),
                    CallSignal::PlayFinished(_)
                | CallSignal::Transfer(_)
                | CallSignal::DigitsSent
                | CallSignal::Answered => {}
                },
            }
        }
    }

    /// A bot message in the chat, after `typing_ms` of typing indicator.
    pub async fn bot_says(&mut self, text: &str, typing_ms: u64) -> Result<(), Ended> {
        let conversation = self.typing_for(typing_ms).await?;
        conversation
            .say(crate::chat::Role::Bot, text)
            .map(|_| ())
            .ok_or(Ended)
    }

    /// Show the typing indicator for a moment (capped at 10 s); gives the
    /// conversation back.
    pub async fn typing_for(
        &mut self,
        typing_ms: u64,
    ) -> Result<Arc<crate::chat::Conversation>, Ended> {
        let conversation = self.chat_side()?.conversation.clone();
        if typing_ms > 0 {
            conversation.typing(true);
            tokio::time::sleep(Duration::from_millis(typing_ms.min(10_000))).await;
            conversation.typing(false);
        }
        Ok(conversation)
    }

    /// What the visitor sends next. `Ended` when the conversation closes
    /// (from outside, e.g. a breakout timeout) or idles out.
    pub async fn next_input(&mut self) -> Result<crate::chat::VisitorInput, Ended> {
        let idle = Duration::from_secs(self.services.chat_texts.idle_timeout_secs);
        let idle_message = self.services.chat_texts.idle_message.clone();
        let chat = self.chat_side()?;
        let mut closed = chat.conversation.closed_watch();
        if *closed.borrow() {
            return Err(Ended);
        }
        tokio::select! {
            input = chat.inputs.recv() => input.ok_or(Ended),
            _ = closed.wait_for(|c| *c) => Err(Ended),
            _ = tokio::time::sleep(idle) => {
                chat.conversation.close(&idle_message);
                Err(Ended)
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

/// Run `flow` on a new web conversation (its own task; it ends with the
/// conversation).
pub fn spawn_chat(
    services: Arc<Services>,
    flow: Arc<Flow>,
    new: crate::chat::NewConversation,
    breakout: Option<Arc<crate::breakout::Session>>,
    vars: Vars,
) {
    let mut vars = vars;
    vars.insert("conversation_id".into(), new.conversation.id.clone());
    let span = chat_span(&new.conversation);
    let cx = FlowCx::chat(new.conversation, new.inputs, breakout, flow, vars, services);
    tokio::spawn(run(cx).instrument(span));
}

/// A chat flow's own span: the root of its trace, like a call's `call`.
fn chat_span(conversation: &crate::chat::Conversation) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "chat",
        conversation = %conversation.id,
        channel = %conversation.active().0.as_str(),
    )
}

/// Carries chat flows on after a restart: what `ChatHub` calls when it
/// rebuilds an open conversation from the store.
struct Resumer(std::sync::Weak<Services>);

impl crate::chat::FlowResumer for Resumer {
    fn resume(
        &self,
        conversation: Arc<crate::chat::Conversation>,
        inputs: mpsc::UnboundedReceiver<crate::chat::VisitorInput>,
        flow: &str,
        node: &str,
        vars: Vars,
    ) -> bool {
        let (Some(services), Ok(runtime)) =
            (self.0.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return false;
        };
        let Some(flow) = services.flow(flow).filter(|f| f.node(node).is_some()) else {
            // Reloaded since: the node it was at is gone.
            tracing::warn!(conversation = %conversation.id, flow, node, "cannot resume the chat: flow or node gone");
            conversation.close(&services.chat_texts.closed_message);
            return false;
        };
        let node = node.to_string();
        let span = chat_span(&conversation);
        runtime.spawn(
            async move {
                // Its breakout (if any) comes back from the store first.
                let breakout = match conversation.record().breakout_id {
                    Some(id) => services.breakouts.revive(&id, &conversation).await,
                    None => None,
                };
                let cx = FlowCx::chat(conversation, inputs, breakout, flow, vars, services);
                run_from(cx, node).await
            }
            .instrument(span),
        );
        true
    }

    fn start(&self, new: crate::chat::NewConversation, flow: &str, vars: Vars) -> bool {
        let Some(services) = self.0.upgrade() else {
            return false;
        };
        let Some(flow) = services.flow(flow) else {
            tracing::warn!(flow, "no such chat flow (reloaded?)");
            return false;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return false;
        }
        spawn_chat(services, flow, new, None, vars);
        true
    }
}

/// Let the chat hub resume flows of conversations it restores.
pub fn install_resumer(services: &Arc<Services>) {
    services
        .chat
        .set_resumer(Arc::new(Resumer(Arc::downgrade(services))));
}

/// Where a node sends the flow.
pub type Next = Option<String>;

/// Run a flow to its end; then hang up (the end of a flow ends the call).
pub async fn run(cx: FlowCx) {
    let start = cx.flow.start.clone();
    run_from(cx, start).await
}

/// Run a flow from `start` (its first node, or where a chat was when the
/// gateway stopped).
pub async fn run_from(mut cx: FlowCx, start: String) {
    let mut current = Some(start);
    let mut steps = 0u32;
    while let Some(id) = current.take() {
        // A node may move the flow on to another flow (breakout timeout).
        let flow = cx.flow.clone();
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
        // One child span per node run, under the call's or chat's.
        let span = tracing::info_span!("node", id = %id, "type" = %node.kind.type_name());
        span.in_scope(|| tracing::info!(on = %cx.label, flow = %flow.name, node = %id, kind = node.kind.type_name(), "flow node"));
        if let Io::Chat(c) = &cx.io {
            c.conversation.checkpoint(&flow.name, &id, &cx.vars);
        }
        *cx.visits.entry(id.clone()).or_default() += 1;
        metrics::counter!(names::FLOW_NODES, "flow" => flow.name.clone(), "type" => node.kind.type_name())
            .increment(1);
        let result = async {
            match &node.kind {
                NodeKind::Say(n) => nodes::say::run(n, &mut cx).await,
                NodeKind::Play(n) => nodes::play::run(n, &mut cx).await,
                NodeKind::Pause(n) => nodes::pause::run(n, &mut cx).await,
                NodeKind::SendDigits(n) => nodes::send_digits::run(n, &mut cx).await,
                NodeKind::Stream(n) => nodes::stream::run(n, &mut cx).await,
                NodeKind::Record(n) => nodes::record::run(n, &mut cx).await,
                NodeKind::Gather(n) => nodes::gather::run(n, &mut cx).await,
                NodeKind::Branch(n) => nodes::branch::run(n, &mut cx).await,
                NodeKind::Set(n) => nodes::set::run(n, &mut cx).await,
                NodeKind::Http(n) => nodes::http::run(n, &mut cx).await,
                NodeKind::SendSms(n) => nodes::send_sms::run(n, &mut cx).await,
                NodeKind::SendWhatsApp(n) => nodes::send_whatsapp::run(n, &mut cx).await,
                NodeKind::Transfer(n) => nodes::transfer::run(n, &mut cx).await,
                NodeKind::Hangup(n) => nodes::hangup::run(n, &mut cx).await,
                NodeKind::Breakout(n) => nodes::breakout::run(n, &mut cx).await,
                NodeKind::Message(n) => nodes::message::run(n, &mut cx).await,
                NodeKind::Handoff(n) => nodes::handoff::run(n, &mut cx).await,
                NodeKind::SaveLead(n) => nodes::save_lead::run(n, &mut cx).await,
                NodeKind::EscalateToCall(n) => nodes::escalate::run(n, &mut cx).await,
                NodeKind::Ask(n) => nodes::ask::run(n, &mut cx).await,
                NodeKind::Choice(n) => nodes::choice::run(n, &mut cx).await,
                NodeKind::BreakoutReturn(n) => nodes::breakout_return::run(n, &mut cx).await,
                NodeKind::WebhookApp(n) => nodes::webhook_app::run(n, &mut cx).await,
                NodeKind::Queue(n) => nodes::queue::run(n, &mut cx).await,
            }
        }
        .instrument(span)
        .await;
        match result {
            Ok(next) => current = next,
            Err(Ended) => return,
        }
    }
    // The end of a flow ends the call, or closes the chat.
    match &cx.io {
        Io::Voice(_) => {
            let _ = cx.hangup();
        }
        Io::Chat(c) => c.conversation.close(&cx.services.chat_texts.closed_message),
    }
}
