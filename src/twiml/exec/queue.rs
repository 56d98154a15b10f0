//! `<Enqueue>` and `<Dial><Queue>`: a caller waits in a crossline queue
//! (a `[[queues]]` entry, or one made on first use with no agents) until
//! an agent of the queue answers, another app call dequeues it, or its
//! wait document says `<Leave/>`. Then its `action` hears how it went.
//!
//! A dequeue is a pull on the ACD: the dequeuing call takes the first
//! waiting app caller, hands it a [`Pulled`], the caller plays the
//! `<Queue url>` document and says it is ready, and the dequeuing call
//! joins the two calls (call control bridges them; each keeps its app).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{resolve, Request, Session, Step};
use crate::flow::interp::{Bridged, CallRequest, Ended, FlowCx, Label, TransferEvent};
use crate::flow::interp::{TransferRequest, Waited};
use crate::queue::acd::{EntryId, Left};
use crate::queue::announce::{self, Language};
use crate::sip::endpoint::CallId;
use crate::telemetry::names;
use crate::tts::TtsRequest;
use crate::twiml::fetch::AppError;
use crate::twiml::live::{AppTarget, LiveApps};
use crate::twiml::parse::{Dial, Enqueue, VerbKind};
use crate::twiml::Method;

/// A wait document that ran out is asked again, at most this often.
const WAIT_DOCUMENT_PACE: Duration = Duration::from_secs(1);
/// A dequeued caller, ready, waits this long for the bridge.
const JOIN_WAIT: Duration = Duration::from_secs(5);

/// App callers waiting in a queue, by their entry: the way a dequeuing
/// call reaches them, and what the Queues API lists as a queue's members.
/// Only these can be dequeued (a TOML flow's caller waits for the queue's
/// agents).
#[derive(Default)]
pub(crate) struct Dequeueable(Mutex<HashMap<EntryId, Member>>);

/// One app caller in a queue.
struct Member {
    call_sid: String,
    queue: String,
    enqueued: SystemTime,
    /// Where a `<Dial><Queue>` hands it a [`Pulled`].
    pull: oneshot::Sender<Pulled>,
    /// Redirected out by the Queues API: no `<Dial><Queue>` may take it.
    dequeued: bool,
}

/// An app caller in a queue, as the Queues API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMember {
    pub entry: EntryId,
    pub call_sid: String,
    pub enqueued: SystemTime,
}

impl Dequeueable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EntryId, Member>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A `<Dial><Queue>` may take this caller.
    fn may_pull(&self, entry: EntryId) -> bool {
        self.lock().get(&entry).is_some_and(|m| !m.dequeued)
    }

    /// Take the caller for a `<Dial><Queue>` (not one being dequeued).
    fn take_for_pull(&self, entry: EntryId) -> Option<oneshot::Sender<Pulled>> {
        let mut map = self.lock();
        if map.get(&entry).is_none_or(|m| m.dequeued) {
            return None;
        }
        map.remove(&entry).map(|m| m.pull)
    }

    /// The app callers waiting in `queue`, in no particular order.
    fn members(&self, queue: &str) -> Vec<QueueMember> {
        self.lock()
            .iter()
            .filter(|(_, m)| m.queue == queue && !m.dequeued)
            .map(|(entry, m)| QueueMember {
                entry: *entry,
                call_sid: m.call_sid.clone(),
                enqueued: m.enqueued,
            })
            .collect()
    }

    /// See [`Apps::dequeue`](crate::twiml::Apps::dequeue).
    fn dequeue(&self, entry: EntryId, live: &LiveApps, target: AppTarget) -> bool {
        let mut map = self.lock();
        let Some(m) = map.get_mut(&entry).filter(|m| !m.dequeued) else {
            return false;
        };
        // Marked first, under the lock: a `<Dial><Queue>` can't take it now.
        m.dequeued = live.redirect(&m.call_sid, target);
        m.dequeued
    }
}

impl crate::twiml::Apps {
    /// The app callers waiting in `queue` (the Queues API's members), in
    /// no particular order: their places are the ACD's to tell.
    pub fn queue_members(&self, queue: &str) -> Vec<QueueMember> {
        self.dequeueable.members(queue)
    }

