//! The FFI to PocketSphinx as Debian ships it (`libpocketsphinx-dev`,
//! 0.8+5prealpha: the sphinxbase `cmd_ln` API), hand-written for the few
//! functions a grammar decode needs. Only [`Decoder`] leaves this module.
//!
//! A decoder is single-threaded: one per worker thread, never shared.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

#[link(name = "pocketsphinx")]
#[link(name = "sphinxbase")]
extern "C" {
    fn ps_args() -> *const c_void;
    fn cmd_ln_parse_r(
        inout: *mut c_void,
        defn: *const c_void,
        argc: i32,
        argv: *const *const c_char,
        strict: i32,
    ) -> *mut c_void;
    fn cmd_ln_free_r(config: *mut c_void) -> c_int;
    fn ps_init(config: *mut c_void) -> *mut c_void;
    fn ps_free(ps: *mut c_void) -> c_int;
    fn ps_lookup_word(ps: *mut c_void, word: *const c_char) -> *mut c_char;
    fn ps_set_jsgf_string(ps: *mut c_void, name: *const c_char, jsgf: *const c_char) -> c_int;
    fn ps_set_search(ps: *mut c_void, name: *const c_char) -> c_int;
    fn ps_unset_search(ps: *mut c_void, name: *const c_char) -> c_int;
    fn ps_start_utt(ps: *mut c_void) -> c_int;
    fn ps_process_raw(
        ps: *mut c_void,
        data: *const i16,
        n_samples: usize,
        no_search: c_int,
        full_utt: c_int,
    ) -> c_int;
    fn ps_end_utt(ps: *mut c_void) -> c_int;
    fn ps_get_hyp(ps: *mut c_void, score: *mut i32) -> *const c_char;
    fn ps_get_prob(ps: *mut c_void) -> i32;
    fn ps_get_logmath(ps: *mut c_void) -> *mut c_void;
    fn logmath_exp(lmath: *mut c_void, logb: c_int) -> f64;
}

/// One PocketSphinx decoder with its acoustic model and dictionary loaded.
pub struct Decoder {
    ps: NonNull<c_void>,
    /// cmd_ln keeps pointers into its argv: they live as long as the decoder.
    _argv: Vec<CString>,
}

// SAFETY: a decoder has no thread affinity; it is owned by one worker
// thread at a time and only used through `&mut self`.
unsafe impl Send for Decoder {}

impl Decoder {
    /// Load the acoustic model in `hmm` (a directory) and the pronouncing
    /// dictionary `dict`, for 16 kHz audio. (Dither, for the empty band
    /// above 4 kHz in upsampled telephone audio, measured no better.)
    pub fn new(hmm: &Path, dict: &Path) -> Result<Decoder, String> {
        let path = |p: &Path| {
            CString::new(p.as_os_str().as_encoded_bytes())
                .map_err(|_| format!("{} has a NUL byte", p.display()))
        };
        let argv = vec![
            CString::from(c"crossline"),
            CString::from(c"-hmm"),
            path(hmm)?,
            CString::from(c"-dict"),
            path(dict)?,
            CString::from(c"-samprate"),
            CString::from(c"16000"),
            CString::from(c"-logfn"),
            CString::from(c"/dev/null"),
        ];
        let ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        let argc = i32::try_from(ptrs.len()).map_err(|_| "too many arguments".to_string())?;
        // SAFETY: ps_args() is a static table; argv outlives the config
        // (kept in the decoder); the config is released once the decoder
        // holds its own reference.
        unsafe {
            let config = cmd_ln_parse_r(std::ptr::null_mut(), ps_args(), argc, ptrs.as_ptr(), 1);
            if config.is_null() {
                return Err("PocketSphinx refused its settings".into());
            }
            let ps = ps_init(config);
            cmd_ln_free_r(config);
            let ps = NonNull::new(ps).ok_or_else(|| {
                format!(
                    "PocketSphinx could not load the model {} with the dictionary {}",
                    hmm.display(),
                    dict.display()
                )
            })?;
            Ok(Decoder { ps, _argv: argv })
        }
    }

    /// Whether the dictionary knows `word` (lower case).
    pub fn knows(&mut self, word: &str) -> bool {
        let Ok(word) = CString::new(word) else {
            return false;
        };
        // SAFETY: the result is malloc'd by sphinxbase (ckd_salloc), ours
        // to free.
        unsafe {
            let phones = ps_lookup_word(self.ps.as_ptr(), word.as_ptr());
            if phones.is_null() {
                return false;
            }
            libc::free(phones.cast());
            true
        }
    }

    /// Add the JSGF grammar `jsgf` as search `name`.
    pub fn add_grammar(&mut self, name: &str, jsgf: &str) -> Result<(), String> {
        let name = CString::new(name).map_err(|_| "grammar name has a NUL byte")?;
        let jsgf = CString::new(jsgf).map_err(|_| "grammar has a NUL byte")?;
        // SAFETY: both strings are copied by the callee.
        let rc = unsafe { ps_set_jsgf_string(self.ps.as_ptr(), name.as_ptr(), jsgf.as_ptr()) };
        if rc < 0 {
            return Err("PocketSphinx refused the grammar".into());
        }
        Ok(())
    }

    /// Forget search `name`.
    pub fn remove_grammar(&mut self, name: &str) {
        if let Ok(name) = CString::new(name) {
            // SAFETY: an unknown name is answered with -1.
            unsafe { ps_unset_search(self.ps.as_ptr(), name.as_ptr()) };
        }
    }

    /// Decode one whole utterance of 16 kHz audio with search `name`:
    /// the words heard (empty: nothing in the grammar) and their
    /// posterior probability.
    pub fn decode(&mut self, name: &str, samples: &[i16]) -> Result<(String, f64), String> {
        let name = CString::new(name).map_err(|_| "grammar name has a NUL byte")?;
        let ps = self.ps.as_ptr();
        // SAFETY: `samples` is valid for its length during the call; the
        // hypothesis string belongs to the decoder and is copied before
        // the next call into it.
        unsafe {
            if ps_set_search(ps, name.as_ptr()) < 0 {
                return Err("no such grammar".into());
            }
            if ps_start_utt(ps) < 0 {
                return Err("PocketSphinx could not start an utterance".into());
            }
            let processed = ps_process_raw(ps, samples.as_ptr(), samples.len(), 0, 1);
            let ended = ps_end_utt(ps);
            if processed < 0 || ended < 0 {
                return Err("PocketSphinx failed to decode the audio".into());
            }
            let mut score = 0i32;
            let hyp = ps_get_hyp(ps, &mut score);
            let text = if hyp.is_null() {
                String::new()
            } else {
                CStr::from_ptr(hyp).to_string_lossy().into_owned()
            };
            let logmath = ps_get_logmath(ps);
            let probability = if logmath.is_null() {
                0.0
            } else {
                logmath_exp(logmath, ps_get_prob(ps)).clamp(0.0, 1.0)
            };
            Ok((text, probability))
        }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: the decoder is ours and used by nobody else.
        unsafe { ps_free(self.ps.as_ptr()) };
    }
}
