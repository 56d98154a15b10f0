//! What a stream plays, one 20 ms frame at a time: silence, a clip, a
//! playlist, or the hold program (looping music with a message spoken every
//! repeat interval, the music ducked under it). Source changes crossfade over
//! one frame so nothing clicks. No allocation: sources are shared `Arc`s.

use std::sync::Arc;

pub use crate::FRAME_SAMPLES;
/// Samples over which ducking moves between full and ducked gain (10 ms).
const DUCK_RAMP_SAMPLES: i32 = 80;
const UNITY_Q15: i32 = 1 << 15;

/// Music with a message on repeat.
#[derive(Debug)]
pub struct HoldProgram {
    /// Played in order, looping. Empty means silence under the message.
    pub music: Arc<[Arc<[i16]>]>,
    /// Spoken at the start and then every `repeat_frames`; `None` = music only.
    pub message: Option<Arc<[i16]>>,
    /// Frames from the start of one message to the start of the next.
    pub repeat_frames: u32,
    /// Music gain while the message plays, Q15 (e.g. -12 dB ≈ 8231).
    pub duck_gain_q15: i32,
}

impl HoldProgram {
    /// A hold program: `music` looped, `message` every `repeat_interval`,
    /// the music `duck_db` down (at most 0 dB) under it.
    pub fn new(
        music: Vec<Arc<[i16]>>,
        message: Option<Arc<[i16]>>,
        repeat_interval: std::time::Duration,
        duck_db: f32,
    ) -> HoldProgram {
        let frames = (repeat_interval.as_millis() / 20).clamp(1, u32::MAX as u128) as u32;
        HoldProgram {
            music: music.into(),
            message,
            repeat_frames: frames,
            duck_gain_q15: db_to_q15(duck_db),
        }
    }
}

/// A gain in dB (clamped to at most 0) as a Q15 multiplier.
pub fn db_to_q15(db: f32) -> i32 {
    let linear = 10f32.powf(db.min(0.0) / 20.0);
    (linear * UNITY_Q15 as f32).round() as i32
}

/// What a stream plays; cheap to clone (everything is an `Arc`).
#[derive(Debug, Clone)]
pub enum Source {
    /// Silence; the stream still sends RTP.
    Silence,
    /// One clip, optionally looped.
    Clip {
        /// The decoded clip.
        samples: Arc<[i16]>,
        /// Start over at the end instead of finishing.
        looped: bool,
    },
    /// Clips in order, optionally looping the whole list.
    Playlist {
        /// The decoded clips, in play order.
        clips: Arc<[Arc<[i16]>]>,
        /// Start over after the last clip instead of finishing.
        looped: bool,
    },
    /// Music with a message on repeat; never finishes.
    Hold(Arc<HoldProgram>),
    /// Audio fed from outside as it comes (a media stream's agent);
    /// silence while none is queued. Never finishes.
    Live(Arc<crate::live::LiveAudio>),
}

/// Something worth telling the control side about, at most once per frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameNote {
    /// Nothing to report.
    None,
    /// A non-looping source just ran out.
    Finished,
    /// Speech starts in this frame (marker bit).
    TalkStart,
}

/// Plays one [`Source`], frame by frame, remembering where it is.
#[derive(Debug, Clone)]
pub struct Player {
    source: Source,
    state: PlayState,
}

/// Playback position, kept apart from the source so filling a frame borrows
/// the source without cloning its `Arc`s.
#[derive(Debug, Clone)]
struct PlayState {
    clip: usize,
    pos: usize,
    finished: bool,
    // Hold program state.
    msg_pos: Option<usize>,
    frames_to_next_msg: u32,
    music_gain: i32,
}

impl Player {
    /// A player at the start of `source`.
    pub fn new(source: Source) -> Player {
        Player {
            source,
            state: PlayState {
                clip: 0,
                pos: 0,
                finished: false,
                msg_pos: None,
                frames_to_next_msg: 0,
                music_gain: UNITY_Q15,
            },
        }
    }

    /// What it is playing.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Render the next frame into `out`.
    pub fn fill(&mut self, out: &mut [i16; FRAME_SAMPLES]) -> FrameNote {
        let st = &mut self.state;
        match &self.source {
            Source::Silence => {
                out.fill(0);
                FrameNote::None
            }
            Source::Clip { samples, looped } => {
                fill_list(st, std::slice::from_ref(samples), *looped, out)
            }
            Source::Playlist { clips, looped } => fill_list(st, clips, *looped, out),
            Source::Hold(program) => fill_hold(st, program, out),
            Source::Live(live) => {
                live.fill(out);
                FrameNote::None
            }
        }
    }
}

