//! PostgreSQL store, for several gateways sharing one database (behind a
//! SIP dispatcher). Same trait and the same write-behind contract as the
//! SQLite store: one worker thread owns the connection, writes are queued
//! (fire-and-forget for the signalling task), reads wait for their answer.
//! The worker runs the blocking `postgres` client off the tokio threads,
//! and reconnects when the server goes away.
//!
//! Migrations run under an advisory lock, so nodes starting together
//! don't race; each moves the schema one version forward.

use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postgres::types::ToSql;
use postgres::{Client, NoTls, Row};

use super::columns::*;
use super::{
    BindingRecord, BreakoutRecord, CallRecord, CallbackFilter, CallbackRecord, ConsentRecord,
    ConversationRecord, LeadRecord, MessageRecord, SendChannel, SendRecord, SendStatus, Store,
    StoreError,
};

/// Never edit a shipped entry; add one.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE calls (
        id BIGSERIAL PRIMARY KEY,
        call_id TEXT NOT NULL,
        direction TEXT NOT NULL,
        did TEXT NOT NULL,
        caller TEXT NOT NULL,
        trunk TEXT,
        flow TEXT,
        started_at_ms BIGINT NOT NULL,
        answered_at_ms BIGINT,
        ended_at_ms BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        sip_status INTEGER,
        vars TEXT
    );
    CREATE INDEX calls_call_id ON calls(call_id);
    CREATE INDEX calls_started ON calls(started_at_ms);
    CREATE TABLE provider_sends (
        id BIGSERIAL PRIMARY KEY,
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
        error_code BIGINT,
        attempts BIGINT,
        created_at_ms BIGINT NOT NULL
    );
    CREATE INDEX provider_sends_key ON provider_sends(idempotency_key);
    CREATE INDEX provider_sends_call_id ON provider_sends(call_id);
    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        origin TEXT NOT NULL,
        flow TEXT,
        breakout_id TEXT,
        created_at_ms BIGINT NOT NULL,
        closed_at_ms BIGINT,
        key_hash TEXT,
        resume_node TEXT,
        resume_vars TEXT
    );
    CREATE INDEX conversations_created ON conversations(created_at_ms);
    CREATE TABLE messages (
        conversation_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        role TEXT NOT NULL,
        kind TEXT NOT NULL,
        text TEXT NOT NULL,
        detail TEXT,
        created_at_ms BIGINT NOT NULL,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE TABLE breakouts (
        id TEXT PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        call_id TEXT NOT NULL,
        flow TEXT NOT NULL,
        recipient TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        opened_at_ms BIGINT,
        finished_at_ms BIGINT,
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
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    CREATE INDEX leads_conversation ON leads(conversation_id);
    CREATE TABLE consents (
        id TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        purpose TEXT NOT NULL,
        text TEXT NOT NULL,
        given BOOLEAN NOT NULL,
        conversation_id TEXT,
        created_at_ms BIGINT NOT NULL
    );
    CREATE INDEX consents_subject ON consents(subject);
    CREATE TABLE conversation_bindings (
        conversation_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        channel TEXT NOT NULL,
        address TEXT,
        started_at_ms BIGINT NOT NULL,
        ended_at_ms BIGINT,
        PRIMARY KEY (conversation_id, seq)
    );
    CREATE INDEX conversation_bindings_address ON conversation_bindings(address);
    CREATE TABLE inbound_messages (
        provider_id TEXT PRIMARY KEY,
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        received_at_ms BIGINT NOT NULL
    );
    CREATE INDEX inbound_messages_address ON inbound_messages(channel, address, received_at_ms);
    CREATE TABLE opt_outs (
        channel TEXT NOT NULL,
        address TEXT NOT NULL,
        changed_at_ms BIGINT NOT NULL,
        PRIMARY KEY (channel, address)
    );
    CREATE TABLE callbacks (
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
        created_at_ms BIGINT NOT NULL,
        ringing_at_ms BIGINT,
        answered_at_ms BIGINT,
        ended_at_ms BIGINT
    );
    CREATE INDEX callbacks_created ON callbacks(created_at_ms);
    CREATE INDEX callbacks_state ON callbacks(state);",
    // 2: which node runs a conversation (a lease it renews), and texts for
    // it that reached other nodes.
    "ALTER TABLE conversations ADD COLUMN owner TEXT;
    ALTER TABLE conversations ADD COLUMN lease_until_ms BIGINT;
    CREATE TABLE chat_inbox (
        id BIGSERIAL PRIMARY KEY,
        conversation_id TEXT NOT NULL,
        owner TEXT NOT NULL,
        text TEXT NOT NULL,
        created_at_ms BIGINT NOT NULL
    );
    CREATE INDEX chat_inbox_owner ON chat_inbox(owner, id);",
    // 3: which gateway placed a callback.
    "ALTER TABLE callbacks ADD COLUMN node TEXT;",
];

impl PostgresStore {
    /// The schema version this build migrates to.
    pub const SCHEMA_VERSION: usize = MIGRATIONS.len();
}

/// Any number the nodes of one deployment agree on.
const MIGRATION_LOCK: i64 = 0x6372_6f73_736c_696e;

type Work = Box<dyn FnOnce(&mut Client) + Send>;

pub struct PostgresStore {
    jobs: Mutex<mpsc::Sender<Work>>,
}

fn ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn from_ms(v: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(v.max(0) as u64)
}

fn opt_from_ms(v: Option<i64>) -> Option<SystemTime> {
    v.map(from_ms)
}

fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS crossline_schema (version BIGINT NOT NULL)")?;
    let version: i64 = match tx.query_opt("SELECT version FROM crossline_schema", &[])? {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO crossline_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "UPDATE crossline_schema SET version = $1",
            &[&((i + 1) as i64)],
        )?;
    }
    tx.commit()
}

