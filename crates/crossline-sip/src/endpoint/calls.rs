//! Calls: the UAS and UAC cores on top of transactions and dialogs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::util::{host_port, new_branch, new_call_id, new_tag, response_destination};
use super::{
    CallId, ClientKey, EndCause, Endpoint, EndpointError, Event, Peer, ServerKey, TimerTarget,
    Transport, TxOwner, ACCEPT, ALLOW, SUPPORTED,
};
use crate::auth::{Challenge, DigestClient};
use crate::dialog::{Dialog, DialogState};
use crate::message::{Headers, Method, NameAddr, Request, Response, Uri, Via};
use crate::sdp::{LocalMedia, Negotiated, SessionDescription};
use crate::session_timer::Session;

/// Which side of the call we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallRole {
    /// We answered an INVITE.
    Uas,
    /// We sent the INVITE.
    Uac,
}

/// Where a call's INVITE dialog is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallState {
    /// UAS: INVITE received, no final response yet.
    Incoming,
    /// UAC: INVITE sent, no final response yet.
    Outgoing,
    /// UAS: 2xx sent, waiting for the ACK.
    Answered,
    /// ACKed (UAS) or answered (UAC): media flows.
    Confirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallTimer {
    /// Retransmit our 2xx until the ACK (§13.3.1.4).
    Retransmit2xx,
    /// Refresh the session, or give it up (RFC 4028).
    Session,
    /// Retransmit our reliable provisional until its PRACK (RFC 3262).
    Reliable,
}

/// What the peer's INVITE (or its answer to ours) says it can do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PeerCaps {
    /// Session timers (`timer` in Supported or Require).
    pub(super) timer: bool,
    /// Reliable provisionals (`100rel` in Supported or Require).
    pub(super) rel100: bool,
    /// UPDATE in Allow: refreshes go by UPDATE, not re-INVITE.
    pub(super) update: bool,
}

impl PeerCaps {
    pub(super) fn of(headers: &crate::message::Headers) -> PeerCaps {
        PeerCaps {
            timer: crate::session_timer::lists_option(headers, "timer"),
            rel100: crate::session_timer::lists_option(headers, "100rel"),
            update: headers
                .tokens("Allow")
                .iter()
                .any(|m| m.eq_ignore_ascii_case("UPDATE")),
        }
    }
}

/// A 2xx we keep sending until its ACK comes.
pub(super) struct Pending2xx {
    bytes: Bytes,
    peer: Peer,
    interval: Duration,
    give_up: Instant,
    /// Late offer: the ACK carries the answer.
    answer_in_ack: bool,
}

pub(super) struct Call {
    pub(super) role: CallRole,
    pub(super) state: CallState,
    pub(super) dialog: Dialog,
    /// The INVITE: theirs for a UAS, ours for a UAC.
    pub(super) invite: Request,
    invite_key: Option<ServerKey>,
    client_key: Option<ClientKey>,
    pub(super) peer: Peer,
    offer: Option<SessionDescription>,
    pub(super) local_media: Option<LocalMedia>,
    pending_2xx: Option<Pending2xx>,
    /// Hang up as soon as the ACK arrives (§15: no BYE before it).
    bye_after_ack: bool,
    /// UAC: CANCEL once a provisional arrives (§9.1).
    cancel_pending: bool,
    /// We sent CANCEL: a 2xx that crosses it is ACKed and BYEd (§9.1).
    cancelled: bool,
    got_provisional: bool,
    credentials: Option<(String, crate::secret::Secret)>,
    /// The inbound trunk it came in on (for per-trunk caps).
    pub(super) trunk: Option<String>,
    auth_tried: bool,
    /// Where an inbound call came from (per-source call cap).
    pub(super) source: Option<std::net::IpAddr>,
    /// What the peer can do: from its INVITE, or its 2xx to ours.
    pub(super) caps: PeerCaps,
    /// UAS: the session timer our 2xx to the INVITE grants.
    pub(super) agreed_timer: Option<Session>,
    /// The session timer in force (RFC 4028).
    pub(super) session: Option<super::session::SessionState>,
    /// The last SDP we sent: a refresh re-INVITE offers it again unchanged.
    pub(super) local_sdp: Option<Bytes>,
    /// Our re-INVITE or UPDATE in flight.
    pub(super) refresh: Option<super::session::InFlight>,
    /// Reliable provisionals (RFC 3262), either side.
    pub(super) reliable: Option<Box<super::provisional::Reliable>>,
    /// UAC: media a provisional's SDP answer set up (early media).
    pub(super) early_media: Option<Box<Negotiated>>,
    /// A REFER the peer sent us, while it is decided and carried out.
    pub(super) refer_in: Option<Box<super::refer_in::ReferIn>>,
    /// A call to a registered device: the dialog stays on its flow.
    pinned: bool,
}

