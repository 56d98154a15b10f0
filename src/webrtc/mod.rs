//! Web-to-voice: a browser's WebRTC call (Opus 48 kHz, DTLS-SRTP, ICE)
//! answered by str0m, and bridged into the gateway as an ordinary SIP call
//! over loopback (G.711 µ-law 8 kHz), so routing, flows, transfers to SIP
//! targets, hold music and call records all apply unchanged.
//!
//! Each web call is one task owning three sockets: ICE/DTLS/SRTP with the
//! browser, SIP to our own listener (a sans-IO `Endpoint` as the UAC), and
//! RTP with the gateway's audio loop. Both protocol cores are sans-IO; the
//! task only moves bytes and time between them. Signalling is WHIP-style:
//! the browser POSTs its SDP offer and gets the answer.
//!
//! The task does no audio work itself: Opus runs on the
//! transcoding threads ([`pool`]), so tokio's workers stay free for SIP.

pub mod pool;
pub mod transcode;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use str0m::change::SdpOffer;
use str0m::media::{Frequency, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::sdp::{Codec, LocalMedia};
use crate::sip::endpoint::{
    CallId, Endpoint, EndpointConfig, Event as SipEvent, OutgoingCall, Transport,
};
use crate::sip::message::Uri;
use pool::{Done, TranscodePool, Transcoder};
use transcode::{Downlink, Uplink, FRAME_8K};

/// The loopback address web legs send SIP from: the internal trunk is
/// known by it (plus a secret), so other local callers meet the normal
/// trunk policy.
pub const WEB_LEG_ADDRESS: [u8; 4] = [127, 0, 0, 77];

/// `[webrtc]` in the config.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcConfig {
    /// Offer the "Call us" button and answer browser calls.
    pub enabled: bool,
    /// The number web calls dial: `[[routes]]` pick their flow by it.
    pub did: String,
    /// Opus encoder complexity 0..=10 (CPU against quality).
    pub opus_complexity: u8,
    /// Web calls at once; more get 503.
    pub max_calls: usize,
    /// Threads that transcode web calls' audio (Opus), off
    /// the async threads that carry SIP. 0: min(2, cores).
    pub transcode_threads: usize,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        WebRtcConfig {
            enabled: true,
            did: "webrtc".into(),
            opus_complexity: 1,
            max_calls: 200,
            transcode_threads: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebRtcError {
    #[error("web calls are turned off")]
    Disabled,
    #[error("too many web calls")]
    Busy,
    #[error("not a usable SDP offer: {0}")]
    BadOffer(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Rtc(String),
}

/// The web calls in progress.
pub struct WebCalls {
    config: WebRtcConfig,
    /// Our SIP listener (UDP) the web legs call.
    gateway_sip: SocketAddr,
    /// Where media sockets bind (the browser sees this address).
    media_ip: IpAddr,
    live: DashMap<String, LegControl>,
    /// The wait music, encoded once for every leg that hears it unmixed.
    hold: std::sync::Mutex<Option<HoldBroadcast>>,
    /// Digest credentials web legs answer our own trunk policy with.
    credentials: (String, crate::secret::Secret),
    /// The transcoding threads, started with the first web call.
    pool: std::sync::OnceLock<TranscodePool>,
}

/// What the rest of the process can do to a running leg.
#[derive(Clone)]
struct LegControl {
    stop: Arc<Notify>,
    /// Set while the gateway plays the shared wait music to this leg.
    shared_hold: Arc<std::sync::atomic::AtomicBool>,
    changed: Arc<Notify>,
}

/// One encoder playing a hold program to any number of legs: 20 ms Opus
/// packets on a broadcast channel.
struct HoldBroadcast {
    program: Arc<crate::media::player::HoldProgram>,
    packets: tokio::sync::broadcast::Sender<Arc<[u8]>>,
}

impl HoldBroadcast {
    fn start(program: Arc<crate::media::player::HoldProgram>, complexity: u8) -> HoldBroadcast {
        let (packets, _) = tokio::sync::broadcast::channel(8);
        let tx = packets.clone();
        let playing = program.clone();
        // Encoding is CPU work: a thread of its own, not a tokio task.
        let spawned = std::thread::Builder::new()
            .name("webrtc-hold".into())
            .spawn(move || play_hold(playing, complexity, tx));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "shared hold: cannot start its encoder thread");
        }
        HoldBroadcast { program, packets }
    }
}

/// The shared hold encoder: one Opus packet per 20 ms (absolute
/// deadlines) while anyone listens; after 10 s with nobody, it ends and
/// the next listener starts another.
fn play_hold(
    program: Arc<crate::media::player::HoldProgram>,
    complexity: u8,
    tx: tokio::sync::broadcast::Sender<Arc<[u8]>>,
) {
    let Ok(mut encoder) = Downlink::new(complexity) else {
        return;
    };
    let mut player = crate::media::player::Player::new(crate::media::player::Source::Hold(program));
    let mut pcm = [0i16; crate::media::player::FRAME_SAMPLES];
    let mut ulaw = [0u8; crate::media::player::FRAME_SAMPLES];
    let mut opus = [0u8; 1500];
    let frame = Duration::from_millis(20);
    let mut next = Instant::now();
    let mut idle = 0u32;
    loop {
        next += frame;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            // Late by more than a few frames (a stall): skip, don't burst.
            None if now - next > frame * 5 => next = now,
            None => {}
        }
        if tx.receiver_count() == 0 {
            idle += 1;
            if idle > 500 {
                return;
            }
            continue;
        }
        idle = 0;
        player.fill(&mut pcm);
        crate::media::g711::encode_ulaw(&pcm, &mut ulaw);
        match encoder.push(&ulaw, &mut opus) {
            Ok(0) => {}
            Ok(n) => {
                metrics::counter!(crate::telemetry::names::WEBRTC_SHARED_HOLD_FRAMES).increment(1);
                let _ = tx.send(Arc::from(opus.get(..n).unwrap_or_default()));
            }
            Err(e) => tracing::debug!(error = %e, "shared hold: encode failed"),
        }
    }
}

