//! The writer thread: one for every recording. It drains each recording's
//! ring (fed by the audio loop, a frame a tick), encodes and writes, and
//! when the loop lets go of the ring (stopped, or the call ended) it
//! finishes the file and hands back its row.
//!
//! A write that fails (disk full, I/O error) ends writing for that
//! recording only: its ring is still drained, the file is left as far as
//! it got, and the row says incomplete. Nothing here can reach the loop.

use std::fs::File;
use std::io::{BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sha2::Digest as _;

use crate::config::{RecordChannels, RecordFormat};
use crate::media::record_tap::{RecordFrame, TapCounters};
use crate::media::FRAME_SAMPLES;
use crate::store::RecordingRecord;
use crate::telemetry::names;

/// How often the writer drains every ring: well inside the smallest ring
/// (`[recording] buffer_ms` ≥ 100 ms).
const SWEEP: Duration = Duration::from_millis(20);

/// One recording for the writer.
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) call_id: String,
    /// The file's full path (under the recordings directory).
    pub(crate) path: PathBuf,
    pub(crate) file_name: String,
    pub(crate) channels: RecordChannels,
    pub(crate) format: RecordFormat,
    pub(crate) started_at: SystemTime,
    pub(crate) frames: rtrb::Consumer<RecordFrame>,
    pub(crate) counters: Arc<TapCounters>,
}

/// The writer's handle: jobs in, finished rows out (on `done`).
pub(crate) struct Writer {
    jobs: std::sync::mpsc::Sender<Job>,
    /// Recordings added and not yet stored: whoever takes the rows from
    /// `done` counts them off ([`Writer::stored`]).
    active: Arc<AtomicUsize>,
}

impl Writer {
    pub(crate) fn spawn(
        done: tokio::sync::mpsc::UnboundedSender<RecordingRecord>,
    ) -> std::io::Result<Writer> {
        let (jobs, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || run(rx, done))?;
        Ok(Writer {
            jobs,
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    pub(crate) fn add(&self, job: Job) -> Result<(), String> {
        // Counted here, so `idle` can't miss a job in the channel.
        self.active.fetch_add(1, Ordering::SeqCst);
        self.jobs.send(job).map_err(|_| {
            self.active.fetch_sub(1, Ordering::SeqCst);
            "the recording writer has stopped".to_string()
        })
    }

    /// Recordings not yet finished and stored.
    pub(crate) fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// The counter [`Writer::active`] reads: one off per row stored.
    pub(crate) fn stored(&self) -> Arc<AtomicUsize> {
        self.active.clone()
    }
}

fn run(
    jobs: std::sync::mpsc::Receiver<Job>,
    done: tokio::sync::mpsc::UnboundedSender<RecordingRecord>,
) {
    let mut active: Vec<Active> = Vec::new();
    let mut open = true;
    loop {
        if active.is_empty() && open {
            // Nothing to drain: wait for work instead of polling.
            match jobs.recv() {
                Ok(job) => active.push(Active::open(job)),
                Err(_) => return,
            }
        }
        loop {
            match jobs.try_recv() {
                Ok(job) => active.push(Active::open(job)),
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let mut i = 0;
        while let Some(a) = active.get_mut(i) {
            a.drain();
            if a.frames.is_abandoned() && a.frames.is_empty() {
                let _ = done.send(active.swap_remove(i).finish());
            } else {
                i += 1;
            }
        }
        metrics::gauge!(names::RECORDINGS_ACTIVE).set(active.len() as f64);
        if active.is_empty() && !open {
            return;
        }
        std::thread::sleep(SWEEP);
    }
}

/// One recording being written.
struct Active {
    job_id: String,
    call_id: String,
    path: PathBuf,
    file_name: String,
    channels: RecordChannels,
    format: RecordFormat,
    started_at: SystemTime,
    frames: rtrb::Consumer<RecordFrame>,
    counters: Arc<TapCounters>,
    /// `None` once writing failed (or the file never opened).
    sink: Option<Box<dyn Sink>>,
    written_frames: u64,
    failed: bool,
}

impl Active {
    fn open(job: Job) -> Active {
        let sink = open_sink(&job.path, job.channels, job.format);
        if let Err(e) = &sink {
            tracing::warn!(recording = %job.id, error = %e, "recording: cannot create the file");
            metrics::counter!(names::RECORDING_WRITE_ERRORS).increment(1);
        }
        Active {
            failed: sink.is_err(),
            sink: sink.ok(),
            job_id: job.id,
            call_id: job.call_id,
            path: job.path,
            file_name: job.file_name,
            channels: job.channels,
            format: job.format,
            started_at: job.started_at,
            frames: job.frames,
            counters: job.counters,
            written_frames: 0,
        }
    }

    fn drain(&mut self) {
        while let Ok(frame) = self.frames.pop() {
            self.written_frames += 1;
            let Some(sink) = self.sink.as_mut() else {
                continue;
            };
            if let Err(e) = sink.write(&frame) {
                tracing::warn!(recording = %self.job_id, error = %e, "recording: write failed; the rest is dropped");
                metrics::counter!(names::RECORDING_WRITE_ERRORS).increment(1);
                self.failed = true;
                // Dropping it closes the file as far as it got.
                self.sink = None;
            }
        }
    }

    fn finish(mut self) -> RecordingRecord {
        if let Some(sink) = self.sink.take() {
            if let Err(e) = sink.finish() {
                tracing::warn!(recording = %self.job_id, error = %e, "recording: cannot finish the file");
                metrics::counter!(names::RECORDING_WRITE_ERRORS).increment(1);
                self.failed = true;
            }
        }
        let dropped = self.counters.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            metrics::counter!(names::RECORDING_FRAMES_DROPPED).increment(dropped);
            tracing::warn!(recording = %self.job_id, dropped, "recording: the writer fell behind; frames dropped");
        }
        let (size_bytes, sha256) = digest(&self.path).unwrap_or_default();
        let complete = !self.failed && dropped == 0;
        metrics::counter!(names::RECORDINGS_FINISHED, "complete" => complete.to_string())
            .increment(1);
        metrics::counter!(names::RECORDING_BYTES).increment(size_bytes);
        // Dropped frames were audio time too: the length is the call's.
        let frames = self.written_frames + dropped;
        RecordingRecord {
            id: self.job_id,
            call_id: self.call_id,
            started_at: self.started_at,
            duration_ms: frames * 20,
            size_bytes,
            sha256,
            channels: channels_name(self.channels).into(),
            format: format_name(self.format).into(),
            complete,
            storage: "local".into(),
            path: self.file_name,
        }
    }
}

pub(crate) fn channels_name(c: RecordChannels) -> &'static str {
    match c {
        RecordChannels::Mono => "mono",
        RecordChannels::Dual => "dual",
    }
}

pub(crate) fn format_name(f: RecordFormat) -> &'static str {
    match f {
        RecordFormat::Wav => "wav",
        RecordFormat::Ogg => "ogg",
    }
}

/// Size and SHA-256 (hex) of what is on disk.
fn digest(path: &std::path::Path) -> std::io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let mut hash = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        hash.update(buf.get(..n).unwrap_or_default());
    }
    Ok((size, crate::messaging::crypto::hex(&hash.finalize())))
}

