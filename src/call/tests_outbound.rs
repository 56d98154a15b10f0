//! Calls we place, in the same in-memory pair: destinations by name
//! (call control asks, the test answers as DNS would), failover on 503,
//! silence and transport errors with back-off, 3xx redirects, 6xx for a
//! whole fork, and registrars by name. Addresses that are no peer either
//! answer every request with a scripted status, or say nothing at all.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::*;
use crate::dns::{Candidate, Resolution, ResolveError};
use crate::sip::endpoint::{RegistrationState, Transmit};
use crate::sip::message::{parse_message, Method, Response, SipMessage};

/// A target that answers 503 (or what its script says).
const BUSY: &str = "127.0.0.1:5100";
const BUSY2: &str = "127.0.0.1:5101";
/// A target that never answers.
const SILENT: &str = "127.0.0.1:5111";
const REGISTRAR: &str = "127.0.0.1:5120";

/// What lies outside the pair: DNS, and addresses that are no peer.
#[derive(Default)]
pub(super) struct Outside {
    /// host → its answer; hosts not here don't exist.
    zone: HashMap<String, Result<Resolution, ResolveError>>,
    /// Keep resolutions waiting instead of answering.
    hold_dns: bool,
    held: Vec<ResolveRequest>,
    /// Hosts call control asked for, in order.
    asked: Vec<String>,
    /// Addresses that answer every request (but ACK) with a status and
    /// extra headers.
    pub(super) scripted: HashMap<SocketAddr, (u16, Vec<(String, String)>)>,
    /// Requests that reached an address that is no peer.
    pub(super) requests: Vec<(SocketAddr, Method)>,
    /// The same requests as sent.
    pub(super) raw: Vec<(SocketAddr, String)>,
    replies: Vec<(SocketAddr, Vec<u8>)>,
}

impl Outside {
    pub(super) fn receive(&mut self, t: &Transmit) {
        let Ok(SipMessage::Request(req)) = parse_message(&t.payload) else {
            return;
        };
        self.requests.push((t.peer.remote, req.method.clone()));
        self.raw.push((
            t.peer.remote,
            String::from_utf8_lossy(&t.payload).into_owned(),
        ));
        if req.method == Method::Ack {
            return;
        }
        if let Some((status, headers)) = self.scripted.get(&t.peer.remote) {
            let mut resp = Response::for_request(&req, *status);
            if let Some(to) = resp.headers.get("To").map(str::to_string) {
                resp.headers.set("To", format!("{to};tag=scripted"));
            }
            for (name, value) in headers {
                resp.headers.push(name, value.clone());
            }
            self.replies.push((t.peer.remote, resp.to_bytes()));
        }
    }

    fn script(&mut self, at: &str, status: u16, headers: &[(&str, &str)]) {
        self.scripted.insert(
            addr(at),
            (
                status,
                headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        );
    }

    fn sent(&self, at: &str, method: Method) -> usize {
        self.requests
            .iter()
            .filter(|(to, m)| *to == addr(at) && *m == method)
            .count()
    }

    fn answer(&self, host: &str) -> Result<Resolution, ResolveError> {
        self.zone
            .get(host)
            .cloned()
            .unwrap_or_else(|| Err(ResolveError::NotFound(host.to_string())))
    }
}

/// SRV-like candidates: (priority, weight, address).
fn srv(entries: &[(u16, u16, &str)]) -> Result<Resolution, ResolveError> {
    Ok(Resolution {
        candidates: entries
            .iter()
            .map(|(priority, weight, at)| {
                let a = addr(at);
                Candidate {
                    set: 0,
                    transport: Transport::Udp,
                    priority: *priority,
                    weight: *weight,
                    port: a.port(),
                    addrs: vec![a.ip()],
                }
            })
            .collect(),
    })
}

impl Pair {
    /// Scripted answers to crossline, and DNS answers: true if anything moved.
    pub(super) fn outside_replies(&mut self) -> bool {
        let mut moved = false;
        for (from, bytes) in std::mem::take(&mut self.outside.replies) {
            moved = true;
            self.cc
                .handle_datagram(self.now, addr(CROSSLINE), from, &bytes);
        }
        while let Some(req) = self.cc.poll_resolve() {
            moved = true;
            self.outside.asked.push(req.query.host.clone());
            if self.outside.hold_dns {
                self.outside.held.push(req);
                continue;
            }
            let answer = self.outside.answer(&req.query.host);
            self.cc.handle_resolved(self.now, req.id, answer);
        }
        moved
    }

