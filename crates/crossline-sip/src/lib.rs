//! crossline's SIP core, sans-IO: bytes and time go in; messages to send,
//! timers and events come out. Nothing here opens a socket, reads a clock
//! or depends on an async runtime; the application's transports drive it.
//!
//! - [`message`]: the RFC 3261 parser, framer and writer.
//! - [`transaction`]: the §17 client and server state machines and timers.
//! - [`dialog`]: dialog state, route sets and in-dialog requests.
//! - [`auth`]: digest (MD5, SHA-256) for both the client and the server.
//! - [`sdp`]: offer/answer, codec choice, hold.
//! - [`session_timer`]: RFC 4028 session timer negotiation.
//! - [`registrar`]: the location service behind our registrar.
//! - [`endpoint`]: all of the above behind one `handle_*`/`poll_*` surface,
//!   with admission control and registration.

#![warn(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod net;
pub mod registrar;
pub mod sdp;
pub mod secret;
pub mod session_timer;
pub mod transaction;
