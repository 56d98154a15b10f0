//! The flow model: a named graph of nodes. Each node type's properties are a
//! struct with `deny_unknown_fields`, so a misspelt property is an error that
//! names its file and line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// A loaded, validated flow. Shared (`Arc`) by the calls running it, so a
/// reload never changes a call mid-way.
#[derive(Debug, Clone, PartialEq)]
pub struct Flow {
    pub name: String,
    pub file: PathBuf,
    /// Calls or chats: which node types it may use.
    pub channel: Channel,
    /// Id of the first node.
    pub start: String,
    /// Nodes by id.
    pub nodes: BTreeMap<String, Node>,
}

impl Flow {
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }
}

/// What a flow runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    #[default]
    Voice,
    Chat,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub id: String,
    pub line: usize,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    Say(Say),
    Play(Play),
    Pause(Pause),
    Gather(Gather),
    Branch(Branch),
    Set(Set),
    Http(Http),
    SendSms(SendSms),
    SendWhatsApp(SendWhatsApp),
    Transfer(Transfer),
    Hangup(Hangup),
    Breakout(Breakout),
    Message(Message),
    Ask(Ask),
    Choice(ChoiceNode),
    BreakoutReturn(BreakoutReturn),
    Handoff(Handoff),
    SaveLead(SaveLead),
    EscalateToCall(EscalateToCall),
    SendDigits(SendDigits),
    Stream(StreamNode),
    Record(Record),
    WebhookApp(WebhookApp),
    Queue(QueueNode),
}

/// The node types, as written in `type = "..."`.
pub const NODE_TYPES: &[&str] = &[
    "say",
    "play",
    "pause",
    "gather",
    "branch",
    "set",
    "http",
    "send_sms",
    "send_whatsapp",
    "transfer",
    "hangup",
    "breakout",
    "message",
    "ask",
    "choice",
    "breakout_return",
    "handoff",
    "save_lead",
    "escalate_to_call",
    "send_digits",
    "stream",
    "record",
    "webhook_app",
    "queue",
];

