//! The gateway process: binds transports, drives call control
//! ([`crate::call::CallControl`], sans-IO) in one task with tokio, and
//! drains on SIGTERM/SIGINT.
//!
//! This task only moves bytes and commands: SIP datagrams in, transmits
//! out, media commands to the audio loops (their own threads), flow tasks
//! started and signalled, records stored. Reloads render on a task of
//! their own and are swapped in when ready.

mod flows;
mod quiet;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::call::{
    CallControl, EarlyAudio, Effect, HoldPrograms, MediaCommand, PortSource, Settings,
};
use crate::config::{CodecName, Config};
use crate::media::audio_loop::{HoldProgram, MediaEvent};
use crate::media::engine::{MediaEngine, MediaSettings, PortReserver, Reservation};
use crate::sdp::Codec;
use crate::sip::endpoint::{EndpointConfig, InboundTrunk, RegistrationState};
use crate::sip::transaction::TimerConfig;
use crate::sip::transport::{Inbound, TcpListenerConfig, Transports};
use crate::store::{SqliteStore, Store};

pub use crate::call::Router;

/// What the demo flow plays before the hold program.
pub const DEMO_CLIP: &str = "welcome-en.wav";

impl PortSource for PortReserver {
    type Reservation = Reservation;
    fn reserve(&mut self) -> Result<(u16, Reservation), String> {
        let r = PortReserver::reserve(self).map_err(|e| e.to_string())?;
        Ok((r.port, r))
    }
}

type Control = CallControl<PortReserver, flows::FlowTask>;

/// What a reload made, ready to swap in.
struct Reloaded {
    config: Config,
    holds: HoldPrograms,
}

struct Gateway {
    /// This node among those sharing the store (kept with registrations).
    node: crate::registrar::NodeAddress,
    cc: Control,
    transports: Transports,
    media: MediaEngine,
    store: Arc<dyn Store>,
    ready: Arc<std::sync::atomic::AtomicBool>,
    services: Arc<crate::flow::interp::Services>,
    flow_requests: mpsc::UnboundedSender<(
        crate::sip::endpoint::CallId,
        crate::flow::interp::CallRequest,
    )>,
    /// A reload in progress (one at a time).
    reloading: bool,
    /// When a burst of calls is over, so the store can give back its cache.
    after_burst: quiet::AfterBurst,
    /// Refuses new calls while the audio loops lack headroom.
    overload: crate::media::overload::Overload,
    /// Trunk health as `GET /v1/trunks` shows it, and the version of
    /// call control's that it shows.
    trunks: crate::call::TrunkBoard,
    trunks_shown: Option<u64>,
    /// RFC 3263 lookups for call control, each on a task of its own; the
    /// answers come back on `resolved`.
    resolver: crate::dns::Resolver,
    resolved: mpsc::UnboundedSender<Resolved>,
}

/// A destination call control asked for, resolved (or not).
type Resolved = (
    crate::call::ResolveId,
    crate::dns::Query,
    Result<crate::dns::Resolution, crate::dns::ResolveError>,
);

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

