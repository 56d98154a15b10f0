//! STOP means stop. [`OptOuts`] is the one list of who texted STOP (and
//! not START since) on which channel, and [`OptOutGate`] wraps every
//! provider we send through (see [`super::Providers::gated`]), so flows,
//! breakout links, chat welcomes, switch codes and operator replies all
//! meet the same check. A blocked send never reaches the provider; it
//! fails with [`SendError::OptOutBlocked`], which the send log records as
//! `blocked` / `opted_out`.
//!
//! Opt-outs are per channel: STOP by SMS doesn't stop WhatsApp. Numbers
//! are compared in one form ([`address_key`]), so a STOP from
//! `+15551234567` blocks a flow that writes `15551234567` or
//! `+1 555-123-4567`. With a shared store the database answers each check,
//! so a STOP or START that reached another node counts here at once.

use std::sync::Arc;

use dashmap::DashSet;

use super::{BoxFuture, MessagingProvider, OutboundMessage, SendError, SendReceipt};
use crate::store::{SendChannel, Store};
use crate::telemetry::names;

/// The form numbers are compared and stored in: `+` and the digits, with
/// spaces, dashes, dots and brackets dropped, and a `whatsapp:`, `sms:` or
/// `tel:` scheme removed. Digits without `+` (a WhatsApp id, `00…`) read
/// as international, as the providers only take E.164 anyway. Anything
/// that isn't a number stays as it is, trimmed.
pub fn address_key(address: &str) -> String {
    let trimmed = address.trim();
    let lower = trimmed.to_ascii_lowercase();
    let bare = ["whatsapp:", "sms:", "tel:"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme).map(|_| &trimmed[scheme.len()..]))
        .unwrap_or(trimmed)
        .trim();
    let (plus, rest) = match bare.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, bare),
    };
    let is_separator = |c: char| matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}');
    if rest.is_empty() || !rest.chars().all(|c| c.is_ascii_digit() || is_separator(c)) {
        return trimmed.to_string();
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.strip_prefix("00") {
        Some(international) if !plus => international.to_string(),
        _ => digits,
    };
    if digits.is_empty() {
        return trimmed.to_string();
    }
    format!("+{digits}")
}

fn key(channel: SendChannel, address: &str) -> String {
    format!("{}:{}", channel.as_str(), address_key(address))
}

/// Who opted out of what.
pub struct OptOuts {
    store: Arc<dyn Store>,
    /// "sms:+34…" of everyone opted out: the answer for a store of this
    /// node's own, and the fallback when a shared store can't answer.
    known: DashSet<String>,
    /// Turns true once the stored opt-outs are loaded (in the background,
    /// at start): checks wait for it.
    loaded: tokio::sync::watch::Receiver<bool>,
}

impl OptOuts {
    /// The list, loading what the store holds in the background (on the
    /// current tokio runtime; without one, nothing is loaded).
    pub fn new(store: Arc<dyn Store>) -> Arc<OptOuts> {
        let (loaded_tx, loaded) = tokio::sync::watch::channel(false);
        let list = Arc::new(OptOuts {
            store,
            known: DashSet::new(),
            loaded,
        });
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let loading = list.clone();
                runtime.spawn(async move {
                    loading.load().await;
                    loaded_tx.send_replace(true);
                });
            }
            Err(_) => {
                tracing::warn!("opt-out list built outside a runtime: stored opt-outs not loaded");
                loaded_tx.send_replace(true);
            }
        }
        list
    }

    async fn load(&self) {
        for channel in [SendChannel::Sms, SendChannel::WhatsApp] {
            match self.store.opted_out(channel.as_str()).await {
                Ok(list) => {
                    for address in list {
                        self.known.insert(key(channel, &address));
                    }
                }
                Err(e) => tracing::error!(%e, "store: cannot read opt-outs"),
            }
        }
    }

    /// Whether `address` sent STOP on `channel` (and not START since).
    pub async fn is_opted_out(&self, channel: SendChannel, address: &str) -> bool {
        let key = key(channel, address);
        if self.store.shared() {
            let stored = self
                .store
                .is_opted_out(channel.as_str(), &address_key(address))
                .await;
            match stored {
                Ok(out) => {
                    if out {
                        self.known.insert(key);
                    } else {
                        self.known.remove(&key);
                    }
                    return out;
                }
                Err(e) => {
                    tracing::warn!(%e, "store: cannot check an opt-out; using this node's list")
                }
            }
        }
        let mut loaded = self.loaded.clone();
        let _ = loaded.wait_for(|l| *l).await;
        self.known.contains(&key)
    }

    /// STOP (`true`) or START (`false`) from `address` on `channel`.
    pub fn set(&self, channel: SendChannel, address: &str, opted_out: bool) {
        let key = key(channel, address);
        if opted_out {
            self.known.insert(key);
        } else {
            self.known.remove(&key);
        }
        if let Err(e) = self
            .store
            .set_opt_out(channel.as_str(), &address_key(address), opted_out)
        {
            tracing::error!(%e, "store: cannot queue an opt-out change");
        }
    }
}

