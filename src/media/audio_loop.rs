//! The real-time audio loop: one thread serves every stream assigned to it,
//! waking at absolute 20 ms deadlines (clock_nanosleep on CLOCK_MONOTONIC).
//!
//! Inside a tick there are no locks and no allocation: control arrives
//! through a wait-free SPSC ring ([`rtrb`]), each stream owns its socket,
//! and packets are built in a stack buffer. Events going out (timeouts, a
//! clip ending) are rare and use an unbounded channel.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::g711;
use super::player::{crossfade, FrameNote, Player};
use super::rtp_packet::{parse_rtp, write_rtp};

/// Samples per 20 ms frame at 8 kHz.
pub const FRAME_SAMPLES: usize = 160;
pub const FRAME: Duration = Duration::from_millis(20);
/// Wake-ups per frame; each serves one group of streams.
const SUBTICKS: usize = 4;
const SUBTICK: Duration = Duration::from_millis(5);

pub type StreamId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Pcmu,
    Pcma,
}

pub use super::player::{HoldProgram, Source};

/// Everything the loop needs to run one stream.
#[derive(Debug)]
pub struct StreamSpec {
    pub id: StreamId,
    pub socket: UdpSocket,
    pub remote: SocketAddr,
    pub encoding: Encoding,
    pub payload_type: u8,
    pub source: Source,
    /// Hang up after this long without incoming RTP; zero disables.
    pub rtp_timeout: Duration,
}

pub enum Command {
    Start(Box<StreamSpec>),
    Stop(StreamId),
    SetSource(StreamId, Source),
    SetRemote(StreamId, SocketAddr),
    /// Hold: stop sending (the peer went sendonly/inactive) or resume.
    SetSending(StreamId, bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// No RTP arrived within the stream's timeout.
    RtpTimeout(StreamId),
    /// A non-looping clip played to its end.
    SourceFinished(StreamId),
}

/// Counters shared with the control side (relaxed atomics: statistics).
#[derive(Debug, Default)]
pub struct LoopStats {
    pub ticks: AtomicU64,
    pub late_ticks: AtomicU64,
    pub packets_sent: AtomicU64,
    pub packets_received: AtomicU64,
    pub send_errors: AtomicU64,
    pub streams: AtomicU64,
    /// Time spent working (not sleeping), summed over ticks.
    pub busy_us: AtomicU64,
    /// Longest single tick of work.
    pub max_tick_us: AtomicU64,
}

struct Stream {
    spec: StreamSpec,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    player: Player,
    /// The previous source, faded out over the next frame.
    fading_from: Option<Player>,
    marker_next: bool,
    latched: bool,
    ticks_since_rx: u32,
    timeout_ticks: u32,
    timed_out: bool,
    sending: bool,
}

impl Stream {
    fn new(spec: StreamSpec) -> Stream {
        let player = Player::new(spec.source.clone());
        let timeout_ticks = (spec.rtp_timeout.as_millis() / FRAME.as_millis()) as u32;
        Stream {
            spec,
            // RFC 3550: random SSRC and initial sequence/timestamp.
            ssrc: rand::random(),
            seq: rand::random(),
            timestamp: rand::random(),
            player,
            fading_from: None,
            marker_next: true,
            latched: false,
            ticks_since_rx: 0,
            timeout_ticks,
            timed_out: false,
            sending: true,
        }
    }
}

/// The control side's handle on one audio loop thread.
pub struct AudioLoopHandle {
    commands: rtrb::Producer<Command>,
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

/// Start one loop thread. `capacity` bounds the command ring.
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
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            realtime_priority: 0,
            cpu: None,
            rx_poll_ticks: 1,
        }
    }
}