/// The configured store: SQLite, or PostgreSQL.
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
            // The error names the server, never the connection string.
            let store = crate::store::PostgresStore::open(url.expose())
                .await
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
    let trusted_proxies = cidrs(&config.http.trusted_proxies);
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
        raw_send: config.media.raw_send,
        loop_max_sleep: (config.media.loop_max_sleep_us > 0)
            .then(|| Duration::from_micros(u64::from(config.media.loop_max_sleep_us))),
        random_seed: config.sip.random_seed,
    })?;
    let demo_clip = media
        .clip(&PathBuf::from(DEMO_CLIP))
        .context("loading the demo flow's audio")?;
    let holds = load_hold_programs(&config, &prompts, |name| {
        media.clip(name).map_err(anyhow::Error::from)
    })?;
    let record_announcement = match config.recording.announcement.as_deref() {
        None => None,
        Some(name) => match prompts.get(name) {
            Some(p) => Some(p.clone()),
            None => Some(
                media
                    .clip(Path::new(name))
                    .context("loading [recording] announcement")?,
            ),
        },
    };
    let (recordings, mut call_commands) = crate::recording::Recordings::start(
        &config.recording,
        record_announcement.clone(),
        store.clone(),
        reqwest::Client::builder()
            .build()
            .context("HTTP client for the recording webhook")?,
    )?;
    let (originate_tx, mut originate_rx) = mpsc::unbounded_channel();
    let services = std::sync::Arc::new(flows::services(
        &config,
        media.clip_cache(),
        store.clone(),
        originate_tx,
        recordings,
    )?);
    crate::flow::interp::install_resumer(&services);
    services.queues.spawn_timer();
    services.chat.start_cluster_tasks();
    services.breakouts.start_cluster_tasks();
    let trunks = crate::call::TrunkBoard::default();
    let (registrar_tx, mut registrar_rx) = mpsc::unbounded_channel();
    let users = crate::registrar::cluster::Directory::new(&config, store.clone(), registrar_tx);
    let node = this_node(&config, &transports);
    let http_state = crate::http::HttpState {
        users: users.clone(),
        trunks: trunks.clone(),
        metrics,
        ready: ready.clone(),
        services: services.clone(),
        store: store.clone(),
        // Validated by Config::parse; an env var unset since is an error.
        admin_token: config.http.admin_token().map_err(anyhow::Error::msg)?,
        operator_token: config.http.operator_token().map_err(anyhow::Error::msg)?,
        viewer_token: config.http.viewer_token().map_err(anyhow::Error::msg)?,
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

    if config.sip.min_se_secs < 90 {
        tracing::warn!(
            min_se_secs = config.sip.min_se_secs,
            "[sip] min_se_secs is below RFC 4028's floor of 90 s: for tests only"
        );
    }
    let now = Instant::now();
    let mut endpoint_cfg = endpoint_config(&config, &transports);
    // Web calls come in over loopback SIP: where trunks restrict who may
    // call, they get a trunk of their own, by a secret made at start.
    if let (false, Some(calls)) = (endpoint_cfg.inbound_trunks.is_empty(), &services.webcalls) {
        endpoint_cfg.inbound_trunks.push(calls.trunk());
    }
    let mut endpoint = crate::sip::endpoint::Endpoint::new(endpoint_cfg, now);
    if config.registrar.enabled {
        restore_registrations(&mut endpoint, store.as_ref(), &config, &transports).await;
    }
    let settings = Settings {
        demo_clip,
        holds,
        seed: config
            .sip
            .random_seed
            .unwrap_or_else(|| u64::from(rand::random::<u32>())),
        record_announcement,
    };
    let resolver =
        crate::dns::Resolver::new(&crate::dns::ResolverSettings::from_config(&config.sip));
    let (resolved_tx, mut resolved_rx) = mpsc::unbounded_channel::<Resolved>();
    let overload = crate::media::overload::Overload::new(config.media.overload_threshold_percent);
    let cc = CallControl::new(config, endpoint, media.reserver(), settings);
    let mut gw = Gateway {
        node,
        trunks,
        trunks_shown: None,
        resolver,
        resolved: resolved_tx,
        cc,
        transports,
        media,
        store,
        ready,
        services,
        flow_requests,
        reloading: false,
        after_burst: quiet::AfterBurst::default(),
        overload,
    };
    // The numbering-plan metadata loads on first use (hundreds of ms in a
    // debug build): load it now, not on the signalling path of the first
    // call.
    tokio::task::spawn_blocking(crate::chat::input::load_numbering_plans)
        .await
        .context("loading the numbering plans")?;
    if gw.cc.config().registrar.enabled {
        // Users and other nodes' registrations in before the first
        // REGISTER is read; then their news as it comes.
        users.reload().await;
        while let Ok(news) = registrar_rx.try_recv() {
            gw.cc
                .registrar_news(Instant::now(), std::time::SystemTime::now(), news);
        }
        users.spawn();
    }
    gw.cc.start_registrations(Instant::now());
    gw.cc.start_trunk_probes(Instant::now());
    gw.flush(Instant::now());

    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let (reloaded_tx, mut reloaded_rx) = mpsc::channel::<Option<Reloaded>>(1);
    let mut telemetry_tick = tokio::time::interval(Duration::from_secs(1));
    let mut headroom_tick = tokio::time::interval(crate::media::overload::SAMPLE_EVERY);
    headroom_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    gw.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    let redial = Duration::from_secs(gw.cc.config().callbacks.redial_after_restart_secs);
    let redialled = gw.services.callbacks.resume_unfinished(redial).await;
    let virtual_hold = gw.services.queues.restore().await;
    tracing::info!(
        callbacks_redialled = redialled,
        virtual_hold_restored = virtual_hold,
        "crossline ready"
    );

    loop {
        let wake = gw.cc.poll_timeout();
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
            ev = media_events.recv() => match ev {
                // A stream moving to its bridge partner's loop: media's own.
                Some(MediaEvent::Detached(moving)) => {
                    if let Some(lost) = gw.media.adopt(moving) {
                        gw.cc.media_failed(Instant::now(), crate::sip::endpoint::CallId(lost));
                    }
                }
                Some(ev) => gw.cc.handle_media_event(Instant::now(), ev),
                None => {}
            },
            req = flow_rx.recv() => {
                if let Some((call, r)) = req {
                    gw.cc.handle_flow_request(Instant::now(), call, r);
                }
            }
            req = originate_rx.recv() => {
                if let Some(req) = req {
                    gw.cc.originate(Instant::now(), req);
                }
            }
            cmd = call_commands.recv() => {
                if let Some(cmd) = cmd {
                    gw.cc.handle_command(Instant::now(), cmd);
                }
            }
            news = registrar_rx.recv() => {
                if let Some(news) = news {
                    gw.cc.registrar_news(Instant::now(), std::time::SystemTime::now(), news);
                }
            }
            done = resolved_rx.recv() => {
                if let Some(done) = done {
                    gw.resolved(Instant::now(), done);
                }
            }
            _ = sleep => {}
            _ = telemetry_tick.tick() => {
                let now = Instant::now();
                gw.export_metrics(now);
                if gw.after_burst.over(now, gw.cc.endpoint().active_calls()) {
                    gw.store.release_memory();
                }
            }
            _ = headroom_tick.tick() => {
                let overloaded = gw.overload.observe(Instant::now(), &gw.media.loads());
                gw.cc.set_overloaded(overloaded);
            }
            _ = sigterm.recv() => {
                if gw.begin_drain() { break; }
            }
            _ = sigint.recv() => {
                if gw.begin_drain() { break; }
            }
            _ = sighup.recv() => gw.start_reload(config_path.as_deref(), reloaded_tx.clone()),
            done = reloaded_rx.recv() => {
                gw.reloading = false;
                if let Some(Some(r)) = done {
                    gw.apply_reload(r);
                }
            }
        }
        let now = Instant::now();
        gw.cc.handle_timeout(now);
        gw.flush(now);
        if gw.cc.finished(now) {
            break;
        }
    }
    gw.media.shutdown();
    // The loops have let go of every recording: let the writer finish them.
    gw.services
        .recordings
        .wait_idle(Duration::from_secs(5))
        .await;
    if let Err(e) = gw.store.flush().await {
        tracing::warn!(%e, "store: final flush failed");
    }
    tracing::info!("crossline stopped");
    Ok(())
}

