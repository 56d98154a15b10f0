//! The query layer both backends share: every statement's text, its
//! parameters, and how its rows become records, written once.
//!
//! The SQL is written in the dialect SQLite (3.24+) and PostgreSQL agree
//! on: `$N` parameters (SQLite's backend reads them as `?N`), `INSERT …
//! ON CONFLICT … DO UPDATE SET x = excluded.x` upserts, `CAST($1 AS TEXT)`
//! where a parameter needs a type. Values cross as [`Value`]s and rows come
//! back as `Vec<Value>`, so a backend is only a way to run statements
//! ([`Backend`]) and one writer that applies queued writes in order
//! ([`WriteRx`]). Only the schemas (each backend's migrations) and the
//! cluster statements (PostgreSQL's shared-store tables) are one dialect's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};

use super::{
    BindingRecord, BreakoutRecord, BreakoutSide, CallRecord, CallbackFilter, CallbackRecord,
    ConsentRecord, ConversationRecord, LeadRecord, MessageRecord, QueueCallbackRecord,
    RecordingFilter, RecordingRecord, SendChannel, SendRecord, SendStatus, Store, StoreError,
    StoreEvent, StoreFuture,
};
use crate::telemetry::names;

/// How long a read may take, waiting for the writer included.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Most queued writes the writer takes into one transaction.
const MAX_BATCH: usize = 512;

pub(super) fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(super) fn from_ms(v: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(v.max(0) as u64)
}

/// A statement parameter or a column value, in the types both databases
/// have. Integers are 64-bit here; the PostgreSQL backend narrows them to
/// the column's type (`INTEGER`), SQLite stores booleans as 0/1.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Value {
    #[default]
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
    /// A `TEXT[]` (PostgreSQL only: `= ANY($n)`).
    TextList(Vec<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

fn time(t: SystemTime) -> Value {
    Value::Int(ms(t))
}

fn opt_time(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, time)
}

fn count(n: usize) -> Value {
    Value::Int(i64::try_from(n).unwrap_or(i64::MAX))
}

/// One statement and its parameters.
#[derive(Debug, Clone)]
pub struct Stmt {
    pub sql: &'static str,
    pub params: Vec<Value>,
}

fn stmt(sql: &'static str, params: Vec<Value>) -> Stmt {
    Stmt { sql, params }
}

/// A row as it came back: one value per selected column.
pub type Row = Vec<Value>;

/// What a backend does: run one statement and hand its rows back. Writes
/// don't come through here: they go to the backend's writer ([`WriteRx`]).
pub trait Backend: Send + Sync + 'static {
    fn query(&self, stmt: Stmt) -> StoreFuture<'_, Vec<Row>>;
    /// Whether other gateways share this database.
    fn shared(&self) -> bool;
    /// What other gateways notify on `channel` (shared databases).
    fn listen(&self, channel: String) -> Option<tokio::sync::broadcast::Receiver<StoreEvent>>;
    /// Whether the writer keeps memory it can give back after a burst
    /// (SQLite's page cache; [`Store::release_memory`]).
    fn caches_memory(&self) -> bool {
        false
    }
}

/// One queued write: statements that stand or fall together.
pub struct Job {
    pub seq: u64,
    pub statements: Vec<Stmt>,
    pub queued_at: Instant,
    /// After this job, the writer gives back the memory it keeps for
    /// speed ([`Store::release_memory`]).
    pub release_memory: bool,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    failed_batches: AtomicU64,
}

/// The queue side of a store's writer. Every write gets the next sequence
/// number; the writer publishes the last one it has applied, so a read can
/// wait for the writes queued before it (and `flush` for all of them).
pub struct WriteQueue {
    tx: Mutex<(u64, mpsc::UnboundedSender<Job>)>,
    done: watch::Receiver<u64>,
    counters: Arc<Counters>,
}

/// The writer's side: queued jobs in, applied sequence numbers out.
pub struct WriteRx {
    rx: mpsc::UnboundedReceiver<Job>,
    done: watch::Sender<u64>,
    counters: Arc<Counters>,
}

/// How the writer is keeping up (benches, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Writes queued since the store opened.
    pub queued: u64,
    /// Writes applied (committed, or failed and counted).
    pub applied: u64,
    /// Transactions the writer ran for them.
    pub batches: u64,
}

impl WriteStats {
    /// Writes waiting for the writer.
    pub fn depth(&self) -> u64 {
        self.queued.saturating_sub(self.applied)
    }
}

pub fn write_queue() -> (WriteQueue, WriteRx) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = watch::channel(0);
    let counters = Arc::new(Counters::default());
    (
        WriteQueue {
            tx: Mutex::new((0, tx)),
            done: done_rx,
            counters: counters.clone(),
        },
        WriteRx {
            rx,
            done: done_tx,
            counters,
        },
    )
}

impl WriteQueue {
    /// Queue statements to run in one transaction, after every write
    /// queued before. Never waits.
    pub fn push(&self, statements: Vec<Stmt>) -> Result<(), StoreError> {
        self.send(statements, false)
    }

    /// Queue a job with no statements that has the writer give back its
    /// cached memory once the writes before it are done.
    pub fn push_release_memory(&self) -> Result<(), StoreError> {
        self.send(Vec::new(), true)
    }

    fn send(&self, statements: Vec<Stmt>, release_memory: bool) -> Result<(), StoreError> {
        let mut tx = self.tx.lock().map_err(|_| StoreError::Closed)?;
        let seq = tx.0 + 1;
        tx.1.send(Job {
            seq,
            statements,
            queued_at: Instant::now(),
            release_memory,
        })
        .map_err(|_| StoreError::Closed)?;
        tx.0 = seq;
        Ok(())
    }

    fn last_queued(&self) -> u64 {
        self.tx.lock().map(|t| t.0).unwrap_or(u64::MAX)
    }

    /// Resolves once every write queued before this call is applied.
    pub fn barrier(&self) -> impl std::future::Future<Output = Result<(), StoreError>> + Send {
        let target = self.last_queued();
        let mut done = self.done.clone();
        async move {
            done.wait_for(|d| *d >= target)
                .await
                .map(|_| ())
                .map_err(|_| StoreError::Closed)
        }
    }

    pub fn stats(&self) -> WriteStats {
        WriteStats {
            queued: self.last_queued(),
            applied: *self.done.borrow(),
            batches: self.counters.batches.load(Ordering::Relaxed),
        }
    }
}

impl WriteRx {
    /// The next batch (on a thread of its own): the oldest queued job and
    /// whatever else is queued behind it. `None` once the store is gone.
    pub fn blocking_next(&mut self) -> Option<Vec<Job>> {
        let first = self.rx.blocking_recv()?;
        Some(self.more(first))
    }

    /// The next batch (in a task).
    pub async fn next(&mut self) -> Option<Vec<Job>> {
        let first = self.rx.recv().await?;
        Some(self.more(first))
    }

    fn more(&mut self, first: Job) -> Vec<Job> {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        batch
    }

    /// The batch is applied (or failed, and was counted): readers waiting
    /// for it may go on.
    pub fn applied(&self, batch: &[Job], one_by_one: bool) {
        let Some(last) = batch.last() else {
            return;
        };
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        if one_by_one {
            self.counters.failed_batches.fetch_add(1, Ordering::Relaxed);
        }
        self.done.send_replace(last.seq);
        metrics::histogram!(names::STORE_WRITE_SECONDS)
            .record(batch[0].queued_at.elapsed().as_secs_f64());
        metrics::gauge!(names::STORE_WRITE_QUEUE).set(self.rx.len() as f64);
    }
}

