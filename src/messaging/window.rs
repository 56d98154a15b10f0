//! WhatsApp's customer-service window: a free-form message may go to a
//! person only within 24 hours of their last message to us; outside it,
//! only approved templates (Meta refuses with 131047).
//!
//! One answer for flows and the chat switchboard alike: this process's
//! memory first (the store's writes are queued, and a reply often follows
//! the message at once), then the store, which outlives a restart and is
//! shared by every node.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dashmap::DashMap;

use super::{BoxFuture, MessageKind, MessagingProvider, OutboundMessage, SendError, SendReceipt};
use crate::store::Store;
use crate::telemetry::names;

pub const WHATSAPP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Memory entries kept before expired ones are dropped.
const PRUNE_AT: usize = 10_000;

/// The store's channel name for WhatsApp.
const CHANNEL: &str = "whatsapp";

pub struct WhatsAppWindow {
    store: Arc<dyn Store>,
    /// When each number last wrote, as seen by this process.
    recent: DashMap<String, SystemTime>,
}

impl WhatsAppWindow {
    pub fn new(store: Arc<dyn Store>) -> Arc<WhatsAppWindow> {
        Arc::new(WhatsAppWindow {
            store,
            recent: DashMap::new(),
        })
    }

    /// `from` wrote to us on WhatsApp at `at`. The store learns it from
    /// the inbound message's own record (`Store::mark_inbound`).
    pub fn wrote(&self, from: &str, at: SystemTime) {
        if self.recent.len() >= PRUNE_AT {
            self.recent.retain(|_, last| within(*last, at));
        }
        self.recent
            .entry(from.to_string())
            .and_modify(|last| *last = (*last).max(at))
            .or_insert(at);
    }

    /// Whether a free-form message may go to `to` at `now`. A store that
    /// can't answer keeps it closed: Meta would refuse the message anyway.
    pub async fn is_open(&self, to: &str, now: SystemTime) -> bool {
        if self.recent.get(to).is_some_and(|last| within(*last, now)) {
            return true;
        }
        match self.store.last_inbound(CHANNEL, to).await {
            Ok(Some(last)) => within(last, now),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(%e, "store: cannot read the WhatsApp window");
                false
            }
        }
    }

    /// `inner`, with free-form messages outside the window refused here.
    pub fn gate(self: &Arc<Self>, inner: Arc<dyn MessagingProvider>) -> Arc<dyn MessagingProvider> {
        Arc::new(WindowGate {
            inner,
            window: self.clone(),
        })
    }
}

/// Whether a message written at `last` still holds the window open at
/// `now`. A `last` ahead of `now` (another node's clock) counts as just now.
fn within(last: SystemTime, now: SystemTime) -> bool {
    now.duration_since(last)
        .map_or(true, |age| age < WHATSAPP_WINDOW)
}

/// A WhatsApp provider that sends templates any time and anything else
/// only inside the window; outside it answers
/// [`SendError::OutsideWindow`] without a request.
struct WindowGate {
    inner: Arc<dyn MessagingProvider>,
    window: Arc<WhatsAppWindow>,
}

impl MessagingProvider for WindowGate {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn send<'a>(
        &'a self,
        msg: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<SendReceipt, SendError>> {
        Box::pin(async move {
            let free_form = !matches!(msg.kind, MessageKind::WhatsAppTemplate { .. });
            if free_form && !self.window.is_open(&msg.to, SystemTime::now()).await {
                metrics::counter!(names::WHATSAPP_OUTSIDE_WINDOW).increment(1);
                return Err(SendError::OutsideWindow {
                    code: None,
                    message: "no WhatsApp message from this number in the last 24 hours; only a template may be sent".into(),
                });
            }
            self.inner.send(msg).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::whatsapp_template::Component;
    use std::sync::Mutex;

    const HOUR: Duration = Duration::from_secs(3600);

    fn store() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
        (dir, store)
    }

    #[test]
    fn the_window_is_24_hours_from_the_last_message() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_300_000);
        assert!(within(t0, t0));
        assert!(within(t0, t0 + 24 * HOUR - Duration::from_secs(1)));
        assert!(!within(t0, t0 + 24 * HOUR));
        // Another node's clock a little ahead.
        assert!(within(t0 + Duration::from_secs(2), t0));
    }

