//! The queue/ACD state machine, sans-IO: callers wait in order, agents are
//! available, ringing, busy, in wrap-up or paused, and each free agent is
//! offered to the first caller it may take, chosen by the queue's
//! strategy. Time comes in as `now`; nothing here sleeps or touches a
//! socket. The driver (`queue::Queues`) rings what [`Acd::poll_offer`]
//! hands out and reports back with [`Acd::ring_result`] and
//! [`Acd::hung_up`].
//!
//! Virtual hold: a caller who asked to be called back keeps their entry
//! with no line ([`Line::Virtual`]). When they are first in line and an
//! agent is free, [`Acd::poll_callback`] says to call them back; the
//! customer is dialled first and the agent only after they answer
//! ([`Acd::callback_answered`]), as Asterisk and Genesys do, so no agent
//! sits idle on a phone that rings out. Meanwhile the entry holds a claim
//! on one free agent: callers behind it are offered only the agents left
//! over, so the place is kept.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// How a queue picks the agent for its next caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every free agent rings at once; the first to answer takes it.
    RingAll,
    /// The agent free the longest.
    #[default]
    LongestIdle,
    /// Agents in turn, in the order listed.
    RoundRobin,
    /// Only agents with every skill the caller needs; among them, the one
    /// free the longest.
    Skills,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RingAll => "ring_all",
            Strategy::LongestIdle => "longest_idle",
            Strategy::RoundRobin => "round_robin",
            Strategy::Skills => "skills",
        }
    }
}

/// After every agent failed to answer a caller, the caller rests this long
/// before they are rung again (an unregistered phone fails at once).
pub const RETRY_PAUSE: Duration = Duration::from_secs(3);

/// Handle times kept for the average.
const HANDLE_TIMES_KEPT: usize = 20;

/// One queue's rules.
#[derive(Debug, Clone)]
pub struct QueueRules {
    pub name: String,
    pub strategy: Strategy,
    /// Agent targets (`sip:` URIs or `user:<name>`), with their skills.
    pub agents: Vec<(String, Vec<String>)>,
    /// Answered within this long counts toward the service level.
    pub sla: Duration,
    pub wrap_up: Duration,
    /// The handle time assumed before any call was handled.
    pub assumed_handle: Duration,
    /// Callers waiting at most; one more is turned away. `None`: no limit.
    pub max_callers: Option<usize>,
    /// Callbacks tried before a virtual-hold caller is dropped.
    pub callback_attempts: u32,
    /// How long a callback that wasn't answered rests before the next try.
    pub callback_retry: Duration,
}

/// Whether a caller is on the line, or holds their place without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// On the line, hearing the queue's music.
    Held,
    /// Hung up to be called back; waits for an agent to be free.
    Virtual,
    /// Being called back: holds a claim on one free agent.
    CallingBack,
    /// The last callback wasn't answered: the next waits until then.
    Resting { until: Instant },
}

impl Line {
    pub fn as_str(self) -> &'static str {
        match self {
            Line::Held => "on_line",
            Line::Virtual => "virtual",
            Line::CallingBack => "calling_back",
            Line::Resting { .. } => "callback_retry",
        }
    }

    /// Without a line: a virtual-hold entry in any of its states.
    pub fn is_virtual(self) -> bool {
        self != Line::Held
    }
}

/// What an agent is doing, as the API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatus {
    Available,
    Ringing,
    Busy,
    WrapUp,
    Paused,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentStatus::Available => "available",
            AgentStatus::Ringing => "ringing",
            AgentStatus::Busy => "busy",
            AgentStatus::WrapUp => "wrap_up",
            AgentStatus::Paused => "paused",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AgentState {
    Available,
    Ringing(EntryId),
    Busy(EntryId),
    WrapUp { until: Instant },
    Paused,
}

#[derive(Debug)]
struct Agent {
    state: AgentState,
    /// When `state` began (for the console's time in state).
    since: Instant,
    /// Free since (for longest-idle): start, end of wrap-up, a missed ring.
    idle_since: Instant,
    answered: u64,
}

impl Agent {
    fn enter(&mut self, state: AgentState, now: Instant) {
        if self.state != state {
            self.state = state;
            self.since = now;
        }
    }
}

/// A caller's place, as handed out by [`Acd::join`].
pub type EntryId = u64;

#[derive(Debug)]
struct Entry {
    id: EntryId,
    /// Orders the queue (milliseconds since the epoch at joining), so a
    /// virtual-hold caller restored after a restart keeps their place.
    order: u64,
    joined: Instant,
    skills: Vec<String>,
    line: Line,
    /// Callbacks that weren't answered.
    callback_failures: u32,
    /// Agents ringing for this caller now.
    ringing: Vec<usize>,
    /// Agents that didn't answer this caller since the last retry pause.
    tried: Vec<usize>,
    rest_until: Option<Instant>,
    /// Bridged to this agent: no longer waiting.
    answered_by: Option<usize>,
    answered_at: Option<Instant>,
}

impl Entry {
    /// Neither an agent answered nor a call outside the queue took it.
    fn waiting(&self) -> bool {
        self.answered_at.is_none()
    }
}

#[derive(Debug)]
struct Queue {
    rules: QueueRules,
    /// Indices into `Acd::agents`, in the order listed.
    agents: Vec<usize>,
    entries: Vec<Entry>,
    round_robin_next: usize,
    handle_times: VecDeque<Duration>,
    stats: QueueStats,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub answered: u64,
    pub answered_within_sla: u64,
    /// Hung up (or left for the fallback) before an agent answered.
    pub abandoned: u64,
    /// Turned away because `max_callers` were waiting.
    pub full: u64,
}

/// Why [`Acd::join`] took nobody in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    NoSuchQueue,
    /// `max_callers` are waiting already.
    Full,
}

/// Why a queue was left as it was (removal, or a change of its rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unchanged {
    NoSuchQueue,
    /// Callers are in it (waiting, or bridged and not yet hung up).
    Occupied,
    /// Configured in the config file: it goes when the config drops it.
    Configured,
}

/// A virtual-hold caller to call back now: first in line, an agent free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackDue {
    pub queue: String,
    pub entry: EntryId,
}

/// What became of a callback that wasn't answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackRetry {
    /// Called again (when first in line, an agent free) from then on.
    At(Instant),
    /// Out of attempts: the entry is gone.
    Dropped,
}

/// Agents to ring for a caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub queue: String,
    pub entry: EntryId,
    /// Agent targets, rung at once (more than one only for ring_all).
    pub agents: Vec<String>,
}