fn fill_list(
    st: &mut PlayState,
    clips: &[Arc<[i16]>],
    looped: bool,
    out: &mut [i16; FRAME_SAMPLES],
) -> FrameNote {
    let was_finished = st.finished;
    read_list(
        clips,
        looped,
        &mut st.clip,
        &mut st.pos,
        &mut st.finished,
        out,
    );
    if st.finished && !was_finished {
        FrameNote::Finished
    } else {
        FrameNote::None
    }
}

fn fill_hold(
    st: &mut PlayState,
    program: &HoldProgram,
    out: &mut [i16; FRAME_SAMPLES],
) -> FrameNote {
    let mut note = FrameNote::None;
    if let Some(message) = &program.message {
        if st.frames_to_next_msg == 0 && st.msg_pos.is_none() && !message.is_empty() {
            st.msg_pos = Some(0);
            st.frames_to_next_msg = program.repeat_frames;
            note = FrameNote::TalkStart;
        }
    }
    st.frames_to_next_msg = st.frames_to_next_msg.saturating_sub(1);
    let mut never_finished = false;
    read_list(
        &program.music,
        true,
        &mut st.clip,
        &mut st.pos,
        &mut never_finished,
        out,
    );
    // The message's samples in this frame; once it runs out, the music
    // comes back up for the rest of the frame.
    let speech: &[i16] = match (&program.message, st.msg_pos) {
        (Some(m), Some(p)) => {
            let rest = m.get(p..).unwrap_or_default();
            let here = rest.get(..FRAME_SAMPLES).unwrap_or(rest);
            st.msg_pos = (here.len() == FRAME_SAMPLES).then_some(p + FRAME_SAMPLES);
            here
        }
        _ => &[],
    };
    // Most frames are music alone at full gain, or the whole frame under the
    // message at the ducked gain: no ramp, and loops the compiler vectorizes.
    if speech.is_empty() && st.music_gain == UNITY_Q15 {
        return note;
    }
    if speech.len() == FRAME_SAMPLES && st.music_gain == program.duck_gain_q15 {
        let gain = st.music_gain;
        for (slot, s) in out.iter_mut().zip(speech) {
            *slot = mix(i32::from(*slot), gain, *s);
        }
        return note;
    }
    // The gain moves toward its target a little every sample.
    let step = (UNITY_Q15 - program.duck_gain_q15).max(1) / DUCK_RAMP_SAMPLES;
    for (i, slot) in out.iter_mut().enumerate() {
        let speaking = speech.get(i);
        let target = if speaking.is_some() {
            program.duck_gain_q15
        } else {
            UNITY_Q15
        };
        if st.music_gain > target {
            st.music_gain = (st.music_gain - step).max(target);
        } else if st.music_gain < target {
            st.music_gain = (st.music_gain + step).min(target);
        }
        *slot = mix(
            i32::from(*slot),
            st.music_gain,
            speaking.copied().unwrap_or(0),
        );
    }
    note
}

/// Music at a Q15 gain plus speech, saturated to 16 bits.
#[inline(always)]
fn mix(music: i32, gain_q15: i32, speech: i16) -> i16 {
    (((music * gain_q15) >> 15) + i32::from(speech)).clamp(i32::from(i16::MIN), i32::from(i16::MAX))
        as i16
}

/// Copy the next `out.len()` samples of a list of clips into `out`, a run
/// of each clip at a time; silence once a non-looping list ends.
fn read_list(
    clips: &[Arc<[i16]>],
    looped: bool,
    clip: &mut usize,
    pos: &mut usize,
    finished: &mut bool,
    out: &mut [i16],
) {
    let mut filled = 0;
    // Steps that found no sample (an empty clip, a wrap): a list of empty
    // clips gives up after a full pass instead of spinning.
    let mut idle_steps = 0;
    while let Some(rest_out) = out.get_mut(filled..).filter(|r| !r.is_empty()) {
        if *finished || idle_steps > 2 * clips.len() + 2 {
            *finished = true;
            rest_out.fill(0);
            return;
        }
        match clips.get(*clip) {
            Some(c) => {
                let run = c.get(*pos..).unwrap_or_default();
                let n = run.len().min(rest_out.len());
                if let (Some(to), Some(from)) = (rest_out.get_mut(..n), run.get(..n)) {
                    to.copy_from_slice(from);
                }
                if n == 0 {
                    *clip += 1;
                    *pos = 0;
                    idle_steps += 1;
                } else {
                    *pos += n;
                    filled += n;
                    idle_steps = 0;
                }
            }
            None if looped && !clips.is_empty() => {
                *clip = 0;
                *pos = 0;
                idle_steps += 1;
            }
            None => *finished = true,
        }
    }
}

