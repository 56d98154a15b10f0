//! Provisional responses past 100 Trying: reliable ones (RFC 3262) both
//! ways, and the early media a provisional answer sets up.
//!
//! As UAS we send a 18x reliably when the INVITE supports or requires
//! `100rel`: with an RSeq, retransmitted from T1 doubling until its PRACK,
//! one at a time, and refuse the INVITE with a 500 when no PRACK comes
//! within 64*T1. A 2xx waits for the PRACK of an 18x that carried SDP
//! (§3). As UAC we PRACK each reliable 18x in order (§4).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::calls::{CallRole, CallState, CallTimer};
use super::util::response_destination;
use super::{CallId, Endpoint, EndpointError, Event, Peer, ServerKey, TimerTarget, TxOwner};
use crate::dialog::Dialog;
use crate::message::{Method, Request, Response};

/// One call's reliable provisionals.
#[derive(Default)]
pub(super) struct Reliable {
    /// UAS: the RSeq of our next reliable provisional.
    next_rseq: u32,
    /// UAS: sent and not yet PRACKed.
    unacked: Option<Unacked>,
    /// UAS: waiting for `unacked` to be PRACKed.
    queued: VecDeque<Response>,
    /// UAS: the 2xx held back until an 18x with SDP is PRACKed, and
    /// whether its ACK carries the answer.
    held_2xx: Option<(Response, bool)>,
    /// UAS: the RSeq of an 18x the 2xx overtook: a PRACK for it that was
    /// already on its way is still answered 200, not 481.
    overtaken: Option<u32>,
    /// UAC: the RSeq we PRACKed last.
    last_acked: Option<u32>,
}

struct Unacked {
    rseq: u32,
    bytes: Bytes,
    peer: Peer,
    interval: Duration,
    next_at: Instant,
    give_up: Instant,
    /// It carried SDP: the 2xx must wait for its PRACK.
    sdp: bool,
}

/// `RAck: <rseq> <cseq> <method>` (RFC 3262 §7.2).
fn parse_rack(value: &str) -> Option<(u32, u32, &str)> {
    let mut parts = value.split_whitespace();
    let rseq = parts.next()?.parse().ok()?;
    let cseq = parts.next()?.parse().ok()?;
    let method = parts.next()?;
    parts.next().is_none().then_some((rseq, cseq, method))
}

impl Endpoint {
    /// Send a 1xx to the INVITE: reliably when the caller supports 100rel,
    /// queued behind an unacknowledged one.
    pub(super) fn send_provisional(
        &mut self,
        now: Instant,
        call: CallId,
        resp: Response,
    ) -> Result<(), EndpointError> {
        let first_rseq = super::util::first_local_seq(&mut self.id_rng);
        let c = self.calls.get_mut(&call).ok_or(EndpointError::NoSuchCall)?;
        let key = c.invite_key().cloned().ok_or(EndpointError::BadState)?;
        if !c.caps.rel100 {
            self.respond(now, &key, resp);
            return Ok(());
        }
        let rel = c.reliable.get_or_insert_with(|| {
            Box::new(Reliable {
                next_rseq: first_rseq,
                ..Reliable::default()
            })
        });
        if rel.unacked.is_some() {
            rel.queued.push_back(resp);
        } else {
            self.send_reliable(now, call, &key, resp);
        }
        Ok(())
    }

    fn send_reliable(&mut self, now: Instant, call: CallId, key: &ServerKey, mut resp: Response) {
        let (t1, timeout) = (self.config.timers.t1, self.config.timers.timeout());
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(rel) = c.reliable.as_mut() else {
            return;
        };
        let rseq = rel.next_rseq;
        rel.next_rseq = rseq.wrapping_add(1);
        resp.headers.push("Require", "100rel");
        resp.headers.push("RSeq", rseq.to_string());
        let peer = response_destination(c.peer, &resp);
        // Streams deliver for us: only the give-up timer.
        let next_at = now
            + if peer.transport.reliable() {
                timeout
            } else {
                t1
            };
        rel.unacked = Some(Unacked {
            rseq,
            bytes: Bytes::from(resp.to_bytes()),
            peer,
            interval: t1,
            next_at,
            give_up: now + timeout,
            sdp: !resp.body.is_empty(),
        });
        self.counters.reliable_provisionals_sent += 1;
        self.respond(now, key, resp);
        self.schedule(next_at, TimerTarget::Call(call, CallTimer::Reliable));
    }

    /// Retransmit the unacknowledged provisional, or give up on it.
    pub(super) fn reliable_timer(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let incoming = c.state == CallState::Incoming;
        let Some(rel) = c.reliable.as_mut() else {
            return;
        };
        let Some(u) = rel.unacked.as_mut() else {
            return;
        };
        if u.next_at > now {
            return; // stale
        }
        if now >= u.give_up {
            rel.unacked = None;
            rel.held_2xx = None;
            self.counters.prack_timeouts += 1;
            tracing::info!(%call, "no PRACK for a reliable provisional: refusing the call");
            if incoming {
                // §3: the UAS SHOULD reject the INVITE with a 5xx.
                let _ = self.reject(now, call, 500);
            }
            return;
        }
        let resend = (!u.peer.transport.reliable()).then(|| (u.peer, u.bytes.clone()));
        u.interval *= 2;
        u.next_at = (now + u.interval).min(u.give_up);
        let next_at = u.next_at;
        if let Some((peer, bytes)) = resend {
            self.transmit(peer, bytes);
        }
        self.schedule(next_at, TimerTarget::Call(call, CallTimer::Reliable));
    }

