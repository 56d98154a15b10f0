//! Call control driven in memory with a fake clock, in the shape of
//! quinn-proto's `Pair`: a caller (a second `Endpoint`), crossline's call
//! control and agents (more `Endpoint`s) exchange real SIP, with no
//! sockets and no sleeping. The driver side (ports, streams, flows) is
//! faked so every test can check that nothing outlives its call.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::callback::Originate;
use crate::config::RouteConfig;
use crate::flow::interp::{TransferEvent, TransferRequest};
use crate::sdp::Codec;
use crate::sip::endpoint::{CallState, EndpointConfig, OutgoingCall};

#[path = "tests_outbound.rs"]
mod outbound;

const CROSSLINE: &str = "127.0.0.1:5060";
const CALLER: &str = "127.0.0.1:5070";
const AGENT: &str = "127.0.0.1:5080";
const AGENT2: &str = "127.0.0.1:5090";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A port reservation that counts itself: the test checks none leak.
struct Port {
    live: Rc<Cell<usize>>,
}

impl Drop for Port {
    fn drop(&mut self) {
        self.live.set(self.live.get() - 1);
    }
}

struct Ports {
    next: u16,
    live: Rc<Cell<usize>>,
    /// How many more ports there are.
    left: usize,
}

impl PortSource for Ports {
    type Reservation = Port;
    fn reserve(&mut self) -> Result<(u16, Port), String> {
        if self.left == 0 {
            return Err("no free port".into());
        }
        self.left -= 1;
        self.next += 2;
        self.live.set(self.live.get() + 1);
        Ok((
            self.next,
            Port {
                live: self.live.clone(),
            },
        ))
    }
}

/// A flow task's handle: it knows when call control lets go of it.
struct Flow {
    alive: Rc<Cell<bool>>,
}

impl Drop for Flow {
    fn drop(&mut self) {
        self.alive.set(false);
    }
}

/// One SIP peer: a plain endpoint at a fixed address.
struct Peer {
    ep: Endpoint,
    at: SocketAddr,
    events: Vec<Event>,
    /// Answer incoming calls at once.
    answers: bool,
    /// Or refuse them with this status.
    refuses: Option<u16>,
}

impl Peer {
    fn new(at: &str, t0: Instant) -> Peer {
        let at = addr(at);
        let config = EndpointConfig {
            udp_listeners: vec![at],
            tcp_listeners: Vec::new(),
            ..EndpointConfig::default()
        };
        Peer {
            ep: Endpoint::new(config, t0),
            at,
            events: Vec::new(),
            answers: true,
            refuses: None,
        }
    }

    fn established(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::CallEstablished { .. }))
            .count()
    }

    fn ended(&self) -> Vec<&EndCause> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::CallEnded { cause, .. } => Some(cause),
                _ => None,
            })
            .collect()
    }

    fn incoming(&self) -> Vec<CallId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::IncomingCall(inc) => Some(inc.call),
                _ => None,
            })
            .collect()
    }
}

fn local_media(port: u16) -> LocalMedia {
    LocalMedia {
        address: "127.0.0.1".parse().unwrap(),
        rtp_port: port,
        session_id: 7,
        session_version: 1,
        codecs: vec![Codec::Pcmu],
        telephone_event_pt: 101,
        ptime_ms: 20,
    }
}

/// An INVITE from `from` to `did` at crossline, offering RTP on `port`.
fn invite(did: &str, from: &str, port: u16) -> OutgoingCall {
    OutgoingCall {
        target: crate::sip::message::Uri::parse(&format!("sip:{did}@{CROSSLINE}")).unwrap(),
        destination: addr(CROSSLINE),
        transport: Transport::Udp,
        from_user: from.into(),
        from_display: None,
        local_media: local_media(port),
        credentials: None,
        extra_headers: Vec::new(),
        flow: None,
        max_forwards: crate::sip::endpoint::MAX_FORWARDS,
    }
}

/// What the driver saw of call control's output.
#[derive(Default)]
struct Seen {
    /// Streams running, with the ports they hold.
    streams: HashMap<CallId, Port>,
    bridges: Vec<(CallId, CallId)>,
    unbridges: Vec<CallId>,
    plays: Vec<(CallId, &'static str)>,
    /// Every hold program a call was given, at its start or later.
    holds: Vec<(CallId, Arc<HoldProgram>)>,
    records: Vec<CallRecord>,
    callbacks: Vec<(String, Progress)>,
    flows: HashMap<CallId, Rc<Cell<bool>>>,
    signals: Vec<(CallId, CallSignal)>,
    shared_hold: Vec<(String, bool)>,
    statuses: Vec<crate::twiml::StatusEvent>,
    dtmf: Vec<(CallId, char)>,
    /// Each stream's first source, as it started.
    started: Vec<(CallId, &'static str)>,
    /// Sending switched on or off, per call.
    sending: Vec<(CallId, bool)>,
    /// Recording actions, per call.
    recordings: Vec<(CallId, RecordAction)>,
}

fn source_name(source: &Source) -> &'static str {
    match source {
        Source::Hold(_) => "hold",
        Source::Silence => "silence",
        Source::Clip { looped: true, .. } => "looped clip",
        _ => "clip",
    }
}

struct Pair {
    t0: Instant,
    now: Instant,
    cc: CallControl<Ports, Flow>,
    live_ports: Rc<Cell<usize>>,
    caller: Peer,
    agents: Vec<Peer>,
    seen: Seen,
    /// Datagrams held back from crossline.
    held: Vec<bytes::Bytes>,
    /// DNS, and addresses that are no peer (scripted or silent).
    outside: outbound::Outside,
}

const FLOW: &str = "name = \"pbx\"\n[[nodes]]\nid = \"start\"\ntype = \"hangup\"\n";

fn config() -> Config {
    let mut config = Config::default();
    config.media.rtp_address = "127.0.0.1".parse().unwrap();
    config.sip.shutdown_grace_secs = 5;
    let flow = crate::flow::parse_flow(FLOW, Path::new("pbx.toml"), Path::new(".")).unwrap();
    config.flow_set.flows.insert("pbx".into(), Arc::new(flow));
    config.routes = vec![
        route("100", "hold", 0),
        route("200", "pbx", 0),
        route("300", "hold", 1_000),
    ];
    config
}

fn route(did: &str, flow: &str, ring_ms: u64) -> RouteConfig {
    RouteConfig {
        did: did.into(),
        ring_ms,
        ..RouteConfig::to_flow(flow)
    }
}

impl Pair {
    fn new() -> Pair {
        Pair::with(config(), 100)
    }

    fn with(config: Config, ports: usize) -> Pair {
        let t0 = Instant::now();
        let live = Rc::new(Cell::new(0));
        // Trunks with source ranges admit calls as themselves.
        let inbound_trunks = config
            .trunks
            .iter()
            .filter(|t| !t.inbound_cidrs.is_empty())
            .map(|t| crate::sip::endpoint::InboundTrunk {
                name: t.name.clone(),
                cidrs: t
                    .inbound_cidrs
                    .iter()
                    .map(|c| crate::net::Cidr::parse(c).unwrap())
                    .collect(),
                credentials: None,
                max_calls: 0,
                digest_algorithms: Vec::new(),
            })
            .collect();
        let endpoint_config = EndpointConfig {
            registrar: crate::registrar::endpoint_registrar(&config),
            udp_listeners: vec![addr(CROSSLINE)],
            tcp_listeners: Vec::new(),
            inbound_trunks,
            ..EndpointConfig::default()
        };
        let hold = Arc::new(HoldProgram::new(
            vec![Arc::from(vec![0i16; 160])],
            None,
            Duration::from_secs(30),
            -12.0,
        ));
        let cc = CallControl::new(
            config,
            Endpoint::new(endpoint_config, t0),
            Ports {
                next: 20_000,
                live: live.clone(),
                left: ports,
            },
            Settings {
                demo_clip: Arc::from(vec![0i16; 160]),
                record_announcement: None,
                holds: HoldPrograms::only(hold),
                seed: 1,
            },
        );
        Pair {
            t0,
            now: t0,
            cc,
            live_ports: live,
            caller: Peer::new(CALLER, t0),
            agents: vec![Peer::new(AGENT, t0), Peer::new(AGENT2, t0)],
            seen: Seen::default(),
            held: Vec::new(),
            outside: outbound::Outside::default(),
        }
    }

    fn peer(&mut self, at: SocketAddr) -> Option<&mut Peer> {
        if self.caller.at == at {
            return Some(&mut self.caller);
        }
        self.agents.iter_mut().find(|a| a.at == at)
    }

