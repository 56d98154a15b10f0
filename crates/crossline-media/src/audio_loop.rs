//! The real-time audio loop: one thread serves every stream assigned to it,
//! waking at absolute 20 ms deadlines (clock_nanosleep on CLOCK_MONOTONIC).
//!
//! Inside a tick there are no locks and no allocation: control arrives
//! through a wait-free SPSC ring ([`rtrb`]), each stream owns its socket,
//! and packets are built in a stack buffer. Events going out (timeouts, a
//! clip ending) are rare and go to an [`EventSink`].

use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng as _};

use crate::dtmf::{DtmfReceiver, DtmfSender};
use crate::g711;
use crate::headroom::LoadMeter;
use crate::jitter::{JitterBuffer, JitterConfig};
use crate::live::{StreamTap, Track};
use crate::player::{crossfade, FrameNote, Player};
use crate::raw_send::{set_socket_int, RawSender};
use crate::record_tap::Tap;
use crate::rtcp::{ntp_from_unix, parse_compound, report_interval_ms, RtcpSender};
use crate::rtp_packet::{parse_rtp, write_rtp};

pub use crate::FRAME_SAMPLES;
/// One audio frame: the loop's period.
pub const FRAME: Duration = Duration::from_millis(20);
/// Wake-ups per frame; each serves one group of streams.
const SUBTICKS: usize = 4;
const SUBTICK: Duration = Duration::from_millis(5);

/// Names a stream across commands and events; the caller picks it.
pub type StreamId = u64;

/// The G.711 law a stream sends and receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// μ-law (payload type 0).
    Pcmu,
    /// A-law (payload type 8).
    Pcma,
}

pub use crate::player::{HoldProgram, Source};

/// Everything the loop needs to run one stream.
#[derive(Debug)]
pub struct StreamSpec {
    /// The caller's id for this stream.
    pub id: StreamId,
    /// The bound RTP socket; the loop owns it from now on.
    pub socket: UdpSocket,
    /// RTCP (RTP port + 1); reports go to the remote's RTP port + 1.
    pub rtcp_socket: Option<UdpSocket>,
    /// Where to send RTP (the SDP's address, until symmetric RTP learns another).
    pub remote: SocketAddr,
    /// The negotiated G.711 law.
    pub encoding: Encoding,
    /// The negotiated payload type for audio.
    pub payload_type: u8,
    /// 20 ms frames per RTP packet we send (the peer's ptime: 1 to 3).
    pub frames_per_packet: u8,
    /// What to play until told otherwise.
    pub source: Source,
    /// Hang up after this long without incoming RTP; zero disables.
    pub rtp_timeout: Duration,
    /// RFC 4733 telephone-event payload type, when negotiated.
    pub telephone_event_pt: Option<u8>,
}

/// Control messages into a loop, through its wait-free ring.
pub enum Command {
    /// Take over a stream and start sending.
    Start(Box<StreamSpec>),
    /// Stop a stream and close its sockets.
    Stop(StreamId),
    /// Switch source; the number comes back with its `SourceFinished`.
    SetSource(StreamId, Source, u32),
    /// Send to a new address (re-INVITE moved the media).
    SetRemote(StreamId, SocketAddr),
    /// Hold: stop sending (the peer went sendonly/inactive) or resume.
    SetSending(StreamId, bool),
    /// Send an RFC 4733 digit (replaces audio for its duration).
    SendDtmf(StreamId, char, u32),
    /// Relay audio both ways between two streams on this loop, through a
    /// jitter buffer per direction; DTMF is passed through as RFC 4733.
    Bridge(StreamId, StreamId),
    /// Stop relaying; both streams go back to their players.
    Unbridge(StreamId),
    /// Copy the stream's audio to this tap (a media stream's fork, or a
    /// recognizer), or stop copying.
    Tap(StreamId, Option<Arc<StreamTap>>),
    /// Record the stream: one frame of both directions a tick into the
    /// tap's ring (pause and resume go through the tap's counters).
    Record(StreamId, Box<Tap>),
    /// Stop recording; the writer sees its ring abandoned and finishes.
    StopRecording(StreamId),
    /// Hand the stream over to another loop: it leaves this one (its
    /// bridge too) and comes back in the box as [`MediaEvent::Detached`],
    /// for the control side to [`Command::Adopt`] elsewhere. The box is
    /// allocated by the control side, so the loop allocates nothing.
    Detach(StreamId, Box<MovingStream>),
    /// Take over a stream another loop detached, as it was.
    Adopt(Box<MovingStream>),
}

/// A stream between two loops (see [`Command::Detach`]); dropped, it
/// closes its sockets.
#[derive(Default)]
pub struct MovingStream(Option<Stream>);

impl MovingStream {
    /// An empty box for [`Command::Detach`] to fill.
    pub fn boxed() -> Box<MovingStream> {
        Box::default()
    }

    /// The stream it carries, if the loop found it.
    pub fn id(&self) -> Option<StreamId> {
        self.0.as_ref().map(|s| s.spec.id)
    }
}

impl std::fmt::Debug for MovingStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MovingStream({:?})", self.id())
    }
}

/// Two boxes are the same move when they carry the same stream.
impl PartialEq for MovingStream {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for MovingStream {}

/// One direction of a bridge: audio received on a stream, waiting to be
/// played to its peer.
struct BridgeEnd {
    peer: StreamId,
    jitter: JitterBuffer,
    /// A digit received from the peer, to send on this stream.
    pending_dtmf: Option<char>,
    /// Packets that aren't 20 ms (e.g. 30 ms ptime) are cut into 20 ms
    /// frames here, numbered in arrival order.
    partial: [i16; FRAME_SAMPLES],
    partial_len: usize,
    next_seq: u16,
    next_ts: u32,
}

impl BridgeEnd {
    fn new(peer: StreamId) -> Option<BridgeEnd> {
        Some(BridgeEnd {
            peer,
            jitter: JitterBuffer::new(JitterConfig::default()).ok()?,
            pending_dtmf: None,
            partial: [0; FRAME_SAMPLES],
            partial_len: 0,
            next_seq: 0,
            next_ts: 0,
        })
    }

    /// Queue decoded audio of any length as 20 ms frames.
    fn push_samples(&mut self, now_ms: u64, samples: &[i16]) {
        for &x in samples {
            if let Some(slot) = self.partial.get_mut(self.partial_len) {
                *slot = x;
                self.partial_len += 1;
            }
            if self.partial_len == FRAME_SAMPLES {
                let frame = self.partial;
                self.jitter
                    .push(now_ms, self.next_seq, self.next_ts, &frame);
                self.next_seq = self.next_seq.wrapping_add(1);
                self.next_ts = self.next_ts.wrapping_add(FRAME_SAMPLES as u32);
                self.partial_len = 0;
            }
        }
    }
}

/// What a loop reports back to the control side, through its [`EventSink`].
#[derive(Debug, PartialEq, Eq)]
pub enum MediaEvent {
    /// No RTP arrived within the stream's timeout.
    RtpTimeout(StreamId),
    /// A non-looping clip played to its end: the stream and the number its
    /// `SetSource` carried (0 for the initial source).
    SourceFinished(StreamId, u32),
    /// An RFC 4733 digit arrived (reported once per key press).
    Dtmf(StreamId, char),
    /// A [`Command::Detach`]ed stream, out of its loop (empty when the
    /// loop had no such stream).
    Detached(Box<MovingStream>),
}

/// Where an audio loop reports [`MediaEvent`]s. The loop calls it from its
/// real-time thread, rarely (a digit, a timeout, a clip's end), so `send`
/// must not block; the application forwards into its own channel, which
/// keeps this crate free of any async runtime.
pub trait EventSink: Send + 'static {
    /// Hand over one event; if nobody listens any more, drop it.
    fn send(&self, event: MediaEvent);
}

impl EventSink for std::sync::mpsc::Sender<MediaEvent> {
    fn send(&self, event: MediaEvent) {
        // The receiver is gone only when the control side shut down.
        let _ = std::sync::mpsc::Sender::send(self, event);
    }
}

/// Counters shared with the control side (relaxed atomics: statistics).
#[derive(Debug, Default)]
pub struct LoopStats {
    /// 20 ms frames run.
    pub ticks: AtomicU64,
    /// Wake-ups over five frames behind, where the loop skipped ahead
    /// instead of bursting.
    pub late_ticks: AtomicU64,
    /// RTP packets sent.
    pub packets_sent: AtomicU64,
    /// Of those, the ones sent through the loop's raw socket.
    pub packets_sent_raw: AtomicU64,
    /// RTP packets received.
    pub packets_received: AtomicU64,
    /// RTP sends the socket refused.
    pub send_errors: AtomicU64,
    /// Streams on this loop now.
    pub streams: AtomicU64,
    /// Time spent working (not sleeping), summed over ticks.
    pub busy_us: AtomicU64,
    /// Longest single tick of work.
    pub max_tick_us: AtomicU64,
    /// Wake-ups that came over 1 ms after their deadline: the system woke
    /// the loop late (a busy or virtualised CPU), before any of its work.
    pub late_wakeups: AtomicU64,
    /// The latest wake-up after its deadline seen, in microseconds.
    pub max_wake_late_us: AtomicU64,
    /// Intermediate wake-ups taken while sleeping in slices
    /// ([`LoopOptions::max_sleep`]).
    pub naps: AtomicU64,
    /// The smoothed share of each frame spent working, in basis points
    /// (10,000 = 100 %): the loop's headroom is what is left. Written once
    /// a frame; admission reads it (see [`crate::headroom`]).
    pub load: AtomicU32,
    /// Received RTP packets lost (sampled at each RTCP report and at the end).
    pub packets_lost: AtomicU64,
    /// Interarrival jitter samples (one per stream per report), summed in
    /// microseconds: mean jitter = sum / samples.
    pub jitter_sum_us: AtomicU64,
    /// How many jitter samples `jitter_sum_us` sums.
    pub jitter_samples: AtomicU64,
}

