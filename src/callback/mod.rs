//! Callbacks: calls we place to a visitor who asked for one, through the
//! outbound trunk, with a flow (or a SIP target) once they answer. Each
//! status change (queued, ringing, answered, failed with its SIP cause,
//! completed) is stored, pushed to watchers (the chat that asked), and
//! POSTed to an optional signed webhook. A callback started from a chat is
//! an escalation; the report reads them back.
//!
//! The call itself is placed by the gateway task (it owns the SIP
//! endpoint): `create` queues an [`Originate`] for it, and the gateway
//! reports back through [`Callbacks::progress`].

pub mod limits;

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use tokio::sync::{mpsc, watch};

use crate::store::{CallbackRecord, ConsentRecord, Store};
use crate::telemetry::names;
use limits::RateWindow;

/// What asking for a callback takes.
#[derive(Debug, Clone, Default)]
pub struct NewCallback {
    /// As the visitor typed it.
    pub phone: String,
    pub flow: Option<String>,
    pub target: Option<String>,
    /// The consent the visitor gave, and the exact text they agreed to.
    pub consent: Option<(bool, String)>,
    /// A JSON object handed to the flow as `context.<key>` variables.
    pub context: serde_json::Map<String, serde_json::Value>,
    pub conversation_id: Option<String>,
    /// The chat flow that asked (the "bot"), for the report.
    pub bot: Option<String>,
    /// The web visitor's address when a chat asked: the outbound policy's
    /// per-source budget.
    pub source: Option<std::net::IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackError {
    #[error(
        "consent is required: {{\"given\": true, \"text\": \"<the text the visitor agreed to>\"}}"
    )]
    ConsentMissing,
    #[error("that is not a phone number we can call: {0}")]
    InvalidNumber(&'static str),
    #[error("give exactly one of flow and target")]
    FlowOrTarget,
    #[error("{0}")]
    BadFlow(String),
    #[error("target must be a SIP URI (sip:user@host)")]
    BadTarget,
    #[error("too many callbacks to this number; try again later")]
    TooManyForPhone,
    #[error("too many callbacks for this API key; slow down")]
    TooManyForKey,
    #[error("callbacks are unavailable: {0}")]
    Unavailable(&'static str),
    /// The outbound policy said no (country, premium rate, budgets).
    #[error("{0}")]
    Refused(crate::messaging::policy::Refusal),
}

/// What the gateway is asked to dial.
#[derive(Debug, Clone)]
pub struct Originate {
    pub id: String,
    /// E.164.
    pub phone: String,
    pub flow: Option<String>,
    pub target: Option<String>,
    /// Variables the flow starts with (callback_id, phone, context.*).
    pub vars: std::collections::HashMap<String, String>,
}

/// What the gateway reports about a callback's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Ringing,
    Answered,
    /// The call ended: after an answer (completed) or before (failed, with
    /// the SIP status that ended it).
    Ended {
        sip_status: Option<u16>,
        reason: String,
    },
}

/// How a callback turned out, in the report's words.
pub fn outcome(r: &CallbackRecord) -> &'static str {
    match r.state.as_str() {
        "queued" => "queued",
        "ringing" => "ringing",
        "answered" => "answered",
        "completed" => "completed",
        _ => match r.sip_status {
            None if r.reason.as_deref() == Some("invalid_number") => "invalid_number",
            Some(404 | 484 | 604) => "invalid_number",
            Some(486 | 600) => "busy",
            Some(603) => "declined",
            Some(408 | 480 | 487) => "no_answer",
            _ => "failed",
        },
    }
}

pub struct Callbacks {
    /// What may be called at all (country, premium rate, budgets).
    policy: std::sync::Arc<crate::messaging::policy::OutboundPolicy>,
    store: std::sync::Arc<dyn Store>,
    originate: mpsc::UnboundedSender<Originate>,
    region: Option<crate::chat::input::Region>,
    /// Callbacks not yet ended, with their latest record for watchers.
    live: DashMap<String, watch::Sender<CallbackRecord>>,
    per_phone: Mutex<RateWindow>,
    per_key: Mutex<RateWindow>,
    webhook: Option<(String, String)>,
    http: reqwest::Client,
    /// Webhook posts, delivered one after another so a receiver sees a
    /// callback's states in the order they happened.
    deliveries: std::sync::OnceLock<mpsc::UnboundedSender<WebhookPost>>,
    /// False when no trunk can carry the calls.
    enabled: bool,
    /// This gateway (`[store] node_id`); with a shared store, a restart
    /// dials again only the callbacks this node placed.
    node: String,
}

