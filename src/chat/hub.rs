//! Live conversations. Each one keeps its transcript in memory (for replay
//! to reconnecting clients) and writes every event through to the store.
//! Appending and subscribing take the same lock, so a subscriber sees every
//! event exactly once: the replay up to the lock, then the live feed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc, watch};

use super::event::{
    Accepted, Binding, ChannelKind, Choice, Event, InputKind, Live, Role, VisitorInput,
};
use crate::store::{BindingRecord, ConversationRecord, MessageRecord, Store};
use crate::telemetry::names;

/// Longest visitor message kept; the rest is cut.
pub const MAX_VISITOR_TEXT: usize = 2000;
/// How long a closed conversation stays for clients to replay its end.
const KEEP_CLOSED: Duration = Duration::from_secs(600);

pub struct ChatHub {
    conversations: DashMap<String, Arc<Conversation>>,
    /// "sms:+34…" → the conversation most recently bound to that number.
    by_address: Arc<DashMap<String, String>>,
    /// Everything that happens, for the operator console.
    feed: broadcast::Sender<Feed>,
    /// Carries bot and agent messages to phone channels (set at start).
    sender: Arc<std::sync::OnceLock<Arc<dyn ChannelSender>>>,
    store: Arc<dyn Store>,
    /// How phone numbers typed without `+` are read (`[chat] default_country`).
    phone_region: Option<super::input::Region>,
    /// Restarts a conversation's flow where it stopped (set at start).
    resumer: std::sync::OnceLock<Arc<dyn FlowResumer>>,
    /// This gateway's name and how long it owns the chats it runs, when
    /// the store is shared with other gateways.
    node: String,
    lease: Duration,
    /// Anonymous web chats nobody has written in yet, oldest first, with
    /// their client address: capped and evicted (see `create_anonymous`).
    anonymous: Mutex<std::collections::VecDeque<(String, std::net::IpAddr)>>,
    anonymous_caps: AnonymousCaps,
    /// Keys the pending web chat ids a page hands out (see `pending_key`).
    pending_secret: [u8; 32],
}

/// How many anonymous, still-empty web chats may be held.
#[derive(Debug, Clone, Copy)]
pub struct AnonymousCaps {
    pub total: usize,
    pub per_source: usize,
}

impl Default for AnonymousCaps {
    fn default() -> Self {
        AnonymousCaps {
            total: 1000,
            per_source: 5,
        }
    }
}

/// Why an anonymous chat could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoRoom;

/// Where a conversation runs.
pub enum Found {
    /// Here: in memory, or restored from the store just now.
    Here(Arc<Conversation>),
    /// On another gateway (its node id), which holds its lease.
    OnNode {
        id: String,
        node: String,
    },
    Nowhere,
}

/// Picks a conversation's flow up at the node it last entered, after a
/// restart or on another node. Implemented by the flow interpreter.
pub trait FlowResumer: Send + Sync {
    /// Run `flow` from `node` with `vars` on `conversation`; false if it
    /// can't (the flow or node is gone).
    fn resume(
        &self,
        conversation: Arc<Conversation>,
        inputs: mpsc::UnboundedReceiver<VisitorInput>,
        flow: &str,
        node: &str,
        vars: std::collections::HashMap<String, String>,
    ) -> bool;

    /// Run `flow` from its start on a new conversation.
    fn start(
        &self,
        new: NewConversation,
        flow: &str,
        vars: std::collections::HashMap<String, String>,
    ) -> bool;
}

/// What the operator console hears.
#[derive(Debug, Clone)]
pub enum Feed {
    /// A conversation was created or changed (channel, closed).
    Conversation(String),
    /// An event was appended to a conversation's transcript.
    Event(String, Arc<Event>),
    /// Something operators should know (an outbound send refused...).
    Alert(String),
}

/// Delivers text to a phone channel. Implemented by the switchboard.
pub trait ChannelSender: Send + Sync {
    /// Send in the background; failures are noted in the transcript.
    fn send_later(
        &self,
        conversation: Arc<Conversation>,
        channel: ChannelKind,
        to: String,
        text: String,
    );
}

fn address_key(channel: ChannelKind, address: &str) -> String {
    format!("{}:{address}", channel.as_str())
}

/// A conversation just made: its access key goes to the visitor's browser
/// (cookie), the input receiver to the flow that runs it.
pub struct NewConversation {
    pub conversation: Arc<Conversation>,
    pub access_key: String,
    pub inputs: mpsc::UnboundedReceiver<VisitorInput>,
}

pub struct Conversation {
    pub id: String,
    inner: Mutex<Inner>,
    live: broadcast::Sender<Live>,
    inputs: mpsc::UnboundedSender<VisitorInput>,
    store: Arc<dyn Store>,
    closed_tx: watch::Sender<bool>,
    feed: broadcast::Sender<Feed>,
    by_address: Arc<DashMap<String, String>>,
    sender: Arc<std::sync::OnceLock<Arc<dyn ChannelSender>>>,
    /// Itself, for handing to background sends.
    me: std::sync::Weak<Conversation>,
    /// An anonymous web chat nobody has written in yet: nothing stored,
    /// not shown to operators (see `ChatHub::create_anonymous`).
    anonymous: std::sync::atomic::AtomicBool,
    /// With a shared store: this node's name and lease, to claim it.
    claim: Option<(String, Duration)>,
    /// The web visitor's address (first socket), for per-source budgets
    /// on what the chat makes us send or dial.
    source: std::sync::OnceLock<std::net::IpAddr>,
}

