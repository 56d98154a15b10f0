//! The location service behind our registrar (RFC 3261 §10.3): each
//! user's bindings, their expiry, and the rules a REGISTER's Contacts are
//! applied by (`*`, Expires and the `expires` param, q-values, RFC 5626
//! `+sip.instance`/`reg-id`, RFC 3327 `Path`).
//!
//! Sans-IO: the caller passes the time, and asks [`Bindings::next_expiry`]
//! when to come back to drop what lapsed. Every binding remembers the
//! flow its REGISTER came in on: calls to the user go there, never to the
//! Contact's host (which a phone behind NAT, or an attacker, can set to
//! anything).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::endpoint::Peer;
use crate::message::{NameAddr, Uri};

/// Expiry limits and the per-user contact cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindingLimits {
    /// Shorter requests get 423 Interval Too Brief with this Min-Expires.
    pub min_expires: u32,
    /// Longer requests are granted this much.
    pub max_expires: u32,
    /// When neither the Contact nor the request says.
    pub default_expires: u32,
    /// Most bindings one user holds; more are refused.
    pub max_contacts: usize,
}

impl Default for BindingLimits {
    fn default() -> Self {
        BindingLimits {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            max_contacts: 5,
        }
    }
}

/// One registered device of a user.
#[derive(Debug, Clone, PartialEq)]
pub struct Binding {
    /// The Contact URI as the device sent it.
    pub contact: Uri,
    /// Its q-value (1.0 unless given).
    pub q: f32,
    /// RFC 5626 `+sip.instance`, unquoted.
    pub instance: Option<String>,
    /// RFC 5626 `reg-id`.
    pub reg_id: Option<u32>,
    /// The REGISTER's Call-ID and CSeq: an older request can't undo a newer.
    pub call_id: String,
    /// See `call_id`.
    pub cseq: u32,
    /// Gone at this instant unless refreshed.
    pub expires_at: Instant,
    /// Where the REGISTER came from: calls to this binding go here.
    pub flow: Peer,
    /// RFC 3327 Path entries, as sent (top first): the Route set toward it.
    pub path: Vec<String>,
    /// The device's User-Agent, for operators.
    pub user_agent: Option<String>,
}

impl Binding {
    /// Seconds left at `now` (at least 1 while it stands).
    pub fn expires_in(&self, now: Instant) -> u64 {
        self.expires_at
            .saturating_duration_since(now)
            .as_secs()
            .max(1)
    }

    /// What identifies the binding across refreshes: the instance and
    /// reg-id (RFC 5626 §6), else the instance, else the Contact URI.
    fn key(&self) -> String {
        match (&self.instance, self.reg_id) {
            (Some(i), Some(r)) => format!("{i}\u{0}{r}"),
            (Some(i), None) => i.clone(),
            _ => uri_key(&self.contact),
        }
    }

    /// A Contact header value for the 200: the URI with its expires, q
    /// and instance.
    pub fn contact_value(&self, now: Instant) -> String {
        let mut v = format!("<{}>;expires={}", self.contact, self.expires_in(now));
        if self.q < 1.0 {
            v.push_str(&format!(";q={:.3}", self.q));
        }
        if let Some(i) = &self.instance {
            v.push_str(&format!(";+sip.instance=\"{i}\""));
        }
        if let Some(r) = self.reg_id {
            v.push_str(&format!(";reg-id={r}"));
        }
        v
    }
}

/// A REGISTER, as far as the binding rules need it.
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    /// `*`: remove every binding (only with Expires: 0).
    pub star: bool,
    /// The Contacts, in order.
    pub contacts: Vec<NameAddr>,
    /// The Expires header.
    pub expires: Option<u32>,
    /// Its Call-ID.
    pub call_id: String,
    /// Its CSeq number.
    pub cseq: u32,
    /// Where it came from.
    pub flow: Peer,
    /// Its Path headers, top first.
    pub path: Vec<String>,
    /// Its User-Agent.
    pub user_agent: Option<String>,
}