    /// Answer the resolutions held so far.
    fn release_dns(&mut self) {
        self.outside.hold_dns = false;
        for req in std::mem::take(&mut self.outside.held) {
            let answer = self.outside.answer(&req.query.host);
            self.cc.handle_resolved(self.now, req.id, answer);
        }
        self.drive();
    }

    fn bridged(&self, call: CallId) -> bool {
        self.signals(call)
            .iter()
            .any(|s| matches!(s, CallSignal::Transfer(TransferEvent::Bridged { .. })))
    }

    fn failed(&self, call: CallId) -> Option<u16> {
        self.signals(call).iter().find_map(|s| match s {
            CallSignal::Transfer(TransferEvent::Failed { status }) => Some(*status),
            _ => None,
        })
    }

    /// A caller calls, is transferred to `target`; returns the caller's leg
    /// and crossline's side of it.
    fn call_and_transfer(&mut self, target: &str) -> (CallId, CallId) {
        let leg = self.dial("200");
        let call = self.inbound();
        self.transfer_to(call, &[target], false, 60);
        (leg, call)
    }

    fn hang_up_caller(&mut self, leg: CallId) {
        self.caller.ep.hangup(self.now, leg).unwrap();
        self.drive();
    }
}

#[test]
fn a_name_resolves_and_a_503_fails_over_then_keeps_its_retry_after() {
    let mut p = Pair::new();
    p.outside
        .zone
        .insert("pbx.example".into(), srv(&[(10, 0, BUSY), (20, 0, AGENT)]));
    p.outside.script(BUSY, 503, &[("Retry-After", "60")]);
    let (leg, call) = p.call_and_transfer("sip:agent@pbx.example");
    assert_eq!(p.outside.asked, ["pbx.example"]);
    assert_eq!(p.outside.sent(BUSY, Method::Invite), 1, "tried first");
    assert!(p.bridged(call), "the second target answered");
    assert_eq!(p.agents[0].incoming().len(), 1);
    p.hang_up_caller(leg);

    // For the next minute the 503'd target is skipped.
    p.advance(59_000);
    let (leg, call) = p.call_and_transfer("sip:agent@pbx.example");
    assert!(p.bridged(call));
    assert_eq!(p.outside.sent(BUSY, Method::Invite), 1, "backed off");
    p.hang_up_caller(leg);

    // Then it is tried again.
    p.advance(2_000);
    let (leg, call) = p.call_and_transfer("sip:agent@pbx.example");
    assert!(p.bridged(call));
    assert_eq!(p.outside.sent(BUSY, Method::Invite), 2, "back in the list");
    p.hang_up_caller(leg);
    p.assert_all_released(6);
    assert_eq!(p.agents[0].incoming().len(), 3);
}

#[test]
fn a_target_that_never_answers_fails_over_after_failover_timeout_ms() {
    let mut p = Pair::new();
    p.outside.zone.insert(
        "pbx.example".into(),
        srv(&[(10, 0, SILENT), (20, 0, AGENT)]),
    );
    let (leg, call) = p.call_and_transfer("sip:agent@pbx.example");
    assert!(p.outside.sent(SILENT, Method::Invite) >= 1);
    // Not even 100 Trying within [sip] failover_timeout_ms (4 s): next.
    p.advance(3_900);
    assert_eq!(p.agents[0].incoming().len(), 0);
    p.advance(200);
    assert!(p.bridged(call));
    assert_eq!(p.cc.calls(), 2, "one leg, moved to its new attempt");
    p.hang_up_caller(leg);
    p.assert_all_released(2);
}

#[test]
fn without_failover_timeout_ms_a_silent_target_waits_for_timer_b() {
    let mut config = config();
    config.sip.failover_timeout_ms = 0;
    let mut p = Pair::with(config, 10);
    p.outside.zone.insert(
        "pbx.example".into(),
        srv(&[(10, 0, SILENT), (20, 0, AGENT)]),
    );
    let (leg, call) = p.call_and_transfer("sip:agent@pbx.example");
    // Timer B: 64 × T1 = 32 s of retransmissions, then the next target.
    p.advance(31_000);
    assert_eq!(p.agents[0].incoming().len(), 0);
    p.advance(2_000);
    assert!(p.bridged(call));
    p.hang_up_caller(leg);
    p.assert_all_released(2);
}

#[test]
fn a_target_that_rings_is_not_given_up_on() {
    let mut p = Pair::new();
    p.agents[1].answers = false;
    p.outside.zone.insert(
        "pbx.example".into(),
        srv(&[(10, 0, AGENT2), (20, 0, AGENT)]),
    );
    let (leg, _call) = p.call_and_transfer("sip:agent@pbx.example");
    p.advance(10_000);
    assert_eq!(p.agents[1].incoming().len(), 1, "ringing");
    assert_eq!(p.agents[0].incoming().len(), 0, "never moved on");
    p.hang_up_caller(leg);
    p.advance(1_000);
    p.assert_all_released(2);
}

#[test]
fn a_transport_error_fails_over_at_once() {
    let mut p = Pair::new();
    p.outside.zone.insert(
        "pbx.example".into(),
        srv(&[(10, 0, SILENT), (20, 0, AGENT)]),
    );
    let (leg, call) = p.call_and_transfer("sip:agent@pbx.example");
    p.cc.transport_failed(p.now, Transport::Udp, addr(SILENT));
    p.drive();
    assert!(p.bridged(call), "no waiting for Timer B");
    p.hang_up_caller(leg);
    p.assert_all_released(2);
}

#[test]
fn a_name_that_does_not_resolve_fails_the_transfer_with_503_and_a_record() {
    let mut p = Pair::new();
    p.outside.zone.insert(
        "loop.example".into(),
        Err(ResolveError::Loop("loop.example".into())),
    );
    for host in ["nowhere.example", "loop.example"] {
        let (leg, call) = p.call_and_transfer(&format!("sip:agent@{host}"));
        assert_eq!(p.failed(call), Some(503), "{host}");
        p.hang_up_caller(leg);
    }
    p.assert_all_released(4);
    let legs: Vec<_> = p
        .seen
        .records
        .iter()
        .filter(|r| r.direction == "outbound")
        .map(|r| (r.outcome.as_str(), r.sip_status))
        .collect();
    assert_eq!(legs, [("rejected", Some(503)), ("rejected", Some(503))]);
}

#[test]
fn a_callback_through_a_trunk_by_name_resolves_its_proxy_and_fails_with_503_when_it_cannot() {
    let mut config = config();
    config.trunks.push(crate::config::TrunkConfig {
        name: "pstn".into(),
        outbound_proxy: Some("sip:carrier.example".into()),
        ..Default::default()
    });
    let mut p = Pair::with(config, 10);
    let originate = |id: &str| Originate {
        id: id.into(),
        phone: "+15551234567".into(),
        flow: Some("pbx".into()),
        target: None,
        vars: HashMap::new(),
    };
    p.cc.originate(p.now, originate("cb-dns"));
    p.drive();
    assert_eq!(p.outside.asked, ["carrier.example"]);
    assert_eq!(
        p.seen.callbacks.last().map(|(_, s)| s.clone()),
        Some(Progress::Ended {
            sip_status: Some(503),
            reason: "carrier.example: no NAPTR, SRV or A/AAAA records".into()
        })
    );
    p.outside
        .zone
        .insert("carrier.example".into(), srv(&[(0, 0, AGENT)]));
    p.cc.originate(p.now, originate("cb-ok"));
    p.drive();
    assert_eq!(p.agents[0].incoming().len(), 1, "dialled through the proxy");
    assert_eq!(
        p.seen.callbacks.last().map(|(_, s)| s.clone()),
        Some(Progress::Answered)
    );
    let visitor = p.agents[0].incoming()[0];
    p.agents[0].ep.hangup(p.now, visitor).unwrap();
    p.drive();
    p.assert_all_released(2);
}

#[test]
fn hanging_up_while_the_destination_resolves_ends_the_leg_here() {
    let mut p = Pair::new();
    p.outside.hold_dns = true;
    p.outside
        .zone
        .insert("pbx.example".into(), srv(&[(0, 0, AGENT)]));
    let (leg, _call) = p.call_and_transfer("sip:agent@pbx.example");
    assert_eq!(p.cc.calls(), 2, "the leg waits on DNS");
    p.hang_up_caller(leg);
    assert_eq!(p.cc.calls(), 0, "and ends with its caller");
    p.release_dns();
    assert_eq!(p.agents[0].incoming().len(), 0, "nothing dialled after all");
    p.assert_all_released(2);
}

#[test]
fn a_302_is_followed_to_its_contact_and_a_redirect_loop_is_not() {
    let mut p = Pair::new();
    let to_agent = format!("<sip:agent@{AGENT}>;q=0.9");
    p.outside.script(
        BUSY,
        302,
        &[
            ("Contact", "<sip:agent@127.0.0.1:5199>;q=0.1"),
            ("Contact", &to_agent),
        ],
    );
    let (leg, call) = p.call_and_transfer(&format!("sip:agent@{BUSY}"));
    assert!(p.bridged(call), "best q first: the agent");
    p.hang_up_caller(leg);

    // BUSY sends to BUSY2 and BUSY2 back to BUSY: one hop, then a loop.
    p.outside
        .script(BUSY, 302, &[("Contact", &format!("<sip:agent@{BUSY2}>"))]);
    p.outside
        .script(BUSY2, 302, &[("Contact", &format!("<sip:agent@{BUSY}>"))]);
    let (leg, call) = p.call_and_transfer(&format!("sip:agent@{BUSY}"));
    assert_eq!(p.failed(call), Some(302));
    assert_eq!(p.outside.sent(BUSY2, Method::Invite), 1);
    assert_eq!(p.outside.sent(BUSY, Method::Invite), 2, "once per call");
    p.hang_up_caller(leg);
    p.assert_all_released(4);
}

#[test]
fn a_603_from_one_parallel_target_ends_the_whole_transfer() {
    let mut p = Pair::new();
    p.agents[0].answers = false;
    p.agents[1].refuses = Some(603);
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT, AGENT2, BUSY], true);
    p.advance(1_000);
    assert_eq!(p.failed(call), Some(603));
    assert!(
        matches!(p.agents[0].ended()[..], [EndCause::Cancelled]),
        "the ringing agent is cancelled: {:?}",
        p.agents[0].ended()
    );
    assert!(
        p.outside.sent(BUSY, Method::Invite) >= 1,
        "placed before the 603"
    );
    p.hang_up_caller(leg);
    // The silent one's INVITE ends at Timer B (no CANCEL before a 1xx).
    p.advance(40_000);
    p.assert_all_released(4);

    // In sequence, a 603 stops the targets after it.
    p.agents[0].answers = true;
    let leg = p.dial("200");
    let call = p.inbound();
    p.transfer(call, &[AGENT2, AGENT], false);
    assert_eq!(p.failed(call), Some(603));
    assert_eq!(p.agents[0].incoming().len(), 1, "never rung this time");
    p.hang_up_caller(leg);
    p.assert_all_released(6);
}