struct Inner {
    /// Hash of the key a visitor's browser opens the chat with; a web
    /// link claimed from the phone replaces it (`rekey`).
    key_hash: [u8; 32],
    events: Vec<Arc<Event>>,
    /// The prompt waiting for an answer, and its choices.
    open_prompt: Option<(u64, Vec<Choice>)>,
    /// A visitor action command's phone prompt: its id and target channel.
    switch_prompt: Option<(u64, ChannelKind)>,
    /// The flow's prompt it interrupted, restored once it is answered.
    suspended_prompt: Option<(u64, Vec<Choice>)>,
    /// After a restore: the last prompt, still unanswered. The resumed
    /// flow asks it again; it is reopened instead of shown twice.
    replay_prompt: Option<(u64, InputKind, String, Vec<Choice>)>,
    closed: Option<Instant>,
    record: ConversationRecord,
    bindings: Vec<Binding>,
    /// Until when the last switch may be undone.
    revert_until: Option<Instant>,
    /// Frames from the visitor in the current window (start, count).
    input_window: Option<(Instant, u32)>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl ChatHub {
    pub fn new(store: Arc<dyn Store>) -> ChatHub {
        ChatHub {
            conversations: DashMap::new(),
            by_address: Arc::new(DashMap::new()),
            feed: broadcast::channel(1024).0,
            sender: Arc::new(std::sync::OnceLock::new()),
            store,
            phone_region: None,
            resumer: std::sync::OnceLock::new(),
            node: "crossline".into(),
            lease: Duration::from_secs(15),
            anonymous: Mutex::new(std::collections::VecDeque::new()),
            anonymous_caps: AnonymousCaps::default(),
            pending_secret: {
                let mut k = [0u8; 32];
                use rand::Rng;
                rand::rng().fill_bytes(&mut k);
                k
            },
        }
    }

    pub fn with_anonymous_caps(mut self, caps: AnonymousCaps) -> ChatHub {
        self.anonymous_caps = caps;
        self
    }

    /// The key that goes with a pending web chat id: a page load hands
    /// out both (as cookies) and keeps nothing; the socket that comes
    /// back with them proves the page was ours.
    pub fn pending_key(&self, id: &str) -> String {
        use base64::Engine;
        let mac = crate::messaging::crypto::hmac_sha256(&self.pending_secret, id.as_bytes());
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac)
    }

    /// Does `key` go with the pending web chat `id` (see `pending_key`)?
    pub fn pending_key_matches(&self, id: &str, key: &str) -> bool {
        super::same_hash(
            &super::secret_hash(key),
            &super::secret_hash(&self.pending_key(id)),
        )
    }

    /// A web chat for an anonymous visitor, made when their socket opens.
    /// It lives in memory only (no store rows, not shown to operators,
    /// not counted) until the visitor first writes (`Conversation::
    /// visitor_input`). At the caps, the oldest still-empty chat of the
    /// same address, else of anyone, is closed to make room.
    pub fn create_anonymous(
        &self,
        id: &str,
        access_key: &str,
        flow: Option<String>,
        source: std::net::IpAddr,
    ) -> Result<NewConversation, NoRoom> {
        let caps = self.anonymous_caps;
        let source = crate::net::source_key(source);
        let mut evict = Vec::new();
        {
            let mut list = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
            // Those written in, closed or gone are no longer anonymous.
            list.retain(|(id, _)| self.get(id).is_some_and(|c| c.is_anonymous()));
            while list.iter().filter(|(_, ip)| *ip == source).count() >= caps.per_source.max(1) {
                match list.iter().position(|(_, ip)| *ip == source) {
                    Some(i) => evict.extend(list.remove(i)),
                    None => break,
                }
            }
            while list.len() >= caps.total.max(1) {
                match list.pop_front() {
                    Some(e) => evict.push(e),
                    None => break,
                }
            }
            list.push_back((id.to_string(), source));
        }
        for (old, _) in evict {
            if let Some(c) = self.get(&old) {
                c.close("This chat was closed to make room. Reload the page to start again.");
            }
            self.conversations.remove(&old);
            metrics::counter!(names::CHAT_ANONYMOUS_EVICTED).increment(1);
        }
        if self.conversations.contains_key(id) {
            return Err(NoRoom);
        }
        Ok(self.build(
            id.to_string(),
            access_key.to_string(),
            "web",
            flow,
            None,
            ChannelKind::Web,
            None,
            true,
        ))
    }

    /// Name this gateway among those sharing the store.
    pub fn with_node(mut self, node: String, lease: Duration) -> ChatHub {
        self.node = node;
        self.lease = lease;
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Start `flow` on a new conversation (from an inbound text).
    pub fn start_flow(
        &self,
        new: NewConversation,
        flow: &str,
        vars: std::collections::HashMap<String, String>,
    ) -> bool {
        match self.resumer.get() {
            Some(r) => r.start(new, flow, vars),
            None => false,
        }
    }

    /// With a shared store: keep the leases of the chats this node runs,
    /// and take the texts other nodes hand over for them as soon as the
    /// store says so (`LISTEN/NOTIFY`), with a slow poll as a safety net.
    pub fn start_cluster_tasks(self: &Arc<Self>) {
        if !self.store.shared() {
            return;
        }
        let hub = self.clone();
        let mut news = self.store.listen(&self.node);
        let poll = if news.is_listening() {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(250)
        };
        tokio::spawn(async move {
            let mut renew = tokio::time::interval(hub.lease / 3);
            let mut inbox = tokio::time::interval(poll);
            loop {
                tokio::select! {
                    heard = news.next() => match heard {
                        crate::store::StoreEvent::Inbox | crate::store::StoreEvent::Resync => {
                            hub.take_handed_over().await
                        }
                        crate::store::StoreEvent::Breakout(_)
                        | crate::store::StoreEvent::User(_)
                        | crate::store::StoreEvent::Registrations(_) => {}
                    },
                    _ = renew.tick() => {
                        let ids: Vec<String> = hub
                            .conversations
                            .iter()
                            .filter(|c| !c.is_closed())
                            .map(|c| c.id.clone())
                            .collect();
                        if let Err(e) = hub.store.renew_leases(&hub.node, ids, hub.lease) {
                            tracing::error!(%e, "store: cannot queue chat lease renewals");
                        }
                    }
                    _ = inbox.tick() => hub.take_handed_over().await,
                }
            }
        });
    }

    /// Texts that reached other nodes for chats this one runs.
    async fn take_handed_over(&self) {
        let inputs = match self.store.take_inputs(&self.node).await {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(%e, "store: cannot read handed-over texts");
                return;
            }
        };
        for (id, text) in inputs {
            match self.get_or_restore(&id).await {
                Some(c) => {
                    metrics::counter!(names::CHAT_INPUTS_HANDED_OVER).increment(1);
                    c.visitor_input(VisitorInput::Text(text));
                }
                None => {
                    tracing::warn!(conversation = %id, "a text handed over for a chat this node doesn't run")
                }
            }
        }
    }
    /// Let restored conversations carry on with their flows.
    pub fn set_resumer(&self, resumer: Arc<dyn FlowResumer>) {
        let _ = self.resumer.set(resumer);
    }