/// Why a caller left without an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// Hung up, gave up (press 0, max wait) or failed: counted abandoned.
    Abandoned,
    /// Moved elsewhere on purpose without waiting (not counted).
    Withdrawn,
}

/// Where a caller stands in its queue ([`Acd::standing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub position: usize,
    pub size: usize,
    pub waited: Duration,
    pub average_wait: Duration,
}

/// A queue as the API and metrics see it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSnapshot {
    pub name: String,
    pub strategy: Strategy,
    pub waiting: usize,
    pub longest_wait: Duration,
    pub average_handle: Duration,
    pub stats: QueueStats,
    pub agents: Vec<AgentSnapshot>,
    /// Everyone waiting, in order.
    pub callers: Vec<CallerSnapshot>,
}

/// One waiting caller, as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallerSnapshot {
    pub entry: EntryId,
    pub waited: Duration,
    pub line: Line,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AgentSnapshot {
    pub target: String,
    pub status: AgentStatus,
    /// How long in this state's idleness (available only).
    pub idle: Option<Duration>,
    /// How long in this state (ringing, busy... as `status` says).
    pub in_state: Duration,
    pub answered: u64,
    pub skills: Vec<String>,
}

/// Every queue, and the agents they share (an agent busy in one queue is
/// busy in all).
#[derive(Debug)]
pub struct Acd {
    queues: Vec<Queue>,
    agents: Vec<Agent>,
    agent_ids: HashMap<String, usize>,
    agent_targets: Vec<String>,
    next_entry: EntryId,
    /// Which queue each live entry is in.
    entry_queue: HashMap<EntryId, usize>,
    offers: VecDeque<Offer>,
    callbacks_due: VecDeque<CallbackDue>,
}

impl Acd {
    pub fn new(now: Instant, rules: Vec<QueueRules>) -> Acd {
        let mut acd = Acd {
            queues: Vec::with_capacity(rules.len()),
            agents: Vec::new(),
            agent_ids: HashMap::new(),
            agent_targets: Vec::new(),
            next_entry: 1,
            entry_queue: HashMap::new(),
            offers: VecDeque::new(),
            callbacks_due: VecDeque::new(),
        };
        for rules in rules {
            let mut agents = Vec::with_capacity(rules.agents.len());
            for (target, _) in &rules.agents {
                let index = match acd.agent_ids.get(target) {
                    Some(i) => *i,
                    None => {
                        let i = acd.agents.len();
                        acd.agents.push(Agent {
                            state: AgentState::Available,
                            since: now,
                            idle_since: now,
                            answered: 0,
                        });
                        acd.agent_ids.insert(target.clone(), i);
                        acd.agent_targets.push(target.clone());
                        i
                    }
                };
                agents.push(index);
            }
            acd.queues.push(Queue {
                rules,
                agents,
                entries: Vec::new(),
                round_robin_next: 0,
                handle_times: VecDeque::with_capacity(HANDLE_TIMES_KEPT),
                stats: QueueStats::default(),
            });
        }
        acd
    }

    pub fn has_queue(&self, name: &str) -> bool {
        self.queue_index(name).is_some()
    }

    /// Add a queue made at run time (a TwiML app's `<Enqueue>` naming one
    /// that isn't configured); false if the name is taken. Its agents are
    /// ignored: such a queue is served by [`Acd::pull`] only.
    pub fn add_queue(&mut self, rules: QueueRules) -> bool {
        if self.has_queue(&rules.name) {
            return false;
        }
        self.queues.push(Queue {
            rules: QueueRules {
                agents: Vec::new(),
                ..rules
            },
            agents: Vec::new(),
            entries: Vec::new(),
            round_robin_next: 0,
            handle_times: VecDeque::with_capacity(HANDLE_TIMES_KEPT),
            stats: QueueStats::default(),
        });
        true
    }

    /// A queue's caller limit (`Some(None)`: no limit); `None`: no such queue.
    pub fn max_callers(&self, name: &str) -> Option<Option<usize>> {
        let q = self.queue_index(name)?;
        Some(self.queues[q].rules.max_callers)
    }

    /// Change a queue's caller limit; false: no such queue. Callers
    /// already waiting keep their places, whatever the new limit.
    pub fn set_max_callers(&mut self, name: &str, max: Option<usize>) -> bool {
        let Some(q) = self.queue_index(name) else {
            return false;
        };
        self.queues[q].rules.max_callers = max;
        true
    }

    /// Remove a queue that holds nobody, waiting or bridged. The caller
    /// decides which queues may go (the configured ones may not).
    pub fn remove_queue(&mut self, name: &str) -> Result<(), Unchanged> {
        let q = self.queue_index(name).ok_or(Unchanged::NoSuchQueue)?;
        if !self.queues[q].entries.is_empty() {
            return Err(Unchanged::Occupied);
        }
        self.queues.swap_remove(q);
        // The queue that was last now sits at `q`: its entries follow it.
        if let Some(moved) = self.queues.get(q) {
            for e in &moved.entries {
                self.entry_queue.insert(e.id, q);
            }
        }
        Ok(())
    }

    /// A call from outside the queue takes its first waiting caller that
    /// no agent is ringing for and `may_take` accepts (`<Dial><Queue>`):
    /// the caller counts as answered now, and the entry is over with
    /// [`Acd::hung_up`]. The caller and how long they waited; `None`: no
    /// such caller (or queue).
    pub fn pull(
        &mut self,
        now: Instant,
        queue: &str,
        may_take: impl Fn(EntryId) -> bool,
    ) -> Option<(EntryId, Duration)> {
        let q = self.queue_index(queue)?;
        let queue = &mut self.queues[q];
        let e = queue
            .entries
            .iter_mut()
            .find(|e| e.waiting() && e.ringing.is_empty() && may_take(e.id))?;
        e.answered_at = Some(now);
        let waited = now.saturating_duration_since(e.joined);
        queue.stats.answered += 1;
        if waited <= queue.rules.sla {
            queue.stats.answered_within_sla += 1;
        }
        Some((e.id, waited))
    }

    /// Where a caller stands: place (1: next), callers waiting, how long
    /// this one waited, and the average wait of those waiting.
    pub fn standing(&self, now: Instant, entry: EntryId) -> Option<Standing> {
        let (q, i) = self.find(entry)?;
        let entries = &self.queues[q].entries;
        let waits: Vec<Duration> = entries
            .iter()
            .filter(|e| e.waiting())
            .map(|e| now.saturating_duration_since(e.joined))
            .collect();
        let n = u32::try_from(waits.len()).unwrap_or(u32::MAX).max(1);
        Some(Standing {
            position: entries[..i].iter().filter(|e| e.waiting()).count() + 1,
            size: waits.len(),
            waited: now.saturating_duration_since(entries[i].joined),
            average_wait: waits.iter().sum::<Duration>() / n,
        })
    }