/// A store: one [`Backend`] for reads, one writer for writes, and the
/// statements of this module between them and the [`Store`] trait.
pub struct SqlStore<B> {
    backend: B,
    writes: WriteQueue,
}

impl<B: Backend> SqlStore<B> {
    pub(super) fn new(backend: B, writes: WriteQueue) -> SqlStore<B> {
        SqlStore { backend, writes }
    }

    /// How the writer is keeping up.
    pub fn write_stats(&self) -> WriteStats {
        self.writes.stats()
    }

    pub(super) fn push(&self, statements: Vec<Stmt>) -> Result<(), StoreError> {
        self.writes.push(statements)
    }

    /// The statement that tells every node `payload` (shared stores only).
    fn notify_cluster(&self, payload: String) -> Option<Stmt> {
        self.backend
            .shared()
            .then(|| stmt(NOTIFY_CLUSTER, vec![payload.into()]))
    }

    fn write(&self, sql: &'static str, params: Vec<Value>) -> Result<(), StoreError> {
        self.writes.push(vec![stmt(sql, params)])
    }

    /// Rows of `stmt`, once the writes queued before this call are in.
    /// The barrier is taken now, not when the future is first polled.
    fn rows(
        &self,
        s: Stmt,
    ) -> impl std::future::Future<Output = Result<Vec<Row>, StoreError>> + '_ {
        let barrier = self.writes.barrier();
        async move {
            let run = async {
                barrier.await?;
                self.backend.query(s).await
            };
            tokio::time::timeout(READ_TIMEOUT, run)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "no answer from the database in {} s",
                        READ_TIMEOUT.as_secs()
                    )))
                })
        }
    }

    fn all<T: Send + 'static>(
        &self,
        s: Stmt,
        read: fn(Cols) -> Result<T, StoreError>,
    ) -> StoreFuture<'_, Vec<T>> {
        let rows = self.rows(s);
        Box::pin(async move { rows.await?.into_iter().map(|r| read(Cols(r))).collect() })
    }

    fn first<T: Send + 'static>(
        &self,
        s: Stmt,
        read: fn(Cols) -> Result<T, StoreError>,
    ) -> StoreFuture<'_, Option<T>> {
        let rows = self.rows(s);
        Box::pin(async move {
            rows.await?
                .into_iter()
                .next()
                .map(|r| read(Cols(r)))
                .transpose()
        })
    }
}

/// A row being read into a record: each column is taken once.
pub struct Cols(Row);

impl Cols {
    fn take(&mut self, i: usize) -> Value {
        self.0.get_mut(i).map(std::mem::take).unwrap_or_default()
    }

    fn opt_text(&mut self, i: usize) -> Result<Option<String>, StoreError> {
        match self.take(i) {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s)),
            other => Err(decode(i, "text", &other)),
        }
    }

    fn text(&mut self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?
            .ok_or_else(|| decode(i, "text", &Value::Null))
    }

    fn opt_int(&mut self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.take(i) {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(v)),
            other => Err(decode(i, "integer", &other)),
        }
    }

    fn int(&mut self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?
            .ok_or_else(|| decode(i, "integer", &Value::Null))
    }

    fn time(&mut self, i: usize) -> Result<SystemTime, StoreError> {
        self.int(i).map(from_ms)
    }

    fn opt_time(&mut self, i: usize) -> Result<Option<SystemTime>, StoreError> {
        Ok(self.opt_int(i)?.map(from_ms))
    }

    /// A boolean: PostgreSQL's BOOLEAN, or SQLite's 0/1.
    fn flag(&mut self, i: usize) -> Result<bool, StoreError> {
        match self.take(i) {
            Value::Bool(b) => Ok(b),
            Value::Int(v) => Ok(v != 0),
            other => Err(decode(i, "boolean", &other)),
        }
    }
}

fn decode(column: usize, wanted: &str, got: &Value) -> StoreError {
    let got = match got {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Text(_) => "text",
        Value::Bool(_) => "a boolean",
        Value::TextList(_) => "a list",
    };
    StoreError::Decode(format!("column {column}: {wanted} expected, {got} found"))
}

// ---- Records: columns, parameters and row readers ----

const CALL_COLUMNS: &str = "call_id, direction, did, caller, trunk, flow, started_at_ms,
        answered_at_ms, ended_at_ms, outcome, sip_status, vars";

fn vars_json(vars: &std::collections::BTreeMap<String, String>) -> Option<String> {
    if vars.is_empty() {
        None
    } else {
        serde_json::to_string(vars).ok()
    }
}

fn call_params(r: CallRecord) -> Vec<Value> {
    let vars = vars_json(&r.vars);
    vec![
        r.call_id.into(),
        r.direction.into(),
        r.did.into(),
        r.caller.into(),
        r.trunk.into(),
        r.flow.into(),
        time(r.started_at),
        opt_time(r.answered_at),
        time(r.ended_at),
        r.outcome.into(),
        r.sip_status.map(i64::from).into(),
        vars.into(),
    ]
}

fn call_row(mut r: Cols) -> Result<CallRecord, StoreError> {
    let direction = r.text(1)?;
    Ok(CallRecord {
        call_id: r.text(0)?,
        direction: if direction == "outbound" {
            "outbound"
        } else {
            "inbound"
        },
        did: r.text(2)?,
        caller: r.text(3)?,
        trunk: r.opt_text(4)?,
        flow: r.opt_text(5)?,
        started_at: r.time(6)?,
        answered_at: r.opt_time(7)?,
        ended_at: r.time(8)?,
        outcome: r.text(9)?,
        sip_status: r.opt_int(10)?.and_then(|s| u16::try_from(s).ok()),
        vars: r
            .opt_text(11)?
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default(),
    })
}

const SEND_COLUMNS: &str = "idempotency_key, channel, provider, recipient, call_id, flow, node,
        status, provider_id, error_kind, error_code, attempts, created_at_ms, segments";

fn send_params(r: SendRecord) -> Vec<Value> {
    vec![
        r.idempotency_key.into(),
        r.channel.as_str().into(),
        r.provider.into(),
        r.recipient.into(),
        r.call_id.into(),
        r.flow.into(),
        r.node.into(),
        r.status.as_str().into(),
        r.provider_id.into(),
        r.error_kind.into(),
        r.error_code.into(),
        r.attempts.map(i64::from).into(),
        time(r.created_at),
        r.segments.map(i64::from).into(),
    ]
}

/// `None` for a channel or status word this build doesn't know (written
/// by a newer node): such rows are left out, not an error.
fn send_row(mut r: Cols) -> Result<Option<SendRecord>, StoreError> {
    let channel = r.text(1)?;
    let status = r.text(7)?;
    let (Some(channel), Some(status)) = (SendChannel::parse(&channel), SendStatus::parse(&status))
    else {
        return Ok(None);
    };
    Ok(Some(SendRecord {
        idempotency_key: r.text(0)?,
        channel,
        provider: r.text(2)?,
        recipient: r.text(3)?,
        call_id: r.opt_text(4)?,
        flow: r.opt_text(5)?,
        node: r.opt_text(6)?,
        status,
        provider_id: r.opt_text(8)?,
        error_kind: r.opt_text(9)?,
        error_code: r.opt_int(10)?,
        attempts: r.opt_int(11)?.and_then(|a| u32::try_from(a).ok()),
        created_at: r.time(12)?,
        segments: r.opt_int(13)?.and_then(|n| u32::try_from(n).ok()),
    }))
}

const CONVERSATION_COLUMNS: &str = "id, channel, origin, flow, breakout_id, created_at_ms,
        closed_at_ms, key_hash, resume_node, resume_vars";

