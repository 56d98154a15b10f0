//! Persistence behind one async trait, with two backends: SQLite
//! (embedded, WAL; one node) and PostgreSQL (several nodes sharing one
//! database). Both run the same statements and row readers (`sql.rs`);
//! each backend only moves statements to its database and rows back.
//!
//! No call blocks the caller's thread:
//! - writes only queue (they return at once, fire-and-forget: the
//!   signalling loop records calls with them) and one writer per store
//!   applies them in order, batched into transactions;
//! - reads are `async`, and see every write queued before them;
//! - SQLite runs its statements on threads of its own, PostgreSQL on a
//!   `tokio-postgres` connection pool.
//!
//! A shared store also carries news between nodes: a statement that
//! changes what another node waits on notifies it in the same transaction
//! (PostgreSQL `NOTIFY`), and [`Store::listen`] hears it (`listen.rs`).

mod listen;
mod postgres;
mod sql;
mod sqlite;

use std::time::SystemTime;

pub use listen::APPLICATION_NAME as LISTENER_APPLICATION_NAME;
pub use sql::{SqlStore, WriteStats};

/// The SQLite store: `SqliteStore::open(path)`.
pub type SqliteStore = SqlStore<sqlite::Sqlite>;
/// The PostgreSQL store: `PostgresStore::open(url).await`.
pub type PostgresStore = SqlStore<postgres::Postgres>;

/// One call detail record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The SIP Call-ID.
    pub call_id: String,
    /// "inbound" or "outbound".
    pub direction: &'static str,
    pub did: String,
    pub caller: String,
    pub trunk: Option<String>,
    pub flow: Option<String>,
    pub started_at: SystemTime,
    pub answered_at: Option<SystemTime>,
    pub ended_at: SystemTime,
    /// Why it ended, e.g. "remote_bye", "cancelled", "rejected".
    pub outcome: String,
    /// Final SIP status where one applies (486, 487…).
    pub sip_status: Option<u16>,
    /// Values the flow chose to keep with the call (e.g. what a breakout
    /// returned), by variable name.
    pub vars: std::collections::BTreeMap<String, String>,
}

/// Longest text kept from a SIP value in a record.
pub const MAX_SIP_TEXT: usize = 256;

/// A value from SIP (Call-ID, numbers) as records keep it: without control
/// characters (C0, DEL and C1: NULs and terminal escapes must not reach
/// whoever reads the CDRs), at most `MAX_SIP_TEXT` characters.
pub fn sip_text(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_SIP_TEXT)
        .collect()
}

impl CallRecord {
    /// A call just starting: times now, no outcome yet. Its text fields
    /// come from SIP, so they go through `sip_text`.
    pub fn starting(
        call_id: String,
        direction: &'static str,
        did: String,
        caller: String,
        trunk: Option<String>,
        flow: Option<String>,
    ) -> CallRecord {
        let now = SystemTime::now();
        CallRecord {
            call_id: sip_text(&call_id),
            direction,
            did: sip_text(&did),
            caller: sip_text(&caller),
            trunk: trunk.as_deref().map(sip_text),
            flow: flow.as_deref().map(sip_text),
            started_at: now,
            answered_at: None,
            ended_at: now,
            outcome: String::new(),
            sip_status: None,
            vars: Default::default(),
        }
    }
}

/// One finished call recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRecord {
    /// Random; names the file too. The API addresses recordings by it.
    pub id: String,
    /// The recorded call's SIP Call-ID.
    pub call_id: String,
    pub started_at: SystemTime,
    pub duration_ms: u64,
    pub size_bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// "mono" or "dual".
    pub channels: String,
    /// "wav" or "ogg".
    pub format: String,
    /// False when frames were dropped or the file could not be written.
    pub complete: bool,
    /// Where it is: "local" (`path` is the file's name under `[recording]
    /// recordings_dir`) or "s3" (`path` is the object's name in the bucket).
    pub storage: String,
    pub path: String,
}

/// Which recordings a list returns: newest first, at most `limit`,
/// started before `before` when set (the next page: the last one's start).
#[derive(Debug, Clone, Default)]
pub struct RecordingFilter {
    pub call_id: Option<String>,
    pub before: Option<SystemTime>,
    pub limit: usize,
}

