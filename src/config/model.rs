//! The typed configuration. Every key here is documented once, in
//! `deploy/crossline.example.toml`; unknown keys are rejected.

use crate::secret::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub sip: SipConfig,
    pub http: HttpConfig,
    pub store: StoreConfig,
    pub media: MediaConfig,
    pub logging: LoggingConfig,
    pub telemetry: TelemetryConfig,
    pub trunks: Vec<TrunkConfig>,
    pub trunk_groups: Vec<TrunkGroupConfig>,
    pub registrations: Vec<RegistrationConfig>,
    pub routes: Vec<RouteConfig>,
    pub tts: crate::tts::TtsConfig,
    pub prompts: Vec<crate::tts::PromptConfig>,
    pub flows: FlowsConfig,
    /// The flows loaded from `flows.dir`, by name.
    pub flow_set: crate::flow::FlowSet,
    pub messaging: crate::messaging::MessagingConfig,
    pub chat: ChatConfig,
    pub callbacks: CallbacksConfig,
    pub webrtc: crate::webrtc::WebRtcConfig,
    pub media_streams: crate::media_stream::MediaStreamsConfig,
    pub asr: crate::speech::AsrConfig,
    /// `[registrar]`: agent phones register here.
    pub registrar: crate::registrar::RegistrarSettings,
    /// `[[users]]`: who may register.
    pub users: Vec<crate::registrar::UserConfig>,
    /// `[[queues]]`: callers wait here for agents.
    pub queues: Vec<crate::queue::QueueConfig>,
    pub recording: RecordingConfig,
    pub twiml: crate::twiml::TwimlConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Directory of flow files (`*.toml`); unset means built-in flows only.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    /// UDP listeners.
    pub udp: Vec<SocketAddr>,
    /// TCP listeners.
    pub tcp: Vec<SocketAddr>,
    /// TLS listeners (SIP over TLS, `sips:`); they need `tls_cert` and
    /// `tls_key`.
    pub tls: Vec<SocketAddr>,
    /// PEM certificate chain and private key for the TLS listeners.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// PEM CAs that outbound TLS connections trust; unset: the Mozilla
    /// root set.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Address written in Contact, Via and SDP when the listener is a wildcard.
    pub advertised_address: Option<std::net::IpAddr>,
    pub user_agent: String,
    /// Largest SIP message accepted on any transport, in bytes.
    pub max_message_size: usize,
    /// Most TCP/TLS connections open at once (handshakes included);
    /// further accepts are closed at once.
    pub max_tcp_connections: usize,
    /// Most TCP/TLS connections from one address at once (every source,
    /// loopback and trunks included).
    pub max_tcp_connections_per_source: usize,
    /// A TCP/TLS connection its peer sends nothing on for this long is
    /// closed; 0: never.
    pub tcp_idle_secs: u64,
    pub t1_ms: u64,
    pub t2_ms: u64,
    pub t4_ms: u64,
    /// On SIGTERM/SIGINT, calls in progress get BYE after this many seconds.
    pub shutdown_grace_secs: u64,
    /// Retry-After sent with 503 while draining.
    pub drain_retry_after_secs: u32,
    /// Session timers (RFC 4028): the interval we ask for on calls we
    /// place and the most we grant; 0: we ask for none, but still honour
    /// a peer that does.
    pub session_expires_secs: u32,
    /// The shortest session interval we accept; a shorter request gets
    /// 422 with this as Min-SE. RFC 4028 says at least 90; tests set less
    /// to see refreshes in seconds.
    pub min_se_secs: u32,
    /// Lifetime of server digest nonces.
    pub nonce_ttl_secs: u64,
    /// Requests per second from one source address that match no dialog
    /// or transaction of ours (token bucket; trunk sources and
    /// `exempt_sources` skip it); 0: no limit.
    pub rate_limit_per_source: f64,
    /// Requests one source may send at once before the rate applies.
    pub rate_limit_burst: f64,
    /// User-Agent substrings of scanners whose requests are dropped unanswered.
    pub blocked_user_agents: Vec<String>,
    /// Most calls at once; 0: as many as the RTP port range holds. Over
    /// it, INVITEs get 503.
    pub max_calls: usize,
    /// Most calls at once from one address that is not a trunk; 0: a
    /// tenth of `max_calls` when no `[[trunks]]` take calls, else no limit.
    pub max_calls_per_source: usize,
    /// CIDRs exempt from `rate_limit_per_source` and `max_calls_per_source`
    /// (never from bans, connection caps, idle timeouts or the rule that
    /// an answer is never larger than a few requests).
    pub exempt_sources: Vec<String>,
    /// CIDRs of proxies in front of us (Kamailio, an SBC) that append the
    /// address each request came from as `X-Forwarded-For`: that address
    /// pays the request rate and digest-failure bans, not the proxy.
    pub trusted_proxies: Vec<String>,
    /// Wrong digest answers from one address, or for one user from
    /// addresses that never signed in as it, within a minute before a
    /// ban; 0: never ban.
    pub auth_failures_before_ban: u32,
    /// The first ban's length; each further ban doubles it, up to an hour.
    /// A banned address gets no answers; a banned user gets 403 unchecked
    /// except from addresses it signed in from before.
    pub auth_ban_secs: u64,
    /// A test and replay aid, never for production: seeds SIP tags,
    /// branches, Call-IDs, CSeq starts, RTP SSRC/sequence/timestamp starts
    /// and SDP session ids, so a run replays exactly. Unset: OS entropy.
    /// Digest nonces and chat tokens always use OS entropy.
    pub random_seed: Option<u64>,
    /// DNS servers for SIP destinations ("ip" or "ip:port"); empty: the
    /// system's, from /etc/resolv.conf.
    pub dns_servers: Vec<String>,
    /// How long one DNS query waits for its answer; a whole resolution
    /// gives up after four times this.
    pub dns_timeout_ms: u64,
    /// DNS answers kept in the cache.
    pub dns_cache_size: usize,
    /// Bounds on how long an answer is cached, whatever its TTL says.
    pub dns_cache_min_ttl_secs: u64,
    pub dns_cache_max_ttl_secs: u64,
    /// Longest a negative answer (no such name, no records) is cached.
    pub dns_negative_ttl_secs: u64,
    /// A target that failed (503, no answer, transport error) is skipped
    /// this long by new requests; 0: never skipped. A 503's Retry-After
    /// sets its own time.
    pub failover_backoff_secs: u64,
    /// 3xx redirects followed per call we place; 0: a 3xx is a failure.
    pub max_redirects: u32,
    /// An INVITE of ours with no response at all (not even 100 Trying)
    /// after this long moves to the next target, when there is one; 0:
    /// only at Timer B.
    pub failover_timeout_ms: u64,
}