impl Call {
    pub(super) fn invite_key(&self) -> Option<&ServerKey> {
        self.invite_key.as_ref()
    }

    /// The media an SDP answer in `body` sets up against our offer; `None`
    /// for no body, one that doesn't parse, or no usable codec.
    pub(super) fn media_from_answer(&self, body: &[u8]) -> Option<Negotiated> {
        let sdp = SessionDescription::parse(std::str::from_utf8(body).ok()?).ok()?;
        crate::sdp::accept_answer(&sdp, self.local_media.as_ref()?).ok()
    }

    /// Our 2xx offered SDP whose answer the ACK brings, and it hasn't yet.
    pub(super) fn awaiting_answer_in_ack(&self) -> bool {
        self.pending_2xx.as_ref().is_some_and(|p| p.answer_in_ack)
    }

    pub(super) fn new_uas(
        _id: CallId,
        dialog: Dialog,
        invite: Request,
        key: ServerKey,
        peer: Peer,
        offer: Option<SessionDescription>,
    ) -> Call {
        Call {
            role: CallRole::Uas,
            state: CallState::Incoming,
            dialog,
            invite,
            invite_key: Some(key),
            client_key: None,
            peer,
            offer,
            local_media: None,
            pending_2xx: None,
            bye_after_ack: false,
            cancel_pending: false,
            cancelled: false,
            trunk: None,
            got_provisional: false,
            credentials: None,
            auth_tried: false,
            source: None,
            caps: PeerCaps::default(),
            agreed_timer: None,
            session: None,
            local_sdp: None,
            refresh: None,
            reliable: None,
            early_media: None,
            refer_in: None,
            pinned: false,
        }
    }
}

/// Everything needed to place a call.
#[derive(Debug, Clone)]
pub struct OutgoingCall {
    /// Request-URI, e.g. `sip:+15551234@carrier.example.com`.
    pub target: Uri,
    /// Where to send it (the resolved outbound proxy or target host).
    pub destination: SocketAddr,
    /// Transport to reach `destination` with.
    pub transport: Transport,
    /// From: caller ID user part and optional display name.
    pub from_user: String,
    /// From display name.
    pub from_display: Option<String>,
    /// Our media for the SDP offer.
    pub local_media: LocalMedia,
    /// Digest credentials for 401/407 challenges.
    pub credentials: Option<(String, crate::secret::Secret)>,
    /// Extra headers, e.g. X-Crossline-Callback.
    pub extra_headers: Vec<(String, String)>,
    /// A registered device's flow (RFC 5626): the INVITE and every request
    /// of its dialog go over it (its connection, from its listener), not
    /// to `destination` or wherever the device's Contact points.
    pub flow: Option<Peer>,
    /// The INVITE's Max-Forwards: [`MAX_FORWARDS`] for a call of our own;
    /// one less than the inbound call's for a leg placed on its behalf, so
    /// a call routed back to us runs out of hops instead of looping.
    pub max_forwards: u8,
}

/// Max-Forwards on requests we start (RFC 3261 §8.1.1.6).
pub const MAX_FORWARDS: u8 = 70;

impl Endpoint {
    pub(super) fn contact_uri(&self, peer: &Peer) -> Uri {
        let addr = self.advertised(peer.local);
        // Over TLS: a sips: Contact (RFC 3261 §8.1.1.8), reached by TLS.
        let uri = match peer.transport {
            Transport::Tls => format!("sips:crossline@{}", host_port(addr)),
            t => format!("sip:crossline@{}{}", host_port(addr), t.uri_param()),
        };
        Uri::parse(&uri).unwrap_or_else(|_| self.fallback_uri())
    }

    fn fallback_uri(&self) -> Uri {
        Uri {
            scheme: "sip".into(),
            user: None,
            password: None,
            host: "127.0.0.1".into(),
            port: None,
            params: Vec::new(),
            headers: None,
        }
    }

