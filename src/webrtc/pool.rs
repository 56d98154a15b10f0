//! Transcoding off the async threads. Opus decode and encode cost about
//! 40 µs per leg per 20 ms: CPU-bound work that must not run
//! on tokio's worker threads, which also carry every SIP message. A small
//! fixed pool of plain threads (`[webrtc] transcode_threads`, default
//! min(2, cores)) does it instead; each owns the codec state of the legs
//! it was given.
//!
//! A leg's task keeps the sockets, str0m and the RTP clocks, and talks to
//! its worker through two wait-free SPSC byte rings ([`rtrb`], 8 KiB
//! each): jobs in (an Opus packet from the browser, a µ-law frame from the
//! gateway), results out, each a record of kind, length and bytes. A frame
//! allocates nothing and takes no lock: the leg wakes its worker with
//! `Thread::unpark` (a futex word), the worker wakes the leg's task
//! through an [`AtomicWaker`]. A full ring (about half a second of both
//! directions behind, with typical Opus packets) drops that frame, since
//! late audio is lost audio, and counts it in
//! `crossline_webrtc_transcode_dropped_total`.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::Poll;
use std::thread::Thread;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

use super::transcode::{Downlink, Uplink, FRAME_8K};

/// The largest packet a record carries: any datagram's payload on a
/// 1500-byte MTU path (an Opus frame is at most 1,276 bytes with its TOC).
pub const MAX_PACKET: usize = 1500;
/// Bytes per ring, each way.
const RING_BYTES: usize = 8 * 1024;
/// A record's header: kind, then the length (u16, little-endian).
const HEADER: usize = 3;

/// Record kinds.
const UPLINK: u8 = 1;
const DOWNLINK: u8 = 2;
const TO_GATEWAY: u8 = 3;
const TO_BROWSER: u8 = 4;

/// Append one record; false (and nothing written) when it doesn't fit.
fn push_record(ring: &mut rtrb::Producer<u8>, kind: u8, bytes: &[u8]) -> bool {
    let Ok(len) = u16::try_from(bytes.len()) else {
        return false;
    };
    if bytes.len() > MAX_PACKET {
        return false;
    }
    let Ok(mut chunk) = ring.write_chunk(HEADER + bytes.len()) else {
        return false;
    };
    let [lo, hi] = len.to_le_bytes();
    let (a, b) = chunk.as_mut_slices();
    let header = [kind, lo, hi];
    for (dst, src) in a
        .iter_mut()
        .chain(b.iter_mut())
        .zip(header.iter().chain(bytes))
    {
        *dst = *src;
    }
    chunk.commit_all();
    true
}

/// Take the next record into `buf`: its kind and length.
fn pop_record(ring: &mut rtrb::Consumer<u8>, buf: &mut [u8; MAX_PACKET]) -> Option<(u8, usize)> {
    let mut header = [0u8; HEADER];
    {
        // Peek: a chunk not committed consumes nothing.
        let chunk = ring.read_chunk(HEADER).ok()?;
        let (a, b) = chunk.as_slices();
        for (dst, src) in header.iter_mut().zip(a.iter().chain(b)) {
            *dst = *src;
        }
    }
    let [kind, lo, hi] = header;
    let len = usize::from(u16::from_le_bytes([lo, hi])).min(MAX_PACKET);
    // The writer commits a record whole, so the rest is there.
    let chunk = ring.read_chunk(HEADER + len).ok()?;
    let (a, b) = chunk.as_slices();
    for (dst, src) in buf.iter_mut().zip(a.iter().chain(b).skip(HEADER)) {
        *dst = *src;
    }
    chunk.commit_all();
    Some((kind, len))
}

