//! Queues (ACD): callers wait with music and position announcements until
//! an agent is free. The rules live in the sans-IO [`acd::Acd`]; this is
//! its driver: a lock around it, a timer task for wrap-ups and metrics,
//! and a [`Ticket`] per waiting caller through which the `queue` node
//! hears which agents to ring and reports how it went. Dropping a ticket
//! (the caller hung up) takes the caller out.
//!
//! Virtual hold: a caller who takes the callback offer gives up their
//! ticket but keeps their entry ([`Ticket::go_virtual`]), written to the
//! store so a restart reads it back ([`Queues::restore`]). When the ACD
//! says their turn came, they are called back through the callback path
//! (its trunk, limits, outbound policy and consent record) with the
//! built-in flow [`CALLBACK_FLOW`], whose `queue` node takes their place
//! back ([`Queues::resume`]) once they answer. A callback that isn't
//! answered is tried again, `callback_attempts` in all.

pub mod acd;
pub mod announce;
pub mod config;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, watch, Notify};

use crate::callback::{Callbacks, NewCallback};
use crate::store::{CallbackRecord, QueueCallbackRecord, Store};
use crate::telemetry::names;
use acd::{
    Acd, CallbackDue, CallbackRetry, EntryId, Left, Line, Offer, QueueRules, QueueSnapshot,
    Refused, Standing, Unchanged,
};
use announce::Language;

/// The built-in voice flow a virtual-hold callback runs once answered.
pub const CALLBACK_FLOW: &str = "queue-callback";

/// [`CALLBACK_FLOW`]: one `queue` node that takes the caller's place back
/// (the queue is the caller's own, found by the callback's id).
pub fn callback_flow() -> crate::flow::Flow {
    let id = "queue-callback".to_string();
    let node = crate::flow::model::Node {
        id: id.clone(),
        line: 0,
        kind: crate::flow::NodeKind::Queue(crate::flow::model::QueueNode {
            id: id.clone(),
            kind: "queue".into(),
            queue: String::new(),
            skills: Vec::new(),
            next: None,
            resume_callback: true,
        }),
    };
    crate::flow::Flow {
        name: CALLBACK_FLOW.into(),
        file: std::path::PathBuf::new(),
        channel: crate::flow::Channel::Voice,
        start: id.clone(),
        nodes: std::collections::BTreeMap::from([(id, node)]),
    }
}

/// What virtual hold needs: the callback path, and the store that keeps
/// virtual-hold callers across a restart.
pub struct VirtualHold {
    pub callbacks: Arc<Callbacks>,
    pub store: Arc<dyn Store>,
    /// This gateway (`[store] node_id`): a restart reads back its own.
    pub node: String,
}
pub use config::{AgentConfig, QueueConfig};

/// Queues a TwiML `<Enqueue>` may make at run time, beyond the configured
/// ones: a misbehaving app can't grow the ACD without bound.
pub const MAX_MADE_QUEUES: usize = 1_000;

/// A made queue's caller limit unless the app sets one, and the largest
/// it may set: Twilio's `MaxSize` default and maximum.
pub const DEFAULT_MAX_SIZE: usize = 1_000;
pub const LARGEST_MAX_SIZE: usize = 5_000;

/// What [`Queues::make`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    Made,
    /// A queue of that name is there already (configured or made).
    Exists,
    /// [`MAX_MADE_QUEUES`] are made already.
    TooMany,
}

/// When a queue came to be and was last changed (wall clock, for the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueDates {
    pub created: SystemTime,
    pub updated: SystemTime,
}

/// Every queue of the config, shared by the flows and the API.
pub struct Queues {
    configs: Vec<QueueConfig>,
    /// `user:<name>` agents' `display_name`s, for operators.
    display_names: HashMap<String, String>,
    inner: Mutex<Inner>,
    /// Wakes the timer task when the next deadline may have moved.
    changed: Notify,
    /// Wakes whoever waits for a caller to pull ([`Queues::joined`]).
    joined: Notify,
    /// None: callbacks can't be offered (unit tests).
    hold: Option<VirtualHold>,
    /// For the tasks that follow callbacks.
    me: Weak<Queues>,
    /// Made queues' dates; configured ones date from `started`.
    dates: Mutex<HashMap<String, QueueDates>>,
    started: SystemTime,
}