/// Why a REGISTER changed nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// 400: `*` with other Contacts or a non-zero Expires, or a bad value.
    #[error("bad request: {0}")]
    Bad(&'static str),
    /// 423 Interval Too Brief; the 423 carries this Min-Expires.
    #[error("interval too brief")]
    TooBrief(u32),
    /// An older request (same Call-ID, CSeq not higher): 500 per §10.3.
    #[error("out of order")]
    OutOfOrder,
    /// More Contacts than the user may hold.
    #[error("too many contacts")]
    TooMany,
}

/// Most Contacts read from one REGISTER.
const MAX_CONTACTS_PER_REQUEST: usize = 16;

/// Every user's bindings.
#[derive(Debug, Default)]
pub struct Bindings {
    users: HashMap<String, Vec<Binding>>,
    limits: BindingLimits,
    /// The earliest expiry, kept up to date on every change: the endpoint
    /// asks for it on each `poll_timeout`.
    next: Option<Instant>,
}

impl Bindings {
    /// An empty table with these limits.
    pub fn new(limits: BindingLimits) -> Bindings {
        Bindings {
            users: HashMap::new(),
            limits,
            next: None,
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> BindingLimits {
        self.limits
    }

    /// `user`'s live bindings at `now`, best q first.
    pub fn of(&self, user: &str, now: Instant) -> Vec<Binding> {
        let mut list: Vec<Binding> = self
            .users
            .get(user)
            .map(|l| l.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default();
        list.sort_by(|a, b| b.q.total_cmp(&a.q));
        list
    }

    /// Every user with bindings, and them.
    pub fn all(&self) -> impl Iterator<Item = (&str, &[Binding])> {
        self.users.iter().map(|(u, l)| (u.as_str(), l.as_slice()))
    }

    /// Bindings in the table.
    pub fn count(&self) -> usize {
        self.users.values().map(Vec::len).sum()
    }

    /// Apply a REGISTER for `user`; Ok: the user's bindings now.
    pub fn register(
        &mut self,
        now: Instant,
        user: &str,
        req: &RegisterRequest,
    ) -> Result<Vec<Binding>, RegisterError> {
        self.expire_user(user, now);
        if req.star {
            if !req.contacts.is_empty() || req.expires != Some(0) {
                return Err(RegisterError::Bad(
                    "`*` needs Expires: 0 and no other Contact",
                ));
            }
            let current = self.users.get(user).map(Vec::as_slice).unwrap_or_default();
            // §10.3 step 6: an older request with the same Call-ID changes nothing.
            if current
                .iter()
                .any(|b| b.call_id == req.call_id && b.cseq >= req.cseq)
            {
                return Err(RegisterError::OutOfOrder);
            }
            self.users.remove(user);
            self.recompute_next();
            return Ok(Vec::new());
        }
        if req.contacts.len() > MAX_CONTACTS_PER_REQUEST {
            return Err(RegisterError::TooMany);
        }
        let limits = self.limits;
        let mut changes = Vec::with_capacity(req.contacts.len());
        for contact in &req.contacts {
            if !contact.uri.is_sip() {
                return Err(RegisterError::Bad("a Contact that is not a SIP URI"));
            }
            let asked = match contact.param("expires") {
                Some(Some(v)) => v
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| RegisterError::Bad("an unreadable expires param"))?,
                Some(None) => return Err(RegisterError::Bad("an empty expires param")),
                None => req.expires.unwrap_or(limits.default_expires),
            };
            if asked != 0 && asked < limits.min_expires {
                return Err(RegisterError::TooBrief(limits.min_expires));
            }
            let granted = asked.min(limits.max_expires);
            let q = match contact.param("q") {
                Some(Some(v)) => v
                    .trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .ok_or(RegisterError::Bad("a q-value outside 0 to 1"))?,
                _ => 1.0,
            };
            let instance = contact
                .param("+sip.instance")
                .flatten()
                .map(|v| v.trim().trim_matches('"').to_string())
                .filter(|v| !v.is_empty() && v.len() <= 256);
            let reg_id = match contact.param("reg-id").flatten() {
                Some(v) => Some(
                    v.trim()
                        .parse::<u32>()
                        .map_err(|_| RegisterError::Bad("an unreadable reg-id"))?,
                ),
                None => None,
            };
            changes.push((
                granted,
                Binding {
                    contact: contact.uri.clone(),
                    q,
                    instance,
                    reg_id: reg_id.filter(|_| contact.param("+sip.instance").is_some()),
                    call_id: req.call_id.clone(),
                    cseq: req.cseq,
                    expires_at: now + Duration::from_secs(u64::from(granted)),
                    flow: req.flow,
                    path: req.path.clone(),
                    user_agent: req.user_agent.clone(),
                },
            ));
        }
        let mut list = self.users.get(user).cloned().unwrap_or_default();
        for (granted, binding) in changes {
            let key = binding.key();
            let existing = list.iter().position(|b| b.key() == key);
            if let Some(i) = existing {
                let old = list.get(i).ok_or(RegisterError::OutOfOrder)?;
                if old.call_id == binding.call_id && old.cseq >= binding.cseq {
                    return Err(RegisterError::OutOfOrder);
                }
                list.remove(i);
            }
            if granted > 0 {
                list.push(binding);
            }
        }
        if list.len() > limits.max_contacts {
            return Err(RegisterError::TooMany);
        }
        if list.is_empty() {
            self.users.remove(user);
        } else {
            self.users.insert(user.to_string(), list);
        }
        self.recompute_next();
        Ok(self.of(user, now))
    }

    /// Put back a binding saved before (a restart, another node's).
    pub fn restore(&mut self, user: &str, binding: Binding) {
        let list = self.users.entry(user.to_string()).or_default();
        let key = binding.key();
        list.retain(|b| b.key() != key);
        list.push(binding);
        self.recompute_next();
    }

    /// Drop every binding of `user`; whether it had any.
    pub fn remove_user(&mut self, user: &str) -> bool {
        let had = self.users.remove(user).is_some();
        if had {
            self.recompute_next();
        }
        had
    }

    /// When the next binding lapses.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.next
    }

    fn recompute_next(&mut self) {
        self.next = self
            .users
            .values()
            .flat_map(|l| l.iter().map(|b| b.expires_at))
            .min();
    }

    /// Drop what lapsed by `now`; returns the users whose bindings changed.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut changed = Vec::new();
        self.users.retain(|user, list| {
            let before = list.len();
            list.retain(|b| b.expires_at > now);
            if list.len() != before {
                changed.push(user.clone());
            }
            !list.is_empty()
        });
        self.recompute_next();
        changed.sort();
        changed
    }

