//! RFC 4028 session timers as plain values and functions: the
//! `Session-Expires` and `Min-SE` headers, who refreshes, and when. The
//! endpoint arms the timers and sends the refreshes.

use std::time::Duration;

use crate::message::Headers;

/// Our policy, from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimerConfig {
    /// The interval we ask for on calls we place, and the most we grant;
    /// 0: we ask for none (we still honour a peer that asks).
    pub session_expires: u32,
    /// The shortest interval we accept (our Min-SE); shorter requests get
    /// 422. RFC 4028 §5 says at least 90; tests use less.
    pub min_se: u32,
}

impl Default for SessionTimerConfig {
    fn default() -> Self {
        SessionTimerConfig {
            session_expires: 1800,
            min_se: 90,
        }
    }
}

/// Who sends the refreshes, as seen from us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// We do.
    Us,
    /// The other side does.
    Peer,
}

/// An agreed session timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// The session interval, in seconds.
    pub interval: u32,
    /// Who refreshes.
    pub refresher: Refresher,
}

impl Session {
    /// When the refresher refreshes: half the interval (§7.4, §8).
    pub fn refresh_after(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval) * 500)
    }

    /// When the other side gives up and sends BYE: the expiry minus the
    /// lesser of 32 s and a third of the interval (§10).
    pub fn bye_after(&self) -> Duration {
        let interval = Duration::from_secs(u64::from(self.interval));
        interval - (interval / 3).min(Duration::from_secs(32))
    }

    /// The `Session-Expires` value for a message of a transaction in which
    /// we are the UAC (`we_send_request`) or the UAS.
    pub fn header_value(&self, we_send_request: bool) -> String {
        let refresher = match (self.refresher, we_send_request) {
            (Refresher::Us, true) | (Refresher::Peer, false) => "uac",
            _ => "uas",
        };
        format!("{};refresher={refresher}", self.interval)
    }
}

/// `refresher=` of a `Session-Expires`: relative to the transaction that
/// carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionSide {
    /// The UAC of the transaction (whoever sent the request).
    Uac,
    /// The UAS of the transaction.
    Uas,
}

/// A parsed `Session-Expires`: `delta-seconds *(;param)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    /// The interval, seconds (saturating at `u32::MAX`).
    pub secs: u32,
    /// Its `refresher` parameter, if given.
    pub refresher: Option<TransactionSide>,
}

/// Why a request's timer headers are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 422 Session Interval Too Small, with our Min-SE.
    TooSmall {
        /// The Min-SE to send back.
        min_se: u32,
    },
    /// 400: a `Session-Expires` or `Min-SE` that does not parse.
    Malformed(&'static str),
}

/// `delta-seconds`: digits only, saturating at `u32::MAX`.
fn delta_seconds(text: &str) -> Option<u32> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros are digits too; more than ten significant ones saturate.
    let significant = text.trim_start_matches('0');
    if significant.len() > 10 {
        return Some(u32::MAX);
    }
    Some(
        significant
            .parse::<u64>()
            .map_or(0, |v| v.min(u64::from(u32::MAX)) as u32),
    )
}

/// Parse a `Session-Expires` value.
pub fn parse_session_expires(value: &str) -> Option<SessionExpires> {
    let mut parts = value.split(';');
    let secs = delta_seconds(parts.next().unwrap_or(""))?;
    let mut refresher = None;
    for param in parts {
        let (name, val) = param.split_once('=').unwrap_or((param, ""));
        if name.trim().eq_ignore_ascii_case("refresher") {
            refresher = Some(match val.trim().to_ascii_lowercase().as_str() {
                "uac" => TransactionSide::Uac,
                "uas" => TransactionSide::Uas,
                _ => return None,
            });
        }
    }
    Some(SessionExpires { secs, refresher })
}

/// Parse a `Min-SE` value: `delta-seconds *(;generic-param)`.
pub fn parse_min_se(value: &str) -> Option<u32> {
    delta_seconds(value.split(';').next().unwrap_or(""))
}

/// Whether a message's Supported or Require lists `option`.
pub fn lists_option(headers: &Headers, option: &str) -> bool {
    ["Supported", "Require"].iter().any(|h| {
        headers
            .tokens(h)
            .iter()
            .any(|t| t.eq_ignore_ascii_case(option))
    })
}

