//! Client transactions, RFC 3261 §17.1 with RFC 6026's Accepted state.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Armed, TimerConfig, TimerKind, TxOutput};
use crate::message::{Headers, Method, Request, Response};

/// Client transaction states (RFC 3261 figures 5 and 6, RFC 6026 figure 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// INVITE sent, no response yet.
    Calling,
    /// Non-INVITE sent, no response yet.
    Trying,
    /// A provisional response arrived.
    Proceeding,
    /// Final response in; absorbing retransmissions (Timer D or K).
    Completed,
    /// INVITE got a 2xx; later 2xx copies go up for a new ACK (Timer M).
    Accepted,
    /// Done: drop it.
    Terminated,
}

/// INVITE client transaction (§17.1.1).
#[derive(Debug)]
pub struct ClientInvite {
    state: ClientState,
    reliable: bool,
    timers: TimerConfig,
    request: Request,
    bytes: Bytes,
    ack: Option<Bytes>,
    a_interval: Duration,
    armed: Armed,
}

impl ClientInvite {
    /// Starts the transaction: the first output sends the INVITE.
    pub fn start(
        now: Instant,
        request: Request,
        reliable: bool,
        timers: TimerConfig,
    ) -> (Self, Vec<TxOutput>) {
        let bytes = Bytes::from(request.to_bytes());
        let mut tx = ClientInvite {
            state: ClientState::Calling,
            reliable,
            timers,
            request,
            bytes: bytes.clone(),
            ack: None,
            a_interval: timers.t1,
            armed: Armed::default(),
        };
        let mut out = vec![TxOutput::Transmit(bytes)];
        if !reliable {
            tx.armed.arm(&mut out, TimerKind::A, now + tx.a_interval);
        }
        tx.armed.arm(&mut out, TimerKind::B, now + timers.timeout());
        (tx, out)
    }

    /// Where the transaction is.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The INVITE it sends.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Feed a response. Returns the outputs and whether the TU should see it.
    pub fn on_response(&mut self, now: Instant, response: &Response) -> (Vec<TxOutput>, bool) {
        let mut out = Vec::new();
        let status = response.status;
        let deliver = match self.state {
            ClientState::Calling | ClientState::Proceeding => match status {
                100..=199 => {
                    self.state = ClientState::Proceeding;
                    // A provisional stops retransmission, but Timer B still
                    // only guards the Calling state.
                    self.armed.clear();
                    true
                }
                200..=299 => {
                    self.state = ClientState::Accepted;
                    self.armed.clear();
                    self.armed
                        .arm(&mut out, TimerKind::M, now + self.timers.timeout());
                    true
                }
                _ => {
                    let ack = Bytes::from(ack_for_non_2xx(&self.request, response).to_bytes());
                    out.push(TxOutput::Transmit(ack.clone()));
                    self.ack = Some(ack);
                    self.state = ClientState::Completed;
                    self.armed.clear();
                    if self.reliable {
                        self.state = ClientState::Terminated;
                        out.push(TxOutput::Terminated);
                    } else {
                        self.armed
                            .arm(&mut out, TimerKind::D, now + Duration::from_secs(32));
                    }
                    true
                }
            },
            ClientState::Completed => {
                if status >= 300 {
                    if let Some(ack) = &self.ack {
                        out.push(TxOutput::Transmit(ack.clone()));
                    }
                }
                false
            }
            // 2xx retransmissions go up so the TU re-sends its ACK.
            ClientState::Accepted => (200..300).contains(&status),
            _ => false,
        };
        (out, deliver)
    }

    /// A timer fired: `kind` armed for `at`. Timers it no longer holds
    /// (cleared or re-armed) do nothing.
    pub fn on_timer(&mut self, now: Instant, kind: TimerKind, at: Instant) -> Vec<TxOutput> {
        let mut out = Vec::new();
        if !self.armed.take(kind, at) {
            return out;
        }
        match (self.state, kind) {
            (ClientState::Calling, TimerKind::A) => {
                out.push(TxOutput::Transmit(self.bytes.clone()));
                self.a_interval *= 2;
                self.armed
                    .arm(&mut out, TimerKind::A, now + self.a_interval);
            }
            (ClientState::Calling, TimerKind::B) => {
                self.terminate(&mut out);
                out.insert(0, TxOutput::Timeout);
            }
            (ClientState::Completed, TimerKind::D) | (ClientState::Accepted, TimerKind::M) => {
                self.terminate(&mut out)
            }
            _ => {}
        }
        out
    }

