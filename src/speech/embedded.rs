//! The embedded recognizer: PocketSphinx in grammar mode, offline, behind
//! the `pocketsphinx` cargo feature.
//!
//! A recognition keeps the caller's utterance (from a little before the
//! VAD heard speech start to its end) and hands it whole to a pool of
//! worker threads, each with its own decoder: decoding never runs in the
//! audio loop or on tokio's threads, and a whole utterance decodes better
//! than a stream (cepstral mean over all of it). The 8 kHz telephone audio
//! is upsampled to the model's 16 kHz. The flow's grammar phrases (or its
//! hints) become a JSGF grammar; phrases with a word the dictionary lacks
//! are left out, with a warning.
//!
//! Measured accuracy is in benches/README.md ("Embedded recognizer"): the
//! stock model is for 16 kHz speech and misses much of telephone audio.

use std::path::PathBuf;
use std::sync::Arc;

/// Debian's `pocketsphinx-en-us`: the acoustic model directory and its
/// pronouncing dictionary.
pub const DEBIAN_MODEL_DIR: &str = "/usr/share/pocketsphinx/model/en-us/en-us";
pub const DEBIAN_DICTIONARY: &str = "/usr/share/pocketsphinx/model/en-us/cmudict-en-us.dict";

/// Audio kept from before the VAD's speech start (it fires 60 ms in).
const PRE_ROLL_BYTES: usize = 8000 / 2;
/// Longest utterance kept (the recognition ends speech at 30 s).
const MAX_UTTERANCE_BYTES: usize = 8000 * 31;

/// `[asr] provider = "pocketsphinx"` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub model_dir: PathBuf,
    pub dictionary: PathBuf,
    /// Decoder threads (each loads its own model and dictionary: under 30 MB).
    pub workers: usize,
    /// Utterances waiting for a worker beyond which a recognition fails.
    pub queue: usize,
}

impl Settings {
    /// What can be checked without loading the model.
    pub fn problems(&self) -> Result<(), String> {
        if !cfg!(feature = "pocketsphinx") {
            return Err(
                "this crossline was built without the `pocketsphinx` cargo feature; \
                 rebuild with `cargo build --release --features pocketsphinx` \
                 (needs libpocketsphinx-dev and pocketsphinx-en-us)"
                    .into(),
            );
        }
        if !self.model_dir.join("mdef").is_file() {
            return Err(format!(
                "model_dir {} holds no acoustic model (mdef); apt-get install pocketsphinx-en-us",
                self.model_dir.display()
            ));
        }
        if !self.dictionary.is_file() {
            return Err(format!(
                "dictionary {} is not a file",
                self.dictionary.display()
            ));
        }
        if self.workers == 0 || self.queue == 0 {
            return Err("workers and queue must be at least 1".into());
        }
        Ok(())
    }
}

/// The embedded recognizer as a provider: its settings, and once started,
/// its worker pool.
#[derive(Clone)]
pub struct Engine {
    pub settings: Settings,
    pool: Option<Arc<pool::Pool>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("settings", &self.settings)
            .field("started", &self.pool.is_some())
            .finish()
    }
}

impl PartialEq for Engine {
    fn eq(&self, other: &Engine) -> bool {
        self.settings == other.settings
    }
}

impl Engine {
    pub fn new(settings: Settings) -> Engine {
        Engine {
            settings,
            pool: None,
        }
    }

    /// Load the model into every worker; Err if any can't.
    pub fn start(mut self) -> Result<Engine, String> {
        self.settings.problems()?;
        self.pool = Some(Arc::new(pool::Pool::start(&self.settings)?));
        Ok(self)
    }

    /// A recognition's link to the pool, listening for `phrases`.
    pub fn link(&self, phrases: &[String]) -> Result<Utterance, String> {
        let pool = self
            .pool
            .clone()
            .ok_or("the pocketsphinx engine was not started")?;
        let phrases: Vec<String> = phrases
            .iter()
            .map(|p| super::grammar::normalize(p))
            .filter(|p| !p.is_empty())
            .collect();
        if phrases.is_empty() {
            return Err("pocketsphinx needs the gather's grammar or hints".into());
        }
        Ok(Utterance {
            pool,
            phrases: phrases.into(),
            audio: Vec::new(),
            speaking: false,
        })
    }
}

/// One recognition's audio, kept until speech ends.
pub struct Utterance {
    pool: Arc<pool::Pool>,
    phrases: Arc<[String]>,
    audio: Vec<u8>,
    speaking: bool,
}

/// What the decoder heard.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The grammar phrase heard; empty: none.
    pub text: String,
    pub confidence: f64,
}