impl Callbacks {
    pub fn new(
        config: &crate::config::Config,
        store: std::sync::Arc<dyn Store>,
        originate: mpsc::UnboundedSender<Originate>,
        http: reqwest::Client,
        policy: std::sync::Arc<crate::messaging::policy::OutboundPolicy>,
    ) -> Callbacks {
        let cb = &config.callbacks;
        let webhook = cb
            .webhook_url
            .clone()
            .map(|url| (url, cb.webhook_secret().ok().flatten().unwrap_or_default()));
        Callbacks {
            policy,
            store,
            originate,
            region: config
                .chat
                .default_country
                .as_deref()
                .and_then(|c| c.parse().ok()),
            live: DashMap::new(),
            per_phone: Mutex::new(RateWindow::new(
                cb.max_per_phone_per_hour,
                Duration::from_secs(3600),
            )),
            per_key: Mutex::new(RateWindow::new(
                cb.max_per_key_per_minute,
                Duration::from_secs(60),
            )),
            webhook,
            http,
            deliveries: std::sync::OnceLock::new(),
            enabled: outbound_trunk(config).is_some(),
            node: config.store.node_id(config.http.listen),
        }
    }

    /// Check, record the consent, store the callback as queued, and ask the
    /// gateway to dial. `requested_by` is the API key's role or the flow.
    /// `flow_ok` says whether `req.flow` names a voice flow (the caller
    /// holds the flow set).
    pub fn create(
        &self,
        req: NewCallback,
        requested_by: &str,
        flow_ok: impl FnOnce(&str) -> Result<(), String>,
    ) -> Result<CallbackRecord, CallbackError> {
        let consent_text = match &req.consent {
            Some((true, text)) if !text.trim().is_empty() => text.trim().to_string(),
            _ => return Err(CallbackError::ConsentMissing),
        };
        match (&req.flow, &req.target) {
            (Some(flow), None) => flow_ok(flow).map_err(CallbackError::BadFlow)?,
            (None, Some(target)) => {
                let ok = crate::sip::message::Uri::parse(target).is_ok_and(|u| u.host.len() > 1);
                if !ok {
                    return Err(CallbackError::BadTarget);
                }
            }
            _ => return Err(CallbackError::FlowOrTarget),
        }
        if !self.enabled {
            return Err(CallbackError::Unavailable(
                "no trunk with an outbound_proxy",
            ));
        }
        let phone = crate::chat::input::phone(req.phone.trim(), self.region)
            .map_err(CallbackError::InvalidNumber)?;
        self.within_limits(Some(&phone), requested_by, req.source)?;
        let created_at = SystemTime::now();
        let consent_id = self.keep_consent(
            &phone,
            "callback",
            consent_text,
            req.conversation_id.clone(),
        )?;
        let record = CallbackRecord {
            id: crate::chat::random_token(12),
            phone: phone.clone(),
            phone_raw: req.phone.chars().take(64).collect(),
            flow: req.flow.clone(),
            target: req.target.clone(),
            context: serde_json::Value::Object(req.context.clone()).to_string(),
            requested_by: requested_by.to_string(),
            conversation_id: req.conversation_id.clone(),
            bot: req.bot.clone(),
            state: "queued".into(),
            sip_status: None,
            reason: None,
            consent_id: Some(consent_id),
            created_at,
            ringing_at: None,
            answered_at: None,
            ended_at: None,
            node: Some(self.node.clone()),
        };
        metrics::counter!(names::CALLBACKS).increment(1);
        self.dial(record.clone());
        Ok(record)
    }

