//! Callbacks: dial the visitor through the outbound trunk, run the flow
//! (or ring the target with hold music) once they answer, and report every
//! step as an [`Effect::Callback`].

use std::time::{Duration, Instant};

use super::model::{AppRun, Call, CallbackLeg, Program, Role};
use super::status::StatusHook;
use super::{CallControl, Effect, PortSource};
use crate::callback::{Originate, Progress};
use crate::flow::interp::TransferRequest;
use crate::sdp::Negotiated;
use crate::sip::endpoint::{CallId, EndCause};
use crate::sip::message::Uri;
use crate::store::CallRecord;
use crate::twiml::calls::{CallView, DialTo, NewCall};

impl<P: PortSource, F> CallControl<P, F> {
    fn callback_failed(&mut self, id: &str, status: u16, reason: &str) {
        self.effects.push_back(Effect::Callback {
            id: id.to_string(),
            progress: Progress::Ended {
                sip_status: Some(status),
                reason: reason.to_string(),
            },
        });
    }

    /// Dial a callback through the outbound trunk.
    pub fn originate(&mut self, now: Instant, req: Originate) {
        if self.draining() {
            return self.callback_failed(&req.id, 503, "draining");
        }
        let Some(route) = crate::callback::outbound_trunk(&self.config).map(str::to_string) else {
            return self.callback_failed(&req.id, 503, "no outbound trunk");
        };
        let trunks = match self.trunk_route(&route) {
            Ok(trunks) => trunks,
            Err(why) => {
                tracing::warn!(callback = %req.id, trunk = %route, why, "callback: cannot place the call");
                return self.callback_failed(&req.id, 503, why);
            }
        };
        let Some((trunk, _)) = trunks.split_first() else {
            return self.callback_failed(&req.id, 503, "no outbound trunk");
        };
        if trunk
            .outbound_proxy
            .as_deref()
            .and_then(|p| Uri::parse(p).ok())
            .is_none()
        {
            return self.callback_failed(&req.id, 503, "no outbound trunk");
        }
        let Some(target) = crate::callback::number_uri(trunk, &req.phone) else {
            return self.callback_failed(&req.id, 400, "invalid_number");
        };
        let caller_id = trunk
            .caller_id
            .clone()
            .unwrap_or_else(|| "crossline".into());
        let record = CallRecord::starting(
            String::new(),
            "outbound",
            req.phone.clone(),
            caller_id.clone(),
            Some(trunk.name.clone()),
            req.flow.clone(),
        );
        let id = req.id.clone();
        let leg = CallbackLeg {
            id: req.id,
            flow: req.flow,
            target: req.target,
            vars: req.vars,
            answered: false,
        };
        let c = Call::new(Role::Callback(Box::new(leg)), record);
        match self.place_call_through(now, target, &trunks, true, caller_id, c) {
            Ok(call) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.span = super::call_span(call, &c.record);
                    c.span
                        .in_scope(|| tracing::info!(%call, callback = %id, "callback: dialling"));
                }
                let ring = Duration::from_secs(self.config.callbacks.ring_timeout_secs);
                self.set_give_up(call, now.checked_add(ring).unwrap_or(now));
            }
            Err(why) => {
                tracing::warn!(callback = %id, why, "callback: cannot place the call");
                self.callback_failed(&id, 503, "cannot place the call");
            }
        }
        self.process_events(now);
    }

    /// Dial a Calls API call: a number through the outbound trunk, a SIP
    /// URI (on an allowed host, checked by the API) straight; its app runs
    /// once it is answered. Err: why it can't go out.
    pub fn originate_app(&mut self, now: Instant, new: NewCall) -> Result<(), String> {
        if self.draining() {
            return Err("draining".into());
        }
        let (target, trunks) = match &new.to {
            DialTo::Number(number) => {
                let route = crate::callback::outbound_trunk(&self.config)
                    .ok_or("no outbound trunk")?
                    .to_string();
                let trunks = self.trunk_route(&route)?;
                let target = trunks
                    .first()
                    .and_then(|t| crate::callback::number_uri(t, number))
                    .ok_or("the outbound trunk has no usable proxy")?;
                (target, trunks)
            }
            DialTo::Sip(uri) => (Uri::parse(uri).map_err(|_| "not a SIP URI")?, Vec::new()),
        };
        let mut record = CallRecord::starting(
            String::new(),
            "outbound",
            new.to.as_str().to_string(),
            new.from.clone(),
            trunks.first().map(|t| t.name.clone()),
            Some(crate::twiml::APP_FLOW.into()),
        );
        record
            .vars
            .insert(crate::twiml::CALL_SID_VAR.into(), new.sid.clone());
        record
            .vars
            .insert(crate::twiml::calls::API_VAR.into(), "1".into());
        // A callback leg without a callback: its news goes nowhere.
        let leg = CallbackLeg {
            id: new.sid.clone(),
            flow: None,
            target: None,
            vars: Default::default(),
            answered: false,
        };
        let mut c = Call::new(Role::Callback(Box::new(leg)), record);
        c.program = Some(Program::App(Box::new(AppRun {
            flow: std::sync::Arc::new(crate::twiml::app_flow(&new.app)),
            status: crate::twiml::StatusTarget::of(&new.app)
                .map(|t| StatusHook::new(std::sync::Arc::new(t), new.sid.clone())),
        })));
        let retarget = !trunks.is_empty();
        let call = self.place_call_through(now, target, &trunks, retarget, new.from, c)?;
        if let Some(c) = self.calls.get_mut(&call) {
            c.span = super::call_span(call, &c.record);
            c.span
                .in_scope(|| tracing::info!(%call, sid = %new.sid, "Calls API: dialling"));
        }
        self.call_status(call, super::status::INITIATED);
        self.set_give_up(call, now.checked_add(new.timeout).unwrap_or(now));
        self.process_events(now);
        Ok(())
    }

    /// Status=completed (any call) or canceled (`ringing_only`) from the
    /// Calls API: the call as it is now; None when no call has that sid.
    pub(crate) fn end_by_sid(
        &mut self,
        now: Instant,
        sid: &str,
        ringing_only: bool,
    ) -> Option<CallView> {
        let (id, call) = self.calls.iter().find(|(_, c)| c.sid() == sid)?;
        let id = *id;
        let mut view = view_of(call);
        let answered = call.record.answered_at.is_some();
        let theirs = matches!(call.role, Role::Inbound);
        if ringing_only && answered {
            // Twilio: canceling a call in progress does nothing.
            return Some(view);
        }
        let _in_call = self.enter(id);
        tracing::info!(ringing_only, "Calls API: ending the call");
        match (answered, theirs) {
            // Ours ringing: CANCEL. Theirs ringing: refuse it.
            (false, true) => {
                let _ = self.endpoint.reject(now, id, 487);
            }
            _ => self.hang_up(now, id),
        }
        view.status = if answered { "completed" } else { "canceled" };
        view.ended = Some(std::time::SystemTime::now());
        Some(view)
    }

    /// Every live call, as the Calls API shows it.
    pub(crate) fn call_views(&self) -> Vec<CallView> {
        self.calls.values().map(|c| view_of(c)).collect()
    }

    pub(crate) fn callback_progress(&mut self, call: CallId, status: u16) {
        if let (Some(Role::Callback(leg)), 180 | 183) =
            (self.calls.get(&call).map(|c| &c.role), status)
        {
            let api = self
                .calls
                .get(&call)
                .is_some_and(|c| c.record.vars.contains_key(crate::twiml::calls::API_VAR));
            if api {
                self.call_status(call, super::status::RINGING);
                return;
            }
            self.effects.push_back(Effect::Callback {
                id: leg.id.clone(),
                progress: Progress::Ringing,
            });
        }
    }

    /// The visitor picked up: start the media, then the flow or the
    /// transfer to the target (with hold music while it rings).
    pub(crate) fn callback_answered(
        &mut self,
        now: Instant,
        id: CallId,
        media: Option<Negotiated>,
    ) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        call.give_up = None;
        call.record.answered_at = Some(std::time::SystemTime::now());
        let reservation = call.take_reservation();
        let Role::Callback(leg) = &mut call.role else {
            return;
        };
        leg.answered = true;
        let callback = leg.id.clone();
        let target = leg.target.clone();
        let program = match (&leg.flow, &leg.target) {
            (Some(name), _) => {
                Program::from_name(name, &self.config.flow_set, self.router.default_hold())
            }
            (None, Some(_)) => Some(Program::Hold(self.router.default_hold().clone())),
            // A Calls API call: its app.
            (None, None) => call.program.take(),
        };
        call.program = program.clone();
        self.effects.push_back(Effect::Callback {
            id: callback.clone(),
            progress: Progress::Answered,
        });
        self.call_status(id, super::status::ANSWERED);
        let (Some(r), Some(media), Some(_)) = (reservation, media, program) else {
            tracing::warn!(call = %id, %callback, "callback: no media or no flow; hanging up");
            self.hang_up(now, id);
            return;
        };
        self.start_media(now, id, r, &media);
        if let Some(target) = target {
            let ring_timeout = Duration::from_secs(self.config.callbacks.ring_timeout_secs);
            self.start_transfer(
                now,
                id,
                TransferRequest {
                    targets: vec![target],
                    parallel: false,
                    ring_timeout,
                    trunk: None,
                    hold_message: None,
                    hold_music: Vec::new(),
                    repeat_interval: None,
                    caller_id: None,
                },
            );
        }
    }

    /// The callback's call ended: completed, or failed with its cause.
    pub(crate) fn callback_ended(&mut self, leg: &CallbackLeg, timed_out: bool, cause: &EndCause) {
        let (status, reason) = match cause {
            _ if leg.answered => (None, end_reason(cause)),
            _ if timed_out => (Some(408), "no answer".to_string()),
            EndCause::Rejected { status, reason } => (Some(*status), reason.clone()),
            EndCause::Timeout => (Some(408), "no response".to_string()),
            EndCause::Shutdown => (Some(503), "shutdown".to_string()),
            other => (Some(487), end_reason(other)),
        };
        self.effects.push_back(Effect::Callback {
            id: leg.id.clone(),
            progress: Progress::Ended {
                sip_status: status,
                reason,
            },
        });
    }
}

fn end_reason(cause: &EndCause) -> String {
    super::outcome(cause).0.to_string()
}

/// A live call as the Calls API shows it.
fn view_of<R, F>(c: &Call<R, F>) -> CallView {
    let r = &c.record;
    let api = r.vars.contains_key(crate::twiml::calls::API_VAR);
    CallView {
        sid: c.sid().to_string(),
        from: r.caller.clone(),
        to: r.did.clone(),
        direction: crate::twiml::calls::direction(r.direction, api),
        status: if r.answered_at.is_some() {
            "in-progress"
        } else {
            "ringing"
        },
        created: r.started_at,
        answered: r.answered_at,
        ended: None,
        call_id: r.call_id.clone(),
    }
}
