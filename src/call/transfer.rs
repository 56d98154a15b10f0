//! Transfers: ring agent legs (one at a time or all at once) while the
//! caller hears hold audio, then bridge the first answer; or REFER the
//! caller elsewhere and step out.

use std::collections::VecDeque;
use std::time::Instant;

use metrics::counter;

use super::model::{Call, Dest, Media, Program, Refer, Role, Transfer};
use super::outbound::Dialling;
use super::{CallControl, MediaCommand, PortSource};
use crate::flow::interp::{CallSignal, TransferEvent, TransferRequest};
use crate::media::audio_loop::Source;
use crate::sdp::Negotiated;
use crate::sip::endpoint::{CallId, EndCause};
use crate::sip::message::Uri;
use crate::store::CallRecord;
use crate::telemetry::names;

/// A transfer target a node handed over names its user so: ring this
/// node's devices of the user only, never hand it on (no loops).
pub(crate) const HANDED_OVER_USER: &str = "handed-over-user:";

/// How an agent leg goes out.
enum Via {
    /// To a URI, through the transfer's trunks if any.
    Trunks,
    /// To a registered device, over its flow.
    Device(Box<crate::sip::registrar::Binding>),
    /// To the node that holds the user's registration.
    Node(std::net::SocketAddr),
}

