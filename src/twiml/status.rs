//! Status callbacks: a call's progress (initiated, ringing, answered,
//! completed) posted to the app's `status_callback`, signed like every app
//! request. Call control decides what to send, once per event; here each
//! call's events go out in order on a task of their own, retried with
//! backoff on 5xx and refused connections (never on a timeout, which the
//! app may have taken: no duplicates).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::Method;
use crate::telemetry::names;

/// The events an app may ask for, in the order a call has them.
pub const EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

/// Attempts per event: the first and three retries (0.5, 1, 2 s apart).
const ATTEMPTS: u32 = 4;

/// Where a call's status events go and which it wants.
#[derive(Debug)]
pub struct StatusTarget {
    pub url: reqwest::Url,
    pub method: Method,
    /// Bit `i` set: `EVENTS[i]` wanted.
    pub events: u8,
}

impl StatusTarget {
    /// From a route's app; None without a (valid) `status_callback`.
    pub fn of(app: &super::AppConfig) -> Option<StatusTarget> {
        let url = reqwest::Url::parse(app.status_callback.as_deref()?).ok()?;
        let events = EVENTS
            .iter()
            .enumerate()
            .filter(|(_, e)| app.status_callback_event.iter().any(|w| w == *e))
            .fold(0u8, |mask, (i, _)| mask | 1 << i);
        Some(StatusTarget {
            url,
            method: Method::parse(&app.status_callback_method)?,
            events,
        })
    }

    pub fn wants(&self, event: usize) -> bool {
        self.events & (1 << event) != 0
    }
}

/// One event to send, as call control built it.
#[derive(Debug)]
pub struct StatusEvent {
    pub target: Arc<StatusTarget>,
    pub call_sid: String,
    /// The call's own parameters and the event's (CallStatus, SequenceNumber…);
    /// empty: nothing to send, only the end of the call's events.
    pub params: Vec<(String, String)>,
    /// The call's last event: its queue closes after it.
    pub last: bool,
}

/// Each call's queue of events, by CallSid.
#[derive(Default)]
pub struct StatusQueues(std::sync::Mutex<HashMap<String, mpsc::UnboundedSender<StatusEvent>>>);

impl super::Apps {
    /// Queue `event` behind the call's earlier ones.
    pub fn send_status(self: &Arc<Self>, event: StatusEvent) {
        let mut queues = self.statuses.0.lock().unwrap_or_else(|p| p.into_inner());
        let sid = event.call_sid.clone();
        let last = event.last;
        let queue = queues.entry(sid.clone()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::unbounded_channel::<StatusEvent>();
            let apps = self.clone();
            tokio::spawn(async move {
                while let Some(event) = rx.recv().await {
                    apps.deliver(&event).await;
                }
            });
            tx
        });
        let _ = queue.send(event);
        if last {
            // The task sends what is queued, then ends.
            queues.remove(&sid);
        }
    }

    async fn deliver(&self, event: &StatusEvent) {
        // Only closes the call's queue (its last event wasn't asked for).
        if event.params.is_empty() {
            return;
        }
        for attempt in 1..=ATTEMPTS {
            let req = self.signed(&event.target.url, event.target.method, &event.params);
            let retry = match req.timeout(self.timeout).send().await {
                Ok(resp) if resp.status().is_server_error() => true,
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    if !ok {
                        tracing::warn!(status = resp.status().as_u16(), "status callback refused");
                    }
                    metrics::counter!(names::TWIML_STATUS_CALLBACKS, "outcome" => if ok { "sent" } else { "refused" })
                        .increment(1);
                    return;
                }
                Err(e) => e.is_connect(),
            };
            if !retry || attempt == ATTEMPTS {
                break;
            }
            metrics::counter!(names::TWIML_STATUS_CALLBACKS, "outcome" => "retried").increment(1);
            tokio::time::sleep(Duration::from_millis(250 << attempt)).await;
        }
        tracing::warn!("status callback failed");
        metrics::counter!(names::TWIML_STATUS_CALLBACKS, "outcome" => "failed").increment(1);
    }
}