/// What a worker hands back to the leg (the bytes are in the caller's
/// buffer).
pub enum Done<'a> {
    /// 20 ms of µ-law for the gateway.
    ToGateway(&'a [u8]),
    /// One 20 ms Opus packet for the browser.
    ToBrowser(&'a [u8]),
}

/// How many threads `configured` (0: automatic) means on this machine.
pub fn thread_count(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(2)
}

/// The worker threads. Dropping the pool lets each thread end once its
/// last leg is gone.
pub struct TranscodePool {
    workers: Vec<Worker>,
}

struct Worker {
    thread: Thread,
    legs: mpsc::Sender<WorkerLeg>,
    /// Legs assigned (the leg side decrements it when it goes).
    load: Arc<AtomicUsize>,
}

impl TranscodePool {
    pub fn start(threads: usize) -> std::io::Result<TranscodePool> {
        let mut workers = Vec::with_capacity(threads);
        for index in 0..threads.max(1) {
            let (tx, rx) = mpsc::channel();
            let load = Arc::new(AtomicUsize::new(0));
            let handle = std::thread::Builder::new()
                .name(format!("webrtc-transcode-{index}"))
                .spawn(move || run(index, rx))?;
            workers.push(Worker {
                thread: handle.thread().clone(),
                legs: tx,
                load,
            });
        }
        tracing::info!(
            threads = workers.len(),
            "webrtc: transcoding threads started"
        );
        Ok(TranscodePool { workers })
    }

    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// Give a leg's codec state to the least loaded worker; the leg keeps
    /// the returned handle.
    pub fn attach(&self, uplink: Uplink, downlink: Downlink) -> Option<Transcoder> {
        let worker = self
            .workers
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))?;
        let (jobs_tx, jobs_rx) = rtrb::RingBuffer::new(RING_BYTES);
        let (done_tx, done_rx) = rtrb::RingBuffer::new(RING_BYTES);
        let waker = Arc::new(AtomicWaker::new());
        worker
            .legs
            .send(WorkerLeg {
                jobs: jobs_rx,
                done: done_tx,
                waker: waker.clone(),
                uplink,
                downlink,
            })
            .ok()?;
        worker.load.fetch_add(1, Ordering::Relaxed);
        worker.thread.unpark();
        Some(Transcoder {
            jobs: jobs_tx,
            done: done_rx,
            waker,
            worker: worker.thread.clone(),
            load: worker.load.clone(),
        })
    }
}

/// A leg's end of its worker: queue jobs, take results.
pub struct Transcoder {
    jobs: rtrb::Producer<u8>,
    done: rtrb::Consumer<u8>,
    waker: Arc<AtomicWaker>,
    worker: Thread,
    load: Arc<AtomicUsize>,
}

impl Transcoder {
    /// Queue a browser packet for decoding; false when it was dropped
    /// (the ring is full, or the packet is larger than [`MAX_PACKET`]).
    pub fn uplink(&mut self, opus: &[u8]) -> bool {
        self.queue(UPLINK, opus, "uplink")
    }

    /// Queue a 20 ms µ-law frame for encoding; false when it was dropped.
    pub fn downlink(&mut self, ulaw: &[u8; FRAME_8K]) -> bool {
        self.queue(DOWNLINK, ulaw, "downlink")
    }

    fn queue(&mut self, kind: u8, bytes: &[u8], direction: &'static str) -> bool {
        if push_record(&mut self.jobs, kind, bytes) {
            self.worker.unpark();
            return true;
        }
        metrics::counter!(crate::telemetry::names::WEBRTC_TRANSCODE_DROPPED, "direction" => direction)
            .increment(1);
        false
    }

    /// The next result, if one is ready, with its bytes in `buf`.
    pub fn next<'a>(&mut self, buf: &'a mut [u8; MAX_PACKET]) -> Option<Done<'a>> {
        let (kind, len) = loop {
            let (kind, len) = pop_record(&mut self.done, buf)?;
            if kind == TO_GATEWAY || kind == TO_BROWSER {
                break (kind, len);
            }
        };
        let bytes = buf.get(..len).unwrap_or_default();
        Some(if kind == TO_GATEWAY {
            Done::ToGateway(bytes)
        } else {
            Done::ToBrowser(bytes)
        })
    }

    /// Resolves once a result is ready.
    pub fn ready(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if !self.done.is_empty() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            if self.done.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
    }
}

impl Drop for Transcoder {
    fn drop(&mut self) {
        self.load.fetch_sub(1, Ordering::Relaxed);
        // The worker sees the abandoned ring and frees the leg's state.
        self.worker.unpark();
    }
}

/// A worker's end of one leg.
struct WorkerLeg {
    jobs: rtrb::Consumer<u8>,
    done: rtrb::Producer<u8>,
    waker: Arc<AtomicWaker>,
    uplink: Uplink,
    downlink: Downlink,
}

/// A worker's scratch space, reused for every frame.
struct Scratch {
    job: [u8; MAX_PACKET],
    opus: [u8; MAX_PACKET],
    /// Results that found the leg's ring full.
    dropped: u64,
}

