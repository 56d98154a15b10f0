//! The registrar across nodes sharing one store: which users the store
//! holds and which other nodes hold registrations, kept current from the
//! store's news (`LISTEN/NOTIFY` on the cluster channel; one node alone
//! has only its own API's changes).
//!
//! A call for a user registered on another node is handed to that node
//! (the one holding the phone's NAT flow), which rings its own devices.
//! Only to addresses in `[registrar] cluster_nodes`: whatever the store
//! says, a node never becomes a relay to anywhere else.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::mpsc;

use super::RegistrationRecord;
use crate::net::Cidr;
use crate::sip::endpoint::StoredUser;
use crate::store::{Store, StoreEvent};

/// What the signalling loop is told of users and other nodes.
#[derive(Debug)]
pub enum RegistrarNews {
    /// One user from the store, as it is now (`None`: gone or disabled).
    User {
        name: String,
        user: Option<StoredUser>,
    },
    /// Every user from the store (start, or news was missed).
    AllUsers(Vec<StoredUser>),
    /// `user`'s registrations, every node's.
    Registrations {
        user: String,
        records: Vec<RegistrationRecord>,
    },
    /// Every registration (start, or news was missed).
    AllRegistrations(Vec<RegistrationRecord>),
}

/// The registrar's users for the API, and the reader that tells the
/// signalling loop what changed in the store.
pub struct Directory {
    store: Arc<dyn Store>,
    node: String,
    tx: mpsc::UnboundedSender<RegistrarNews>,
    /// `[registrar] enabled`.
    pub enabled: bool,
    /// Our domain: the realm stored HA1s are made in.
    pub realm: String,
    /// `[[users]]` as the process started with them: they win over the
    /// store's.
    pub config_users: Vec<super::UserConfig>,
}

impl Directory {
    pub fn new(
        config: &crate::config::Config,
        store: Arc<dyn Store>,
        tx: mpsc::UnboundedSender<RegistrarNews>,
    ) -> Arc<Directory> {
        Arc::new(Directory {
            store,
            node: config.store.node_id(config.http.listen),
            tx,
            enabled: config.registrar.enabled,
            realm: config.registrar.domain.clone(),
            config_users: config.users.clone(),
        })
    }

    /// Whether `name` is a `[[users]]` entry.
    pub fn in_config(&self, name: &str) -> bool {
        self.config_users.iter().any(|u| u.name == name)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// User `name` changed (this node's API, or another node's news).
    pub async fn user_changed(&self, name: &str) {
        match self.store.sip_user(name).await {
            Ok(found) => {
                let _ = self.tx.send(RegistrarNews::User {
                    name: name.to_string(),
                    user: found.and_then(|u| u.endpoint_user()),
                });
            }
            Err(e) => tracing::warn!(%e, user = %name, "store: cannot read a registrar user"),
        }
    }

    async fn registrations_changed(&self, user: &str) {
        match self.store.registrations_of(user).await {
            Ok(records) => {
                let _ = self.tx.send(RegistrarNews::Registrations {
                    user: user.to_string(),
                    records,
                });
            }
            Err(e) => tracing::warn!(%e, %user, "store: cannot read a user's registrations"),
        }
    }

    /// Read everything again.
    pub async fn reload(&self) {
        match self.store.sip_users().await {
            Ok(users) => {
                let users = users.iter().filter_map(|u| u.endpoint_user()).collect();
                let _ = self.tx.send(RegistrarNews::AllUsers(users));
            }
            Err(e) => tracing::warn!(%e, "store: cannot read the registrar users"),
        }
        match self.store.registrations().await {
            Ok(records) => {
                let _ = self.tx.send(RegistrarNews::AllRegistrations(records));
            }
            Err(e) => tracing::warn!(%e, "store: cannot read the registrations"),
        }
    }

    /// Follow the store's news for as long as the process runs (shared
    /// stores; a store of one node's own has none).
    pub fn spawn(self: &Arc<Self>) {
        let mut news = self.store.listen(&self.node);
        if !news.is_listening() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                match news.next().await {
                    StoreEvent::User(name) => me.user_changed(&name).await,
                    StoreEvent::Registrations(user) => me.registrations_changed(&user).await,
                    StoreEvent::Resync => me.reload().await,
                    StoreEvent::Inbox | StoreEvent::Breakout(_) => {}
                }
            }
        });
    }
}

/// A node other than this one holding a user's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RemoteDevice {
    node: String,
    addr: Option<SocketAddr>,
    expires_at: Instant,
}

/// Other nodes' live registrations, by user: where a call for the user
/// is handed.
#[derive(Debug, Default)]
pub struct RemoteBindings {
    node: String,
    /// `[registrar] cluster_nodes`: the only addresses handed calls.
    cluster: Vec<Cidr>,
    by_user: HashMap<String, Vec<RemoteDevice>>,
}

