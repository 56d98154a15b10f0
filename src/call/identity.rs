//! Who is calling: the number a flow, a route and a record see. A trunk we
//! trust (`trust_identity`) is believed about `P-Asserted-Identity`;
//! anyone else's caller is the From user. Either is put in E.164 when it
//! is a valid number (national formats read in the trunk's
//! `default_country`); `Privacy: id` keeps it out of records and logs.

use crate::config::TrunkConfig;
use crate::sip::endpoint::IncomingCall;

/// What a call knows of its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// E.164 when valid, else as received: `{{caller}}`, routes' `caller`.
    pub(crate) number: String,
    /// As received (the asserted identity, or the From user):
    /// `{{caller_raw}}`.
    pub(crate) raw: String,
    /// The number the call was diverted from, normalised like `number`:
    /// `{{diversion}}`.
    pub(crate) diversion: Option<String>,
    /// The caller asked for privacy: records and logs say "anonymous".
    pub(crate) private: bool,
}

/// What records and logs show for a private caller.
pub(crate) const ANONYMOUS: &str = "anonymous";

impl Caller {
    pub(crate) fn of(inc: &IncomingCall, trunk: Option<&TrunkConfig>) -> Caller {
        let trusted = trunk.is_some_and(|t| t.trust_identity);
        let raw = match (&inc.identity.asserted, trusted) {
            (Some(asserted), true) => asserted.clone(),
            _ => inc.caller.clone(),
        };
        let region = trunk
            .and_then(|t| t.default_country.as_deref())
            .and_then(|c| c.parse().ok());
        let e164 = |s: &str| crate::chat::input::phone(s, region).ok();
        Caller {
            number: e164(&raw).unwrap_or_else(|| raw.clone()),
            diversion: inc
                .identity
                .diversion
                .as_deref()
                .map(|d| e164(d).unwrap_or_else(|| d.to_string())),
            private: inc.identity.private,
            raw,
        }
    }

    /// The caller as records and logs may show it.
    pub(crate) fn shown(&self) -> &str {
        if self.private {
            ANONYMOUS
        } else {
            &self.number
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::endpoint::{CallId, CallerIdentity};

    fn incoming(from_user: &str, identity: CallerIdentity) -> IncomingCall {
        IncomingCall {
            call: CallId(1),
            call_id: "c".into(),
            did: "100".into(),
            caller: from_user.into(),
            caller_display: None,
            identity,
            source: "192.0.2.1:5060".parse().unwrap(),
            trunk: Some("carrier".into()),
            user: None,
            has_offer: true,
            web_call: None,
            forwarded_by: None,
            max_forwards: 70,
        }
    }

    fn trunk(trust: bool, country: Option<&str>) -> TrunkConfig {
        TrunkConfig {
            trust_identity: trust,
            default_country: country.map(str::to_string),
            name: "carrier".into(),
            ..TrunkConfig::default()
        }
    }

    #[test]
    fn trusted_trunks_assert_the_caller_others_do_not() {
        let asserted = CallerIdentity {
            asserted: Some("+34600111222".into()),
            private: false,
            diversion: Some("910000000".into()),
        };
        let inc = incoming("anonymous", asserted);
        let c = Caller::of(&inc, Some(&trunk(true, Some("ES"))));
        assert_eq!(c.number, "+34600111222");
        assert_eq!(c.raw, "+34600111222");
        assert_eq!(c.diversion.as_deref(), Some("+34910000000"));
        let c = Caller::of(&inc, Some(&trunk(false, Some("ES"))));
        assert_eq!(c.number, "anonymous", "untrusted: the From user");
        assert_eq!(Caller::of(&inc, None).number, "anonymous");
    }

    #[test]
    fn national_numbers_in_the_trunks_country_and_privacy() {
        let inc = incoming(
            "0612345678",
            CallerIdentity {
                private: true,
                ..CallerIdentity::default()
            },
        );
        let c = Caller::of(&inc, Some(&trunk(false, Some("FR"))));
        assert_eq!(c.number, "+33612345678");
        assert_eq!(c.raw, "0612345678");
        assert_eq!(c.shown(), ANONYMOUS);
        // No country: a national number stays as it came.
        let c = Caller::of(&inc, Some(&trunk(false, None)));
        assert_eq!(c.number, "0612345678");
        // "00" and "+" are international anywhere; junk stays junk.
        for (from, want) in [
            ("0034600111222", "+34600111222"),
            ("+1 (212) 555-0100", "+12125550100"),
            ("alice", "alice"),
            ("+999", "+999"),
        ] {
            let c = Caller::of(&incoming(from, CallerIdentity::default()), None);
            assert_eq!(c.number, want, "{from}");
        }
    }
}