#[test]
fn a_registrar_by_name_registers_at_its_first_target_and_moves_on_when_it_is_silent() {
    let mut config = config();
    config
        .registrations
        .push(crate::config::RegistrationConfig {
            registrar: "sip:registrar.example".into(),
            aor: "sip:crossline@registrar.example".into(),
            username: None,
            password: None,
            password_env: None,
            expires: 300,
            transport: None,
        });
    let mut p = Pair::with(config, 10);
    p.outside.zone.insert(
        "registrar.example".into(),
        srv(&[(10, 0, SILENT), (20, 0, REGISTRAR)]),
    );
    p.outside.script(REGISTRAR, 200, &[("Expires", "300")]);
    p.cc.start_registrations(p.now);
    p.drive();
    assert_eq!(p.outside.asked, ["registrar.example"]);
    assert!(p.outside.sent(SILENT, Method::Register) >= 1);
    assert_eq!(
        p.cc.registration_state(0),
        Some(&RegistrationState::Registering)
    );
    // Timer F (32 s), then the retry goes to the next target.
    p.advance(40_000);
    assert_eq!(p.outside.sent(REGISTRAR, Method::Register), 1);
    assert_eq!(
        p.cc.registration_state(0),
        Some(&RegistrationState::Registered { expires: 300 })
    );
}

