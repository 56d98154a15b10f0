//! Where the calls we place go, and where they go next (RFC 3263 §4.3,
//! RFC 3261 §8.1.3.4, §21.6): every agent leg and callback is a `Call`
//! with a [`Dialling`] plan.
//!
//! - Its destination (the trunk's proxy, or the target itself) is resolved
//!   by the driver: call control emits a [`ResolveRequest`] and takes the
//!   answer in [`CallControl::handle_resolved`]; a numeric host needs none.
//!   The targets are tried in RFC 2782 order ([`dns::select`]).
//! - A 503, no answer (Timer B) or a transport error moves the INVITE to
//!   the next target, as a new transaction. New calls pass the failed
//!   target over for `[sip] failover_backoff_secs` while another is up
//!   (with none up it is still tried, last); a 503's Retry-After keeps it
//!   out until then, whatever else there is ([`dns::backoff`]).
//! - A 3xx is followed to its Contacts, best q first, at most
//!   `[sip] max_redirects` times, never to a URI already tried.
//! - A 6xx is final for the whole fork (`transfer.rs` stops the others).
//! - Through a trunk group, a leg whose trunk has no target left moves to
//!   the group's next trunk that is not down ([`super::trunks`]), on the
//!   same failures.
//!
//! A new attempt is a new endpoint call: the leg moves to the new id
//! ([`CallControl::rekey`]) and stays one `Call` with one record. A leg
//! still waiting on DNS has an id of call control's own, above the
//! endpoint's. Registrations resolve their registrar the same way and
//! move to its next target when one fails.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use metrics::counter;
use rand::rngs::StdRng;
use rand::SeedableRng as _;

use super::model::{Call, Refer, Role};
use super::trunk_health::TrunkHealth;
use super::{CallControl, PortSource};
use crate::dns::backoff::{Backoff, Standing};
use crate::dns::{self, Query, Resolution, ResolveError, Supported, Target};
use crate::sip::endpoint::{
    CallId, EndCause, Endpoint, OutgoingCall, PingId, RegistrationSpec, RegistrationState,
    Transport, TRANSPORT_ERROR,
};
use crate::sip::message::{NameAddr, Uri};
use crate::telemetry::names;

/// Names one resolution call control asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResolveId(pub u64);

/// "Resolve this": the driver looks it up (RFC 3263) and answers with
/// [`CallControl::handle_resolved`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveRequest {
    pub id: ResolveId,
    pub query: Query,
}

/// Ids of legs not sent anywhere yet (waiting on DNS) start here, far
/// above the endpoint's own, which count up from 1.
const UNPLACED: u64 = 1 << 62;
/// A registrar that did not resolve is looked up again after this.
const REGISTRAR_RETRY: Duration = Duration::from_secs(30);
/// Contacts taken from one 3xx, and Request-URIs remembered per leg.
const MAX_CONTACTS: usize = 8;
const MAX_TRIED: usize = 64;

/// What a refusal said about where or when to go next.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    retry_after: Option<u32>,
    contacts: Vec<NameAddr>,
}

/// An outbound leg's plan: the Request-URIs to try, and for the current
/// one its targets in order.
#[derive(Debug)]
pub(crate) struct Dialling {
    /// The Request-URI being tried.
    uri: Uri,
    /// Request-URIs to try after it (a 3xx's Contacts).
    next_uris: VecDeque<Uri>,
    /// Sent through this proxy (a trunk's): it is what we resolve.
    proxy: Option<Uri>,
    /// The trunk's configured transport; else the URI's, else DNS's.
    transport: Option<Transport>,
    /// Targets left for `uri`, once `resolved`.
    targets: VecDeque<Target>,
    resolved: bool,
    /// Targets of `uri` passed over because they failed lately: tried
    /// last, when nothing else is left (never those that asked us to wait).
    resting: VecDeque<Target>,
    last_resort: bool,
    /// The target of the INVITE in flight.
    current: Option<Target>,
    /// The trunk it goes through now, and the group's trunks after it.
    trunk: Option<String>,
    next_trunks: VecDeque<TrunkHop>,
    /// The Request-URI's host is the trunk's proxy (a callback's number
    /// at the trunk): it changes with the trunk.
    retarget: bool,
    /// The Request-URI the leg started with, for the next trunk.
    first_uri: Uri,
    from_user: String,
    credentials: Option<(String, crate::secret::Secret)>,
    /// Our RTP port, reserved by the leg, offered in every attempt.
    port: u16,
    redirects: u32,
    /// Request-URIs already tried: a redirect never goes back to one.
    tried: Vec<String>,
    refusal: Option<Refusal>,
    /// We hung it up: no further attempts.
    abandoned: bool,
    /// Give up on the INVITE in flight if nothing came back by then (and
    /// another target waits).
    unanswered_by: Option<Instant>,
    /// A registered device: its flow is the only target, its Path the
    /// Route set, and its redirects are not followed (its Contact or a
    /// 3xx must not make us call some other host).
    device: Option<Box<DeviceFlow>>,
}

