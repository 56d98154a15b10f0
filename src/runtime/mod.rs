//! The gateway process: binds transports, runs the endpoint and call control
//! in one task, and drains on SIGTERM/SIGINT.
//!
//! Call control lives in the same task as the sans-IO endpoint, so neither
//! needs a lock; the audio loops run on their own threads.

mod callbacks;
mod flows;
mod routing;
mod transfer;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{CodecName, Config};
use crate::media::audio_loop::{HoldProgram, MediaEvent, Source};
use crate::media::engine::{MediaEngine, MediaSettings, Reservation};
use crate::sdp::{Codec, Direction, LocalMedia, Negotiated};
use crate::sip::endpoint::{
    CallId, EndCause, Endpoint, EndpointConfig, Event, InboundTrunk, IncomingCall,
    RegistrationSpec, RegistrationState,
};
use crate::sip::message::Uri;
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::{Inbound, TcpListenerConfig, Transports};
use crate::store::{CallRecord, SqliteStore, Store};
use crate::telemetry::CallTally;

pub use routing::Router;

/// What the demo flow plays before the hold program.
pub const DEMO_CLIP: &str = "welcome-en.wav";

/// What runs on a call: a built-in flow or one from the flows directory.
#[derive(Debug, Clone)]
enum BuiltinFlow {
    /// Welcome message, then the hold program.
    Demo,
    /// Straight into the hold program.
    Hold,
    /// A flow file, pinned for the whole call (reloads don't change it).
    File(std::sync::Arc<crate::flow::Flow>),
}

impl BuiltinFlow {
    fn from_name(name: &str, flows: &crate::flow::FlowSet) -> Option<BuiltinFlow> {
        match name {
            "demo" => Some(BuiltinFlow::Demo),
            "hold" => Some(BuiltinFlow::Hold),
            other => flows.get(other).map(BuiltinFlow::File),
        }
    }
}

/// A call's media state on the control side.
enum CallMedia {
    /// Port reserved, waiting for the late-offer answer in the ACK.
    Reserved(Reservation, BuiltinFlow),
    Streaming(BuiltinFlow),
}

struct Gateway {
    config: Config,
    endpoint: Endpoint,
    transports: Transports,
    media: MediaEngine,
    router: Router,
    calls: HashMap<CallId, CallMedia>,
    demo_clip: std::sync::Arc<[i16]>,
    hold: std::sync::Arc<HoldProgram>,
    session_ids: u64,
    /// Calls ringing before their flow answers (route `ring_ms`).
    ringing: Vec<(Instant, CallId, BuiltinFlow)>,
    /// What the call record needs, per live call.
    records: HashMap<CallId, CallRecord>,
    store: std::sync::Arc<dyn Store>,
    tally: CallTally,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    services: std::sync::Arc<crate::flow::interp::Services>,
    flow_requests: mpsc::UnboundedSender<(CallId, crate::flow::interp::CallRequest)>,
    flows: HashMap<CallId, flows::FlowTask>,
    transfers: transfer::Transfers,
    /// Blind transfers in progress: caller → REFER target.
    refers: HashMap<CallId, String>,
    /// REFERs asked for before the caller's ACK arrived.
    refers_waiting: HashMap<CallId, String>,
    /// Calls we placed for callbacks.
    callbacks: HashMap<CallId, callbacks::CallbackLeg>,
    /// Calls from our own WebRTC legs, by their web call id.
    web_legs: HashMap<CallId, String>,
}

/// Named prompts rendered by TTS at start and on reload.
type Prompts = HashMap<String, std::sync::Arc<[i16]>>;

async fn render_prompts(config: &Config) -> anyhow::Result<Prompts> {
    if config.prompts.is_empty() {
        return Ok(Prompts::new());
    }
    let provider = crate::tts::build_provider(&config.tts).context("[tts]")?;
    let cache = crate::tts::build_cache(&config.tts).context("[tts] cache_dir")?;
    let prompts = crate::tts::render_prompts(&cache, provider.as_ref(), &config.prompts)
        .await
        .map_err(|(name, e)| anyhow::anyhow!("rendering prompt {name:?}: {e}"))?;
    tracing::info!(count = prompts.len(), "prompts rendered");
    Ok(prompts)
}