/// Mix `from` fading out with `to` fading in across one frame (linear).
pub fn crossfade(from: &[i16; FRAME_SAMPLES], to: &mut [i16; FRAME_SAMPLES]) {
    let n = FRAME_SAMPLES as i32;
    for (i, (a, b)) in from.iter().zip(to.iter_mut()).enumerate() {
        let i = i as i32;
        let mixed = (i32::from(*a) * (n - i) + i32::from(*b) * i) / n;
        *b = mixed as i16;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(len: usize, amp: i16) -> Arc<[i16]> {
        (0..len)
            .map(|i| if (i / 4) % 2 == 0 { amp } else { -amp })
            .collect()
    }

    fn rms(f: &[i16]) -> f64 {
        (f.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / f.len() as f64).sqrt()
    }

    #[test]
    fn clip_plays_then_finishes_once() {
        let mut p = Player::new(Source::Clip {
            samples: tone(400, 1000),
            looped: false,
        });
        let mut f = [0i16; FRAME_SAMPLES];
        assert_eq!(p.fill(&mut f), FrameNote::None);
        assert_eq!(p.fill(&mut f), FrameNote::None);
        assert_eq!(p.fill(&mut f), FrameNote::Finished);
        assert!(f[80..].iter().all(|&s| s == 0), "silence after the end");
        assert_eq!(p.fill(&mut f), FrameNote::None);
    }

    #[test]
    fn looped_clip_and_playlist_wrap() {
        let mut p = Player::new(Source::Playlist {
            clips: vec![tone(100, 100), tone(0, 1), tone(100, 200)].into(),
            looped: true,
        });
        let mut f = [0i16; FRAME_SAMPLES];
        for _ in 0..10 {
            assert_eq!(p.fill(&mut f), FrameNote::None);
            assert!(f.iter().all(|&s| s.abs() == 100 || s.abs() == 200));
        }
    }

    /// The hold program's timing on a fake clock (frames): message at start,
    /// again every repeat interval, music ducked by the configured dB under
    /// it and restored after.
    #[test]
    fn hold_repeats_message_and_ducks_music() {
        let music = tone(8000, 8000);
        let message = tone(160 * 25, 4000); // 0.5 s
        let program = Arc::new(HoldProgram::new(
            vec![music],
            Some(message),
            std::time::Duration::from_secs(2),
            -12.0,
        ));
        let mut p = Player::new(Source::Hold(program));
        let mut f = [0i16; FRAME_SAMPLES];
        let mut talk_frames = Vec::new();
        let mut levels = Vec::new();
        for frame in 0..250 {
            if p.fill(&mut f) == FrameNote::TalkStart {
                talk_frames.push(frame);
            }
            levels.push(rms(&f));
        }
        // 20 ms frames: message at 0 s, 2 s, 4 s.
        assert_eq!(talk_frames, vec![0, 100, 200]);
        // Music alone (between messages) is at full level (8000 square).
        assert!((levels[50] - 8000.0).abs() < 1.0, "{}", levels[50]);
        // Under the message: 8000 * 10^(-12/20) ≈ 2009, plus the message.
        // Ducked music and message are in phase here, so RMS ≈ 2009 + 4000.
        assert!((levels[10] - 6009.0).abs() < 20.0, "{}", levels[10]);
        // Restored after the message.
        assert!((levels[40] - 8000.0).abs() < 1.0);
    }

    #[test]
    fn empty_message_means_music_only() {
        let program = Arc::new(HoldProgram::new(
            vec![tone(1600, 3000)],
            None,
            std::time::Duration::from_secs(1),
            -12.0,
        ));
        let mut p = Player::new(Source::Hold(program));
        let mut f = [0i16; FRAME_SAMPLES];
        for _ in 0..100 {
            assert_eq!(p.fill(&mut f), FrameNote::None);
            assert!((rms(&f) - 3000.0).abs() < 1.0);
        }
    }

    #[test]
    fn mixing_saturates_instead_of_wrapping() {
        let program = Arc::new(HoldProgram::new(
            vec![vec![i16::MAX; 1600].into()],
            Some(vec![i16::MAX; 1600].into()),
            std::time::Duration::from_secs(10),
            0.0,
        ));
        let mut p = Player::new(Source::Hold(program));
        let mut f = [0i16; FRAME_SAMPLES];
        p.fill(&mut f);
        assert!(f.iter().all(|&s| s == i16::MAX));
    }

    #[test]
    fn crossfade_has_no_step() {
        let a = [10_000i16; FRAME_SAMPLES];
        let mut b = [-10_000i16; FRAME_SAMPLES];
        crossfade(&a, &mut b);
        assert_eq!(b[0], 10_000);
        let max_step = b
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .max()
            .unwrap();
        assert!(max_step <= 20_000 / 160 + 1, "{max_step}");
    }

    /// The sample-at-a-time hold mix the run-copying `fill_hold` replaced:
    /// the two must agree sample for sample.
    fn reference_hold(
        program: &HoldProgram,
        clip: &mut usize,
        pos: &mut usize,
        msg_pos: &mut Option<usize>,
        frames_to_next: &mut u32,
        gain: &mut i32,
    ) -> [i16; FRAME_SAMPLES] {
        let mut out = [0i16; FRAME_SAMPLES];
        if let Some(m) = &program.message {
            if *frames_to_next == 0 && msg_pos.is_none() && !m.is_empty() {
                *msg_pos = Some(0);
                *frames_to_next = program.repeat_frames;
            }
        }
        *frames_to_next = frames_to_next.saturating_sub(1);
        let step = (UNITY_Q15 - program.duck_gain_q15).max(1) / DUCK_RAMP_SAMPLES;
        for slot in out.iter_mut() {
            let mut music = 0;
            for _ in 0..(2 * program.music.len() + 2) {
                match program.music.get(*clip) {
                    Some(c) => match c.get(*pos) {
                        Some(s) => {
                            *pos += 1;
                            music = i32::from(*s);
                            break;
                        }
                        None => {
                            *clip += 1;
                            *pos = 0;
                        }
                    },
                    None if !program.music.is_empty() => {
                        *clip = 0;
                        *pos = 0;
                    }
                    None => break,
                }
            }
            let speech = match (&program.message, *msg_pos) {
                (Some(m), Some(p)) => match m.get(p) {
                    Some(s) => {
                        *msg_pos = Some(p + 1);
                        Some(i32::from(*s))
                    }
                    None => {
                        *msg_pos = None;
                        None
                    }
                },
                _ => None,
            };
            let target = if speech.is_some() {
                program.duck_gain_q15
            } else {
                UNITY_Q15
            };
            if *gain > target {
                *gain = (*gain - step).max(target);
            } else if *gain < target {
                *gain = (*gain + step).min(target);
            }
            let mixed = ((music * *gain) >> 15) + speech.unwrap_or(0);
            *slot = mixed.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16;
        }
        out
    }

    #[test]
    fn hold_mix_matches_the_sample_at_a_time_reference() {
        let ramp = |len: usize, k: i32| -> Arc<[i16]> {
            (0..len)
                .map(|i| ((i as i32 * k) % 60_000 - 30_000) as i16)
                .collect()
        };
        // Clip and message lengths that end mid-frame and on frame edges,
        // an empty clip in the list, and a message longer than the repeat.
        for (music, message, repeat_ms) in [
            (
                vec![ramp(1000, 37), ramp(0, 1), ramp(333, 101)],
                Some(ramp(3 * 160, 53)),
                200,
            ),
            (vec![ramp(160, 7)], Some(ramp(1234, 91)), 100),
            (vec![ramp(77, 3)], None, 1000),
            (vec![], Some(ramp(500, 11)), 140),
        ] {
            let program = Arc::new(HoldProgram::new(
                music,
                message,
                std::time::Duration::from_millis(repeat_ms),
                -12.0,
            ));
            let mut player = Player::new(Source::Hold(program.clone()));
            let (mut clip, mut pos, mut msg_pos, mut next, mut gain) = (0, 0, None, 0, UNITY_Q15);
            let mut f = [0i16; FRAME_SAMPLES];
            for frame in 0..400 {
                player.fill(&mut f);
                let want = reference_hold(
                    &program,
                    &mut clip,
                    &mut pos,
                    &mut msg_pos,
                    &mut next,
                    &mut gain,
                );
                assert_eq!(f, want, "frame {frame}");
            }
        }
    }

    #[test]
    fn db_conversion() {
        assert_eq!(db_to_q15(0.0), 32768);
        assert_eq!(db_to_q15(-6.0206), 16384);
        assert_eq!(db_to_q15(-12.0), 8231);
    }
}
