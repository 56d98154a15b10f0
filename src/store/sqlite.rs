//! SQLite store: WAL mode, versioned migrations, and one writer thread that
//! batches inserts into transactions, so the signalling task never waits on
//! the disk.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::columns::*;
use super::{
    BindingRecord, BreakoutRecord, CallRecord, CallbackFilter, CallbackRecord, ConsentRecord,
    ConversationRecord, LeadRecord, MessageRecord, SendChannel, SendRecord, SendStatus, Store,
    StoreError,
};

/// Each entry moves the schema one version forward; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // 1: call detail records.
    "CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        did TEXT NOT NULL,
        caller TEXT NOT NULL,
        trunk TEXT,
        flow TEXT,
        started_at_ms INTEGER NOT NULL,
        answered_at_ms INTEGER,
        ended_at_ms INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        sip_status INTEGER
    );
    CREATE INDEX calls_call_id ON calls(call_id);
    CREATE INDEX calls_started ON calls(started_at_ms);",
    // 2: provider sends (SMS, WhatsApp) and how they ended.
    "CREATE TABLE provider_sends (
        id INTEGER PRIMARY KEY,
        idempotency_key TEXT NOT NULL,
        channel TEXT NOT NULL,
        provider TEXT NOT NULL,
        recipient TEXT NOT NULL,
        call_id TEXT,
        flow TEXT,
        node TEXT,
        status TEXT NOT NULL,
        provider_id TEXT,
        error_kind TEXT,
        error_code INTEGER,
        attempts INTEGER,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX provider_sends_key ON provider_sends(idempotency_key);
    CREATE INDEX provider_sends_call_id ON provider_sends(call_id);",
    // 3: chat (conversations, transcripts), breakouts, leads, consents, and
    // the flow values a call record keeps.
    "ALTER TABLE calls ADD COLUMN vars TEXT;
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        origin TEXT NOT NULL,
        flow TEXT,
        breakout_id TEXT,
        created_at_ms INTEGER NOT NULL,
        closed_at_ms INTEGER
    );
    CREATE INDEX conversations_created ON conversations(created_at_ms);
    CREATE TABLE messages (
        conversation_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        role TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        detail TEXT,
        created_at_ms INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE TABLE breakouts (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        call_id TEXT NOT NULL,
        flow TEXT NOT NULL,
        recipient TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        opened_at_ms INTEGER,
        finished_at_ms INTEGER,
        conversation_id TEXT,
        result TEXT
    );
    CREATE INDEX breakouts_call_id ON breakouts(call_id);
    CREATE TABLE leads (
        id TEXT PRIMARY KEY,
        name TEXT,
        email TEXT,
        phone TEXT,
        conversation_id TEXT,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    CREATE TABLE consents (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        purpose TEXT NOT NULL,
        text TEXT NOT NULL,
        given INTEGER NOT NULL,
        conversation_id TEXT,
        created_at_ms INTEGER NOT NULL
    );
    CREATE INDEX consents_subject ON consents(subject);",
    // 4: chat switch: channel bindings, handled inbound ids, opt-outs.
    "CREATE INDEX leads_conversation ON leads(conversation_id);
    CREATE TABLE conversation_bindings (
        conversation_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        channel TEXT NOT NULL,
        address TEXT,
        started_at_ms INTEGER NOT NULL,
        ended_at_ms INTEGER,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE INDEX conversation_bindings_address ON conversation_bindings(address);
    CREATE TABLE inbound_messages (
        provider_id TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        received_at_ms INTEGER NOT NULL
    );
    CREATE INDEX inbound_messages_address ON inbound_messages(channel, address, received_at_ms);
    CREATE TABLE opt_outs (
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        changed_at_ms INTEGER NOT NULL,
        PRIMARY KEY (channel, address)
    );",
    // 5: callbacks (escalations from chat to a call).
    "CREATE TABLE callbacks (
        id TEXT PRIMARY KEY,
        phone TEXT NOT NULL,
        phone_raw TEXT NOT NULL,
        flow TEXT,
        target TEXT,
        context TEXT NOT NULL,
        requested_by TEXT NOT NULL,
        conversation_id TEXT,
        bot TEXT,
        state TEXT NOT NULL,
        sip_status INTEGER,
        reason TEXT,
        consent_id TEXT,
        created_at_ms INTEGER NOT NULL,
        ringing_at_ms INTEGER,
        answered_at_ms INTEGER,
        ended_at_ms INTEGER
    );
    CREATE INDEX callbacks_created ON callbacks(created_at_ms);",
    // 6: what a chat needs to carry on after a restart (or on another
    // node): the visitor's key hash and where its flow was.
    "ALTER TABLE conversations ADD COLUMN key_hash TEXT;
    ALTER TABLE conversations ADD COLUMN resume_node TEXT;
    ALTER TABLE conversations ADD COLUMN resume_vars TEXT;
    CREATE INDEX callbacks_state ON callbacks(state);",
    // 7: which gateway placed a callback.
    "ALTER TABLE callbacks ADD COLUMN node TEXT;",
];

enum Job {
    Call(CallRecord),
    Send(SendRecord),
    /// Any other write: one statement and its values.
    Exec(&'static str, Vec<Value>),
    /// Statements that stand or fall together (one transaction).
    Many(Vec<(&'static str, Vec<Value>)>),
    Flush(mpsc::Sender<()>),
}

pub struct SqliteStore {
    jobs: Mutex<mpsc::Sender<Job>>,
    reader: Mutex<Connection>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_ms(v: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(v.max(0) as u64)
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), rusqlite::Error> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let mut writer = open(path)?;
        migrate(&mut writer)?;
        let reader = open(path)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(writer, rx))
            .map_err(|_| StoreError::Closed)?;
        Ok(SqliteStore {
            jobs: Mutex::new(tx),
            reader: Mutex::new(reader),
        })
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs
            .lock()
            .map_err(|_| StoreError::Closed)?
            .send(job)
            .map_err(|_| StoreError::Closed)
    }
}

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        // Batch whatever else is queued into one transaction.
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
            if batch.len() >= 512 {
                break;
            }
        }
        if let Err(e) = write_all(&mut conn, &batch) {
            // One bad write must not take the others in its batch with it:
            // write them one transaction each.
            tracing::warn!(%e, jobs = batch.len(), "store: batch failed; writing one by one");
            for job in &batch {
                if let Err(e) = write_all(&mut conn, std::slice::from_ref(job)) {
                    metrics::counter!("crossline_store_write_errors_total").increment(1);
                    tracing::error!(%e, "store: write failed");
                }
            }
        }
        for job in batch {
            if let Job::Flush(done) = job {
                let _ = done.send(());
            }
        }
    }
}