impl Utterance {
    /// 20 ms of the caller's μ-law audio.
    pub fn audio(&mut self, ulaw: &[u8]) {
        if self.audio.len() + ulaw.len() > MAX_UTTERANCE_BYTES {
            return;
        }
        self.audio.extend_from_slice(ulaw);
        // Before speech only the pre-roll matters; trim in batches.
        if !self.speaking && self.audio.len() >= 2 * PRE_ROLL_BYTES {
            self.audio.drain(..self.audio.len() - PRE_ROLL_BYTES);
        }
    }

    pub fn speech_started(&mut self) {
        self.speaking = true;
    }

    /// Hand the utterance to a worker; its answer comes on the receiver.
    pub fn finish(
        &mut self,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Decoded, String>>, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.pool.submit(Job {
            phrases: self.phrases.clone(),
            ulaw: std::mem::take(&mut self.audio),
            reply,
        })?;
        Ok(answer)
    }
}

/// One utterance for a worker to decode.
// Without the feature nothing decodes, so nothing reads it.
#[cfg_attr(not(feature = "pocketsphinx"), allow(dead_code))]
struct Job {
    phrases: Arc<[String]>,
    ulaw: Vec<u8>,
    reply: tokio::sync::oneshot::Sender<Result<Decoded, String>>,
}

/// The JSGF grammar of `phrases` (normalized, known words only).
pub fn jsgf(phrases: &[String]) -> String {
    let alternatives: Vec<String> = phrases.iter().map(|p| format!("( {p} )")).collect();
    format!(
        "#JSGF V1.0;\ngrammar menu;\npublic <menu> = {};\n",
        alternatives.join(" | ")
    )
}

/// μ-law 8 kHz to 16-bit 16 kHz, as the stock model wants.
pub fn upsample(ulaw: &[u8]) -> Result<Vec<i16>, String> {
    use rubato::audioadapter_buffers::direct::InterleavedSlice;
    use rubato::{Fft, FixedSync, Resampler, WindowFunction};
    if ulaw.is_empty() {
        return Ok(Vec::new());
    }
    let mono: Vec<f32> = ulaw
        .iter()
        .map(|&c| f32::from(crate::media::g711::ulaw_to_linear(c)) / 32768.0)
        .collect();
    let mut resampler = Fft::<f32>::new_custom(
        8000,
        16000,
        1024,
        1,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Both,
    )
    .map_err(|e| e.to_string())?;
    let input = InterleavedSlice::new(&mono, 1, mono.len()).map_err(|e| e.to_string())?;
    let out = resampler
        .process_all(&input, mono.len(), None)
        .map_err(|e| e.to_string())?;
    Ok(out
        .take_data()
        .into_iter()
        .map(|x| (x * 32768.0).round() as i16)
        .collect())
}

#[cfg(feature = "pocketsphinx")]
mod pool {
    //! Worker threads, each with a decoder, fed by a bounded queue.

    use std::collections::VecDeque;
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};

    use super::{Decoded, Job, Settings};
    use crate::speech::sphinx::Decoder;

    /// Grammars a worker keeps compiled.
    const GRAMMARS_KEPT: usize = 32;

    pub struct Pool {
        jobs: mpsc::SyncSender<Job>,
    }

    impl Pool {
        pub fn start(settings: &Settings) -> Result<Pool, String> {
            let (jobs, queue) = mpsc::sync_channel::<Job>(settings.queue);
            let queue = Arc::new(Mutex::new(queue));
            let (ready_tx, ready) = mpsc::channel();
            for n in 0..settings.workers {
                let queue = queue.clone();
                let ready_tx = ready_tx.clone();
                let s = settings.clone();
                std::thread::Builder::new()
                    .name(format!("asr-sphinx-{n}"))
                    .spawn(move || {
                        let decoder = Decoder::new(&s.model_dir, &s.dictionary);
                        match decoder {
                            Ok(decoder) => {
                                let _ = ready_tx.send(Ok(()));
                                Worker::new(decoder).run(&queue);
                            }
                            Err(e) => {
                                let _ = ready_tx.send(Err(e));
                            }
                        }
                    })
                    .map_err(|e| format!("cannot start a recognizer thread: {e}"))?;
            }
            drop(ready_tx);
            for _ in 0..settings.workers {
                ready
                    .recv()
                    .map_err(|_| "a recognizer thread died loading the model".to_string())??;
            }
            Ok(Pool { jobs })
        }

        /// A pool with no workers, for unit tests of what feeds it.
        #[cfg(test)]
        pub fn placeholder() -> Pool {
            Pool {
                jobs: mpsc::sync_channel(1).0,
            }
        }

        pub fn submit(&self, job: Job) -> Result<(), String> {
            self.jobs.try_send(job).map_err(|e| match e {
                mpsc::TrySendError::Full(_) => {
                    "every pocketsphinx worker is busy and the queue is full".to_string()
                }
                mpsc::TrySendError::Disconnected(_) => "the pocketsphinx workers stopped".into(),
            })
        }
    }

    struct Worker {
        decoder: Decoder,
        /// Compiled grammars, oldest first: (phrases, search name).
        grammars: VecDeque<(Arc<[String]>, String)>,
        next_name: u64,
    }

    impl Worker {
        fn new(decoder: Decoder) -> Worker {
            Worker {
                decoder,
                grammars: VecDeque::new(),
                next_name: 0,
            }
        }

        fn run(mut self, queue: &Mutex<mpsc::Receiver<Job>>) {
            loop {
                // The lock is held only while waiting for the next job.
                let job = match queue.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                let result = self.decode(&job.phrases, &job.ulaw);
                let _ = job.reply.send(result);
            }
        }

        fn decode(&mut self, phrases: &Arc<[String]>, ulaw: &[u8]) -> Result<Decoded, String> {
            let name = self.grammar(phrases)?;
            let pcm = super::upsample(ulaw)?;
            let (text, confidence) = self.decoder.decode(&name, &pcm)?;
            Ok(Decoded { text, confidence })
        }

        /// The search for `phrases`, compiled on first use.
        fn grammar(&mut self, phrases: &Arc<[String]>) -> Result<String, String> {
            if let Some((_, name)) = self.grammars.iter().find(|(p, _)| p == phrases) {
                return Ok(name.clone());
            }
            let (known, unknown): (Vec<String>, Vec<String>) = phrases
                .iter()
                .cloned()
                .partition(|p| p.split(' ').all(|w| self.decoder.knows(w)));
            if !unknown.is_empty() {
                tracing::warn!(phrases = ?unknown, "pocketsphinx: words not in the dictionary; those phrases are left out");
            }
            if known.is_empty() {
                return Err("no phrase of the grammar is in the pocketsphinx dictionary".into());
            }
            let name = format!("g{}", self.next_name);
            self.next_name += 1;
            self.decoder.add_grammar(&name, &super::jsgf(&known))?;
            if self.grammars.len() >= GRAMMARS_KEPT {
                if let Some((_, old)) = self.grammars.pop_front() {
                    self.decoder.remove_grammar(&old);
                }
            }
            self.grammars.push_back((phrases.clone(), name.clone()));
            Ok(name)
        }
    }
}