struct Inner {
    acd: Acd,
    /// Where each waiting caller hears its offers.
    waiters: HashMap<EntryId, mpsc::UnboundedSender<Offer>>,
    /// Virtual-hold callers (their stored rows), until they leave.
    virtuals: HashMap<EntryId, QueueCallbackRecord>,
    /// Callbacks being placed (callback id), and whose they are.
    calling: HashMap<String, EntryId>,
}

impl Inner {
    /// Hand every new offer to its caller; an offer to a caller already
    /// gone goes back as unanswered. Returns the callbacks now due.
    fn deliver(&mut self, now: Instant) -> Vec<CallbackDue> {
        while let Some(offer) = self.acd.poll_offer() {
            let sent = self
                .waiters
                .get(&offer.entry)
                .is_some_and(|w| w.send(offer.clone()).is_ok());
            if !sent {
                self.waiters.remove(&offer.entry);
                self.acd.leave(now, offer.entry, Left::Abandoned);
            }
        }
        std::iter::from_fn(|| self.acd.poll_callback()).collect()
    }
}

impl Queues {
    /// `users` lend their tags as skills to their `user:` agents; without
    /// `hold`, callbacks can't be offered (unit tests).
    pub fn new(
        configs: &[QueueConfig],
        users: &[crate::registrar::UserConfig],
        hold: Option<VirtualHold>,
    ) -> Arc<Queues> {
        let acd = Acd::new(
            Instant::now(),
            configs.iter().map(|q| q.rules(users)).collect(),
        );
        let display_names = users
            .iter()
            .filter_map(|u| Some((format!("user:{}", u.name), u.display_name.clone()?)))
            .collect();
        Arc::new_cyclic(|me| Queues {
            configs: configs.to_vec(),
            display_names,
            inner: Mutex::new(Inner {
                acd,
                waiters: HashMap::new(),
                virtuals: HashMap::new(),
                calling: HashMap::new(),
            }),
            changed: Notify::new(),
            joined: Notify::new(),
            hold,
            me: me.clone(),
            dates: Mutex::new(HashMap::new()),
            started: SystemTime::now(),
        })
    }

    pub fn config(&self, name: &str) -> Option<&QueueConfig> {
        self.configs.iter().find(|q| q.name == name)
    }

    /// What operators call an agent: its user's `display_name`, if any.
    pub fn display_name(&self, target: &str) -> Option<&str> {
        self.display_names.get(target).map(String::as_str)
    }

    /// Run `f` on the state machine, deliver what it offered, and have the
    /// timer task look at its deadline again.
    fn with<T>(&self, f: impl FnOnce(&mut Acd, Instant) -> T) -> T {
        let out = self.quietly(f);
        self.changed.notify_one();
        out
    }

    /// [`Queues::with`] without waking the timer task (the task itself, and
    /// reads that change no deadline).
    fn quietly<T>(&self, f: impl FnOnce(&mut Acd, Instant) -> T) -> T {
        self.locked(|inner, now| f(&mut inner.acd, now))
    }

