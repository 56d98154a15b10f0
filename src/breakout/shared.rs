//! Breakouts on a shared store (PostgreSQL, several gateways). The call
//! waits on the node that answered it; the phone's browser may land on any
//! node. So the session lives in the store and the store decides:
//!
//! - any node validates a link by its token's hash, shows the landing page
//!   and lets the first browser claim it (one conditional UPDATE); the
//!   claiming node runs the chat;
//! - every later change (Return, timeout, hang-up, chat closed) is one
//!   conditional UPDATE from pending/opened, so of a Return racing the
//!   timeout or the hang-up on two nodes exactly one wins; the statement
//!   notifies the node the news is for (`LISTEN/NOTIFY`), which re-reads
//!   the row and acts on it ([`Session::apply`]): it wakes the waiting
//!   call, or closes or tells the chat;
//! - each node re-reads the sessions it waits on when its listener comes
//!   back, and every [`SAFETY_POLL`], so a lost notification costs time,
//!   never the outcome.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::{
    instant_of, watch_close, Breakouts, BrowserKey, Notices, Opened, Phase, ReturnOutcome,
    Returned, Session,
};
use crate::chat::{Conversation, Role};
use crate::store::{BreakoutRecord, BreakoutSide, StoreEvent};
use crate::telemetry::names;

/// How often a node re-reads the sessions it waits on, whatever it heard.
const SAFETY_POLL: Duration = Duration::from_secs(2);
/// Past its expiry a session can only end by its call's timeout, on the
/// call's node; if that node died, stop asking after this.
const WATCH_AFTER_EXPIRY: Duration = Duration::from_secs(30);

const WAITED_ON: &[&str] = &["pending", "opened"];

impl Breakouts {
    pub(super) async fn open_shared(
        &self,
        token: &str,
        browser_key: BrowserKey<'_>,
    ) -> Option<Opened> {
        let hash = crate::chat::secret_hash(token);
        let claimed = self
            .store
            .claim_breakout(&crate::chat::hash_hex(&hash), &self.node, SystemTime::now())
            .await;
        let record = match claimed {
            Ok(Some(record)) => record,
            // Taken (or unknown, expired, over): the same browser again?
            Ok(None) => {
                return self
                    .resume_shared(token, browser_key)
                    .await
                    .map(Opened::Resume)
            }
            Err(e) => {
                tracing::error!(%e, "store: cannot claim a breakout link");
                return None;
            }
        };
        let session = self.adopt(hash, record);
        let phase = session.phase();
        let flow = session.lock().record.flow.clone();
        let new = self
            .hub
            .create("breakout", Some(flow.clone()), Some(session.id.clone()));
        if phase == Phase::CallerLeft {
            new.conversation
                .say(Role::System, &session.notices.caller_left);
        } else {
            watch_close(&session, &new.conversation);
        }
        session.attach(&new.conversation, &self.node);
        metrics::counter!(names::BREAKOUTS, "event" => "opened").increment(1);
        Some(Opened::New { session, flow, new })
    }

    pub(super) async fn claimable_shared(&self, token: &str) -> bool {
        let hash = crate::chat::hash_hex(&crate::chat::secret_hash(token));
        match self.store.breakout_by_token(&hash).await {
            Ok(Some(r)) => {
                r.chat_node.is_none()
                    && matches!(r.state.as_str(), "pending" | "caller_left")
                    && r.expires_at > SystemTime::now()
            }
            Ok(None) => false,
            Err(e) => {
                tracing::error!(%e, "store: cannot read a breakout link");
                false
            }
        }
    }

    pub(super) async fn resume_shared(
        &self,
        token: &str,
        browser_key: BrowserKey<'_>,
    ) -> Option<Arc<Conversation>> {
        let hash = crate::chat::hash_hex(&crate::chat::secret_hash(token));
        let record = self.store.breakout_by_token(&hash).await.ok()??;
        let live = Phase::parse(&record.state).is_some_and(Phase::live);
        if !live || record.expires_at <= SystemTime::now() {
            return None;
        }
        let conversation = record.conversation_id?;
        let key = browser_key(&conversation)?;
        // Here, or restored here if no live node runs it.
        self.hub.open_with_key(&conversation, &key).await
    }