impl SipConfig {
    /// `dns_servers` as addresses (port 53 when none is given); entries
    /// that don't parse are left out (`crossline check` reports them).
    pub fn dns_server_addrs(&self) -> Vec<SocketAddr> {
        self.dns_servers
            .iter()
            .filter_map(|s| parse_dns_server(s))
            .collect()
    }
}

/// "ip", "ip:port" or "[v6]:port".
pub fn parse_dns_server(s: &str) -> Option<SocketAddr> {
    let s = s.trim();
    s.parse::<SocketAddr>().ok().or_else(|| {
        s.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

impl Default for SipConfig {
    fn default() -> Self {
        let loopback: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 5060));
        SipConfig {
            udp: vec![loopback],
            tcp: vec![loopback],
            tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            advertised_address: None,
            // No version: it tells scanners which holes to try.
            user_agent: "crossline".into(),
            max_message_size: 65_535,
            max_tcp_connections: 1024,
            max_tcp_connections_per_source: 64,
            tcp_idle_secs: 300,
            t1_ms: 500,
            t2_ms: 4_000,
            t4_ms: 5_000,
            shutdown_grace_secs: 30,
            drain_retry_after_secs: 60,
            session_expires_secs: 1800,
            min_se_secs: 90,
            nonce_ttl_secs: 300,
            rate_limit_per_source: 20.0,
            rate_limit_burst: 50.0,
            blocked_user_agents: [
                "friendly-scanner",
                "sipvicious",
                "sipcli",
                "sip-scan",
                "sipsak",
                "sundayddr",
                "iWar",
                "VaxSIPUserAgent",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            max_calls: 0,
            max_calls_per_source: 0,
            exempt_sources: vec!["127.0.0.0/8".into(), "::1/128".into()],
            trusted_proxies: Vec::new(),
            auth_failures_before_ban: 10,
            auth_ban_secs: 60,
            random_seed: None,
            dns_servers: Vec::new(),
            dns_timeout_ms: 2_000,
            dns_cache_size: 1_024,
            dns_cache_min_ttl_secs: 0,
            dns_cache_max_ttl_secs: 3_600,
            dns_negative_ttl_secs: 30,
            failover_backoff_secs: 30,
            max_redirects: 5,
            failover_timeout_ms: 4_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// The address phones and browsers reach the sidecar at; links sent by
    /// SMS start with it. Default: `http://<listen>`.
    pub public_base_url: Option<String>,
    /// Bearer token for /v1 admin endpoints (or `admin_token_env`).
    pub admin_token: Option<Secret>,
    pub admin_token_env: Option<String>,
    /// Bearer token for /v1 operator endpoints; the admin token works too.
    pub operator_token: Option<Secret>,
    pub operator_token_env: Option<String>,
    /// Bearer token for read-only views (queues and agents; the console's
    /// Queues tab without its buttons); operator and admin tokens work too.
    pub viewer_token: Option<Secret>,
    pub viewer_token_env: Option<String>,
    /// Browser origins allowed to call /v1 (CORS). Empty: none.
    pub cors_origins: Vec<String>,
    /// PEM certificate chain and key: the listener speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A second listener for `/metrics` and the operator console (and
    /// everything else); when set, `listen` serves neither of those two.
    pub admin_listen: Option<SocketAddr>,
    /// Reverse proxies (CIDRs) whose `X-Forwarded-For` names the client;
    /// from anyone else the header is ignored. Per-client limits (sign-in
    /// back-off, chats per address, texts per address) use that client.
    pub trusted_proxies: Vec<String>,
    /// Connections held at once, in all and from one address (trusted
    /// proxies are exempt from the per-address cap).
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// A request's head must arrive within this (slowloris), and its body
    /// within `body_timeout_secs`.
    pub header_read_timeout_secs: u64,
    pub body_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_base_url: None,
            admin_token: None,
            admin_token_env: None,
            operator_token: None,
            operator_token_env: None,
            viewer_token: None,
            viewer_token_env: None,
            cors_origins: Vec::new(),
            tls_cert: None,
            tls_key: None,
            admin_listen: None,
            trusted_proxies: Vec::new(),
            max_connections: 4096,
            max_connections_per_source: 64,
            header_read_timeout_secs: 10,
            body_timeout_secs: 30,
        }
    }
}

impl HttpConfig {
    pub fn public_base_url(&self) -> String {
        match &self.public_base_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if self.tls_cert.is_some() => format!("https://{}", self.listen),
            None => format!("http://{}", self.listen),
        }
    }

    /// The admin token, from the file or the environment.
    pub fn admin_token(&self) -> Result<Option<String>, String> {
        secret("admin_token", &self.admin_token, &self.admin_token_env)
    }

    pub fn operator_token(&self) -> Result<Option<String>, String> {
        secret(
            "operator_token",
            &self.operator_token,
            &self.operator_token_env,
        )
    }

    pub fn viewer_token(&self) -> Result<Option<String>, String> {
        secret("viewer_token", &self.viewer_token, &self.viewer_token_env)
    }
}

pub(crate) fn secret(
    key: &str,
    value: &Option<Secret>,
    env: &Option<String>,
) -> Result<Option<String>, String> {
    match (value, env) {
        (Some(_), Some(_)) => Err(format!("set {key} or {key}_env, not both")),
        (Some(v), None) if v.expose().len() < 16 => {
            Err(format!("{key} must be at least 16 characters"))
        }
        (Some(v), None) => Ok(Some(v.expose().to_string())),
        (None, Some(name)) => match std::env::var(name) {
            Ok(v) if v.len() >= 16 => Ok(Some(v)),
            Ok(_) => Err(format!(
                "environment variable {name:?} must hold at least 16 characters"
            )),
            Err(_) => Err(format!("environment variable {name:?} is not set")),
        },
        (None, None) => Ok(None),
    }
}

/// Callbacks: calls placed to a visitor through the outbound trunk.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CallbacksConfig {
    /// The trunk calls go out through; unset: the first with an outbound proxy.
    pub trunk: Option<String>,
    /// Give up on a callback ringing this long (no answer).
    pub ring_timeout_secs: u64,
    /// Callbacks to one number per hour; more get 429.
    pub max_per_phone_per_hour: u32,
    /// Callbacks per API key (or chat flow) per minute; more get 429.
    pub max_per_key_per_minute: u32,
    /// Where each status change is POSTed (signed), if anywhere.
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<Secret>,
    pub webhook_secret_env: Option<String>,
    /// After a restart, callbacks asked for within this many seconds and
    /// not yet answered are dialled again; older ones are marked failed.
    pub redial_after_restart_secs: u64,
}