    pub(super) fn via_for(&mut self, peer: &Peer) -> Via {
        let addr = self.advertised(peer.local);
        let mut via = Via {
            transport: peer.transport.via_name().into(),
            host: match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            },
            port: Some(addr.port()),
            params: Vec::new(),
        };
        via.set_param("branch", Some(&new_branch(&mut self.id_rng)));
        via.set_param("rport", None);
        via
    }

    /// Contact, Allow, Accept, Supported and an SDP body on a 2xx or 183
    /// to INVITE, or a 2xx to UPDATE.
    pub(super) fn decorate_with_sdp(
        &self,
        resp: &mut Response,
        sdp: impl Into<Bytes>,
        peer: &Peer,
    ) {
        let contact = self.contact_uri(peer);
        resp.headers.push("Contact", format!("<{contact}>"));
        resp.headers.push("Allow", ALLOW);
        resp.headers.push("Accept", ACCEPT);
        resp.headers.push("Supported", SUPPORTED);
        resp.headers.push("Content-Type", "application/sdp");
        resp.body = sdp.into();
    }

    /// Send 180 Ringing on an incoming call (reliably when the caller
    /// supports 100rel).
    pub fn ring(&mut self, now: Instant, call: CallId) -> Result<(), EndpointError> {
        let c = self.calls.get(&call).ok_or(EndpointError::NoSuchCall)?;
        if c.state != CallState::Incoming {
            return Err(EndpointError::BadState);
        }
        let mut resp = self.make_response(&c.invite, 180, Some(&c.dialog.id.local_tag));
        let contact = self.contact_uri(&c.peer);
        resp.headers.push("Contact", format!("<{contact}>"));
        self.send_provisional(now, call, resp)
    }

    /// Early media (the RFC 3960 gateway model): answer the INVITE's offer
    /// in a 183 Session Progress, reliably when the caller supports 100rel,
    /// so RTP flows before the call is answered. [`Endpoint::answer_early`]
    /// answers later with the same SDP. A late-offer INVITE has nothing to
    /// answer yet: `BadState`.
    pub fn early_media(
        &mut self,
        now: Instant,
        call: CallId,
        local: LocalMedia,
    ) -> Result<Negotiated, EndpointError> {
        let c = self.calls.get_mut(&call).ok_or(EndpointError::NoSuchCall)?;
        if c.state != CallState::Incoming || c.local_sdp.is_some() {
            return Err(EndpointError::BadState);
        }
        let offer = c.offer.as_ref().ok_or(EndpointError::BadState)?;
        let (negotiated, body) =
            crate::sdp::answer(offer, &local).map_err(|_| EndpointError::NoCommonCodec)?;
        let body = Bytes::from(body);
        c.local_media = Some(local);
        c.local_sdp = Some(body.clone());
        let (invite, tag, peer) = (c.invite.clone(), c.dialog.id.local_tag.clone(), c.peer);
        let mut resp = self.make_response(&invite, 183, Some(&tag));
        self.decorate_with_sdp(&mut resp, body, &peer);
        self.counters.early_media_sent += 1;
        self.send_provisional(now, call, resp)?;
        Ok(negotiated)
    }

    /// Answer a call whose early media is playing: the 200 carries the
    /// 183's SDP unchanged, version and all.
    pub fn answer_early(&mut self, now: Instant, call: CallId) -> Result<(), EndpointError> {
        let c = self.calls.get(&call).ok_or(EndpointError::NoSuchCall)?;
        if c.state != CallState::Incoming || c.local_sdp.is_none() || self.answer_held(call) {
            return Err(EndpointError::BadState);
        }
        self.send_answer(now, call, false);
        Ok(())
    }

    /// Answer an incoming call with our media. Returns the negotiated media
    /// when the INVITE carried an offer; for a late offer it arrives with
    /// [`Event::CallEstablished`]. No common codec: we send 488 and the call
    /// ends.
    pub fn answer(
        &mut self,
        now: Instant,
        call: CallId,
        local: LocalMedia,
    ) -> Result<Option<Negotiated>, EndpointError> {
        if self.answer_held(call) {
            return Err(EndpointError::BadState);
        }
        let c = self.calls.get_mut(&call).ok_or(EndpointError::NoSuchCall)?;
        if c.state != CallState::Incoming {
            return Err(EndpointError::BadState);
        }
        let key = c.invite_key.clone().ok_or(EndpointError::BadState)?;
        let (negotiated, body) = match &c.offer {
            Some(offer) => match crate::sdp::answer(offer, &local) {
                Ok((n, body)) => (Some(n), body),
                Err(_) => {
                    let invite = c.invite.clone();
                    let tag = c.dialog.id.local_tag.clone();
                    let resp = self.make_response(&invite, 488, Some(&tag));
                    self.respond(now, &key, resp);
                    self.end_call(
                        call,
                        EndCause::Rejected {
                            status: 488,
                            reason: "Not Acceptable Here".into(),
                        },
                    );
                    return Err(EndpointError::NoCommonCodec);
                }
            },
            None => (
                None,
                crate::sdp::offer(&local, crate::sdp::Direction::SendRecv),
            ),
        };
        c.local_media = Some(local);
        c.local_sdp = Some(Bytes::from(body));
        self.send_answer(now, call, negotiated.is_none());
        Ok(negotiated)
    }

    /// The 2xx to the INVITE, carrying `local_sdp` and the session timer;
    /// held back while a reliable provisional with SDP awaits its PRACK
    /// (RFC 3262 §3).
    fn send_answer(&mut self, now: Instant, call: CallId, answer_in_ack: bool) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (invite, tag, peer) = (c.invite.clone(), c.dialog.id.local_tag.clone(), c.peer);
        let (body, timer, caps) = (
            c.local_sdp.clone().unwrap_or_default(),
            c.agreed_timer,
            c.caps,
        );
        let mut resp = self.make_response(&invite, 200, Some(&tag));
        self.decorate_with_sdp(&mut resp, body, &peer);
        super::session::add_timer_headers(&mut resp, timer.as_ref(), caps);
        if !self.hold_2xx_for_prack(call, &resp, answer_in_ack) {
            self.send_2xx_now(now, call, resp, answer_in_ack);
        }
    }

    /// Send the INVITE's 2xx, retransmit it until the ACK and start the
    /// session timer it grants.
    pub(super) fn send_2xx_now(
        &mut self,
        now: Instant,
        call: CallId,
        resp: Response,
        answer_in_ack: bool,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(key) = c.invite_key.clone() else {
            return;
        };
        c.state = CallState::Answered;
        c.dialog.state = DialogState::Confirmed;
        let timer = c.agreed_timer;
        self.respond(now, &key, resp.clone());
        self.start_2xx_retransmit(now, call, resp, answer_in_ack);
        self.session_refreshed(now, call, timer);
    }

    pub(super) fn start_2xx_retransmit(
        &mut self,
        now: Instant,
        call: CallId,
        resp: Response,
        answer_in_ack: bool,
    ) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.peer.transport.reliable() {
            // Reliable transports don't retransmit, but the ACK still may
            // never come: keep the give-up timer.
        }
        let peer = response_destination(c.peer, &resp);
        let interval = self.config.timers.t1;
        c.pending_2xx = Some(Pending2xx {
            bytes: Bytes::from(resp.to_bytes()),
            peer,
            interval,
            give_up: now + self.config.timers.timeout(),
            answer_in_ack,
        });
        self.schedule(
            now + interval,
            TimerTarget::Call(call, CallTimer::Retransmit2xx),
        );
    }

    pub(super) fn call_timer(&mut self, now: Instant, call: CallId, timer: CallTimer) {
        match timer {
            CallTimer::Session => self.session_timer(now, call),
            CallTimer::Reliable => self.reliable_timer(now, call),
            CallTimer::Retransmit2xx => {
                let t2 = self.config.timers.t2;
                let Some(c) = self.calls.get_mut(&call) else {
                    return;
                };
                let Some(p) = c.pending_2xx.as_mut() else {
                    return;
                };
                if now >= p.give_up {
                    // §13.3.1.4: no ACK; end the dialog with a BYE.
                    c.pending_2xx = None;
                    c.state = CallState::Confirmed;
                    self.send_bye(now, call);
                    self.end_call(call, EndCause::AckTimeout);
                    return;
                }
                let reliable = p.peer.transport.reliable();
                let (bytes, peer) = (p.bytes.clone(), p.peer);
                p.interval = (p.interval * 2).min(t2);
                let next = (now + p.interval).min(p.give_up);
                if !reliable {
                    self.transmit(peer, bytes);
                }
                self.schedule(next, TimerTarget::Call(call, CallTimer::Retransmit2xx));
            }
        }
    }

    /// An ACK outside a server transaction: the ACK for our 2xx.
    pub(super) fn dialog_ack(&mut self, now: Instant, ack: &Request) {
        let id = crate::dialog::DialogId::of_received(&ack.headers);
        let Some(call) = self.dialogs.get(&id).copied() else {
            return;
        };
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let Some(pending) = c.pending_2xx.take() else {
            return; // a retransmitted ACK
        };
        let media = match pending.answer_in_ack {
            true => c.media_from_answer(&ack.body),
            false => None,
        };
        let first = c.state == CallState::Answered;
        c.state = CallState::Confirmed;
        let bye = c.bye_after_ack;
        if bye {
            self.send_bye(now, call);
            self.end_call(call, EndCause::LocalHangup);
            return;
        }
        if first {
            if pending.answer_in_ack && media.is_none() {
                // A late offer whose ACK has no usable answer: give up.
                self.send_bye(now, call);
                self.end_call(
                    call,
                    EndCause::Rejected {
                        status: 488,
                        reason: "no usable SDP answer in ACK".into(),
                    },
                );
                return;
            }
            self.events
                .push_back(Event::CallEstablished { call, media });
        } else if let Some(media) = media {
            self.events.push_back(Event::MediaChanged { call, media });
        }
    }

    /// Reject an incoming call that is not answered yet.
    pub fn reject(&mut self, now: Instant, call: CallId, status: u16) -> Result<(), EndpointError> {
        let c = self.calls.get(&call).ok_or(EndpointError::NoSuchCall)?;
        if c.state != CallState::Incoming || !(300..700).contains(&status) {
            return Err(EndpointError::BadState);
        }
        let key = c.invite_key.clone().ok_or(EndpointError::BadState)?;
        let resp = self.make_response(&c.invite, status, Some(&c.dialog.id.local_tag));
        let reason = resp.reason.clone();
        self.respond(now, &key, resp);
        self.end_call(call, EndCause::Rejected { status, reason });
        Ok(())
    }

    /// End a call in whatever state it is: BYE, CANCEL or a final response.
    pub fn hangup(&mut self, now: Instant, call: CallId) -> Result<(), EndpointError> {
        let c = self.calls.get_mut(&call).ok_or(EndpointError::NoSuchCall)?;
        match (c.role, c.state) {
            (_, CallState::Confirmed) => {
                self.send_bye(now, call);
                self.end_call(call, EndCause::LocalHangup);
            }
            (CallRole::Uas, CallState::Answered) => {
                // §15: wait for the ACK (or its timeout) before BYE.
                c.bye_after_ack = true;
            }
            (CallRole::Uas, _) => {
                return self.reject(now, call, 480);
            }
            (CallRole::Uac, _) => {
                if c.got_provisional {
                    self.send_cancel(now, call);
                } else {
                    c.cancel_pending = true;
                }
            }
        }
        Ok(())
    }

    /// Blind transfer (RFC 3515): ask the far end to call `target`. The
    /// answer comes as [`Event::ReferAnswered`], progress as
    /// [`Event::ReferProgress`].
    pub fn refer(&mut self, now: Instant, call: CallId, target: &Uri) -> Result<(), EndpointError> {
        let c = self.calls.get(&call).ok_or(EndpointError::NoSuchCall)?;
        if c.state != CallState::Confirmed {
            return Err(EndpointError::BadState);
        }
        let referred_by = format!("<{}>", c.dialog.local.uri);
        let (mut refer, peer) = self
            .dialog_request(call, Method::Refer, None)
            .ok_or(EndpointError::NoSuchCall)?;
        refer.headers.push("Refer-To", format!("<{target}>"));
        refer.headers.push("Referred-By", referred_by);
        self.start_client(now, refer, peer, TxOwner::Call(call));
        Ok(())
    }

    /// Send one DTMF digit as SIP INFO (`application/dtmf-relay`), for
    /// peers that didn't offer RFC 4733 telephone-event.
    pub fn send_info_dtmf(
        &mut self,
        now: Instant,
        call: CallId,
        digit: char,
        duration_ms: u32,
    ) -> Result<(), EndpointError> {
        let c = self.calls.get(&call).ok_or(EndpointError::NoSuchCall)?;
        if c.state != CallState::Confirmed {
            return Err(EndpointError::BadState);
        }
        let (mut info, peer) = self
            .dialog_request(call, Method::Info, None)
            .ok_or(EndpointError::NoSuchCall)?;
        info.headers
            .push("Content-Type", "application/dtmf-relay".to_string());
        info.body = bytes::Bytes::from(format!("Signal={digit}\r\nDuration={duration_ms}\r\n"));
        self.start_client(now, info, peer, TxOwner::Detached);
        Ok(())
    }

    pub(super) fn send_bye(&mut self, now: Instant, call: CallId) {
        if let Some((bye, peer)) = self.dialog_request(call, Method::Bye, None) {
            self.start_client(now, bye, peer, TxOwner::Detached);
        }
    }

    /// A request in the call's dialog (§12.2.1.1) and where it goes; ACK
    /// passes its INVITE's CSeq number as `cseq`.
    pub(super) fn dialog_request(
        &mut self,
        call: CallId,
        method: Method,
        cseq: Option<u32>,
    ) -> Option<(Request, Peer)> {
        let c = self.calls.get(&call)?;
        let peer = self.peer_for_dialog(c);
        let via = self.via_for(&peer);
        let contact = self.contact_uri(&peer);
        let c = self.calls.get_mut(&call)?;
        let ua = &self.config.user_agent;
        let request = c.dialog.make_request(method, &via, &contact, ua, cseq);
        Some((request, peer))
    }

    /// In-dialog requests go to the next hop if it is a literal address,
    /// else back where the dialog's messages came from.
    fn peer_for_dialog(&self, c: &Call) -> Peer {
        if c.pinned {
            return c.peer;
        }
        let hop = c.dialog.next_hop();
        let transport = Transport::of_uri(hop).unwrap_or(c.peer.transport);
        let host = hop.host.trim_matches(|ch| ch == '[' || ch == ']');
        let remote = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, hop.port.unwrap_or(5060)),
            Err(_) => c.peer.remote,
        };
        let conn = if transport == c.peer.transport && remote == c.peer.remote {
            c.peer.conn
        } else {
            None
        };
        let local = if transport == c.peer.transport {
            c.peer.local
        } else {
            self.local_for(transport).unwrap_or(c.peer.local)
        };
        Peer {
            transport,
            local,
            remote,
            conn,
        }
    }

    pub(super) fn end_call(&mut self, call: CallId, cause: EndCause) {
        if let Some(c) = self.calls.remove(&call) {
            self.dialogs.remove(&c.dialog.id);
            if let Some(source) = c.source {
                if let Some(n) = self.calls_by_source.get_mut(&source) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.calls_by_source.remove(&source);
                    }
                }
            }
            self.events.push_back(Event::CallEnded { call, cause });
        }
    }

    /// Place a call. Progress arrives as events.
    pub fn invite(&mut self, now: Instant, spec: OutgoingCall) -> Result<CallId, EndpointError> {
        let peer = match spec.flow {
            Some(flow) => flow,
            None => Peer {
                transport: spec.transport,
                local: self.local_for(spec.transport)?,
                remote: spec.destination,
                conn: None,
            },
        };
        let advertised = self.advertised(peer.local);
        let from_uri = Uri::parse(&format!("sip:{}@{}", spec.from_user, host_port(advertised)))
            .map_err(|e| EndpointError::Uri(e.to_string()))?;
        let from = NameAddr {
            display: spec.from_display.clone(),
            uri: from_uri,
            params: vec![("tag".into(), Some(new_tag(&mut self.id_rng)))],
        };
        let to = NameAddr {
            display: None,
            uri: spec.target.clone(),
            params: Vec::new(),
        };
        let call_id = new_call_id(&mut self.id_rng, &advertised.ip().to_string());
        let mut headers = Headers::new();
        headers.push("Via", self.via_for(&peer).to_string());
        headers.push("Max-Forwards", spec.max_forwards.to_string());
        headers.push("From", from.to_string());
        headers.push("To", to.to_string());
        headers.push("Call-ID", call_id.clone());
        headers.push("CSeq", "1 INVITE");
        headers.push("Contact", format!("<{}>", self.contact_uri(&peer)));
        headers.push("Allow", ALLOW);
        headers.push("Supported", SUPPORTED);
        let timers = self.config.session_timer;
        if timers.session_expires > 0 {
            // RFC 4028 §7.1: no refresher named; the UAS picks.
            headers.push("Session-Expires", timers.session_expires.to_string());
            headers.push("Min-SE", timers.min_se.to_string());
        }
        headers.push("User-Agent", self.config.user_agent.clone());
        for (k, v) in &spec.extra_headers {
            headers.push(k, v.clone());
        }
        headers.push("Content-Type", "application/sdp");
        let body = Bytes::from(crate::sdp::offer(
            &spec.local_media,
            crate::sdp::Direction::SendRecv,
        ));
        let request = Request {
            method: Method::Invite,
            uri: spec.target.clone(),
            headers,
            body: body.clone(),
        };
        let call = CallId(self.next_call);
        self.next_call += 1;
        self.counters.calls_started += 1;
        let dialog = Dialog {
            id: crate::dialog::DialogId {
                call_id,
                local_tag: from.tag().unwrap_or_default().to_string(),
                remote_tag: String::new(),
            },
            state: DialogState::Early,
            local: from,
            remote: to,
            local_seq: 1,
            remote_seq: None,
            remote_target: spec.target.clone(),
            route_set: Vec::new(),
        };
        let key = self.start_client(now, request.clone(), peer, TxOwner::Call(call));
        self.calls.insert(
            call,
            Box::new(Call {
                role: CallRole::Uac,
                state: CallState::Outgoing,
                dialog,
                invite: request,
                invite_key: None,
                client_key: Some(key),
                peer,
                offer: None,
                local_media: Some(spec.local_media),
                pending_2xx: None,
                bye_after_ack: false,
                cancel_pending: false,
                cancelled: false,
                trunk: None,
                got_provisional: false,
                credentials: spec.credentials,
                auth_tried: false,
                source: None,
                caps: PeerCaps::default(),
                agreed_timer: None,
                session: None,
                local_sdp: Some(body),
                refresh: None,
                reliable: None,
                early_media: None,
                refer_in: None,
                pinned: spec.flow.is_some(),
            }),
        );
        Ok(call)
    }

    fn send_cancel(&mut self, now: Instant, call: CallId) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        // §9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via.
        let inv = &c.invite;
        let mut headers = Headers::new();
        if let Some(v) = inv.headers.get("Via") {
            headers.push("Via", v);
        }
        for r in inv.headers.get_all("Route") {
            headers.push("Route", r);
        }
        headers.push("Max-Forwards", "70");
        for name in ["From", "To", "Call-ID"] {
            if let Some(v) = inv.headers.get(name) {
                headers.push(name, v);
            }
        }
        let seq = inv.headers.cseq().map(|c| c.seq).unwrap_or(1);
        headers.push("CSeq", format!("{seq} CANCEL"));
        let cancel = Request {
            method: Method::Cancel,
            uri: inv.uri.clone(),
            headers,
            body: Bytes::new(),
        };
        let peer = c.peer;
        if let Some(c) = self.calls.get_mut(&call) {
            c.cancelled = true;
        }
        self.start_client(now, cancel, peer, TxOwner::Detached);
    }

    /// A response for one of a call's client transactions.
    pub(super) fn call_response(
        &mut self,
        now: Instant,
        call: CallId,
        request: &Request,
        resp: &Response,
    ) {
        if request.method == Method::Refer {
            if resp.status >= 200 {
                self.events.push_back(Event::ReferAnswered {
                    call,
                    status: resp.status,
                });
            }
            return;
        }
        let refresh = self
            .calls
            .get(&call)
            .and_then(|c| c.refresh.as_ref())
            .is_some_and(|r| r.is(request));
        if refresh {
            return self.refresh_response(now, call, request, resp);
        }
        if request.method != Method::Invite {
            return;
        }
        let Some(c) = self.calls.get_mut(&call) else {
            // Answered after we gave up: ACK and BYE so the far end hangs up.
            if (200..300).contains(&resp.status) {
                self.reack(now, resp);
            }
            return;
        };
        match resp.status {
            100 => {
                // §9.1: any provisional, 100 included, allows CANCEL.
                c.got_provisional = true;
                if c.cancel_pending {
                    c.cancel_pending = false;
                    self.send_cancel(now, call);
                }
            }
            101..=199 => {
                c.got_provisional = true;
                if let Ok(to) = resp.headers.to() {
                    if let Some(tag) = to.tag() {
                        c.dialog.id.remote_tag = tag.to_string();
                    }
                }
                if c.cancel_pending {
                    c.cancel_pending = false;
                    self.send_cancel(now, call);
                } else {
                    self.prack_if_reliable(now, call, request, resp);
                    self.early_answer(call, resp);
                    self.events.push_back(Event::Progress {
                        call,
                        status: resp.status,
                    });
                }
            }
            200..=299 => self.uac_answered(now, call, request, resp),
            401 | 407 if !c.auth_tried && c.credentials.is_some() => {
                c.auth_tried = true;
                self.retry_with_auth(now, call, request, resp);
            }
            422 if self.retry_with_longer_timer(now, call, request, resp) => {}
            _ => {
                self.refused(call, resp);
                let reason = resp.reason.clone();
                self.end_call(
                    call,
                    EndCause::Rejected {
                        status: resp.status,
                        reason,
                    },
                );
            }
        }
    }

    /// Tell the application where or when a refusal says to try next.
    fn refused(&mut self, call: CallId, resp: &Response) {
        let retry_after = resp.headers.get("Retry-After").and_then(|v| {
            let digits: String = v.trim().chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        });
        let contacts = if (300..400).contains(&resp.status) {
            resp.headers.contacts().unwrap_or_default()
        } else {
            Vec::new()
        };
        if retry_after.is_some() || !contacts.is_empty() {
            self.events.push_back(Event::Refused {
                call,
                status: resp.status,
                retry_after,
                contacts,
            });
        }
    }

    fn uac_answered(&mut self, now: Instant, call: CallId, request: &Request, resp: &Response) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        if c.state == CallState::Confirmed {
            // A retransmitted 2xx: the ACK got lost.
            self.reack(now, resp);
            return;
        }
        let Ok(mut dialog) = Dialog::new_uac(request, resp) else {
            return;
        };
        // PRACKs in the early dialog already used CSeq numbers.
        dialog.local_seq = dialog.local_seq.max(c.dialog.local_seq);
        // No SDP in the 2xx: the answer came in a provisional (RFC 3262).
        let media = match resp.body.is_empty() {
            true => c.early_media.take().map(|m| *m),
            false => c.media_from_answer(&resp.body),
        };
        c.dialog = dialog;
        c.state = CallState::Confirmed;
        c.caps = PeerCaps::of(&resp.headers);
        c.reliable = None;
        let cancelled = c.cancel_pending || c.cancelled;
        let id = c.dialog.id.clone();
        self.dialogs.insert(id, call);
        let seq = request.headers.cseq().map(|c| c.seq).unwrap_or(1);
        self.send_ack(now, call, seq);
        if cancelled || media.is_none() {
            // Answered after we cancelled, or an answer we can't use.
            self.send_bye(now, call);
            self.end_call(
                call,
                if cancelled {
                    EndCause::LocalHangup
                } else {
                    EndCause::Rejected {
                        status: 488,
                        reason: "no usable SDP answer".into(),
                    }
                },
            );
            return;
        }
        self.session_refreshed(
            now,
            call,
            crate::session_timer::from_response(&resp.headers),
        );
        self.events
            .push_back(Event::CallEstablished { call, media });
    }

    /// ACK a 2xx to our INVITE or re-INVITE numbered `seq`.
    pub(super) fn send_ack(&mut self, _now: Instant, call: CallId, seq: u32) {
        if let Some((ack, peer)) = self.dialog_request(call, Method::Ack, Some(seq)) {
            self.transmit(peer, Bytes::from(ack.to_bytes()));
        }
    }

    /// ACK a retransmitted 2xx of a dialog we still hold (§13.2.2.4); a 2xx
    /// for a call already gone is counted as stray.
    pub(super) fn reack(&mut self, now: Instant, resp: &Response) {
        let id = crate::dialog::DialogId::of_response(&resp.headers);
        if let Some(call) = self.dialogs.get(&id).copied() {
            let seq = resp.headers.cseq().map(|c| c.seq).unwrap_or(1);
            self.send_ack(now, call, seq);
        } else {
            self.counters.stray_responses += 1;
        }
    }

    fn retry_with_auth(&mut self, now: Instant, call: CallId, request: &Request, resp: &Response) {
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        let header = if resp.status == 407 {
            "Proxy-Authenticate"
        } else {
            "WWW-Authenticate"
        };
        let Some(challenge) = resp
            .headers
            .get(header)
            .and_then(|h| Challenge::parse(h).ok())
        else {
            let reason = resp.reason.clone();
            self.end_call(
                call,
                EndCause::Rejected {
                    status: resp.status,
                    reason,
                },
            );
            return;
        };
        let Some((user, pass)) = c.credentials.clone() else {
            return;
        };
        let mut client = DigestClient::new(&user, pass.expose());
        let value = client.authorize(&challenge, "INVITE", &request.uri.to_string());
        let auth_header = if resp.status == 407 {
            "Proxy-Authorization"
        } else {
            "Authorization"
        };
        self.reissue_invite(now, call, request, &[(auth_header, value)]);
    }

    /// Send our INVITE again with the next CSeq, a new branch and `set`
    /// headers replaced: after a digest challenge, or a 422.
    pub(super) fn reissue_invite(
        &mut self,
        now: Instant,
        call: CallId,
        request: &Request,
        set: &[(&str, String)],
    ) {
        let Some(peer) = self.calls.get(&call).map(|c| c.peer) else {
            return;
        };
        let via = self.via_for(&peer);
        let mut retry = request.clone();
        let seq = request.headers.cseq().map(|c| c.seq).unwrap_or(1) + 1;
        retry.headers.set("CSeq", format!("{seq} INVITE"));
        for (name, value) in set {
            retry.headers.set(name, value.clone());
        }
        retry.headers.set("Via", via.to_string());
        let Some(c) = self.calls.get_mut(&call) else {
            return;
        };
        c.invite = retry.clone();
        c.dialog.local_seq = seq;
        let key = self.start_client(now, retry, peer, TxOwner::Call(call));
        if let Some(c) = self.calls.get_mut(&call) {
            c.client_key = Some(key);
        }
    }

    /// Give up on our INVITE if nothing at all (not even 100 Trying) came
    /// back for it: its transaction is dropped and the call ends as a
    /// timeout, so the application can try another target sooner than
    /// Timer B. False (and nothing done) once any response came.
    pub fn give_up_unanswered(&mut self, call: CallId) -> bool {
        let Some(c) = self.calls.get(&call) else {
            return false;
        };
        if c.role != CallRole::Uac || c.state != CallState::Outgoing || c.got_provisional {
            return false;
        }
        if let Some(key) = c.client_key.clone() {
            self.client_txs.remove(&key);
        }
        self.end_call(call, EndCause::Timeout);
        true
    }

    pub(super) fn call_failed(&mut self, _now: Instant, call: CallId, cause: EndCause) {
        self.end_call(call, cause);
    }
}
