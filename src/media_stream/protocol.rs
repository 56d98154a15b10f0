//! The Twilio Media Streams wire format, as Twilio documents it: what we
//! send (`connected`, `start`, `media`, `dtmf`, `mark`, `stop`) and what an
//! agent may send back (`media`, `mark`, `clear`). Pure functions over
//! JSON text, so the shapes are tested apart from any socket.

use base64::Engine as _;
use serde_json::{json, Value};

/// Which tracks a stream carries, as `<Stream track>` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tracks {
    InboundTrack,
    OutboundTrack,
    BothTracks,
}

impl Tracks {
    /// (inbound, outbound)
    pub fn wants(self) -> (bool, bool) {
        match self {
            Tracks::InboundTrack => (true, false),
            Tracks::OutboundTrack => (false, true),
            Tracks::BothTracks => (true, true),
        }
    }

    fn names(self) -> Vec<&'static str> {
        match self {
            Tracks::InboundTrack => vec!["inbound"],
            Tracks::OutboundTrack => vec!["outbound"],
            Tracks::BothTracks => vec!["inbound", "outbound"],
        }
    }
}

/// Who the stream belongs to, as `start` and `stop` tell the agent.
#[derive(Debug, Clone)]
pub struct Identity {
    pub account_sid: String,
    pub call_sid: String,
    pub stream_sid: String,
}

pub fn connected() -> String {
    json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}).to_string()
}

pub fn start(
    seq: u64,
    id: &Identity,
    tracks: Tracks,
    parameters: &std::collections::BTreeMap<String, String>,
) -> String {
    json!({
        "event": "start",
        "sequenceNumber": seq.to_string(),
        "start": {
            "accountSid": id.account_sid,
            "streamSid": id.stream_sid,
            "callSid": id.call_sid,
            "tracks": tracks.names(),
            "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        },
        "streamSid": id.stream_sid,
    })
    .to_string()
}

/// One chunk of audio; `chunk` counts from 1 per track, `timestamp_ms`
/// is milliseconds since the stream started.
pub fn media(
    seq: u64,
    stream_sid: &str,
    outbound: bool,
    chunk: u64,
    timestamp_ms: u64,
    ulaw: &[u8],
) -> String {
    json!({
        "event": "media",
        "sequenceNumber": seq.to_string(),
        "media": {
            "track": if outbound { "outbound" } else { "inbound" },
            "chunk": chunk.to_string(),
            "timestamp": timestamp_ms.to_string(),
            "payload": base64::engine::general_purpose::STANDARD.encode(ulaw),
        },
        "streamSid": stream_sid,
    })
    .to_string()
}

pub fn dtmf(seq: u64, stream_sid: &str, digit: char) -> String {
    json!({
        "event": "dtmf",
        "streamSid": stream_sid,
        "sequenceNumber": seq.to_string(),
        "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
    })
    .to_string()
}

pub fn mark(seq: u64, stream_sid: &str, name: &str) -> String {
    json!({
        "event": "mark",
        "sequenceNumber": seq.to_string(),
        "streamSid": stream_sid,
        "mark": {"name": name},
    })
    .to_string()
}

pub fn stop(seq: u64, id: &Identity) -> String {
    json!({
        "event": "stop",
        "sequenceNumber": seq.to_string(),
        "stop": {"accountSid": id.account_sid, "callSid": id.call_sid},
        "streamSid": id.stream_sid,
    })
    .to_string()
}

/// What an agent asks of a bidirectional stream.
#[derive(Debug, PartialEq, Eq)]
pub enum FromAgent {
    /// μ-law 8 kHz audio to play, decoded from base64.
    Media(Vec<u8>),
    /// Tell us when the audio sent before it has played.
    Mark(String),
    /// Drop the audio not yet played.
    Clear,
}

/// Why a message from the agent was not taken; each is counted and the
/// stream goes on.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    NotJson,
    /// Some other event, or one without what it needs.
    Unknown,
    BadPayload,
    TooLong,
}

impl Refused {
    pub fn label(&self) -> &'static str {
        match self {
            Refused::NotJson => "invalid_json",
            Refused::Unknown => "unknown",
            Refused::BadPayload => "bad_payload",
            Refused::TooLong => "too_long",
        }
    }
}

/// Longest mark name kept.
const MAX_MARK_NAME: usize = 256;