impl NodeKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Say(_) => "say",
            NodeKind::Play(_) => "play",
            NodeKind::Pause(_) => "pause",
            NodeKind::Gather(_) => "gather",
            NodeKind::Branch(_) => "branch",
            NodeKind::Set(_) => "set",
            NodeKind::Http(_) => "http",
            NodeKind::SendSms(_) => "send_sms",
            NodeKind::SendWhatsApp(_) => "send_whatsapp",
            NodeKind::Transfer(_) => "transfer",
            NodeKind::Hangup(_) => "hangup",
            NodeKind::Breakout(_) => "breakout",
            NodeKind::Message(_) => "message",
            NodeKind::Ask(_) => "ask",
            NodeKind::Choice(_) => "choice",
            NodeKind::BreakoutReturn(_) => "breakout_return",
            NodeKind::Handoff(_) => "handoff",
            NodeKind::SaveLead(_) => "save_lead",
            NodeKind::EscalateToCall(_) => "escalate_to_call",
            NodeKind::SendDigits(_) => "send_digits",
            NodeKind::Stream(_) => "stream",
            NodeKind::Record(_) => "record",
            NodeKind::WebhookApp(_) => "webhook_app",
            NodeKind::Queue(_) => "queue",
        }
    }

    /// The channels this node type works on.
    pub fn channels(&self) -> &'static [Channel] {
        match self {
            NodeKind::Say(_)
            | NodeKind::Play(_)
            | NodeKind::Gather(_)
            | NodeKind::Transfer(_)
            | NodeKind::Hangup(_)
            | NodeKind::SendDigits(_)
            | NodeKind::Stream(_)
            | NodeKind::Record(_)
            | NodeKind::WebhookApp(_)
            | NodeKind::Queue(_)
            | NodeKind::Breakout(_) => &[Channel::Voice],
            NodeKind::Message(_)
            | NodeKind::Ask(_)
            | NodeKind::Choice(_)
            | NodeKind::BreakoutReturn(_)
            | NodeKind::Handoff(_)
            | NodeKind::EscalateToCall(_) => &[Channel::Chat],
            NodeKind::Pause(_)
            | NodeKind::Branch(_)
            | NodeKind::Set(_)
            | NodeKind::Http(_)
            | NodeKind::SendSms(_)
            | NodeKind::SendWhatsApp(_)
            | NodeKind::SaveLead(_) => &[Channel::Voice, Channel::Chat],
        }
    }

    /// Every node id this node can go to, with the property naming it.
    pub fn edges(&self) -> Vec<(&'static str, &str)> {
        let mut out: Vec<(&'static str, &str)> = Vec::new();
        let optional: [(&'static str, &Option<String>); 2] = match self {
            NodeKind::Say(n) => [("next", &n.next), ("next", &None)],
            NodeKind::Play(n) => [("next", &n.next), ("next", &None)],
            NodeKind::Pause(n) => [("next", &n.next), ("next", &None)],
            NodeKind::Gather(n) => [("next", &n.next), ("on_failure", &n.on_failure)],
            NodeKind::Branch(n) => [("default", &n.default), ("default", &None)],
            NodeKind::Set(n) => [("next", &n.next), ("next", &None)],
            NodeKind::Http(n) => [("next", &n.next), ("on_error", &n.on_error)],
            NodeKind::SendSms(n) => [("next", &n.next), ("on_error", &n.on_error)],
            NodeKind::SendWhatsApp(n) => [("next", &n.next), ("on_error", &n.on_error)],
            NodeKind::Transfer(n) => [("next", &n.next), ("on_failure", &n.on_failure)],
            NodeKind::Hangup(_) => [("next", &None), ("next", &None)],
            NodeKind::Breakout(n) => [("next", &n.next), ("on_error", &n.on_error)],
            NodeKind::Message(n) => [("next", &n.next), ("next", &None)],
            NodeKind::Ask(n) => [("next", &n.next), ("on_failure", &n.on_failure)],
            NodeKind::Choice(n) => [("next", &n.next), ("on_failure", &n.on_failure)],
            NodeKind::BreakoutReturn(n) => [("next", &n.next), ("next", &None)],
            NodeKind::Handoff(_) => [("next", &None), ("next", &None)],
            NodeKind::SaveLead(n) => [("next", &n.next), ("next", &None)],
            NodeKind::EscalateToCall(n) => [("next", &n.next), ("on_failure", &n.on_failure)],
            NodeKind::SendDigits(n) => [("next", &n.next), ("next", &None)],
            NodeKind::Stream(n) => [("next", &n.next), ("on_error", &n.on_error)],
            NodeKind::Record(n) => [("next", &n.next), ("next", &None)],
            NodeKind::WebhookApp(_) => [("next", &None), ("next", &None)],
            NodeKind::Queue(n) => [("next", &n.next), ("next", &None)],
        };
        for (key, v) in optional {
            if let Some(v) = v {
                out.push((key, v.as_str()));
            }
        }
        match self {
            NodeKind::Gather(n) => {
                for v in n.branches.values() {
                    out.push(("branches", v.as_str()));
                }
            }
            NodeKind::Branch(n) => {
                for c in &n.conditions {
                    out.push(("conditions", c.next.as_str()));
                }
            }
            NodeKind::Choice(n) => {
                for c in &n.choices {
                    if let Some(next) = &c.next {
                        out.push(("choices", next.as_str()));
                    }
                }
            }
            NodeKind::Breakout(n) => {
                if let Some(next) = &n.on_closed {
                    out.push(("on_closed", next.as_str()));
                }
            }
            NodeKind::EscalateToCall(n) => {
                if let Some(next) = &n.on_chat {
                    out.push(("on_chat", next.as_str()));
                }
            }
            _ => {}
        }
        out
    }
}

fn default_language() -> String {
    "en".into()
}

/// Speak text with TTS (`{{var}}` templated).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Say {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default)]
    pub voice: Option<String>,
    #[serde(default)]
    pub rate_wpm: Option<u32>,
    #[serde(default)]
    pub next: Option<String>,
}

/// Play a WAV file (relative to `[media] audio_dir`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Play {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub file: PathBuf,
    /// Repeat the file; with `duration_secs` it stops then, else it plays
    /// until the caller hangs up.
    #[serde(default, rename = "loop")]
    pub looped: bool,
    #[serde(default)]
    pub duration_secs: Option<f64>,
    #[serde(default)]
    pub next: Option<String>,
}