/// A chat conversation (web today; SMS and WhatsApp bind to it later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRecord {
    pub id: String,
    /// The active channel: "web", "sms" or "whatsapp".
    pub channel: String,
    /// How it started: "breakout" or "web".
    pub origin: String,
    pub flow: Option<String>,
    pub breakout_id: Option<String>,
    pub created_at: SystemTime,
    pub closed_at: Option<SystemTime>,
    /// SHA-256 (hex) of the visitor's access key, so their browser gets
    /// back in after a restart or on another node.
    pub key_hash: Option<String>,
    /// Where the flow was: the node it entered last and its variables
    /// (JSON), so the flow can pick up from there after a restart.
    pub resume_node: Option<String>,
    pub resume_vars: Option<String>,
}

/// One event of a conversation's transcript, in order (`seq` from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    pub conversation_id: String,
    pub seq: u64,
    /// "bot", "visitor" or "system".
    pub role: String,
    /// "message", "prompt" or "closed".
    pub kind: String,
    pub text: String,
    /// The rest of the event (prompt input type, choices) as JSON.
    pub detail: Option<String>,
    pub created_at: SystemTime,
}

/// A Breakout: To chat session. The link token itself is never stored,
/// only its SHA-256, so the database can't be used to open live links.
#[derive(Clone, PartialEq, Eq)]
pub struct BreakoutRecord {
    pub id: String,
    pub token_hash: String,
    pub call_id: String,
    pub flow: String,
    /// Where the SMS went (E.164); personal data, masked in `Debug`.
    pub recipient: String,
    /// "pending", "opened", "returned", "timed_out", "caller_left",
    /// "returned_after_caller_left", "closed", "send_failed".
    pub state: String,
    pub created_at: SystemTime,
    pub expires_at: SystemTime,
    pub opened_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
    pub conversation_id: Option<String>,
    /// What Breakout: Return handed back, as a JSON object.
    pub result: Option<String>,
    /// The gateway holding the waiting call (`[store] node_id`).
    pub node: Option<String>,
    /// The gateway running the chat, once a browser claimed the link.
    pub chat_node: Option<String>,
    /// What the chat tells the visitor when the call moves on (JSON), for
    /// whichever gateway runs it.
    pub notices: Option<String>,
}

impl std::fmt::Debug for BreakoutRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BreakoutRecord")
            .field("id", &self.id)
            .field("call_id", &self.call_id)
            .field("flow", &self.flow)
            .field("recipient", &crate::mask::phone(&self.recipient))
            .field("state", &self.state)
            .field("conversation_id", &self.conversation_id)
            .field("node", &self.node)
            .field("chat_node", &self.chat_node)
            .finish_non_exhaustive()
    }
}

/// Which gateway a breakout's change is news for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakoutSide {
    /// The one holding the waiting call (a Return, the chat closed).
    Call,
    /// The one running the chat (a timeout, the caller hung up).
    Chat,
}

/// What other gateways sharing the store tell this one (PostgreSQL
/// `LISTEN/NOTIFY`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The listener (re)connected: news may have been missed, re-read.
    Resync,
    /// Texts were handed to this node (`take_inputs`).
    Inbox,
    /// Breakout `id` changed state.
    Breakout(String),
    /// Registrar user `name` was made, changed or deleted (every node).
    User(String),
    /// A node changed the registrations of user `name` (every node).
    Registrations(String),
}

impl StoreEvent {
    /// A notification's payload; `None` for one this build doesn't know.
    pub fn parse(payload: &str) -> Option<StoreEvent> {
        match payload.split_once(' ') {
            None if payload == "inbox" => Some(StoreEvent::Inbox),
            Some(("breakout", id)) if !id.is_empty() => Some(StoreEvent::Breakout(id.into())),
            Some(("user", name)) if !name.is_empty() => Some(StoreEvent::User(name.into())),
            Some(("registrations", name)) if !name.is_empty() => {
                Some(StoreEvent::Registrations(name.into()))
            }
            _ => None,
        }
    }
}

/// What a node hears from [`Store::listen`], as its loops want it: events
/// it fell behind on (and dropped) come back as one `Resync`, and without
/// a listener nothing ever comes.
pub struct News(Option<tokio::sync::broadcast::Receiver<StoreEvent>>);

impl News {
    /// Nothing to hear (an unshared store).
    pub fn none() -> News {
        News(None)
    }

    pub fn is_listening(&self) -> bool {
        self.0.is_some()
    }

