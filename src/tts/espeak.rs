//! Local synthesis with the `espeak-ng` binary.
//!
//! tokio's `process` feature is off, so the engine runs with
//! `std::process` on the blocking pool. espeak writes a WAV file (`-w`);
//! `--stdout` is avoided because its header carries placeholder sizes.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{check_text, excerpt, unique_suffix, BoxFuture, TtsError, TtsProvider, TtsRequest};
use crate::media::audio_file::load_wav_bytes;

/// Debian package that provides the binary, named in the install hint.
pub const PACKAGE: &str = "espeak-ng";

/// Longest stderr kept for error messages; espeak only prints a line or two.
const STDERR_CAP: u64 = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspeakSettings {
    /// Program to run; a bare name is looked up on `PATH`.
    pub binary: PathBuf,
    /// Words per minute when a request gives none.
    pub default_rate_wpm: u32,
    /// Language tag → espeak voice. Languages not listed are passed to
    /// espeak as the voice name itself.
    pub voices: BTreeMap<String, String>,
    /// The engine is killed after this long.
    pub timeout: Duration,
}

impl Default for EspeakSettings {
    fn default() -> Self {
        EspeakSettings {
            binary: PathBuf::from("espeak-ng"),
            default_rate_wpm: 160,
            voices: default_voices(),
            timeout: Duration::from_secs(10),
        }
    }
}

pub(crate) fn default_voices() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("en".to_owned(), "en-us".to_owned()),
        ("es".to_owned(), "es".to_owned()),
    ])
}

#[derive(Debug, Clone)]
pub struct EspeakProvider {
    settings: EspeakSettings,
}

impl EspeakProvider {
    pub fn new(settings: EspeakSettings) -> Self {
        EspeakProvider { settings }
    }

    pub fn settings(&self) -> &EspeakSettings {
        &self.settings
    }

    /// The espeak voice for `req`: its own voice, else the mapped language
    /// (exact, then lowercase), else the language itself. `None` (empty
    /// language) leaves the choice to espeak.
    pub fn voice_for(&self, req: &TtsRequest) -> Option<String> {
        if let Some(voice) = req.voice_override() {
            return Some(voice.trim().to_owned());
        }
        let lang = req.language.trim();
        if lang.is_empty() {
            return None;
        }
        let voices = &self.settings.voices;
        let mapped = voices
            .get(lang)
            .or_else(|| voices.get(&lang.to_ascii_lowercase()));
        Some(mapped.map_or(lang, String::as_str).to_owned())
    }
}

impl TtsProvider for EspeakProvider {
    fn cache_identity(&self) -> String {
        let voices: Vec<String> = self
            .settings
            .voices
            .iter()
            .map(|(lang, voice)| format!("{lang}={voice}"))
            .collect();
        format!(
            "espeak-ng|{}|{}",
            voices.join(","),
            self.settings.default_rate_wpm
        )
    }

    fn render<'a>(&'a self, req: &'a TtsRequest) -> BoxFuture<'a, Result<Arc<[i16]>, TtsError>> {
        Box::pin(async move {
            check_text(&req.text)?;
            // An argv string cannot carry NUL; say so instead of a spawn error.
            if req.text.contains('\0') {
                return Err(TtsError::Engine("text contains a NUL character".into()));
            }
            let job = Job {
                binary: self.settings.binary.clone(),
                voice: self.voice_for(req),
                rate_wpm: req.rate_wpm.unwrap_or(self.settings.default_rate_wpm),
                text: req.text.clone(),
                timeout: self.settings.timeout,
            };
            tokio::task::spawn_blocking(move || job.run())
                .await
                .map_err(|e| TtsError::Engine(format!("espeak-ng task failed: {e}")))?
        })
    }
}

/// One engine run, owned so it can move to the blocking pool.
struct Job {
    binary: PathBuf,
    voice: Option<String>,
    rate_wpm: u32,
    text: String,
    timeout: Duration,
}

