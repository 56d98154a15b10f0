//! Registration client (RFC 3261 §10): REGISTER to each registrar, answer
//! challenges, refresh before expiry, back off on failure, and unregister
//! with Expires: 0 on shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::util::{host_port, new_call_id, new_tag};
use super::{Endpoint, EndpointError, Event, Peer, TimerTarget, Transport, TxOwner};
use crate::auth::{Challenge, DigestClient};
use crate::message::{Headers, Method, Request, Response, Uri};

/// One registration to keep up with a registrar (a PBX or carrier).
#[derive(Debug, Clone)]
pub struct RegistrationSpec {
    /// The Request-URI of our REGISTERs.
    pub registrar: Uri,
    /// Where the registrar is (resolved by the driver).
    pub destination: SocketAddr,
    /// How to reach it.
    pub transport: Transport,
    /// The address of record we register (To and From).
    pub aor: Uri,
    /// Username and password for its digest challenges, if any.
    pub credentials: Option<(String, crate::secret::Secret)>,
    /// Seconds asked for; it re-registers before they run out.
    pub expires: u32,
}

/// Where a registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationState {
    /// A REGISTER is out, with no final answer yet.
    Registering,
    /// Registered; the registrar granted this many seconds.
    Registered {
        /// Seconds granted.
        expires: u32,
    },
    /// Failed with a status (408 for no answer); retrying after `retry_in`.
    Failed {
        /// The status that failed it.
        status: u16,
        /// How long until the next try.
        retry_in: Duration,
    },
    /// Taken down with `Expires: 0` (at shutdown); not retried.
    Unregistered,
}

pub(super) struct Registration {
    spec: RegistrationSpec,
    call_id: String,
    from_tag: String,
    cseq: u32,
    digest: Option<DigestClient>,
    auth_attempts: u32,
    failures: u32,
    state: RegistrationState,
    /// Expires value of the REGISTER in flight (0 when unregistering).
    sending_expires: u32,
}

const MIN_BACKOFF: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

impl Endpoint {
    /// Start registering; returns the registration's index.
    pub fn add_registration(
        &mut self,
        now: Instant,
        spec: RegistrationSpec,
    ) -> Result<usize, EndpointError> {
        let local = self.local_for(spec.transport)?;
        let host = self.advertised(local).ip().to_string();
        let digest = spec
            .credentials
            .as_ref()
            .map(|(u, p)| DigestClient::new(u, p.expose()));
        self.registrations.push(Registration {
            spec,
            call_id: new_call_id(&mut self.id_rng, &host),
            from_tag: new_tag(&mut self.id_rng),
            cseq: 0,
            digest,
            auth_attempts: 0,
            failures: 0,
            state: RegistrationState::Registering,
            sending_expires: 0,
        });
        let index = self.registrations.len() - 1;
        self.send_register(now, index, None);
        Ok(index)
    }

    /// Send a registration's next REGISTERs to another address (the next
    /// target of its registrar, after a failure); the retry already
    /// scheduled goes there.
    pub fn set_registration_destination(
        &mut self,
        index: usize,
        destination: SocketAddr,
        transport: Transport,
    ) -> Result<(), EndpointError> {
        self.local_for(transport)?;
        let reg = self
            .registrations
            .get_mut(index)
            .ok_or(EndpointError::NoSuchCall)?;
        reg.spec.destination = destination;
        reg.spec.transport = transport;
        Ok(())
    }

    /// Where a registration sends its REGISTERs now.
    pub fn registration_destination(&self, index: usize) -> Option<(SocketAddr, Transport)> {
        self.registrations
            .get(index)
            .map(|r| (r.spec.destination, r.spec.transport))
    }

    /// A registration's state, by the index `add_registration` returned.
    pub fn registration_state(&self, index: usize) -> Option<&RegistrationState> {
        self.registrations.get(index).map(|r| &r.state)
    }

    /// Send Expires: 0 for every registration (shutdown).
    pub fn unregister_all(&mut self, now: Instant) {
        for i in 0..self.registrations.len() {
            if matches!(
                self.registrations[i].state,
                RegistrationState::Registered { .. }
            ) {
                self.registrations[i].state = RegistrationState::Unregistered;
                self.send_register_with(now, i, None, 0);
            }
        }
    }

    fn send_register(&mut self, now: Instant, index: usize, auth: Option<(u16, Challenge)>) {
        let expires = match self.registrations.get(index) {
            Some(r) if r.state == RegistrationState::Unregistered => 0,
            Some(r) => r.spec.expires,
            None => return,
        };
        self.send_register_with(now, index, auth, expires);
    }