/// Where a registered device is reached: over its flow (none: the node
/// holding it, at the one target), with these headers (its Path as the
/// Route set; the handing node's id).
#[derive(Debug)]
struct DeviceFlow {
    flow: Option<crate::sip::endpoint::Peer>,
    headers: Vec<(String, String)>,
}

impl Dialling {
    /// A plan to call `target` from `from_user`, through `trunk`'s proxy
    /// and with its credentials when given, offering RTP on `port`.
    pub(crate) fn new(
        target: Uri,
        trunk: Option<&crate::config::TrunkConfig>,
        from_user: String,
        port: u16,
    ) -> Dialling {
        let hop = trunk.map(TrunkHop::of);
        let (proxy, transport, credentials) = match hop {
            Some(h) => (h.proxy, h.transport, h.credentials),
            None => (None, None, None),
        };
        Dialling {
            tried: vec![uri_key(&target)],
            first_uri: target.clone(),
            trunk: trunk.map(|t| t.name.clone()),
            next_trunks: VecDeque::new(),
            retarget: false,
            uri: target,
            next_uris: VecDeque::new(),
            proxy,
            transport,
            targets: VecDeque::new(),
            resolved: false,
            resting: VecDeque::new(),
            last_resort: false,
            current: None,
            from_user,
            credentials,
            port,
            redirects: 0,
            refusal: None,
            abandoned: false,
            unanswered_by: None,
            device: None,
        }
    }

    /// The group's trunks to go on to, in order, after the first; with
    /// `retarget` the Request-URI's host follows the trunk's proxy.
    pub(crate) fn then_through(
        mut self,
        trunks: &[crate::config::TrunkConfig],
        retarget: bool,
    ) -> Dialling {
        self.next_trunks = trunks.iter().map(TrunkHop::of).collect();
        self.retarget = retarget;
        self
    }

    /// A plan to call a registered device from `from_user`: its Contact
    /// is the Request-URI, its registered flow the one destination.
    pub(crate) fn to_device(
        binding: &crate::sip::registrar::Binding,
        from_user: String,
        port: u16,
    ) -> Dialling {
        let mut d = Dialling::new(binding.contact.clone(), None, from_user, port);
        d.targets = VecDeque::from([Target {
            addr: binding.flow.remote,
            transport: binding.flow.transport,
        }]);
        d.resolved = true;
        d.device = Some(Box::new(DeviceFlow {
            flow: Some(binding.flow),
            headers: binding
                .path
                .iter()
                .map(|p| ("Route".to_string(), p.clone()))
                .collect(),
        }));
        d
    }

    /// A plan to hand a call for `user` (its address at our domain) to
    /// the node at `node` over UDP, saying it comes from node `us`: that
    /// node rings its own devices of the user.
    pub(crate) fn to_node(
        user: Uri,
        node: SocketAddr,
        from_user: String,
        port: u16,
        us: String,
    ) -> Dialling {
        let mut d = Dialling::new(user, None, from_user, port);
        d.targets = VecDeque::from([Target {
            addr: node,
            transport: Transport::Udp,
        }]);
        d.resolved = true;
        d.device = Some(Box::new(DeviceFlow {
            flow: None,
            headers: vec![(crate::sip::endpoint::FORWARDED_BY.to_string(), us)],
        }));
        d
    }

    /// Somewhere left to go after the target in flight.
    fn has_alternatives(&self) -> bool {
        !(self.targets.is_empty()
            && self.resting.is_empty()
            && self.next_uris.is_empty()
            && self.next_trunks.is_empty())
    }

    /// Go out through `hop` from now on: its proxy, credentials and
    /// caller ID, the first Request-URI again.
    fn switch_trunk(&mut self, hop: TrunkHop) {
        let mut uri = self.first_uri.clone();
        if let (true, Some(proxy)) = (self.retarget, &hop.proxy) {
            uri.host = proxy.host.clone();
            uri.port = proxy.port;
        }
        self.uri = uri;
        self.proxy = hop.proxy;
        self.transport = hop.transport;
        self.credentials = hop.credentials;
        if let Some(caller_id) = hop.caller_id {
            self.from_user = caller_id;
        }
        self.trunk = Some(hop.name);
        self.next_uris.clear();
        self.targets.clear();
        self.resting.clear();
        self.resolved = false;
        self.last_resort = false;
    }

    /// What gets resolved: the proxy, else the Request-URI.
    fn next_hop(&self) -> &Uri {
        self.proxy.as_ref().unwrap_or(&self.uri)
    }

