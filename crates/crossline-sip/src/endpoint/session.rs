//! Inside a dialog: session timers (RFC 4028), the refreshes we send and
//! answer, UPDATE (RFC 3311), and offer/answer glare (491).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::RngExt as _;

use super::calls::{CallRole, CallState, CallTimer, PeerCaps};
use super::{CallId, EndCause, Endpoint, Event, ServerKey, TimerTarget, TxOwner, ALLOW, SUPPORTED};
use crate::message::{Method, Request, Response};
use crate::sdp::{Negotiated, SessionDescription};
use crate::session_timer::{self, Refresher, Refusal, Session};

/// A session timer in force.
pub(super) struct SessionState {
    pub(super) timer: Session,
    /// The last refresh (or the 2xx that started it).
    since: Instant,
    /// The next step, and when.
    next_at: Instant,
    step: Step,
}

impl SessionState {
    /// When the side that doesn't refresh gives up (§10).
    fn bye_at(&self) -> Instant {
        self.since + self.timer.bye_after()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Refresh,
    Bye,
}

/// Our re-INVITE or UPDATE in flight (a session refresh).
pub(super) struct InFlight {
    update: bool,
    cseq: u32,
    /// The interval it asks for.
    interval: u32,
}

impl InFlight {
    /// Whether `request` is this refresh.
    pub(super) fn is(&self, request: &Request) -> bool {
        let method = if self.update {
            Method::Update
        } else {
            Method::Invite
        };
        request
            .headers
            .cseq()
            .is_ok_and(|c| c.seq == self.cseq && c.method == method)
    }

    /// A re-INVITE carries our offer: an offer from the peer now is glare.
    pub(super) fn carries_offer(&self) -> bool {
        !self.update
    }
}

/// `Session-Expires` (and `Require: timer`) on a 2xx we send.
pub(super) fn add_timer_headers(resp: &mut Response, timer: Option<&Session>, caps: PeerCaps) {
    let Some(timer) = timer else {
        return;
    };
    resp.headers
        .push("Session-Expires", timer.header_value(false));
    // §9: a peer that refreshes must know it; one that supports timers
    // learns that we do them too.
    if caps.timer || timer.refresher == Refresher::Peer {
        resp.headers.push("Require", "timer");
    }
}

impl Endpoint {
    /// A request's session-timer headers (§9): the timer its 2xx grants
    /// (`Some(None)`: none), or `None` when it was refused here with 422
    /// (too short) or 400 (unparseable).
    pub(super) fn timer_for_request(
        &mut self,
        now: Instant,
        key: &ServerKey,
        req: &Request,
        current: Option<Session>,
    ) -> Option<Option<Session>> {
        let refusal = match session_timer::negotiate_as_uas(
            &req.headers,
            &self.config.session_timer,
            current.as_ref(),
        ) {
            Ok(timer) => return Some(timer),
            Err(refusal) => refusal,
        };
        let tag = super::util::new_tag(&mut self.id_rng);
        let resp = match refusal {
            Refusal::TooSmall { min_se } => {
                self.counters.session_interval_too_small += 1;
                let mut resp = self.make_response(req, 422, Some(&tag));
                resp.headers.push("Min-SE", min_se.to_string());
                resp
            }
            Refusal::Malformed(header) => {
                self.counters.session_timer_malformed += 1;
                let mut resp = self.make_response(req, 400, Some(&tag));
                resp.reason = format!("Bad Request (malformed {header})");
                resp
            }
        };
        tracing::debug!(status = resp.status, "session timer refused");
        self.respond(now, key, resp);
        None
    }

    /// A 2xx just started or refreshed the session: arm its timer. `None`
    /// turns it off (a 2xx without Session-Expires, §7.2).
    pub(super) fn session_refreshed(&mut self, now: Instant, call: CallId, timer: Option<Session>) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(timer) = timer else {
            c.session = None;
            return;
        };
        let (step, after) = match timer.refresher {
            Refresher::Us => (Step::Refresh, timer.refresh_after()),
            Refresher::Peer => (Step::Bye, timer.bye_after()),
        };
        c.session = Some(SessionState {
            timer,
            since: now,
            next_at: now + after,
            step,
        });
        self.schedule(now + after, TimerTarget::Call(call, CallTimer::Session));
    }

    fn session_next(&mut self, call: CallId, at: Instant, step: Step) {
        let Some(s) = self.calls.get_mut(&call).and_then(|c| c.session.as_mut()) else {
            return;
        };
        s.next_at = at;
        s.step = step;
        self.schedule(at, TimerTarget::Call(call, CallTimer::Session));
    }

    pub(super) fn session_timer(&mut self, now: Instant, call: CallId) {
        let Some(s) = self.calls.get(&call).and_then(|c| c.session.as_ref()) else {
            return;
        };
        if s.next_at > now {
            return; // superseded by a refresh
        }
        match s.step {
            Step::Refresh => self.send_refresh(now, call),
            Step::Bye => self.session_lost(now, call),
        }
    }