    /// Deliver everything in flight and carry out call control's output,
    /// until nothing moves.
    fn drive(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(t) = self.cc.poll_transmit() {
                moved = true;
                let now = self.now;
                let from = t.peer.local;
                if let Some(peer) = self.peer(t.peer.remote) {
                    let at = peer.at;
                    peer.ep.handle_datagram(now, at, from, &t.payload);
                } else {
                    self.outside.receive(&t);
                }
            }
            moved |= self.outside_replies();
            let mut inbound = Vec::new();
            for peer in std::iter::once(&mut self.caller).chain(self.agents.iter_mut()) {
                while let Some(t) = peer.ep.poll_transmit() {
                    moved = true;
                    inbound.push((t.peer.local, t.peer.remote, t.payload));
                }
                while let Some(ev) = peer.ep.poll_event() {
                    moved = true;
                    if let Event::ReferRequested { call, .. } = &ev {
                        // Peers here don't take transfers.
                        peer.ep
                            .refuse_refer(self.now, *call, 603, "Declined")
                            .unwrap();
                    }
                    if let Event::IncomingCall(inc) = &ev {
                        let call = inc.call;
                        if let Some(status) = peer.refuses {
                            peer.ep.reject(self.now, call, status).unwrap();
                        } else if peer.answers {
                            peer.ep.answer(self.now, call, local_media(40_000)).unwrap();
                        } else {
                            peer.ep.ring(self.now, call).unwrap();
                        }
                    }
                    peer.events.push(ev);
                }
            }
            for (from, to, payload) in inbound {
                if to == addr(CROSSLINE) {
                    self.cc.handle_datagram(self.now, to, from, &payload);
                }
            }
            moved |= self.carry_out();
            if !moved {
                return;
            }
        }
        panic!("the pair never settled");
    }

    /// The driver's part: media, flows, signals and effects.
    fn carry_out(&mut self) -> bool {
        let mut moved = false;
        while let Some(cmd) = self.cc.poll_media() {
            moved = true;
            match cmd {
                MediaCommand::Start {
                    call,
                    reservation,
                    source,
                    ..
                } => {
                    self.seen.started.push((call, source_name(&source)));
                    if let Source::Hold(h) = source {
                        self.seen.holds.push((call, h));
                    }
                    assert!(
                        self.seen.streams.insert(call, reservation).is_none(),
                        "{call} started twice"
                    );
                }
                MediaCommand::Stop(call) => {
                    assert!(
                        self.seen.streams.remove(&call).is_some(),
                        "{call} stopped but never started"
                    );
                }
                MediaCommand::Bridge(a, b) => self.seen.bridges.push((a, b)),
                MediaCommand::Unbridge(a) => self.seen.unbridges.push(a),
                MediaCommand::Play { call, source, .. } => {
                    let what = source_name(&source);
                    if let Source::Hold(h) = source {
                        self.seen.holds.push((call, h));
                    }
                    self.seen.plays.push((call, what));
                }
                MediaCommand::Sending { call, sending, .. } => {
                    self.seen.sending.push((call, sending))
                }
                MediaCommand::SendDtmf { call, digit, .. } => self.seen.dtmf.push((call, digit)),
                MediaCommand::Tap { .. } => {}
                MediaCommand::Record { call, action, .. } => {
                    self.seen.recordings.push((call, action))
                }
            }
        }
        while let Some(start) = self.cc.poll_flow_start() {
            moved = true;
            let alive = Rc::new(Cell::new(true));
            self.seen.flows.insert(start.call, alive.clone());
            self.cc.attach_flow(start.call, Flow { alive });
        }
        while let Some((call, signal, flow)) = self.cc.poll_flow_signal() {
            moved = true;
            assert!(
                flow.is_some(),
                "a signal for {call} with no flow to take it"
            );
            self.seen.signals.push((call, signal));
        }
        while let Some(effect) = self.cc.poll_effect() {
            moved = true;
            match effect {
                Effect::Record(r) => self.seen.records.push(r),
                Effect::Callback { id, progress } => self.seen.callbacks.push((id, progress)),
                Effect::SharedHold { web_call, hold } => {
                    self.seen.shared_hold.push((web_call, hold.is_some()))
                }
                Effect::Bindings { .. } => {}
                Effect::CallStatus(event) => self.seen.statuses.push(*event),
            }
        }
        moved
    }