fn conversation_row(mut r: Cols) -> Result<ConversationRecord, StoreError> {
    Ok(ConversationRecord {
        id: r.text(0)?,
        channel: r.text(1)?,
        origin: r.text(2)?,
        flow: r.opt_text(3)?,
        breakout_id: r.opt_text(4)?,
        created_at: r.time(5)?,
        closed_at: r.opt_time(6)?,
        key_hash: r.opt_text(7)?,
        resume_node: r.opt_text(8)?,
        resume_vars: r.opt_text(9)?,
    })
}

fn message_row(mut r: Cols) -> Result<MessageRecord, StoreError> {
    Ok(MessageRecord {
        conversation_id: r.text(0)?,
        seq: r.int(1)?.max(0) as u64,
        role: r.text(2)?,
        kind: r.text(3)?,
        text: r.text(4)?,
        detail: r.opt_text(5)?,
        created_at: r.time(6)?,
    })
}

const BREAKOUT_COLUMNS: &str = "id, token_hash, call_id, flow, recipient, state, created_at_ms,
        expires_at_ms, opened_at_ms, finished_at_ms, conversation_id, result, node, chat_node,
        notices";

fn breakout_row(mut r: Cols) -> Result<BreakoutRecord, StoreError> {
    Ok(BreakoutRecord {
        id: r.text(0)?,
        token_hash: r.text(1)?,
        call_id: r.text(2)?,
        flow: r.text(3)?,
        recipient: r.text(4)?,
        state: r.text(5)?,
        created_at: r.time(6)?,
        expires_at: r.time(7)?,
        opened_at: r.opt_time(8)?,
        finished_at: r.opt_time(9)?,
        conversation_id: r.opt_text(10)?,
        result: r.opt_text(11)?,
        node: r.opt_text(12)?,
        chat_node: r.opt_text(13)?,
        notices: r.opt_text(14)?,
    })
}

const LEAD_COLUMNS: &str = "id, name, email, phone, conversation_id, created_at_ms, updated_at_ms";

fn lead_row(mut r: Cols) -> Result<LeadRecord, StoreError> {
    Ok(LeadRecord {
        id: r.text(0)?,
        name: r.opt_text(1)?,
        email: r.opt_text(2)?,
        phone: r.opt_text(3)?,
        conversation_id: r.opt_text(4)?,
        created_at: r.time(5)?,
        updated_at: r.time(6)?,
    })
}

const CONSENT_COLUMNS: &str = "id, subject, purpose, text, given, conversation_id, created_at_ms";

fn consent_row(mut r: Cols) -> Result<ConsentRecord, StoreError> {
    Ok(ConsentRecord {
        id: r.text(0)?,
        subject: r.text(1)?,
        purpose: r.text(2)?,
        text: r.text(3)?,
        given: r.flag(4)?,
        conversation_id: r.opt_text(5)?,
        created_at: r.time(6)?,
    })
}

const RECORDING_COLUMNS: &str = "id, call_id, started_at_ms, duration_ms, size_bytes, sha256,
        channels, format, complete, storage, path";

fn recording_params(r: RecordingRecord) -> Vec<Value> {
    let int = |v: u64| Value::Int(i64::try_from(v).unwrap_or(i64::MAX));
    vec![
        r.id.into(),
        r.call_id.into(),
        time(r.started_at),
        int(r.duration_ms),
        int(r.size_bytes),
        r.sha256.into(),
        r.channels.into(),
        r.format.into(),
        r.complete.into(),
        r.storage.into(),
        r.path.into(),
    ]
}

fn recording_row(mut r: Cols) -> Result<RecordingRecord, StoreError> {
    Ok(RecordingRecord {
        id: r.text(0)?,
        call_id: r.text(1)?,
        started_at: r.time(2)?,
        duration_ms: r.int(3)?.max(0) as u64,
        size_bytes: r.int(4)?.max(0) as u64,
        sha256: r.text(5)?,
        channels: r.text(6)?,
        format: r.text(7)?,
        complete: r.flag(8)?,
        storage: r.text(9)?,
        path: r.text(10)?,
    })
}

fn binding_params(r: BindingRecord) -> Vec<Value> {
    vec![
        r.conversation_id.into(),
        i64::from(r.seq).into(),
        r.channel.into(),
        r.address.into(),
        time(r.started_at),
        opt_time(r.ended_at),
    ]
}

fn binding_row(mut r: Cols) -> Result<BindingRecord, StoreError> {
    Ok(BindingRecord {
        conversation_id: r.text(0)?,
        seq: r.int(1)?.clamp(0, i64::from(u32::MAX)) as u32,
        channel: r.text(2)?,
        address: r.opt_text(3)?,
        started_at: r.time(4)?,
        ended_at: r.opt_time(5)?,
    })
}

const REGISTRATION_COLUMNS: &str = "user_name, contact, q_milli, instance, reg_id, call_id, cseq,
        expires_at_ms, transport, local_addr, source, path, user_agent, node, node_addr";

const INSERT_REGISTRATION: &str = "INSERT INTO registrations (user_name, contact, q_milli,
        instance, reg_id, call_id, cseq, expires_at_ms, transport, local_addr, source, path,
        user_agent, node, node_addr)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

/// News for every node sharing the store (PostgreSQL only), sent when the
/// transaction it is queued in commits.
const NOTIFY_CLUSTER: &str = "SELECT pg_notify('crossline_cluster', $1)";

const SIP_USER_COLUMNS: &str =
    "name, realm, ha1_md5, ha1_sha256, display_name, tags, enabled, created_at_ms, updated_at_ms";

const UPSERT_SIP_USER: &str = "INSERT INTO sip_users (name, realm, ha1_md5, ha1_sha256,
        display_name, tags, enabled, created_at_ms, updated_at_ms)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (name) DO UPDATE SET realm = excluded.realm, ha1_md5 = excluded.ha1_md5,
        ha1_sha256 = excluded.ha1_sha256, display_name = excluded.display_name,
        tags = excluded.tags, enabled = excluded.enabled, updated_at_ms = excluded.updated_at_ms";

fn sip_user_params(u: crate::registrar::users::UserRecord) -> Vec<Value> {
    vec![
        u.name.into(),
        u.realm.into(),
        u.ha1_md5.into(),
        u.ha1_sha256.into(),
        u.display_name.into(),
        serde_json::to_string(&u.tags)
            .unwrap_or_else(|_| "[]".into())
            .into(),
        u.enabled.into(),
        time(u.created_at),
        time(u.updated_at),
    ]
}

fn sip_user_row(mut r: Cols) -> Result<crate::registrar::users::UserRecord, StoreError> {
    let tags = r.text(5)?;
    Ok(crate::registrar::users::UserRecord {
        name: r.text(0)?,
        realm: r.text(1)?,
        ha1_md5: r.text(2)?,
        ha1_sha256: r.text(3)?,
        display_name: r.opt_text(4)?,
        tags: serde_json::from_str(&tags)
            .map_err(|e| StoreError::Decode(format!("sip_users.tags: {e}")))?,
        enabled: r.flag(6)?,
        created_at: r.time(7)?,
        updated_at: r.time(8)?,
    })
}

fn registration_params(r: crate::registrar::RegistrationRecord) -> Vec<Value> {
    vec![
        r.user.into(),
        r.contact.into(),
        ((r.q * 1000.0).round() as i64).into(),
        r.instance.into(),
        r.reg_id.into(),
        r.call_id.into(),
        r.cseq.into(),
        time(r.expires_at),
        r.transport.into(),
        r.local.into(),
        r.source.into(),
        r.path.into(),
        r.user_agent.into(),
        r.node.into(),
        r.node_addr.into(),
    ]
}