/// The configured store: SQLite, or PostgreSQL (connected off the async
/// threads: the client blocks).
async fn open_store(
    config: &crate::config::StoreConfig,
) -> anyhow::Result<std::sync::Arc<dyn Store>> {
    Ok(match config.backend {
        crate::config::StoreBackend::Sqlite => {
            std::sync::Arc::new(SqliteStore::open(&config.sqlite_path).with_context(|| {
                format!("opening the SQLite store {}", config.sqlite_path.display())
            })?)
        }
        crate::config::StoreBackend::Postgres => {
            let url = config
                .postgres_url()
                .map_err(anyhow::Error::msg)?
                .context("[store] postgres_url is not set")?;
            let store = tokio::task::spawn_blocking(move || {
                crate::store::PostgresStore::open(url.expose())
            })
            .await
            .context("opening the PostgreSQL store")?
            // The error names the server, never the connection string.
            .context("opening the PostgreSQL store")?;
            tracing::info!("store: PostgreSQL");
            std::sync::Arc::new(store)
        }
    })
}

/// TLS for SIP: the listeners' certificate (when there are listeners) and
/// what outbound connections trust.
fn sip_tls(sip: &crate::config::SipConfig) -> anyhow::Result<crate::sip::transport::StreamTls> {
    let acceptor = match (&sip.tls_cert, &sip.tls_key) {
        (Some(cert), Some(key)) => Some(tokio_rustls::TlsAcceptor::from(
            crate::tls::server_config(cert, key).map_err(anyhow::Error::msg)?,
        )),
        _ => None,
    };
    let connector = tokio_rustls::TlsConnector::from(
        crate::tls::client_config(sip.tls_ca.as_deref()).map_err(anyhow::Error::msg)?,
    );
    Ok(crate::sip::transport::StreamTls {
        acceptor,
        connector,
    })
}