impl Default for CallbacksConfig {
    fn default() -> Self {
        CallbacksConfig {
            trunk: None,
            ring_timeout_secs: 30,
            redial_after_restart_secs: 300,
            max_per_phone_per_hour: 3,
            max_per_key_per_minute: 30,
            webhook_url: None,
            webhook_secret: None,
            webhook_secret_env: None,
        }
    }
}

impl CallbacksConfig {
    pub fn webhook_secret(&self) -> Result<Option<String>, String> {
        secret(
            "webhook_secret",
            &self.webhook_secret,
            &self.webhook_secret_env,
        )
    }
}

/// How many channels a recording has.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecordChannels {
    /// Both directions mixed into one channel.
    Mono,
    /// The caller left, the other party (or our prompts) right.
    #[default]
    Dual,
}

/// A recording's file format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// PCM 16-bit, 8 kHz.
    #[default]
    Wav,
    /// Opus in Ogg (RFC 7845).
    Ogg,
}

/// Where finished recordings are kept.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum RecordStorage {
    /// `recordings_dir`.
    #[default]
    Local,
    /// An S3-compatible bucket (written in `recordings_dir` first).
    S3,
}

/// Call recording.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordingConfig {
    /// Where recordings are written (created if missing).
    pub recordings_dir: PathBuf,
    /// Channels and format when a route, node or API call doesn't say.
    pub channels: RecordChannels,
    pub format: RecordFormat,
    /// Played before a recording starts (a `[[prompts]]` name or a WAV);
    /// unset: none.
    pub announcement: Option<String>,
    /// Delete recordings older than this; 0 keeps them.
    pub retention_days: u64,
    /// Delete the oldest recordings while all of them take more; 0: no cap.
    pub max_total_mb: u64,
    /// How often retention is swept.
    pub sweep_interval_secs: u64,
    /// Audio each recording may have waiting for the disk; past it, frames
    /// are dropped and the recording is marked incomplete.
    pub buffer_ms: u64,
    /// Where a finished recording is POSTed (signed), if anywhere.
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<Secret>,
    pub webhook_secret_env: Option<String>,
    /// "local", or "s3": each finished file is uploaded, then removed from
    /// `recordings_dir`. Credentials come from the usual AWS environment
    /// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, or the instance's role).
    pub storage: RecordStorage,
    pub s3_bucket: Option<String>,
    /// An S3-compatible endpoint (MinIO, Ceph, moto); unset: AWS's.
    pub s3_endpoint: Option<String>,
    pub s3_region: String,
    /// Prepended to each object's name ("recordings/").
    pub s3_prefix: String,
}