fn write_all(conn: &mut Connection, jobs: &[Job]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    for job in jobs {
        apply(&tx, job)?;
    }
    tx.commit()
}

fn apply(tx: &rusqlite::Transaction<'_>, job: &Job) -> Result<(), rusqlite::Error> {
    match job {
        Job::Call(r) => {
            tx.prepare_cached(
                "INSERT INTO calls (call_id, direction, did, caller, trunk, flow, started_at_ms,
                    answered_at_ms, ended_at_ms, outcome, sip_status, vars)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                r.call_id,
                r.direction,
                r.did,
                r.caller,
                r.trunk,
                r.flow,
                ms(r.started_at),
                r.answered_at.map(ms),
                ms(r.ended_at),
                r.outcome,
                r.sip_status,
                vars_json(&r.vars),
            ])?;
        }
        Job::Send(r) => {
            tx.prepare_cached(
                "INSERT INTO provider_sends (idempotency_key, channel, provider, recipient,
                    call_id, flow, node, status, provider_id, error_kind, error_code,
                    attempts, created_at_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                r.idempotency_key,
                r.channel.as_str(),
                r.provider,
                r.recipient,
                r.call_id,
                r.flow,
                r.node,
                r.status.as_str(),
                r.provider_id,
                r.error_kind,
                r.error_code,
                r.attempts,
                ms(r.created_at),
            ])?;
        }
        Job::Exec(sql, values) => {
            tx.prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(values.iter()))?;
        }
        Job::Many(statements) => {
            for (sql, values) in statements {
                tx.prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(values.iter()))?;
            }
        }
        Job::Flush(_) => {}
    }
    Ok(())
}

impl SqliteStore {
    fn query<T, P: rusqlite::Params>(
        &self,
        sql: &str,
        params: P,
        row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StoreError> {
        let conn = self.reader.lock().map_err(|_| StoreError::Closed)?;
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map(params, row)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }
}

fn callback_row(r: &Row<'_>) -> rusqlite::Result<CallbackRecord> {
    let opt_time = |v: Option<i64>| v.map(from_ms);
    Ok(CallbackRecord {
        id: r.get(0)?,
        phone: r.get(1)?,
        phone_raw: r.get(2)?,
        flow: r.get(3)?,
        target: r.get(4)?,
        context: r.get(5)?,
        requested_by: r.get(6)?,
        conversation_id: r.get(7)?,
        bot: r.get(8)?,
        state: r.get(9)?,
        sip_status: r.get(10)?,
        reason: r.get(11)?,
        consent_id: r.get(12)?,
        created_at: from_ms(r.get(13)?),
        ringing_at: opt_time(r.get(14)?),
        answered_at: opt_time(r.get(15)?),
        ended_at: opt_time(r.get(16)?),
        node: r.get(17)?,
    })
}

fn lead_row(r: &Row<'_>) -> rusqlite::Result<LeadRecord> {
    Ok(LeadRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        email: r.get(2)?,
        phone: r.get(3)?,
        conversation_id: r.get(4)?,
        created_at: from_ms(r.get(5)?),
        updated_at: from_ms(r.get(6)?),
    })
}