impl WebCalls {
    pub fn new(config: &crate::config::Config) -> Option<Arc<WebCalls>> {
        if !config.webrtc.enabled {
            return None;
        }
        let mut gateway_sip = *config.sip.udp.first()?;
        if gateway_sip.ip().is_unspecified() {
            gateway_sip.set_ip(IpAddr::from([127, 0, 0, 1]));
        }
        let mut media_ip = config.media.rtp_address;
        if media_ip.is_unspecified() {
            media_ip = IpAddr::from([127, 0, 0, 1]);
        }
        Some(Arc::new(WebCalls {
            config: config.webrtc.clone(),
            gateway_sip,
            media_ip,
            live: DashMap::new(),
            hold: std::sync::Mutex::new(None),
            credentials: (
                format!("webrtc-{}", crate::chat::random_token(6)),
                crate::chat::random_token(24).into(),
            ),
            pool: std::sync::OnceLock::new(),
        }))
    }

    /// The internal trunk web legs come in on: their own loopback address
    /// and a secret made at start. Only needed when trunks restrict who
    /// may call.
    pub fn trunk(&self) -> crate::sip::endpoint::InboundTrunk {
        let [a, b, c, d] = WEB_LEG_ADDRESS;
        crate::sip::endpoint::InboundTrunk {
            name: "webrtc".into(),
            cidrs: crate::net::Cidr::parse(&format!("{a}.{b}.{c}.{d}/32"))
                .into_iter()
                .collect(),
            credentials: Some(self.credentials.clone()),
            max_calls: self.config.max_calls,
            digest_algorithms: Vec::new(),
        }
    }

