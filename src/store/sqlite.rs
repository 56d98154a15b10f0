//! SQLite backend: WAL mode, versioned migrations, one writer thread that
//! batches queued writes into transactions, and a few reader threads with
//! connections of their own. Callers never touch a connection: writes
//! queue, reads go to a reader thread and are awaited, so neither the
//! signalling loop nor a tokio worker waits on the disk.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::sql::{self, Backend, Job, Row, SqlStore, Stmt, Value, WriteRx};
use super::{StoreError, StoreFuture};
use crate::telemetry::names;

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
    // 8: a breakout's call and chat gateways, and its notices for the chat
    // (the same columns as PostgreSQL's, where they cross nodes).
    "ALTER TABLE breakouts ADD COLUMN node TEXT;
    ALTER TABLE breakouts ADD COLUMN chat_node TEXT;
    ALTER TABLE breakouts ADD COLUMN notices TEXT;",
    // 9: SMS segments a send took.
    "ALTER TABLE provider_sends ADD COLUMN segments INTEGER;",
    // 10: devices registered to our registrar, by the node that took the
    // REGISTER (a restart or another node reads them back).
    "CREATE TABLE registrations (
        user_name TEXT NOT NULL,
        contact TEXT NOT NULL,
        q_milli INTEGER NOT NULL,
        instance TEXT,
        reg_id INTEGER,
        call_id TEXT NOT NULL,
        cseq INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        transport TEXT NOT NULL,
        local_addr TEXT NOT NULL,
        source TEXT NOT NULL,
        path TEXT,
        user_agent TEXT,
        node TEXT NOT NULL,
        PRIMARY KEY (user_name, contact, node)
    );
    CREATE INDEX registrations_expiry ON registrations(expires_at_ms);",
    // 11: call recordings (the file is `path` under [recording] recordings_dir).
    "CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        call_id TEXT NOT NULL,
        started_at_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        channels TEXT NOT NULL,
        format TEXT NOT NULL,
        complete INTEGER NOT NULL,
        storage TEXT NOT NULL,
        path TEXT NOT NULL
    );
    CREATE INDEX recordings_call_id ON recordings(call_id);
    CREATE INDEX recordings_started ON recordings(started_at_ms);",
    // 12: registrar users made over the API (digest HA1s, never the
    // password), and the SIP address of the node holding each binding
    // (another node hands calls for the user there).
    "CREATE TABLE sip_users (
        name TEXT PRIMARY KEY,
        realm TEXT NOT NULL,
        ha1_md5 TEXT NOT NULL,
        ha1_sha256 TEXT NOT NULL,
        display_name TEXT,
        tags TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    );
    ALTER TABLE registrations ADD COLUMN node_addr TEXT;",
    // 13: virtual-hold callers, who keep their queue place across a restart.
    "CREATE TABLE queue_callbacks (
        id TEXT PRIMARY KEY,
        queue TEXT NOT NULL,
        phone TEXT NOT NULL,
        skills TEXT NOT NULL,
        order_ms INTEGER NOT NULL,
        joined_at_ms INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        node TEXT NOT NULL
    );
    CREATE INDEX queue_callbacks_node ON queue_callbacks(node, order_ms);",
];

/// Reader threads (each with its own connection; WAL lets them read while
/// the writer writes).
const READERS: usize = 2;

type Read = (Stmt, oneshot::Sender<Result<Vec<Row>, StoreError>>);

/// The SQLite side of a [`SqlStore`]: where reads are sent.
pub struct Sqlite {
    reads: mpsc::Sender<Read>,
}

fn open(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    // Every statement of `sql.rs` stays prepared.
    conn.set_prepared_statement_cache_capacity(64);
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

impl SqlStore<Sqlite> {
    /// Open (creating and migrating) the database at `path`, and start its
    /// writer and reader threads. Needs no async runtime; reads do.
    pub fn open(path: &Path) -> Result<SqlStore<Sqlite>, StoreError> {
        let mut writer = open(path)?;
        migrate(&mut writer)?;
        let (queue, writes) = sql::write_queue();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(writer, writes))
            .map_err(|_| StoreError::Closed)?;
        let (tx, rx) = mpsc::channel::<Read>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..READERS {
            let conn = open(path)?;
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("store-reader-{i}"))
                .spawn(move || read_loop(conn, rx))
                .map_err(|_| StoreError::Closed)?;
        }
        Ok(SqlStore::new(Sqlite { reads: tx }, queue))
    }
}

