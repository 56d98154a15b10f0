//! Every transaction and timer path, driven by a fake clock.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::*;
use crate::message::{parse_message, Method, Request, Response, SipMessage};

const INVITE: &str = "INVITE sip:1000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bKabc\r\nMax-Forwards: 70\r\nFrom: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:1000@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

fn invite() -> Request {
    match parse_message(INVITE.as_bytes()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn options() -> Request {
    let mut r = invite();
    r.method = Method::Options;
    r.headers.set("CSeq", "1 OPTIONS");
    r
}

fn response(req: &Request, status: u16) -> Response {
    let mut r = Response::for_request(req, status);
    if status > 100 {
        r.headers.set("To", "<sip:1000@127.0.0.1>;tag=srv");
    }
    r
}

/// Collects the outputs with their timers, like an owner would.
#[derive(Default)]
struct Harness {
    sent: usize,
    timers: Vec<(TimerKind, Instant)>,
    timeouts: usize,
    ack_timeouts: usize,
    terminated: bool,
}

impl Harness {
    fn take(&mut self, out: Vec<TxOutput>) {
        for o in out {
            match o {
                TxOutput::Transmit(_) => self.sent += 1,
                TxOutput::Arm(k, at) => {
                    self.timers.retain(|(kk, _)| *kk != k);
                    self.timers.push((k, at));
                }
                TxOutput::Timeout => self.timeouts += 1,
                TxOutput::AckTimeout => self.ack_timeouts += 1,
                TxOutput::Terminated => self.terminated = true,
            }
        }
    }

    fn deadline(&self, kind: TimerKind) -> Option<Instant> {
        self.timers
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, t)| *t)
    }

    /// Fire the earliest timer; returns it.
    fn pop(&mut self) -> Option<(TimerKind, Instant)> {
        self.timers.sort_by_key(|(_, t)| *t);
        if self.timers.is_empty() {
            None
        } else {
            Some(self.timers.remove(0))
        }
    }
}

fn ms(t0: Instant, at: Instant) -> u128 {
    at.duration_since(t0).as_millis()
}

#[test]
fn client_invite_retransmits_with_timer_a_doubling_then_times_out_with_b() {
    let t0 = Instant::now();
    let (mut tx, out) = ClientInvite::start(t0, invite(), false, TimerConfig::default());
    let mut h = Harness::default();
    h.take(out);
    assert_eq!(h.sent, 1);
    assert_eq!(ms(t0, h.deadline(TimerKind::A).unwrap()), 500);
    assert_eq!(ms(t0, h.deadline(TimerKind::B).unwrap()), 32_000);
    let mut fired_a = Vec::new();
    while let Some((k, at)) = h.pop() {
        if k == TimerKind::A {
            fired_a.push(ms(t0, at));
        }
        let out = tx.on_timer(at, k, at);
        h.take(out);
        if h.terminated {
            break;
        }
    }
    // A at 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s; B at 32 s.
    assert_eq!(fired_a, vec![500, 1500, 3500, 7500, 15500, 31500]);
    assert_eq!(h.sent, 7);
    assert_eq!(h.timeouts, 1);
    assert_eq!(tx.state(), ClientState::Terminated);
}

#[test]
fn client_invite_over_tcp_has_no_timer_a() {
    let t0 = Instant::now();
    let (_tx, out) = ClientInvite::start(t0, invite(), true, TimerConfig::default());
    let mut h = Harness::default();
    h.take(out);
    assert!(h.deadline(TimerKind::A).is_none());
    assert!(h.deadline(TimerKind::B).is_some());
}