    /// Let `ms` pass, firing every timer on the way.
    fn advance(&mut self, ms: u64) {
        let end = self.now + Duration::from_millis(ms);
        loop {
            self.cc.handle_timeout(self.now);
            self.caller.ep.handle_timeout(self.now);
            for a in &mut self.agents {
                a.ep.handle_timeout(self.now);
            }
            self.drive();
            // Deadlines already passed (the drain's hard stop) are not news.
            let next = [
                self.cc.poll_timeout(),
                self.caller.ep.poll_timeout(),
                self.agents[0].ep.poll_timeout(),
                self.agents[1].ep.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .filter(|t| *t > self.now && *t <= end)
            .min();
            match next {
                Some(at) => self.now = at,
                None => break,
            }
        }
        self.now = end;
        self.cc.handle_timeout(self.now);
        self.drive();
    }

    /// The caller dials `did` at crossline.
    fn dial(&mut self, did: &str) -> CallId {
        let spec = invite(did, "alice", 30_000);
        let call = self.caller.ep.invite(self.now, spec).unwrap();
        self.drive();
        call
    }

    /// The one call crossline has that isn't an agent leg.
    fn inbound(&self) -> CallId {
        let ids: Vec<CallId> = self
            .cc
            .calls
            .iter()
            .filter(|(_, c)| matches!(c.role, Role::Inbound))
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(ids.len(), 1, "expected one inbound call, found {ids:?}");
        ids[0]
    }

    fn transfer(&mut self, call: CallId, targets: &[&str], parallel: bool) {
        let uris: Vec<String> = targets.iter().map(|t| format!("sip:agent@{t}")).collect();
        let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
        self.transfer_to(call, &uris, parallel, 10);
    }

    /// Transfer `call` to whole URIs, ringing up to `ring_secs`.
    fn transfer_to(&mut self, call: CallId, targets: &[&str], parallel: bool, ring_secs: u64) {
        let req = TransferRequest {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            parallel,
            ring_timeout: Duration::from_secs(ring_secs),
            trunk: None,
            hold_message: None,
            hold_music: Vec::new(),
            repeat_interval: None,
            caller_id: None,
        };
        self.cc
            .handle_flow_request(self.now, call, CallRequest::Transfer(req));
        self.drive();
    }

    /// Nothing of any call is left: no call, no stream, no port, no flow,
    /// no timer, and every call has its record.
    fn assert_all_released(&self, calls: usize) {
        assert_eq!(self.cc.calls(), 0, "calls left in the map");
        assert!(
            self.seen.streams.is_empty(),
            "streams left: {:?}",
            self.seen.streams.keys()
        );
        assert_eq!(self.live_ports.get(), 0, "ports still reserved");
        assert!(
            self.seen.flows.values().all(|alive| !alive.get()),
            "a flow outlived its call"
        );
        assert_eq!(self.seen.records.len(), calls, "one record per call");
        assert_eq!(self.cc.endpoint().active_calls(), 0);
    }

    fn signals(&self, call: CallId) -> Vec<CallSignal> {
        self.seen
            .signals
            .iter()
            .filter(|(c, _)| *c == call)
            .map(|(_, s)| s.clone())
            .collect()
    }

    fn outcomes(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for r in &self.seen.records {
            *m.entry(format!("{} {}", r.direction, r.outcome))
                .or_default() += 1;
        }
        m
    }
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn answer_streams_hold_and_hang_up_releases_everything() {
    let mut p = Pair::new();
    let leg = p.dial("100");
    assert_eq!(p.caller.established(), 1, "the caller got 200 OK and ACKed");
    let call = p.inbound();
    assert!(
        p.seen.streams.contains_key(&call),
        "stream started on answer"
    );
    assert_eq!(p.live_ports.get(), 1);
    p.advance(5_000);
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(1);
    assert_eq!(p.outcomes(), counts(&[("inbound remote_bye", 1)]));
    assert!(p.seen.records[0].answered_at.is_some());
}

#[test]
fn unrouted_calls_get_404_and_leave_a_record() {
    let mut p = Pair::new();
    p.dial("999");
    assert!(matches!(
        p.caller.ended()[..],
        [EndCause::Rejected { status: 404, .. }]
    ));
    p.assert_all_released(1);
    assert_eq!(p.outcomes(), counts(&[("inbound rejected", 1)]));
}

#[test]
fn ring_ms_answers_on_time_and_a_cancel_while_ringing_frees_the_timer() {
    let mut p = Pair::new();
    let leg = p.dial("300");
    assert_eq!(p.caller.established(), 0);
    p.advance(999);
    assert_eq!(p.caller.established(), 0, "not before ring_ms");
    p.advance(1);
    assert_eq!(p.caller.established(), 1, "answered at ring_ms");
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(1);

    // A second caller gives up while ringing: CANCEL, 487, nothing left.
    let leg = p.dial("300");
    p.advance(300);
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.advance(2_000);
    assert_eq!(p.caller.established(), 1, "never answered after the cancel");
    p.assert_all_released(2);
}

#[test]
fn no_free_port_gets_503() {
    let mut p = Pair::with(config(), 0);
    p.dial("100");
    assert!(matches!(
        p.caller.ended()[..],
        [EndCause::Rejected { status: 503, .. }]
    ));
    p.assert_all_released(1);
}

#[test]
fn a_flow_starts_on_answer_and_stops_with_the_call() {
    let mut p = Pair::new();
    let leg = p.dial("200");
    let call = p.inbound();
    let alive = p.seen.flows.get(&call).cloned().expect("flow started");
    assert!(alive.get());
    p.cc.handle_flow_request(
        p.now,
        call,
        CallRequest::Keep {
            name: "lead".into(),
            value: "42".into(),
        },
    );
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(1);
    assert_eq!(
        p.seen.records[0].vars.get("lead").map(String::as_str),
        Some("42")
    );
    // A request the flow queued before it learnt of the hang-up is void.
    p.cc.handle_flow_request(p.now, call, CallRequest::Hangup);
    p.drive();
    assert_eq!(p.cc.calls(), 0);
}

/// A webhook app's call: its flow starts while the call rings, and its
/// TwiML answers it (then the stream starts and the flow hears it) or
/// rejects it unanswered (no stream, no port).
#[test]
fn an_app_runs_before_the_answer_and_answers_or_rejects() {
    let mut config = config();
    config.routes.push(RouteConfig {
        did: "700".into(),
        app: Some(crate::twiml::AppConfig {
            url: "http://app.example/voice".into(),
            method: "POST".into(),
            fallback_url: None,
            fallback_method: "POST".into(),
            status_callback: Some("http://app.example/status".into()),
            status_callback_method: "POST".into(),
            status_callback_event: crate::twiml::status::EVENTS.map(String::from).to_vec(),
            twiml: None,
        }),
        ..RouteConfig::to_flow("")
    });
    let mut p = Pair::with(config, 10);
    let leg = p.dial("700");
    let call = p.inbound();
    assert!(
        p.seen.flows.get(&call).is_some_and(|f| f.get()),
        "started while ringing"
    );
    assert_eq!(p.caller.established(), 0);
    assert!(p.seen.streams.is_empty() && p.live_ports.get() == 0);
    p.cc.handle_flow_request(p.now, call, CallRequest::Answer);
    p.drive();
    assert_eq!(p.caller.established(), 1);
    assert!(p.seen.streams.contains_key(&call));
    assert_eq!(p.seen.signals, vec![(call, CallSignal::Answered)]);
    assert_eq!(p.seen.flows.len(), 1, "the same flow, not a second one");
    // Answering twice does nothing more.
    p.cc.handle_flow_request(p.now, call, CallRequest::Answer);
    p.drive();
    assert_eq!(p.seen.signals.len(), 1);
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(1);

    p.dial("700");
    let call = p.inbound();
    p.cc.handle_flow_request(p.now, call, CallRequest::Reject { status: 486 });
    p.drive();
    assert!(matches!(
        p.caller.ended()[..],
        [_, EndCause::Rejected { status: 486, .. }]
    ));
    p.assert_all_released(2);
    let rejected = &p.seen.records[1];
    assert_eq!(
        (rejected.sip_status, rejected.answered_at),
        (Some(486), None)
    );
    assert_eq!(rejected.flow.as_deref(), Some(crate::twiml::APP_FLOW));

    // Each call's status events, once each and in order, with its CallSid.
    let param = status_param;
    let seen: Vec<(String, String, String, String)> = p
        .seen
        .statuses
        .iter()
        .map(|e| {
            (
                param(e, "CallStatus"),
                param(e, "SequenceNumber"),
                param(e, "SipResponseCode"),
                e.call_sid.clone(),
            )
        })
        .collect();
    let of = |i: usize| p.seen.records[i].vars[crate::twiml::CALL_SID_VAR].clone();
    let (a, b) = (of(0), of(1));
    let want = |s: &str, n: &str, code: &str, sid: &String| {
        (s.to_string(), n.to_string(), code.to_string(), sid.clone())
    };
    assert_eq!(
        seen,
        vec![
            want("initiated", "0", "", &a),
            want("ringing", "1", "", &a),
            want("in-progress", "2", "", &a),
            want("completed", "3", "200", &a),
            want("initiated", "0", "", &b),
            want("ringing", "1", "", &b),
            want("busy", "2", "486", &b),
        ]
    );
    assert_ne!(a, b);
    assert!(p.seen.statuses[3].last && !p.seen.statuses[2].last);
}

#[test]
fn transfer_rings_with_hold_then_bridges_and_the_agent_hangs_up() {
    let mut p = Pair::new();
    p.agents[0].answers = false;
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT], false);
    assert!(p.seen.plays.contains(&(call, "hold")), "hold while ringing");
    assert_eq!(p.cc.calls(), 2, "the agent leg is a call of its own");
    assert_eq!(p.live_ports.get(), 2);
    // The agent picks up after three seconds.
    p.advance(3_000);
    let agent_call = p.agents[0].incoming()[0];
    p.agents[0]
        .ep
        .answer(p.now, agent_call, local_media(40_000))
        .unwrap();
    p.drive();
    assert_eq!(p.seen.bridges.len(), 1, "bridged");
    assert!(matches!(
        p.signals(call)[..],
        [CallSignal::Transfer(TransferEvent::Bridged { .. })]
    ));
    // The agent hangs up: the flow hears it and the caller's side ends.
    p.agents[0].ep.hangup(p.now, agent_call).unwrap();
    p.drive();
    assert_eq!(p.seen.unbridges, vec![call]);
    assert!(p
        .signals(call)
        .contains(&CallSignal::Transfer(TransferEvent::AgentHungUp)));
    // The flow decides what next; here it hangs up.
    p.cc.handle_flow_request(p.now, call, CallRequest::Hangup);
    p.drive();
    assert_eq!(p.caller.ended().len(), 1);
    let _ = leg;
    p.assert_all_released(2);
}

/// An agent leg is one hop on from its caller: Max-Forwards one less
/// than the caller's INVITE had, so a transfer routed back to us loses a
/// hop each time round; the one that arrives with none left gets 483.
#[test]
fn an_agent_leg_carries_one_hop_less_than_its_caller() {
    // The hops the agent's INVITE carried, and what the caller's flow
    // heard of the transfer.
    let hops_seen_by_agent = |caller_hops: u8| {
        let mut p = Pair::new();
        p.agents[0].answers = false;
        let spec = OutgoingCall {
            max_forwards: caller_hops,
            ..invite("200", "alice", 30_000)
        };
        p.caller.ep.invite(p.now, spec).unwrap();
        p.drive();
        let call = p.inbound();
        p.transfer(call, &[AGENT], false);
        p.advance(100);
        let hops: Vec<u8> = p.agents[0]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::IncomingCall(inc) => Some(inc.max_forwards),
                _ => None,
            })
            .collect();
        (hops, p.signals(call))
    };
    assert_eq!(hops_seen_by_agent(70), (vec![69], vec![]));
    assert_eq!(hops_seen_by_agent(5), (vec![4], vec![]));
    // One hop left: the agent leg goes out with none, and the agent (a
    // crossline endpoint, as it would be were the route a loop back to
    // us) refuses it: 483 Too Many Hops, which the flow hears.
    assert_eq!(
        hops_seen_by_agent(1),
        (
            vec![],
            vec![CallSignal::Transfer(TransferEvent::Failed { status: 483 })]
        )
    );
}

#[test]
fn caller_hangs_up_while_the_agent_rings_and_the_agent_is_cancelled() {
    let mut p = Pair::new();
    p.agents[0].answers = false;
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT], false);
    p.advance(1_000);
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.advance(1_000);
    assert!(
        matches!(p.agents[0].ended()[..], [EndCause::Cancelled]),
        "the agent's phone stops ringing: {:?}",
        p.agents[0].ended()
    );
    p.assert_all_released(2);
}