impl Default for RecordingConfig {
    fn default() -> Self {
        RecordingConfig {
            recordings_dir: PathBuf::from("recordings"),
            channels: RecordChannels::Dual,
            format: RecordFormat::Wav,
            announcement: None,
            retention_days: 0,
            max_total_mb: 0,
            sweep_interval_secs: 3600,
            buffer_ms: 2000,
            webhook_url: None,
            webhook_secret: None,
            webhook_secret_env: None,
            storage: RecordStorage::Local,
            s3_bucket: None,
            s3_endpoint: None,
            s3_region: "us-east-1".into(),
            s3_prefix: String::new(),
        }
    }
}

impl RecordingConfig {
    pub fn webhook_secret(&self) -> Result<Option<String>, String> {
        secret(
            "webhook_secret",
            &self.webhook_secret,
            &self.webhook_secret_env,
        )
    }
}

fn default_chat_title() -> String {
    "crossline".into()
}

/// The web chat (PWA).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ChatConfig {
    /// Shown in the chat's header.
    #[serde(default = "default_chat_title")]
    pub title: String,
    /// The chat flow `/chat/` starts; unset: only breakout links open chats.
    pub web_flow: Option<String>,
    /// The chat flows a text from a number with no open conversation
    /// starts; unset: such a text opens a conversation for the operators.
    pub sms_flow: Option<String>,
    pub whatsapp_flow: Option<String>,
    /// Shown when a chat flow ends.
    pub closed_message: String,
    /// A chat waiting this long for the visitor is closed.
    pub idle_timeout_secs: u64,
    /// Shown when a chat is closed for inactivity.
    pub idle_message: String,
    /// Seconds the visitor has to undo a move to SMS or WhatsApp.
    pub switch_revert_secs: u64,
    /// What a visitor on a phone texts, as the whole message (any case),
    /// to move the conversation: keyword → "web", "sms" or "whatsapp".
    pub switch_keywords: std::collections::BTreeMap<String, String>,
    /// Seconds a link back to the web chat (the "web" keyword, or the
    /// operator's) can be opened.
    pub web_link_ttl_secs: u64,
    /// ISO 3166 country code ("ES") for phone numbers typed without `+`;
    /// unset: visitors must give the country code.
    pub default_country: Option<String>,
    /// Anonymous web chats nobody has written in yet, held in memory at
    /// once, in all and per client address; past either, the oldest such
    /// chat is closed. A page load makes none: its socket does.
    pub max_anonymous_chats: usize,
    pub max_anonymous_chats_per_source: usize,
    /// A breakout chat whose visitor has held no WebSocket this long (from
    /// the claim, or the last socket closing) is closed, and the waiting
    /// call goes on with status "closed"; 0: never.
    pub breakout_left_secs: u64,
    /// Shown as that chat closes.
    pub breakout_left_message: String,
}