    pub fn queue_count(&self) -> usize {
        self.queues.len()
    }

    fn queue_index(&self, name: &str) -> Option<usize> {
        self.queues.iter().position(|q| q.rules.name == name)
    }

    /// Put a caller in `queue`, behind everyone with a smaller `order`
    /// (milliseconds since the epoch when they first joined). Refused when
    /// there is no such queue or it is full (counted).
    pub fn join(
        &mut self,
        now: Instant,
        queue: &str,
        order: u64,
        waited: Duration,
        skills: Vec<String>,
    ) -> Result<EntryId, Refused> {
        let q = self.queue_index(queue).ok_or(Refused::NoSuchQueue)?;
        let target = &mut self.queues[q];
        if let Some(max) = target.rules.max_callers {
            if target.entries.iter().filter(|e| e.waiting()).count() >= max {
                target.stats.full += 1;
                return Err(Refused::Full);
            }
        }
        let id = self
            .insert(now, queue, order, waited, skills)
            .ok_or(Refused::NoSuchQueue)?;
        self.dispatch(now);
        Ok(id)
    }

    /// [`Acd::join`] for a virtual-hold caller restored after a restart,
    /// with the callbacks of theirs that already failed.
    pub fn join_virtual(
        &mut self,
        now: Instant,
        queue: &str,
        order: u64,
        waited: Duration,
        skills: Vec<String>,
        callback_failures: u32,
    ) -> Option<EntryId> {
        let id = self.insert(now, queue, order, waited, skills)?;
        if let Some(e) = self.entry_mut(id) {
            e.line = Line::Virtual;
            e.callback_failures = callback_failures;
        }
        self.dispatch(now);
        Some(id)
    }

    fn insert(
        &mut self,
        now: Instant,
        queue: &str,
        order: u64,
        waited: Duration,
        skills: Vec<String>,
    ) -> Option<EntryId> {
        let q = self.queue_index(queue)?;
        let id = self.next_entry;
        self.next_entry += 1;
        let entries = &mut self.queues[q].entries;
        let at = entries.partition_point(|e| e.order <= order);
        entries.insert(
            at,
            Entry {
                id,
                order,
                joined: now.checked_sub(waited).unwrap_or(now),
                skills,
                line: Line::Held,
                callback_failures: 0,
                ringing: Vec::new(),
                tried: Vec::new(),
                rest_until: None,
                answered_by: None,
                answered_at: None,
            },
        );
        self.entry_queue.insert(id, q);
        Some(id)
    }

    fn entry_mut(&mut self, entry: EntryId) -> Option<&mut Entry> {
        let (q, i) = self.find(entry)?;
        self.queues.get_mut(q)?.entries.get_mut(i)
    }

    /// Where the caller of `entry` is: on the line or not; None once gone.
    pub fn line(&self, entry: EntryId) -> Option<Line> {
        let (q, i) = self.find(entry)?;
        Some(self.queues[q].entries[i].line)
    }

    /// The caller took the callback offer and hangs up: their entry stays
    /// where it is, without a line. False when they can't (not waiting on
    /// the line).
    pub fn go_virtual(&mut self, now: Instant, entry: EntryId) -> bool {
        let Some(e) = self.entry_mut(entry) else {
            return false;
        };
        if !e.waiting() || e.line != Line::Held {
            return false;
        }
        e.line = Line::Virtual;
        e.rest_until = None;
        e.tried.clear();
        let ringing = std::mem::take(&mut e.ringing);
        for a in ringing {
            self.free(a, now);
        }
        self.dispatch(now);
        true
    }

    /// The next virtual-hold caller to call back.
    pub fn poll_callback(&mut self) -> Option<CallbackDue> {
        self.callbacks_due.pop_front()
    }

    /// The called-back customer answered: they are on the line, first in
    /// line, and the claimed agent is rung for them.
    pub fn callback_answered(&mut self, now: Instant, entry: EntryId) -> bool {
        let Some(e) = self.entry_mut(entry) else {
            return false;
        };
        if e.line != Line::CallingBack {
            return false;
        }
        e.line = Line::Held;
        self.dispatch(now);
        true
    }

    /// The callback to `entry` wasn't answered (or couldn't be placed): it
    /// rests and is tried again, or, out of attempts, the entry is
    /// dropped and counted abandoned. None: no such callback.
    pub fn callback_failed(&mut self, now: Instant, entry: EntryId) -> Option<CallbackRetry> {
        let (q, i) = self.find(entry)?;
        let queue = &mut self.queues[q];
        let retry = queue.rules.callback_retry;
        let attempts = queue.rules.callback_attempts;
        let e = &mut queue.entries[i];
        if e.line != Line::CallingBack {
            return None;
        }
        e.callback_failures += 1;
        let out = if e.callback_failures >= attempts {
            queue.entries.remove(i);
            queue.stats.abandoned += 1;
            self.entry_queue.remove(&entry);
            CallbackRetry::Dropped
        } else {
            let until = now + retry;
            e.line = Line::Resting { until };
            CallbackRetry::At(until)
        };
        self.dispatch(now);
        Some(out)
    }

    /// Callbacks of `entry` that weren't answered so far.
    pub fn callback_failures(&self, entry: EntryId) -> Option<u32> {
        let (q, i) = self.find(entry)?;
        Some(self.queues[q].entries[i].callback_failures)
    }

    fn find(&self, entry: EntryId) -> Option<(usize, usize)> {
        let q = *self.entry_queue.get(&entry)?;
        let i = self
            .queues
            .get(q)?
            .entries
            .iter()
            .position(|e| e.id == entry)?;
        Some((q, i))
    }

    /// The caller is gone before an agent answered (or after: then it is
    /// [`Acd::hung_up`]'s job, which this calls).
    pub fn leave(&mut self, now: Instant, entry: EntryId, why: Left) {
        let Some((q, i)) = self.find(entry) else {
            return;
        };
        if !self.queues[q].entries[i].waiting() {
            return self.hung_up(now, entry);
        }
        let e = self.queues[q].entries.remove(i);
        self.entry_queue.remove(&entry);
        for a in e.ringing {
            self.free(a, now);
        }
        if why == Left::Abandoned {
            self.queues[q].stats.abandoned += 1;
        }
        self.dispatch(now);
    }

    fn free(&mut self, agent: usize, now: Instant) {
        if let Some(a) = self.agents.get_mut(agent) {
            if matches!(a.state, AgentState::Ringing(_)) {
                a.enter(AgentState::Available, now);
                // Rung and not answered: to the back of the idle line.
                a.idle_since = now;
            }
        }
    }