/// Where the worker is: connected, or when to try again.
struct Connection {
    url: String,
    client: Option<Client>,
}

impl Connection {
    fn get(&mut self) -> Option<&mut Client> {
        if self.client.as_ref().is_some_and(|c| c.is_closed()) {
            tracing::warn!("store: the PostgreSQL connection closed; reconnecting");
            self.client = None;
        }
        if self.client.is_none() {
            match Client::connect(&self.url, NoTls) {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    metrics::counter!("crossline_store_connect_errors_total").increment(1);
                    tracing::error!(error = %e, "store: cannot connect to PostgreSQL");
                }
            }
        }
        self.client.as_mut()
    }
}

impl PostgresStore {
    /// Connect, migrate, and start the worker. `url` is a libpq-style
    /// connection string (`postgres://user:pw@host/db` or `host=… user=…`).
    pub fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let mut client = Client::connect(url, NoTls).map_err(pg)?;
        migrate(&mut client).map_err(pg)?;
        let (tx, rx) = mpsc::channel::<Work>();
        let mut connection = Connection {
            url: url.to_string(),
            client: Some(client),
        };
        std::thread::Builder::new()
            .name("store-postgres".into())
            .spawn(move || {
                while let Ok(work) = rx.recv() {
                    match connection.get() {
                        Some(client) => work(client),
                        // Dropping the work drops its reply channel: the
                        // reader sees the store as unavailable.
                        None => {
                            metrics::counter!("crossline_store_write_errors_total").increment(1);
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })
            .map_err(|_| StoreError::Closed)?;
        Ok(PostgresStore {
            jobs: Mutex::new(tx),
        })
    }

    fn submit(&self, work: Work) -> Result<(), StoreError> {
        self.jobs
            .lock()
            .map_err(|_| StoreError::Closed)?
            .send(work)
            .map_err(|_| StoreError::Closed)
    }

    /// Queue one statement; a failure is logged and counted.
    fn exec(&self, sql: &'static str, params: Vec<Param>) -> Result<(), StoreError> {
        self.many(vec![(sql, params)])
    }

    /// Queue statements that stand or fall together.
    fn many(&self, statements: Vec<(&'static str, Vec<Param>)>) -> Result<(), StoreError> {
        self.submit(Box::new(move |client| {
            let run = |client: &mut Client| -> Result<(), postgres::Error> {
                let mut tx = client.transaction()?;
                for (sql, params) in &statements {
                    let refs: Vec<&(dyn ToSql + Sync)> =
                        params.iter().map(|p| p.as_ref() as _).collect();
                    tx.execute(*sql, &refs)?;
                }
                tx.commit()
            };
            if let Err(e) = run(client) {
                metrics::counter!("crossline_store_write_errors_total").increment(1);
                tracing::error!(error = %e, "store: write failed");
            }
        }))
    }

    /// Run a read on the worker and wait for it.
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = mpsc::channel();
        self.submit(Box::new(move |client| {
            let _ = tx.send(f(client));
        }))?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| StoreError::Unavailable("no answer from PostgreSQL".into()))?
            .map_err(pg)
    }

    /// Rows of `sql`, each read by `row`.
    fn query<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Param>,
        row: fn(&Row) -> Result<T, postgres::Error>,
    ) -> Result<Vec<T>, StoreError> {
        self.read(move |client| {
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
            client.query(sql.as_str(), &refs)?.iter().map(row).collect()
        })
    }
}