/// Run the gateway. `config_path` is re-read on SIGHUP.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let prompts = render_prompts(&config).await?;
    let store = open_store(&config.store).await?;
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http_listener = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .with_context(|| format!("binding HTTP on {}", config.http.listen))?;
    tracing::info!(addr = %http_listener.local_addr()?, "HTTP listening");
    let admin_listener = match config.http.admin_listen {
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the HTTP admin listener on {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "HTTP admin listening (metrics, console)");
            Some(l)
        }
        None => None,
    };
    let trusted_proxies: Vec<crate::net::Cidr> = config
        .http
        .trusted_proxies
        .iter()
        .filter_map(|c| crate::net::Cidr::parse(c).ok())
        .collect();
    let metrics = crate::telemetry::install();

    let (inbound_tx, mut inbound_rx) = mpsc::channel::<Inbound>(16_384);
    let stream_config = |addrs: &[std::net::SocketAddr]| TcpListenerConfig {
        addrs: addrs.to_vec(),
        max_connections: config.sip.max_tcp_connections,
        max_per_source: config.sip.max_tcp_connections_per_source,
        idle_timeout: (config.sip.tcp_idle_secs > 0)
            .then(|| Duration::from_secs(config.sip.tcp_idle_secs)),
        max_message_size: config.sip.max_message_size,
    };
    let transports = Transports::bind(
        &config.sip.udp,
        stream_config(&config.sip.tcp),
        (stream_config(&config.sip.tls), sip_tls(&config.sip)?),
        inbound_tx,
    )
    .await
    .context("binding SIP listeners")?;
    for a in transports.tls_addrs() {
        tracing::info!(%a, "SIP listening on TLS");
    }
    for a in transports.udp_addrs() {
        tracing::info!(%a, "SIP listening on UDP");
    }
    for a in transports.tcp_addrs() {
        tracing::info!(%a, "SIP listening on TCP");
    }

    let (mut media, mut media_events) = MediaEngine::start(MediaSettings {
        rtp_address: config.media.rtp_address,
        port_min: config.media.rtp_port_min,
        port_max: config.media.rtp_port_max,
        threads: config.media.audio_threads,
        audio_dir: config.media.audio_dir.clone(),
        rtp_timeout: Duration::from_secs(config.media.rtp_timeout_secs),
        realtime_priority: config.media.realtime_priority,
        pin_threads: config.media.pin_audio_threads,
        rx_poll_ticks: config.media.rtp_poll_ticks,
    })?;
    let demo_clip = media
        .clip(&PathBuf::from(DEMO_CLIP))
        .context("loading the demo flow's audio")?;
    let hold = std::sync::Arc::new(load_hold_program(&config, &prompts, &mut media)?);
    let (originate_tx, mut originate_rx) = mpsc::unbounded_channel();
    let services = std::sync::Arc::new(flows::services(
        &config,
        media.clip_cache(),
        store.clone(),
        originate_tx,
    )?);
    crate::flow::interp::install_resumer(&services);
    services.chat.start_cluster_tasks();
    let http_state = crate::http::HttpState {
        metrics,
        ready: ready.clone(),
        services: services.clone(),
        store: store.clone(),
        // Validated by Config::parse; an env var unset since is an error.
        admin_token: config.http.admin_token().map_err(anyhow::Error::msg)?,
        operator_token: config.http.operator_token().map_err(anyhow::Error::msg)?,
        cors_origins: config.http.cors_origins.clone(),
        chat_title: config.chat.title.clone(),
        console_sessions: Default::default(),
        guard: crate::http::guard::Guard::new(trusted_proxies.clone()),
    };
    let tls = match (&config.http.tls_cert, &config.http.tls_key) {
        (Some(cert), Some(key)) => {
            tracing::info!("HTTP listener speaks HTTPS");
            Some(crate::tls::server_config(cert, key).map_err(anyhow::Error::msg)?)
        }
        _ => None,
    };
    let limits = crate::http::ServeLimits {
        max_connections: config.http.max_connections,
        max_connections_per_source: config.http.max_connections_per_source,
        header_read_timeout: Duration::from_secs(config.http.header_read_timeout_secs),
        body_timeout: Duration::from_secs(config.http.body_timeout_secs),
        trusted_proxies: std::sync::Arc::new(trusted_proxies),
    };
    let public = crate::http::router(http_state.clone(), admin_listener.is_none());
    tokio::spawn(crate::http::serve(
        http_listener,
        public,
        tls.clone(),
        limits.clone(),
    ));
    if let Some(admin) = admin_listener {
        let everything = crate::http::router(http_state, true);
        tokio::spawn(crate::http::serve(admin, everything, tls, limits));
    }
    let (flow_requests, mut flow_rx) = mpsc::unbounded_channel();

    let now = Instant::now();
    let mut endpoint_cfg = endpoint_config(&config, &transports);
    // Web calls come in over loopback SIP: where trunks restrict who may
    // call, they get a trunk of their own, by a secret made at start.
    if let (false, Some(calls)) = (endpoint_cfg.inbound_trunks.is_empty(), &services.webcalls) {
        endpoint_cfg.inbound_trunks.push(calls.trunk());
    }
    let endpoint = Endpoint::new(endpoint_cfg, now);
    let mut gw = Gateway {
        router: Router::new(config.routes.clone()),
        config,
        endpoint,
        transports,
        media,
        calls: HashMap::new(),
        demo_clip,
        hold,
        session_ids: u64::from(rand::random::<u32>()),
        ringing: Vec::new(),
        records: HashMap::new(),
        store,
        tally: CallTally::default(),
        ready,
        services,
        flow_requests,
        flows: HashMap::new(),
        transfers: transfer::Transfers::default(),
        refers: HashMap::new(),
        refers_waiting: HashMap::new(),
        callbacks: HashMap::new(),
        web_legs: HashMap::new(),
    };
    gw.start_registrations(now).await;
    gw.flush();

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut drain_deadline: Option<Instant> = None;
    let mut hard_stop: Option<Instant> = None;
    let mut telemetry_tick = tokio::time::interval(Duration::from_secs(1));
    gw.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let redial = Duration::from_secs(gw.config.callbacks.redial_after_restart_secs);
    let redialled = gw.services.callbacks.resume_unfinished(redial);
    tracing::info!(callbacks_redialled = redialled, "crossline ready");

    loop {
        let next_ring = gw.ringing.iter().map(|(at, _, _)| *at).min();
        let wake = [
            gw.endpoint.poll_timeout(),
            drain_deadline,
            hard_stop,
            next_ring,
            gw.transfers.next_deadline(),
            gw.callbacks.values().filter_map(|c| c.give_up).min(),
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = inbound_rx.recv() => {
                let Some(msg) = msg else { break };
                let now = Instant::now();
                gw.inbound(now, msg);
                // Drain what else is queued before flushing: batches sends.
                for _ in 0..256 {
                    match inbound_rx.try_recv() {
                        Ok(msg) => gw.inbound(now, msg),
                        Err(_) => break,
                    }
                }
            }
            ev = media_events.recv() => {
                if let Some(ev) = ev {
                    gw.media_event(Instant::now(), ev);
                }
            }
            req = flow_rx.recv() => {
                if let Some((call, r)) = req {
                    gw.flow_request(Instant::now(), call, r);
                }
            }
            req = originate_rx.recv() => {
                if let Some(req) = req {
                    gw.originate(Instant::now(), req, drain_deadline.is_some() || hard_stop.is_some());
                }
            }
            _ = sleep => {}
            _ = telemetry_tick.tick() => gw.export_metrics(Instant::now(), drain_deadline.is_some() || hard_stop.is_some()),
            _ = sigterm.recv() => {
                if gw.begin_drain(&mut drain_deadline, &mut hard_stop) { break; }
            }
            _ = sigint.recv() => {
                if gw.begin_drain(&mut drain_deadline, &mut hard_stop) { break; }
            }
            _ = sighup.recv() => gw.reload(config_path.as_deref()).await,
        }
        let now = Instant::now();
        gw.endpoint.handle_timeout(now);
        gw.answer_due(now);
        gw.transfer_timeouts(now);
        gw.callback_timeouts(now);
        if drain_deadline.is_some_and(|d| now >= d) {
            drain_deadline = None;
            tracing::info!(
                calls = gw.endpoint.active_calls(),
                "grace period over: hanging up"
            );
            for call in gw.endpoint.call_ids() {
                let _ = gw.endpoint.hangup(now, call);
            }
            hard_stop = Some(now + Duration::from_secs(2));
        }
        gw.process_events(now);
        gw.flush();
        if let Some(stop) = hard_stop {
            let idle = gw.endpoint.active_calls() == 0 && gw.endpoint.transaction_count() == 0;
            if now >= stop || (idle && drain_deadline.is_none()) {
                break;
            }
        }
        if drain_deadline.is_some() && gw.endpoint.active_calls() == 0 {
            // Nothing left to wait for: unregister and leave soon.
            drain_deadline = None;
            hard_stop = Some(now + Duration::from_secs(2));
        }
    }
    gw.media.shutdown();
    if let Err(e) = gw.store.flush() {
        tracing::warn!(%e, "store: final flush failed");
    }
    tracing::info!("crossline stopped");
    Ok(())
}

