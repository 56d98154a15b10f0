//! Call recording: the control side of it.
//!
//! A recorded stream's audio loop pushes one frame of both directions a
//! tick into a wait-free ring (`crossline_media::record_tap`); the writer
//! thread (`writer.rs`) drains every ring, encodes (WAV here, Opus in Ogg
//! in `ogg.rs`) and writes under `[recording] recordings_dir`. When the
//! loop lets go of a ring (stopped, or the call ended) the writer finishes
//! the file, uploads it when the storage is an S3-compatible bucket
//! (`bucket.rs`), and its row goes to the store and the signed webhook. A
//! background sweep applies the retention policy (`retention.rs`).
//!
//! Outside call control, a live call is addressed by its SIP Call-ID
//! through a [`CallCommand`] (the API today, TwiML `<Record>` later).

mod bucket;
mod ogg;
mod retention;
pub(crate) mod writer;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot};

use crate::config::RecordingConfig;
pub use crate::config::{RecordChannels, RecordFormat};
use crate::media::record_tap::{Tap, TapCounters};
use crate::store::{RecordingRecord, Store};
use crate::telemetry::names;

/// Channels and format a recording asks for; unset: `[recording]`'s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordOptions {
    pub channels: Option<RecordChannels>,
    pub format: Option<RecordFormat>,
}

/// What to do with a call's recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordAction {
    Start(RecordOptions),
    Stop,
    /// PCI: silence (no audio, no DTMF) until resumed.
    Pause,
    Resume,
}

impl RecordAction {
    /// "start", "stop", "pause" or "resume".
    pub fn parse(action: &str, options: RecordOptions) -> Option<RecordAction> {
        Some(match action {
            "start" => RecordAction::Start(options),
            "stop" => RecordAction::Stop,
            "pause" => RecordAction::Pause,
            "resume" => RecordAction::Resume,
            _ => return None,
        })
    }
}

/// Where a call's recording stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RecordingState {
    #[default]
    Off,
    /// The route's recording starts once its announcement has played.
    Announcing,
    On {
        paused: bool,
    },
}

impl RecordingState {
    pub fn name(self) -> &'static str {
        match self {
            RecordingState::Off => "stopped",
            RecordingState::Announcing => "announcing",
            RecordingState::On { paused: false } => "recording",
            RecordingState::On { paused: true } => "paused",
        }
    }
}

/// Why a recording action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no such call in progress")]
    NoCall,
    #[error("the call has no audio yet")]
    NoMedia,
    #[error("the call is already being recorded")]
    AlreadyRecording,
    #[error("the call is not being recorded")]
    NotRecording,
}