/// Read one text message from the agent; `max_audio` bounds a media
/// payload's decoded size.
pub fn parse(text: &str, max_audio: usize) -> Result<FromAgent, Refused> {
    let v: Value = serde_json::from_str(text).map_err(|_| Refused::NotJson)?;
    match v.get("event").and_then(Value::as_str) {
        Some("media") => {
            let payload = v
                .pointer("/media/payload")
                .and_then(Value::as_str)
                .ok_or(Refused::Unknown)?;
            // Base64 is 4/3 the size: refuse before decoding a flood.
            if payload.len() / 4 * 3 > max_audio {
                return Err(Refused::TooLong);
            }
            base64::engine::general_purpose::STANDARD
                .decode(payload)
                .map(FromAgent::Media)
                .map_err(|_| Refused::BadPayload)
        }
        Some("mark") => {
            let name = v
                .pointer("/mark/name")
                .and_then(Value::as_str)
                .ok_or(Refused::Unknown)?;
            if name.len() > MAX_MARK_NAME {
                return Err(Refused::TooLong);
            }
            Ok(FromAgent::Mark(name.to_string()))
        }
        Some("clear") => Ok(FromAgent::Clear),
        _ => Err(Refused::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            account_sid: "AC0123".into(),
            call_sid: "CA4567".into(),
            stream_sid: "MZ89ab".into(),
        }
    }

    fn value(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn what_we_send_has_twilios_shapes() {
        assert_eq!(
            value(&connected()),
            json!({"event":"connected","protocol":"Call","version":"1.0.0"})
        );
        let params = [("caller".to_string(), "+34911".to_string())].into();
        assert_eq!(
            value(&start(1, &id(), Tracks::BothTracks, &params)),
            json!({"event":"start","sequenceNumber":"1","streamSid":"MZ89ab","start":{
                "accountSid":"AC0123","streamSid":"MZ89ab","callSid":"CA4567",
                "tracks":["inbound","outbound"],"customParameters":{"caller":"+34911"},
                "mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}})
        );
        assert_eq!(
            value(&media(3, "MZ89ab", false, 1, 20, &[0xff, 0x7f])),
            json!({"event":"media","sequenceNumber":"3","streamSid":"MZ89ab",
                "media":{"track":"inbound","chunk":"1","timestamp":"20","payload":"/38="}})
        );
        assert_eq!(
            value(&dtmf(4, "MZ89ab", '5')),
            json!({"event":"dtmf","sequenceNumber":"4","streamSid":"MZ89ab",
                "dtmf":{"track":"inbound_track","digit":"5"}})
        );
        assert_eq!(
            value(&mark(5, "MZ89ab", "greeting")),
            json!({"event":"mark","sequenceNumber":"5","streamSid":"MZ89ab","mark":{"name":"greeting"}})
        );
        assert_eq!(
            value(&stop(6, &id())),
            json!({"event":"stop","sequenceNumber":"6","streamSid":"MZ89ab",
                "stop":{"accountSid":"AC0123","callSid":"CA4567"}})
        );
    }

    #[test]
    fn agent_messages_are_read_and_bad_ones_refused() {
        assert_eq!(
            parse(
                r#"{"event":"media","streamSid":"MZ","media":{"payload":"/38="}}"#,
                1000
            ),
            Ok(FromAgent::Media(vec![0xff, 0x7f]))
        );
        assert_eq!(
            parse(
                r#"{"event":"mark","streamSid":"MZ","mark":{"name":"m1"}}"#,
                1000
            ),
            Ok(FromAgent::Mark("m1".into()))
        );
        assert_eq!(
            parse(r#"{"event":"clear","streamSid":"MZ"}"#, 1000),
            Ok(FromAgent::Clear)
        );
        assert_eq!(parse("not json", 1000), Err(Refused::NotJson));
        assert_eq!(
            parse(r#"{"event":"media","media":{}}"#, 1000),
            Err(Refused::Unknown)
        );
        assert_eq!(parse(r#"{"event":"dance"}"#, 1000), Err(Refused::Unknown));
        assert_eq!(
            parse(r#"{"event":"media","media":{"payload":"!!!!"}}"#, 1000),
            Err(Refused::BadPayload)
        );
        let big = format!(
            r#"{{"event":"media","media":{{"payload":"{}"}}}}"#,
            "A".repeat(4000)
        );
        assert_eq!(parse(&big, 1000), Err(Refused::TooLong));
        let long_mark = format!(
            r#"{{"event":"mark","mark":{{"name":"{}"}}}}"#,
            "x".repeat(300)
        );
        assert_eq!(parse(&long_mark, 1000), Err(Refused::TooLong));
    }
}