    /// The session lapsed unrefreshed, or can't be refreshed: BYE (§10).
    pub(super) fn session_lost(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        tracing::info!(%call, "session timer expired: hanging up");
        self.counters.sessions_expired += 1;
        if c.state == CallState::Confirmed {
            self.send_bye(now, call);
            self.end_call(call, EndCause::SessionExpired);
        } else {
            let _ = self.hangup(now, call);
        }
    }

    /// Refresh as the refresher (§7.4): UPDATE without a body when the
    /// peer allows it, else a re-INVITE offering our last SDP unchanged
    /// (same version: nothing about the media changes).
    fn send_refresh(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let Some(s) = c.session.as_ref() else {
            return;
        };
        let (timer, bye_at) = (s.timer, s.bye_at());
        let update = c.caps.update;
        if c.state != CallState::Confirmed
            || c.refresh.is_some()
            || (!update && c.local_sdp.is_none())
        {
            // Not possible now: the peer's deadline stands.
            return self.session_next(call, bye_at, Step::Bye);
        }
        let min_se = self.config.session_timer.min_se.min(timer.interval);
        let method = if update {
            Method::Update
        } else {
            Method::Invite
        };
        let Some((mut req, peer)) = self.dialog_request(call, method, None) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        req.headers
            .push("Session-Expires", timer.header_value(true));
        req.headers.push("Min-SE", min_se.to_string());
        req.headers.push("Supported", SUPPORTED);
        if !update {
            req.headers.push("Allow", ALLOW);
            req.headers.push("Content-Type", "application/sdp");
            req.body = c.local_sdp.clone().unwrap_or_default();
        }
        c.refresh = Some(InFlight {
            update,
            cseq: c.dialog.local_seq,
            interval: timer.interval,
        });
        self.counters.session_refreshes_sent += 1;
        tracing::debug!(%call, update, "session refresh sent");
        self.start_client(now, req, peer, TxOwner::Call(call));
        // If nothing comes back by the peer's own deadline, stop there too.
        self.session_next(call, bye_at, Step::Bye);
    }

    /// The final answer to our refresh.
    pub(super) fn refresh_response(
        &mut self,
        now: Instant,
        call: CallId,
        request: &Request,
        resp: &Response,
    ) {
        if resp.status < 200 {
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(sent) = c.refresh.take() else {
            return;
        };
        let bye_at = c.session.as_ref().map_or(now, SessionState::bye_at);
        match resp.status {
            200..=299 => {
                if !sent.update {
                    self.send_ack(now, call, sent.cseq);
                    self.accept_refresh_answer(call, resp);
                }
                self.session_refreshed(now, call, session_timer::from_response(&resp.headers));
            }
            491 => {
                // RFC 3261 §14.1: try again after a random wait, longer
                // for the side that owns the Call-ID.
                let ms = match c.role {
                    CallRole::Uac => self.id_rng.random_range(2_100..=4_000),
                    CallRole::Uas => self.id_rng.random_range(0..=2_000),
                };
                self.session_next(call, now + Duration::from_millis(ms), Step::Refresh);
            }
            422 => match session_timer::retry_after_422(&resp.headers, sent.interval) {
                Some(longer) => {
                    if let Some(s) = c.session.as_mut() {
                        s.timer.interval = longer;
                    }
                    self.send_refresh(now, call);
                }
                None => self.session_next(call, bye_at, Step::Bye),
            },
            // The dialog is gone (§10, RFC 5057).
            408 | 481 => self.session_lost(now, call),
            // RFC 6141: a refused refresh leaves the session as it was,
            // until it lapses.
            _ => {
                tracing::info!(%call, status = resp.status, method = %request.method.as_str(), "session refresh refused");
                self.session_next(call, bye_at, Step::Bye)
            }
        }
    }

    /// A 2xx to our refresh re-INVITE answers the SDP we offered again.
    fn accept_refresh_answer(&mut self, call: CallId, resp: &Response) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if let Some(media) = c.media_from_answer(&resp.body) {
            self.events.push_back(Event::MediaChanged { call, media });
        }
    }

    /// Whether an offer of ours awaits its answer: an offer from the peer
    /// now is glare (491).
    pub(super) fn offer_pending(&self, call: CallId) -> bool {
        self.calls.get(&call).is_some_and(|c| {
            c.refresh.as_ref().is_some_and(InFlight::carries_offer) || c.awaiting_answer_in_ack()
        })
    }

    /// Answer an offer inside the dialog (re-INVITE, UPDATE) with the
    /// call's media; a refresh that changes nothing gets the same answer.
    pub(super) fn answer_in_dialog(
        &mut self,
        call: CallId,
        offer: &SessionDescription,
    ) -> Option<(Negotiated, Bytes)> {
        self.next_local_sdp(call, |local| crate::sdp::answer(offer, local).ok())
    }

