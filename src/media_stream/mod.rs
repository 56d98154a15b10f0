//! Media streams: a call's audio to a voice agent over WebSocket in the
//! Twilio Media Streams wire format (Telnyx, Fonoster and agent
//! frameworks such as pipecat speak it), and in a bidirectional stream
//! the agent's audio back into the call.
//!
//! [`protocol`] is the wire format; [`session`] carries one stream on
//! tokio. The audio loop only meets a stream through lock-free queues
//! ([`crate::media::live`]): a tap of the call's audio and, both ways, a
//! bounded playout queue.

pub mod protocol;
pub mod session;

use std::time::Duration;

use serde::Deserialize;
use sha2::Digest as _;

use crate::secret::Secret;

/// `[media_streams]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaStreamsConfig {
    /// Sent in `start` as `accountSid`; unset: `[twiml]`'s, else zeros.
    pub account_sid: Option<String>,
    /// Signs each connection (`X-Twilio-Signature`, HMAC-SHA1 of the URL),
    /// so an agent's existing Twilio validator accepts it; unset:
    /// `[twiml]`'s token, else unsigned.
    pub auth_token: Option<Secret>,
    pub auth_token_env: Option<String>,
    /// Give up on an agent that doesn't complete the upgrade in this long.
    pub connect_timeout_ms: u64,
    /// How far ahead an agent may send audio; beyond it the oldest is
    /// dropped (and counted).
    pub playout_buffer_secs: u32,
    /// Largest message taken from an agent.
    pub max_message_kb: usize,
}

impl Default for MediaStreamsConfig {
    fn default() -> Self {
        MediaStreamsConfig {
            account_sid: None,
            auth_token: None,
            auth_token_env: None,
            connect_timeout_ms: 5_000,
            playout_buffer_secs: 10,
            max_message_kb: 256,
        }
    }
}

impl MediaStreamsConfig {
    /// What sessions need, with the token read (from the environment
    /// too). The account and token default to `[twiml]`'s: one Twilio
    /// account signs apps and streams alike.
    pub fn settings(
        &self,
        twiml: &crate::twiml::TwimlConfig,
    ) -> Result<session::StreamSettings, String> {
        let own = crate::config::secret("auth_token", &self.auth_token, &self.auth_token_env)?;
        let auth_token = match own {
            Some(token) => Some(token),
            // `[twiml]` reports its own token's problems, where apps use it.
            None => twiml.auth_token().ok().flatten(),
        };
        let account_sid = self
            .account_sid
            .clone()
            .or_else(|| (!twiml.account_sid.is_empty()).then(|| twiml.account_sid.clone()))
            .unwrap_or_else(|| format!("AC{}", "0".repeat(32)));
        Ok(session::StreamSettings {
            account_sid,
            auth_token,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            playout_frames: (self.playout_buffer_secs as usize).saturating_mul(50),
            max_message_bytes: self.max_message_kb.saturating_mul(1024),
        })
    }

    /// `check`'s complaints, as (key, message).
    pub fn problems(&self, twiml: &crate::twiml::TwimlConfig) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Err(e) = self.settings(twiml) {
            out.push(("auth_token", e));
        }
        if !(1..=60).contains(&self.playout_buffer_secs) {
            out.push(("playout_buffer_secs", "must be 1..=60".into()));
        }
        if !(100..=60_000).contains(&self.connect_timeout_ms) {
            out.push(("connect_timeout_ms", "must be 100..=60000".into()));
        }
        if !(16..=16_384).contains(&self.max_message_kb) {
            out.push(("max_message_kb", "must be 16..=16384".into()));
        }
        let bad_sid = |sid: &String| !sid.starts_with("AC") || sid.len() != 34;
        if self.account_sid.as_ref().is_some_and(bad_sid) {
            out.push(("account_sid", "must be AC followed by 32 characters".into()));
        }
        out
    }
}

/// A call's Twilio-style id: `CA` and 32 hex digits, the same for every
/// stream of the call (from its SIP Call-ID).
pub fn call_sid(sip_call_id: &str) -> String {
    sid("CA", sip_call_id.as_bytes())
}

/// A new stream's id: `MZ` and 32 hex digits.
pub fn new_stream_sid() -> String {
    sid("MZ", &rand::random::<u128>().to_le_bytes())
}

fn sid(prefix: &str, from: &[u8]) -> String {
    let digest = sha2::Sha256::digest(from);
    let mut out = String::with_capacity(34);
    out.push_str(prefix);
    for b in digest.iter().take(16) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_look_like_twilios() {
        let ca = call_sid("abc@127.0.0.1");
        assert_eq!(ca.len(), 34);
        assert!(ca.starts_with("CA"));
        assert_eq!(ca, call_sid("abc@127.0.0.1"));
        assert_ne!(new_stream_sid(), new_stream_sid());
        let twiml = crate::twiml::TwimlConfig::default();
        assert!(MediaStreamsConfig::default().problems(&twiml).is_empty());
        assert_eq!(
            MediaStreamsConfig::default()
                .settings(&twiml)
                .unwrap()
                .account_sid,
            format!("AC{}", "0".repeat(32))
        );
        let shared = crate::twiml::TwimlConfig {
            account_sid: format!("AC{}", "1".repeat(32)),
            ..Default::default()
        };
        let streams = MediaStreamsConfig::default().settings(&shared).unwrap();
        assert_eq!(streams.account_sid, shared.account_sid, "[twiml]'s account");
    }
}