impl Job {
    fn run(self) -> Result<Arc<[i16]>, TtsError> {
        let temp_err = |e: io::Error| TtsError::Engine(format!("cannot create temp file: {e}"));
        let (wav, _) = TempFile::create(".wav").map_err(temp_err)?;
        // stderr goes to a file, not a pipe: no reader thread, and a chatty
        // engine cannot block on a full pipe.
        let (err_log, err_file) = TempFile::create(".log").map_err(temp_err)?;

        let mut cmd = Command::new(&self.binary);
        if let Some(voice) = &self.voice {
            cmd.arg("-v").arg(voice);
        }
        cmd.arg("-s")
            .arg(self.rate_wpm.to_string())
            .arg("-w")
            .arg(&wav.path)
            // Everything after `--` is text, so "-v..." is spoken, not parsed.
            .arg("--")
            .arg(&self.text)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err_file));
        let mut child = cmd.spawn().map_err(|e| spawn_error(&self.binary, e))?;
        // Drop our copy of the stderr handle now that the child has its own.
        drop(cmd);

        let status = match wait_with_timeout(&mut child, self.timeout) {
            Ok(Some(status)) => status,
            Ok(None) => {
                return Err(TtsError::Engine(format!(
                    "{} did not finish within {:?}; killed",
                    self.binary.display(),
                    self.timeout
                )))
            }
            Err(e) => {
                return Err(TtsError::Engine(format!(
                    "waiting for {}: {e}",
                    self.binary.display()
                )))
            }
        };
        if !status.success() {
            let stderr = read_capped(&err_log.path, STDERR_CAP).unwrap_or_default();
            return Err(TtsError::Engine(format!(
                "{} ({status}): {}",
                self.binary.display(),
                excerpt(&String::from_utf8_lossy(&stderr), 200)
            )));
        }
        let bytes = fs::read(&wav.path)
            .map_err(|e| TtsError::Engine(format!("cannot read espeak-ng output: {e}")))?;
        let clip = load_wav_bytes(&bytes, "espeak-ng output")
            .map_err(|e| TtsError::BadAudio(e.to_string()))?;
        Ok(clip.samples)
    }
}

fn spawn_error(binary: &Path, e: io::Error) -> TtsError {
    if e.kind() == io::ErrorKind::NotFound {
        TtsError::MissingEngine(format!(
            "{PACKAGE} is not installed: apt-get install {PACKAGE} (cannot run {:?})",
            binary
        ))
    } else {
        TtsError::Engine(format!("cannot run {}: {e}", binary.display()))
    }
}

/// Waits for the child; kills and reaps it once `timeout` passes
/// (returns `None` then).
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    // A timeout too large to add means no deadline.
    let deadline = Instant::now().checked_add(timeout);
    let mut pause = Duration::from_millis(2);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        }
        let now = Instant::now();
        if let Some(deadline) = deadline {
            if now >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            }
            pause = pause.min(deadline - now);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
    }
}

fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path)?.take(cap).read_to_end(&mut buf)?;
    Ok(buf)
}

