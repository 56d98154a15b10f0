//! Adaptive jitter buffer for decoded 8 kHz audio in 20 ms frames, used when
//! bridging two legs: the receive side pushes frames as packets arrive, the
//! audio loop pops exactly one frame every 20 ms.
//!
//! Sans-IO and allocation-free after [`JitterBuffer::new`]: frames live in a
//! preallocated ring indexed by extended sequence number; time is passed in.
//!
//! Playout rules (all decisions happen in [`JitterBuffer::pop`]):
//!
//! * **Depth** ("level") is the span of sequence numbers from the next frame
//!   to play up to the highest received. The **target** is
//!   `clamp(min + ceil(3 * (J - 2 ms) / 20 ms), min, max)` where `J` is the
//!   RFC 3550 §6.4.1 interarrival jitter in ms (2 ms dead band for clock
//!   quantisation).
//! * **Start**: buffer until the level reaches the target (or the oldest frame
//!   has waited target × 20 ms, so short talk spurts still play).
//! * **Missing frame**: if the level is above the target, later frames are
//!   already here, so the frame is declared lost: conceal and move on. At or
//!   below the target the frame is probably late: conceal *without* advancing
//!   ("hold"), which grows the delay by one frame. If it is still missing once
//!   the level exceeds the target, the concealed frame already played counts as
//!   its replacement and playout moves straight to the next frame.
//! * **Adjust** (checked every 25 played frames, 0.5 s): if every one of
//!   them waited at least 25 ms in the buffer and the level is above the
//!   target, **shrink** by dropping one frame; if the level stayed below the
//!   target the whole time (e.g. the sender's clock is slow), **grow** by
//!   inserting one concealed frame. Either waits for a quiet frame, at most
//!   10 frames. Above `max_delay_frames` one frame is dropped per pop.
//! * **Concealment** repeats the last good frame, −6 dB per consecutive
//!   concealed frame (gain ramped within the frame), reaching silence after
//!   four. Every discontinuity (concealment, drop, restart) is smoothed by an
//!   8-sample crossfade from the last sample output.
//! * **Long gap**: after four concealed frames with nothing buffered the
//!   buffer goes back to buffering, so the next talk spurt starts cleanly at
//!   target depth.
//! * **Resync**: eight rejected (late or overflowing) packets in a row mean the
//!   sender jumped its sequence numbers; the buffer restarts from the new one.

pub use crate::FRAME_SAMPLES;
const FRAME_MS: u64 = 20;
/// Consecutive concealed frames until the output reaches silence.
const CONCEAL_FRAMES: u32 = 4;
/// Samples crossfaded from the previous output at a discontinuity.
const CROSSFADE: usize = 8;
/// Target depth = min + ceil(JITTER_FACTOR × (J - dead band) / 20 ms).
const JITTER_FACTOR: f64 = 3.0;
/// Millisecond arrival stamps alone give a J of a few tenths of a ms on a
/// perfect network; that must not cost a whole frame of delay.
const JITTER_DEAD_BAND_MS: f64 = 2.0;
/// One wild transit difference (sender clock jump) must not pin the target
/// at the maximum for seconds.
const MAX_TRANSIT_DIFF_MS: f64 = 300.0;
/// Played frames observed before deciding to shrink or grow.
const ADJUST_WINDOW_POPS: u32 = 25;
/// Margin every frame of the window must have had to allow dropping one
/// frame (20 ms) plus 5 ms safety.
const SHRINK_MIN_MARGIN_MS: u64 = FRAME_MS + 5;
/// How long a pending shrink or grow waits for a quiet frame.
const ADJUST_QUIET_WAIT_POPS: u32 = 10;
/// Mean absolute sample value below which a frame counts as quiet (≈ −40 dBFS).
const QUIET_MEAN_ABS: u32 = 300;
/// While idle, a packet this far behind the last played one starts a new
/// stream instead of being late (10 s; real late packets are far younger).
const MAX_LATE_FRAMES: i64 = 500;
/// Consecutive rejected packets after which the stream is resynchronised.
const RESYNC_AFTER_REJECTS: u32 = 8;

/// Why a configuration was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JitterError {
    /// The delay bounds are empty or start at zero.
    #[error("jitter buffer needs 1 <= min_delay_frames ({min}) <= max_delay_frames ({max})")]
    BadDelayRange {
        /// The configured `min_delay_frames`.
        min: u32,
        /// The configured `max_delay_frames`.
        max: u32,
    },
    /// Storage can't hold the largest delay, or is unreasonably large.
    #[error(
        "jitter buffer capacity {capacity} must exceed max_delay_frames {max} and be at most 4096"
    )]
    BadCapacity {
        /// The configured `capacity`.
        capacity: usize,
        /// The configured `max_delay_frames`.
        max: u32,
    },
}

/// Delay bounds and storage; the default suits bridged G.711 legs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JitterConfig {
    /// Smallest playout delay, in 20 ms frames (at least 1).
    pub min_delay_frames: u32,
    /// Largest playout delay; above it a frame is dropped at every pop.
    pub max_delay_frames: u32,
    /// Frames of storage, preallocated.
    pub capacity: usize,
}

impl Default for JitterConfig {
    fn default() -> Self {
        Self {
            min_delay_frames: 2,
            max_delay_frames: 10,
            capacity: 32,
        }
    }
}