impl WorkerLeg {
    /// Everything queued; returns how many jobs were done.
    fn work(&mut self, s: &mut Scratch) -> usize {
        let mut jobs = 0;
        while let Some((kind, len)) = pop_record(&mut self.jobs, &mut s.job) {
            jobs += 1;
            let input = s.job.get(..len).unwrap_or_default();
            match kind {
                UPLINK => {
                    let done = &mut self.done;
                    let dropped = &mut s.dropped;
                    let pushed = self.uplink.push(Some(input), |frame| {
                        if !push_record(done, TO_GATEWAY, frame) {
                            *dropped += 1;
                        }
                    });
                    if let Err(e) = pushed {
                        tracing::debug!(error = %e, "webrtc: undecodable Opus");
                    }
                }
                DOWNLINK => {
                    // Encoded even when the ring is full: the encoder keeps
                    // its continuity; only the packet goes.
                    match self.downlink.push(input, &mut s.opus) {
                        Ok(0) => {}
                        Ok(n) => {
                            let packet = s.opus.get(..n).unwrap_or_default();
                            if !push_record(&mut self.done, TO_BROWSER, packet) {
                                s.dropped += 1;
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "webrtc: Opus encode failed"),
                    }
                }
                _ => {}
            }
        }
        if jobs > 0 {
            self.waker.wake();
        }
        jobs
    }

    /// The leg is gone and nothing is left to do for it.
    fn finished(&self) -> bool {
        self.jobs.is_abandoned() && self.jobs.is_empty()
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

fn run(index: usize, new_legs: mpsc::Receiver<WorkerLeg>) {
    let worker = index.to_string();
    let cpu = metrics::counter!(crate::telemetry::names::WEBRTC_TRANSCODE_CPU, "worker" => worker.clone());
    let jobs_done = metrics::counter!(crate::telemetry::names::WEBRTC_TRANSCODE_JOBS, "worker" => worker.clone());
    let dropped_out = metrics::counter!(crate::telemetry::names::WEBRTC_TRANSCODE_DROPPED, "direction" => "result");
    let legs_gauge =
        metrics::gauge!(crate::telemetry::names::WEBRTC_TRANSCODE_LEGS, "worker" => worker);
    let mut legs: Vec<WorkerLeg> = Vec::new();
    let mut scratch = Box::new(Scratch {
        job: [0; MAX_PACKET],
        opus: [0; MAX_PACKET],
        dropped: 0,
    });
    let mut open = true;
    let mut jobs_since = 0u64;
    let mut report_at = Instant::now();
    loop {
        // New legs (only at call set-up).
        loop {
            match new_legs.try_recv() {
                Ok(leg) => {
                    legs.push(leg);
                    legs_gauge.set(legs.len() as f64);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let mut jobs = 0;
        for leg in &mut legs {
            jobs += leg.work(&mut scratch);
        }
        jobs_since += jobs as u64;
        // About once a second, the counters (not per frame).
        let now = Instant::now();
        if now >= report_at {
            report_at = now + Duration::from_secs(1);
            cpu.absolute(thread_cpu().as_micros() as u64);
            jobs_done.increment(std::mem::take(&mut jobs_since));
            dropped_out.increment(std::mem::take(&mut scratch.dropped));
        }
        if jobs > 0 {
            continue;
        }
        // Idle: free the legs that ended, then sleep until a leg queues
        // something (or a new leg arrives).
        let before = legs.len();
        legs.retain(|l| !l.finished());
        if legs.len() != before {
            legs_gauge.set(legs.len() as f64);
        }
        if !open && legs.is_empty() {
            return;
        }
        // A timeout, so an idle worker still reports and frees ended legs.
        std::thread::park_timeout(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, frames: usize) -> Vec<[u8; FRAME_8K]> {
        (0..frames)
            .map(|f| {
                let mut out = [0u8; FRAME_8K];
                for (i, o) in out.iter_mut().enumerate() {
                    let n = (f * FRAME_8K + i) as f64;
                    let s = (n * 2.0 * std::f64::consts::PI * freq / 8000.0).sin() * 8000.0;
                    *o = crate::media::g711::linear_to_ulaw(s as i16);
                }
                out
            })
            .collect()
    }

    /// Results, owned: (to the gateway?, bytes).
    type Results = Vec<(bool, Vec<u8>)>;

    /// Wait (blocking, as a test on a plain thread may) for results.
    fn collect(t: &mut Transcoder, want: usize) -> Results {
        let mut got = Vec::new();
        let mut buf = [0u8; MAX_PACKET];
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want && Instant::now() < deadline {
            match t.next(&mut buf) {
                Some(Done::ToGateway(b)) => got.push((true, b.to_vec())),
                Some(Done::ToBrowser(b)) => got.push((false, b.to_vec())),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        got
    }

    #[test]
    fn records_keep_their_bounds_across_the_ring_wrap() {
        let (mut tx, mut rx) = rtrb::RingBuffer::new(1000);
        let mut buf = [0u8; MAX_PACKET];
        for round in 0..50u8 {
            let len = 100 + usize::from(round) * 7 % 300;
            let data: Vec<u8> = (0..len).map(|i| (i as u8) ^ round).collect();
            assert!(push_record(&mut tx, TO_BROWSER, &data));
            assert!(push_record(&mut tx, TO_GATEWAY, &[round; FRAME_8K]));
            assert_eq!(pop_record(&mut rx, &mut buf), Some((TO_BROWSER, len)));
            assert_eq!(&buf[..len], &data[..]);
            assert_eq!(pop_record(&mut rx, &mut buf), Some((TO_GATEWAY, FRAME_8K)));
            assert!(buf[..FRAME_8K].iter().all(|b| *b == round));
        }
        assert_eq!(pop_record(&mut rx, &mut buf), None);
        // A record that doesn't fit is not half-written.
        assert!(!push_record(&mut tx, UPLINK, &[1; 999]));
        assert!(rx.is_empty());
    }

    #[test]
    fn frames_go_round_a_worker_and_come_back() {
        let pool = TranscodePool::start(2).unwrap();
        let mut a = pool
            .attach(Uplink::new().unwrap(), Downlink::new(1).unwrap())
            .unwrap();
        let mut b = pool
            .attach(Uplink::new().unwrap(), Downlink::new(1).unwrap())
            .unwrap();
        // Legs spread over the workers.
        assert!(pool
            .workers
            .iter()
            .all(|w| w.load.load(Ordering::Relaxed) == 1));
        // Downlink: µ-law in, Opus out.
        let mut opus = Vec::new();
        for frame in tone(1000.0, 10) {
            assert!(a.downlink(&frame));
            for (to_gateway, bytes) in collect(&mut a, 1) {
                assert!(!to_gateway, "a downlink job made uplink audio");
                opus.push(bytes);
            }
        }
        assert!(opus.len() >= 8, "{} Opus packets", opus.len());
        // Uplink on the other leg: each packet gives 20 ms of µ-law.
        let mut frames = 0;
        for p in &opus {
            assert!(b.uplink(p));
            for (to_gateway, bytes) in collect(&mut b, 1) {
                assert!(to_gateway);
                assert_eq!(bytes.len(), FRAME_8K);
                frames += 1;
            }
        }
        assert!(frames >= opus.len() - 2, "{frames} frames back");
        drop(a);
        assert_eq!(
            pool.workers
                .iter()
                .map(|w| w.load.load(Ordering::Relaxed))
                .sum::<usize>(),
            1
        );
        // Oversized packets are refused, not truncated.
        assert!(!b.uplink(&[0u8; MAX_PACKET + 1]));
    }

    #[test]
    fn a_full_ring_drops_instead_of_growing() {
        // No worker thread: nothing drains the ring.
        let (tx, _rx) = mpsc::channel();
        let pool = TranscodePool {
            workers: vec![Worker {
                thread: std::thread::current(),
                legs: tx,
                load: Arc::new(AtomicUsize::new(0)),
            }],
        };
        let mut t = pool
            .attach(Uplink::new().unwrap(), Downlink::new(1).unwrap())
            .unwrap();
        let queued = (0..200).filter(|_| t.downlink(&[0xff; FRAME_8K])).count();
        assert_eq!(queued, RING_BYTES / (HEADER + FRAME_8K));
    }

    #[test]
    fn automatic_thread_count_is_at_most_two() {
        assert!((1..=2).contains(&thread_count(0)));
        assert_eq!(thread_count(3), 3);
    }
}