    /// Run `f` on the driver's state, deliver what the ACD offered, and
    /// (the lock let go) place the callbacks that came due.
    fn locked<T>(&self, f: impl FnOnce(&mut Inner, Instant) -> T) -> T {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut inner, now);
        let due = inner.deliver(now);
        drop(inner);
        for d in due {
            self.call_back(d);
        }
        out
    }

    /// Put a caller in `queue`, unless there is no such queue or it is full.
    pub fn join(self: &Arc<Self>, queue: &str, skills: Vec<String>) -> Result<Ticket, Refused> {
        let (tx, offers) = mpsc::unbounded_channel();
        let joined_at = SystemTime::now();
        let order = millis(joined_at);
        let entry = self.locked(|inner, now| {
            // Registered before joining, so the first offer finds its caller.
            let entry = inner
                .acd
                .join(now, queue, order, Duration::ZERO, skills.clone())?;
            inner.waiters.insert(entry, tx);
            Ok(entry)
        })?;
        let place = Place {
            queue: queue.to_string(),
            skills,
            order,
            joined_at,
        };
        Ok(self.ticket(entry, offers, Some(place)))
    }

    /// The ticket of a caller just put (back) on the line.
    fn ticket(
        self: &Arc<Self>,
        entry: EntryId,
        offers: mpsc::UnboundedReceiver<Offer>,
        place: Option<Place>,
    ) -> Ticket {
        self.changed.notify_one();
        self.joined.notify_waiters();
        Ticket {
            queues: self.clone(),
            entry,
            offers,
            done: false,
            place,
        }
    }

    /// Whether a waiting caller at `phone` may be offered a callback: the
    /// callback path would dial that number now.
    pub fn can_call_back(&self, phone: &str) -> bool {
        phone.starts_with('+')
            && self
                .hold
                .as_ref()
                .is_some_and(|h| h.callbacks.would_allow(phone))
    }

    /// Dial the virtual-hold caller whose turn came.
    fn call_back(&self, due: CallbackDue) {
        let row = self.locked(|inner, _| inner.virtuals.get(&due.entry).cloned());
        let (Some(hold), Some(row)) = (&self.hold, row) else {
            tracing::error!(queue = %due.queue, "queue: a callback came due with nobody to call");
            return self.callback_failed(&due.queue, due.entry);
        };
        let language = self
            .config(&due.queue)
            .and_then(|c| Language::parse(&c.language))
            .unwrap_or(Language::En);
        let mut context = serde_json::Map::new();
        context.insert("queue".into(), due.queue.clone().into());
        let request = NewCallback {
            phone: row.phone.clone(),
            flow: Some(CALLBACK_FLOW.into()),
            // Pressing 1 after this offer was the caller's consent.
            consent: Some((true, announce::callback_offer(language).to_string())),
            context,
            ..Default::default()
        };
        let placed = hold
            .callbacks
            .create(request, &format!("queue:{}", due.queue), |_| Ok(()));
        let record = match placed {
            Ok(record) => record,
            Err(e) => {
                tracing::warn!(queue = %due.queue, %e, "queue: cannot call back a virtual-hold caller");
                return self.callback_failed(&due.queue, due.entry);
            }
        };
        metrics::counter!(names::QUEUE_CALLBACKS_PLACED, "queue" => due.queue.clone()).increment(1);
        tracing::info!(queue = %due.queue, callback = %record.id, phone = %crate::mask::phone(&row.phone),
            "queue: calling back a virtual-hold caller");
        self.locked(|inner, _| inner.calling.insert(record.id.clone(), due.entry));
        let Some(states) = hold.callbacks.watch(&record.id) else {
            // Over already (the gateway is stopping).
            return self.callback_over(&record.id);
        };
        // Without a runtime (shutting down) nobody follows it: the stored
        // row calls them back after the restart.
        if let (Some(me), Ok(rt)) = (self.me.upgrade(), tokio::runtime::Handle::try_current()) {
            rt.spawn(me.follow(record.id, states));
        }
    }

    /// Wait for callback `id` to end; one that ended before its caller
    /// took their place back failed.
    async fn follow(self: Arc<Self>, id: String, mut states: watch::Receiver<CallbackRecord>) {
        loop {
            let ended = matches!(
                states.borrow_and_update().state.as_str(),
                "failed" | "completed"
            );
            if ended || states.changed().await.is_err() {
                break;
            }
        }
        self.callback_over(&id);
    }

    fn callback_over(&self, id: &str) {
        let Some((entry, queue)) = self.locked(|inner, _| {
            let entry = inner.calling.remove(id)?;
            let still_calling = inner.acd.line(entry) == Some(Line::CallingBack);
            let queue = inner.virtuals.get(&entry).map(|r| r.queue.clone());
            still_calling.then_some(entry).zip(queue)
        }) else {
            return;
        };
        self.callback_failed(&queue, entry);
    }

    /// A callback wasn't answered or couldn't be placed: try again later,
    /// or, out of attempts, drop the caller.
    fn callback_failed(&self, queue: &str, entry: EntryId) {
        let store = self.hold.as_ref().map(|h| h.store.clone());
        let Some(retry) = self.with(|acd, now| acd.callback_failed(now, entry)) else {
            return;
        };
        let dropped = retry == CallbackRetry::Dropped;
        metrics::counter!(names::QUEUE_CALLBACKS_FAILED, "queue" => queue.to_string(),
            "dropped" => if dropped { "true" } else { "false" })
        .increment(1);
        let row = self.locked(|inner, _| {
            if dropped {
                inner.virtuals.remove(&entry)
            } else {
                let failures = inner.acd.callback_failures(entry)?;
                let row = inner.virtuals.get_mut(&entry)?;
                row.failures = failures;
                Some(row.clone())
            }
        });
        let (Some(store), Some(row)) = (store, row) else {
            return;
        };
        let written = if dropped {
            tracing::warn!(%queue, failures = row.failures + 1, "queue: virtual-hold caller dropped: the callbacks weren't answered");
            store.delete_queue_callback(&row.id)
        } else {
            tracing::info!(%queue, failures = row.failures, "queue: callback not answered; trying again later");
            store.upsert_queue_callback(row)
        };
        if let Err(e) = written {
            tracing::error!(%e, "store: cannot queue a virtual-hold change");
        }
    }

    /// The queue of callback `id`, while it is being placed.
    pub fn calling_back(&self, id: &str) -> Option<String> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let entry = inner.calling.get(id)?;
        inner.virtuals.get(entry).map(|r| r.queue.clone())
    }

    /// The customer of callback `id` answered: their place, back on the
    /// line, first for the agent claimed for them.
    pub fn resume(self: &Arc<Self>, id: &str) -> Option<Ticket> {
        let (tx, offers) = mpsc::unbounded_channel();
        let entry = self.locked(|inner, now| {
            let entry = inner.calling.remove(id)?;
            inner.waiters.insert(entry, tx);
            if inner.acd.callback_answered(now, entry) {
                Some(entry)
            } else {
                inner.waiters.remove(&entry);
                None
            }
        })?;
        Some(self.ticket(entry, offers, None))
    }

    /// After a start: the virtual-hold callers this gateway kept, back in
    /// their places with the time they waited; they are called back as
    /// their turns come. Returns how many.
    pub async fn restore(&self) -> usize {
        let Some(hold) = &self.hold else {
            return 0;
        };
        let rows = match hold.store.queue_callbacks(&hold.node).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::error!(%e, "store: cannot read the virtual-hold callers");
                return 0;
            }
        };
        let wall = SystemTime::now();
        let mut count = 0;
        for row in rows {
            let waited = wall.duration_since(row.joined_at).unwrap_or_default();
            let placed = self.locked(|inner, now| {
                let entry = inner.acd.join_virtual(
                    now,
                    &row.queue,
                    row.order_ms,
                    waited,
                    row.skills.clone(),
                    row.failures,
                )?;
                inner.virtuals.insert(entry, row.clone());
                Some(entry)
            });
            match placed {
                Some(_) => count += 1,
                None => {
                    tracing::warn!(queue = %row.queue, "queue: a virtual-hold caller's queue is gone from the config; kept in the store")
                }
            }
        }
        self.changed.notify_one();
        count
    }

    /// The caller of `entry` left the queue for good: a virtual-hold row
    /// of theirs goes (`connected`: bridged to an agent).
    fn settled(&self, entry: EntryId, connected: bool) {
        let row = self.locked(|inner, _| inner.virtuals.remove(&entry));
        let (Some(row), Some(hold)) = (row, &self.hold) else {
            return;
        };
        if connected {
            metrics::counter!(names::QUEUE_CALLBACKS_CONNECTED, "queue" => row.queue.clone())
                .increment(1);
            tracing::info!(queue = %row.queue, "queue: called-back caller reached an agent");
        }
        if let Err(e) = hold.store.delete_queue_callback(&row.id) {
            tracing::error!(%e, "store: cannot queue a virtual-hold change");
        }
    }

    /// Whether `queue` exists (configured, or made by [`Queues::ensure`]).
    pub fn exists(&self, queue: &str) -> bool {
        self.quietly(|acd, _| acd.has_queue(queue))
    }

    /// Make `queue` if it isn't there: agent-less, served only by pulls
    /// (what Twilio does for an `<Enqueue>` name it doesn't know), with
    /// Twilio's default size. False: [`MAX_MADE_QUEUES`] are made already.
    pub fn ensure(self: &Arc<Self>, queue: &str) -> bool {
        self.make(queue, DEFAULT_MAX_SIZE) != Made::TooMany
    }

    /// Make an agent-less queue holding at most `max_size` callers (the
    /// Queues API's create).
    pub fn make(self: &Arc<Self>, queue: &str, max_size: usize) -> Made {
        let configured = self.configs.len();
        let (made, first) = self.quietly(|acd, _| {
            if acd.has_queue(queue) {
                return (Made::Exists, false);
            }
            if acd.queue_count() >= configured + MAX_MADE_QUEUES {
                return (Made::TooMany, false);
            }
            acd.add_queue(QueueRules {
                name: queue.to_string(),
                strategy: acd::Strategy::LongestIdle,
                agents: Vec::new(),
                sla: Duration::from_secs(20),
                wrap_up: Duration::ZERO,
                assumed_handle: Duration::from_secs(180),
                max_callers: Some(max_size),
                // Made queues serve app callers only: no virtual hold.
                callback_attempts: 0,
                callback_retry: Duration::ZERO,
            });
            (Made::Made, acd.queue_count() == 1)
        });
        if made == Made::Made {
            let now = SystemTime::now();
            self.dates_locked().insert(
                queue.to_string(),
                QueueDates {
                    created: now,
                    updated: now,
                },
            );
        }
        if first {
            // No queue was configured, so no timer runs: metrics need one.
            self.start_timer();
        }
        made
    }

    /// A queue's caller limit (`Some(None)`: none); `None`: no such queue.
    pub fn max_size(&self, queue: &str) -> Option<Option<usize>> {
        self.quietly(|acd, _| acd.max_callers(queue))
    }

    /// Change a made queue's caller limit (configured ones follow the
    /// config file).
    pub fn set_max_size(&self, queue: &str, max_size: usize) -> Result<(), Unchanged> {
        if self.config(queue).is_some() {
            return Err(Unchanged::Configured);
        }
        if !self.with(|acd, _| acd.set_max_callers(queue, Some(max_size))) {
            return Err(Unchanged::NoSuchQueue);
        }
        if let Some(d) = self.dates_locked().get_mut(queue) {
            d.updated = SystemTime::now();
        }
        Ok(())
    }

    /// Remove a made queue nobody is in.
    pub fn remove(&self, queue: &str) -> Result<(), Unchanged> {
        if self.config(queue).is_some() {
            return Err(Unchanged::Configured);
        }
        self.with(|acd, _| acd.remove_queue(queue))?;
        self.dates_locked().remove(queue);
        // The series would otherwise keep its last values.
        metrics::gauge!(names::QUEUE_WAITING, "queue" => queue.to_string()).set(0.0);
        metrics::gauge!(names::QUEUE_LONGEST_WAIT, "queue" => queue.to_string()).set(0.0);
        Ok(())
    }

    /// When `queue` was made and last changed (configured: at start).
    pub fn dates(&self, queue: &str) -> QueueDates {
        self.dates_locked()
            .get(queue)
            .copied()
            .unwrap_or(QueueDates {
                created: self.started,
                updated: self.started,
            })
    }

    fn dates_locked(&self) -> std::sync::MutexGuard<'_, HashMap<String, QueueDates>> {
        self.dates.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take the first waiting caller of `queue` that `may_take` accepts
    /// and no agent rings for (see [`Acd::pull`]): its entry and wait.
    pub fn pull(
        &self,
        queue: &str,
        may_take: impl Fn(EntryId) -> bool,
    ) -> Option<(EntryId, Duration)> {
        self.with(|acd, now| acd.pull(now, queue, may_take))
    }

    /// Where `entry` stands: place, queue size, its wait, the average.
    pub fn standing(&self, entry: EntryId) -> Option<Standing> {
        self.quietly(|acd, now| acd.standing(now, entry))
    }

    /// `entry`'s place (1: next) and estimated wait.
    pub fn position(&self, entry: EntryId) -> Option<(usize, Duration)> {
        self.quietly(|acd, _| acd.position(entry))
    }

    /// Resolves when a caller next joins any queue; made before looking
    /// (and `enable`d), it misses none that join meanwhile.
    pub fn joined(&self) -> tokio::sync::futures::Notified<'_> {
        self.joined.notified()
    }

    pub fn snapshot(&self) -> Vec<QueueSnapshot> {
        self.quietly(|acd, now| acd.snapshot(now))
    }

    pub fn agents(&self) -> Vec<acd::AgentSnapshot> {
        self.quietly(|acd, now| acd.agents(now))
    }

    /// Pause or resume an agent; false: no such agent.
    pub fn set_paused(&self, target: &str, paused: bool) -> bool {
        self.with(|acd, now| acd.set_paused(now, target, paused))
    }

    /// Ends wrap-ups on time and keeps the queue metrics current (every
    /// second), from the start when queues are configured, else from the
    /// first one made. Runs until the process ends.
    pub fn spawn_timer(self: &Arc<Self>) {
        if !self.configs.is_empty() {
            self.start_timer();
        }
    }

    fn start_timer(self: &Arc<Self>) {
        let queues = self.clone();
        tokio::spawn(async move {
            let mut metrics_at = tokio::time::Instant::now();
            loop {
                let next = queues.quietly(|acd, now| {
                    acd.handle_timeout(now);
                    acd.poll_timeout()
                });
                if tokio::time::Instant::now() >= metrics_at {
                    queues.export_metrics();
                    metrics_at += Duration::from_secs(1);
                }
                let wake = next
                    .map(tokio::time::Instant::from_std)
                    .map_or(metrics_at, |t| t.min(metrics_at));
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    _ = queues.changed.notified() => {}
                }
            }
        });
    }

    fn export_metrics(&self) {
        for q in self.snapshot() {
            let name = q.name.clone();
            metrics::gauge!(names::QUEUE_WAITING, "queue" => name.clone()).set(q.waiting as f64);
            metrics::gauge!(names::QUEUE_LONGEST_WAIT, "queue" => name.clone())
                .set(q.longest_wait.as_secs_f64());
            metrics::counter!(names::QUEUE_ANSWERED, "queue" => name.clone())
                .absolute(q.stats.answered);
            metrics::counter!(names::QUEUE_ANSWERED_WITHIN_SLA, "queue" => name.clone())
                .absolute(q.stats.answered_within_sla);
            metrics::counter!(names::QUEUE_ABANDONED, "queue" => name.clone())
                .absolute(q.stats.abandoned);
            metrics::counter!(names::QUEUE_FULL, "queue" => name).absolute(q.stats.full);
        }
    }
}

