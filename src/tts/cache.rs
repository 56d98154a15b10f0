//! Content-addressed render cache: memory in front of a directory of WAVs.
//!
//! The key hashes everything that changes the audio, so entries never go
//! stale; changing a provider setting just makes new keys.

use std::collections::VecDeque;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use super::{check_text, unique_suffix, TtsError, TtsProvider, TtsRequest};
use crate::media::audio_file::{load_wav, AudioFileError, TARGET_RATE};

/// One slot per key. Concurrent requests for the same key share the cell,
/// so only the first renders; the others wait for its result.
type Slot = Arc<OnceCell<Arc<[i16]>>>;

#[derive(Debug)]
pub struct TtsCache {
    dir: Option<PathBuf>,
    slots: DashMap<String, Slot>,
    /// Memory renders may hold, in bytes: texts that change per call (a
    /// queue's "you are number 37") would otherwise pile up for ever.
    budget: usize,
    /// Renders in memory, oldest first, with their sizes, and the total.
    held: Mutex<(VecDeque<(String, usize)>, usize)>,
}

/// The memory budget when none is set: `[tts] memory_cache_mb`'s default.
const DEFAULT_BUDGET: usize = 64 * 1024 * 1024;

/// Hex SHA-256 of the provider identity and every request field,
/// NUL-separated so ("ab", "c") and ("a", "bc") differ.
pub fn cache_key(identity: &str, req: &TtsRequest) -> String {
    let rate = req.rate_wpm.map(|r| r.to_string()).unwrap_or_default();
    let mut h = Sha256::new();
    for (i, part) in [
        identity,
        &req.language,
        req.voice_override().unwrap_or(""),
        &rate,
        &req.text,
    ]
    .into_iter()
    .enumerate()
    {
        if i > 0 {
            h.update(b"\0");
        }
        h.update(part.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl TtsCache {
    /// `dir` = `None` keeps renders in memory only; otherwise the directory
    /// is created if needed.
    pub fn new(dir: Option<PathBuf>) -> Result<Self, TtsError> {
        if let Some(dir) = &dir {
            fs::create_dir_all(dir)
                .map_err(|e| TtsError::Cache(format!("cannot create {}: {e}", dir.display())))?;
        }
        Ok(TtsCache {
            dir,
            slots: DashMap::new(),
            budget: DEFAULT_BUDGET,
            held: Mutex::new((VecDeque::new(), 0)),
        })
    }

    /// Keep at most `bytes` of renders in memory; older ones are dropped
    /// (a call playing one keeps its copy) and come back from disk or the
    /// provider when asked for again.
    pub fn with_memory_budget(mut self, bytes: u64) -> Self {
        self.budget = usize::try_from(bytes).unwrap_or(usize::MAX);
        self
    }

    /// Account for a new render, and drop the oldest while over budget.
    fn hold(&self, key: &str, samples: &[i16]) {
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        let (order, total) = &mut *held;
        let size = std::mem::size_of_val(samples);
        order.push_back((key.to_owned(), size));
        *total += size;
        while *total > self.budget {
            let Some((old, size)) = order.pop_front() else {
                break;
            };
            *total -= size;
            self.slots.remove(&old);
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Renders held in memory.
    pub fn memory_entries(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.value().initialized())
            .count()
    }

    /// Memory, then disk, then the provider (storing to both).
    pub async fn get_or_render(
        &self,
        provider: &dyn TtsProvider,
        req: &TtsRequest,
    ) -> Result<Arc<[i16]>, TtsError> {
        check_text(&req.text)?;
        let key = cache_key(&provider.cache_identity(), req);
        // Guards are dropped before any await: DashMap shards are sync locks.
        let hit = self.slots.get(&key).and_then(|s| s.get().cloned());
        if let Some(samples) = hit {
            return Ok(samples);
        }
        let slot = Arc::clone(self.slots.entry(key.clone()).or_default().value());
        let filled_here = AtomicBool::new(false);
        let result = slot
            .get_or_try_init(|| {
                filled_here.store(true, Ordering::Relaxed);
                self.load_or_render(&key, provider, req)
            })
            .await
            .cloned();
        match &result {
            Ok(samples) if filled_here.load(Ordering::Relaxed) => self.hold(&key, samples),
            Ok(_) => {}
            // Don't keep empty slots for failures; the next call retries.
            Err(_) => {
                self.slots.remove_if(&key, |_, s| !s.initialized());
            }
        }
        result
    }

    async fn load_or_render(
        &self,
        key: &str,
        provider: &dyn TtsProvider,
        req: &TtsRequest,
    ) -> Result<Arc<[i16]>, TtsError> {
        let path = self.dir.as_ref().map(|d| d.join(format!("{key}.wav")));
        if let Some(path) = &path {
            if let Some(samples) = read_disk(path.clone()).await {
                return Ok(samples);
            }
        }
        let samples = provider.render(req).await?;
        if samples.is_empty() {
            return Err(TtsError::BadAudio("provider returned no samples".into()));
        }
        if let Some(path) = path {
            let data = Arc::clone(&samples);
            let written = tokio::task::spawn_blocking(move || write_atomic(&path, &data)).await;
            // The render is good either way; a cold disk cache only costs time.
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(%e, key, "TTS disk cache write failed"),
                Err(e) => tracing::warn!(%e, key, "TTS disk cache write task failed"),
            }
        }
        Ok(samples)
    }
}

/// A cached render, or `None` to render again (missing or unreadable).
async fn read_disk(path: PathBuf) -> Option<Arc<[i16]>> {
    let shown = path.display().to_string();
    match tokio::task::spawn_blocking(move || load_wav(&path)).await {
        Ok(Ok(clip)) => Some(clip.samples),
        Ok(Err(AudioFileError::Io { source, .. })) if source.kind() == io::ErrorKind::NotFound => {
            None
        }
        Ok(Err(e)) => {
            tracing::warn!(%e, file = %shown, "TTS disk cache entry unreadable; rendering again");
            None
        }
        Err(e) => {
            tracing::warn!(%e, file = %shown, "TTS disk cache read task failed");
            None
        }
    }
}

/// Writes 8 kHz mono 16-bit WAV beside `path` and renames it into place,
/// so readers see the old state or the whole file, never a partial one.
fn write_atomic(path: &Path, samples: &[i16]) -> Result<(), String> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", unique_suffix()));
    let tmp = PathBuf::from(tmp);
    let result = write_wav(&tmp, samples).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| format!("cannot rename into {}: {e}", path.display()))
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_wav(path: &Path, samples: &[i16]) -> Result<(), String> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: TARGET_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let fail = |e: hound::Error| format!("cannot write {}: {e}", path.display());
    let mut w = hound::WavWriter::create(path, spec).map_err(fail)?;
    for &s in samples {
        w.write_sample(s).map_err(fail)?;
    }
    w.finalize().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tts::BoxFuture;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Renders a ramp whose length depends on the text; counts calls.
    #[derive(Default)]
    struct Fake {
        calls: AtomicUsize,
        fail: bool,
    }

    impl TtsProvider for Fake {
        fn cache_identity(&self) -> String {
            "fake|v1".into()
        }

        fn render<'a>(
            &'a self,
            req: &'a TtsRequest,
        ) -> BoxFuture<'a, Result<Arc<[i16]>, TtsError>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                // Long enough for concurrent callers to pile up.
                tokio::time::sleep(Duration::from_millis(50)).await;
                if self.fail {
                    return Err(TtsError::Engine("boom".into()));
                }
                let n = 800 + req.text.len();
                Ok((0..n).map(|i| (i as i16).wrapping_mul(37)).collect())
            })
        }
    }

    fn req(text: &str) -> TtsRequest {
        TtsRequest::new(text, "en")
    }

    #[tokio::test]
    async fn second_call_is_a_memory_hit() {
        let cache = TtsCache::new(None).expect("cache");
        let fake = Fake::default();
        let a = cache.get_or_render(&fake, &req("hello")).await.expect("a");
        let b = cache.get_or_render(&fake, &req("hello")).await.expect("b");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.memory_entries(), 1);
    }

    #[tokio::test]
    async fn new_cache_on_same_dir_hits_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = TtsCache::new(Some(dir.path().join("tts"))).expect("cache");
        let fake = Fake::default();
        let rendered = first
            .get_or_render(&fake, &req("hello"))
            .await
            .expect("render");

        let second = TtsCache::new(Some(dir.path().join("tts"))).expect("cache");
        let fresh = Fake::default();
        let loaded = second
            .get_or_render(&fresh, &req("hello"))
            .await
            .expect("load");
        assert_eq!(fresh.calls.load(Ordering::SeqCst), 0);
        assert_eq!(&rendered[..], &loaded[..]);
        assert_eq!(second.memory_entries(), 1);

        // Only the final file is left, no temp names.
        let names: Vec<String> = fs::read_dir(dir.path().join("tts"))
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(
            names.iter().all(|n| n.ends_with(".wav") && n.len() == 68),
            "{names:?}"
        );
    }

    #[tokio::test]
    async fn corrupt_disk_entry_is_rendered_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = Fake::default();
        let key = cache_key(&fake.cache_identity(), &req("hello"));
        fs::write(dir.path().join(format!("{key}.wav")), b"junk").expect("write");
        let cache = TtsCache::new(Some(dir.path().to_owned())).expect("cache");
        cache
            .get_or_render(&fake, &req("hello"))
            .await
            .expect("render");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
        // ...and the bad file was replaced.
        assert!(load_wav(&dir.path().join(format!("{key}.wav"))).is_ok());
    }

    #[tokio::test]
    async fn unwritable_dir_does_not_fail_the_render() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = TtsCache::new(Some(dir.path().join("gone"))).expect("cache");
        fs::remove_dir(dir.path().join("gone")).expect("rmdir");
        let fake = Fake::default();
        cache
            .get_or_render(&fake, &req("hello"))
            .await
            .expect("render");
        assert_eq!(cache.memory_entries(), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_render_once() {
        let cache = Arc::new(TtsCache::new(None).expect("cache"));
        let fake = Arc::new(Fake::default());
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, fake) = (cache.clone(), fake.clone());
            tasks.push(tokio::spawn(async move {
                cache.get_or_render(&*fake, &req("hello")).await
            }));
        }
        for t in tasks {
            t.await.expect("join").expect("render");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn memory_keeps_to_its_budget_oldest_out_first() {
        // Each render is about 1.6 KB: a 4 KB budget holds two.
        let cache = TtsCache::new(None)
            .expect("cache")
            .with_memory_budget(4 * 1024);
        let fake = Fake::default();
        let first = cache
            .get_or_render(&fake, &req("you are number 1"))
            .await
            .expect("1");
        for text in ["you are number 2", "you are number 3"] {
            cache
                .get_or_render(&fake, &req(text))
                .await
                .expect("render");
        }
        assert_eq!(cache.memory_entries(), 2);
        // The newest is still a memory hit; the oldest was dropped, and a
        // caller still playing it keeps its copy.
        cache
            .get_or_render(&fake, &req("you are number 3"))
            .await
            .expect("hit");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
        let again = cache
            .get_or_render(&fake, &req("you are number 1"))
            .await
            .expect("again");
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        assert_eq!(&first[..], &again[..]);
        assert_eq!(cache.memory_entries(), 2);
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let cache = TtsCache::new(None).expect("cache");
        let fake = Fake {
            fail: true,
            ..Fake::default()
        };
        for _ in 0..2 {
            let err = cache.get_or_render(&fake, &req("hello")).await;
            assert!(matches!(err, Err(TtsError::Engine(_))), "{err:?}");
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.memory_entries(), 0);
        let err = cache.get_or_render(&fake, &req(" ")).await;
        assert!(matches!(err, Err(TtsError::EmptyText)), "{err:?}");
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = TtsRequest {
            text: "hello".into(),
            language: "en".into(),
            voice: Some("en-us".into()),
            rate_wpm: Some(160),
        };
        let key = |r: &TtsRequest| cache_key("p", r);
        let variants = [
            TtsRequest {
                text: "hello!".into(),
                ..base.clone()
            },
            TtsRequest {
                language: "es".into(),
                ..base.clone()
            },
            TtsRequest {
                voice: Some("en-gb".into()),
                ..base.clone()
            },
            TtsRequest {
                voice: None,
                ..base.clone()
            },
            TtsRequest {
                rate_wpm: Some(170),
                ..base.clone()
            },
            TtsRequest {
                rate_wpm: None,
                ..base.clone()
            },
        ];
        let mut keys: Vec<String> = variants.iter().map(key).collect();
        keys.push(key(&base));
        keys.push(cache_key("q", &base));
        let unique: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len());
        assert_eq!(key(&base), key(&base.clone()));
        assert_eq!(key(&base).len(), 64);
    }
}