/// Send DTMF to the caller's side: to reach an extension or an IVR behind
/// a PBX. RFC 4733 events when the peer offered telephone-event, else SIP
/// INFO (`application/dtmf-relay`). `,` pauses half a second.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SendDigits {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `0-9`, `*`, `#`, `A-D` and `,` (templated).
    pub digits: String,
    /// How long each digit sounds.
    #[serde(default = "digit_ms")]
    pub duration_ms: u32,
    #[serde(default)]
    pub next: Option<String>,
}

/// Stream the call's audio to a voice agent over WebSocket, in the
/// Twilio Media Streams format.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StreamNode {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `ws://` or `wss://` (templated).
    pub url: String,
    /// `connect`: the agent hears the caller and talks back, and the flow
    /// waits until it closes the socket (`<Connect><Stream>`). `start`: a
    /// one-way copy while the flow goes on, until the call ends
    /// (`<Start><Stream>`).
    #[serde(default = "stream_connect")]
    pub mode: String,
    /// `start` only: which audio (`connect` streams carry the caller's).
    #[serde(default)]
    pub track: Option<crate::media_stream::protocol::Tracks>,
    /// Sent in `start` as `customParameters` (values templated).
    #[serde(default)]
    pub parameters: BTreeMap<String, String>,
    #[serde(default)]
    pub next: Option<String>,
    /// The agent couldn't be reached or broke the protocol.
    #[serde(default)]
    pub on_error: Option<String>,
}

fn stream_connect() -> String {
    "connect".into()
}

/// What a `record` node does to the call's recording.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RecordNodeAction {
    /// Play `[recording] announcement`, then record.
    Start,
    Stop,
    /// PCI (a card number): silence, and no DTMF, until resumed.
    Pause,
    Resume,
}

/// Record the call (caller left, the other side right, or mixed).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub action: RecordNodeAction,
    /// "mono" or "dual"; unset: `[recording] channels`.
    #[serde(default)]
    pub channels: Option<crate::config::RecordChannels>,
    /// "wav" or "ogg"; unset: `[recording] format`.
    #[serde(default)]
    pub format: Option<crate::config::RecordFormat>,
    #[serde(default)]
    pub next: Option<String>,
}

pub fn digit_ms() -> u32 {
    160
}

/// Silence for a while.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Pause {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub secs: f64,
    #[serde(default)]
    pub next: Option<String>,
}

fn one() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn three_secs() -> f64 {
    3.0
}
fn five_secs() -> f64 {
    5.0
}
fn digits_var() -> String {
    "digits".into()
}

/// A DTMF menu.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Gather {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Spoken (TTS) while waiting; a key press interrupts it.
    #[serde(default)]
    pub prompt: Option<String>,
    /// Or a WAV file as the prompt.
    #[serde(default)]
    pub prompt_file: Option<PathBuf>,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default = "one")]
    pub max_digits: u32,
    /// Ends input early; not stored.
    #[serde(default)]
    pub terminator: Option<String>,
    /// Seconds to wait for the first digit after the prompt.
    #[serde(default = "five_secs")]
    pub timeout_secs: f64,
    #[serde(default = "three_secs")]
    pub inter_digit_timeout_secs: f64,
    /// Further attempts after no input or an invalid choice.
    #[serde(default = "two")]
    pub retries: u32,
    #[serde(default)]
    pub invalid_prompt: Option<String>,
    /// Input → node. Empty means any input goes to `next`.
    #[serde(default)]
    pub branches: BTreeMap<String, String>,
    /// Where the digits are stored.
    #[serde(default = "digits_var")]
    pub var: String,
    #[serde(default)]
    pub next: Option<String>,
    /// After the last retry; default: hang up.
    #[serde(default)]
    pub on_failure: Option<String>,
    /// "dtmf" (default), "speech" or "dtmf speech" (`[asr]` recognizes
    /// speech).
    #[serde(default = "dtmf_input")]
    pub input: String,
    /// Words the recognizer should expect.
    #[serde(default)]
    pub hints: Vec<String>,
    /// Value → phrases: speech containing a phrase picks its value, which
    /// `branches` and `var` then use like digits.
    #[serde(default)]
    pub grammar: BTreeMap<String, Vec<String>>,
    /// Silence that ends the caller's speech.
    #[serde(default = "speech_timeout")]
    pub speech_timeout_secs: f64,
    /// Speech or a key stops the prompt.
    #[serde(default = "yes")]
    pub barge_in: bool,
}

