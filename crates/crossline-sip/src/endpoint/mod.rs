//! The sans-IO SIP endpoint: bytes and time in; datagrams to send, timers and
//! call events out. It owns transactions, dialogs, calls and registrations,
//! and never touches a socket or reads a clock.
//!
//! Drive it like quinn-proto: feed [`Endpoint::handle_datagram`],
//! [`Endpoint::handle_stream_bytes`] and [`Endpoint::handle_timeout`], then
//! drain [`Endpoint::poll_transmit`], [`Endpoint::poll_event`] and
//! [`Endpoint::poll_timeout`]. Commands such as [`Endpoint::answer`] and
//! [`Endpoint::hangup`] are plain method calls.

pub mod admission;
mod calls;
mod compact;
mod identity;
mod inbound;
mod ping;
mod provisional;
mod refer_in;
mod register;
mod registration;
mod session;
mod util;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use self::compact::Compact as _;
use crate::auth::DigestServer;
use crate::message::{parse_message, Method, Response, SipMessage, StreamFramer};
use crate::sdp::{Codec, Negotiated};
use crate::transaction::{
    ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite, TimerConfig, TimerKind, TxOutput,
};

pub use calls::{CallRole, CallState, OutgoingCall, MAX_FORWARDS};
pub use identity::CallerIdentity;
pub use ping::{OptionsPing, PingId, PingOutcome};
pub use register::{LocalUser, RegisterOutcome, RegistrarConfig, StoredUser};

/// The header a node puts on a call it hands to the node holding the
/// user's registration: that node rings its own devices only (no loop).
pub const FORWARDED_BY: &str = "X-Crossline-Forwarded-By";
pub use registration::{RegistrationSpec, RegistrationState};

/// Methods we answer; sent in Allow.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY, UPDATE, PRACK";
/// Bodies we accept; sent in Accept.
pub const ACCEPT: &str = "application/sdp, application/dtmf-relay, message/sipfrag";
/// Extensions we support; sent in Supported: reliable provisional
/// responses (RFC 3262) and session timers (RFC 4028).
pub const SUPPORTED: &str = "100rel, timer";

/// The reason phrase of the 503 a transport failure counts as.
pub const TRANSPORT_ERROR: &str = "Transport Error";

/// Names a stream connection (TCP or TLS); the driver picks the numbers.
pub type ConnId = u64;

/// The digit and duration (ms) in an INFO's application/dtmf-relay body, as
/// an INFO in a call is read. Public for the gateway's fuzz targets.
#[doc(hidden)]
pub fn parse_dtmf_relay(body: &[u8]) -> Option<(char, u32)> {
    util::parse_dtmf_relay(body)
}

/// How a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Datagrams; we retransmit.
    Udp,
    /// A TCP stream.
    Tcp,
    /// TLS over TCP (RFC 3261 §26.2; `sips:` URIs).
    Tls,
}

impl Transport {
    /// Whether the transport delivers for us (no retransmission timers).
    pub fn reliable(self) -> bool {
        matches!(self, Transport::Tcp | Transport::Tls)
    }

    /// The name in a Via's sent-protocol.
    pub fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }

    /// The URI parameter that asks for this transport (UDP is the default).
    pub fn uri_param(self) -> &'static str {
        match self {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        }
    }

    /// From a URI's scheme and `transport` parameter.
    pub fn of_uri(uri: &crate::message::Uri) -> Option<Transport> {
        if uri.scheme.eq_ignore_ascii_case("sips") {
            return Some(Transport::Tls);
        }
        match uri.param("transport").flatten() {
            Some(t) if t.eq_ignore_ascii_case("tcp") => Some(Transport::Tcp),
            Some(t) if t.eq_ignore_ascii_case("tls") => Some(Transport::Tls),
            Some(t) if t.eq_ignore_ascii_case("udp") => Some(Transport::Udp),
            _ => None,
        }
    }
}

/// Where a message came from or goes to. For TCP, `conn` names the
/// connection; `None` asks the driver to open one to `remote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// How it travels.
    pub transport: Transport,
    /// Our address: the listener it came in on, or to send from.
    pub local: SocketAddr,
    /// The other side's address.
    pub remote: SocketAddr,
    /// The connection, for streams; `None` for UDP or a new connection.
    pub conn: Option<ConnId>,
}

/// A message for the driver to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to.
    pub peer: Peer,
    /// The bytes, whole.
    pub payload: Bytes,
}

/// Our handle on a call, unique in this endpoint; not the SIP Call-ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub u64);

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "call-{}", self.0)
    }
}

