//! crossline: a SIP/RTP media gateway with call and chat flows built in.
//!
//! The library does the work; `main.rs` only parses the command line.
//! Protocol cores ([`sip::endpoint`], [`sip::transaction`]) are sans-IO
//! state machines, and so is call control ([`call`]); [`runtime`] drives
//! them with tokio and the audio loops.

#![recursion_limit = "256"]

pub mod breakout;
pub mod call;
pub mod callback;
pub mod chat;
pub mod config;
pub mod flow;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod mask;
pub mod media;
pub mod messaging;
pub mod net;
pub mod runtime;
pub mod sdp;
pub mod secret;
pub mod sip;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod tts;
pub mod webrtc;