/// This node's id, and the SIP address other nodes hand it calls on: its
/// first UDP listener (a wildcard one as `[sip] advertised_address`).
fn this_node(config: &Config, transports: &Transports) -> crate::registrar::NodeAddress {
    let sip = transports.udp_addrs().first().and_then(|a| {
        if !a.ip().is_unspecified() {
            return Some(*a);
        }
        config
            .sip
            .advertised_address
            .map(|ip| std::net::SocketAddr::new(ip, a.port()))
    });
    crate::registrar::NodeAddress {
        id: config.store.node_id(config.http.listen),
        sip,
    }
}

/// This node's registrations from before a restart, back in the location
/// service (lapsed ones are not). Over TCP the phone reconnects: until it
/// does, a call opens a connection to where it registered from.
async fn restore_registrations(
    endpoint: &mut crate::sip::endpoint::Endpoint,
    store: &dyn Store,
    config: &Config,
    transports: &Transports,
) {
    let node = config.store.node_id(config.http.listen);
    let records = match store.registrations().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%e, "store: cannot read registrations back");
            return;
        }
    };
    let (now, wall) = (Instant::now(), std::time::SystemTime::now());
    let fallback = transports
        .udp_addrs()
        .first()
        .copied()
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 5060)));
    let mut restored = 0;
    for r in records.iter().filter(|r| r.node == node) {
        if let Some(b) = crate::registrar::binding_of(r, now, wall, fallback) {
            endpoint.restore_binding(&r.user, b);
            restored += 1;
        }
    }
    tracing::info!(restored, "registrations read back from the store");
}