/// A trunk that may send us calls.
#[derive(Debug, Clone)]
pub struct InboundTrunk {
    /// Name for logs, metrics and routing.
    pub name: String,
    /// Source addresses it calls from; any of them admits a call.
    pub cidrs: Vec<crate::net::Cidr>,
    /// Username and password it must answer a digest challenge with, if any.
    pub credentials: Option<(String, crate::secret::Secret)>,
    /// Most calls at once from this trunk; 0: no limit (503 over it).
    pub max_calls: usize,
    /// Digest algorithms we challenge with, preferred first; empty:
    /// SHA-256 then MD5 (RFC 8760 §2.4).
    pub digest_algorithms: Vec<crate::auth::Algorithm>,
}

/// Everything the endpoint needs to know up front.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// RFC 3261 timer values.
    pub timers: TimerConfig,
    /// Sent in User-Agent.
    pub user_agent: String,
    /// Listeners; the first of each transport is used for requests we start.
    pub udp_listeners: Vec<SocketAddr>,
    /// TCP listeners.
    pub tcp_listeners: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls_listeners: Vec<SocketAddr>,
    /// Written into Via/Contact/SDP when a listener is a wildcard address.
    pub advertised_address: Option<IpAddr>,
    /// Bigger messages are dropped (UDP) or end the connection (streams).
    pub max_message_size: usize,
    /// Retry-After on the 503s sent while draining.
    pub drain_retry_after_secs: u32,
    /// Retry-After on the 503s sent while the media side is overloaded.
    pub overload_retry_after_secs: u32,
    /// The codecs we offer and accept, in preference order.
    pub codecs: Vec<Codec>,
    /// Payload type for telephone-event in our offers.
    pub telephone_event_pt: u8,
    /// Empty means: take calls from anyone.
    pub inbound_trunks: Vec<InboundTrunk>,
    /// How long a digest nonce we issue stays fresh.
    pub nonce_ttl: Duration,
    /// Rate limits, scanner blocklist, call caps.
    pub admission: admission::AdmissionConfig,
    /// Session timers (RFC 4028): what we ask for and the least we accept.
    pub session_timer: crate::session_timer::SessionTimerConfig,
    /// Seeds the tags, branches, Call-IDs and dialog CSeq starts, so a test
    /// run replays exactly. `None` (production): OS entropy. Digest nonces
    /// always come from the OS, seed or not.
    pub random_seed: Option<u64>,
    /// Our registrar, when users may register; `None`: REGISTER gets 405.
    pub registrar: Option<RegistrarConfig>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        let local = SocketAddr::from(([127, 0, 0, 1], 5060));
        EndpointConfig {
            timers: TimerConfig::default(),
            user_agent: "crossline".into(),
            udp_listeners: vec![local],
            tcp_listeners: vec![local],
            tls_listeners: Vec::new(),
            advertised_address: None,
            max_message_size: 65_535,
            drain_retry_after_secs: 60,
            overload_retry_after_secs: 10,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event_pt: 101,
            inbound_trunks: Vec::new(),
            nonce_ttl: Duration::from_secs(300),
            admission: admission::AdmissionConfig::default(),
            session_timer: crate::session_timer::SessionTimerConfig::default(),
            random_seed: None,
            registrar: None,
        }
    }
}

/// Why a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndCause {
    /// The other side sent BYE.
    RemoteBye,
    /// We hung up (BYE or CANCEL from us).
    LocalHangup,
    /// The caller sent CANCEL before we answered.
    Cancelled,
    /// Our outgoing call got a final non-2xx, or we rejected an incoming one.
    Rejected {
        /// The final status.
        status: u16,
        /// Its reason phrase.
        reason: String,
    },
    /// No response to our request (Timer B/F).
    Timeout,
    /// The ACK for our 2xx never came.
    AckTimeout,
    /// Shutting down.
    Shutdown,
    /// The session timer ran out unrefreshed, or a refresh failed for
    /// good (RFC 4028 §10): we sent BYE.
    SessionExpired,
}

