//! Server transactions, RFC 3261 §17.2 with RFC 6026's Accepted state.

use std::time::Instant;

use bytes::Bytes;

use super::{Armed, TimerConfig, TimerKind, TxOutput};

/// Server transaction states (RFC 3261 figures 7 and 8, RFC 6026 figure 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Non-INVITE received, nothing sent yet.
    Trying,
    /// A provisional response went out (an INVITE starts here).
    Proceeding,
    /// Final response sent; resent for retransmitted requests (and Timer G).
    Completed,
    /// INVITE only: the ACK for a non-2xx arrived (Timer I).
    Confirmed,
    /// INVITE only: 2xx sent; its retransmission is the TU's (Timer L).
    Accepted,
    /// Done: drop it.
    Terminated,
}

/// INVITE server transaction (§17.2.1).
#[derive(Debug)]
pub struct ServerInvite {
    state: ServerState,
    reliable: bool,
    timers: TimerConfig,
    last_response: Option<Bytes>,
    g_interval: std::time::Duration,
    armed: Armed,
    /// A 1xx went out: the client stopped retransmitting, so a final
    /// answer must be retransmitted by us (Timer G).
    provisional_sent: bool,
}

impl ServerInvite {
    /// Created on a new INVITE, already in Proceeding. The owner sends
    /// 100 Trying through [`ServerInvite::respond`] right away.
    pub fn new(reliable: bool, timers: TimerConfig) -> Self {
        ServerInvite {
            state: ServerState::Proceeding,
            reliable,
            timers,
            last_response: None,
            g_interval: timers.t1,
            armed: Armed::default(),
            provisional_sent: false,
        }
    }

    /// Where the transaction is.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The TU sends a response with status `status`.
    ///
    /// A final refusal sent before any 1xx is not retransmitted on Timer
    /// G: the client is still retransmitting its INVITE (Timer A), and
    /// each retransmission gets the answer again. So a request with a
    /// spoofed source draws one answer, never eleven (no amplification),
    /// as a stateless reply would (RFC 3261 §16.11).
    pub fn respond(&mut self, now: Instant, status: u16, bytes: Bytes) -> Vec<TxOutput> {
        let mut out = Vec::new();
        if self.state != ServerState::Proceeding {
            return out;
        }
        out.push(TxOutput::Transmit(bytes.clone()));
        match status {
            100..=199 => {
                self.provisional_sent = true;
                self.last_response = Some(bytes);
            }
            200..=299 => {
                // 2xx retransmission belongs to the TU (the UAS core).
                self.state = ServerState::Accepted;
                self.last_response = None;
                self.armed
                    .arm(&mut out, TimerKind::L, now + self.timers.timeout());
            }
            _ => {
                self.state = ServerState::Completed;
                self.last_response = Some(bytes);
                if !self.reliable && self.provisional_sent {
                    self.armed
                        .arm(&mut out, TimerKind::G, now + self.g_interval);
                }
                self.armed
                    .arm(&mut out, TimerKind::H, now + self.timers.timeout());
            }
        }
        out
    }

    /// A retransmission of the INVITE arrived.
    pub fn on_retransmission(&mut self) -> Vec<TxOutput> {
        match (self.state, &self.last_response) {
            (ServerState::Proceeding | ServerState::Completed, Some(r)) => {
                vec![TxOutput::Transmit(r.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// An ACK matched this transaction (only non-2xx ACKs do).
    pub fn on_ack(&mut self, now: Instant) -> Vec<TxOutput> {
        let mut out = Vec::new();
        if self.state != ServerState::Completed {
            return out;
        }
        self.armed.clear();
        if self.reliable {
            self.state = ServerState::Terminated;
            out.push(TxOutput::Terminated);
        } else {
            self.state = ServerState::Confirmed;
            self.armed.arm(&mut out, TimerKind::I, now + self.timers.t4);
        }
        out
    }

    /// A timer fired: `kind` armed for `at`. Timers it no longer holds
    /// (cleared or re-armed) do nothing.
    pub fn on_timer(&mut self, now: Instant, kind: TimerKind, at: Instant) -> Vec<TxOutput> {
        let mut out = Vec::new();
        if !self.armed.take(kind, at) {
            return out;
        }
        match (self.state, kind) {
            (ServerState::Completed, TimerKind::G) => {
                if let Some(r) = &self.last_response {
                    out.push(TxOutput::Transmit(r.clone()));
                }
                self.g_interval = (self.g_interval * 2).min(self.timers.t2);
                self.armed
                    .arm(&mut out, TimerKind::G, now + self.g_interval);
            }
            (ServerState::Completed, TimerKind::H) => {
                self.terminate(&mut out);
                out.insert(0, TxOutput::AckTimeout);
            }
            (ServerState::Confirmed, TimerKind::I) | (ServerState::Accepted, TimerKind::L) => {
                self.terminate(&mut out)
            }
            _ => {}
        }
        out
    }

    fn terminate(&mut self, out: &mut Vec<TxOutput>) {
        self.armed.clear();
        self.state = ServerState::Terminated;
        out.push(TxOutput::Terminated);
    }
}

/// Non-INVITE server transaction (§17.2.2).
#[derive(Debug)]
pub struct ServerNonInvite {
    state: ServerState,
    reliable: bool,
    timers: TimerConfig,
    last_response: Option<Bytes>,
    armed: Armed,
}

impl ServerNonInvite {
    /// Created on a new request, in Trying.
    pub fn new(reliable: bool, timers: TimerConfig) -> Self {
        ServerNonInvite {
            state: ServerState::Trying,
            reliable,
            timers,
            last_response: None,
            armed: Armed::default(),
        }
    }

    /// Where the transaction is.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The TU sends a response with status `status`; a final one completes it.
    pub fn respond(&mut self, now: Instant, status: u16, bytes: Bytes) -> Vec<TxOutput> {
        let mut out = Vec::new();
        if !matches!(self.state, ServerState::Trying | ServerState::Proceeding) {
            return out;
        }
        out.push(TxOutput::Transmit(bytes.clone()));
        self.last_response = Some(bytes);
        if status < 200 {
            self.state = ServerState::Proceeding;
        } else if self.reliable {
            self.state = ServerState::Terminated;
            out.push(TxOutput::Terminated);
        } else {
            self.state = ServerState::Completed;
            self.armed
                .arm(&mut out, TimerKind::J, now + self.timers.timeout());
        }
        out
    }

    /// A retransmission of the request arrived: resend the last response.
    pub fn on_retransmission(&mut self) -> Vec<TxOutput> {
        match (self.state, &self.last_response) {
            (ServerState::Proceeding | ServerState::Completed, Some(r)) => {
                vec![TxOutput::Transmit(r.clone())]
            }
            _ => Vec::new(),
        }
    }

    /// A timer fired: `kind` armed for `at`. Timers it no longer holds
    /// (cleared or re-armed) do nothing.
    pub fn on_timer(&mut self, _now: Instant, kind: TimerKind, at: Instant) -> Vec<TxOutput> {
        if !self.armed.take(kind, at) || kind != TimerKind::J {
            return Vec::new();
        }
        self.state = ServerState::Terminated;
        self.armed.clear();
        vec![TxOutput::Terminated]
    }
}