/// What [`JitterBuffer::push`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// Stored for playout.
    Accepted,
    /// Already buffered or already played.
    Duplicate,
    /// Its playout time has passed (it was concealed or skipped).
    TooLate,
    /// Too far ahead of the playout point for the buffer.
    Overflow,
}

/// What [`JitterBuffer::pop`] wrote into the output frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PopResult {
    /// A received frame.
    Frame,
    /// A stand-in for a missing frame (fading repeat of the last one).
    Concealed,
    /// Not playing: before the first frame, or after a long gap.
    Silence,
}

/// Counters since creation (kept across [`JitterBuffer::reset`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JitterStats {
    /// Every push.
    pub received: u64,
    /// Pushes that came after their playout time.
    pub late: u64,
    /// Pushes of a frame already buffered or played.
    pub duplicate: u64,
    /// Pops that output a concealment frame.
    pub concealed: u64,
    /// Pushes too far ahead for the buffer.
    pub overflow: u64,
    /// Frames given up on (skipped by playout).
    pub lost: u64,
    /// Frames discarded to shrink the delay.
    pub dropped: u64,
    /// Concealment frames inserted to grow the delay (not in `concealed`).
    pub inserted: u64,
    /// Pops that output a received frame.
    pub played: u64,
    /// Level at the last pop, in frames.
    pub current_delay_frames: u32,
    /// Delay the buffer is steering toward, from the jitter estimate.
    pub target_delay_frames: u32,
    /// RFC 3550 interarrival jitter estimate.
    pub jitter_ms: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Empty,
    Filled,
    Played,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    ext: i64,
    state: SlotState,
    arrival_ms: u64,
    samples: [i16; FRAME_SAMPLES],
}

const EMPTY_SLOT: Slot = Slot {
    ext: i64::MIN,
    state: SlotState::Empty,
    arrival_ms: 0,
    samples: [0; FRAME_SAMPLES],
};

/// A pending delay change, waiting for a quiet frame.
#[derive(Debug, Clone, Copy)]
struct Adjust {
    grow: bool,
    waited: u32,
}

/// One stream's jitter buffer; see the module docs for the playout rules.
#[derive(Debug, Clone)]
pub struct JitterBuffer {
    cfg: JitterConfig,
    slots: Box<[Slot]>,
    buffered: u32,
    /// Highest accepted extended sequence number; `None` after a resync.
    highest: Option<i64>,
    /// When playing: the next frame to play. Otherwise the lowest buffered.
    next_play: i64,
    playing: bool,
    last_played: Option<i64>,
    /// A concealed frame already stands in for `next_play`.
    held: bool,

    last_good: [i16; FRAME_SAMPLES],
    conceal_run: u32,
    last_out: i16,
    /// Extended sequence number of the frame last output, if the last output
    /// was a received frame (so its successor needs no crossfade).
    continuous_after: Option<i64>,

    jitter_ms: f64,
    prev_arrival: Option<(u64, u32)>,
    target: u32,

    window_pops: u32,
    window_min_margin: u64,
    window_max_level: i64,
    adjust: Option<Adjust>,
    rejects_in_row: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer with storage for `config.capacity` frames, allocated here once.
    pub fn new(config: JitterConfig) -> Result<Self, JitterError> {
        let JitterConfig {
            min_delay_frames: min,
            max_delay_frames: max,
            capacity,
        } = config;
        if min == 0 || min > max {
            return Err(JitterError::BadDelayRange { min, max });
        }
        if capacity <= max as usize || capacity > 4096 {
            return Err(JitterError::BadCapacity { capacity, max });
        }
        Ok(Self {
            cfg: config,
            slots: vec![EMPTY_SLOT; capacity].into_boxed_slice(),
            buffered: 0,
            highest: None,
            next_play: 0,
            playing: false,
            last_played: None,
            held: false,
            last_good: [0; FRAME_SAMPLES],
            conceal_run: 0,
            last_out: 0,
            continuous_after: None,
            jitter_ms: 0.0,
            prev_arrival: None,
            target: min,
            window_pops: 0,
            window_min_margin: u64::MAX,
            window_max_level: 0,
            adjust: None,
            rejects_in_row: 0,
            stats: JitterStats {
                target_delay_frames: min,
                ..JitterStats::default()
            },
        })
    }

    /// A snapshot of the counters and the current delay.
    pub fn stats(&self) -> JitterStats {
        JitterStats {
            target_delay_frames: self.target,
            jitter_ms: self.jitter_ms as f32,
            ..self.stats
        }
    }

    /// Forget the stream (e.g. new SSRC) but keep statistics and the jitter
    /// estimate.
    pub fn reset(&mut self) {
        self.slots.fill(EMPTY_SLOT);
        self.buffered = 0;
        self.highest = None;
        self.playing = false;
        self.last_played = None;
        self.held = false;
        self.prev_arrival = None;
        self.continuous_after = None;
        self.adjust = None;
        self.rejects_in_row = 0;
        self.reset_window();
    }

    fn index(&self, ext: i64) -> usize {
        // rem_euclid is in 0..len, so indexing below cannot panic.
        ext.rem_euclid(self.slots.len() as i64) as usize
    }

    fn cap(&self) -> i64 {
        self.slots.len() as i64
    }