/// The UAS side of a request that may set a session timer (an INVITE,
/// re-INVITE or UPDATE, §9): the timer its 2xx grants, none, or why the
/// request is refused. `current` is the timer in force (mid-dialog);
/// without a `refresher` choice from the peer it keeps its refresher.
pub fn negotiate_as_uas(
    headers: &Headers,
    config: &SessionTimerConfig,
    current: Option<&Session>,
) -> Result<Option<Session>, Refusal> {
    let supports = lists_option(headers, "timer");
    let asked = match headers.get("Session-Expires") {
        None => None,
        Some(v) => Some(parse_session_expires(v).ok_or(Refusal::Malformed("Session-Expires"))?),
    };
    let peer_min = match headers.get("Min-SE") {
        None => 0,
        Some(v) => parse_min_se(v).ok_or(Refusal::Malformed("Min-SE"))?,
    };
    let floor = peer_min.max(config.min_se);
    let (interval, chosen) = match asked {
        Some(se) if se.secs < config.min_se => {
            return Err(Refusal::TooSmall {
                min_se: config.min_se,
            })
        }
        // §9: we may lower what is asked, never below either Min-SE.
        Some(se) => {
            let most = match config.session_expires {
                0 => se.secs,
                ours => se.secs.min(ours),
            };
            let chosen = se.refresher.map(|side| match side {
                TransactionSide::Uac => Refresher::Peer,
                TransactionSide::Uas => Refresher::Us,
            });
            (most.max(floor), chosen)
        }
        None => match current {
            Some(now) => (now.interval, None),
            None if supports && config.session_expires > 0 => {
                (config.session_expires.max(floor), None)
            }
            None => return Ok(None),
        },
    };
    // A peer that doesn't support timers can't refresh: we do (§9).
    let refresher = match (supports, chosen) {
        (false, _) => Refresher::Us,
        (true, Some(r)) => r,
        (true, None) => current.map_or(Refresher::Peer, |c| c.refresher),
    };
    Ok(Some(Session {
        interval,
        refresher,
    }))
}

/// The UAC side: the timer a 2xx to our INVITE, re-INVITE or UPDATE sets
/// (§7.2). No `Session-Expires` turns timers off; one that doesn't parse
/// is taken as none too.
pub fn from_response(headers: &Headers) -> Option<Session> {
    let se = parse_session_expires(headers.get("Session-Expires")?)?;
    Some(Session {
        interval: se.secs.max(1),
        // The UAS must name one; if it didn't, refreshing is the safe side.
        refresher: match se.refresher {
            Some(TransactionSide::Uas) => Refresher::Peer,
            _ => Refresher::Us,
        },
    })
}

