//! Transfers on the call-control side: ring agent legs as outbound calls
//! (one at a time or all at once) while the caller hears hold audio, then
//! bridge the first answer through the audio loop.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Gateway;
use crate::flow::interp::{CallSignal, TransferEvent, TransferRequest};
use crate::media::audio_loop::Source;
use crate::media::engine::Reservation;
use crate::sdp::Negotiated;
use crate::sip::endpoint::{CallId, EndCause, OutgoingCall, Transport};
use crate::sip::message::Uri;
use crate::store::CallRecord;

/// One caller's transfer in progress.
pub(super) struct Transfer {
    pending: VecDeque<String>,
    parallel: bool,
    ring_timeout: Duration,
    trunk: Option<crate::config::TrunkConfig>,
    /// Ringing legs and when each gives up.
    ringing: Vec<(CallId, Instant, String)>,
    bridged: Option<CallId>,
    last_status: u16,
}

/// An agent leg: which caller it serves and its media until it starts.
pub(super) struct AgentLeg {
    caller: CallId,
    target: String,
    reservation: Option<Reservation>,
    /// We cancelled it for ringing too long: report 408, not 487.
    timed_out: bool,
}

#[derive(Default)]
pub(super) struct Transfers {
    by_caller: HashMap<CallId, Transfer>,
    legs: HashMap<CallId, AgentLeg>,
}

impl Transfers {
    pub(super) fn is_agent_leg(&self, call: CallId) -> bool {
        self.legs.contains_key(&call)
    }

    /// The earliest ring timeout.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.by_caller
            .values()
            .flat_map(|t| t.ringing.iter().map(|(_, at, _)| *at))
            .min()
    }
}

/// A literal address for a SIP URI (trunk proxies and agents are
/// configured by address; DNS resolution happens at start for registrars).
fn literal_destination(uri: &Uri) -> Option<SocketAddr> {
    let host = uri.host.trim_matches(|c| c == '[' || c == ']');
    host.parse::<IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, uri.port.unwrap_or(5060)))
}