    /// Queue a received frame: its RTP sequence number and timestamp, and
    /// when it arrived.
    pub fn push(
        &mut self,
        now_ms: u64,
        seq: u16,
        timestamp: u32,
        frame: &[i16; FRAME_SAMPLES],
    ) -> PushResult {
        self.stats.received += 1;
        let result = self.classify(seq);
        match result {
            Ok(ext) => {
                self.rejects_in_row = 0;
                self.update_jitter(now_ms, timestamp);
                self.store(now_ms, ext, frame);
                PushResult::Accepted
            }
            Err(PushResult::Duplicate) => {
                self.stats.duplicate += 1;
                PushResult::Duplicate
            }
            Err(r) => {
                self.rejects_in_row += 1;
                if self.rejects_in_row >= RESYNC_AFTER_REJECTS {
                    self.reset();
                    self.stats.received -= 1;
                    return self.push(now_ms, seq, timestamp, frame);
                }
                if r == PushResult::Overflow {
                    self.stats.overflow += 1;
                } else {
                    self.stats.late += 1;
                    // Late packets are exactly what the jitter estimate is for.
                    self.update_jitter(now_ms, timestamp);
                }
                r
            }
        }
    }

    /// Extended sequence number of `seq` if it may be stored.
    fn classify(&self, seq: u16) -> Result<i64, PushResult> {
        let reference = self.highest.or(self.last_played);
        let ext = match reference {
            // Nearest extension to the reference: handles 16-bit wrap.
            Some(r) => r + i64::from(seq.wrapping_sub(r as u16) as i16),
            None => i64::from(seq),
        };
        let slot = &self.slots[self.index(ext)];
        if slot.ext == ext && slot.state != SlotState::Empty {
            return Err(PushResult::Duplicate);
        }
        let idle = self.buffered == 0 && !self.playing;
        if let Some(lp) = self.last_played {
            // Far behind while idle: the sender went back, not a late packet.
            if ext <= lp && !(idle && lp - ext >= MAX_LATE_FRAMES) {
                return Err(PushResult::TooLate);
            }
        }
        if idle {
            return Ok(ext);
        }
        if ext < self.next_play {
            if self.playing {
                return Err(PushResult::TooLate);
            }
            // Buffering and it precedes the lowest frame: fine if it fits.
            let top = self.highest.unwrap_or(ext);
            return if top - ext < self.cap() {
                Ok(ext)
            } else {
                Err(PushResult::TooLate)
            };
        }
        if ext - self.next_play >= self.cap() {
            return Err(PushResult::Overflow);
        }
        Ok(ext)
    }

    fn store(&mut self, now_ms: u64, ext: i64, frame: &[i16; FRAME_SAMPLES]) {
        if !self.playing && self.buffered == 0 {
            // Nothing buffered: this frame alone defines the window.
            self.next_play = ext;
            self.highest = Some(ext);
            if self.last_played.is_some_and(|lp| ext <= lp) {
                self.last_played = Some(ext - 1);
            }
        } else if !self.playing && ext < self.next_play {
            self.next_play = ext;
        }
        let i = self.index(ext);
        let slot = &mut self.slots[i];
        if slot.state == SlotState::Filled {
            // Unreachable by the window checks; keep the count honest anyway.
            self.buffered = self.buffered.saturating_sub(1);
        }
        *slot = Slot {
            ext,
            state: SlotState::Filled,
            arrival_ms: now_ms,
            samples: *frame,
        };
        self.buffered += 1;
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
    }

    /// RFC 3550 §6.4.1: J += (|D| - J) / 16, in ms.
    fn update_jitter(&mut self, now_ms: u64, timestamp: u32) {
        if let Some((prev_ms, prev_ts)) = self.prev_arrival {
            let arrival = now_ms.wrapping_sub(prev_ms) as i64 as f64;
            let media = f64::from(timestamp.wrapping_sub(prev_ts) as i32) / 8.0;
            let d = (arrival - media).abs().min(MAX_TRANSIT_DIFF_MS);
            self.jitter_ms += (d - self.jitter_ms) / 16.0;
        }
        self.prev_arrival = Some((now_ms, timestamp));
    }

    fn compute_target(&self) -> u32 {
        let j = (self.jitter_ms - JITTER_DEAD_BAND_MS).max(0.0);
        let extra = (JITTER_FACTOR * j / FRAME_MS as f64).ceil();
        // jitter_ms <= MAX_TRANSIT_DIFF_MS, so `extra` is small and finite.
        let t = self.cfg.min_delay_frames.saturating_add(extra as u32);
        t.clamp(self.cfg.min_delay_frames, self.cfg.max_delay_frames)
    }

    fn filled(&self, ext: i64) -> Option<&Slot> {
        let s = &self.slots[self.index(ext)];
        (s.ext == ext && s.state == SlotState::Filled).then_some(s)
    }

    /// Mark a buffered frame consumed (played or dropped).
    fn consume(&mut self, ext: i64) {
        let i = self.index(ext);
        let s = &mut self.slots[i];
        if s.ext == ext && s.state == SlotState::Filled {
            s.state = SlotState::Played;
            self.buffered = self.buffered.saturating_sub(1);
        }
    }

    fn level(&self) -> i64 {
        self.highest.map_or(0, |h| h - self.next_play + 1)
    }