impl Backend for Sqlite {
    fn query(&self, stmt: Stmt) -> StoreFuture<'_, Vec<Row>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.reads
                .send((stmt, tx))
                .map_err(|_| StoreError::Closed)?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn shared(&self) -> bool {
        false
    }

    fn caches_memory(&self) -> bool {
        true
    }

    fn listen(
        &self,
        _channel: String,
    ) -> Option<tokio::sync::broadcast::Receiver<super::StoreEvent>> {
        None
    }
}

/// `$1` → `?1`: the shared statements number their parameters the
/// PostgreSQL way; SQLite's own form keeps the numbers as positions.
fn sqlite_text(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(*v),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Value::TextList(_) => {
                return Err(rusqlite::Error::ToSqlConversionFailure(
                    "a list parameter (PostgreSQL only)".into(),
                ))
            }
        }))
    }
}

fn run(conn: &Connection, stmt: &Stmt) -> Result<Vec<Row>, StoreError> {
    let mut prepared = conn.prepare_cached(&sqlite_text(stmt.sql))?;
    let columns = prepared.column_count();
    let mut rows = prepared.query(rusqlite::params_from_iter(stmt.params.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(columns);
        for i in 0..columns {
            values.push(match row.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Real(_) | ValueRef::Blob(_) => {
                    return Err(StoreError::Decode(format!(
                        "column {i}: a REAL or BLOB value"
                    )))
                }
            });
        }
        out.push(values);
    }
    Ok(out)
}

fn read_loop(conn: Connection, reads: Arc<Mutex<mpsc::Receiver<Read>>>) {
    loop {
        let next = match reads.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((stmt, reply)) = next else {
            return;
        };
        // The reader may have given up (timed out): nobody to tell.
        let _ = reply.send(run(&conn, &stmt));
    }
}

fn write_loop(mut conn: Connection, mut writes: WriteRx) {
    while let Some(batch) = writes.blocking_next() {
        let release = batch.iter().any(|job| job.release_memory);
        let whole = write_all(&mut conn, &batch);
        if let Err(e) = &whole {
            // One bad write must not take the others in its batch with it:
            // write them one transaction each.
            tracing::warn!(%e, jobs = batch.len(), "store: batch failed; writing one by one");
            for job in &batch {
                if let Err(e) = write_all(&mut conn, std::slice::from_ref(job)) {
                    metrics::counter!(names::STORE_WRITE_ERRORS).increment(1);
                    tracing::error!(%e, "store: write failed");
                }
            }
        }
        writes.applied(&batch, whole.is_err());
        // After the batch's transaction, where the pages are no longer in
        // use (`Store::release_memory`).
        if release {
            drop(batch);
            if let Err(e) = conn.release_memory() {
                tracing::warn!(%e, "store: cannot release the page cache");
            }
            release_freed_memory();
        }
    }
}

/// SQLite allocates with the C library's malloc, which keeps freed pages
/// in its arenas: hand them back to the system, and this thread's
/// allocator cache with them.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
    crate::allocator::release_thread_cache();
}