/// After a 422 to a request that asked for `asked` seconds: the interval to
/// ask for next (the 422's Min-SE), or `None` when it wouldn't be larger.
pub fn retry_after_422(headers: &Headers, asked: u32) -> Option<u32> {
    let min = parse_min_se(headers.get("Min-SE")?)?;
    (min > asked).then_some(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> Headers {
        let mut h = Headers::new();
        for (k, v) in lines {
            h.push(k, *v);
        }
        h
    }

    const CFG: SessionTimerConfig = SessionTimerConfig {
        session_expires: 1800,
        min_se: 90,
    };

    #[test]
    fn values_parse_liberally_but_not_garbage() {
        assert_eq!(
            parse_session_expires("1800;refresher=uac"),
            Some(SessionExpires {
                secs: 1800,
                refresher: Some(TransactionSide::Uac)
            })
        );
        assert_eq!(
            parse_session_expires(" 90 ; foo=bar ; REFRESHER = UAS"),
            Some(SessionExpires {
                secs: 90,
                refresher: Some(TransactionSide::Uas)
            })
        );
        assert_eq!(
            parse_session_expires("99999999999999").map(|s| s.secs),
            Some(u32::MAX)
        );
        for bad in ["", "soon", "-5", "1800;refresher=both", "1.5", "0x10"] {
            assert_eq!(parse_session_expires(bad), None, "{bad:?}");
        }
        assert_eq!(parse_min_se("90;x=y"), Some(90));
        assert_eq!(parse_min_se("ninety"), None);
    }

    #[test]
    fn uas_grants_copies_lowers_or_refuses() {
        // Asked for 1200 with refresher=uac: granted as is, the peer refreshes.
        let h = headers(&[
            ("Supported", "timer"),
            ("Session-Expires", "1200;refresher=uac"),
        ]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None),
            Ok(Some(Session {
                interval: 1200,
                refresher: Refresher::Peer
            }))
        );
        // Longer than ours: lowered to ours; no refresher named: the peer.
        let h = headers(&[("Supported", "timer"), ("Session-Expires", "7200")]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None),
            Ok(Some(Session {
                interval: 1800,
                refresher: Refresher::Peer
            }))
        );
        // Never below the peer's own Min-SE.
        let h = headers(&[
            ("Supported", "timer"),
            ("Session-Expires", "7200"),
            ("Min-SE", "3600"),
        ]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None).unwrap().unwrap().interval,
            3600
        );
        // Too small: 422 with our minimum.
        let h = headers(&[("Supported", "timer"), ("Session-Expires", "60")]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None),
            Err(Refusal::TooSmall { min_se: 90 })
        );
        let h = headers(&[("Session-Expires", "0")]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None),
            Err(Refusal::TooSmall { min_se: 90 })
        );
        // Garbage: 400.
        let h = headers(&[("Session-Expires", "whenever")]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None),
            Err(Refusal::Malformed("Session-Expires"))
        );
        let h = headers(&[("Session-Expires", "1800"), ("Min-SE", "x")]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None),
            Err(Refusal::Malformed("Min-SE"))
        );
    }

    #[test]
    fn refresher_choice() {
        // A proxy put Session-Expires in for a UAC without timer support:
        // we refresh, whatever the parameter says.
        let h = headers(&[("Session-Expires", "600;refresher=uac")]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None).unwrap().unwrap().refresher,
            Refresher::Us
        );
        // The peer asks us to refresh.
        let h = headers(&[
            ("Require", "timer"),
            ("Session-Expires", "600;refresher=uas"),
        ]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None).unwrap().unwrap().refresher,
            Refresher::Us
        );
        // Supported but no Session-Expires: we ask for ours, the peer refreshes.
        let h = headers(&[("Supported", "100rel, timer")]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, None),
            Ok(Some(Session {
                interval: 1800,
                refresher: Refresher::Peer
            }))
        );
        // Neither: no timer.
        assert_eq!(negotiate_as_uas(&Headers::new(), &CFG, None), Ok(None));
        // Mid-dialog refresh with no refresher: the current one stays.
        let current = Session {
            interval: 600,
            refresher: Refresher::Us,
        };
        let h = headers(&[("Supported", "timer"), ("Session-Expires", "600")]);
        assert_eq!(
            negotiate_as_uas(&h, &CFG, Some(&current)),
            Ok(Some(current))
        );
        // A plain re-INVITE from a peer without timer support keeps the
        // timer, with us refreshing.
        assert_eq!(
            negotiate_as_uas(&Headers::new(), &CFG, Some(&current)),
            Ok(Some(current))
        );
    }

    #[test]
    fn uac_side_and_deadlines() {
        let h = headers(&[("Session-Expires", "90;refresher=uac")]);
        let s = from_response(&h).unwrap();
        assert_eq!(s.refresher, Refresher::Us);
        assert_eq!(s.refresh_after(), Duration::from_secs(45));
        // 90 - min(32, 30) = 60.
        assert_eq!(s.bye_after(), Duration::from_secs(60));
        let long = Session {
            interval: 1800,
            refresher: Refresher::Peer,
        };
        assert_eq!(long.bye_after(), Duration::from_secs(1768));
        assert_eq!(long.header_value(false), "1800;refresher=uac");
        assert_eq!(long.header_value(true), "1800;refresher=uas");
        let h = headers(&[("Session-Expires", "600;refresher=uas")]);
        assert_eq!(from_response(&h).unwrap().refresher, Refresher::Peer);
        assert_eq!(from_response(&Headers::new()), None);
        assert_eq!(
            retry_after_422(&headers(&[("Min-SE", "120")]), 90),
            Some(120)
        );
        assert_eq!(retry_after_422(&headers(&[("Min-SE", "90")]), 90), None);
    }
}