impl Default for ChatConfig {
    fn default() -> Self {
        ChatConfig {
            title: default_chat_title(),
            web_flow: None,
            sms_flow: None,
            whatsapp_flow: None,
            closed_message: "This conversation has ended. Thank you!".into(),
            idle_timeout_secs: 1800,
            idle_message: "This conversation was closed after a long pause.".into(),
            switch_revert_secs: 10,
            switch_keywords: [("WHATSAPP", "whatsapp"), ("SMS", "sms"), ("WEB", "web")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            web_link_ttl_secs: 1800,
            default_country: None,
            max_anonymous_chats: 1000,
            max_anonymous_chats_per_source: 5,
            breakout_left_secs: 30,
            breakout_left_message: "You left the chat, so your call has carried on without it."
                .into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// "sqlite" (one node) or "postgres" (nodes sharing one database).
    pub backend: StoreBackend,
    pub sqlite_path: PathBuf,
    /// libpq connection string; it may hold a password.
    pub postgres_url: Option<Secret>,
    pub postgres_url_env: Option<String>,
    /// This gateway's name among those sharing a PostgreSQL store; stable
    /// across restarts, so a restarted node takes its chats straight back.
    /// Default: "<hostname>:<http port>".
    pub node_id: Option<String>,
    /// A node owns each chat it runs for this long, renewed while it runs;
    /// texts for it that reach other nodes are handed to it. When a node
    /// dies, another takes its chats once their leases run out.
    pub lease_secs: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Postgres,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            sqlite_path: PathBuf::from("./crossline.db"),
            postgres_url: None,
            postgres_url_env: None,
            node_id: None,
            lease_secs: 15,
        }
    }
}

impl StoreConfig {
    /// This node's name (see `node_id`).
    pub fn node_id(&self, http_listen: std::net::SocketAddr) -> String {
        self.node_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "crossline".into());
            format!("{host}:{}", http_listen.port())
        })
    }

    /// The PostgreSQL connection string, from the file or the environment.
    pub fn postgres_url(&self) -> Result<Option<Secret>, String> {
        password("postgres_url", &self.postgres_url, &self.postgres_url_env)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum CodecName {
    #[serde(rename = "PCMU")]
    Pcmu,
    #[serde(rename = "PCMA")]
    Pcma,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaConfig {
    /// Bind address for RTP sockets.
    pub rtp_address: std::net::IpAddr,
    pub rtp_port_min: u16,
    pub rtp_port_max: u16,
    /// Codec preference, first is preferred when we offer.
    pub codecs: Vec<CodecName>,
    pub telephone_event_payload_type: u8,
    /// Directory that relative audio file names resolve against.
    pub audio_dir: PathBuf,
    /// Audio loop threads; 0 means one per core.
    pub audio_threads: usize,
    /// SCHED_FIFO priority for audio threads (1..=99); 0 = normal scheduling.
    pub realtime_priority: i32,
    /// Pin audio thread i to CPU i.
    pub pin_audio_threads: bool,
    /// Read each call's RTP socket every this many 20 ms ticks.
    pub rtp_poll_ticks: u32,
    /// Send every call's IPv4 RTP through one raw socket per audio loop,
    /// many datagrams a system call, when the process may (CAP_NET_RAW).
    pub raw_send: bool,
    /// The longest an audio loop sleeps at once between sub-ticks, in
    /// microseconds; 0 sleeps to each 5 ms deadline in one go.
    pub loop_max_sleep_us: u32,
    /// Hang up a call when no RTP has arrived for this long; 0 disables.
    pub rtp_timeout_secs: u64,
    /// Refuse new calls (503) once an audio loop is busier than this share
    /// of each tick (smoothed), or the loops together leave less than one
    /// core to everything else; 0 disables.
    pub overload_threshold_percent: f64,
    /// Retry-After on the 503s sent while overloaded.
    pub overload_retry_after_secs: u32,
    /// Default wait music: WAV files played in order, looping.
    pub hold_music: Vec<PathBuf>,
    /// Default hold message: a WAV file, or the name of a `[[prompts]]` entry.
    /// Empty means music only.
    pub hold_message: String,
    /// Seconds from the start of one hold message to the start of the next.
    pub hold_repeat_secs: u64,
    /// Music gain under the hold message, in dB (0 or negative).
    pub hold_duck_db: f32,
    /// The ringback a route's `early_media = "ringback"` plays: "us"
    /// (440+480 Hz, 2 s on, 4 s off), "eu" (425 Hz, 1 s on, 4 s off) or
    /// "uk" (400+450 Hz, double ring).
    pub ringback_tone: String,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            rtp_address: std::net::IpAddr::from([127, 0, 0, 1]),
            rtp_port_min: 10_000,
            rtp_port_max: 29_999,
            codecs: vec![CodecName::Pcmu, CodecName::Pcma],
            telephone_event_payload_type: 101,
            audio_dir: PathBuf::from("audio"),
            audio_threads: 0,
            realtime_priority: 10,
            pin_audio_threads: true,
            rtp_poll_ticks: 5,
            raw_send: true,
            loop_max_sleep_us: 0,
            rtp_timeout_secs: 60,
            overload_threshold_percent: 80.0,
            overload_retry_after_secs: 10,
            hold_music: vec![PathBuf::from("wait-music.wav")],
            hold_message: "hold-en.wav".into(),
            hold_repeat_secs: 15,
            hold_duck_db: -12.0,
            ringback_tone: "us".into(),
        }
    }
}

