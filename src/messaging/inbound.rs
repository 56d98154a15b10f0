//! Messages coming in from the providers' webhooks: signature checks
//! (Twilio `X-Twilio-Signature`, Meta `X-Hub-Signature-256`), parsing of
//! their bodies, and the opt-out keywords. Pure functions: the HTTP side
//! and the conversation routing live elsewhere.

use super::crypto;

/// Which provider channel a message came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InboundChannel {
    Sms,
    WhatsApp,
}

impl InboundChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            InboundChannel::Sms => "sms",
            InboundChannel::WhatsApp => "whatsapp",
        }
    }
}

/// One text a person sent us.
#[derive(Clone, PartialEq, Eq)]
pub struct InboundMessage {
    pub channel: InboundChannel,
    /// MessageSid / wamid: what makes a retried webhook the same message.
    pub provider_id: String,
    /// The sender, E.164.
    pub from: String,
    pub text: String,
}

impl std::fmt::Debug for InboundMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundMessage")
            .field("channel", &self.channel)
            .field("provider_id", &self.provider_id)
            .field("from", &crate::mask::phone(&self.from))
            .field("text", &format!("<{} chars>", self.text.chars().count()))
            .finish()
    }
}

/// Twilio's request signature: base64 HMAC-SHA1, keyed with the auth
/// token, over the webhook URL followed by every POST parameter as
/// name+value, sorted by name.
pub fn twilio_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_string();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    crypto::base64_encode(&crypto::hmac_sha1(auth_token.as_bytes(), data.as_bytes()))
}

pub fn twilio_signature_ok(
    auth_token: &str,
    url: &str,
    params: &[(String, String)],
    header: &str,
) -> bool {
    crypto::same_bytes(
        twilio_signature(auth_token, url, params).as_bytes(),
        header.trim().as_bytes(),
    )
}

/// An inbound SMS from Twilio's form fields.
pub fn parse_twilio(params: &[(String, String)]) -> Result<InboundMessage, &'static str> {
    let get = |k| super::form::get(params, k);
    let provider_id = get("MessageSid")
        .or_else(|| get("SmsSid"))
        .ok_or("no MessageSid")?;
    // The SID is the dedupe key: anything else folded into it would make a
    // replayed webhook look like a new message.
    if !is_twilio_message_sid(provider_id) {
        return Err("MessageSid is not a Twilio message SID");
    }
    let from = get("From").ok_or("no From")?;
    if !super::is_e164(from) {
        return Err("From is not an E.164 number");
    }
    Ok(InboundMessage {
        channel: InboundChannel::Sms,
        provider_id: provider_id.to_string(),
        from: from.to_string(),
        text: get("Body").unwrap_or_default().to_string(),
    })
}

