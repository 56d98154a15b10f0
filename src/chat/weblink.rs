//! Links back to the web chat for a conversation on a phone: single use,
//! short-lived, kept in memory only as hashes (a link is a capability). A
//! GET of the link (a preview) only peeks; the browser's POST claims it.
//! Sans-IO: the caller passes the time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Links held at once; past this, the one nearest its end goes first.
const MAX_LINKS: usize = 10_000;

pub struct WebLinks {
    ttl: Duration,
    /// Token hash → (conversation id, expiry).
    links: Mutex<HashMap<[u8; 32], (String, Instant)>>,
}

impl WebLinks {
    pub fn new(ttl: Duration) -> WebLinks {
        WebLinks {
            ttl,
            links: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (String, Instant)>> {
        // Every write is one insert or remove: still consistent after a panic.
        self.links.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new link token for `conversation`, good until `now + ttl`.
    pub fn issue(&self, conversation: &str, now: Instant) -> String {
        let token = super::short_token();
        let mut links = self.lock();
        links.retain(|_, (_, expires)| now < *expires);
        if links.len() >= MAX_LINKS {
            let soonest = links
                .iter()
                .min_by_key(|(_, (_, expires))| *expires)
                .map(|(hash, _)| *hash);
            if let Some(hash) = soonest {
                links.remove(&hash);
            }
        }
        links.insert(
            super::secret_hash(&token),
            (conversation.to_string(), now + self.ttl),
        );
        token
    }

    /// Would `claim` take this token now? (Changes nothing.)
    pub fn claimable(&self, token: &str, now: Instant) -> bool {
        self.lock()
            .get(&super::secret_hash(token))
            .is_some_and(|(_, expires)| now < *expires)
    }

    /// Use the link up: its conversation, once, before it expires.
    pub fn claim(&self, token: &str, now: Instant) -> Option<String> {
        let (conversation, expires) = self.lock().remove(&super::secret_hash(token))?;
        (now < expires).then_some(conversation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_claimed_once_before_it_expires_and_peeking_uses_nothing() {
        let links = WebLinks::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let token = links.issue("c1", t0);
        assert_eq!(token.len(), 22);
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric()));
        // Previews peek as often as they like.
        for _ in 0..3 {
            assert!(links.claimable(&token, t0 + Duration::from_secs(1)));
        }
        assert!(!links.claimable("not-a-token", t0));
        assert_eq!(
            links.claim(&token, t0 + Duration::from_secs(2)).as_deref(),
            Some("c1")
        );
        assert_eq!(links.claim(&token, t0 + Duration::from_secs(3)), None);
        assert!(!links.claimable(&token, t0 + Duration::from_secs(3)));

        let late = links.issue("c2", t0);
        assert!(!links.claimable(&late, t0 + Duration::from_secs(60)));
        assert_eq!(links.claim(&late, t0 + Duration::from_secs(61)), None);
        // Two links for one conversation are two links.
        let a = links.issue("c3", t0);
        let b = links.issue("c3", t0);
        assert_ne!(a, b);
        assert!(links.claim(&b, t0).is_some() && links.claim(&a, t0).is_some());
    }

    #[test]
    fn the_table_stays_bounded() {
        let links = WebLinks::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let first = links.issue("first", t0);
        for i in 1..=MAX_LINKS {
            links.issue("c", t0 + Duration::from_millis(i as u64));
        }
        assert!(links.lock().len() <= MAX_LINKS);
        assert!(!links.claimable(&first, t0), "the oldest went first");
    }
}
