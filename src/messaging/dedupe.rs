//! In-process idempotency: a key that already succeeded returns its stored
//! receipt without a request. This is what stops double sends where the
//! provider has no idempotency of its own (WhatsApp Cloud API), within one
//! process; across restarts the integrator seeds it from the send log with
//! [`IdempotencyGuard::remember`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use super::{BoxFuture, MessageKind, MessagingProvider, OutboundMessage, SendError, SendReceipt};

/// Default number of remembered successes per provider.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Clone)]
struct Entry {
    /// What was sent under the key; `None` when seeded from outside.
    fingerprint: Option<[u8; 32]>,
    receipt: SendReceipt,
    seq: u64,
}

/// Successful sends by idempotency key, oldest forgotten first once more
/// than `capacity` are held.
pub struct IdempotencyGuard {
    done: DashMap<String, Entry>,
    /// Insertion order for eviction, as (key, seq of that insertion).
    order: Mutex<VecDeque<(String, u64)>>,
    /// One lock per key being sent, so concurrent sends of one key make one
    /// request.
    in_flight: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    capacity: usize,
    next_seq: AtomicU64,
}

impl std::fmt::Debug for IdempotencyGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyGuard")
            .field("len", &self.done.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Default for IdempotencyGuard {
    fn default() -> Self {
        IdempotencyGuard::new(DEFAULT_CAPACITY)
    }
}

impl IdempotencyGuard {
    /// `capacity` is at least 1.
    pub fn new(capacity: usize) -> Self {
        IdempotencyGuard {
            done: DashMap::new(),
            order: Mutex::new(VecDeque::new()),
            in_flight: DashMap::new(),
            capacity: capacity.max(1),
            next_seq: AtomicU64::new(0),
        }
    }

    /// The stored receipt for `key`, if it succeeded and is still held.
    pub fn get(&self, key: &str) -> Option<SendReceipt> {
        self.done.get(key).map(|e| e.receipt.clone())
    }

    /// Records a success known from elsewhere (e.g. the send log at start).
    pub fn remember(&self, key: &str, receipt: SendReceipt) {
        self.insert(key, None, receipt);
    }

    pub fn len(&self) -> usize {
        self.done.len()
    }

    pub fn is_empty(&self) -> bool {
        self.done.is_empty()
    }

    fn insert(&self, key: &str, fingerprint: Option<[u8; 32]>, receipt: SendReceipt) {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.done.insert(
            key.to_owned(),
            Entry {
                fingerprint,
                receipt,
                seq,
            },
        );
        // A poisoned lock only means another insert panicked; the queue is
        // still a valid queue.
        let mut order = self.order.lock().unwrap_or_else(|p| p.into_inner());
        order.push_back((key.to_owned(), seq));
        while self.done.len() > self.capacity {
            let Some((old, old_seq)) = order.pop_front() else {
                break;
            };
            // Skip stale queue entries for keys inserted again since.
            self.done.remove_if(&old, |_, e| e.seq == old_seq);
        }
        // Stale entries could pile up if one key is re-remembered a lot.
        if order.len() > self.capacity.saturating_mul(2) {
            order.retain(|(k, s)| self.done.get(k).is_some_and(|e| e.seq == *s));
        }
    }

    /// The stored answer for `msg`'s key: the receipt, or a refusal when
    /// the key was used for a different message.
    fn lookup(
        &self,
        msg: &OutboundMessage,
        fingerprint: &[u8; 32],
    ) -> Option<Result<SendReceipt, SendError>> {
        let entry = self.done.get(&msg.idempotency_key)?;
        match entry.fingerprint {
            Some(fp) if fp != *fingerprint => Some(Err(SendError::Rejected {
                // What the IETF Idempotency-Key draft answers for reuse.
                status: 422,
                code: None,
                message: "idempotency key already used for a different message".into(),
            })),
            _ => Some(Ok(entry.receipt.clone())),
        }
    }

    /// Sends through `provider` unless `msg`'s key already succeeded.
    pub async fn send(
        &self,
        provider: &dyn MessagingProvider,
        msg: &OutboundMessage,
    ) -> Result<SendReceipt, SendError> {
        let fingerprint = fingerprint(msg);
        if let Some(answer) = self.lookup(msg, &fingerprint) {
            return answer;
        }
        let lock = self
            .in_flight
            .entry(msg.idempotency_key.clone())
            .or_default()
            .clone();
        let result = {
            let _held = lock.lock().await;
            // Whoever held the lock before us may have succeeded.
            match self.lookup(msg, &fingerprint) {
                Some(answer) => answer,
                None => {
                    let result = provider.send(msg).await;
                    // Failures are not stored: the next call tries again.
                    if let Ok(receipt) = &result {
                        self.insert(&msg.idempotency_key, Some(fingerprint), receipt.clone());
                    }
                    result
                }
            }
        };
        // Last one out removes the lock (the map's copy and ours remain).
        self.in_flight
            .remove_if(&msg.idempotency_key, |_, l| Arc::strong_count(l) <= 2);
        result
    }
}

/// Digest of everything that makes the message what it is.
fn fingerprint(msg: &OutboundMessage) -> [u8; 32] {
    let mut h = Sha256::new();
    // Length-prefixed so field boundaries cannot be shifted.
    let mut field = |s: &str| {
        h.update((s.len() as u64).to_be_bytes());
        h.update(s.as_bytes());
    };
    field(&msg.to);
    field(msg.from.as_deref().unwrap_or("\0none"));
    match &msg.kind {
        MessageKind::Text { body } => {
            field("text");
            field(body);
        }
        MessageKind::WhatsAppText { body } => {
            field("whatsapp_text");
            field(body);
        }
        MessageKind::WhatsAppTemplate {
            name,
            language,
            components,
        } => {
            field("whatsapp_template");
            field(name);
            field(language);
            // The JSON as sent: every value, quoted and delimited.
            for c in components {
                field(&c.to_json().to_string());
            }
        }
    }
    let mut out = [0u8; 32];
    for (dst, src) in out.iter_mut().zip(h.finalize().iter()) {
        *dst = *src;
    }
    out
}

/// A provider behind an [`IdempotencyGuard`].
pub struct Deduped<P> {
    inner: P,
    guard: Arc<IdempotencyGuard>,
}

impl<P> Deduped<P> {
    pub fn new(inner: P) -> Self {
        Deduped::with_guard(inner, Arc::new(IdempotencyGuard::default()))
    }

    /// With a guard the caller keeps (to seed it, or to inspect it).
    pub fn with_guard(inner: P, guard: Arc<IdempotencyGuard>) -> Self {
        Deduped { inner, guard }
    }

    pub fn guard(&self) -> &Arc<IdempotencyGuard> {
        &self.guard
    }

    pub fn inner(&self) -> &P {
        &self.inner
    }
}

impl<P: MessagingProvider> MessagingProvider for Deduped<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn send<'a>(
        &'a self,
        msg: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<SendReceipt, SendError>> {
        // Every configured provider is wrapped here: one span per send,
        // under whatever node, chat or call asked for it.
        let provider = self.inner.name();
        let channel = if provider == "whatsapp" {
            "whatsapp"
        } else {
            "sms"
        };
        let span = tracing::info_span!(
            "provider_send",
            channel = %channel,
            provider = %provider,
            outcome = tracing::field::Empty
        );
        Box::pin(async move {
            let result = self
                .guard
                .send(&self.inner, msg)
                .instrument(span.clone())
                .await;
            span.record(
                "outcome",
                result.as_ref().map_or_else(|e| e.kind(), |_| "sent"),
            );
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::test_util::text_message;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    /// Counts calls; fails bodies "fail"; waits a bit so calls overlap.
    #[derive(Default)]
    struct Counting {
        calls: AtomicU32,
    }

    impl MessagingProvider for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }

        fn send<'a>(
            &'a self,
            msg: &'a OutboundMessage,
        ) -> BoxFuture<'a, Result<SendReceipt, SendError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                if matches!(&msg.kind, MessageKind::Text { body } if body == "fail") {
                    return Err(SendError::Unavailable {
                        message: "down".into(),
                    });
                }
                Ok(SendReceipt {
                    provider_id: format!("id-{n}"),
                    status: "queued".into(),
                    attempts: 1,
                })
            })
        }
    }

    const TO: &str = "+15551234567";

    #[tokio::test]
    async fn repeated_key_is_answered_from_memory() {
        let p = Deduped::new(Counting::default());
        let first = p.send(&text_message(TO, "hi", "k")).await.expect("send");
        let second = p.send(&text_message(TO, "hi", "k")).await.expect("send");
        assert_eq!(first, second);
        assert_eq!(p.inner().calls.load(Ordering::SeqCst), 1);
        let other = p.send(&text_message(TO, "hi", "k2")).await.expect("send");
        assert_eq!(other.provider_id, "id-2");
        assert_eq!(p.name(), "counting");
    }

    #[tokio::test]
    async fn failures_are_not_stored() {
        let p = Deduped::new(Counting::default());
        assert!(p.send(&text_message(TO, "fail", "k")).await.is_err());
        assert!(p.send(&text_message(TO, "fail", "k")).await.is_err());
        assert_eq!(p.inner().calls.load(Ordering::SeqCst), 2);
        assert!(p.guard().is_empty());
    }

    #[tokio::test]
    async fn key_reuse_for_another_message_is_refused() {
        let p = Deduped::new(Counting::default());
        p.send(&text_message(TO, "hi", "k")).await.expect("send");
        let e = p.send(&text_message(TO, "different", "k")).await;
        assert!(
            matches!(e, Err(SendError::Rejected { status: 422, .. })),
            "{e:?}"
        );
        assert_eq!(p.inner().calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_sends_of_one_key_make_one_call() {
        let p = Arc::new(Deduped::new(Counting::default()));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let p = p.clone();
                tokio::spawn(async move { p.send(&text_message(TO, "hi", "same")).await })
            })
            .collect();
        for t in tasks {
            let r = t.await.expect("join").expect("send");
            assert_eq!(r.provider_id, "id-1");
        }
        assert_eq!(p.inner().calls.load(Ordering::SeqCst), 1);
        assert!(p.guard().in_flight.is_empty());
    }

    #[tokio::test]
    async fn seeded_receipts_and_eviction() {
        let guard = Arc::new(IdempotencyGuard::new(2));
        let receipt = |id: &str| SendReceipt {
            provider_id: id.into(),
            status: "sent".into(),
            attempts: 1,
        };
        guard.remember("old", receipt("SM-old"));
        let p = Deduped::with_guard(Counting::default(), guard.clone());
        // Seeded keys have no fingerprint: any message with the key matches.
        let r = p
            .send(&text_message(TO, "anything", "old"))
            .await
            .expect("send");
        assert_eq!(r.provider_id, "SM-old");
        assert_eq!(p.inner().calls.load(Ordering::SeqCst), 0);

        p.send(&text_message(TO, "a", "k1")).await.expect("send");
        p.send(&text_message(TO, "b", "k2")).await.expect("send");
        assert_eq!(guard.len(), 2);
        assert!(guard.get("old").is_none(), "oldest evicted");
        assert!(guard.get("k1").is_some() && guard.get("k2").is_some());
        // Re-remembering a key does not let its stale queue entry evict it.
        guard.remember("k1", receipt("again"));
        guard.remember("k3", receipt("three"));
        assert_eq!(guard.len(), 2);
        assert_eq!(guard.get("k1").map(|r| r.provider_id), Some("again".into()));
        assert!(guard.get("k2").is_none());
    }

    #[test]
    fn fingerprint_separates_fields() {
        let a = text_message(TO, "ab", "k");
        let mut b = text_message(TO, "ab", "k");
        assert_eq!(fingerprint(&a), fingerprint(&b));
        b.kind = MessageKind::WhatsAppText { body: "ab".into() };
        assert_ne!(fingerprint(&a), fingerprint(&b));
        let t = |params: &[&str]| OutboundMessage {
            kind: MessageKind::WhatsAppTemplate {
                name: "n".into(),
                language: "en".into(),
                components: vec![crate::messaging::whatsapp_template::Component::body_texts(
                    params.iter().map(|s| s.to_string()),
                )],
            },
            ..text_message(TO, "", "k")
        };
        assert_ne!(fingerprint(&t(&["a", "b"])), fingerprint(&t(&["ab"])));
    }
}