/// Twilio's message SIDs: `SM` (SMS) or `MM` (MMS) and 32 lowercase hex
/// digits.
fn is_twilio_message_sid(s: &str) -> bool {
    let (prefix, digits) = s.split_at_checked(2).unwrap_or_default();
    matches!(prefix, "SM" | "MM")
        && digits.len() == 32
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Meta's `X-Hub-Signature-256`: `sha256=` and the hex HMAC-SHA256 of the
/// raw body, keyed with the app secret.
pub fn whatsapp_signature_ok(app_secret: &str, body: &[u8], header: &str) -> bool {
    crypto::verify_signature(app_secret.as_bytes(), body, header)
}

/// The text messages in a WhatsApp Cloud API webhook (statuses and other
/// message types are skipped). `Err` if it isn't that JSON at all.
pub fn parse_whatsapp(body: &[u8]) -> Result<Vec<InboundMessage>, &'static str> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| "not JSON")?;
    if v["object"] != "whatsapp_business_account" {
        return Err("not a WhatsApp Business Account event");
    }
    let mut out = Vec::new();
    let entries = v["entry"].as_array().map(Vec::as_slice).unwrap_or_default();
    for entry in entries {
        let changes = entry["changes"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for change in changes {
            let messages = change["value"]["messages"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            for m in messages {
                let (Some(id), Some(from)) = (m["id"].as_str(), m["from"].as_str()) else {
                    continue;
                };
                // wa_id is the number without '+'.
                let from = format!("+{}", from.trim_start_matches('+'));
                let text = match m["type"].as_str() {
                    Some("text") => m["text"]["body"].as_str().unwrap_or_default(),
                    Some("button") => m["button"]["text"].as_str().unwrap_or_default(),
                    Some("interactive") => m["interactive"]["button_reply"]["title"]
                        .as_str()
                        .or_else(|| m["interactive"]["list_reply"]["title"].as_str())
                        .unwrap_or_default(),
                    _ => continue,
                };
                if !super::is_e164(&from) || id.is_empty() || id.len() > 128 {
                    continue;
                }
                out.push(InboundMessage {
                    channel: InboundChannel::WhatsApp,
                    provider_id: id.to_string(),
                    from,
                    text: text.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// An opt-out or opt-in keyword (the carriers' and Twilio's list).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptChange {
    Stop,
    Start,
}

pub fn opt_keyword(text: &str) -> Option<OptChange> {
    match text.trim().to_ascii_uppercase().as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "OPTOUT" => {
            Some(OptChange::Stop)
        }
        "START" | "YES" | "UNSTOP" | "OPTIN" => Some(OptChange::Start),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> Vec<(String, String)> {
        [
            ("MessageSid", "SM1234567890abcdef1234567890abcdef"),
            ("From", "+34600123456"),
            ("To", "+15550100000"),
            ("Body", "Hola, ¿qué tal?"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn twilio_signature_matches_an_independent_computation() {
        // Python: base64(hmac.new(token, url + sorted k+v, sha1)).
        let url = "https://chat.example.com/hooks/twilio/sms";
        let want = "oYiEiQB9/48D8xWP6OAqDK5pkjI=";
        assert_eq!(twilio_signature("test-auth-token", url, &params()), want);
        assert!(twilio_signature_ok("test-auth-token", url, &params(), want));
        assert!(!twilio_signature_ok("other-token", url, &params(), want));
        assert!(!twilio_signature_ok(
            "test-auth-token",
            "https://x.example/",
            &params(),
            want
        ));
        let mut forged = params();
        forged[3].1 = "changed".into();
        assert!(!twilio_signature_ok("test-auth-token", url, &forged, want));
        let m = parse_twilio(&params()).unwrap();
        assert_eq!(m.from, "+34600123456");
        assert_eq!(m.text, "Hola, ¿qué tal?");
        assert!(!format!("{m:?}").contains("600123456"));
    }

    #[test]
    fn twilio_form_without_sid_or_number_is_refused() {
        let mut p = params();
        p.retain(|(k, _)| k != "MessageSid");
        assert!(parse_twilio(&p).is_err());
        let mut p = params();
        p[1].1 = "whatsapp:+34600".into();
        assert!(parse_twilio(&p).is_err());
    }

    #[test]
    fn twilio_message_sid_must_be_twilios_format() {
        let with_sid = |sid: &str| {
            let mut p = params();
            p[0].1 = sid.into();
            parse_twilio(&p)
        };
        for good in [
            "SM1234567890abcdef1234567890abcdef",
            "MM0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(with_sid(good).unwrap().provider_id, good);
        }
        for bad in [
            // Another field folded in: the same message under a new key.
            "SM1234567890abcdef1234567890abcdef&Body=x",
            "SM1234567890abcdef1234567890abcdef ",
            "SM1234567890abcdef1234567890abcde",
            "SM1234567890abcdef1234567890abcdef0",
            "SM1234567890ABCDEF1234567890ABCDEF",
            "AC1234567890abcdef1234567890abcdef",
            "sm1234567890abcdef1234567890abcdef",
            "SM1234567890abcdef1234567890abcdeg",
            "SM-c1",
            "SM",
            "S",
            "",
            "SMé234567890abcdef1234567890abcde",
        ] {
            assert!(with_sid(bad).is_err(), "{bad:?}");
        }
        // The SmsSid fallback is held to the same format.
        let mut p = params();
        p[0] = ("SmsSid".into(), "SM-1".into());
        assert!(parse_twilio(&p).is_err());
    }

    #[test]
    fn whatsapp_signature_and_body() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let sig = "sha256=0bf7374433906636bed1653bc7c64affb42fa5da9a39e251ab95c2e3a9c06923";
        assert!(whatsapp_signature_ok("app-secret", body, sig));
        assert!(!whatsapp_signature_ok("app-secret", b"{}", sig));
        let event = br#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp","metadata":{"phone_number_id":"106540352242922"},"contacts":[{"wa_id":"34600123456"}],"messages":[{"from":"34600123456","id":"wamid.ABC","timestamp":"1700000000","type":"text","text":{"body":"hi there"}},{"from":"34600123456","id":"wamid.IMG","type":"image","image":{}}],"statuses":[{"id":"wamid.X","status":"read"}]}}]}]}"#;
        let msgs = parse_whatsapp(event).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].from, "+34600123456");
        assert_eq!(msgs[0].provider_id, "wamid.ABC");
        assert_eq!(msgs[0].text, "hi there");
        assert!(parse_whatsapp(b"[1,2").is_err());
        assert!(parse_whatsapp(br#"{"object":"page"}"#).is_err());
        assert_eq!(
            parse_whatsapp(br#"{"object":"whatsapp_business_account","entry":7}"#).unwrap(),
            vec![]
        );
    }

    #[test]
    fn opt_keywords() {
        assert_eq!(opt_keyword(" stop "), Some(OptChange::Stop));
        assert_eq!(opt_keyword("Start"), Some(OptChange::Start));
        assert_eq!(opt_keyword("stop please"), None);
    }
}