    /// The 2xx is ready: hold it while an 18x with SDP awaits its PRACK
    /// (true), else stop retransmitting provisionals (a final response
    /// ends them) and let it go.
    pub(super) fn hold_2xx_for_prack(
        &mut self,
        call: CallId,
        resp: &Response,
        answer_in_ack: bool,
    ) -> bool {
        let Some(rel) = self.calls.get_mut(&call).and_then(|c| c.reliable.as_mut()) else {
            return false;
        };
        rel.queued.clear();
        if rel.unacked.as_ref().is_some_and(|u| u.sdp) {
            rel.held_2xx = Some((resp.clone(), answer_in_ack));
            return true;
        }
        rel.overtaken = rel.unacked.take().map(|u| u.rseq);
        false
    }

    /// Whether the call's 2xx is held for a PRACK (it is answered already).
    pub(super) fn answer_held(&self, call: CallId) -> bool {
        self.calls
            .get(&call)
            .and_then(|c| c.reliable.as_ref())
            .is_some_and(|r| r.held_2xx.is_some())
    }

    /// A PRACK: 200 when its RAck names our unacknowledged provisional,
    /// else 481 (§3). Then the next provisional, or the held 2xx, goes.
    pub(super) fn prack(&mut self, now: Instant, key: ServerKey, call: CallId, req: &Request) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let invite_seq = c.invite.headers.cseq().map(|s| s.seq).ok();
        let invite_key = c.invite_key().cloned();
        let rack = req
            .headers
            .get("RAck")
            .and_then(parse_rack)
            .filter(|(_, cseq, method)| {
                Some(*cseq) == invite_seq && method.eq_ignore_ascii_case("INVITE")
            })
            .map(|(rseq, _, _)| rseq);
        let rel = c.reliable.as_ref().filter(|_| c.role == CallRole::Uas);
        let pending = rel.and_then(|r| r.unacked.as_ref()).map(|u| u.rseq);
        let overtaken = rel.and_then(|r| r.overtaken);
        if rack.is_some() && rack == overtaken {
            self.counters.pracks_received += 1;
            let ok = self.make_response(req, 200, None);
            return self.respond(now, &key, ok);
        }
        if rack.is_none() || rack != pending {
            self.counters.pracks_unmatched += 1;
            let resp = self.make_response(req, 481, None);
            return self.respond(now, &key, resp);
        }
        self.counters.pracks_received += 1;
        let (next, held) = match c.reliable.as_mut() {
            Some(rel) => {
                rel.unacked = None;
                (rel.queued.pop_front(), rel.held_2xx.take())
            }
            None => (None, None),
        };
        let ok = self.make_response(req, 200, None);
        self.respond(now, &key, ok);
        match (next, held, invite_key) {
            (Some(next), _, Some(invite_key)) => self.send_reliable(now, call, &invite_key, next),
            (None, Some((resp, answer_in_ack)), _) => {
                self.send_2xx_now(now, call, resp, answer_in_ack)
            }
            _ => {}
        }
    }

    /// UAC: PRACK a reliable 18x (§4), each RSeq once and in order.
    pub(super) fn prack_if_reliable(
        &mut self,
        now: Instant,
        call: CallId,
        request: &Request,
        resp: &Response,
    ) {
        let required = resp
            .headers
            .tokens("Require")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("100rel"));
        let Some(rseq) = resp
            .headers
            .get("RSeq")
            .and_then(|v| v.trim().parse::<u32>().ok())
            .filter(|_| required)
        else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let rel = c.reliable.get_or_insert_with(Box::default);
        if rel
            .last_acked
            .is_some_and(|last| rseq != last.wrapping_add(1))
        {
            return; // a retransmission, or out of order
        }
        // The early dialog this 18x made is where the PRACK goes.
        let Ok(mut early) = Dialog::new_uac(request, resp) else {
            return;
        };
        rel.last_acked = Some(rseq);
        early.local_seq = early.local_seq.max(c.dialog.local_seq);
        c.dialog = early;
        let invite_seq = request.headers.cseq().map_or(1, |s| s.seq);
        let Some((mut prack, peer)) = self.dialog_request(call, Method::Prack, None) else {
            return;
        };
        prack
            .headers
            .push("RAck", format!("{rseq} {invite_seq} INVITE"));
        self.counters.pracks_sent += 1;
        self.start_client(now, prack, peer, TxOwner::Detached);
    }

    /// UAC: a provisional with an SDP answer sets up early media.
    pub(super) fn early_answer(&mut self, call: CallId, resp: &Response) {
        if resp.body.is_empty() {
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(media) = c.media_from_answer(&resp.body) else {
            return;
        };
        if c.early_media.as_deref() == Some(&media) {
            return; // the same answer again (a retransmission, or 180 then 183)
        }
        c.early_media = Some(Box::new(media.clone()));
        self.counters.early_media_received += 1;
        self.events.push_back(Event::EarlyMedia { call, media });
    }
}

#[cfg(test)]
mod tests {
    use super::parse_rack;

    #[test]
    fn rack_values() {
        assert_eq!(parse_rack("776656 1 INVITE"), Some((776656, 1, "INVITE")));
        assert_eq!(parse_rack("  5   22 invite "), Some((5, 22, "invite")));
        for bad in [
            "",
            "1 INVITE",
            "x 1 INVITE",
            "1 2 INVITE extra",
            "-1 2 INVITE",
        ] {
            assert_eq!(parse_rack(bad), None, "{bad:?}");
        }
    }
}
