//! When has a breakout's visitor left? A browser that claimed the link
//! holds the chat's WebSocket while its page is open. The visitor counts as
//! gone once no socket has been open for the grace period (from the claim,
//! or from the last socket closing): a reload or a phone dropping the
//! connection for a moment reconnects well within it. Then the chat closes
//! and the waiting call goes on at once with status "closed", instead of
//! holding the caller until the chat's idle timeout.
//!
//! Only while the call waits and the chat is on the web: a chat moved to
//! SMS or WhatsApp has no socket and is not left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Phase, Session};
use crate::chat::ChannelKind;
use crate::telemetry::names;

/// `[chat] breakout_left_secs` and `breakout_left_message`.
#[derive(Debug, Clone)]
pub struct LeftRule {
    /// Zero: never (the chat's idle timeout still applies).
    pub grace: Duration,
    /// What the chat says as it closes (seen if the visitor comes back).
    pub message: String,
}

impl LeftRule {
    pub const NEVER: LeftRule = LeftRule {
        grace: Duration::ZERO,
        message: String::new(),
    };
}

/// Sockets open now, and since when there has been none.
#[derive(Debug, Default)]
pub(super) struct Presence {
    sockets: u32,
    none_since: Option<Instant>,
}

impl Presence {
    /// A browser claimed the link: its page has yet to connect.
    pub(super) fn claimed(&mut self, now: Instant) {
        if self.sockets == 0 {
            self.none_since = Some(now);
        }
    }

    pub(super) fn connected(&mut self) {
        self.sockets += 1;
        self.none_since = None;
    }

    pub(super) fn disconnected(&mut self, now: Instant) {
        self.sockets = self.sockets.saturating_sub(1);
        if self.sockets == 0 {
            self.none_since = Some(now);
        }
    }

    /// When the visitor will count as gone, unless a socket opens first.
    pub(super) fn deadline(&self, grace: Duration) -> Option<Instant> {
        self.none_since.map(|t| t + grace)
    }

    pub(super) fn left(&self, now: Instant, grace: Duration) -> bool {
        self.deadline(grace).is_some_and(|d| now >= d)
    }
}

/// One open socket of a breakout chat; dropping it is the socket closing.
pub struct VisitorSocket {
    session: Arc<Session>,
    rule: LeftRule,
}

impl VisitorSocket {
    pub(super) fn new(session: Arc<Session>, rule: LeftRule) -> VisitorSocket {
        VisitorSocket { session, rule }
    }
}

impl Drop for VisitorSocket {
    fn drop(&mut self) {
        self.session.lock().presence.disconnected(Instant::now());
        self.session.watch_presence(&self.rule);
    }
}

impl Session {
    /// Look again when the visitor would count as gone.
    pub(super) fn watch_presence(self: &Arc<Self>, rule: &LeftRule) {
        if rule.grace.is_zero() {
            return;
        }
        let Some(deadline) = self.lock().presence.deadline(rule.grace) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let session = Arc::downgrade(self);
        let rule = rule.clone();
        runtime.spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            if let Some(s) = session.upgrade() {
                s.close_if_left(&rule, Instant::now());
            }
        });
    }

    /// Close the chat if its visitor is gone while the call waits: the
    /// close wakes the call (see `watch_close`). True if it did.
    pub(super) fn close_if_left(&self, rule: &LeftRule, now: Instant) -> bool {
        let st = self.lock();
        if st.phase != Phase::Opened || !st.presence.left(now, rule.grace) {
            return false;
        }
        let Some(chat) = st.conversation.clone() else {
            return false;
        };
        drop(st);
        if chat.is_closed() || chat.active().0 != ChannelKind::Web {
            return false;
        }
        tracing::info!(breakout = %self.id, conversation = %chat.id, "breakout visitor left the chat: the call goes on");
        metrics::counter!(names::BREAKOUTS, "event" => "visitor_left").increment(1);
        chat.close(&rule.message);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    #[test]
    fn gone_only_after_a_whole_grace_period_without_a_socket() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut p = Presence::default();
        assert!(!p.left(at(999), GRACE), "not claimed: nothing to wait for");
        p.claimed(t0);
        assert_eq!(p.deadline(GRACE), Some(at(30)));
        assert!(!p.left(at(29), GRACE));
        // The page connects in time, then reloads: a new socket opens
        // before the old one closes.
        p.connected();
        p.connected();
        p.disconnected(at(40));
        assert!(!p.left(at(100), GRACE), "one socket still open");
        assert_eq!(p.deadline(GRACE), None);
        // The tab is closed: the grace counts from then.
        p.disconnected(at(100));
        assert!(!p.left(at(129), GRACE));
        // Back within it (a phone waking up): not gone.
        p.connected();
        assert!(!p.left(at(131), GRACE));
        p.disconnected(at(200));
        assert!(p.left(at(230), GRACE));
        // A late claim (the page itself) doesn't restart the clock.
        p.connected();
        p.claimed(at(300));
        assert!(!p.left(at(999), GRACE));
    }
}