#[test]
fn caller_hangs_up_while_bridged_and_the_agent_gets_a_bye() {
    let mut p = Pair::new();
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT], false);
    assert_eq!(p.seen.bridges.len(), 1);
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    assert!(matches!(p.agents[0].ended()[..], [EndCause::RemoteBye]));
    p.assert_all_released(2);
}

/// A flow (a Dial's timeLimit or hangupOnStar) hangs up the bridged
/// agent: the agent gets BYE, the flow hears it, the caller stays.
#[test]
fn the_flow_hangs_up_the_bridged_agent_and_the_caller_stays() {
    let mut p = Pair::new();
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT], false);
    assert_eq!(p.seen.bridges.len(), 1);
    p.cc.handle_flow_request(p.now, call, CallRequest::HangUpAgent);
    p.drive();
    assert!(matches!(p.agents[0].ended()[..], [EndCause::RemoteBye]));
    assert!(p
        .seen
        .signals
        .contains(&(call, CallSignal::Transfer(TransferEvent::AgentHungUp))));
    assert!(p.caller.ended().is_empty(), "the caller is still on");
    assert!(p.seen.streams.contains_key(&call));
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(2);
}

#[test]
fn agent_answering_after_the_caller_left_is_hung_up() {
    let mut p = Pair::new();
    p.agents[0].answers = false;
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT], false);
    let agent_call = p.agents[0].incoming()[0];
    // The answer and the caller's BYE cross: the caller's end is handled
    // first, then the agent's 200 OK arrives for a transfer that's gone.
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.agents[0]
        .ep
        .answer(p.now, agent_call, local_media(40_000))
        .unwrap();
    p.drive();
    p.advance(2_000);
    assert!(p.seen.bridges.is_empty(), "never bridged to nobody");
    assert_eq!(p.agents[0].ended().len(), 1, "the agent's call ended");
    p.assert_all_released(2);
}

#[test]
fn sequential_transfer_moves_past_a_busy_agent_and_ring_timeouts() {
    let mut p = Pair::new();
    p.agents[0].refuses = Some(486);
    p.agents[1].answers = false;
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT, AGENT2], false);
    assert_eq!(p.agents[1].incoming().len(), 1, "busy agent skipped");
    // Nobody answers the second within ring_timeout (10 s).
    p.advance(10_000);
    p.advance(1_000);
    assert!(
        p.signals(call)
            .contains(&CallSignal::Transfer(TransferEvent::Failed { status: 408 })),
        "{:?}",
        p.signals(call)
    );
    assert!(p.seen.plays.ends_with(&[(call, "silence")]));
    assert_eq!(p.cc.calls(), 1, "only the caller is left");
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(3);
}

#[test]
fn parallel_ring_bridges_the_first_answer_and_cancels_the_other() {
    let mut p = Pair::new();
    p.agents[1].answers = false;
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT2, AGENT], true);
    assert_eq!(p.seen.bridges.len(), 1);
    p.advance(1_000);
    assert!(matches!(p.agents[1].ended()[..], [EndCause::Cancelled]));
    assert_eq!(p.cc.calls(), 2, "caller and the bridged agent");
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(3);
}

#[test]
fn refer_before_the_ack_waits_for_it_and_a_refusal_reaches_the_flow() {
    let mut p = Pair::new();
    // Hold the caller's ACK back: only crossline's 200 OK goes out.
    let spec_leg = p.dial_without_ack("200");
    let call = p.inbound();
    assert_eq!(p.cc.endpoint().call_state(call), Some(CallState::Answered));
    p.cc.handle_flow_request(
        p.now,
        call,
        CallRequest::Refer {
            target: format!("sip:agent@{AGENT}"),
        },
    );
    assert!(p.cc.poll_transmit().is_none(), "no REFER before the ACK");
    p.release_ack();
    let referred = p
        .caller
        .events
        .iter()
        .any(|e| matches!(e, Event::CallEnded { .. }));
    // Our test caller refuses REFER (it never accepts one): the flow hears
    // the refusal instead of the call waiting forever.
    assert!(
        p.signals(call)
            .iter()
            .any(|s| matches!(s, CallSignal::Transfer(TransferEvent::Failed { .. }))),
        "REFER sent after the ACK and answered: {:?}",
        p.signals(call)
    );
    assert!(!referred, "a refused REFER leaves the call up");
    p.caller.ep.hangup(p.now, spec_leg).unwrap();
    p.drive();
    p.assert_all_released(1);
}

#[test]
fn callback_rings_then_runs_its_flow_and_reports_each_step() {
    let mut config = config();
    config.trunks.push(crate::config::TrunkConfig {
        name: "pstn".into(),
        outbound_proxy: Some(format!("sip:{AGENT}")),
        ..Default::default()
    });
    let mut p = Pair::with(config, 10);
    p.agents[0].answers = false;
    p.cc.originate(
        p.now,
        Originate {
            id: "cb-1".into(),
            phone: "+15551234567".into(),
            flow: Some("pbx".into()),
            target: None,
            vars: HashMap::from([("callback_id".to_string(), "cb-1".to_string())]),
        },
    );
    p.drive();
    assert_eq!(p.agents[0].incoming().len(), 1, "the visitor's phone rings");
    let visitor = p.agents[0].incoming()[0];
    p.agents[0]
        .ep
        .answer(p.now, visitor, local_media(40_000))
        .unwrap();
    p.drive();
    let steps: Vec<&Progress> = p.seen.callbacks.iter().map(|(_, s)| s).collect();
    assert_eq!(steps, [&Progress::Ringing, &Progress::Answered]);
    assert_eq!(p.seen.flows.len(), 1, "the callback's flow runs");
    p.agents[0].ep.hangup(p.now, visitor).unwrap();
    p.drive();
    assert!(matches!(
        &p.seen.callbacks.last().unwrap().1,
        Progress::Ended {
            sip_status: None,
            ..
        }
    ));
    p.assert_all_released(1);
    assert_eq!(p.outcomes(), counts(&[("outbound remote_bye", 1)]));
}