/// An encoder writing one file.
pub(super) trait Sink: Send {
    fn write(&mut self, frame: &RecordFrame) -> std::io::Result<()>;
    /// Flush, and fill in what the header couldn't know at the start.
    fn finish(self: Box<Self>) -> std::io::Result<()>;
}

fn open_sink(
    path: &std::path::Path,
    channels: RecordChannels,
    format: RecordFormat,
) -> std::io::Result<Box<dyn Sink>> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    Ok(match format {
        RecordFormat::Wav => Box::new(WavSink::new(file, channels)?),
        RecordFormat::Ogg => Box::new(super::ogg::OggSink::new(file, channels)?),
    })
}

/// PCM 16-bit little-endian, 8 kHz: written by hand (a 44-byte header and
/// the samples), so a frame is one copy, not a call per sample.
struct WavSink {
    out: BufWriter<File>,
    channels: RecordChannels,
    data_bytes: u32,
}

const WAV_RATE: u32 = 8000;

impl WavSink {
    fn new(file: File, channels: RecordChannels) -> std::io::Result<WavSink> {
        let mut sink = WavSink {
            out: BufWriter::with_capacity(32 * 1024, file),
            channels,
            data_bytes: 0,
        };
        let header = sink.header();
        sink.out.write_all(&header)?;
        Ok(sink)
    }

    fn channel_count(&self) -> u16 {
        match self.channels {
            RecordChannels::Mono => 1,
            RecordChannels::Dual => 2,
        }
    }

