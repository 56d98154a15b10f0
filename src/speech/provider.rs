//! The recognizers' wire formats. Both take μ-law 8 kHz audio as binary
//! WebSocket frames and answer with JSON transcripts; only the framing
//! around that differs.
//!
//! - **Deepgram** live transcription: settings in the query string
//!   (`encoding=mulaw&sample_rate=8000&…`), `Authorization: Token <key>`,
//!   `Results` messages (`channel.alternatives[0].transcript`,
//!   `confidence`, `is_final`, `speech_final`), `{"type":"CloseStream"}`
//!   to finish.
//! - **websocket**, the generic protocol (README, "Speech input"): a
//!   `{"type":"start","language":…,"hints":[…],"encoding":"audio/x-mulaw",
//!   "sample_rate":8000}` text message first, then audio, answered by
//!   `{"transcript":…,"is_final":…,"confidence":…}`; `{"type":"stop"}` to
//!   finish. A self-hosted Whisper or Vosk server fits behind it.

use serde_json::{json, Value};

/// Deepgram's live endpoint.
pub const DEEPGRAM_URL: &str = "wss://api.deepgram.com/v1/listen";

#[derive(Debug, Clone, PartialEq)]
pub enum Provider {
    Deepgram {
        url: String,
        key: String,
        model: Option<String>,
    },
    WebSocket {
        url: String,
        token: Option<String>,
    },
    /// PocketSphinx in this process: no WebSocket (see [`super::embedded`]).
    PocketSphinx(super::embedded::Engine),
}

/// One transcript from the recognizer.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub confidence: f64,
    /// It won't change any more.
    pub is_final: bool,
    /// The recognizer's own end of utterance (Deepgram `speech_final`).
    pub end_of_speech: bool,
}