    /// The gateway plays `program` (the shared wait music) to this web
    /// call, or (None) something of its own.
    pub fn shared_hold(&self, id: &str, program: Option<Arc<crate::media::player::HoldProgram>>) {
        let Some(leg) = self.live.get(id).map(|l| l.clone()) else {
            return;
        };
        if let Some(p) = &program {
            let mut hold = self.hold.lock().unwrap_or_else(|e| e.into_inner());
            let stale = hold
                .as_ref()
                .is_none_or(|h| !Arc::ptr_eq(&h.program, p) || h.packets.receiver_count() == 0);
            if stale {
                *hold = Some(HoldBroadcast::start(p.clone(), self.config.opus_complexity));
            }
        }
        leg.shared_hold
            .store(program.is_some(), std::sync::atomic::Ordering::Relaxed);
        leg.changed.notify_one();
    }

    fn hold_packets(&self) -> Option<tokio::sync::broadcast::Receiver<Arc<[u8]>>> {
        self.hold
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|h| h.packets.subscribe())
    }

    pub fn active(&self) -> usize {
        self.live.len()
    }

    /// A leg's place on a transcoding thread (the threads start with the
    /// first web call).
    fn transcoder(&self, uplink: Uplink, downlink: Downlink) -> Result<Transcoder, WebRtcError> {
        let pool = match self.pool.get() {
            Some(p) => p,
            None => {
                let started =
                    TranscodePool::start(pool::thread_count(self.config.transcode_threads))?;
                // Two first calls at once: one pool wins, the other's
                // threads end at once (they have no legs).
                let _ = self.pool.set(started);
                self.pool
                    .get()
                    .ok_or_else(|| WebRtcError::Rtc("no transcoding threads".into()))?
            }
        };
        pool.attach(uplink, downlink)
            .ok_or_else(|| WebRtcError::Rtc("transcoding threads are gone".into()))
    }

    /// Answer a browser's offer; the call runs in its own task. Returns the
    /// call's id and the SDP answer.
    pub async fn answer(
        self: &Arc<Self>,
        offer_sdp: &str,
        conversation: Option<String>,
    ) -> Result<(String, String), WebRtcError> {
        if self.live.len() >= self.config.max_calls {
            return Err(WebRtcError::Busy);
        }
        let offer = SdpOffer::from_sdp_string(offer_sdp)
            .map_err(|e| WebRtcError::BadOffer(e.to_string()))?;
        let ice = UdpSocket::bind((self.media_ip, 0)).await?;
        let ice_addr = ice.local_addr()?;
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        let candidate =
            Candidate::host(ice_addr, "udp").map_err(|e| WebRtcError::Rtc(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| WebRtcError::BadOffer(e.to_string()))?;
        let id = crate::chat::random_token(12);
        let control = LegControl {
            stop: Arc::new(Notify::new()),
            shared_hold: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            changed: Arc::new(Notify::new()),
        };
        self.live.insert(id.clone(), control.clone());
        let me = self.clone();
        let leg_id = id.clone();
        tokio::spawn(async move {
            metrics::gauge!(crate::telemetry::names::WEBRTC_CALLS_ACTIVE).increment(1.0);
            let leg = Leg::new(&me, &leg_id, rtc, ice, conversation, control).await;
            match leg {
                Ok(leg) => {
                    if let Err(e) = leg.run().await {
                        tracing::warn!(web_call = %leg_id, error = %e, "web call ended with an error");
                    }
                }
                Err(e) => {
                    tracing::warn!(web_call = %leg_id, error = %e, "web call could not start")
                }
            }
            me.live.remove(&leg_id);
            metrics::gauge!(crate::telemetry::names::WEBRTC_CALLS_ACTIVE).decrement(1.0);
        });
        metrics::counter!(crate::telemetry::names::WEBRTC_CALLS).increment(1);
        Ok((id, answer.to_sdp_string()))
    }

    /// The browser hung up.
    pub fn hang_up(&self, id: &str) -> bool {
        match self.live.get(id) {
            Some(leg) => {
                leg.stop.notify_one();
                true
            }
            None => false,
        }
    }
}