/// Trace export. Unset: no exporter is built at all.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector base URL, e.g. "http://otel:4318"; spans are
    /// POSTed to `<it>/v1/traces` as protobuf.
    pub otlp_endpoint: Option<String>,
}

impl TelemetryConfig {
    /// Where spans go: the endpoint with the traces path added.
    pub fn otlp_traces_url(&self) -> Option<String> {
        let base = self.otlp_endpoint.as_deref()?.trim().trim_end_matches('/');
        Some(if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        })
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A tracing filter, e.g. "info" or "crossline::sip=debug,info".
    pub level: String,
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum TransportName {
    #[default]
    Udp,
    Tcp,
    Tls,
}

impl TransportName {
    pub fn transport(self) -> crate::sip::endpoint::Transport {
        match self {
            TransportName::Udp => crate::sip::endpoint::Transport::Udp,
            TransportName::Tcp => crate::sip::endpoint::Transport::Tcp,
            TransportName::Tls => crate::sip::endpoint::Transport::Tls,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub name: String,
    /// Sources allowed to send us calls on this trunk, as CIDRs.
    #[serde(default)]
    pub inbound_cidrs: Vec<String>,
    /// When set, inbound requests must answer a digest challenge with these.
    #[serde(default)]
    pub inbound_username: Option<String>,
    #[serde(default)]
    pub inbound_password: Option<Secret>,
    /// Or the name of an environment variable holding it.
    #[serde(default)]
    pub inbound_password_env: Option<String>,
    /// Where outbound calls go: a SIP URI of the carrier or proxy.
    #[serde(default)]
    pub outbound_proxy: Option<String>,
    /// Unset: the URI's `transport` parameter, else NAPTR/SRV (RFC 3263),
    /// else UDP.
    #[serde(default)]
    pub outbound_transport: Option<TransportName>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    /// Caller ID on outbound calls (user part of From).
    #[serde(default)]
    pub caller_id: Option<String>,
    /// Most inbound calls at once on this trunk; 0: no limit (503 over it).
    #[serde(default)]
    pub max_calls: usize,
    /// Digest algorithms inbound calls are challenged with, preferred
    /// first ("SHA-256", "MD5"); empty: both, SHA-256 first (RFC 8760).
    #[serde(default)]
    pub inbound_digest_algorithms: Vec<String>,
    /// Believe this trunk's `P-Asserted-Identity` about who is calling
    /// (RFC 3325: only for a carrier inside our trust domain).
    #[serde(default)]
    pub trust_identity: bool,
    /// Take REFERs (RFC 3515) on this trunk's calls: place the call they
    /// ask for, through this trunk, in the old leg's place. Off: 403.
    #[serde(default)]
    pub accept_refer: bool,
    /// ISO 3166 country national-format callers are read in, e.g. "ES":
    /// `{{caller}}` is then E.164.
    #[serde(default)]
    pub default_country: Option<String>,
    /// Send an OPTIONS to `outbound_proxy` this often, in seconds, and
    /// skip the trunk while it is down; 0 (the default): no keep-alive.
    #[serde(default)]
    pub options_interval_secs: u64,
    /// Failed OPTIONS in a row (no answer, transport error, 503) that
    /// mark the trunk down.
    #[serde(default = "default_options_failures_down")]
    pub options_failures_down: u32,
    /// Answered OPTIONS in a row that bring a down trunk up again.
    #[serde(default = "default_options_successes_up")]
    pub options_successes_up: u32,
}

fn default_options_failures_down() -> u32 {
    3
}
fn default_options_successes_up() -> u32 {
    2
}

/// Outbound trunks tried in turn: wherever a trunk is named for calls we
/// place, a group's name works too.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TrunkGroupConfig {
    pub name: String,
    /// `[[trunks]]` names, in the order they are tried.
    pub trunks: Vec<String>,
    #[serde(default)]
    pub strategy: GroupStrategy,
}

impl Config {
    /// The outbound trunks `name` stands for, in the order to try them:
    /// the trunk of that name, or a `[[trunk_groups]]` entry's trunks
    /// (those with an outbound proxy).
    pub fn outbound_trunks(&self, name: &str) -> Option<(Vec<&TrunkConfig>, GroupStrategy)> {
        let by_name = |n: &str| {
            self.trunks
                .iter()
                .find(|t| t.name == n && t.outbound_proxy.is_some())
        };
        if let Some(t) = by_name(name) {
            return Some((vec![t], GroupStrategy::Failover));
        }
        let group = self.trunk_groups.iter().find(|g| g.name == name)?;
        let trunks: Vec<&TrunkConfig> = group.trunks.iter().filter_map(|n| by_name(n)).collect();
        (!trunks.is_empty()).then_some((trunks, group.strategy))
    }
}

/// The order a group's trunks are tried in.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum GroupStrategy {
    /// Always in the listed order.
    #[default]
    Failover,
    /// Each call starts at the next trunk of the list, then goes round.
    RoundRobin,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Registrar URI, e.g. "sip:pbx.example.com:5060".
    pub registrar: String,
    /// Address of record, e.g. "sip:crossline@pbx.example.com".
    pub aor: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default = "default_expires")]
    pub expires: u32,
    /// Unset: the URI's `transport` parameter, else NAPTR/SRV, else UDP.
    #[serde(default)]
    pub transport: Option<TransportName>,
}