fn opt_text(v: Option<String>) -> Value {
    v.map_or(Value::Null, Value::Text)
}

fn opt_ms(v: Option<SystemTime>) -> Value {
    v.map_or(Value::Null, |t| Value::Integer(ms(t)))
}

fn vars_json(vars: &std::collections::BTreeMap<String, String>) -> Option<String> {
    if vars.is_empty() {
        None
    } else {
        serde_json::to_string(vars).ok()
    }
}

fn call_row(r: &Row<'_>) -> rusqlite::Result<CallRecord> {
    let direction: String = r.get(1)?;
    let vars: Option<String> = r.get(11)?;
    Ok(CallRecord {
        call_id: r.get(0)?,
        direction: if direction == "outbound" {
            "outbound"
        } else {
            "inbound"
        },
        did: r.get(2)?,
        caller: r.get(3)?,
        trunk: r.get(4)?,
        flow: r.get(5)?,
        started_at: from_ms(r.get(6)?),
        answered_at: r.get::<_, Option<i64>>(7)?.map(from_ms),
        ended_at: from_ms(r.get(8)?),
        outcome: r.get(9)?,
        sip_status: r.get(10)?,
        vars: vars
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default(),
    })
}

fn conversation_row(r: &Row<'_>) -> rusqlite::Result<ConversationRecord> {
    Ok(ConversationRecord {
        id: r.get(0)?,
        channel: r.get(1)?,
        origin: r.get(2)?,
        flow: r.get(3)?,
        breakout_id: r.get(4)?,
        created_at: from_ms(r.get(5)?),
        closed_at: r.get::<_, Option<i64>>(6)?.map(from_ms),
        key_hash: r.get(7)?,
        resume_node: r.get(8)?,
        resume_vars: r.get(9)?,
    })
}

fn breakout_row(r: &Row<'_>) -> rusqlite::Result<BreakoutRecord> {
    Ok(BreakoutRecord {
        id: r.get(0)?,
        token_hash: r.get(1)?,
        call_id: r.get(2)?,
        flow: r.get(3)?,
        recipient: r.get(4)?,
        state: r.get(5)?,
        created_at: from_ms(r.get(6)?),
        expires_at: from_ms(r.get(7)?),
        opened_at: r.get::<_, Option<i64>>(8)?.map(from_ms),
        finished_at: r.get::<_, Option<i64>>(9)?.map(from_ms),
        conversation_id: r.get(10)?,
        result: r.get(11)?,
    })
}

/// A column holding a word this version does not know (a newer writer?).
fn unknown(column: usize, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        column,
        rusqlite::types::Type::Text,
        format!("unknown value {value:?}").into(),
    )
}

impl Store for SqliteStore {
    fn record_call(&self, record: CallRecord) -> Result<(), StoreError> {
        self.send(Job::Call(record))
    }

    fn call_records(&self, call_id: &str) -> Result<Vec<CallRecord>, StoreError> {
        self.query(
            &format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = ?1 ORDER BY id"),
            [call_id],
            call_row,
        )
    }

    fn recent_calls(&self, limit: usize) -> Result<Vec<CallRecord>, StoreError> {
        self.query(
            &format!("SELECT {CALL_COLUMNS} FROM calls ORDER BY id DESC LIMIT ?1"),
            [limit as i64],
            call_row,
        )
    }

