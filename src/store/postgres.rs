//! PostgreSQL backend, for several gateways sharing one database (behind
//! a SIP dispatcher). `tokio-postgres` on a `deadpool-postgres` pool: reads
//! run on pooled connections as tasks, and one writer task applies the
//! queued writes in order, batched into transactions (the same contract
//! as SQLite's writer thread). A connection that breaks is replaced on
//! its next use. Connections are plain TCP or a Unix socket, as before:
//! no TLS (`sslmode=require` fails).
//!
//! Migrations run under an advisory lock, so nodes starting together
//! don't race; each moves the schema one version forward.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::NoTls;

use super::sql::{self, Backend, Job, Row, SqlStore, Stmt, Value, WriteRx};
use super::{StoreError, StoreFuture};
use crate::telemetry::names;

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
    // 4: breakouts across nodes: the gateway holding the call, the one
    // running the chat, what the chat says when the call moves on; and how
    // a statement tells a node (its channel: `store::node_channel`).
    "ALTER TABLE breakouts ADD COLUMN node TEXT;
    ALTER TABLE breakouts ADD COLUMN chat_node TEXT;
    ALTER TABLE breakouts ADD COLUMN notices TEXT;
    CREATE FUNCTION crossline_notify(node TEXT, payload TEXT) RETURNS VOID
        LANGUAGE SQL VOLATILE AS $$
        SELECT pg_notify('crossline_' || left(encode(sha256(convert_to(node, 'UTF8')), 'hex'), 32),
            payload)
        WHERE node IS NOT NULL
    $$;",
    // 5: SMS segments a send took.
    "ALTER TABLE provider_sends ADD COLUMN segments BIGINT;",
    // 6: devices registered to our registrar, by the node that took the
    // REGISTER: every node reads them (a user registered elsewhere).
    "CREATE TABLE registrations (
        user_name TEXT NOT NULL,
        contact TEXT NOT NULL,
        q_milli BIGINT NOT NULL,
        instance TEXT,
        reg_id BIGINT,
        call_id TEXT NOT NULL,
        cseq BIGINT NOT NULL,
        expires_at_ms BIGINT NOT NULL,
        transport TEXT NOT NULL,
        local_addr TEXT NOT NULL,
        source TEXT NOT NULL,
        path TEXT,
        user_agent TEXT,
        node TEXT NOT NULL,
        PRIMARY KEY (user_name, contact, node)
    );
    CREATE INDEX registrations_expiry ON registrations(expires_at_ms);",
    // 7: call recordings (the file is `path` under [recording] recordings_dir).
    "CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        call_id TEXT NOT NULL,
        started_at_ms BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        size_bytes BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        channels TEXT NOT NULL,
        format TEXT NOT NULL,
        complete BOOLEAN NOT NULL,
        storage TEXT NOT NULL,
        path TEXT NOT NULL
    );
    CREATE INDEX recordings_call_id ON recordings(call_id);
    CREATE INDEX recordings_started ON recordings(started_at_ms);",
    // 8: registrar users made over the API (digest HA1s, never the
    // password), and the SIP address of the node holding each binding
    // (another node hands calls for the user there).
    "CREATE TABLE sip_users (
        name TEXT PRIMARY KEY,
        realm TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        display_name TEXT,
        tags TEXT NOT NULL,
        enabled BOOLEAN NOT NULL,
        created_at_ms BIGINT NOT NULL,
        updated_at_ms BIGINT NOT NULL
    );
    ALTER TABLE registrations ADD COLUMN node_addr TEXT;",
    // 9: virtual-hold callers, who keep their queue place across a restart.
    "CREATE TABLE queue_callbacks (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        phone TEXT NOT NULL,
        skills TEXT NOT NULL,
        order_ms BIGINT NOT NULL,
        joined_at_ms BIGINT NOT NULL,
        failures BIGINT NOT NULL,
        node TEXT NOT NULL
    );
    CREATE INDEX queue_callbacks_node ON queue_callbacks(node, order_ms);",
];

impl SqlStore<Postgres> {
    /// The schema version this build migrates to.
    pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

    /// Connect, migrate, and start the writer task (on the current tokio
    /// runtime). `url` is a libpq-style connection string
    /// (`postgres://user:pw@host/db` or `host=… user=…`). Errors name the
    /// server's complaint, never the connection string.
    pub async fn open(url: &str) -> Result<SqlStore<Postgres>, StoreError> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| StoreError::Unavailable(e.to_string()))?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        {
            let mut client = pool.get().await.map_err(pool_error)?;
            migrate(&mut client).await.map_err(pg)?;
        }
        let (queue, writes) = sql::write_queue();
        tokio::spawn(write_loop(pool.clone(), writes));
        Ok(SqlStore::new(
            Postgres {
                pool,
                config,
                events: std::sync::OnceLock::new(),
            },
            queue,
        ))
    }
}

/// Connections per node: one for the writer most of the time, the rest
/// for reads running at once.
const POOL_SIZE: usize = 8;

/// Any number the nodes of one deployment agree on.
const MIGRATION_LOCK: i64 = 0x6372_6f73_736c_696e;

