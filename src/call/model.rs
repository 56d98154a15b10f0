//! One `Call`: everything crossline holds about one SIP call leg, so that
//! ending it is dropping it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::media::player::{HoldProgram, Source};
use crate::sip::endpoint::{CallId, EndCause};
use crate::store::CallRecord;

/// What runs on an answered call.
#[derive(Debug, Clone)]
pub(crate) enum Program {
    /// Welcome message, then this hold program.
    Demo(Arc<HoldProgram>),
    /// Straight into this hold program.
    Hold(Arc<HoldProgram>),
    /// A flow file, pinned for the whole call (reloads don't change it).
    File(Arc<crate::flow::Flow>),
    /// A webhook app: it runs from the call's arrival, and its TwiML
    /// decides whether and when to answer.
    App(Box<AppRun>),
    /// Nothing of its own: an agent leg, bridged to its caller.
    Leg,
}

impl Program {
    /// The built-in flows play `hold`.
    pub(crate) fn from_name(
        name: &str,
        flows: &crate::flow::FlowSet,
        hold: &Arc<HoldProgram>,
    ) -> Option<Program> {
        match name {
            "demo" => Some(Program::Demo(hold.clone())),
            "hold" => Some(Program::Hold(hold.clone())),
            crate::queue::CALLBACK_FLOW => {
                Some(Program::File(Arc::new(crate::queue::callback_flow())))
            }
            other => flows.get(other).map(Program::File),
        }
    }
}

/// A webhook app's call: its one-node flow and its status callback.
#[derive(Debug, Clone)]
pub(crate) struct AppRun {
    pub(crate) flow: Arc<crate::flow::Flow>,
    pub(crate) status: Option<super::status::StatusHook>,
}

/// Why the call exists.
#[derive(Debug)]
pub(crate) enum Role {
    /// Someone called us (a web call is one too, with `web_call` set).
    Inbound,
    /// We rang an agent for `caller`'s transfer.
    Agent { caller: CallId, target: String },
    /// We rang a visitor back.
    Callback(Box<CallbackLeg>),
    /// We are calling for `referrer`'s REFER: on answer this call takes
    /// its place.
    Referred { referrer: CallId },
    /// A REFER's call took its place: nothing runs on it any more.
    Replaced,
}

/// A callback's own state.
#[derive(Debug)]
pub(crate) struct CallbackLeg {
    pub(crate) id: String,
    pub(crate) flow: Option<String>,
    pub(crate) target: Option<String>,
    /// Variables the flow starts with.
    pub(crate) vars: HashMap<String, String>,
    pub(crate) answered: bool,
}

/// The call's RTP stream as call control sees it.
#[derive(Debug)]
pub(crate) enum Media<R> {
    None,
    /// A port held for the SDP; becomes a stream on answer or ACK.
    Reserved(R),
    /// The audio loop runs it; stopping it frees the port.
    Streaming,
}

/// Whom a transfer rings.
#[derive(Debug)]
pub(crate) enum Dest {
    /// A SIP URI, through the transfer's trunk if it has one.
    Uri(String),
    /// One registered device of a user, over the flow it registered from.
    Device {
        user: String,
        binding: Box<crate::sip::registrar::Binding>,
    },
    /// Another node holding a registration of the user: it is handed the
    /// call and rings its own devices.
    Node { user: String, addr: SocketAddr },
}

/// A caller's transfer in progress: agents ringing one after the other or
/// all at once, each an agent `Call` of its own.
#[derive(Debug)]
pub(crate) struct Transfer {
    /// A user's devices are consecutive here and ring together.
    pub(crate) pending: VecDeque<Dest>,
    pub(crate) parallel: bool,
    pub(crate) ring_timeout: Duration,
    /// The trunk or trunk group agent legs go out through, by name.
    pub(crate) trunk: Option<String>,
    pub(crate) ringing: Vec<CallId>,
    pub(crate) bridged: Option<CallId>,
    /// A ringing agent whose early media (183) the caller hears.
    pub(crate) early: Option<CallId>,
    /// What the caller hears while agents ring without early media.
    pub(crate) hold: Arc<HoldProgram>,
    pub(crate) last_status: u16,
    /// A call straight to a user: the caller rings until a device answers,
    /// and is answered then (no hold music, no early media).
    pub(crate) answer_on_bridge: bool,
    /// What the legs show as the caller; unset: the trunk's, else the caller's.
    pub(crate) caller_id: Option<String>,
}