/// A command to call control from outside it (the API).
#[derive(Debug)]
pub enum CallCommand {
    /// Record a live call, by SIP Call-ID.
    Record {
        call_id: String,
        action: RecordAction,
        reply: oneshot::Sender<Result<RecordingState, RecordError>>,
    },
    /// Place a call for the Calls API; Err says why it can't go out.
    Dial {
        call: Box<crate::twiml::calls::NewCall>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// End the live call with this CallSid (`ringing_only`: unless it is
    /// answered already); the call as it is now, None if none is live.
    End {
        sid: String,
        ringing_only: bool,
        reply: oneshot::Sender<Option<crate::twiml::calls::CallView>>,
    },
    /// The live calls, as the Calls API shows them.
    List {
        reply: oneshot::Sender<Vec<crate::twiml::calls::CallView>>,
    },
}

/// What a stream needs to start recording: the loop's end and the
/// counters the control side keeps (pause goes through them).
pub struct Started {
    pub tap: Box<Tap>,
    pub counters: Arc<TapCounters>,
}

/// The recording service: shared by the runtime, flows and the API.
pub struct Recordings {
    /// Absolute; created with the first recording.
    dir: PathBuf,
    channels: RecordChannels,
    format: RecordFormat,
    buffer_frames: usize,
    announcement: Option<Arc<[i16]>>,
    writer: writer::Writer,
    commands: mpsc::UnboundedSender<CallCommand>,
    store: Arc<dyn Store>,
    /// `[recording] storage = "s3"`: where finished files go.
    bucket: Option<Arc<bucket::Bucket>>,
}

impl Recordings {
    /// Start the writer thread, the task that stores finished recordings
    /// (and posts the webhook), and the retention sweep. Commands for
    /// live calls come out of the receiver.
    pub fn start(
        config: &RecordingConfig,
        announcement: Option<Arc<[i16]>>,
        store: Arc<dyn Store>,
        http: reqwest::Client,
    ) -> anyhow::Result<(Arc<Recordings>, mpsc::UnboundedReceiver<CallCommand>)> {
        use anyhow::Context as _;
        let dir = std::path::absolute(&config.recordings_dir).with_context(|| {
            format!(
                "[recording] recordings_dir {}",
                config.recordings_dir.display()
            )
        })?;
        let (done, finished) = mpsc::unbounded_channel();
        let writer = writer::Writer::spawn(done).context("starting the recording writer")?;
        let stored = writer.stored();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let webhook = match (&config.webhook_url, config.webhook_secret()) {
            (Some(url), Ok(Some(secret))) => Some((url.clone(), secret)),
            _ => None,
        };
        let bucket = match config.storage {
            crate::config::RecordStorage::Local => None,
            crate::config::RecordStorage::S3 => {
                Some(Arc::new(bucket::Bucket::from_config(config)?))
            }
        };
        tokio::spawn(store_finished(
            finished,
            Finished {
                stored,
                store: store.clone(),
                http,
                webhook,
                dir: dir.clone(),
                bucket: bucket.clone(),
            },
        ));
        let recordings = Arc::new(Recordings {
            bucket,
            dir,
            channels: config.channels,
            format: config.format,
            buffer_frames: (config.buffer_ms / 20).max(1) as usize,
            announcement,
            writer,
            commands,
            store,
        });
        retention::spawn(recordings.clone(), retention::Policy::from_config(config));
        Ok((recordings, command_rx))
    }

    /// Begin writing a recording of `call_id`; the stream takes the tap.
    pub fn begin(&self, call_id: &str, options: RecordOptions) -> Result<Started, String> {
        let channels = options.channels.unwrap_or(self.channels);
        let format = options.format.unwrap_or(self.format);
        let id = new_id();
        let file_name = format!("{id}.{}", writer::format_name(format));
        std::fs::create_dir_all(&self.dir).map_err(|e| {
            format!(
                "cannot create [recording] recordings_dir {}: {e}",
                self.dir.display()
            )
        })?;
        let (tap, frames, counters) = Tap::new(self.buffer_frames);
        self.writer.add(writer::Job {
            id: id.clone(),
            call_id: crate::store::sip_text(call_id),
            path: self.dir.join(&file_name),
            file_name,
            channels,
            format,
            started_at: SystemTime::now(),
            frames,
            counters: counters.clone(),
        })?;
        metrics::counter!(names::RECORDINGS_STARTED).increment(1);
        tracing::info!(recording = %id, ?channels, ?format, "recording started");
        Ok(Started {
            tap: Box::new(tap),
            counters,
        })
    }

    /// What plays before a recording starts, if anything.
    pub fn announcement(&self) -> Option<Arc<[i16]>> {
        self.announcement.clone()
    }

    /// Send a command to a live call and wait for its answer.
    pub async fn command(
        &self,
        call_id: String,
        action: RecordAction,
    ) -> Result<RecordingState, RecordError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(CallCommand::Record {
                call_id,
                action,
                reply,
            })
            .map_err(|_| RecordError::NoCall)?;
        answer.await.unwrap_or(Err(RecordError::NoCall))
    }