    /// The next event; never returns without a listener.
    pub async fn next(&mut self) -> StoreEvent {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let Some(rx) = &mut self.0 else {
                return std::future::pending().await;
            };
            match rx.recv().await {
                Ok(event) => return event,
                Err(RecvError::Lagged(_)) => return StoreEvent::Resync,
                Err(RecvError::Closed) => self.0 = None,
            }
        }
    }
}

/// The channel every gateway listens on besides its own: news for all
/// (registrar users and registrations).
pub const CLUSTER_CHANNEL: &str = "crossline_cluster";

/// The notification channel of gateway `node`: a fixed-size name (node
/// ids are free text), the same as the database's `crossline_notify`.
pub fn node_channel(node: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(node.as_bytes());
    let hex: String = hash.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("crossline_{hex}")
}

/// A person we may contact again, with what we know of them.
#[derive(Clone, PartialEq, Eq)]
pub struct LeadRecord {
    pub id: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub conversation_id: Option<String>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl std::fmt::Debug for LeadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeadRecord")
            .field("id", &self.id)
            .field("email", &self.email.as_deref().map(crate::mask::email))
            .field("phone", &self.phone.as_deref().map(crate::mask::phone))
            .field("conversation_id", &self.conversation_id)
            .finish_non_exhaustive()
    }
}

/// One stretch of a conversation on one channel.
#[derive(Clone, PartialEq, Eq)]
pub struct BindingRecord {
    pub conversation_id: String,
    /// 1 for the first binding (web, usually), then one per switch.
    pub seq: u32,
    /// "web", "sms" or "whatsapp".
    pub channel: String,
    /// The phone number (E.164) for sms and whatsapp.
    pub address: Option<String>,
    pub started_at: SystemTime,
    pub ended_at: Option<SystemTime>,
}

impl std::fmt::Debug for BindingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BindingRecord")
            .field("conversation_id", &self.conversation_id)
            .field("seq", &self.seq)
            .field("channel", &self.channel)
            .field("address", &self.address.as_deref().map(crate::mask::phone))
            .finish_non_exhaustive()
    }
}

/// Consent as given (or refused), with the exact text shown (GDPR).
#[derive(Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub id: String,
    /// Whom it is about: a phone number or email address.
    pub subject: String,
    /// What for, e.g. "callback".
    pub purpose: String,
    pub text: String,
    pub given: bool,
    pub conversation_id: Option<String>,
    pub created_at: SystemTime,
}

impl std::fmt::Debug for ConsentRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsentRecord")
            .field("id", &self.id)
            .field("purpose", &self.purpose)
            .field("given", &self.given)
            .finish_non_exhaustive()
    }
}

/// Which messaging channel a send went out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendChannel {
    Sms,
    WhatsApp,
}

impl SendChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            SendChannel::Sms => "sms",
            SendChannel::WhatsApp => "whatsapp",
        }
    }

    pub fn parse(s: &str) -> Option<SendChannel> {
        match s {
            "sms" => Some(SendChannel::Sms),
            "whatsapp" => Some(SendChannel::WhatsApp),
            _ => None,
        }
    }
}

/// How a provider send ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    Sent,
    Failed,
    /// Stopped before the provider (the recipient opted out).
    Blocked,
}

impl SendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::Sent => "sent",
            SendStatus::Failed => "failed",
            SendStatus::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<SendStatus> {
        match s {
            "sent" => Some(SendStatus::Sent),
            "failed" => Some(SendStatus::Failed),
            "blocked" => Some(SendStatus::Blocked),
            _ => None,
        }
    }
}

/// One provider send (SMS or WhatsApp), successful or not.
#[derive(Clone, PartialEq, Eq)]
pub struct SendRecord {
    /// The key every attempt of this logical send carried.
    pub idempotency_key: String,
    pub channel: SendChannel,
    /// "twilio", "whatsapp" or "webhook".
    pub provider: String,
    /// E.164. Stored whole; never log it (see the `Debug` impl).
    pub recipient: String,
    pub call_id: Option<String>,
    pub flow: Option<String>,
    pub node: Option<String>,
    pub status: SendStatus,
    /// Message SID / wamid when sent.
    pub provider_id: Option<String>,
    /// [`crate::messaging::SendError::kind`] when failed.
    pub error_kind: Option<String>,
    /// The provider's numeric error code, when it gave one.
    pub error_code: Option<i64>,
    /// HTTP attempts; known only for successful sends.
    pub attempts: Option<u32>,
    /// SMS segments the text takes (what carriers bill); `None` for
    /// WhatsApp and for rows written before it was kept.
    pub segments: Option<u32>,
    pub created_at: SystemTime,
}

