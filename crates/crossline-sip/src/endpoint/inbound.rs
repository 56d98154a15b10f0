//! Incoming requests: transaction matching, then the UAS core (§8.2).

use std::time::Instant;

use bytes::Bytes;

use super::calls::{Call, CallRole, CallState};
use super::util::{parse_dtmf_relay, sent_by, stamp_received};
use super::FORWARDED_BY;
use super::{
    CallId, EndCause, Endpoint, Event, IncomingCall, Peer, ServerEntry, ServerKey, ServerTx,
    ACCEPT, ALLOW,
};
use crate::auth::Verdict;
use crate::message::{Method, Request, Response};
use crate::transaction::{ServerInvite, ServerNonInvite};

impl Endpoint {
    pub(super) fn handle_request(&mut self, now: Instant, peer: Peer, mut req: Request) {
        stamp_received(&mut req, peer.remote);
        let Ok(via) = req.headers.top_via() else {
            return;
        };
        let branch = match via.branch() {
            Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
            // RFC 2543 peers: fall back to the request's identity (§17.2.3).
            other => format!(
                "2543:{}:{}:{}:{}",
                other.unwrap_or(""),
                req.headers.call_id().unwrap_or(""),
                req.headers.cseq().map(|c| c.seq).unwrap_or(0),
                req.headers
                    .from()
                    .ok()
                    .and_then(|f| f.tag().map(str::to_string))
                    .unwrap_or_default()
            ),
        };
        let key = ServerKey {
            branch,
            sent_by: sent_by(&via),
            method: match req.method {
                Method::Ack => Method::Invite,
                ref m => m.clone(),
            },
        };

        if req.method == Method::Ack {
            if let Some(entry) = self.server_txs.get_mut(&key) {
                if let ServerTx::Invite(tx) = &mut entry.tx {
                    if tx.state() != crate::transaction::ServerState::Completed {
                        // An ACK for our 2xx that reused the INVITE's branch.
                        self.dialog_ack(now, &req);
                        return;
                    }
                    let out = tx.on_ack(now);
                    self.apply_server_outputs(&key, out);
                    return;
                }
            }
            self.dialog_ack(now, &req);
            return;
        }

        if let Some(entry) = self.server_txs.get_mut(&key) {
            self.counters.retransmissions_absorbed += 1;
            let out = match &mut entry.tx {
                ServerTx::Invite(tx) => tx.on_retransmission(),
                ServerTx::NonInvite(tx) => tx.on_retransmission(),
            };
            self.apply_server_outputs(&key, out);
            return;
        }

        // Anything that matches no dialog or transaction of ours is new:
        // CANCELs and INVITEs with a To tag included, or they'd be a way
        // around the rate and a source of 481 floods.
        let known = match req.method {
            Method::Cancel => self.server_txs.contains_key(&ServerKey {
                method: Method::Invite,
                ..key.clone()
            }),
            _ => {
                req.headers.to().ok().is_some_and(|t| t.tag().is_some())
                    && self
                        .dialogs
                        .contains_key(&crate::dialog::DialogId::of_received(&req.headers))
            }
        };
        if !known {
            let trunk = self
                .config
                .inbound_trunks
                .iter()
                .any(|t| t.cidrs.iter().any(|c| c.contains(peer.remote.ip())));
            let ua = req.headers.get("User-Agent");
            let client = self.admission.client_of(peer.remote.ip(), &req.headers);
            match self.admission.check(now, client, ua, trunk) {
                super::admission::Verdict::Admit => {}
                super::admission::Verdict::Scanner => {
                    self.counters.scanners_dropped += 1;
                    return;
                }
                super::admission::Verdict::RateLimited => {
                    self.counters.rate_limited += 1;
                    return;
                }
                super::admission::Verdict::Banned => {
                    self.counters.banned_dropped += 1;
                    return;
                }
            }
        }

        // A new server transaction.
        let reliable = peer.transport.reliable();
        let tx = if req.method == Method::Invite {
            ServerTx::Invite(ServerInvite::new(reliable, self.config.timers))
        } else {
            ServerTx::NonInvite(ServerNonInvite::new(reliable, self.config.timers))
        };
        let response_peer =
            super::util::response_destination(peer, &Response::for_request(&req, 100));
        self.server_txs.insert(
            key.clone(),
            ServerEntry {
                tx,
                peer: response_peer,
                call: None,
                merge_key: None,
            },
        );
        self.uas_core(now, key, peer, req);
    }