    /// Country and premium-rate refusals first, before any budget is used
    /// (`phone`: E.164; None for a SIP URI: the per-key budget only); then
    /// the per-key, per-number and outbound policy budgets, counted.
    fn within_limits(
        &self,
        phone: Option<&str>,
        requested_by: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<(), CallbackError> {
        let now = Instant::now();
        if let Some(phone) = phone {
            self.policy
                .number_allowed(phone)
                .map_err(CallbackError::Refused)?;
        }
        let mut per_key = self.per_key.lock().unwrap_or_else(|p| p.into_inner());
        let mut per_phone = self.per_phone.lock().unwrap_or_else(|p| p.into_inner());
        if !per_key.allows(requested_by, now) {
            metrics::counter!(names::CALLBACKS_REFUSED, "reason" => "key_rate").increment(1);
            return Err(CallbackError::TooManyForKey);
        }
        if let Some(phone) = phone {
            if !per_phone.allows(phone, now) {
                metrics::counter!(names::CALLBACKS_REFUSED, "reason" => "phone_rate").increment(1);
                return Err(CallbackError::TooManyForPhone);
            }
            self.policy
                .admit(
                    now,
                    "call",
                    phone,
                    crate::messaging::policy::Requester {
                        source,
                        conversation: None,
                    },
                )
                .map_err(CallbackError::Refused)?;
            per_phone.record(phone, now);
        }
        per_key.record(requested_by, now);
        Ok(())
    }

    /// Whether a callback to `phone` (E.164) would go out now: a trunk,
    /// the outbound policy's country and premium-rate rules, and the
    /// per-number budget (checked, not used).
    pub fn would_allow(&self, phone: &str) -> bool {
        self.enabled
            && self.policy.number_allowed(phone).is_ok()
            && self
                .per_phone
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .allows(phone, Instant::now())
    }

    /// Keep who agreed to be called, and to what; its id.
    fn keep_consent(
        &self,
        subject: &str,
        purpose: &str,
        text: String,
        conversation_id: Option<String>,
    ) -> Result<String, CallbackError> {
        let consent = ConsentRecord {
            id: crate::chat::random_token(12),
            subject: subject.to_string(),
            purpose: purpose.into(),
            text,
            given: true,
            conversation_id,
            created_at: SystemTime::now(),
        };
        let id = consent.id.clone();
        if let Err(e) = self.store.record_consent(consent) {
            tracing::error!(%e, "store: cannot queue the consent; call refused");
            return Err(CallbackError::Unavailable("the store"));
        }
        Ok(id)
    }

    /// A Calls API call may go out: the same limits as a callback (keyed
    /// by the account), and its consent kept as the account's word, since
    /// Twilio's API takes none. `phone`: E.164, None for a SIP URI.
    pub fn admit_api_call(
        &self,
        phone: Option<&str>,
        account_sid: &str,
        source: Option<std::net::IpAddr>,
    ) -> Result<(), CallbackError> {
        if phone.is_some() && !self.enabled {
            return Err(CallbackError::Unavailable(
                "no trunk with an outbound_proxy",
            ));
        }
        self.within_limits(phone, &format!("calls-api:{account_sid}"), source)?;
        if let Some(phone) = phone {
            self.keep_consent(
                phone,
                "calls_api",
                format!("Placed through the Calls API by account {account_sid}, which vouches for the callee's consent."),
                None,
            )?;
        }
        Ok(())
    }

    /// Track `record` as live and ask the gateway to dial it.
    fn dial(&self, record: CallbackRecord) {
        let mut vars = std::collections::HashMap::new();
        vars.insert("callback_id".to_string(), record.id.clone());
        vars.insert("phone".to_string(), record.phone.clone());
        let context: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&record.context).unwrap_or_default();
        for (k, v) in context {
            let text = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            vars.insert(format!("context.{k}"), text);
        }
        self.live
            .insert(record.id.clone(), watch::channel(record.clone()).0);
        self.changed(&record);
        let originate = Originate {
            id: record.id.clone(),
            phone: record.phone.clone(),
            flow: record.flow.clone(),
            target: record.target.clone(),
            vars,
        };
        if self.originate.send(originate).is_err() {
            self.progress(
                &record.id,
                Progress::Ended {
                    sip_status: Some(503),
                    reason: "the gateway is stopping".into(),
                },
            );
        }
    }

