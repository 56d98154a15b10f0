//! RFC 3261 §17 transactions (with the RFC 6026 "Accepted" states), as plain
//! state machines. They never touch a socket or a clock: the owner feeds them
//! messages and the current time, and they answer with [`TxOutput`]s.

mod client;
mod server;

use std::time::{Duration, Instant};

use bytes::Bytes;

pub use client::{ClientInvite, ClientNonInvite, ClientState};
pub use server::{ServerInvite, ServerNonInvite, ServerState};

/// The RFC 3261 base timers. Defaults are the RFC's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate: the first retransmit interval; 64*T1 is the timeout.
    pub t1: Duration,
    /// Cap on retransmit intervals (Timers E and G).
    pub t2: Duration,
    /// How long the network may hold a message: Timers I and K.
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// 64*T1: Timers B, F, H, J, L and M.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

/// Timer names from RFC 3261 §17 and RFC 6026.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// INVITE client retransmit.
    A,
    /// INVITE client timeout.
    B,
    /// INVITE client wait for response retransmits after non-2xx.
    D,
    /// Non-INVITE client retransmit.
    E,
    /// Non-INVITE client timeout.
    F,
    /// INVITE server final response retransmit.
    G,
    /// INVITE server wait for ACK.
    H,
    /// INVITE server absorb ACK retransmits.
    I,
    /// Non-INVITE server absorb request retransmits.
    J,
    /// Non-INVITE client absorb response retransmits.
    K,
    /// INVITE server absorb INVITE retransmits after 2xx (RFC 6026).
    L,
    /// INVITE client absorb 2xx retransmits (RFC 6026).
    M,
}

/// What a transaction asks its owner to do. Owners drain these in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxOutput {
    /// Send these bytes to the transaction's peer.
    Transmit(Bytes),
    /// Call `on_timer(kind)` at this instant. An earlier timer of the same
    /// kind is replaced.
    Arm(TimerKind, Instant),
    /// No response came in time (Timer B or F): the TU sees a 408.
    Timeout,
    /// Timer H fired: the ACK for our final response never came.
    AckTimeout,
    /// Nothing more will happen; the owner may forget the transaction.
    Terminated,
}

/// A small set of armed timers: a transaction has at most three at once.
#[derive(Debug, Default, Clone)]
pub(crate) struct Armed(Vec<(TimerKind, Instant)>);

impl Armed {
    pub(crate) fn arm(&mut self, out: &mut Vec<TxOutput>, kind: TimerKind, at: Instant) {
        self.0.retain(|(k, _)| *k != kind);
        self.0.push((kind, at));
        out.push(TxOutput::Arm(kind, at));
    }

    /// True when `kind` was armed for `at` (stale heap entries are ignored).
    pub(crate) fn take(&mut self, kind: TimerKind, at: Instant) -> bool {
        let before = self.0.len();
        self.0.retain(|(k, t)| !(*k == kind && *t == at));
        self.0.len() != before
    }

    pub(crate) fn clear(&mut self) {
        self.0.clear();
    }
}

#[cfg(test)]
mod tests;