    /// Send a response inside the server transaction `key`.
    pub(super) fn respond(&mut self, now: Instant, key: &ServerKey, resp: Response) {
        *self.counters.responses_sent.entry(resp.status).or_default() += 1;
        let status = resp.status;
        let bytes = Bytes::from(resp.to_bytes());
        let Some(entry) = self.server_txs.get_mut(key) else {
            return;
        };
        let out = match &mut entry.tx {
            ServerTx::Invite(tx) => tx.respond(now, status, bytes),
            ServerTx::NonInvite(tx) => tx.respond(now, status, bytes),
        };
        self.apply_server_outputs(key, out);
    }

    /// A response to `req` with our Server header and, for dialog-forming
    /// responses, our To tag.
    pub(super) fn make_response(
        &self,
        req: &Request,
        status: u16,
        to_tag: Option<&str>,
    ) -> Response {
        let mut resp = Response::for_request(req, status);
        if let (Some(tag), Ok(mut to)) = (to_tag, resp.headers.to()) {
            if to.tag().is_none() && status > 100 {
                to.set_tag(tag);
                resp.headers.set("To", to.to_string());
            }
        }
        // §12.1.1: dialog-forming responses carry the Record-Route set.
        if req.method == Method::Invite && (101..300).contains(&status) {
            for rr in req.headers.get_all("Record-Route") {
                resp.headers.push("Record-Route", rr);
            }
        }
        resp.headers.push("Server", self.config.user_agent.clone());
        if status == 488 {
            // RFC 3261 §20.43: say why, so the far end can log it.
            resp.headers.push(
                "Warning",
                format!(
                    "305 {} \"Incompatible media format\"",
                    warn_agent(&self.config.user_agent)
                ),
            );
        }
        resp
    }

    /// §21.4.7: the answer would carry SDP, but the request's Accept (when
    /// present) rules it out (RFC 4475 sdp01).
    fn refuses_sdp(req: &Request) -> bool {
        req.headers.get("Accept").is_some()
            && !req.headers.tokens("Accept").iter().any(|t| {
                let media = t.split(';').next().unwrap_or("").trim();
                ["application/sdp", "application/*", "*/*"]
                    .iter()
                    .any(|ok| media.eq_ignore_ascii_case(ok))
            })
    }

    pub(super) fn reply(&mut self, now: Instant, key: &ServerKey, req: &Request, status: u16) {
        let tag = super::util::new_tag(&mut self.id_rng);
        let mut resp = self.make_response(req, status, Some(&tag));
        match status {
            405 => resp.headers.push("Allow", ALLOW),
            406 | 415 => {
                resp.headers.push("Accept", ACCEPT);
            }
            503 => {
                let wait = if self.overloaded && !self.draining {
                    self.config.overload_retry_after_secs
                } else {
                    self.config.drain_retry_after_secs
                };
                resp.headers.push("Retry-After", wait.to_string());
            }
            _ => {}
        }
        self.respond(now, key, resp);
    }