pub fn spawn(
    index: usize,
    capacity: usize,
    options: LoopOptions,
    events: tokio::sync::mpsc::UnboundedSender<MediaEvent>,
) -> std::io::Result<AudioLoopHandle> {
    let (producer, consumer) = rtrb::RingBuffer::new(capacity);
    let stats = Arc::new(LoopStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let stats = stats.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("audio-{index}"))
            .spawn(move || {
                apply_options(index, &options);
                run(consumer, events, stats, stop, options.rx_poll_ticks.max(1))
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

fn run(
    mut commands: rtrb::Consumer<Command>,
    events: tokio::sync::mpsc::UnboundedSender<MediaEvent>,
    stats: Arc<LoopStats>,
    stop: Arc<AtomicBool>,
    rx_poll_ticks: u32,
) {
    let mut tick: u64 = 0;
    let mut subtick: u64 = 0;
    let mut groups = Groups::default();
    let mut deadline = clock::now();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut fade_buf = [0i16; FRAME_SAMPLES];
    let mut payload = [0u8; FRAME_SAMPLES];
    let mut packet = [0u8; 12 + FRAME_SAMPLES + 64];
    let mut rx = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        deadline = clock::add(deadline, SUBTICK);
        let now = clock::now();
        if clock::after(now, clock::add(deadline, FRAME * 5)) {
            // Far behind (suspended, overloaded): skip ahead rather than burst.
            stats.late_ticks.fetch_add(1, Ordering::Relaxed);
            deadline = now;
        } else {
            clock::sleep_until(deadline);
        }
        subtick = subtick.wrapping_add(1);
        let group = (subtick % SUBTICKS as u64) as usize;
        if group == 0 {
            stats.ticks.fetch_add(1, Ordering::Relaxed);
            tick = tick.wrapping_add(1);
        }
        let tick_start = clock::now();
        let poll_slot = (tick % u64::from(rx_poll_ticks)) as u32;
        let (mut sent, mut send_errors) = (0u64, 0u64);

        while let Ok(cmd) = commands.pop() {
            groups.apply(cmd);
        }
        stats.streams.store(groups.len() as u64, Ordering::Relaxed);

        let Some(streams) = groups.0.get_mut(group) else {
            continue;
        };
        for s in streams.iter_mut() {
            s.ticks_since_rx = s.ticks_since_rx.saturating_add(1);
            // Each stream's socket is polled on its own slot of the cycle.
            if (s.spec.id % u64::from(rx_poll_ticks)) as u32 == poll_slot {
                // Drain incoming RTP: latch to its source (symmetric RTP).
                let mut got = 0u64;
                while let Ok((n, from)) = s.spec.socket.recv_from(&mut rx) {
                    let Some(data) = rx.get(..n) else { break };
                    if parse_rtp(data).is_ok() {
                        got += 1;
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
            if s.timeout_ticks > 0 && s.ticks_since_rx >= s.timeout_ticks && !s.timed_out {
                s.timed_out = true;
                let _ = events.send(MediaEvent::RtpTimeout(s.spec.id));
            }

            if !s.sending {
                // Keep the clock running so timestamps stay continuous.
                s.timestamp = s.timestamp.wrapping_add(FRAME_SAMPLES as u32);
                continue;
            }
            match s.player.fill(&mut pcm) {
                FrameNote::Finished => {
                    let _ = events.send(MediaEvent::SourceFinished(s.spec.id));
                }
                FrameNote::TalkStart => s.marker_next = true,
                FrameNote::None => {}
            }
            if let Some(mut old) = s.fading_from.take() {
                old.fill(&mut fade_buf);
                crossfade(&fade_buf, &mut pcm);
            }
            match s.spec.encoding {
                Encoding::Pcmu => g711::encode_ulaw(&pcm, &mut payload),
                Encoding::Pcma => g711::encode_alaw(&pcm, &mut payload),
            };
            let marker = std::mem::take(&mut s.marker_next);
            if let Ok(len) = write_rtp(
                &mut packet,
                s.spec.payload_type,
                marker,
                s.seq,
                s.timestamp,
                s.ssrc,
                &payload,
            ) {
                if let Some(bytes) = packet.get(..len) {
                    match s.spec.socket.send_to(bytes, s.spec.remote) {
                        Ok(_) => sent += 1,
                        Err(_) => send_errors += 1,
                    }
                }
            }
            s.seq = s.seq.wrapping_add(1);
            s.timestamp = s.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        }
        // Counters once per tick, not per packet.
        stats.packets_sent.fetch_add(sent, Ordering::Relaxed);
        stats.send_errors.fetch_add(send_errors, Ordering::Relaxed);
        let busy = clock::micros_between(tick_start, clock::now());
        stats.busy_us.fetch_add(busy, Ordering::Relaxed);
        stats.max_tick_us.fetch_max(busy, Ordering::Relaxed);
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

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Start(spec) => {
                let _ = spec.socket.set_nonblocking(true);
                // The emptiest group keeps the sub-ticks balanced.
                if let Some(g) = self.0.iter_mut().min_by_key(|g| g.len()) {
                    g.push(Stream::new(*spec));
                }
            }
            Command::Stop(id) => {
                for g in self.0.iter_mut() {
                    if let Some(i) = g.iter().position(|s| s.spec.id == id) {
                        g.swap_remove(i);
                        return;
                    }
                }
            }
            Command::SetSource(id, source) => {
                if let Some(s) = self.find_mut(id) {
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
                    s.latched = false;
                }
            }
        }
    }
}

/// Absolute-deadline sleeping on CLOCK_MONOTONIC.
mod clock {
    use std::time::Duration;

    pub type Ts = libc::timespec;

    pub fn now() -> Ts {
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

    pub fn add(ts: Ts, d: Duration) -> Ts {
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

    pub fn micros_between(a: Ts, b: Ts) -> u64 {
        let ns = (b.tv_sec - a.tv_sec) * 1_000_000_000 + (b.tv_nsec - a.tv_nsec);
        (ns.max(0) / 1000) as u64
    }

    pub fn after(a: Ts, b: Ts) -> bool {
        (a.tv_sec, a.tv_nsec) > (b.tv_sec, b.tv_nsec)
    }

    pub fn sleep_until(deadline: Ts) {
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

    #[test]
    fn a_stream_sends_paced_continuous_rtp_and_reports_the_clip_end() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ev_tx, mut ev_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut handle = spawn(0, 16, LoopOptions::default(), ev_tx).unwrap();
        // 10 frames of a ramp, not looped.
        let samples: Arc<[i16]> = (0..1600).map(|i| (i * 10) as i16).collect();
        let spec = StreamSpec {
            id: 7,
            socket: tx,
            remote: rx.local_addr().unwrap(),
            encoding: Encoding::Pcma,
            payload_type: 8,
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
            let (n, _) = rx.recv_from(&mut buf).unwrap();
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
        handle.shutdown();
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
        assert_eq!(ev_rx.try_recv(), Ok(MediaEvent::SourceFinished(7)));
    }
}