/// One web call: the browser side, the SIP side, and the audio between.
struct Leg {
    rtc: Rtc,
    ice: UdpSocket,
    sip: UdpSocket,
    rtp: UdpSocket,
    endpoint: Endpoint,
    call: Option<CallId>,
    target: OutgoingCall,
    /// Where the gateway wants our RTP, once the call is up.
    remote_rtp: Option<SocketAddr>,
    mid: Option<Mid>,
    /// Opus ↔ µ-law, on a transcoding thread.
    transcoder: Transcoder,
    /// RTP towards the gateway.
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    /// Opus RTP time towards the browser (48 kHz).
    opus_time: u64,
    control: LegControl,
    calls: Arc<WebCalls>,
    /// The shared wait music, while the gateway plays it to us.
    hold: Option<tokio::sync::broadcast::Receiver<Arc<[u8]>>>,
    ended: bool,
}

impl Leg {
    async fn new(
        calls: &Arc<WebCalls>,
        id: &str,
        rtc: Rtc,
        ice: UdpSocket,
        conversation: Option<String>,
        control: LegControl,
    ) -> Result<Leg, WebRtcError> {
        let sip = UdpSocket::bind((IpAddr::from(WEB_LEG_ADDRESS), 0)).await?;
        let rtp = UdpSocket::bind((calls.media_ip, 0)).await?;
        let sip_addr = sip.local_addr()?;
        let endpoint = Endpoint::new(
            EndpointConfig {
                udp_listeners: vec![sip_addr],
                tcp_listeners: Vec::new(),
                codecs: vec![Codec::Pcmu],
                user_agent: "crossline-webrtc".into(),
                ..EndpointConfig::default()
            },
            Instant::now(),
        );
        let target = Uri::parse(&format!("sip:{}@{}", calls.config.did, calls.gateway_sip))
            .map_err(|_| WebRtcError::Rtc("bad [webrtc] did".into()))?;
        let mut extra_headers = vec![("X-Crossline-Web-Call".to_string(), id.to_string())];
        if let Some(c) = conversation {
            extra_headers.push(("X-Crossline-Conversation".to_string(), c));
        }
        let rtp_port = rtp.local_addr()?.port();
        let transcoder = calls.transcoder(
            Uplink::new().map_err(|e| WebRtcError::Rtc(e.to_string()))?,
            Downlink::new(calls.config.opus_complexity)
                .map_err(|e| WebRtcError::Rtc(e.to_string()))?,
        )?;
        let target = OutgoingCall {
            target,
            destination: calls.gateway_sip,
            transport: Transport::Udp,
            from_user: "webrtc".into(),
            from_display: Some("Web caller".into()),
            local_media: LocalMedia {
                address: calls.media_ip,
                rtp_port,
                session_id: u64::from(rand::random::<u32>()),
                session_version: 1,
                codecs: vec![Codec::Pcmu],
                telephone_event_pt: 101,
                ptime_ms: 20,
            },
            credentials: Some(calls.credentials.clone()),
            extra_headers,
            flow: None,
            max_forwards: crate::sip::endpoint::MAX_FORWARDS,
        };
        Ok(Leg {
            rtc,
            ice,
            sip,
            rtp,
            endpoint,
            call: None,
            target,
            remote_rtp: None,
            mid: None,
            transcoder,
            seq: rand::random(),
            timestamp: rand::random(),
            ssrc: rand::random(),
            opus_time: 0,
            control,
            calls: calls.clone(),
            hold: None,
            ended: false,
        })
    }