#[test]
fn a_lone_target_that_failed_is_still_tried_but_one_that_asked_to_wait_is_not() {
    let mut p = Pair::new();
    let agent = format!("sip:agent@{AGENT}");
    p.agents[0].refuses = Some(503);
    let (leg, call) = p.call_and_transfer(&agent);
    assert_eq!(p.failed(call), Some(503));
    p.hang_up_caller(leg);
    // It rests, but with nothing else to try it is tried again at once.
    p.agents[0].refuses = None;
    let (leg, call) = p.call_and_transfer(&agent);
    assert!(p.bridged(call));
    p.hang_up_caller(leg);
    // A Retry-After is honoured: the next call fails without an INVITE.
    p.outside.script(BUSY, 503, &[("Retry-After", "30")]);
    let busy = format!("sip:agent@{BUSY}");
    for _ in 0..2 {
        let (leg, call) = p.call_and_transfer(&busy);
        assert_eq!(p.failed(call), Some(503));
        p.hang_up_caller(leg);
    }
    assert_eq!(
        p.outside.sent(BUSY, Method::Invite),
        1,
        "asked to wait 30 s"
    );
    p.advance(31_000);
    let (leg, _) = p.call_and_transfer(&busy);
    p.hang_up_caller(leg);
    assert_eq!(p.outside.sent(BUSY, Method::Invite), 2, "then tried again");
    // Four legs placed (the one refused at once never was), five callers.
    p.assert_all_released(9);
}