    fn expire_user(&mut self, user: &str, now: Instant) {
        if let Some(list) = self.users.get_mut(user) {
            list.retain(|b| b.expires_at > now);
        }
    }
}

/// A URI as compared for a binding (§10.3 step 7, simplified): its text,
/// any case.
fn uri_key(uri: &Uri) -> String {
    uri.to_string().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Transport;

    fn flow() -> Peer {
        Peer {
            transport: Transport::Udp,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "192.0.2.10:40000".parse().unwrap(),
            conn: None,
        }
    }

    fn req(contacts: &[&str], expires: Option<u32>, cseq: u32) -> RegisterRequest {
        RegisterRequest {
            star: false,
            contacts: contacts
                .iter()
                .map(|c| NameAddr::parse(c).unwrap())
                .collect(),
            expires,
            call_id: "reg-1".into(),
            cseq,
            flow: flow(),
            path: Vec::new(),
            user_agent: Some("phone".into()),
        }
    }

    #[test]
    fn contacts_are_granted_clamped_and_lapse() {
        let t0 = Instant::now();
        let mut b = Bindings::new(BindingLimits::default());
        let list = b
            .register(
                t0,
                "alice",
                &req(
                    &[
                        "<sip:alice@10.0.0.5:5062>;expires=120;q=0.5",
                        "<sip:alice@10.0.0.6>",
                    ],
                    Some(99999),
                    1,
                ),
            )
            .unwrap();
        assert_eq!(list.len(), 2);
        // Best q first; no expires param: the header, clamped to max.
        assert_eq!(list[0].contact.host, "10.0.0.6");
        assert_eq!(list[0].expires_in(t0), 3600);
        assert_eq!(list[1].expires_in(t0), 120);
        assert_eq!(b.next_expiry(), Some(t0 + Duration::from_secs(120)));
        assert!(b.expire(t0 + Duration::from_secs(119)).is_empty());
        assert_eq!(b.expire(t0 + Duration::from_secs(120)), vec!["alice"]);
        assert_eq!(b.of("alice", t0 + Duration::from_secs(121)).len(), 1);
        // Too brief: 423 with our minimum.
        assert_eq!(
            b.register(t0, "alice", &req(&["<sip:alice@10.0.0.7>"], Some(5), 2)),
            Err(RegisterError::TooBrief(60))
        );
    }

    #[test]
    fn refresh_remove_star_and_order() {
        let t0 = Instant::now();
        let mut b = Bindings::new(BindingLimits::default());
        b.register(t0, "bob", &req(&["<sip:bob@10.0.0.5>"], Some(300), 1))
            .unwrap();
        // Same Call-ID, lower CSeq: refused, nothing changes.
        assert_eq!(
            b.register(t0, "bob", &req(&["<sip:bob@10.0.0.5>"], Some(0), 1)),
            Err(RegisterError::OutOfOrder)
        );
        // A refresh replaces, a second contact adds.
        let t1 = t0 + Duration::from_secs(100);
        let list = b
            .register(
                t1,
                "bob",
                &req(&["<sip:bob@10.0.0.5>", "<sip:bob@10.0.0.8>"], Some(300), 2),
            )
            .unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|x| x.expires_in(t1) == 300));
        // expires=0 removes one.
        let list = b
            .register(t1, "bob", &req(&["<sip:bob@10.0.0.5>;expires=0"], None, 3))
            .unwrap();
        assert_eq!(list.len(), 1);
        // `*` needs Expires: 0.
        let mut star = req(&[], Some(60), 4);
        star.star = true;
        assert!(matches!(
            b.register(t1, "bob", &star),
            Err(RegisterError::Bad(_))
        ));
        star.expires = Some(0);
        assert_eq!(b.register(t1, "bob", &star), Ok(Vec::new()));
        assert_eq!(b.count(), 0);
    }

    #[test]
    fn an_outbound_instance_replaces_its_old_contact_and_the_cap_holds() {
        let t0 = Instant::now();
        let mut b = Bindings::new(BindingLimits {
            max_contacts: 2,
            ..Default::default()
        });
        let inst = "+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\";reg-id=1";
        b.register(
            t0,
            "carol",
            &req(&[&format!("<sip:carol@10.0.0.5:5062>;{inst}")], None, 1),
        )
        .unwrap();
        // The phone moved (new address, new Call-ID): the same instance and
        // reg-id name the same binding.
        let mut moved = req(&[&format!("<sip:carol@10.9.9.9:6000>;{inst}")], None, 1);
        moved.call_id = "reg-2".into();
        let list = b.register(t0, "carol", &moved).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].contact.host, "10.9.9.9");
        assert_eq!(
            list[0].instance.as_deref(),
            Some("<urn:uuid:00000000-0000-0000-0000-000000000001>")
        );
        assert_eq!(list[0].reg_id, Some(1));
        assert!(list[0].contact_value(t0).contains(";reg-id=1"));
        let more = req(&["<sip:carol@10.0.0.1>", "<sip:carol@10.0.0.2>"], None, 5);
        assert_eq!(b.register(t0, "carol", &more), Err(RegisterError::TooMany));
        assert_eq!(b.of("carol", t0).len(), 1);
    }
}