    /// Redirect a waiting app caller out of its queue to `target` (the
    /// Queues API's dequeue): its `<Enqueue>` ends, its action hears
    /// QueueResult=redirected, and the call runs the target document.
    /// False: not waiting (any more).
    pub fn dequeue(&self, entry: EntryId, target: AppTarget) -> bool {
        self.dequeueable.dequeue(entry, &self.live, target)
    }
}

/// Takes an app caller off the dequeueable list when its `<Enqueue>` ends.
struct Listed<'a>(&'a Dequeueable, EntryId);

impl Drop for Listed<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// Armed while the caller waits: if the wait is dropped there (the call
/// ended, or the Calls API redirected it), the action still hears why
/// (`QueueResult` hangup or redirected; bridged once bridged), as on
/// Twilio, from a task of its own. Its answer is not run.
struct HangupAction<'a> {
    apps: std::sync::Arc<crate::twiml::Apps>,
    request: Option<Request>,
    joined: Instant,
    redirecting: &'a std::sync::atomic::AtomicBool,
}

impl HangupAction<'_> {
    /// Bridged: the call ending now is the end of a bridged call.
    fn bridged(&mut self) {
        for (name, value) in self.request.iter_mut().flat_map(|r| r.extra.iter_mut()) {
            if name == "QueueResult" {
                *value = QueueResult::Bridged.as_str().into();
            }
        }
    }
}

impl Drop for HangupAction<'_> {
    fn drop(&mut self) {
        let (Some(mut req), Ok(rt)) = (self.request.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let redirected = self.redirecting.load(std::sync::atomic::Ordering::Relaxed);
        for (name, value) in &mut req.extra {
            match name.as_str() {
                "CallStatus" if !redirected => *value = "completed".into(),
                "QueueResult" if redirected => {
                    *value = match value.as_str() {
                        "bridged" => "redirected-from-bridged".into(),
                        _ => "redirected".into(),
                    }
                }
                "QueueTime" => *value = self.joined.elapsed().as_secs().to_string(),
                _ => {}
            }
        }
        let apps = self.apps.clone();
        rt.spawn(async move {
            let _ = apps.document(&req.url, req.method, &req.extra).await;
        });
    }
}

/// What a dequeued caller hears from the call that took it.
struct Pulled {
    by_sid: String,
    waited: Duration,
    /// `<Queue url>`: run on the caller's side before the bridge.
    url: Option<(reqwest::Url, Method)>,
    /// The caller's own call, once it is ready to be joined.
    ready: oneshot::Sender<CallId>,
}

/// "QU" and 32 hex digits, the same for a name every time.
pub fn queue_sid(name: &str) -> String {
    use sha1::{Digest, Sha1};
    let digest = Sha1::digest(name.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("QU{hex}")
}

/// Why the caller left the queue: Twilio's `QueueResult`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueResult {
    Bridged,
    Leave,
    Hangup,
    /// The queue's `max_callers` were waiting already.
    QueueFull,
    Error,
}

impl QueueResult {
    fn as_str(self) -> &'static str {
        match self {
            QueueResult::Bridged => "bridged",
            QueueResult::Leave => "leave",
            QueueResult::Hangup => "hangup",
            QueueResult::QueueFull => "queue-full",
            QueueResult::Error => "error",
        }
    }
}

/// What the waiting came to.
enum Waiting {
    Leave,
    Hangup,
    Failed(AppError),
}

/// How a waitUrl or `<Queue url>` document ended.
enum Ran {
    Out,
    /// `<Redirect>`: the caller asks it with its own parameters.
    Redirect(reqwest::Url, Method),
    Leave,
    Hangup,
    Failed(AppError),
}

/// What ended the wait first.
enum Event {
    Wait(Waiting),
    Offer(Option<crate::queue::acd::Offer>),
    Pulled(Option<Pulled>),
}