    /// Take a 3xx's Contacts as the next Request-URIs: best q first (ties
    /// in their order), SIP URIs we can dial only, none tried before.
    /// Err: the metric label for why not.
    fn follow_redirect(
        &mut self,
        contacts: Vec<NameAddr>,
        max: u32,
    ) -> Result<usize, &'static str> {
        if self.device.is_some() {
            return Err("registered_device");
        }
        if self.redirects >= max {
            return Err("too_many");
        }
        let mut ranked: Vec<(f32, Uri)> = contacts
            .into_iter()
            .filter(|c| matches!(c.uri.scheme.as_str(), "sip" | "sips"))
            .filter(|c| dns::valid_host(&c.uri.host))
            .take(MAX_CONTACTS)
            .map(|c| (q_value(&c), c.uri))
            .collect();
        if ranked.is_empty() {
            return Err("no_contact");
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut fresh = Vec::new();
        for (_, uri) in ranked {
            let key = uri_key(&uri);
            if !self.tried.contains(&key) && self.tried.len() < MAX_TRIED {
                self.tried.push(key);
                fresh.push(uri);
            }
        }
        if fresh.is_empty() {
            return Err("loop");
        }
        self.redirects += 1;
        let n = fresh.len();
        for uri in fresh.into_iter().rev() {
            self.next_uris.push_front(uri);
        }
        self.targets.clear();
        self.resting.clear();
        self.resolved = true;
        Ok(n)
    }
}

/// A trunk of a group, as a leg goes out through it.
#[derive(Debug)]
struct TrunkHop {
    name: String,
    proxy: Option<Uri>,
    transport: Option<Transport>,
    credentials: Option<(String, crate::secret::Secret)>,
    caller_id: Option<String>,
}

impl TrunkHop {
    fn of(t: &crate::config::TrunkConfig) -> TrunkHop {
        TrunkHop {
            name: t.name.clone(),
            proxy: t.outbound_proxy.as_deref().and_then(|p| Uri::parse(p).ok()),
            transport: t.outbound_transport.map(|n| n.transport()),
            credentials: t.username.clone().zip(t.password().ok().flatten()),
            caller_id: t.caller_id.clone(),
        }
    }
}

/// A URI as compared for loops.
fn uri_key(uri: &Uri) -> String {
    uri.to_string().to_ascii_lowercase()
}

/// A Contact's q (RFC 3261 §20.10), 1.0 when absent or unreadable.
fn q_value(contact: &NameAddr) -> f32 {
    contact
        .params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("q"))
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| v.trim().parse::<f32>().ok())
        .filter(|q| (0.0..=1.0).contains(q))
        .unwrap_or(1.0)
}

/// A leg's plan, borrowing only the map (so the rest of call control
/// stays usable beside it).
fn dialling_of<R, F>(
    calls: &mut HashMap<CallId, Box<Call<R, F>>>,
    id: CallId,
) -> Option<&mut Dialling> {
    calls.get_mut(&id)?.dialling.as_deref_mut()
}

/// Who waits for a resolution.
#[derive(Debug, Clone, Copy)]
pub(super) enum Waiter {
    Leg(CallId),
    Registrar(usize),
    /// The OPTIONS probe of this trunk (its index in `[[trunks]]`).
    Probe(usize),
}

/// One `[[registrations]]` entry: where its registrar is, and which of
/// the endpoint's registrations it became.
#[derive(Debug)]
pub(crate) struct Registrar {
    registrar: Uri,
    aor: Uri,
    forced: Option<Transport>,
    credentials: Option<(String, crate::secret::Secret)>,
    expires: u32,
    /// The endpoint's index for it, once a target was found.
    endpoint_index: Option<usize>,
    targets: VecDeque<Target>,
    current: Option<Target>,
    /// Look the registrar up again then (it did not resolve).
    retry_at: Option<Instant>,
}

/// Call control's state for placing calls: resolutions in flight, the
/// back-off of failed targets, the generator that orders SRV records.
pub(crate) struct Outbound {
    supported: Supported,
    requests: VecDeque<ResolveRequest>,
    waiting: HashMap<ResolveId, Waiter>,
    next_resolve: u64,
    next_unplaced: u64,
    backoff: Backoff,
    rng: StdRng,
    /// Legs that end here, not in the endpoint (never placed, or between
    /// attempts): ended with `process_events`.
    local_ends: VecDeque<(CallId, EndCause)>,
    registrars: Vec<Registrar>,
    /// Trunk keep-alives and what they found.
    pub(super) health: TrunkHealth,
    /// Probes in flight: the trunk and the target each went to.
    pub(super) probes: HashMap<PingId, (usize, Target)>,
    /// Where each round-robin group starts its next call.
    pub(super) round_robin: HashMap<String, usize>,
}

