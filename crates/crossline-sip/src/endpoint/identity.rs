//! Who is calling, as an INVITE's identity headers tell it: the asserted
//! identity (RFC 3325 `P-Asserted-Identity`), the caller's privacy request
//! (RFC 3323 `Privacy`) and the number the call was diverted from
//! (`Diversion`, RFC 5806, else `History-Info`, RFC 7044). The endpoint only
//! reads them; the application decides which trunks to believe.

use crate::message::{NameAddr, Request, Uri};

/// Identity headers of one INVITE, each `None` when absent or unreadable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallerIdentity {
    /// The number (or user) `P-Asserted-Identity` asserts: its first sip:
    /// or sips: entry with a user, else its first tel: entry.
    pub asserted: Option<String>,
    /// `Privacy: id` (or `header`/`user`): the caller asked not to be shown.
    pub private: bool,
    /// Where the call was diverted from: the first `Diversion` entry, else
    /// the first `History-Info` entry when the call was retargeted.
    pub diversion: Option<String>,
}

/// Longest identity value kept: numbers, not essays.
const MAX_IDENTITY: usize = 64;

impl CallerIdentity {
    pub(super) fn of(req: &Request) -> CallerIdentity {
        let h = &req.headers;
        let pai: Vec<Uri> = h
            .get_all("P-Asserted-Identity")
            .filter_map(|v| NameAddr::parse(v).ok())
            .map(|n| n.uri)
            .collect();
        let asserted = pai
            .iter()
            .find(|u| u.scheme != "tel")
            .and_then(number_of)
            .or_else(|| pai.iter().find(|u| u.scheme == "tel").and_then(number_of));
        // priv-values are separated by ';' (RFC 3323 §4.2): "id;critical".
        let private = h
            .get_all("Privacy")
            .flat_map(|v| v.split([';', ',']))
            .any(|t| {
                ["id", "header", "user"]
                    .iter()
                    .any(|p| t.trim().eq_ignore_ascii_case(p))
            });
        let diverted_from = |name: &str, need: usize| {
            let entries: Vec<NameAddr> = h
                .get_all(name)
                .filter_map(|v| NameAddr::parse(v).ok())
                .collect();
            (entries.len() >= need)
                .then(|| entries.first().and_then(|n| number_of(&n.uri)))
                .flatten()
        };
        let diversion = diverted_from("Diversion", 1).or_else(|| diverted_from("History-Info", 2));
        CallerIdentity {
            asserted,
            private,
            diversion,
        }
    }
}

/// The user part of a sip:/sips: URI, or the number of a tel: URI,
/// without parameters; `None` for anything else or an empty/overlong one.
fn number_of(uri: &Uri) -> Option<String> {
    let raw = match uri.scheme.as_str() {
        "sip" | "sips" => uri.user.as_deref()?,
        "tel" => uri.host.split(';').next()?,
        _ => return None,
    };
    let raw = raw.split(';').next()?.trim();
    (!raw.is_empty() && raw.len() <= MAX_IDENTITY && !raw.chars().any(char::is_control))
        .then(|| raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{parse_message, SipMessage};

    fn invite(headers: &str) -> Request {
        let text = format!(
            "INVITE sip:100@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK1\r\n\
             From: <sip:600111222@carrier.example>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\n\
             Call-ID: x\r\nCSeq: 1 INVITE\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        match parse_message(text.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => unreachable!(),
        }
    }

    #[test]
    fn asserted_identity_privacy_and_diversion() {
        let id = CallerIdentity::of(&invite(
            "P-Asserted-Identity: \"Ana\" <sip:+34600111222@carrier.example;user=phone>, <tel:+34600111222>\r\n\
             Privacy: id;critical\r\nDiversion: <sip:+34910000000@carrier.example>;reason=unconditional;counter=1\r\n",
        ));
        assert_eq!(id.asserted.as_deref(), Some("+34600111222"));
        assert!(id.private);
        assert_eq!(id.diversion.as_deref(), Some("+34910000000"));
    }

    #[test]
    fn tel_only_history_info_and_nothing() {
        let id = CallerIdentity::of(&invite(
            "P-Asserted-Identity: <tel:+15551234567;cpc=ordinary>\r\n\
             History-Info: <sip:+15550001111@pbx.example>;index=1, <sip:agent@pbx.example;cause=302>;index=1.1\r\n\
             Privacy: none\r\n",
        ));
        assert_eq!(id.asserted.as_deref(), Some("+15551234567"));
        assert!(!id.private);
        assert_eq!(id.diversion.as_deref(), Some("+15550001111"));
        // One History-Info entry: not retargeted.
        let id = CallerIdentity::of(&invite("History-Info: <sip:+1555@pbx.example>;index=1\r\n"));
        assert_eq!(id, CallerIdentity::default());
    }

    #[test]
    fn malformed_identity_is_none_never_a_panic() {
        for h in [
            "P-Asserted-Identity: <sip:@>\r\n",
            "P-Asserted-Identity: <<>>\r\n",
            "P-Asserted-Identity: \"unterminated <sip:1@x>\r\n",
            "P-Asserted-Identity: <mailto:a@b>\r\n",
            "P-Asserted-Identity: <tel:>\r\n",
            "P-Asserted-Identity: garbage\r\n",
        ] {
            let id = CallerIdentity::of(&invite(h));
            assert_eq!(id.asserted, None, "{h:?}");
        }
        let long = format!("P-Asserted-Identity: <sip:{}@x>\r\n", "1".repeat(200));
        assert_eq!(CallerIdentity::of(&invite(&long)).asserted, None);
    }
}