/// A password from the file or from the environment variable named by
/// `env`; an error names the key and never the value.
fn password(
    key: &str,
    value: &Option<Secret>,
    env: &Option<String>,
) -> Result<Option<Secret>, String> {
    match (value, env) {
        (Some(_), Some(_)) => Err(format!("set {key} or {key}_env, not both")),
        (Some(v), None) => Ok(Some(v.clone())),
        (None, Some(name)) => std::env::var(name)
            .map(|v| Some(Secret::from(v)))
            .map_err(|_| format!("environment variable {name:?} is not set")),
        (None, None) => Ok(None),
    }
}

impl TrunkConfig {
    /// The password inbound requests must answer challenges with.
    pub fn inbound_password(&self) -> Result<Option<Secret>, String> {
        password(
            "inbound_password",
            &self.inbound_password,
            &self.inbound_password_env,
        )
    }

    /// The password we answer the carrier's challenges with.
    pub fn password(&self) -> Result<Option<Secret>, String> {
        password("password", &self.password, &self.password_env)
    }

    /// `inbound_digest_algorithms`, the ones we know (check refuses others).
    pub fn digest_algorithms(&self) -> Vec<crate::sip::auth::Algorithm> {
        self.inbound_digest_algorithms
            .iter()
            .filter_map(|a| crate::sip::auth::Algorithm::parse(a).ok())
            .collect()
    }
}