    async fn run(mut self) -> Result<(), WebRtcError> {
        let mut ice_buf = vec![0u8; 2048];
        let mut sip_buf = vec![0u8; 65_535];
        let mut rtp_buf = vec![0u8; 2048];
        let ice_local = self.ice.local_addr()?;
        let sip_local = self.sip.local_addr()?;
        // A browser that never completes ICE is given up on.
        let give_up = Instant::now() + Duration::from_secs(30);
        let mut connected = false;
        loop {
            let rtc_deadline = self.drive_rtc().await?;
            self.drive_sip().await?;
            if self.ended && self.call.is_none() {
                return Ok(());
            }
            if !connected && self.call.is_none() && Instant::now() > give_up {
                return Err(WebRtcError::Rtc("ICE never connected".into()));
            }
            connected |= self.call.is_some();
            let deadline = [Some(rtc_deadline), self.endpoint.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or_else(|| Instant::now() + Duration::from_millis(100));
            let sleep = tokio::time::sleep_until(deadline.into());
            let on_hold = self
                .control
                .shared_hold
                .load(std::sync::atomic::Ordering::Relaxed);
            if on_hold && self.hold.is_none() {
                self.hold = self.calls.hold_packets();
            } else if !on_hold {
                self.hold = None;
            }
            let hold_packet = async {
                match self.hold.as_mut() {
                    Some(rx) => rx.recv().await.ok(),
                    None => std::future::pending().await,
                }
            };
            let stop = self.control.stop.clone();
            let changed = self.control.changed.clone();
            let transcoded = self.transcoder.ready();
            tokio::select! {
                _ = transcoded => self.take_transcoded().await,
                packet = hold_packet => {
                    if let Some(p) = packet {
                        self.write_opus(&p);
                    }
                }
                _ = changed.notified() => {}
                r = self.ice.recv_from(&mut ice_buf) => {
                    // A receive error (an ICMP report, say) is one lost
                    // datagram, not the end of the call.
                    let Ok((n, source)) = r else { continue };
                    let data = ice_buf.get(..n).unwrap_or_default();
                    if let Ok(receive) = Receive::new(Protocol::Udp, source, ice_local, data) {
                        if let Err(e) = self.rtc.handle_input(Input::Receive(Instant::now(), receive)) {
                            tracing::debug!(error = %e, "webrtc: input refused");
                        }
                    }
                }
                r = self.sip.recv_from(&mut sip_buf) => {
                    let Ok((n, source)) = r else { continue };
                    let data = sip_buf.get(..n).unwrap_or_default();
                    self.endpoint.handle_datagram(Instant::now(), sip_local, source, data);
                }
                r = self.rtp.recv_from(&mut rtp_buf) => {
                    let Ok((n, _)) = r else { continue };
                    let data = rtp_buf.get(..n).unwrap_or_default();
                    self.forward_to_browser(data);
                }
                _ = stop.notified() => self.end("the browser hung up"),
                _ = sleep => {
                    let now = Instant::now();
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        tracing::debug!(error = %e, "webrtc: timeout refused");
                    }
                    self.endpoint.handle_timeout(now);
                }
            }
        }
    }

    /// Hang up both sides.
    fn end(&mut self, why: &str) {
        if self.ended {
            return;
        }
        tracing::info!(why, "web call ending");
        self.ended = true;
        if let Some(call) = self.call {
            let _ = self.endpoint.hangup(Instant::now(), call);
        }
        self.rtc.disconnect();
    }