/// What the endpoint tells the application.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A new INVITE was admitted; answer, reject or ring it.
    IncomingCall(IncomingCall),
    /// The call is up: ACK received (UAS) or 2xx received (UAC). Carries
    /// the negotiated media when the offer/answer completed here.
    CallEstablished {
        /// Which call.
        call: CallId,
        /// The media, if the offer and answer are both in.
        media: Option<Negotiated>,
    },
    /// A re-INVITE changed the media (hold, unhold, new address).
    MediaChanged {
        /// Which call.
        call: CallId,
        /// The media now.
        media: Negotiated,
    },
    /// An outgoing call got an SDP answer in a provisional response (a
    /// 183 with early media): RTP may flow before the answer.
    EarlyMedia {
        /// Which call.
        call: CallId,
        /// The media the provisional answer set up.
        media: Negotiated,
    },
    /// An outgoing call got a provisional response.
    Progress {
        /// Which call.
        call: CallId,
        /// The provisional status, e.g. 180 or 183.
        status: u16,
    },
    /// Our INVITE got a final failure that says where or when to try
    /// next: a 3xx's Contacts, a Retry-After. Comes just before the
    /// call's [`Event::CallEnded`].
    Refused {
        /// Which call.
        call: CallId,
        /// The final status.
        status: u16,
        /// Retry-After, in seconds.
        retry_after: Option<u32>,
        /// The Contacts of a 3xx, as sent (q-values in their params).
        contacts: Vec<crate::message::NameAddr>,
    },
    /// The call is over; forget it.
    CallEnded {
        /// Which call.
        call: CallId,
        /// Why.
        cause: EndCause,
    },
    /// A DTMF digit from SIP INFO (application/dtmf-relay).
    Dtmf {
        /// Which call.
        call: CallId,
        /// The digit.
        digit: char,
        /// How long it was held, as the INFO said.
        duration_ms: u32,
    },
    /// A registration changed state.
    Registration {
        /// Its index, in the order they were added.
        index: usize,
        /// Its new state.
        state: RegistrationState,
    },
    /// Our REFER (blind transfer) got a final answer: 2xx accepted, else
    /// refused with this status.
    ReferAnswered {
        /// Which call.
        call: CallId,
        /// The final status.
        status: u16,
    },
    /// A user's registrations changed (a REGISTER, or one lapsed): read
    /// them with [`Endpoint::bindings_of`].
    BindingsChanged {
        /// Whose.
        user: String,
    },
    /// The peer asks us to call `target` (RFC 3515). Answer with
    /// [`Endpoint::accept_refer`] or [`Endpoint::refuse_refer`].
    ReferRequested {
        /// The call the REFER came on.
        call: CallId,
        /// Where to call (embedded headers removed).
        target: crate::message::Uri,
        /// The Referred-By header, as sent.
        referred_by: Option<String>,
    },
    /// An OPTIONS ping ([`Endpoint::ping`]) ended.
    PingAnswered {
        /// Which ping.
        ping: PingId,
        /// How it ended.
        outcome: PingOutcome,
    },
    /// A NOTIFY for our REFER: the status line of the new call's progress
    /// (RFC 3515 message/sipfrag).
    ReferProgress {
        /// Which call.
        call: CallId,
        /// The sipfrag's status.
        status: u16,
    },
}

/// What the application needs to decide about a new call.
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingCall {
    /// Our handle on it.
    pub call: CallId,
    /// The SIP Call-ID, for logs.
    pub call_id: String,
    /// Request-URI user: the DID.
    pub did: String,
    /// From user: the caller's number.
    pub caller: String,
    /// From display name.
    pub caller_display: Option<String>,
    /// What the identity headers say (asserted identity, privacy,
    /// diversion); whether to believe them is the application's call.
    pub identity: CallerIdentity,
    /// The address the INVITE came from.
    pub source: SocketAddr,
    /// The trunk it matched, if trunks are configured.
    pub trunk: Option<String>,
    /// The registrar's user who placed it, digest-authenticated (its From
    /// named one of our users).
    pub user: Option<String>,
    /// Whether the INVITE carried an SDP offer (if not, our answer offers).
    pub has_offer: bool,
    /// `X-Crossline-Web-Call`: our own WebRTC leg calling in, by its id.
    pub web_call: Option<String>,
    /// `X-Crossline-Forwarded-By`: another node of ours handed over a
    /// call to a user registered here (ring only this node's devices).
    pub forwarded_by: Option<String>,
    /// The INVITE's Max-Forwards (70 when it had none): a leg placed for
    /// this call goes out with one less.
    pub max_forwards: u8,
}