    fn uas_core(&mut self, now: Instant, key: ServerKey, peer: Peer, req: Request) {
        // RFC 4475 multi01, mcl01: a header that takes one value given
        // several; which one the sender meant is anyone's guess.
        if SINGLE_VALUED
            .iter()
            .any(|h| req.headers.get_all(h).nth(1).is_some())
        {
            self.counters.parse_errors += 1;
            self.reply(now, &key, &req, 400);
            return;
        }
        // §8.2.2.1: a Request-URI scheme we don't serve (RFC 4475 unkscm).
        if !["sip", "sips", "tel"].contains(&req.uri.scheme.as_str()) {
            self.reply(now, &key, &req, 416);
            return;
        }
        // §8.2.2.3: options we don't support.
        let unsupported: Vec<String> = req
            .headers
            .tokens("Require")
            .into_iter()
            .filter(|t| {
                !super::SUPPORTED
                    .split(", ")
                    .any(|s| !s.is_empty() && s == t)
            })
            .collect();
        if !unsupported.is_empty() && req.method != Method::Cancel {
            let tag = super::util::new_tag(&mut self.id_rng);
            let mut resp = self.make_response(&req, 420, Some(&tag));
            resp.headers.push("Unsupported", unsupported.join(", "));
            self.respond(now, &key, resp);
            return;
        }
        if let Ok(Some(0)) = req.headers.max_forwards() {
            if req.method != Method::Options {
                self.reply(now, &key, &req, 483);
                return;
            }
        }
        let to_tag = req
            .headers
            .to()
            .ok()
            .and_then(|t| t.tag().map(str::to_string));
        if to_tag.is_some() {
            self.in_dialog_request(now, key, req);
            return;
        }
        match req.method {
            Method::Invite => self.new_invite(now, key, peer, req),
            // Load balancers ping with OPTIONS: while draining, 503 takes
            // this node out of their rotation before calls bounce off it.
            Method::Options if self.draining => self.reply(now, &key, &req, 503),
            Method::Options if self.overloaded => {
                self.counters.overload_options += 1;
                self.reply(now, &key, &req, 503);
            }
            Method::Options => {
                let tag = super::util::new_tag(&mut self.id_rng);
                let mut resp = self.make_response(&req, 200, Some(&tag));
                resp.headers.push("Allow", ALLOW);
                resp.headers.push("Accept", ACCEPT);
                // Present even when empty: it says no extension is needed
                // (RFC 3261 §11.2 lists it in the OPTIONS answer).
                resp.headers.push("Supported", super::SUPPORTED);
                self.respond(now, &key, resp);
            }
            Method::Cancel => self.cancel(now, key, &req),
            Method::Register => self.register(now, key, peer, req),
            Method::Bye | Method::Info | Method::Update | Method::Prack | Method::Notify => {
                self.reply(now, &key, &req, 481)
            }
            // §21.5.2: a method we don't know at all is 501; one we know
            // but don't take here is 405.
            Method::Extension(_) => self.reply(now, &key, &req, 501),
            _ => self.reply(now, &key, &req, 405),
        }
    }