fn endpoint_config(config: &Config, transports: &Transports) -> EndpointConfig {
    let inbound_trunks = config
        .trunks
        .iter()
        .filter(|t| !t.inbound_cidrs.is_empty() || t.inbound_username.is_some())
        .map(|t| InboundTrunk {
            name: t.name.clone(),
            cidrs: t
                .inbound_cidrs
                .iter()
                .filter_map(|c| crate::net::Cidr::parse(c).ok())
                .collect(),
            credentials: t
                .inbound_username
                .clone()
                .zip(t.inbound_password().ok().flatten()),
            max_calls: t.max_calls,
        })
        .collect();
    EndpointConfig {
        timers: TimerConfig {
            t1: Duration::from_millis(config.sip.t1_ms),
            t2: Duration::from_millis(config.sip.t2_ms),
            t4: Duration::from_millis(config.sip.t4_ms),
        },
        user_agent: config.sip.user_agent.clone(),
        udp_listeners: transports.udp_addrs(),
        tcp_listeners: transports.tcp_addrs(),
        tls_listeners: transports.tls_addrs(),
        advertised_address: config.sip.advertised_address,
        max_message_size: config.sip.max_message_size,
        drain_retry_after_secs: config.sip.drain_retry_after_secs,
        codecs: config
            .media
            .codecs
            .iter()
            .map(|c| match c {
                CodecName::Pcmu => Codec::Pcmu,
                CodecName::Pcma => Codec::Pcma,
            })
            .collect(),
        telephone_event_pt: config.media.telephone_event_payload_type,
        inbound_trunks,
        nonce_ttl: Duration::from_secs(config.sip.nonce_ttl_secs),
        admission: admission_config(config),
    }
}

/// Admission from `[sip]`, with the safe defaults filled in: never more
/// calls than the RTP port range holds, and when no trunk is declared, no
/// one source (outside `exempt_sources`) may take more than a tenth.
fn admission_config(config: &Config) -> crate::sip::endpoint::admission::AdmissionConfig {
    let sip = &config.sip;
    let media = &config.media;
    let first_even = media.rtp_port_min.saturating_add(media.rtp_port_min % 2);
    let port_pairs =
        (usize::from(media.rtp_port_max) + 1).saturating_sub(usize::from(first_even)) / 2;
    let max_calls = match sip.max_calls {
        0 => port_pairs,
        n => n.min(port_pairs),
    };
    let trunks_take_calls = config
        .trunks
        .iter()
        .any(|t| !t.inbound_cidrs.is_empty() || t.inbound_username.is_some());
    let max_calls_per_source = match sip.max_calls_per_source {
        0 if !trunks_take_calls => (max_calls / 10).max(1),
        n => n,
    };
    crate::sip::endpoint::admission::AdmissionConfig {
        rate_per_source: sip.rate_limit_per_source,
        burst_per_source: sip.rate_limit_burst,
        blocked_user_agents: sip.blocked_user_agents.clone(),
        max_calls,
        max_calls_per_source,
        exempt: sip
            .exempt_sources
            .iter()
            .filter_map(|c| crate::net::Cidr::parse(c).ok())
            .collect(),
        auth_failures_before_ban: sip.auth_failures_before_ban,
        auth_failure_window: Duration::from_secs(60),
        auth_ban: Duration::from_secs(sip.auth_ban_secs.max(1)),
        auth_ban_max: Duration::from_secs(3600),
    }
}