/// Counters for everything the endpoint drops or answers on its own.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Messages received (datagrams and stream frames).
    pub messages_in: u64,
    /// Messages that did not parse, and streams whose framing broke.
    pub parse_errors: u64,
    /// Datagrams over `max_message_size`.
    pub oversize: u64,
    /// Responses matching no transaction.
    pub stray_responses: u64,
    /// Request retransmissions answered from a transaction.
    pub retransmissions_absorbed: u64,
    /// Responses sent, by status.
    pub responses_sent: HashMap<u16, u64>,
    /// Responses received, by status.
    pub responses_received: HashMap<u16, u64>,
    /// Calls created, both ways.
    pub calls_started: u64,
    /// Requests dropped: over their source's rate.
    pub rate_limited: u64,
    /// Requests dropped: a scanner's User-Agent.
    pub scanners_dropped: u64,
    /// INVITEs refused with 503: too many calls (in total or on the trunk).
    pub over_capacity: u64,
    /// INVITEs refused with 503: their source holds its share of calls.
    pub over_source_share: u64,
    /// INVITEs refused with 503: the audio loops have no headroom left.
    pub overload_refused: u64,
    /// OPTIONS answered 503 because of overload.
    pub overload_options: u64,
    /// INVITEs refused with 488: no audio stream we can carry.
    pub media_refused: u64,
    /// Requests dropped: their source is banned for failed sign-ins.
    pub banned_dropped: u64,
    /// Wrong digest answers, and those refused unchecked (user banned).
    pub auth_failures: u64,
    /// Digest attempts refused unchecked because the user is banned.
    pub auth_refused_banned_user: u64,
    /// Bans started for failed sign-ins, of sources and of users.
    pub bans_sources: u64,
    /// User bans started.
    pub bans_users: u64,
    /// Session refreshes (RFC 4028) we sent.
    pub session_refreshes_sent: u64,
    /// Session refreshes we answered.
    pub session_refreshes_received: u64,
    /// Calls we hung up because their session timer ran out unrefreshed.
    pub sessions_expired: u64,
    /// Requests refused with 422: a Session-Expires below our Min-SE.
    pub session_interval_too_small: u64,
    /// Requests refused with 400: a Session-Expires or Min-SE that doesn't parse.
    pub session_timer_malformed: u64,
    /// UPDATEs (RFC 3311) received in dialogs.
    pub updates_received: u64,
    /// Offers refused with 491 because one of ours was pending (glare).
    pub glare_refused: u64,
    /// Reliable provisional responses (RFC 3262) sent, retransmissions not counted.
    pub reliable_provisionals_sent: u64,
    /// PRACKs we sent for reliable provisional responses.
    pub pracks_sent: u64,
    /// PRACKs that acknowledged a reliable provisional response of ours.
    pub pracks_received: u64,
    /// PRACKs refused with 481: their RAck matched nothing of ours.
    pub pracks_unmatched: u64,
    /// Calls refused with 500 because a reliable provisional was never PRACKed.
    pub prack_timeouts: u64,
    /// 183s with SDP (early media) we sent.
    pub early_media_sent: u64,
    /// Provisional responses with an SDP answer on calls we placed.
    pub early_media_received: u64,
    /// REFERs we took on (202).
    pub refers_accepted: u64,
    /// REFERs the application turned down.
    pub refers_refused: u64,
    /// REFERs refused for a missing, repeated or unusable Refer-To.
    pub refers_malformed: u64,
    /// REGISTERs by how they went.
    pub registers: HashMap<RegisterOutcome, u64>,
    /// Registrations (bindings) held now.
    pub bindings: u64,
}

/// Why a command to the endpoint failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// The call is gone or never existed.
    #[error("no such call")]
    NoSuchCall,
    /// The call can't do that now (e.g. answer after answering).
    #[error("the call is not in a state for that")]
    BadState,
    /// No listener of this transport to send from.
    #[error("no listener for transport {0:?}")]
    NoListener(Transport),
    /// The peer's offer has no codec we support.
    #[error("the offer has no codec we support")]
    NoCommonCodec,
    /// An SDP body was unusable.
    #[error("bad SDP: {0}")]
    Sdp(String),
    /// A URI (e.g. a transfer target) didn't parse.
    #[error("bad URI: {0}")]
    Uri(String),
}

/// Server transaction key (§17.2.3); ACK and CANCEL look up the INVITE's.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: String,
    method: Method,
}

/// Client transaction key (§17.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: Method,
}