    fn new_invite(&mut self, now: Instant, key: ServerKey, peer: Peer, req: Request) {
        if self.draining {
            self.reply(now, &key, &req, 503);
            return;
        }
        if self.overloaded {
            self.counters.overload_refused += 1;
            self.reply(now, &key, &req, 503);
            return;
        }
        if Self::refuses_sdp(&req) {
            self.reply(now, &key, &req, 406);
            return;
        }
        // §8.2.2.2: the same request via another path is a loop/merge.
        let from_tag = req
            .headers
            .from()
            .ok()
            .and_then(|f| f.tag().map(str::to_string))
            .unwrap_or_default();
        let call_id = req.headers.call_id().unwrap_or_default().to_string();
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        let merge_key = (call_id.clone(), from_tag, seq);
        match self.pending_invites.get(&merge_key) {
            Some(branch) if branch != &key.branch => {
                self.reply(now, &key, &req, 482);
                return;
            }
            _ => {
                self.pending_invites
                    .insert(merge_key.clone(), key.branch.clone());
                if let Some(entry) = self.server_txs.get_mut(&key) {
                    entry.merge_key = Some(merge_key);
                }
            }
        }
        if !req.body.is_empty() {
            let ct = req.headers.content_type().unwrap_or("application/sdp");
            if !ct
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/sdp")
            {
                self.reply(now, &key, &req, 415);
                return;
            }
        }
        let offer = if req.body.is_empty() {
            None
        } else {
            match std::str::from_utf8(&req.body)
                .ok()
                .and_then(|t| crate::sdp::SessionDescription::parse(t).ok())
            {
                Some(sdp) => Some(sdp),
                None => {
                    self.reply(now, &key, &req, 400);
                    return;
                }
            }
        };
        // A From naming one of our users must prove it, from anywhere;
        // other calls go by the trunk policy.
        let user = self.calling_user(&req);
        let trunk = match &user {
            Some(user) => {
                if !self.authorize_user_call(now, &key, peer, &req, user) {
                    return;
                }
                None
            }
            None => match self.authorize_inbound(now, &key, peer, &req) {
                Some(trunk) => trunk,
                None => return,
            },
        };
        if let Some(Err(why)) = offer
            .as_ref()
            .map(|o| crate::sdp::answerable(o, &self.config.codecs))
        {
            tracing::info!(%why, "INVITE refused: no audio stream we can carry");
            self.counters.media_refused += 1;
            self.reply(now, &key, &req, 488);
            return;
        }
        // RFC 4028: a Session-Expires below our Min-SE gets 422 now.
        let Some(timer) = self.timer_for_request(now, &key, &req, None) else {
            return;
        };
        if self.over_capacity(trunk.as_deref()) {
            self.counters.over_capacity += 1;
            self.reply(now, &key, &req, 503);
            return;
        }
        let source = crate::net::source_key(peer.remote.ip());
        if let Some(cap) = self
            .admission
            .calls_cap_for(peer.remote.ip(), trunk.is_some())
        {
            if self.calls_by_source.get(&source).copied().unwrap_or(0) >= cap {
                self.counters.over_source_share += 1;
                self.reply(now, &key, &req, 503);
                return;
            }
        }
        let local_tag = super::util::new_tag(&mut self.id_rng);
        let first_seq = super::util::first_local_seq(&mut self.id_rng);
        let dialog = match crate::dialog::Dialog::new_uas(&req, &local_tag, first_seq) {
            Ok(d) => d,
            Err(_) => {
                self.reply(now, &key, &req, 400);
                return;
            }
        };
        let call = CallId(self.next_call);
        self.next_call += 1;
        self.counters.calls_started += 1;
        // 100 Trying at once: our flows may take longer than 200 ms to decide.
        let trying = self.make_response(&req, 100, None);
        self.respond(now, &key, trying);
        if let Some(entry) = self.server_txs.get_mut(&key) {
            entry.call = Some(call);
        }
        let from = req.headers.from().ok();
        let event = IncomingCall {
            call,
            call_id,
            did: req.uri.user.clone().unwrap_or_default(),
            caller: from
                .as_ref()
                .and_then(|f| f.uri.user.clone())
                .unwrap_or_default(),
            caller_display: from.and_then(|f| f.display),
            identity: super::identity::CallerIdentity::of(&req),
            source: peer.remote,
            trunk,
            user,
            has_offer: offer.is_some(),
            web_call: req
                .headers
                .get("X-Crossline-Web-Call")
                .map(|v| v.trim().chars().take(64).collect()),
            forwarded_by: req
                .headers
                .get(FORWARDED_BY)
                .map(|v| v.trim().chars().take(64).collect()),
            max_forwards: match req.headers.max_forwards() {
                Ok(Some(n)) => u8::try_from(n).unwrap_or(u8::MAX),
                _ => super::calls::MAX_FORWARDS,
            },
        };
        self.dialogs.insert(dialog.id.clone(), call);
        let caps = super::calls::PeerCaps::of(&req.headers);
        let mut new_call = Call::new_uas(call, dialog, req, key, peer, offer);
        new_call.caps = caps;
        new_call.agreed_timer = timer;
        new_call.trunk = event.trunk.clone();
        new_call.source = Some(source);
        *self.calls_by_source.entry(source).or_default() += 1;
        self.calls.insert(call, Box::new(new_call));
        self.events.push_back(Event::IncomingCall(event));
    }