    /// After a restart: callbacks the last run left unfinished. Those
    /// asked for within `redial_within` are dialled again from the start;
    /// older ones, and calls that were already answered (cut by the
    /// restart), are ended so nobody waits on them. Returns how many were
    /// dialled again.
    pub async fn resume_unfinished(&self, redial_within: Duration) -> usize {
        let pending = match self.store.unfinished_callbacks().await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(%e, "store: cannot read unfinished callbacks");
                return 0;
            }
        };
        let now = SystemTime::now();
        let mut redialled = 0;
        let shared = self.store.shared();
        for mut record in pending {
            if self.live.contains_key(&record.id) {
                continue;
            }
            // Another gateway's callback is that gateway's to finish.
            if shared && record.node.as_deref().is_some_and(|n| n != self.node) {
                continue;
            }
            let age = now.duration_since(record.created_at).unwrap_or_default();
            let ended = if record.answered_at.is_some() {
                Some((None, "the call was cut by a gateway restart"))
            } else if record.flow.as_deref() == Some(crate::queue::CALLBACK_FLOW) {
                // Its queue restores the caller's place and calls again.
                Some((Some(503), "the queue calls back again after a restart"))
            } else if age > redial_within || !self.enabled {
                Some((Some(503), "not dialled again after a gateway restart"))
            } else {
                None
            };
            if let Some((sip_status, reason)) = ended {
                self.live
                    .insert(record.id.clone(), watch::channel(record.clone()).0);
                self.progress(
                    &record.id,
                    Progress::Ended {
                        sip_status,
                        reason: reason.into(),
                    },
                );
                continue;
            }
            tracing::info!(callback = %record.id, "callback: dialling again after a restart");
            metrics::counter!(names::CALLBACKS_REDIALLED).increment(1);
            record.state = "queued".into();
            record.ringing_at = None;
            self.dial(record);
            redialled += 1;
        }
        redialled
    }

    /// The latest state: live first, then the store.
    pub async fn get(&self, id: &str) -> Option<CallbackRecord> {
        if let Some(record) = self.live(id) {
            return Some(record);
        }
        self.store.callback(id).await.ok().flatten()
    }

    /// The state of a callback still in progress on this node.
    pub fn live(&self, id: &str) -> Option<CallbackRecord> {
        self.live.get(id).map(|tx| tx.borrow().clone())
    }

    /// Follow a callback until it ends (None once it has).
    pub fn watch(&self, id: &str) -> Option<watch::Receiver<CallbackRecord>> {
        self.live.get(id).map(|tx| tx.subscribe())
    }

    /// The gateway's news about a callback's call.
    pub fn progress(&self, id: &str, p: Progress) {
        let Some(tx) = self.live.get(id).map(|t| t.clone()) else {
            return;
        };
        let now = SystemTime::now();
        let mut record = tx.borrow().clone();
        match p {
            Progress::Ringing if record.state == "queued" => {
                record.state = "ringing".into();
                record.ringing_at = Some(now);
            }
            Progress::Ringing => return,
            Progress::Answered => {
                record.state = "answered".into();
                record.answered_at = Some(now);
            }
            Progress::Ended { sip_status, reason } => {
                record.state = if record.answered_at.is_some() {
                    "completed".into()
                } else {
                    "failed".into()
                };
                record.sip_status = sip_status;
                record.reason = Some(reason);
                record.ended_at = Some(now);
                self.live.remove(id);
            }
        }
        tracing::info!(callback = %id, state = %record.state, sip_status = ?record.sip_status, "callback");
        metrics::counter!(names::CALLBACK_STATES, "state" => record.state.clone()).increment(1);
        self.changed(&record);
        tx.send_replace(record);
    }

    /// Store the change and tell the webhook.
    fn changed(&self, record: &CallbackRecord) {
        if let Err(e) = self.store.upsert_callback(record.clone()) {
            tracing::error!(%e, "store: cannot queue the callback");
        }
        let Some((url, secret)) = self.webhook.clone() else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let body = json(record).to_string();
        let queue = self.deliveries.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            rt.spawn(deliver_webhooks(self.http.clone(), rx));
            tx
        });
        let _ = queue.send(WebhookPost::signed(
            "callback",
            url,
            record.id.clone(),
            body,
            &secret,
        ));
    }
}