    /// How ringing `agent` for `entry` went. Answered: the agent is busy
    /// and the rest of a ring_all go back; not: the next agent is offered.
    pub fn ring_result(&mut self, now: Instant, entry: EntryId, agent: Option<&str>) {
        let Some((q, i)) = self.find(entry) else {
            return;
        };
        let answered = agent.and_then(|t| self.agent_ids.get(t).copied());
        let e = &mut self.queues[q].entries[i];
        let ringing = std::mem::take(&mut e.ringing);
        match answered {
            Some(a) if ringing.contains(&a) => {
                e.answered_by = Some(a);
                e.answered_at = Some(now);
                let waited = now.saturating_duration_since(e.joined);
                let queue = &mut self.queues[q];
                queue.stats.answered += 1;
                if waited <= queue.rules.sla {
                    queue.stats.answered_within_sla += 1;
                }
                self.agents[a].enter(AgentState::Busy(entry), now);
                self.agents[a].answered += 1;
                for other in ringing.into_iter().filter(|o| *o != a) {
                    self.free(other, now);
                }
            }
            _ => {
                e.tried.extend(ringing.iter().copied());
                for a in ringing {
                    self.free(a, now);
                }
            }
        }
        self.dispatch(now);
    }

    /// The bridged call of `entry` ended: its agent wraps up, and the
    /// handle time goes into the average.
    pub fn hung_up(&mut self, now: Instant, entry: EntryId) {
        let Some((q, i)) = self.find(entry) else {
            return;
        };
        let queue = &mut self.queues[q];
        let e = queue.entries.remove(i);
        self.entry_queue.remove(&entry);
        if let Some(at) = e.answered_at {
            if queue.handle_times.len() == HANDLE_TIMES_KEPT {
                queue.handle_times.pop_front();
            }
            queue
                .handle_times
                .push_back(now.saturating_duration_since(at));
        }
        if let Some(a) = e.answered_by {
            let until = now + queue.rules.wrap_up;
            if let Some(agent) = self.agents.get_mut(a) {
                if agent.state == AgentState::Busy(entry) {
                    agent.enter(AgentState::WrapUp { until }, now);
                }
            }
        }
        self.handle_timeout(now);
    }

    /// Pause or resume an agent (everywhere). False: no such agent. A
    /// paused agent keeps a call it is on; it takes no new one.
    pub fn set_paused(&mut self, now: Instant, target: &str, paused: bool) -> bool {
        let Some(&a) = self.agent_ids.get(target) else {
            return false;
        };
        let agent = &mut self.agents[a];
        match (paused, agent.state) {
            (true, AgentState::Available | AgentState::WrapUp { .. }) => {
                agent.enter(AgentState::Paused, now)
            }
            (false, AgentState::Paused) => {
                agent.enter(AgentState::Available, now);
                agent.idle_since = now;
            }
            _ => {}
        }
        self.dispatch(now);
        true
    }

    /// Wrap-ups and retry pauses that are over.
    pub fn handle_timeout(&mut self, now: Instant) {
        for agent in &mut self.agents {
            if let AgentState::WrapUp { until } = agent.state {
                if until <= now {
                    agent.enter(AgentState::Available, until);
                    agent.idle_since = until;
                }
            }
        }
        for queue in &mut self.queues {
            for e in &mut queue.entries {
                if e.rest_until.is_some_and(|t| t <= now) {
                    e.rest_until = None;
                    e.tried.clear();
                }
                if matches!(e.line, Line::Resting { until } if until <= now) {
                    e.line = Line::Virtual;
                }
            }
        }
        self.dispatch(now);
    }