    /// Send any other command to call control (None: it is gone).
    pub async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> CallCommand,
    ) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).ok()?;
        answer.await.ok()
    }

    /// A recording's file, only ever inside the recordings directory: the
    /// row's name must be one plain file name, and the resolved path
    /// (symlinks followed) must still be under the directory.
    pub fn file_of(&self, row: &RecordingRecord) -> Option<PathBuf> {
        let name = Path::new(&row.path);
        let mut parts = name.components();
        if !matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(_)), None)
        ) {
            return None;
        }
        let dir = self.dir.canonicalize().ok()?;
        let path = dir.join(name).canonicalize().ok()?;
        path.starts_with(&dir).then_some(path)
    }

    /// The bucket a row's object is in (None: the row's file is local).
    fn bucket_of(&self, row: &RecordingRecord) -> Result<Option<&bucket::Bucket>, String> {
        match (row.storage.as_str(), &self.bucket) {
            ("s3", Some(b)) => Ok(Some(b)),
            ("s3", None) => {
                Err("the recording is in a bucket; [recording] storage is not s3".into())
            }
            _ => Ok(None),
        }
    }

    /// The recording's size; None when its file is gone.
    pub async fn size(&self, row: &RecordingRecord) -> Result<Option<u64>, String> {
        if let Some(b) = self.bucket_of(row)? {
            return b.size(&row.path).await.map(Some);
        }
        let Some(path) = self.file_of(row) else {
            return Ok(None);
        };
        Ok(std::fs::metadata(path).ok().map(|m| m.len()))
    }

    /// Bytes `start..=end` of the recording.
    pub async fn read(
        &self,
        row: &RecordingRecord,
        start: u64,
        end: u64,
    ) -> Result<Vec<u8>, String> {
        if let Some(b) = self.bucket_of(row)? {
            return b.range(&row.path, start, end).await;
        }
        let path = self.file_of(row).ok_or("the recording's file is gone")?;
        tokio::task::spawn_blocking(move || {
            use std::io::{Read as _, Seek as _};
            let mut file = std::fs::File::open(path)?;
            file.seek(std::io::SeekFrom::Start(start))?;
            let mut bytes = Vec::new();
            file.take(end.saturating_sub(start) + 1)
                .read_to_end(&mut bytes)?;
            Ok::<_, std::io::Error>(bytes)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }

    /// Delete a recording: its file, then its row. False when unknown.
    pub async fn delete(&self, id: &str, reason: &'static str) -> Result<bool, String> {
        let row = self.store.recording(id).await.map_err(|e| e.to_string())?;
        let Some(row) = row else {
            return Ok(false);
        };
        self.remove(&row, reason).await?;
        Ok(true)
    }

    async fn remove(&self, row: &RecordingRecord, reason: &'static str) -> Result<(), String> {
        if let Some(b) = self.bucket_of(row)? {
            b.delete(&row.path).await?;
        } else if let Some(path) = self.file_of(row) {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("cannot delete the file: {e}")),
            }
        }
        self.store
            .delete_recording(&row.id)
            .map_err(|e| e.to_string())?;
        metrics::counter!(names::RECORDINGS_DELETED, "reason" => reason).increment(1);
        tracing::info!(recording = %row.id, reason, "recording deleted");
        Ok(())
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Wait (at most `limit`) for every recording to be finished and its
    /// row queued, at shutdown once the audio loops have let go of them.
    pub async fn wait_idle(&self, limit: Duration) {
        let until = tokio::time::Instant::now() + limit;
        while self.writer.active() > 0 && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// 128 random bits, hex: names the row and the file.
fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    crate::messaging::crypto::hex(&bytes)
}

/// A recording as the API and the webhook show it.
pub fn json(r: &RecordingRecord) -> serde_json::Value {
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    };
    serde_json::json!({
        "id": r.id,
        "call_id": r.call_id,
        "started_at": ms(r.started_at),
        "duration_ms": r.duration_ms,
        "size_bytes": r.size_bytes,
        "sha256": r.sha256,
        "channels": r.channels,
        "format": r.format,
        "complete": r.complete,
        "storage": r.storage,
        "url": format!("/v1/recordings/{}", r.id),
    })
}

/// What becomes of finished recordings.
struct Finished {
    /// Counted off once each row is queued (`Recordings::wait_idle`).
    stored: Arc<std::sync::atomic::AtomicUsize>,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    webhook: Option<(String, String)>,
    dir: PathBuf,
    bucket: Option<Arc<bucket::Bucket>>,
}

