//! Call control: one [`Call`](model::Call) per call, run as a sans-IO state
//! machine in the shape of [`Endpoint`](crate::sip::endpoint::Endpoint).
//!
//! [`CallControl`] owns the SIP endpoint and one map of calls. Input comes
//! in with `now`: SIP bytes (handed to the endpoint), flow requests, media
//! events, callbacks to dial and timeouts. Output is drained by `poll_*`:
//! SIP transmits, [`MediaCommand`]s for the audio loops, flows to start,
//! signals for running flows and [`Effect`]s for the rest of the process
//! (call records, callback progress). `poll_timeout` says when to call
//! `handle_timeout` next. [`crate::runtime`] drives it with tokio.
//!
//! Tracing: each call gets one `call` span when it starts (an agent leg a
//! `leg` span under its caller's), kept with the [`Call`](model::Call).
//! Call control enters it while it handles that call's event, request or
//! timer, and the flow task runs inside it, so every log line about a call
//! names it. That is one span per call and one enter per signalling event,
//! never per packet: the audio loops know nothing of spans.

mod callback;
mod identity;
mod joined;
mod model;
mod outbound;
mod referred;
mod routing;
mod status;
mod transfer;
pub mod trunk_health;
mod trunks;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use metrics::{counter, gauge};

use crate::callback::Progress;
use crate::config::Config;
use crate::flow::interp::{CallRequest, CallSignal};
use crate::media::audio_loop::{HoldProgram, MediaEvent, Source};
use crate::recording::{CallCommand, RecordAction, RecordError, RecordingState};
use crate::sdp::{Direction, LocalMedia, Negotiated};
use crate::sip::endpoint::{
    CallId, ConnId, EndCause, Endpoint, Event, IncomingCall, Transmit, Transport,
};
use crate::store::CallRecord;
use crate::telemetry::names;

use model::{Call, Media, Program, Refer, Role};
pub use outbound::{ResolveId, ResolveRequest};
pub use routing::{EarlyAudio, HoldPrograms, RouteApp, Router};
pub use trunk_health::{TrunkBoard, TrunkStatus};

/// Hands out RTP ports. The reservation keeps the port until it is dropped
/// or handed to a stream with [`MediaCommand::Start`].
pub trait PortSource {
    type Reservation;
    /// A free port and its reservation, or why there is none.
    fn reserve(&mut self) -> Result<(u16, Self::Reservation), String>;
}

/// What the audio loops must do.
#[derive(Debug)]
pub enum MediaCommand<R> {
    /// Start the call's stream on its reserved port; `near`: put it on
    /// the same audio loop as that call (bridges stay on one loop).
    Start {
        call: CallId,
        reservation: R,
        media: Negotiated,
        source: Source,
        near: Option<CallId>,
    },
    /// Play `source`; `generation` tags its end for the flow.
    Play {
        call: CallId,
        source: Source,
        generation: u32,
    },
    Bridge(CallId, CallId),
    Unbridge(CallId),
    /// Send one RFC 4733 DTMF event.
    SendDtmf {
        call: CallId,
        digit: char,
        duration_ms: u32,
    },
    /// Send or stop sending (hold); `remote`: where RTP goes now.
    Sending {
        call: CallId,
        sending: bool,
        remote: Option<SocketAddr>,
    },
    Stop(CallId),
    /// Copy the call's audio to a media stream's tap, or stop (`None`).
    Tap {
        call: CallId,
        tap: Option<Arc<crate::media::live::StreamTap>>,
    },
    /// Start, stop, pause or resume the stream's recording; `call_id` (the
    /// SIP Call-ID) is what its row is filed under.
    Record {
        call: CallId,
        call_id: String,
        action: RecordAction,
    },
}

/// What the rest of the process must hear of.
#[derive(Debug)]
pub enum Effect {
    /// A call ended: its detail record, to store.
    Record(CallRecord),
    /// A callback's call moved on.
    Callback { id: String, progress: Progress },
    /// A user's registered devices changed: the list now, as of `at`, to
    /// keep in the store.
    Bindings {
        user: String,
        bindings: Vec<crate::sip::registrar::Binding>,
        at: Instant,
    },
    /// A web call hears the shared wait music (`Some`) or stops (`None`):
    /// its browser then gets the one Opus encode all such calls share.
    SharedHold {
        web_call: String,
        hold: Option<Arc<HoldProgram>>,
    },
    /// A webhook app's call moved on: its status callback, to send.
    CallStatus(Box<crate::twiml::StatusEvent>),
}

/// A flow to start on an answered call; the driver runs it and attaches
/// its handle with [`CallControl::attach_flow`].
#[derive(Debug)]
pub struct FlowStart {
    pub call: CallId,
    pub flow: Arc<crate::flow::Flow>,
    pub vars: HashMap<String, String>,
    /// The call's span, for the flow task to run in.
    pub span: tracing::Span,
    /// False for a webhook app, started before the answer.
    pub answered: bool,
}

/// Start-up values that aren't in the config.
pub struct Settings {
    /// What the demo flow plays before the hold program.
    pub demo_clip: Arc<[i16]>,
    /// The hold programs: `[media]`'s and each route's own.
    pub holds: HoldPrograms,
    /// Seeds what call control numbers itself (SDP session ids).
    pub seed: u64,
    /// Played before a route's recording starts (`[recording] announcement`).
    pub record_announcement: Option<Arc<[i16]>>,
}

/// How many calls ended, by outcome, for metrics.
pub type Tally = crate::telemetry::CallTally;

/// Call control. `P` hands out RTP ports; `F` is the driver's handle on a
/// running flow (dropped when the call ends).
pub struct CallControl<P: PortSource, F> {
    config: Config,
    endpoint: Endpoint,
    ports: P,
    router: Router,
    demo_clip: Arc<[i16]>,
    record_announcement: Option<Arc<[i16]>>,
    session_ids: u64,
    /// The one map of calls.
    calls: HashMap<CallId, Box<Call<P::Reservation, F>>>,
    /// Call deadlines (answer, give up), checked against the call when due.
    timers: BTreeSet<(Instant, CallId)>,
    media_out: VecDeque<MediaCommand<P::Reservation>>,
    flow_starts: VecDeque<FlowStart>,
    signals: VecDeque<(CallId, CallSignal)>,
    effects: VecDeque<Effect>,
    tally: Tally,
    drain: Drain,
    /// Where outbound calls and registrations go: DNS, failover.
    outbound: outbound::Outbound,
    /// Flows whose call a REFER replaced: the leg they name → the call
    /// they run on now.
    moved_flows: HashMap<CallId, CallId>,
    /// Calls of ours bridged to each other (a queue's caller and the call
    /// that took it out), both ways. Rare, so kept here, not in each Call.
    joins: HashMap<CallId, CallId>,
    /// Registrations other nodes sharing the store hold: calls for those
    /// users are handed there.
    remote_bindings: crate::registrar::cluster::RemoteBindings,
}

