//! Decoded audio files, shared by every call: each WAV is read and
//! resampled once, then handed out as an `Arc<[i16]>`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dashmap::DashMap;

use crate::audio_file::{load_wav, AudioFileError};

/// WAV files decoded once and shared by path; safe to use from any thread.
#[derive(Default)]
pub struct ClipCache {
    clips: DashMap<PathBuf, Arc<[i16]>>,
}

impl ClipCache {
    /// An empty cache.
    pub fn new() -> ClipCache {
        ClipCache::default()
    }

    /// The clip at `path` (absolute, or relative to the working directory).
    pub fn get(&self, path: &Path) -> Result<Arc<[i16]>, AudioFileError> {
        if let Some(c) = self.clips.get(path) {
            return Ok(c.clone());
        }
        let clip = load_wav(path)?;
        self.clips.insert(path.to_path_buf(), clip.samples.clone());
        Ok(clip.samples)
    }

    /// How many clips are decoded.
    pub fn len(&self) -> usize {
        self.clips.len()
    }

    /// True before the first clip is decoded.
    pub fn is_empty(&self) -> bool {
        self.clips.is_empty()
    }
}