enum ServerTx {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

struct ServerEntry {
    tx: ServerTx,
    peer: Peer,
    call: Option<CallId>,
    /// The INVITE's entry in `pending_invites`, removed with the transaction.
    merge_key: Option<MergeKey>,
}

/// (Call-ID, From tag, CSeq) of an INVITE, for §8.2.2.2 merge detection.
type MergeKey = (String, String, u32);

enum ClientTx {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

/// Who is waiting on a client transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxOwner {
    Call(CallId),
    Registration(usize),
    Ping(PingId),
    /// BYE, CANCEL and the like: nobody waits.
    Detached,
}

struct ClientEntry {
    tx: ClientTx,
    peer: Peer,
    owner: TxOwner,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TimerTarget {
    Server(ServerKey, TimerKind),
    Client(ClientKey, TimerKind),
    Call(CallId, calls::CallTimer),
    Registration(usize),
    /// A ping's own deadline.
    Ping(PingId),
}

/// The sans-IO SIP endpoint; see the module docs for how to drive it.
pub struct Endpoint {
    config: EndpointConfig,
    server_txs: HashMap<ServerKey, ServerEntry>,
    client_txs: HashMap<ClientKey, ClientEntry>,
    /// Boxed: a call is over 1.5 KB, and a table keeps up to twice its
    /// calls' worth of empty slots.
    calls: HashMap<CallId, Box<calls::Call>>,
    dialogs: HashMap<crate::dialog::DialogId, CallId>,
    /// §8.2.2.2 merged-request detection: (Call-ID, From tag, CSeq) → branch.
    pending_invites: HashMap<MergeKey, String>,
    registrations: Vec<registration::Registration>,
    /// OPTIONS pings waiting for their answer, by their transaction.
    pings: HashMap<PingId, ClientKey>,
    next_ping: u64,
    framers: HashMap<ConnId, StreamFramer>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_targets: HashMap<u64, TimerTarget>,
    next_timer: u64,
    next_call: u64,
    outbox: VecDeque<Transmit>,
    events: VecDeque<Event>,
    digest: DigestServer,
    /// Challenges our registrar's users, in the registrar's domain.
    user_digest: DigestServer,
    /// The location service: users' registered devices.
    bindings: crate::registrar::Bindings,
    /// The registrar's users kept in the store, by name.
    stored_users: HashMap<String, register::StoredUser>,
    draining: bool,
    /// The media side has no headroom left: new INVITEs and OPTIONS get 503.
    overloaded: bool,
    admission: admission::Admission,
    /// Inbound calls per source address: the per-source call cap.
    calls_by_source: HashMap<IpAddr, usize>,
    /// What it dropped or answered by itself.
    pub counters: Counters,
    /// Tags, branches, Call-IDs, CSeq starts; see [`util::id_rng`].
    id_rng: rand::rngs::StdRng,
}

impl Endpoint {
    /// An endpoint with no calls yet; `now` anchors its digest nonces.
    pub fn new(config: EndpointConfig, now: Instant) -> Endpoint {
        let digest = DigestServer::new("crossline", config.nonce_ttl, now);
        let user_digest = DigestServer::new(
            config
                .registrar
                .as_ref()
                .map_or("crossline", |r| r.domain.as_str()),
            config.nonce_ttl,
            now,
        );
        let limits = config
            .registrar
            .as_ref()
            .map(|r| r.limits)
            .unwrap_or_default();
        let config_seed = config.random_seed;
        Endpoint {
            admission: admission::Admission::new(config.admission.clone()),
            calls_by_source: HashMap::new(),
            config,
            server_txs: HashMap::new(),
            client_txs: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            pending_invites: HashMap::new(),
            registrations: Vec::new(),
            pings: HashMap::new(),
            next_ping: 1,
            framers: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_targets: HashMap::new(),
            next_timer: 0,
            next_call: 1,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            digest,
            user_digest,
            bindings: crate::registrar::Bindings::new(limits),
            stored_users: HashMap::new(),
            draining: false,
            overloaded: false,
            counters: Counters::default(),
            id_rng: util::id_rng(config_seed),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// New INVITEs get 503 with Retry-After from now on.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// While set, new INVITEs get 503 with Retry-After and out-of-dialog
    /// OPTIONS get 503, so a dispatcher steers calls elsewhere; calls in
    /// progress (and their re-INVITEs) are untouched.
    pub fn set_overloaded(&mut self, overloaded: bool) {
        self.overloaded = overloaded;
    }

    /// Whether new calls are refused for overload now.
    pub fn overloaded(&self) -> bool {
        self.overloaded
    }

    /// Calls it holds now.
    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Where a call stands; `None` once it has ended.
    pub fn call_state(&self, call: CallId) -> Option<CallState> {
        self.calls.get(&call).map(|c| c.state)
    }

    /// A call's SIP Call-ID (ours, for a call we placed).
    pub fn sip_call_id(&self, call: CallId) -> Option<&str> {
        self.calls.get(&call).map(|c| c.dialog.id.call_id.as_str())
    }

    /// Every call it holds.
    pub fn call_ids(&self) -> Vec<CallId> {
        self.calls.keys().copied().collect()
    }

    /// Client and server transactions open now.
    pub fn transaction_count(&self) -> usize {
        self.server_txs.len() + self.client_txs.len()
    }

    /// The next message to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The next event for the application, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call `handle_timeout` next, if anything is pending.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let lapse = self.bindings.next_expiry();
        // Stale entries are skipped lazily, so peek past cancelled ones.
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if self.timer_targets.contains_key(&id) {
                return Some(lapse.map_or(at, |l| l.min(at)));
            }
            self.timers.pop();
        }
        lapse
    }

