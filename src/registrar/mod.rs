//! The registrar for agent phones: `[registrar]` and `[[users]]` in the
//! config, what the SIP endpoint is told of them, and how a binding is
//! kept in the store (so a restart, or another node on the same
//! PostgreSQL, knows where each user's phones are).
//!
//! REGISTER itself (digest, binding rules, expiry) is sans-IO in
//! `crossline_sip::endpoint` and `crossline_sip::registrar`; calls to a
//! user are rung by the transfer machinery (`call::transfer`).

pub mod cluster;
pub mod users;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::secret::Secret;
use crate::sip::endpoint::{LocalUser, Peer, RegistrarConfig, Transport};
use crate::sip::message::Uri;
use crate::sip::registrar::{Binding, BindingLimits};

/// `[registrar]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarSettings {
    /// Accept REGISTER from `[[users]]`; off: REGISTER gets 405.
    pub enabled: bool,
    /// Our SIP domain: users are `sip:<name>@<domain>` (or @ our IP
    /// address), and it is the digest realm.
    pub domain: String,
    /// Shorter registrations get 423 Interval Too Brief.
    pub min_expires_secs: u32,
    /// Longer registrations are granted this.
    pub max_expires_secs: u32,
    /// When the phone doesn't say.
    pub default_expires_secs: u32,
    /// Most devices one user may register at once.
    pub max_contacts_per_user: usize,
    /// How long a call to a user rings its devices before giving up (480).
    pub ring_timeout_secs: u64,
    /// Digest algorithms REGISTERs and users' calls are challenged with,
    /// preferred first ("SHA-256", "MD5"); empty: both, SHA-256 first.
    pub digest_algorithms: Vec<String>,
    /// Addresses (CIDRs) of the other nodes sharing the store: a call for
    /// a user registered on one of them is handed to it. Empty: never.
    pub cluster_nodes: Vec<String>,
}

impl Default for RegistrarSettings {
    fn default() -> Self {
        let limits = BindingLimits::default();
        RegistrarSettings {
            enabled: false,
            domain: String::new(),
            min_expires_secs: limits.min_expires,
            max_expires_secs: limits.max_expires,
            default_expires_secs: limits.default_expires,
            max_contacts_per_user: limits.max_contacts,
            ring_timeout_secs: 30,
            digest_algorithms: Vec::new(),
            cluster_nodes: Vec::new(),
        }
    }
}

/// One `[[users]]` entry: an agent who may register phones.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The user part of its address (`sip:<name>@<domain>`) and its
    /// digest username.
    pub name: String,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Or the name of an environment variable holding it.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Shown to operators.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Free labels (skills, for queues).
    #[serde(default)]
    pub tags: Vec<String>,
}

impl UserConfig {
    /// Its password, from the file or the environment.
    pub fn password(&self) -> Result<Secret, String> {
        match (&self.password, &self.password_env) {
            (Some(_), Some(_)) => Err("set password or password_env, not both".into()),
            (Some(p), None) if !p.expose().is_empty() => Ok(p.clone()),
            (None, Some(name)) => std::env::var(name)
                .map(Secret::from)
                .map_err(|_| format!("environment variable {name:?} is not set")),
            _ => Err("a user needs a password (or password_env)".into()),
        }
    }
}

/// Whether `name` can be a user part as we match it: a DID-like token.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b))
}

/// What the endpoint needs: `None` unless the registrar is enabled.
pub fn endpoint_registrar(config: &crate::config::Config) -> Option<RegistrarConfig> {
    let r = &config.registrar;
    if !r.enabled {
        return None;
    }
    Some(RegistrarConfig {
        domain: r.domain.clone(),
        users: config
            .users
            .iter()
            .filter_map(|u| {
                Some(LocalUser {
                    name: u.name.clone(),
                    password: u.password().ok()?,
                })
            })
            .collect(),
        limits: BindingLimits {
            min_expires: r.min_expires_secs,
            max_expires: r.max_expires_secs,
            default_expires: r.default_expires_secs,
            max_contacts: r.max_contacts_per_user,
        },
        digest_algorithms: r
            .digest_algorithms
            .iter()
            .filter_map(|a| crate::sip::auth::Algorithm::parse(a).ok())
            .collect(),
    })
}

/// The user a transfer target names: `user:alice`, or
/// `sip:alice@<domain>` when `domain` is ours.
pub fn user_of_target<'a>(target: &'a str, domain: &str) -> Option<&'a str> {
    if let Some(user) = target.strip_prefix("user:") {
        return Some(user.trim());
    }
    let rest = target.strip_prefix("sip:")?;
    let (user, host) = rest.split_once('@')?;
    let host = host.split([';', '?', ':']).next().unwrap_or("");
    (!domain.is_empty() && host.eq_ignore_ascii_case(domain)).then_some(user)
}

/// This gateway among those sharing the store: its id, and the SIP
/// address other nodes reach it on (none: it can't take handed calls).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    pub id: String,
    pub sip: Option<SocketAddr>,
}