    /// Our offer in the 2xx to an offerless re-INVITE: the call's media,
    /// sending and receiving (a PBX retrieving a held call asks this way).
    pub(super) fn offer_in_dialog(&mut self, call: CallId) -> Option<Bytes> {
        self.next_local_sdp(call, |local| {
            Some((
                (),
                crate::sdp::offer(local, crate::sdp::Direction::SendRecv),
            ))
        })
        .map(|(_, body)| body)
    }

    /// Our next SDP in the dialog, rendered by `render` from the call's
    /// media: its version moves only when the SDP does (RFC 3264 §8).
    fn next_local_sdp<T>(
        &mut self,
        call: CallId,
        render: impl Fn(&crate::sdp::LocalMedia) -> Option<(T, String)>,
    ) -> Option<(T, Bytes)> {
        let c = self.calls.get_mut(&call)?;
        let mut local = c.local_media.clone()?;
        let (mut out, mut body) = render(&local)?;
        if c.local_sdp.as_deref() != Some(body.as_bytes()) {
            local.session_version += 1;
            (out, body) = render(&local)?;
        }
        let body = Bytes::from(body);
        c.local_media = Some(local);
        c.local_sdp = Some(body.clone());
        Some((out, body))
    }

    /// UPDATE (RFC 3311) in an early or confirmed dialog: with an offer,
    /// answered like a re-INVITE's; without, a plain 200 (a session
    /// refresh, say). Either way the 2xx refreshes the session timer.
    pub(super) fn update(&mut self, now: Instant, key: ServerKey, call: CallId, req: Request) {
        self.counters.updates_received += 1;
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let confirmed = matches!(c.state, CallState::Answered | CallState::Confirmed);
        let current = c.session.as_ref().map(|s| s.timer);
        let (caps, peer, has_local_media) = (c.caps, c.peer, c.local_media.is_some());
        let Some(timer) = self.timer_for_request(now, &key, &req, current) else {
            return;
        };
        if let Some(c) = self.calls.get_mut(&call) {
            c.dialog.refresh_target(&req);
        }
        let mut resp = self.make_response(&req, 200, None);
        let mut media = None;
        if req.body.is_empty() {
            let contact = self.contact_uri(&peer);
            resp.headers.push("Contact", format!("<{contact}>"));
            resp.headers.push("Supported", SUPPORTED);
        } else {
            if self.offer_pending(call) {
                return self.refuse_glare(now, &key, &req);
            }
            if !has_local_media {
                // §5.2: the INVITE's own offer is not answered yet.
                let mut resp = self.make_response(&req, 500, None);
                let wait = self.id_rng.random_range(0..=10u32);
                resp.headers.push("Retry-After", wait.to_string());
                return self.respond(now, &key, resp);
            }
            let answer = std::str::from_utf8(&req.body)
                .ok()
                .and_then(|t| SessionDescription::parse(t).ok())
                .and_then(|offer| self.answer_in_dialog(call, &offer));
            let Some((negotiated, body)) = answer else {
                let resp = self.make_response(&req, 488, None);
                return self.respond(now, &key, resp);
            };
            self.decorate_with_sdp(&mut resp, body, &peer);
            media = Some(negotiated);
        }
        if confirmed {
            add_timer_headers(&mut resp, timer.as_ref(), caps);
        }
        self.respond(now, &key, resp);
        if confirmed {
            self.refreshed_by_peer(now, call, timer);
        }
        if let Some(media) = media {
            self.events.push_back(Event::MediaChanged { call, media });
        }
    }

    /// Our 2xx to the peer's re-INVITE or UPDATE refreshed the session.
    pub(super) fn refreshed_by_peer(&mut self, now: Instant, call: CallId, timer: Option<Session>) {
        if timer.is_some() {
            self.counters.session_refreshes_received += 1;
        }
        self.session_refreshed(now, call, timer);
    }

    /// A 422 to our INVITE (§7.3): ask again with the 422's Min-SE. False
    /// when that is no longer than before (or over a day): the call fails
    /// with the 422.
    pub(super) fn retry_with_longer_timer(
        &mut self,
        now: Instant,
        call: CallId,
        request: &Request,
        resp: &Response,
    ) -> bool {
        let asked = request
            .headers
            .get("Session-Expires")
            .and_then(session_timer::parse_session_expires)
            .map_or(0, |se| se.secs);
        let Some(longer) =
            session_timer::retry_after_422(&resp.headers, asked).filter(|secs| *secs <= 86_400)
        else {
            return false;
        };
        let value = longer.to_string();
        self.reissue_invite(
            now,
            call,
            request,
            &[("Session-Expires", value.clone()), ("Min-SE", value)],
        );
        true
    }

    /// 491 Request Pending: the peer's offer crossed ours.
    pub(super) fn refuse_glare(&mut self, now: Instant, key: &ServerKey, req: &Request) {
        self.counters.glare_refused += 1;
        let resp = self.make_response(req, 491, None);
        self.respond(now, key, resp);
    }
}
