//! Breakout: To chat sessions. A call sends the caller a link; the link
//! opens one web conversation running a chat flow; Breakout: Return hands
//! variables back to the waiting call. Each session moves through
//! pending → opened → returned | timed_out | closed | caller_left exactly
//! once, so a return racing the timeout has a single winner.
//!
//! On a store of one node's own, the session's lock decides (the store
//! keeps a record). On a shared store (PostgreSQL, several gateways) the
//! phone's browser may land on any node, so the store decides instead:
//! see `shared.rs`.
//!
//! The link token (22 base62 characters, about 131 random bits) is only
//! ever held by the recipient's phone: the map and the store key it by its
//! SHA-256.

mod presence;
mod shared;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use tokio::sync::oneshot;

use crate::chat::{ChatHub, Conversation, NewConversation, Role};
use crate::store::{BreakoutRecord, Store};
use crate::telemetry::names;

pub use presence::{LeftRule, VisitorSocket};

/// What Breakout: Return hands back: variable → value.
pub type Returned = BTreeMap<String, String>;

/// How long a finished session stays (for its own records) before it goes.
const KEEP_FINISHED: Duration = Duration::from_secs(600);

/// A browser's key for a conversation id (from its cookies).
pub type BrowserKey<'a> = &'a (dyn Fn(&str) -> Option<String> + Sync);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Opened,
    Returned,
    TimedOut,
    CallerLeft,
    SendFailed,
    /// The chat closed (operator, idle timeout, visitor gone) before it
    /// returned.
    Closed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Opened => "opened",
            Phase::Returned => "returned",
            Phase::TimedOut => "timed_out",
            Phase::CallerLeft => "caller_left",
            Phase::SendFailed => "send_failed",
            Phase::Closed => "closed",
        }
    }

    /// A stored state; `None` for one this build doesn't know. A return
    /// after the hang-up leaves the session as it was: caller_left.
    pub fn parse(state: &str) -> Option<Phase> {
        Some(match state {
            "pending" => Phase::Pending,
            "opened" => Phase::Opened,
            "returned" => Phase::Returned,
            "timed_out" => Phase::TimedOut,
            "caller_left" | "returned_after_caller_left" => Phase::CallerLeft,
            "send_failed" => Phase::SendFailed,
            "closed" => Phase::Closed,
            _ => return None,
        })
    }

    /// Can the chat still hand something back?
    fn live(self) -> bool {
        matches!(self, Phase::Pending | Phase::Opened | Phase::CallerLeft)
    }

    /// Is a call waiting on it?
    fn waited_on(self) -> bool {
        matches!(self, Phase::Pending | Phase::Opened)
    }
}

/// What to tell the visitor when the call side moves on.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Notices {
    pub caller_left: String,
    pub timed_out: String,
}

pub struct Session {
    pub id: String,
    expires: Instant,
    notices: Notices,
    store: Arc<dyn Store>,
    /// The store is shared with other gateways: it decides every change.
    shared: bool,
    state: Mutex<State>,
}

struct State {
    phase: Phase,
    conversation: Option<Arc<Conversation>>,
    /// Only on the gateway holding the call.
    waiting_call: Option<oneshot::Sender<Returned>>,
    finished: Option<Instant>,
    record: BreakoutRecord,
    presence: presence::Presence,
}

/// What a session's start gives the call: the link token to send and the
/// receiver the returned variables arrive on.
pub struct Started {
    pub session: Arc<Session>,
    pub token: String,
    pub returned: oneshot::Receiver<Returned>,
}

/// What opening a link gives the web side.
pub enum Opened {
    /// First open: a new conversation; run `flow` on it.
    New {
        session: Arc<Session>,
        flow: String,
        new: NewConversation,
    },
    /// The same browser again (its cookie matches): resume.
    Resume(Arc<Conversation>),
}

/// How a Breakout: Return went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnOutcome {
    /// The call has the values and carries on.
    Delivered,
    /// The caller hung up first; the values are stored all the same.
    CallerLeft,
    /// Too late (timeout) or already returned; stored, not delivered.
    TooLate,
}

/// How the call's wait ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Returned(Returned),
    /// The chat closed without a Return: no point holding the caller.
    Closed,
    TimedOut,
}