/// One signed webhook post (a callback's, a recording's).
pub(crate) struct WebhookPost {
    /// What it is about, for the logs: "callback", "recording".
    pub(crate) what: &'static str,
    pub(crate) url: String,
    pub(crate) id: String,
    pub(crate) body: String,
    pub(crate) signature: String,
    pub(crate) timestamp: u64,
}

impl WebhookPost {
    /// `body` signed with `secret` now.
    pub(crate) fn signed(
        what: &'static str,
        url: String,
        id: String,
        body: String,
        secret: &str,
    ) -> WebhookPost {
        let timestamp = crate::messaging::crypto::unix_now();
        let signature = crate::messaging::crypto::timed_signature(
            secret.as_bytes(),
            timestamp,
            body.as_bytes(),
        );
        WebhookPost {
            what,
            url,
            id,
            body,
            signature,
            timestamp,
        }
    }
}

/// Post webhooks in order; each waits at most 10 s, so a slow receiver
/// delays the ones behind it by that much at most.
pub(crate) async fn deliver_webhooks(
    http: reqwest::Client,
    mut queue: mpsc::UnboundedReceiver<WebhookPost>,
) {
    while let Some(p) = queue.recv().await {
        let sent = http
            .post(&p.url)
            .header("content-type", "application/json")
            .header(crate::messaging::crypto::SIGNATURE_HEADER, p.signature)
            .header(
                crate::messaging::crypto::TIMESTAMP_HEADER,
                p.timestamp.to_string(),
            )
            .timeout(Duration::from_secs(10))
            .body(p.body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                tracing::warn!(what = p.what, id = %p.id, status = r.status().as_u16(), "webhook refused")
            }
            Err(e) => {
                tracing::warn!(what = p.what, id = %p.id, error = %e.without_url(), "webhook failed")
            }
        }
    }
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A callback as the API, the webhook and the report show it.
pub fn json(r: &CallbackRecord) -> serde_json::Value {
    let context: serde_json::Value =
        serde_json::from_str(&r.context).unwrap_or(serde_json::Value::Null);
    // Seconds until answered (or until it failed), then talking.
    let until = r.answered_at.or(r.ended_at);
    serde_json::json!({
        "id": r.id,
        "phone": r.phone,
        "flow": r.flow,
        "target": r.target,
        "state": r.state,
        "outcome": outcome(r),
        "sip_status": r.sip_status,
        "reason": r.reason,
        "conversation_id": r.conversation_id,
        "bot": r.bot,
        "requested_by": r.requested_by,
        "context": context,
        "consent_id": r.consent_id,
        "created_at": ms(r.created_at),
        "ringing_at": r.ringing_at.map(ms),
        "answered_at": r.answered_at.map(ms),
        "ended_at": r.ended_at.map(ms),
        "wait_secs": until.map(|t| secs_between(r.created_at, t)),
        "talk_secs": r.answered_at.zip(r.ended_at).map(|(a, e)| secs_between(a, e)),
    })
}

/// The trunk or trunk group callbacks go out through, by name.
pub fn outbound_trunk(config: &crate::config::Config) -> Option<&str> {
    match &config.callbacks.trunk {
        Some(name) => Some(name.as_str()),
        None => config
            .trunks
            .iter()
            .find(|t| t.outbound_proxy.is_some())
            .map(|t| t.name.as_str()),
    }
    .filter(|name| config.outbound_trunks(name).is_some())
}