// The recipient is personal data: Debug masks it.
impl std::fmt::Debug for SendRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendRecord")
            .field("idempotency_key", &self.idempotency_key)
            .field("channel", &self.channel)
            .field("provider", &self.provider)
            .field("recipient", &crate::mask::phone(&self.recipient))
            .field("call_id", &self.call_id)
            .field("flow", &self.flow)
            .field("node", &self.node)
            .field("status", &self.status)
            .field("provider_id", &self.provider_id)
            .field("error_kind", &self.error_kind)
            .field("error_code", &self.error_code)
            .field("attempts", &self.attempts)
            .field("segments", &self.segments)
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A call placed to a visitor (a callback / escalation to call).
#[derive(Clone, PartialEq)]
pub struct CallbackRecord {
    pub id: String,
    /// E.164 when it could be read as a number; else what was typed.
    pub phone: String,
    /// As the visitor typed it.
    pub phone_raw: String,
    /// The voice flow run once answered, or the SIP target bridged to.
    pub flow: Option<String>,
    pub target: Option<String>,
    /// Caller-supplied context (JSON object).
    pub context: String,
    /// Who asked: "operator", "admin", or "flow:<chat flow>".
    pub requested_by: String,
    /// The chat it came from, and that chat's flow (the "bot").
    pub conversation_id: Option<String>,
    pub bot: Option<String>,
    /// queued, ringing, answered, failed or completed.
    pub state: String,
    pub sip_status: Option<u16>,
    pub reason: Option<String>,
    pub consent_id: Option<String>,
    pub created_at: SystemTime,
    pub ringing_at: Option<SystemTime>,
    pub answered_at: Option<SystemTime>,
    pub ended_at: Option<SystemTime>,
    /// The gateway that placed it (`[store] node_id`): after a restart,
    /// each node dials again only its own.
    pub node: Option<String>,
}

impl std::fmt::Debug for CallbackRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackRecord")
            .field("id", &self.id)
            .field("phone", &crate::mask::phone(&self.phone))
            .field("state", &self.state)
            .field("sip_status", &self.sip_status)
            .finish_non_exhaustive()
    }
}

/// A virtual-hold caller: hung up keeping their place in a queue, to be
/// called back. Written when they go virtual, deleted when they leave the
/// queue; read back on start, in order, with the time already waited.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueCallbackRecord {
    pub id: String,
    pub queue: String,
    /// E.164: the number to call back. Never log it whole.
    pub phone: String,
    pub skills: Vec<String>,
    /// The queue's order (milliseconds since the epoch at joining).
    pub order_ms: u64,
    /// When they joined the queue (on the line, before going virtual).
    pub joined_at: SystemTime,
    /// Callbacks that weren't answered so far.
    pub failures: u32,
    /// The gateway whose queue holds them (`[store] node_id`).
    pub node: String,
}

impl std::fmt::Debug for QueueCallbackRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueCallbackRecord")
            .field("id", &self.id)
            .field("queue", &self.queue)
            .field("phone", &crate::mask::phone(&self.phone))
            .field("order_ms", &self.order_ms)
            .field("failures", &self.failures)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Which callbacks a report wants.
