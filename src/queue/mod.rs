//! Queues (ACD): callers wait with music and position announcements until
//! an agent is free. The rules live in the sans-IO [`acd::Acd`]; this is
//! its driver: a lock around it, a timer task for wrap-ups and metrics,
//! and a [`Ticket`] per waiting caller through which the `queue` node
//! hears which agents to ring and reports how it went. Dropping a ticket
//! (the caller hung up) takes the caller out.

pub mod acd;
pub mod announce;
pub mod config;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, Notify};

use crate::telemetry::names;
use acd::{Acd, EntryId, Left, Offer, QueueRules, QueueSnapshot, Refused, Standing};
pub use config::{AgentConfig, QueueConfig};

/// Queues a TwiML `<Enqueue>` may make at run time, beyond the configured
/// ones: a misbehaving app can't grow the ACD without bound.
pub const MAX_MADE_QUEUES: usize = 1_000;

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
}

struct Inner {
    acd: Acd,
    /// Where each waiting caller hears its offers.
    waiters: HashMap<EntryId, mpsc::UnboundedSender<Offer>>,
}

impl Inner {
    /// Hand every new offer to its caller; an offer to a caller already
    /// gone goes back as unanswered.
    fn deliver(&mut self, now: Instant) {
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
    }
}

impl Queues {
    /// `users` lend their tags as skills to their `user:` agents.
    pub fn new(configs: &[QueueConfig], users: &[crate::registrar::UserConfig]) -> Arc<Queues> {
        let acd = Acd::new(
            Instant::now(),
            configs.iter().map(|q| q.rules(users)).collect(),
        );
        let display_names = users
            .iter()
            .filter_map(|u| Some((format!("user:{}", u.name), u.display_name.clone()?)))
            .collect();
        Arc::new(Queues {
            configs: configs.to_vec(),
            display_names,
            inner: Mutex::new(Inner {
                acd,
                waiters: HashMap::new(),
            }),
            changed: Notify::new(),
            joined: Notify::new(),
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
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let out = f(&mut inner.acd, now);
        inner.deliver(now);
        out
    }

    /// Put a caller in `queue`, unless there is no such queue or it is full.
    pub fn join(self: &Arc<Self>, queue: &str, skills: Vec<String>) -> Result<Ticket, Refused> {
        let (tx, offers) = mpsc::unbounded_channel();
        let order = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Registered before joining, so the first offer finds its caller.
        let entry = inner.acd.join(now, queue, order, Duration::ZERO, skills)?;
        inner.waiters.insert(entry, tx);
        inner.deliver(now);
        drop(inner);
        self.changed.notify_one();
        self.joined.notify_waiters();
        Ok(Ticket {
            queues: self.clone(),
            entry,
            offers,
            done: false,
        })
    }

    /// Whether `queue` exists (configured, or made by [`Queues::ensure`]).
    pub fn exists(&self, queue: &str) -> bool {
        self.quietly(|acd, _| acd.has_queue(queue))
    }

    /// Make `queue` if it isn't there: agent-less, served only by pulls
    /// (what Twilio does for an `<Enqueue>` name it doesn't know). False:
    /// [`MAX_MADE_QUEUES`] are made already.
    pub fn ensure(self: &Arc<Self>, queue: &str) -> bool {
        let configured = self.configs.len();
        let (exists, first) = self.quietly(|acd, _| {
            if acd.has_queue(queue) {
                return (true, false);
            }
            let made = acd.queue_count() < configured + MAX_MADE_QUEUES
                && acd.add_queue(QueueRules {
                    name: queue.to_string(),
                    strategy: acd::Strategy::LongestIdle,
                    agents: Vec::new(),
                    sla: Duration::from_secs(20),
                    wrap_up: Duration::ZERO,
                    assumed_handle: Duration::from_secs(180),
                    max_callers: None,
                });
            (made, made && acd.queue_count() == 1)
        });
        if first {
            // No queue was configured, so no timer runs: metrics need one.
            self.start_timer();
        }
        exists
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
