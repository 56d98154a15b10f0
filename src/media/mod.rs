//! Media: the real-time core lives in the `crossline-media` crate
//! (re-exported here, so `crate::media::audio_loop` and friends keep their
//! paths); the engine that ties it to SDP and to the control task's tokio
//! channel is the application's.

pub use crossline_media::{
    audio_file, audio_loop, batch_io, clips, dtmf, g711, headroom, jitter, live, player, ports,
    raw_send, record_tap, rtcp, rtp_packet, tones, FRAME_SAMPLES,
};

pub mod engine;
pub mod overload;