/// A caller's place in a queue. Dropped without [`Ticket::finish`], the
/// caller left: abandoned if still waiting, the agent's call over if
/// bridged.
pub struct Ticket {
    queues: Arc<Queues>,
    entry: EntryId,
    offers: mpsc::UnboundedReceiver<Offer>,
    done: bool,
    /// Where they joined (None for a called-back caller: already kept).
    place: Option<Place>,
}

/// What a virtual-hold row keeps of a caller's joining.
struct Place {
    queue: String,
    skills: Vec<String>,
    order: u64,
    joined_at: SystemTime,
}

impl Ticket {
    /// The next agents to ring for this caller.
    pub async fn next_offer(&mut self) -> Option<Offer> {
        self.offers.recv().await
    }

    pub fn entry(&self) -> EntryId {
        self.entry
    }

    /// Place (1: next) and estimated wait.
    pub fn position(&self) -> Option<(usize, Duration)> {
        self.queues.quietly(|acd, _| acd.position(self.entry))
    }

    /// How ringing went: the agent that answered, or none.
    pub fn ring_result(&self, agent: Option<&str>) {
        self.queues
            .with(|acd, now| acd.ring_result(now, self.entry, agent));
        if agent.is_some() {
            self.queues.settled(self.entry, true);
        }
    }