/// A Calls API call: the number through the trunk with the API's From;
/// its status events say outbound-api, in order; its app runs once
/// answered; canceled leaves it in progress, completed hangs it up; the
/// record keeps the CallSid, the INVITE's Call-ID and the final status.
#[test]
fn an_api_call_runs_its_app_once_answered_and_ends_on_request() {
    let mut p = Pair::with(trunk_config(), 10);
    p.agents[0].answers = false;
    let call = api_call(&[("Url", "http://app.example/voice")]);
    let sid = call.sid.clone();
    assert_eq!(p.cc.originate_app(p.now, call), Ok(()));
    p.drive();
    let invited: Vec<(String, String)> = p.agents[0]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::IncomingCall(inc) => Some((inc.did.clone(), inc.caller.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(invited, [("+12015550123".into(), "+15550001111".into())]);
    assert_eq!(p.cc.call_views()[0].status, "ringing");
    assert!(p.seen.flows.is_empty(), "no app before the answer");
    let phone = p.agents[0].incoming()[0];
    p.agents[0]
        .ep
        .answer(p.now, phone, local_media(40_000))
        .unwrap();
    p.drive();
    assert_eq!(p.seen.flows.len(), 1, "the app runs once answered");
    let kept = p.cc.end_by_sid(p.now, &sid, true);
    assert_eq!(
        kept.map(|v| v.status),
        Some("in-progress"),
        "canceled: no effect"
    );
    p.drive();
    assert!(p.agents[0].ended().is_empty());
    let ended = p.cc.end_by_sid(p.now, &sid, false);
    assert_eq!(ended.map(|v| v.status), Some("completed"));
    p.drive();
    assert!(matches!(p.agents[0].ended()[..], [EndCause::RemoteBye]));
    p.assert_all_released(1);
    assert_eq!(p.cc.end_by_sid(p.now, &sid, false), None, "gone");
    let record = &p.seen.records[0];
    assert_eq!(record.vars[crate::twiml::CALL_SID_VAR], sid);
    assert_eq!(record.vars[crate::twiml::calls::STATUS_VAR], "completed");
    assert!(!record.call_id.is_empty(), "the INVITE's Call-ID");
    let statuses: Vec<(String, String)> = p
        .seen
        .statuses
        .iter()
        .map(|e| (status_param(e, "CallStatus"), status_param(e, "Direction")))
        .collect();
    let out = |s: &str| (s.to_string(), "outbound-api".to_string());
    assert_eq!(
        statuses,
        [
            out("initiated"),
            out("ringing"),
            out("in-progress"),
            out("completed")
        ]
    );
}

/// Canceled while ringing: CANCEL, and the call ends canceled; an API
/// call nobody answers within its Timeout ends no-answer.
#[test]
fn an_api_call_is_cancelled_while_ringing_or_times_out() {
    let mut p = Pair::with(trunk_config(), 10);
    p.agents[0].answers = false;
    let call = api_call(&[("Url", "http://app.example/voice"), ("Timeout", "5")]);
    let sid = call.sid.clone();
    p.cc.originate_app(p.now, call).unwrap();
    p.drive();
    p.advance(1_000);
    let cancelled = p.cc.end_by_sid(p.now, &sid, true);
    assert_eq!(cancelled.map(|v| v.status), Some("canceled"));
    p.drive();
    assert!(matches!(p.agents[0].ended()[..], [EndCause::Cancelled]));
    p.assert_all_released(1);
    assert_eq!(
        p.seen.records[0].vars[crate::twiml::calls::STATUS_VAR],
        "canceled"
    );

    let call = api_call(&[
        ("Twiml", "<Response><Hangup/></Response>"),
        ("Timeout", "5"),
    ]);
    p.cc.originate_app(p.now, call).unwrap();
    p.drive();
    p.advance(5_000);
    p.advance(1_000);
    p.assert_all_released(2);
    assert_eq!(
        p.seen.records[1].vars[crate::twiml::calls::STATUS_VAR],
        "no-answer"
    );
    let last = p
        .seen
        .statuses
        .last()
        .map(|e| status_param(e, "CallStatus"));
    assert_eq!(last.as_deref(), Some("no-answer"));
    assert!(p.seen.flows.is_empty(), "never answered: no app");
}

fn trunk_config() -> Config {
    let mut config = config();
    config.trunks.push(crate::config::TrunkConfig {
        name: "pstn".into(),
        outbound_proxy: Some(format!("sip:{AGENT}")),
        ..Default::default()
    });
    config
}

/// A checked Calls API call to +12015550123 from +15550001111 that wants
/// every status event, with `extra` parameters.
fn api_call(extra: &[(&str, &str)]) -> crate::twiml::calls::NewCall {
    let form: Vec<(String, String)> = [
        ("To", "+12015550123"),
        ("From", "+15550001111"),
        ("StatusCallback", "http://app.example/status"),
        (
            "StatusCallbackEvent",
            "initiated ringing answered completed",
        ),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    crate::twiml::calls::new_call(&form, &[]).unwrap()
}

fn status_param(e: &crate::twiml::StatusEvent, name: &str) -> String {
    e.params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

#[test]
fn callback_nobody_answers_is_a_408() {
    let mut config = config();
    config.callbacks.ring_timeout_secs = 20;
    config.trunks.push(crate::config::TrunkConfig {
        name: "pstn".into(),
        outbound_proxy: Some(format!("sip:{AGENT}")),
        ..Default::default()
    });
    let mut p = Pair::with(config, 10);
    p.agents[0].answers = false;
    p.cc.originate(
        p.now,
        Originate {
            id: "cb-2".into(),
            phone: "+15551234567".into(),
            flow: Some("pbx".into()),
            target: None,
            vars: HashMap::new(),
        },
    );
    p.drive();
    p.advance(20_000);
    p.advance(1_000);
    assert_eq!(
        p.seen.callbacks.last().map(|(_, s)| s.clone()),
        Some(Progress::Ended {
            sip_status: Some(408),
            reason: "no answer".into()
        })
    );
    p.assert_all_released(1);
}

#[test]
fn drain_refuses_new_calls_then_hangs_up_at_the_deadline() {
    let mut p = Pair::new();
    p.dial("100");
    assert!(!p.cc.begin_drain(p.now));
    p.drive();
    // New calls get 503 while draining.
    let mut late = Peer::new(CALLER, p.t0);
    std::mem::swap(&mut late, &mut p.caller);
    p.dial("100");
    assert!(matches!(
        p.caller.ended()[..],
        [EndCause::Rejected { status: 503, .. }]
    ));
    std::mem::swap(&mut late, &mut p.caller);
    assert!(!p.cc.finished(p.now));
    // Grace (5 s) over: the call in progress gets a BYE and we finish.
    p.advance(5_000);
    assert!(matches!(p.caller.ended()[..], [EndCause::RemoteBye]));
    assert!(!p.cc.finished(p.now), "BYE transactions still open");
    p.advance(2_000);
    assert!(
        p.cc.finished(p.now),
        "two seconds after the deadline at most"
    );
    assert_eq!(p.cc.calls(), 0);
    assert_eq!(p.live_ports.get(), 0);
    assert!(p.cc.begin_drain(p.now), "a second signal stops at once");
}

#[test]
fn reload_mid_call_changes_new_calls_only() {
    let mut p = Pair::new();
    let first = p.dial("200");
    let call = p.inbound();
    let mut new_config = config();
    new_config.routes = vec![route("200", "hold", 0)];
    let hold = Arc::new(HoldProgram::new(
        vec![Arc::from(vec![1i16; 160])],
        None,
        Duration::from_secs(30),
        -12.0,
    ));
    p.cc.reload(&new_config, HoldPrograms::only(hold.clone()));
    assert!(Arc::ptr_eq(p.cc.hold(), &hold));
    // The call in progress keeps its flow.
    assert!(p.seen.flows[&call].get());
    assert!(matches!(p.cc.calls[&call].program, Some(Program::File(_))));
    // A new call to the same number (from the second agent's phone) gets
    // the new route: hold, no flow.
    let spec = invite("200", "bob", 30_002);
    let leg2 = p.agents[1].ep.invite(p.now, spec).unwrap();
    p.drive();
    assert_eq!(p.agents[1].established(), 1);
    assert_eq!(p.cc.calls(), 2);
    assert_eq!(p.seen.flows.len(), 1, "no flow on the reloaded route");
    p.agents[1].ep.hangup(p.now, leg2).unwrap();
    p.drive();
    p.caller.ep.hangup(p.now, first).unwrap();
    p.drive();
    p.assert_all_released(2);
}

#[test]
fn rtp_timeout_hangs_up_and_releases() {
    let mut p = Pair::new();
    p.dial("100");
    let call = p.inbound();
    p.cc.handle_media_event(p.now, MediaEvent::RtpTimeout(call.0));
    p.drive();
    assert!(matches!(p.caller.ended()[..], [EndCause::RemoteBye]));
    p.assert_all_released(1);
    assert_eq!(p.outcomes(), counts(&[("inbound local_hangup", 1)]));
}

#[test]
fn the_demo_plays_its_welcome_then_the_hold_program() {
    let mut config = config();
    config.routes = vec![route("*", "demo", 0)];
    let mut p = Pair::with(config, 10);
    let leg = p.dial("1");
    let call = p.inbound();
    p.cc.handle_media_event(p.now, MediaEvent::SourceFinished(call.0, 0));
    p.drive();
    assert_eq!(p.seen.plays, vec![(call, "hold")]);
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(1);
}

/// A route's own hold program plays on its built-in `hold` and after
/// `demo`'s welcome; other routes keep `[media]`'s.
#[test]
fn a_route_plays_its_own_hold_program() {
    let mut p = Pair::new();
    let mut config = config();
    config.routes = vec![
        route("1", "hold", 0),
        route("2", "demo", 0),
        route("*", "hold", 0),
    ];
    let program = |sample: i16| {
        Arc::new(HoldProgram::new(
            vec![Arc::from(vec![sample; 160])],
            None,
            Duration::from_secs(10),
            -12.0,
        ))
    };
    let (default, own_1, own_2) = (program(0), program(1), program(2));
    p.cc.reload(
        &config,
        HoldPrograms {
            default: default.clone(),
            routes: vec![Some(own_1.clone()), Some(own_2.clone()), None],
            early_media: Vec::new(),
        },
    );
    let mut legs = Vec::new();
    for did in ["1", "2", "3"] {
        legs.push(p.dial(did));
    }
    let calls: Vec<CallId> = p.seen.streams.keys().copied().collect();
    assert_eq!(calls.len(), 3);
    for call in &calls {
        p.cc.handle_media_event(p.now, MediaEvent::SourceFinished(call.0, 0));
    }
    p.drive();
    let heard = |want: &Arc<HoldProgram>| {
        p.seen
            .holds
            .iter()
            .filter(|(_, h)| Arc::ptr_eq(h, want))
            .count()
    };
    assert_eq!(heard(&own_1), 1, "route 1's hold starts with the call");
    assert_eq!(heard(&own_2), 1, "route 2's hold follows demo's welcome");
    assert_eq!(heard(&default), 1, "route 3 plays [media]'s");
    assert_eq!(p.seen.holds.len(), 3);
    for leg in legs {
        p.caller.ep.hangup(p.now, leg).unwrap();
    }
    p.drive();
    p.assert_all_released(3);
}

impl Pair {
    /// Dial, but drop the caller's ACK so crossline stays in Answered.
    fn dial_without_ack(&mut self, did: &str) -> CallId {
        let spec = invite(did, "alice", 30_000);
        let call = self.caller.ep.invite(self.now, spec).unwrap();
        // INVITE → crossline.
        while let Some(t) = self.caller.ep.poll_transmit() {
            self.cc
                .handle_datagram(self.now, addr(CROSSLINE), t.peer.local, &t.payload);
        }
        self.carry_out();
        // 100 and 200 → caller; hold what the caller sends back (the ACK).
        while let Some(t) = self.cc.poll_transmit() {
            self.caller
                .ep
                .handle_datagram(self.now, addr(CALLER), t.peer.local, &t.payload);
        }
        while let Some(t) = self.caller.ep.poll_transmit() {
            self.held.push(t.payload);
        }
        while let Some(ev) = self.caller.ep.poll_event() {
            self.caller.events.push(ev);
        }
        self.carry_out();
        call
    }

    fn release_ack(&mut self) {
        for payload in std::mem::take(&mut self.held) {
            self.cc
                .handle_datagram(self.now, addr(CROSSLINE), addr(CALLER), &payload);
        }
        self.drive();
    }
}

#[test]
fn send_digits_are_paced_with_pauses_then_reported() {
    let mut p = Pair::new();
    let leg = p.dial("200");
    let call = p.inbound();
    p.cc.handle_flow_request(
        p.now,
        call,
        CallRequest::SendDigits {
            digits: "1,2".into(),
            duration_ms: 160,
            to_agent: false,
        },
    );
    p.drive();
    // The caller offered telephone-event: RFC 4733, first digit at once.
    assert_eq!(p.seen.dtmf, vec![(call, '1')]);
    p.advance(600);
    assert_eq!(p.seen.dtmf, vec![(call, '1')], "the pause holds the 2 back");
    assert!(!p.signals(call).contains(&CallSignal::DigitsSent));
    p.advance(200);
    assert_eq!(p.seen.dtmf, vec![(call, '1'), (call, '2')]);
    assert!(
        !p.signals(call).contains(&CallSignal::DigitsSent),
        "the 2 still sounds"
    );
    p.advance(300);
    assert_eq!(p.signals(call), vec![CallSignal::DigitsSent]);
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(1);
}

#[test]
fn send_digits_on_answer_go_to_the_bridged_agent() {
    let mut p = Pair::new();
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT], false);
    let agent =
        p.cc.calls
            .iter()
            .find(|(_, c)| matches!(c.role, Role::Agent { .. }))
            .map(|(id, _)| *id)
            .expect("an agent leg");
    p.cc.handle_flow_request(
        p.now,
        call,
        CallRequest::SendDigits {
            digits: "42".into(),
            duration_ms: 100,
            to_agent: true,
        },
    );
    p.drive();
    p.advance(1_000);
    assert_eq!(p.seen.dtmf, vec![(agent, '4'), (agent, '2')]);
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(2);
}

/// Memory per call: the map holds boxed calls, and a call's rare parts
/// (a transfer, digits being sent) are boxed, so thousands of plain calls
/// stay small.
#[test]
fn a_call_stays_small() {
    let size = std::mem::size_of::<model::Call<Port, Flow>>();
    assert!(size <= 480, "a Call is {size} bytes");
}

impl Pair {
    /// A caller on the "200" flow transfers to `targets`; the first agent
    /// rings and plays early media. The caller's leg, crossline's call and
    /// the first agent's call.
    fn early_media_from_first_agent(&mut self, targets: &[&str]) -> (CallId, CallId, CallId) {
        self.agents[0].answers = false;
        let leg = self.dial("200");
        let call = self.inbound();
        self.transfer(call, targets, false);
        let agent_call = self.agents[0].incoming()[0];
        self.agents[0]
            .ep
            .early_media(self.now, agent_call, local_media(40_000))
            .unwrap();
        self.drive();
        (leg, call, agent_call)
    }

    /// The agent leg crossline placed.
    fn agent_leg(&self) -> CallId {
        self.cc
            .calls
            .iter()
            .find(|(_, c)| matches!(c.role, Role::Agent { .. }))
            .map(|(id, _)| *id)
            .expect("an agent leg")
    }
}

/// A route's early media: a 183 with SDP (reliable: the caller supports
/// 100rel and PRACKs it) starts the stream on the looped ringback while the
/// call rings; at `ring_ms` the 200 answers and the program takes over the
/// same stream.
#[test]
fn early_media_plays_while_ringing_then_the_program_takes_over() {
    let mut config = config();
    config.routes = vec![RouteConfig {
        early_media: Some("ringback".into()),
        ..route("400", "hold", 2_000)
    }];
    let mut p = Pair::with(config.clone(), 10);
    let hold = p.cc.hold().clone();
    let ringback = EarlyAudio {
        samples: Arc::from(vec![1i16; 160]),
        looped: true,
    };
    p.cc.reload(
        &config,
        HoldPrograms {
            early_media: vec![Some(ringback)],
            ..HoldPrograms::only(hold)
        },
    );
    let leg = p.dial("400");
    let call = p.inbound();
    assert_eq!(
        p.seen.started,
        vec![(call, "looped clip")],
        "RTP before the answer"
    );
    assert!(p
        .caller
        .events
        .iter()
        .any(|e| matches!(e, Event::EarlyMedia { .. })));
    assert_eq!(p.caller.established(), 0);
    assert_eq!(
        p.cc.endpoint().counters.pracks_received,
        1,
        "the 183 was PRACKed"
    );
    p.advance(2_000);
    assert_eq!(p.caller.established(), 1, "answered at ring_ms");
    assert_eq!(
        p.seen.plays,
        vec![(call, "hold")],
        "the program on the same stream"
    );
    assert_eq!(p.seen.started.len(), 1, "no second stream");
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(1);
    assert!(p.seen.records[0].answered_at.is_some());
}

/// An agent's early media reaches the caller through the bridge while it
/// rings (the agent hears nothing yet); its answer opens the other way.
#[test]
fn an_agents_early_media_reaches_the_caller_before_it_answers() {
    let mut p = Pair::new();
    let (leg, call, agent_call) = p.early_media_from_first_agent(&[AGENT]);
    let agent = p.agent_leg();
    assert_eq!(p.seen.bridges, vec![(call, agent)], "bridged early");
    assert!(
        p.seen.sending.contains(&(agent, false)),
        "the agent hears nothing yet"
    );
    assert!(p.signals(call).is_empty(), "not answered yet");
    p.advance(1_000);
    p.agents[0].ep.answer_early(p.now, agent_call).unwrap();
    p.drive();
    assert_eq!(p.seen.bridges.len(), 1, "the same bridge");
    assert_eq!(p.seen.sending.last(), Some(&(agent, true)));
    assert!(matches!(
        p.signals(call)[..],
        [CallSignal::Transfer(TransferEvent::Bridged { .. })]
    ));
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(2);
}

/// An agent that plays early media, then declines: the caller is back on
/// hold music and the next agent rings.
#[test]
fn early_media_ends_with_its_agent_and_the_hold_music_comes_back() {
    let mut p = Pair::new();
    let (leg, call, agent_call) = p.early_media_from_first_agent(&[AGENT, AGENT2]);
    assert_eq!(p.seen.bridges.len(), 1);
    p.advance(500);
    p.agents[0].ep.reject(p.now, agent_call, 486).unwrap();
    p.drive();
    assert_eq!(p.seen.unbridges, vec![call]);
    assert_eq!(
        p.seen
            .plays
            .iter()
            .filter(|x| **x == (call, "hold"))
            .count(),
        2
    );
    // The second agent answers at once: bridged.
    assert_eq!(p.seen.bridges.len(), 2);
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(3);
}

/// A config whose caller comes in on trunk "carrier" (which may REFER
/// when `accept_refer`) and whose calls go out through AGENT.
fn referring_trunk(accept_refer: bool) -> Config {
    let mut config = config();
    config.trunks.push(crate::config::TrunkConfig {
        name: "carrier".into(),
        inbound_cidrs: vec!["127.0.0.1/32".into()],
        outbound_proxy: Some(format!("sip:{AGENT}")),
        accept_refer,
        ..Default::default()
    });
    config
}

impl Pair {
    /// The caller's leg REFERs crossline to `target`; the REFER's final
    /// answer as the caller saw it.
    fn caller_refers(&mut self, leg: CallId, target: &str) -> Option<u16> {
        let target = crate::sip::message::Uri::parse(target).unwrap();
        self.caller.ep.refer(self.now, leg, &target).unwrap();
        self.drive();
        self.caller.events.iter().rev().find_map(|e| match e {
            Event::ReferAnswered { status, .. } => Some(*status),
            _ => None,
        })
    }

    fn refer_progress(&self) -> Vec<u16> {
        self.caller
            .events
            .iter()
            .filter_map(|e| match e {
                Event::ReferProgress { status, .. } => Some(*status),
                _ => None,
            })
            .collect()
    }
}

#[test]
fn a_referred_call_takes_over_the_flow_and_the_old_leg_is_let_go() {
    let mut p = Pair::with(referring_trunk(true), 10);
    p.agents[0].answers = false;
    let leg = p.dial("200");
    let call = p.inbound();
    assert_eq!(p.seen.flows.len(), 1);
    // The flow is mid-prompt when the REFER comes.
    p.cc.handle_flow_request(
        p.now,
        call,
        CallRequest::Play {
            samples: Arc::from(vec![0i16; 800]),
            generation: 7,
        },
    );
    assert_eq!(
        p.caller_refers(leg, "sip:+34911234567@pstn.example.com"),
        Some(202)
    );
    // Through the trunk's proxy, to the Refer-To URI.
    let rung = p.agents[0].incoming();
    assert_eq!(rung.len(), 1, "the target rings through the trunk");
    assert_eq!(p.refer_progress(), vec![100, 180]);
    let target = rung[0];
    p.agents[0]
        .ep
        .answer(p.now, target, local_media(40_000))
        .unwrap();
    p.drive();
    assert_eq!(p.refer_progress(), vec![100, 180, 200]);
    let new_leg = *p
        .cc
        .calls
        .keys()
        .find(|id| **id != call)
        .expect("the referred call");
    // It hears the prompt the flow played, under the flow's generation.
    assert!(
        p.seen.plays.contains(&(new_leg, "clip")),
        "{:?}",
        p.seen.plays
    );
    assert!(
        !p.seen.streams.contains_key(&call),
        "the old leg's stream stops"
    );
    // The flow is the same task, now on the new call: its requests and
    // the new call's digits go between them.
    assert!(p.seen.flows[&call].get(), "the flow keeps running");
    p.cc.handle_flow_request(p.now, call, CallRequest::Silence { generation: 8 });
    p.drive();
    assert_eq!(p.seen.plays.last(), Some(&(new_leg, "silence")));
    // The referrer doesn't hang up: we do, after a grace period.
    p.advance(3_000);
    assert_eq!(p.caller.ended(), vec![&EndCause::RemoteBye]);
    assert!(p.seen.flows[&call].get(), "the flow outlives the old leg");
    p.agents[0].ep.hangup(p.now, target).unwrap();
    p.drive();
    p.assert_all_released(2);
    assert_eq!(
        p.outcomes(),
        counts(&[("inbound transferred", 1), ("outbound remote_bye", 1)])
    );
}

#[test]
fn a_referrer_that_hangs_up_at_once_leaves_the_program_waiting_for_the_new_call() {
    let mut p = Pair::with(referring_trunk(true), 10);
    p.agents[0].answers = false;
    let leg = p.dial("100");
    let call = p.inbound();
    assert_eq!(p.caller_refers(leg, "sip:200@pstn.example.com"), Some(202));
    // Basic transfer (RFC 5589 §6.1): BYE right after the 202.
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    assert_eq!(p.cc.calls(), 2, "the old call is parked, not ended");
    assert_eq!(p.seen.records.len(), 0);
    let target = p.agents[0].incoming()[0];
    p.agents[0]
        .ep
        .answer(p.now, target, local_media(40_000))
        .unwrap();
    p.drive();
    let new_leg = *p.cc.calls.keys().next().unwrap();
    assert_ne!(new_leg, call);
    // The hold program runs on the new call.
    assert!(
        p.seen
            .plays
            .iter()
            .any(|(c, what)| *c == new_leg && *what == "hold"),
        "{:?}",
        p.seen.plays
    );
    assert_eq!(p.outcomes(), counts(&[("inbound transferred", 1)]));
    p.agents[0].ep.hangup(p.now, target).unwrap();
    p.drive();
    p.assert_all_released(2);
}

#[test]
fn a_failed_referred_call_is_reported_and_the_call_goes_on() {
    let mut p = Pair::with(referring_trunk(true), 10);
    p.agents[0].refuses = Some(486);
    let leg = p.dial("200");
    let call = p.inbound();
    assert_eq!(p.caller_refers(leg, "sip:busy@pstn.example.com"), Some(202));
    assert_eq!(p.refer_progress(), vec![100, 486]);
    assert!(p.seen.flows[&call].get(), "the flow goes on");
    assert!(p.seen.streams.contains_key(&call));
    // And a parked call whose new leg fails ends with its own cause.
    p.agents[0].refuses = None;
    p.agents[0].answers = false;
    assert_eq!(p.caller_refers(leg, "sip:late@pstn.example.com"), Some(202));
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.advance(61_000);
    p.assert_all_released(3);
    assert_eq!(
        p.outcomes(),
        // The unanswered one was cancelled at the ring timeout.
        counts(&[("inbound remote_bye", 1), ("outbound rejected", 2)])
    );
}

#[test]
fn a_trunk_without_accept_refer_gets_403_and_no_call_is_placed() {
    let mut p = Pair::with(referring_trunk(false), 10);
    let leg = p.dial("100");
    assert_eq!(p.caller_refers(leg, "sip:200@pstn.example.com"), Some(403));
    assert!(p.agents[0].incoming().is_empty());
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(1);
}

/// A route with `record = true` plays `[recording] announcement` first;
/// the recording and the program start when it has played. Then pause,
/// resume and stop, each refused when it makes no sense, by call id too;
/// the call's end lets go of everything.
#[test]
fn a_recorded_route_announces_then_records_then_plays_its_program() {
    let mut config = config();
    config.routes = vec![RouteConfig {
        record: true,
        ..route("500", "hold", 0)
    }];
    let mut p = Pair::with(config, 10);
    p.cc.record_announcement = Some(Arc::from(vec![1i16; 160]));
    let leg = p.dial("500");
    let id = p.inbound();
    assert_eq!(p.seen.started, vec![(id, "clip")], "the announcement first");
    assert!(p.seen.recordings.is_empty(), "not recording during it");
    // The stream started with it: its end comes as generation 0.
    p.cc.handle_media_event(p.now, MediaEvent::SourceFinished(id.0, 0));
    p.drive();
    let start = RecordAction::Start(Default::default());
    assert_eq!(p.seen.recordings, vec![(id, start)]);
    assert_eq!(p.seen.plays.last(), Some(&(id, "hold")));
    assert_eq!(p.cc.record(id, start), Err(RecordError::AlreadyRecording));
    assert_eq!(
        p.cc.record(id, RecordAction::Pause),
        Ok(RecordingState::On { paused: true })
    );
    assert_eq!(
        p.cc.record(id, RecordAction::Resume),
        Ok(RecordingState::On { paused: false })
    );
    let call_id = p.cc.calls[&id].record.call_id.clone();
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    p.cc.handle_command(
        p.now,
        CallCommand::Record {
            call_id,
            action: RecordAction::Stop,
            reply,
        },
    );
    assert_eq!(answer.try_recv(), Ok(Ok(RecordingState::Off)));
    assert_eq!(
        p.cc.record(id, RecordAction::Pause),
        Err(RecordError::NotRecording)
    );
    let (reply, mut answer) = tokio::sync::oneshot::channel();
    p.cc.handle_command(
        p.now,
        CallCommand::Record {
            call_id: "no-such-call".into(),
            action: RecordAction::Stop,
            reply,
        },
    );
    assert_eq!(answer.try_recv(), Ok(Err(RecordError::NoCall)));
    p.drive();
    let actions: Vec<RecordAction> = p.seen.recordings.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        actions,
        vec![
            start,
            RecordAction::Pause,
            RecordAction::Resume,
            RecordAction::Stop
        ]
    );
    p.caller.ep.hangup(p.now, leg).unwrap();
    p.drive();
    p.assert_all_released(1);
}

#[test]
fn a_bridged_agent_referred_elsewhere_is_replaced_in_the_bridge() {
    let mut config = referring_trunk(true);
    // The agent's side is the trunk here: its REFER is believed.
    config.trunks[0].inbound_cidrs.clear();
    config.trunks[0].outbound_proxy = Some(format!("sip:{AGENT2}"));
    let mut p = Pair::with(config, 10);
    let _leg = p.dial("200");
    let call = p.inbound();
    let req = TransferRequest {
        targets: vec![format!("sip:agent@{AGENT2}")],
        parallel: false,
        ring_timeout: Duration::from_secs(10),
        trunk: Some("carrier".into()),
        hold_message: None,
        hold_music: Vec::new(),
        repeat_interval: None,
        caller_id: None,
    };
    p.cc.handle_flow_request(p.now, call, CallRequest::Transfer(req));
    p.drive();
    let agent_in = p.agents[1].incoming()[0];
    let agent =
        p.cc.calls
            .get(&call)
            .unwrap()
            .transfer
            .as_ref()
            .unwrap()
            .bridged
            .unwrap();
    // The agent's PBX moves the caller on to a colleague (also via AGENT2).
    let target = crate::sip::message::Uri::parse("sip:colleague@pstn.example.com").unwrap();
    p.agents[1].ep.refer(p.now, agent_in, &target).unwrap();
    p.drive();
    let colleague = *p.agents[1].incoming().last().unwrap();
    assert_ne!(colleague, agent_in);
    let bridged =
        p.cc.calls
            .get(&call)
            .unwrap()
            .transfer
            .as_ref()
            .unwrap()
            .bridged
            .unwrap();
    assert_ne!(
        bridged, agent,
        "the colleague's leg is in the agent's place"
    );
    assert_eq!(p.seen.bridges.last(), Some(&(call, bridged)));
    p.advance(3_000);
    // The caller hangs up: the colleague's leg goes with it.
    p.caller.ep.hangup(p.now, _leg).unwrap();
    p.drive();
    p.assert_all_released(3);
}

/// Two calls of ours joined (a `<Dial><Queue>`): both flows hear Bridged
/// naming the other's CallSid and the streams are bridged; a joined call
/// can't be joined again (480 to the asker); HangUpAgent from either ends
/// the join for both and both stay on; joined again, one hanging up
/// leaves the other on the line, told.
#[test]
fn two_calls_join_and_either_ends_it_for_both() {
    let mut p = Pair::new();
    let mut legs = Vec::new();
    let mut calls: Vec<CallId> = Vec::new();
    for _ in 0..3 {
        legs.push(p.dial("200"));
        let new =
            p.cc.calls
                .keys()
                .copied()
                .find(|c| !calls.contains(c))
                .unwrap();
        calls.push(new);
    }
    let (a, b, c) = (calls[0], calls[1], calls[2]);
    let sid = |p: &Pair, call: CallId| p.cc.calls[&call].sid().to_string();
    let (sid_a, sid_b) = (sid(&p, a), sid(&p, b));
    let bridged = |target: &str| {
        CallSignal::Transfer(TransferEvent::Bridged {
            target: target.into(),
        })
    };
    let hung_up = CallSignal::Transfer(TransferEvent::AgentHungUp);
    p.cc.handle_flow_request(p.now, a, CallRequest::Join { with: b });
    p.drive();
    assert_eq!(p.seen.bridges, vec![(a, b)]);
    assert!(p.signals(a).contains(&bridged(&sid_b)));
    assert!(p.signals(b).contains(&bridged(&sid_a)));

    p.cc.handle_flow_request(p.now, c, CallRequest::Join { with: a });
    p.drive();
    assert_eq!(
        p.signals(c),
        vec![CallSignal::Transfer(TransferEvent::Failed { status: 480 })]
    );
    assert_eq!(p.seen.bridges.len(), 1);

    p.cc.handle_flow_request(p.now, b, CallRequest::HangUpAgent);
    p.drive();
    assert!(p.seen.unbridges.contains(&a) && p.seen.unbridges.contains(&b));
    assert!(p.signals(a).contains(&hung_up) && p.signals(b).contains(&hung_up));
    assert!(p.caller.ended().is_empty(), "both are still on");

    p.cc.handle_flow_request(p.now, b, CallRequest::Join { with: a });
    p.drive();
    assert_eq!(p.seen.bridges, vec![(a, b), (b, a)]);
    p.caller.ep.hangup(p.now, legs[0]).unwrap();
    p.drive();
    let told = p.signals(b).iter().filter(|s| **s == hung_up).count();
    assert_eq!(told, 2, "b heard its partner leave");
    assert!(p.cc.calls.contains_key(&b), "b is still on");
    for leg in &legs[1..] {
        p.caller.ep.hangup(p.now, *leg).unwrap();
    }
    p.drive();
    p.assert_all_released(3);
}

/// A node whose registrar serves carol, in a cluster of 127.0.0.0/8.
fn cluster_config() -> Config {
    let mut config = config();
    config.registrar.enabled = true;
    config.registrar.domain = "pbx.example".into();
    config.registrar.cluster_nodes = vec!["127.0.0.0/8".into()];
    config.store.node_id = Some("node-a".into());
    config.users = vec![crate::registrar::UserConfig {
        name: "carol".into(),
        password: Some("carol-pw".into()),
        password_env: None,
        display_name: None,
        tags: Vec::new(),
    }];
    config
}

/// `user`'s registration as node `node` (at `node_addr`) stored it.
fn stored_binding(user: &str, node: &str, node_addr: &str) -> crate::registrar::RegistrationRecord {
    crate::registrar::RegistrationRecord {
        user: user.into(),
        contact: format!("sip:{user}@10.1.1.1:5062"),
        q: 1.0,
        instance: None,
        reg_id: None,
        call_id: "reg".into(),
        cseq: 1,
        expires_at: std::time::SystemTime::now() + Duration::from_secs(300),
        transport: "udp".into(),
        local: node_addr.into(),
        source: "10.1.1.1:5062".into(),
        path: None,
        user_agent: None,
        node: node.into(),
        node_addr: Some(node_addr.into()),
    }
}

/// Another node holds carol's phone: the call is handed to that node (its
/// user at our domain, saying who handed it), never to a node outside
/// `cluster_nodes` (counted, not called). A call another node handed here
/// is never handed on: with no device here, 480.
#[test]
fn a_call_for_a_user_on_another_node_is_handed_only_within_the_cluster() {
    const NODE_B: &str = "127.0.0.1:5130";
    let mut p = Pair::with(cluster_config(), 100);
    p.outside.scripted.insert(addr(NODE_B), (486, Vec::new()));
    let news = crate::registrar::cluster::RegistrarNews::AllRegistrations(vec![
        stored_binding("carol", "node-b", NODE_B),
        stored_binding("carol", "node-x", "192.0.2.7:5060"),
        // Its own rows are the endpoint's, not news.
        stored_binding("carol", "node-a", CROSSLINE),
    ]);
    p.cc.registrar_news(p.now, std::time::SystemTime::now(), news);
    p.dial("carol");
    let to_b: Vec<&String> = p
        .outside
        .raw
        .iter()
        .filter(|(to, _)| *to == addr(NODE_B))
        .map(|(_, text)| text)
        .filter(|text| text.starts_with("INVITE "))
        .collect();
    assert_eq!(to_b.len(), 1, "{:?}", p.outside.requests);
    assert!(
        to_b[0].starts_with("INVITE sip:carol@pbx.example SIP/2.0"),
        "{}",
        to_b[0]
    );
    assert!(
        to_b[0].contains("X-Crossline-Forwarded-By: node-a"),
        "{}",
        to_b[0]
    );
    assert!(
        !p.outside
            .requests
            .iter()
            .any(|(to, _)| to.ip() == "192.0.2.7".parse::<std::net::IpAddr>().unwrap()),
        "never outside the cluster"
    );
    // B said busy: so does the caller.
    assert!(matches!(
        p.caller.ended()[..],
        [EndCause::Rejected { status: 486, .. }]
    ));

    // Handed over to us: B's binding is not rung again.
    let mut spec = invite("carol", "caller", 30_002);
    spec.extra_headers
        .push(("X-Crossline-Forwarded-By".into(), "node-b".into()));
    p.caller.ep.invite(p.now, spec).unwrap();
    p.drive();
    let invites_to_b = p
        .outside
        .requests
        .iter()
        .filter(|(to, m)| *to == addr(NODE_B) && *m == crate::sip::message::Method::Invite)
        .count();
    assert_eq!(invites_to_b, 1, "not handed on");
    assert!(matches!(
        p.caller.ended()[..],
        [_, EndCause::Rejected { status: 480, .. }]
    ));
}