pub struct Breakouts {
    /// By the SHA-256 of the token (links landing on this node).
    sessions: DashMap<[u8; 32], Arc<Session>>,
    /// By id (news from the store, the chat's sockets).
    by_id: DashMap<String, Arc<Session>>,
    store: Arc<dyn Store>,
    hub: Arc<ChatHub>,
    /// This gateway (`[store] node_id`).
    node: String,
    shared: bool,
    left: LeftRule,
}

impl Breakouts {
    pub fn new(store: Arc<dyn Store>, hub: Arc<ChatHub>) -> Breakouts {
        Breakouts {
            sessions: DashMap::new(),
            by_id: DashMap::new(),
            shared: store.shared(),
            node: hub.node().to_string(),
            store,
            hub,
            left: LeftRule::NEVER,
        }
    }

    /// When a visitor who walked away counts as gone.
    pub fn with_left_rule(mut self, left: LeftRule) -> Breakouts {
        self.left = left;
        self
    }

    /// A new session for `call_id`, open for `timeout`. On a shared store
    /// it is in the database when this returns, so any node can open the
    /// link the moment the SMS arrives.
    pub async fn start(
        &self,
        call_id: &str,
        flow: &str,
        recipient: &str,
        timeout: Duration,
        notices: Notices,
    ) -> Started {
        self.sweep();
        let token = crate::chat::short_token();
        let token_hash = crate::chat::secret_hash(&token);
        let now = SystemTime::now();
        let record = BreakoutRecord {
            id: crate::chat::random_token(12),
            token_hash: crate::chat::hash_hex(&token_hash),
            call_id: call_id.into(),
            flow: flow.into(),
            recipient: recipient.into(),
            state: Phase::Pending.as_str().into(),
            created_at: now,
            expires_at: now + timeout,
            opened_at: None,
            finished_at: None,
            conversation_id: None,
            result: None,
            node: Some(self.node.clone()),
            chat_node: None,
            notices: serde_json::to_string(&notices).ok(),
        };
        let (tx, rx) = oneshot::channel();
        let session = self.session(
            record,
            Phase::Pending,
            Instant::now() + timeout,
            notices,
            Some(tx),
        );
        session.persist(&session.lock());
        if self.shared {
            if let Err(e) = self.store.flush().await {
                tracing::error!(%e, "store: a breakout may not be visible to other nodes yet");
            }
        }
        self.insert(token_hash, session.clone());
        metrics::counter!(names::BREAKOUTS, "event" => "started").increment(1);
        Started {
            session,
            token,
            returned: rx,
        }
    }

    fn session(
        &self,
        record: BreakoutRecord,
        phase: Phase,
        expires: Instant,
        notices: Notices,
        waiting_call: Option<oneshot::Sender<Returned>>,
    ) -> Arc<Session> {
        Arc::new(Session {
            id: record.id.clone(),
            expires,
            notices,
            store: self.store.clone(),
            shared: self.shared,
            state: Mutex::new(State {
                phase,
                conversation: None,
                waiting_call,
                finished: None,
                record,
                presence: Default::default(),
            }),
        })
    }

    fn insert(&self, token_hash: [u8; 32], session: Arc<Session>) {
        self.by_id.insert(session.id.clone(), session.clone());
        self.sessions.insert(token_hash, session);
    }

    /// Open a link. `None` for anything that must look like "not found":
    /// unknown, expired, finished, or opened before by another browser.
    /// `browser_key` gives the key this browser holds for a conversation id.
    pub async fn open(&self, token: &str, browser_key: BrowserKey<'_>) -> Option<Opened> {
        if token.len() > 128 {
            return None;
        }
        self.sweep();
        let opened = if self.shared {
            self.open_shared(token, browser_key).await
        } else {
            self.open_here(token, browser_key)
        };
        if let Some(Opened::New { session, .. }) = &opened {
            // The browser that claimed it has `grace` to connect.
            session.lock().presence.claimed(Instant::now());
            session.watch_presence(&self.left);
        }
        opened
    }

