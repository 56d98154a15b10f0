//! SIP: messages, transactions, dialogs, digest auth, the sans-IO endpoint
//! and the tokio transport drivers.

pub mod auth;
pub mod dialog;
pub mod endpoint;
pub mod message;
pub mod transaction;
pub mod transport;
