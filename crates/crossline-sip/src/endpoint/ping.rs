//! OPTIONS pings (RFC 3261 §11): ask a peer (an outbound trunk) whether it
//! is there. Each ping is one non-INVITE client transaction with its own
//! deadline, and ends in exactly one [`Event::PingAnswered`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::util::{host_port, new_call_id, new_tag};
use super::{Endpoint, EndpointError, Event, Peer, TimerTarget, Transport, TxOwner};
use crate::message::{Headers, Method, Request, Uri};

/// Names one ping, unique in this endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PingId(pub u64);

/// Where to send an OPTIONS ping.
#[derive(Debug, Clone)]
pub struct OptionsPing {
    /// The Request-URI (the trunk's proxy URI).
    pub uri: Uri,
    /// Where it goes (resolved by the driver).
    pub destination: SocketAddr,
    /// How.
    pub transport: Transport,
    /// No final response by then counts as no answer (Timer F still
    /// applies when it comes first).
    pub timeout: Duration,
}

/// How a ping ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PingOutcome {
    /// A final response, with its status (any status: the peer is there
    /// to say it).
    Answered(u16),
    /// No final response in time.
    Timeout,
    /// The transport could not reach the peer (connection refused, TLS).
    Unreachable,
}

impl Endpoint {
    /// Send an OPTIONS to `ping.destination`; its end comes back as
    /// [`Event::PingAnswered`].
    pub fn ping(&mut self, now: Instant, ping: OptionsPing) -> Result<PingId, EndpointError> {
        let local = self.local_for(ping.transport)?;
        let peer = Peer {
            transport: ping.transport,
            local,
            remote: ping.destination,
            conn: None,
        };
        let contact_addr = host_port(self.advertised(local));
        let host = self.advertised(local).ip().to_string();
        let via = self.via_for(&peer);
        let id = PingId(self.next_ping);
        self.next_ping += 1;
        let mut headers = Headers::new();
        headers.push("Via", via.to_string());
        headers.push("Max-Forwards", "70");
        headers.push(
            "From",
            format!(
                "<sip:crossline@{contact_addr}>;tag={}",
                new_tag(&mut self.id_rng)
            ),
        );
        headers.push("To", format!("<{}>", ping.uri));
        headers.push("Call-ID", new_call_id(&mut self.id_rng, &host));
        headers.push("CSeq", "1 OPTIONS");
        headers.push("Accept", super::ACCEPT);
        headers.push("User-Agent", self.config.user_agent.clone());
        let request = Request {
            method: Method::Options,
            uri: ping.uri,
            headers,
            body: Bytes::new(),
        };
        let key = self.start_client(now, request, peer, TxOwner::Ping(id));
        self.pings.insert(id, key);
        let deadline = now.checked_add(ping.timeout).unwrap_or(now);
        self.schedule(deadline, TimerTarget::Ping(id));
        Ok(id)
    }

    /// Pings still waiting for their answer.
    pub fn pings_pending(&self) -> usize {
        self.pings.len()
    }

    /// A ping's transaction delivered a response; finals end the ping.
    pub(super) fn ping_response(&mut self, id: PingId, status: u16) {
        if status >= 200 {
            self.ping_ended(id, PingOutcome::Answered(status));
        }
    }