/// A provider behind the opt-out list: what every send goes through.
pub struct OptOutGate {
    inner: Arc<dyn MessagingProvider>,
    channel: SendChannel,
    list: Arc<OptOuts>,
}

impl OptOutGate {
    pub fn new(
        inner: Arc<dyn MessagingProvider>,
        channel: SendChannel,
        list: Arc<OptOuts>,
    ) -> OptOutGate {
        OptOutGate {
            inner,
            channel,
            list,
        }
    }
}

impl MessagingProvider for OptOutGate {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn send<'a>(
        &'a self,
        msg: &'a OutboundMessage,
    ) -> BoxFuture<'a, Result<SendReceipt, SendError>> {
        Box::pin(async move {
            if self.list.is_opted_out(self.channel, &msg.to).await {
                metrics::counter!(
                    names::SENDS_BLOCKED,
                    "channel" => self.channel.as_str(),
                    "reason" => "opted_out"
                )
                .increment(1);
                tracing::info!(
                    channel = self.channel.as_str(),
                    to = %crate::mask::phone(&msg.to),
                    "not sent: the recipient opted out"
                );
                return Err(SendError::OptOutBlocked);
            }
            self.inner.send(msg).await
        })
    }
}

impl super::Providers {
    /// The same providers, each behind `list`: what the gateway sends
    /// through, so no send path can miss the check.
    pub fn gated(mut self, list: &Arc<OptOuts>) -> super::Providers {
        let gate = |provider: Option<Arc<dyn MessagingProvider>>, channel| {
            provider.map(|inner| {
                Arc::new(OptOutGate::new(inner, channel, list.clone()))
                    as Arc<dyn MessagingProvider>
            })
        };
        self.sms = gate(self.sms.take(), SendChannel::Sms);
        self.whatsapp = gate(self.whatsapp.take(), SendChannel::WhatsApp);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::test_util::{text_message, FakeProvider};

    #[test]
    fn numbers_compare_in_one_form() {
        for same in [
            "+15551234567",
            "15551234567",
            " +1 555-123-4567 ",
            "+1 (555) 123.4567",
            "001 555 123 4567",
            "whatsapp:+15551234567",
            "WhatsApp:15551234567",
            "tel:+1-555-123-4567",
        ] {
            assert_eq!(address_key(same), "+15551234567", "{same:?}");
        }
        // A `+00…` is kept as typed (digits after a `+` are never trimmed).
        assert_eq!(address_key("+0015551234567"), "+0015551234567");
        for other in ["", "  ", "+", "operator", "sip:ana@example.com", "12ab34"] {
            assert_eq!(address_key(other), other.trim(), "{other:?}");
        }
    }

    #[tokio::test]
    async fn the_gate_blocks_per_channel_until_start_and_the_store_remembers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let store: Arc<dyn Store> = Arc::new(crate::store::SqliteStore::open(&path).unwrap());
        let list = OptOuts::new(store.clone());
        let provider = Arc::new(FakeProvider::default());
        let sms = OptOutGate::new(provider.clone(), SendChannel::Sms, list.clone());
        let whatsapp = OptOutGate::new(provider.clone(), SendChannel::WhatsApp, list.clone());

        list.set(SendChannel::Sms, "+15551234567", true);
        let text_to = |to: &str| text_message(to, "hi", "k");
        for spelled in ["+15551234567", "15551234567", "+1 555 123 4567"] {
            let e = sms.send(&text_to(spelled)).await.unwrap_err();
            assert!(matches!(e, SendError::OptOutBlocked), "{spelled}: {e:?}");
            assert_eq!(e.kind(), "opted_out");
        }
        assert!(
            provider.sent.lock().unwrap().is_empty(),
            "nothing reached it"
        );
        // Another channel, another number: through.
        whatsapp.send(&text_to("+15551234567")).await.unwrap();
        sms.send(&text_to("+15557654321")).await.unwrap();
        assert_eq!(provider.sent.lock().unwrap().len(), 2);

        // A restart reads the list back from the store.
        store.flush().await.unwrap();
        let again = OptOuts::new(store.clone());
        assert!(again.is_opted_out(SendChannel::Sms, "15551234567").await);
        assert!(
            !again
                .is_opted_out(SendChannel::WhatsApp, "15551234567")
                .await
        );

        // START lets it through again, here and after a restart.
        list.set(SendChannel::Sms, "1 555 123 4567", false);
        sms.send(&text_to("+15551234567")).await.unwrap();
        store.flush().await.unwrap();
        assert!(
            !OptOuts::new(store)
                .is_opted_out(SendChannel::Sms, "+15551234567")
                .await
        );
    }
}