    #[tokio::test]
    async fn memory_then_store_and_a_later_message_reopens() {
        let (_dir, store) = store();
        let window = WhatsAppWindow::new(store.clone());
        let t0 = SystemTime::now();
        let ana = "+34612345678";
        assert!(!window.is_open(ana, t0).await);
        window.wrote(ana, t0);
        assert!(window.is_open(ana, t0 + 23 * HOUR).await);
        assert!(!window.is_open(ana, t0 + 25 * HOUR).await);
        // An older message arriving late doesn't shorten it.
        window.wrote(ana, t0 - 2 * HOUR);
        assert!(window.is_open(ana, t0 + 23 * HOUR).await);
        window.wrote(ana, t0 + 20 * HOUR);
        assert!(window.is_open(ana, t0 + 43 * HOUR).await);

        // A fresh process (or another node) reads the store.
        store.mark_inbound("wamid.1", CHANNEL, ana).unwrap();
        store.mark_inbound("SM1", "sms", "+34699999999").unwrap();
        store.flush().await.unwrap();
        let fresh = WhatsAppWindow::new(store);
        assert!(fresh.is_open(ana, SystemTime::now()).await);
        assert!(!fresh.is_open(ana, SystemTime::now() + 25 * HOUR).await);
        assert!(
            !fresh.is_open("+34699999999", SystemTime::now()).await,
            "an SMS opens no WhatsApp window"
        );
    }

    /// Counts what reaches the provider.
    #[derive(Default)]
    struct Counting(Mutex<usize>);

    impl MessagingProvider for Counting {
        fn name(&self) -> &'static str {
            "whatsapp"
        }
        fn send<'a>(
            &'a self,
            _msg: &'a OutboundMessage,
        ) -> BoxFuture<'a, Result<SendReceipt, SendError>> {
            *self.0.lock().unwrap() += 1;
            Box::pin(async {
                Ok(SendReceipt {
                    provider_id: "wamid.x".into(),
                    status: "accepted".into(),
                    attempts: 1,
                })
            })
        }
    }

    #[tokio::test]
    async fn the_gate_holds_back_free_text_only() {
        let (_dir, store) = store();
        let window = WhatsAppWindow::new(store);
        let inner = Arc::new(Counting::default());
        let gated = window.gate(inner.clone());
        assert_eq!(gated.name(), "whatsapp");
        let msg = |kind| OutboundMessage {
            to: "+34612345678".into(),
            from: None,
            kind,
            idempotency_key: "k".into(),
        };
        let text = msg(MessageKind::WhatsAppText { body: "hi".into() });
        match gated.send(&text).await {
            Err(e @ SendError::OutsideWindow { code: None, .. }) => {
                assert_eq!(e.kind(), "outside_window")
            }
            other => panic!("expected OutsideWindow, got {other:?}"),
        }
        let plain = msg(MessageKind::Text { body: "hi".into() });
        assert!(gated.send(&plain).await.is_err());
        assert_eq!(*inner.0.lock().unwrap(), 0, "nothing reached the provider");

        let template = msg(MessageKind::WhatsAppTemplate {
            name: "hello".into(),
            language: "es".into(),
            components: vec![Component::body_texts(["Ana".to_string()])],
        });
        gated.send(&template).await.expect("templates go any time");
        window.wrote("+34612345678", SystemTime::now());
        gated.send(&text).await.expect("inside the window");
        assert_eq!(*inner.0.lock().unwrap(), 2);
    }
}