    fn reset_window(&mut self) {
        self.window_pops = 0;
        self.window_min_margin = u64::MAX;
        self.window_max_level = 0;
    }

    /// Produce the next 20 ms of audio. Call exactly once per frame period.
    pub fn pop(&mut self, now_ms: u64, out: &mut [i16; FRAME_SAMPLES]) -> PopResult {
        self.target = self.compute_target();
        if !self.playing && !self.try_start(now_ms) {
            self.stats.current_delay_frames = 0;
            return self.silence(out);
        }
        self.stats.current_delay_frames = u32::try_from(self.level().max(0)).unwrap_or(u32::MAX);

        // Each pass either returns or advances `next_play`, so the window
        // size bounds the loop.
        for _ in 0..=self.slots.len() {
            let level = self.level();
            let target = i64::from(self.target);
            if self.filled(self.next_play).is_some() {
                match self.adjust_now(level) {
                    Some(false) => {
                        self.consume(self.next_play);
                        self.next_play += 1;
                        self.stats.dropped += 1;
                        continue;
                    }
                    Some(true) => {
                        self.stats.inserted += 1;
                        return self.conceal(out, false);
                    }
                    None => return self.play(now_ms, level, out),
                }
            }
            if level > target {
                // Later frames are here: give up on this one.
                self.stats.lost += 1;
                self.next_play += 1;
                self.adjust = None;
                if std::mem::take(&mut self.held) {
                    // Its concealment was already played.
                    continue;
                }
                return self.conceal(out, true);
            }
            if level <= 0 && self.conceal_run >= CONCEAL_FRAMES {
                // Long gap: rebuffer for the next talk spurt.
                self.playing = false;
                self.held = false;
                return self.silence(out);
            }
            self.held = true;
            return self.conceal(out, true);
        }
        self.conceal(out, true)
    }

    /// Buffering: start once the target depth is reached or the oldest
    /// frame has waited that long.
    fn try_start(&mut self, now_ms: u64) -> bool {
        if self.buffered == 0 {
            return false;
        }
        let waited = self
            .filled(self.next_play)
            .map_or(0, |s| now_ms.saturating_sub(s.arrival_ms));
        let target = i64::from(self.target);
        if self.level() < target && waited < u64::from(self.target) * FRAME_MS {
            return false;
        }
        // A burst deeper than the maximum: skip its oldest frames.
        let max = i64::from(self.cfg.max_delay_frames);
        while self.level() > max {
            if self.filled(self.next_play).is_some() {
                self.consume(self.next_play);
                self.stats.dropped += 1;
            }
            self.next_play += 1;
        }
        self.playing = true;
        self.held = false;
        self.adjust = None;
        self.reset_window();
        true
    }

    /// Whether to drop (`Some(false)`) or hold back (`Some(true)`) the
    /// present frame at `next_play` to change the delay.
    fn adjust_now(&mut self, level: i64) -> Option<bool> {
        let next_present = self.filled(self.next_play + 1).is_some();
        if level > i64::from(self.cfg.max_delay_frames) && next_present {
            return Some(false);
        }
        let a = self.adjust?;
        let target = i64::from(self.target);
        let wanted = if a.grow {
            level < target
        } else {
            level > target
        };
        if !wanted {
            self.adjust = None;
            return None;
        }
        if !a.grow && !next_present {
            return None;
        }
        self.adjust = Some(Adjust {
            waited: a.waited + 1,
            ..a
        });
        let quiet = self.filled(self.next_play).is_some_and(|s| {
            let sum: u32 = s.samples.iter().map(|&x| u32::from(x.unsigned_abs())).sum();
            sum < QUIET_MEAN_ABS * FRAME_SAMPLES as u32
        });
        if quiet || a.waited >= ADJUST_QUIET_WAIT_POPS {
            self.adjust = None;
            return Some(a.grow);
        }
        None
    }

    fn play(&mut self, now_ms: u64, level: i64, out: &mut [i16; FRAME_SAMPLES]) -> PopResult {
        let ext = self.next_play;
        let (samples, arrival) = match self.filled(ext) {
            Some(s) => (s.samples, s.arrival_ms),
            None => return self.conceal(out, true),
        };
        *out = samples;
        if self.continuous_after != Some(ext - 1) {
            crossfade(self.last_out, out);
        }
        self.consume(ext);
        self.last_good = samples;
        self.last_played = Some(ext);
        self.next_play += 1;
        self.held = false;
        self.conceal_run = 0;
        self.continuous_after = Some(ext);
        self.last_out = out[FRAME_SAMPLES - 1];
        self.stats.played += 1;

        // Adjust bookkeeping: how long did frames wait, how deep was it?
        self.window_pops += 1;
        self.window_min_margin = self.window_min_margin.min(now_ms.saturating_sub(arrival));
        self.window_max_level = self.window_max_level.max(level);
        if self.window_pops >= ADJUST_WINDOW_POPS {
            let target = i64::from(self.target);
            if self.adjust.is_none() {
                if self.window_min_margin >= SHRINK_MIN_MARGIN_MS && level > target {
                    self.adjust = Some(Adjust {
                        grow: false,
                        waited: 0,
                    });
                } else if self.window_max_level < target {
                    self.adjust = Some(Adjust {
                        grow: true,
                        waited: 0,
                    });
                }
            }
            self.reset_window();
        }
        PopResult::Frame
    }