    /// When [`Acd::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let wrap_ups = self.agents.iter().filter_map(|a| match a.state {
            AgentState::WrapUp { until } => Some(until),
            _ => None,
        });
        let rests = self.queues.iter().flat_map(|q| {
            q.entries.iter().filter_map(|e| match e.line {
                Line::Resting { until } => Some(until),
                _ => e.rest_until,
            })
        });
        wrap_ups.chain(rests).min()
    }

    /// The next agents to ring.
    pub fn poll_offer(&mut self) -> Option<Offer> {
        self.offers.pop_front()
    }

    /// Match free agents to waiting callers, first come first served. A
    /// virtual-hold caller first in line for a free agent is called back,
    /// and keeps a claim on one free agent while that rings: the callers
    /// behind are offered only the agents beyond the claims.
    fn dispatch(&mut self, now: Instant) {
        for q in 0..self.queues.len() {
            let mut claims = 0;
            for i in 0..self.queues[q].entries.len() {
                let e = &self.queues[q].entries[i];
                let (id, line) = (e.id, e.line);
                if !e.waiting() {
                    continue;
                }
                match line {
                    Line::Held => {}
                    Line::CallingBack => {
                        claims += 1;
                        continue;
                    }
                    Line::Resting { .. } => continue,
                    Line::Virtual => {
                        if self.eligible(q, i, false).len() > claims {
                            claims += 1;
                            self.queues[q].entries[i].line = Line::CallingBack;
                            self.callbacks_due.push_back(CallbackDue {
                                queue: self.queues[q].rules.name.clone(),
                                entry: id,
                            });
                        }
                        continue;
                    }
                }
                if !e.ringing.is_empty() || e.rest_until.is_some() {
                    continue;
                }
                let chosen = self.choose(q, i, claims);
                if chosen.is_empty() {
                    // Free agents, all tried already: rest, then start over.
                    let all_tried = !self.queues[q].entries[i].tried.is_empty()
                        && self.eligible(q, i, true).is_empty()
                        && !self.eligible(q, i, false).is_empty();
                    if all_tried {
                        self.queues[q].entries[i].rest_until = Some(now + RETRY_PAUSE);
                    }
                    continue;
                }
                for a in &chosen {
                    self.agents[*a].enter(AgentState::Ringing(id), now);
                }
                let agents = chosen
                    .iter()
                    .map(|a| self.agent_targets[*a].clone())
                    .collect();
                self.queues[q].entries[i].ringing = chosen;
                self.offers.push_back(Offer {
                    queue: self.queues[q].rules.name.clone(),
                    entry: id,
                    agents,
                });
            }
        }
    }

    /// Free agents of queue `q` that may take entry `i`: skills match, and
    /// (with `untried`) not yet tried for it.
    fn eligible(&self, q: usize, i: usize, untried: bool) -> Vec<usize> {
        let queue = &self.queues[q];
        let e = &queue.entries[i];
        queue
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| self.agents[**a].state == AgentState::Available)
            .filter(|(_, a)| !untried || !e.tried.contains(a))
            .filter(|(k, _)| {
                queue.rules.strategy != Strategy::Skills
                    || queue
                        .rules
                        .agents
                        .get(*k)
                        .is_some_and(|(_, skills)| e.skills.iter().all(|s| skills.contains(s)))
            })
            .map(|(_, a)| *a)
            .collect()
    }

    /// The agents to ring for entry `i`, leaving `claims` free agents to
    /// the callbacks ahead of it.
    fn choose(&mut self, q: usize, i: usize, claims: usize) -> Vec<usize> {
        let mut free = self.eligible(q, i, true);
        if free.len() <= claims {
            return Vec::new();
        }
        let queue = &mut self.queues[q];
        match queue.rules.strategy {
            Strategy::RingAll => {
                free.truncate(free.len() - claims);
                free
            }
            Strategy::LongestIdle | Strategy::Skills => free
                .iter()
                .copied()
                .min_by_key(|a| self.agents[*a].idle_since)
                .into_iter()
                .collect(),
            Strategy::RoundRobin => {
                let n = queue.agents.len();
                let start = queue.round_robin_next;
                let pick = (0..n)
                    .map(|k| (start + k) % n)
                    .find(|k| queue.agents.get(*k).is_some_and(|a| free.contains(a)));
                match pick {
                    Some(k) => {
                        queue.round_robin_next = (k + 1) % n;
                        queue.agents.get(k).copied().into_iter().collect()
                    }
                    None => Vec::new(),
                }
            }
        }
    }

    /// The caller's place (1: next) and the wait to expect: the recent
    /// average handle time for each round of agents ahead of them.
    pub fn position(&self, entry: EntryId) -> Option<(usize, Duration)> {
        let (q, i) = self.find(entry)?;
        let queue = &self.queues[q];
        let position = queue.entries[..i].iter().filter(|e| e.waiting()).count() + 1;
        let staffed = queue
            .agents
            .iter()
            .filter(|a| self.agents[**a].state != AgentState::Paused)
            .count()
            .max(1);
        let rounds = position.div_ceil(staffed) as u32;
        Some((position, average_handle(queue) * rounds))
    }

    /// Every queue, for the API, the console and the metrics.
    pub fn snapshot(&self, now: Instant) -> Vec<QueueSnapshot> {
        self.queues
            .iter()
            .map(|queue| {
                let waiting: Vec<&Entry> = queue.entries.iter().filter(|e| e.waiting()).collect();
                QueueSnapshot {
                    name: queue.rules.name.clone(),
                    strategy: queue.rules.strategy,
                    waiting: waiting.len(),
                    longest_wait: waiting
                        .iter()
                        .map(|e| now.saturating_duration_since(e.joined))
                        .max()
                        .unwrap_or_default(),
                    average_handle: average_handle(queue),
                    stats: queue.stats,
                    agents: queue
                        .agents
                        .iter()
                        .zip(&queue.rules.agents)
                        .map(|(a, (target, skills))| self.agent_snapshot(now, *a, target, skills))
                        .collect(),
                    callers: waiting
                        .iter()
                        .map(|e| CallerSnapshot {
                            entry: e.id,
                            waited: now.saturating_duration_since(e.joined),
                            line: e.line,
                        })
                        .collect(),
                }
            })
            .collect()
    }

    fn agent_snapshot(
        &self,
        now: Instant,
        a: usize,
        target: &str,
        skills: &[String],
    ) -> AgentSnapshot {
        let agent = &self.agents[a];
        let status = agent_status(agent.state);
        AgentSnapshot {
            target: target.to_string(),
            status,
            idle: (status == AgentStatus::Available)
                .then(|| now.saturating_duration_since(agent.idle_since)),
            in_state: now.saturating_duration_since(agent.since),
            answered: agent.answered,
            skills: skills.to_vec(),
        }
    }

    /// Every agent once (an agent in two queues is one agent).
    pub fn agents(&self, now: Instant) -> Vec<AgentSnapshot> {
        self.agent_targets
            .iter()
            .enumerate()
            .map(|(a, target)| {
                let skills = self
                    .queues
                    .iter()
                    .flat_map(|q| q.rules.agents.iter())
                    .filter(|(t, _)| t == target)
                    .flat_map(|(_, s)| s.iter().cloned())
                    .fold(Vec::new(), |mut all, s| {
                        if !all.contains(&s) {
                            all.push(s);
                        }
                        all
                    });
                self.agent_snapshot(now, a, target, &skills)
            })
            .collect()
    }
}

fn agent_status(state: AgentState) -> AgentStatus {
    match state {
        AgentState::Available => AgentStatus::Available,
        AgentState::Ringing(_) => AgentStatus::Ringing,
        AgentState::Busy(_) => AgentStatus::Busy,
        AgentState::WrapUp { .. } => AgentStatus::WrapUp,
        AgentState::Paused => AgentStatus::Paused,
    }
}

