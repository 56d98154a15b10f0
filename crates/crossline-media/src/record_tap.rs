//! The recording tap: what a recorded stream hands its writer each frame.
//!
//! The audio loop owns the [`Tap`] (one per recorded stream) and pushes one
//! [`RecordFrame`] a tick into a wait-free SPSC ring ([`rtrb`], the same
//! ring the loop's commands come through). A writer thread owns the other
//! end. When the ring is full the frame is dropped and counted in
//! [`TapCounters`]: a slow disk never delays a tick. Streams that aren't
//! recorded pay one `Option` check per tick.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::FRAME_SAMPLES;

/// One 20 ms frame of a recorded stream, both directions.
#[derive(Clone, Copy)]
pub struct RecordFrame {
    /// What the stream received: the caller (left channel).
    pub caller: [i16; FRAME_SAMPLES],
    /// What the stream sent: the prompt, music or bridged party (right).
    pub other: [i16; FRAME_SAMPLES],
}

impl RecordFrame {
    /// A silent frame.
    pub const SILENT: RecordFrame = RecordFrame {
        caller: [0; FRAME_SAMPLES],
        other: [0; FRAME_SAMPLES],
    };
}

/// Counters the loop and the writer share (relaxed atomics).
#[derive(Debug, Default)]
pub struct TapCounters {
    /// Frames pushed into the ring.
    pub frames: AtomicU64,
    /// Frames dropped because the ring was full (the writer fell behind).
    pub dropped: AtomicU64,
    /// Paused (PCI): frames go out silent.
    pub paused: AtomicBool,
}

/// Received audio waiting to be framed: up to this many samples (200 ms:
/// what a socket read every `rtp_poll_ticks` brings, plus jitter); beyond
/// it the oldest go.
const RX_HOLD: usize = FRAME_SAMPLES * 10;

/// The loop's end of one recording.
pub struct Tap {
    ring: rtrb::Producer<RecordFrame>,
    counters: Arc<TapCounters>,
    /// Decoded received audio not yet framed.
    rx: [i16; RX_HOLD],
    rx_len: usize,
}

impl Tap {
    /// A tap and the writer's end of its ring, `frames` deep.
    pub fn new(frames: usize) -> (Tap, rtrb::Consumer<RecordFrame>, Arc<TapCounters>) {
        let (ring, consumer) = rtrb::RingBuffer::new(frames.max(1));
        let counters = Arc::new(TapCounters::default());
        (
            Tap {
                ring,
                counters: counters.clone(),
                rx: [0; RX_HOLD],
                rx_len: 0,
            },
            consumer,
            counters,
        )
    }

    /// Decoded audio the stream received (any packet size).
    pub fn received(&mut self, samples: &[i16]) {
        let n = samples.len().min(RX_HOLD);
        let keep = (RX_HOLD - n).min(self.rx_len);
        if keep < self.rx_len {
            // Too much queued (a burst, clock drift): the oldest go.
            self.rx.copy_within(self.rx_len - keep..self.rx_len, 0);
            self.rx_len = keep;
        }
        let tail = samples.get(samples.len() - n..).unwrap_or_default();
        if let Some(slot) = self.rx.get_mut(self.rx_len..self.rx_len + n) {
            slot.copy_from_slice(tail);
            self.rx_len += n;
        }
    }

    /// The end of a tick: `sent` is what the stream sent (silence when it
    /// sent nothing). One frame goes to the writer, or is counted dropped.
    pub fn frame(&mut self, sent: &[i16; FRAME_SAMPLES]) {
        let mut frame = RecordFrame::SILENT;
        // Short (a packet late against our clock): silence now, and the
        // frame that comes in stays in hand, absorbing the next jitter.
        if let (true, Some(head)) = (self.rx_len >= FRAME_SAMPLES, self.rx.get(..FRAME_SAMPLES)) {
            frame.caller.copy_from_slice(head);
            self.rx.copy_within(FRAME_SAMPLES..self.rx_len, 0);
            self.rx_len -= FRAME_SAMPLES;
        }
        if !self.counters.paused.load(Ordering::Relaxed) {
            frame.other = *sent;
        } else {
            frame.caller = [0; FRAME_SAMPLES];
        }
        match self.ring.push(frame) {
            Ok(()) => self.counters.frames.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.dropped.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// The counters this tap shares with its writer.
    pub fn counters(&self) -> &Arc<TapCounters> {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_both_directions_and_pause_silences_them() {
        let (mut tap, mut rx, counters) = Tap::new(8);
        tap.received(&[7; FRAME_SAMPLES]);
        tap.frame(&[3; FRAME_SAMPLES]);
        let f = rx.pop().unwrap();
        assert!(f.caller.iter().all(|&x| x == 7));
        assert!(f.other.iter().all(|&x| x == 3));
        counters.paused.store(true, Ordering::Relaxed);
        tap.received(&[7; FRAME_SAMPLES]);
        tap.frame(&[3; FRAME_SAMPLES]);
        let f = rx.pop().unwrap();
        assert!(f.caller.iter().chain(f.other.iter()).all(|&x| x == 0));
    }

    #[test]
    fn a_full_ring_drops_and_counts_without_blocking() {
        let (mut tap, rx, counters) = Tap::new(2);
        for _ in 0..5 {
            tap.frame(&[1; FRAME_SAMPLES]);
        }
        assert_eq!(counters.frames.load(Ordering::Relaxed), 2);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 3);
        assert_eq!(rx.slots(), 2, "the two that fit wait for the writer");
    }

    #[test]
    fn received_audio_of_any_size_is_framed_in_order() {
        let (mut tap, mut rx, _) = Tap::new(8);
        let ramp: Vec<i16> = (0..240).collect();
        tap.received(&ramp);
        tap.frame(&[0; FRAME_SAMPLES]);
        tap.received(&(240..320).collect::<Vec<i16>>());
        tap.frame(&[0; FRAME_SAMPLES]);
        let a = rx.pop().unwrap();
        let b = rx.pop().unwrap();
        assert_eq!(a.caller[0], 0);
        assert_eq!(a.caller[159], 159);
        assert_eq!(b.caller[0], 160);
        assert_eq!(b.caller[159], 319);
        // A flood keeps the newest 200 ms.
        tap.received(&vec![5; RX_HOLD * 2]);
        assert_eq!(tap.rx_len, RX_HOLD);
    }
}