/// The default hold program from `[media]`: music playlist plus message.
fn load_hold_program(
    config: &Config,
    prompts: &Prompts,
    media: &mut MediaEngine,
) -> anyhow::Result<HoldProgram> {
    let m = &config.media;
    let mut music = Vec::new();
    for file in &m.hold_music {
        music.push(media.clip(file).context("loading [media] hold_music")?);
    }
    let message = match m.hold_message.trim() {
        "" => None,
        name if prompts.contains_key(name) => prompts.get(name).cloned(),
        file => Some(
            media
                .clip(&PathBuf::from(file))
                .context("loading [media] hold_message")?,
        ),
    };
    Ok(HoldProgram::new(
        music,
        message,
        Duration::from_secs(m.hold_repeat_secs),
        m.hold_duck_db,
    ))
}

/// Resolve a SIP URI's host to an address (A/AAAA only; no NAPTR/SRV yet).
async fn resolve(uri: &Uri) -> Option<SocketAddr> {
    let host = uri.host.trim_matches(|c| c == '[' || c == ']');
    let port = uri.port.unwrap_or(5060);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((host, port)).await.ok()?.next()
}

impl Gateway {
    async fn start_registrations(&mut self, now: Instant) {
        for (i, reg) in self.config.registrations.clone().iter().enumerate() {
            let (Ok(registrar), Ok(aor)) = (Uri::parse(&reg.registrar), Uri::parse(&reg.aor))
            else {
                continue;
            };
            let Some(destination) = resolve(&registrar).await else {
                tracing::error!(index = i, registrar = %reg.registrar, "cannot resolve registrar");
                continue;
            };
            let spec = RegistrationSpec {
                registrar,
                destination,
                transport: reg.transport.transport(),
                aor,
                credentials: reg.username.clone().zip(reg.password().ok().flatten()),
                expires: reg.expires,
            };
            if let Err(e) = self.endpoint.add_registration(now, spec) {
                tracing::error!(index = i, %e, "cannot register");
            }
        }
    }

    fn inbound(&mut self, now: Instant, msg: Inbound) {
        match msg {
            Inbound::Datagram {
                local,
                remote,
                data,
            } => self.endpoint.handle_datagram(now, local, remote, &data),
            Inbound::Stream {
                transport,
                conn,
                local,
                remote,
                data,
            } => {
                if !self
                    .endpoint
                    .handle_stream(now, transport, conn, local, remote, &data)
                {
                    tracing::debug!(conn, %remote, "closing a stream after a framing error");
                    self.transports.close(conn);
                }
            }
            Inbound::Closed { conn } => self.endpoint.connection_closed(conn),
        }
    }

    fn flush(&mut self) {
        while let Some(t) = self.endpoint.poll_transmit() {
            self.transports.send(t);
        }
    }

    /// Returns true when the process should stop right away.
    fn begin_drain(
        &mut self,
        deadline: &mut Option<Instant>,
        hard_stop: &mut Option<Instant>,
    ) -> bool {
        if deadline.is_some() || hard_stop.is_some() {
            tracing::warn!("second signal: stopping now");
            return true;
        }
        let now = Instant::now();
        let grace = Duration::from_secs(self.config.sip.shutdown_grace_secs);
        tracing::info!(
            calls = self.endpoint.active_calls(),
            ?grace,
            "draining: new calls get 503"
        );
        self.ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.endpoint.set_draining(true);
        self.endpoint.unregister_all(now);
        *deadline = Some(now + grace);
        false
    }

    fn local_media(&mut self, port: u16) -> LocalMedia {
        self.session_ids = self.session_ids.wrapping_add(1);
        let cfg = self.endpoint.config();
        LocalMedia {
            address: self.media.rtp_address(),
            rtp_port: port,
            session_id: self.session_ids,
            session_version: 1,
            codecs: cfg.codecs.clone(),
            telephone_event_pt: cfg.telephone_event_pt,
            ptime_ms: 20,
        }
    }