    /// A UDP datagram arrived on `local` from `remote`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) {
        let peer = Peer {
            transport: Transport::Udp,
            local,
            remote,
            conn: None,
        };
        // RFC 5626 keep-alives: a bare CRLF (or CRLFCRLF) ping.
        if data.iter().all(|b| *b == b'\r' || *b == b'\n') {
            return;
        }
        if data.len() > self.config.max_message_size {
            self.counters.oversize += 1;
            return;
        }
        self.handle_message(now, peer, data);
    }

    /// Bytes arrived on a TCP connection. Returns false when the stream is
    /// broken (bad framing, oversize) and the driver must close it.
    pub fn handle_stream_bytes(
        &mut self,
        now: Instant,
        conn: ConnId,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> bool {
        self.handle_stream(now, Transport::Tcp, conn, local, remote, data)
    }

    /// Bytes arrived on a TCP or TLS connection (see
    /// [`Endpoint::handle_stream_bytes`]).
    pub fn handle_stream(
        &mut self,
        now: Instant,
        transport: Transport,
        conn: ConnId,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) -> bool {
        let max = self.config.max_message_size;
        let framer = self
            .framers
            .entry(conn)
            .or_insert_with(|| StreamFramer::new(max));
        framer.push(data);
        let mut frames = Vec::new();
        let ok = loop {
            match framer.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break true,
                Err(_) => break false,
            }
        };
        let peer = Peer {
            transport,
            local,
            remote,
            conn: Some(conn),
        };
        for frame in frames {
            self.handle_message(now, peer, &frame);
        }
        if !ok {
            self.counters.parse_errors += 1;
            self.framers.remove(&conn);
        }
        ok
    }

    /// The driver closed a TCP connection.
    pub fn connection_closed(&mut self, conn: ConnId) {
        self.framers.remove(&conn);
    }

    /// The driver could not reach `remote` over `transport` (a TCP connect
    /// or TLS handshake failed). Requests waiting on it fail now, as a 503
    /// would fail them (RFC 3261 §8.1.3.1), rather than at Timer B/F.
    pub fn transport_failed(&mut self, now: Instant, transport: Transport, remote: SocketAddr) {
        let failed: Vec<(ClientKey, TxOwner)> = self
            .client_txs
            .iter()
            .filter(|(_, e)| e.peer.transport == transport && e.peer.remote == remote)
            .map(|(k, e)| (k.clone(), e.owner))
            .collect();
        for (key, owner) in failed {
            self.client_txs.remove(&key);
            match owner {
                TxOwner::Call(call) if key.method == Method::Refer => self
                    .events
                    .push_back(Event::ReferAnswered { call, status: 503 }),
                TxOwner::Call(call) if key.method == Method::Invite => {
                    let outgoing = self
                        .calls
                        .get(&call)
                        .is_some_and(|c| c.state == CallState::Outgoing);
                    if outgoing {
                        self.call_failed(
                            now,
                            call,
                            EndCause::Rejected {
                                status: 503,
                                reason: TRANSPORT_ERROR.into(),
                            },
                        );
                    }
                }
                TxOwner::Registration(i) => self.registration_unreachable(now, i),
                TxOwner::Ping(id) => self.ping_ended(id, PingOutcome::Unreachable),
                TxOwner::Call(_) | TxOwner::Detached => {}
            }
        }
    }

