//! Live conversations. Each one keeps its transcript in memory (for replay
//! to reconnecting clients) and writes every event through to the store.
//! Appending and subscribing take the same lock, so a subscriber sees every
//! event exactly once: the replay up to the lock, then the live feed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::{broadcast, mpsc, watch};

use super::event::{Choice, Event, InputKind, Live, Role, VisitorInput};
use crate::store::{ConversationRecord, MessageRecord, Store};

/// Longest visitor message kept; the rest is cut.
pub const MAX_VISITOR_TEXT: usize = 2000;
/// How long a closed conversation stays for clients to replay its end.
const KEEP_CLOSED: Duration = Duration::from_secs(600);

pub struct ChatHub {
    conversations: DashMap<String, Arc<Conversation>>,
    store: Arc<dyn Store>,
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
    key_hash: [u8; 32],
    inner: Mutex<Inner>,
    live: broadcast::Sender<Live>,
    inputs: mpsc::UnboundedSender<VisitorInput>,
    store: Arc<dyn Store>,
    closed_tx: watch::Sender<bool>,
}

struct Inner {
    events: Vec<Arc<Event>>,
    /// The prompt waiting for an answer, and its choices.
    open_prompt: Option<(u64, Vec<Choice>)>,
    closed: Option<Instant>,
    record: ConversationRecord,
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
            store,
        }
    }

    /// Start a conversation on the web channel.
    pub fn create(
        &self,
        origin: &str,
        flow: Option<String>,
        breakout_id: Option<String>,
    ) -> NewConversation {
        self.sweep();
        let id = super::random_token(12);
        let access_key = super::random_token(32);
        let (live, _) = broadcast::channel(256);
        let (inputs_tx, inputs) = mpsc::unbounded_channel();
        let record = ConversationRecord {
            id: id.clone(),
            channel: "web".into(),
            origin: origin.into(),
            flow,
            breakout_id,
            created_at: SystemTime::now(),
            closed_at: None,
        };
        if let Err(e) = self.store.upsert_conversation(record.clone()) {
            tracing::error!(%e, "store: cannot queue the conversation");
        }
        let conversation = Arc::new(Conversation {
            id: id.clone(),
            key_hash: super::secret_hash(&access_key),
            inner: Mutex::new(Inner {
                events: Vec::new(),
                open_prompt: None,
                closed: None,
                record,
            }),
            live,
            inputs: inputs_tx,
            store: self.store.clone(),
            closed_tx: watch::channel(false).0,
        });
        self.conversations.insert(id, conversation.clone());
        metrics::counter!("crossline_chat_sessions_total", "origin" => origin.to_string())
            .increment(1);
        metrics::gauge!("crossline_chat_sessions_active").increment(1.0);
        NewConversation {
            conversation,
            access_key,
            inputs,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<Conversation>> {
        self.conversations.get(id).map(|c| c.clone())
    }

    /// Live conversations (open or recently closed), newest first.
    pub fn list(&self) -> Vec<Arc<Conversation>> {
        let mut all: Vec<Arc<Conversation>> =
            self.conversations.iter().map(|c| c.clone()).collect();
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
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves data that is
        // still consistent (every write is one push), so carry on.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Does this browser's key open this conversation?
    pub fn key_matches(&self, key: &str) -> bool {
        super::same_hash(&self.key_hash, &super::secret_hash(key))
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
    fn append(&self, role: Role, make: impl FnOnce(u64) -> Event) -> Option<u64> {
        let mut inner = self.lock();
        if inner.closed.is_some() {
            return None;
        }
        let id = inner.events.len() as u64 + 1;
        let event = Arc::new(make(id));
        let (kind, text, detail) = match event.as_ref() {
            Event::Message { text, .. } => ("message", text.clone(), None),
            Event::Prompt {
                input,
                text,
                choices,
                placeholder,
                ..
            } => (
                "prompt",
                text.clone(),
                serde_json::to_string(&serde_json::json!({
                    "input": input, "choices": choices, "placeholder": placeholder
                }))
                .ok(),
            ),
            Event::Closed { text, .. } => ("closed", text.clone(), None),
        };
        if let Event::Prompt { choices, .. } = event.as_ref() {
            inner.open_prompt = Some((id, choices.clone()));
        }
        if let Event::Closed { .. } = event.as_ref() {
            inner.closed = Some(Instant::now());
            inner.open_prompt = None;
            inner.record.closed_at = Some(SystemTime::now());
            if let Err(e) = self.store.upsert_conversation(inner.record.clone()) {
                tracing::error!(%e, "store: cannot queue the conversation");
            }
            metrics::gauge!("crossline_chat_sessions_active").decrement(1.0);
            self.closed_tx.send_replace(true);
        }
        if let Err(e) = self.store.append_message(MessageRecord {
            conversation_id: self.id.clone(),
            seq: id,
            role: role.as_str().into(),
            kind: kind.into(),
            text,
            detail,
            created_at: SystemTime::now(),
        }) {
            tracing::error!(%e, "store: cannot queue a chat message");
        }
        inner.events.push(event.clone());
        // No subscribers is fine: the transcript has it for later.
        let _ = self.live.send(Live::Event(event));
        Some(id)
    }

    pub fn say(&self, role: Role, text: &str) -> Option<u64> {
        let at = unix_ms(SystemTime::now());
        self.append(role, |id| Event::Message {
            id,
            role,
            text: text.to_string(),
            at,
        })
    }

    /// Ask something; the answer comes back through the flow's inputs.
    pub fn prompt(
        &self,
        input: InputKind,
        text: &str,
        choices: Vec<Choice>,
        placeholder: Option<String>,
    ) -> Option<u64> {
        self.append(Role::Bot, |id| Event::Prompt {
            id,
            input,
            text: text.to_string(),
            choices,
            placeholder,
        })
    }

    pub fn typing(&self, on: bool) {
        let _ = self.live.send(Live::Typing(on));
    }

    /// End the conversation for good (idempotent).
    pub fn close(&self, text: &str) {
        self.append(Role::System, |id| Event::Closed {
            id,
            text: text.to_string(),
        });
    }

    /// Take what the visitor sent: echo it into the transcript and pass it
    /// to the flow. An answer to a prompt that isn't open (a resend after a
    /// reconnect, a stale tab) is dropped, so no answer counts twice.
    pub fn visitor_input(&self, input: VisitorInput) -> bool {
        let input = match input {
            VisitorInput::Answer { prompt, value } => VisitorInput::Answer {
                prompt,
                value: clip(value),
            },
            VisitorInput::Text(t) => VisitorInput::Text(clip(t)),
        };
        let shown = {
            let mut inner = self.lock();
            if inner.closed.is_some() {
                return false;
            }
            match (&input, &inner.open_prompt) {
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
                (VisitorInput::Answer { .. }, _) => return false,
                (VisitorInput::Text(t), _) => {
                    inner.open_prompt = None;
                    t.clone()
                }
            }
        };
        if shown.trim().is_empty() {
            return false;
        }
        self.say(Role::Visitor, &shown);
        self.inputs.send(input).is_ok()
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

    #[test]
    fn replay_then_live_without_gap_and_written_through() {
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
        store.flush().unwrap();
        let stored = store.messages(&c.id, 0).unwrap();
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
        assert!(!c.visitor_input(answer(p + 7)), "not the open prompt");
        assert!(c.visitor_input(answer(p)));
        assert!(!c.visitor_input(answer(p)), "a resend is dropped");
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
        assert!(c.visitor_input(VisitorInput::Text("é".repeat(MAX_VISITOR_TEXT))));
        let (all, _) = c.subscribe(0);
        match all[0].as_ref() {
            Event::Message { text, .. } => assert!(text.len() <= MAX_VISITOR_TEXT),
            other => panic!("{other:?}"),
        }
        c.close("bye");
        c.close("bye again");
        assert!(c.say(Role::Bot, "late").is_none());
        assert!(!c.visitor_input(VisitorInput::Text("hi".into())));
        let (all, _) = c.subscribe(0);
        assert_eq!(all.len(), 2);
        assert!(c.is_closed());
        assert_eq!(hub.list().len(), 1);
    }
}