#[test]
fn client_invite_provisional_stops_retransmission() {
    let t0 = Instant::now();
    let req = invite();
    let (mut tx, out) = ClientInvite::start(t0, req.clone(), false, TimerConfig::default());
    let mut h = Harness::default();
    h.take(out);
    let (out, deliver) = tx.on_response(t0, &response(&req, 180));
    assert!(deliver);
    h.take(out);
    assert_eq!(tx.state(), ClientState::Proceeding);
    // The stale Timer A entry must be ignored.
    let a = h.deadline(TimerKind::A).unwrap();
    assert!(tx.on_timer(a, TimerKind::A, a).is_empty());
    let b = h.deadline(TimerKind::B).unwrap();
    assert!(tx.on_timer(b, TimerKind::B, b).is_empty());
}

#[test]
fn client_invite_non_2xx_gets_ack_and_absorbs_retransmits_until_timer_d() {
    let t0 = Instant::now();
    let req = invite();
    let (mut tx, out) = ClientInvite::start(t0, req.clone(), false, TimerConfig::default());
    let mut h = Harness::default();
    h.take(out);
    let busy = response(&req, 486);
    let (out, deliver) = tx.on_response(t0, &busy);
    assert!(deliver);
    // The ACK is built by the transaction, with the response's To tag.
    let ack = out
        .iter()
        .find_map(|o| match o {
            TxOutput::Transmit(b) => Some(b.clone()),
            _ => None,
        })
        .unwrap();
    let ack = match parse_message(&ack).unwrap() {
        SipMessage::Request(r) => r,
        _ => panic!(),
    };
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.headers.to().unwrap().tag(), Some("srv"));
    assert_eq!(ack.headers.cseq().unwrap().seq, 1);
    assert_eq!(
        ack.headers.top_via().unwrap().branch(),
        Some("z9hG4bKabc"),
        "same branch as the INVITE"
    );
    h.take(out);
    assert_eq!(tx.state(), ClientState::Completed);
    // Retransmitted 486: ACK again, not delivered.
    let (out, deliver) = tx.on_response(t0, &busy);
    assert!(!deliver);
    assert!(matches!(out.as_slice(), [TxOutput::Transmit(_)]));
    let d = h.deadline(TimerKind::D).unwrap();
    assert_eq!(ms(t0, d), 32_000);
    h.take(tx.on_timer(d, TimerKind::D, d));
    assert!(h.terminated);
}

#[test]
fn client_invite_2xx_enters_accepted_and_passes_retransmits_up() {
    let t0 = Instant::now();
    let req = invite();
    let (mut tx, _) = ClientInvite::start(t0, req.clone(), false, TimerConfig::default());
    let ok = response(&req, 200);
    let (out, deliver) = tx.on_response(t0, &ok);
    assert!(deliver);
    assert_eq!(tx.state(), ClientState::Accepted);
    let mut h = Harness::default();
    h.take(out);
    assert_eq!(h.sent, 0, "the TU sends the 2xx ACK, not the transaction");
    let (_, deliver) = tx.on_response(t0, &ok);
    assert!(deliver, "2xx retransmission goes to the TU to re-ACK");
    let m = h.deadline(TimerKind::M).unwrap();
    h.take(tx.on_timer(m, TimerKind::M, m));
    assert!(h.terminated);
}