fn trunk(name: &str, at: &str, interval_secs: u64) -> crate::config::TrunkConfig {
    crate::config::TrunkConfig {
        name: name.into(),
        outbound_proxy: Some(format!("sip:{at}")),
        caller_id: Some(format!("+1555{name}")),
        options_interval_secs: interval_secs,
        options_failures_down: 2,
        options_successes_up: 2,
        ..Default::default()
    }
}

/// Callbacks through the group "pstn" of `trunks`.
fn grouped(trunks: Vec<crate::config::TrunkConfig>) -> Pair {
    let mut config = config();
    config.trunk_groups.push(crate::config::TrunkGroupConfig {
        name: "pstn".into(),
        trunks: trunks.iter().map(|t| t.name.clone()).collect(),
        strategy: crate::config::GroupStrategy::Failover,
    });
    config.trunks = trunks;
    config.callbacks.trunk = Some("pstn".into());
    Pair::with(config, 10)
}

fn callback(p: &mut Pair, id: &str) {
    p.cc.originate(
        p.now,
        Originate {
            id: id.into(),
            phone: "+15551234567".into(),
            flow: Some("pbx".into()),
            target: None,
            vars: HashMap::new(),
        },
    );
    p.drive();
}

/// The one callback so far reached the first agent, and it answered.
fn assert_answered_by_the_agent(p: &Pair, how: &str) {
    assert_eq!(p.agents[0].incoming().len(), 1, "{how}");
    assert_eq!(
        p.seen.callbacks.last().map(|(_, s)| s.clone()),
        Some(Progress::Answered)
    );
}

fn trunk_states(p: &Pair) -> Vec<&'static str> {
    p.cc.trunk_health()
        .snapshot(p.now, std::time::SystemTime::now())
        .iter()
        .map(|t| t.state.as_str())
        .collect()
}

#[test]
fn a_silent_trunk_goes_down_and_calls_through_its_group_skip_it_until_it_answers_again() {
    let mut p = grouped(vec![trunk("dead", SILENT, 1), trunk("good", AGENT, 1)]);
    p.cc.start_trunk_probes(p.now);
    p.drive();
    assert_eq!(
        p.outside.sent(SILENT, Method::Options),
        1,
        "probed at start"
    );
    assert_eq!(
        trunk_states(&p),
        ["unknown", "up"],
        "the agent answered 200"
    );
    // Each probe may wait an interval; the second unanswered one downs it.
    p.advance(2_100);
    assert_eq!(trunk_states(&p), ["down", "up"]);
    assert!(p.outside.sent(SILENT, Method::Options) >= 2);

    callback(&mut p, "cb-skip");
    assert_eq!(p.outside.sent(SILENT, Method::Invite), 0, "passed over");
    assert_answered_by_the_agent(&p, "straight to the next trunk");
    let visitor = p.agents[0].incoming()[0];
    p.agents[0].ep.hangup(p.now, visitor).unwrap();
    p.drive();
    let record = p.seen.records.last().unwrap();
    assert_eq!(record.trunk.as_deref(), Some("good"));
    assert_eq!(record.caller, "+1555good", "the trunk's caller ID");

    // It answers again (any final answer counts): up after two in a row.
    p.outside.script(SILENT, 404, &[]);
    // Every OPTIONS from now on is answered at once.
    let before = p.outside.sent(SILENT, Method::Options);
    let answered = |p: &Pair| p.outside.sent(SILENT, Method::Options) - before;
    while answered(&p) < 1 {
        p.advance(100);
    }
    assert_eq!(trunk_states(&p), ["down", "up"], "one answer of two");
    while answered(&p) < 2 {
        p.advance(100);
    }
    assert_eq!(trunk_states(&p), ["up", "up"]);
    // A 503 is an overloaded peer: a failure.
    p.outside.script(SILENT, 503, &[]);
    p.advance(2_000);
    assert_eq!(trunk_states(&p), ["down", "up"]);
}

