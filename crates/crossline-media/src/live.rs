//! Audio that crosses between the audio loop and the rest of the process
//! while a call runs, through bounded lock-free queues (no locks, no
//! allocation on the loop's side):
//!
//! - [`LiveAudio`]: 20 ms μ-law frames from outside (a media stream's
//!   agent), played into the call as [`Source::Live`](crate::player::Source),
//!   with marks reported once the audio before them has played, and a
//!   clear that drops what is queued at the next frame (barge-in).
//! - [`StreamTap`]: a copy of what a stream hears (inbound) and sends
//!   (outbound), as μ-law, for a media stream's fork.
//!
//! A full queue drops the oldest audio and counts it: a slow or flooding
//! peer costs its own audio, never the loop's time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_queue::ArrayQueue;

use crate::g711;
use crate::FRAME_SAMPLES;

/// One 20 ms μ-law frame.
pub type UlawFrame = [u8; FRAME_SAMPLES];

enum Chunk {
    Audio(UlawFrame),
    /// Reported back once everything queued before it has played.
    Mark(u32),
}

/// Audio from outside, waiting to be played into a call.
pub struct LiveAudio {
    queue: ArrayQueue<Chunk>,
    clear: AtomicBool,
    played: ArrayQueue<u32>,
    dropped_frames: AtomicU64,
    played_frames: AtomicU64,
}

impl std::fmt::Debug for LiveAudio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveAudio")
            .field("queued", &self.queue.len())
            .field("dropped_frames", &self.dropped_frames())
            .finish()
    }
}

impl LiveAudio {
    /// Room for `max_frames` frames and marks (at least one).
    pub fn new(max_frames: usize) -> LiveAudio {
        LiveAudio {
            queue: ArrayQueue::new(max_frames.max(1)),
            clear: AtomicBool::new(false),
            // Marks come back at most as fast as they went in.
            played: ArrayQueue::new(max_frames.max(1)),
            dropped_frames: AtomicU64::new(0),
            played_frames: AtomicU64::new(0),
        }
    }

    /// Queue a frame; when full, the oldest queued audio is dropped.
    pub fn push_frame(&self, frame: UlawFrame) {
        if let Some(old) = self.queue.force_push(Chunk::Audio(frame)) {
            self.lost(old);
        }
    }

    /// Queue a mark after the audio queued so far.
    pub fn push_mark(&self, id: u32) {
        if let Some(old) = self.queue.force_push(Chunk::Mark(id)) {
            self.lost(old);
        }
    }

    fn lost(&self, chunk: Chunk) {
        match chunk {
            Chunk::Audio(_) => {
                self.dropped_frames.fetch_add(1, Ordering::Relaxed);
            }
            // A mark pushed out unplayed still comes back: the agent is
            // waiting on it.
            Chunk::Mark(id) => {
                let _ = self.played.force_push(id);
            }
        }
    }

    /// Drop everything queued at the next frame; marks among it come back.
    pub fn clear(&self) {
        self.clear.store(true, Ordering::Release);
    }

    /// A mark whose audio has played (or was cleared), oldest first.
    pub fn next_played_mark(&self) -> Option<u32> {
        self.played.pop()
    }

    /// Frames dropped because the queue was full.
    pub fn dropped_frames(&self) -> u64 {
        self.dropped_frames.load(Ordering::Relaxed)
    }

    /// Frames played into the call.
    pub fn played_frames(&self) -> u64 {
        self.played_frames.load(Ordering::Relaxed)
    }

    /// Frames (and marks) waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The audio loop's side: the next frame, or silence when none is
    /// queued; marks reached on the way are reported.
    pub fn fill(&self, out: &mut [i16; FRAME_SAMPLES]) {
        if self.clear.swap(false, Ordering::AcqRel) {
            while let Some(chunk) = self.queue.pop() {
                if let Chunk::Mark(id) = chunk {
                    let _ = self.played.force_push(id);
                }
            }
        }
        while let Some(chunk) = self.queue.pop() {
            match chunk {
                Chunk::Mark(id) => {
                    let _ = self.played.force_push(id);
                }
                Chunk::Audio(frame) => {
                    g711::decode_ulaw(&frame, out);
                    self.played_frames.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        out.fill(0);
    }
}

/// Which way audio went, seen from the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Track {
    /// What the caller said (RTP we received).
    Inbound,
    /// What we played to the caller (RTP we sent).
    Outbound,
}

/// Up to 60 ms of μ-law from one packet or frame.
#[derive(Clone, Copy)]
pub struct TapFrame {
    /// Which way it went.
    pub track: Track,
    len: u16,
    payload: [u8; FRAME_SAMPLES * 3],
}

impl TapFrame {
    /// The μ-law bytes (8 kHz, one per sample).
    pub fn payload(&self) -> &[u8] {
        self.payload
            .get(..usize::from(self.len))
            .unwrap_or_default()
    }
}

/// A copy of a stream's audio for a fork, in the order it passed.
pub struct StreamTap {
    frames: ArrayQueue<TapFrame>,
    inbound: bool,
    outbound: bool,
    dropped: AtomicU64,
}

impl std::fmt::Debug for StreamTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamTap")
            .field("inbound", &self.inbound)
            .field("outbound", &self.outbound)
            .finish()
    }
}

