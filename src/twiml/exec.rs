//! Runs a webhook app's TwiML on its call. Each verb becomes the same
//! [`FlowCx`] requests the flow nodes make (play, gather digits, transfer,
//! refer, hang up). The call is answered only when a verb needs media, so
//! `<Reject>` first refuses it unanswered, as on Twilio.
//!
//! An app error (unreachable, slow, an HTTP error, bad TwiML, unplayable
//! audio, a bad dial target) is logged with its line, counted, kept with
//! the call's record, and goes to the fallback URL once; after that, or
//! without one, the caller hears the configured error prompt and the call
//! hangs up. Never silence.

pub(super) mod queue;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::fetch::{AppError, Apps};
use super::parse::{self, Dial, DialTarget, Gather, Play, Say, Verb, VerbKind, ENDLESS_LOOPS};
use super::{AppConfig, Method};
use crate::flow::interp::{
    Bridged, CallRequest, Ended, FlowCx, PlayEnd, TransferEvent, TransferRequest,
};
use crate::telemetry::names;
use crate::tts::TtsRequest;

/// Documents in a row that played nothing and waited for nothing
/// (`<Redirect>` after `<Redirect>`): a loop, not an app.
const MAX_IDLE_DOCUMENTS: u32 = 10;

/// Twilio's error codes, sent to the fallback URL as `ErrorCode`.
fn error_code(kind: &str) -> &'static str {
    match kind {
        "bad_twiml" => "12100",
        "timeout" => "11205",
        "unreachable" | "http_status" | "too_large" | "too_many_redirects" => "11200",
        _ => "12200",
    }
}

/// A request to make of the app.
pub(super) struct Request {
    pub(super) url: reqwest::Url,
    pub(super) method: Method,
    /// Parameters beyond the call's own (Digits, DialCallStatus…).
    pub(super) extra: Vec<(String, String)>,
    /// The document itself (the Calls API's `Twiml`): nothing to fetch.
    inline: Option<Arc<str>>,
}

impl Request {
    pub(super) fn to(url: reqwest::Url, method: Method, extra: Vec<(String, String)>) -> Request {
        Request {
            url,
            method,
            extra,
            inline: None,
        }
    }

    /// Where the Calls API sends the call (a URL, or TwiML given inline).
    fn of(target: super::live::AppTarget) -> Request {
        match target.document {
            super::live::Document::Url(url) => Request::to(url, target.method, Vec::new()),
            super::live::Document::Inline(twiml) => Request {
                url: super::live::inline_base(),
                method: target.method,
                extra: Vec::new(),
                inline: Some(twiml),
            },
        }
    }
}

/// What a verb (or a document request) came to, or the Calls API
/// redirecting the call while it ran.
enum Raced<T> {
    Done(T),
    Redirected(Request),
}

/// Run `work` until it ends or the Calls API redirects the call. A
/// redirect drops `work` (a `<Play>` or `<Say>` stops where it is), except
/// while bridged by `<Dial>`: then `agent` hangs the agent up and the
/// redirect waits for the `<Dial>` to end.
async fn race<T>(
    work: impl std::future::Future<Output = Result<T, Ended>>,
    interrupts: &mut tokio::sync::mpsc::UnboundedReceiver<super::live::AppTarget>,
    agent: Option<crate::flow::interp::Requester>,
    redirecting: &AtomicBool,
) -> Result<Raced<T>, Ended> {
    tokio::pin!(work);
    let mut queued = None;
    loop {
        tokio::select! {
            out = &mut work => {
                return Ok(match queued {
                    Some(target) => Raced::Redirected(Request::of(target)),
                    None => Raced::Done(out?),
                });
            }
            Some(target) = interrupts.recv() => match &agent {
                Some(agent) => {
                    agent.send(CallRequest::HangUpAgent)?;
                    queued = Some(target);
                }
                None => {
                    // Whatever `work` leaves behind as it drops may ask.
                    redirecting.store(true, Ordering::Relaxed);
                    return Ok(Raced::Redirected(Request::of(target)));
                }
            },
        }
    }
}

