//! Media: G.711, RTP packets, WAV sources, the RTP port pool and the
//! real-time audio loop.

pub mod audio_file;
pub mod audio_loop;
pub mod clips;
pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod jitter;
pub mod player;
pub mod ports;
pub mod rtcp;
pub mod rtp_packet;
pub mod tones;

/// Samples in one 20 ms frame at 8 kHz: the unit every audio path works in.
pub const FRAME_SAMPLES: usize = 160;