    /// A chat with a breakout, restored on this node (after a restart, or
    /// taken over from a node that died): this node runs the chat now. The
    /// call may still wait on another node; if it waited on this one, it
    /// did not survive the restart.
    pub(super) async fn revive_shared(
        &self,
        id: &str,
        conversation: &Arc<Conversation>,
    ) -> Option<Arc<Session>> {
        if let Some(live) = self.by_id.get(id).map(|s| s.value().clone()) {
            if live.lock().conversation.is_none() {
                live.attach(conversation, &self.node);
            }
            return Some(live);
        }
        let mut record = self.store.breakout(id).await.ok()??;
        if !Phase::parse(&record.state).is_some_and(Phase::live) {
            return None;
        }
        if record.node.as_deref() == Some(self.node.as_str()) {
            let left = self
                .store
                .move_breakout(id, WAITED_ON, "caller_left", None, BreakoutSide::Chat)
                .await;
            if let Ok(Some(now)) = left {
                record = now;
            }
        }
        let hash = crate::chat::hash_from_hex(&record.token_hash)?;
        let session = self.adopt(hash, record);
        if session.phase() == Phase::Opened {
            watch_close(&session, conversation);
        }
        session.attach(conversation, &self.node);
        Some(session)
    }

    /// The session of `record` here: this node's own (it holds the call),
    /// brought up to date, or a new one for the chat.
    fn adopt(&self, token_hash: [u8; 32], record: BreakoutRecord) -> Arc<Session> {
        if let Some(session) = self.by_id.get(&record.id).map(|s| s.value().clone()) {
            session.apply(record);
            return session;
        }
        let phase = Phase::parse(&record.state).unwrap_or(Phase::Pending);
        let notices: Notices = record
            .notices
            .as_deref()
            .and_then(|n| serde_json::from_str(n).ok())
            .unwrap_or_default();
        let expires = instant_of(record.expires_at);
        let session = self.session(record, phase, expires, notices, None);
        self.insert(token_hash, session.clone());
        session
    }

    /// Follow the store: act on what other nodes did, as they say so, and
    /// check the sessions still waited on when the listener (re)connects
    /// and every [`SAFETY_POLL`].
    pub fn start_cluster_tasks(self: &Arc<Self>) {
        if !self.shared {
            return;
        }
        let mut events = self.store.listen(&self.node);
        let me = self.clone();
        tokio::spawn(async move {
            let mut poll = tokio::time::interval(SAFETY_POLL);
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        StoreEvent::Breakout(id) => me.refresh(vec![id]).await,
                        StoreEvent::Resync => me.refresh(me.waited_on()).await,
                        StoreEvent::Inbox | StoreEvent::User(_) | StoreEvent::Registrations(_) => {}
                    },
                    _ = poll.tick() => {
                        me.sweep();
                        me.refresh(me.waited_on()).await
                    }
                }
            }
        });
    }

    /// Sessions here whose outcome is still open.
    fn waited_on(&self) -> Vec<String> {
        let now = Instant::now();
        self.by_id
            .iter()
            .filter(|s| s.phase().waited_on() && now < s.expires + WATCH_AFTER_EXPIRY)
            .map(|s| s.id.clone())
            .collect()
    }

    async fn refresh(&self, ids: Vec<String>) {
        if ids.is_empty() {
            return;
        }
        match self.store.breakouts_by_id(ids).await {
            Ok(records) => {
                for record in records {
                    if let Some(s) = self.by_id.get(&record.id).map(|s| s.value().clone()) {
                        s.apply(record);
                    }
                }
            }
            Err(e) => tracing::warn!(%e, "store: cannot read breakouts"),
        }
    }
}

impl Session {
    /// This node runs the session's chat now.
    fn attach(&self, conversation: &Arc<Conversation>, node: &str) {
        let mut st = self.lock();
        st.conversation = Some(conversation.clone());
        st.record.conversation_id = Some(conversation.id.clone());
        st.record.chat_node = Some(node.to_string());
        if let Err(e) = self
            .store
            .set_breakout_chat(&self.id, &conversation.id, node)
        {
            tracing::error!(%e, "store: cannot queue a breakout's chat");
        }
    }

    /// Catch up with the store's row: wake the waiting call with what the
    /// chat returned, release it when the chat closed, close or tell the
    /// chat when the call moved on. Each once, whoever sees the row first.
    pub(super) fn apply(&self, record: BreakoutRecord) {
        let Some(stored) = Phase::parse(&record.state) else {
            return;
        };
        let mut st = self.lock();
        let before = st.phase;
        // A read older than what this node already knows changes nothing.
        if rank(stored) < rank(before) {
            return;
        }
        let mut close_chat = false;
        let mut tell_chat = false;
        match stored {
            Phase::Returned => {
                if let Some(tx) = st.waiting_call.take() {
                    let values: Returned = record
                        .result
                        .as_deref()
                        .and_then(|r| serde_json::from_str(r).ok())
                        .unwrap_or_default();
                    let _ = tx.send(values);
                }
            }
            Phase::TimedOut => close_chat = before.live(),
            Phase::CallerLeft => tell_chat = before.waited_on(),
            _ => {}
        }
        if !stored.waited_on() {
            // Dropped unsent: the call wakes with nothing (closed).
            st.waiting_call = None;
        }
        if !stored.live() && st.finished.is_none() {
            st.finished = Some(Instant::now());
        }
        st.phase = stored;
        st.record = record;
        let chat = st.conversation.clone();
        drop(st);
        if let Some(chat) = chat {
            if close_chat {
                chat.close(&self.notices.timed_out);
            } else if tell_chat {
                chat.say(Role::System, &self.notices.caller_left);
            }
        }
    }