/// What a verb leads to.
pub(super) enum Step {
    Next,
    Fetch(Request),
    /// The call is over (hung up, rejected, referred away).
    End,
}

/// Run `app` on the call until its TwiML ends it.
pub async fn run(app: &AppConfig, cx: &mut FlowCx) -> Result<(), Ended> {
    let apps = cx.services.twiml.clone();
    // A route's app got its CallSid with the call; a flow's node makes one.
    let call_sid = match cx.vars.get(super::CALL_SID_VAR) {
        Some(sid) => sid.clone(),
        None => {
            let sid = super::new_sid("CA");
            cx.keep(super::CALL_SID_VAR, &sid)?;
            cx.vars.insert(super::CALL_SID_VAR.into(), sid.clone());
            sid
        }
    };
    // The Calls API reaches the running call through this.
    let (_live, mut interrupts) = apps.live.register(&call_sid);
    let mut session = Session {
        apps,
        call_sid,
        fallback: None,
        redirecting: AtomicBool::new(false),
    };
    let first = match (
        &app.twiml,
        reqwest::Url::parse(&app.url),
        Method::parse(&app.method),
    ) {
        (Some(twiml), _, Some(method)) => Request::of(super::live::AppTarget {
            document: super::live::Document::Inline(twiml.as_str().into()),
            method,
        }),
        (None, Ok(url), Some(method)) => Request::to(url, method, Vec::new()),
        // Validation refuses both at start-up.
        _ => return session.give_up(cx).await,
    };
    session.fallback = app.fallback_url.as_deref().and_then(|u| {
        Some(Request::to(
            reqwest::Url::parse(u).ok()?,
            Method::parse(&app.fallback_method)?,
            Vec::new(),
        ))
    });
    session.run(cx, first, &mut interrupts).await
}

struct Session {
    apps: Arc<Apps>,
    call_sid: String,
    /// Taken when used: the fallback is asked once per call.
    fallback: Option<Request>,
    /// The Calls API is moving the call on (a verb dropped for it is not
    /// a hang-up).
    redirecting: AtomicBool,
}

impl Session {
    async fn run(
        &mut self,
        cx: &mut FlowCx,
        first: Request,
        interrupts: &mut tokio::sync::mpsc::UnboundedReceiver<super::live::AppTarget>,
    ) -> Result<(), Ended> {
        let mut pending = Some(first);
        let mut idle = 0u32;
        while let Some(req) = pending.take() {
            idle += 1;
            if idle > MAX_IDLE_DOCUMENTS {
                let e = AppError::new(
                    "redirect_loop",
                    format!("{MAX_IDLE_DOCUMENTS} documents in a row played nothing"),
                );
                pending = self.failed(cx, e, &req.url).await?;
                idle = 0;
                continue;
            }
            let verbs =
                match race(self.document(cx, &req), interrupts, None, &self.redirecting).await? {
                    Raced::Done(Ok(verbs)) => verbs,
                    Raced::Done(Err(e)) => {
                        pending = self.failed(cx, e, &req.url).await?;
                        continue;
                    }
                    Raced::Redirected(next) => {
                        pending = Some(self.redirected(cx, next)?);
                        idle = 0;
                        continue;
                    }
                };
            for verb in &verbs {
                if verb.kind.needs_media() {
                    cx.answer().await?;
                }
                let agent = match verb.kind {
                    VerbKind::Dial(_) => Some(cx.requester()?),
                    _ => None,
                };
                let done = match race(
                    self.verb(cx, verb, &req.url),
                    interrupts,
                    agent,
                    &self.redirecting,
                )
                .await?
                {
                    Raced::Done(done) => done,
                    Raced::Redirected(next) => {
                        pending = Some(self.redirected(cx, next)?);
                        idle = 0;
                        break;
                    }
                };
                match done {
                    Ok(Step::Next) => {}
                    Ok(Step::Fetch(next)) => {
                        pending = Some(next);
                        break;
                    }
                    Ok(Step::End) => return Ok(()),
                    Err(e) => {
                        let e = AppError::new(e.kind, format!("line {}: {}", verb.line, e.message));
                        pending = self.failed(cx, e, &req.url).await?;
                        break;
                    }
                }
                if !matches!(verb.kind, VerbKind::Redirect { .. }) {
                    idle = 0;
                }
            }
        }
        // The document ran out: the call ends, as on Twilio.
        cx.hangup()
    }