/// A packet of several 20 ms frames being filled (the peer's ptime is 40
/// or 60 ms): boxed, so 20 ms streams pay one pointer.
struct Packing {
    payload: [u8; FRAME_SAMPLES * 3],
    frames: usize,
    timestamp: u32,
    marker: bool,
}

struct Stream {
    spec: StreamSpec,
    packing: Option<Box<Packing>>,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    player: Player,
    /// The previous source, faded out over the next frame.
    fading_from: Option<Player>,
    /// Just bridged: fade the player's sound out into the peer's.
    fade_into_bridge: bool,
    marker_next: bool,
    /// Tags `SourceFinished` so a late one for an old source is ignored.
    generation: u32,
    latched: bool,
    /// Its socket's IPv4 address and port, when specific: the source the
    /// loop's raw socket writes for it. `None`: it sends through its socket.
    raw_source: Option<SocketAddrV4>,
    ticks_since_rx: u32,
    timeout_ticks: u32,
    timed_out: bool,
    sending: bool,
    dtmf_rx: DtmfReceiver,
    /// A digit being sent: its sender and the event's RTP timestamp.
    dtmf_tx: Option<(DtmfSender, u32)>,
    rtcp: RtcpSender,
    /// Loss already added to the loop's counter.
    lost_counted: i64,
    /// Where RTCP goes: the remote RTP port + 1, or where its RTCP comes from.
    rtcp_remote: SocketAddr,
    ticks_to_rtcp: u32,
    /// Where a copy of its audio goes (a media stream's fork, or a
    /// recognizer): μ-law as it passes.
    fork: Option<Arc<StreamTap>>,
    /// Recording: both directions go to a writer, a frame a tick.
    tap: Option<Box<Tap>>,
}

impl Stream {
    /// Add the loss since the last count, and one jitter sample, to the
    /// loop's counters (8 kHz: one RTP unit is 125 µs).
    fn count_reception(&mut self, stats: &LoopStats) {
        if let Some((lost, jitter)) = self.rtcp.reception() {
            let delta = lost - self.lost_counted;
            if delta > 0 {
                stats
                    .packets_lost
                    .fetch_add(delta as u64, Ordering::Relaxed);
                self.lost_counted = lost;
            }
            stats
                .jitter_sum_us
                .fetch_add((jitter * 125.0) as u64, Ordering::Relaxed);
            stats.jitter_samples.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `starts` draws the SSRC and first sequence number and timestamp.
    fn new(spec: StreamSpec, starts: &mut StdRng) -> Stream {
        let player = Player::new(spec.source.clone());
        let timeout_ticks = (spec.rtp_timeout.as_millis() / FRAME.as_millis()) as u32;
        let ssrc = starts.random();
        let rtcp_remote = SocketAddr::new(spec.remote.ip(), spec.remote.port().wrapping_add(1));
        let packing = (spec.frames_per_packet > 1).then(|| {
            Box::new(Packing {
                payload: [0; FRAME_SAMPLES * 3],
                frames: 0,
                timestamp: 0,
                marker: false,
            })
        });
        Stream {
            packing,
            rtcp: RtcpSender::new(ssrc, "crossline"),
            lost_counted: 0,
            rtcp_remote,
            ticks_to_rtcp: rtcp_interval_ticks(),
            tap: None,
            dtmf_rx: DtmfReceiver::new(),
            dtmf_tx: None,
            spec,
            // RFC 3550: random SSRC and initial sequence/timestamp.
            ssrc,
            seq: starts.random(),
            timestamp: starts.random(),
            player,
            fading_from: None,
            fade_into_bridge: false,
            marker_next: true,
            generation: 0,
            latched: false,
            raw_source: None,
            ticks_since_rx: 0,
            timeout_ticks,
            timed_out: false,
            sending: true,
            fork: None,
        }
    }
}

/// The control side's handle on one audio loop thread.
pub struct AudioLoopHandle {
    commands: rtrb::Producer<Command>,
    /// This loop's counters.
    pub stats: Arc<LoopStats>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AudioLoopHandle {
    /// Queue a command; gives it back when the ring is full.
    pub fn send(&mut self, cmd: Command) -> Result<(), Command> {
        self.commands
            .push(cmd)
            .map_err(|rtrb::PushError::Full(c)| c)
    }

    /// Stop the thread and wait for it.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AudioLoopHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How a loop thread runs.
#[derive(Debug, Clone, Copy)]
pub struct LoopOptions {
    /// SCHED_FIFO priority (1..=99); 0 keeps the normal scheduler. Needs
    /// root or CAP_SYS_NICE; without it the loop logs once and goes on.
    pub realtime_priority: i32,
    /// Pin the thread to this CPU.
    pub cpu: Option<usize>,
    /// Poll each stream's socket every this many ticks (1 = every 20 ms).
    /// Streams are staggered so each tick polls an equal share.
    pub rx_poll_ticks: u32,
    /// Seeds the streams' SSRC and first sequence number and timestamp
    /// (loop `index` uses `seed + index`), so a test run replays exactly.
    /// `None` (production): OS entropy.
    pub random_seed: Option<u64>,
    /// Send IPv4 RTP through one raw socket for the whole loop
    /// ([`crate::raw_send`]) if it can be opened; else, and when false,
    /// through each stream's own socket.
    pub raw_send: bool,
    /// The longest the loop sleeps in one go between its 5 ms sub-ticks;
    /// `None` sleeps to the deadline at once. On a virtual machine a vCPU
    /// with nothing to run halts, and the hypervisor may wake it
    /// milliseconds late; waking in short slices keeps it from halting
    /// long (benches/README.md section 10).
    pub max_sleep: Option<Duration>,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            realtime_priority: 0,
            cpu: None,
            rx_poll_ticks: 1,
            random_seed: None,
            raw_send: false,
            max_sleep: None,
        }
    }
}

/// Start one loop thread, named `audio-{index}`. `capacity` bounds the
/// command ring; events go to `events`.
pub fn spawn<S: EventSink>(
    index: usize,
    capacity: usize,
    options: LoopOptions,
    events: S,
) -> std::io::Result<AudioLoopHandle> {
    let (producer, consumer) = rtrb::RingBuffer::new(capacity);
    let stats = Arc::new(LoopStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let stream_starts = match options.random_seed {
        Some(seed) => StdRng::seed_from_u64(seed.wrapping_add(index as u64)),
        None => rand::make_rng(),
    };
    let thread = {
        let stats = stats.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("audio-{index}"))
            .spawn(move || {
                apply_options(index, &options);
                let cadence = Cadence {
                    rx_poll_ticks: options.rx_poll_ticks.max(1),
                    max_sleep: options.max_sleep,
                };
                let raw = if options.raw_send {
                    RawPath::Unopened { loop_index: index }
                } else {
                    RawPath::Off
                };
                run(consumer, events, stats, stop, cadence, stream_starts, raw)
            })?
    };
    Ok(AudioLoopHandle {
        commands: producer,
        stats,
        stop,
        thread: Some(thread),
    })
}

fn apply_options(index: usize, options: &LoopOptions) {
    if let Some(cpu) = options.cpu {
        // SAFETY: a zeroed cpu_set_t with one bit set, for this thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                tracing::warn!(index, cpu, "audio loop: cannot pin to CPU");
            }
        }
    }
    if options.realtime_priority > 0 {
        let param = libc::sched_param {
            sched_priority: options.realtime_priority.min(99),
        };
        // SAFETY: setting this thread's own scheduling policy.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        if rc != 0 {
            tracing::warn!(
                index,
                "audio loop: SCHED_FIFO refused (needs root or CAP_SYS_NICE); running with normal priority"
            );
        }
    }
}

/// The loop's raw socket for sends ([`crate::raw_send`]), opened for the
/// source address of the first IPv4 stream that sends.
enum RawPath {
    /// `raw_send = false`: every stream sends through its own socket.
    Off,
    /// Not needed yet.
    Unopened {
        loop_index: usize,
    },
    Open(Box<RawSender>),
    /// Refused (logged once): every stream sends through its own socket.
    Unavailable,
}

