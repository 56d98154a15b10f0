//! Persistence behind a trait: SQLite (embedded, WAL) by default; a
//! Postgres backend can implement the same trait to scale out.

mod sqlite;

use std::time::SystemTime;

pub use sqlite::SqliteStore;

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
}

impl SendStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::Sent => "sent",
            SendStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<SendStatus> {
        match s {
            "sent" => Some(SendStatus::Sent),
            "failed" => Some(SendStatus::Failed),
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
            .field("created_at", &self.created_at)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("the store's writer thread has stopped")]
    Closed,
}

/// What the gateway needs from storage. Writes are fire-and-forget from the
/// signalling task's point of view: implementations queue them.
pub trait Store: Send + Sync {
    fn record_call(&self, record: CallRecord) -> Result<(), StoreError>;
    /// Records for one Call-ID (tests, the API).
    fn call_records(&self, call_id: &str) -> Result<Vec<CallRecord>, StoreError>;
    /// Queue one provider send for the send log.
    fn record_send(&self, record: SendRecord) -> Result<(), StoreError>;
    /// Sends made during one call (by SIP Call-ID), oldest first.
    fn sends_for_call(&self, call_id: &str) -> Result<Vec<SendRecord>, StoreError>;
    /// Block until queued writes are on disk.
    fn flush(&self) -> Result<(), StoreError>;
}