fn write_all(conn: &mut Connection, jobs: &[Job]) -> Result<(), rusqlite::Error> {
    let tx = conn.transaction()?;
    for job in jobs {
        for stmt in &job.statements {
            tx.prepare_cached(&sqlite_text(stmt.sql))?
                .execute(rusqlite::params_from_iter(stmt.params.iter()))?;
        }
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::*;
    use std::time::{SystemTime, UNIX_EPOCH};

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

    #[tokio::test]
    async fn a_failing_write_does_not_take_its_batch_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("b.db")).unwrap();
        // Queued back to back, so the writer likely takes them as one batch.
        store.upsert_lead(lead("before")).unwrap();
        store
            .push(vec![Stmt {
                sql: "INSERT INTO no_such_table (x) VALUES ($1)",
                params: vec![Value::Int(1)],
            }])
            .unwrap();
        store.upsert_lead(lead("after")).unwrap();
        store.flush().await.unwrap();
        assert!(store.lead("before").await.unwrap().is_some());
        assert!(store.lead("after").await.unwrap().is_some());
        assert_eq!(
            store
                .lead_for_conversation("conv-after")
                .await
                .unwrap()
                .unwrap()
                .id,
            "after"
        );
    }

    /// A release of the page cache queued between writes runs after their
    /// transaction, not in it: the writes beside it stand.
    #[tokio::test]
    async fn releasing_the_page_cache_between_writes_loses_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("m.db")).unwrap();
        for i in 0..200 {
            store.upsert_lead(lead(&format!("lead-{i}"))).unwrap();
        }
        store.release_memory();
        store.upsert_lead(lead("after")).unwrap();
        store.flush().await.unwrap();
        let stats = store.write_stats();
        assert_eq!(stats.applied, stats.queued);
        assert_eq!(stats.queued, 202);
        for id in ["lead-0", "lead-199", "after"] {
            assert!(store.lead(id).await.unwrap().is_some(), "{id}");
        }
        // And the connection works on after giving its cache back.
        store.release_memory();
        store.upsert_lead(lead("later")).unwrap();
        store.flush().await.unwrap();
        assert!(store.lead("later").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn registrations_are_replaced_per_user_and_node_and_lapse() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("r.db")).unwrap();
        let reg = |contact: &str, node: &str, secs: i64| crate::registrar::RegistrationRecord {
            user: "alice".into(),
            contact: contact.into(),
            q: 0.5,
            instance: None,
            reg_id: None,
            call_id: "c".into(),
            cseq: 2,
            expires_at: if secs >= 0 {
                SystemTime::now() + Duration::from_secs(secs as u64)
            } else {
                SystemTime::now() - Duration::from_secs(secs.unsigned_abs())
            },
            transport: "udp".into(),
            local: "127.0.0.1:5060".into(),
            source: "127.0.0.1:40000".into(),
            path: None,
            user_agent: Some("phone".into()),
            node: node.into(),
            node_addr: Some("127.0.0.1:5060".into()),
        };
        store
            .replace_registrations("a", "alice", vec![reg("sip:alice@h1", "a", 60)])
            .unwrap();
        store
            .replace_registrations("b", "alice", vec![reg("sip:alice@h2", "b", 60)])
            .unwrap();
        // Node a's new list replaces its old one, not node b's.
        store
            .replace_registrations(
                "a",
                "alice",
                vec![reg("sip:alice@h3", "a", 60), reg("sip:alice@old", "a", -5)],
            )
            .unwrap();
        store.flush().await.unwrap();
        let rows = store.registrations().await.unwrap();
        let contacts: Vec<&str> = rows.iter().map(|r| r.contact.as_str()).collect();
        assert_eq!(contacts, vec!["sip:alice@h3", "sip:alice@h2"]);
        assert_eq!(rows[0].q, 0.5);
        assert_eq!(rows[0].user_agent.as_deref(), Some("phone"));
    }

    #[tokio::test]
    async fn sip_users_keep_ha1s_and_deleting_one_drops_its_registrations() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("u.db")).unwrap();
        let mut alice = crate::registrar::users::UserRecord::new(
            "alice",
            "pbx.example",
            "first-password",
            SystemTime::now(),
        );
        alice.tags = vec!["sales".into(), "es".into()];
        store.put_sip_user(alice.clone()).unwrap();
        let reg = crate::registrar::RegistrationRecord {
            user: "alice".into(),
            contact: "sip:alice@h1".into(),
            q: 1.0,
            instance: None,
            reg_id: None,
            call_id: "c".into(),
            cseq: 1,
            expires_at: SystemTime::now() + Duration::from_secs(60),
            transport: "udp".into(),
            local: "127.0.0.1:5060".into(),
            source: "127.0.0.1:40000".into(),
            path: None,
            user_agent: None,
            node: "a".into(),
            node_addr: Some("127.0.0.1:5060".into()),
        };
        store
            .replace_registrations("a", "alice", vec![reg])
            .unwrap();
        let back = store.sip_user("alice").await.unwrap().unwrap();
        assert_eq!(back.ha1_sha256, alice.ha1_sha256);
        assert_eq!(back.tags, alice.tags);
        assert!(back.enabled);
        assert_eq!(store.registrations_of("alice").await.unwrap().len(), 1);
        alice.set_password("pbx.example", "second-password");
        alice.enabled = false;
        store.put_sip_user(alice.clone()).unwrap();
        let changed = store.sip_user("alice").await.unwrap().unwrap();
        assert_eq!(changed.ha1_md5, alice.ha1_md5);
        assert_ne!(changed.ha1_md5, back.ha1_md5);
        assert!(!changed.enabled);
        assert_eq!(store.sip_users().await.unwrap().len(), 1);
        store.delete_sip_user("alice").unwrap();
        assert!(store.sip_user("alice").await.unwrap().is_none());
        assert!(store.registrations_of("alice").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn records_survive_reopen_and_migrations_are_idempotent() {
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
            store.flush().await.unwrap();
            assert_eq!(
                store.call_records("abc@host").await.unwrap(),
                vec![record.clone()]
            );
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.call_records("abc@host").await.unwrap(), vec![record]);
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

    #[tokio::test]
    async fn a_v1_database_migrates_and_keeps_its_calls() {
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
                "provider_sends",
                "queue_callbacks",
                "recordings",
                "registrations",
                "sip_users"
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
        assert_eq!(store.call_records("old@host").await.unwrap().len(), 1);

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
            segments: Some(1),
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
            segments: None,
            ..sent.clone()
        };
        let blocked = SendRecord {
            idempotency_key: "old@host:sms2".into(),
            status: SendStatus::Blocked,
            provider_id: None,
            error_kind: Some("opted_out".into()),
            attempts: None,
            segments: Some(3),
            ..sent.clone()
        };
        store.record_send(sent.clone()).unwrap();
        store.record_send(failed.clone()).unwrap();
        store.record_send(blocked.clone()).unwrap();
        store.flush().await.unwrap();
        assert_eq!(
            store.sends_for_call("old@host").await.unwrap(),
            vec![sent, failed, blocked]
        );
        assert!(store.sends_for_call("other@host").await.unwrap().is_empty());
        drop(store);
        // Reopening at the latest version changes nothing.
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.sends_for_call("old@host").await.unwrap().len(), 3);
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
            segments: None,
            created_at: UNIX_EPOCH,
        };
        let s = format!("{r:?}");
        assert!(!s.contains("5551234567"), "{s}");
    }

    #[tokio::test]
    async fn chat_breakout_lead_and_consent_round_trip() {
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
            node: Some("gw1".into()),
            chat_node: Some("gw1".into()),
            notices: Some("{\"caller_left\":\"\",\"timed_out\":\"\"}".into()),
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
        store.flush().await.unwrap();

        assert_eq!(
            store.conversation("c1").await.unwrap(),
            Some(closed.clone())
        );
        assert_eq!(store.conversation("nope").await.unwrap(), None);
        assert_eq!(store.conversations(10).await.unwrap(), vec![closed]);
        let after1 = store.messages("c1", 1).await.unwrap();
        assert_eq!(
            after1.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(),
            ["m2", "m3"]
        );
        assert_eq!(after1[0].role, "visitor");
        assert_eq!(after1[1].detail.as_deref(), Some("{\"input\":\"email\"}"));
        assert_eq!(store.breakout("b1").await.unwrap(), Some(breakout.clone()));
        assert_eq!(
            store.breakouts(Some("call@host"), 5).await.unwrap(),
            vec![breakout.clone()]
        );
        assert!(store.breakouts(Some("other"), 5).await.unwrap().is_empty());
        assert_eq!(store.leads(5).await.unwrap(), vec![lead]);
        assert_eq!(
            store.consents(Some("+15551234567"), 5).await.unwrap(),
            vec![consent]
        );
        assert!(store
            .consents(Some("+34600000000"), 5)
            .await
            .unwrap()
            .is_empty());
        assert!(!format!("{breakout:?}").contains("5551234567"));
    }

    #[tokio::test]
    async fn open_conversation_by_address_and_unfinished_callbacks() {
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
        store.flush().await.unwrap();
        assert_eq!(
            store
                .open_conversation_for("sms", "+34600111222")
                .await
                .unwrap(),
            Some("live".to_string())
        );
        assert_eq!(
            store
                .open_conversation_for("whatsapp", "+34600111222")
                .await
                .unwrap(),
            None
        );
        let unfinished: Vec<String> = store
            .unfinished_callbacks()
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(unfinished, ["q", "r"]);
    }
}