    /// Too many calls already, in total or on this trunk?
    fn over_capacity(&self, trunk: Option<&str>) -> bool {
        let max = self.admission.max_calls();
        if max > 0 && self.calls.len() >= max {
            return true;
        }
        let Some(name) = trunk else {
            return false;
        };
        let Some(limit) = self
            .config
            .inbound_trunks
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.max_calls)
            .filter(|m| *m > 0)
        else {
            return false;
        };
        self.calls
            .values()
            .filter(|c| c.trunk.as_deref() == Some(name))
            .count()
            >= limit
    }

    /// Trunk policy: source CIDRs, then digest when the trunk has
    /// credentials. Returns `Some(trunk name)` to go on; `None` means a
    /// response was already sent.
    fn authorize_inbound(
        &mut self,
        now: Instant,
        key: &ServerKey,
        peer: Peer,
        req: &Request,
    ) -> Option<Option<String>> {
        if self.config.inbound_trunks.is_empty() {
            return Some(None);
        }
        let ip = peer.remote.ip();
        let trunk = self
            .config
            .inbound_trunks
            .iter()
            .find(|t| t.cidrs.iter().any(|c| c.contains(ip)))
            .or_else(|| {
                // Trunks known by credentials alone: the one whose user the
                // request names, else the first (to challenge).
                let auth = req
                    .headers
                    .get("Proxy-Authorization")
                    .or_else(|| req.headers.get("Authorization"))
                    .unwrap_or_default();
                let mut by_credentials = self
                    .config
                    .inbound_trunks
                    .iter()
                    .filter(|t| t.cidrs.is_empty() && t.credentials.is_some());
                let named = by_credentials.clone().find(|t| {
                    t.credentials
                        .as_ref()
                        .is_some_and(|(user, _)| auth.contains(&format!("username=\"{user}\"")))
                });
                named.or_else(|| by_credentials.next())
            })
            .cloned();
        let Some(trunk) = trunk else {
            self.reply(now, key, req, 403);
            return None;
        };
        let Some((user, pass)) = trunk.credentials.clone() else {
            return Some(Some(trunk.name));
        };
        // Failures count against the caller, behind a trusted proxy too.
        let ip = self.admission.client_of(ip, &req.headers);
        let authorization = req
            .headers
            .get("Proxy-Authorization")
            .or_else(|| req.headers.get("Authorization"));
        // The user named, for per-user failure counts (checked or not).
        let named = authorization
            .and_then(|a| crate::auth::DigestResponse::parse(a).ok())
            .map(|d| d.username)
            .unwrap_or_default();
        if authorization.is_some()
            && self.admission.user_gate(now, ip, &named) == super::admission::UserGate::Refuse
        {
            self.counters.auth_refused_banned_user += 1;
            self.reply(now, key, req, 403);
            return None;
        }
        let request_uri = req.uri.to_string();
        let verdict = authorization.map(|auth| {
            self.digest
                .verify(now, auth, req.method.as_str(), &request_uri, |u| {
                    (u == user).then(|| pass.expose().to_string())
                })
        });
        let stale = match verdict {
            Some(Verdict::Authorized { .. }) => {
                self.admission.auth_ok(now, ip, &named);
                return Some(Some(trunk.name));
            }
            Some(Verdict::Stale) => true,
            Some(Verdict::Rejected(_)) => {
                self.counters.auth_failures += 1;
                self.admission.auth_failed(now, ip, &named);
                self.counters.bans_sources = self.admission.bans_started.sources;
                self.counters.bans_users = self.admission.bans_started.users;
                false
            }
            None => false,
        };
        let tag = super::util::new_tag(&mut self.id_rng);
        let mut resp = self.make_response(req, 407, Some(&tag));
        // RFC 8760 §2.4: one challenge per algorithm, the preferred first;
        // a UA answers the first it supports (older ones only know MD5).
        let algorithms = match trunk.digest_algorithms.as_slice() {
            [] => &[crate::auth::Algorithm::Sha256, crate::auth::Algorithm::Md5][..],
            chosen => chosen,
        };
        for &algorithm in algorithms {
            let challenge = self.digest.challenge(now, algorithm, stale);
            resp.headers
                .push("Proxy-Authenticate", challenge.to_header_value());
        }
        self.respond(now, key, resp);
        None
    }

    fn cancel(&mut self, now: Instant, key: ServerKey, req: &Request) {
        let invite_key = ServerKey {
            method: Method::Invite,
            ..key.clone()
        };
        let call = self.server_txs.get(&invite_key).and_then(|e| e.call);
        let Some(call) = call else {
            self.reply(now, &key, req, 481);
            return;
        };
        // §9.2: the 200 to CANCEL carries the To tag of our INVITE responses.
        let tag = self.calls.get(&call).map(|c| c.dialog.id.local_tag.clone());
        let ok = self.make_response(req, 200, tag.as_deref());
        self.respond(now, &key, ok);
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if c.state != CallState::Incoming {
            // Already answered: CANCEL has no effect on the INVITE (§9.2).
            return;
        }
        let invite = c.invite.clone();
        let tag = c.dialog.id.local_tag.clone();
        let resp = self.make_response(&invite, 487, Some(&tag));
        self.respond(now, &invite_key, resp);
        self.end_call(call, EndCause::Cancelled);
    }

    fn in_dialog_request(&mut self, now: Instant, key: ServerKey, req: Request) {
        let id = crate::dialog::DialogId::of_received(&req.headers);
        let Some(call) = self.dialogs.get(&id).copied() else {
            self.reply(now, &key, &req, 481);
            return;
        };
        let seq = req.headers.cseq().map(|c| c.seq).unwrap_or(0);
        let Some(c) = self.calls.get_mut(&call) else {
            self.reply(now, &key, &req, 481);
            return;
        };
        if !c.dialog.accept_remote_cseq(seq) {
            let mut resp = self.make_response(&req, 500, None);
            resp.reason = "CSeq Out Of Order".into();
            self.respond(now, &key, resp);
            return;
        }
        if let Some(entry) = self.server_txs.get_mut(&key) {
            entry.call = Some(call);
        }
        match req.method {
            Method::Bye => {
                // §15.1.2: a BYE before we answered ends the INVITE with 487.
                let early = self
                    .calls
                    .get(&call)
                    .filter(|c| c.state == CallState::Incoming)
                    .and_then(|c| {
                        c.invite_key()
                            .cloned()
                            .map(|k| (k, c.invite.clone(), c.dialog.id.local_tag.clone()))
                    });
                if let Some((invite_key, invite, tag)) = early {
                    let resp = self.make_response(&invite, 487, Some(&tag));
                    self.respond(now, &invite_key, resp);
                }
                let ok = self.make_response(&req, 200, None);
                self.respond(now, &key, ok);
                self.end_call(call, EndCause::RemoteBye);
            }
            Method::Invite => self.reinvite(now, key, call, req),
            Method::Info => {
                let ct = req
                    .headers
                    .content_type()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if ct.starts_with("application/dtmf-relay") || ct.starts_with("application/dtmf") {
                    let ok = self.make_response(&req, 200, None);
                    self.respond(now, &key, ok);
                    if let Some((digit, duration_ms)) = parse_dtmf_relay(&req.body) {
                        self.events.push_back(Event::Dtmf {
                            call,
                            digit,
                            duration_ms,
                        });
                    }
                } else if req.body.is_empty() {
                    // An empty INFO is a keep-alive probe.
                    let ok = self.make_response(&req, 200, None);
                    self.respond(now, &key, ok);
                } else {
                    self.reply(now, &key, &req, 415);
                }
            }
            Method::Options => {
                let mut ok = self.make_response(&req, 200, None);
                ok.headers.push("Allow", ALLOW);
                ok.headers.push("Accept", ACCEPT);
                self.respond(now, &key, ok);
            }
            Method::Cancel => self.cancel(now, key, &req),
            Method::Notify => self.refer_notify(now, key, call, &req),
            Method::Update => self.update(now, key, call, req),
            Method::Prack => self.prack(now, key, call, &req),
            Method::Refer => self.incoming_refer(now, key, call, req),
            _ => self.reply(now, &key, &req, 405),
        }
    }

    /// RFC 3515 §2.4.5: NOTIFYs for our REFER carry the new call's status
    /// line as message/sipfrag.
    fn refer_notify(&mut self, now: Instant, key: ServerKey, call: CallId, req: &Request) {
        let event = req
            .headers
            .get("Event")
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if !event.starts_with("refer") {
            let mut resp = self.make_response(req, 489, None);
            resp.reason = "Bad Event".into();
            self.respond(now, &key, resp);
            return;
        }
        let ok = self.make_response(req, 200, None);
        self.respond(now, &key, ok);
        let status = std::str::from_utf8(&req.body)
            .ok()
            .and_then(|b| b.lines().next())
            .and_then(|line| line.trim().strip_prefix("SIP/2.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok());
        if let Some(status) = status {
            self.events.push_back(Event::ReferProgress { call, status });
        }
    }

    fn reinvite(&mut self, now: Instant, key: ServerKey, call: CallId, req: Request) {
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        if (c.role == CallRole::Uas && c.state != CallState::Confirmed) || self.offer_pending(call)
        {
            // §14.2: a re-INVITE while an offer of ours is pending.
            return self.refuse_glare(now, &key, &req);
        }
        let current = c.session.as_ref().map(|s| s.timer);
        let Some(timer) = self.timer_for_request(now, &key, &req, current) else {
            return;
        };
        let offer = if req.body.is_empty() {
            None
        } else {
            std::str::from_utf8(&req.body)
                .ok()
                .and_then(|t| crate::sdp::SessionDescription::parse(t).ok())
        };
        if !req.body.is_empty() && offer.is_none() {
            self.reply(now, &key, &req, 488);
            return;
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.dialog.refresh_target(&req);
        }
        let (negotiated, body) = match offer {
            Some(offer) => match self.answer_in_dialog(call, &offer) {
                Some((n, body)) => (Some(n), body),
                None => {
                    self.reply(now, &key, &req, 488);
                    return;
                }
            },
            // No offer: we offer; the ACK answers.
            None => match self.offer_in_dialog(call) {
                Some(sdp) => (None, sdp),
                None => {
                    self.reply(now, &key, &req, 488);
                    return;
                }
            },
        };
        let Some(c) = self.calls.get(&call) else {
            return;
        };
        let (tag, peer, caps) = (c.dialog.id.local_tag.clone(), c.peer, c.caps);
        let mut resp = self.make_response(&req, 200, Some(&tag));
        self.decorate_with_sdp(&mut resp, body, &peer);
        super::session::add_timer_headers(&mut resp, timer.as_ref(), caps);
        self.respond(now, &key, resp.clone());
        self.start_2xx_retransmit(now, call, resp, negotiated.is_none());
        self.refreshed_by_peer(now, call, timer);
        if let Some(media) = negotiated {
            self.events.push_back(Event::MediaChanged { call, media });
        }
    }
}

/// A Warning's agent: the first word of our User-Agent if it is a token
/// (RFC 3261 pseudonym), else "crossline".
fn warn_agent(user_agent: &str) -> &str {
    user_agent
        .split(['/', ' '])
        .next()
        .filter(|w| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
        })
        .unwrap_or("crossline")
}

/// Headers that carry one value (RFC 3261 §20); more than one is a 400.
const SINGLE_VALUED: [&str; 7] = [
    "Call-ID",
    "CSeq",
    "From",
    "To",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
];