    /// The Calls API moved the call on: whatever played stops now.
    fn redirected(&self, cx: &mut FlowCx, next: Request) -> Result<Request, Ended> {
        self.redirecting.store(false, Ordering::Relaxed);
        tracing::info!("webhook app: redirected through the Calls API");
        metrics::counter!(names::TWIML_API_REDIRECTS).increment(1);
        if cx.answered()? {
            cx.silence()?;
        }
        Ok(next)
    }

    /// Ask for a document (or take the inline one) and parse it.
    async fn document(
        &self,
        cx: &mut FlowCx,
        req: &Request,
    ) -> Result<Result<Vec<Verb>, AppError>, Ended> {
        if let Some(twiml) = &req.inline {
            return Ok(parse::parse(twiml).map_err(|e| AppError::new("bad_twiml", e.to_string())));
        }
        if req.url == super::live::inline_base() {
            return Ok(Err(AppError::new(
                "bad_url",
                "inline TwiML has no URL to come back to: give an absolute action",
            )));
        }
        let mut params = self.params(cx)?;
        params.extend(req.extra.iter().cloned());
        let text = cx
            .call_wait(self.apps.document(&req.url, req.method, &params))
            .await?;
        metrics::counter!(names::TWIML_DOCUMENTS, "outcome" => if text.is_ok() { "fetched" } else { "failed" })
            .increment(1);
        Ok(text
            .and_then(|t| parse::parse(&t).map_err(|e| AppError::new("bad_twiml", e.to_string()))))
    }

    /// The call's own parameters, as Twilio sends them.
    fn params(&self, cx: &mut FlowCx) -> Result<Vec<(String, String)>, Ended> {
        let status = if cx.answered()? {
            "in-progress"
        } else {
            "ringing"
        };
        let var = |name: &str| cx.vars.get(name).cloned().unwrap_or_default();
        let (from, to, diversion) = (var("caller"), var("did"), var("diversion"));
        let direction = match var("direction").as_str() {
            "outbound" => "outbound-api",
            _ => "inbound",
        };
        let mut params = vec![
            ("CallSid".to_string(), self.call_sid.clone()),
            ("AccountSid".into(), self.apps.account_sid.clone()),
            ("From".into(), from.clone()),
            ("To".into(), to.clone()),
            ("Caller".into(), from),
            ("Called".into(), to),
            ("CallStatus".into(), status.into()),
            ("Direction".into(), direction.into()),
            ("ApiVersion".into(), "2010-04-01".into()),
        ];
        if !diversion.is_empty() {
            params.push(("ForwardedFrom".into(), diversion));
        }
        Ok(params)
    }

    /// An app error: logged, counted, kept with the record; then the
    /// fallback (once), else the error prompt and the end of the call.
    async fn failed(
        &mut self,
        cx: &mut FlowCx,
        e: AppError,
        url: &reqwest::Url,
    ) -> Result<Option<Request>, Ended> {
        tracing::warn!(kind = e.kind, error = %e.message, host = url.host_str().unwrap_or_default(), "webhook app error");
        metrics::counter!(names::TWIML_APP_ERRORS, "kind" => e.kind).increment(1);
        cx.keep("app_error", &e.to_string())?;
        if let Some(mut fallback) = self.fallback.take() {
            fallback.extra = vec![
                ("ErrorCode".into(), error_code(e.kind).into()),
                ("ErrorUrl".into(), url.to_string()),
            ];
            return Ok(Some(fallback));
        }
        self.give_up(cx).await?;
        Ok(None)
    }