    fn terminate(&mut self, out: &mut Vec<TxOutput>) {
        self.armed.clear();
        self.state = ClientState::Terminated;
        out.push(TxOutput::Terminated);
    }
}

/// RFC 3261 §17.1.1.3: the ACK for a non-2xx final response.
fn ack_for_non_2xx(invite: &Request, response: &Response) -> Request {
    let mut headers = Headers::new();
    if let Some(via) = invite.headers.get("Via") {
        headers.push("Via", via);
    }
    for route in invite.headers.get_all("Route") {
        headers.push("Route", route);
    }
    headers.push("Max-Forwards", "70");
    if let Some(from) = invite.headers.get("From") {
        headers.push("From", from);
    }
    if let Some(to) = response.headers.get("To") {
        headers.push("To", to);
    }
    if let Some(call_id) = invite.headers.get("Call-ID") {
        headers.push("Call-ID", call_id);
    }
    let seq = invite.headers.cseq().map(|c| c.seq).unwrap_or(1);
    headers.push("CSeq", format!("{seq} ACK"));
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        headers,
        body: Bytes::new(),
    }
}

/// Non-INVITE client transaction (§17.1.2).
#[derive(Debug)]
pub struct ClientNonInvite {
    state: ClientState,
    reliable: bool,
    timers: TimerConfig,
    request: Request,
    bytes: Bytes,
    e_interval: Duration,
    armed: Armed,
}

impl ClientNonInvite {
    /// Starts the transaction: the first output sends the request.
    pub fn start(
        now: Instant,
        request: Request,
        reliable: bool,
        timers: TimerConfig,
    ) -> (Self, Vec<TxOutput>) {
        let bytes = Bytes::from(request.to_bytes());
        let mut tx = ClientNonInvite {
            state: ClientState::Trying,
            reliable,
            timers,
            request,
            bytes: bytes.clone(),
            e_interval: timers.t1,
            armed: Armed::default(),
        };
        let mut out = vec![TxOutput::Transmit(bytes)];
        if !reliable {
            tx.armed.arm(&mut out, TimerKind::E, now + tx.e_interval);
        }
        tx.armed.arm(&mut out, TimerKind::F, now + timers.timeout());
        (tx, out)
    }

    /// Where the transaction is.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// The request it sends.
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// Feed a response. Returns the outputs and whether the TU should see it.
    pub fn on_response(&mut self, now: Instant, response: &Response) -> (Vec<TxOutput>, bool) {
        let mut out = Vec::new();
        if !matches!(self.state, ClientState::Trying | ClientState::Proceeding) {
            return (out, false);
        }
        if response.status < 200 {
            self.state = ClientState::Proceeding;
            return (out, true);
        }
        self.armed.clear();
        if self.reliable {
            self.state = ClientState::Terminated;
            out.push(TxOutput::Terminated);
        } else {
            self.state = ClientState::Completed;
            self.armed.arm(&mut out, TimerKind::K, now + self.timers.t4);
        }
        (out, true)
    }

    /// A timer fired: `kind` armed for `at`. Timers it no longer holds
    /// (cleared or re-armed) do nothing.
    pub fn on_timer(&mut self, now: Instant, kind: TimerKind, at: Instant) -> Vec<TxOutput> {
        let mut out = Vec::new();
        if !self.armed.take(kind, at) {
            return out;
        }
        match (self.state, kind) {
            (ClientState::Trying | ClientState::Proceeding, TimerKind::E) => {
                out.push(TxOutput::Transmit(self.bytes.clone()));
                self.e_interval = if self.state == ClientState::Trying {
                    (self.e_interval * 2).min(self.timers.t2)
                } else {
                    self.timers.t2
                };
                self.armed
                    .arm(&mut out, TimerKind::E, now + self.e_interval);
            }
            (ClientState::Trying | ClientState::Proceeding, TimerKind::F) => {
                self.armed.clear();
                self.state = ClientState::Terminated;
                out.push(TxOutput::Timeout);
                out.push(TxOutput::Terminated);
            }
            (ClientState::Completed, TimerKind::K) => {
                self.armed.clear();
                self.state = ClientState::Terminated;
                out.push(TxOutput::Terminated);
            }
            _ => {}
        }
        out
    }
}