impl Outbound {
    pub(crate) fn new(config: &crate::config::Config, endpoint: &Endpoint, seed: u64) -> Outbound {
        let cfg = endpoint.config();
        Outbound {
            supported: Supported {
                udp: !cfg.udp_listeners.is_empty(),
                tcp: !cfg.tcp_listeners.is_empty(),
                tls: !cfg.tls_listeners.is_empty(),
            },
            requests: VecDeque::new(),
            waiting: HashMap::new(),
            next_resolve: 1,
            next_unplaced: UNPLACED,
            backoff: Backoff::new(Duration::from_secs(config.sip.failover_backoff_secs)),
            rng: StdRng::seed_from_u64(seed.rotate_left(17) ^ 0x5352_5633),
            local_ends: VecDeque::new(),
            registrars: Vec::new(),
            health: TrunkHealth::default(),
            probes: HashMap::new(),
            round_robin: HashMap::new(),
        }
    }

    pub(super) fn request(&mut self, query: Query, waiter: Waiter) {
        let id = ResolveId(self.next_resolve);
        self.next_resolve += 1;
        self.waiting.insert(id, waiter);
        self.requests.push_back(ResolveRequest { id, query });
    }

    pub(crate) fn next_wake(&self) -> Option<Instant> {
        let registrars = self.registrars.iter().filter_map(|r| r.retry_at).min();
        registrars.into_iter().chain(self.health.next_wake()).min()
    }

    /// Which targets are resting after a failure.
    pub(super) fn backoff(&mut self) -> &mut Backoff {
        &mut self.backoff
    }

    /// RFC 2782 order for a resolution's targets.
    pub(super) fn order(&mut self, res: &Resolution) -> Vec<Target> {
        dns::select::order(res, &mut self.rng)
    }

    pub(super) fn supported(&self) -> Supported {
        self.supported
    }
}

/// How an attempt to send a leg's INVITE went.
enum Attempt {
    /// Sent; the leg is now under this id.
    Sent(CallId),
    /// Waiting on DNS, under the id it had.
    Resolving,
    /// Nowhere left to send it.
    Exhausted,
}

impl<P: PortSource, F> CallControl<P, F> {
    // ---- driver side -------------------------------------------------

    /// A destination to resolve (RFC 3263), if any.
    pub fn poll_resolve(&mut self) -> Option<ResolveRequest> {
        self.outbound.requests.pop_front()
    }