    /// The spoken error prompt, then hang up.
    async fn give_up(&self, cx: &mut FlowCx) -> Result<(), Ended> {
        cx.answer().await?;
        let req = TtsRequest::new(
            self.apps.error_message.clone(),
            self.apps.error_language.clone(),
        );
        match cx.speech(&req).await {
            Ok(samples) => {
                cx.play(samples, false).await?;
            }
            Err(e) => tracing::error!(%e, "webhook app: the error prompt can't be spoken"),
        }
        cx.hangup()
    }

    async fn verb(
        &self,
        cx: &mut FlowCx,
        verb: &Verb,
        base: &reqwest::Url,
    ) -> Result<Result<Step, AppError>, Ended> {
        Ok(match &verb.kind {
            VerbKind::Say(say) => {
                self.say(cx, say, false).await?;
                Ok(Step::Next)
            }
            VerbKind::Play(play) => match self.play(cx, play, base, false).await? {
                Ok(_) => Ok(Step::Next),
                Err(e) => Err(e),
            },
            VerbKind::Pause(secs) => {
                if cx.answered()? {
                    cx.silence()?;
                }
                // Before the answer it delays the answer, as on Twilio.
                cx.sleep(Duration::from_secs_f64(*secs)).await?;
                Ok(Step::Next)
            }
            VerbKind::Gather(g) if g.speech => {
                super::voice_ai::gather_speech(cx, &self.apps, g, base).await?
            }
            VerbKind::Gather(g) => self.gather(cx, g, base).await?,
            VerbKind::Connect(c) => super::voice_ai::connect(cx, &self.call_sid, c, base).await?,
            VerbKind::Start(s) => Ok(super::voice_ai::start(cx, &self.call_sid, s).await?),
            VerbKind::Stop { name } => Ok(super::voice_ai::stop(cx, name.as_deref())?),
            VerbKind::Dial(d) => match d.targets.as_slice() {
                [DialTarget::Queue { name, url, method }] => {
                    self.dial_queue(cx, d, (name, url.as_deref(), *method), base)
                        .await?
                }
                _ => self.dial(cx, d, base).await?,
            },
            // Boxed: its wait documents run verbs again.
            VerbKind::Enqueue(q) => Box::pin(self.enqueue(cx, q, base)).await?,
            // Outside a waitUrl document there is no queue to leave.
            VerbKind::Leave => Ok(Step::Next),
            VerbKind::Hangup => {
                cx.hangup()?;
                Ok(Step::End)
            }
            VerbKind::Reject(status) => {
                cx.reject(*status)?;
                Ok(Step::End)
            }
            VerbKind::Redirect { url, method } => {
                resolve(base, url).map(|url| Step::Fetch(Request::to(url, *method, Vec::new())))
            }
            VerbKind::Refer {
                target,
                action,
                method,
            } => {
                let target = match sip_target(target) {
                    Ok(t) => t,
                    Err(e) => return Ok(Err(e)),
                };
                match cx.refer(target).await? {
                    TransferEvent::Bridged { .. } | TransferEvent::AgentHungUp => Ok(Step::End),
                    TransferEvent::Failed { status } => match action {
                        Some(action) => resolve(base, action).map(|url| {
                            Step::Fetch(Request::to(
                                url,
                                *method,
                                vec![
                                    ("ReferCallStatus".into(), "failed".into()),
                                    ("ReferSipResponseCode".into(), status.to_string()),
                                ],
                            ))
                        }),
                        None => Ok(Step::Next),
                    },
                }
            }
        })
    }

