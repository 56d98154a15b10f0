//! REFER we receive (RFC 3515): a carrier or PBX asks us to call someone
//! in place of the leg it sent the REFER on. We place that call through
//! the trunk and report its progress back as NOTIFYs; when it answers it
//! takes the old leg's place: its flow, hold program, transfer or bridge.
//!
//! The old leg's peer usually hangs up once the transfer succeeds, but
//! some do as soon as they get the 202. Then the old leg's program waits
//! (the call is *parked*) until the new call answers or fails.

use std::time::{Duration, Instant};

use metrics::counter;

use super::model::{Call, Media, Refer, Role};
use super::{CallControl, MediaCommand, PortSource};
use crate::media::audio_loop::Source;
use crate::sdp::Negotiated;
use crate::sip::endpoint::{CallId, EndCause};
use crate::sip::message::Uri;
use crate::store::CallRecord;
use crate::telemetry::names;

/// How long the referred target may ring.
const RING_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the referrer has to hang up its leg once the new call is up,
/// before we do.
const REFERRER_GRACE: Duration = Duration::from_secs(2);

impl<P: PortSource, F> CallControl<P, F> {
    /// The peer of `from` sent a REFER to `target`.
    pub(crate) fn referred(&mut self, now: Instant, from: CallId, target: Uri) {
        let Some(call) = self.calls.get(&from) else {
            return;
        };
        // Only a trunk that says so may make us place calls.
        let trunk = call
            .record
            .trunk
            .as_deref()
            .and_then(|name| self.config.trunks.iter().find(|t| t.name == name))
            .filter(|t| t.accept_refer)
            .cloned();
        let Some(trunk) = trunk else {
            tracing::info!(call = %from, "REFER refused: the call's trunk doesn't accept transfers");
            counter!(names::REFERS_RECEIVED, "outcome" => "forbidden").increment(1);
            let _ = self
                .endpoint
                .refuse_refer(now, from, 403, "Transfer Not Allowed");
            return;
        };
        if !matches!(call.refer, Refer::None) {
            counter!(names::REFERS_RECEIVED, "outcome" => "busy").increment(1);
            let _ = self
                .endpoint
                .refuse_refer(now, from, 491, "Transfer In Progress");
            return;
        }
        let from_user = trunk
            .caller_id
            .clone()
            .unwrap_or_else(|| call.record.caller.clone());
        let record = CallRecord::starting(
            String::new(),
            "outbound",
            target.user.clone().unwrap_or_default(),
            from_user.clone(),
            Some(trunk.name.clone()),
            call.record.flow.clone(),
        );
        let parent = call.span.id();
        let leg = Call::new(Role::Referred { referrer: from }, record);
        // Through the trunk's proxy when it has one (passed over while it
        // is down), else to the target itself.
        let through = match trunk.outbound_proxy.is_some() {
            true => self.trunk_route(&trunk.name),
            false => Ok(Vec::new()),
        };
        let placed = through.and_then(|trunks| {
            self.place_call_through(now, target, &trunks, false, from_user, leg)
        });
        match placed {
            Ok(leg) => {
                tracing::info!(call = %from, %leg, "REFER accepted: calling the target");
                counter!(names::REFERS_RECEIVED, "outcome" => "accepted").increment(1);
                let _ = self.endpoint.accept_refer(now, from);
                if let Some(c) = self.calls.get_mut(&leg) {
                    c.span = tracing::info_span!(parent: parent, "leg", id = %leg);
                }
                if let Some(c) = self.calls.get_mut(&from) {
                    c.refer = Refer::Calling(leg);
                }
                self.set_give_up(leg, now.checked_add(RING_TIMEOUT).unwrap_or(now));
            }
            Err(why) => {
                tracing::warn!(call = %from, why, "REFER refused: cannot place the call");
                counter!(names::REFERS_RECEIVED, "outcome" => "unplaceable").increment(1);
                let _ = self
                    .endpoint
                    .refuse_refer(now, from, 503, "Service Unavailable");
            }
        }
    }

    /// A provisional answer on a REFER's call: the referrer hears of it.
    pub(crate) fn referred_progress(&mut self, now: Instant, leg: CallId, status: u16) {
        if let Some(Role::Referred { referrer }) = self.calls.get(&leg).map(|c| &c.role) {
            let reason = if status == 180 {
                "Ringing"
            } else {
                "Session Progress"
            };
            let _ = self.endpoint.notify_refer(now, *referrer, status, reason);
        }
    }

    /// The REFER's call answered: it takes the referring leg's place.
    pub(crate) fn referred_answered(
        &mut self,
        now: Instant,
        leg: CallId,
        media: Option<Negotiated>,
    ) {
        let Some(Role::Referred { referrer }) = self.calls.get(&leg).map(|c| &c.role) else {
            return;
        };
        let referrer = *referrer;
        let reservation = self.calls.get_mut(&leg).and_then(|c| c.take_reservation());
        let (Some(reservation), Some(media), true) =
            (reservation, media, self.calls.contains_key(&referrer))
        else {
            self.hang_up(now, leg);
            return;
        };
        let _ = self.endpoint.notify_refer(now, referrer, 200, "OK");
        counter!(names::REFER_CALLS, "result" => "answered").increment(1);
        tracing::info!(call = %referrer, %leg, "REFER: the new call answered and takes over");
        let parked = self.take_over(referrer, leg);
        let partner = self.bridge_partner(leg);
        // It hears what the old leg heard, under the flow's generation.
        let (source, generation) = self
            .calls
            .get(&leg)
            .and_then(|c| c.playing.as_deref().cloned())
            .unwrap_or_else(|| (self.program_source(leg), 0));
        if let Some(c) = self.calls.get_mut(&leg) {
            c.give_up = None;
            c.record.answered_at = Some(std::time::SystemTime::now());
            c.media = Media::Streaming;
            c.rfc4733 = media.telephone_event_pt.is_some();
        }
        self.media_out.push_back(MediaCommand::Start {
            call: leg,
            reservation,
            media,
            source: Source::Silence,
            near: partner,
        });
        match partner {
            Some(partner) => self.media_out.push_back(MediaCommand::Bridge(partner, leg)),
            None => self.play(leg, source, generation),
        }
        match parked {
            Some(cause) => self.finish(now, referrer, &cause),
            None => {
                // The referrer hangs up its leg now; if it doesn't, we do.
                self.set_give_up(referrer, now.checked_add(REFERRER_GRACE).unwrap_or(now));
            }
        }
    }