fn registration_row(mut r: Cols) -> Result<crate::registrar::RegistrationRecord, StoreError> {
    Ok(crate::registrar::RegistrationRecord {
        user: r.text(0)?,
        contact: r.text(1)?,
        q: r.int(2)?.clamp(0, 1000) as f64 / 1000.0,
        instance: r.opt_text(3)?,
        reg_id: r.opt_int(4)?,
        call_id: r.text(5)?,
        cseq: r.int(6)?,
        expires_at: r.time(7)?,
        transport: r.text(8)?,
        local: r.text(9)?,
        source: r.text(10)?,
        path: r.opt_text(11)?,
        user_agent: r.opt_text(12)?,
        node: r.text(13)?,
        node_addr: r.opt_text(14)?,
    })
}

const CALLBACK_COLUMNS: &str = "id, phone, phone_raw, flow, target, context, requested_by,
        conversation_id, bot, state, sip_status, reason, consent_id, created_at_ms, ringing_at_ms,
        answered_at_ms, ended_at_ms, node";

fn callback_params(r: CallbackRecord) -> Vec<Value> {
    vec![
        r.id.into(),
        r.phone.into(),
        r.phone_raw.into(),
        r.flow.into(),
        r.target.into(),
        r.context.into(),
        r.requested_by.into(),
        r.conversation_id.into(),
        r.bot.into(),
        r.state.into(),
        r.sip_status.map(i64::from).into(),
        r.reason.into(),
        r.consent_id.into(),
        time(r.created_at),
        opt_time(r.ringing_at),
        opt_time(r.answered_at),
        opt_time(r.ended_at),
        r.node.into(),
    ]
}

fn callback_row(mut r: Cols) -> Result<CallbackRecord, StoreError> {
    Ok(CallbackRecord {
        id: r.text(0)?,
        phone: r.text(1)?,
        phone_raw: r.text(2)?,
        flow: r.opt_text(3)?,
        target: r.opt_text(4)?,
        context: r.text(5)?,
        requested_by: r.text(6)?,
        conversation_id: r.opt_text(7)?,
        bot: r.opt_text(8)?,
        state: r.text(9)?,
        sip_status: r.opt_int(10)?.and_then(|s| u16::try_from(s).ok()),
        reason: r.opt_text(11)?,
        consent_id: r.opt_text(12)?,
        created_at: r.time(13)?,
        ringing_at: r.opt_time(14)?,
        answered_at: r.opt_time(15)?,
        ended_at: r.opt_time(16)?,
        node: r.opt_text(17)?,
    })
}

const QUEUE_CALLBACK_COLUMNS: &str =
    "id, queue, phone, skills, order_ms, joined_at_ms, failures, node";

fn queue_callback_params(r: QueueCallbackRecord) -> Vec<Value> {
    vec![
        r.id.into(),
        r.queue.into(),
        r.phone.into(),
        serde_json::Value::from(r.skills).to_string().into(),
        Value::Int(i64::try_from(r.order_ms).unwrap_or(i64::MAX)),
        time(r.joined_at),
        i64::from(r.failures).into(),
        r.node.into(),
    ]
}

fn queue_callback_row(mut r: Cols) -> Result<QueueCallbackRecord, StoreError> {
    let skills = r.text(3)?;
    Ok(QueueCallbackRecord {
        id: r.text(0)?,
        queue: r.text(1)?,
        phone: r.text(2)?,
        skills: serde_json::from_str(&skills)
            .map_err(|e| StoreError::Decode(format!("queue_callbacks.skills: {e}")))?,
        order_ms: r.int(4)?.max(0) as u64,
        joined_at: r.time(5)?,
        failures: u32::try_from(r.int(6)?.max(0)).unwrap_or(u32::MAX),
        node: r.text(7)?,
    })
}

fn one_text(mut r: Cols) -> Result<String, StoreError> {
    r.text(0)
}

fn one_opt_int(mut r: Cols) -> Result<Option<i64>, StoreError> {
    r.opt_int(0)
}

fn nothing(_: Cols) -> Result<(), StoreError> {
    Ok(())
}

/// What a shared-store-only statement answers on a store of one node's own.
fn not_shared<'a, T: Send + 'a>() -> StoreFuture<'a, T> {
    Box::pin(async { Err(StoreError::Unavailable("this store is not shared".into())) })
}

/// `format!` for statement text: the column lists are spliced in once,
/// at first use, and the text lives as long as the process.
macro_rules! sql {
    ($($arg:tt)*) => {{
        static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        TEXT.get_or_init(|| format!($($arg)*)).as_str()
    }};
}

// ---- The statements ----

const INSERT_CALL: &str = "INSERT INTO calls (call_id, direction, did, caller, trunk, flow,
        started_at_ms, answered_at_ms, ended_at_ms, outcome, sip_status, vars)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const INSERT_SEND: &str = "INSERT INTO provider_sends (idempotency_key, channel, provider,
        recipient, call_id, flow, node, status, provider_id, error_kind, error_code, attempts,
        created_at_ms, segments)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

const UPSERT_CONVERSATION: &str = "INSERT INTO conversations (id, channel, origin, flow,
        breakout_id, created_at_ms, closed_at_ms, key_hash, resume_node, resume_vars)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (id) DO UPDATE SET channel = excluded.channel, origin = excluded.origin,
        flow = excluded.flow, breakout_id = excluded.breakout_id,
        created_at_ms = excluded.created_at_ms, closed_at_ms = excluded.closed_at_ms,
        key_hash = excluded.key_hash, resume_node = excluded.resume_node,
        resume_vars = excluded.resume_vars";

const UPSERT_MESSAGE: &str = "INSERT INTO messages (conversation_id, seq, role, kind, text,
        detail, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (conversation_id, seq) DO UPDATE SET role = excluded.role,
        kind = excluded.kind, text = excluded.text, detail = excluded.detail,
        created_at_ms = excluded.created_at_ms";

const UPSERT_BREAKOUT: &str = "INSERT INTO breakouts (id, token_hash, call_id, flow, recipient,
        state, created_at_ms, expires_at_ms, opened_at_ms, finished_at_ms, conversation_id,
        result, node, chat_node, notices)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
     ON CONFLICT (id) DO UPDATE SET token_hash = excluded.token_hash,
        call_id = excluded.call_id, flow = excluded.flow, recipient = excluded.recipient,
        state = excluded.state, created_at_ms = excluded.created_at_ms,
        expires_at_ms = excluded.expires_at_ms, opened_at_ms = excluded.opened_at_ms,
        finished_at_ms = excluded.finished_at_ms, conversation_id = excluded.conversation_id,
        result = excluded.result, node = excluded.node, chat_node = excluded.chat_node,
        notices = excluded.notices";

const SET_BREAKOUT_CHAT: &str =
    "UPDATE breakouts SET conversation_id = $2, chat_node = $3 WHERE id = $1";

const UPSERT_LEAD: &str = "INSERT INTO leads (id, name, email, phone, conversation_id,
        created_at_ms, updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,
        phone = excluded.phone, conversation_id = excluded.conversation_id,
        created_at_ms = excluded.created_at_ms, updated_at_ms = excluded.updated_at_ms";

const UPSERT_CONSENT: &str = "INSERT INTO consents (id, subject, purpose, text, given,
        conversation_id, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (id) DO UPDATE SET subject = excluded.subject, purpose = excluded.purpose,
        text = excluded.text, given = excluded.given,
        conversation_id = excluded.conversation_id, created_at_ms = excluded.created_at_ms";