    /// Say `loops` times; with `barge_in`, a key stops it (true).
    async fn say(&self, cx: &mut FlowCx, say: &Say, barge_in: bool) -> Result<bool, Ended> {
        let samples = match cx.speech(&super::voice_ai::tts_request(say)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%e, "<Say>: TTS failed");
                return Ok(false);
            }
        };
        for _ in 0..say.loops {
            if cx.play(samples.clone(), barge_in).await? == PlayEnd::Interrupted {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Play the URL `loops` times (an endless loop until the call moves
    /// on), then the digits. Ok(true): a key stopped it (`barge_in`).
    async fn play(
        &self,
        cx: &mut FlowCx,
        play: &Play,
        base: &reqwest::Url,
        barge_in: bool,
    ) -> Result<Result<bool, AppError>, Ended> {
        if !play.url.is_empty() {
            let url = match resolve(base, &play.url) {
                Ok(u) => u,
                Err(e) => return Ok(Err(e)),
            };
            let samples = match cx.call_wait(self.apps.audio(&url)).await? {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            if play.loops >= ENDLESS_LOOPS && !barge_in {
                cx.play_loop(samples.clone())?;
                cx.call_wait(std::future::pending::<()>()).await?;
            }
            for _ in 0..play.loops {
                if cx.play(samples.clone(), barge_in).await? == PlayEnd::Interrupted {
                    return Ok(Ok(true));
                }
            }
        }
        if let Some(digits) = &play.digits {
            // Twilio's `w` is half a second: our `,`.
            let digits: String = digits
                .chars()
                .map(|c| if c == 'w' || c == 'W' { ',' } else { c })
                .collect();
            cx.send_digits(digits, crate::flow::model::digit_ms())
                .await?;
        }
        Ok(Ok(false))
    }

    async fn gather(
        &self,
        cx: &mut FlowCx,
        g: &Gather,
        base: &reqwest::Url,
    ) -> Result<Result<Step, AppError>, Ended> {
        let mut first = None;
        for prompt in &g.prompts {
            let interrupted = match &prompt.kind {
                VerbKind::Say(say) => self.say(cx, say, true).await?,
                VerbKind::Play(play) => match self.play(cx, play, base, true).await? {
                    Ok(i) => i,
                    Err(e) => {
                        return Ok(Err(AppError::new(
                            e.kind,
                            format!("line {}: {}", prompt.line, e.message),
                        )))
                    }
                },
                VerbKind::Pause(secs) => {
                    first = cx.next_digit(Duration::from_secs_f64(*secs)).await?;
                    first.is_some()
                }
                _ => false,
            };
            if interrupted {
                break;
            }
        }
        let timeout = Duration::from_secs_f64(g.timeout_secs);
        let mut digits = String::new();
        let mut finished_on = None;
        loop {
            let next = match first.take() {
                Some(d) => Some(d),
                None => cx.next_digit(timeout).await?,
            };
            let Some(d) = next else {
                break;
            };
            if g.finish_on_key == Some(d) {
                finished_on = Some(d);
                break;
            }
            digits.push(d);
            if g.num_digits
                .is_some_and(|n| digits.chars().count() >= n as usize)
            {
                break;
            }
        }
        tracing::info!(digits = digits.chars().count(), "<Gather> done");
        if digits.is_empty() && !g.action_on_empty_result {
            // No input: on to the next verb, as on Twilio.
            return Ok(Ok(Step::Next));
        }
        let url = match &g.action {
            Some(a) => resolve(base, a),
            None => Ok(base.clone()),
        };
        let mut extra = vec![("Digits".to_string(), digits)];
        if let Some(k) = finished_on {
            extra.push(("FinishedOnKey".into(), k.to_string()));
        }
        Ok(url.map(|url| Step::Fetch(Request::to(url, g.method, extra))))
    }

    async fn dial(
        &self,
        cx: &mut FlowCx,
        d: &Dial,
        base: &reqwest::Url,
    ) -> Result<Result<Step, AppError>, Ended> {
        let plan = match self.dial_plan(d) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e)),
        };
        let req = TransferRequest {
            targets: plan.targets.iter().map(|(uri, _)| uri.clone()).collect(),
            parallel: true,
            ring_timeout: Duration::from_secs(u64::from(d.timeout_secs)),
            trunk: plan.trunk,
            hold_message: None,
            hold_music: Vec::new(),
            repeat_interval: None,
            caller_id: d.caller_id.clone(),
        };
        let dial_sid = super::new_sid("CA");
        let (status, duration) = match cx.transfer(req).await? {
            TransferEvent::Bridged { target } => {
                let since = Instant::now();
                let digits = plan
                    .targets
                    .iter()
                    .find(|(uri, _)| *uri == target)
                    .and_then(|(_, digits)| digits.clone());
                if let Some(digits) = digits {
                    cx.request(CallRequest::SendDigits {
                        digits: digits.replace(['w', 'W'], ","),
                        duration_ms: crate::flow::model::digit_ms(),
                        to_agent: true,
                    })?;
                }
                let mut until = d
                    .time_limit_secs
                    .map(|s| tokio::time::Instant::now() + Duration::from_secs(u64::from(s)));
                loop {
                    match cx.while_bridged(until).await? {
                        Bridged::Transfer(TransferEvent::AgentHungUp) => break,
                        Bridged::Digit('*') if d.hangup_on_star => {
                            cx.request(CallRequest::HangUpAgent)?
                        }
                        Bridged::TimeUp => {
                            until = None;
                            cx.request(CallRequest::HangUpAgent)?;
                        }
                        Bridged::Transfer(_) | Bridged::Digit(_) => {}
                    }
                }
                ("completed", since.elapsed().as_secs())
            }
            TransferEvent::AgentHungUp => ("completed", 0),
            TransferEvent::Failed { status } => (dial_status(status), 0),
        };
        tracing::info!(status, duration, "<Dial> done");
        let Some(action) = &d.action else {
            return Ok(Ok(Step::Next));
        };
        let mut extra = vec![
            ("DialCallStatus".to_string(), status.to_string()),
            ("DialCallSid".into(), dial_sid),
        ];
        if status == "completed" {
            extra.push(("DialCallDuration".into(), duration.to_string()));
        }
        Ok(resolve(base, action).map(|url| Step::Fetch(Request::to(url, d.method, extra))))
    }

    /// Each target as a SIP URI (with digits to send on answer), and the
    /// trunk numbers go out through. A number is E.164-ish digits only, so
    /// nothing an app writes can reach the Request-URI's other parts.
    fn dial_plan(&self, d: &Dial) -> Result<DialPlan, AppError> {
        if let Some(id) = &d.caller_id {
            let ok = (1..=64).contains(&id.len())
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c));
            if !ok {
                return Err(AppError::new(
                    "bad_dial",
                    format!("callerId {id:?} is not a number or SIP user"),
                ));
            }
        }
        let numbers = d
            .targets
            .iter()
            .filter(|t| matches!(t, DialTarget::Number { .. }))
            .count();
        if numbers > 0 && numbers < d.targets.len() {
            return Err(AppError::new(
                "bad_dial",
                "<Number> and <Sip> in one <Dial> is not supported yet",
            ));
        }
        let mut targets = Vec::new();
        let mut trunk = None;
        for t in &d.targets {
            match t {
                DialTarget::Number {
                    number,
                    send_digits,
                } => {
                    let Some(out) = &self.apps.outbound_trunk else {
                        return Err(AppError::new(
                            "bad_dial",
                            "<Number> needs an outbound trunk (a [[trunks]] outbound_proxy)",
                        ));
                    };
                    let digits = phone_number(number).ok_or_else(|| {
                        AppError::new("bad_dial", format!("{number:?} is not a phone number"))
                    })?;
                    let uri = crate::callback::number_uri(out, &digits).ok_or_else(|| {
                        AppError::new("bad_dial", "the outbound trunk has no usable proxy")
                    })?;
                    trunk = Some(out.name.clone());
                    targets.push((uri.to_string(), send_digits.clone()));
                }
                DialTarget::Sip(uri) => targets.push((sip_target(uri)?, None)),
                // The parser keeps a <Queue> alone in its <Dial>.
                DialTarget::Queue { .. } => {
                    return Err(AppError::new("bad_dial", "<Queue> with other nouns"))
                }
            }
        }
        Ok(DialPlan { targets, trunk })
    }
}