/// A file under the temp dir, removed on drop.
struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Creates the file exclusively: a name planted in a shared temp dir
    /// (e.g. a symlink) is skipped rather than written through.
    fn create(suffix: &str) -> io::Result<(TempFile, File)> {
        let dir = std::env::temp_dir();
        let mut last = None;
        for _ in 0..16 {
            let path = dir.join(format!("crossline-tts-{}{suffix}", unique_suffix()));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Ok((TempFile { path }, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free temp file name")))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tts::test_util::rms;

    fn provider() -> EspeakProvider {
        EspeakProvider::new(EspeakSettings::default())
    }

    /// Renders with the installed engine; a missing engine fails the test
    /// with the install hint rather than skipping.
    async fn say(p: &EspeakProvider, req: &TtsRequest) -> Arc<[i16]> {
        match p.render(req).await {
            Ok(samples) => samples,
            Err(e) => panic!("espeak-ng render failed: {e}"),
        }
    }

    fn assert_speech(samples: &[i16], what: &str) {
        let secs = samples.len() as f64 / 8000.0;
        assert!(
            (0.5..=5.0).contains(&secs),
            "{what}: implausible duration {secs:.2} s"
        );
        let level = rms(samples);
        assert!(level > 0.01, "{what}: too quiet, RMS {level:.4}");
    }

    #[tokio::test]
    async fn renders_english_and_spanish() {
        let p = provider();
        let en = say(&p, &TtsRequest::new("Thank you for holding", "en")).await;
        let es = say(&p, &TtsRequest::new("Gracias por esperar", "es")).await;
        assert_speech(&en, "english");
        assert_speech(&es, "spanish");
        assert_ne!(&en[..], &es[..]);
    }

    #[tokio::test]
    async fn same_text_in_two_voices_differs() {
        let p = provider();
        let text = "uno dos tres";
        let en = say(&p, &TtsRequest::new(text, "en")).await;
        let es = say(&p, &TtsRequest::new(text, "es")).await;
        assert_ne!(&en[..], &es[..]);
    }

    #[tokio::test]
    async fn missing_binary_names_the_package() {
        let p = EspeakProvider::new(EspeakSettings {
            binary: PathBuf::from("/nonexistent/espeak-ng"),
            ..EspeakSettings::default()
        });
        let err = p
            .render(&TtsRequest::new("hello", "en"))
            .await
            .expect_err("must fail");
        assert!(matches!(err, TtsError::MissingEngine(_)), "{err:?}");
        assert!(
            err.to_string().contains("apt-get install espeak-ng"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn text_that_looks_like_an_option_is_spoken() {
        // Parsed as an option this would select a voice " hello there" and fail.
        let samples = say(&provider(), &TtsRequest::new("-v hello there", "en")).await;
        assert_speech(&samples, "dash text");
    }

    #[tokio::test]
    async fn empty_and_nul_text_rejected() {
        let p = provider();
        for text in ["", "  \n\t"] {
            let err = p.render(&TtsRequest::new(text, "en")).await;
            assert!(matches!(err, Err(TtsError::EmptyText)), "{err:?}");
        }
        let err = p.render(&TtsRequest::new("a\0b", "en")).await;
        assert!(matches!(err, Err(TtsError::Engine(_))), "{err:?}");
    }

    #[tokio::test]
    async fn unknown_voice_reports_stderr() {
        let req = TtsRequest {
            voice: Some("xx-no-such-voice".into()),
            ..TtsRequest::new("hello", "en")
        };
        match provider().render(&req).await {
            Err(TtsError::Engine(msg)) => assert!(msg.contains("voice"), "{msg}"),
            other => panic!("expected Engine error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn hung_engine_is_killed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let script = dir.path().join("fake-espeak");
        fs::write(&script, "#!/bin/sh\nexec sleep 30\n").expect("write script");
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
        let p = EspeakProvider::new(EspeakSettings {
            binary: script,
            timeout: Duration::from_millis(300),
            ..EspeakSettings::default()
        });
        let started = Instant::now();
        // Another test thread forking while the script was open for writing
        // gives ETXTBSY; that is the test's race, not the provider's.
        let mut result = p.render(&TtsRequest::new("hello", "en")).await;
        for _ in 0..20 {
            match &result {
                Err(TtsError::Engine(m)) if m.contains("busy") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    result = p.render(&TtsRequest::new("hello", "en")).await;
                }
                _ => break,
            }
        }
        match result {
            Err(TtsError::Engine(msg)) => assert!(msg.contains("did not finish"), "{msg}"),
            other => panic!("expected timeout, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn voice_selection() {
        let p = provider();
        let voice = |lang: &str, voice: Option<&str>| {
            p.voice_for(&TtsRequest {
                voice: voice.map(str::to_owned),
                ..TtsRequest::new("x", lang)
            })
        };
        assert_eq!(voice("en", None).as_deref(), Some("en-us"));
        assert_eq!(voice("EN", None).as_deref(), Some("en-us"));
        assert_eq!(voice("es", None).as_deref(), Some("es"));
        assert_eq!(voice("fr-fr", None).as_deref(), Some("fr-fr"));
        assert_eq!(voice("en", Some("en-gb")).as_deref(), Some("en-gb"));
        assert_eq!(voice("en", Some("")).as_deref(), Some("en-us"));
        assert_eq!(voice("", None), None);
    }

    #[test]
    fn identity_covers_voices_and_rate() {
        assert_eq!(provider().cache_identity(), "espeak-ng|en=en-us,es=es|160");
        let slower = EspeakProvider::new(EspeakSettings {
            default_rate_wpm: 120,
            ..EspeakSettings::default()
        });
        assert_ne!(slower.cache_identity(), provider().cache_identity());
    }
}