fn average_handle(queue: &Queue) -> Duration {
    let n = queue.handle_times.len() as u32;
    if n == 0 {
        return queue.rules.assumed_handle;
    }
    queue.handle_times.iter().sum::<Duration>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn rules(strategy: Strategy, agents: &[(&str, &[&str])]) -> QueueRules {
        QueueRules {
            name: "support".into(),
            strategy,
            agents: agents
                .iter()
                .map(|(t, s)| (t.to_string(), s.iter().map(|s| s.to_string()).collect()))
                .collect(),
            sla: 20 * S,
            wrap_up: 10 * S,
            assumed_handle: 120 * S,
            max_callers: None,
            callback_attempts: 2,
            callback_retry: 60 * S,
        }
    }

    fn acd_with(rules: QueueRules) -> (Instant, Acd) {
        let t0 = Instant::now();
        (t0, Acd::new(t0, vec![rules]))
    }

    fn offers(acd: &mut Acd) -> Vec<(EntryId, Vec<String>)> {
        std::iter::from_fn(|| acd.poll_offer())
            .map(|o| (o.entry, o.agents))
            .collect()
    }

    fn join(acd: &mut Acd, now: Instant, order: u64) -> EntryId {
        acd.join(now, "support", order, Duration::ZERO, Vec::new())
            .unwrap()
    }

    #[test]
    fn callers_wait_in_order_and_the_third_hears_its_place() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[]), ("b", &[])]));
        let c1 = join(&mut acd, t0, 1);
        let c2 = join(&mut acd, t0, 2);
        let c3 = join(&mut acd, t0, 3);
        assert_eq!(
            offers(&mut acd),
            vec![(c1, vec!["a".to_string()]), (c2, vec!["b".to_string()])]
        );
        acd.ring_result(t0 + S, c1, Some("a"));
        acd.ring_result(t0 + S, c2, Some("b"));
        // Two agents, one caller waiting: number 1, one handle time away.
        assert_eq!(acd.position(c3), Some((1, 120 * S)));
        assert!(offers(&mut acd).is_empty());
        let snap = &acd.snapshot(t0 + 5 * S)[0];
        assert_eq!(snap.waiting, 1);
        assert_eq!(snap.longest_wait, 5 * S);
        assert_eq!(snap.stats.answered_within_sla, 2);
    }

    #[test]
    fn wrap_up_is_respected_and_sets_the_average() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[])]));
        let c1 = join(&mut acd, t0, 1);
        let c2 = join(&mut acd, t0, 2);
        offers(&mut acd);
        acd.ring_result(t0, c1, Some("a"));
        acd.hung_up(t0 + 60 * S, c1);
        // In wrap-up for 10 s: nobody is offered.
        assert!(offers(&mut acd).is_empty());
        assert_eq!(acd.poll_timeout(), Some(t0 + 70 * S));
        assert_eq!(acd.agents(t0 + 65 * S)[0].status, AgentStatus::WrapUp);
        acd.handle_timeout(t0 + 69 * S);
        assert!(offers(&mut acd).is_empty());
        acd.handle_timeout(t0 + 70 * S);
        assert_eq!(offers(&mut acd), vec![(c2, vec!["a".to_string()])]);
        // The average handle time is now the one call's minute.
        assert_eq!(acd.position(c2), Some((1, 60 * S)));
    }

    #[test]
    fn longest_idle_picks_the_agent_free_the_longest() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[]), ("b", &[])]));
        let c1 = join(&mut acd, t0, 1);
        assert_eq!(offers(&mut acd), vec![(c1, vec!["a".to_string()])]);
        acd.ring_result(t0, c1, Some("a"));
        acd.hung_up(t0 + 5 * S, c1);
        acd.handle_timeout(t0 + 15 * S);
        // a has been free since 15 s, b since 0: b goes first.
        let c2 = join(&mut acd, t0 + 20 * S, 2);
        assert_eq!(offers(&mut acd), vec![(c2, vec!["b".to_string()])]);
    }

    #[test]
    fn no_answer_rings_the_next_agent_then_rests() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[]), ("b", &[])]));
        let c1 = join(&mut acd, t0, 1);
        assert_eq!(offers(&mut acd), vec![(c1, vec!["a".to_string()])]);
        acd.ring_result(t0 + 20 * S, c1, None);
        assert_eq!(offers(&mut acd), vec![(c1, vec!["b".to_string()])]);
        acd.ring_result(t0 + 40 * S, c1, None);
        assert!(offers(&mut acd).is_empty());
        assert_eq!(acd.poll_timeout(), Some(t0 + 40 * S + RETRY_PAUSE));
        acd.handle_timeout(t0 + 40 * S + RETRY_PAUSE);
        assert_eq!(offers(&mut acd), vec![(c1, vec!["a".to_string()])]);
    }

    #[test]
    fn ring_all_rings_every_free_agent_and_frees_the_others() {
        let (t0, mut acd) = acd_with(rules(Strategy::RingAll, &[("a", &[]), ("b", &[])]));
        let c1 = join(&mut acd, t0, 1);
        assert_eq!(
            offers(&mut acd),
            vec![(c1, vec!["a".to_string(), "b".to_string()])]
        );
        acd.ring_result(t0, c1, Some("b"));
        let c2 = join(&mut acd, t0, 2);
        assert_eq!(offers(&mut acd), vec![(c2, vec!["a".to_string()])]);
    }

    #[test]
    fn round_robin_takes_agents_in_turn() {
        let (t0, mut acd) = acd_with(rules(
            Strategy::RoundRobin,
            &[("a", &[]), ("b", &[]), ("c", &[])],
        ));
        let mut got = Vec::new();
        for order in 1..=4 {
            let c = join(&mut acd, t0, order);
            let (_, agents) = offers(&mut acd).remove(0);
            acd.ring_result(t0, c, agents.first().map(String::as_str));
            acd.hung_up(t0, c);
            acd.handle_timeout(t0 + 10 * S);
            got.extend(agents);
        }
        assert_eq!(got, ["a", "b", "c", "a"]);
    }

    #[test]
    fn skills_offer_only_matching_agents() {
        let (t0, mut acd) = acd_with(rules(
            Strategy::Skills,
            &[("a", &["en"]), ("b", &["es", "en"])],
        ));
        let c1 = acd
            .join(t0, "support", 1, Duration::ZERO, vec!["es".into()])
            .unwrap();
        assert_eq!(offers(&mut acd), vec![(c1, vec!["b".to_string()])]);
    }

    #[test]
    fn a_restored_caller_keeps_their_place_and_abandons_are_counted() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[])]));
        acd.set_paused(t0, "a", true);
        let late = join(&mut acd, t0, 200);
        let early = acd.join(t0, "support", 100, 30 * S, Vec::new()).unwrap();
        assert_eq!(acd.position(early).map(|p| p.0), Some(1));
        assert_eq!(acd.position(late).map(|p| p.0), Some(2));
        assert_eq!(acd.snapshot(t0)[0].longest_wait, 30 * S);
        acd.leave(t0, late, Left::Abandoned);
        acd.leave(t0, early, Left::Withdrawn);
        assert_eq!(acd.snapshot(t0)[0].stats.abandoned, 1);
        assert!(acd.set_paused(t0, "a", false));
        assert!(!acd.set_paused(t0, "nobody", false));
        assert_eq!(acd.agents(t0)[0].status, AgentStatus::Available);
    }

    #[test]
    fn a_pull_takes_the_first_caller_no_agent_rings_for() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[])]));
        let c1 = join(&mut acd, t0, 1);
        let c2 = join(&mut acd, t0, 2);
        let c3 = join(&mut acd, t0 + S, 3);
        assert_eq!(offers(&mut acd), vec![(c1, vec!["a".to_string()])]);
        // c1 rings agent a; c2 may not be taken: c3 is pulled.
        assert_eq!(
            acd.pull(t0 + 30 * S, "support", |e| e != c2),
            Some((c3, 29 * S))
        );
        assert_eq!(acd.position(c2).map(|p| p.0), Some(2));
        let snap = &acd.snapshot(t0 + 30 * S)[0];
        assert_eq!((snap.waiting, snap.stats.answered), (2, 1));
        assert_eq!(snap.stats.answered_within_sla, 0, "29 s is past the SLA");
        // The pulled call ends: its handle time counts, no agent wraps up.
        acd.hung_up(t0 + 90 * S, c3);
        assert_eq!(acd.snapshot(t0 + 90 * S)[0].average_handle, 60 * S);
        assert_eq!(acd.agents(t0 + 90 * S)[0].status, AgentStatus::Ringing);
        assert_eq!(acd.pull(t0, "nowhere", |_| true), None);
        acd.leave(t0, c1, Left::Abandoned);
        assert_eq!(offers(&mut acd), vec![(c2, vec!["a".to_string()])]);
        acd.leave(t0, c2, Left::Abandoned);
        assert_eq!(acd.pull(t0, "support", |_| true), None, "empty");
    }

    #[test]
    fn a_queue_added_at_run_time_is_served_by_pulls_only() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[])]));
        let mut made = rules(Strategy::LongestIdle, &[("b", &[])]);
        made.name = "made".into();
        assert!(acd.add_queue(made.clone()));
        assert!(!acd.add_queue(made));
        let c1 = acd.join(t0, "made", 1, Duration::ZERO, Vec::new()).unwrap();
        let c2 = acd
            .join(t0 + 4 * S, "made", 2, Duration::ZERO, Vec::new())
            .unwrap();
        assert_eq!(offers(&mut acd), vec![], "no agents");
        assert_eq!(
            acd.standing(t0 + 10 * S, c2),
            Some(Standing {
                position: 2,
                size: 2,
                waited: 6 * S,
                average_wait: 8 * S,
            })
        );
        assert_eq!(acd.pull(t0 + 10 * S, "made", |_| true), Some((c1, 10 * S)));
        assert_eq!(acd.standing(t0 + 10 * S, c2).map(|s| s.position), Some(1));
        assert!(acd.snapshot(t0)[1].agents.is_empty());
    }

    #[test]
    fn a_made_queue_changes_its_limit_and_goes_only_when_empty() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[])]));
        for name in ["one", "two"] {
            let mut made = rules(Strategy::LongestIdle, &[]);
            made.name = name.into();
            assert!(acd.add_queue(made));
        }
        assert_eq!(acd.max_callers("one"), Some(None));
        assert!(acd.set_max_callers("one", Some(1)));
        assert_eq!(acd.max_callers("one"), Some(Some(1)));
        assert!(!acd.set_max_callers("nowhere", Some(1)));
        assert_eq!(acd.max_callers("nowhere"), None);
        acd.join(t0, "one", 1, Duration::ZERO, Vec::new()).unwrap();
        assert_eq!(
            acd.join(t0, "one", 2, Duration::ZERO, Vec::new()),
            Err(Refused::Full)
        );
        // "two" holds a caller and is last: removing "one" moves it.
        let c = acd.join(t0, "two", 3, Duration::ZERO, Vec::new()).unwrap();
        assert_eq!(acd.remove_queue("two"), Err(Unchanged::Occupied));
        let first = acd.pull(t0, "one", |_| true).map(|(e, _)| e).unwrap();
        assert_eq!(acd.remove_queue("one"), Err(Unchanged::Occupied), "bridged");
        acd.hung_up(t0 + S, first);
        assert_eq!(acd.remove_queue("one"), Ok(()));
        assert_eq!(acd.remove_queue("one"), Err(Unchanged::NoSuchQueue));
        assert!(!acd.has_queue("one"));
        // The moved queue's caller is still found where it now is.
        assert_eq!(acd.standing(t0, c).map(|s| s.position), Some(1));
        assert_eq!(acd.pull(t0, "two", |_| true).map(|(e, _)| e), Some(c));
        acd.hung_up(t0 + S, c);
        assert_eq!(acd.remove_queue("two"), Ok(()));
        assert_eq!(acd.queue_count(), 1);
    }

    #[test]
    fn a_caller_leaving_while_an_agent_rings_frees_the_agent() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[])]));
        let c1 = join(&mut acd, t0, 1);
        let c2 = join(&mut acd, t0, 2);
        assert_eq!(offers(&mut acd), vec![(c1, vec!["a".to_string()])]);
        acd.leave(t0 + S, c1, Left::Abandoned);
        assert_eq!(offers(&mut acd), vec![(c2, vec!["a".to_string()])]);
    }

    #[test]
    fn a_full_queue_turns_the_next_caller_away_and_counts_it() {
        let mut r = rules(Strategy::LongestIdle, &[("a", &[])]);
        r.max_callers = Some(1);
        let (t0, mut acd) = acd_with(r);
        acd.set_paused(t0, "a", true);
        let first = join(&mut acd, t0, 1);
        assert_eq!(
            acd.join(t0, "support", 2, Duration::ZERO, Vec::new()),
            Err(Refused::Full)
        );
        assert_eq!(
            acd.join(t0, "nope", 2, Duration::ZERO, Vec::new()),
            Err(Refused::NoSuchQueue)
        );
        let snap = &acd.snapshot(t0)[0];
        assert_eq!((snap.waiting, snap.stats.full), (1, 1));
        // Bridged callers no longer wait: the place is free again.
        acd.set_paused(t0, "a", false);
        assert_eq!(offers(&mut acd), vec![(first, vec!["a".to_string()])]);
        acd.ring_result(t0 + S, first, Some("a"));
        assert!(acd
            .join(t0 + S, "support", 3, Duration::ZERO, Vec::new())
            .is_ok());
    }

    #[test]
    fn agents_show_how_long_they_have_been_in_their_state() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[])]));
        let c1 = join(&mut acd, t0 + 2 * S, 1);
        let a = &acd.agents(t0 + 5 * S)[0];
        assert_eq!((a.status, a.in_state), (AgentStatus::Ringing, 3 * S));
        acd.ring_result(t0 + 6 * S, c1, Some("a"));
        acd.hung_up(t0 + 16 * S, c1);
        let a = &acd.agents(t0 + 20 * S)[0];
        assert_eq!((a.status, a.in_state), (AgentStatus::WrapUp, 4 * S));
        acd.handle_timeout(t0 + 30 * S);
        // Available since the wrap-up ended (26 s), not since it was seen.
        let a = &acd.agents(t0 + 30 * S)[0];
        assert_eq!((a.status, a.in_state), (AgentStatus::Available, 4 * S));
        acd.set_paused(t0 + 31 * S, "a", true);
        // Pausing twice keeps the time.
        acd.set_paused(t0 + 35 * S, "a", true);
        let a = &acd.agents(t0 + 40 * S)[0];
        assert_eq!((a.status, a.in_state), (AgentStatus::Paused, 9 * S));
    }

    /// `agents` all paused; `first` joined and went virtual, `second`
    /// waits on the line behind them.
    fn virtual_then_on_line(
        strategy: Strategy,
        agents: &[(&str, &[&str])],
    ) -> (Instant, Acd, EntryId, EntryId) {
        let (t0, mut acd) = acd_with(rules(strategy, agents));
        for (a, _) in agents {
            acd.set_paused(t0, a, true);
        }
        let first = join(&mut acd, t0, 1);
        assert!(acd.go_virtual(t0, first));
        let second = join(&mut acd, t0, 2);
        (t0, acd, first, second)
    }

    fn callbacks(acd: &mut Acd) -> Vec<EntryId> {
        std::iter::from_fn(|| acd.poll_callback())
            .map(|c| c.entry)
            .collect()
    }

    #[test]
    fn a_virtual_caller_keeps_their_place_and_is_called_back_before_the_next() {
        let (t0, mut acd, first, second) =
            virtual_then_on_line(Strategy::LongestIdle, &[("a", &[])]);
        assert!(!acd.go_virtual(t0 + 5 * S, first), "once");
        // The virtual caller still counts ahead of the one on the line.
        assert_eq!(acd.position(second).map(|p| p.0), Some(2));
        let snap = &acd.snapshot(t0 + 10 * S)[0];
        let lines: Vec<Line> = snap.callers.iter().map(|c| c.line).collect();
        assert_eq!(lines, [Line::Virtual, Line::Held]);
        assert_eq!(snap.callers[0].waited, 10 * S);
        assert!(callbacks(&mut acd).is_empty(), "nobody free: nobody called");

        // The agent is free: the virtual caller is called back, and the
        // caller behind is not offered the agent meanwhile.
        acd.set_paused(t0 + 20 * S, "a", false);
        assert_eq!(callbacks(&mut acd), [first]);
        assert!(offers(&mut acd).is_empty(), "the agent is claimed");
        assert_eq!(acd.line(first), Some(Line::CallingBack));
        acd.handle_timeout(t0 + 25 * S);
        assert!(offers(&mut acd).is_empty() && callbacks(&mut acd).is_empty());

        // Answered: the agent is rung for them, and bridged.
        assert!(acd.callback_answered(t0 + 30 * S, first));
        assert_eq!(offers(&mut acd), vec![(first, vec!["a".to_string()])]);
        acd.ring_result(t0 + 32 * S, first, Some("a"));
        acd.hung_up(t0 + 60 * S, first);
        acd.handle_timeout(t0 + 70 * S);
        assert_eq!(offers(&mut acd), vec![(second, vec!["a".to_string()])]);
    }

    #[test]
    fn only_agents_beyond_the_claims_go_to_callers_behind() {
        let (t0, mut acd, first, second) =
            virtual_then_on_line(Strategy::RingAll, &[("a", &[]), ("b", &[])]);
        acd.set_paused(t0 + S, "a", false);
        assert_eq!(callbacks(&mut acd), [first]);
        assert!(offers(&mut acd).is_empty());
        // A second agent free: ring_all rings only the one not claimed.
        acd.set_paused(t0 + 2 * S, "b", false);
        let got = offers(&mut acd);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.len()), (second, 1));
    }

    #[test]
    fn an_unanswered_callback_rests_then_is_tried_again_then_dropped() {
        let (t0, mut acd, first, second) =
            virtual_then_on_line(Strategy::LongestIdle, &[("a", &[])]);
        acd.set_paused(t0 + S, "a", false);
        assert_eq!(callbacks(&mut acd), [first]);
        // No answer: it rests a minute, and the caller behind gets the agent.
        assert_eq!(
            acd.callback_failed(t0 + 31 * S, first),
            Some(CallbackRetry::At(t0 + 91 * S))
        );
        assert_eq!(acd.callback_failures(first), Some(1));
        assert_eq!(acd.line(first).map(Line::as_str), Some("callback_retry"));
        assert_eq!(offers(&mut acd), vec![(second, vec!["a".to_string()])]);
        acd.ring_result(t0 + 33 * S, second, Some("a"));
        acd.hung_up(t0 + 40 * S, second);
        assert_eq!(acd.poll_timeout(), Some(t0 + 50 * S), "wrap-up first");
        acd.handle_timeout(t0 + 50 * S);
        assert!(callbacks(&mut acd).is_empty(), "still resting");
        assert_eq!(acd.poll_timeout(), Some(t0 + 91 * S));
        acd.handle_timeout(t0 + 91 * S);
        assert_eq!(callbacks(&mut acd), [first]);
        // The second attempt of two fails: the entry is dropped, abandoned.
        assert_eq!(
            acd.callback_failed(t0 + 120 * S, first),
            Some(CallbackRetry::Dropped)
        );
        assert_eq!(acd.line(first), None);
        assert_eq!(acd.snapshot(t0 + 120 * S)[0].stats.abandoned, 1);
        assert_eq!(acd.callback_failed(t0 + 120 * S, first), None);
    }

    #[test]
    fn a_restored_virtual_caller_keeps_order_time_waited_and_failures() {
        let (t0, mut acd) = acd_with(rules(Strategy::LongestIdle, &[("a", &[])]));
        acd.set_paused(t0, "a", true);
        let on_line = join(&mut acd, t0, 200);
        let restored = acd
            .join_virtual(t0, "support", 100, 90 * S, Vec::new(), 1)
            .unwrap();
        assert_eq!(acd.position(restored).map(|p| p.0), Some(1));
        assert_eq!(acd.position(on_line).map(|p| p.0), Some(2));
        assert_eq!(acd.snapshot(t0)[0].longest_wait, 90 * S);
        acd.set_paused(t0, "a", false);
        assert_eq!(callbacks(&mut acd), [restored]);
        // One failure before the restart, one now: out of two attempts.
        assert_eq!(
            acd.callback_failed(t0 + S, restored),
            Some(CallbackRetry::Dropped)
        );
        assert_eq!(offers(&mut acd), vec![(on_line, vec!["a".to_string()])]);
    }

    #[test]
    fn a_virtual_caller_who_leaves_frees_the_claim() {
        let (t0, mut acd, first, second) =
            virtual_then_on_line(Strategy::LongestIdle, &[("a", &[])]);
        acd.set_paused(t0, "a", false);
        assert_eq!(callbacks(&mut acd), [first]);
        // The customer answered, then hung up before the agent was rung.
        assert!(acd.callback_answered(t0 + S, first));
        assert!(!acd.callback_answered(t0 + S, first), "once");
        assert_eq!(offers(&mut acd), vec![(first, vec!["a".to_string()])]);
        acd.leave(t0 + 2 * S, first, Left::Abandoned);
        assert_eq!(offers(&mut acd), vec![(second, vec!["a".to_string()])]);
    }
}