    /// Read national-format phone numbers as numbers of `region`.
    pub fn with_phone_region(mut self, region: Option<super::input::Region>) -> ChatHub {
        self.phone_region = region;
        self
    }

    /// A phone number the visitor typed, as E.164.
    pub fn phone(&self, raw: &str) -> Result<String, &'static str> {
        super::input::phone(raw.trim(), self.phone_region)
    }

    pub fn phone_region(&self) -> Option<super::input::Region> {
        self.phone_region
    }

    /// Route bot and agent messages on phone channels through `sender`.
    pub fn set_sender(&self, sender: Arc<dyn ChannelSender>) {
        let _ = self.sender.set(sender);
    }

    /// Tell the console a conversation changed outside its transcript
    /// (a lead was kept for it).
    pub fn announce(&self, id: &str) {
        let _ = self.feed.send(Feed::Conversation(id.to_string()));
    }

    /// Tell the operators' console.
    pub fn alert(&self, text: &str) {
        let _ = self.feed.send(Feed::Alert(text.to_string()));
    }

    pub fn feed(&self) -> broadcast::Receiver<Feed> {
        self.feed.subscribe()
    }

    /// The conversation last bound to this number on this channel: from
    /// memory, or the open one the store knows (after a restart, or one
    /// another node started).
    pub async fn by_address(
        &self,
        channel: ChannelKind,
        address: &str,
    ) -> Option<Arc<Conversation>> {
        match self.find_by_address(channel, address).await {
            Found::Here(c) => Some(c),
            Found::OnNode { .. } | Found::Nowhere => None,
        }
    }

    /// Where the conversation bound to this number runs: here (in memory,
    /// or restored now that this node owns it), or on another node.
    pub async fn find_by_address(&self, channel: ChannelKind, address: &str) -> Found {
        let known = self
            .by_address
            .get(&address_key(channel, address))
            .map(|id| id.clone());
        if let Some(c) = known
            .and_then(|id| self.get(&id))
            .filter(|c| !c.is_closed())
        {
            return Found::Here(c);
        }
        let Ok(Some(id)) = self
            .store
            .open_conversation_for(channel.as_str(), address)
            .await
        else {
            return Found::Nowhere;
        };
        match self
            .store
            .claim_conversation(&id, &self.node, self.lease)
            .await
        {
            Ok(Some(node)) => Found::OnNode { id, node },
            Ok(None) => match self.get_or_restore(&id).await {
                Some(c) => Found::Here(c),
                None => Found::Nowhere,
            },
            Err(e) => {
                tracing::error!(%e, "store: cannot claim a conversation");
                Found::Nowhere
            }
        }
    }

    /// Start a conversation on the web channel.
    pub fn create(
        &self,
        origin: &str,
        flow: Option<String>,
        breakout_id: Option<String>,
    ) -> NewConversation {
        self.create_on(origin, flow, breakout_id, ChannelKind::Web, None)
    }

    /// Start a conversation on `channel` (`address`: the phone number).
    pub fn create_on(
        &self,
        origin: &str,
        flow: Option<String>,
        breakout_id: Option<String>,
        channel: ChannelKind,
        address: Option<String>,
    ) -> NewConversation {
        self.sweep();
        let id = super::random_token(12);
        let access_key = super::random_token(32);
        self.build(
            id,
            access_key,
            origin,
            flow,
            breakout_id,
            channel,
            address,
            false,
        )
    }

    /// A new conversation in memory; written to the store (and shown to
    /// operators) now, or, when `anonymous`, once the visitor writes.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        id: String,
        access_key: String,
        origin: &str,
        flow: Option<String>,
        breakout_id: Option<String>,
        channel: ChannelKind,
        address: Option<String>,
        anonymous: bool,
    ) -> NewConversation {
        let (live, _) = broadcast::channel(256);
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let record = ConversationRecord {
            id: id.clone(),
            channel: channel.as_str().into(),
            origin: origin.into(),
            flow,
            breakout_id,
            created_at: SystemTime::now(),
            closed_at: None,
            key_hash: Some(super::hash_hex(&super::secret_hash(&access_key))),
            resume_node: None,
            resume_vars: None,
        };
        let binding = Binding {
            channel,
            address: address.clone(),
            started_at: SystemTime::now(),
            ended_at: None,
        };
        if let Some(a) = &address {
            self.by_address.insert(address_key(channel, a), id.clone());
        }
        let conversation = Arc::new_cyclic(|me| Conversation {
            id: id.clone(),
            inner: Mutex::new(Inner {
                key_hash: super::secret_hash(&access_key),
                events: Vec::new(),
                open_prompt: None,
                switch_prompt: None,
                suspended_prompt: None,
                replay_prompt: None,
                closed: None,
                record,
                bindings: vec![binding],
                revert_until: None,
                input_window: None,
            }),
            live,
            inputs: inputs_tx,
            store: self.store.clone(),
            closed_tx: watch::channel(false).0,
            feed: self.feed.clone(),
            by_address: self.by_address.clone(),
            sender: self.sender.clone(),
            me: me.clone(),
            anonymous: std::sync::atomic::AtomicBool::new(anonymous),
            claim: self.store.shared().then(|| (self.node.clone(), self.lease)),
            source: std::sync::OnceLock::new(),
        });
        self.conversations.insert(id, conversation.clone());
        if !anonymous {
            conversation.persist_new();
        }
        NewConversation {
            conversation,
            access_key,
            inputs,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Conversation>> {
        self.conversations.get(id).map(|c| c.clone())
    }

    /// A conversation from memory, or rebuilt from the store: after a
    /// restart, or when another node started it. An open one gets its
    /// visitor's key back and its flow restarted at the node it had
    /// reached; a closed one can be reopened by an operator.
    pub async fn get_or_restore(&self, id: &str) -> Option<Arc<Conversation>> {
        match self.get(id) {
            Some(c) => Some(c),
            None => self.restore(id, None).await,
        }
    }

    /// A visitor's conversation, only for the key that opens it. The key
    /// is checked against the stored hash before anything is restored, so
    /// a guessed id never restarts a flow.
    pub async fn open_with_key(&self, id: &str, key: &str) -> Option<Arc<Conversation>> {
        match self.get(id) {
            Some(c) => c.key_matches(key).then_some(c),
            None => self.restore(id, Some(key)).await,
        }
    }

    async fn restore(&self, id: &str, key: Option<&str>) -> Option<Arc<Conversation>> {
        let record = self.store.conversation(id).await.ok()??;
        if let Some(key) = key {
            let stored = record.key_hash.as_deref().and_then(super::hash_from_hex)?;
            if !super::same_hash(&stored, &super::secret_hash(key)) {
                return None;
            }
        }
        // An open chat another live node runs stays there.
        if record.closed_at.is_none()
            && !matches!(
                self.store
                    .claim_conversation(id, &self.node, self.lease)
                    .await,
                Ok(None)
            )
        {
            return None;
        }
        let messages = self.store.messages(id, 0).await.ok()?;
        let bindings = self.store.bindings(id).await.ok()?;
        let events: Vec<Arc<Event>> = messages.iter().filter_map(event_of).map(Arc::new).collect();
        let (live, _) = broadcast::channel(256);
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let bindings: Vec<Binding> = bindings
            .iter()
            .filter_map(|b| {
                Some(Binding {
                    channel: ChannelKind::parse(&b.channel)?,
                    address: b.address.clone(),
                    started_at: b.started_at,
                    ended_at: b.ended_at,
                })
            })
            .collect();
        let closed = record.closed_at.map(|_| Instant::now());
        let resume = match (&record.flow, &record.resume_node, closed) {
            (Some(flow), Some(node), None) => Some((flow.clone(), node.clone())),
            _ => None,
        };
        let replay_prompt = match events.last().map(|e| e.as_ref()) {
            Some(Event::Prompt {
                id,
                input,
                text,
                choices,
                action: None,
                ..
            }) if resume.is_some() => Some((*id, *input, text.clone(), choices.clone())),
            _ => None,
        };
        // Without a stored key hash (older rows) nobody's browser gets in.
        let key_hash = record
            .key_hash
            .as_deref()
            .and_then(super::hash_from_hex)
            .unwrap_or_else(|| super::secret_hash(&super::random_token(32)));
        let vars = record
            .resume_vars
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default();
        let conversation = Arc::new_cyclic(|me| Conversation {
            id: id.to_string(),
            inner: Mutex::new(Inner {
                key_hash,
                events,
                open_prompt: None,
                switch_prompt: None,
                suspended_prompt: None,
                replay_prompt,
                closed,
                record,
                bindings: bindings.clone(),
                revert_until: None,
                input_window: None,
            }),
            live,
            inputs: inputs_tx,
            store: self.store.clone(),
            closed_tx: watch::channel(closed.is_some()).0,
            feed: self.feed.clone(),
            by_address: self.by_address.clone(),
            sender: self.sender.clone(),
            me: me.clone(),
            anonymous: std::sync::atomic::AtomicBool::new(false),
            claim: self.store.shared().then(|| (self.node.clone(), self.lease)),
            source: std::sync::OnceLock::new(),
        });
        // Two requests may restore at once: the first one in wins.
        match self.conversations.entry(id.to_string()) {
            dashmap::mapref::entry::Entry::Occupied(e) => return Some(e.get().clone()),
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(conversation.clone());
            }
        }
        if closed.is_none() {
            metrics::gauge!(names::CHAT_SESSIONS_ACTIVE).increment(1.0);
            for b in bindings.iter().filter(|b| b.ended_at.is_none()) {
                if let Some(a) = &b.address {
                    self.by_address
                        .insert(address_key(b.channel, a), id.to_string());
                }
            }
        }
        let resumed = match (resume, self.resumer.get()) {
            (Some((flow, node)), Some(resumer)) => {
                resumer.resume(conversation.clone(), inputs, &flow, &node, vars)
            }
            _ => false,
        };
        let how = if resumed { "resumed" } else { "restored" };
        tracing::info!(conversation = %id, how, "chat restored from the store");
        metrics::counter!(names::CHAT_RESTORED, "how" => how).increment(1);
        Some(conversation)
    }

    /// Live conversations (open or recently closed), newest first.
    pub fn list(&self) -> Vec<Arc<Conversation>> {
        let mut all: Vec<Arc<Conversation>> = self
            .conversations
            .iter()
            .filter(|c| !c.is_anonymous())
            .map(|c| c.clone())
            .collect();
        all.sort_by_key(|c| std::cmp::Reverse(c.record().created_at));
        all
    }

    /// Forget conversations closed long enough ago.
    fn sweep(&self) {
        let now = Instant::now();
        self.conversations.retain(|_, c| match c.lock().closed {
            Some(at) => now.duration_since(at) < KEEP_CLOSED,
            None => true,
        });
    }
}