    /// The REFER's call failed before answering: the referrer hears the
    /// status, and the call it referred goes on as before (or, parked,
    /// ends now).
    pub(crate) fn referred_failed(&mut self, now: Instant, referrer: CallId, cause: &EndCause) {
        counter!(names::REFER_CALLS, "result" => "failed").increment(1);
        let status = match cause {
            EndCause::Rejected { status, .. } => *status,
            EndCause::Timeout => 408,
            EndCause::Cancelled => 487,
            _ => 503,
        };
        let Some(call) = self.calls.get_mut(&referrer) else {
            return;
        };
        match std::mem::take(&mut call.refer) {
            Refer::Parked { cause, .. } => self.finish(now, referrer, &cause),
            _ => {
                tracing::info!(call = %referrer, status, "REFER: the new call failed; the call goes on");
                let _ = self.endpoint.notify_refer(now, referrer, status, "Failed");
            }
        }
    }

    /// The referring leg ended while its REFER's call rang: keep its
    /// program for that call. True when it is parked (not finished).
    pub(crate) fn park_referrer(&mut self, id: CallId, cause: &EndCause) -> bool {
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        let Refer::Calling(leg) = call.refer else {
            return false;
        };
        call.refer = Refer::Parked {
            leg,
            cause: Box::new(cause.clone()),
        };
        if call.streaming() {
            call.media = Media::None;
            self.media_out.push_back(MediaCommand::Stop(id));
        }
        tracing::info!(call = %id, %leg, "the referrer hung up: the call waits for its new leg");
        true
    }

    /// Move what runs on `from` to `to`: program, flow, transfer, role.
    /// Returns how `from` ended if it was parked.
    fn take_over(&mut self, from: CallId, to: CallId) -> Option<EndCause> {
        let old = self.calls.get_mut(&from)?;
        let parked = match std::mem::take(&mut old.refer) {
            Refer::Parked { cause, .. } => Some(*cause),
            _ => None,
        };
        let program = old.program.take();
        let has_flow = std::mem::replace(&mut old.has_flow, false);
        let flow = old.flow.take();
        let transfer = old.transfer.take();
        let role = std::mem::replace(&mut old.role, Role::Replaced);
        let caller = old.caller.take();
        let playing = old.playing.take();
        old.digits = None;
        if old.streaming() {
            // Its peer may stay a moment; it hears nothing more from us.
            old.media = Media::None;
            self.media_out.push_back(MediaCommand::Unbridge(from));
            self.media_out.push_back(MediaCommand::Stop(from));
        }
        // Agents of its transfer now belong to `to`; and if it was an
        // agent itself, its caller's transfer has `to` in its place.
        let agents: Vec<CallId> = transfer
            .iter()
            .flat_map(|t| t.ringing.iter().copied().chain(t.bridged).chain(t.early))
            .collect();
        for agent in agents {
            if let Some(Role::Agent { caller, .. }) =
                self.calls.get_mut(&agent).map(|c| &mut c.role)
            {
                *caller = to;
            }
        }
        if let Role::Agent { caller, .. } = &role {
            if let Some(t) = self
                .calls
                .get_mut(caller)
                .and_then(|c| c.transfer.as_deref_mut())
            {
                for id in t
                    .ringing
                    .iter_mut()
                    .chain(t.bridged.iter_mut())
                    .chain(t.early.iter_mut())
                {
                    if *id == from {
                        *id = to;
                    }
                }
            }
        }
        let new = self.calls.get_mut(&to)?;
        new.program = program;
        new.has_flow = has_flow;
        new.flow = flow;
        new.transfer = transfer;
        new.role = role;
        new.caller = caller;
        new.playing = playing;
        // The flow still names the old leg: its requests come here now.
        for target in self.moved_flows.values_mut() {
            if *target == from {
                *target = to;
            }
        }
        if has_flow {
            self.moved_flows.insert(from, to);
        }
        parked
    }

    /// The call `leg` is bridged to, if any: its caller's or its agent.
    fn bridge_partner(&self, leg: CallId) -> Option<CallId> {
        let call = self.calls.get(&leg)?;
        if let Some(agent) = call.transfer.as_ref().and_then(|t| t.bridged) {
            return Some(agent);
        }
        match &call.role {
            Role::Agent { caller, .. } => self
                .calls
                .get(caller)
                .and_then(|c| c.transfer.as_ref())
                .filter(|t| t.bridged == Some(leg))
                .map(|_| *caller),
            _ => None,
        }
    }

    /// The call a flow's requests for `id` go to now.
    pub(crate) fn flow_call(&self, id: CallId) -> CallId {
        self.moved_flows.get(&id).copied().unwrap_or(id)
    }

    /// Forget flows that ran on `id`: it is over.
    pub(crate) fn forget_moved_flows(&mut self, id: CallId) {
        if !self.moved_flows.is_empty() {
            self.moved_flows.retain(|_, to| *to != id);
        }
    }
}