#[cfg(not(feature = "pocketsphinx"))]
mod pool {
    //! Built without the feature: `check` refuses the provider, so a pool
    //! is never started.

    use super::{Job, Settings};

    pub struct Pool;

    impl Pool {
        #[cfg(test)]
        pub fn placeholder() -> Pool {
            Pool
        }

        pub fn start(_: &Settings) -> Result<Pool, String> {
            Err("built without the `pocketsphinx` cargo feature".into())
        }

        pub fn submit(&self, _: Job) -> Result<(), String> {
            Err("built without the `pocketsphinx` cargo feature".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_become_a_jsgf_alternative() {
        assert_eq!(
            jsgf(&["agent".into(), "text me".into()]),
            "#JSGF V1.0;\ngrammar menu;\npublic <menu> = ( agent ) | ( text me );\n"
        );
    }

    #[test]
    fn upsampling_doubles_the_rate_and_keeps_a_tone() {
        let tone: Vec<u8> = (0..8000)
            .map(|n| {
                let s = (f64::from(n) * 2.0 * std::f64::consts::PI * 440.0 / 8000.0).sin();
                crate::media::g711::linear_to_ulaw((s * 8000.0) as i16)
            })
            .collect();
        let out = upsample(&tone).unwrap();
        assert_eq!(out.len(), 16000);
        // 440 Hz at 16 kHz: the same amplitude, sample 2n ≈ input n.
        let peak = out[2000..14000]
            .iter()
            .map(|s| s.unsigned_abs())
            .max()
            .unwrap();
        assert!((7000..9000).contains(&peak), "peak {peak}");
    }

    #[test]
    fn before_speech_only_the_pre_roll_is_kept() {
        let engine = Engine::new(Settings {
            model_dir: DEBIAN_MODEL_DIR.into(),
            dictionary: DEBIAN_DICTIONARY.into(),
            workers: 1,
            queue: 1,
        });
        assert!(engine.link(&["agent".into()]).is_err(), "not started");
        let pool = Arc::new(pool::Pool::placeholder());
        let mut u = Utterance {
            pool,
            phrases: Arc::from(vec!["agent".to_string()]),
            audio: Vec::new(),
            speaking: false,
        };
        for _ in 0..100 {
            u.audio(&[0xff; 160]);
        }
        assert!(u.audio.len() < 2 * PRE_ROLL_BYTES);
        assert!(u.audio.len() >= PRE_ROLL_BYTES);
        u.speech_started();
        for _ in 0..3000 {
            u.audio(&[0xff; 160]);
        }
        assert!(u.audio.len() <= MAX_UTTERANCE_BYTES);
        assert!(u.audio.len() > MAX_UTTERANCE_BYTES - 160);
    }
}