    /// Everything str0m wants done now; returns when it next needs time.
    async fn drive_rtc(&mut self) -> Result<Instant, WebRtcError> {
        loop {
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    self.end("webrtc error");
                    tracing::warn!(error = %e, "webrtc: poll failed");
                    return Ok(Instant::now() + Duration::from_millis(50));
                }
            };
            match out {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    let _ = self.ice.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::MediaAdded(m)) => self.mid = Some(m.mid),
                Output::Event(Event::Connected) => {
                    if self.call.is_none() && !self.ended {
                        match self.endpoint.invite(Instant::now(), self.target.clone()) {
                            Ok(call) => self.call = Some(call),
                            Err(e) => {
                                tracing::warn!(error = %e, "web call: cannot place the SIP leg");
                                self.end("no SIP leg");
                            }
                        }
                    }
                }
                Output::Event(Event::MediaData(d)) => self.forward_to_gateway(&d.data),
                Output::Event(Event::IceConnectionStateChange(
                    IceConnectionState::Disconnected,
                )) => self.end("ICE disconnected"),
                Output::Event(_) => {}
            }
        }
    }

    /// SIP to and from the gateway.
    async fn drive_sip(&mut self) -> Result<(), WebRtcError> {
        while let Some(t) = self.endpoint.poll_transmit() {
            let _ = self.sip.send_to(&t.payload, t.peer.remote).await;
        }
        while let Some(ev) = self.endpoint.poll_event() {
            match ev {
                SipEvent::CallEstablished { media, .. } => {
                    self.remote_rtp = media.map(|m| m.remote_rtp);
                }
                SipEvent::CallEnded { cause, .. } => {
                    tracing::info!(?cause, "web call: SIP leg ended");
                    self.call = None;
                    self.end("the call ended");
                }
                _ => {}
            }
        }
        // Flush what ending produced (BYE, its answer).
        while let Some(t) = self.endpoint.poll_transmit() {
            let _ = self.sip.send_to(&t.payload, t.peer.remote).await;
        }
        Ok(())
    }

    /// Browser audio (Opus) → the transcoder, for the gateway.
    fn forward_to_gateway(&mut self, opus: &[u8]) {
        if self.remote_rtp.is_none() {
            return;
        }
        self.transcoder.uplink(opus);
    }

    /// Gateway audio (µ-law RTP) → the transcoder, for the browser.
    fn forward_to_browser(&mut self, data: &[u8]) {
        let Ok(rtp) = crate::media::rtp_packet::parse_rtp(data) else {
            return;
        };
        let Ok(frame) = <&[u8; FRAME_8K]>::try_from(rtp.payload) else {
            return; // only 20 ms PCMU: what we offered
        };
        if rtp.payload_type != 0 {
            return;
        }
        // The shared wait music is on: that encode is already done.
        if self.hold.is_some() {
            return;
        }
        self.transcoder.downlink(frame);
    }

    /// What the transcoder finished: µ-law RTP to the gateway, Opus to
    /// the browser (str0m sends it on the next drive).
    async fn take_transcoded(&mut self) {
        let mut buf = [0u8; pool::MAX_PACKET];
        let mut packet = [0u8; crate::media::rtp_packet::RTP_HEADER_LEN + FRAME_8K];
        while let Some(done) = self.transcoder.next(&mut buf) {
            match done {
                Done::ToGateway(frame) => {
                    let Some(dest) = self.remote_rtp else {
                        continue;
                    };
                    self.seq = self.seq.wrapping_add(1);
                    self.timestamp = self.timestamp.wrapping_add(FRAME_8K as u32);
                    if let Ok(n) = crate::media::rtp_packet::write_rtp(
                        &mut packet,
                        0,
                        false,
                        self.seq,
                        self.timestamp,
                        self.ssrc,
                        frame,
                    ) {
                        let _ = self
                            .rtp
                            .send_to(packet.get(..n).unwrap_or_default(), dest)
                            .await;
                    }
                }
                // Encoded before the shared music started: that plays now.
                Done::ToBrowser(_) if self.hold.is_some() => {}
                Done::ToBrowser(opus) => self.write_opus(opus),
            }
        }
    }

    /// One 20 ms Opus packet to the browser, on a continuous RTP clock.
    fn write_opus(&mut self, packet: &[u8]) {
        let Some(mid) = self.mid else {
            return;
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return;
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == str0m::format::Codec::Opus)
            .map(|p| p.pt())
        else {
            return;
        };
        let time = MediaTime::new(self.opus_time, Frequency::FORTY_EIGHT_KHZ);
        self.opus_time += transcode::FRAME_48K as u64;
        if let Err(e) = writer.write(pt, Instant::now(), time, packet.to_vec()) {
            tracing::debug!(error = %e, "webrtc: write refused");
        }
    }
}