#[derive(Debug, Clone, Default)]
pub struct CallbackFilter {
    pub bot: Option<String>,
    pub flow: Option<String>,
    pub from: Option<SystemTime>,
    pub to: Option<SystemTime>,
    pub limit: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A stored value this build cannot read (a newer writer's?).
    #[error("unexpected value in the store: {0}")]
    Decode(String),
}

/// What a store read returns: a future, so no read holds a thread.
pub type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// What the gateway needs from storage.
///
/// - The plain (non-`async`) methods are writes. They only queue: they
///   never wait for the database, so the signalling loop and other sync
///   code call them directly. `Err` means the writer is gone, not that the
///   write failed; a failed write is logged and counted
///   (`crossline_store_write_errors_total`).
/// - The methods returning a [`StoreFuture`] wait for the database. Each
///   sees every write this store queued before it was called.
pub trait Store: Send + Sync {
    /// Queue one call detail record.
    fn record_call(&self, record: CallRecord) -> Result<(), StoreError>;
    /// Records for one Call-ID (tests, the API).
    fn call_records<'a>(&'a self, call_id: &'a str) -> StoreFuture<'a, Vec<CallRecord>>;
    /// Queue one provider send for the send log.
    fn record_send(&self, record: SendRecord) -> Result<(), StoreError>;
    /// Sends made during one call (by SIP Call-ID), oldest first. Rows
    /// with a channel or status this build doesn't know are left out.
    fn sends_for_call<'a>(&'a self, call_id: &'a str) -> StoreFuture<'a, Vec<SendRecord>>;
    /// The newest call records first.
    fn recent_calls(&self, limit: usize) -> StoreFuture<'_, Vec<CallRecord>>;
    /// Insert or replace a conversation (by id).
    fn upsert_conversation(&self, record: ConversationRecord) -> Result<(), StoreError>;
    fn conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<ConversationRecord>>;
    /// The newest conversations first.
    fn conversations(&self, limit: usize) -> StoreFuture<'_, Vec<ConversationRecord>>;
    fn append_message(&self, record: MessageRecord) -> Result<(), StoreError>;
    /// A conversation's events with `seq > after`, in order.
    fn messages<'a>(
        &'a self,
        conversation_id: &'a str,
        after: u64,
    ) -> StoreFuture<'a, Vec<MessageRecord>>;
    /// Insert or replace a breakout session (by id).
    fn upsert_breakout(&self, record: BreakoutRecord) -> Result<(), StoreError>;
    fn breakout<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<BreakoutRecord>>;
    /// Breakouts of one call (by SIP Call-ID), or the newest of all.
    fn breakouts<'a>(
        &'a self,
        call_id: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<BreakoutRecord>>;
    fn upsert_lead(&self, record: LeadRecord) -> Result<(), StoreError>;
    fn leads(&self, limit: usize) -> StoreFuture<'_, Vec<LeadRecord>>;
    fn lead<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<LeadRecord>>;
    /// The newest lead kept for a conversation.
    fn lead_for_conversation<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> StoreFuture<'a, Option<LeadRecord>>;
    fn record_consent(&self, record: ConsentRecord) -> Result<(), StoreError>;
    /// Consents about one subject, or the newest of all.
    fn consents<'a>(
        &'a self,
        subject: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConsentRecord>>;
    /// Insert or replace bindings (by conversation and seq), in one
    /// transaction: a switch ends one binding and starts the next, and the
    /// database never shows half of it.
    fn upsert_bindings(&self, records: Vec<BindingRecord>) -> Result<(), StoreError>;
    fn bindings<'a>(&'a self, conversation_id: &'a str) -> StoreFuture<'a, Vec<BindingRecord>>;
    /// The open conversation `address` is bound to on `channel` right now
    /// (its binding not ended, the conversation not closed), newest first.
    fn open_conversation_for<'a>(
        &'a self,
        channel: &'a str,
        address: &'a str,
    ) -> StoreFuture<'a, Option<String>>;
    /// Remember a handled inbound message (provider id) and who sent it.
    fn mark_inbound(
        &self,
        provider_id: &str,
        channel: &str,
        address: &str,
    ) -> Result<(), StoreError>;
    /// When `address` last wrote to us on `channel` (WhatsApp's window).
    fn last_inbound<'a>(
        &'a self,
        channel: &'a str,
        address: &'a str,
    ) -> StoreFuture<'a, Option<SystemTime>>;
    fn inbound_known<'a>(&'a self, provider_id: &'a str) -> StoreFuture<'a, bool>;
    /// STOP (true) or START (false) from `address` on `channel`.
    fn set_opt_out(&self, channel: &str, address: &str, opted_out: bool) -> Result<(), StoreError>;
    /// Every address opted out on `channel`.
    fn opted_out<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Vec<String>>;
    /// Whether `address` is opted out on `channel` right now.
    fn is_opted_out<'a>(&'a self, channel: &'a str, address: &'a str) -> StoreFuture<'a, bool>;
    /// Insert or update a callback (each status change rewrites it).
    fn upsert_callback(&self, record: CallbackRecord) -> Result<(), StoreError>;
    fn callback<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<CallbackRecord>>;
    /// Newest first.
    fn callbacks<'a>(&'a self, filter: &'a CallbackFilter) -> StoreFuture<'a, Vec<CallbackRecord>>;
    /// Callbacks not yet ended (queued, ringing or answered), oldest first.
    fn unfinished_callbacks(&self) -> StoreFuture<'_, Vec<CallbackRecord>>;
    /// Insert or update a virtual-hold caller (by id).
    fn upsert_queue_callback(&self, record: QueueCallbackRecord) -> Result<(), StoreError>;
    /// The caller left the queue (called back, or dropped).
    fn delete_queue_callback(&self, id: &str) -> Result<(), StoreError>;
    /// `node`'s virtual-hold callers, in queue order.
    fn queue_callbacks<'a>(&'a self, node: &'a str) -> StoreFuture<'a, Vec<QueueCallbackRecord>>;
    /// `user`'s registered devices as `node` took them: they replace what
    /// `node` kept for `user` (lapsed rows of every node are swept too).
    fn replace_registrations(
        &self,
        node: &str,
        user: &str,
        records: Vec<crate::registrar::RegistrationRecord>,
    ) -> Result<(), StoreError>;
    /// Every registration not lapsed, by user.
    fn registrations(&self) -> StoreFuture<'_, Vec<crate::registrar::RegistrationRecord>>;
    /// `user`'s registrations not lapsed, every node's.
    fn registrations_of<'a>(
        &'a self,
        user: &'a str,
    ) -> StoreFuture<'a, Vec<crate::registrar::RegistrationRecord>>;
    /// Registrar users made over the API, by name.
    fn sip_users(&self) -> StoreFuture<'_, Vec<crate::registrar::users::UserRecord>>;
    fn sip_user<'a>(
        &'a self,
        name: &'a str,
    ) -> StoreFuture<'a, Option<crate::registrar::users::UserRecord>>;
    /// Queue: insert or replace a user (every node sharing the store hears).
    fn put_sip_user(&self, user: crate::registrar::users::UserRecord) -> Result<(), StoreError>;
    /// Queue: delete a user and every node's registrations of it.
    fn delete_sip_user(&self, name: &str) -> Result<(), StoreError>;
    /// Queue a finished recording's row.
    fn record_recording(&self, record: RecordingRecord) -> Result<(), StoreError>;
    fn recording<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<RecordingRecord>>;
    /// Newest first.
    fn recordings<'a>(
        &'a self,
        filter: &'a RecordingFilter,
    ) -> StoreFuture<'a, Vec<RecordingRecord>>;
    /// Oldest first, at most `limit` (the retention sweep).
    fn oldest_recordings(&self, limit: usize) -> StoreFuture<'_, Vec<RecordingRecord>>;
    /// Queue a recording's row for deletion.
    fn delete_recording(&self, id: &str) -> Result<(), StoreError>;
    /// Wait until every write queued so far is in the database.
    fn flush(&self) -> StoreFuture<'_, ()>;
    /// Queue: let go of the memory the store keeps for speed (SQLite's
    /// page cache) once a burst is over. It refills as writes resume.
    fn release_memory(&self) {}

    /// Whether other gateways share this store (and conversations need an
    /// owner). A file of one node's own is not shared.
    fn shared(&self) -> bool;
    /// Take (or keep) conversation `id` for `node` for `lease`, unless
    /// another node holds an unexpired lease: `None` when it is ours,
    /// `Some(owner)` when it is not. Unshared stores: always ours.
    fn claim_conversation<'a>(
        &'a self,
        id: &'a str,
        node: &'a str,
        lease: std::time::Duration,
    ) -> StoreFuture<'a, Option<String>>;
    /// Queue: extend `node`'s leases on the conversations it runs.
    fn renew_leases(
        &self,
        node: &str,
        ids: Vec<String>,
        lease: std::time::Duration,
    ) -> Result<(), StoreError>;
    /// Hand a visitor's text to the node that owns the conversation; done
    /// once it is stored. Unshared stores: an error.
    fn post_input<'a>(
        &'a self,
        conversation_id: &'a str,
        owner: &'a str,
        text: &'a str,
    ) -> StoreFuture<'a, ()>;
    /// Texts other nodes handed to `node`: (conversation id, text), oldest
    /// first; each is returned once.
    fn take_inputs<'a>(&'a self, node: &'a str) -> StoreFuture<'a, Vec<(String, String)>>;
    /// Shared stores: what other nodes tell `node`, from this process's one
    /// listener (started by the first call; it reconnects by itself and
    /// sends [`StoreEvent::Resync`] each time it is back). Unshared: none.
    fn listen(&self, node: &str) -> News;

    /// The breakout whose link token has this SHA-256 (hex).
    fn breakout_by_token<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> StoreFuture<'a, Option<BreakoutRecord>>;
    /// Breakouts by id (shared stores).
    fn breakouts_by_id(&self, ids: Vec<String>) -> StoreFuture<'_, Vec<BreakoutRecord>>;
    /// Queue: the chat of breakout `id` is `conversation_id`, run by
    /// `chat_node`.
    fn set_breakout_chat(
        &self,
        id: &str,
        conversation_id: &str,
        chat_node: &str,
    ) -> Result<(), StoreError>;

    // Breakout changes on a shared store. Each is one conditional UPDATE,
    // so of nodes racing for a session exactly one wins: it gets the row
    // as it is now, the others `None`. Unshared stores: an error.

    /// A browser opens the link (pending or caller_left, unclaimed and
    /// unexpired at `now`): `chat_node` will run its chat.
    fn claim_breakout<'a>(
        &'a self,
        token_hash: &'a str,
        chat_node: &'a str,
        now: SystemTime,
    ) -> StoreFuture<'a, Option<BreakoutRecord>>;
    /// Breakout: Return with `result` (JSON): "returned" from pending or
    /// opened (the call's node is told), "returned_after_caller_left", or
    /// kept with a timed-out session.
    fn return_breakout<'a>(
        &'a self,
        id: &'a str,
        result: &'a str,
    ) -> StoreFuture<'a, Option<BreakoutRecord>>;
    /// Move breakout `id` from one of `from` to `to` (finished at
    /// `finished`, if it ends), and tell the node on `side`.
    fn move_breakout<'a>(
        &'a self,
        id: &'a str,
        from: &'a [&'a str],
        to: &'a str,
        finished: Option<SystemTime>,
        side: BreakoutSide,
    ) -> StoreFuture<'a, Option<BreakoutRecord>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_read_back_and_channels_fit_postgres_names() {
        assert_eq!(StoreEvent::parse("inbox"), Some(StoreEvent::Inbox));
        assert_eq!(
            StoreEvent::parse("breakout Ab12"),
            Some(StoreEvent::Breakout("Ab12".into()))
        );
        for unknown in ["", "breakout", "breakout ", "inbox now", "resync"] {
            assert_eq!(StoreEvent::parse(unknown), None, "{unknown:?}");
        }
        // Any node id makes a plain identifier under PostgreSQL's 63 bytes,
        // the same for the same id.
        let long = node_channel(&"gw \"1\"; DROP".repeat(20));
        assert!(long.len() < 64 && long.starts_with("crossline_"), "{long}");
        assert!(long[10..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(node_channel("node-a"), node_channel("node-a"));
        assert_ne!(node_channel("node-a"), node_channel("node-b"));
    }

    #[test]
    fn sip_text_drops_controls_and_caps_length() {
        assert_eq!(sip_text("a84b4c76e66710@pc33"), "a84b4c76e66710@pc33");
        assert_eq!(sip_text("evil\u{1b}[2J\0id\r\n\t\u{7f}"), "evil[2Jid");
        // C1 too: U+009B is a one-character CSI for some terminals.
        assert_eq!(sip_text("a\u{9b}31mb"), "a31mb");
        // Ordinary text and UTF-8 stay.
        assert_eq!(sip_text("José Núñez <+34 600>"), "José Núñez <+34 600>");
        assert_eq!(sip_text(&"é".repeat(1000)).chars().count(), MAX_SIP_TEXT);

        let r = CallRecord::starting(
            "id\u{1b}]0;title\u{7}\0@host".into(),
            "inbound",
            "+1555\0".into(),
            format!("+34{}", "6".repeat(500)),
            Some("pbx\u{1b}".into()),
            Some("demo\n".into()),
        );
        assert_eq!(r.call_id, "id]0;title@host");
        assert_eq!(r.did, "+1555");
        assert_eq!(r.caller.len(), MAX_SIP_TEXT);
        assert_eq!(r.trunk.as_deref(), Some("pbx"));
        assert_eq!(r.flow.as_deref(), Some("demo"));
    }
}
