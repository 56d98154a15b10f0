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
    /// Block until queued writes are on disk.
    fn flush(&self) -> Result<(), StoreError>;
}