    async fn moved(
        &self,
        to: Phase,
        from: &[&str],
        finished: bool,
        side: BreakoutSide,
    ) -> Result<bool, crate::store::StoreError> {
        let finished = finished.then(SystemTime::now);
        match self
            .store
            .move_breakout(&self.id, from, to.as_str(), finished, side)
            .await?
        {
            Some(record) => {
                metrics::counter!(names::BREAKOUTS, "event" => to.as_str()).increment(1);
                self.apply(record);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Learn what won (after losing a race).
    async fn reread(&self) {
        match self.store.breakout(&self.id).await {
            Ok(Some(record)) => self.apply(record),
            Ok(None) => {}
            Err(e) => tracing::warn!(%e, breakout = %self.id, "store: cannot read a breakout"),
        }
    }

    pub(super) async fn complete_shared(&self, values: Returned) -> ReturnOutcome {
        let result = serde_json::to_string(&values).unwrap_or_else(|_| "{}".into());
        match self.store.return_breakout(&self.id, &result).await {
            Ok(Some(record)) => {
                let outcome = match record.state.as_str() {
                    "returned" => ReturnOutcome::Delivered,
                    "returned_after_caller_left" => ReturnOutcome::CallerLeft,
                    _ => ReturnOutcome::TooLate,
                };
                if outcome == ReturnOutcome::Delivered {
                    metrics::counter!(names::BREAKOUTS, "event" => "returned").increment(1);
                }
                self.apply(record);
                outcome
            }
            Ok(None) => ReturnOutcome::TooLate,
            Err(e) => {
                tracing::error!(%e, breakout = %self.id, "store: a breakout return was not saved");
                ReturnOutcome::TooLate
            }
        }
    }

    pub(super) async fn time_out_shared(&self) -> bool {
        match self
            .moved(Phase::TimedOut, WAITED_ON, true, BreakoutSide::Chat)
            .await
        {
            Ok(true) => true,
            Ok(false) => {
                self.reread().await;
                false
            }
            // The store can't say: the call goes on (its flow's timeout
            // branch) rather than hold the caller.
            Err(e) => {
                tracing::error!(%e, breakout = %self.id, "store: cannot time a breakout out");
                let mut st = self.lock();
                st.waiting_call = None;
                self.finish(&mut st, Phase::TimedOut);
                true
            }
        }
    }

    pub(super) fn caller_left_shared(self: &Arc<Self>) {
        {
            let mut st = self.lock();
            if !st.phase.waited_on() {
                return;
            }
            st.waiting_call = None;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let me = self.clone();
        runtime.spawn(async move {
            if let Err(e) = me
                .moved(Phase::CallerLeft, WAITED_ON, false, BreakoutSide::Chat)
                .await
            {
                tracing::error!(%e, breakout = %me.id, "store: cannot record a breakout's hang-up");
            }
        });
    }

    pub(super) async fn chat_closed_shared(&self) {
        if let Err(e) = self
            .moved(Phase::Closed, &["opened"], true, BreakoutSide::Call)
            .await
        {
            tracing::error!(%e, breakout = %self.id, "store: cannot close a breakout");
        }
    }

    pub(super) async fn send_failed_shared(&self) {
        self.lock().waiting_call = None;
        if let Err(e) = self
            .moved(Phase::SendFailed, WAITED_ON, true, BreakoutSide::Chat)
            .await
        {
            tracing::error!(%e, breakout = %self.id, "store: cannot record a failed breakout SMS");
        }
    }
}

/// How far along a session is: news never moves it back.
fn rank(phase: Phase) -> u8 {
    match phase {
        Phase::Pending => 0,
        Phase::Opened => 1,
        Phase::CallerLeft => 2,
        Phase::Returned | Phase::TimedOut | Phase::Closed | Phase::SendFailed => 3,
    }
}