    fn open_here(&self, token: &str, browser_key: BrowserKey<'_>) -> Option<Opened> {
        let session = self.live_session(token)?;
        let mut st = session.lock();
        match (st.phase, &st.conversation) {
            // After a hang-up the link still works: the answers are kept.
            (Phase::Pending | Phase::CallerLeft, None) => {
                let new = self.hub.create(
                    "breakout",
                    Some(st.record.flow.clone()),
                    Some(session.id.clone()),
                );
                if st.phase == Phase::CallerLeft {
                    new.conversation
                        .say(Role::System, &session.notices.caller_left);
                } else {
                    st.phase = Phase::Opened;
                    st.record.state = Phase::Opened.as_str().into();
                }
                if st.phase == Phase::Opened {
                    watch_close(&session, &new.conversation);
                }
                st.conversation = Some(new.conversation.clone());
                st.record.opened_at = Some(SystemTime::now());
                st.record.conversation_id = Some(new.conversation.id.clone());
                st.record.chat_node = Some(self.node.clone());
                session.persist(&st);
                metrics::counter!(names::BREAKOUTS, "event" => "opened").increment(1);
                let flow = st.record.flow.clone();
                drop(st);
                Some(Opened::New {
                    session: session.clone(),
                    flow,
                    new,
                })
            }
            (_, Some(conv)) if browser_key(&conv.id).is_some_and(|k| conv.key_matches(&k)) => {
                Some(Opened::Resume(conv.clone()))
            }
            _ => None,
        }
    }

    /// The live, unexpired session of `token` (this node's own store).
    fn live_session(&self, token: &str) -> Option<Arc<Session>> {
        if token.len() > 128 {
            return None;
        }
        let session = self.sessions.get(&crate::chat::secret_hash(token))?.clone();
        let live = Instant::now() < session.expires && session.lock().phase.live();
        live.then_some(session)
    }

    /// Would a browser opening `token` now start its chat? (Nothing
    /// changes: a link preview may ask.)
    pub async fn claimable(&self, token: &str) -> bool {
        if token.len() > 128 {
            return false;
        }
        if self.shared {
            return self.claimable_shared(token).await;
        }
        self.live_session(token).is_some_and(|s| {
            let st = s.lock();
            st.conversation.is_none() && matches!(st.phase, Phase::Pending | Phase::CallerLeft)
        })
    }

    /// The chat `token` opened, for the browser holding its key; never
    /// starts one.
    pub async fn resume(
        &self,
        token: &str,
        browser_key: BrowserKey<'_>,
    ) -> Option<Arc<Conversation>> {
        if token.len() > 128 {
            return None;
        }
        if self.shared {
            return self.resume_shared(token, browser_key).await;
        }
        let session = self.live_session(token)?;
        let conv = session.lock().conversation.clone()?;
        browser_key(&conv.id)
            .is_some_and(|k| conv.key_matches(&k))
            .then_some(conv)
    }

    /// A session back from the store for a chat resumed after a restart
    /// (or taken over from a node that died). On a store of its own, the
    /// call that waited for it did not survive the restart, so it is
    /// `caller_left`: Breakout: Return still keeps the answers, and the
    /// link still opens for the browser that holds the chat's key.
    pub async fn revive(&self, id: &str, conversation: &Arc<Conversation>) -> Option<Arc<Session>> {
        if self.shared {
            return self.revive_shared(id, conversation).await;
        }
        let live = self.by_id.get(id).map(|s| s.value().clone());
        if let Some(live) = live {
            return Some(live);
        }
        let mut record = self.store.breakout(id).await.ok()??;
        if !matches!(record.state.as_str(), "pending" | "opened" | "caller_left") {
            return None;
        }
        let token_hash = crate::chat::hash_from_hex(&record.token_hash)?;
        record.state = Phase::CallerLeft.as_str().into();
        let expires = instant_of(record.expires_at);
        let session = self.session(record, Phase::CallerLeft, expires, Notices::default(), None);
        session.lock().conversation = Some(conversation.clone());
        session.persist(&session.lock());
        self.insert(token_hash, session.clone());
        Some(session)
    }

    /// A browser's socket on a breakout chat run here: while any is open
    /// the visitor is there (see [`LeftRule`]). `None` for other chats.
    pub fn visitor_socket(&self, conversation: &Conversation) -> Option<VisitorSocket> {
        if self.left.grace.is_zero() {
            return None;
        }
        let id = conversation.record().breakout_id?;
        let session = self.by_id.get(&id)?.clone();
        session.lock().presence.connected();
        Some(VisitorSocket::new(session, self.left.clone()))
    }

    /// Forget sessions finished (or expired) long enough ago.
    fn sweep(&self) {
        let now = Instant::now();
        let keep = |s: &Arc<Session>| {
            let st = s.lock();
            let since = st.finished.unwrap_or(s.expires);
            now < since || now.duration_since(since) < KEEP_FINISHED
        };
        self.sessions.retain(|_, s| keep(s));
        self.by_id.retain(|_, s| keep(s));
    }
}