impl RawPath {
    /// Queue a datagram on the raw socket; false when the stream must
    /// send it through its own socket instead.
    fn push(&mut self, from: SocketAddrV4, to: SocketAddrV4, bytes: &[u8]) -> bool {
        if let RawPath::Unopened { loop_index } = *self {
            *self = match RawSender::open(*from.ip()) {
                Ok(raw) => RawPath::Open(Box::new(raw)),
                Err(e) => {
                    tracing::warn!(
                        index = loop_index,
                        error = %e,
                        "audio loop: no raw socket (needs root or CAP_NET_RAW); each call sends through its own socket"
                    );
                    RawPath::Unavailable
                }
            };
        }
        match self {
            RawPath::Open(raw) => raw.push(from, to, bytes),
            _ => false,
        }
    }
}

/// Send with the IPv4 don't-fragment bit and no IP ID: without it the
/// kernel draws every datagram's ID from a hashed table shared by all
/// CPUs, about 4 % of the loop's time at 6,000 calls (benches/README.md
/// section 10). RTP datagrams are far below any path MTU, so nothing is
/// lost; `PROBE` ignores path-MTU news, so no send ever fails for it.
fn without_ip_ids(socket: &UdpSocket) {
    if !socket.local_addr().is_ok_and(|a| a.is_ipv4()) {
        return;
    }
    // Best effort: without it the kernel only spends more per datagram.
    let _ = set_socket_int(
        socket,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_PROBE,
    );
}

/// A stream that has received nothing for this many ticks (1 s) is quiet:
/// its caller sends nothing (on hold, or a one-way stream). Its RTP socket
/// is then polled only every `QUIET_POLL_TICKS` (or `rx_poll_ticks`, if
/// larger), so a silent stream costs a fifth of the empty reads; the first
/// packet it gets puts it back on the normal rate. (An epoll set was tried
/// instead and lost: a socket in one takes a wake-up call on every packet
/// it sends; benches/README.md section 10.)
const QUIET_AFTER_TICKS: u32 = 50;
/// How often a quiet stream's RTP socket is read (500 ms).
const QUIET_POLL_TICKS: u32 = 25;
/// RTCP comes every few seconds and only feeds statistics: read it every
/// second (staggered by stream), not on every RTP poll.
const RTCP_POLL_TICKS: u64 = 50;

/// How often the loop reads sockets, and how long it may sleep at once.
#[derive(Clone, Copy)]
struct Cadence {
    rx_poll_ticks: u32,
    max_sleep: Option<Duration>,
}

fn run<S: EventSink>(
    mut commands: rtrb::Consumer<Command>,
    events: S,
    stats: Arc<LoopStats>,
    stop: Arc<AtomicBool>,
    cadence: Cadence,
    mut stream_starts: StdRng,
    mut raw: RawPath,
) {
    let mut tick: u64 = 0;
    let mut subtick: u64 = 0;
    let mut groups = Groups::default();
    let mut bridges: std::collections::HashMap<StreamId, BridgeEnd> =
        std::collections::HashMap::with_capacity(256);
    let mut deadline = clock::now();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut fade_buf = [0i16; FRAME_SAMPLES];
    let mut payload = [0u8; FRAME_SAMPLES];
    // Up to three frames a packet (ptime 60).
    let mut packet = [0u8; 12 + FRAME_SAMPLES * 3 + 64];
    let mut rx = [0u8; 2048];
    let mut rtcp_buf = [0u8; 512];
    let mut rx_pcm = [0i16; 480];
    let mut load = LoadMeter::default();
    let mut frame_busy_us = 0u64;
    let Cadence {
        rx_poll_ticks,
        max_sleep,
    } = cadence;
    while !stop.load(Ordering::Relaxed) {
        deadline = clock::add(deadline, SUBTICK);
        let now = clock::now();
        if clock::after(now, clock::add(deadline, FRAME * 5)) {
            // Far behind (suspended, overloaded): skip ahead rather than burst.
            stats.late_ticks.fetch_add(1, Ordering::Relaxed);
            deadline = now;
        } else {
            let naps = clock::sleep_until(deadline, max_sleep);
            if naps > 0 {
                stats.naps.fetch_add(naps, Ordering::Relaxed);
            }
        }
        let woke = clock::now();
        // Only a loop that went to sleep in time can be woken late.
        if clock::after(deadline, now) {
            let late_us = clock::micros_between(deadline, woke);
            if late_us > 1_000 {
                stats.late_wakeups.fetch_add(1, Ordering::Relaxed);
            }
            stats.max_wake_late_us.fetch_max(late_us, Ordering::Relaxed);
        }
        subtick = subtick.wrapping_add(1);
        let group = (subtick % SUBTICKS as u64) as usize;
        if group == 0 {
            stats.ticks.fetch_add(1, Ordering::Relaxed);
            tick = tick.wrapping_add(1);
        }
        let tick_start = woke;
        let (mut sent, mut send_errors) = (0u64, 0u64);
        let now_ms = clock::millis(tick_start);

        while let Ok(cmd) = commands.pop() {
            groups.apply(cmd, &mut bridges, &stats, &mut stream_starts, &events);
        }
        stats.streams.store(groups.len() as u64, Ordering::Relaxed);

        let Some(streams) = groups.0.get_mut(group) else {
            continue;
        };
        for s in streams.iter_mut() {
            s.ticks_since_rx = s.ticks_since_rx.saturating_add(1);
            // Each stream's socket is polled on its own slot of the cycle;
            // bridged streams every tick, since their audio is relayed, and
            // forked ones, whose listener hears the caller at once. A
            // recorded one's tap holds what a poll brings until its ticks
            // come.
            let bridged = bridges.contains_key(&s.spec.id) || s.fork.is_some();
            let poll_every = if s.ticks_since_rx > QUIET_AFTER_TICKS {
                u64::from(rx_poll_ticks.max(QUIET_POLL_TICKS))
            } else {
                u64::from(rx_poll_ticks)
            };
            if bridged || s.spec.id % poll_every == tick % poll_every {
                // Drain incoming RTP: latch to its source (symmetric RTP).
                let mut got = 0u64;
                while let Ok((n, from)) = s.spec.socket.recv_from(&mut rx) {
                    let Some(data) = rx.get(..n) else { break };
                    if let Ok(view) = parse_rtp(data) {
                        got += 1;
                        s.rtcp
                            .on_rtp_received(now_ms, view.ssrc, view.sequence, view.timestamp);
                        if Some(view.payload_type) == s.spec.telephone_event_pt {
                            if let Some(d) =
                                s.dtmf_rx
                                    .on_packet(view.timestamp, view.marker, view.payload)
                            {
                                events.send(MediaEvent::Dtmf(s.spec.id, d.digit));
                                let peer = bridges.get(&s.spec.id).map(|b| b.peer);
                                if let Some(end) = peer.and_then(|p| bridges.get_mut(&p)) {
                                    end.pending_dtmf = Some(d.digit);
                                }
                            }
                        } else if view.payload_type == s.spec.payload_type {
                            if let Some(fork) = &s.fork {
                                let alaw = s.spec.encoding == Encoding::Pcma;
                                fork.push(Track::Inbound, view.payload, alaw);
                            }
                            let mut end = bridges.get_mut(&s.spec.id);
                            if end.is_some() || s.tap.is_some() {
                                // G.711: one byte per sample, any packet size.
                                for chunk in view.payload.chunks(rx_pcm.len()) {
                                    let n = match s.spec.encoding {
                                        Encoding::Pcmu => g711::decode_ulaw(chunk, &mut rx_pcm),
                                        Encoding::Pcma => g711::decode_alaw(chunk, &mut rx_pcm),
                                    };
                                    let samples = rx_pcm.get(..n).unwrap_or_default();
                                    if let Some(end) = end.as_deref_mut() {
                                        end.push_samples(now_ms, samples);
                                    }
                                    if let Some(tap) = s.tap.as_deref_mut() {
                                        tap.received(samples);
                                    }
                                }
                            }
                        }
                        // Latch once: later sources can't hijack the stream.
                        if !s.latched {
                            s.spec.remote = from;
                            s.latched = true;
                        }
                    }
                }
                if got > 0 {
                    stats.packets_received.fetch_add(got, Ordering::Relaxed);
                    s.ticks_since_rx = 0;
                }
            }
            if s.spec.id % RTCP_POLL_TICKS == tick % RTCP_POLL_TICKS {
                if let Some(sock) = &s.spec.rtcp_socket {
                    while let Ok((n, from)) = sock.recv_from(&mut rx) {
                        let Some(data) = rx.get(..n) else { break };
                        if let Ok(packets) = parse_compound(data) {
                            s.rtcp.on_rtcp_received(now_ms, &packets);
                            s.rtcp_remote = from;
                        }
                    }
                }
            }
            // RTCP reports about every 5 s (randomised, RFC 3550 §6.3).
            if group_tick_due(&mut s.ticks_to_rtcp) {
                s.count_reception(&stats);
                if let Some(sock) = &s.spec.rtcp_socket {
                    let ntp = wall_ntp();
                    if let Ok(len) = s.rtcp.build_report(ntp, now_ms, s.timestamp, &mut rtcp_buf) {
                        if let Some(bytes) = rtcp_buf.get(..len) {
                            let _ = sock.send_to(bytes, s.rtcp_remote);
                        }
                    }
                }
            }
            if s.timeout_ticks > 0 && s.ticks_since_rx >= s.timeout_ticks && !s.timed_out {
                s.timed_out = true;
                events.send(MediaEvent::RtpTimeout(s.spec.id));
            }

            if !s.sending {
                // Keep the clock running so timestamps stay continuous.
                s.timestamp = s.timestamp.wrapping_add(FRAME_SAMPLES as u32);
                if let Some(tap) = s.tap.as_deref_mut() {
                    tap.frame(&[0; FRAME_SAMPLES]);
                }
                if let Some(p) = s.packing.as_deref_mut() {
                    p.frames = 0;
                }
                continue;
            }
            // Bridged: play what the peer's jitter buffer holds, not the player.
            let peer = bridges.get(&s.spec.id).map(|b| b.peer);
            if let Some(from_peer) = peer.and_then(|p| bridges.get_mut(&p)) {
                from_peer.jitter.pop(now_ms, &mut pcm);
                // No click where the hold music gives way to the agent.
                if std::mem::take(&mut s.fade_into_bridge) {
                    let _ = s.player.fill(&mut fade_buf);
                    crossfade(&fade_buf, &mut pcm);
                }
                if let Some(d) = bridges
                    .get_mut(&s.spec.id)
                    .and_then(|b| b.pending_dtmf.take())
                {
                    if let Ok(sender) = DtmfSender::new(d, 100, 10) {
                        s.dtmf_tx = Some((sender, s.timestamp));
                    }
                }
            } else {
                match s.player.fill(&mut pcm) {
                    FrameNote::Finished => {
                        events.send(MediaEvent::SourceFinished(s.spec.id, s.generation));
                    }
                    FrameNote::TalkStart => s.marker_next = true,
                    FrameNote::None => {}
                }
            }
            if let Some(mut old) = s.fading_from.take() {
                old.fill(&mut fade_buf);
                crossfade(&fade_buf, &mut pcm);
            }
            if let Some(tap) = s.tap.as_deref_mut() {
                tap.frame(&pcm);
            }
            match s.spec.encoding {
                Encoding::Pcmu => g711::encode_ulaw(&pcm, &mut payload),
                Encoding::Pcma => g711::encode_alaw(&pcm, &mut payload),
            };
            if let Some(fork) = &s.fork {
                fork.push(Track::Outbound, &payload, s.spec.encoding == Encoding::Pcma);
            }
            let mut marker = std::mem::take(&mut s.marker_next);
            let mut event = [0u8; 4];
            let mut body: &[u8] = &payload;
            let mut pt = s.spec.payload_type;
            let mut ts = s.timestamp;
            let mut digit = false;
            if let (Some((sender, start_ts)), Some(te_pt)) =
                (s.dtmf_tx.as_mut(), s.spec.telephone_event_pt)
            {
                match sender.next_payload(&mut event) {
                    Some((event_marker, _)) => {
                        marker = event_marker;
                        body = &event;
                        pt = te_pt;
                        ts = *start_ts;
                        digit = true;
                    }
                    None => {
                        // The digit is over: audio resumes in this frame.
                        s.dtmf_tx = None;
                        marker = true;
                    }
                }
            }
            // The clock moves one frame whatever goes out this tick.
            let frame_ts = s.timestamp;
            s.timestamp = s.timestamp.wrapping_add(FRAME_SAMPLES as u32);
            if let Some(p) = s.packing.as_deref_mut() {
                if digit {
                    // Event packets replace the audio: start afresh after.
                    p.frames = 0;
                } else {
                    if p.frames == 0 {
                        p.timestamp = ts;
                        p.marker = false;
                    }
                    p.marker |= marker;
                    let at = p.frames * FRAME_SAMPLES;
                    if let Some(slot) = p.payload.get_mut(at..at + FRAME_SAMPLES) {
                        slot.copy_from_slice(&payload);
                    }
                    p.frames += 1;
                    if p.frames < usize::from(s.spec.frames_per_packet) {
                        continue;
                    }
                    body = p
                        .payload
                        .get(..p.frames * FRAME_SAMPLES)
                        .unwrap_or(&payload);
                    ts = p.timestamp;
                    marker = p.marker;
                    p.frames = 0;
                }
            }
            s.rtcp.on_rtp_sent(frame_ts, body.len());
            if let Ok(len) = write_rtp(&mut packet, pt, marker, s.seq, ts, s.ssrc, body) {
                if let Some(bytes) = packet.get(..len) {
                    let batched = match (s.raw_source, s.spec.remote) {
                        (Some(from), SocketAddr::V4(to)) => raw.push(from, to, bytes),
                        _ => false,
                    };
                    if !batched {
                        match s.spec.socket.send_to(bytes, s.spec.remote) {
                            Ok(_) => sent += 1,
                            Err(_) => send_errors += 1,
                        }
                    }
                }
            }
            s.seq = s.seq.wrapping_add(1);
        }
        if let RawPath::Open(raw) = &mut raw {
            raw.flush();
            let (ok, refused) = raw.take_counts();
            sent += ok;
            send_errors += refused;
            stats.packets_sent_raw.fetch_add(ok, Ordering::Relaxed);
        }
        // Counters once per tick, not per packet.
        stats.packets_sent.fetch_add(sent, Ordering::Relaxed);
        stats.send_errors.fetch_add(send_errors, Ordering::Relaxed);
        let busy = clock::micros_between(tick_start, clock::now());
        stats.busy_us.fetch_add(busy, Ordering::Relaxed);
        stats.max_tick_us.fetch_max(busy, Ordering::Relaxed);
        frame_busy_us += busy;
        if group == SUBTICKS - 1 {
            let share = load.record(Duration::from_micros(frame_busy_us), FRAME);
            stats.load.store(share, Ordering::Relaxed);
            frame_busy_us = 0;
        }
    }
}