    fn handle_message(&mut self, now: Instant, peer: Peer, data: &[u8]) {
        self.counters.messages_in += 1;
        match parse_message(data) {
            Ok(SipMessage::Request(req)) => {
                if let Err(err) = req.check_mandatory() {
                    // Parseable but unusable (RFC 4475 §3.3.1 insuf): 400
                    // straight back to the source with what we have.
                    self.counters.parse_errors += 1;
                    let mut resp = Response::for_request(&req, 400);
                    resp.reason = format!("Bad Request ({err})");
                    *self.counters.responses_sent.entry(400).or_default() += 1;
                    self.transmit(peer, Bytes::from(resp.to_bytes()));
                    return;
                }
                self.handle_request(now, peer, req)
            }
            Ok(SipMessage::Response(resp)) => self.handle_response(now, peer, resp),
            Err(err) => {
                self.counters.parse_errors += 1;
                tracing::debug!(%err, from = %peer.remote, "unparseable SIP message");
                if let Some(resp) = crate::message::bad_request_response(data, &err) {
                    // Straight back to the source, never to the Via of a
                    // message we could not parse: no reflection to third
                    // parties.
                    *self.counters.responses_sent.entry(resp.status).or_default() += 1;
                    self.transmit(peer, Bytes::from(resp.to_bytes()));
                }
            }
        }
    }

    fn handle_response(&mut self, now: Instant, _peer: Peer, resp: Response) {
        *self
            .counters
            .responses_received
            .entry(resp.status)
            .or_default() += 1;
        let Ok(via) = resp.headers.top_via() else {
            self.counters.stray_responses += 1;
            return;
        };
        let Ok(cseq) = resp.headers.cseq() else {
            self.counters.stray_responses += 1;
            return;
        };
        let key = ClientKey {
            branch: via.branch().unwrap_or_default().to_string(),
            method: cseq.method.clone(),
        };
        let Some(entry) = self.client_txs.get_mut(&key) else {
            // A 2xx retransmission after the INVITE transaction ended: re-ACK.
            if cseq.method == Method::Invite && (200..300).contains(&resp.status) {
                self.reack(now, &resp);
            } else {
                self.counters.stray_responses += 1;
            }
            return;
        };
        let (out, deliver) = match &mut entry.tx {
            ClientTx::Invite(tx) => tx.on_response(now, &resp),
            ClientTx::NonInvite(tx) => tx.on_response(now, &resp),
        };
        let owner = entry.owner;
        let request = match &entry.tx {
            ClientTx::Invite(tx) => tx.request().clone(),
            ClientTx::NonInvite(tx) => tx.request().clone(),
        };
        let timeout = self.apply_client_outputs(now, &key, out);
        if deliver {
            match owner {
                TxOwner::Call(call) => self.call_response(now, call, &request, &resp),
                TxOwner::Registration(i) => self.registration_response(now, i, &request, &resp),
                TxOwner::Ping(id) => self.ping_response(id, resp.status),
                TxOwner::Detached => {}
            }
        }
        if timeout {
            self.client_timeout(now, owner, &key.method);
        }
    }