#[test]
fn client_non_invite_timer_e_caps_at_t2_and_f_times_out() {
    let t0 = Instant::now();
    let (mut tx, out) = ClientNonInvite::start(t0, options(), false, TimerConfig::default());
    let mut h = Harness::default();
    h.take(out);
    let mut fired = Vec::new();
    while let Some((k, at)) = h.pop() {
        if k == TimerKind::E {
            fired.push(ms(t0, at));
        }
        let out = tx.on_timer(at, k, at);
        h.take(out);
        if h.terminated {
            break;
        }
    }
    // 0.5, 1.5, 3.5, 7.5, then every 4 s (T2) until F at 32 s.
    assert_eq!(&fired[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
    assert_eq!(*fired.last().unwrap(), 31500);
    assert_eq!(h.timeouts, 1);
}

#[test]
fn client_non_invite_proceeding_retransmits_at_t2_then_completes_with_k() {
    let t0 = Instant::now();
    let req = options();
    let (mut tx, out) = ClientNonInvite::start(t0, req.clone(), false, TimerConfig::default());
    let mut h = Harness::default();
    h.take(out);
    let (out, deliver) = tx.on_response(t0, &response(&req, 100));
    assert!(deliver);
    h.take(out);
    let e = h.deadline(TimerKind::E).unwrap();
    h.take(tx.on_timer(e, TimerKind::E, e));
    assert_eq!(
        h.deadline(TimerKind::E).unwrap() - e,
        Duration::from_secs(4)
    );
    let t1 = t0 + Duration::from_secs(1);
    let (out, deliver) = tx.on_response(t1, &response(&req, 200));
    assert!(deliver);
    h.take(out);
    assert_eq!(tx.state(), ClientState::Completed);
    let k = h.deadline(TimerKind::K).unwrap();
    assert_eq!(k - t1, Duration::from_secs(5), "Timer K = T4");
    let (_, deliver) = tx.on_response(t1, &response(&req, 200));
    assert!(!deliver, "retransmitted final is absorbed");
    h.take(tx.on_timer(k, TimerKind::K, k));
    assert!(h.terminated);
}

#[test]
fn server_invite_absorbs_retransmits_and_resends_provisional() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ServerInvite::new(false, TimerConfig::default());
    let trying = Bytes::from(response(&req, 100).to_bytes());
    let out = tx.respond(t0, 100, trying.clone());
    assert_eq!(out, vec![TxOutput::Transmit(trying.clone())]);
    assert_eq!(tx.on_retransmission(), vec![TxOutput::Transmit(trying)]);
    let ringing = Bytes::from(response(&req, 180).to_bytes());
    tx.respond(t0, 180, ringing.clone());
    assert_eq!(tx.on_retransmission(), vec![TxOutput::Transmit(ringing)]);
}

#[test]
fn server_invite_non_2xx_retransmits_with_g_until_ack_then_i() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ServerInvite::new(false, TimerConfig::default());
    let mut h = Harness::default();
    h.take(tx.respond(t0, 100, Bytes::from(response(&req, 100).to_bytes())));
    h.sent = 0;
    h.take(tx.respond(t0, 486, Bytes::from(response(&req, 486).to_bytes())));
    assert_eq!(tx.state(), ServerState::Completed);
    assert_eq!(ms(t0, h.deadline(TimerKind::G).unwrap()), 500);
    assert_eq!(ms(t0, h.deadline(TimerKind::H).unwrap()), 32_000);
    let mut g_times = Vec::new();
    for _ in 0..5 {
        let (k, at) = h.pop().unwrap();
        assert_eq!(k, TimerKind::G);
        g_times.push(ms(t0, at));
        h.take(tx.on_timer(at, k, at));
    }
    // G doubles up to T2.
    assert_eq!(g_times, vec![500, 1500, 3500, 7500, 11500]);
    assert_eq!(h.sent, 6);
    let now = t0 + Duration::from_millis(12_000);
    h.take(tx.on_ack(now));
    assert_eq!(tx.state(), ServerState::Confirmed);
    let i = h.deadline(TimerKind::I).unwrap();
    assert_eq!(i - now, Duration::from_secs(5));
    // Stale G after the ACK does nothing.
    let g = h.deadline(TimerKind::G).unwrap();
    assert!(tx.on_timer(g, TimerKind::G, g).is_empty());
    h.take(tx.on_timer(i, TimerKind::I, i));
    assert!(h.terminated);
    assert_eq!(h.ack_timeouts, 0);
}

#[test]
fn server_invite_refusal_before_any_1xx_is_sent_once_per_request() {
    // No amplification: a spoofed INVITE draws one answer; the real
    // client, still retransmitting (no 1xx seen), gets it again each time.
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ServerInvite::new(false, TimerConfig::default());
    let mut h = Harness::default();
    let refusal = Bytes::from(response(&req, 403).to_bytes());
    h.take(tx.respond(t0, 403, refusal.clone()));
    assert_eq!(h.sent, 1);
    assert!(h.deadline(TimerKind::G).is_none(), "no Timer G");
    assert_eq!(ms(t0, h.deadline(TimerKind::H).unwrap()), 32_000);
    assert_eq!(tx.on_retransmission(), vec![TxOutput::Transmit(refusal)]);
    h.take(tx.on_ack(t0 + Duration::from_millis(600)));
    assert_eq!(tx.state(), ServerState::Confirmed);
}