impl Provider {
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Deepgram { .. } => "deepgram",
            Provider::WebSocket { .. } => "websocket",
            Provider::PocketSphinx(_) => "pocketsphinx",
        }
    }

    /// Where to connect and the `Authorization` header, for `language`
    /// and `hints`.
    pub fn connect_to(
        &self,
        language: &str,
        hints: &[String],
    ) -> Result<(String, Option<String>), String> {
        match self {
            Provider::Deepgram { url, key, model } => {
                let mut params: Vec<(&str, String)> = vec![
                    ("encoding", "mulaw".into()),
                    ("sample_rate", "8000".into()),
                    ("channels", "1".into()),
                    ("interim_results", "true".into()),
                    ("punctuate", "true".into()),
                    ("language", language.into()),
                ];
                if let Some(m) = model {
                    params.push(("model", m.clone()));
                }
                for h in hints {
                    params.push(("keywords", h.clone()));
                }
                let url = reqwest::Url::parse_with_params(url, &params)
                    .map_err(|e| format!("bad Deepgram URL: {e}"))?;
                Ok((url.to_string(), Some(format!("Token {key}"))))
            }
            Provider::WebSocket { url, token } => {
                Ok((url.clone(), token.as_ref().map(|t| format!("Bearer {t}"))))
            }
            Provider::PocketSphinx(_) => Err("pocketsphinx is not a WebSocket recognizer".into()),
        }
    }

    /// A text message to send before any audio.
    pub fn opening(&self, language: &str, hints: &[String]) -> Option<String> {
        match self {
            Provider::Deepgram { .. } | Provider::PocketSphinx(_) => None,
            Provider::WebSocket { .. } => Some(
                json!({
                    "type": "start",
                    "language": language,
                    "hints": hints,
                    "encoding": "audio/x-mulaw",
                    "sample_rate": 8000,
                })
                .to_string(),
            ),
        }
    }

    /// The text message that asks for the last results and the end.
    pub fn closing(&self) -> String {
        match self {
            Provider::Deepgram { .. } => json!({"type": "CloseStream"}).to_string(),
            Provider::WebSocket { .. } | Provider::PocketSphinx(_) => {
                json!({"type": "stop"}).to_string()
            }
        }
    }

    /// A transcript in `text`, if it carries one (other messages, such as
    /// Deepgram's Metadata, are not transcripts).
    pub fn transcript(&self, text: &str) -> Option<Transcript> {
        let v: Value = serde_json::from_str(text).ok()?;
        match self {
            Provider::Deepgram { .. } => {
                if v.get("type").and_then(Value::as_str) != Some("Results") {
                    return None;
                }
                let alt = v.pointer("/channel/alternatives/0")?;
                Some(Transcript {
                    text: alt.get("transcript")?.as_str()?.to_string(),
                    confidence: alt.get("confidence").and_then(Value::as_f64).unwrap_or(0.0),
                    is_final: v.get("is_final").and_then(Value::as_bool).unwrap_or(false),
                    end_of_speech: v
                        .get("speech_final")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            }
            Provider::WebSocket { .. } => Some(Transcript {
                text: v.get("transcript")?.as_str()?.to_string(),
                confidence: v.get("confidence").and_then(Value::as_f64).unwrap_or(0.0),
                is_final: v.get("is_final").and_then(Value::as_bool).unwrap_or(false),
                end_of_speech: false,
            }),
            Provider::PocketSphinx(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deepgram() -> Provider {
        Provider::Deepgram {
            url: DEEPGRAM_URL.into(),
            key: "dg-key".into(),
            model: Some("nova-2-phonecall".into()),
        }
    }

    #[test]
    fn deepgram_settings_go_in_the_query_and_results_are_read() {
        let (url, auth) = deepgram()
            .connect_to("es", &["agente:2".to_string()])
            .unwrap();
        assert_eq!(
            url,
            "wss://api.deepgram.com/v1/listen?encoding=mulaw&sample_rate=8000&channels=1&interim_results=true&punctuate=true&language=es&model=nova-2-phonecall&keywords=agente%3A2"
        );
        assert_eq!(auth.as_deref(), Some("Token dg-key"));
        let results = r#"{"type":"Results","channel_index":[0,1],"duration":1.2,"start":0.0,
            "is_final":true,"speech_final":true,
            "channel":{"alternatives":[{"transcript":"quiero un agente","confidence":0.91,"words":[]}]}}"#;
        assert_eq!(
            deepgram().transcript(results),
            Some(Transcript {
                text: "quiero un agente".into(),
                confidence: 0.91,
                is_final: true,
                end_of_speech: true
            })
        );
        assert_eq!(
            deepgram().transcript(r#"{"type":"Metadata","request_id":"x"}"#),
            None
        );
        assert_eq!(deepgram().transcript("garbage"), None);
        assert_eq!(deepgram().closing(), r#"{"type":"CloseStream"}"#);
        assert_eq!(deepgram().opening("es", &[]), None);
    }

    #[test]
    fn the_generic_protocol_opens_with_its_settings() {
        let p = Provider::WebSocket {
            url: "ws://127.0.0.1:9/asr".into(),
            token: Some("t0k".into()),
        };
        assert_eq!(
            p.connect_to("en", &[]).unwrap(),
            (
                "ws://127.0.0.1:9/asr".to_string(),
                Some("Bearer t0k".to_string())
            )
        );
        let open: Value =
            serde_json::from_str(&p.opening("en", &["agent".into()]).unwrap()).unwrap();
        assert_eq!(
            open,
            json!({"type":"start","language":"en","hints":["agent"],"encoding":"audio/x-mulaw","sample_rate":8000})
        );
        assert_eq!(
            p.transcript(r#"{"transcript":"agent","is_final":true,"confidence":0.8}"#),
            Some(Transcript {
                text: "agent".into(),
                confidence: 0.8,
                is_final: true,
                end_of_speech: false
            })
        );
        assert_eq!(p.transcript(r#"{"is_final":true}"#), None);
    }
}
