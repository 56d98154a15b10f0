//! SIP: the sans-IO core lives in the `crossline-sip` crate (re-exported
//! here, so `crate::sip::endpoint` and friends keep their paths); the tokio
//! transport drivers that feed it are the application's.

pub use crossline_sip::{auth, dialog, endpoint, message, registrar, session_timer, transaction};

pub mod transport;