    fn upsert_conversation(&self, r: ConversationRecord) -> Result<(), StoreError> {
        self.send(Job::Exec(
            "INSERT OR REPLACE INTO conversations (id, channel, origin, flow, breakout_id,
                created_at_ms, closed_at_ms, key_hash, resume_node, resume_vars)
                VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            vec![
                r.id.into(),
                r.channel.into(),
                r.origin.into(),
                opt_text(r.flow),
                opt_text(r.breakout_id),
                ms(r.created_at).into(),
                opt_ms(r.closed_at),
                opt_text(r.key_hash),
                opt_text(r.resume_node),
                opt_text(r.resume_vars),
            ],
        ))
    }

    fn conversation(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        let conn = self.reader.lock().map_err(|_| StoreError::Closed)?;
        Ok(conn
            .query_row(
                &format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = ?1"),
                [id],
                conversation_row,
            )
            .optional()?)
    }

    fn conversations(&self, limit: usize) -> Result<Vec<ConversationRecord>, StoreError> {
        self.query(
            &format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations
                 ORDER BY created_at_ms DESC LIMIT ?1"
            ),
            [limit as i64],
            conversation_row,
        )
    }

    fn append_message(&self, r: MessageRecord) -> Result<(), StoreError> {
        self.send(Job::Exec(
            "INSERT OR REPLACE INTO messages (conversation_id, seq, role, kind, text, detail,
                created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            vec![
                r.conversation_id.into(),
                (r.seq as i64).into(),
                r.role.into(),
                r.kind.into(),
                r.text.into(),
                opt_text(r.detail),
                ms(r.created_at).into(),
            ],
        ))
    }

    fn messages(
        &self,
        conversation_id: &str,
        after: u64,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.query(
            "SELECT conversation_id, seq, role, kind, text, detail, created_at_ms FROM messages
             WHERE conversation_id = ?1 AND seq > ?2 ORDER BY seq",
            (conversation_id, after as i64),
            |r| {
                Ok(MessageRecord {
                    conversation_id: r.get(0)?,
                    seq: r.get::<_, i64>(1)?.max(0) as u64,
                    role: r.get(2)?,
                    kind: r.get(3)?,
                    text: r.get(4)?,
                    detail: r.get(5)?,
                    created_at: from_ms(r.get(6)?),
                })
            },
        )
    }

    fn upsert_breakout(&self, r: BreakoutRecord) -> Result<(), StoreError> {
        self.send(Job::Exec(
            "INSERT OR REPLACE INTO breakouts (id, token_hash, call_id, flow, recipient, state,
                created_at_ms, expires_at_ms, opened_at_ms, finished_at_ms, conversation_id,
                result) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            vec![
                r.id.into(),
                r.token_hash.into(),
                r.call_id.into(),
                r.flow.into(),
                r.recipient.into(),
                r.state.into(),
                ms(r.created_at).into(),
                ms(r.expires_at).into(),
                opt_ms(r.opened_at),
                opt_ms(r.finished_at),
                opt_text(r.conversation_id),
                opt_text(r.result),
            ],
        ))
    }

    fn breakout(&self, id: &str) -> Result<Option<BreakoutRecord>, StoreError> {
        let conn = self.reader.lock().map_err(|_| StoreError::Closed)?;
        Ok(conn
            .query_row(
                &format!("SELECT {BREAKOUT_COLUMNS} FROM breakouts WHERE id = ?1"),
                [id],
                breakout_row,
            )
            .optional()?)
    }

    fn breakouts(
        &self,
        call_id: Option<&str>,
        limit: usize,
    ) -> Result<Vec<BreakoutRecord>, StoreError> {
        match call_id {
            Some(c) => self.query(
                &format!(
                    "SELECT {BREAKOUT_COLUMNS} FROM breakouts WHERE call_id = ?1
                     ORDER BY created_at_ms DESC LIMIT ?2"
                ),
                (c, limit as i64),
                breakout_row,
            ),
            None => self.query(
                &format!(
                    "SELECT {BREAKOUT_COLUMNS} FROM breakouts ORDER BY created_at_ms DESC LIMIT ?1"
                ),
                [limit as i64],
                breakout_row,
            ),
        }
    }

    fn upsert_lead(&self, r: LeadRecord) -> Result<(), StoreError> {
        self.send(Job::Exec(
            "INSERT OR REPLACE INTO leads (id, name, email, phone, conversation_id,
                created_at_ms, updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            vec![
                r.id.into(),
                opt_text(r.name),
                opt_text(r.email),
                opt_text(r.phone),
                opt_text(r.conversation_id),
                ms(r.created_at).into(),
                ms(r.updated_at).into(),
            ],
        ))
    }

    fn leads(&self, limit: usize) -> Result<Vec<LeadRecord>, StoreError> {
        self.query(
            &format!("SELECT {LEAD_COLUMNS} FROM leads ORDER BY updated_at_ms DESC LIMIT ?1"),
            [limit as i64],
            lead_row,
        )
    }

    fn lead(&self, id: &str) -> Result<Option<LeadRecord>, StoreError> {
        Ok(self
            .query(
                &format!("SELECT {LEAD_COLUMNS} FROM leads WHERE id = ?1"),
                [id],
                lead_row,
            )?
            .pop())
    }

    fn lead_for_conversation(
        &self,
        conversation_id: &str,
    ) -> Result<Option<LeadRecord>, StoreError> {
        Ok(self
            .query(
                &format!(
                    "SELECT {LEAD_COLUMNS} FROM leads WHERE conversation_id = ?1
                     ORDER BY updated_at_ms DESC LIMIT 1"
                ),
                [conversation_id],
                lead_row,
            )?
            .pop())
    }

    fn record_consent(&self, r: ConsentRecord) -> Result<(), StoreError> {
        self.send(Job::Exec(
            "INSERT OR REPLACE INTO consents (id, subject, purpose, text, given,
                conversation_id, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            vec![
                r.id.into(),
                r.subject.into(),
                r.purpose.into(),
                r.text.into(),
                i64::from(r.given).into(),
                opt_text(r.conversation_id),
                ms(r.created_at).into(),
            ],
        ))
    }

    fn consents(
        &self,
        subject: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ConsentRecord>, StoreError> {
        let row = |r: &Row<'_>| {
            Ok(ConsentRecord {
                id: r.get(0)?,
                subject: r.get(1)?,
                purpose: r.get(2)?,
                text: r.get(3)?,
                given: r.get::<_, i64>(4)? != 0,
                conversation_id: r.get(5)?,
                created_at: from_ms(r.get(6)?),
            })
        };
        match subject {
            Some(s) => self.query(
                &format!(
                    "SELECT {CONSENT_COLUMNS} FROM consents WHERE subject = ?1
                     ORDER BY created_at_ms DESC LIMIT ?2"
                ),
                (s, limit as i64),
                row,
            ),
            None => self.query(
                &format!(
                    "SELECT {CONSENT_COLUMNS} FROM consents ORDER BY created_at_ms DESC LIMIT ?1"
                ),
                [limit as i64],
                row,
            ),
        }
    }

    fn record_send(&self, record: SendRecord) -> Result<(), StoreError> {
        self.send(Job::Send(record))
    }

    fn sends_for_call(&self, call_id: &str) -> Result<Vec<SendRecord>, StoreError> {
        let conn = self.reader.lock().map_err(|_| StoreError::Closed)?;
        let mut stmt = conn.prepare(
            "SELECT idempotency_key, channel, provider, recipient, call_id, flow, node, status,
                    provider_id, error_kind, error_code, attempts, created_at_ms
             FROM provider_sends WHERE call_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([call_id], |r| {
            let channel: String = r.get(1)?;
            let status: String = r.get(7)?;
            Ok(SendRecord {
                idempotency_key: r.get(0)?,
                channel: SendChannel::parse(&channel).ok_or_else(|| unknown(1, &channel))?,
                provider: r.get(2)?,
                recipient: r.get(3)?,
                call_id: r.get(4)?,
                flow: r.get(5)?,
                node: r.get(6)?,
                status: SendStatus::parse(&status).ok_or_else(|| unknown(7, &status))?,
                provider_id: r.get(8)?,
                error_kind: r.get(9)?,
                error_code: r.get(10)?,
                attempts: r.get(11)?,
                created_at: from_ms(r.get(12)?),
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    fn upsert_bindings(&self, records: Vec<BindingRecord>) -> Result<(), StoreError> {
        let statements = records
            .into_iter()
            .map(|r| {
                (
                    "INSERT OR REPLACE INTO conversation_bindings (conversation_id, seq, channel,
                        address, started_at_ms, ended_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    vec![
                        r.conversation_id.into(),
                        i64::from(r.seq).into(),
                        r.channel.into(),
                        opt_text(r.address),
                        ms(r.started_at).into(),
                        opt_ms(r.ended_at),
                    ],
                )
            })
            .collect();
        self.send(Job::Many(statements))
    }

    fn bindings(&self, conversation_id: &str) -> Result<Vec<BindingRecord>, StoreError> {
        self.query(
            "SELECT conversation_id, seq, channel, address, started_at_ms, ended_at_ms
             FROM conversation_bindings WHERE conversation_id = ?1 ORDER BY seq",
            [conversation_id],
            |r| {
                Ok(BindingRecord {
                    conversation_id: r.get(0)?,
                    seq: r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                    channel: r.get(2)?,
                    address: r.get(3)?,
                    started_at: from_ms(r.get(4)?),
                    ended_at: r.get::<_, Option<i64>>(5)?.map(from_ms),
                })
            },
        )
    }

    fn open_conversation_for(
        &self,
        channel: &str,
        address: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .query(
                "SELECT b.conversation_id FROM conversation_bindings b
                 JOIN conversations c ON c.id = b.conversation_id
                 WHERE b.address = ?1 AND b.channel = ?2 AND b.ended_at_ms IS NULL
                   AND c.closed_at_ms IS NULL
                 ORDER BY b.started_at_ms DESC LIMIT 1",
                [address, channel],
                |r| r.get::<_, String>(0),
            )?
            .pop())
    }

    fn mark_inbound(
        &self,
        provider_id: &str,
        channel: &str,
        address: &str,
    ) -> Result<(), StoreError> {
        self.send(Job::Exec(
            "INSERT OR IGNORE INTO inbound_messages (provider_id, channel, address, received_at_ms)
             VALUES (?1, ?2, ?3, ?4)",
            vec![
                provider_id.to_string().into(),
                channel.to_string().into(),
                address.to_string().into(),
                ms(SystemTime::now()).into(),
            ],
        ))
    }

    fn last_inbound(&self, channel: &str, address: &str) -> Result<Option<SystemTime>, StoreError> {
        let at = self.query(
            "SELECT MAX(received_at_ms) FROM inbound_messages WHERE channel = ?1 AND address = ?2",
            [channel, address],
            |r| r.get::<_, Option<i64>>(0),
        )?;
        Ok(at
            .into_iter()
            .flatten()
            .next()
            .map(|ms| SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)))
    }

    fn inbound_known(&self, provider_id: &str) -> Result<bool, StoreError> {
        let n = self.query(
            "SELECT 1 FROM inbound_messages WHERE provider_id = ?1",
            [provider_id],
            |r| r.get::<_, i64>(0),
        )?;
        Ok(!n.is_empty())
    }

    fn set_opt_out(&self, channel: &str, address: &str, opted_out: bool) -> Result<(), StoreError> {
        let values = vec![channel.to_string().into(), address.to_string().into()];
        if opted_out {
            let mut v = values;
            v.push(ms(SystemTime::now()).into());
            self.send(Job::Exec(
                "INSERT OR REPLACE INTO opt_outs (channel, address, changed_at_ms)
                 VALUES (?1, ?2, ?3)",
                v,
            ))
        } else {
            self.send(Job::Exec(
                "DELETE FROM opt_outs WHERE channel = ?1 AND address = ?2",
                values,
            ))
        }
    }

    fn opted_out(&self, channel: &str) -> Result<Vec<String>, StoreError> {
        self.query(
            "SELECT address FROM opt_outs WHERE channel = ?1 ORDER BY address",
            [channel],
            |r| r.get(0),
        )
    }

    fn upsert_callback(&self, r: CallbackRecord) -> Result<(), StoreError> {
        self.send(Job::Exec(
            "INSERT OR REPLACE INTO callbacks (id, phone, phone_raw, flow, target, context,
                requested_by, conversation_id, bot, state, sip_status, reason, consent_id,
                created_at_ms, ringing_at_ms, answered_at_ms, ended_at_ms, node)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                ?18)",
            vec![
                r.id.into(),
                r.phone.into(),
                r.phone_raw.into(),
                opt_text(r.flow),
                opt_text(r.target),
                r.context.into(),
                r.requested_by.into(),
                opt_text(r.conversation_id),
                opt_text(r.bot),
                r.state.into(),
                r.sip_status
                    .map_or(Value::Null, |s| Value::Integer(i64::from(s))),
                opt_text(r.reason),
                opt_text(r.consent_id),
                ms(r.created_at).into(),
                opt_ms(r.ringing_at),
                opt_ms(r.answered_at),
                opt_ms(r.ended_at),
                opt_text(r.node),
            ],
        ))
    }

    fn callback(&self, id: &str) -> Result<Option<CallbackRecord>, StoreError> {
        Ok(self
            .query(
                &format!("SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE id = ?1"),
                [id],
                callback_row,
            )?
            .pop())
    }

    fn callbacks(&self, f: &CallbackFilter) -> Result<Vec<CallbackRecord>, StoreError> {
        let from = f.from.map_or(i64::MIN, ms);
        let to = f.to.map_or(i64::MAX, ms);
        self.query(
            &format!(
                "SELECT {CALLBACK_COLUMNS} FROM callbacks
                 WHERE (?1 IS NULL OR bot = ?1) AND (?2 IS NULL OR flow = ?2 OR target = ?2)
                   AND created_at_ms >= ?3 AND created_at_ms < ?4
                 ORDER BY created_at_ms DESC LIMIT ?5"
            ),
            rusqlite::params![f.bot, f.flow, from, to, f.limit as i64],
            callback_row,
        )
    }

    fn unfinished_callbacks(&self) -> Result<Vec<CallbackRecord>, StoreError> {
        self.query(
            &format!(
                "SELECT {CALLBACK_COLUMNS} FROM callbacks
                 WHERE state IN ('queued', 'ringing', 'answered') ORDER BY created_at_ms"
            ),
            [],
            callback_row,
        )
    }

    fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.send(Job::Flush(tx))?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| StoreError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lead(id: &str) -> LeadRecord {
        LeadRecord {
            id: id.into(),
            name: None,
            email: None,
            phone: Some("+34612345678".into()),
            conversation_id: Some(format!("conv-{id}")),
            created_at: SystemTime::now(),
            updated_at: SystemTime::now(),
        }
    }

    #[test]
    fn a_failing_write_does_not_take_its_batch_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("b.db")).unwrap();
        // Queued back to back, so the writer likely takes them as one batch.
        store.upsert_lead(lead("before")).unwrap();
        store
            .send(Job::Exec(
                "INSERT INTO no_such_table (x) VALUES (?1)",
                vec![1.into()],
            ))
            .unwrap();
        store.upsert_lead(lead("after")).unwrap();
        store.flush().unwrap();
        assert!(store.lead("before").unwrap().is_some());
        assert!(store.lead("after").unwrap().is_some());
        assert_eq!(
            store
                .lead_for_conversation("conv-after")
                .unwrap()
                .unwrap()
                .id,
            "after"
        );
    }

    #[test]
    fn records_survive_reopen_and_migrations_are_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let now = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let record = CallRecord {
            call_id: "abc@host".into(),
            direction: "inbound",
            did: "1000".into(),
            caller: "+15551234567".into(),
            trunk: Some("carrier".into()),
            flow: Some("demo".into()),
            started_at: now,
            answered_at: Some(now + Duration::from_millis(20)),
            ended_at: now + Duration::from_secs(3),
            outcome: "remote_bye".into(),
            sip_status: None,
            vars: [("email".to_string(), "a@b.example".to_string())].into(),
        };
        {
            let store = SqliteStore::open(&path).unwrap();
            store.record_call(record.clone()).unwrap();
            store.flush().unwrap();
            assert_eq!(
                store.call_records("abc@host").unwrap(),
                vec![record.clone()]
            );
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.call_records("abc@host").unwrap(), vec![record]);
        let conn = Connection::open(&path).unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn a_v1_database_migrates_and_keeps_its_calls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // What a build with only migration 1 left on disk.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO calls (call_id, direction, did, caller, started_at_ms,
                    ended_at_ms, outcome) VALUES ('old@host', 'inbound', '1000', '+15550000000',
                    1, 2, 'remote_bye')",
                [],
            )
            .unwrap();
            assert_eq!(tables(&conn), vec!["calls"]);
        }
        let store = SqliteStore::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        assert_eq!(
            tables(&conn),
            vec![
                "breakouts",
                "callbacks",
                "calls",
                "consents",
                "conversation_bindings",
                "conversations",
                "inbound_messages",
                "leads",
                "messages",
                "opt_outs",
                "provider_sends"
            ]
        );
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        let indexed: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index'
                 AND tbl_name = 'provider_sends' AND sql LIKE '%(idempotency_key)%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexed, 1);
        assert_eq!(store.call_records("old@host").unwrap().len(), 1);

        let sent = SendRecord {
            idempotency_key: "old@host:sms".into(),
            channel: SendChannel::Sms,
            provider: "twilio".into(),
            recipient: "+15551234567".into(),
            call_id: Some("old@host".into()),
            flow: Some("callbot-es".into()),
            node: Some("sms".into()),
            status: SendStatus::Sent,
            provider_id: Some("SM01".into()),
            error_kind: None,
            error_code: None,
            attempts: Some(2),
            created_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_000),
        };
        let failed = SendRecord {
            idempotency_key: "old@host:wa".into(),
            channel: SendChannel::WhatsApp,
            provider: "whatsapp".into(),
            status: SendStatus::Failed,
            node: Some("wa".into()),
            provider_id: None,
            error_kind: Some("invalid_recipient".into()),
            error_code: Some(131026),
            attempts: None,
            ..sent.clone()
        };
        store.record_send(sent.clone()).unwrap();
        store.record_send(failed.clone()).unwrap();
        store.flush().unwrap();
        assert_eq!(
            store.sends_for_call("old@host").unwrap(),
            vec![sent, failed]
        );
        assert!(store.sends_for_call("other@host").unwrap().is_empty());
        drop(store);
        // Reopening at the latest version changes nothing.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.sends_for_call("old@host").unwrap().len(), 2);
    }

    #[test]
    fn send_record_debug_masks_the_recipient() {
        let r = SendRecord {
            idempotency_key: "k".into(),
            channel: SendChannel::Sms,
            provider: "twilio".into(),
            recipient: "+15551234567".into(),
            call_id: None,
            flow: None,
            node: None,
            status: SendStatus::Sent,
            provider_id: None,
            error_kind: None,
            error_code: None,
            attempts: None,
            created_at: UNIX_EPOCH,
        };
        let s = format!("{r:?}");
        assert!(!s.contains("5551234567"), "{s}");
    }

    #[test]
    fn chat_breakout_lead_and_consent_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let conv = ConversationRecord {
            id: "c1".into(),
            channel: "web".into(),
            origin: "breakout".into(),
            flow: Some("collect-email".into()),
            breakout_id: Some("b1".into()),
            created_at: at,
            closed_at: None,
            key_hash: Some("9f86d081".into()),
            resume_node: Some("ask_email".into()),
            resume_vars: Some(r#"{"name":"Ana"}"#.into()),
        };
        store.upsert_conversation(conv.clone()).unwrap();
        for seq in 1..=3u64 {
            store
                .append_message(MessageRecord {
                    conversation_id: "c1".into(),
                    seq,
                    role: if seq == 2 { "visitor" } else { "bot" }.into(),
                    kind: "message".into(),
                    text: format!("m{seq}"),
                    detail: (seq == 3).then(|| "{\"input\":\"email\"}".to_string()),
                    created_at: at,
                })
                .unwrap();
        }
        let closed = ConversationRecord {
            closed_at: Some(at + Duration::from_secs(9)),
            ..conv
        };
        store.upsert_conversation(closed.clone()).unwrap();
        let breakout = BreakoutRecord {
            id: "b1".into(),
            token_hash: "ab".repeat(32),
            call_id: "call@host".into(),
            flow: "collect-email".into(),
            recipient: "+15551234567".into(),
            state: "returned".into(),
            created_at: at,
            expires_at: at + Duration::from_secs(120),
            opened_at: Some(at),
            finished_at: Some(at),
            conversation_id: Some("c1".into()),
            result: Some("{\"email\":\"a@b.example\"}".into()),
        };
        store.upsert_breakout(breakout.clone()).unwrap();
        let lead = LeadRecord {
            id: "l1".into(),
            name: None,
            email: Some("a@b.example".into()),
            phone: Some("+15551234567".into()),
            conversation_id: Some("c1".into()),
            created_at: at,
            updated_at: at,
        };
        store.upsert_lead(lead.clone()).unwrap();
        let consent = ConsentRecord {
            id: "k1".into(),
            subject: "+15551234567".into(),
            purpose: "callback".into(),
            text: "We may call you back.".into(),
            given: true,
            conversation_id: Some("c1".into()),
            created_at: at,
        };
        store.record_consent(consent.clone()).unwrap();
        store.flush().unwrap();

        assert_eq!(store.conversation("c1").unwrap(), Some(closed.clone()));
        assert_eq!(store.conversation("nope").unwrap(), None);
        assert_eq!(store.conversations(10).unwrap(), vec![closed]);
        let after1 = store.messages("c1", 1).unwrap();
        assert_eq!(
            after1.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["m2", "m3"]
        );
        assert_eq!(after1[0].role, "visitor");
        assert_eq!(after1[1].detail.as_deref(), Some("{\"input\":\"email\"}"));
        assert_eq!(store.breakout("b1").unwrap(), Some(breakout.clone()));
        assert_eq!(
            store.breakouts(Some("call@host"), 5).unwrap(),
            vec![breakout.clone()]
        );
        assert!(store.breakouts(Some("other"), 5).unwrap().is_empty());
        assert_eq!(store.leads(5).unwrap(), vec![lead]);
        assert_eq!(
            store.consents(Some("+15551234567"), 5).unwrap(),
            vec![consent]
        );
        assert!(store.consents(Some("+34600000000"), 5).unwrap().is_empty());
        assert!(!format!("{breakout:?}").contains("5551234567"));
    }

    #[test]
    fn open_conversation_by_address_and_unfinished_callbacks() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("r.db")).unwrap();
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_000);
        let conversation = |id: &str, closed: bool| ConversationRecord {
            id: id.into(),
            channel: "sms".into(),
            origin: "web".into(),
            flow: None,
            breakout_id: None,
            created_at: at,
            closed_at: closed.then_some(at),
            key_hash: None,
            resume_node: None,
            resume_vars: None,
        };
        let binding = |id: &str, seq: u32, start: u64, ended: bool| BindingRecord {
            conversation_id: id.into(),
            seq,
            channel: "sms".into(),
            address: Some("+34600111222".into()),
            started_at: at + Duration::from_secs(start),
            ended_at: ended.then_some(at + Duration::from_secs(start + 1)),
        };
        // old: closed; moved: its SMS binding ended; live: the one to find.
        store
            .upsert_conversation(conversation("old", true))
            .unwrap();
        store
            .upsert_conversation(conversation("moved", false))
            .unwrap();
        store
            .upsert_conversation(conversation("live", false))
            .unwrap();
        store
            .upsert_bindings(vec![
                binding("old", 1, 30, false),
                binding("moved", 1, 20, true),
                binding("live", 2, 10, false),
            ])
            .unwrap();
        let callback = |id: &str, state: &str, secs: u64| CallbackRecord {
            id: id.into(),
            phone: "+34600111222".into(),
            phone_raw: "600111222".into(),
            flow: Some("callback".into()),
            target: None,
            context: "{}".into(),
            requested_by: "operator".into(),
            conversation_id: None,
            bot: None,
            state: state.into(),
            sip_status: None,
            reason: None,
            consent_id: None,
            created_at: at + Duration::from_secs(secs),
            ringing_at: None,
            answered_at: None,
            ended_at: None,
            node: None,
        };
        for (id, state, secs) in [
            ("r", "ringing", 2),
            ("q", "queued", 1),
            ("f", "failed", 0),
            ("c", "completed", 3),
        ] {
            store.upsert_callback(callback(id, state, secs)).unwrap();
        }
        store.flush().unwrap();
        assert_eq!(
            store.open_conversation_for("sms", "+34600111222").unwrap(),
            Some("live".to_string())
        );
        assert_eq!(
            store
                .open_conversation_for("whatsapp", "+34600111222")
                .unwrap(),
            None
        );
        let unfinished: Vec<String> = store
            .unfinished_callbacks()
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(unfinished, ["q", "r"]);
    }
}
