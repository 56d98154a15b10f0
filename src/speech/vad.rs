//! Where speech starts and ends in a call's audio: the WebRTC VAD (a GMM
//! over sub-bands, libfvad) per 20 ms frame, with a little hysteresis so a
//! click doesn't count as speech and a breath doesn't end it.

use std::time::Duration;

/// What a frame changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VadEvent {
    /// Speech began (a few voiced frames in a row): barge-in point.
    SpeechStarted,
    /// Speech was followed by `speech_timeout` of silence.
    SpeechEnded,
}

/// Voiced frames in a row that start speech (60 ms).
const START_FRAMES: u32 = 3;

/// The endpointer: sans-IO, one 20 ms frame at a time.
pub struct Endpointer {
    vad: Detector,
    end_after: u32,
    voiced_run: u32,
    silent_run: u32,
    speaking: bool,
    heard: bool,
}

impl Endpointer {
    /// Speech ends after `speech_timeout` of silence.
    pub fn new(speech_timeout: Duration) -> Endpointer {
        Endpointer {
            vad: Detector::new(),
            end_after: (speech_timeout.as_millis() / 20).max(1) as u32,
            voiced_run: 0,
            silent_run: 0,
            speaking: false,
            heard: false,
        }
    }

    /// Whether speech has started at all.
    pub fn heard_speech(&self) -> bool {
        self.heard
    }

    /// One 20 ms frame of 8 kHz audio.
    pub fn frame(&mut self, samples: &[i16]) -> Option<VadEvent> {
        let voiced = self.vad.voiced(samples);
        self.step(voiced)
    }

    /// 20 ms with no audio at all: the peer stopped sending (silence
    /// suppression), which is silence.
    pub fn no_audio(&mut self) -> Option<VadEvent> {
        self.step(false)
    }

    fn step(&mut self, voiced: bool) -> Option<VadEvent> {
        if voiced {
            self.voiced_run += 1;
            self.silent_run = 0;
        } else {
            self.silent_run += 1;
            self.voiced_run = 0;
        }
        if !self.speaking && self.voiced_run >= START_FRAMES {
            self.speaking = true;
            self.heard = true;
            return Some(VadEvent::SpeechStarted);
        }
        if self.speaking && self.silent_run >= self.end_after {
            self.speaking = false;
            return Some(VadEvent::SpeechEnded);
        }
        None
    }
}

/// The WebRTC VAD instance.
struct Detector(webrtc_vad::Vad);

// SAFETY: a libfvad instance has no thread affinity; it is only ever used
// through `&mut self`, by one task at a time.
unsafe impl Send for Detector {}

impl Detector {
    fn new() -> Detector {
        // Aggressive: telephone lines are noisy, and a false start would
        // cut a prompt off.
        Detector(webrtc_vad::Vad::new_with_rate_and_mode(
            webrtc_vad::SampleRate::Rate8kHz,
            webrtc_vad::VadMode::Aggressive,
        ))
    }

    fn voiced(&mut self, samples: &[i16]) -> bool {
        // libfvad takes 10, 20 or 30 ms; anything else is not speech.
        self.0.is_voice_segment(samples).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speech_starts_after_a_run_of_voiced_frames_and_ends_after_the_timeout() {
        let mut e = Endpointer::new(Duration::from_millis(600));
        assert_eq!(e.step(true), None);
        assert_eq!(e.step(false), None, "one voiced frame is a click");
        assert_eq!(e.step(true), None);
        assert_eq!(e.step(true), None);
        assert_eq!(e.step(true), Some(VadEvent::SpeechStarted));
        // A breath (under 600 ms) doesn't end it.
        for _ in 0..20 {
            assert_eq!(e.step(false), None);
        }
        assert_eq!(e.step(true), None);
        for _ in 0..29 {
            assert_eq!(e.step(false), None);
        }
        assert_eq!(e.step(false), Some(VadEvent::SpeechEnded));
        assert!(e.heard_speech());
    }

    #[test]
    fn silence_is_not_speech_and_a_wrong_length_is_refused_quietly() {
        let mut e = Endpointer::new(Duration::from_millis(500));
        for _ in 0..50 {
            assert_eq!(e.frame(&[0i16; 160]), None);
        }
        assert_eq!(e.frame(&[0i16; 7]), None);
        assert!(!e.heard_speech());
    }
}