const UPSERT_BINDING: &str = "INSERT INTO conversation_bindings (conversation_id, seq, channel,
        address, started_at_ms, ended_at_ms) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (conversation_id, seq) DO UPDATE SET channel = excluded.channel,
        address = excluded.address, started_at_ms = excluded.started_at_ms,
        ended_at_ms = excluded.ended_at_ms";

const INSERT_INBOUND: &str = "INSERT INTO inbound_messages (provider_id, channel, address,
        received_at_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (provider_id) DO NOTHING";

const UPSERT_OPT_OUT: &str = "INSERT INTO opt_outs (channel, address, changed_at_ms)
     VALUES ($1, $2, $3)
     ON CONFLICT (channel, address) DO UPDATE SET changed_at_ms = excluded.changed_at_ms";

const DELETE_OPT_OUT: &str = "DELETE FROM opt_outs WHERE channel = $1 AND address = $2";

const UPSERT_CALLBACK: &str = "INSERT INTO callbacks (id, phone, phone_raw, flow, target,
        context, requested_by, conversation_id, bot, state, sip_status, reason, consent_id,
        created_at_ms, ringing_at_ms, answered_at_ms, ended_at_ms, node)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
     ON CONFLICT (id) DO UPDATE SET phone = excluded.phone, phone_raw = excluded.phone_raw,
        flow = excluded.flow, target = excluded.target, context = excluded.context,
        requested_by = excluded.requested_by, conversation_id = excluded.conversation_id,
        bot = excluded.bot, state = excluded.state, sip_status = excluded.sip_status,
        reason = excluded.reason, consent_id = excluded.consent_id,
        created_at_ms = excluded.created_at_ms, ringing_at_ms = excluded.ringing_at_ms,
        answered_at_ms = excluded.answered_at_ms, ended_at_ms = excluded.ended_at_ms,
        node = excluded.node";

// Shared stores only (PostgreSQL's schema has these columns and tables).

/// One statement, so two nodes claiming at once can't both win.
const CLAIM: &str = "UPDATE conversations SET owner = $2, lease_until_ms = $3
     WHERE id = $1 AND (owner IS NULL OR owner = $2 OR lease_until_ms < $4) RETURNING id";
const OWNER: &str = "SELECT owner FROM conversations WHERE id = $1";
const RENEW: &str = "UPDATE conversations SET lease_until_ms = $2
     WHERE owner = $1 AND id = ANY($3) AND closed_at_ms IS NULL";
/// The insert and the owner's notification commit together.
const POST_INPUT: &str = "WITH posted AS (
        INSERT INTO chat_inbox (conversation_id, owner, text, created_at_ms)
        VALUES ($1, $2, $3, $4) RETURNING id, owner)
     SELECT id FROM posted, LATERAL (SELECT crossline_notify(posted.owner, 'inbox')) AS told";
const TAKE_INPUTS: &str =
    "DELETE FROM chat_inbox WHERE owner = $1 RETURNING id, conversation_id, text";

// Breakouts on a shared store: each change is one conditional UPDATE (the
// single winner of a race), and the node it is news for is notified in the
// same statement, so the notification goes out exactly when it commits.

/// The first browser to post opens the link; `chat_node` marks it taken.
fn claim_breakout_sql() -> &'static str {
    sql!(
        "UPDATE breakouts SET chat_node = $2, opened_at_ms = $3,
            state = CASE WHEN state = 'pending' THEN 'opened' ELSE state END
         WHERE token_hash = $1 AND chat_node IS NULL AND state IN ('pending', 'caller_left')
           AND expires_at_ms > $3
         RETURNING {BREAKOUT_COLUMNS}"
    )
}

/// A Return from pending/opened wins and wakes the call's node; after a
/// hang-up or a timeout the answers are only kept.
fn return_breakout_sql() -> &'static str {
    sql!(
        "WITH moved AS (
            UPDATE breakouts SET result = $2,
                state = CASE state WHEN 'caller_left' THEN 'returned_after_caller_left'
                    WHEN 'timed_out' THEN 'timed_out' ELSE 'returned' END,
                finished_at_ms = CASE WHEN state = 'timed_out' THEN finished_at_ms ELSE $3 END
            WHERE id = $1 AND state IN ('pending', 'opened', 'caller_left', 'timed_out')
            RETURNING {BREAKOUT_COLUMNS})
         SELECT {BREAKOUT_COLUMNS} FROM moved LEFT JOIN LATERAL (
            SELECT crossline_notify(moved.node, 'breakout ' || moved.id)
            WHERE moved.state = 'returned') AS told ON true"
    )
}

fn move_breakout_sql() -> &'static str {
    sql!(
        "WITH moved AS (
            UPDATE breakouts SET state = $2,
                finished_at_ms = COALESCE(CAST($3 AS BIGINT), finished_at_ms)
            WHERE id = $1 AND state = ANY($4)
            RETURNING {BREAKOUT_COLUMNS})
         SELECT {BREAKOUT_COLUMNS} FROM moved, LATERAL (
            SELECT crossline_notify(CASE WHEN $5 THEN moved.node ELSE moved.chat_node END,
                'breakout ' || moved.id)) AS told"
    )
}