/// Shutting down: new calls get 503 during the grace period, then every
/// call is hung up and we leave once idle (or after two seconds).
#[derive(Debug, Default)]
struct Drain {
    deadline: Option<Instant>,
    hard_stop: Option<Instant>,
}

const HARD_STOP: Duration = Duration::from_secs(2);

impl<P: PortSource, F> CallControl<P, F> {
    pub fn new(config: Config, endpoint: Endpoint, ports: P, settings: Settings) -> Self {
        let outbound = outbound::Outbound::new(&config, &endpoint, settings.seed);
        let remote_bindings = crate::registrar::cluster::RemoteBindings::new(
            config.store.node_id(config.http.listen),
            config
                .registrar
                .cluster_nodes
                .iter()
                .filter_map(|c| crate::net::Cidr::parse(c).ok())
                .collect(),
        );
        CallControl {
            remote_bindings,
            outbound,
            router: Router::new(config.routes.clone(), settings.holds),
            config,
            endpoint,
            ports,
            demo_clip: settings.demo_clip,
            record_announcement: settings.record_announcement,
            session_ids: settings.seed & u64::from(u32::MAX),
            calls: HashMap::new(),
            timers: BTreeSet::new(),
            media_out: VecDeque::new(),
            flow_starts: VecDeque::new(),
            signals: VecDeque::new(),
            effects: VecDeque::new(),
            tally: Tally::default(),
            drain: Drain::default(),
            moved_flows: HashMap::new(),
            joins: HashMap::new(),
        }
    }