impl Session {
    pub(super) async fn enqueue(
        &self,
        cx: &mut FlowCx,
        q: &Enqueue,
        base: &reqwest::Url,
    ) -> Result<Result<Step, AppError>, Ended> {
        let queues = cx.services.queues.clone();
        let queue_sid = queue_sid(&q.name);
        let joined = Instant::now();
        if !queues.ensure(&q.name) {
            tracing::warn!(queue = %q.name, "<Enqueue>: too many queues made at run time");
            metrics::counter!(names::TWIML_APP_ERRORS, "kind" => "queue_full").increment(1);
            return Ok(self.left_queue(q, base, QueueResult::Error, &queue_sid, joined));
        }
        let mut ticket = match queues.join(&q.name, Vec::new()) {
            Ok(ticket) => ticket,
            // Twilio's answer for a full queue; counted by the ACD.
            Err(crate::queue::acd::Refused::Full) => {
                return Ok(self.left_queue(q, base, QueueResult::QueueFull, &queue_sid, joined))
            }
            Err(crate::queue::acd::Refused::NoSuchQueue) => {
                return Ok(self.left_queue(q, base, QueueResult::Error, &queue_sid, joined))
            }
        };
        let entry = ticket.entry();
        let (pull_tx, mut pulled) = oneshot::channel();
        self.apps.dequeueable.lock().insert(
            entry,
            Member {
                call_sid: self.call_sid.clone(),
                queue: q.name.clone(),
                enqueued: SystemTime::now(),
                pull: pull_tx,
                dequeued: false,
            },
        );
        let _listed = Listed(&self.apps.dequeueable, entry);
        let mut hangup = HangupAction {
            apps: self.apps.clone(),
            request: match self.left_queue(q, base, QueueResult::Hangup, &queue_sid, joined) {
                Ok(Step::Fetch(mut req)) => {
                    let mut params = self.params(cx)?;
                    params.append(&mut req.extra);
                    req.extra = params;
                    Some(req)
                }
                _ => None,
            },
            joined,
            redirecting: &self.redirecting,
        };
        tracing::info!(queue = %q.name, "<Enqueue>: caller waiting");
        let result = loop {
            let event = {
                let waiting = self.wait_in_queue(cx, q, base, entry, &queue_sid);
                tokio::select! {
                    w = waiting => Event::Wait(w?),
                    offer = ticket.next_offer() => Event::Offer(offer),
                    pull = &mut pulled => Event::Pulled(pull.ok()),
                }
            };
            match event {
                Event::Wait(Waiting::Leave) => break QueueResult::Leave,
                Event::Wait(Waiting::Hangup) => {
                    hangup.request = None;
                    ticket.finish(Left::Abandoned);
                    cx.hangup()?;
                    return Ok(Ok(Step::End));
                }
                Event::Wait(Waiting::Failed(e)) => {
                    tracing::warn!(kind = e.kind, error = %e.message, "<Enqueue>: wait document failed");
                    metrics::counter!(names::TWIML_APP_ERRORS, "kind" => e.kind).increment(1);
                    break QueueResult::Error;
                }
                Event::Offer(Some(offer)) => {
                    if self
                        .ring_agents(cx, &q.name, offer.agents, &mut ticket, &mut hangup)
                        .await?
                    {
                        break QueueResult::Bridged;
                    }
                }
                Event::Offer(None) | Event::Pulled(None) => break QueueResult::Error,
                Event::Pulled(Some(pull)) => {
                    hangup.bridged();
                    break self.dequeued(cx, pull, &queue_sid).await?;
                }
            }
        };
        hangup.request = None;
        ticket.finish(match result {
            QueueResult::Bridged => Left::Withdrawn,
            _ => Left::Abandoned,
        });
        cx.silence()?;
        tracing::info!(queue = %q.name, result = result.as_str(), "<Enqueue>: left the queue");
        Ok(self.left_queue(q, base, result, &queue_sid, joined))
    }

    /// The action with `QueueResult`, or on to the next verb.
    fn left_queue(
        &self,
        q: &Enqueue,
        base: &reqwest::Url,
        result: QueueResult,
        queue_sid: &str,
        joined: Instant,
    ) -> Result<Step, AppError> {
        let Some(action) = &q.action else {
            return Ok(Step::Next);
        };
        let extra = vec![
            ("QueueResult".to_string(), result.as_str().to_string()),
            ("QueueSid".into(), queue_sid.to_string()),
            ("QueueTime".into(), joined.elapsed().as_secs().to_string()),
        ];
        resolve(base, action).map(|url| Step::Fetch(Request::to(url, q.method, extra)))
    }