struct DialPlan {
    targets: Vec<(String, Option<String>)>,
    trunk: Option<String>,
}

/// Twilio's DialCallStatus for a final SIP status.
fn dial_status(status: u16) -> &'static str {
    match status {
        486 | 600 => "busy",
        408 | 480 | 487 => "no-answer",
        _ => "failed",
    }
}

/// A number as dialled: `+` and digits, spaces and punctuation dropped.
fn phone_number(s: &str) -> Option<String> {
    let kept: String = s.chars().filter(|c| !" -().".contains(*c)).collect();
    let digits = kept.strip_prefix('+').unwrap_or(&kept);
    ((2..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())).then_some(kept)
}

/// A `sip:`/`sips:` URI with a host and no headers.
fn sip_target(s: &str) -> Result<String, AppError> {
    let s = s.trim();
    let bad = || AppError::new("bad_dial", format!("{s:?} is not a SIP URI we can dial"));
    if s.contains(['?', '<', '>', ' ', '\r', '\n']) {
        return Err(bad());
    }
    match crate::sip::message::Uri::parse(s) {
        Ok(u) if (u.scheme == "sip" || u.scheme == "sips") && !u.host.is_empty() => {
            Ok(s.to_string())
        }
        _ => Err(bad()),
    }
}

/// `url` relative to the document it came in; http(s) only.
pub(super) fn resolve(base: &reqwest::Url, url: &str) -> Result<reqwest::Url, AppError> {
    match base.join(url.trim()) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(u),
        _ => Err(AppError::new(
            "bad_url",
            format!("{url:?} is not an http(s) URL"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_targets_cannot_inject_into_the_request_uri() {
        assert_eq!(
            phone_number("+1 (555) 123-4567").as_deref(),
            Some("+15551234567")
        );
        assert_eq!(phone_number("+1555@evil.example"), None);
        assert_eq!(phone_number("1555;transport=tcp"), None);
        assert_eq!(phone_number("+"), None);
        assert!(sip_target("sip:agent@127.0.0.1:5070").is_ok());
        assert!(sip_target("sip:agent@example.com?Route=%3Csip:evil%3E").is_err());
        assert!(sip_target("tel:+15551234567").is_err());
        assert!(sip_target("http://example.com").is_err());
    }

    #[test]
    fn dial_statuses_as_twilio_names_them() {
        assert_eq!(dial_status(486), "busy");
        assert_eq!(dial_status(408), "no-answer");
        assert_eq!(dial_status(487), "no-answer");
        assert_eq!(dial_status(503), "failed");
    }

    #[test]
    fn relative_urls_resolve_against_the_document() {
        let base = reqwest::Url::parse("http://127.0.0.1:8000/voice/start")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            resolve(&base, "/menu?x=1").map(|u| u.to_string()),
            Ok("http://127.0.0.1:8000/menu?x=1".into())
        );
        assert_eq!(
            resolve(&base, "next").map(|u| u.to_string()),
            Ok("http://127.0.0.1:8000/voice/next".into())
        );
        assert!(resolve(&base, "file:///etc/passwd").is_err());
    }
}