    /// The answer to a [`ResolveRequest`]: the call or registration that
    /// waits on it goes on (or fails, with 503, and a log line saying why).
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        id: ResolveId,
        result: Result<Resolution, ResolveError>,
    ) {
        match self.outbound.waiting.remove(&id) {
            Some(Waiter::Leg(leg)) => self.leg_resolved(now, leg, result),
            Some(Waiter::Registrar(i)) => self.registrar_resolved(now, i, result),
            Some(Waiter::Probe(i)) => self.probe_resolved(now, i, result),
            None => {}
        }
        self.process_events(now);
    }

    /// The driver could not reach `remote` (TCP refused, TLS failed):
    /// what waits on it fails over now.
    pub fn transport_failed(
        &mut self,
        now: Instant,
        transport: Transport,
        remote: std::net::SocketAddr,
    ) {
        tracing::info!(%remote, ?transport, "cannot connect: treating it as a 503");
        self.endpoint.transport_failed(now, transport, remote);
        self.process_events(now);
    }

    // ---- legs --------------------------------------------------------

    /// Place an outbound leg: it goes in the map and its first INVITE out
    /// (or its destination to DNS). Err: it can't start at all (nowhere to
    /// send it); the leg is dropped, its port with it.
    pub(crate) fn place(
        &mut self,
        now: Instant,
        mut leg: Call<P::Reservation, F>,
        dialling: Dialling,
    ) -> Result<CallId, ()> {
        let id = CallId(self.outbound.next_unplaced);
        self.outbound.next_unplaced += 1;
        // A leg for another call is one hop on from it (RFC 3261 §16.6
        // step 3, as a proxy would): a route that leads back here loses
        // a hop each time round, and the INVITE that arrives with none
        // left is refused (483) instead of looping for ever.
        let parent = match &leg.role {
            Role::Agent { caller, .. } => Some(*caller),
            Role::Referred { referrer } => Some(*referrer),
            _ => None,
        };
        if let Some(parent) = parent.and_then(|p| self.calls.get(&p)) {
            leg.max_forwards = parent.max_forwards.saturating_sub(1);
        }
        leg.dialling = Some(Box::new(dialling));
        self.calls.insert(id, Box::new(leg));
        match self.attempt(now, id) {
            Attempt::Sent(placed) => Ok(placed),
            Attempt::Resolving => Ok(id),
            Attempt::Exhausted => {
                self.calls.remove(&id);
                Err(())
            }
        }
    }

    /// Send the leg's INVITE to its next target that isn't backed off:
    /// the next of its Request-URI's targets, else (resolving first) of
    /// the next Request-URI.
    fn attempt(&mut self, now: Instant, id: CallId) -> Attempt {
        // Every attempt carries the hops the leg was given when placed.
        let max_forwards = self
            .calls
            .get(&id)
            .map_or(crate::sip::endpoint::MAX_FORWARDS, |c| c.max_forwards);
        loop {
            let Some(d) = dialling_of(&mut self.calls, id) else {
                return Attempt::Exhausted;
            };
            if d.abandoned {
                return Attempt::Exhausted;
            }
            if !d.resolved {
                let query = Query::for_uri(d.next_hop(), d.transport, self.outbound.supported);
                if let Some(t) = dns::literal(&query) {
                    d.targets = VecDeque::from([t]);
                    d.resolved = true;
                    d.resting.clear();
                    d.last_resort = false;
                    continue;
                }
                tracing::debug!(call = %id, host = %query.host, "resolving the destination");
                self.outbound.request(query, Waiter::Leg(id));
                return Attempt::Resolving;
            }
            if let Some(t) = d.targets.pop_front() {
                let standing = self.outbound.backoff.standing(now, &t);
                let skip = match standing {
                    Standing::Up => false,
                    Standing::Resting if d.last_resort => false,
                    Standing::Resting => {
                        d.resting.push_back(t);
                        true
                    }
                    Standing::AskedToWait => true,
                };
                if skip {
                    counter!(names::SIP_FAILOVERS, "reason" => "backed_off").increment(1);
                    tracing::debug!(call = %id, target = %t.addr, ?standing, "skipping a target that failed lately");
                    continue;
                }
                d.current = Some(t);
                let (uri, from_user, credentials, port) = (
                    d.uri.clone(),
                    d.from_user.clone(),
                    d.credentials.clone(),
                    d.port,
                );
                // RFC 3327: a device registered through a proxy is reached
                // through it, its Path the Route set.
                let (flow, extra_headers) = match &d.device {
                    Some(device) => (device.flow, device.headers.clone()),
                    None => (None, Vec::new()),
                };
                let spec = OutgoingCall {
                    target: uri,
                    destination: t.addr,
                    transport: t.transport,
                    from_user,
                    from_display: None,
                    local_media: self.local_media(port),
                    credentials,
                    extra_headers,
                    flow,
                    max_forwards,
                };
                match self.endpoint.invite(now, spec) {
                    Ok(placed) => {
                        tracing::debug!(leg = %placed, target = %t.addr, transport = ?t.transport, "INVITE sent");
                        self.rekey(id, placed);
                        self.keep_call_id(placed);
                        self.watch_unanswered(now, placed);
                        return Attempt::Sent(placed);
                    }
                    Err(e) => {
                        tracing::warn!(call = %id, target = %t.addr, %e, "cannot send there");
                        continue;
                    }
                }
            }
            if !d.resting.is_empty() && d.next_trunks.is_empty() {
                // Every target that is up failed or there was none: the
                // resting ones beat failing the call (but not another
                // trunk of its group).
                tracing::info!(call = %id, targets = d.resting.len(), "every target failed lately: trying them anyway");
                d.targets = std::mem::take(&mut d.resting);
                d.last_resort = true;
                continue;
            }
            if let Some(next) = d.next_uris.pop_front() {
                d.uri = next;
                d.resolved = false;
                d.last_resort = false;
                continue;
            }
            if let Some(hop) = d.next_trunks.pop_front() {
                let from = d.trunk.clone().unwrap_or_default();
                if !self.outbound.health.usable(&hop.name) {
                    counter!(names::TRUNK_SKIPPED, "trunk" => hop.name.clone()).increment(1);
                    tracing::info!(call = %id, trunk = %hop.name, "the group's next trunk is down: passing it over");
                    continue;
                }
                counter!(names::SIP_FAILOVERS, "reason" => "next_trunk").increment(1);
                tracing::info!(call = %id, from = %from, to = %hop.name, "no target left on the trunk: on to the group's next");
                let name = hop.name.clone();
                d.switch_trunk(hop);
                if let Some(call) = self.calls.get_mut(&id) {
                    call.record.trunk = Some(name);
                }
                continue;
            }
            return Attempt::Exhausted;
        }
    }

    /// The leg's destination resolved (or didn't).
    fn leg_resolved(
        &mut self,
        now: Instant,
        leg: CallId,
        result: Result<Resolution, ResolveError>,
    ) {
        let draining = self.draining();
        let Some(d) = dialling_of(&mut self.calls, leg) else {
            return;
        };
        if d.abandoned {
            return;
        }
        if draining {
            self.outbound
                .local_ends
                .push_back((leg, EndCause::Shutdown));
            return;
        }
        d.resolved = true;
        d.resting.clear();
        d.last_resort = false;
        let failure = match result {
            Ok(res) => {
                d.targets = dns::select::order(&res, &mut self.outbound.rng).into();
                None
            }
            Err(e) => {
                tracing::warn!(call = %leg, error = %e, "cannot resolve the destination: the call fails (503)");
                d.targets.clear();
                Some(e.to_string())
            }
        };
        if let Attempt::Exhausted = self.attempt(now, leg) {
            let reason = failure.unwrap_or_else(|| {
                tracing::warn!(call = %leg, "no target left: every one failed or is backed off (503)");
                "every target failed or is backed off".into()
            });
            self.outbound.local_ends.push_back((
                leg,
                EndCause::Rejected {
                    status: 503,
                    reason,
                },
            ));
        }
    }

    /// A failed attempt of an unanswered leg goes on to the next target
    /// or Request-URI when the failure allows; true when it did.
    pub(crate) fn try_next_target(&mut self, now: Instant, id: CallId, cause: &EndCause) -> bool {
        let draining = self.draining();
        let max_redirects = self.config.sip.max_redirects;
        let Some(call) = self.calls.get_mut(&id) else {
            return false;
        };
        if call.record.answered_at.is_some() || call.timed_out || draining {
            return false;
        }
        let Some(d) = call.dialling.as_deref_mut() else {
            return false;
        };
        if d.abandoned {
            return false;
        }
        let refusal = d.refusal.take();
        let current = d.current.take();
        match cause {
            EndCause::Rejected {
                status: status @ 300..=399,
                ..
            } => {
                let contacts = refusal.map(|r| r.contacts).unwrap_or_default();
                match d.follow_redirect(contacts, max_redirects) {
                    Ok(n) => {
                        counter!(names::SIP_REDIRECTS, "result" => "followed").increment(1);
                        tracing::info!(call = %id, status, contacts = n, "following a redirect");
                    }
                    Err(why) => {
                        counter!(names::SIP_REDIRECTS, "result" => why).increment(1);
                        tracing::info!(call = %id, status, why, "redirect not followed");
                        return false;
                    }
                }
            }
            EndCause::Rejected { status: 503, .. } | EndCause::Timeout => {
                let (reason, wait) = match cause {
                    EndCause::Rejected { reason, .. } if reason == TRANSPORT_ERROR => {
                        ("transport", None)
                    }
                    EndCause::Rejected { .. } => (
                        "503",
                        refusal
                            .and_then(|r| r.retry_after)
                            .map(|s| Duration::from_secs(u64::from(s))),
                    ),
                    _ => ("timeout", None),
                };
                if let Some(t) = current {
                    self.outbound.backoff.mark_down(now, t, wait);
                }
                if !d.has_alternatives() {
                    return false;
                }
                counter!(names::SIP_FAILOVERS, "reason" => reason).increment(1);
                tracing::info!(
                    call = %id,
                    failed = ?current.map(|t| t.addr),
                    reason,
                    retry_after_secs = wait.map(|w| w.as_secs()),
                    "failing over to the next target"
                );
            }
            // This Contact of a redirect failed: on to the next one.
            EndCause::Rejected {
                status: 400..=599, ..
            } if !d.next_uris.is_empty() => {
                d.targets.clear();
                d.resting.clear();
            }
            _ => return false,
        }
        !matches!(self.attempt(now, id), Attempt::Exhausted)
    }

    /// With another target waiting, don't wait for Timer B on a target
    /// that says nothing at all: look again after `failover_timeout_ms`.
    fn watch_unanswered(&mut self, now: Instant, id: CallId) {
        let wait = Duration::from_millis(self.config.sip.failover_timeout_ms);
        let Some(d) = dialling_of(&mut self.calls, id) else {
            return;
        };
        if wait.is_zero() || !d.has_alternatives() {
            d.unanswered_by = None;
            return;
        }
        let at = now.checked_add(wait).unwrap_or(now);
        d.unanswered_by = Some(at);
        self.timers.insert((at, id));
    }

    /// The leg's INVITE is due an answer: none at all means the target is
    /// dead, and the leg moves on (as at Timer B).
    pub(crate) fn unanswered_timer(&mut self, now: Instant, id: CallId) {
        let Some(d) = dialling_of(&mut self.calls, id) else {
            return;
        };
        if d.unanswered_by.is_none_or(|at| at > now) {
            return;
        }
        d.unanswered_by = None;
        if self.endpoint.give_up_unanswered(id) {
            tracing::info!(call = %id, "no response at all from the target: trying the next");
        }
    }

    /// What a refusal of one of our INVITEs said, kept for its end.
    pub(crate) fn refused(
        &mut self,
        call: CallId,
        retry_after: Option<u32>,
        contacts: Vec<NameAddr>,
    ) {
        if let Some(d) = dialling_of(&mut self.calls, call) {
            d.refusal = Some(Refusal {
                retry_after,
                contacts,
            });
        }
    }

    /// The leg `old` is now the endpoint's call `new`: move it, its
    /// deadline and its place in the caller's transfer.
    /// The record of a call we placed takes the Call-ID its INVITE
    /// carries (the latest, after a failover), so it can be looked up by it.
    fn keep_call_id(&mut self, id: CallId) {
        let sent = self.endpoint.sip_call_id(id).map(crate::store::sip_text);
        if let (Some(call), Some(call_id)) = (self.calls.get_mut(&id), sent) {
            call.record.call_id = call_id;
        }
    }

    fn rekey(&mut self, old: CallId, new: CallId) {
        if old == new {
            return;
        }
        let Some(call) = self.calls.remove(&old) else {
            return;
        };
        if let Some(at) = call.give_up {
            self.timers.insert((at, new));
        }
        if let Role::Referred { referrer } = &call.role {
            if let Some(r) = self.calls.get_mut(referrer) {
                match &mut r.refer {
                    Refer::Calling(leg) | Refer::Parked { leg, .. } if *leg == old => *leg = new,
                    _ => {}
                }
            }
        }
        if let Role::Agent { caller, .. } = &call.role {
            if let Some(t) = self
                .calls
                .get_mut(caller)
                .and_then(|c| c.transfer.as_deref_mut())
            {
                for r in t.ringing.iter_mut().filter(|r| **r == old) {
                    *r = new;
                }
            }
        }
        self.calls.insert(new, call);
    }

    /// Hang up a call we hold, wherever it is: in the endpoint, or only
    /// here (a leg waiting on DNS). A leg hung up is never retried.
    pub(crate) fn hang_up(&mut self, now: Instant, id: CallId) {
        if let Some(d) = dialling_of(&mut self.calls, id) {
            d.abandoned = true;
        }
        if self.endpoint.call_state(id).is_some() {
            let _ = self.endpoint.hangup(now, id);
        } else if self.calls.contains_key(&id) {
            self.outbound
                .local_ends
                .push_back((id, EndCause::LocalHangup));
        }
    }

    /// A leg that ended here rather than in the endpoint, if any.
    pub(crate) fn next_local_end(&mut self) -> Option<(CallId, EndCause)> {
        self.outbound.local_ends.pop_front()
    }

    /// Legs that live only here (waiting on DNS): ended at shutdown.
    pub(crate) fn end_unplaced(&mut self) {
        let unplaced: Vec<CallId> = self
            .calls
            .keys()
            .filter(|id| self.endpoint.call_state(**id).is_none())
            .copied()
            .collect();
        for id in unplaced {
            self.outbound.local_ends.push_back((id, EndCause::Shutdown));
        }
    }

    // ---- registrations -----------------------------------------------

    /// Register to every `[[registrations]]` registrar, each once its
    /// host resolves.
    pub fn start_registrations(&mut self, now: Instant) {
        for (i, reg) in self.config.registrations.iter().enumerate() {
            let (Ok(registrar), Ok(aor)) = (Uri::parse(&reg.registrar), Uri::parse(&reg.aor))
            else {
                tracing::error!(index = i, "registration: bad registrar or AOR URI");
                continue;
            };
            self.outbound.registrars.push(Registrar {
                registrar,
                aor,
                forced: reg.transport.map(|t| t.transport()),
                credentials: reg.username.clone().zip(reg.password().ok().flatten()),
                expires: reg.expires,
                endpoint_index: None,
                targets: VecDeque::new(),
                current: None,
                retry_at: None,
            });
        }
        for i in 0..self.outbound.registrars.len() {
            self.resolve_registrar(now, i);
        }
        self.process_events(now);
    }

    /// A registration's state, by its place in `[[registrations]]`.
    pub fn registration_state(&self, index: usize) -> Option<&RegistrationState> {
        let i = self.outbound.registrars.get(index)?.endpoint_index?;
        self.endpoint.registration_state(i)
    }

    /// Registrars due to be looked up again.
    pub(crate) fn registrar_timers(&mut self, now: Instant) {
        for i in 0..self.outbound.registrars.len() {
            if self.outbound.registrars[i]
                .retry_at
                .is_some_and(|at| at <= now)
            {
                self.outbound.registrars[i].retry_at = None;
                self.resolve_registrar(now, i);
            }
        }
    }

    fn resolve_registrar(&mut self, now: Instant, i: usize) {
        let supported = self.outbound.supported;
        let Some(r) = self.outbound.registrars.get_mut(i) else {
            return;
        };
        let query = Query::for_uri(&r.registrar, r.forced, supported);
        match dns::literal(&query) {
            Some(t) => {
                r.targets = VecDeque::from([t]);
                self.use_next_registrar_target(now, i);
            }
            None => self.outbound.request(query, Waiter::Registrar(i)),
        }
    }

    fn registrar_resolved(
        &mut self,
        now: Instant,
        i: usize,
        result: Result<Resolution, ResolveError>,
    ) {
        if self.draining() {
            return;
        }
        let Some(r) = self.outbound.registrars.get_mut(i) else {
            return;
        };
        let targets = match result.and_then(|res| {
            let targets = dns::select::order(&res, &mut self.outbound.rng);
            match targets.is_empty() {
                true => Err(ResolveError::NotFound(r.registrar.host.clone())),
                false => Ok(targets),
            }
        }) {
            Ok(targets) => targets,
            Err(e) => {
                tracing::error!(index = i, error = %e, retry_in = ?REGISTRAR_RETRY, "cannot resolve the registrar");
                r.retry_at = Some(now.checked_add(REGISTRAR_RETRY).unwrap_or(now));
                return;
            }
        };
        r.targets = targets.into();
        self.use_next_registrar_target(now, i);
    }

    /// Point the registration at its next target (the first not backed
    /// off, else the first); none left: look the registrar up again.
    fn use_next_registrar_target(&mut self, now: Instant, i: usize) {
        let Some(r) = self.outbound.registrars.get_mut(i) else {
            return;
        };
        if r.targets.is_empty() {
            return self.resolve_registrar_later(now, i);
        }
        let up = r
            .targets
            .iter()
            .position(|t| !self.outbound.backoff.is_down(now, t))
            .unwrap_or(0);
        let Some(t) = r.targets.drain(..=up).next_back() else {
            return;
        };
        r.current = Some(t);
        match r.endpoint_index {
            Some(index) => {
                tracing::info!(index = i, target = %t.addr, transport = ?t.transport, "registration: moving to the next target");
                if let Err(e) =
                    self.endpoint
                        .set_registration_destination(index, t.addr, t.transport)
                {
                    tracing::error!(index = i, %e, "registration: cannot use that target");
                }
            }
            None => {
                let spec = RegistrationSpec {
                    registrar: r.registrar.clone(),
                    destination: t.addr,
                    transport: t.transport,
                    aor: r.aor.clone(),
                    credentials: r.credentials.clone(),
                    expires: r.expires,
                };
                match self.endpoint.add_registration(now, spec) {
                    Ok(index) => r.endpoint_index = Some(index),
                    Err(e) => tracing::error!(index = i, %e, "cannot register"),
                }
            }
        }
    }

    /// Every target of the registrar was used: resolve it again now (the
    /// endpoint's own retry timer sends the next REGISTER).
    fn resolve_registrar_later(&mut self, now: Instant, i: usize) {
        let literal = self.outbound.registrars.get(i).is_some_and(|r| {
            dns::literal(&Query::for_uri(
                &r.registrar,
                r.forced,
                self.outbound.supported,
            ))
            .is_some()
        });
        // A numeric registrar has nowhere else to go: it stays put.
        if !literal {
            self.resolve_registrar(now, i);
        }
    }

    /// A registration changed state: one that failed for want of an
    /// answer (408, 503) moves to its registrar's next target.
    pub(crate) fn registration_event(
        &mut self,
        now: Instant,
        index: usize,
        state: &RegistrationState,
    ) {
        let RegistrationState::Failed {
            status: 408 | 503, ..
        } = state
        else {
            return;
        };
        let Some(i) = self
            .outbound
            .registrars
            .iter()
            .position(|r| r.endpoint_index == Some(index))
        else {
            return;
        };
        if let Some(t) = self.outbound.registrars[i].current {
            self.outbound.backoff.mark_down(now, t, None);
        }
        self.use_next_registrar_target(now, i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(s: &str) -> NameAddr {
        NameAddr::parse(s).unwrap()
    }

    fn plan() -> Dialling {
        Dialling::new(
            Uri::parse("sip:agent@pbx.example.com").unwrap(),
            None,
            "crossline".into(),
            20_000,
        )
    }

    #[test]
    fn redirects_go_best_q_first_and_never_back() {
        let mut d = plan();
        let n = d
            .follow_redirect(
                vec![
                    contact("<sip:a@192.0.2.1>;q=0.5"),
                    contact("<sip:b@192.0.2.2>;q=0.9"),
                    contact("<sip:agent@pbx.example.com>"),
                    contact("<tel:+15551234>"),
                    contact("<sip:c@192.0.2.3>;q=0.5"),
                ],
                5,
            )
            .unwrap();
        assert_eq!(n, 3, "the URI already tried and tel: are left out");
        let order: Vec<String> = d.next_uris.iter().map(|u| u.to_string()).collect();
        assert_eq!(
            order,
            ["sip:b@192.0.2.2", "sip:a@192.0.2.1", "sip:c@192.0.2.3"]
        );
        assert_eq!(
            d.follow_redirect(vec![contact("<sip:a@192.0.2.1>")], 5),
            Err("loop")
        );
        assert_eq!(d.follow_redirect(Vec::new(), 5), Err("no_contact"));
    }

    #[test]
    fn redirects_are_bounded() {
        let mut d = plan();
        for i in 0..3 {
            d.follow_redirect(vec![contact(&format!("<sip:x{i}@192.0.2.1>"))], 3)
                .unwrap();
        }
        assert_eq!(
            d.follow_redirect(vec![contact("<sip:y@192.0.2.1>")], 3),
            Err("too_many")
        );
        assert_eq!(
            plan().follow_redirect(vec![contact("<sip:y@192.0.2.1>")], 0),
            Err("too_many")
        );
    }
}