    /// Play to the waiting caller until something else happens: the wait
    /// documents (asked again whenever one runs out), or without a
    /// waitUrl the queue's music and announcements. Ends only on
    /// `<Leave/>`, `<Hangup/>` or an app error.
    async fn wait_in_queue(
        &self,
        cx: &mut FlowCx,
        q: &Enqueue,
        base: &reqwest::Url,
        entry: EntryId,
        queue_sid: &str,
    ) -> Result<Waiting, Ended> {
        let Some(wait_url) = &q.wait_url else {
            return self.hold_in_queue(cx, &q.name, entry).await;
        };
        let wait_url = match resolve(base, wait_url) {
            Ok(u) => u,
            Err(e) => return Ok(Waiting::Failed(e)),
        };
        let queues = cx.services.queues.clone();
        let params = || {
            let s = queues.standing(entry);
            let secs = |d: Option<Duration>| d.unwrap_or_default().as_secs().to_string();
            vec![
                ("QueueSid".to_string(), queue_sid.to_string()),
                (
                    "QueuePosition".into(),
                    s.map_or(0, |s| s.position).to_string(),
                ),
                ("QueueTime".into(), secs(s.map(|s| s.waited))),
                ("AvgQueueTime".into(), secs(s.map(|s| s.average_wait))),
                (
                    "CurrentQueueSize".into(),
                    s.map_or(0, |s| s.size).to_string(),
                ),
            ]
        };
        let mut req = Request::to(wait_url.clone(), q.wait_method, params());
        loop {
            let started = Instant::now();
            let next = match self.run_restricted(cx, &req, true).await? {
                Ran::Out => None,
                Ran::Redirect(url, method) => Some(Request::to(url, method, params())),
                Ran::Leave => return Ok(Waiting::Leave),
                Ran::Hangup => return Ok(Waiting::Hangup),
                Ran::Failed(e) => return Ok(Waiting::Failed(e)),
            };
            // Ran out (or redirected): asked again, never in a tight loop.
            cx.sleep(WAIT_DOCUMENT_PACE.saturating_sub(started.elapsed()))
                .await?;
            req = next.unwrap_or_else(|| Request::to(wait_url.clone(), q.wait_method, params()));
        }
    }

    /// Run one document of the kinds that may hold only `<Play>`, `<Say>`,
    /// `<Pause>` and `<Redirect>` (a `<Queue url>`'s), and in a waitUrl's
    /// (`in_queue`) `<Leave>` and `<Hangup>` too.
    async fn run_restricted(
        &self,
        cx: &mut FlowCx,
        req: &Request,
        in_queue: bool,
    ) -> Result<Ran, Ended> {
        let verbs = match self.document(cx, req).await? {
            Ok(v) => v,
            Err(e) => return Ok(Ran::Failed(e)),
        };
        for verb in &verbs {
            match &verb.kind {
                VerbKind::Say(_) | VerbKind::Play(_) | VerbKind::Pause(_) => {
                    if let Err(e) = self.verb(cx, verb, &req.url).await? {
                        return Ok(Ran::Failed(e));
                    }
                }
                VerbKind::Redirect { url, method } => {
                    return Ok(match resolve(&req.url, url) {
                        Ok(url) => Ran::Redirect(url, *method),
                        Err(e) => Ran::Failed(e),
                    })
                }
                VerbKind::Leave if in_queue => return Ok(Ran::Leave),
                VerbKind::Hangup if in_queue => return Ok(Ran::Hangup),
                _ => {
                    let allowed = match in_queue {
                        true => "a waitUrl document holds Play, Say, Pause, Redirect, Leave and Hangup only",
                        false => "a <Queue url> document holds Play, Say, Pause and Redirect only",
                    };
                    return Ok(Ran::Failed(AppError::new(
                        "bad_twiml",
                        format!("line {}: {allowed}", verb.line),
                    )));
                }
            }
        }
        Ok(Ran::Out)
    }

    /// No waitUrl: the queue's own hold music, and its position
    /// announcements when it is a configured queue; the default music for
    /// a queue made at run time. Never ends by itself.
    async fn hold_in_queue(
        &self,
        cx: &mut FlowCx,
        queue: &str,
        entry: EntryId,
    ) -> Result<Waiting, Ended> {
        let queues = cx.services.queues.clone();
        let Some(config) = queues.config(queue).cloned() else {
            cx.hold(None, None, Vec::new())?;
            return cx.call_wait(std::future::pending::<Waiting>()).await;
        };
        let music = cx.hold_music("enqueue", &config.hold_music).await;
        let language = Language::parse(&config.language).unwrap_or(Language::En);
        let interval = Duration::from_secs(config.announce_interval_secs);
        cx.hold(None, None, music.clone())?;
        if interval.is_zero() {
            return cx.call_wait(std::future::pending::<Waiting>()).await;
        }
        loop {
            if let Some((place, wait)) = queues.position(entry) {
                let text = announce::position(language, place, wait);
                tracing::info!(%queue, %text, "<Enqueue>: announcing the place");
                match cx.speech(&TtsRequest::new(text, language.code())).await {
                    Ok(said) => cx.hold(Some(said), Some(interval * 2), music.clone())?,
                    Err(e) => tracing::warn!(%queue, %e, "<Enqueue>: announcement not rendered"),
                }
            }
            cx.sleep(interval).await?;
        }
    }