impl Gather {
    pub fn wants_speech(&self) -> bool {
        self.input.split_whitespace().any(|w| w == "speech")
    }

    pub fn wants_dtmf(&self) -> bool {
        self.input.split_whitespace().any(|w| w == "dtmf")
    }
}

fn dtmf_input() -> String {
    "dtmf".into()
}

fn speech_timeout() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Eq,
    Ne,
    Contains,
    StartsWith,
    Empty,
    NotEmpty,
    /// Glob: `*` and `?`.
    Matches,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub var: String,
    pub op: Op,
    #[serde(default)]
    pub value: String,
    pub next: String,
}

/// The first condition that holds picks the next node.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub default: Option<String>,
}

/// Set variables (values are templates).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Set {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub vars: BTreeMap<String, String>,
    #[serde(default)]
    pub next: Option<String>,
}

fn get() -> String {
    "GET".into()
}
fn ten_secs_ms() -> u64 {
    10_000
}

/// The "API connection card": call an HTTP API, map the JSON reply.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default = "get")]
    pub method: String,
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON body template; `{{var}}` values are JSON-escaped.
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default = "ten_secs_ms")]
    pub timeout_ms: u64,
    /// Extra attempts on 5xx, timeouts and connection errors.
    #[serde(default)]
    pub retries: u32,
    /// Variable → JSON pointer into the reply (e.g. "/data/id").
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub on_error: Option<String>,
}

/// SMS to the caller (or `to`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SendSms {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Blank: the caller's number.
    #[serde(default)]
    pub to: String,
    #[serde(default)]
    pub from: Option<String>,
    pub body: String,
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub on_error: Option<String>,
}

/// A WhatsApp message to the caller (or `to`): an approved template, or
/// free-form `text` inside the 24 h customer-service window.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SendWhatsApp {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub to: String,
    /// The approved template's name; or else `text`.
    #[serde(default)]
    pub template: Option<String>,
    /// The template's language code, e.g. "es" or "en_US".
    #[serde(default)]
    pub language: Option<String>,
    /// Shorthand for a body of positional text parameters.
    #[serde(default)]
    pub parameters: Vec<String>,
    /// Header, body and button parameters, as the Cloud API writes them.
    #[serde(default)]
    pub components: Vec<crate::messaging::whatsapp_template::Component>,
    /// Free-form text (templated); only inside the 24 h window.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub on_error: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Ring {
    /// One target at a time, each for `ring_timeout_secs`.
    #[default]
    Sequential,
    /// All targets at once; the first to answer wins.
    Parallel,
}

fn twenty_secs() -> f64 {
    20.0
}

/// Transfer to a team or agent: ring SIP targets while the caller hears
/// hold music (and a hold message, if set), then bridge the two legs.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// SIP URIs, e.g. "sip:agent1@192.0.2.10:5060".
    pub targets: Vec<String>,
    #[serde(default)]
    pub ring: Ring,
    #[serde(default = "twenty_secs")]
    pub ring_timeout_secs: f64,
    /// Send through this trunk (its proxy, credentials and caller ID), or
    /// through a `[[trunk_groups]]` entry's trunks in turn.
    #[serde(default)]
    pub trunk: Option<String>,
    /// Spoken over the hold music while ringing; unset: the default hold.
    #[serde(default)]
    pub hold_message: Option<String>,
    /// This transfer's own wait music, played in turn (WAV files; relative
    /// to the audio directory); empty: `[media] hold_music`.
    #[serde(default)]
    pub hold_music: Vec<std::path::PathBuf>,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default)]
    pub repeat_interval_secs: Option<u64>,
    /// Digits to send the agent's side once it answers (a PBX extension,
    /// an IVR choice), as in `send_digits`.
    #[serde(default)]
    pub send_digits_on_answer: Option<String>,
    /// Blind transfer by REFER (RFC 3515) to the first target: the caller's
    /// side places the new call and crossline leaves once it's answered.
    #[serde(default)]
    pub refer: bool,
    /// After the agent hangs up; unset: the call ends.
    #[serde(default)]
    pub next: Option<String>,
    /// No answer, busy or failure.
    #[serde(default)]
    pub on_failure: Option<String>,
}

