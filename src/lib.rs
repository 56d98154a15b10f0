//! crossline: a SIP/RTP media gateway with call and chat flows built in.
//!
//! The library does the work; `main.rs` only parses the command line.
//! Protocol cores are their own crates and build without tokio:
//! `crossline-sip` ([`sip::endpoint`], [`sip::transaction`], [`sdp`]) and
//! `crossline-media` ([`media::audio_loop`] and the codecs). They are
//! re-exported at their old paths. Call control ([`call`]) is sans-IO too;
//! [`runtime`] drives it with tokio and the audio loops.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]
// The OpenAPI document is one large `json!`.
#![recursion_limit = "256"]

pub mod allocator;
pub mod breakout;
pub mod call;
pub mod callback;
pub mod chat;
pub mod config;
pub mod dns;
pub mod flow;
#[cfg(any(fuzzing, test))]
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod mask;
pub mod media;
pub mod media_stream;
pub mod messaging;
pub mod net;
pub mod queue;
pub mod recording;
pub mod registrar;
pub mod runtime;
pub use crossline_sip::{sdp, secret};
pub mod sip;
pub mod speech;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tts;
pub mod twiml;
pub mod webrtc;