    /// A configured queue's agents ring for this caller; true: one
    /// answered, and the call with it is over.
    async fn ring_agents(
        &self,
        cx: &mut FlowCx,
        queue: &str,
        agents: Vec<String>,
        ticket: &mut crate::queue::Ticket,
        hangup: &mut HangupAction<'_>,
    ) -> Result<bool, Ended> {
        let ring_timeout = cx
            .services
            .queues
            .config(queue)
            .map_or(20, |c| c.ring_timeout_secs);
        let req = TransferRequest {
            targets: agents,
            parallel: true,
            ring_timeout: Duration::from_secs(ring_timeout),
            trunk: None,
            hold_message: None,
            hold_music: Vec::new(),
            repeat_interval: None,
            caller_id: None,
        };
        match cx.transfer(req).await? {
            TransferEvent::Bridged { target } => {
                ticket.ring_result(Some(&target));
                hangup.bridged();
                tracing::info!(%queue, agent = %target, "<Enqueue>: an agent answered");
                while cx.next_transfer_event().await? != TransferEvent::AgentHungUp {}
                Ok(true)
            }
            _ => {
                ticket.ring_result(None);
                Ok(false)
            }
        }
    }

    /// Taken out by a `<Dial><Queue>`: its `url` document plays here, then
    /// the two calls are joined until one leaves.
    async fn dequeued(
        &self,
        cx: &mut FlowCx,
        pull: Pulled,
        queue_sid: &str,
    ) -> Result<QueueResult, Ended> {
        let Label::Call(me) = cx.label.clone() else {
            return Err(Ended);
        };
        if let Some((url, method)) = pull.url {
            let extra = vec![
                ("QueueSid".to_string(), queue_sid.to_string()),
                ("QueueTime".into(), pull.waited.as_secs().to_string()),
                ("DequeingCallSid".into(), pull.by_sid.clone()),
            ];
            if let Err(e) = self
                .announce_bridge(cx, Request::to(url, method, extra))
                .await?
            {
                tracing::warn!(kind = e.kind, error = %e.message, "<Queue url>: failed; bridging anyway");
                metrics::counter!(names::TWIML_APP_ERRORS, "kind" => e.kind).increment(1);
            }
        }
        cx.silence()?;
        if pull.ready.send(me).is_err() {
            tracing::info!("<Enqueue>: the dequeuing call left first");
            return Ok(QueueResult::Error);
        }
        match tokio::time::timeout(JOIN_WAIT, cx.next_transfer_event()).await {
            Ok(event) => {
                if !matches!(event?, TransferEvent::Bridged { .. }) {
                    return Ok(QueueResult::Error);
                }
            }
            Err(_) => return Ok(QueueResult::Error),
        }
        tracing::info!(dequeued_by = %pull.by_sid, "<Enqueue>: bridged");
        while cx.next_transfer_event().await? != TransferEvent::AgentHungUp {}
        Ok(QueueResult::Bridged)
    }

    /// The `<Queue url>` document (and its redirects): Play, Say and Pause.
    async fn announce_bridge(
        &self,
        cx: &mut FlowCx,
        mut req: Request,
    ) -> Result<Result<(), AppError>, Ended> {
        for _ in 0..super::MAX_IDLE_DOCUMENTS {
            match self.run_restricted(cx, &req, false).await? {
                Ran::Redirect(url, method) => req = Request::to(url, method, req.extra.clone()),
                Ran::Failed(e) => return Ok(Err(e)),
                Ran::Out | Ran::Leave | Ran::Hangup => return Ok(Ok(())),
            }
        }
        Ok(Err(AppError::new(
            "redirect_loop",
            "<Queue url> redirects too often",
        )))
    }