fn endpoint_config(config: &Config, transports: &Transports) -> EndpointConfig {
    let inbound_trunks = config
        .trunks
        .iter()
        .filter(|t| !t.inbound_cidrs.is_empty() || t.inbound_username.is_some())
        .map(|t| InboundTrunk {
            name: t.name.clone(),
            cidrs: cidrs(&t.inbound_cidrs),
            credentials: t
                .inbound_username
                .clone()
                .zip(t.inbound_password().ok().flatten()),
            max_calls: t.max_calls,
            digest_algorithms: t.digest_algorithms(),
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
        overload_retry_after_secs: config.media.overload_retry_after_secs,
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
        session_timer: crate::sip::session_timer::SessionTimerConfig {
            session_expires: config.sip.session_expires_secs,
            min_se: config.sip.min_se_secs,
        },
        random_seed: config.sip.random_seed,
        registrar: crate::registrar::endpoint_registrar(config),
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
        exempt: cidrs(&sip.exempt_sources),
        trusted_proxies: cidrs(&sip.trusted_proxies),
        auth_failures_before_ban: sip.auth_failures_before_ban,
        auth_failure_window: Duration::from_secs(60),
        auth_ban: Duration::from_secs(sip.auth_ban_secs.max(1)),
        auth_ban_max: Duration::from_secs(3600),
    }
}

/// CIDRs the config check has already accepted.
fn cidrs(list: &[String]) -> Vec<crate::net::Cidr> {
    list.iter()
        .filter_map(|c| crate::net::Cidr::parse(c).ok())
        .collect()
}

/// The hold programs: `[media]`'s (music playlist plus message), and one
/// for each route that sets its own parts (the rest from `[media]`).
/// `clip` decodes a file (relative names in the audio directory).
fn load_hold_programs(
    config: &Config,
    prompts: &Prompts,
    mut clip: impl FnMut(&Path) -> anyhow::Result<Arc<[i16]>>,
) -> anyhow::Result<HoldPrograms> {
    let m = &config.media;
    let mut load = |music: &[PathBuf], message: &str, repeat_secs: u64, key: &str| {
        let mut clips = Vec::new();
        for file in music {
            clips.push(clip(file).with_context(|| format!("loading {key} hold_music"))?);
        }
        let message = match message.trim() {
            "" => None,
            name if prompts.contains_key(name) => prompts.get(name).cloned(),
            file => {
                Some(clip(Path::new(file)).with_context(|| format!("loading {key} hold_message"))?)
            }
        };
        anyhow::Ok(Arc::new(HoldProgram::new(
            clips,
            message,
            Duration::from_secs(repeat_secs),
            m.hold_duck_db,
        )))
    };
    let default = load(
        &m.hold_music,
        &m.hold_message,
        m.hold_repeat_secs,
        "[media]",
    )?;
    let mut routes = Vec::new();
    for (i, r) in config.routes.iter().enumerate() {
        routes.push(if r.has_own_hold() {
            let music = if r.hold_music.is_empty() {
                &m.hold_music
            } else {
                &r.hold_music
            };
            Some(load(
                music,
                r.hold_message.as_deref().unwrap_or(&m.hold_message),
                r.hold_repeat_secs.unwrap_or(m.hold_repeat_secs),
                &format!("routes[{i}]"),
            )?)
        } else {
            None
        });
    }
    let ringback = crate::media::tones::Ringback::from_name(&m.ringback_tone)
        .map(crate::media::tones::ringback);
    let early_media = config
        .routes
        .iter()
        .map(|r| match r.early_media.as_deref() {
            None => None,
            Some("ringback") => ringback.clone().map(|samples| EarlyAudio {
                samples,
                looped: true,
            }),
            Some(prompt) => prompts.get(prompt).map(|samples| EarlyAudio {
                samples: samples.clone(),
                looped: false,
            }),
        })
        .collect();
    Ok(HoldPrograms {
        default,
        routes,
        early_media,
    })
}

impl Gateway {
    /// Look up a destination for call control, off this task.
    fn resolve(&self, req: crate::call::ResolveRequest) {
        let resolver = self.resolver.clone();
        let done = self.resolved.clone();
        tokio::spawn(async move {
            let result = resolver.resolve(&req.query).await;
            let _ = done.send((req.id, req.query, result));
        });
    }

    /// A lookup finished: TLS targets learn the name their certificate
    /// must carry (the URI's domain), then call control goes on.
    fn resolved(&mut self, now: Instant, (id, query, result): Resolved) {
        match &result {
            Ok(res) => {
                tracing::debug!(host = %query.host, candidates = ?res.candidates, "resolved");
                for c in &res.candidates {
                    if c.transport == crate::sip::endpoint::Transport::Tls {
                        for ip in &c.addrs {
                            self.transports.set_server_name(
                                std::net::SocketAddr::new(*ip, c.port),
                                &query.host,
                            );
                        }
                    }
                }
            }
            Err(e) => tracing::debug!(host = %query.host, %e, "not resolved"),
        }
        self.cc.handle_resolved(now, id, result);
    }

    fn inbound(&mut self, now: Instant, msg: Inbound) {
        match msg {
            Inbound::Datagram {
                local,
                remote,
                data,
            } => self.cc.handle_datagram(now, local, remote, &data),
            Inbound::Stream {
                transport,
                conn,
                local,
                remote,
                data,
            } => {
                if !self
                    .cc
                    .handle_stream(now, transport, conn, local, remote, &data)
                {
                    tracing::debug!(conn, %remote, "closing a stream after a framing error");
                    self.transports.close(conn);
                }
            }
            Inbound::Closed { conn } => self.cc.connection_closed(now, conn),
            Inbound::Unreachable { transport, remote } => {
                self.cc.transport_failed(now, transport, remote)
            }
        }
    }

    /// Carry out everything call control asked for, until it asks nothing
    /// more (starting a stream can fail, which hangs up: more output).
    fn flush(&mut self, now: Instant) {
        self.show_trunks(now);
        loop {
            let mut idle = true;
            while let Some(t) = self.cc.poll_transmit() {
                idle = false;
                self.transports.send(t);
            }
            while let Some(cmd) = self.cc.poll_media() {
                idle = false;
                if let Some(failed) = self.media_command(cmd) {
                    self.cc.media_failed(now, failed);
                }
            }
            while let Some(start) = self.cc.poll_flow_start() {
                idle = false;
                let task = flows::start(start, self.services.clone(), self.flow_requests.clone());
                let call = task.call;
                self.cc.attach_flow(call, task);
            }
            while let Some((_, signal, flow)) = self.cc.poll_flow_signal() {
                if let Some(flow) = flow {
                    flow.signal(signal);
                }
            }
            while let Some(effect) = self.cc.poll_effect() {
                idle = false;
                self.effect(effect);
            }
            while let Some(req) = self.cc.poll_resolve() {
                idle = false;
                self.resolve(req);
            }
            if idle {
                break;
            }
        }
    }

    /// Run one media command; the call whose stream could not start.
    fn media_command(
        &mut self,
        cmd: MediaCommand<Reservation>,
    ) -> Option<crate::sip::endpoint::CallId> {
        match cmd {
            MediaCommand::Start {
                call,
                reservation,
                media,
                source,
                near,
            } => {
                let started = match near {
                    Some(near) => {
                        self.media
                            .start_stream_near(near.0, call.0, reservation, &media, source)
                    }
                    None => self.media.start_stream(call.0, reservation, &media, source),
                };
                if let Err(e) = started {
                    tracing::warn!(%call, %e, "media failed: hanging up");
                    return Some(call);
                }
            }
            MediaCommand::Play {
                call,
                source,
                generation,
            } => self.media.set_source_tagged(call.0, source, generation),
            MediaCommand::Bridge(a, b) => self.media.bridge(a.0, b.0),
            MediaCommand::Unbridge(a) => self.media.unbridge(a.0),
            MediaCommand::SendDtmf {
                call,
                digit,
                duration_ms,
            } => self.media.send_dtmf(call.0, digit, duration_ms),
            MediaCommand::Sending {
                call,
                sending,
                remote,
            } => {
                self.media.set_sending(call.0, sending);
                if let Some(remote) = remote {
                    self.media.set_remote(call.0, remote);
                }
            }
            MediaCommand::Stop(call) => self.media.stop_stream(call.0),
            MediaCommand::Tap { call, tap } => self.media.set_tap(call.0, tap),
            MediaCommand::Record {
                call,
                call_id,
                action,
            } => self.record(call, &call_id, action),
        }
        None
    }

    fn record(
        &mut self,
        call: crate::sip::endpoint::CallId,
        call_id: &str,
        action: crate::recording::RecordAction,
    ) {
        use crate::recording::RecordAction;
        match action {
            RecordAction::Start(options) => {
                match self.services.recordings.begin(call_id, options) {
                    Ok(started) => self.media.record(call.0, started),
                    Err(e) => tracing::warn!(%call, %e, "recording not started"),
                }
            }
            RecordAction::Stop => self.media.stop_recording(call.0),
            RecordAction::Pause => self.media.pause_recording(call.0, true),
            RecordAction::Resume => self.media.pause_recording(call.0, false),
        }
    }

    fn effect(&mut self, effect: Effect) {
        match effect {
            Effect::Record(r) => {
                if let Err(e) = self.store.record_call(r) {
                    tracing::warn!(%e, "store: cannot queue call record");
                }
            }
            Effect::Callback { id, progress } => self.services.callbacks.progress(&id, progress),
            Effect::Bindings { user, bindings, at } => {
                let wall = std::time::SystemTime::now();
                let records = bindings
                    .iter()
                    .map(|b| crate::registrar::record_of(&user, b, at, wall, &self.node))
                    .collect();
                if let Err(e) = self
                    .store
                    .replace_registrations(&self.node.id, &user, records)
                {
                    tracing::warn!(%e, "store: cannot queue registrations");
                }
            }
            Effect::SharedHold { web_call, hold } => {
                if let Some(calls) = &self.services.webcalls {
                    calls.shared_hold(&web_call, hold);
                }
            }
            Effect::CallStatus(event) => self.services.twiml.send_status(*event),
        }
    }

    /// SIGTERM/SIGINT; true on the second: stop now.
    fn begin_drain(&mut self) -> bool {
        self.ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.cc.begin_drain(Instant::now())
    }

    /// SIGHUP: re-read the config, render prompts and load the hold
    /// program on a task of its own, so signalling goes on meanwhile; the
    /// result is swapped in by `apply_reload`. A bad file changes nothing.
    fn start_reload(&mut self, path: Option<&Path>, done: mpsc::Sender<Option<Reloaded>>) {
        let Some(path) = path.map(Path::to_path_buf) else {
            tracing::info!("SIGHUP: running on embedded defaults, nothing to reload");
            return;
        };
        if self.reloading {
            tracing::warn!("SIGHUP: a reload is already running");
            return;
        }
        self.reloading = true;
        let clips = self.media.clip_cache();
        let audio_dir = self.cc.config().media.audio_dir.clone();
        tokio::spawn(async move {
            let result = reload(&path, clips, audio_dir).await;
            let reloaded = match result {
                Ok(r) => {
                    tracing::info!(file = %path.display(), "config reloaded");
                    Some(r)
                }
                Err(e) => {
                    tracing::error!("reload refused: {e:#}");
                    None
                }
            };
            let _ = done.send(reloaded).await;
        });
    }

    /// Calls in progress keep what they started with; listeners, media
    /// ports and the store keep their start-up values.
    fn apply_reload(&mut self, r: Reloaded) {
        *self
            .services
            .flow_set
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(r.config.flow_set.clone());
        self.cc.reload(&r.config, r.holds);
    }

    /// Republish trunk health for the API when a probe result changed it.
    fn show_trunks(&mut self, now: Instant) {
        let health = self.cc.trunk_health();
        if self.trunks_shown == Some(health.version()) {
            return;
        }
        self.trunks_shown = Some(health.version());
        let snapshot = health.snapshot(now, std::time::SystemTime::now());
        *self.trunks.write().unwrap_or_else(|p| p.into_inner()) = snapshot;
    }

    fn export_metrics(&mut self, now: Instant) {
        let registrations: Vec<(String, bool)> = self
            .cc
            .config()
            .registrations
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let up = matches!(
                    self.cc.registration_state(i),
                    Some(RegistrationState::Registered { .. })
                );
                (r.registrar.clone(), up)
            })
            .collect();
        let audio = self.media.stats();
        let active_flows = self.cc.active_flows();
        let draining = self.cc.draining();
        let free_rtp_ports = self.media.free_ports();
        let (endpoint, tally) = self.cc.telemetry_parts();
        let snapshot = crate::telemetry::Snapshot {
            sip: &endpoint.counters,
            transport: &self.transports.stats,
            audio: &audio,
            active_calls: endpoint.active_calls(),
            free_rtp_ports,
            active_flows,
            draining,
            overloaded: endpoint.overloaded(),
            registrations: &registrations,
        };
        crate::telemetry::export(now, &snapshot, tally);
    }
}

/// Load and check the config at `path`, render its prompts and load its
/// hold program, off the signalling task.
async fn reload(
    path: &Path,
    clips: Arc<crate::media::clips::ClipCache>,
    audio_dir: PathBuf,
) -> anyhow::Result<Reloaded> {
    let file = path.to_path_buf();
    let config = tokio::task::spawn_blocking(move || Config::load(&file))
        .await
        .context("reading the config")?
        .map_err(|errors| anyhow::anyhow!("config has errors:\n{errors}"))?;
    let prompts = render_prompts(&config).await?;
    let (config, holds) = tokio::task::spawn_blocking(move || {
        let holds = load_hold_programs(&config, &prompts, |name| {
            let path = if name.is_absolute() {
                name.to_path_buf()
            } else {
                audio_dir.join(name)
            };
            clips
                .get(&path)
                .map_err(|e| anyhow::anyhow!("cannot load audio {}: {e}", path.display()))
        });
        (config, holds)
    })
    .await
    .context("loading the hold programs")?;
    Ok(Reloaded {
        holds: holds?,
        config,
    })
}