    fn header(&self) -> [u8; 44] {
        let channels = self.channel_count();
        let block = channels * 2;
        let mut h = [0u8; 44];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            if let Some(slot) = h.get_mut(at..at + bytes.len()) {
                slot.copy_from_slice(bytes);
            }
            at += bytes.len();
        };
        put(b"RIFF");
        put(&(36 + self.data_bytes).to_le_bytes());
        put(b"WAVEfmt ");
        put(&16u32.to_le_bytes());
        put(&1u16.to_le_bytes());
        put(&channels.to_le_bytes());
        put(&WAV_RATE.to_le_bytes());
        put(&(WAV_RATE * u32::from(block)).to_le_bytes());
        put(&block.to_le_bytes());
        put(&16u16.to_le_bytes());
        put(b"data");
        put(&self.data_bytes.to_le_bytes());
        h
    }
}

impl Sink for WavSink {
    fn write(&mut self, frame: &RecordFrame) -> std::io::Result<()> {
        let mut bytes = [0u8; FRAME_SAMPLES * 4];
        let n = match self.channels {
            RecordChannels::Mono => {
                let mixed = frame
                    .caller
                    .iter()
                    .zip(frame.other.iter())
                    .map(|(a, b)| a.saturating_add(*b));
                for (slot, x) in bytes.chunks_exact_mut(2).zip(mixed) {
                    slot.copy_from_slice(&x.to_le_bytes());
                }
                FRAME_SAMPLES * 2
            }
            RecordChannels::Dual => {
                let pairs = frame.caller.iter().zip(frame.other.iter());
                for (slot, (l, r)) in bytes.chunks_exact_mut(4).zip(pairs) {
                    let (left, right) = slot.split_at_mut(2);
                    left.copy_from_slice(&l.to_le_bytes());
                    right.copy_from_slice(&r.to_le_bytes());
                }
                FRAME_SAMPLES * 4
            }
        };
        self.out.write_all(bytes.get(..n).unwrap_or_default())?;
        self.data_bytes = self.data_bytes.saturating_add(n as u32);
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> std::io::Result<()> {
        self.out.flush()?;
        let header = self.header();
        let file = self.out.get_mut();
        file.seek(SeekFrom::Start(0))?;
        file.write_all(&header)?;
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::record_tap::Tap;

    fn frame(caller: i16, other: i16) -> RecordFrame {
        RecordFrame {
            caller: [caller; FRAME_SAMPLES],
            other: [other; FRAME_SAMPLES],
        }
    }

    fn record(channels: RecordChannels, frames: &[RecordFrame]) -> (RecordingRecord, PathBuf) {
        let dir = tempfile::tempdir().unwrap().keep();
        let path = dir.join("r.wav");
        let (done, mut rows) = tokio::sync::mpsc::unbounded_channel();
        let writer = Writer::spawn(done).unwrap();
        let (mut tap, consumer, counters) = Tap::new(frames.len() + 1);
        writer
            .add(Job {
                id: "r".into(),
                call_id: "c".into(),
                path: path.clone(),
                file_name: "r.wav".into(),
                channels,
                format: RecordFormat::Wav,
                started_at: SystemTime::now(),
                frames: consumer,
                counters,
            })
            .unwrap();
        for f in frames {
            tap.received(&f.caller);
            tap.frame(&f.other);
        }
        drop(tap);
        let row = rows.blocking_recv().unwrap();
        (row, path)
    }

    #[test]
    fn dual_puts_the_caller_left_and_the_other_party_right() {
        let (row, path) = record(RecordChannels::Dual, &[frame(100, -200), frame(300, 400)]);
        let mut wav = hound::WavReader::open(&path).unwrap();
        assert_eq!(wav.spec().channels, 2);
        assert_eq!(wav.spec().sample_rate, 8000);
        let s: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s.len(), 4 * FRAME_SAMPLES);
        assert_eq!((s[0], s[1]), (100, -200));
        assert_eq!((s[2 * FRAME_SAMPLES], s[2 * FRAME_SAMPLES + 1]), (300, 400));
        assert!(row.complete);
        assert_eq!(row.duration_ms, 40);
        assert_eq!(row.size_bytes, 44 + 4 * 2 * FRAME_SAMPLES as u64);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            row.sha256,
            crate::messaging::crypto::hex(&sha2::Sha256::digest(&bytes))
        );
    }

    #[test]
    fn mono_mixes_both_directions() {
        let (row, path) = record(RecordChannels::Mono, &[frame(100, -300)]);
        let mut wav = hound::WavReader::open(&path).unwrap();
        assert_eq!(wav.spec().channels, 1);
        let s: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
        assert_eq!(s, vec![-200; FRAME_SAMPLES]);
        assert_eq!(row.channels, "mono");
    }
}