    /// `<Dial><Queue>`: take the first app caller waiting in `name` (or
    /// the next to join, up to the Dial's timeout) and bridge it here.
    pub(super) async fn dial_queue(
        &self,
        cx: &mut FlowCx,
        d: &Dial,
        (name, url, method): (&str, Option<&str>, Method),
        base: &reqwest::Url,
    ) -> Result<Result<Step, AppError>, Ended> {
        let url = match url.map(|u| resolve(base, u)).transpose() {
            Ok(u) => u,
            Err(e) => return Ok(Err(e)),
        };
        let queues = cx.services.queues.clone();
        let deadline = Instant::now() + Duration::from_secs(u64::from(d.timeout_secs));
        let mut outcome = None;
        // Twilio: a queue that doesn't exist fails the Dial at once.
        let mut status = if queues.exists(name) {
            "no-answer"
        } else {
            "failed"
        };
        while status == "no-answer" {
            let joined = queues.joined();
            tokio::pin!(joined);
            joined.as_mut().enable();
            let dequeueable = &self.apps.dequeueable;
            let pulled = queues.pull(name, |e| dequeueable.may_pull(e));
            let Some((entry, waited)) = pulled else {
                match cx.wait_for(joined, deadline).await? {
                    Waited::TimeUp => break,
                    Waited::Done(()) | Waited::Digit(_) => continue,
                }
            };
            let Some(caller) = dequeueable.take_for_pull(entry) else {
                continue;
            };
            let (ready, is_ready) = oneshot::channel();
            let pull = Pulled {
                by_sid: self.call_sid.clone(),
                waited,
                url: url.clone().map(|u| (u, method)),
                ready,
            };
            if caller.send(pull).is_err() {
                continue;
            }
            // The caller hears `url`, then says it is ready (or hangs up).
            let Ok(other) = cx.call_wait(is_ready).await? else {
                continue;
            };
            cx.request(CallRequest::Join { with: other })?;
            if let TransferEvent::Bridged { target } = cx.next_transfer_event().await? {
                outcome = Some((target, waited, std::time::Instant::now()));
                status = "completed";
            }
        }
        let Some((dequeued_sid, waited, since)) = outcome else {
            tracing::info!(queue = %name, status, "<Dial><Queue>: nobody to dequeue");
            return Ok(self.dial_action(d, base, name, status, None));
        };
        tracing::info!(queue = %name, "<Dial><Queue>: bridged with the dequeued caller");
        let mut until = d
            .time_limit_secs
            .map(|s| Instant::now() + Duration::from_secs(u64::from(s)));
        loop {
            match cx.while_bridged(until).await? {
                Bridged::Transfer(TransferEvent::AgentHungUp) => break,
                Bridged::Digit('*') if d.hangup_on_star => cx.request(CallRequest::HangUpAgent)?,
                Bridged::TimeUp => {
                    until = None;
                    cx.request(CallRequest::HangUpAgent)?;
                }
                Bridged::Transfer(_) | Bridged::Digit(_) => {}
            }
        }
        let done = (dequeued_sid, waited, since.elapsed());
        Ok(self.dial_action(d, base, name, "completed", Some(done)))
    }

    /// The Dial's action after a `<Queue>`: Twilio's Dial parameters, and
    /// the dequeued call's CallSid, wait and time bridged.
    fn dial_action(
        &self,
        d: &Dial,
        base: &reqwest::Url,
        queue: &str,
        status: &str,
        dequeued: Option<(String, Duration, Duration)>,
    ) -> Result<Step, AppError> {
        let Some(action) = &d.action else {
            return Ok(Step::Next);
        };
        let mut extra = vec![
            ("DialCallStatus".to_string(), status.to_string()),
            ("QueueSid".into(), queue_sid(queue)),
        ];
        if let Some((sid, waited, bridged)) = dequeued {
            extra.push(("DialCallSid".into(), sid.clone()));
            extra.push(("DialCallDuration".into(), bridged.as_secs().to_string()));
            extra.push(("DequeuedCallSid".into(), sid));
            extra.push(("DequeuedCallQueueTime".into(), waited.as_secs().to_string()));
            extra.push(("DequeuedCallDuration".into(), bridged.as_secs().to_string()));
        }
        resolve(base, action).map(|url| Step::Fetch(Request::to(url, d.method, extra)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_sid_is_stable_and_shaped_as_twilio_s() {
        let sid = queue_sid("support");
        assert_eq!(sid, queue_sid("support"));
        assert_ne!(sid, queue_sid("sales"));
        assert_eq!(sid.len(), 34);
        assert!(sid.starts_with("QU") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