    /// Output a fading repeat of the last good frame; `missing` says it
    /// stands in for a frame (counted) rather than being an insertion.
    fn conceal(&mut self, out: &mut [i16; FRAME_SAMPLES], missing: bool) -> PopResult {
        self.conceal_run = self.conceal_run.saturating_add(1);
        let gain = |n: u32| {
            if n >= CONCEAL_FRAMES {
                0.0
            } else {
                0.5f32.powi(n as i32)
            }
        };
        let (g0, g1) = (gain(self.conceal_run - 1), gain(self.conceal_run));
        for (i, (o, &s)) in out.iter_mut().zip(self.last_good.iter()).enumerate() {
            let g = g0 + (g1 - g0) * (i + 1) as f32 / FRAME_SAMPLES as f32;
            *o = (f32::from(s) * g) as i16;
        }
        crossfade(self.last_out, out);
        self.last_out = out[FRAME_SAMPLES - 1];
        self.continuous_after = None;
        if missing {
            self.stats.concealed += 1;
        }
        // Lateness just happened: don't shrink on the strength of old margins.
        self.reset_window();
        self.adjust = None;
        PopResult::Concealed
    }

    fn silence(&mut self, out: &mut [i16; FRAME_SAMPLES]) -> PopResult {
        out.fill(0);
        crossfade(self.last_out, out);
        self.last_out = 0;
        self.continuous_after = None;
        PopResult::Silence
    }
}