fn lease_until(lease: Duration) -> i64 {
    ms(SystemTime::now()).saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

impl<B: Backend> Store for SqlStore<B> {
    fn record_call(&self, r: CallRecord) -> Result<(), StoreError> {
        self.write(INSERT_CALL, call_params(r))
    }

    fn call_records<'a>(&'a self, call_id: &'a str) -> StoreFuture<'a, Vec<CallRecord>> {
        self.all(
            stmt(
                sql!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = $1 ORDER BY id"),
                vec![call_id.into()],
            ),
            call_row,
        )
    }

    fn record_send(&self, r: SendRecord) -> Result<(), StoreError> {
        self.write(INSERT_SEND, send_params(r))
    }

    fn sends_for_call<'a>(&'a self, call_id: &'a str) -> StoreFuture<'a, Vec<SendRecord>> {
        let rows = self.all(
            stmt(
                sql!("SELECT {SEND_COLUMNS} FROM provider_sends WHERE call_id = $1 ORDER BY id"),
                vec![call_id.into()],
            ),
            send_row,
        );
        Box::pin(async move { Ok(rows.await?.into_iter().flatten().collect()) })
    }

    fn recent_calls(&self, limit: usize) -> StoreFuture<'_, Vec<CallRecord>> {
        self.all(
            stmt(
                sql!("SELECT {CALL_COLUMNS} FROM calls ORDER BY id DESC LIMIT $1"),
                vec![count(limit)],
            ),
            call_row,
        )
    }

    fn upsert_conversation(&self, r: ConversationRecord) -> Result<(), StoreError> {
        self.write(
            UPSERT_CONVERSATION,
            vec![
                r.id.into(),
                r.channel.into(),
                r.origin.into(),
                r.flow.into(),
                r.breakout_id.into(),
                time(r.created_at),
                opt_time(r.closed_at),
                r.key_hash.into(),
                r.resume_node.into(),
                r.resume_vars.into(),
            ],
        )
    }

    fn conversation<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<ConversationRecord>> {
        self.first(
            stmt(
                sql!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"),
                vec![id.into()],
            ),
            conversation_row,
        )
    }

    fn conversations(&self, limit: usize) -> StoreFuture<'_, Vec<ConversationRecord>> {
        self.all(
            stmt(
                sql!(
                    "SELECT {CONVERSATION_COLUMNS} FROM conversations
                     ORDER BY created_at_ms DESC LIMIT $1"
                ),
                vec![count(limit)],
            ),
            conversation_row,
        )
    }

    fn append_message(&self, r: MessageRecord) -> Result<(), StoreError> {
        self.write(
            UPSERT_MESSAGE,
            vec![
                r.conversation_id.into(),
                Value::Int(i64::try_from(r.seq).unwrap_or(i64::MAX)),
                r.role.into(),
                r.kind.into(),
                r.text.into(),
                r.detail.into(),
                time(r.created_at),
            ],
        )
    }

    fn messages<'a>(
        &'a self,
        conversation_id: &'a str,
        after: u64,
    ) -> StoreFuture<'a, Vec<MessageRecord>> {
        self.all(
            stmt(
                "SELECT conversation_id, seq, role, kind, text, detail, created_at_ms
                 FROM messages WHERE conversation_id = $1 AND seq > $2 ORDER BY seq",
                vec![
                    conversation_id.into(),
                    Value::Int(i64::try_from(after).unwrap_or(i64::MAX)),
                ],
            ),
            message_row,
        )
    }

    fn upsert_breakout(&self, r: BreakoutRecord) -> Result<(), StoreError> {
        self.write(
            UPSERT_BREAKOUT,
            vec![
                r.id.into(),
                r.token_hash.into(),
                r.call_id.into(),
                r.flow.into(),
                r.recipient.into(),
                r.state.into(),
                time(r.created_at),
                time(r.expires_at),
                opt_time(r.opened_at),
                opt_time(r.finished_at),
                r.conversation_id.into(),
                r.result.into(),
                r.node.into(),
                r.chat_node.into(),
                r.notices.into(),
            ],
        )
    }

    fn breakout<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<BreakoutRecord>> {
        self.first(
            stmt(
                sql!("SELECT {BREAKOUT_COLUMNS} FROM breakouts WHERE id = $1"),
                vec![id.into()],
            ),
            breakout_row,
        )
    }

    fn breakouts<'a>(
        &'a self,
        call_id: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<BreakoutRecord>> {
        // Two statements rather than `$1 IS NULL OR …`, so the one by
        // call uses its index.
        let s = match call_id {
            Some(c) => stmt(
                sql!(
                    "SELECT {BREAKOUT_COLUMNS} FROM breakouts WHERE call_id = $1
                     ORDER BY created_at_ms DESC LIMIT $2"
                ),
                vec![c.into(), count(limit)],
            ),
            None => stmt(
                sql!(
                    "SELECT {BREAKOUT_COLUMNS} FROM breakouts
                     ORDER BY created_at_ms DESC LIMIT $1"
                ),
                vec![count(limit)],
            ),
        };
        self.all(s, breakout_row)
    }

    fn breakout_by_token<'a>(
        &'a self,
        token_hash: &'a str,
    ) -> StoreFuture<'a, Option<BreakoutRecord>> {
        self.first(
            stmt(
                sql!("SELECT {BREAKOUT_COLUMNS} FROM breakouts WHERE token_hash = $1"),
                vec![token_hash.into()],
            ),
            breakout_row,
        )
    }

    fn breakouts_by_id(&self, ids: Vec<String>) -> StoreFuture<'_, Vec<BreakoutRecord>> {
        if !self.backend.shared() {
            return not_shared();
        }
        self.all(
            stmt(
                sql!("SELECT {BREAKOUT_COLUMNS} FROM breakouts WHERE id = ANY($1)"),
                vec![Value::TextList(ids)],
            ),
            breakout_row,
        )
    }

    fn set_breakout_chat(
        &self,
        id: &str,
        conversation_id: &str,
        chat_node: &str,
    ) -> Result<(), StoreError> {
        self.write(
            SET_BREAKOUT_CHAT,
            vec![id.into(), conversation_id.into(), chat_node.into()],
        )
    }

    fn claim_breakout<'a>(
        &'a self,
        token_hash: &'a str,
        chat_node: &'a str,
        now: SystemTime,
    ) -> StoreFuture<'a, Option<BreakoutRecord>> {
        if !self.backend.shared() {
            return not_shared();
        }
        self.first(
            stmt(
                claim_breakout_sql(),
                vec![token_hash.into(), chat_node.into(), time(now)],
            ),
            breakout_row,
        )
    }

    fn return_breakout<'a>(
        &'a self,
        id: &'a str,
        result: &'a str,
    ) -> StoreFuture<'a, Option<BreakoutRecord>> {
        if !self.backend.shared() {
            return not_shared();
        }
        self.first(
            stmt(
                return_breakout_sql(),
                vec![id.into(), result.into(), time(SystemTime::now())],
            ),
            breakout_row,
        )
    }

    fn move_breakout<'a>(
        &'a self,
        id: &'a str,
        from: &'a [&'a str],
        to: &'a str,
        finished: Option<SystemTime>,
        side: BreakoutSide,
    ) -> StoreFuture<'a, Option<BreakoutRecord>> {
        if !self.backend.shared() {
            return not_shared();
        }
        self.first(
            stmt(
                move_breakout_sql(),
                vec![
                    id.into(),
                    to.into(),
                    opt_time(finished),
                    Value::TextList(from.iter().map(|s| s.to_string()).collect()),
                    (side == BreakoutSide::Call).into(),
                ],
            ),
            breakout_row,
        )
    }

    fn upsert_lead(&self, r: LeadRecord) -> Result<(), StoreError> {
        self.write(
            UPSERT_LEAD,
            vec![
                r.id.into(),
                r.name.into(),
                r.email.into(),
                r.phone.into(),
                r.conversation_id.into(),
                time(r.created_at),
                time(r.updated_at),
            ],
        )
    }

    fn leads(&self, limit: usize) -> StoreFuture<'_, Vec<LeadRecord>> {
        self.all(
            stmt(
                sql!("SELECT {LEAD_COLUMNS} FROM leads ORDER BY updated_at_ms DESC LIMIT $1"),
                vec![count(limit)],
            ),
            lead_row,
        )
    }

    fn lead<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<LeadRecord>> {
        self.first(
            stmt(
                sql!("SELECT {LEAD_COLUMNS} FROM leads WHERE id = $1"),
                vec![id.into()],
            ),
            lead_row,
        )
    }

    fn lead_for_conversation<'a>(
        &'a self,
        conversation_id: &'a str,
    ) -> StoreFuture<'a, Option<LeadRecord>> {
        self.first(
            stmt(
                sql!(
                    "SELECT {LEAD_COLUMNS} FROM leads WHERE conversation_id = $1
                     ORDER BY updated_at_ms DESC LIMIT 1"
                ),
                vec![conversation_id.into()],
            ),
            lead_row,
        )
    }

    fn record_consent(&self, r: ConsentRecord) -> Result<(), StoreError> {
        self.write(
            UPSERT_CONSENT,
            vec![
                r.id.into(),
                r.subject.into(),
                r.purpose.into(),
                r.text.into(),
                r.given.into(),
                r.conversation_id.into(),
                time(r.created_at),
            ],
        )
    }

    fn consents<'a>(
        &'a self,
        subject: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<ConsentRecord>> {
        let s = match subject {
            Some(subject) => stmt(
                sql!(
                    "SELECT {CONSENT_COLUMNS} FROM consents WHERE subject = $1
                     ORDER BY created_at_ms DESC LIMIT $2"
                ),
                vec![subject.into(), count(limit)],
            ),
            None => stmt(
                sql!(
                    "SELECT {CONSENT_COLUMNS} FROM consents
                     ORDER BY created_at_ms DESC LIMIT $1"
                ),
                vec![count(limit)],
            ),
        };
        self.all(s, consent_row)
    }

    fn upsert_bindings(&self, records: Vec<BindingRecord>) -> Result<(), StoreError> {
        self.push(
            records
                .into_iter()
                .map(|r| stmt(UPSERT_BINDING, binding_params(r)))
                .collect(),
        )
    }

    fn bindings<'a>(&'a self, conversation_id: &'a str) -> StoreFuture<'a, Vec<BindingRecord>> {
        self.all(
            stmt(
                "SELECT conversation_id, seq, channel, address, started_at_ms, ended_at_ms
                 FROM conversation_bindings WHERE conversation_id = $1 ORDER BY seq",
                vec![conversation_id.into()],
            ),
            binding_row,
        )
    }

    fn open_conversation_for<'a>(
        &'a self,
        channel: &'a str,
        address: &'a str,
    ) -> StoreFuture<'a, Option<String>> {
        self.first(
            stmt(
                "SELECT b.conversation_id FROM conversation_bindings b
                 JOIN conversations c ON c.id = b.conversation_id
                 WHERE b.address = $1 AND b.channel = $2 AND b.ended_at_ms IS NULL
                   AND c.closed_at_ms IS NULL
                 ORDER BY b.started_at_ms DESC LIMIT 1",
                vec![address.into(), channel.into()],
            ),
            one_text,
        )
    }

    fn mark_inbound(
        &self,
        provider_id: &str,
        channel: &str,
        address: &str,
    ) -> Result<(), StoreError> {
        self.write(
            INSERT_INBOUND,
            vec![
                provider_id.into(),
                channel.into(),
                address.into(),
                time(SystemTime::now()),
            ],
        )
    }

    fn last_inbound<'a>(
        &'a self,
        channel: &'a str,
        address: &'a str,
    ) -> StoreFuture<'a, Option<SystemTime>> {
        let at = self.first(
            stmt(
                "SELECT MAX(received_at_ms) FROM inbound_messages
                 WHERE channel = $1 AND address = $2",
                vec![channel.into(), address.into()],
            ),
            one_opt_int,
        );
        Box::pin(async move { Ok(at.await?.flatten().map(from_ms)) })
    }

    fn inbound_known<'a>(&'a self, provider_id: &'a str) -> StoreFuture<'a, bool> {
        let found = self.first(
            stmt(
                "SELECT 1 FROM inbound_messages WHERE provider_id = $1",
                vec![provider_id.into()],
            ),
            nothing,
        );
        Box::pin(async move { Ok(found.await?.is_some()) })
    }

    fn set_opt_out(&self, channel: &str, address: &str, opted_out: bool) -> Result<(), StoreError> {
        if opted_out {
            self.write(
                UPSERT_OPT_OUT,
                vec![channel.into(), address.into(), time(SystemTime::now())],
            )
        } else {
            self.write(DELETE_OPT_OUT, vec![channel.into(), address.into()])
        }
    }

    fn opted_out<'a>(&'a self, channel: &'a str) -> StoreFuture<'a, Vec<String>> {
        self.all(
            stmt(
                "SELECT address FROM opt_outs WHERE channel = $1 ORDER BY address",
                vec![channel.into()],
            ),
            one_text,
        )
    }

    fn is_opted_out<'a>(&'a self, channel: &'a str, address: &'a str) -> StoreFuture<'a, bool> {
        let found = self.first(
            stmt(
                "SELECT 1 FROM opt_outs WHERE channel = $1 AND address = $2",
                vec![channel.into(), address.into()],
            ),
            nothing,
        );
        Box::pin(async move { Ok(found.await?.is_some()) })
    }

    fn replace_registrations(
        &self,
        node: &str,
        user: &str,
        records: Vec<crate::registrar::RegistrationRecord>,
    ) -> Result<(), StoreError> {
        let mut statements = vec![
            stmt(
                "DELETE FROM registrations WHERE user_name = $1 AND node = $2",
                vec![user.into(), node.into()],
            ),
            stmt(
                "DELETE FROM registrations WHERE expires_at_ms <= $1",
                vec![time(SystemTime::now())],
            ),
        ];
        statements.extend(
            records
                .into_iter()
                .map(|r| stmt(INSERT_REGISTRATION, registration_params(r))),
        );
        statements.extend(self.notify_cluster(format!("registrations {user}")));
        self.push(statements)
    }

    fn registrations_of<'a>(
        &'a self,
        user: &'a str,
    ) -> StoreFuture<'a, Vec<crate::registrar::RegistrationRecord>> {
        self.all(
            stmt(
                sql!(
                    "SELECT {REGISTRATION_COLUMNS} FROM registrations
                 WHERE user_name = $1 AND expires_at_ms > $2 ORDER BY node, contact"
                ),
                vec![user.into(), time(SystemTime::now())],
            ),
            registration_row,
        )
    }

    fn sip_users(&self) -> StoreFuture<'_, Vec<crate::registrar::users::UserRecord>> {
        self.all(
            stmt(
                sql!("SELECT {SIP_USER_COLUMNS} FROM sip_users ORDER BY name"),
                Vec::new(),
            ),
            sip_user_row,
        )
    }

    fn sip_user<'a>(
        &'a self,
        name: &'a str,
    ) -> StoreFuture<'a, Option<crate::registrar::users::UserRecord>> {
        self.first(
            stmt(
                sql!("SELECT {SIP_USER_COLUMNS} FROM sip_users WHERE name = $1"),
                vec![name.into()],
            ),
            sip_user_row,
        )
    }

    fn put_sip_user(&self, user: crate::registrar::users::UserRecord) -> Result<(), StoreError> {
        let news = self.notify_cluster(format!("user {}", user.name));
        let mut statements = vec![stmt(UPSERT_SIP_USER, sip_user_params(user))];
        statements.extend(news);
        self.push(statements)
    }

    fn delete_sip_user(&self, name: &str) -> Result<(), StoreError> {
        let mut statements = vec![
            stmt("DELETE FROM sip_users WHERE name = $1", vec![name.into()]),
            stmt(
                "DELETE FROM registrations WHERE user_name = $1",
                vec![name.into()],
            ),
        ];
        statements.extend(self.notify_cluster(format!("user {name}")));
        self.push(statements)
    }

    fn registrations(&self) -> StoreFuture<'_, Vec<crate::registrar::RegistrationRecord>> {
        self.all(
            stmt(
                sql!(
                    "SELECT {REGISTRATION_COLUMNS} FROM registrations
                 WHERE expires_at_ms > $1 ORDER BY user_name, node, contact"
                ),
                vec![time(SystemTime::now())],
            ),
            registration_row,
        )
    }

    fn upsert_callback(&self, r: CallbackRecord) -> Result<(), StoreError> {
        self.write(UPSERT_CALLBACK, callback_params(r))
    }

    fn callback<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<CallbackRecord>> {
        self.first(
            stmt(
                sql!("SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE id = $1"),
                vec![id.into()],
            ),
            callback_row,
        )
    }

    fn callbacks<'a>(&'a self, f: &'a CallbackFilter) -> StoreFuture<'a, Vec<CallbackRecord>> {
        self.all(
            stmt(
                sql!(
                    "SELECT {CALLBACK_COLUMNS} FROM callbacks
                     WHERE (CAST($1 AS TEXT) IS NULL OR bot = $1)
                       AND (CAST($2 AS TEXT) IS NULL OR flow = $2 OR target = $2)
                       AND created_at_ms >= $3 AND created_at_ms < $4
                     ORDER BY created_at_ms DESC LIMIT $5"
                ),
                vec![
                    f.bot.clone().into(),
                    f.flow.clone().into(),
                    Value::Int(f.from.map_or(i64::MIN, ms)),
                    Value::Int(f.to.map_or(i64::MAX, ms)),
                    count(f.limit),
                ],
            ),
            callback_row,
        )
    }

    fn upsert_queue_callback(&self, r: QueueCallbackRecord) -> Result<(), StoreError> {
        self.write(
            "INSERT INTO queue_callbacks (id, queue, phone, skills, order_ms, joined_at_ms,
                failures, node)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (id) DO UPDATE SET failures = excluded.failures",
            queue_callback_params(r),
        )
    }

    fn delete_queue_callback(&self, id: &str) -> Result<(), StoreError> {
        self.write("DELETE FROM queue_callbacks WHERE id = $1", vec![id.into()])
    }

    fn queue_callbacks<'a>(&'a self, node: &'a str) -> StoreFuture<'a, Vec<QueueCallbackRecord>> {
        self.all(
            stmt(
                sql!(
                    "SELECT {QUEUE_CALLBACK_COLUMNS} FROM queue_callbacks
                     WHERE node = $1 ORDER BY order_ms, id"
                ),
                vec![node.into()],
            ),
            queue_callback_row,
        )
    }

    fn unfinished_callbacks(&self) -> StoreFuture<'_, Vec<CallbackRecord>> {
        self.all(
            stmt(
                sql!(
                    "SELECT {CALLBACK_COLUMNS} FROM callbacks
                     WHERE state IN ('queued', 'ringing', 'answered') ORDER BY created_at_ms"
                ),
                Vec::new(),
            ),
            callback_row,
        )
    }

    fn record_recording(&self, r: RecordingRecord) -> Result<(), StoreError> {
        self.write(
            "INSERT INTO recordings (id, call_id, started_at_ms, duration_ms, size_bytes, sha256,
                channels, format, complete, storage, path)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (id) DO UPDATE SET duration_ms = excluded.duration_ms,
                size_bytes = excluded.size_bytes, sha256 = excluded.sha256,
                complete = excluded.complete, storage = excluded.storage,
                path = excluded.path",
            recording_params(r),
        )
    }

    fn recording<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<RecordingRecord>> {
        self.first(
            stmt(
                sql!("SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = $1"),
                vec![id.into()],
            ),
            recording_row,
        )
    }

    fn recordings<'a>(&'a self, f: &'a RecordingFilter) -> StoreFuture<'a, Vec<RecordingRecord>> {
        self.all(
            stmt(
                sql!(
                    "SELECT {RECORDING_COLUMNS} FROM recordings
                     WHERE (CAST($1 AS TEXT) IS NULL OR call_id = $1) AND started_at_ms < $2
                     ORDER BY started_at_ms DESC, id DESC LIMIT $3"
                ),
                vec![
                    f.call_id.clone().into(),
                    Value::Int(f.before.map_or(i64::MAX, ms)),
                    count(f.limit),
                ],
            ),
            recording_row,
        )
    }

    fn oldest_recordings(&self, limit: usize) -> StoreFuture<'_, Vec<RecordingRecord>> {
        self.all(
            stmt(
                sql!("SELECT {RECORDING_COLUMNS} FROM recordings ORDER BY started_at_ms, id LIMIT $1"),
                vec![count(limit)],
            ),
            recording_row,
        )
    }

    fn delete_recording(&self, id: &str) -> Result<(), StoreError> {
        self.write("DELETE FROM recordings WHERE id = $1", vec![id.into()])
    }

    fn release_memory(&self) {
        if self.backend.caches_memory() {
            // Best effort: a closed store has nothing to release.
            let _ = self.writes.push_release_memory();
        }
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        let barrier = self.writes.barrier();
        Box::pin(async move {
            tokio::time::timeout(READ_TIMEOUT, barrier)
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(
                        "the store's writer is behind".into(),
                    ))
                })
        })
    }

    fn shared(&self) -> bool {
        self.backend.shared()
    }

    fn claim_conversation<'a>(
        &'a self,
        id: &'a str,
        node: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Option<String>> {
        if !self.backend.shared() {
            return Box::pin(async { Ok(None) });
        }
        let won = self.first(
            stmt(
                CLAIM,
                vec![
                    id.into(),
                    node.into(),
                    lease_until(lease).into(),
                    time(SystemTime::now()),
                ],
            ),
            nothing,
        );
        Box::pin(async move {
            if won.await?.is_some() {
                return Ok(None);
            }
            // Held by someone else (or not stored yet: then nobody's).
            let owner = self
                .first(stmt(OWNER, vec![id.into()]), |mut r| r.opt_text(0))
                .await?
                .flatten();
            Ok(owner.filter(|o| o != node))
        })
    }

    fn renew_leases(
        &self,
        node: &str,
        ids: Vec<String>,
        lease: Duration,
    ) -> Result<(), StoreError> {
        if !self.backend.shared() || ids.is_empty() {
            return Ok(());
        }
        self.write(
            RENEW,
            vec![node.into(), lease_until(lease).into(), Value::TextList(ids)],
        )
    }

    fn post_input<'a>(
        &'a self,
        conversation_id: &'a str,
        owner: &'a str,
        text: &'a str,
    ) -> StoreFuture<'a, ()> {
        if !self.backend.shared() {
            return not_shared();
        }
        // Waits for the insert: the webhook is only acknowledged once the
        // text is safely handed over.
        let inserted = self.first(
            stmt(
                POST_INPUT,
                vec![
                    conversation_id.into(),
                    owner.into(),
                    text.into(),
                    time(SystemTime::now()),
                ],
            ),
            nothing,
        );
        Box::pin(async move { inserted.await.map(|_| ()) })
    }

    fn listen(&self, node: &str) -> super::News {
        if !self.backend.shared() {
            return super::News::none();
        }
        super::News(self.backend.listen(super::node_channel(node)))
    }

    fn take_inputs<'a>(&'a self, node: &'a str) -> StoreFuture<'a, Vec<(String, String)>> {
        if !self.backend.shared() {
            return Box::pin(async { Ok(Vec::new()) });
        }
        let rows = self.all(stmt(TAKE_INPUTS, vec![node.into()]), |mut r| {
            Ok((r.int(0)?, r.text(1)?, r.text(2)?))
        });
        Box::pin(async move {
            let mut rows = rows.await?;
            rows.sort_by_key(|r| r.0);
            Ok(rows.into_iter().map(|(_, id, text)| (id, text)).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_waits_for_the_writes_queued_before_it() {
        let (queue, mut rx) = write_queue();
        queue.push(vec![stmt("one", vec![])]).unwrap();
        let barrier = queue.barrier();
        // Queued after the barrier was taken: not waited for.
        queue.push(vec![stmt("two", vec![])]).unwrap();
        let batch = rx.next().await.unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(queue.stats().depth(), 2);
        rx.applied(&batch[..1], false);
        barrier.await.unwrap();
        assert_eq!(
            queue.stats(),
            WriteStats {
                queued: 2,
                applied: 1,
                batches: 1
            }
        );
        drop(rx);
        assert!(matches!(queue.barrier().await, Err(StoreError::Closed)));
        assert!(matches!(
            queue.push(vec![stmt("three", vec![])]),
            Err(StoreError::Closed)
        ));
    }

    #[test]
    fn rows_read_by_type_and_say_what_they_found() {
        let mut r = Cols(vec![
            Value::Text("a".into()),
            Value::Null,
            Value::Int(1),
            Value::Bool(true),
            Value::Int(7),
        ]);
        assert_eq!(r.text(0).unwrap(), "a");
        assert_eq!(r.opt_int(1).unwrap(), None);
        assert!(r.flag(2).unwrap());
        assert!(r.flag(3).unwrap());
        let e = r.text(4).unwrap_err().to_string();
        assert!(
            e.contains("column 4: text expected, an integer found"),
            "{e}"
        );
        // Past the end: NULL.
        assert_eq!(r.opt_text(9).unwrap(), None);
    }
}