    fn send_register_with(
        &mut self,
        now: Instant,
        index: usize,
        auth: Option<(u16, Challenge)>,
        expires: u32,
    ) {
        let Some(reg) = self.registrations.get(index) else {
            return;
        };
        let Ok(local) = self.local_for(reg.spec.transport) else {
            return;
        };
        let peer = Peer {
            transport: reg.spec.transport,
            local,
            remote: reg.spec.destination,
            conn: None,
        };
        let contact_addr = self.advertised(local);
        let user = reg
            .spec
            .aor
            .user
            .clone()
            .unwrap_or_else(|| "crossline".into());
        let transport_param = reg.spec.transport.uri_param();
        let contact = format!("<sip:{user}@{}{transport_param}>", host_port(contact_addr));
        let ua = self.config.user_agent.clone();
        let via = self.via_for(&peer);
        let Some(reg) = self.registrations.get_mut(index) else {
            return;
        };
        reg.cseq += 1;
        reg.sending_expires = expires;
        let mut headers = Headers::new();
        headers.push("Via", via.to_string());
        headers.push("Max-Forwards", "70");
        headers.push("From", format!("<{}>;tag={}", reg.spec.aor, reg.from_tag));
        headers.push("To", format!("<{}>", reg.spec.aor));
        headers.push("Call-ID", reg.call_id.clone());
        headers.push("CSeq", format!("{} REGISTER", reg.cseq));
        headers.push("Contact", contact);
        headers.push("Expires", expires.to_string());
        headers.push("User-Agent", ua);
        let uri = reg.spec.registrar.clone();
        if let (Some((status, challenge)), Some(digest)) = (auth, reg.digest.as_mut()) {
            let value = digest.authorize(&challenge, "REGISTER", &uri.to_string());
            let name = if status == 407 {
                "Proxy-Authorization"
            } else {
                "Authorization"
            };
            headers.push(name, value);
        }
        let request = Request {
            method: Method::Register,
            uri,
            headers,
            body: Bytes::new(),
        };
        self.start_client(now, request, peer, TxOwner::Registration(index));
    }

    pub(super) fn registration_response(
        &mut self,
        now: Instant,
        index: usize,
        _request: &Request,
        resp: &Response,
    ) {
        let Some(reg) = self.registrations.get_mut(index) else {
            return;
        };
        match resp.status {
            100..=199 => {}
            200..=299 => {
                reg.auth_attempts = 0;
                reg.failures = 0;
                if reg.sending_expires == 0 {
                    reg.state = RegistrationState::Unregistered;
                } else {
                    // The registrar may shorten our expiry (Contact param or
                    // Expires header).
                    let granted = granted_expires(resp).unwrap_or(reg.spec.expires).max(1);
                    reg.state = RegistrationState::Registered { expires: granted };
                    // Refresh at half time for short grants, else 90 %.
                    let refresh = if granted <= 60 {
                        Duration::from_secs(u64::from(granted) / 2)
                    } else {
                        Duration::from_secs(u64::from(granted) * 9 / 10)
                    };
                    self.schedule(now + refresh, TimerTarget::Registration(index));
                }
                let state = self.registrations[index].state.clone();
                tracing::info!(index, ?state, "registration");
                self.events.push_back(Event::Registration { index, state });
            }
            401 | 407 if reg.auth_attempts < 2 && reg.digest.is_some() => {
                let header = if resp.status == 407 {
                    "Proxy-Authenticate"
                } else {
                    "WWW-Authenticate"
                };
                match resp.headers.get(header).map(Challenge::parse) {
                    Some(Ok(ch)) => {
                        // A second challenge is only worth answering if stale.
                        if reg.auth_attempts == 1 && !ch.stale {
                            self.registration_failed(now, index, resp.status);
                            return;
                        }
                        reg.auth_attempts += 1;
                        let expires = reg.sending_expires;
                        self.send_register_with(now, index, Some((resp.status, ch)), expires);
                    }
                    _ => self.registration_failed(now, index, resp.status),
                }
            }
            status => self.registration_failed(now, index, status),
        }
    }

    pub(super) fn registration_timeout(&mut self, now: Instant, index: usize) {
        self.registration_failed(now, index, 408);
    }

    /// The registrar could not be reached (transport error): a 503.
    pub(super) fn registration_unreachable(&mut self, now: Instant, index: usize) {
        self.registration_failed(now, index, 503);
    }

    fn registration_failed(&mut self, now: Instant, index: usize, status: u16) {
        let Some(reg) = self.registrations.get_mut(index) else {
            return;
        };
        reg.auth_attempts = 0;
        if reg.sending_expires == 0 {
            reg.state = RegistrationState::Unregistered;
            return;
        }
        reg.failures += 1;
        let shift = reg.failures.saturating_sub(1).min(16);
        let retry_in = (MIN_BACKOFF * 2u32.saturating_pow(shift)).min(MAX_BACKOFF);
        reg.state = RegistrationState::Failed { status, retry_in };
        let state = reg.state.clone();
        tracing::warn!(index, status, ?retry_in, "registration failed");
        self.events.push_back(Event::Registration { index, state });
        self.schedule(now + retry_in, TimerTarget::Registration(index));
    }

    pub(super) fn registration_timer(&mut self, now: Instant, index: usize) {
        let Some(reg) = self.registrations.get_mut(index) else {
            return;
        };
        if reg.state == RegistrationState::Unregistered {
            return;
        }
        reg.auth_attempts = 0;
        self.send_register(now, index, None);
    }
}

fn granted_expires(resp: &Response) -> Option<u32> {
    let from_contact = resp.headers.contacts().ok().and_then(|cs| {
        cs.iter().find_map(|c| {
            c.params
                .iter()
                .find(|(k, _)| k == "expires")
                .and_then(|(_, v)| v.as_deref())
                .and_then(|v| v.trim().parse().ok())
        })
    });
    from_contact.or_else(|| resp.headers.expires().ok().flatten())
}