/// The PostgreSQL side of a [`SqlStore`]: its connection pool, and the
/// node's listener once one is asked for.
pub struct Postgres {
    pool: Pool,
    config: tokio_postgres::Config,
    events: std::sync::OnceLock<tokio::sync::broadcast::Sender<super::StoreEvent>>,
}

fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    metrics::counter!(names::STORE_CONNECT_ERRORS).increment(1);
    StoreError::Unavailable(e.to_string())
}

async fn migrate(client: &mut deadpool_postgres::Client) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS crossline_schema (version BIGINT NOT NULL)")
        .await?;
    let version: i64 = match tx
        .query_opt("SELECT version FROM crossline_schema", &[])
        .await?
    {
        Some(row) => row.try_get(0)?,
        None => {
            tx.execute("INSERT INTO crossline_schema (version) VALUES (0)", &[])
                .await?;
            0
        }
    };
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "UPDATE crossline_schema SET version = $1",
            &[&((i + 1) as i64)],
        )
        .await?;
    }
    tx.commit().await
}

/// A parameter for whatever type PostgreSQL gave it: integers narrow to
/// `INTEGER`/`SMALLINT` columns (and fail, not wrap, when they don't fit).
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT8 => v.to_sql(ty, out),
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => Err(format!("an integer for a {ty} parameter").into()),
            },
            Value::Bool(b) => match *ty {
                Type::BOOL => b.to_sql(ty, out),
                Type::INT8 | Type::INT4 | Type::INT2 => Value::Int(i64::from(*b)).to_sql(ty, out),
                _ => Err(format!("a boolean for a {ty} parameter").into()),
            },
            Value::Text(s) if <String as ToSql>::accepts(ty) => s.to_sql(ty, out),
            Value::Text(_) => Err(format!("text for a {ty} parameter").into()),
            Value::TextList(v) if <Vec<String> as ToSql>::accepts(ty) => v.to_sql(ty, out),
            Value::TextList(_) => Err(format!("a list for a {ty} parameter").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn params(stmt: &Stmt) -> Vec<&(dyn ToSql + Sync)> {
    stmt.params
        .iter()
        .map(|p| p as &(dyn ToSql + Sync))
        .collect()
}

/// A row's columns as [`Value`]s, by the column's type.
fn values(row: &tokio_postgres::Row) -> Result<Row, StoreError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let v = match *column.type_() {
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map(Value::from),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map(|v| v.map(i64::from).into()),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map(|v| v.map(i64::from).into()),
            Type::BOOL => row.try_get::<_, Option<bool>>(i).map(Value::from),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                row.try_get::<_, Option<String>>(i).map(Value::from)
            }
            ref other => return Err(StoreError::Decode(format!("column {i}: a {other} value"))),
        };
        out.push(v.map_err(pg)?);
    }
    Ok(out)
}

impl Backend for Postgres {
    fn query(&self, stmt: Stmt) -> StoreFuture<'_, Vec<Row>> {
        Box::pin(async move {
            let client = self.pool.get().await.map_err(pool_error)?;
            let prepared = client.prepare_cached(stmt.sql).await.map_err(pg)?;
            let rows = client.query(&prepared, &params(&stmt)).await.map_err(pg)?;
            rows.iter().map(values).collect()
        })
    }

    fn shared(&self) -> bool {
        true
    }

    /// One listener per store (so per node): later calls share it,
    /// whatever channel they name.
    fn listen(
        &self,
        channel: String,
    ) -> Option<tokio::sync::broadcast::Receiver<super::StoreEvent>> {
        tokio::runtime::Handle::try_current().ok()?;
        let events = self
            .events
            .get_or_init(|| super::listen::start(self.config.clone(), channel));
        Some(events.subscribe())
    }
}

async fn write_loop(pool: Pool, mut writes: WriteRx) {
    while let Some(batch) = writes.next().await {
        let mut client = match pool.get().await {
            Ok(c) => c,
            Err(e) => {
                // Nothing to write with: these writes are lost, and said so.
                metrics::counter!(names::STORE_WRITE_ERRORS).increment(batch.len() as u64);
                tracing::error!(error = %pool_error(e), jobs = batch.len(), "store: cannot reach PostgreSQL; writes dropped");
                writes.applied(&batch, true);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let whole = write_all(&mut client, &batch).await;
        if let Err(e) = &whole {
            // One bad write must not take the others in its batch with it.
            tracing::warn!(error = %e, jobs = batch.len(), "store: batch failed; writing one by one");
            for job in &batch {
                if let Err(e) = write_all(&mut client, std::slice::from_ref(job)).await {
                    metrics::counter!(names::STORE_WRITE_ERRORS).increment(1);
                    tracing::error!(error = %e, "store: write failed");
                }
            }
        }
        writes.applied(&batch, whole.is_err());
    }
}

async fn write_all(
    client: &mut deadpool_postgres::Client,
    jobs: &[Job],
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    for job in jobs {
        for stmt in &job.statements {
            let prepared = tx.prepare_cached(stmt.sql).await?;
            tx.execute(&prepared, &params(stmt)).await?;
        }
    }
    tx.commit().await
}