/// A wall-clock time as an `Instant` (now, if it is past).
fn instant_of(at: SystemTime) -> Instant {
    Instant::now()
        + at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
}

impl Session {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn persist(&self, st: &State) {
        if let Err(e) = self.store.upsert_breakout(st.record.clone()) {
            tracing::error!(%e, "store: cannot queue a breakout");
        }
    }

    fn finish(&self, st: &mut State, phase: Phase) {
        st.phase = phase;
        st.record.state = phase.as_str().into();
        st.finished = Some(Instant::now());
        st.record.finished_at = Some(SystemTime::now());
    }

    pub fn phase(&self) -> Phase {
        self.lock().phase
    }

    /// Wait (on the call's side) for the chat's Return, at most `timeout`.
    pub async fn wait(
        &self,
        returned: &mut oneshot::Receiver<Returned>,
        timeout: Duration,
    ) -> Outcome {
        match tokio::time::timeout(timeout, &mut *returned).await {
            Ok(Ok(values)) => return Outcome::Returned(values),
            _ if self.phase() == Phase::Closed => return Outcome::Closed,
            _ => {}
        }
        if self.time_out().await {
            return Outcome::TimedOut;
        }
        // The chat got there first, in the same instant.
        match returned.try_recv() {
            Ok(values) => Outcome::Returned(values),
            Err(_) if self.phase() == Phase::Closed => Outcome::Closed,
            Err(_) => Outcome::TimedOut,
        }
    }

    /// Breakout: Return reached in the chat.
    pub async fn complete(&self, values: Returned) -> ReturnOutcome {
        if self.shared {
            return self.complete_shared(values).await;
        }
        let mut st = self.lock();
        st.record.result = serde_json::to_string(&values).ok();
        let outcome = match st.phase {
            Phase::Pending | Phase::Opened => {
                match st.waiting_call.take().map(|tx| tx.send(values)) {
                    Some(Ok(())) => ReturnOutcome::Delivered,
                    // The call's side is gone without saying so (its task
                    // ended): the same as a hang-up.
                    _ => ReturnOutcome::CallerLeft,
                }
            }
            Phase::CallerLeft => ReturnOutcome::CallerLeft,
            _ => ReturnOutcome::TooLate,
        };
        match outcome {
            ReturnOutcome::Delivered => {
                self.finish(&mut st, Phase::Returned);
                metrics::counter!(names::BREAKOUTS, "event" => "returned").increment(1);
            }
            ReturnOutcome::CallerLeft => {
                st.record.state = "returned_after_caller_left".into();
                st.finished = Some(Instant::now());
                st.record.finished_at = Some(SystemTime::now());
            }
            ReturnOutcome::TooLate => {}
        }
        self.persist(&st);
        outcome
    }

    /// The call's wait ran out. `false` if the chat returned (or closed)
    /// first.
    async fn time_out(&self) -> bool {
        if self.shared {
            return self.time_out_shared().await;
        }
        let mut st = self.lock();
        if !st.phase.waited_on() {
            return false;
        }
        st.waiting_call = None;
        self.finish(&mut st, Phase::TimedOut);
        self.persist(&st);
        metrics::counter!(names::BREAKOUTS, "event" => "timed_out").increment(1);
        if let Some(c) = &st.conversation {
            c.close(&self.notices.timed_out);
        }
        true
    }

    /// The caller hung up while waiting.
    pub fn caller_left(self: &Arc<Self>) {
        if self.shared {
            return self.caller_left_shared();
        }
        let mut st = self.lock();
        if !st.phase.waited_on() {
            return;
        }
        st.waiting_call = None;
        st.phase = Phase::CallerLeft;
        st.record.state = Phase::CallerLeft.as_str().into();
        self.persist(&st);
        metrics::counter!(names::BREAKOUTS, "event" => "caller_left").increment(1);
        if let Some(c) = &st.conversation {
            c.say(Role::System, &self.notices.caller_left);
        }
    }

    /// The chat closed without a Return: release the waiting call (its
    /// receiver wakes with nothing).
    async fn chat_closed(&self) {
        if self.shared {
            return self.chat_closed_shared().await;
        }
        let mut st = self.lock();
        if st.phase != Phase::Opened {
            return;
        }
        st.waiting_call = None;
        self.finish(&mut st, Phase::Closed);
        self.persist(&st);
        metrics::counter!(names::BREAKOUTS, "event" => "closed").increment(1);
    }