impl<P: PortSource, F> CallControl<P, F> {
    /// Place a call to `target` as `leg`, with an RTP port reserved for
    /// it, through the first of `trunks` (its proxy, credentials and caller
    /// ID), going on to the next when one has no target left; with
    /// `retarget` the Request-URI's host is each trunk's proxy. No trunks:
    /// straight to the target. Err: no free port, or nowhere to send it.
    pub(crate) fn place_call_through(
        &mut self,
        now: Instant,
        target: Uri,
        trunks: &[crate::config::TrunkConfig],
        retarget: bool,
        from_user: String,
        mut leg: Call<P::Reservation, F>,
    ) -> Result<CallId, &'static str> {
        let (port, reservation) = match self.ports.reserve() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "outbound call: no RTP port");
                return Err("no free RTP port");
            }
        };
        leg.media = Media::Reserved(reservation);
        let rest = trunks.get(1..).unwrap_or_default();
        let dialling =
            Dialling::new(target, trunks.first(), from_user, port).then_through(rest, retarget);
        self.place(now, leg, dialling)
            .map_err(|()| "no target to send it to (every one failed lately)")
    }

    /// The trunks a transfer through `name` goes out by: a trunk or a
    /// group, those down left out (Err: all of them down). A trunk
    /// without an outbound proxy lends only its credentials and caller ID.
    fn transfer_trunks(
        &mut self,
        name: &str,
    ) -> Result<Vec<crate::config::TrunkConfig>, &'static str> {
        if self.config.outbound_trunks(name).is_some() {
            return self.trunk_route(name);
        }
        Ok(self
            .config
            .trunks
            .iter()
            .find(|t| t.name == name)
            .cloned()
            .into_iter()
            .collect())
    }

    /// Place an agent leg straight to a user's device or to the node
    /// holding it (never through a trunk), with an RTP port reserved for
    /// it: `plan` makes the dialling plan from the port.
    fn place_direct(
        &mut self,
        now: Instant,
        mut leg: Call<P::Reservation, F>,
        plan: impl FnOnce(u16) -> Dialling,
    ) -> Result<CallId, &'static str> {
        let (port, reservation) = self.ports.reserve().map_err(|e| {
            tracing::warn!(%e, "call to a user: no RTP port");
            "no free RTP port"
        })?;
        leg.media = Media::Reserved(reservation);
        self.place(now, leg, plan(port))
            .map_err(|()| "its flow is backed off")
    }

    pub(crate) fn start_transfer(&mut self, now: Instant, caller: CallId, req: TransferRequest) {
        self.start_ringing(now, caller, req, false);
    }

    /// Ring `req`'s targets for `caller`; `answer_on_bridge`: the caller is
    /// still ringing and is answered when a target answers.
    pub(crate) fn start_ringing(
        &mut self,
        now: Instant,
        caller: CallId,
        req: TransferRequest,
        answer_on_bridge: bool,
    ) {
        if !self.calls.contains_key(&caller) {
            return;
        }
        let trunk = req.trunk;
        // Hold audio while the agents ring: the shared default (one encode
        // for every web call on it) unless the transfer has its own.
        let hold = match (req.hold_message, req.hold_music.is_empty()) {
            (None, true) => self.router.default_hold().clone(),
            (message, _) => self.hold_with(message, req.repeat_interval, req.hold_music),
        };
        if !answer_on_bridge {
            self.play(caller, Source::Hold(hold.clone()), 0);
        }
        let pending = self.expand_targets(now, req.targets);
        if let Some(call) = self.calls.get_mut(&caller) {
            call.transfer = Some(Box::new(Transfer {
                pending,
                parallel: req.parallel,
                ring_timeout: req.ring_timeout,
                trunk,
                ringing: Vec::new(),
                bridged: None,
                early: None,
                hold,
                // A user with no device registered: Temporarily Unavailable.
                last_status: 480,
                answer_on_bridge,
                caller_id: req.caller_id,
            }));
        }
        self.dial_next(now, caller);
    }

    /// A target that names one of our registered users (`user:alice`,
    /// `sip:alice@<our domain>`) becomes each of its live devices.
    fn expand_targets(&self, now: Instant, targets: Vec<String>) -> VecDeque<Dest> {
        let registrar = &self.config.registrar;
        let mut pending = VecDeque::with_capacity(targets.len());
        for target in targets {
            let (user, handed_over) = match target.strip_prefix(HANDED_OVER_USER) {
                Some(user) => (Some(user), true),
                None => (
                    crate::registrar::user_of_target(&target, &registrar.domain),
                    false,
                ),
            };
            let user = user
                .filter(|_| registrar.enabled)
                .filter(|u| self.endpoint.is_local_user(u));
            match user {
                Some(user) => {
                    let devices = self.endpoint.bindings_of(user, now);
                    tracing::info!(%user, devices = devices.len(), "ringing a registered user");
                    pending.extend(devices.into_iter().map(|b| Dest::Device {
                        user: user.to_string(),
                        binding: Box::new(b),
                    }));
                    if !handed_over {
                        pending.extend(self.other_nodes_of(user, now));
                    }
                }
                None => pending.push_back(Dest::Uri(target)),
            }
        }
        pending
    }

    /// The other nodes holding registrations of `user` that may be handed
    /// its calls; those that may not are counted and logged.
    fn other_nodes_of(&self, user: &str, now: Instant) -> Vec<Dest> {
        let mut out = Vec::new();
        for (node, addr) in self.remote_bindings.nodes_for(user, now) {
            match addr {
                Ok(addr) => out.push(Dest::Node {
                    user: user.to_string(),
                    addr,
                }),
                Err(why) => {
                    counter!(names::USER_HANDOFFS, "outcome" => "refused", "reason" => why.label())
                        .increment(1);
                    tracing::warn!(%user, %node, reason = why.label(), "not handing a call to a node outside [registrar] cluster_nodes");
                }
            }
        }
        out
    }

    /// Dial targets until one call is placed (sequential) or all are
    /// (parallel), then settle; targets that can't be dialled count as
    /// failed.
    fn dial_next(&mut self, now: Instant, caller: CallId) {
        loop {
            let Some(t) = self.transfer_mut(caller) else {
                return;
            };
            let Some(target) = t.pending.pop_front() else {
                break;
            };
            // A user's devices ring together, even in a sequential transfer.
            let same_user_next = match (&target, t.pending.front()) {
                (
                    Dest::Device { user, .. } | Dest::Node { user, .. },
                    Some(Dest::Device { user: next, .. } | Dest::Node { user: next, .. }),
                ) => user == next,
                _ => false,
            };
            let parallel = t.parallel || same_user_next;
            if self.dial(now, caller, target) && !parallel {
                break;
            }
        }
        self.transfer_settle(now, caller);
    }

    fn transfer_mut(&mut self, caller: CallId) -> Option<&mut Transfer> {
        self.calls.get_mut(&caller)?.transfer.as_deref_mut()
    }

    /// Place one agent leg; false when it couldn't even start.
    fn dial(&mut self, now: Instant, caller: CallId, dest: Dest) -> bool {
        let Some(t) = self.transfer_mut(caller) else {
            return false;
        };
        let ring_timeout = t.ring_timeout;
        let chosen_caller_id = t.caller_id.clone();
        // A registered device (or its node) is reached directly, never
        // through a trunk.
        let (target, uri, route, via) = match dest {
            Dest::Uri(target) => {
                let Ok(uri) = Uri::parse(&target) else {
                    tracing::warn!(%caller, "transfer: bad target URI");
                    return false;
                };
                (target, uri, t.trunk.clone(), Via::Trunks)
            }
            Dest::Device { user, binding } => (
                format!("user:{user}"),
                binding.contact.clone(),
                None,
                Via::Device(binding),
            ),
            Dest::Node { user, addr } => {
                let Ok(uri) = Uri::parse(&format!("sip:{user}@{}", self.config.registrar.domain))
                else {
                    return false;
                };
                (format!("user:{user}"), uri, None, Via::Node(addr))
            }
        };
        let trunks = match route.as_deref().map(|name| self.transfer_trunks(name)) {
            None => Vec::new(),
            Some(Ok(trunks)) => trunks,
            Some(Err(why)) => {
                tracing::warn!(%caller, why, "transfer: cannot place the call");
                if let Some(t) = self.transfer_mut(caller) {
                    t.last_status = 503;
                }
                return false;
            }
        };
        let trunk = trunks.first();
        let caller_id = chosen_caller_id
            .or_else(|| trunk.and_then(|tr| tr.caller_id.clone()))
            .or_else(|| self.calls.get(&caller).map(|c| c.record.caller.clone()))
            .unwrap_or_else(|| "crossline".into());
        let record = CallRecord::starting(
            String::new(),
            "outbound",
            uri.user.clone().unwrap_or_default(),
            caller_id.clone(),
            trunk.map(|tr| tr.name.clone()),
            None,
        );
        let mut leg = Call::new(Role::Agent { caller, target }, record);
        leg.program = Some(Program::Leg);
        let placed = match via {
            // Over the flow its REGISTER came on, whatever host its
            // Contact names.
            Via::Device(binding) => self.place_direct(now, leg, |port| {
                Dialling::to_device(&binding, caller_id, port)
            }),
            // To a node in `[registrar] cluster_nodes`: it rings its own
            // devices of the user.
            Via::Node(addr) => {
                let us = self.node_id();
                let placed = self.place_direct(now, leg, |port| {
                    Dialling::to_node(uri, addr, caller_id, port, us)
                });
                if placed.is_ok() {
                    counter!(names::USER_HANDOFFS, "outcome" => "handed").increment(1);
                    tracing::info!(%caller, node = %addr, "a call for a user handed to the node holding its registration");
                }
                placed
            }
            Via::Trunks => self.place_call_through(now, uri, &trunks, false, caller_id, leg),
        };
        match placed {
            Ok(agent) => {
                tracing::info!(%caller, %agent, "transfer: ringing agent");
                let caller_span = self.calls.get(&caller).and_then(|c| c.span.id());
                if let Some(leg) = self.calls.get_mut(&agent) {
                    leg.span = tracing::info_span!(parent: caller_span, "leg", id = %agent);
                }
                self.set_give_up(agent, now.checked_add(ring_timeout).unwrap_or(now));
                if let Some(t) = self.transfer_mut(caller) {
                    t.ringing.push(agent);
                }
                true
            }
            Err(why) => {
                tracing::warn!(%caller, why, "transfer: cannot place the call");
                if let Some(t) = self.transfer_mut(caller) {
                    t.last_status = 503;
                }
                false
            }
        }
    }

    /// An agent's early media (a 183 with SDP): the caller hears it
    /// through the bridge instead of the hold music, until the agent
    /// answers or gives up. The agent hears nothing before it answers.
    /// One agent's at a time; other outbound calls ignore it.
    pub(crate) fn early_media_from(&mut self, agent: CallId, media: Negotiated) {
        let Some(leg) = self.calls.get(&agent) else {
            return;
        };
        let Role::Agent { caller, .. } = leg.role else {
            return;
        };
        if leg.streaming() {
            // A new early answer from the same agent: follow it.
            return self.media_out.push_back(MediaCommand::Sending {
                call: agent,
                sending: false,
                remote: Some(media.remote_rtp),
            });
        }
        let Some(t) = self.transfer_mut(caller) else {
            return;
        };
        // A caller still ringing has no stream to hear it on.
        if t.bridged.is_some() || t.early.is_some() || t.answer_on_bridge {
            return;
        }
        t.early = Some(agent);
        let Some(reservation) = self
            .calls
            .get_mut(&agent)
            .and_then(|l| l.take_reservation())
        else {
            return;
        };
        self.bridge_agent(caller, agent, reservation, media);
        self.media_out.push_back(MediaCommand::Sending {
            call: agent,
            sending: false,
            remote: None,
        });
        tracing::info!(%caller, %agent, "transfer: early media from the agent");
    }

    /// An agent answered: bridge the first, hang up the rest.
    pub(crate) fn agent_answered(
        &mut self,
        now: Instant,
        agent: CallId,
        media: Option<Negotiated>,
    ) {
        let Some(leg) = self.calls.get_mut(&agent) else {
            return;
        };
        let Role::Agent { caller, target } = &leg.role else {
            return;
        };
        let (caller, target) = (*caller, target.clone());
        leg.give_up = None;
        leg.record.answered_at = Some(std::time::SystemTime::now());
        let reservation = leg.take_reservation();
        let Some(t) = self.transfer_mut(caller) else {
            // The caller left while this leg rang: don't leave the agent
            // on a call with nobody (its port goes with its reservation).
            self.hang_up(now, agent);
            return;
        };
        if t.bridged.is_some() || !t.ringing.contains(&agent) {
            // A second answer in a parallel ring, or a leg of a transfer
            // stopped since: too late.
            self.hang_up(now, agent);
            return;
        }
        t.bridged = Some(agent);
        let early = t.early.take() == Some(agent);
        let answer_caller = std::mem::take(&mut t.answer_on_bridge);
        let others: Vec<CallId> = t.ringing.drain(..).filter(|c| *c != agent).collect();
        t.pending.clear();
        for other in others {
            self.hang_up(now, other);
        }
        if answer_caller {
            // A call straight to a user: answered now that a device is.
            self.answer(now, caller);
            if !self.calls.get(&caller).is_some_and(|c| c.streaming()) {
                tracing::info!(%caller, "the caller could not be answered: dropping the device");
                self.hang_up(now, agent);
                return;
            }
        }
        match (early, reservation, media) {
            // Bridged since its early media: now the agent hears the caller.
            (true, _, Some(media)) => self.media_changed(agent, &media),
            (false, Some(reservation), Some(media)) => {
                self.bridge_agent(caller, agent, reservation, media)
            }
            _ => {
                self.hang_up(now, agent);
                return;
            }
        }
        tracing::info!(%caller, %agent, "transfer: bridged");
        self.signal(
            caller,
            CallSignal::Transfer(TransferEvent::Bridged { target }),
        );
    }

    /// Start the agent's stream beside the caller's and bridge the two:
    /// the caller hears the agent now, not the shared music.
    fn bridge_agent(
        &mut self,
        caller: CallId,
        agent: CallId,
        reservation: P::Reservation,
        media: Negotiated,
    ) {
        if let Some(leg) = self.calls.get_mut(&agent) {
            leg.media = Media::Streaming;
            leg.rfc4733 = media.telephone_event_pt.is_some();
        }
        self.media_out.push_back(MediaCommand::Start {
            call: agent,
            reservation,
            media,
            source: Source::Silence,
            near: Some(caller),
        });
        self.media_out
            .push_back(MediaCommand::Bridge(caller, agent));
        self.leave_shared_hold(caller);
    }

    /// An agent leg ended: try the next target, report failure, or (when
    /// it was bridged) tell the flow the agent hung up.
    pub(crate) fn agent_ended(
        &mut self,
        now: Instant,
        agent: CallId,
        leg: &Call<P::Reservation, F>,
        caller: CallId,
        cause: &EndCause,
    ) {
        let Some(t) = self.transfer_mut(caller) else {
            return;
        };
        if t.bridged == Some(agent) {
            if let Some(call) = self.calls.get_mut(&caller) {
                call.transfer = None;
            }
            self.media_out.push_back(MediaCommand::Unbridge(caller));
            self.play(caller, Source::Silence, 0);
            self.signal(caller, CallSignal::Transfer(TransferEvent::AgentHungUp));
            self.hang_up_without_flow(now, caller);
            return;
        }
        if !t.ringing.contains(&agent) {
            // A leg of a transfer already over (a 6xx ended it).
            return;
        }
        t.ringing.retain(|c| *c != agent);
        if t.early == Some(agent) {
            // Its early media stops: back to the hold music.
            t.early = None;
            let hold = t.hold.clone();
            self.media_out.push_back(MediaCommand::Unbridge(caller));
            self.play(caller, Source::Hold(hold), 0);
        }
        let Some(t) = self.transfer_mut(caller) else {
            return;
        };
        t.last_status = match cause {
            _ if leg.timed_out => 408,
            EndCause::Rejected { status, .. } => *status,
            EndCause::Timeout => 408,
            _ => t.last_status,
        };
        if (600..700).contains(&t.last_status) {
            // RFC 3261 §16.7: a 6xx is final for every branch. The flow
            // hears it now; the others are cancelled on their own time.
            t.pending.clear();
            let others = std::mem::take(&mut t.ringing);
            counter!(names::SIP_GLOBAL_FAILURES).increment(1);
            tracing::info!(%caller, %agent, status = t.last_status, "transfer: a 6xx ends the whole transfer");
            for other in others {
                self.hang_up(now, other);
            }
        }
        self.dial_next(now, caller);
    }

    /// Nothing ringing, nothing left to try, nobody bridged: it failed.
    fn transfer_settle(&mut self, now: Instant, caller: CallId) {
        let Some(t) = self.transfer_mut(caller) else {
            return;
        };
        if t.bridged.is_none() && t.ringing.is_empty() && t.pending.is_empty() {
            let status = t.last_status;
            if t.answer_on_bridge {
                if let Some(call) = self.calls.get_mut(&caller) {
                    call.transfer = None;
                }
                tracing::info!(%caller, status, "no device of the user answered");
                return self.refuse_unanswered(now, caller, status);
            }
            if let Some(call) = self.calls.get_mut(&caller) {
                call.transfer = None;
            }
            self.play(caller, Source::Silence, 0);
            tracing::info!(%caller, status, "transfer failed");
            self.signal(
                caller,
                CallSignal::Transfer(TransferEvent::Failed { status }),
            );
            self.hang_up_without_flow(now, caller);
        }
    }

    /// A transfer no flow asked for (a callback to a target) is all the
    /// call does: when it is over, so is the call.
    fn hang_up_without_flow(&mut self, now: Instant, caller: CallId) {
        if !self.calls.get(&caller).is_some_and(|c| c.has_flow) {
            let _ = self.endpoint.hangup(now, caller);
        }
    }

    /// A call straight to a user that no device answered: the caller
    /// hears why (busy, declined, else 480 Temporarily Unavailable).
    fn refuse_unanswered(&mut self, now: Instant, caller: CallId, status: u16) {
        let status = match status {
            486 | 600 | 603 => status,
            _ => 480,
        };
        let _ = self.endpoint.reject(now, caller, status);
    }

    /// The caller is gone: hang up every agent leg of theirs, and stop the
    /// bridged one's stream now rather than when its BYE is answered.
    pub(crate) fn caller_left(&mut self, now: Instant, t: &Transfer) {
        for agent in t.ringing.iter().copied().chain(t.bridged) {
            self.hang_up(now, agent);
        }
        if let Some(agent) = t.bridged {
            if let Some(leg) = self.calls.get_mut(&agent) {
                if leg.streaming() {
                    leg.media = Media::None;
                    self.media_out.push_back(MediaCommand::Stop(agent));
                }
            }
        }
    }

    /// The flow is done with its transfer: hang up the bridged agent (the
    /// caller stays; `AgentHungUp` follows), or, while the agents still
    /// ring, end the transfer now with 487 and cancel their legs on their
    /// own time (a leg that never answered can't be cancelled before Timer
    /// B).
    pub(crate) fn stop_transfer(&mut self, now: Instant, caller: CallId) {
        let Some(call) = self.calls.get_mut(&caller) else {
            return;
        };
        if self.joins.contains_key(&caller) {
            return self.unjoin(caller);
        }
        if let Some(agent) = call.transfer.as_ref().and_then(|t| t.bridged) {
            return self.hang_up(now, agent);
        }
        let Some(t) = call.transfer.take() else {
            return;
        };
        if t.early.is_some() {
            self.media_out.push_back(MediaCommand::Unbridge(caller));
        }
        self.caller_left(now, &t);
        self.play(caller, Source::Silence, 0);
        tracing::info!(%caller, "transfer: stopped while ringing");
        self.signal(
            caller,
            CallSignal::Transfer(TransferEvent::Failed { status: 487 }),
        );
    }

    /// Blind transfer: REFER the caller's side to `target`.
    pub(crate) fn start_refer(&mut self, now: Instant, caller: CallId, target: String) {
        let Ok(uri) = Uri::parse(&target) else {
            return self.signal(
                caller,
                CallSignal::Transfer(TransferEvent::Failed { status: 400 }),
            );
        };
        // No in-dialog request before the caller's ACK: wait for it.
        if self.endpoint.call_state(caller) != Some(crate::sip::endpoint::CallState::Confirmed) {
            if let Some(call) = self.calls.get_mut(&caller) {
                call.refer = Refer::Waiting(target);
            }
            return;
        }
        if self.endpoint.refer(now, caller, &uri).is_err() {
            return self.signal(
                caller,
                CallSignal::Transfer(TransferEvent::Failed { status: 500 }),
            );
        }
        tracing::info!(%caller, "transfer: REFER sent");
        if let Some(call) = self.calls.get_mut(&caller) {
            call.refer = Refer::Sent(target);
        }
    }

    /// The REFER's own answer (202 or a refusal) and the NOTIFYs after it.
    pub(crate) fn refer_status(
        &mut self,
        now: Instant,
        caller: CallId,
        status: u16,
        final_notify: bool,
    ) {
        let Some(call) = self.calls.get_mut(&caller) else {
            return;
        };
        let Refer::Sent(target) = &call.refer else {
            return;
        };
        let target = target.clone();
        match status {
            100..=199 => {}
            200..=299 if final_notify => {
                // The new call is up: we step out (RFC 3515 §2.4.7).
                call.refer = Refer::None;
                tracing::info!(%caller, "transfer: REFER completed");
                self.signal(
                    caller,
                    CallSignal::Transfer(TransferEvent::Bridged { target }),
                );
                let _ = self.endpoint.hangup(now, caller);
            }
            200..=299 => {}
            _ => {
                call.refer = Refer::None;
                tracing::info!(%caller, status, "transfer: REFER failed");
                self.signal(
                    caller,
                    CallSignal::Transfer(TransferEvent::Failed { status }),
                );
            }
        }
    }
}