impl Conversation {
    /// One more frame from the visitor: within `max` per `window`, over
    /// all their sockets (a reconnect doesn't start a fresh allowance)?
    pub fn allow_frame(&self, max: u32, window: Duration) -> bool {
        let mut inner = self.lock();
        let now = Instant::now();
        let (start, count) = match inner.input_window {
            Some((start, count)) if now.duration_since(start) < window => (start, count),
            _ => (now, 0),
        };
        inner.input_window = Some((start, count + 1));
        count < max
    }

    /// Note the web visitor's address (the first one sticks).
    pub fn note_source(&self, ip: std::net::IpAddr) {
        let _ = self.source.set(ip);
    }

    /// The web visitor's address, if a socket came.
    pub fn source(&self) -> Option<std::net::IpAddr> {
        self.source.get().copied()
    }

    /// Still an anonymous chat nobody has written in?
    pub fn is_anonymous(&self) -> bool {
        self.anonymous.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The store, once the conversation is kept there.
    fn store(&self) -> Option<&Arc<dyn Store>> {
        (!self.is_anonymous()).then_some(&self.store)
    }

    /// First write of a conversation: its row, binding, claim, and the
    /// operators' feed and counters.
    fn persist_new(&self) {
        let (record, bindings) = {
            let inner = self.lock();
            (inner.record.clone(), inner.bindings.clone())
        };
        if let Err(e) = self.store.upsert_conversation(record.clone()) {
            tracing::error!(%e, "store: cannot queue the conversation");
        }
        let rows = bindings
            .iter()
            .enumerate()
            .map(|(i, b)| binding_record(&self.id, i as u32 + 1, b))
            .collect();
        let _ = self.store.upsert_bindings(rows);
        if let (Some((node, lease)), Ok(runtime)) =
            (self.claim.clone(), tokio::runtime::Handle::try_current())
        {
            // New, so nobody else holds it; this marks it as ours. The
            // claim reads after the row queued above, so it finds it.
            let (store, id) = (self.store.clone(), self.id.clone());
            runtime.spawn(async move {
                if let Err(e) = store.claim_conversation(&id, &node, lease).await {
                    tracing::error!(%e, "store: cannot claim a new conversation");
                }
            });
        }
        let _ = self.feed.send(Feed::Conversation(self.id.clone()));
        metrics::counter!(names::CHAT_SESSIONS, "origin" => record.origin).increment(1);
        metrics::gauge!(names::CHAT_SESSIONS_ACTIVE).increment(1.0);
    }

    /// The visitor wrote: an anonymous chat becomes a real one, stored
    /// with everything said so far.
    pub(crate) fn promote(&self) {
        if self
            .anonymous
            .compare_exchange(
                true,
                false,
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
            )
            .is_err()
        {
            return;
        }
        self.persist_new();
        let events = self.lock().events.clone();
        for event in events {
            self.store_event(&self.store, &event);
        }
    }

    /// Queue one transcript event's row.
    fn store_event(&self, store: &Arc<dyn Store>, event: &Event) {
        let (role, kind, text, detail) = event.stored();
        if let Err(e) = store.append_message(MessageRecord {
            conversation_id: self.id.clone(),
            seq: event.id(),
            role: role.as_str().into(),
            kind: kind.into(),
            text,
            detail,
            created_at: SystemTime::now(),
        }) {
            tracing::error!(%e, "store: cannot queue a chat message");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves data that is
        // still consistent (every write is one push), so carry on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note where the flow is, so a restart can pick it up there.
    pub fn checkpoint(
        &self,
        flow: &str,
        node: &str,
        vars: &std::collections::HashMap<String, String>,
    ) {
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return;
        }
        inner.record.flow = Some(flow.to_string());
        inner.record.resume_node = Some(node.to_string());
        inner.record.resume_vars = serde_json::to_string(vars).ok();
        if let Some(store) = self.store() {
            if let Err(e) = store.upsert_conversation(inner.record.clone()) {
                tracing::error!(%e, "store: cannot queue the conversation");
            }
        }
    }

    /// Does this browser's key open this conversation?
    pub fn key_matches(&self, key: &str) -> bool {
        super::same_hash(&self.lock().key_hash, &super::secret_hash(key))
    }

    /// A new access key for the browser that claimed a web link: it opens
    /// the chat from now on, and the old key no longer does.
    pub fn rekey(&self) -> String {
        let key = super::random_token(32);
        let hash = super::secret_hash(&key);
        let mut inner = self.lock();
        inner.key_hash = hash;
        inner.record.key_hash = Some(super::hash_hex(&hash));
        if let Some(store) = self.store() {
            if let Err(e) = store.upsert_conversation(inner.record.clone()) {
                tracing::error!(%e, "store: cannot queue the conversation");
            }
        }
        key
    }

    pub fn record(&self) -> ConversationRecord {
        self.lock().record.clone()
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    /// Turns true when the conversation closes (for the flow running it).
    pub fn closed_watch(&self) -> watch::Receiver<bool> {
        self.closed_tx.subscribe()
    }

    /// The transcript so far.
    pub fn transcript(&self) -> Vec<Arc<Event>> {
        self.lock().events.clone()
    }

    /// Everything after `after`, then the live feed, with no gap between.
    pub fn subscribe(&self, after: u64) -> (Vec<Arc<Event>>, broadcast::Receiver<Live>) {
        let inner = self.lock();
        let replay = inner
            .events
            .iter()
            .filter(|e| e.id() > after)
            .cloned()
            .collect();
        (replay, self.live.subscribe())
    }

    /// Append one event; `make` gets its id. Nothing is added once closed.
    fn append(&self, make: impl FnOnce(u64) -> Event) -> Option<u64> {
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return None;
        }
        let id = inner.events.len() as u64 + 1;
        let event = Arc::new(make(id));
        // The visitor answering before the resumed flow re-asks keeps the
        // question open for it; anything the bot says moves on.
        if !matches!(
            event.as_ref(),
            Event::Message {
                role: Role::Visitor,
                ..
            }
        ) {
            inner.replay_prompt = None;
        }
        if let Event::Prompt { choices, .. } = event.as_ref() {
            inner.open_prompt = Some((id, choices.clone()));
        }
        if let Event::Closed { .. } = event.as_ref() {
            inner.closed = Some(Instant::now());
            inner.open_prompt = None;
            inner.record.closed_at = Some(SystemTime::now());
            self.closed_tx.send_replace(true);
            if let Some(store) = self.store() {
                if let Err(e) = store.upsert_conversation(inner.record.clone()) {
                    tracing::error!(%e, "store: cannot queue the conversation");
                }
                metrics::gauge!(names::CHAT_SESSIONS_ACTIVE).decrement(1.0);
                let _ = self.feed.send(Feed::Conversation(self.id.clone()));
            }
        }
        if let Some(store) = self.store() {
            self.store_event(store, &event);
        }
        inner.events.push(event.clone());
        // No subscribers is fine: the transcript has it for later.
        let _ = self.live.send(Live::Event(event.clone()));
        if !self.is_anonymous() {
            let _ = self.feed.send(Feed::Event(self.id.clone(), event));
        }
        Some(id)
    }

    /// Add a message to the transcript; on a phone channel, a bot or agent
    /// message also goes out there (in the background).
    pub fn say(&self, role: Role, text: &str) -> Option<u64> {
        let id = self.note(role, text)?;
        if matches!(role, Role::Bot | Role::Agent) {
            self.forward(text.to_string());
        }
        Some(id)
    }

    /// Add to the transcript only (the caller already delivered it).
    pub fn note(&self, role: Role, text: &str) -> Option<u64> {
        let at = unix_ms(SystemTime::now());
        self.append(|id| Event::Message {
            id,
            role,
            text: text.to_string(),
            at,
        })
    }

    /// Send `text` to the phone this conversation is on, if it is on one.
    fn forward(&self, text: String) {
        let (channel, address) = self.active();
        let (Some(to), Some(sender), Some(me)) = (address, self.sender.get(), self.me.upgrade())
        else {
            return;
        };
        if channel != ChannelKind::Web {
            sender.send_later(me, channel, to, text);
        }
    }

    /// The active channel and its phone number.
    pub fn active(&self) -> (ChannelKind, Option<String>) {
        let inner = self.lock();
        inner
            .bindings
            .last()
            .map(|b| (b.channel, b.address.clone()))
            .unwrap_or((ChannelKind::Web, None))
    }

    pub fn bindings(&self) -> Vec<Binding> {
        self.lock().bindings.clone()
    }

    /// Move to `channel` (at `address`), noting `text` in the transcript.
    /// With `revert_window`, the visitor may undo it until then. Atomic:
    /// the binding, the number index and the event change under one lock.
    pub fn rebind(
        &self,
        channel: ChannelKind,
        address: Option<String>,
        text: &str,
        revert_window: Option<Duration>,
    ) -> Option<u64> {
        // A switch is content: an anonymous chat is kept from now on.
        self.promote();
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return None;
        }
        let now = SystemTime::now();
        let seq = inner.bindings.len() as u32;
        let mut rows = Vec::with_capacity(2);
        if let Some(last) = inner.bindings.last_mut() {
            last.ended_at = Some(now);
            rows.push(binding_record(&self.id, seq, last));
        }
        let binding = Binding {
            channel,
            address: address.clone(),
            started_at: now,
            ended_at: None,
        };
        rows.push(binding_record(&self.id, seq + 1, &binding));
        // The old binding's end and the new one's start in one transaction,
        // queued under the conversation's lock so switches land in order.
        if let Some(store) = self.store() {
            if let Err(e) = store.upsert_bindings(rows) {
                tracing::error!(%e, "store: cannot queue the channel switch");
            }
        }
        inner.bindings.push(binding);
        if let Some(a) = &address {
            self.by_address
                .insert(address_key(channel, a), self.id.clone());
        }
        inner.revert_until = revert_window.map(|w| Instant::now() + w);
        inner.record.channel = channel.as_str().into();
        if let Some(store) = self.store() {
            if let Err(e) = store.upsert_conversation(inner.record.clone()) {
                tracing::error!(%e, "store: cannot queue the conversation");
            }
        }
        let at = unix_ms(now);
        let revert_until = revert_window.map(|w| at + w.as_millis() as u64);
        let masked = address.as_deref().map(crate::mask::phone);
        drop(inner);
        metrics::counter!(names::CHAT_SWITCHES, "to" => channel.as_str()).increment(1);
        let id = self.append(|id| Event::Channel {
            id,
            channel: channel.as_str().into(),
            address: masked,
            text: text.to_string(),
            revert_until,
            at,
        });
        let _ = self.feed.send(Feed::Conversation(self.id.clone()));
        id
    }

    /// May the last switch still be undone?
    pub fn can_revert(&self) -> bool {
        self.can_revert_at(Instant::now())
    }

    /// Whether a revert at `now` is still inside the window.
    pub fn can_revert_at(&self, now: Instant) -> bool {
        let inner = self.lock();
        inner.revert_until.is_some_and(|t| now < t)
            && inner
                .bindings
                .last()
                .is_some_and(|b| b.channel != ChannelKind::Web)
    }

    /// Open again (operator reconnect): the transcript goes on.
    pub fn reopen(&self) {
        let mut inner = self.lock();
        if inner.closed.take().is_some() {
            inner.record.closed_at = None;
            if let Some(store) = self.store() {
                let _ = store.upsert_conversation(inner.record.clone());
            }
            metrics::gauge!(names::CHAT_SESSIONS_ACTIVE).increment(1.0);
            self.closed_tx.send_replace(false);
        }
    }

    /// The operator's visitor action command: ask for a phone number in
    /// the chat, to move it to `channel`.
    pub fn ask_phone(&self, channel: ChannelKind, text: &str) -> Option<u64> {
        // A second command replaces the first; the flow's own prompt is
        // what comes back after either.
        let previous = {
            let inner = self.lock();
            if inner.switch_prompt.is_some() {
                inner.suspended_prompt.clone()
            } else {
                inner.open_prompt.clone()
            }
        };
        let id = self.append(|id| Event::Prompt {
            id,
            input: InputKind::Phone,
            text: text.to_string(),
            choices: Vec::new(),
            placeholder: Some("+34 600 123 456".into()),
            action: Some(format!("switch_{}", channel.as_str())),
            at: unix_ms(SystemTime::now()),
        })?;
        let mut inner = self.lock();
        inner.switch_prompt = Some((id, channel));
        inner.suspended_prompt = previous;
        Some(id)
    }

    /// Ask something; the answer comes back through the flow's inputs.
    pub fn prompt(
        &self,
        input: InputKind,
        text: &str,
        choices: Vec<Choice>,
        placeholder: Option<String>,
    ) -> Option<u64> {
        {
            // The same question as the one left open at a restart: open
            // that one again rather than asking twice.
            let mut inner = self.lock();
            if let Some((id, kind, asked, offered)) = inner.replay_prompt.take() {
                if inner.closed.is_none() && kind == input && asked == text && offered == choices {
                    inner.open_prompt = Some((id, offered));
                    return Some(id);
                }
            }
        }
        let id = self.append(|id| Event::Prompt {
            id,
            input,
            text: text.to_string(),
            choices: choices.clone(),
            placeholder,
            action: None,
            at: unix_ms(SystemTime::now()),
        })?;
        // On a phone, the question goes out as text, with numbered choices.
        let mut out = text.to_string();
        for (i, c) in choices.iter().enumerate() {
            out.push_str(&format!("\n{}) {}", i + 1, c.label));
        }
        self.forward(out);
        Some(id)
    }

    pub fn typing(&self, on: bool) {
        let _ = self.live.send(Live::Typing(on));
    }

    /// End the conversation for good (idempotent).
    pub fn close(&self, text: &str) {
        self.append(|id| Event::Closed {
            id,
            text: text.to_string(),
            at: unix_ms(SystemTime::now()),
        });
    }

    /// Take what the visitor sent: echo it into the transcript and pass it
    /// to the flow. An answer to a prompt that isn't open (a resend after a
    /// reconnect, a stale tab) is dropped, so no answer counts twice. The
    /// answer to a visitor action command is not the flow's: it asks for a
    /// switch.
    pub fn visitor_input(&self, input: VisitorInput) -> Accepted {
        let input = match input {
            VisitorInput::Answer { prompt, value } => VisitorInput::Answer {
                prompt,
                value: clip(value),
            },
            VisitorInput::Text(t) => VisitorInput::Text(clip(t)),
        };
        if !self.is_closed() {
            self.promote();
        }
        let (shown, switch) = {
            let mut inner = self.lock();
            if inner.closed.is_some() {
                return Accepted::Refused;
            }
            let switch = match (&input, inner.switch_prompt) {
                (VisitorInput::Answer { prompt, .. }, Some((open, channel))) if *prompt == open => {
                    Some(channel)
                }
                _ => None,
            };
            let shown = match (&input, &inner.open_prompt) {
                (VisitorInput::Answer { prompt, value }, Some((open, choices)))
                    if prompt == open =>
                {
                    let shown = choices
                        .iter()
                        .find(|c| &c.value == value)
                        .map(|c| c.label.clone())
                        .unwrap_or_else(|| value.clone());
                    inner.open_prompt = None;
                    shown
                }
                (VisitorInput::Answer { .. }, _) => return Accepted::Refused,
                (VisitorInput::Text(t), _) => {
                    // Free text passes every open question by, the
                    // operator's phone request included.
                    inner.open_prompt = None;
                    inner.switch_prompt = None;
                    inner.suspended_prompt = None;
                    t.clone()
                }
            };
            if switch.is_some() {
                inner.switch_prompt = None;
                inner.open_prompt = inner.suspended_prompt.take();
            }
            (shown, switch)
        };
        if shown.trim().is_empty() {
            return Accepted::Refused;
        }
        if let Some(channel) = switch {
            // The number goes to the switchboard whole, to the transcript
            // masked like every other display of it.
            self.note(Role::Visitor, &crate::mask::phone(shown.trim()));
            return Accepted::Switch {
                channel,
                phone: shown,
            };
        }
        self.note(Role::Visitor, &shown);
        // Free text stands in the transcript for the operators even when
        // no flow runs (a chat that began as a text with no flow).
        let text = matches!(input, VisitorInput::Text(_));
        if self.inputs.send(input).is_ok() || text {
            Accepted::Flow
        } else {
            Accepted::Refused
        }
    }
}

/// A stored transcript row back as the event it was.
fn event_of(m: &MessageRecord) -> Option<Event> {
    let detail: serde_json::Value = m
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or_default();
    let id = m.seq;
    let at = unix_ms(m.created_at);
    Some(match m.kind.as_str() {
        "message" => Event::Message {
            id,
            role: Role::parse(&m.role)?,
            text: m.text.clone(),
            at,
        },
        "prompt" => Event::Prompt {
            id,
            input: serde_json::from_value(detail["input"].clone()).unwrap_or_default(),
            text: m.text.clone(),
            choices: serde_json::from_value(detail["choices"].clone()).unwrap_or_default(),
            placeholder: detail["placeholder"].as_str().map(str::to_string),
            action: detail["action"].as_str().map(str::to_string),
            at,
        },
        "closed" => Event::Closed {
            id,
            text: m.text.clone(),
            at,
        },
        "channel" => Event::Channel {
            id,
            channel: detail["channel"].as_str().unwrap_or("web").to_string(),
            address: detail["address"].as_str().map(str::to_string),
            text: m.text.clone(),
            revert_until: detail["revert_until"].as_u64(),
            at,
        },
        _ => return None,
    })
}

fn binding_record(conversation: &str, seq: u32, b: &Binding) -> BindingRecord {
    BindingRecord {
        conversation_id: conversation.to_string(),
        seq,
        channel: b.channel.as_str().into(),
        address: b.address.clone(),
        started_at: b.started_at,
        ended_at: b.ended_at,
    }
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_VISITOR_TEXT {
        let mut end = MAX_VISITOR_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> (tempfile::TempDir, Arc<dyn Store>, ChatHub) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("h.db")).unwrap());
        (dir, store.clone(), ChatHub::new(store))
    }

    #[tokio::test]
    async fn replay_then_live_without_gap_and_written_through() {
        let (_d, store, hub) = hub();
        let new = hub.create("web", Some("f".into()), None);
        let c = &new.conversation;
        c.say(Role::Bot, "hello");
        let p = c
            .prompt(InputKind::Email, "Your email?", vec![], None)
            .unwrap();
        let (replay, mut live) = c.subscribe(1);
        assert_eq!(replay.len(), 1);
        assert_eq!(replay[0].id(), p);
        c.say(Role::Bot, "after");
        match live.try_recv().unwrap() {
            Live::Event(e) => assert_eq!(e.id(), 3),
            other => panic!("{other:?}"),
        }
        store.flush().await.unwrap();
        let stored = store.messages(&c.id, 0).await.unwrap();
        assert_eq!(stored.len(), 3);
        assert_eq!(stored[1].kind, "prompt");
        assert!(stored[1].detail.as_deref().unwrap().contains("\"email\""));
        assert!(c.key_matches(&new.access_key));
        assert!(!c.key_matches("guess"));
    }

    #[test]
    fn an_answer_counts_once_and_only_for_the_open_prompt() {
        let (_d, _s, hub) = hub();
        let mut new = hub.create("web", None, None);
        let c = new.conversation.clone();
        let choices = vec![Choice {
            label: "Yes please".into(),
            value: "yes".into(),
        }];
        let p = c.prompt(InputKind::Choice, "Sure?", choices, None).unwrap();
        let answer = |prompt| VisitorInput::Answer {
            prompt,
            value: "yes".into(),
        };
        assert_eq!(
            c.visitor_input(answer(p + 7)),
            Accepted::Refused,
            "not the open prompt"
        );
        assert_eq!(c.visitor_input(answer(p)), Accepted::Flow);
        assert_eq!(
            c.visitor_input(answer(p)),
            Accepted::Refused,
            "a resend is dropped"
        );
        assert_eq!(new.inputs.try_recv().unwrap(), answer(p));
        assert!(new.inputs.try_recv().is_err());
        // The transcript shows the label the visitor picked.
        let (all, _) = c.subscribe(0);
        assert!(matches!(all.last().unwrap().as_ref(),
            Event::Message { role: Role::Visitor, text, .. } if text == "Yes please"));
    }

    #[test]
    fn closed_is_final_and_long_text_is_cut() {
        let (_d, _s, hub) = hub();
        let new = hub.create("web", None, None);
        let c = new.conversation.clone();
        assert_eq!(
            c.visitor_input(VisitorInput::Text("é".repeat(MAX_VISITOR_TEXT))),
            Accepted::Flow
        );
        let (all, _) = c.subscribe(0);
        match all[0].as_ref() {
            Event::Message { text, .. } => assert!(text.len() <= MAX_VISITOR_TEXT),
            other => panic!("{other:?}"),
        }
        c.close("bye");
        c.close("bye again");
        assert!(c.say(Role::Bot, "late").is_none());
        assert_eq!(
            c.visitor_input(VisitorInput::Text("hi".into())),
            Accepted::Refused
        );
        let (all, _) = c.subscribe(0);
        assert_eq!(all.len(), 2);
        assert!(c.is_closed());
        assert_eq!(hub.list().len(), 1);
    }
}