/// Blend the first samples from `from` (the last sample output) into `out`
/// so a discontinuity does not click.
fn crossfade(from: i16, out: &mut [i16; FRAME_SAMPLES]) {
    for (i, o) in out.iter_mut().take(CROSSFADE).enumerate() {
        let w = (i + 1) as i32;
        let n = (CROSSFADE + 1) as i32;
        *o = ((i32::from(from) * (n - w) + i32::from(*o) * w) / n) as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        /// Uniform in lo..=hi.
        fn range(&mut self, lo: i64, hi: i64) -> i64 {
            lo + (self.next() % (hi - lo + 1) as u64) as i64
        }
        fn chance(&mut self, percent: u64) -> bool {
            self.next() % 10_000 < percent * 100
        }
    }

    /// A frame tagged with its index in sample 100 (outside the crossfade).
    fn tagged(k: u32) -> [i16; FRAME_SAMPLES] {
        let mut f = [1000i16; FRAME_SAMPLES];
        f[100] = (k % 30_000) as i16;
        f
    }

    fn sine(k: u32) -> [i16; FRAME_SAMPLES] {
        let mut f = [0i16; FRAME_SAMPLES];
        for (i, s) in f.iter_mut().enumerate() {
            let n = k as f64 * FRAME_SAMPLES as f64 + i as f64;
            *s = (10_000.0 * (2.0 * std::f64::consts::PI * 440.0 * n / 8000.0).sin()) as i16;
        }
        f
    }

    struct Packet {
        arrival_ms: u64,
        k: u32,
    }

    /// Pushes packets at their arrival times and pops every 20 ms (offset
    /// 10 ms), collecting (pop result, tag, samples).
    struct Run {
        results: Vec<(PopResult, i16)>,
        audio: Vec<i16>,
        levels: Vec<u32>,
    }

    fn simulate(
        jb: &mut JitterBuffer,
        mut packets: Vec<Packet>,
        seq0: u16,
        pops: u64,
        make: impl Fn(u32) -> [i16; FRAME_SAMPLES],
    ) -> Run {
        packets.sort_by_key(|p| p.arrival_ms);
        let mut it = packets.iter().peekable();
        let mut run = Run {
            results: Vec::new(),
            audio: Vec::new(),
            levels: Vec::new(),
        };
        let mut out = [0i16; FRAME_SAMPLES];
        for p in 0..pops {
            let now = p * 20 + 10;
            while let Some(pk) = it.next_if(|pk| pk.arrival_ms <= now) {
                let seq = seq0.wrapping_add(pk.k as u16);
                jb.push(pk.arrival_ms, seq, pk.k.wrapping_mul(160), &make(pk.k));
            }
            let r = jb.pop(now, &mut out);
            run.results.push((r, out[100]));
            run.audio.extend_from_slice(&out);
            run.levels.push(jb.stats().current_delay_frames);
        }
        run
    }

    fn played_tags(run: &Run, from_pop: usize) -> Vec<i16> {
        run.results[from_pop..]
            .iter()
            .filter(|r| r.0 == PopResult::Frame)
            .map(|r| r.1)
            .collect()
    }

    fn assert_consecutive(tags: &[i16]) {
        for w in tags.windows(2) {
            assert_eq!(w[1], w[0] + 1, "gap or repeat in playout: {w:?}");
        }
    }

    #[test]
    fn config_validation() {
        let bad = |min, max, capacity| {
            JitterBuffer::new(JitterConfig {
                min_delay_frames: min,
                max_delay_frames: max,
                capacity,
            })
            .is_err()
        };
        assert!(bad(0, 10, 32));
        assert!(bad(5, 4, 32));
        assert!(bad(2, 10, 10));
        assert!(bad(2, 10, 5000));
        assert!(!bad(1, 1, 2));
    }

    #[test]
    fn in_order_stream_plays_at_min_delay() {
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let packets = (0..1000)
            .map(|k| Packet {
                arrival_ms: 40 + k as u64 * 20,
                k,
            })
            .collect();
        let run = simulate(&mut jb, packets, 1000, 1000, tagged);
        let s = jb.stats();
        println!("in-order: {s:?}");
        let first = run
            .results
            .iter()
            .position(|r| r.0 == PopResult::Frame)
            .unwrap();
        println!(
            "in-order: first frame at pop {first}, levels tail {:?}",
            &run.levels[990..]
        );
        assert!(first <= 5);
        let tags = played_tags(&run, 0);
        assert_eq!(tags.first(), Some(&0));
        assert_consecutive(&tags);
        assert_eq!(s.concealed, 0);
        assert_eq!((s.lost, s.late, s.dropped), (0, 0, 0));
        assert!(run.levels[first..990].iter().all(|&l| l == 2));
        assert_eq!(s.target_delay_frames, 2);
        assert_eq!(s.jitter_ms, 0.0);
    }

    #[test]
    fn reorder_and_jitter_adapts_without_loss() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let n = 3000u32;
        let packets = (0..n)
            .map(|k| {
                // ±15 ms jitter, and 20 % of packets overtaken by 1-2 later
                // ones (delayed by one or two frame times).
                let reorder = if rng.chance(20) {
                    rng.range(1, 2) * 20
                } else {
                    0
                };
                Packet {
                    arrival_ms: (60 + i64::from(k) * 20 + rng.range(-15, 15) + reorder) as u64,
                    k,
                }
            })
            .collect::<Vec<_>>();
        let overtaken = {
            let mut v: Vec<_> = packets.iter().map(|p| (p.arrival_ms, p.k)).collect();
            v.sort();
            v.windows(2).filter(|w| w[1].1 < w[0].1).count()
        };
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let warmup = 250; // 5 s
        let run = simulate(&mut jb, packets, 40_000, u64::from(n) + 20, tagged);
        let s = jb.stats();
        let tail = &run.levels[warmup..n as usize];
        let avg = tail.iter().sum::<u32>() as f64 / tail.len() as f64;
        let (lo, hi) = (tail.iter().min().unwrap(), tail.iter().max().unwrap());
        let tags = played_tags(&run, warmup);
        let concealed_after = run.results[warmup..n as usize]
            .iter()
            .filter(|r| r.0 == PopResult::Concealed)
            .count();
        println!(
            "reorder+jitter: {overtaken} out-of-order arrivals; {s:?}; after warm-up: \
             level avg {avg:.2} min {lo} max {hi}, concealed {concealed_after}, played {}",
            tags.len()
        );
        assert!(overtaken > 300);
        // At most an occasional hold for a very late frame, never a loss.
        assert!(concealed_after <= 3);
        assert_eq!((s.lost, s.late), (0, 0));
        // Every frame after warm-up is played, in order.
        assert_consecutive(&tags);
        assert_eq!(tags.last(), Some(&((n - 1) as i16)));
        assert!((3..=7).contains(&s.target_delay_frames), "{s:?}");
        assert!((3.0..=6.5).contains(&avg), "avg level {avg}");
        assert!(s.jitter_ms > 10.0 && s.jitter_ms < 40.0);
    }

    #[test]
    fn random_loss_is_concealed_smoothly() {
        let mut rng = XorShift(42);
        let n = 5000u32;
        let mut lost = std::collections::HashSet::new();
        let packets = (0..n)
            .filter(|&k| {
                let keep = k < 10 || !rng.chance(5);
                if !keep {
                    lost.insert(k);
                }
                keep
            })
            .map(|k| Packet {
                arrival_ms: 40 + u64::from(k) * 20,
                k,
            })
            .collect();
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let run = simulate(&mut jb, packets, 0, u64::from(n), sine);
        let s = jb.stats();

        // Natural largest step of the 440 Hz tone versus the output's.
        let natural = sine(0)
            .windows(2)
            .chain(sine(1).windows(2))
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap();
        let mut worst_boundary = 0;
        let mut worst_inside = 0;
        for (i, w) in run.audio.windows(2).enumerate() {
            let step = (i32::from(w[1]) - i32::from(w[0])).abs();
            // Steps into sample 0 and across the crossfade are the boundary.
            if (i + 1) % FRAME_SAMPLES <= CROSSFADE {
                worst_boundary = worst_boundary.max(step);
            } else {
                worst_inside = worst_inside.max(step);
            }
        }
        let pops = run
            .results
            .iter()
            .filter(|r| r.0 != PopResult::Silence)
            .count();
        let rate = s.concealed as f64 / pops as f64;
        let loss = lost.len() as f64 / f64::from(n);
        println!(
            "5% loss: lost {} ({:.2}%), concealed {} of {pops} pops ({:.2}%); {s:?}; \
             max step natural {natural}, at frame boundaries {worst_boundary}, inside {worst_inside}",
            lost.len(),
            loss * 100.0,
            s.concealed,
            rate * 100.0
        );
        assert!((0.03..=0.07).contains(&rate), "concealment rate {rate}");
        assert!((rate - loss).abs() < 0.01);
        assert_eq!(s.late, 0);
        assert!(
            worst_boundary <= natural * 2,
            "hard cut: {worst_boundary} vs natural {natural}"
        );
        assert!(s.current_delay_frames <= 3);
    }

    /// The network the loss test (issue 8) asks for: 5 % loss and
    /// reordering together, with jitter. Every lost frame is concealed
    /// once, every frame that arrives is played, in order, none late.
    #[test]
    fn loss_and_reordering_together() {
        let mut rng = XorShift(0x5EED_0005);
        let n = 4000u32;
        let mut lost = 0u32;
        let mut packets = Vec::new();
        for k in 0..n {
            if k >= 10 && rng.chance(5) {
                lost += 1;
                continue;
            }
            let reorder = if rng.chance(10) { 20 } else { 0 };
            packets.push(Packet {
                arrival_ms: (60 + i64::from(k) * 20 + rng.range(-10, 10) + reorder) as u64,
                k,
            });
        }
        let overtaken = {
            let mut v: Vec<_> = packets.iter().map(|p| (p.arrival_ms, p.k)).collect();
            v.sort();
            v.windows(2).filter(|w| w[1].1 < w[0].1).count()
        };
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let run = simulate(&mut jb, packets, 7, u64::from(n) + 20, tagged);
        let s = jb.stats();
        let tags = played_tags(&run, 0);
        println!("5% loss + reorder: lost {lost}, overtaken {overtaken}; {s:?}");
        assert!(overtaken > 100, "the stream must really be reordered");
        assert_eq!(s.late, 0, "{s:?}");
        // Every frame that arrived played once, in order, but for the few
        // dropped on purpose while the delay shrinks after a spike.
        assert!(tags.windows(2).all(|w| w[1] > w[0]), "out of order playout");
        assert_eq!(s.received, u64::from(n - lost), "{s:?}");
        assert!(s.dropped <= u64::from(n / 200), "{s:?}");
        assert_eq!(tags.len() as u64, s.received - s.dropped, "{s:?}");
        // Each lost frame was concealed (the hole filled, not skipped),
        // with at most 1 % more while the buffer refills.
        let concealed = run
            .results
            .iter()
            .filter(|r| r.0 == PopResult::Concealed)
            .count() as u32;
        assert!(
            concealed >= lost && concealed <= lost + n / 100,
            "concealed {concealed} for {lost} lost"
        );
        assert!(s.current_delay_frames <= 7, "{s:?}");
    }

    #[test]
    fn clock_drift_is_absorbed() {
        // Sender clock 1 % fast, then 1 % slow, against the 20 ms pop clock.
        for (name, period_us) in [("fast", 19_800u64), ("slow", 20_200)] {
            let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
            let n = 3000u32;
            let packets = (0..n)
                .map(|k| Packet {
                    arrival_ms: 40 + u64::from(k) * period_us / 1000,
                    k,
                })
                .collect();
            let run = simulate(&mut jb, packets, 7, u64::from(n) - 40, tagged);
            let s = jb.stats();
            let tail = &run.levels[100..];
            let max_level = tail.iter().max().unwrap();
            let min_level = *tail.iter().min().unwrap();
            let avg = tail.iter().sum::<u32>() as f64 / tail.len() as f64;
            println!(
                "drift {name}: {s:?}; after 2 s level min {min_level} avg {avg:.2} max {max_level}"
            );
            let tags = played_tags(&run, 0);
            assert!(tags.windows(2).all(|w| w[1] > w[0]));
            assert_eq!((s.late, s.overflow), (0, 0));
            assert!(*max_level <= 4, "{name}: level ran away to {max_level}");
            if name == "fast" {
                // ~30 surplus frames over 60 s must be dropped, not played late.
                assert!((20..=40).contains(&s.dropped), "{s:?}");
            } else {
                // ~30 missing frame periods are filled by insertions (or
                // holds), none lost, and the depth is kept at the target.
                assert_eq!(s.lost, 0);
                assert!((20..=40).contains(&(s.concealed + s.inserted)), "{s:?}");
                assert!(min_level >= 1);
            }
        }
    }

    #[test]
    fn sequence_wraparound() {
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let packets = (0..400)
            .map(|k| Packet {
                arrival_ms: 40 + u64::from(k) * 20,
                k,
            })
            .collect();
        // Starts 100 frames before the wrap.
        let run = simulate(&mut jb, packets, 65_436, 400, tagged);
        let s = jb.stats();
        println!("wrap: {s:?}");
        let tags = played_tags(&run, 0);
        assert_consecutive(&tags);
        assert!(tags.len() >= 395);
        assert_eq!((s.concealed, s.lost, s.late, s.overflow), (0, 0, 0, 0));
    }

    #[test]
    fn burst_after_long_silence_restarts_cleanly() {
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let mut out = [0i16; FRAME_SAMPLES];
        let mut results = Vec::new();
        let mut levels = Vec::new();
        let mut audio = Vec::new();
        // Talk spurt 1: frames 0..100; 3 s of nothing; then frames 100..108
        // arrive in one burst, then 100..400 flow at the normal rate.
        for p in 0..700u64 {
            let now = p * 20 + 10;
            let arrive = |k: u64| {
                if k < 100 {
                    k * 20
                } else if k < 108 {
                    5000
                } else {
                    5000 + (k - 107) * 20
                }
            };
            for k in 0..400u64 {
                let a = arrive(k);
                if a + 20 > now && a <= now {
                    // Silence suppression: the timestamp jumps over the gap.
                    let ts = (k as u32 + if k >= 100 { 150 } else { 0 }) * 160;
                    let r = jb.push(a, k as u16, ts, &tagged(k as u32));
                    assert_eq!(r, PushResult::Accepted, "frame {k}");
                }
            }
            let r = jb.pop(now, &mut out);
            results.push((r, out[100]));
            levels.push(jb.stats().current_delay_frames);
            audio.extend_from_slice(&out);
        }
        let s = jb.stats();
        let gap = &results[101..250];
        let concealed_in_gap = gap.iter().filter(|r| r.0 == PopResult::Concealed).count();
        println!(
            "burst: {s:?}; concealed at end of spurt 1: {concealed_in_gap}; levels after burst {:?}; \
             level 5 s later {}",
            &levels[250..262],
            levels[500]
        );
        assert_eq!(concealed_in_gap as u32, CONCEAL_FRAMES);
        assert!(gap.iter().skip(10).all(|r| r.0 == PopResult::Silence));
        let tags: Vec<i16> = results
            .iter()
            .filter(|r| r.0 == PopResult::Frame)
            .map(|r| r.1)
            .collect();
        let restart = tags.iter().position(|&t| t == 100).unwrap();
        assert_consecutive(&tags[..restart]);
        // The burst plays from its first frame; shrinking may skip a few
        // frames later to bring the delay back down.
        let after = &tags[restart..];
        assert!(after.windows(2).all(|w| w[1] > w[0]));
        assert_eq!((s.late, s.overflow), (0, 0));
        assert!(s.dropped <= 8, "{s:?}");
        assert!(
            levels[500] <= s.target_delay_frames + 1,
            "delay did not come back down"
        );
        // No click at the restart: fade in from silence. Steps touching the
        // tag sample are not audio.
        let start = 249 * FRAME_SAMPLES;
        let biggest = audio[start..]
            .windows(2)
            .enumerate()
            .filter(|(i, _)| !matches!((start + i) % FRAME_SAMPLES, 99 | 100))
            .map(|(_, w)| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap();
        println!("burst: largest step from the restart on {biggest}");
        assert!(biggest <= 1000 / (CROSSFADE as i32 + 1) + 1);
    }

    #[test]
    fn duplicates_are_counted_not_played_twice() {
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let mut out = [0i16; FRAME_SAMPLES];
        let mut tags = Vec::new();
        for k in 0..200u32 {
            let now = u64::from(k) * 20;
            let f = tagged(k);
            assert_eq!(jb.push(now, k as u16, k * 160, &f), PushResult::Accepted);
            assert_eq!(jb.push(now, k as u16, k * 160, &f), PushResult::Duplicate);
            if k >= 5 {
                // A copy of an already played frame.
                assert_eq!(
                    jb.push(now, (k - 5) as u16, (k - 5) * 160, &tagged(k - 5)),
                    PushResult::Duplicate
                );
            }
            if jb.pop(now + 10, &mut out) == PopResult::Frame {
                tags.push(out[100]);
            }
        }
        let s = jb.stats();
        println!("duplicates: {s:?}");
        assert_consecutive(&tags);
        assert_eq!(s.duplicate, 200 + 195);
        assert_eq!((s.concealed, s.late), (0, 0));
        // Duplicates must not disturb the jitter estimate.
        assert_eq!(s.jitter_ms, 0.0);
    }

    #[test]
    fn sequence_jump_resyncs_and_hostile_input_never_panics() {
        let mut jb = JitterBuffer::new(JitterConfig::default()).unwrap();
        let mut out = [0i16; FRAME_SAMPLES];
        let f = tagged(1);
        for k in 0..50u32 {
            jb.push(u64::from(k) * 20, k as u16, k * 160, &f);
            jb.pop(u64::from(k) * 20 + 10, &mut out);
        }
        // The sender jumps 30 000 sequence numbers ahead while frames are
        // still buffered: rejected until the resync threshold.
        let mut results = Vec::new();
        for k in 50..60u32 {
            results.push(jb.push(1000 + u64::from(k), (k + 30_000) as u16, k * 160, &f));
        }
        let rejected = results
            .iter()
            .take_while(|&&r| r != PushResult::Accepted)
            .count();
        println!("jump: rejected {rejected} before resync; {:?}", jb.stats());
        assert_eq!(rejected as u32, RESYNC_AFTER_REJECTS - 1);
        assert!(results[rejected..]
            .iter()
            .all(|&r| r == PushResult::Accepted));
        // After a gap long enough to stop playout, a jump is accepted at once.
        for k in 60..70u32 {
            jb.pop(1200 + u64::from(k) * 20, &mut out);
        }
        assert_eq!(jb.push(3000, 5, 0, &f), PushResult::Accepted);

        let mut rng = XorShift(7);
        for i in 0..20_000u64 {
            let now = i * 3 + rng.next() % 50;
            jb.push(now, rng.next() as u16, rng.next() as u32, &f);
            if i % 7 == 0 {
                jb.pop(now, &mut out);
            }
        }
        let s = jb.stats();
        assert_eq!(s.received, 50 + 10 + 1 + 20_000);
    }
}