#[test]
fn server_invite_timer_h_reports_missing_ack() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ServerInvite::new(false, TimerConfig::default());
    let mut h = Harness::default();
    h.take(tx.respond(t0, 404, Bytes::from(response(&req, 404).to_bytes())));
    while let Some((k, at)) = h.pop() {
        h.take(tx.on_timer(at, k, at));
        if h.terminated {
            assert_eq!(k, TimerKind::H);
            assert_eq!(ms(t0, at), 32_000);
            break;
        }
    }
    assert_eq!(h.ack_timeouts, 1);
    assert_eq!(tx.state(), ServerState::Terminated);
}

#[test]
fn server_invite_reliable_terminates_on_ack() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ServerInvite::new(true, TimerConfig::default());
    let mut h = Harness::default();
    h.take(tx.respond(t0, 486, Bytes::from(response(&req, 486).to_bytes())));
    assert!(h.deadline(TimerKind::G).is_none());
    h.take(tx.on_ack(t0));
    assert!(h.terminated);
}

#[test]
fn server_invite_2xx_goes_to_accepted_then_l() {
    let t0 = Instant::now();
    let req = invite();
    let mut tx = ServerInvite::new(false, TimerConfig::default());
    let mut h = Harness::default();
    h.take(tx.respond(t0, 200, Bytes::from(response(&req, 200).to_bytes())));
    assert_eq!(tx.state(), ServerState::Accepted);
    assert!(
        tx.on_retransmission().is_empty(),
        "INVITE retransmits absorbed"
    );
    let l = h.deadline(TimerKind::L).unwrap();
    assert_eq!(ms(t0, l), 32_000);
    h.take(tx.on_timer(l, TimerKind::L, l));
    assert!(h.terminated);
}

#[test]
fn server_non_invite_resends_final_until_j() {
    let t0 = Instant::now();
    let req = options();
    let mut tx = ServerNonInvite::new(false, TimerConfig::default());
    assert!(tx.on_retransmission().is_empty(), "Trying absorbs");
    let ok = Bytes::from(response(&req, 200).to_bytes());
    let mut h = Harness::default();
    h.take(tx.respond(t0, 200, ok.clone()));
    assert_eq!(tx.state(), ServerState::Completed);
    assert_eq!(tx.on_retransmission(), vec![TxOutput::Transmit(ok)]);
    let j = h.deadline(TimerKind::J).unwrap();
    assert_eq!(ms(t0, j), 32_000);
    h.take(tx.on_timer(j, TimerKind::J, j));
    assert!(h.terminated);
}

#[test]
fn server_non_invite_reliable_terminates_at_once() {
    let t0 = Instant::now();
    let req = options();
    let mut tx = ServerNonInvite::new(true, TimerConfig::default());
    let out = tx.respond(t0, 200, Bytes::from(response(&req, 200).to_bytes()));
    assert!(out.contains(&TxOutput::Terminated));
}

#[test]
fn custom_t1_scales_every_timer() {
    let t0 = Instant::now();
    let timers = TimerConfig {
        t1: Duration::from_millis(100),
        t2: Duration::from_millis(400),
        t4: Duration::from_millis(500),
    };
    let (_tx, out) = ClientInvite::start(t0, invite(), false, timers);
    let mut h = Harness::default();
    h.take(out);
    assert_eq!(ms(t0, h.deadline(TimerKind::A).unwrap()), 100);
    assert_eq!(ms(t0, h.deadline(TimerKind::B).unwrap()), 6_400);
}
