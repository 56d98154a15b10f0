//! SQLite store: WAL mode, versioned migrations, and one writer thread that
//! batches inserts into transactions, so the signalling task never waits on
//! the disk.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection};

use super::{CallRecord, SendChannel, SendRecord, SendStatus, Store, StoreError};

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
];

enum Job {
    Call(CallRecord),
    Send(SendRecord),
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
        let mut flushes = Vec::new();
        let result = (|| -> Result<(), rusqlite::Error> {
            let tx = conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO calls (call_id, direction, did, caller, trunk, flow, started_at_ms,
                        answered_at_ms, ended_at_ms, outcome, sip_status)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )?;
                let mut insert_send = tx.prepare_cached(
                    "INSERT INTO provider_sends (idempotency_key, channel, provider, recipient,
                        call_id, flow, node, status, provider_id, error_kind, error_code,
                        attempts, created_at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?;
                for job in batch.drain(..) {
                    match job {
                        Job::Call(r) => {
                            insert.execute(params![
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
                            ])?;
                        }
                        Job::Send(r) => {
                            insert_send.execute(params![
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
                        Job::Flush(done) => flushes.push(done),
                    }
                }
            }
            tx.commit()
        })();
        if let Err(e) = result {
            tracing::error!(%e, "store: write failed");
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
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
        let conn = self.reader.lock().map_err(|_| StoreError::Closed)?;
        let mut stmt = conn.prepare(
            "SELECT call_id, direction, did, caller, trunk, flow, started_at_ms, answered_at_ms,
                    ended_at_ms, outcome, sip_status FROM calls WHERE call_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([call_id], |r| {
            let direction: String = r.get(1)?;
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
            })
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
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
        assert_eq!(tables(&conn), vec!["calls", "provider_sends"]);
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 2);
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
}