    /// The ping is over: forget its transaction (a deadline that fired
    /// leaves it behind) and tell the application, once.
    pub(super) fn ping_ended(&mut self, id: PingId, outcome: PingOutcome) {
        let Some(key) = self.pings.remove(&id) else {
            return;
        };
        if outcome == PingOutcome::Timeout {
            // Its retransmission timers find no transaction and lapse.
            self.client_txs.remove(&key);
        }
        self.events
            .push_back(Event::PingAnswered { ping: id, outcome });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::EndpointConfig;
    use crate::message::{parse_message, Response, SipMessage};

    const PEER: &str = "127.0.0.1:5080";

    fn ping_to(ep: &mut Endpoint, now: Instant, timeout: Duration) -> (PingId, Request) {
        let id = ep
            .ping(
                now,
                OptionsPing {
                    uri: Uri::parse("sip:carrier.example.com").unwrap(),
                    destination: PEER.parse().unwrap(),
                    transport: Transport::Udp,
                    timeout,
                },
            )
            .unwrap();
        let sent = ep.poll_transmit().expect("the OPTIONS goes out at once");
        assert_eq!(sent.peer.remote, PEER.parse().unwrap());
        let Ok(SipMessage::Request(req)) = parse_message(&sent.payload) else {
            panic!("not a request");
        };
        (id, req)
    }

    fn answer(ep: &mut Endpoint, now: Instant, req: &Request, status: u16) {
        let resp = Response::for_request(req, status);
        ep.handle_datagram(
            now,
            "127.0.0.1:5060".parse().unwrap(),
            PEER.parse().unwrap(),
            &resp.to_bytes(),
        );
    }

    fn events(ep: &mut Endpoint) -> Vec<Event> {
        std::iter::from_fn(|| ep.poll_event()).collect()
    }

    #[test]
    fn an_options_ping_is_a_well_formed_request() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default(), t0);
        let (_, req) = ping_to(&mut ep, t0, Duration::from_secs(5));
        assert_eq!(req.method, Method::Options);
        assert_eq!(req.uri.to_string(), "sip:carrier.example.com");
        req.check_mandatory().unwrap();
        assert!(req.headers.get("Accept").is_some());
    }

    #[test]
    fn any_final_answer_ends_the_ping_once() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default(), t0);
        for status in [200, 404, 503] {
            let (id, req) = ping_to(&mut ep, t0, Duration::from_secs(5));
            answer(&mut ep, t0, &req, 100);
            assert!(events(&mut ep).is_empty(), "a 1xx is not an answer");
            answer(&mut ep, t0, &req, status);
            // A retransmitted final is absorbed.
            answer(&mut ep, t0, &req, status);
            assert_eq!(
                events(&mut ep),
                [Event::PingAnswered {
                    ping: id,
                    outcome: PingOutcome::Answered(status)
                }]
            );
        }
        assert_eq!(ep.pings_pending(), 0);
    }

    #[test]
    fn silence_is_a_timeout_at_the_deadline_and_retransmits_stop() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default(), t0);
        let (id, req) = ping_to(&mut ep, t0, Duration::from_secs(2));
        let mut now = t0;
        let mut retransmits = 0;
        let mut ended = Vec::new();
        while ended.is_empty() {
            now = ep.poll_timeout().expect("a timer is armed until it ends");
            ep.handle_timeout(now);
            retransmits += std::iter::from_fn(|| ep.poll_transmit()).count();
            ended = events(&mut ep);
        }
        assert_eq!(
            ended,
            [Event::PingAnswered {
                ping: id,
                outcome: PingOutcome::Timeout
            }]
        );
        assert_eq!(now, t0 + Duration::from_secs(2), "ends at its deadline");
        assert!(retransmits >= 2, "UDP retransmits until then (T1 doubling)");
        assert_eq!(ep.pings_pending(), 0);
        assert_eq!(ep.transaction_count(), 0, "its transaction is gone");
        // Nothing more is sent for it, and a late answer is a stray.
        ep.handle_timeout(t0 + Duration::from_secs(40));
        assert!(ep.poll_transmit().is_none());
        answer(&mut ep, now, &req, 200);
        assert!(events(&mut ep).is_empty());
    }

    #[test]
    fn timer_f_ends_a_ping_with_a_long_deadline() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default(), t0);
        let (id, _) = ping_to(&mut ep, t0, Duration::from_secs(3600));
        ep.handle_timeout(t0 + Duration::from_secs(33));
        assert_eq!(
            events(&mut ep),
            [Event::PingAnswered {
                ping: id,
                outcome: PingOutcome::Timeout
            }]
        );
        // The deadline later finds nothing to end.
        ep.handle_timeout(t0 + Duration::from_secs(3600));
        assert!(events(&mut ep).is_empty());
    }

    #[test]
    fn an_unreachable_peer_ends_the_ping_at_once() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default(), t0);
        let (id, _) = ping_to(&mut ep, t0, Duration::from_secs(5));
        ep.transport_failed(t0, Transport::Udp, PEER.parse().unwrap());
        assert_eq!(
            events(&mut ep),
            [Event::PingAnswered {
                ping: id,
                outcome: PingOutcome::Unreachable
            }]
        );
    }

    #[test]
    fn garbage_from_the_peer_is_counted_and_the_ping_times_out() {
        let t0 = Instant::now();
        let mut ep = Endpoint::new(EndpointConfig::default(), t0);
        let (id, _) = ping_to(&mut ep, t0, Duration::from_secs(1));
        ep.handle_datagram(
            t0,
            "127.0.0.1:5060".parse().unwrap(),
            PEER.parse().unwrap(),
            b"SIP/2.0 200 \xff\xfe garbage\r\n\r\n",
        );
        assert!(ep.counters.parse_errors + ep.counters.stray_responses >= 1);
        ep.handle_timeout(t0 + Duration::from_secs(1));
        assert_eq!(
            events(&mut ep),
            [Event::PingAnswered {
                ping: id,
                outcome: PingOutcome::Timeout
            }]
        );
    }
}