/// A binding as the store keeps it: wall-clock expiry, addresses as text.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationRecord {
    pub user: String,
    pub contact: String,
    pub q: f64,
    pub instance: Option<String>,
    pub reg_id: Option<i64>,
    pub call_id: String,
    pub cseq: i64,
    pub expires_at: SystemTime,
    /// "udp", "tcp" or "tls".
    pub transport: String,
    /// Our listener it came in on.
    pub local: String,
    /// Where it came from: calls go there.
    pub source: String,
    /// RFC 3327 Path entries, top first, joined with ", ".
    pub path: Option<String>,
    pub user_agent: Option<String>,
    /// The gateway that took the REGISTER.
    pub node: String,
    /// That gateway's SIP address ("ip:port", UDP): other nodes hand calls
    /// for the user there.
    pub node_addr: Option<String>,
}

/// A binding for the store; `now`/`wall` pin the clocks together.
pub fn record_of(
    user: &str,
    b: &Binding,
    now: Instant,
    wall: SystemTime,
    node: &NodeAddress,
) -> RegistrationRecord {
    RegistrationRecord {
        user: user.to_string(),
        contact: b.contact.to_string(),
        q: f64::from(b.q),
        instance: b.instance.clone(),
        reg_id: b.reg_id.map(i64::from),
        call_id: b.call_id.clone(),
        cseq: i64::from(b.cseq),
        expires_at: wall + b.expires_at.saturating_duration_since(now),
        transport: b.flow.transport.via_name().to_ascii_lowercase(),
        local: b.flow.local.to_string(),
        source: b.flow.remote.to_string(),
        path: (!b.path.is_empty()).then(|| b.path.join(", ")),
        user_agent: b.user_agent.clone(),
        node: node.id.clone(),
        node_addr: node.sip.map(|a| a.to_string()),
    }
}

/// A stored binding back as one; `None` when lapsed or unreadable.
/// Another node's TCP connection is not ours: the call opens its own.
pub fn binding_of(
    r: &RegistrationRecord,
    now: Instant,
    wall: SystemTime,
    local_fallback: SocketAddr,
) -> Option<Binding> {
    let left = r.expires_at.duration_since(wall).ok()?;
    if left < Duration::from_secs(1) {
        return None;
    }
    let transport = match r.transport.as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        _ => return None,
    };
    Some(Binding {
        contact: Uri::parse(&r.contact).ok()?,
        q: r.q as f32,
        instance: r.instance.clone(),
        reg_id: r.reg_id.and_then(|v| u32::try_from(v).ok()),
        call_id: r.call_id.clone(),
        cseq: u32::try_from(r.cseq).unwrap_or(0),
        expires_at: now + left,
        flow: Peer {
            transport,
            local: r.local.parse().unwrap_or(local_fallback),
            remote: r.source.parse().ok()?,
            conn: None,
        },
        path: r
            .path
            .as_deref()
            .map(|p| p.split(", ").map(str::to_string).collect())
            .unwrap_or_default(),
        user_agent: r.user_agent.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_that_name_a_user() {
        assert_eq!(user_of_target("user:alice", "pbx.example"), Some("alice"));
        assert_eq!(
            user_of_target("sip:alice@PBX.example;transport=tcp", "pbx.example"),
            Some("alice")
        );
        assert_eq!(
            user_of_target("sip:alice@other.example", "pbx.example"),
            None
        );
        assert_eq!(user_of_target("sip:+1555@carrier", ""), None);
    }

    #[test]
    fn a_binding_survives_the_store_round_trip() {
        let now = Instant::now();
        let wall = SystemTime::now();
        let flow = Peer {
            transport: Transport::Tcp,
            local: "127.0.0.1:5060".parse().unwrap(),
            remote: "192.0.2.7:41000".parse().unwrap(),
            conn: Some(7),
        };
        let b = Binding {
            contact: Uri::parse("sip:alice@10.0.0.5:5062;transport=tcp").unwrap(),
            q: 0.5,
            instance: Some("<urn:uuid:1>".into()),
            reg_id: Some(1),
            call_id: "c".into(),
            cseq: 4,
            expires_at: now + Duration::from_secs(300),
            flow,
            path: vec!["<sip:edge;lr>".into()],
            user_agent: Some("phone".into()),
        };
        let node = NodeAddress {
            id: "node-a".into(),
            sip: Some("127.0.0.1:5071".parse().unwrap()),
        };
        let r = record_of("alice", &b, now, wall, &node);
        assert_eq!(r.node_addr.as_deref(), Some("127.0.0.1:5071"));
        let back = binding_of(&r, now, wall, "0.0.0.0:5060".parse().unwrap()).unwrap();
        assert_eq!(back.flow.conn, None);
        assert_eq!(back.flow.remote, flow.remote);
        assert_eq!(back.contact, b.contact);
        assert_eq!(back.path, b.path);
        assert_eq!(back.expires_in(now), 300);
        let lapsed = RegistrationRecord {
            expires_at: wall - Duration::from_secs(1),
            ..r
        };
        assert!(binding_of(&lapsed, now, wall, flow.local).is_none());
    }
}