fn pg(e: postgres::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// A statement parameter, owned so it can cross to the worker.
type Param = Box<dyn ToSql + Sync + Send>;

fn p<T: ToSql + Sync + Send + 'static>(v: T) -> Param {
    Box::new(v)
}

fn opt_ms(t: Option<SystemTime>) -> Param {
    p(t.map(ms))
}

fn call_row(r: &Row) -> Result<CallRecord, postgres::Error> {
    let direction: String = r.try_get(1)?;
    let vars: Option<String> = r.try_get(11)?;
    Ok(CallRecord {
        call_id: r.try_get(0)?,
        direction: if direction == "outbound" {
            "outbound"
        } else {
            "inbound"
        },
        did: r.try_get(2)?,
        caller: r.try_get(3)?,
        trunk: r.try_get(4)?,
        flow: r.try_get(5)?,
        started_at: from_ms(r.try_get(6)?),
        answered_at: opt_from_ms(r.try_get(7)?),
        ended_at: from_ms(r.try_get(8)?),
        outcome: r.try_get(9)?,
        sip_status: r
            .try_get::<_, Option<i32>>(10)?
            .and_then(|s| u16::try_from(s).ok()),
        vars: vars
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default(),
    })
}

fn conversation_row(r: &Row) -> Result<ConversationRecord, postgres::Error> {
    Ok(ConversationRecord {
        id: r.try_get(0)?,
        channel: r.try_get(1)?,
        origin: r.try_get(2)?,
        flow: r.try_get(3)?,
        breakout_id: r.try_get(4)?,
        created_at: from_ms(r.try_get(5)?),
        closed_at: opt_from_ms(r.try_get(6)?),
        key_hash: r.try_get(7)?,
        resume_node: r.try_get(8)?,
        resume_vars: r.try_get(9)?,
    })
}

fn breakout_row(r: &Row) -> Result<BreakoutRecord, postgres::Error> {
    Ok(BreakoutRecord {
        id: r.try_get(0)?,
        token_hash: r.try_get(1)?,
        call_id: r.try_get(2)?,
        flow: r.try_get(3)?,
        recipient: r.try_get(4)?,
        state: r.try_get(5)?,
        created_at: from_ms(r.try_get(6)?),
        expires_at: from_ms(r.try_get(7)?),
        opened_at: opt_from_ms(r.try_get(8)?),
        finished_at: opt_from_ms(r.try_get(9)?),
        conversation_id: r.try_get(10)?,
        result: r.try_get(11)?,
    })
}

fn lead_row(r: &Row) -> Result<LeadRecord, postgres::Error> {
    Ok(LeadRecord {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        email: r.try_get(2)?,
        phone: r.try_get(3)?,
        conversation_id: r.try_get(4)?,
        created_at: from_ms(r.try_get(5)?),
        updated_at: from_ms(r.try_get(6)?),
    })
}

fn consent_row(r: &Row) -> Result<ConsentRecord, postgres::Error> {
    Ok(ConsentRecord {
        id: r.try_get(0)?,
        subject: r.try_get(1)?,
        purpose: r.try_get(2)?,
        text: r.try_get(3)?,
        given: r.try_get(4)?,
        conversation_id: r.try_get(5)?,
        created_at: from_ms(r.try_get(6)?),
    })
}