#[test]
fn a_503_from_a_groups_first_trunk_moves_the_call_to_the_next() {
    let mut p = grouped(vec![trunk("busy", BUSY, 0), trunk("good", AGENT, 0)]);
    p.outside.script(BUSY, 503, &[]);
    p.cc.start_trunk_probes(p.now);
    p.drive();
    assert_eq!(trunk_states(&p), ["unmonitored", "unmonitored"]);
    assert_eq!(p.outside.sent(BUSY, Method::Options), 0, "no keep-alive");
    callback(&mut p, "cb-failover");
    assert_eq!(p.outside.sent(BUSY, Method::Invite), 1);
    assert_answered_by_the_agent(&p, "then the group's next trunk");
}

#[test]
fn a_call_through_a_trunk_that_is_down_fails_at_once_with_503() {
    let mut config = config();
    config.trunks.push(trunk("dead", SILENT, 1));
    config.callbacks.trunk = Some("dead".into());
    let mut p = Pair::with(config, 10);
    p.cc.start_trunk_probes(p.now);
    p.advance(2_100);
    assert_eq!(trunk_states(&p), ["down"]);
    let options = p.outside.sent(SILENT, Method::Options);
    callback(&mut p, "cb-down");
    assert_eq!(p.outside.sent(SILENT, Method::Invite), 0);
    assert_eq!(p.outside.sent(SILENT, Method::Options), options);
    assert_eq!(
        p.seen.callbacks.last().map(|(_, s)| s.clone()),
        Some(Progress::Ended {
            sip_status: Some(503),
            reason: "trunk down".into()
        })
    );
}

#[test]
fn transfers_through_a_round_robin_group_take_turns_and_fail_over() {
    let mut p = grouped(vec![trunk("busy", BUSY, 0), trunk("good", AGENT, 0)]);
    p.outside.script(BUSY, 503, &[]);
    let transfer = |p: &mut Pair| {
        let leg = p.dial("200");
        let call = p.inbound();
        let req = TransferRequest {
            targets: vec!["sip:agent@pbx.example".into()],
            parallel: false,
            ring_timeout: Duration::from_secs(60),
            trunk: Some("pstn".into()),
            hold_message: None,
            hold_music: Vec::new(),
            repeat_interval: None,
            caller_id: None,
        };
        p.cc.handle_flow_request(p.now, call, CallRequest::Transfer(req));
        p.drive();
        assert!(p.bridged(call), "the agent behind a trunk of the group");
        p.hang_up_caller(leg);
    };
    let strategy = crate::config::GroupStrategy::RoundRobin;
    p.cc.config.trunk_groups[0].strategy = strategy;
    // First turn: "busy" first; its 503 moves the leg to "good".
    transfer(&mut p);
    assert_eq!(p.outside.sent(BUSY, Method::Invite), 1);
    assert!(p.outside.asked.is_empty(), "numeric proxies: no DNS");
    // Second turn: "good" first.
    transfer(&mut p);
    assert_eq!(p.outside.sent(BUSY, Method::Invite), 1);
    // Third: "busy" first again, but its target rests after the 503 and
    // another trunk is left: that one is taken.
    transfer(&mut p);
    assert_eq!(p.outside.sent(BUSY, Method::Invite), 1);
    assert_eq!(p.agents[0].incoming().len(), 3);
    let trunks: Vec<Option<&str>> = p
        .seen
        .records
        .iter()
        .filter(|r| r.direction == "outbound")
        .map(|r| r.trunk.as_deref())
        .collect();
    assert_eq!(
        trunks,
        [Some("good"); 3],
        "records name the trunk that carried it"
    );
    p.assert_all_released(6);
}