/// Wait in a `[[queues]]` queue for an agent (music, position
/// announcements, the callback offer), then bridge. Leaving (max wait,
/// pressing 0) goes to the queue's `fallback_flow`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueNode {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// A `[[queues]]` name.
    pub queue: String,
    /// What the caller needs (the `skills` strategy matches agents' tags).
    #[serde(default)]
    pub skills: Vec<String>,
    /// After the agent hangs up; unset: the call ends.
    #[serde(default)]
    pub next: Option<String>,
    /// Set only on the built-in flow of a virtual-hold callback
    /// (`queue::callback_flow`): take back the called-back caller's place
    /// instead of joining.
    #[serde(skip)]
    pub resume_callback: bool,
}

/// Hand the call to a TwiML webhook app (`app = { url = "…" }`, as on a
/// route): its TwiML runs the call from here to its end.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhookApp {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub app: crate::twiml::AppConfig,
}

/// End the call, after an optional goodbye played in full.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Hangup {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub file: Option<PathBuf>,
    #[serde(default = "default_language")]
    pub language: String,
}

fn sixty_secs() -> u64 {
    60
}
fn three_hundred_secs() -> u64 {
    300
}
fn caller_left_notice() -> String {
    "The phone call has ended. You can still finish here: we will keep your answers.".into()
}
fn timed_out_notice() -> String {
    "Time is up for this form; the call has moved on. Thank you.".into()
}

/// Breakout: To chat. Text the caller a link to a web chat running
/// `breakout_flow`, hold the call (music, `hold_message` on repeat) until
/// the chat reaches Breakout: Return, then go on at `next` with the
/// returned variables. After `timeout_secs` the call goes to
/// `timeout_flow` instead.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Breakout {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the SMS goes; blank: the caller's number.
    #[serde(default)]
    pub phone_number: String,
    /// The SMS text (templated); the link is always appended.
    pub sms_message: String,
    /// SMS sender; unset: the provider's default.
    #[serde(default)]
    pub from: Option<String>,
    /// The chat flow the link starts.
    pub breakout_flow: String,
    /// Spoken (TTS) over the wait music; empty: music only.
    #[serde(default)]
    pub hold_message: String,
    /// This breakout's own wait music, played in turn; empty:
    /// `[media] hold_music`.
    #[serde(default)]
    pub hold_music: Vec<std::path::PathBuf>,
    #[serde(default = "default_language")]
    pub language: String,
    #[serde(default = "sixty_secs")]
    pub repeat_interval_secs: u64,
    /// To open the link, finish the flow and return.
    #[serde(default = "three_hundred_secs")]
    pub timeout_secs: u64,
    /// The voice flow the call continues in after the timeout; unset: the
    /// call goes on at `next` with `<id>.status = "timeout"`.
    #[serde(default)]
    pub timeout_flow: Option<String>,
    /// Shown in the chat if the caller hangs up while it is open.
    #[serde(default = "caller_left_notice")]
    pub caller_left_message: String,
    /// Shown in the chat (which then closes) when the timeout passes.
    #[serde(default = "timed_out_notice")]
    pub timeout_message: String,
    #[serde(default)]
    pub next: Option<String>,
    /// The SMS could not be sent (`<id>.error` says why).
    #[serde(default)]
    pub on_error: Option<String>,
    /// The chat closed (an operator closed it, it idled out) before
    /// Breakout: Return; unset: `next`. Either way at once, with
    /// `<id>.status = "closed"`.
    #[serde(default)]
    pub on_closed: Option<String>,
}

/// A bot message in a chat.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    /// Show the typing indicator this long first.
    #[serde(default)]
    pub typing_ms: u64,
    #[serde(default)]
    pub next: Option<String>,
}

/// Hand the chat to the operators: an optional bot message, then the
/// conversation stays open for the console until it is closed or idles out.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Handoff {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub typing_ms: u64,
}

/// Keep a lead (name, email, phone; templated) linked to this chat, for
/// the console's "Reconnect over SMS". Invalid values are left out.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaveLead {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub next: Option<String>,
}