/// Why a node can't be handed a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its row names no SIP address (an older build, no UDP listener).
    NoAddress,
    /// Its address is not in `[registrar] cluster_nodes`.
    NotClusterNode,
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoAddress => "no_address",
            Refusal::NotClusterNode => "not_cluster_node",
        }
    }
}

impl RemoteBindings {
    /// Bindings of nodes other than `node` (this one's own are the
    /// endpoint's); calls are handed only to addresses in `cluster`.
    pub fn new(node: String, cluster: Vec<Cidr>) -> RemoteBindings {
        RemoteBindings {
            node,
            cluster,
            by_user: HashMap::new(),
        }
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Store rows as devices; `now` and `wall` pin the clocks together.
    fn devices(
        &self,
        records: Vec<RegistrationRecord>,
        now: Instant,
        wall: SystemTime,
    ) -> HashMap<String, Vec<RemoteDevice>> {
        let mut by_user: HashMap<String, Vec<RemoteDevice>> = HashMap::new();
        for r in records.into_iter().filter(|r| r.node != self.node) {
            let Ok(left) = r.expires_at.duration_since(wall) else {
                continue;
            };
            by_user.entry(r.user).or_default().push(RemoteDevice {
                node: r.node,
                addr: r.node_addr.as_deref().and_then(|a| a.parse().ok()),
                expires_at: now.checked_add(left).unwrap_or(now),
            });
        }
        by_user
    }

    /// `user`'s registrations as the store has them now.
    pub fn replace_user(
        &mut self,
        user: &str,
        records: Vec<RegistrationRecord>,
        now: Instant,
        wall: SystemTime,
    ) {
        let mut fresh = self.devices(records, now, wall);
        match fresh.remove(user) {
            Some(list) => self.by_user.insert(user.to_string(), list),
            None => self.by_user.remove(user),
        };
    }

    pub fn replace_all(
        &mut self,
        records: Vec<RegistrationRecord>,
        now: Instant,
        wall: SystemTime,
    ) {
        self.by_user = self.devices(records, now, wall);
    }

    /// The other nodes holding a live registration of `user` at `now`,
    /// each once: its id, and its address or why it can't be handed the
    /// call.
    pub fn nodes_for(
        &self,
        user: &str,
        now: Instant,
    ) -> Vec<(String, Result<SocketAddr, Refusal>)> {
        let mut out: Vec<(String, Result<SocketAddr, Refusal>)> = Vec::new();
        for d in self
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter(|d| d.expires_at > now)
        {
            if out.iter().any(|(node, _)| *node == d.node) {
                continue;
            }
            let addr = match d.addr {
                None => Err(Refusal::NoAddress),
                Some(a) if self.cluster.iter().any(|c| c.contains(a.ip())) => Ok(a),
                Some(_) => Err(Refusal::NotClusterNode),
            };
            out.push((d.node.clone(), addr));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(user: &str, node: &str, addr: Option<&str>, secs: u64) -> RegistrationRecord {
        RegistrationRecord {
            user: user.into(),
            contact: format!("sip:{user}@10.0.0.1"),
            q: 1.0,
            instance: None,
            reg_id: None,
            call_id: "c".into(),
            cseq: 1,
            expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            transport: "udp".into(),
            local: "10.0.0.9:5060".into(),
            source: "192.0.2.1:4000".into(),
            path: None,
            user_agent: None,
            node: node.into(),
            node_addr: addr.map(str::to_string),
        }
    }

    #[test]
    fn only_other_live_nodes_in_the_cluster_are_handed_calls() {
        let cluster = vec![Cidr::parse("10.0.0.0/24").unwrap()];
        let mut remote = RemoteBindings::new("a".into(), cluster);
        let (now, wall) = (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(20),
        );
        remote.replace_all(
            vec![
                row("alice", "a", Some("10.0.0.1:5060"), 100),
                row("alice", "b", Some("10.0.0.2:5060"), 100),
                row("alice", "b", Some("10.0.0.2:5060"), 100),
                row("alice", "c", Some("198.51.100.7:5060"), 100),
                row("alice", "d", None, 100),
                row("alice", "e", Some("10.0.0.5:5060"), 10),
                row("alice", "f", Some("10.0.0.6:5060"), 40),
            ],
            now,
            wall,
        );
        // f lapses 20 s after `now`.
        let at = now + Duration::from_secs(30);
        let nodes = remote.nodes_for("alice", at);
        assert_eq!(
            nodes,
            vec![
                ("b".to_string(), Ok("10.0.0.2:5060".parse().unwrap())),
                ("c".to_string(), Err(Refusal::NotClusterNode)),
                ("d".to_string(), Err(Refusal::NoAddress)),
            ]
        );
        // A user's news replaces only that user's.
        remote.replace_user(
            "alice",
            vec![row("alice", "a", Some("10.0.0.1:5060"), 100)],
            now,
            wall,
        );
        assert!(remote.nodes_for("alice", at).is_empty());
        assert!(remote.nodes_for("bob", at).is_empty());
    }
}
