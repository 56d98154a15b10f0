//! Callbacks on the call-control side: dial the visitor through the
//! outbound trunk, run the flow (or ring the target with hold music) once
//! they answer, and report every step to `crate::callback::Callbacks`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{BuiltinFlow, Gateway};
use crate::callback::{Originate, Progress};
use crate::flow::interp::TransferRequest;
use crate::media::engine::Reservation;
use crate::sdp::Negotiated;
use crate::sip::endpoint::{CallId, EndCause};
use crate::sip::message::Uri;
use crate::store::CallRecord;

/// A callback's call while it lasts.
pub(super) struct CallbackLeg {
    id: String,
    flow: Option<String>,
    target: Option<String>,
    /// Variables the flow starts with.
    pub(super) vars: HashMap<String, String>,
    reservation: Option<Reservation>,
    /// When to stop ringing; None once answered.
    pub(super) give_up: Option<Instant>,
    /// We cancelled it for ringing too long: report no answer (408).
    timed_out: bool,
    answered: bool,
}

impl Gateway {
    fn callback_failed(&self, id: &str, status: u16, reason: &str) {
        self.services.callbacks.progress(
            id,
            Progress::Ended {
                sip_status: Some(status),
                reason: reason.to_string(),
            },
        );
    }

    /// Dial a callback through the outbound trunk.
    pub(super) fn originate(&mut self, now: Instant, req: Originate, draining: bool) {
        if draining {
            return self.callback_failed(&req.id, 503, "draining");
        }
        let Some(trunk) = crate::callback::outbound_trunk(&self.config).cloned() else {
            return self.callback_failed(&req.id, 503, "no outbound trunk");
        };
        let Some(proxy) = trunk
            .outbound_proxy
            .as_deref()
            .and_then(|p| Uri::parse(p).ok())
        else {
            return self.callback_failed(&req.id, 503, "no outbound trunk");
        };
        let host = match proxy.port {
            Some(port) => format!("{}:{port}", proxy.host),
            None => proxy.host.clone(),
        };
        let Ok(target) = Uri::parse(&format!("sip:{}@{host}", req.phone)) else {
            return self.callback_failed(&req.id, 400, "invalid_number");
        };
        let caller_id = trunk
            .caller_id
            .clone()
            .unwrap_or_else(|| "crossline".into());
        let Some((spec, reservation)) = self.outgoing_call(target, Some(&trunk), caller_id.clone())
        else {
            return self.callback_failed(&req.id, 503, "cannot place the call");
        };
        match self.endpoint.invite(now, spec) {
            Ok(call) => {
                tracing::info!(%call, callback = %req.id, "callback: dialling");
                self.records.insert(
                    call,
                    CallRecord::starting(
                        String::new(),
                        "outbound",
                        req.phone.clone(),
                        caller_id,
                        Some(trunk.name.clone()),
                        req.flow.clone(),
                    ),
                );
                let ring = Duration::from_secs(self.config.callbacks.ring_timeout_secs);
                self.callbacks.insert(
                    call,
                    CallbackLeg {
                        id: req.id,
                        flow: req.flow,
                        target: req.target,
                        vars: req.vars,
                        reservation: Some(reservation),
                        give_up: Some(now.checked_add(ring).unwrap_or(now)),
                        timed_out: false,
                        answered: false,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(callback = %req.id, %e, "callback: cannot place the call");
                self.media.cancel(reservation);
                self.callback_failed(&req.id, 503, "cannot place the call");
            }
        }
    }

    pub(super) fn callback_progress(&mut self, call: CallId, status: u16) {
        if let (Some(leg), 180 | 183) = (self.callbacks.get(&call), status) {
            self.services.callbacks.progress(&leg.id, Progress::Ringing);
        }
    }

    /// The visitor picked up: start the media, then the flow or the
    /// transfer to the target (with hold music while it rings).
    pub(super) fn callback_answered(
        &mut self,
        now: Instant,
        call: CallId,
        media: Option<Negotiated>,
    ) {
        let Some(leg) = self.callbacks.get_mut(&call) else {
            return;
        };
        leg.give_up = None;
        leg.answered = true;
        let id = leg.id.clone();
        let reservation = leg.reservation.take();
        let flow_name = leg.flow.clone();
        let target = leg.target.clone();
        if let Some(r) = self.records.get_mut(&call) {
            r.answered_at = Some(std::time::SystemTime::now());
        }
        self.services.callbacks.progress(&id, Progress::Answered);
        let flow = match (&flow_name, &target) {
            (Some(name), _) => BuiltinFlow::from_name(name, &self.config.flow_set),
            (None, Some(_)) => Some(BuiltinFlow::Hold),
            (None, None) => None,
        };
        let (Some(r), Some(media), Some(flow)) = (reservation, media, flow) else {
            tracing::warn!(%call, callback = %id, "callback: no media or no flow; hanging up");
            let _ = self.endpoint.hangup(now, call);
            return;
        };
        self.start_media(now, call, flow, r, &media);
        if let Some(target) = target {
            self.start_transfer(
                now,
                call,
                TransferRequest {
                    targets: vec![target],
                    parallel: false,
                    ring_timeout: Duration::from_secs(self.config.callbacks.ring_timeout_secs),
                    trunk: None,
                    hold_message: None,
                    repeat_interval: None,
                },
            );
        }
    }

    /// The callback's call ended: completed, or failed with its cause.
    pub(super) fn callback_ended(&mut self, call: CallId, cause: &EndCause) {
        let Some(mut leg) = self.callbacks.remove(&call) else {
            return;
        };
        if let Some(r) = leg.reservation.take() {
            self.media.cancel(r);
        }
        let (status, reason) = match cause {
            _ if leg.answered => (None, end_reason(cause)),
            _ if leg.timed_out => (Some(408), "no answer".to_string()),
            EndCause::Rejected { status, reason } => (Some(*status), reason.clone()),
            EndCause::Timeout => (Some(408), "no response".to_string()),
            EndCause::Shutdown => (Some(503), "shutdown".to_string()),
            other => (Some(487), end_reason(other)),
        };
        self.services.callbacks.progress(
            &leg.id,
            Progress::Ended {
                sip_status: status,
                reason,
            },
        );
    }

    /// Stop ringing callbacks nobody picked up.
    pub(super) fn callback_timeouts(&mut self, now: Instant) {
        let expired: Vec<CallId> = self
            .callbacks
            .iter()
            .filter(|(_, leg)| leg.give_up.is_some_and(|at| at <= now))
            .map(|(call, _)| *call)
            .collect();
        for call in expired {
            if let Some(leg) = self.callbacks.get_mut(&call) {
                tracing::info!(%call, callback = %leg.id, "callback: no answer in time");
                leg.give_up = None;
                leg.timed_out = true;
            }
            let _ = self.endpoint.hangup(now, call);
        }
    }
}

fn end_reason(cause: &EndCause) -> String {
    match cause {
        EndCause::RemoteBye => "remote_bye",
        EndCause::LocalHangup => "local_hangup",
        EndCause::Cancelled => "cancelled",
        EndCause::Rejected { .. } => "rejected",
        EndCause::Timeout => "timeout",
        EndCause::AckTimeout => "ack_timeout",
        EndCause::Shutdown => "shutdown",
    }
    .to_string()
}