    /// The caller took the callback offer: they hang up and keep their
    /// place, to be called back at `phone` (E.164); the row is stored.
    /// Err: they can't (not waiting on the line, or a called-back caller).
    pub fn go_virtual(mut self, phone: &str) -> Result<(), Ticket> {
        let (Some(place), Some(hold)) = (&self.place, &self.queues.hold) else {
            return Err(self);
        };
        let store = hold.store.clone();
        let row = QueueCallbackRecord {
            id: crate::chat::random_token(12),
            queue: place.queue.clone(),
            phone: phone.to_string(),
            skills: place.skills.clone(),
            order_ms: place.order,
            joined_at: place.joined_at,
            failures: 0,
            node: hold.node.clone(),
        };
        let entry = self.entry;
        // The row is in place before the ACD may call them back.
        let kept = self.queues.locked(|inner, now| {
            inner.virtuals.insert(entry, row.clone());
            let kept = inner.acd.go_virtual(now, entry);
            if kept {
                inner.waiters.remove(&entry);
            } else {
                inner.virtuals.remove(&entry);
            }
            kept
        });
        if !kept {
            return Err(self);
        }
        self.queues.changed.notify_one();
        self.done = true;
        metrics::counter!(names::QUEUE_CALLBACKS_ACCEPTED, "queue" => row.queue.clone())
            .increment(1);
        if let Err(e) = store.upsert_queue_callback(row) {
            tracing::error!(%e, "store: cannot queue a virtual-hold caller; kept until a restart");
        }
        Ok(())
    }