fn callback_row(r: &Row) -> Result<CallbackRecord, postgres::Error> {
    Ok(CallbackRecord {
        id: r.try_get(0)?,
        phone: r.try_get(1)?,
        phone_raw: r.try_get(2)?,
        flow: r.try_get(3)?,
        target: r.try_get(4)?,
        context: r.try_get(5)?,
        requested_by: r.try_get(6)?,
        conversation_id: r.try_get(7)?,
        bot: r.try_get(8)?,
        state: r.try_get(9)?,
        sip_status: r
            .try_get::<_, Option<i32>>(10)?
            .and_then(|s| u16::try_from(s).ok()),
        reason: r.try_get(11)?,
        consent_id: r.try_get(12)?,
        created_at: from_ms(r.try_get(13)?),
        ringing_at: opt_from_ms(r.try_get(14)?),
        answered_at: opt_from_ms(r.try_get(15)?),
        ended_at: opt_from_ms(r.try_get(16)?),
        node: r.try_get(17)?,
    })
}

fn message_row(r: &Row) -> Result<MessageRecord, postgres::Error> {
    Ok(MessageRecord {
        conversation_id: r.try_get(0)?,
        seq: r.try_get::<_, i64>(1)?.max(0) as u64,
        role: r.try_get(2)?,
        kind: r.try_get(3)?,
        text: r.try_get(4)?,
        detail: r.try_get(5)?,
        created_at: from_ms(r.try_get(6)?),
    })
}

fn binding_row(r: &Row) -> Result<BindingRecord, postgres::Error> {
    Ok(BindingRecord {
        conversation_id: r.try_get(0)?,
        seq: r.try_get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
        channel: r.try_get(2)?,
        address: r.try_get(3)?,
        started_at: from_ms(r.try_get(4)?),
        ended_at: opt_from_ms(r.try_get(5)?),
    })
}

fn send_row(r: &Row) -> Result<Option<SendRecord>, postgres::Error> {
    let channel: String = r.try_get(1)?;
    let status: String = r.try_get(7)?;
    // A word this version doesn't know (a newer node wrote it): skip the row.
    let (Some(channel), Some(status)) = (SendChannel::parse(&channel), SendStatus::parse(&status))
    else {
        return Ok(None);
    };
    Ok(Some(SendRecord {
        idempotency_key: r.try_get(0)?,
        channel,
        provider: r.try_get(2)?,
        recipient: r.try_get(3)?,
        call_id: r.try_get(4)?,
        flow: r.try_get(5)?,
        node: r.try_get(6)?,
        status,
        provider_id: r.try_get(8)?,
        error_kind: r.try_get(9)?,
        error_code: r.try_get(10)?,
        attempts: r
            .try_get::<_, Option<i64>>(11)?
            .and_then(|a| u32::try_from(a).ok()),
        created_at: from_ms(r.try_get(12)?),
    }))
}

fn text(s: &str) -> Param {
    p(s.to_string())
}