/// `phone` at `trunk`'s outbound proxy host: the Request-URI of a call
/// to a number through it. None when the trunk has no usable proxy.
pub fn number_uri(
    trunk: &crate::config::TrunkConfig,
    phone: &str,
) -> Option<crate::sip::message::Uri> {
    let proxy = crate::sip::message::Uri::parse(trunk.outbound_proxy.as_deref()?).ok()?;
    let host = match proxy.port {
        Some(port) => format!("{}:{port}", proxy.host),
        None => proxy.host.clone(),
    };
    crate::sip::message::Uri::parse(&format!("sip:{phone}@{host}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rig {
        _dir: Option<tempfile::TempDir>,
        store: std::sync::Arc<dyn Store>,
        callbacks: Callbacks,
        dialled: mpsc::UnboundedReceiver<Originate>,
    }

    fn rig(with_trunk: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store: std::sync::Arc<dyn Store> =
            std::sync::Arc::new(crate::store::SqliteStore::open(&dir.path().join("c.db")).unwrap());
        rig_with(Some(dir), store, with_trunk)
    }

    /// Another process on `store`: nothing live.
    fn rig_on(store: std::sync::Arc<dyn Store>) -> Rig {
        rig_with(None, store, true)
    }

    fn rig_with(
        dir: Option<tempfile::TempDir>,
        store: std::sync::Arc<dyn Store>,
        with_trunk: bool,
    ) -> Rig {
        let mut config = crate::config::Config::default();
        config.callbacks.max_per_phone_per_hour = 2;
        config.callbacks.max_per_key_per_minute = 3;
        if with_trunk {
            config.trunks.push(
                toml::from_str(
                    "name = \"carrier\"\noutbound_proxy = \"sip:127.0.0.1:5080\"\ncaller_id = \"+15550100000\"",
                )
                .unwrap(),
            );
        }
        let (tx, dialled) = mpsc::unbounded_channel();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let callbacks = Callbacks::new(
            &config,
            store.clone(),
            tx,
            reqwest::Client::new(),
            std::sync::Arc::new(crate::messaging::policy::OutboundPolicy::new(
                config.messaging.outbound_policy(),
            )),
        );
        Rig {
            _dir: dir,
            store,
            callbacks,
            dialled,
        }
    }

    fn ask(phone: &str) -> NewCallback {
        NewCallback {
            phone: phone.into(),
            flow: Some("hold".into()),
            consent: Some((true, "We may call you.".into())),
            ..Default::default()
        }
    }

    fn any_flow(_: &str) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn refusals_come_before_anything_is_dialled() {
        let mut r = rig(true);
        let c = &r.callbacks;
        let mut no_consent = ask("+34612345678");
        no_consent.consent = Some((false, "We may call you.".into()));
        assert_eq!(
            c.create(no_consent, "k", any_flow),
            Err(CallbackError::ConsentMissing)
        );
        assert!(matches!(
            c.create(ask("12"), "k", any_flow),
            Err(CallbackError::InvalidNumber(_))
        ));
        assert!(matches!(
            c.create(ask("+34612345678"), "k", |_| Err(
                "no flow named \"x\"".into()
            )),
            Err(CallbackError::BadFlow(_))
        ));
        let mut neither = ask("+34612345678");
        neither.flow = None;
        assert_eq!(
            c.create(neither, "k", any_flow),
            Err(CallbackError::FlowOrTarget)
        );
        assert!(r.dialled.try_recv().is_err());
        assert!(matches!(
            rig(false)
                .callbacks
                .create(ask("+34612345678"), "k", any_flow),
            Err(CallbackError::Unavailable(_))
        ));
    }

    #[test]
    fn limits_per_number_and_per_key() {
        let r = rig(true);
        let c = &r.callbacks;
        assert!(c.create(ask("+34612345678"), "a", any_flow).is_ok());
        assert!(c.create(ask("+34 612 345 678"), "b", any_flow).is_ok());
        // Same number however it is written: E.164 is the key.
        assert_eq!(
            c.create(ask("0034612345678"), "c", any_flow),
            Err(CallbackError::TooManyForPhone)
        );
        assert!(c.create(ask("+34622000111"), "a", any_flow).is_ok());
        assert!(c.create(ask("+34622000222"), "a", any_flow).is_ok());
        assert_eq!(
            c.create(ask("+34622000333"), "a", any_flow),
            Err(CallbackError::TooManyForKey)
        );
    }

    #[tokio::test]
    async fn states_flow_to_watchers_the_store_and_the_report() {
        let mut r = rig(true);
        let mut req = ask("+34612345678");
        req.context.insert("order".into(), "A-1".into());
        let rec = r.callbacks.create(req, "k", any_flow).unwrap();
        let dial = r.dialled.try_recv().unwrap();
        assert_eq!(dial.phone, "+34612345678");
        assert_eq!(
            dial.vars.get("context.order").map(String::as_str),
            Some("A-1")
        );
        assert_eq!(dial.vars.get("callback_id"), Some(&rec.id));
        let mut watch = r.callbacks.watch(&rec.id).unwrap();
        r.callbacks.progress(&rec.id, Progress::Ringing);
        assert_eq!(watch.borrow_and_update().state, "ringing");
        r.callbacks.progress(&rec.id, Progress::Answered);
        r.callbacks.progress(
            &rec.id,
            Progress::Ended {
                sip_status: None,
                reason: "remote_bye".into(),
            },
        );
        assert_eq!(watch.borrow_and_update().state, "completed");
        assert!(
            r.callbacks.watch(&rec.id).is_none(),
            "ended: nothing left to watch"
        );
        r.store.flush().await.unwrap();
        let stored = r.callbacks.get(&rec.id).await.unwrap();
        assert_eq!(stored.state, "completed");
        assert_eq!(outcome(&stored), "completed");
        assert!(stored.answered_at.is_some() && stored.ringing_at.is_some());
        // The consent was kept with its text, about that number.
        let consents = r.store.consents(Some("+34612345678"), 10).await.unwrap();
        assert_eq!(consents[0].text, "We may call you.");
        assert_eq!(stored.consent_id.as_deref(), Some(consents[0].id.as_str()));
    }

    #[tokio::test]
    async fn a_queue_callback_cut_by_a_restart_is_left_to_its_queue() {
        let mut r = rig(true);
        let mut req = ask("+34612345678");
        req.flow = Some(crate::queue::CALLBACK_FLOW.into());
        let queued = r.callbacks.create(req, "queue:support", any_flow).unwrap();
        let plain = r
            .callbacks
            .create(ask("+34622000111"), "k", any_flow)
            .unwrap();
        r.store.flush().await.unwrap();
        while r.dialled.try_recv().is_ok() {}
        // A new process: nothing live, both rows still queued.
        let again = rig_on(r.store.clone());
        assert_eq!(
            again
                .callbacks
                .resume_unfinished(Duration::from_secs(300))
                .await,
            1
        );
        r.store.flush().await.unwrap();
        let left = again.callbacks.get(&queued.id).await.unwrap();
        assert_eq!(left.state, "failed");
        assert_eq!(
            left.reason.as_deref(),
            Some("the queue calls back again after a restart")
        );
        assert_eq!(
            again.callbacks.get(&plain.id).await.unwrap().state,
            "queued"
        );
    }

    #[test]
    fn would_allow_checks_the_trunk_the_policy_and_the_number_budget() {
        let r = rig(true);
        let c = &r.callbacks;
        assert!(c.would_allow("+34612345678"));
        assert!(!c.would_allow("+15551234567"), "not a valid number");
        assert!(
            !rig(false).callbacks.would_allow("+34612345678"),
            "no trunk"
        );
        c.create(ask("+34612345678"), "a", any_flow).unwrap();
        assert!(c.would_allow("+34612345678"), "checking uses no budget");
        c.create(ask("+34612345678"), "b", any_flow).unwrap();
        assert!(!c.would_allow("+34612345678"), "two an hour, both used");
    }

    #[test]
    fn sip_causes_map_to_outcomes() {
        let mut r = rig(true)
            .callbacks
            .create(ask("+34612345678"), "k", any_flow)
            .unwrap();
        r.state = "failed".into();
        for (status, want) in [
            (404, "invalid_number"),
            (484, "invalid_number"),
            (604, "invalid_number"),
            (486, "busy"),
            (600, "busy"),
            (603, "declined"),
            (408, "no_answer"),
            (480, "no_answer"),
            (487, "no_answer"),
            (503, "failed"),
        ] {
            r.sip_status = Some(status);
            assert_eq!(outcome(&r), want, "{status}");
        }
    }
}