    // ---- input -------------------------------------------------------

    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) {
        self.endpoint.handle_datagram(now, local, remote, data);
        self.process_events(now);
    }

    /// Bytes from a stream connection; false: close it (framing error).
    pub fn handle_stream(
        &mut self,
        now: Instant,
        transport: Transport,
        conn: ConnId,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> bool {
        let keep = self
            .endpoint
            .handle_stream(now, transport, conn, local, remote, data);
        self.process_events(now);
        keep
    }

    pub fn connection_closed(&mut self, now: Instant, conn: ConnId) {
        self.endpoint.connection_closed(conn);
        self.process_events(now);
    }

    /// A running flow asks something of its call.
    pub fn handle_flow_request(&mut self, now: Instant, id: CallId, req: CallRequest) {
        let id = self.flow_call(id);
        // A request queued just before the call ended is void.
        if !self.calls.get(&id).is_some_and(|c| c.has_flow) {
            return;
        }
        let in_call = self.enter(id);
        match req {
            CallRequest::Play {
                samples,
                generation,
            } => self.play(
                id,
                Source::Clip {
                    samples,
                    looped: false,
                },
                generation,
            ),
            CallRequest::Loop {
                samples,
                generation,
            } => self.play(
                id,
                Source::Clip {
                    samples,
                    looped: true,
                },
                generation,
            ),
            CallRequest::Silence { generation } => self.play(id, Source::Silence, generation),
            CallRequest::Transfer(req) => self.start_transfer(now, id, req),
            CallRequest::Tap(tap) => self
                .media_out
                .push_back(MediaCommand::Tap { call: id, tap }),
            CallRequest::Live { audio, generation } => {
                self.play(id, Source::Live(audio), generation)
            }
            CallRequest::Refer { target } => self.start_refer(now, id, target),
            CallRequest::Hold {
                message,
                repeat_interval,
                music,
            } => {
                // No message: the wait music alone.
                let hold = self.hold_with(message, repeat_interval, music);
                self.play(id, Source::Hold(hold), 0);
            }
            CallRequest::Keep { name, value } => {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.record.vars.insert(name, value);
                }
            }
            CallRequest::Hangup => {
                let _ = self.endpoint.hangup(now, id);
            }
            CallRequest::Answer => {
                if self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.record.answered_at.is_none())
                {
                    self.answer(now, id);
                }
            }
            CallRequest::HangUpAgent => self.stop_transfer(now, id),
            CallRequest::Reject { status } => {
                let answered = self
                    .calls
                    .get(&id)
                    .is_some_and(|c| c.record.answered_at.is_some());
                let _ = match answered {
                    false => self.endpoint.reject(now, id, status),
                    true => self.endpoint.hangup(now, id),
                };
            }
            CallRequest::SendDigits {
                digits,
                duration_ms,
                to_agent,
            } => self.start_digits(now, id, &digits, duration_ms, to_agent),
            CallRequest::Join { with } => {
                let with = self.flow_call(with);
                self.join_calls(id, with)
            }
            CallRequest::Record(action) => {
                if let Err(e) = self.record(id, action) {
                    tracing::info!(%e, ?action, "flow: recording action refused");
                }
            }
        }
        drop(in_call);
        self.process_events(now);
    }

    pub fn handle_media_event(&mut self, now: Instant, ev: MediaEvent) {
        let id = match ev {
            MediaEvent::RtpTimeout(id)
            | MediaEvent::Dtmf(id, _)
            | MediaEvent::SourceFinished(id, _) => CallId(id),
            // The media engine's own (a stream changing loops).
            MediaEvent::Detached(_) => return,
        };
        let in_call = self.enter(id);
        match ev {
            MediaEvent::Detached(_) => {}
            MediaEvent::RtpTimeout(id) => {
                tracing::info!("RTP timeout: hanging up");
                let _ = self.endpoint.hangup(now, CallId(id));
            }
            MediaEvent::Dtmf(id, digit) => {
                self.signal(CallId(id), CallSignal::Dtmf(digit));
                // Digits can be PINs: only debug logs carry them.
                tracing::info!("DTMF received (RFC 4733)");
                tracing::debug!("DTMF digit");
            }
            // Nothing else plays while announcing: the stream's first
            // source (generation 0) or a later play (ANNOUNCEMENT).
            MediaEvent::SourceFinished(id, _) if self.announcing(CallId(id)) => {
                self.announcement_over(CallId(id));
            }
            MediaEvent::SourceFinished(id, generation) => {
                let id = CallId(id);
                self.signal(id, CallSignal::PlayFinished(generation));
                // The demo's welcome is done: on to the hold program.
                if let Some(Program::Demo(hold)) =
                    self.calls.get(&id).and_then(|c| c.program.as_ref())
                {
                    let hold = hold.clone();
                    self.play(id, Source::Hold(hold), 0);
                }
            }
        }
        drop(in_call);
        self.process_events(now);
    }

    /// The driver couldn't start a stream it was told to: hang up.
    pub fn media_failed(&mut self, now: Instant, id: CallId) {
        let in_call = self.enter(id);
        if let Some(call) = self.calls.get_mut(&id) {
            call.media = Media::None;
        }
        let _ = self.endpoint.hangup(now, id);
        drop(in_call);
        self.process_events(now);
    }

    /// The driver started the flow of a [`FlowStart`].
    pub fn attach_flow(&mut self, id: CallId, flow: F) {
        if let Some(call) = self.calls.get_mut(&id) {
            call.flow = Some(flow);
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.endpoint.handle_timeout(now);
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            self.call_timer(now, id);
        }
        self.registrar_timers(now);
        self.drain_step(now);
        self.process_events(now);
        // After the events: a probe that just ended may be due again.
        self.probe_trunks(now);
    }

    /// SIGHUP: new routes, flows and hold program for calls from now on;
    /// calls in progress keep what they started with.
    pub fn reload(&mut self, config: &Config, holds: HoldPrograms) {
        self.router = Router::new(config.routes.clone(), holds);
        self.config.routes = config.routes.clone();
        self.config.flow_set = config.flow_set.clone();
        // The rest of [media] hold is already in `hold`.
        self.config.media.hold_repeat_secs = config.media.hold_repeat_secs;
        self.config.media.hold_duck_db = config.media.hold_duck_db;
    }

    /// SIGTERM: refuse new calls, let these finish within the grace
    /// period. True when already draining: stop now.
    pub fn begin_drain(&mut self, now: Instant) -> bool {
        if self.draining() {
            tracing::warn!("second signal: stopping now");
            return true;
        }
        let grace = Duration::from_secs(self.config.sip.shutdown_grace_secs);
        tracing::info!(
            calls = self.endpoint.active_calls(),
            ?grace,
            "draining: new calls get 503"
        );
        self.endpoint.set_draining(true);
        self.endpoint.unregister_all(now);
        self.drain.deadline = Some(now.checked_add(grace).unwrap_or(now));
        self.drain_step(now);
        false
    }

    // ---- output ------------------------------------------------------

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.endpoint.poll_transmit()
    }

    pub fn poll_media(&mut self) -> Option<MediaCommand<P::Reservation>> {
        self.media_out.pop_front()
    }

    pub fn poll_flow_start(&mut self) -> Option<FlowStart> {
        self.flow_starts.pop_front()
    }

    /// A signal for a call's flow, with the flow's handle (None when the
    /// flow is gone or not attached).
    pub fn poll_flow_signal(&mut self) -> Option<(CallId, CallSignal, Option<&F>)> {
        let (id, signal) = self.signals.pop_front()?;
        let flow = self.calls.get(&id).and_then(|c| c.flow.as_ref());
        Some((id, signal, flow))
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        [
            self.endpoint.poll_timeout(),
            self.timers.first().map(|(at, _)| *at),
            self.outbound.next_wake(),
            self.drain.deadline,
            self.drain.hard_stop,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ---- state -------------------------------------------------------

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The audio loops have no headroom: new calls get 503 (see
    /// `media::overload`).
    pub fn set_overloaded(&mut self, overloaded: bool) {
        self.endpoint.set_overloaded(overloaded);
    }

    pub fn draining(&self) -> bool {
        self.drain.deadline.is_some() || self.drain.hard_stop.is_some()
    }

    /// Drained: every call and transaction is over, or time is up.
    pub fn finished(&self, now: Instant) -> bool {
        let Some(stop) = self.drain.hard_stop else {
            return false;
        };
        let idle = self.endpoint.active_calls() == 0 && self.endpoint.transaction_count() == 0;
        now >= stop || (idle && self.drain.deadline.is_none())
    }

    pub fn calls(&self) -> usize {
        self.calls.len()
    }

    pub fn active_flows(&self) -> usize {
        self.calls.values().filter(|c| c.has_flow).count()
    }

    /// What metrics export reads, and the tally it resets.
    pub fn telemetry_parts(&mut self) -> (&Endpoint, &mut Tally) {
        (&self.endpoint, &mut self.tally)
    }

    /// The default hold program now in force.
    pub fn hold(&self) -> &Arc<HoldProgram> {
        self.router.default_hold()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ---- internals ---------------------------------------------------

    /// `id`'s span, entered until the guard drops (a gone call: none).
    fn enter(&self, id: CallId) -> tracing::span::EnteredSpan {
        self.calls
            .get(&id)
            .map_or_else(tracing::Span::none, |c| c.span.clone())
            .entered()
    }

    fn drain_step(&mut self, now: Instant) {
        if self.drain.deadline.is_some_and(|d| now >= d) {
            self.drain.deadline = None;
            tracing::info!(
                calls = self.endpoint.active_calls(),
                "grace period over: hanging up"
            );
            for call in self.endpoint.call_ids() {
                let _ = self.endpoint.hangup(now, call);
            }
            self.end_unplaced();
            self.drain.hard_stop = Some(now + HARD_STOP);
        }
        if self.drain.deadline.is_some() && self.endpoint.active_calls() == 0 {
            // Nothing left to wait for: unregister and leave soon.
            self.drain.deadline = None;
            self.drain.hard_stop = Some(now + HARD_STOP);
        }
    }

    fn process_events(&mut self, now: Instant) {
        loop {
            self.endpoint_events(now);
            // Legs that ended here (DNS failed, hung up while resolving).
            let Some((id, cause)) = self.next_local_end() else {
                break;
            };
            self.finish(now, id, &cause);
        }
        if self.drain.deadline.is_some() {
            self.drain_step(now);
        }
    }

    fn endpoint_events(&mut self, now: Instant) {
        while let Some(ev) = self.endpoint.poll_event() {
            let _in_call = match &ev {
                Event::CallEstablished { call, .. }
                | Event::MediaChanged { call, .. }
                | Event::CallEnded { call, .. }
                | Event::Dtmf { call, .. }
                | Event::Progress { call, .. }
                | Event::ReferAnswered { call, .. }
                | Event::ReferProgress { call, .. }
                | Event::ReferRequested { call, .. }
                | Event::EarlyMedia { call, .. }
                | Event::Refused { call, .. } => self.enter(*call),
                Event::IncomingCall(_)
                | Event::Registration { .. }
                | Event::PingAnswered { .. }
                | Event::BindingsChanged { .. } => tracing::Span::none().entered(),
            };
            match ev {
                Event::IncomingCall(inc) => self.incoming(now, inc),
                Event::CallEstablished { call, media } => self.established(now, call, media),
                Event::MediaChanged { call, media } => self.media_changed(call, &media),
                Event::CallEnded { call, cause } => self.end(now, call, &cause),
                Event::Dtmf { call, digit, .. } => {
                    self.signal(call, CallSignal::Dtmf(digit));
                    // Digits may be a PIN or a card number: never logged.
                    tracing::debug!("DTMF (INFO)");
                }
                Event::Progress { call, status } => {
                    self.referred_progress(now, call, status);
                    self.callback_progress(call, status);
                }
                Event::ReferRequested { call, target, .. } => self.referred(now, call, target),
                Event::EarlyMedia { call, media } => self.early_media_from(call, media),
                Event::ReferAnswered { call, status } => {
                    self.refer_status(now, call, status, false)
                }
                Event::ReferProgress { call, status } => self.refer_status(now, call, status, true),
                Event::Registration { index, state } => {
                    tracing::info!(index, ?state, "registration state");
                    self.registration_event(now, index, &state);
                }
                Event::Refused {
                    call,
                    retry_after,
                    contacts,
                    ..
                } => self.refused(call, retry_after, contacts),
                Event::PingAnswered { ping, outcome } => self.ping_answered(now, ping, outcome),
                Event::BindingsChanged { user } => {
                    let bindings = self.endpoint.bindings_of(&user, now);
                    self.effects.push_back(Effect::Bindings {
                        user,
                        bindings,
                        at: now,
                    });
                }
            }
        }
    }

    /// This node's id among those sharing the store.
    pub(crate) fn node_id(&self) -> String {
        self.remote_bindings.node().to_string()
    }

    /// What the store says of users and other nodes' registrations
    /// (`wall` is the wall clock at `now`).
    pub fn registrar_news(
        &mut self,
        now: Instant,
        wall: SystemTime,
        news: crate::registrar::cluster::RegistrarNews,
    ) {
        use crate::registrar::cluster::RegistrarNews;
        match news {
            RegistrarNews::User { name, user } => {
                tracing::info!(user = %name, present = user.is_some(), "registrar: a user from the store changed");
                self.endpoint.set_stored_user(&name, user);
            }
            RegistrarNews::AllUsers(users) => self.endpoint.set_stored_users(users),
            RegistrarNews::Registrations { user, records } => {
                self.remote_bindings.replace_user(&user, records, now, wall)
            }
            RegistrarNews::AllRegistrations(records) => {
                self.remote_bindings.replace_all(records, now, wall)
            }
        }
        gauge!(names::STORED_USERS).set(self.endpoint.stored_user_count() as f64);
        self.process_events(now);
    }

    fn incoming(&mut self, now: Instant, inc: IncomingCall) {
        if self.config.registrar.enabled && self.endpoint.is_local_user(&inc.did) {
            return self.call_user(now, inc);
        }
        let trunk = inc
            .trunk
            .as_deref()
            .and_then(|name| self.config.trunks.iter().find(|t| t.name == name));
        let caller = identity::Caller::of(&inc, trunk);
        let route = self
            .router
            .route(&inc.did, &caller.number, inc.trunk.as_deref())
            .map(|r| {
                (
                    match r.app {
                        Some(app) => app.flow.name.clone(),
                        None => r.config.flow.clone(),
                    },
                    r.config.ring_ms,
                    r.hold.clone(),
                    r.early_media.cloned(),
                    r.config.record,
                    r.app.cloned(),
                )
            });
        let record = CallRecord::starting(
            inc.call_id.clone(),
            "inbound",
            inc.did.clone(),
            caller.shown().to_string(),
            inc.trunk.clone(),
            route.as_ref().map(|r| r.0.clone()),
        );
        let mut call = Call::new(Role::Inbound, record);
        call.max_forwards = inc.max_forwards;
        call.span = call_span(inc.call, &call.record);
        let _in_call = call.span.clone().entered();
        tracing::info!(call = %inc.call, did = %crate::mask::phone(&inc.did), caller = %crate::mask::phone(caller.shown()), flow = ?route.as_ref().map(|r| &r.0), "incoming call");
        // Most callers are just their number: nothing more to keep per call.
        if caller.raw != caller.number || caller.diversion.is_some() || caller.private {
            call.caller = Some(Box::new(caller));
        }
        call.web_call = inc.web_call.as_deref().map(Box::from);
        let program = route
            .as_ref()
            .and_then(|(flow, _, hold, _, _, app)| match app {
                Some(app) => Some(Program::App(Box::new(model::AppRun {
                    flow: app.flow.clone(),
                    status: app
                        .status
                        .clone()
                        .map(|target| status::StatusHook::new(target, call.sid().to_string())),
                }))),
                None => Program::from_name(flow, &self.config.flow_set, hold),
            });
        let (ring_ms, early_media) = route.as_ref().map_or((0, None), |r| (r.1, r.3.clone()));
        call.route_records = route.as_ref().is_some_and(|r| r.4);
        let app = matches!(program, Some(Program::App(_)));
        call.program = program;
        let routed = call.program.is_some();
        self.calls.insert(inc.call, Box::new(call));
        if !routed {
            let _ = self.endpoint.reject(now, inc.call, 404);
            return;
        }
        if app {
            // The app's TwiML answers (or rejects) it; it rings meanwhile.
            self.call_status(inc.call, status::INITIATED);
            if self.endpoint.ring(now, inc.call).is_ok() {
                self.call_status(inc.call, status::RINGING);
            }
            self.start_flow(inc.call);
            return;
        }
        if ring_ms > 0 {
            match early_media.filter(|_| inc.has_offer) {
                Some(audio) => self.play_early_media(now, inc.call, audio),
                None => {
                    let _ = self.endpoint.ring(now, inc.call);
                }
            }
            let at = now
                .checked_add(Duration::from_millis(ring_ms))
                .unwrap_or(now);
            self.set_answer_at(inc.call, at);
            return;
        }
        self.answer(now, inc.call);
    }

    /// A call to one of our users (the DID names it): every device it has
    /// registered rings at once (those registered on other nodes through
    /// their node), and the caller is answered when one answers; none
    /// registered: 480 Temporarily Unavailable. A call another node
    /// handed here rings this node's devices only.
    fn call_user(&mut self, now: Instant, inc: IncomingCall) {
        let user = inc.did.clone();
        let handed_over = inc.forwarded_by.is_some();
        let record = CallRecord::starting(
            inc.call_id.clone(),
            "inbound",
            inc.did.clone(),
            inc.caller.clone(),
            inc.trunk.clone(),
            Some(format!("user:{user}")),
        );
        let mut call = Call::new(Role::Inbound, record);
        call.max_forwards = inc.max_forwards;
        call.span = call_span(inc.call, &call.record);
        let _in_call = call.span.clone().entered();
        call.program = Some(Program::Leg);
        self.calls.insert(inc.call, Box::new(call));
        let devices = self.endpoint.bindings_of(&user, now).len();
        let nodes = if handed_over {
            0
        } else {
            self.remote_bindings.nodes_for(&user, now).len()
        };
        tracing::info!(call = %inc.call, %user, devices, nodes, handed_by = ?inc.forwarded_by, "incoming call to a registered user");
        if devices + nodes == 0 {
            counter!(names::USER_CALLS, "outcome" => "unavailable").increment(1);
            let _ = self.endpoint.reject(now, inc.call, 480);
            return;
        }
        counter!(names::USER_CALLS, "outcome" => "rung").increment(1);
        let target = if handed_over {
            format!("{}{user}", transfer::HANDED_OVER_USER)
        } else {
            format!("user:{user}")
        };
        let request = crate::flow::interp::TransferRequest {
            targets: vec![target],
            parallel: true,
            ring_timeout: Duration::from_secs(self.config.registrar.ring_timeout_secs),
            trunk: None,
            hold_message: None,
            hold_music: Vec::new(),
            repeat_interval: None,
            caller_id: None,
        };
        // Without an offer to answer, the caller is answered first and
        // hears the hold music while the devices ring.
        if inc.has_offer {
            let _ = self.endpoint.ring(now, inc.call);
            self.start_ringing(now, inc.call, request, true);
        } else {
            self.answer(now, inc.call);
            self.start_ringing(now, inc.call, request, false);
        }
    }

    fn set_answer_at(&mut self, id: CallId, at: Instant) {
        if let Some(call) = self.calls.get_mut(&id) {
            call.answer_at = Some(at);
            self.timers.insert((at, id));
        }
    }

    pub(crate) fn set_give_up(&mut self, id: CallId, at: Instant) {
        if let Some(call) = self.calls.get_mut(&id) {
            call.give_up = Some(at);
            self.timers.insert((at, id));
        }
    }

    /// A deadline of `id`'s came due (it may be stale: the call checks).
    fn call_timer(&mut self, now: Instant, id: CallId) {
        let _in_call = self.enter(id);
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.answer_at.is_some_and(|at| at <= now) {
            call.answer_at = None;
            self.answer(now, id);
            return;
        }
        if call.digits.as_ref().is_some_and(|d| d.next_at <= now) {
            self.next_digit(now, id);
        }
        if self.calls.get(&id).is_some_and(|c| c.dialling.is_some()) {
            self.unanswered_timer(now, id);
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.give_up.is_some_and(|at| at <= now) {
            call.give_up = None;
            call.timed_out = true;
            match &call.role {
                Role::Agent { caller, .. } => {
                    tracing::info!(agent = %id, "transfer: no answer in time");
                    let caller = *caller;
                    if let Some(t) = self
                        .calls
                        .get_mut(&caller)
                        .and_then(|c| c.transfer.as_mut())
                    {
                        t.last_status = 408;
                    }
                }
                Role::Callback(leg) => {
                    tracing::info!(call = %id, callback = %leg.id, "callback: no answer in time");
                }
                Role::Referred { .. } => {
                    tracing::info!(leg = %id, "REFER: the target didn't answer in time");
                }
                Role::Inbound | Role::Replaced => {}
            }
            self.hang_up(now, id);
        }
    }

    /// Early media while the call rings: a 183 answers the caller's offer
    /// and the stream plays `audio` until the answer. Ringing (180) when
    /// that can't be done.
    fn play_early_media(&mut self, now: Instant, id: CallId, audio: EarlyAudio) {
        let (port, reservation) = match self.ports.reserve() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "no RTP port for early media: ringing instead");
                let _ = self.endpoint.ring(now, id);
                return;
            }
        };
        let local = self.local_media(port);
        let media = match self.endpoint.early_media(now, id, local) {
            Ok(media) => media,
            Err(e) => {
                tracing::info!(call = %id, %e, "no early media: ringing instead");
                let _ = self.endpoint.ring(now, id);
                return;
            }
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.media = Media::Streaming;
        call.rfc4733 = media.telephone_event_pt.is_some();
        tracing::info!(call = %id, "early media: 183 Session Progress");
        self.media_out.push_back(MediaCommand::Start {
            call: id,
            reservation,
            media,
            source: Source::Clip {
                samples: audio.samples,
                looped: audio.looped,
            },
            near: None,
        });
    }

    /// Answer with our SDP; the stream starts now (offer in the INVITE) or
    /// at the ACK (late offer). After early media, the stream runs
    /// already: the 200 repeats the 183's SDP and the program takes over.
    fn answer(&mut self, now: Instant, id: CallId) {
        if self.calls.get(&id).is_some_and(|c| c.streaming()) {
            if let Err(e) = self.endpoint.answer_early(now, id) {
                tracing::info!(call = %id, %e, "not answered");
                return;
            }
            if let Some(call) = self.calls.get_mut(&id) {
                call.record.answered_at = Some(SystemTime::now());
            }
            self.call_status(id, status::ANSWERED);
            match self.route_announcement(id) {
                Some(announcement) => self.play(id, announcement, ANNOUNCEMENT),
                None => {
                    self.start_route_recording(id);
                    let source = self.program_source(id);
                    self.play(id, source, 0);
                    self.start_flow(id);
                }
            }
            return;
        }
        let (port, reservation) = match self.ports.reserve() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "no RTP port: rejecting");
                let _ = self.endpoint.reject(now, id, 503);
                return;
            }
        };
        let local = self.local_media(port);
        match self.endpoint.answer(now, id, local) {
            Ok(media) => {
                let Some(call) = self.calls.get_mut(&id) else {
                    return;
                };
                call.record.answered_at = Some(SystemTime::now());
                match media {
                    Some(media) => {
                        self.call_status(id, status::ANSWERED);
                        self.start_media(now, id, reservation, &media)
                    }
                    None => {
                        call.media = Media::Reserved(reservation);
                        self.call_status(id, status::ANSWERED);
                    }
                }
            }
            Err(e) => tracing::info!(call = %id, %e, "not answered"),
        }
    }

    fn established(&mut self, now: Instant, id: CallId, media: Option<Negotiated>) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        match call.role {
            Role::Agent { .. } => self.agent_answered(now, id, media),
            Role::Callback(_) => self.callback_answered(now, id, media),
            Role::Referred { .. } => self.referred_answered(now, id, media),
            Role::Replaced => {}
            Role::Inbound => {
                if let Refer::Waiting(target) = std::mem::take(&mut call.refer) {
                    self.start_refer(now, id, target);
                }
                let late_offer = self.calls.get_mut(&id).and_then(|c| c.take_reservation());
                if let (Some(r), Some(m)) = (late_offer, media) {
                    self.start_media(now, id, r, &m);
                }
            }
        }
    }

    /// Start the stream with what the call's program plays first, then its
    /// flow.
    fn start_media(
        &mut self,
        now: Instant,
        id: CallId,
        reservation: P::Reservation,
        media: &Negotiated,
    ) {
        let _ = now;
        let announcement = self.route_announcement(id);
        let announcing = announcement.is_some();
        let source = announcement.unwrap_or_else(|| self.program_source(id));
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let (Source::Hold(h), Some(web)) = (&source, &call.web_call) {
            // Only `[media]`'s program has one Opus encode for every web call.
            if Arc::ptr_eq(h, self.router.default_hold()) {
                self.effects.push_back(Effect::SharedHold {
                    web_call: web.to_string(),
                    hold: Some(h.clone()),
                });
            }
        }
        call.media = Media::Streaming;
        call.rfc4733 = media.telephone_event_pt.is_some();
        self.media_out.push_back(MediaCommand::Start {
            call: id,
            reservation,
            media: media.clone(),
            source,
            near: None,
        });
        if announcing {
            // The program and its flow start when the announcement ends.
            self.media_changed(id, media);
            return;
        }
        self.start_route_recording(id);
        self.start_flow(id);
        self.media_changed(id, media);
    }

    /// A route that records plays `[recording] announcement` first: its
    /// source, with the call marked announcing (None: no announcement).
    fn route_announcement(&mut self, id: CallId) -> Option<Source> {
        let samples = self.record_announcement.clone()?;
        let call = self.calls.get_mut(&id).filter(|c| c.route_records)?;
        call.recording = RecordingState::Announcing;
        Some(Source::Clip {
            samples,
            looped: false,
        })
    }

    fn announcing(&self, id: CallId) -> bool {
        self.calls
            .get(&id)
            .is_some_and(|c| c.recording == RecordingState::Announcing)
    }

    /// The route's announcement has played: record, then the program.
    fn announcement_over(&mut self, id: CallId) {
        if let Some(call) = self.calls.get_mut(&id) {
            call.recording = RecordingState::Off;
        }
        self.start_route_recording(id);
        let source = self.program_source(id);
        self.play(id, source, 0);
        self.start_flow(id);
    }

    fn start_route_recording(&mut self, id: CallId) {
        if self.calls.get(&id).is_some_and(|c| c.route_records) {
            let start = RecordAction::Start(Default::default());
            if let Err(e) = self.record(id, start) {
                tracing::info!(%e, "route recording not started");
            }
        }
    }

    /// Start, stop, pause or resume a call's recording; its state after.
    pub fn record(
        &mut self,
        id: CallId,
        action: RecordAction,
    ) -> Result<RecordingState, RecordError> {
        let call = self.calls.get_mut(&id).ok_or(RecordError::NoCall)?;
        let next = match (call.recording, action) {
            (_, RecordAction::Start(_)) if !call.streaming() => return Err(RecordError::NoMedia),
            (RecordingState::On { .. }, RecordAction::Start(_)) => {
                return Err(RecordError::AlreadyRecording)
            }
            (_, RecordAction::Start(_)) => RecordingState::On { paused: false },
            (RecordingState::On { .. }, RecordAction::Stop) => RecordingState::Off,
            (RecordingState::On { .. }, RecordAction::Pause) => RecordingState::On { paused: true },
            (RecordingState::On { .. }, RecordAction::Resume) => {
                RecordingState::On { paused: false }
            }
            (_, RecordAction::Stop | RecordAction::Pause | RecordAction::Resume) => {
                return Err(RecordError::NotRecording)
            }
        };
        call.recording = next;
        tracing::info!(state = next.name(), "recording");
        self.media_out.push_back(MediaCommand::Record {
            call: id,
            call_id: call.record.call_id.clone(),
            action,
        });
        Ok(next)
    }

    /// A command from outside call control (the API), by SIP Call-ID.
    pub fn handle_command(&mut self, now: Instant, command: CallCommand) {
        match command {
            CallCommand::Record {
                call_id,
                action,
                reply,
            } => {
                // The caller's leg: the one the call was answered on.
                let id = self
                    .calls
                    .iter()
                    .filter(|(_, c)| c.record.call_id == call_id)
                    .min_by_key(|(_, c)| !matches!(c.role, Role::Inbound | Role::Callback(_)))
                    .map(|(id, _)| *id);
                let result = match id {
                    Some(id) => {
                        let _in_call = self.enter(id);
                        self.record(id, action)
                    }
                    None => Err(RecordError::NoCall),
                };
                let _ = reply.send(result);
            }
            CallCommand::Dial { call, reply } => {
                let _ = reply.send(self.originate_app(now, *call));
            }
            CallCommand::End {
                sid,
                ringing_only,
                reply,
            } => {
                let _ = reply.send(self.end_by_sid(now, &sid, ringing_only));
            }
            CallCommand::List { reply } => {
                let _ = reply.send(self.call_views());
            }
        }
        self.process_events(now);
    }

    /// What the call's program plays first.
    fn program_source(&self, id: CallId) -> Source {
        match self.calls.get(&id).and_then(|c| c.program.as_ref()) {
            Some(Program::Demo(_)) => Source::Clip {
                samples: self.demo_clip.clone(),
                looped: false,
            },
            Some(Program::Hold(h)) => Source::Hold(h.clone()),
            _ => Source::Silence,
        }
    }

    /// Start the call's flow, if its program is one; a webhook app's runs
    /// already (from the call's arrival) and hears that it is answered.
    fn start_flow(&mut self, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if call.has_flow {
            return self.signal(id, CallSignal::Answered);
        }
        let flow = match &call.program {
            Some(Program::File(flow)) => flow,
            Some(Program::App(app)) => &app.flow,
            _ => return,
        };
        let answered = call.record.answered_at.is_some();
        let flow = flow.clone();
        call.has_flow = true;
        let span = call.span.clone();
        let vars = self.flow_vars(id, &flow);
        self.flow_starts.push_back(FlowStart {
            call: id,
            flow,
            vars,
            span,
            answered,
        });
    }

    fn media_changed(&mut self, id: CallId, media: &Negotiated) {
        let Some(call) = self.calls.get_mut(&id).filter(|c| c.streaming()) else {
            return;
        };
        call.rfc4733 = media.telephone_event_pt.is_some();
        let sending = matches!(
            media.local_direction,
            Direction::SendRecv | Direction::SendOnly
        ) && !media.remote_rtp.ip().is_unspecified();
        self.media_out.push_back(MediaCommand::Sending {
            call: id,
            sending,
            remote: sending.then_some(media.remote_rtp),
        });
    }

    /// Switch a call's audio, telling a web call whether it now hears the
    /// shared wait music.
    pub(crate) fn play(&mut self, id: CallId, source: Source, generation: u32) {
        if let Some(call) = self.calls.get_mut(&id) {
            // One box per call, reused by every later play.
            match &mut call.playing {
                Some(playing) => **playing = (source.clone(), generation),
                None => call.playing = Some(Box::new((source.clone(), generation))),
            }
        }
        if let Some(web) = self
            .calls
            .get(&id)
            .and_then(|c| c.web_call.as_deref().map(String::from))
        {
            let shared = match &source {
                Source::Hold(h) if Arc::ptr_eq(h, self.router.default_hold()) => Some(h.clone()),
                _ => None,
            };
            self.effects.push_back(Effect::SharedHold {
                web_call: web,
                hold: shared,
            });
        }
        self.media_out.push_back(MediaCommand::Play {
            call: id,
            source,
            generation,
        });
    }

    /// A web call stops hearing the shared wait music (bridged, say).
    pub(crate) fn leave_shared_hold(&mut self, id: CallId) {
        if let Some(web) = self
            .calls
            .get(&id)
            .and_then(|c| c.web_call.as_deref().map(String::from))
        {
            self.effects.push_back(Effect::SharedHold {
                web_call: web,
                hold: None,
            });
        }
    }

    pub(crate) fn signal(&mut self, id: CallId, signal: CallSignal) {
        if self.calls.get(&id).is_some_and(|c| c.has_flow) {
            self.signals.push_back((id, signal));
        }
    }

    /// A flow asks for DTMF: to its caller, or to the agent bridged to it.
    fn start_digits(
        &mut self,
        now: Instant,
        id: CallId,
        digits: &str,
        duration_ms: u32,
        to_agent: bool,
    ) {
        let target = match to_agent {
            false => Some(id),
            true => self
                .calls
                .get(&id)
                .and_then(|c| c.transfer.as_ref())
                .and_then(|t| t.bridged),
        };
        let Some((target, call)) = target.zip(self.calls.get_mut(&id)) else {
            return self.signal(id, CallSignal::DigitsSent);
        };
        call.digits = Some(Box::new(model::Digits {
            left: digits.chars().collect(),
            duration_ms,
            target,
            next_at: now,
        }));
        self.next_digit(now, id);
    }

    /// Send the next digit (or pause); once all are out and the last one
    /// has sounded, tell the flow.
    fn next_digit(&mut self, now: Instant, id: CallId) {
        const PAUSE: Duration = Duration::from_millis(500);
        const GAP: Duration = Duration::from_millis(80);
        let Some(d) = self.calls.get(&id).and_then(|c| c.digits.as_ref()) else {
            return;
        };
        let (target, duration_ms) = (d.target, d.duration_ms);
        // INFO is an in-dialog request: none before the ACK (a flow starts
        // at the answer). Look again shortly; the call's end stops this.
        let by_info = self.calls.get(&target).is_some_and(|t| !t.rfc4733);
        let unconfirmed =
            self.endpoint.call_state(target) != Some(crate::sip::endpoint::CallState::Confirmed);
        let wait_for_ack = by_info && unconfirmed && d.left.front().is_some_and(|c| *c != ',');
        let Some(d) = self.calls.get_mut(&id).and_then(|c| c.digits.as_mut()) else {
            return;
        };
        if wait_for_ack {
            let at = now.checked_add(Duration::from_millis(20)).unwrap_or(now);
            d.next_at = at;
            self.timers.insert((at, id));
            return;
        }
        let Some(c) = d.left.pop_front() else {
            if let Some(call) = self.calls.get_mut(&id) {
                call.digits = None;
            }
            return self.signal(id, CallSignal::DigitsSent);
        };
        let wait = if c == ',' {
            PAUSE
        } else {
            Duration::from_millis(u64::from(duration_ms)) + GAP
        };
        let at = now.checked_add(wait).unwrap_or(now);
        d.next_at = at;
        self.timers.insert((at, id));
        if c == ',' {
            return;
        }
        match self.calls.get(&target).map(|t| t.rfc4733) {
            Some(true) => self.media_out.push_back(MediaCommand::SendDtmf {
                call: target,
                digit: c,
                duration_ms,
            }),
            Some(false) => {
                if let Err(e) = self.endpoint.send_info_dtmf(now, target, c, duration_ms) {
                    tracing::warn!(call = %target, %e, "cannot send DTMF by INFO");
                }
            }
            // The other side is gone: nothing left to send to.
            None => {
                if let Some(call) = self.calls.get_mut(&id) {
                    call.digits = None;
                }
                self.signal(id, CallSignal::DigitsSent);
            }
        }
    }

    /// Wait music (`music`, or the configured music when empty) with
    /// `message` (or nothing) on repeat.
    pub(crate) fn hold_with(
        &self,
        message: Option<Arc<[i16]>>,
        repeat_interval: Option<Duration>,
        music: Vec<Arc<[i16]>>,
    ) -> Arc<HoldProgram> {
        let music = if music.is_empty() {
            self.router.default_hold().music.to_vec()
        } else {
            music
        };
        Arc::new(HoldProgram::new(
            music,
            message,
            repeat_interval.unwrap_or(Duration::from_secs(self.config.media.hold_repeat_secs)),
            self.config.media.hold_duck_db,
        ))
    }

    pub(crate) fn local_media(&mut self, port: u16) -> LocalMedia {
        self.session_ids = self.session_ids.wrapping_add(1);
        let cfg = self.endpoint.config();
        LocalMedia {
            address: self.rtp_address(),
            rtp_port: port,
            session_id: self.session_ids,
            session_version: 1,
            codecs: cfg.codecs.clone(),
            telephone_event_pt: cfg.telephone_event_pt,
            ptime_ms: 20,
        }
    }

    fn rtp_address(&self) -> IpAddr {
        self.config.media.rtp_address
    }

    /// Variables a flow starts with.
    fn flow_vars(&self, id: CallId, flow: &crate::flow::Flow) -> HashMap<String, String> {
        let mut vars = HashMap::new();
        if let Some(call) = self.calls.get(&id) {
            let r = &call.record;
            match &call.caller {
                Some(c) => {
                    vars.insert("caller".into(), c.number.clone());
                    vars.insert("caller_raw".into(), c.raw.clone());
                    vars.insert("diversion".into(), c.diversion.clone().unwrap_or_default());
                }
                None => {
                    vars.insert("caller".into(), r.caller.clone());
                    vars.insert("caller_raw".into(), r.caller.clone());
                    vars.insert("diversion".into(), String::new());
                }
            }
            vars.insert("did".into(), r.did.clone());
            vars.insert("callee".into(), r.did.clone());
            vars.insert("call_id".into(), r.call_id.clone());
            vars.insert("trunk".into(), r.trunk.clone().unwrap_or_default());
            vars.insert("direction".into(), r.direction.to_string());
            vars.insert(crate::twiml::CALL_SID_VAR.into(), call.sid().to_string());
            if let Role::Callback(leg) = &call.role {
                vars.extend(leg.vars.clone());
            }
        }
        vars.insert("flow".into(), flow.name.clone());
        vars
    }

    /// An endpoint call ended: a leg we placed may go on to its next
    /// target; otherwise the call is over.
    fn end(&mut self, now: Instant, id: CallId, cause: &EndCause) {
        if self.try_next_target(now, id, cause) {
            return;
        }
        self.finish(now, id, cause);
    }

    /// The call is over: the one place that lets go of it. Its record is
    /// written, the calls tied to it are told, its stream is stopped, and
    /// dropping it frees its port and stops its flow.
    fn finish(&mut self, now: Instant, id: CallId, cause: &EndCause) {
        if *cause == EndCause::RemoteBye && self.park_referrer(id, cause) {
            return;
        }
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        let mut call = *call;
        tracing::info!(call = %id, ?cause, "call ended");
        self.forget_moved_flows(id);
        if let Refer::Calling(leg) | Refer::Parked { leg, .. } = call.refer {
            // It ended for good: the REFER's call has nothing to take over.
            self.hang_up(now, leg);
        }
        if let Some(transfer) = call.transfer.take() {
            self.caller_left(now, &transfer);
        }
        if let Some(other) = self.joins.remove(&id) {
            self.unjoin(other);
        }
        match &call.role {
            Role::Agent { caller, .. } => {
                let caller = *caller;
                self.agent_ended(now, id, &call, caller, cause);
            }
            Role::Callback(leg) => self.callback_ended(leg, call.timed_out, cause),
            Role::Referred { referrer } => self.referred_failed(now, *referrer, cause),
            Role::Inbound | Role::Replaced => {}
        }
        if call.streaming() {
            self.media_out.push_back(MediaCommand::Stop(id));
        }
        self.final_status(&mut call, cause);
        if matches!(call.program, Some(Program::App(_))) {
            let status = status::final_status(&call, cause);
            call.record
                .vars
                .insert(crate::twiml::calls::STATUS_VAR.into(), status.into());
        }
        let (mut outcome, status) = outcome(cause);
        if matches!(call.role, Role::Replaced) {
            outcome = "transferred";
        }
        self.tally.ended(outcome);
        let mut record = call.record;
        record.ended_at = SystemTime::now();
        record.outcome = outcome.to_string();
        record.sip_status = status;
        self.effects.push_back(Effect::Record(record));
    }
}

/// The generation a route's recording announcement plays under.
const ANNOUNCEMENT: u32 = u32::MAX;

/// A call's own span: the root of its trace, named by our id and its
/// Call-ID (numbers masked).
pub(crate) fn call_span(id: CallId, record: &CallRecord) -> tracing::Span {
    tracing::info_span!(
        parent: None,
        "call",
        id = %id,
        call_id = %record.call_id,
        direction = %record.direction,
        caller = %crate::mask::phone(&record.caller),
        did = %crate::mask::phone(&record.did),
    )
}

/// How a call ended, in the record's words, and the SIP status if any.
fn outcome(cause: &EndCause) -> (&'static str, Option<u16>) {
    match cause {
        EndCause::RemoteBye => ("remote_bye", None),
        EndCause::LocalHangup => ("local_hangup", None),
        EndCause::Cancelled => ("cancelled", Some(487)),
        EndCause::Rejected { status, .. } => ("rejected", Some(*status)),
        EndCause::Timeout => ("timeout", Some(408)),
        EndCause::AckTimeout => ("ack_timeout", None),
        EndCause::Shutdown => ("shutdown", None),
        EndCause::SessionExpired => ("session_expired", None),
    }
}