/// After a burst, give back a group's spare slots once it is at most a
/// quarter full, keeping room for twice what is left, so steady churn
/// never shrinks and regrows it. A few dozen slots are kept regardless.
fn release_spare<T>(group: &mut Vec<T>) {
    const KEEP: usize = 64;
    if group.capacity() > KEEP && group.len() * 4 < group.capacity() {
        group.shrink_to((group.len() * 2).max(KEEP));
    }
}

/// Streams split into sub-tick groups: group g is served at g × 5 ms into
/// each 20 ms frame, so one wake-up does a quarter of the work and a
/// stream's send time within its frame varies four times less.
#[derive(Default)]
struct Groups([Vec<Stream>; SUBTICKS]);

impl Groups {
    fn len(&self) -> usize {
        self.0.iter().map(Vec::len).sum()
    }

    fn find_mut(&mut self, id: StreamId) -> Option<&mut Stream> {
        self.0
            .iter_mut()
            .flat_map(|g| g.iter_mut())
            .find(|s| s.spec.id == id)
    }

    fn apply(
        &mut self,
        cmd: Command,
        bridges: &mut std::collections::HashMap<StreamId, BridgeEnd>,
        stats: &LoopStats,
        stream_starts: &mut StdRng,
        events: &impl EventSink,
    ) {
        match cmd {
            Command::Start(spec) => {
                // A blocking socket would stall every stream on this loop.
                let rtcp_ok = spec
                    .rtcp_socket
                    .as_ref()
                    .is_none_or(|s| s.set_nonblocking(true).is_ok());
                if spec.socket.set_nonblocking(true).is_err() || !rtcp_ok {
                    return;
                }
                without_ip_ids(&spec.socket);
                if let Some(rtcp) = &spec.rtcp_socket {
                    without_ip_ids(rtcp);
                }
                let raw_source = match spec.socket.local_addr() {
                    Ok(SocketAddr::V4(a)) if !a.ip().is_unspecified() => Some(a),
                    _ => None,
                };
                // The emptiest group keeps the sub-ticks balanced.
                if let Some(g) = self.0.iter_mut().min_by_key(|g| g.len()) {
                    let mut stream = Stream::new(*spec, stream_starts);
                    stream.raw_source = raw_source;
                    g.push(stream);
                }
            }
            Command::Stop(id) => {
                unbridge(bridges, id);
                for g in self.0.iter_mut() {
                    if let Some(i) = g.iter().position(|s| s.spec.id == id) {
                        let mut s = g.swap_remove(i);
                        release_spare(g);
                        s.count_reception(stats);
                        // RTCP BYE: the peer learns the stream is gone.
                        let mut buf = [0u8; 128];
                        if let (Some(sock), Ok(len)) =
                            (&s.spec.rtcp_socket, s.rtcp.build_bye(None, &mut buf))
                        {
                            if let Some(bytes) = buf.get(..len) {
                                let _ = sock.send_to(bytes, s.rtcp_remote);
                            }
                        }
                        return;
                    }
                }
            }
            Command::Bridge(a, b) => {
                unbridge(bridges, a);
                unbridge(bridges, b);
                if let (Some(ea), Some(eb)) = (BridgeEnd::new(b), BridgeEnd::new(a)) {
                    bridges.insert(a, ea);
                    bridges.insert(b, eb);
                }
                for id in [a, b] {
                    if let Some(s) = self.find_mut(id) {
                        s.marker_next = true;
                        s.fade_into_bridge = true;
                    }
                }
            }
            Command::Unbridge(id) => unbridge(bridges, id),
            Command::Detach(id, mut moving) => {
                unbridge(bridges, id);
                for g in self.0.iter_mut() {
                    if let Some(i) = g.iter().position(|s| s.spec.id == id) {
                        moving.0 = Some(g.swap_remove(i));
                        release_spare(g);
                        break;
                    }
                }
                events.send(MediaEvent::Detached(moving));
            }
            Command::Adopt(mut moving) => {
                if let (Some(stream), Some(g)) =
                    (moving.0.take(), self.0.iter_mut().min_by_key(|g| g.len()))
                {
                    g.push(stream);
                }
            }
            Command::Record(id, tap) => {
                if let Some(s) = self.find_mut(id) {
                    s.tap = Some(tap);
                }
            }
            Command::StopRecording(id) => {
                if let Some(s) = self.find_mut(id) {
                    s.tap = None;
                }
            }
            Command::SendDtmf(id, digit, duration_ms) => {
                if let Some(s) = self.find_mut(id) {
                    if let Ok(sender) = DtmfSender::new(digit, duration_ms, 10) {
                        s.dtmf_tx = Some((sender, s.timestamp));
                    }
                }
            }
            Command::SetSource(id, source, generation) => {
                if let Some(s) = self.find_mut(id) {
                    s.generation = generation;
                    let old = std::mem::replace(&mut s.player, Player::new(source));
                    s.fading_from = Some(old);
                    s.marker_next = true;
                }
            }
            Command::SetSending(id, sending) => {
                if let Some(s) = self.find_mut(id) {
                    s.sending = sending;
                    s.marker_next |= sending;
                }
            }
            Command::SetRemote(id, remote) => {
                if let Some(s) = self.find_mut(id) {
                    s.spec.remote = remote;
                    s.rtcp_remote = SocketAddr::new(remote.ip(), remote.port().wrapping_add(1));
                    s.latched = false;
                }
            }
            Command::Tap(id, fork) => {
                if let Some(s) = self.find_mut(id) {
                    s.fork = fork;
                }
            }
        }
    }
}