    /// Run timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_bindings(now);
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(target) = self.timer_targets.remove(&id) else {
                continue;
            };
            match target {
                TimerTarget::Server(key, kind) => self.server_timer(now, key, kind, at),
                TimerTarget::Client(key, kind) => {
                    let Some(entry) = self.client_txs.get_mut(&key) else {
                        continue;
                    };
                    let out = match &mut entry.tx {
                        ClientTx::Invite(tx) => tx.on_timer(now, kind, at),
                        ClientTx::NonInvite(tx) => tx.on_timer(now, kind, at),
                    };
                    let owner = entry.owner;
                    if self.apply_client_outputs(now, &key, out) {
                        self.client_timeout(now, owner, &key.method);
                    }
                }
                TimerTarget::Call(call, timer) => self.call_timer(now, call, timer),
                TimerTarget::Registration(i) => self.registration_timer(now, i),
                TimerTarget::Ping(id) => self.ping_ended(id, PingOutcome::Timeout),
            }
        }
        self.compact_tables();
    }

    /// Give back what a past burst of calls grew the tables to (a few
    /// comparisons when there is nothing to give back).
    fn compact_tables(&mut self) {
        self.server_txs.compact();
        self.client_txs.compact();
        self.calls.compact();
        self.dialogs.compact();
        self.pending_invites.compact();
        self.timers.compact();
        self.timer_targets.compact();
        self.outbox.compact();
        self.events.compact();
        self.calls_by_source.compact();
    }

    fn schedule(&mut self, at: Instant, target: TimerTarget) {
        let id = self.next_timer;
        self.next_timer += 1;
        self.timers.push(Reverse((at, id)));
        self.timer_targets.insert(id, target);
    }

    fn transmit(&mut self, peer: Peer, payload: Bytes) {
        self.outbox.push_back(Transmit { peer, payload });
    }

    fn server_timer(&mut self, now: Instant, key: ServerKey, kind: TimerKind, at: Instant) {
        let Some(entry) = self.server_txs.get_mut(&key) else {
            return;
        };
        let out = match &mut entry.tx {
            ServerTx::Invite(tx) => tx.on_timer(now, kind, at),
            ServerTx::NonInvite(tx) => tx.on_timer(now, kind, at),
        };
        self.apply_server_outputs(&key, out);
    }

    /// Returns the call whose INVITE transaction reported a missing ACK.
    fn apply_server_outputs(&mut self, key: &ServerKey, out: Vec<TxOutput>) {
        let Some(entry) = self.server_txs.get(key) else {
            return;
        };
        let peer = entry.peer;
        let call = entry.call;
        for o in out {
            match o {
                TxOutput::Transmit(b) => self.transmit(peer, b),
                TxOutput::Arm(kind, at) => {
                    self.schedule(at, TimerTarget::Server(key.clone(), kind))
                }
                TxOutput::AckTimeout => {
                    // Our non-2xx was never ACKed; the call is already over.
                    tracing::debug!(?call, "no ACK for final response (Timer H)");
                }
                TxOutput::Timeout => {}
                TxOutput::Terminated => {
                    if let Some(merge_key) = self.server_txs.remove(key).and_then(|e| e.merge_key) {
                        self.pending_invites.remove(&merge_key);
                    }
                }
            }
        }
    }

    /// Returns true when the transaction timed out.
    fn apply_client_outputs(&mut self, _now: Instant, key: &ClientKey, out: Vec<TxOutput>) -> bool {
        let Some(entry) = self.client_txs.get(key) else {
            return false;
        };
        let peer = entry.peer;
        let mut timed_out = false;
        for o in out {
            match o {
                TxOutput::Transmit(b) => self.transmit(peer, b),
                TxOutput::Arm(kind, at) => {
                    self.schedule(at, TimerTarget::Client(key.clone(), kind))
                }
                TxOutput::Timeout => timed_out = true,
                TxOutput::AckTimeout => {}
                TxOutput::Terminated => {
                    self.client_txs.remove(key);
                }
            }
        }
        timed_out
    }

    fn client_timeout(&mut self, now: Instant, owner: TxOwner, method: &Method) {
        match owner {
            // An unanswered REFER fails the transfer, not the call.
            TxOwner::Call(call) if *method == Method::Refer => self
                .events
                .push_back(Event::ReferAnswered { call, status: 408 }),
            // A refresh that times out ends the session (RFC 4028 §10):
            // any UPDATE, or an INVITE in a confirmed dialog.
            TxOwner::Call(call)
                if *method == Method::Update
                    || self.call_state(call) == Some(CallState::Confirmed) =>
            {
                self.session_lost(now, call)
            }
            TxOwner::Call(call) => self.call_failed(now, call, EndCause::Timeout),
            TxOwner::Registration(i) => self.registration_timeout(now, i),
            TxOwner::Ping(id) => self.ping_ended(id, PingOutcome::Timeout),
            TxOwner::Detached => {}
        }
    }

    /// Start a client transaction; returns its key.
    fn start_client(
        &mut self,
        now: Instant,
        request: crate::message::Request,
        peer: Peer,
        owner: TxOwner,
    ) -> ClientKey {
        let branch = request
            .headers
            .top_via()
            .ok()
            .and_then(|v| v.branch().map(str::to_string))
            .unwrap_or_default();
        let key = ClientKey {
            branch,
            method: request.method.clone(),
        };
        let reliable = peer.transport.reliable();
        let (tx, out) = if request.method == Method::Invite {
            let (tx, out) = ClientInvite::start(now, request, reliable, self.config.timers);
            (ClientTx::Invite(tx), out)
        } else {
            let (tx, out) = ClientNonInvite::start(now, request, reliable, self.config.timers);
            (ClientTx::NonInvite(tx), out)
        };
        self.client_txs
            .insert(key.clone(), ClientEntry { tx, peer, owner });
        self.apply_client_outputs(now, &key, out);
        key
    }

    /// Pick our listener for a transport, and the address we advertise.
    fn local_for(&self, transport: Transport) -> Result<SocketAddr, EndpointError> {
        let list = match transport {
            Transport::Udp => &self.config.udp_listeners,
            Transport::Tcp => &self.config.tcp_listeners,
            Transport::Tls => &self.config.tls_listeners,
        };
        list.first()
            .copied()
            .ok_or(EndpointError::NoListener(transport))
    }

    fn advertised(&self, local: SocketAddr) -> SocketAddr {
        match self.config.advertised_address {
            Some(ip) if local.ip().is_unspecified() => SocketAddr::new(ip, local.port()),
            _ => local,
        }
    }
}

#[cfg(test)]
mod tests;
