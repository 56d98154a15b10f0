//! Status events of a webhook app's call (initiated, ringing, answered,
//! completed) for its `status_callback`: decided here, once per event and
//! in order, and handed out as [`Effect::CallStatus`]; the runtime sends
//! them (src/twiml/status.rs).

use std::sync::Arc;
use std::time::SystemTime;

use super::model::{Call, Program};
use super::{CallControl, Effect, PortSource};
use crate::sip::endpoint::{CallId, EndCause};
use crate::twiml::{StatusEvent, StatusTarget};

pub(crate) const INITIATED: usize = 0;
pub(crate) const RINGING: usize = 1;
pub(crate) const ANSWERED: usize = 2;
pub(crate) const COMPLETED: usize = 3;

/// A call's status callback: where to, and which events are out.
#[derive(Debug, Clone)]
pub(crate) struct StatusHook {
    target: Arc<StatusTarget>,
    call_sid: String,
    /// Bit `i`: event `i` was sent (or skipped); never twice.
    done: u8,
    sequence: u32,
}

impl StatusHook {
    pub(crate) fn new(target: Arc<StatusTarget>, call_sid: String) -> StatusHook {
        StatusHook {
            target,
            call_sid,
            done: 0,
            sequence: 0,
        }
    }
}

impl<P: PortSource, F> CallControl<P, F> {
    /// Send `event` of `id` if its app wants it and it isn't out yet.
    pub(crate) fn call_status(&mut self, id: CallId, event: usize) {
        let account = self.config.twiml.account_sid.clone();
        if let Some(ev) = self
            .calls
            .get_mut(&id)
            .and_then(|c| status_event(c, &account, event, None))
        {
            self.effects.push_back(Effect::CallStatus(Box::new(ev)));
        }
    }

    /// `completed` (busy, no-answer…) of a call being let go of.
    pub(crate) fn final_status<R>(&mut self, call: &mut Call<R, F>, cause: &EndCause) {
        let account = self.config.twiml.account_sid.clone();
        if let Some(ev) = status_event(call, &account, COMPLETED, Some(cause)) {
            self.effects.push_back(Effect::CallStatus(Box::new(ev)));
        }
    }
}

fn status_event<R, F>(
    call: &mut Call<R, F>,
    account_sid: &str,
    event: usize,
    ended: Option<&EndCause>,
) -> Option<StatusEvent> {
    let Some(Program::App(app)) = &mut call.program else {
        return None;
    };
    let hook = app.status.as_mut()?;
    if hook.done & (1 << event) != 0 {
        return None;
    }
    hook.done |= 1 << event;
    if !hook.target.wants(event) {
        // The call's queue still closes after its last event.
        return (event == COMPLETED && hook.sequence > 0).then(|| StatusEvent {
            target: hook.target.clone(),
            call_sid: hook.call_sid.clone(),
            params: Vec::new(),
            last: true,
        });
    }
    let status = match (event, ended) {
        (INITIATED, _) => "initiated",
        (RINGING, _) => "ringing",
        (ANSWERED, _) => "in-progress",
        (_, Some(cause)) => {
            final_status_of(call.record.answered_at.is_some(), call.timed_out, cause)
        }
        _ => "completed",
    };
    let r = &call.record;
    let direction = crate::twiml::calls::direction(r.direction, true);
    let mut params = vec![
        ("CallSid".to_string(), hook.call_sid.clone()),
        ("AccountSid".into(), account_sid.to_string()),
        ("From".into(), r.caller.clone()),
        ("To".into(), r.did.clone()),
        ("Direction".into(), direction.into()),
        ("ApiVersion".into(), "2010-04-01".into()),
        ("CallStatus".into(), status.into()),
        ("CallbackSource".into(), "call-progress-events".into()),
        ("SequenceNumber".into(), hook.sequence.to_string()),
    ];
    hook.sequence += 1;
    if let Some(cause) = ended {
        let secs = r
            .answered_at
            .and_then(|a| SystemTime::now().duration_since(a).ok())
            .map_or(0, |d| d.as_secs());
        let code = match (r.answered_at, super::outcome(cause).1) {
            (Some(_), _) => 200,
            (None, Some(code)) => code,
            (None, None) => 480,
        };
        params.push(("CallDuration".into(), secs.to_string()));
        params.push(("Duration".into(), secs.div_ceil(60).to_string()));
        params.push(("SipResponseCode".into(), code.to_string()));
    }
    Some(StatusEvent {
        target: hook.target.clone(),
        call_sid: hook.call_sid.clone(),
        params,
        last: event == COMPLETED,
    })
}

/// Twilio's final CallStatus for how `call` ended.
pub(crate) fn final_status<R, F>(call: &Call<R, F>, cause: &EndCause) -> &'static str {
    final_status_of(call.record.answered_at.is_some(), call.timed_out, cause)
}

/// `timed_out`: we gave up ringing it (an API call's `Timeout`).
fn final_status_of(answered: bool, timed_out: bool, cause: &EndCause) -> &'static str {
    match cause {
        _ if answered => "completed",
        _ if timed_out => "no-answer",
        EndCause::Rejected {
            status: 486 | 600 | 603,
            ..
        } => "busy",
        EndCause::Timeout => "no-answer",
        // Theirs cancelled, or ours (487 to our CANCEL).
        EndCause::Cancelled | EndCause::Rejected { status: 487, .. } => "canceled",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::model::{AppRun, Role};
    use crate::store::CallRecord;

    fn app_call(events: &[&str]) -> Call<(), ()> {
        let app = crate::twiml::AppConfig {
            url: "http://app.example/voice".into(),
            method: "POST".into(),
            fallback_url: None,
            fallback_method: "POST".into(),
            status_callback: Some("http://app.example/status".into()),
            status_callback_method: "POST".into(),
            status_callback_event: events.iter().map(|e| e.to_string()).collect(),
            twiml: None,
        };
        let record = CallRecord::starting(
            "c".into(),
            "inbound",
            "100".into(),
            "+15551234567".into(),
            None,
            None,
        );
        let mut call = Call::new(Role::Inbound, record);
        call.program = Some(Program::App(Box::new(AppRun {
            flow: Arc::new(crate::twiml::app_flow(&app)),
            status: StatusTarget::of(&app).map(|t| StatusHook::new(Arc::new(t), "CA1".into())),
        })));
        call
    }

    /// Only the events asked for go out, each once; when the final one
    /// isn't wanted, an empty last event still closes the call's queue.
    #[test]
    fn unwanted_events_are_skipped_and_the_queue_still_closes() {
        let mut call = app_call(&["ringing"]);
        let ended = EndCause::RemoteBye;
        assert!(status_event(&mut call, "AC", INITIATED, None).is_none());
        let ringing = status_event(&mut call, "AC", RINGING, None);
        assert!(ringing.is_some_and(|e| !e.params.is_empty() && !e.last));
        assert!(
            status_event(&mut call, "AC", RINGING, None).is_none(),
            "once"
        );
        let close = status_event(&mut call, "AC", COMPLETED, Some(&ended));
        assert!(close.is_some_and(|e| e.params.is_empty() && e.last));
        assert!(status_event(&mut call, "AC", COMPLETED, Some(&ended)).is_none());

        // Nothing sent, nothing queued: nothing to close.
        let mut call = app_call(&["answered"]);
        assert!(status_event(&mut call, "AC", COMPLETED, Some(&ended)).is_none());
    }
}