/// Remove both directions of the bridge `id` is in.
fn unbridge(bridges: &mut std::collections::HashMap<StreamId, BridgeEnd>, id: StreamId) {
    if let Some(end) = bridges.remove(&id) {
        bridges.remove(&end.peer);
    }
}

/// Frames until the next RTCP report: 5 s ± 50 % (RFC 3550 §6.3.1).
fn rtcp_interval_ticks() -> u32 {
    (report_interval_ms(5_000, rand::random::<f64>()) / FRAME.as_millis() as u64) as u32
}

/// Count a frame down; true (and re-armed) when it reaches zero.
fn group_tick_due(ticks: &mut u32) -> bool {
    *ticks = ticks.saturating_sub(1);
    if *ticks == 0 {
        *ticks = rtcp_interval_ticks();
        true
    } else {
        false
    }
}

/// Wall clock as a 64-bit NTP timestamp, for sender reports.
fn wall_ntp() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    ntp_from_unix(now.as_secs(), now.subsec_nanos())
}

/// Absolute-deadline sleeping on CLOCK_MONOTONIC.
mod clock {
    use std::time::Duration;

    pub(super) type Ts = libc::timespec;

    pub(super) fn now() -> Ts {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe {
            libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        }
        ts
    }

    pub(super) fn add(ts: Ts, d: Duration) -> Ts {
        let mut sec = ts.tv_sec + d.as_secs() as libc::time_t;
        let mut nsec = ts.tv_nsec + d.subsec_nanos() as libc::c_long;
        if nsec >= 1_000_000_000 {
            sec += 1;
            nsec -= 1_000_000_000;
        }
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        }
    }

    pub(super) fn millis(t: Ts) -> u64 {
        (t.tv_sec.max(0) as u64) * 1000 + (t.tv_nsec.max(0) as u64) / 1_000_000
    }

    pub(super) fn micros_between(a: Ts, b: Ts) -> u64 {
        let ns = (b.tv_sec - a.tv_sec) * 1_000_000_000 + (b.tv_nsec - a.tv_nsec);
        (ns.max(0) / 1000) as u64
    }

    pub(super) fn after(a: Ts, b: Ts) -> bool {
        (a.tv_sec, a.tv_nsec) > (b.tv_sec, b.tv_nsec)
    }

    /// Sleep until `deadline`, in naps of at most `max_nap` if given;
    /// returns how many naps came before the last one.
    pub(super) fn sleep_until(deadline: Ts, max_nap: Option<Duration>) -> u64 {
        let mut naps = 0;
        if let Some(nap) = max_nap {
            loop {
                let next = add(now(), nap);
                if !after(deadline, next) {
                    break;
                }
                nap_until(next);
                naps += 1;
            }
        }
        nap_until(deadline);
        naps
    }

    fn nap_until(deadline: Ts) {
        loop {
            // SAFETY: a valid timespec and a null remainder with TIMER_ABSTIME.
            let rc = unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &deadline,
                    std::ptr::null_mut(),
                )
            };
            if rc != libc::EINTR {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record_tap::RecordFrame;

    #[test]
    fn a_group_emptied_after_a_burst_gives_back_its_slots_and_a_busy_one_does_not() {
        let mut group: Vec<u64> = (0..3_000).collect();
        group.truncate(1_000); // a third full: kept
        release_spare(&mut group);
        assert!(group.capacity() >= 3_000);
        group.truncate(500);
        release_spare(&mut group);
        assert!(
            (1_000..2_000).contains(&group.capacity()),
            "{}",
            group.capacity()
        );
        group.clear();
        release_spare(&mut group);
        assert!(group.capacity() <= 64, "{}", group.capacity());
        let mut small: Vec<u64> = Vec::with_capacity(60);
        release_spare(&mut small);
        assert_eq!(small.capacity(), 60);
    }

    /// A PCMU stream playing silence to `remote`, from a fresh socket.
    fn silent_pcmu(id: StreamId, remote: SocketAddr) -> StreamSpec {
        StreamSpec {
            id,
            socket: UdpSocket::bind("127.0.0.1:0").unwrap(),
            rtcp_socket: None,
            telephone_event_pt: None,
            remote,
            encoding: Encoding::Pcmu,
            payload_type: 0,
            frames_per_packet: 1,
            source: Source::Silence,
            rtp_timeout: Duration::ZERO,
        }
    }

    /// SSRC, sequence and timestamp of the first packet of the first stream
    /// started on loop `index` seeded with `seed`.
    fn first_stream_start(index: usize, seed: Option<u64>) -> (u32, u16, u32) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let options = LoopOptions {
            random_seed: seed,
            ..LoopOptions::default()
        };
        let (ev_tx, _ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let mut handle = spawn(index, 16, options, ev_tx).unwrap();
        let spec = silent_pcmu(1, rx.local_addr().unwrap());
        assert!(handle.send(Command::Start(Box::new(spec))).is_ok());
        let mut buf = [0u8; 512];
        let (n, _) = rx.recv_from(&mut buf).unwrap();
        handle.shutdown();
        let v = parse_rtp(&buf[..n]).unwrap();
        (v.ssrc, v.sequence, v.timestamp)
    }

    /// A stream detached from one loop and adopted by another keeps its
    /// socket, SSRC and sequence: the peer sees one unbroken stream.
    #[test]
    fn a_stream_moves_between_loops_unbroken() {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let (ev_tx, ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let mut from = spawn(0, 16, LoopOptions::default(), ev_tx.clone()).unwrap();
        let mut to = spawn(1, 16, LoopOptions::default(), ev_tx).unwrap();
        let spec = silent_pcmu(7, peer.local_addr().unwrap());
        assert!(from.send(Command::Start(Box::new(spec))).is_ok());
        let mut buf = [0u8; 512];
        let (n, sender) = peer.recv_from(&mut buf).unwrap();
        let first = parse_rtp(&buf[..n]).unwrap();
        let (ssrc, first_seq) = (first.ssrc, first.sequence);
        assert!(from.send(Command::Detach(7, MovingStream::boxed())).is_ok());
        let moving = match ev_rx.recv_timeout(Duration::from_secs(2)).unwrap() {
            MediaEvent::Detached(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(moving.id(), Some(7));
        assert!(to.send(Command::Adopt(moving)).is_ok());
        // Drain what the first loop sent, then the adopted stream goes on.
        std::thread::sleep(Duration::from_millis(100));
        let mut last = None;
        for _ in 0..10 {
            let (n, from_addr) = peer.recv_from(&mut buf).unwrap();
            assert_eq!(from_addr, sender, "the same socket");
            let v = parse_rtp(&buf[..n]).unwrap();
            assert_eq!(v.ssrc, ssrc);
            if let Some(prev) = last {
                assert_eq!(v.sequence, u16::wrapping_add(prev, 1), "no gap, no reset");
            }
            last = Some(v.sequence);
        }
        assert!(last.is_some_and(|l: u16| l.wrapping_sub(first_seq) >= 10));
        assert_eq!(from.stats.streams.load(Ordering::Relaxed), 0);
        assert_eq!(to.stats.streams.load(Ordering::Relaxed), 1);
        // Detaching a stream the loop doesn't have hands back an empty box.
        assert!(from
            .send(Command::Detach(99, MovingStream::boxed()))
            .is_ok());
        match ev_rx.recv_timeout(Duration::from_secs(2)).unwrap() {
            MediaEvent::Detached(m) => assert_eq!(m.id(), None),
            other => panic!("{other:?}"),
        }
        from.shutdown();
        to.shutdown();
    }

    /// A tapped stream copies what it hears and what it sends, as μ-law;
    /// a live source plays the frames fed to it, then silence.
    #[test]
    fn a_tap_copies_both_ways_and_a_live_source_plays_what_is_fed() {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ours_addr = ours.local_addr().unwrap();
        let (ev_tx, _ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let mut handle = spawn(0, 16, LoopOptions::default(), ev_tx).unwrap();
        let live = Arc::new(crate::live::LiveAudio::new(50));
        for _ in 0..5 {
            live.push_frame([g711::linear_to_ulaw(4000); FRAME_SAMPLES]);
        }
        live.push_mark(9);
        let spec = StreamSpec {
            id: 3,
            socket: ours,
            rtcp_socket: None,
            telephone_event_pt: None,
            remote: peer.local_addr().unwrap(),
            encoding: Encoding::Pcma,
            payload_type: 8,
            frames_per_packet: 1,
            source: Source::Live(live.clone()),
            rtp_timeout: Duration::ZERO,
        };
        let tap = Arc::new(StreamTap::new(true, true, 100));
        assert!(handle.send(Command::Start(Box::new(spec))).is_ok());
        assert!(handle.send(Command::Tap(3, Some(tap.clone()))).is_ok());
        let mut buf = [0u8; 512];
        let mut levels = Vec::new();
        for i in 0..10u16 {
            let (n, _) = peer.recv_from(&mut buf).unwrap();
            let v = parse_rtp(&buf[..n]).unwrap();
            levels.push(g711::alaw_to_linear(v.payload[0]));
            // The caller talks back: A-law, which the tap re-codes.
            let mut pkt = [0u8; 12 + FRAME_SAMPLES];
            let len = write_rtp(
                &mut pkt,
                8,
                false,
                i,
                u32::from(i) * 160,
                42,
                &[g711::linear_to_alaw(-2000); FRAME_SAMPLES],
            )
            .unwrap();
            peer.send_to(&pkt[..len], ours_addr).unwrap();
        }
        std::thread::sleep(Duration::from_millis(60));
        handle.shutdown();
        // Tap is set a tick after the start at the latest: most of the
        // fed frames went out, then silence.
        assert!(
            levels.iter().filter(|l| (**l - 4000).abs() < 300).count() >= 4,
            "{levels:?}"
        );
        assert_eq!(levels[9], g711::alaw_to_linear(g711::linear_to_alaw(0)));
        assert_eq!(live.next_played_mark(), Some(9));
        let (mut inbound, mut outbound) = (0, 0);
        while let Some(f) = tap.pop() {
            match f.track {
                Track::Inbound => {
                    inbound += 1;
                    let s = g711::ulaw_to_linear(f.payload()[0]);
                    assert!((s + 2000).abs() < 100, "{s}");
                }
                Track::Outbound => outbound += 1,
            }
        }
        assert!(inbound >= 8, "{inbound} inbound frames");
        assert!(outbound >= 8, "{outbound} outbound frames");
    }

    #[test]
    fn a_seed_replays_each_loops_stream_starts() {
        let first = first_stream_start(0, Some(7));
        assert_eq!(first, first_stream_start(0, Some(7)));
        assert_ne!(first, first_stream_start(0, Some(8)));
        // Loop 1 draws from seed + 1: its own values, not loop 0's.
        assert_ne!(first, first_stream_start(1, Some(7)));
        assert_eq!(
            first_stream_start(1, Some(7)),
            first_stream_start(0, Some(8))
        );
        assert_ne!(first_stream_start(0, None), first_stream_start(0, None));
    }

    #[test]
    fn a_stream_sends_paced_continuous_rtp_and_reports_the_clip_end() {
        sends_paced_continuous_rtp(false, None);
    }

    /// Sleeping in 500 us naps (`loop_max_sleep_us = 500`) wakes the loop
    /// about nine times a sub-tick, and the pacing is the same.
    #[test]
    fn sleeping_in_naps_keeps_the_same_pacing() {
        sends_paced_continuous_rtp(false, Some(Duration::from_micros(500)));
    }

    /// The same through the loop's raw socket: same packets, from the
    /// stream's own port, all counted as sent through it. Needs CAP_NET_RAW
    /// (the suite runs as root); without it the loop falls back to the
    /// socket path and this test fails on that count.
    #[test]
    fn the_raw_socket_sends_the_same_stream_from_its_own_port() {
        sends_paced_continuous_rtp(true, None);
    }

    fn sends_paced_continuous_rtp(raw_send: bool, max_sleep: Option<Duration>) {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx_addr = tx.local_addr().unwrap();
        let (ev_tx, ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let options = LoopOptions {
            raw_send,
            max_sleep,
            ..LoopOptions::default()
        };
        let mut handle = spawn(0, 16, options, ev_tx).unwrap();
        // 10 frames of a ramp, not looped.
        let samples: Arc<[i16]> = (0..1600).map(|i| (i * 10) as i16).collect();
        let spec = StreamSpec {
            id: 7,
            socket: tx,
            rtcp_socket: None,
            telephone_event_pt: None,
            remote: rx.local_addr().unwrap(),
            encoding: Encoding::Pcma,
            payload_type: 8,
            frames_per_packet: 1,
            source: Source::Clip {
                samples,
                looped: false,
            },
            rtp_timeout: Duration::ZERO,
        };
        assert!(handle.send(Command::Start(Box::new(spec))).is_ok());
        let mut buf = [0u8; 512];
        let mut seen = Vec::new();
        for _ in 0..15 {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(from, tx_addr, "from the stream's own port");
            let v = parse_rtp(&buf[..n]).unwrap();
            seen.push((
                v.sequence,
                v.timestamp,
                v.marker,
                v.payload_type,
                v.payload.len(),
                std::time::Instant::now(),
            ));
        }
        // The loop counts a packet once its send returns, so the receiver
        // can read the 15th first: stop the loop, then read the counters.
        handle.shutdown();
        let sent = handle.stats.packets_sent.load(Ordering::Relaxed);
        let raw_sent = handle.stats.packets_sent_raw.load(Ordering::Relaxed);
        let refused = handle.stats.send_errors.load(Ordering::Relaxed);
        let naps = handle.stats.naps.load(Ordering::Relaxed);
        assert!(sent >= 15, "{sent} counted as sent");
        if max_sleep.is_some() {
            // 15 frames, 4 sub-ticks each, up to 9 naps a sub-tick.
            assert!(naps >= 200, "{naps} naps");
        } else {
            assert_eq!(naps, 0);
        }
        assert_eq!(refused, 0);
        if raw_send {
            assert_eq!(raw_sent, sent, "every packet through the raw socket");
        } else {
            assert_eq!(raw_sent, 0);
        }
        assert!(seen[0].2, "marker on the first packet");
        assert!(seen[1..].iter().all(|p| !p.2));
        for w in seen.windows(2) {
            assert_eq!(w[1].0, w[0].0.wrapping_add(1));
            assert_eq!(w[1].1, w[0].1.wrapping_add(160));
            assert_eq!(w[1].3, 8);
            assert_eq!(w[1].4, 160);
        }
        let span = seen[14].5 - seen[0].5;
        assert!(
            span >= Duration::from_millis(250) && span <= Duration::from_millis(400),
            "{span:?}"
        );
        assert_eq!(ev_rx.try_recv(), Ok(MediaEvent::SourceFinished(7, 0)));
    }

    /// ptime 40 and 60: one packet per two or three frames, each carrying
    /// them all, timestamps 320/480 apart, sequence numbers 1 apart, paced.
    #[test]
    fn longer_ptime_packs_whole_frames_into_each_packet() {
        for frames in [2u8, 3] {
            let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (ev_tx, _ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
            let mut handle = spawn(0, 16, LoopOptions::default(), ev_tx).unwrap();
            let samples: Arc<[i16]> = (0..8000).map(|i| ((i % 80) * 100) as i16).collect();
            let spec = StreamSpec {
                id: 9,
                socket: tx,
                rtcp_socket: None,
                telephone_event_pt: None,
                remote: rx.local_addr().unwrap(),
                encoding: Encoding::Pcmu,
                payload_type: 0,
                frames_per_packet: frames,
                source: Source::Clip {
                    samples: samples.clone(),
                    looped: true,
                },
                rtp_timeout: Duration::ZERO,
            };
            assert!(handle.send(Command::Start(Box::new(spec))).is_ok());
            let mut buf = [0u8; 1024];
            let mut seen = Vec::new();
            for _ in 0..8 {
                let (n, _) = rx.recv_from(&mut buf).unwrap();
                let v = parse_rtp(&buf[..n]).unwrap();
                let mut pcm = vec![0i16; v.payload.len()];
                crate::g711::decode_ulaw(v.payload, &mut pcm);
                seen.push((
                    v.sequence,
                    v.timestamp,
                    v.marker,
                    pcm,
                    std::time::Instant::now(),
                ));
            }
            handle.shutdown();
            let size = FRAME_SAMPLES * usize::from(frames);
            assert!(seen[0].2, "marker on the first packet");
            for w in seen.windows(2) {
                assert_eq!(
                    w[1].0,
                    w[0].0.wrapping_add(1),
                    "one sequence number a packet"
                );
                assert_eq!(
                    w[1].1,
                    w[0].1.wrapping_add(size as u32),
                    "timestamps a packet apart"
                );
                assert_eq!(w[1].3.len(), size);
                assert!(!w[1].2);
            }
            // Packets carry the clip in order: the ramp continues across them.
            let all: Vec<i16> = seen.iter().flat_map(|p| p.3.iter().copied()).collect();
            let start = samples.iter().position(|&x| x == all[0]).unwrap();
            for (i, got) in all.iter().enumerate() {
                let want = samples[(start + i) % samples.len()];
                assert!(
                    (i32::from(*got) - i32::from(want)).abs() <= i32::from(want).abs() / 16 + 8,
                    "sample {i}"
                );
            }
            let span = seen[7].4 - seen[0].4;
            let want = Duration::from_millis(20 * u64::from(frames) * 7);
            assert!(
                span >= want - Duration::from_millis(30)
                    && span <= want + Duration::from_millis(60),
                "{frames} frames a packet: 8 packets over {span:?}"
            );
        }
    }

    /// A recorded stream hands its writer one frame a tick: what it
    /// received (left) and what it sent (right); stopping abandons the ring.
    #[test]
    fn a_recorded_stream_taps_both_directions_each_tick() {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ours = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ours_addr = ours.local_addr().unwrap();
        let (ev_tx, _ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let mut handle = spawn(0, 16, LoopOptions::default(), ev_tx).unwrap();
        let sent: Arc<[i16]> = vec![4000i16; 1600].into();
        let spec = StreamSpec {
            id: 21,
            socket: ours,
            rtcp_socket: None,
            telephone_event_pt: None,
            remote: peer.local_addr().unwrap(),
            encoding: Encoding::Pcmu,
            payload_type: 0,
            frames_per_packet: 1,
            source: Source::Clip {
                samples: sent,
                looped: true,
            },
            rtp_timeout: Duration::ZERO,
        };
        assert!(handle.send(Command::Start(Box::new(spec))).is_ok());
        let (tap, mut frames, counters) = Tap::new(64);
        assert!(handle.send(Command::Record(21, Box::new(tap))).is_ok());
        let mut payload = [0u8; FRAME_SAMPLES];
        crate::g711::encode_ulaw(&[-2000; FRAME_SAMPLES], &mut payload);
        let mut packet = [0u8; 12 + FRAME_SAMPLES];
        for seq in 0..15u16 {
            let len = write_rtp(
                &mut packet,
                0,
                false,
                seq,
                u32::from(seq) * 160,
                9,
                &payload,
            )
            .unwrap();
            peer.send_to(&packet[..len], ours_addr).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(handle.send(Command::StopRecording(21)).is_ok());
        std::thread::sleep(Duration::from_millis(60));
        assert!(frames.is_abandoned(), "the loop let go of the tap");
        let got: Vec<RecordFrame> = std::iter::from_fn(|| frames.pop().ok()).collect();
        assert!(got.len() >= 12, "about one frame a tick: {}", got.len());
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 0);
        let heard = got
            .iter()
            .filter(|f| f.caller.iter().all(|&x| (x + 2000).abs() < 100))
            .count();
        assert!(heard >= 10, "the caller's audio on the left: {heard}");
        let played = got
            .iter()
            .filter(|f| f.other.iter().all(|&x| (x - 4000).abs() < 200))
            .count();
        assert!(played >= 10, "what we sent on the right: {played}");
        handle.shutdown();
    }

    /// Symmetric RTP (NAT): media goes to where the caller's RTP comes
    /// from, not where its SDP said; the first source wins, so a later
    /// stranger can't take the stream over.
    #[test]
    fn rtp_latches_to_the_first_source_and_keeps_it() {
        let sdp_said = UdpSocket::bind("127.0.0.1:0").unwrap();
        let behind_nat = UdpSocket::bind("127.0.0.1:0").unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&sdp_said, &behind_nat, &stranger] {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
        }
        let spec = silent_pcmu(11, sdp_said.local_addr().unwrap());
        let ours_addr = spec.socket.local_addr().unwrap();
        let (ev_tx, _ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let mut handle = spawn(0, 16, LoopOptions::default(), ev_tx).unwrap();
        assert!(handle.send(Command::Start(Box::new(spec))).is_ok());
        let mut buf = [0u8; 512];
        assert!(
            sdp_said.recv_from(&mut buf).is_ok(),
            "first to the SDP address"
        );
        let mut packet = [0u8; 172];
        let send_from = |sock: &UdpSocket, seq: u16, packet: &mut [u8; 172]| {
            let n = write_rtp(
                packet,
                0,
                false,
                seq,
                u32::from(seq) * 160,
                0x5eed,
                &[0xff; 160],
            )
            .unwrap();
            sock.send_to(&packet[..n], ours_addr).unwrap();
        };
        send_from(&behind_nat, 1, &mut packet);
        let latched = (0..20).any(|_| behind_nat.recv_from(&mut buf).is_ok());
        assert!(latched, "media follows the caller's real source");
        send_from(&stranger, 2, &mut packet);
        std::thread::sleep(Duration::from_millis(100));
        // Still to the first source, never to the stranger.
        assert!(
            stranger.recv_from(&mut buf).is_err(),
            "a later source took the stream over"
        );
        assert!(behind_nat.recv_from(&mut buf).is_ok());
        handle.shutdown();
    }

    /// A stream quiet for over a second is read less often, yet still
    /// latches on its caller's first packet well inside a second.
    #[test]
    fn a_quiet_stream_still_hears_its_caller_within_the_quiet_poll() {
        let sdp_said = UdpSocket::bind("127.0.0.1:0").unwrap();
        let caller = UdpSocket::bind("127.0.0.1:0").unwrap();
        caller
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let spec = silent_pcmu(12, sdp_said.local_addr().unwrap());
        let ours_addr = spec.socket.local_addr().unwrap();
        let (ev_tx, _ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let options = LoopOptions {
            rx_poll_ticks: 5,
            ..LoopOptions::default()
        };
        let mut handle = spawn(0, 16, options, ev_tx).unwrap();
        assert!(handle.send(Command::Start(Box::new(spec))).is_ok());
        // Quiet: 1.5 s with nothing from the caller.
        std::thread::sleep(Duration::from_millis(1500));
        let mut packet = [0u8; 172];
        let n = write_rtp(&mut packet, 0, false, 1, 160, 0x5eed, &[0xff; 160]).unwrap();
        caller.send_to(&packet[..n], ours_addr).unwrap();
        let sent = std::time::Instant::now();
        let mut buf = [0u8; 512];
        let mut latched_after = None;
        while sent.elapsed() < Duration::from_secs(2) {
            if caller.recv_from(&mut buf).is_ok() {
                latched_after = Some(sent.elapsed());
                break;
            }
        }
        let after = latched_after.expect("the quiet stream never heard its caller");
        // One quiet poll (500 ms) and a frame, with room for a busy box.
        assert!(after < Duration::from_millis(800), "{after:?}");
        assert!(handle.stats.packets_received.load(Ordering::Relaxed) >= 1);
        handle.shutdown();
    }

    #[test]
    fn sends_rfc4733_digits_in_the_same_stream_and_detects_incoming_ones() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx_addr = tx.local_addr().unwrap();
        let (ev_tx, ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let mut handle = spawn(0, 16, LoopOptions::default(), ev_tx).unwrap();
        let spec = StreamSpec {
            id: 9,
            socket: tx,
            rtcp_socket: None,
            remote: rx.local_addr().unwrap(),
            encoding: Encoding::Pcmu,
            payload_type: 0,
            frames_per_packet: 1,
            source: Source::Silence,
            rtp_timeout: Duration::ZERO,
            telephone_event_pt: Some(101),
        };
        assert!(handle.send(Command::Start(Box::new(spec))).is_ok());
        let mut buf = [0u8; 512];
        let _ = rx.recv_from(&mut buf).unwrap();
        assert!(handle.send(Command::SendDtmf(9, '5', 100)).is_ok());
        let mut events = Vec::new();
        let mut audio_after = None;
        for _ in 0..40 {
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            let v = parse_rtp(&buf[..n]).unwrap();
            if v.payload_type == 101 {
                let e = crate::dtmf::parse_event(v.payload).unwrap();
                events.push((v.marker, v.timestamp, e.end, e.digit()));
            } else if !events.is_empty() {
                audio_after = Some(v.marker);
                break;
            }
        }
        // 100 ms: 5 packets, the last one sent three times with E set.
        assert_eq!(events.len(), 7, "{events:?}");
        assert!(events[0].0, "marker on the first event packet");
        assert!(events
            .iter()
            .all(|e| e.1 == events[0].1 && e.3 == Some('5')));
        assert_eq!(events.iter().filter(|e| e.2).count(), 3);
        assert_eq!(audio_after, Some(true), "audio resumes with a marker");

        // Incoming: the SIPp-style digit sent back to the stream's socket.
        let mut sender = crate::dtmf::DtmfSender::new('#', 60, 10).unwrap();
        let mut payload = [0u8; 4];
        let mut seq = 1000u16;
        let mut packet = [0u8; 64];
        while let Some((marker, _)) = sender.next_payload(&mut payload) {
            let len = write_rtp(&mut packet, 101, marker, seq, 4242, 77, &payload).unwrap();
            rx.send_to(&packet[..len], tx_addr).unwrap();
            seq += 1;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        let mut got = Vec::new();
        while std::time::Instant::now() < deadline {
            while let Ok(ev) = ev_rx.try_recv() {
                got.push(ev);
            }
            if !got.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
                while let Ok(ev) = ev_rx.try_recv() {
                    got.push(ev);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        handle.shutdown();
        assert_eq!(got, vec![MediaEvent::Dtmf(9, '#')], "exactly one digit");
    }

    /// Switching source mid-stream keeps SSRC, sequence and timestamps
    /// continuous, marks the new talk start, and crossfades (no step).
    #[test]
    fn source_switch_keeps_the_stream_continuous() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ev_tx, _ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let mut handle = spawn(0, 16, LoopOptions::default(), ev_tx).unwrap();
        let loud: Arc<[i16]> = vec![8000i16; 1600].into();
        let spec = StreamSpec {
            id: 3,
            socket: tx,
            rtcp_socket: None,
            remote: rx.local_addr().unwrap(),
            encoding: Encoding::Pcmu,
            payload_type: 0,
            frames_per_packet: 1,
            source: Source::Clip {
                samples: loud,
                looped: true,
            },
            rtp_timeout: Duration::ZERO,
            telephone_event_pt: None,
        };
        assert!(handle.send(Command::Start(Box::new(spec))).is_ok());
        let mut buf = [0u8; 512];
        let mut pkts = Vec::new();
        for i in 0..20 {
            if i == 8 {
                let quiet: Arc<[i16]> = vec![-8000i16; 1600].into();
                assert!(handle
                    .send(Command::SetSource(
                        3,
                        Source::Clip {
                            samples: quiet,
                            looped: true
                        },
                        1
                    ))
                    .is_ok());
            }
            let (n, _) = rx.recv_from(&mut buf).unwrap();
            let v = parse_rtp(&buf[..n]).unwrap();
            let mut pcm = [0i16; 160];
            crate::g711::decode_ulaw(v.payload, &mut pcm);
            pkts.push((v.ssrc, v.sequence, v.timestamp, v.marker, pcm));
        }
        handle.shutdown();
        for w in pkts.windows(2) {
            assert_eq!(w[1].0, w[0].0);
            assert_eq!(w[1].1, w[0].1.wrapping_add(1));
            assert_eq!(w[1].2, w[0].2.wrapping_add(160));
        }
        let switch = pkts
            .iter()
            .position(|p| p.4[159] < 0)
            .expect("new source heard");
        assert!(pkts[switch].3, "marker where the new source starts");
        assert_eq!(
            pkts.iter().filter(|p| p.3).count(),
            2,
            "first packet and the switch"
        );
        let fade = &pkts[switch].4;
        let step = fade
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap();
        assert!(step < 1000, "crossfaded, largest step {step}");
    }

    /// Hold music giving way to a bridge fades out over one frame rather
    /// than stopping dead (a click).
    #[test]
    fn a_bridge_fades_the_hold_music_out() {
        let caller_far = UdpSocket::bind("127.0.0.1:0").unwrap();
        caller_far
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let caller_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let agent_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let nowhere = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ev_tx, _ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let mut handle = spawn(0, 16, LoopOptions::default(), ev_tx).unwrap();
        let music: Arc<[i16]> = vec![12_000i16; 1600].into();
        let spec = |id, socket, remote, source| StreamSpec {
            id,
            socket,
            rtcp_socket: None,
            remote,
            encoding: Encoding::Pcmu,
            payload_type: 0,
            frames_per_packet: 1,
            source,
            rtp_timeout: Duration::ZERO,
            telephone_event_pt: None,
        };
        let caller = spec(
            1,
            caller_sock,
            caller_far.local_addr().unwrap(),
            Source::Clip {
                samples: music,
                looped: true,
            },
        );
        let agent = spec(
            2,
            agent_sock,
            nowhere.local_addr().unwrap(),
            Source::Silence,
        );
        assert!(handle.send(Command::Start(Box::new(caller))).is_ok());
        assert!(handle.send(Command::Start(Box::new(agent))).is_ok());
        let mut buf = [0u8; 512];
        let frame = |buf: &mut [u8; 512]| {
            let (n, _) = caller_far.recv_from(buf).unwrap();
            let v = parse_rtp(&buf[..n]).unwrap();
            let mut pcm = [0i16; FRAME_SAMPLES];
            g711::decode_ulaw(v.payload, &mut pcm);
            pcm
        };
        for _ in 0..5 {
            frame(&mut buf);
        }
        assert!(handle.send(Command::Bridge(1, 2)).is_ok());
        // The agent is silent: the first frame that isn't music is the fade.
        let fade = (0..20)
            .map(|_| frame(&mut buf))
            .find(|f| f.iter().any(|x| *x < 11_000))
            .expect("the bridge took over");
        handle.shutdown();
        assert!(fade[0] > 11_000, "starts at the music's level: {}", fade[0]);
        let step = fade
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap();
        assert!(step < 1000, "faded, largest step {step}");
    }

    /// Two bridged streams relay audio both ways (any packet size) and pass
    /// DTMF through as RFC 4733.
    #[test]
    fn bridge_relays_audio_and_dtmf_between_streams() {
        let caller_far = UdpSocket::bind("127.0.0.1:0").unwrap();
        let agent_far = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&caller_far, &agent_far] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        let caller_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let agent_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let agent_addr = agent_sock.local_addr().unwrap();
        let caller_addr = caller_sock.local_addr().unwrap();
        let (ev_tx, _ev_rx) = std::sync::mpsc::channel::<MediaEvent>();
        let mut handle = spawn(0, 16, LoopOptions::default(), ev_tx).unwrap();
        let spec = |id, socket, remote, encoding, pt| StreamSpec {
            id,
            socket,
            rtcp_socket: None,
            remote,
            encoding,
            payload_type: pt,
            frames_per_packet: 1,
            source: Source::Silence,
            rtp_timeout: Duration::ZERO,
            telephone_event_pt: Some(101),
        };
        let s1 = spec(
            1,
            caller_sock,
            caller_far.local_addr().unwrap(),
            Encoding::Pcmu,
            0,
        );
        let s2 = spec(
            2,
            agent_sock,
            agent_far.local_addr().unwrap(),
            Encoding::Pcma,
            8,
        );
        assert!(handle.send(Command::Start(Box::new(s1))).is_ok());
        assert!(handle.send(Command::Start(Box::new(s2))).is_ok());
        assert!(handle.send(Command::Bridge(1, 2)).is_ok());
        // The agent talks in 30 ms A-law packets (a steady -8000 level).
        let mut a_law = [0u8; 240];
        crate::g711::encode_alaw(&[-8000i16; 240], &mut a_law);
        let mut packet = [0u8; 300];
        let mut heard = 0;
        let mut buf = [0u8; 512];
        for i in 0..40u16 {
            let n = write_rtp(&mut packet, 8, false, i, u32::from(i) * 240, 99, &a_law).unwrap();
            agent_far.send_to(&packet[..n], agent_addr).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            while let Ok((n, _)) = caller_far.recv_from(&mut buf) {
                let v = parse_rtp(&buf[..n]).unwrap();
                if v.payload_type == 0 {
                    let mut pcm = [0i16; 160];
                    crate::g711::decode_ulaw(v.payload, &mut pcm);
                    // A-law then µ-law quantisation: within a step or two.
                    if pcm.iter().all(|&x| (x + 8000).abs() < 600) {
                        heard += 1;
                    }
                }
                if caller_far
                    .set_read_timeout(Some(Duration::from_millis(1)))
                    .is_err()
                {
                    break;
                }
            }
            caller_far
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
        }
        assert!(heard >= 20, "caller heard the agent in {heard} frames");
        // A digit from the caller reaches the agent as telephone-event.
        let mut sender = crate::dtmf::DtmfSender::new('7', 60, 10).unwrap();
        let mut ev = [0u8; 4];
        let mut seq = 500u16;
        while let Some((marker, _)) = sender.next_payload(&mut ev) {
            let n = write_rtp(&mut packet, 101, marker, seq, 8000, 5, &ev).unwrap();
            caller_far.send_to(&packet[..n], caller_addr).unwrap();
            seq += 1;
        }
        let mut digits = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline && digits.len() < 3 {
            if let Ok((n, _)) = agent_far.recv_from(&mut buf) {
                let v = parse_rtp(&buf[..n]).unwrap();
                if v.payload_type == 101 {
                    digits.push(crate::dtmf::parse_event(v.payload).unwrap().digit());
                }
            }
        }
        assert!(
            !digits.is_empty() && digits.iter().all(|d| *d == Some('7')),
            "{digits:?}"
        );
        handle.shutdown();
    }
}