/// The "API connection card": offer Chat or Phone; for Phone, collect the
/// number under the legal notice (stored as consent), place a callback, and
/// follow it: a number the carrier refuses is asked again, busy or no
/// answer offers another try.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EscalateToCall {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The multiple-choice question.
    #[serde(default = "escalate_text")]
    pub text: String,
    #[serde(default = "chat_label")]
    pub chat_label: String,
    #[serde(default = "phone_label")]
    pub phone_label: String,
    #[serde(default = "phone_prompt")]
    pub phone_prompt: String,
    /// The legal notice (GDPR) the number is given under; stored verbatim
    /// with the consent.
    pub legal_notice: String,
    /// The voice flow the call runs once answered, or a SIP target to ring.
    #[serde(default)]
    pub flow: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default = "calling_message")]
    pub calling_message: String,
    #[serde(default = "connected_message")]
    pub connected_message: String,
    #[serde(default = "invalid_number_message")]
    pub invalid_number_message: String,
    #[serde(default = "unreachable_message")]
    pub unreachable_message: String,
    #[serde(default = "retry_label")]
    pub retry_label: String,
    #[serde(default = "keep_chatting_label")]
    pub keep_chatting_label: String,
    /// Numbers and calls tried before giving up.
    #[serde(default = "three")]
    pub max_attempts: u32,
    /// After the call was answered.
    #[serde(default)]
    pub next: Option<String>,
    /// The visitor chose (or went back to) the chat.
    #[serde(default)]
    pub on_chat: Option<String>,
    /// Any other failure, or attempts used up.
    #[serde(default)]
    pub on_failure: Option<String>,
}

fn escalate_text() -> String {
    "How would you like to continue?".into()
}
fn chat_label() -> String {
    "Chat".into()
}
fn phone_label() -> String {
    "Phone".into()
}
fn phone_prompt() -> String {
    "What number should we call you on?".into()
}
fn calling_message() -> String {
    "Thanks! We are calling you now.".into()
}
fn connected_message() -> String {
    "You're connected. Talk to you on the phone!".into()
}
fn invalid_number_message() -> String {
    "We couldn't call that number. Please check it and type it again, with the country code.".into()
}
fn unreachable_message() -> String {
    "We couldn't reach you (the line was busy or nobody answered). Shall we try again later?".into()
}
fn retry_label() -> String {
    "Try again".into()
}
fn keep_chatting_label() -> String {
    "Keep chatting".into()
}
fn three() -> u32 {
    3
}

fn input_var() -> String {
    "answer".into()
}

/// Ask for a value in a chat, check it, ask again if it's wrong.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    /// email, phone (stored as E.164), number or text.
    #[serde(default)]
    pub input: crate::chat::InputKind,
    #[serde(default = "input_var")]
    pub var: String,
    #[serde(default)]
    pub placeholder: Option<String>,
    /// Said before asking again; default: a line per input type.
    #[serde(default)]
    pub retry_prompt: Option<String>,
    #[serde(default = "two")]
    pub retries: u32,
    #[serde(default)]
    pub typing_ms: u64,
    #[serde(default)]
    pub next: Option<String>,
    /// After the last retry; default: the chat ends.
    #[serde(default)]
    pub on_failure: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChoiceOption {
    pub label: String,
    /// Stored in `var`; default: the label.
    #[serde(default)]
    pub value: Option<String>,
    /// Where this choice goes; default: the node's `next`.
    #[serde(default)]
    pub next: Option<String>,
}

/// Buttons in a chat; typing a label (any case) counts too.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChoiceNode {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
    pub choices: Vec<ChoiceOption>,
    #[serde(default = "input_var")]
    pub var: String,
    #[serde(default)]
    pub retry_prompt: Option<String>,
    #[serde(default = "two")]
    pub retries: u32,
    #[serde(default)]
    pub typing_ms: u64,
    #[serde(default)]
    pub next: Option<String>,
    #[serde(default)]
    pub on_failure: Option<String>,
}

/// Breakout: Return. Hand `vars` back to the call waiting on this chat.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakoutReturn {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The variables the call receives, by name.
    pub vars: Vec<String>,
    /// Shown when the call got them.
    #[serde(default)]
    pub message: Option<String>,
    /// Shown when the caller had hung up (the values are kept).
    #[serde(default)]
    pub caller_left_message: Option<String>,
    /// Shown when the call had moved on (timeout).
    #[serde(default)]
    pub too_late_message: Option<String>,
    #[serde(default)]
    pub next: Option<String>,
}
