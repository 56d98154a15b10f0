//! The news other gateways commit for this one (a Return for a call held
//! here, texts handed to a chat run here), heard on one PostgreSQL
//! connection per node that `LISTEN`s on the node's channel
//! ([`super::node_channel`]).
//!
//! NOTIFY is not queued for absent listeners: whatever is sent while the
//! connection is down is lost. So the listener reconnects with backoff and
//! says [`StoreEvent::Resync`] each time it is (back) in, and readers then
//! re-read the rows they wait on. A ping finds a connection that died
//! without a word.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tokio_postgres::{AsyncMessage, NoTls};

use super::StoreEvent;
use crate::telemetry::names;

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LAST_RETRY: Duration = Duration::from_secs(5);
const PING: Duration = Duration::from_secs(10);
/// How the connection shows in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "crossline-listener";

/// Start listening on `channel` (on the current runtime); subscribe to the
/// sender for the events.
pub(super) fn start(
    mut config: tokio_postgres::Config,
    channel: String,
) -> broadcast::Sender<StoreEvent> {
    let (tx, _) = broadcast::channel(1024);
    config
        .application_name(APPLICATION_NAME)
        .connect_timeout(Duration::from_secs(10));
    tokio::spawn(run(config, channel, tx.clone()));
    tx
}

async fn run(config: tokio_postgres::Config, channel: String, tx: broadcast::Sender<StoreEvent>) {
    let mut retry = FIRST_RETRY;
    loop {
        let ended = listen_once(&config, &channel, &tx, &mut retry).await;
        metrics::gauge!(names::STORE_LISTENER_UP).set(0.0);
        if tx.receiver_count() == 0 {
            // Nobody listens any more: the store is gone.
            return;
        }
        metrics::counter!(names::STORE_LISTENER_DROPS).increment(1);
        tracing::warn!(error = %ended, retry_ms = retry.as_millis() as u64, "store: LISTEN connection lost; reconnecting");
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(LAST_RETRY);
    }
}

/// One connection's life: connect, LISTEN, forward notifications until it
/// breaks. Returns why it ended.
async fn listen_once(
    config: &tokio_postgres::Config,
    channel: &str,
    tx: &broadcast::Sender<StoreEvent>,
    retry: &mut Duration,
) -> String {
    let (client, mut connection) = match config.connect(NoTls).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    // Polling the connection drives the client's queries too; it ends
    // (dropping `notes_tx`) when the connection does.
    let driver = tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    if notes_tx.send(n.payload().to_string()).is_err() {
                        return "listener stopped".to_string();
                    }
                }
                Ok(_) => {}
                Err(e) => return e.to_string(),
            }
        }
        "the server closed the connection".to_string()
    });
    let ended = forward(&client, channel, tx, &mut notes, retry).await;
    driver.abort();
    match driver.await {
        Ok(why) => why,
        Err(_) => ended,
    }
}

async fn forward(
    client: &tokio_postgres::Client,
    channel: &str,
    tx: &broadcast::Sender<StoreEvent>,
    notes: &mut mpsc::UnboundedReceiver<String>,
    retry: &mut Duration,
) -> String {
    // The channel names are ours (`crossline_` and hex): nothing to quote.
    let listen = format!("LISTEN {channel}; LISTEN {}", super::CLUSTER_CHANNEL);
    if let Err(e) = client.batch_execute(&listen).await {
        return e.to_string();
    }
    *retry = FIRST_RETRY;
    metrics::gauge!(names::STORE_LISTENER_UP).set(1.0);
    tracing::info!(channel, "store: listening for other nodes");
    let _ = tx.send(StoreEvent::Resync);
    let mut ping = tokio::time::interval(PING);
    ping.tick().await;
    loop {
        tokio::select! {
            note = notes.recv() => match note {
                Some(payload) => match StoreEvent::parse(&payload) {
                    Some(event) => {
                        let kind = match event {
                            StoreEvent::Inbox => "inbox",
                            StoreEvent::Breakout(_) => "breakout",
                            StoreEvent::User(_) => "user",
                            StoreEvent::Registrations(_) => "registrations",
                            StoreEvent::Resync => "resync",
                        };
                        metrics::counter!(names::STORE_NOTIFICATIONS, "kind" => kind).increment(1);
                        let _ = tx.send(event);
                    }
                    None => {
                        metrics::counter!(names::STORE_NOTIFICATIONS, "kind" => "unknown").increment(1);
                    }
                },
                None => return "the connection ended".into(),
            },
            _ = ping.tick() => {
                match tokio::time::timeout(PING, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => return format!("no answer to a ping in {} s", PING.as_secs()),
                }
            }
        }
    }
}