    /// Out of the queue: `Abandoned` (gave up, to the fallback) or, after
    /// an agent answered, the call with the agent is over.
    pub fn finish(mut self, why: Left) {
        self.done = true;
        let entry = self.entry;
        self.queues.with(|acd, now| acd.leave(now, entry, why));
        self.forget();
    }

    fn forget(&self) {
        let mut inner = self.queues.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.waiters.remove(&self.entry);
        drop(inner);
        self.queues.settled(self.entry, false);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.done {
            let entry = self.entry;
            self.queues
                .with(|acd, now| acd.leave(now, entry, Left::Abandoned));
            self.forget();
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> Vec<QueueConfig> {
        vec![toml::from_str(
            r#"name = "support"
agents = [{ target = "sip:a@127.0.0.1:5090" }]"#,
        )
        .unwrap()]
    }

    #[tokio::test]
    async fn made_queues_take_a_size_and_go_while_configured_ones_stay() {
        let queues = Queues::new(&configured(), &[], None);
        assert!(queues.ensure("app"), "made on first use");
        assert_eq!(queues.max_size("app"), Some(Some(DEFAULT_MAX_SIZE)));
        assert_eq!(queues.make("app", 5), Made::Exists);
        assert_eq!(queues.make("support", 5), Made::Exists);
        assert_eq!(queues.make("sales", 1), Made::Made);
        let made = queues.dates("sales");
        assert!(made.created >= queues.started);

        let ticket = queues.join("sales", Vec::new()).ok().unwrap();
        assert!(matches!(
            queues.join("sales", Vec::new()),
            Err(Refused::Full)
        ));
        assert_eq!(queues.remove("sales"), Err(Unchanged::Occupied));
        ticket.finish(Left::Abandoned);
        assert_eq!(queues.set_max_size("sales", 2), Ok(()));
        assert_eq!(queues.max_size("sales"), Some(Some(2)));
        assert!(queues.dates("sales").updated >= made.updated);
        assert_eq!(queues.remove("sales"), Ok(()));
        assert!(!queues.exists("sales"));
        assert_eq!(queues.remove("sales"), Err(Unchanged::NoSuchQueue));

        // The config file's queue is read here, never changed.
        assert_eq!(
            queues.set_max_size("support", 3),
            Err(Unchanged::Configured)
        );
        assert_eq!(queues.remove("support"), Err(Unchanged::Configured));
        assert_eq!(queues.max_size("support"), Some(None));
        assert!(queues.exists("support"));
    }
}