impl Gateway {
    /// An INVITE to `target`, through `trunk`'s proxy and credentials when
    /// given, with an RTP port reserved for it. None: no literal address to
    /// send to, or no free port.
    pub(super) fn outgoing_call(
        &mut self,
        target: Uri,
        trunk: Option<&crate::config::TrunkConfig>,
        from_user: String,
    ) -> Option<(OutgoingCall, Reservation)> {
        let proxy = trunk
            .and_then(|tr| tr.outbound_proxy.as_deref())
            .and_then(|p| Uri::parse(p).ok());
        let destination = literal_destination(proxy.as_ref().unwrap_or(&target))?;
        let reservation = match self.media.reserve() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "outbound call: no RTP port");
                return None;
            }
        };
        let spec = OutgoingCall {
            target,
            destination,
            transport: trunk.map_or(Transport::Udp, |tr| tr.outbound_transport.transport()),
            from_user,
            from_display: None,
            local_media: self.local_media(reservation.port),
            credentials: trunk.and_then(|tr| tr.username.clone().zip(tr.password().ok().flatten())),
            extra_headers: Vec::new(),
        };
        Some((spec, reservation))
    }

    pub(super) fn start_transfer(&mut self, now: Instant, caller: CallId, req: TransferRequest) {
        let trunk = req
            .trunk
            .as_ref()
            .and_then(|name| self.config.trunks.iter().find(|t| &t.name == name).cloned());
        // Hold audio while the agents ring.
        let hold = match req.hold_message {
            Some(message) => self.hold_with(Some(message), req.repeat_interval),
            None => self.hold.clone(),
        };
        self.play(caller, Source::Hold(hold), 0);
        let t = Transfer {
            pending: req.targets.into(),
            parallel: req.parallel,
            ring_timeout: req.ring_timeout,
            trunk,
            ringing: Vec::new(),
            bridged: None,
            last_status: 480,
        };
        self.transfers.by_caller.insert(caller, t);
        self.dial_next(now, caller);
    }

    /// Place one agent leg; a failure to even start counts as a failed leg.
    /// Dial targets until one call is placed (sequential) or all are
    /// (parallel), then settle; targets that can't be dialled count as failed.
    fn dial_next(&mut self, now: Instant, caller: CallId) {
        loop {
            let Some(t) = self.transfers.by_caller.get_mut(&caller) else {
                return;
            };
            let Some(target) = t.pending.pop_front() else {
                break;
            };
            let parallel = t.parallel;
            if self.dial(now, caller, target) && !parallel {
                break;
            }
        }
        self.transfer_settle(caller);
    }

    /// Place one agent leg; false when it couldn't even start.
    fn dial(&mut self, now: Instant, caller: CallId, target: String) -> bool {
        let Some(t) = self.transfers.by_caller.get(&caller) else {
            return false;
        };
        let trunk = t.trunk.clone();
        let ring_timeout = t.ring_timeout;
        let Ok(uri) = Uri::parse(&target) else {
            tracing::warn!(%caller, "transfer: bad target URI");
            return false;
        };
        let caller_id = trunk
            .as_ref()
            .and_then(|tr| tr.caller_id.clone())
            .or_else(|| self.records.get(&caller).map(|r| r.caller.clone()))
            .unwrap_or_else(|| "crossline".into());
        let Some((spec, reservation)) =
            self.outgoing_call(uri.clone(), trunk.as_ref(), caller_id.clone())
        else {
            tracing::warn!(%caller, "transfer: cannot place the call (target host must be an IP address; RTP ports)");
            return false;
        };
        match self.endpoint.invite(now, spec) {
            Ok(agent) => {
                tracing::info!(%caller, %agent, "transfer: ringing agent");
                self.records.insert(
                    agent,
                    CallRecord::starting(
                        String::new(),
                        "outbound",
                        uri.user.clone().unwrap_or_default(),
                        caller_id,
                        trunk.map(|tr| tr.name),
                        None,
                    ),
                );
                self.transfers.legs.insert(
                    agent,
                    AgentLeg {
                        caller,
                        target: target.clone(),
                        reservation: Some(reservation),
                        timed_out: false,
                    },
                );
                if let Some(t) = self.transfers.by_caller.get_mut(&caller) {
                    let give_up = now.checked_add(ring_timeout).unwrap_or(now);
                    t.ringing.push((agent, give_up, target));
                }
                true
            }
            Err(e) => {
                tracing::warn!(%caller, %e, "transfer: cannot place the call");
                self.media.cancel(reservation);
                false
            }
        }
    }

    /// An agent answered.
    pub(super) fn agent_answered(
        &mut self,
        now: Instant,
        agent: CallId,
        media: Option<Negotiated>,
    ) {
        let Some(leg) = self.transfers.legs.get_mut(&agent) else {
            return;
        };
        let caller = leg.caller;
        let target = leg.target.clone();
        let reservation = leg.reservation.take();
        let Some(t) = self.transfers.by_caller.get_mut(&caller) else {
            // The caller left while this leg rang: don't leave the agent
            // on a call with nobody, nor the port reserved.
            let _ = self.endpoint.hangup(now, agent);
            if let Some(r) = reservation {
                self.media.cancel(r);
            }
            return;
        };
        if let Some(r) = self.records.get_mut(&agent) {
            r.answered_at = Some(std::time::SystemTime::now());
        }
        if t.bridged.is_some() {
            // A second answer in a parallel ring: too late.
            let _ = self.endpoint.hangup(now, agent);
            if let Some(r) = reservation {
                self.media.cancel(r);
            }
            return;
        }
        t.bridged = Some(agent);
        let others: Vec<CallId> = t
            .ringing
            .drain(..)
            .map(|(c, _, _)| c)
            .filter(|c| *c != agent)
            .collect();
        t.pending.clear();
        for other in others {
            let _ = self.endpoint.hangup(now, other);
        }
        let (Some(r), Some(media)) = (reservation, media) else {
            let _ = self.endpoint.hangup(now, agent);
            return;
        };
        match self
            .media
            .start_stream_near(caller.0, agent.0, r, &media, Source::Silence)
        {
            Ok(()) => {
                self.media.bridge(caller.0, agent.0);
                // The caller hears the agent now, not the shared music.
                self.leave_shared_hold(caller);
                tracing::info!(%caller, %agent, "transfer: bridged");
                self.flow_signal(
                    caller,
                    CallSignal::Transfer(TransferEvent::Bridged { target }),
                );
            }
            Err(e) => {
                tracing::warn!(%caller, %e, "transfer: media failed");
                let _ = self.endpoint.hangup(now, agent);
            }
        }
    }

    /// An agent leg ended: try the next target, report failure, or (when
    /// it was bridged) tell the flow the agent hung up.
    pub(super) fn agent_ended(&mut self, now: Instant, agent: CallId, cause: &EndCause) {
        let Some(mut leg) = self.transfers.legs.remove(&agent) else {
            return;
        };
        if let Some(r) = leg.reservation.take() {
            self.media.cancel(r);
        }
        let caller = leg.caller;
        let Some(t) = self.transfers.by_caller.get_mut(&caller) else {
            self.media.stop_stream(agent.0);
            return;
        };
        if t.bridged == Some(agent) {
            self.media.unbridge(caller.0);
            self.media.stop_stream(agent.0);
            self.play(caller, Source::Silence, 0);
            self.transfers.by_caller.remove(&caller);
            self.flow_signal(caller, CallSignal::Transfer(TransferEvent::AgentHungUp));
            self.hang_up_without_flow(now, caller);
            return;
        }
        t.ringing.retain(|(c, _, _)| *c != agent);
        t.last_status = match cause {
            _ if leg.timed_out => 408,
            EndCause::Rejected { status, .. } => *status,
            EndCause::Timeout => 408,
            _ => t.last_status,
        };
        self.dial_next(now, caller);
    }

    /// Nothing ringing, nothing left to try, nobody bridged: it failed.
    fn transfer_settle(&mut self, caller: CallId) {
        let Some(t) = self.transfers.by_caller.get(&caller) else {
            return;
        };
        if t.bridged.is_none() && t.ringing.is_empty() && t.pending.is_empty() {
            let status = t.last_status;
            self.transfers.by_caller.remove(&caller);
            self.play(caller, Source::Silence, 0);
            tracing::info!(%caller, status, "transfer failed");
            self.flow_signal(
                caller,
                CallSignal::Transfer(TransferEvent::Failed { status }),
            );
            self.hang_up_without_flow(Instant::now(), caller);
        }
    }

    /// A transfer no flow asked for (a callback to a target) is all the
    /// call does: when it is over, so is the call.
    fn hang_up_without_flow(&mut self, now: Instant, caller: CallId) {
        if !self.flows.contains_key(&caller) {
            let _ = self.endpoint.hangup(now, caller);
        }
    }

    /// Ring timeouts: cancel legs that rang too long.
    pub(super) fn transfer_timeouts(&mut self, now: Instant) {
        let expired: Vec<CallId> = self
            .transfers
            .by_caller
            .values()
            .flat_map(|t| t.ringing.iter())
            .filter(|(_, at, _)| *at <= now)
            .map(|(c, _, _)| *c)
            .collect();
        for agent in expired {
            tracing::info!(%agent, "transfer: no answer in time");
            if let Some(leg) = self.transfers.legs.get_mut(&agent) {
                leg.timed_out = true;
            }
            if let Some(t) = self
                .transfers
                .legs
                .get(&agent)
                .and_then(|l| self.transfers.by_caller.get_mut(&l.caller))
            {
                // Keep it out of the ringing list; its CallEnded finishes it.
                for (c, at, _) in t.ringing.iter_mut() {
                    if *c == agent {
                        *at = now + Duration::from_secs(3600);
                    }
                }
                t.last_status = 408;
            }
            let _ = self.endpoint.hangup(now, agent);
        }
    }

    /// Blind transfer: REFER the caller's side to `target`.
    pub(super) fn start_refer(&mut self, now: Instant, caller: CallId, target: String) {
        let failed = |gw: &mut Gateway, status| {
            gw.flow_signal(
                caller,
                CallSignal::Transfer(TransferEvent::Failed { status }),
            )
        };
        let Ok(uri) = Uri::parse(&target) else {
            return failed(self, 400);
        };
        // No in-dialog request before the caller's ACK: wait for it.
        if self.endpoint.call_state(caller) != Some(crate::sip::endpoint::CallState::Confirmed) {
            self.refers_waiting.insert(caller, target);
            return;
        }
        if self.endpoint.refer(now, caller, &uri).is_err() {
            return failed(self, 500);
        }
        tracing::info!(%caller, "transfer: REFER sent");
        self.refers.insert(caller, target);
    }

    /// The call is confirmed: send a REFER that was waiting for the ACK.
    pub(super) fn refer_when_confirmed(&mut self, now: Instant, caller: CallId) {
        if let Some(target) = self.refers_waiting.remove(&caller) {
            self.start_refer(now, caller, target);
        }
    }

    /// The REFER's own answer (202 or a refusal) and the NOTIFYs after it.
    pub(super) fn refer_status(
        &mut self,
        now: Instant,
        caller: CallId,
        status: u16,
        final_notify: bool,
    ) {
        let Some(target) = self.refers.get(&caller).cloned() else {
            return;
        };
        match status {
            100..=199 => {}
            200..=299 if final_notify => {
                // The new call is up: we step out (RFC 3515 §2.4.7).
                self.refers.remove(&caller);
                tracing::info!(%caller, "transfer: REFER completed");
                self.flow_signal(
                    caller,
                    CallSignal::Transfer(TransferEvent::Bridged { target }),
                );
                let _ = self.endpoint.hangup(now, caller);
            }
            200..=299 => {}
            _ => {
                self.refers.remove(&caller);
                tracing::info!(%caller, status, "transfer: REFER failed");
                self.flow_signal(
                    caller,
                    CallSignal::Transfer(TransferEvent::Failed { status }),
                );
            }
        }
    }

    /// The caller is gone: hang up every agent leg of theirs.
    pub(super) fn caller_ended(&mut self, now: Instant, caller: CallId) {
        let Some(t) = self.transfers.by_caller.remove(&caller) else {
            return;
        };
        let mut agents: Vec<CallId> = t.ringing.iter().map(|(c, _, _)| *c).collect();
        agents.extend(t.bridged);
        for agent in agents {
            let _ = self.endpoint.hangup(now, agent);
            if t.bridged == Some(agent) {
                self.media.stop_stream(agent.0);
            }
        }
    }
}