/// Finished recordings: to the bucket (if any), the row to the store,
/// then the webhook.
async fn store_finished(mut finished: mpsc::UnboundedReceiver<RecordingRecord>, to: Finished) {
    let Finished {
        stored,
        store,
        http,
        webhook,
        dir,
        bucket,
    } = to;
    let hooks = webhook.as_ref().map(|_| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(crate::callback::deliver_webhooks(http, rx));
        tx
    });
    while let Some(mut row) = finished.recv().await {
        if let Some(b) = &bucket {
            let file = dir.join(&row.path);
            let key = b.key(&row.path);
            match b.upload(&file, &key).await {
                Ok(()) => {
                    if let Err(e) = std::fs::remove_file(&file) {
                        tracing::warn!(recording = %row.id, %e, "recording: uploaded, but the local copy stays");
                    }
                    row.storage = "s3".into();
                    row.path = key;
                }
                Err(e) => {
                    // Kept on disk, and listed as local: nothing is lost.
                    tracing::warn!(recording = %row.id, %e, "recording: upload failed; kept in recordings_dir");
                    metrics::counter!(names::RECORDING_UPLOAD_ERRORS).increment(1);
                }
            }
        }
        tracing::info!(recording = %row.id, duration_ms = row.duration_ms, size = row.size_bytes, complete = row.complete, "recording finished");
        let body = serde_json::json!({ "event": "recording.completed", "recording": json(&row) });
        if let Err(e) = store.record_recording(row.clone()) {
            tracing::error!(%e, recording = %row.id, "store: cannot queue the recording");
        }
        stored.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if let (Some((url, secret)), Some(queue)) = (&webhook, &hooks) {
            let _ = queue.send(crate::callback::WebhookPost::signed(
                "recording",
                url.clone(),
                row.id.clone(),
                body.to_string(),
                secret,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;

    fn row(id: &str, age: Duration, path: &str) -> RecordingRecord {
        RecordingRecord {
            id: id.into(),
            call_id: "c@h".into(),
            started_at: SystemTime::now() - age,
            duration_ms: 1000,
            size_bytes: 10,
            sha256: String::new(),
            channels: "dual".into(),
            format: "wav".into(),
            complete: true,
            storage: "local".into(),
            path: path.into(),
        }
    }

    /// The sweep deletes what is past `retention_days`, file and row, and
    /// keeps the rest; files are only ever found inside the directory.
    #[tokio::test]
    async fn retention_sweeps_old_recordings_and_paths_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let recs = dir.path().join("recs");
        std::fs::create_dir(&recs).unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let day = Duration::from_secs(86_400);
        for (id, age) in [("old", 3 * day), ("new", Duration::ZERO)] {
            std::fs::write(recs.join(format!("{id}.wav")), b"RIFF").unwrap();
            store
                .record_recording(row(id, age, &format!("{id}.wav")))
                .unwrap();
        }
        std::fs::write(dir.path().join("secret.txt"), b"outside").unwrap();
        let config = RecordingConfig {
            recordings_dir: recs.clone(),
            retention_days: 2,
            sweep_interval_secs: 1,
            ..RecordingConfig::default()
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (recordings, _commands) =
            Recordings::start(&config, None, store.clone(), reqwest::Client::new()).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while store.recording("old").await.unwrap().is_some() {
            assert!(tokio::time::Instant::now() < deadline, "never swept");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!recs.join("old.wav").exists());
        assert!(recs.join("new.wav").exists());
        assert!(store.recording("new").await.unwrap().is_some());

        for outside in [
            "../secret.txt",
            "/etc/passwd",
            "sub/../../secret.txt",
            ".",
            "",
        ] {
            assert_eq!(
                recordings.file_of(&row("x", Duration::ZERO, outside)),
                None,
                "{outside}"
            );
        }
        // A link inside pointing out is no way out either.
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), recs.join("link.wav")).unwrap();
        assert_eq!(
            recordings.file_of(&row("x", Duration::ZERO, "link.wav")),
            None
        );
        assert!(recordings
            .file_of(&row("new", Duration::ZERO, "new.wav"))
            .is_some());
        assert!(recordings.delete("new", "api").await.unwrap());
        assert!(!recs.join("new.wav").exists());
        assert!(!recordings.delete("new", "api").await.unwrap());
    }
}