fn limit(n: usize) -> Param {
    p(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Store for PostgresStore {
    fn record_call(&self, r: CallRecord) -> Result<(), StoreError> {
        let vars = if r.vars.is_empty() {
            None
        } else {
            serde_json::to_string(&r.vars).ok()
        };
        self.exec(
            "INSERT INTO calls (call_id, direction, did, caller, trunk, flow, started_at_ms,
                answered_at_ms, ended_at_ms, outcome, sip_status, vars)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            vec![
                p(r.call_id),
                text(r.direction),
                p(r.did),
                p(r.caller),
                p(r.trunk),
                p(r.flow),
                p(ms(r.started_at)),
                opt_ms(r.answered_at),
                p(ms(r.ended_at)),
                p(r.outcome),
                p(r.sip_status.map(i32::from)),
                p(vars),
            ],
        )
    }

    fn call_records(&self, call_id: &str) -> Result<Vec<CallRecord>, StoreError> {
        self.query(
            format!("SELECT {CALL_COLUMNS} FROM calls WHERE call_id = $1 ORDER BY id"),
            vec![text(call_id)],
            call_row,
        )
    }

    fn record_send(&self, r: SendRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO provider_sends (idempotency_key, channel, provider, recipient,
                call_id, flow, node, status, provider_id, error_kind, error_code,
                attempts, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            vec![
                p(r.idempotency_key),
                text(r.channel.as_str()),
                p(r.provider),
                p(r.recipient),
                p(r.call_id),
                p(r.flow),
                p(r.node),
                text(r.status.as_str()),
                p(r.provider_id),
                p(r.error_kind),
                p(r.error_code),
                p(r.attempts.map(i64::from)),
                p(ms(r.created_at)),
            ],
        )
    }

    fn sends_for_call(&self, call_id: &str) -> Result<Vec<SendRecord>, StoreError> {
        let rows = self.query(
            "SELECT idempotency_key, channel, provider, recipient, call_id, flow, node, status,
                    provider_id, error_kind, error_code, attempts, created_at_ms
             FROM provider_sends WHERE call_id = $1 ORDER BY id"
                .into(),
            vec![text(call_id)],
            send_row,
        )?;
        Ok(rows.into_iter().flatten().collect())
    }

    fn recent_calls(&self, n: usize) -> Result<Vec<CallRecord>, StoreError> {
        self.query(
            format!("SELECT {CALL_COLUMNS} FROM calls ORDER BY id DESC LIMIT $1"),
            vec![limit(n)],
            call_row,
        )
    }

    fn upsert_conversation(&self, r: ConversationRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO conversations (id, channel, origin, flow, breakout_id, created_at_ms,
                closed_at_ms, key_hash, resume_node, resume_vars)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (id) DO UPDATE SET channel = EXCLUDED.channel,
                origin = EXCLUDED.origin, flow = EXCLUDED.flow,
                breakout_id = EXCLUDED.breakout_id, created_at_ms = EXCLUDED.created_at_ms,
                closed_at_ms = EXCLUDED.closed_at_ms, key_hash = EXCLUDED.key_hash,
                resume_node = EXCLUDED.resume_node, resume_vars = EXCLUDED.resume_vars",
            vec![
                p(r.id),
                p(r.channel),
                p(r.origin),
                p(r.flow),
                p(r.breakout_id),
                p(ms(r.created_at)),
                opt_ms(r.closed_at),
                p(r.key_hash),
                p(r.resume_node),
                p(r.resume_vars),
            ],
        )
    }

    fn conversation(&self, id: &str) -> Result<Option<ConversationRecord>, StoreError> {
        Ok(self
            .query(
                format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1"),
                vec![text(id)],
                conversation_row,
            )?
            .pop())
    }

    fn conversations(&self, n: usize) -> Result<Vec<ConversationRecord>, StoreError> {
        self.query(
            format!(
                "SELECT {CONVERSATION_COLUMNS} FROM conversations
                 ORDER BY created_at_ms DESC LIMIT $1"
            ),
            vec![limit(n)],
            conversation_row,
        )
    }

    fn append_message(&self, r: MessageRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO messages (conversation_id, seq, role, kind, text, detail, created_at_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (conversation_id, seq) DO UPDATE SET role = EXCLUDED.role,
                kind = EXCLUDED.kind, text = EXCLUDED.text, detail = EXCLUDED.detail,
                created_at_ms = EXCLUDED.created_at_ms",
            vec![
                p(r.conversation_id),
                p(i64::try_from(r.seq).unwrap_or(i64::MAX)),
                p(r.role),
                p(r.kind),
                p(r.text),
                p(r.detail),
                p(ms(r.created_at)),
            ],
        )
    }

    fn messages(
        &self,
        conversation_id: &str,
        after: u64,
    ) -> Result<Vec<MessageRecord>, StoreError> {
        self.query(
            "SELECT conversation_id, seq, role, kind, text, detail, created_at_ms FROM messages
             WHERE conversation_id = $1 AND seq > $2 ORDER BY seq"
                .into(),
            vec![
                text(conversation_id),
                p(i64::try_from(after).unwrap_or(i64::MAX)),
            ],
            message_row,
        )
    }

    fn upsert_breakout(&self, r: BreakoutRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO breakouts (id, token_hash, call_id, flow, recipient, state,
                created_at_ms, expires_at_ms, opened_at_ms, finished_at_ms, conversation_id,
                result) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (id) DO UPDATE SET token_hash = EXCLUDED.token_hash,
                call_id = EXCLUDED.call_id, flow = EXCLUDED.flow,
                recipient = EXCLUDED.recipient, state = EXCLUDED.state,
                created_at_ms = EXCLUDED.created_at_ms, expires_at_ms = EXCLUDED.expires_at_ms,
                opened_at_ms = EXCLUDED.opened_at_ms, finished_at_ms = EXCLUDED.finished_at_ms,
                conversation_id = EXCLUDED.conversation_id, result = EXCLUDED.result",
            vec![
                p(r.id),
                p(r.token_hash),
                p(r.call_id),
                p(r.flow),
                p(r.recipient),
                p(r.state),
                p(ms(r.created_at)),
                p(ms(r.expires_at)),
                opt_ms(r.opened_at),
                opt_ms(r.finished_at),
                p(r.conversation_id),
                p(r.result),
            ],
        )
    }

    fn breakout(&self, id: &str) -> Result<Option<BreakoutRecord>, StoreError> {
        Ok(self
            .query(
                format!("SELECT {BREAKOUT_COLUMNS} FROM breakouts WHERE id = $1"),
                vec![text(id)],
                breakout_row,
            )?
            .pop())
    }

    fn breakouts(
        &self,
        call_id: Option<&str>,
        n: usize,
    ) -> Result<Vec<BreakoutRecord>, StoreError> {
        self.query(
            format!(
                "SELECT {BREAKOUT_COLUMNS} FROM breakouts
                 WHERE ($1::TEXT IS NULL OR call_id = $1)
                 ORDER BY created_at_ms DESC LIMIT $2"
            ),
            vec![p(call_id.map(str::to_string)), limit(n)],
            breakout_row,
        )
    }

    fn upsert_lead(&self, r: LeadRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO leads (id, name, email, phone, conversation_id, created_at_ms,
                updated_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, email = EXCLUDED.email,
                phone = EXCLUDED.phone, conversation_id = EXCLUDED.conversation_id,
                created_at_ms = EXCLUDED.created_at_ms, updated_at_ms = EXCLUDED.updated_at_ms",
            vec![
                p(r.id),
                p(r.name),
                p(r.email),
                p(r.phone),
                p(r.conversation_id),
                p(ms(r.created_at)),
                p(ms(r.updated_at)),
            ],
        )
    }

    fn leads(&self, n: usize) -> Result<Vec<LeadRecord>, StoreError> {
        self.query(
            format!("SELECT {LEAD_COLUMNS} FROM leads ORDER BY updated_at_ms DESC LIMIT $1"),
            vec![limit(n)],
            lead_row,
        )
    }

    fn lead(&self, id: &str) -> Result<Option<LeadRecord>, StoreError> {
        Ok(self
            .query(
                format!("SELECT {LEAD_COLUMNS} FROM leads WHERE id = $1"),
                vec![text(id)],
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
                format!(
                    "SELECT {LEAD_COLUMNS} FROM leads WHERE conversation_id = $1
                     ORDER BY updated_at_ms DESC LIMIT 1"
                ),
                vec![text(conversation_id)],
                lead_row,
            )?
            .pop())
    }

    fn record_consent(&self, r: ConsentRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO consents (id, subject, purpose, text, given, conversation_id,
                created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO UPDATE SET subject = EXCLUDED.subject,
                purpose = EXCLUDED.purpose, text = EXCLUDED.text, given = EXCLUDED.given,
                conversation_id = EXCLUDED.conversation_id,
                created_at_ms = EXCLUDED.created_at_ms",
            vec![
                p(r.id),
                p(r.subject),
                p(r.purpose),
                p(r.text),
                p(r.given),
                p(r.conversation_id),
                p(ms(r.created_at)),
            ],
        )
    }

    fn consents(&self, subject: Option<&str>, n: usize) -> Result<Vec<ConsentRecord>, StoreError> {
        self.query(
            format!(
                "SELECT {CONSENT_COLUMNS} FROM consents WHERE ($1::TEXT IS NULL OR subject = $1)
                 ORDER BY created_at_ms DESC LIMIT $2"
            ),
            vec![p(subject.map(str::to_string)), limit(n)],
            consent_row,
        )
    }

    fn upsert_bindings(&self, records: Vec<BindingRecord>) -> Result<(), StoreError> {
        let statements = records
            .into_iter()
            .map(|r| {
                (
                    "INSERT INTO conversation_bindings (conversation_id, seq, channel, address,
                        started_at_ms, ended_at_ms) VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (conversation_id, seq) DO UPDATE SET
                        channel = EXCLUDED.channel, address = EXCLUDED.address,
                        started_at_ms = EXCLUDED.started_at_ms,
                        ended_at_ms = EXCLUDED.ended_at_ms",
                    vec![
                        p(r.conversation_id),
                        p(i64::from(r.seq)),
                        p(r.channel),
                        p(r.address),
                        p(ms(r.started_at)),
                        opt_ms(r.ended_at),
                    ],
                )
            })
            .collect();
        self.many(statements)
    }

    fn bindings(&self, conversation_id: &str) -> Result<Vec<BindingRecord>, StoreError> {
        self.query(
            "SELECT conversation_id, seq, channel, address, started_at_ms, ended_at_ms
             FROM conversation_bindings WHERE conversation_id = $1 ORDER BY seq"
                .into(),
            vec![text(conversation_id)],
            binding_row,
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
                 WHERE b.address = $1 AND b.channel = $2 AND b.ended_at_ms IS NULL
                   AND c.closed_at_ms IS NULL
                 ORDER BY b.started_at_ms DESC LIMIT 1"
                    .into(),
                vec![text(address), text(channel)],
                |r| r.try_get::<_, String>(0),
            )?
            .pop())
    }

    fn mark_inbound(
        &self,
        provider_id: &str,
        channel: &str,
        address: &str,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO inbound_messages (provider_id, channel, address, received_at_ms)
             VALUES ($1, $2, $3, $4) ON CONFLICT (provider_id) DO NOTHING",
            vec![
                text(provider_id),
                text(channel),
                text(address),
                p(ms(SystemTime::now())),
            ],
        )
    }

    fn last_inbound(&self, channel: &str, address: &str) -> Result<Option<SystemTime>, StoreError> {
        let at = self.query(
            "SELECT MAX(received_at_ms) FROM inbound_messages WHERE channel = $1 AND address = $2"
                .into(),
            vec![text(channel), text(address)],
            |r| r.try_get::<_, Option<i64>>(0),
        )?;
        Ok(at.into_iter().flatten().next().map(from_ms))
    }

    fn inbound_known(&self, provider_id: &str) -> Result<bool, StoreError> {
        let n = self.query(
            "SELECT 1 FROM inbound_messages WHERE provider_id = $1".into(),
            vec![text(provider_id)],
            |r| r.try_get::<_, i32>(0),
        )?;
        Ok(!n.is_empty())
    }

    fn set_opt_out(&self, channel: &str, address: &str, opted_out: bool) -> Result<(), StoreError> {
        if opted_out {
            self.exec(
                "INSERT INTO opt_outs (channel, address, changed_at_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (channel, address) DO UPDATE SET
                    changed_at_ms = EXCLUDED.changed_at_ms",
                vec![text(channel), text(address), p(ms(SystemTime::now()))],
            )
        } else {
            self.exec(
                "DELETE FROM opt_outs WHERE channel = $1 AND address = $2",
                vec![text(channel), text(address)],
            )
        }
    }

    fn opted_out(&self, channel: &str) -> Result<Vec<String>, StoreError> {
        self.query(
            "SELECT address FROM opt_outs WHERE channel = $1 ORDER BY address".into(),
            vec![text(channel)],
            |r| r.try_get(0),
        )
    }

    fn upsert_callback(&self, r: CallbackRecord) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO callbacks (id, phone, phone_raw, flow, target, context, requested_by,
                conversation_id, bot, state, sip_status, reason, consent_id, created_at_ms,
                ringing_at_ms, answered_at_ms, ended_at_ms, node)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                $18)
             ON CONFLICT (id) DO UPDATE SET phone = EXCLUDED.phone,
                phone_raw = EXCLUDED.phone_raw, flow = EXCLUDED.flow, target = EXCLUDED.target,
                context = EXCLUDED.context, requested_by = EXCLUDED.requested_by,
                conversation_id = EXCLUDED.conversation_id, bot = EXCLUDED.bot,
                state = EXCLUDED.state, sip_status = EXCLUDED.sip_status,
                reason = EXCLUDED.reason, consent_id = EXCLUDED.consent_id,
                created_at_ms = EXCLUDED.created_at_ms, ringing_at_ms = EXCLUDED.ringing_at_ms,
                answered_at_ms = EXCLUDED.answered_at_ms, ended_at_ms = EXCLUDED.ended_at_ms,
                node = EXCLUDED.node",
            vec![
                p(r.id),
                p(r.phone),
                p(r.phone_raw),
                p(r.flow),
                p(r.target),
                p(r.context),
                p(r.requested_by),
                p(r.conversation_id),
                p(r.bot),
                p(r.state),
                p(r.sip_status.map(i32::from)),
                p(r.reason),
                p(r.consent_id),
                p(ms(r.created_at)),
                opt_ms(r.ringing_at),
                opt_ms(r.answered_at),
                opt_ms(r.ended_at),
                p(r.node),
            ],
        )
    }

    fn callback(&self, id: &str) -> Result<Option<CallbackRecord>, StoreError> {
        Ok(self
            .query(
                format!("SELECT {CALLBACK_COLUMNS} FROM callbacks WHERE id = $1"),
                vec![text(id)],
                callback_row,
            )?
            .pop())
    }

    fn callbacks(&self, f: &CallbackFilter) -> Result<Vec<CallbackRecord>, StoreError> {
        self.query(
            format!(
                "SELECT {CALLBACK_COLUMNS} FROM callbacks
                 WHERE ($1::TEXT IS NULL OR bot = $1)
                   AND ($2::TEXT IS NULL OR flow = $2 OR target = $2)
                   AND created_at_ms >= $3 AND created_at_ms < $4
                 ORDER BY created_at_ms DESC LIMIT $5"
            ),
            vec![
                p(f.bot.clone()),
                p(f.flow.clone()),
                p(f.from.map_or(i64::MIN, ms)),
                p(f.to.map_or(i64::MAX, ms)),
                limit(f.limit),
            ],
            callback_row,
        )
    }

    fn unfinished_callbacks(&self) -> Result<Vec<CallbackRecord>, StoreError> {
        self.query(
            format!(
                "SELECT {CALLBACK_COLUMNS} FROM callbacks
                 WHERE state IN ('queued', 'ringing', 'answered') ORDER BY created_at_ms"
            ),
            Vec::new(),
            callback_row,
        )
    }

    fn flush(&self) -> Result<(), StoreError> {
        // The worker runs jobs in order: a read answers after every write
        // queued before it.
        self.read(|_| Ok(()))
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim_conversation(
        &self,
        id: &str,
        node: &str,
        lease: Duration,
    ) -> Result<Option<String>, StoreError> {
        let (id, node) = (id.to_string(), node.to_string());
        let now = ms(SystemTime::now());
        let until = now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        self.read(move |client| {
            // One statement: two nodes claiming at once can't both win.
            let won = client.execute(
                "UPDATE conversations SET owner = $2, lease_until_ms = $3
                 WHERE id = $1 AND (owner IS NULL OR owner = $2 OR lease_until_ms < $4)",
                &[&id, &node, &until, &now],
            )?;
            if won == 1 {
                return Ok(None);
            }
            // Held by someone else (or not stored yet: then nobody's).
            let owner = client
                .query_opt("SELECT owner FROM conversations WHERE id = $1", &[&id])?
                .map(|r| r.try_get::<_, Option<String>>(0))
                .transpose()?
                .flatten();
            Ok(owner.filter(|o| *o != node))
        })
    }

    fn renew_leases(
        &self,
        node: &str,
        ids: Vec<String>,
        lease: Duration,
    ) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let until = ms(SystemTime::now())
            .saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        self.exec(
            "UPDATE conversations SET lease_until_ms = $2
             WHERE owner = $1 AND id = ANY($3) AND closed_at_ms IS NULL",
            vec![text(node), p(until), p(ids)],
        )
    }

    fn post_input(&self, conversation_id: &str, owner: &str, body: &str) -> Result<(), StoreError> {
        let (id, owner, body) = (
            conversation_id.to_string(),
            owner.to_string(),
            body.to_string(),
        );
        let now = ms(SystemTime::now());
        // Waits for the insert: the webhook is only acknowledged once the
        // text is safely handed over.
        self.read(move |client| {
            client.execute(
                "INSERT INTO chat_inbox (conversation_id, owner, text, created_at_ms)
                 VALUES ($1, $2, $3, $4)",
                &[&id, &owner, &body, &now],
            )?;
            Ok(())
        })
    }

    fn take_inputs(&self, node: &str) -> Result<Vec<(String, String)>, StoreError> {
        let node = node.to_string();
        self.read(move |client| {
            let mut rows = client
                .query(
                    "DELETE FROM chat_inbox WHERE owner = $1
                     RETURNING id, conversation_id, text",
                    &[&node],
                )?
                .iter()
                .map(|r| Ok((r.try_get::<_, i64>(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<(i64, String, String)>, postgres::Error>>()?;
            rows.sort_by_key(|r| r.0);
            Ok(rows.into_iter().map(|(_, id, text)| (id, text)).collect())
        })
    }
}
