//! crossline's media core: G.711, RTP and RTCP packets, RFC 4733 DTMF, the
//! jitter buffer, tones, players over decoded WAV clips, the RTP port pool
//! and the real-time audio loop. No async runtime: audio loops are plain
//! threads, and report to the application through an
//! [`audio_loop::EventSink`].

#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod audio_file;
pub mod audio_loop;
pub mod batch_io;
pub mod clips;
pub mod dtmf;
pub mod g711;
pub mod headroom;
pub mod jitter;
pub mod live;
pub mod player;
pub mod ports;
pub mod raw_send;
pub mod record_tap;
pub mod rtcp;
pub mod rtp_packet;
pub mod tones;

/// Samples in one 20 ms frame at 8 kHz: the unit every audio path works in.
pub const FRAME_SAMPLES: usize = 160;