    /// The SMS with the link never went out.
    pub async fn send_failed(&self) {
        if self.shared {
            return self.send_failed_shared().await;
        }
        let mut st = self.lock();
        st.waiting_call = None;
        self.finish(&mut st, Phase::SendFailed);
        self.persist(&st);
        metrics::counter!(names::BREAKOUTS, "event" => "send_failed").increment(1);
    }
}

/// When the chat closes before it returns, the waiting call goes on at
/// once instead of holding the caller until the timeout.
fn watch_close(session: &Arc<Session>, conversation: &Arc<Conversation>) {
    // Unit tests open sessions without a runtime; nobody waits there.
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let mut closed = conversation.closed_watch();
    let session = Arc::downgrade(session);
    runtime.spawn(async move {
        // A conversation dropped unclosed is as closed.
        let _ = closed.wait_for(|c| *c).await;
        if let Some(s) = session.upgrade() {
            s.chat_closed().await;
        }
    });
}

/// Held by the call while it waits: if the call's task is dropped (the
/// caller hung up), the session learns it.
pub struct WaitGuard(pub Arc<Session>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.caller_left();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::ChannelKind;

    fn setup() -> (tempfile::TempDir, Arc<dyn Store>, Breakouts) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(crate::store::SqliteStore::open(&dir.path().join("b.db")).unwrap());
        let hub = Arc::new(ChatHub::new(store.clone()));
        (dir, store.clone(), Breakouts::new(store, hub))
    }

    fn notices() -> Notices {
        Notices {
            caller_left: "The call ended.".into(),
            timed_out: "Time is up.".into(),
        }
    }

    #[tokio::test]
    async fn token_opens_one_conversation_then_only_for_its_browser() {
        let (_d, store, b) = setup();
        let s = b
            .start(
                "c@h",
                "collect",
                "+15551234567",
                Duration::from_secs(60),
                notices(),
            )
            .await;
        assert_eq!(s.token.len(), 22, "128+ bits in base62");
        assert!(s.token.bytes().all(|c| c.is_ascii_alphanumeric()));
        let other = b
            .start(
                "d@h",
                "collect",
                "+15551234567",
                Duration::from_secs(60),
                notices(),
            )
            .await;
        assert_ne!(s.token, other.token);
        let Some(Opened::New { new, flow, .. }) = b.open(&s.token, &|_| None).await else {
            panic!("first open");
        };
        assert_eq!(flow, "collect");
        assert!(
            b.open(&s.token, &|_| None).await.is_none(),
            "a second browser"
        );
        assert!(b.open(&s.token, &|_| Some("wrong".into())).await.is_none());
        assert!(matches!(
            b.open(&s.token, &|_| Some(new.access_key.clone())).await,
            Some(Opened::Resume(c)) if c.id == new.conversation.id
        ));
        assert!(b.open("guessed-token", &|_| None).await.is_none());
        assert!(b.open(&"x".repeat(4000), &|_| None).await.is_none());
        store.flush().await.unwrap();
        let rec = store.breakout(&s.session.id).await.unwrap().unwrap();
        assert_eq!(rec.state, "opened");
        assert_eq!(
            rec.conversation_id.as_deref(),
            Some(new.conversation.id.as_str())
        );
        assert!(!rec.token_hash.contains(&s.token));
    }

    #[tokio::test]
    async fn return_delivers_once_and_closes_the_link() {
        let (_d, store, b) = setup();
        let mut s = b
            .start("c@h", "f", "+1555", Duration::from_secs(60), notices())
            .await;
        let Some(Opened::New { session, new, .. }) = b.open(&s.token, &|_| None).await else {
            panic!()
        };
        let vals: Returned = [("email".to_string(), "a@b.example".to_string())].into();
        assert_eq!(
            session.complete(vals.clone()).await,
            ReturnOutcome::Delivered
        );
        assert_eq!(s.returned.try_recv().unwrap(), vals);
        assert_eq!(session.complete(vals).await, ReturnOutcome::TooLate);
        assert!(!session.time_out().await, "the return won");
        assert!(
            b.open(&s.token, &|_| Some(new.access_key.clone()))
                .await
                .is_none(),
            "used"
        );
        store.flush().await.unwrap();
        let rec = store.breakout(&session.id).await.unwrap().unwrap();
        assert_eq!(rec.state, "returned");
        assert!(rec.result.unwrap().contains("a@b.example"));
    }

    #[tokio::test]
    async fn timeout_closes_the_chat_and_expiry_hides_the_link() {
        let (_d, _s, b) = setup();
        let s = b
            .start("c@h", "f", "+1555", Duration::from_secs(60), notices())
            .await;
        let Some(Opened::New { session, new, .. }) = b.open(&s.token, &|_| None).await else {
            panic!()
        };
        assert!(session.time_out().await);
        assert!(new.conversation.is_closed());
        assert_eq!(
            session.complete(Returned::new()).await,
            ReturnOutcome::TooLate
        );
        let expired = b
            .start("c@h", "f", "+1555", Duration::ZERO, notices())
            .await;
        assert!(b.open(&expired.token, &|_| None).await.is_none());
    }

    #[tokio::test]
    async fn a_link_opened_after_the_hang_up_says_so_first() {
        let (_d, _s, b) = setup();
        let s = b
            .start("c@h", "f", "+1555", Duration::from_secs(60), notices())
            .await;
        drop(WaitGuard(s.session.clone()));
        let Some(Opened::New { session, new, .. }) = b.open(&s.token, &|_| None).await else {
            panic!("the link still opens")
        };
        let (events, _) = new.conversation.subscribe(0);
        assert!(matches!(events[0].as_ref(),
            crate::chat::Event::Message { text, .. } if text == "The call ended."));
        assert!(
            b.open(&s.token, &|_| None).await.is_none(),
            "still one conversation"
        );
        let vals: Returned = [("email".to_string(), "x@y.example".to_string())].into();
        assert_eq!(session.complete(vals).await, ReturnOutcome::CallerLeft);
    }

    #[tokio::test]
    async fn a_visitor_gone_past_the_grace_closes_the_chat_and_wakes_the_call() {
        let (_d, _s, b) = setup();
        let rule = LeftRule {
            grace: Duration::from_secs(30),
            message: "Gone.".into(),
        };
        let b = b.with_left_rule(rule.clone());
        let mut s = b
            .start("c@h", "f", "+1555", Duration::from_secs(60), notices())
            .await;
        let Some(Opened::New { session, new, .. }) = b.open(&s.token, &|_| None).await else {
            panic!()
        };
        let claimed = Instant::now();
        let socket = b
            .visitor_socket(&new.conversation)
            .expect("a breakout chat");
        assert!(!session.close_if_left(&rule, claimed + Duration::from_secs(60)));
        drop(socket);
        let gone = Instant::now();
        assert!(!session.close_if_left(&rule, gone + Duration::from_secs(29)));
        // Moved to SMS, it has no socket and is not left.
        new.conversation
            .rebind(ChannelKind::Sms, Some("+1555".into()), "On SMS now.", None);
        assert!(!session.close_if_left(&rule, gone + Duration::from_secs(31)));
        new.conversation
            .rebind(ChannelKind::Web, None, "Back.", None);
        assert!(session.close_if_left(&rule, gone + Duration::from_secs(31)));
        assert!(new.conversation.is_closed());
        assert_eq!(
            session.wait(&mut s.returned, Duration::from_secs(5)).await,
            Outcome::Closed
        );
        // Nobody waits any more: nothing to close.
        assert!(!session.close_if_left(&rule, gone + Duration::from_secs(99)));
        let (events, _) = new.conversation.subscribe(0);
        assert!(matches!(events.last().unwrap().as_ref(),
            crate::chat::Event::Closed { text, .. } if text == "Gone."));
    }

    #[tokio::test]
    async fn hang_up_tells_the_visitor_and_still_stores_the_result() {
        let (_d, store, b) = setup();
        let s = b
            .start("c@h", "f", "+1555", Duration::from_secs(60), notices())
            .await;
        let Some(Opened::New { session, new, .. }) = b.open(&s.token, &|_| None).await else {
            panic!()
        };
        drop(WaitGuard(session.clone()));
        drop(s.returned);
        let (events, _) = new.conversation.subscribe(0);
        assert!(matches!(events.last().unwrap().as_ref(),
            crate::chat::Event::Message { text, .. } if text == "The call ended."));
        let vals: Returned = [("email".to_string(), "x@y.example".to_string())].into();
        assert_eq!(session.complete(vals).await, ReturnOutcome::CallerLeft);
        store.flush().await.unwrap();
        let rec = store.breakout(&session.id).await.unwrap().unwrap();
        assert_eq!(rec.state, "returned_after_caller_left");
        assert!(rec.result.unwrap().contains("x@y.example"));
    }
}