/// A blind transfer (REFER) of this call.
#[derive(Debug, Default)]
pub(crate) enum Refer {
    #[default]
    None,
    /// Asked for before the caller's ACK: sent once it comes.
    Waiting(String),
    /// Sent; NOTIFYs report the new call's progress.
    Sent(String),
    /// The peer referred this call: we are calling this leg for it.
    Calling(CallId),
    /// The peer hung up (`cause`) while `leg` rang for its REFER: the
    /// call's program waits here for that leg's answer.
    Parked { leg: CallId, cause: Box<EndCause> },
}

/// One call. `R` is the driver's port reservation and `F` its handle on
/// the flow task: both are dropped with the call, which frees the port and
/// stops the flow.
pub(crate) struct Call<R, F> {
    pub(crate) role: Role,
    pub(crate) record: CallRecord,
    pub(crate) media: Media<R>,
    pub(crate) program: Option<Program>,
    /// `Some` from the moment a flow is started for it.
    pub(crate) has_flow: bool,
    pub(crate) flow: Option<F>,
    /// Answer when due (a route's `ring_ms`).
    pub(crate) answer_at: Option<Instant>,
    /// Stop ringing when due (outbound legs).
    pub(crate) give_up: Option<Instant>,
    /// We cancelled it for ringing too long: a no-answer, not a cancel.
    pub(crate) timed_out: bool,
    pub(crate) transfer: Option<Box<Transfer>>,
    pub(crate) refer: Refer,
    /// Our own WebRTC leg calling in, by its web call id.
    pub(crate) web_call: Option<Box<str>>,
    /// The peer offered RFC 4733 telephone-event: DTMF goes in RTP, else
    /// as SIP INFO.
    pub(crate) rfc4733: bool,
    /// Digits this call's flow is sending, paced by call control.
    pub(crate) digits: Option<Box<Digits>>,
    /// Who called (inbound calls): the number flows see, as received,
    /// diversion and privacy.
    pub(crate) caller: Option<Box<super::identity::Caller>>,
    /// The call's `call` span (an agent leg's is a `leg` under its
    /// caller's): its flow runs in it, and call control enters it while
    /// handling the call, so every log line about the call names it.
    pub(crate) span: tracing::Span,
    /// A call we place: where it goes and where next.
    pub(crate) dialling: Option<Box<super::outbound::Dialling>>,
    /// What it plays now and the generation the flow gave it: a REFER's
    /// new call picks it up where this one leaves it.
    pub(crate) playing: Option<Box<(Source, u32)>>,
    /// Its route records it from the answer.
    pub(crate) route_records: bool,
    pub(crate) recording: crate::recording::RecordingState,
    /// Max-Forwards its INVITE carried (ours: 70): legs placed for it go
    /// out with one less, so a call that comes back to us runs out.
    pub(crate) max_forwards: u8,
}

/// DTMF being sent for a flow, one digit per step.
#[derive(Debug)]
pub(crate) struct Digits {
    pub(crate) left: VecDeque<char>,
    pub(crate) duration_ms: u32,
    /// The caller itself, or its bridged agent.
    pub(crate) target: CallId,
    pub(crate) next_at: Instant,
}

impl<R, F> Call<R, F> {
    /// A call and its CallSid (kept with its record), unless the record
    /// brings one (a call placed through the Calls API).
    pub(crate) fn new(role: Role, mut record: CallRecord) -> Call<R, F> {
        if !record.vars.contains_key(crate::twiml::CALL_SID_VAR) {
            record.vars.insert(
                crate::twiml::CALL_SID_VAR.into(),
                crate::twiml::new_sid("CA"),
            );
        }
        Call {
            role,
            record,
            media: Media::None,
            program: None,
            has_flow: false,
            flow: None,
            answer_at: None,
            give_up: None,
            timed_out: false,
            transfer: None,
            refer: Refer::None,
            web_call: None,
            rfc4733: false,
            digits: None,
            caller: None,
            span: tracing::Span::none(),
            dialling: None,
            playing: None,
            route_records: false,
            recording: crate::recording::RecordingState::Off,
            max_forwards: crate::sip::endpoint::MAX_FORWARDS,
        }
    }

    /// The call's one CallSid: its app's requests, status callbacks,
    /// media streams, the Calls API and its record all name it by this.
    pub(crate) fn sid(&self) -> &str {
        self.record
            .vars
            .get(crate::twiml::CALL_SID_VAR)
            .map_or("", String::as_str)
    }

    pub(crate) fn streaming(&self) -> bool {
        matches!(self.media, Media::Streaming)
    }

    /// The reservation, if the stream hasn't taken it yet.
    pub(crate) fn take_reservation(&mut self) -> Option<R> {
        match std::mem::replace(&mut self.media, Media::None) {
            Media::Reserved(r) => Some(r),
            other => {
                self.media = other;
                None
            }
        }
    }
}