impl RegistrationConfig {
    pub fn password(&self) -> Result<Option<Secret>, String> {
        password("password", &self.password, &self.password_env)
    }
}

fn default_expires() -> u32 {
    600
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Glob on the request-URI user (the DID): `*` any run, `?` one char.
    #[serde(default = "match_all")]
    pub did: String,
    /// Glob on the caller's user part.
    #[serde(default = "match_all")]
    pub caller: String,
    /// Only calls arriving on this trunk.
    #[serde(default)]
    pub trunk: Option<String>,
    /// The flow that runs the call; "" when `app` does.
    #[serde(default)]
    pub flow: String,
    /// A TwiML webhook app that runs the call instead of a flow.
    #[serde(default)]
    pub app: Option<crate::twiml::AppConfig>,
    /// Send 180 Ringing and wait this long before the flow answers.
    #[serde(default)]
    pub ring_ms: u64,
    /// During `ring_ms`, play early media instead of 180 Ringing: a 183
    /// Session Progress answers the caller's offer and RTP flows before
    /// the answer. "ringback" (the `[media] ringback_tone`, looped) or the
    /// name of a `[[prompts]]` entry (played once). Unset: 180 Ringing.
    #[serde(default)]
    pub early_media: Option<String>,
    /// The built-in `hold`/`demo` program's own wait music (a playlist);
    /// empty: `[media] hold_music`.
    #[serde(default)]
    pub hold_music: Vec<PathBuf>,
    /// Its own hold message (a WAV file or a prompt name); unset:
    /// `[media] hold_message`, and "" for music only.
    #[serde(default)]
    pub hold_message: Option<String>,
    /// Its own seconds between hold messages; unset: `[media]`.
    #[serde(default)]
    pub hold_repeat_secs: Option<u64>,
    /// Record the whole call from the answer (`[recording]`'s channels
    /// and format, after its announcement).
    #[serde(default)]
    pub record: bool,
}

impl RouteConfig {
    /// Every call to `flow`, with no options.
    pub fn to_flow(flow: &str) -> RouteConfig {
        RouteConfig {
            did: match_all(),
            caller: match_all(),
            trunk: None,
            flow: flow.into(),
            app: None,
            ring_ms: 0,
            early_media: None,
            hold_music: Vec::new(),
            hold_message: None,
            hold_repeat_secs: None,
            record: false,
        }
    }

    /// Whether the route sets a hold program of its own.
    pub fn has_own_hold(&self) -> bool {
        !self.hold_music.is_empty()
            || self.hold_message.is_some()
            || self.hold_repeat_secs.is_some()
    }
}

fn match_all() -> String {
    "*".into()
}