impl StreamTap {
    /// A tap of the tracks asked for, holding up to `max_frames`.
    pub fn new(inbound: bool, outbound: bool, max_frames: usize) -> StreamTap {
        StreamTap {
            frames: ArrayQueue::new(max_frames.max(1)),
            inbound,
            outbound,
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether it wants `track`.
    pub fn wants(&self, track: Track) -> bool {
        match track {
            Track::Inbound => self.inbound,
            Track::Outbound => self.outbound,
        }
    }

    /// The audio loop's side: copy G.711 `payload` (μ-law, or A-law
    /// re-coded to μ-law) of `track`; a full tap drops its oldest frame.
    pub fn push(&self, track: Track, payload: &[u8], alaw: bool) {
        if !self.wants(track) {
            return;
        }
        for chunk in payload.chunks(FRAME_SAMPLES * 3) {
            let mut frame = TapFrame {
                track,
                len: chunk.len() as u16,
                payload: [0; FRAME_SAMPLES * 3],
            };
            for (out, byte) in frame.payload.iter_mut().zip(chunk) {
                *out = match alaw {
                    true => g711::linear_to_ulaw(g711::alaw_to_linear(*byte)),
                    false => *byte,
                };
            }
            if self.frames.force_push(frame).is_some() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The next frame copied, oldest first.
    pub fn pop(&self) -> Option<TapFrame> {
        self.frames.pop()
    }

    /// Frames dropped because nobody took them in time.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(byte: u8) -> UlawFrame {
        [byte; FRAME_SAMPLES]
    }

    #[test]
    fn frames_play_in_order_and_marks_come_back_after_their_audio() {
        let live = LiveAudio::new(10);
        live.push_frame(frame(0x10));
        live.push_mark(1);
        live.push_frame(frame(0x20));
        let mut out = [0i16; FRAME_SAMPLES];
        live.fill(&mut out);
        assert_eq!(out[0], g711::ulaw_to_linear(0x10));
        assert_eq!(live.next_played_mark(), None, "its audio hasn't played yet");
        live.fill(&mut out);
        assert_eq!(out[0], g711::ulaw_to_linear(0x20));
        assert_eq!(live.next_played_mark(), Some(1));
        live.fill(&mut out);
        assert!(
            out.iter().all(|s| *s == 0),
            "silence when nothing is queued"
        );
        assert_eq!(live.played_frames(), 2);
    }

    #[test]
    fn clear_drops_the_queue_at_the_next_frame_and_returns_its_marks() {
        let live = LiveAudio::new(100);
        for _ in 0..50 {
            live.push_frame(frame(0x10));
        }
        live.push_mark(7);
        live.clear();
        let mut out = [1i16; FRAME_SAMPLES];
        live.fill(&mut out);
        assert!(out.iter().all(|s| *s == 0));
        assert_eq!(live.next_played_mark(), Some(7));
        assert_eq!(live.queued(), 0);
    }

    #[test]
    fn a_flood_keeps_the_newest_audio_and_counts_the_rest() {
        let live = LiveAudio::new(5);
        for i in 0..20u8 {
            live.push_frame(frame(i));
        }
        assert_eq!(live.dropped_frames(), 15);
        let mut out = [0i16; FRAME_SAMPLES];
        live.fill(&mut out);
        assert_eq!(out[0], g711::ulaw_to_linear(15));
    }

    #[test]
    fn a_tap_copies_only_its_tracks_and_recodes_alaw() {
        let tap = StreamTap::new(true, false, 4);
        tap.push(Track::Outbound, &[1, 2, 3], false);
        assert!(tap.pop().is_none());
        let alaw = g711::linear_to_alaw(1000);
        tap.push(Track::Inbound, &[alaw; 160], true);
        let got = tap.pop().unwrap();
        assert_eq!(got.track, Track::Inbound);
        assert_eq!(got.payload().len(), 160);
        let back = g711::ulaw_to_linear(got.payload()[0]);
        assert!((i32::from(back) - 1000).abs() < 64, "{back}");
        for _ in 0..6 {
            tap.push(Track::Inbound, &[0xff; 160], false);
        }
        assert_eq!(tap.dropped(), 2);
    }
}