    fn process_events(&mut self, now: Instant) {
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                Event::IncomingCall(inc) => self.incoming(now, inc),
                Event::CallEstablished { call, media } if self.transfers.is_agent_leg(call) => {
                    self.agent_answered(now, call, media)
                }
                Event::CallEnded { call, cause } if self.transfers.is_agent_leg(call) => {
                    tracing::info!(%call, ?cause, "agent leg ended");
                    self.finish_record(call, &cause);
                    self.agent_ended(now, call, &cause);
                }
                Event::CallEstablished { call, media } if self.callbacks.contains_key(&call) => {
                    self.callback_answered(now, call, media)
                }
                Event::CallEstablished { call, media } => {
                    self.refer_when_confirmed(now, call);
                    if let Some(CallMedia::Reserved(..)) = self.calls.get(&call) {
                        if let (Some(CallMedia::Reserved(r, flow)), Some(m)) =
                            (self.calls.remove(&call), media)
                        {
                            self.start_media(now, call, flow, r, &m);
                        }
                    }
                }
                Event::MediaChanged { call, media } => self.media_changed(call, &media),
                Event::CallEnded { call, cause } => {
                    tracing::info!(%call, ?cause, "call ended");
                    self.callback_ended(call, &cause);
                    self.web_legs.remove(&call);
                    self.finish_record(call, &cause);
                    self.end_flow(call);
                    self.caller_ended(now, call);
                    self.refers.remove(&call);
                    self.refers_waiting.remove(&call);
                    self.ringing.retain(|(_, c, _)| *c != call);
                    match self.calls.remove(&call) {
                        Some(CallMedia::Streaming(_)) => self.media.stop_stream(call.0),
                        Some(CallMedia::Reserved(r, _)) => self.media.cancel(r),
                        None => {}
                    }
                }
                Event::Dtmf { call, digit, .. } => {
                    self.flow_signal(call, crate::flow::interp::CallSignal::Dtmf(digit));
                    // Digits may be a PIN or a card number: never logged.
                    tracing::debug!(%call, "DTMF (INFO)");
                }
                Event::Progress { call, status } => self.callback_progress(call, status),
                Event::ReferAnswered { call, status } => {
                    self.refer_status(now, call, status, false)
                }
                Event::ReferProgress { call, status } => self.refer_status(now, call, status, true),
                Event::Registration { index, state } => {
                    tracing::info!(index, ?state, "registration state");
                }
            }
        }
    }

    fn incoming(&mut self, now: Instant, inc: IncomingCall) {
        let route = self
            .router
            .route(&inc.did, &inc.caller, inc.trunk.as_deref())
            .map(|r| (r.flow.clone(), r.ring_ms));
        tracing::info!(call = %inc.call, did = %crate::mask::phone(&inc.did), caller = %crate::mask::phone(&inc.caller), route = ?route, "incoming call");
        if let Some(web) = &inc.web_call {
            self.web_legs.insert(inc.call, web.clone());
        }
        self.records.insert(
            inc.call,
            CallRecord::starting(
                inc.call_id.clone(),
                "inbound",
                inc.did.clone(),
                inc.caller.clone(),
                inc.trunk.clone(),
                route.as_ref().map(|r| r.0.clone()),
            ),
        );
        let Some((flow, ring_ms)) = route else {
            let _ = self.endpoint.reject(now, inc.call, 404);
            return;
        };
        let Some(flow) = BuiltinFlow::from_name(&flow, &self.config.flow_set) else {
            let _ = self.endpoint.reject(now, inc.call, 404);
            return;
        };
        if ring_ms > 0 {
            let _ = self.endpoint.ring(now, inc.call);
            self.ringing.push((
                now.checked_add(Duration::from_millis(ring_ms))
                    .unwrap_or(now),
                inc.call,
                flow,
            ));
            return;
        }
        self.answer_builtin(now, inc.call, flow);
    }

    /// Answer calls whose ringing time is up (unless they ended meanwhile).
    fn answer_due(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.ringing.retain(|(at, call, flow)| {
            if *at <= now {
                due.push((*call, flow.clone()));
                false
            } else {
                true
            }
        });
        for (call, flow) in due {
            self.answer_builtin(now, call, flow);
        }
    }

    fn answer_builtin(&mut self, now: Instant, call: CallId, flow: BuiltinFlow) {
        let reservation = match self.media.reserve() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%e, "no RTP port: rejecting");
                let _ = self.endpoint.reject(now, call, 503);
                return;
            }
        };
        let local = self.local_media(reservation.port);
        let answered = self.endpoint.answer(now, call, local);
        if answered.is_ok() {
            if let Some(r) = self.records.get_mut(&call) {
                r.answered_at = Some(std::time::SystemTime::now());
            }
        }
        match answered {
            Ok(Some(media)) => self.start_media(now, call, flow, reservation, &media),
            Ok(None) => {
                self.calls
                    .insert(call, CallMedia::Reserved(reservation, flow));
            }
            Err(e) => {
                tracing::info!(%call, %e, "not answered");
                self.media.cancel(reservation);
            }
        }
    }

    fn start_media(
        &mut self,
        now: Instant,
        call: CallId,
        flow: BuiltinFlow,
        r: Reservation,
        media: &Negotiated,
    ) {
        let source = match flow {
            BuiltinFlow::Demo => Source::Clip {
                samples: self.demo_clip.clone(),
                looped: false,
            },
            BuiltinFlow::Hold => Source::Hold(self.hold.clone()),
            BuiltinFlow::File(_) => Source::Silence,
        };
        let file_flow = match &flow {
            BuiltinFlow::File(f) => Some(f.clone()),
            _ => None,
        };
        let shared = matches!(&source, Source::Hold(h) if std::sync::Arc::ptr_eq(h, &self.hold));
        match self.media.start_stream(call.0, r, media, source) {
            Ok(()) => {
                if shared {
                    if let (Some(web), Some(calls)) =
                        (self.web_legs.get(&call), &self.services.webcalls)
                    {
                        calls.shared_hold(web, Some(self.hold.clone()));
                    }
                }
                self.calls.insert(call, CallMedia::Streaming(flow));
                if let Some(f) = file_flow {
                    let vars = self.flow_vars(call, &f);
                    self.start_flow(call, f, vars);
                }
                self.media_changed(call, media);
            }
            Err(e) => {
                tracing::warn!(%call, %e, "media failed: hanging up");
                let _ = self.endpoint.hangup(now, call);
            }
        }
    }

    /// Switch a call's audio. A web call hearing the shared wait music is
    /// told so: its browser then gets the one Opus encode all such calls
    /// share, instead of its own.
    pub(super) fn play(&mut self, call: CallId, source: Source, generation: u32) {
        if let (Some(web), Some(calls)) = (self.web_legs.get(&call), &self.services.webcalls) {
            let shared = match &source {
                Source::Hold(h) if std::sync::Arc::ptr_eq(h, &self.hold) => Some(h.clone()),
                _ => None,
            };
            calls.shared_hold(web, shared);
        }
        self.media.set_source_tagged(call.0, source, generation);
    }

    /// A web call stops hearing the shared wait music (bridged, say).
    pub(super) fn leave_shared_hold(&self, call: CallId) {
        if let (Some(web), Some(calls)) = (self.web_legs.get(&call), &self.services.webcalls) {
            calls.shared_hold(web, None);
        }
    }

    fn media_changed(&mut self, call: CallId, media: &Negotiated) {
        if !matches!(self.calls.get(&call), Some(CallMedia::Streaming(_))) {
            return;
        }
        let sending = matches!(
            media.local_direction,
            Direction::SendRecv | Direction::SendOnly
        ) && !media.remote_rtp.ip().is_unspecified();
        self.media.set_sending(call.0, sending);
        if sending {
            self.media.set_remote(call.0, media.remote_rtp);
        }
    }

    /// SIGHUP: re-read the config, re-render prompts, rebuild the hold
    /// program and routes. Calls in progress keep what they started with.
    /// A bad file changes nothing.
    async fn reload(&mut self, path: Option<&std::path::Path>) {
        let Some(path) = path else {
            tracing::info!("SIGHUP: running on embedded defaults, nothing to reload");
            return;
        };
        let config = match Config::load(path) {
            Ok(c) => c,
            Err(errors) => {
                tracing::error!("reload refused, config has errors:\n{errors}");
                return;
            }
        };
        let prompts = match render_prompts(&config).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("reload refused: {e:#}");
                return;
            }
        };
        match load_hold_program(&config, &prompts, &mut self.media) {
            Ok(hold) => self.hold = std::sync::Arc::new(hold),
            Err(e) => {
                tracing::error!("reload refused: {e:#}");
                return;
            }
        }
        self.router = Router::new(config.routes.clone());
        tracing::info!(file = %path.display(), "config reloaded");
        // Listeners, media ports and the store keep their start-up values.
        self.config.routes = config.routes;
        *self
            .services
            .flow_set
            .write()
            .unwrap_or_else(|p| p.into_inner()) = std::sync::Arc::new(config.flow_set.clone());
        self.config.flow_set = config.flow_set;
        self.config.prompts = config.prompts;
        self.config.tts = config.tts;
        self.config.media.hold_music = config.media.hold_music;
        self.config.media.hold_message = config.media.hold_message;
        self.config.media.hold_repeat_secs = config.media.hold_repeat_secs;
        self.config.media.hold_duck_db = config.media.hold_duck_db;
    }

    /// Variables a flow starts with.
    fn flow_vars(&self, call: CallId, flow: &crate::flow::Flow) -> HashMap<String, String> {
        let mut vars = HashMap::new();
        if let Some(r) = self.records.get(&call) {
            vars.insert("caller".into(), r.caller.clone());
            vars.insert("did".into(), r.did.clone());
            vars.insert("callee".into(), r.did.clone());
            vars.insert("call_id".into(), r.call_id.clone());
            vars.insert("trunk".into(), r.trunk.clone().unwrap_or_default());
        }
        vars.insert("flow".into(), flow.name.clone());
        if let Some(leg) = self.callbacks.get(&call) {
            vars.extend(leg.vars.clone());
        }
        vars
    }

    fn finish_record(&mut self, call: CallId, cause: &EndCause) {
        let (outcome, status) = match cause {
            EndCause::RemoteBye => ("remote_bye", None),
            EndCause::LocalHangup => ("local_hangup", None),
            EndCause::Cancelled => ("cancelled", Some(487)),
            EndCause::Rejected { status, .. } => ("rejected", Some(*status)),
            EndCause::Timeout => ("timeout", Some(408)),
            EndCause::AckTimeout => ("ack_timeout", None),
            EndCause::Shutdown => ("shutdown", None),
        };
        self.tally.ended(outcome);
        if let Some(mut r) = self.records.remove(&call) {
            r.ended_at = std::time::SystemTime::now();
            r.outcome = outcome.to_string();
            r.sip_status = status;
            if let Err(e) = self.store.record_call(r) {
                tracing::warn!(%e, "store: cannot queue call record");
            }
        }
    }

    fn export_metrics(&mut self, now: Instant, draining: bool) {
        let registrations: Vec<(String, bool)> = self
            .config
            .registrations
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let up = matches!(
                    self.endpoint.registration_state(i),
                    Some(RegistrationState::Registered { .. })
                );
                (r.registrar.clone(), up)
            })
            .collect();
        let audio = self.media.stats();
        let snapshot = crate::telemetry::Snapshot {
            sip: &self.endpoint.counters,
            transport: &self.transports.stats,
            audio: &audio,
            active_calls: self.endpoint.active_calls(),
            free_rtp_ports: self.media.free_ports(),
            active_flows: self.flows.len(),
            draining,
            registrations: &registrations,
        };
        crate::telemetry::export(now, &snapshot, &mut self.tally);
    }

    fn media_event(&mut self, now: Instant, ev: MediaEvent) {
        match ev {
            MediaEvent::RtpTimeout(id) => {
                tracing::info!(call = id, "RTP timeout: hanging up");
                let _ = self.endpoint.hangup(now, CallId(id));
            }
            MediaEvent::Dtmf(id, digit) => {
                self.flow_signal(CallId(id), crate::flow::interp::CallSignal::Dtmf(digit));
                // Digits can be PINs: only debug logs carry them.
                tracing::info!(call = id, "DTMF received (RFC 4733)");
                tracing::debug!(call = id, "DTMF digit");
            }
            MediaEvent::SourceFinished(id, generation) => {
                self.flow_signal(
                    CallId(id),
                    crate::flow::interp::CallSignal::PlayFinished(generation),
                );
                // The demo's welcome is done: on to the hold program.
                if let Some(CallMedia::Streaming(BuiltinFlow::Demo)) = self.calls.get(&CallId(id)) {
                    self.play(CallId(id), Source::Hold(self.hold.clone()), 0);
                }
            }
        }
    }
}

impl std::fmt::Debug for CallMedia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallMedia::Reserved(r, flow) => write!(f, "Reserved({}, {flow:?})", r.port),
            CallMedia::Streaming(flow) => write!(f, "Streaming({flow:?})"),
        }
    }
}
