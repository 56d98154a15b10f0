//! The Twilio-compatible Calls API's model, without I/O: what a request
//! may ask (`To` and `From` checked so nothing reaches the Request-URI but
//! a number or an allowed SIP host), calls as Twilio shows them, and
//! Twilio's paging. src/http/calls_api.rs serves it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::live::{AppTarget, Document};
use super::{AppConfig, Method};

/// A refusal in Twilio's shape: HTTP status, Twilio error code, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: u32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad(code: u32, message: impl Into<String>) -> ApiError {
        ApiError::new(400, code, message)
    }

    /// `{code, message, more_info, status}`, as Twilio answers.
    pub fn json(&self) -> Value {
        json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.status,
        })
    }
}

/// Where an API call goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialTo {
    /// E.164: out through the outbound trunk.
    Number(String),
    /// A SIP URI on an allowed host: straight there.
    Sip(String),
}

impl DialTo {
    pub fn as_str(&self) -> &str {
        match self {
            DialTo::Number(n) | DialTo::Sip(n) => n,
        }
    }
}

/// Characters that could end a URI's user or host part and start
/// parameters, headers or another header line.
fn smuggles(s: &str) -> bool {
    s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || ";?<>\"',&\\%[]{}|^`".contains(c))
}

/// `+` and 2 to 15 digits.
pub fn is_e164(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// `To`: E.164 (spaces, dashes, dots and brackets dropped) or a
/// `sip:user@host[:port]` whose host is in `allowed_hosts` (an entry
/// `host` allows any port, `host:port` that port). Nothing else: no
/// parameters, headers or display names.
pub fn check_to(raw: &str, allowed_hosts: &[String]) -> Result<DialTo, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ApiError::bad(21201, "No 'To' number is specified"));
    }
    let lower = raw.to_ascii_lowercase();
    if lower.starts_with("sip:") || lower.starts_with("sips:") {
        return check_sip_to(raw, allowed_hosts).map(DialTo::Sip);
    }
    let number: String = raw.chars().filter(|c| !" -().".contains(*c)).collect();
    if is_e164(&number) {
        return Ok(DialTo::Number(number));
    }
    Err(ApiError::bad(
        21211,
        format!("Invalid 'To' Phone Number: {}", crate::mask::phone(raw)),
    ))
}

fn check_sip_to(raw: &str, allowed_hosts: &[String]) -> Result<String, ApiError> {
    let refuse = |why: &str| ApiError::bad(13223, format!("Invalid 'To' SIP URI: {why}"));
    if smuggles(raw) || raw.len() > 256 {
        return Err(refuse(
            "only sip:user@host[:port], without parameters or headers",
        ));
    }
    let uri = crate::sip::message::Uri::parse(raw).map_err(|_| refuse("not a SIP URI"))?;
    if uri.user.as_deref().is_none_or(str::is_empty)
        || uri.password.is_some()
        || uri.headers.is_some()
        || uri.host.is_empty()
    {
        return Err(refuse("only sip:user@host[:port]"));
    }
    let host = uri.host.to_ascii_lowercase();
    let with_port = uri.port.map(|p| format!("{host}:{p}"));
    let allowed = allowed_hosts.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        a == host || Some(&a) == with_port.as_ref()
    });
    if !allowed {
        return Err(refuse(&format!(
            "host {host} is not in [twiml] api_sip_hosts"
        )));
    }
    Ok(raw.to_string())
}

/// `From`: E.164 or a SIP user name (`[A-Za-z0-9+._-]`, 1 to 64).
pub fn check_from(raw: &str) -> Result<String, ApiError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ApiError::bad(21213, "No 'From' number is specified"));
    }
    let ok = raw.len() <= 64
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+._-".contains(c));
    if !ok {
        return Err(ApiError::bad(
            21212,
            "Invalid 'From' Phone Number: a number or a SIP user name only",
        ));
    }
    Ok(raw.to_string())
}

/// An absolute http(s) URL (Twilio's 21205 otherwise).
fn check_url(name: &str, raw: &str) -> Result<reqwest::Url, ApiError> {
    match reqwest::Url::parse(raw.trim()) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => Ok(u),
        _ => Err(ApiError::bad(21205, format!("{name} is not a valid URL"))),
    }
}

fn method_of(name: &str, raw: Option<&str>) -> Result<Method, ApiError> {
    match raw {
        None | Some("") => Ok(Method::Post),
        Some(m) => Method::parse(m)
            .ok_or_else(|| ApiError::bad(21208, format!("{name} must be GET or POST"))),
    }
}

/// The largest inline `Twiml` taken (Twilio's own limit is 4000 chars).
pub const MAX_INLINE_TWIML: usize = 4000;

fn inline_twiml(raw: &str) -> Result<String, ApiError> {
    if raw.len() > MAX_INLINE_TWIML {
        return Err(ApiError::bad(
            21232,
            format!("Twiml is over {MAX_INLINE_TWIML} characters"),
        ));
    }
    // Checked now, so a bad document is refused before anything is dialled.
    super::parse::parse(raw).map_err(|e| ApiError::bad(12100, format!("Twiml: {e}")))?;
    Ok(raw.to_string())
}

/// A call the API asked for, checked.
#[derive(Debug, Clone)]
pub struct NewCall {
    pub sid: String,
    pub to: DialTo,
    pub from: String,
    /// Its app: `url` or `twiml`, fallback and status callback.
    pub app: AppConfig,
    /// How long it may ring.
    pub timeout: Duration,
}

/// A `POST Calls.json` form, checked.
pub fn new_call(form: &[(String, String)], allowed_hosts: &[String]) -> Result<NewCall, ApiError> {
    let get = |k: &str| crate::messaging::form::get(form, k);
    let to = check_to(get("To").unwrap_or(""), allowed_hosts)?;
    let from = check_from(get("From").unwrap_or(""))?;
    let method = method_of("Method", get("Method"))?;
    let (url, twiml) = match (get("Url"), get("Twiml")) {
        (Some(u), None) if !u.is_empty() => (check_url("Url", u)?.to_string(), None),
        (None, Some(t)) if !t.is_empty() => (String::new(), Some(inline_twiml(t)?)),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(21205, "give one of Url and Twiml, not both"))
        }
        _ => return Err(ApiError::bad(21205, "Url or Twiml is required")),
    };
    let fallback_url = match get("FallbackUrl").filter(|u| !u.is_empty()) {
        Some(u) => Some(check_url("FallbackUrl", u)?.to_string()),
        None => None,
    };
    let status_callback = match get("StatusCallback").filter(|u| !u.is_empty()) {
        Some(u) => Some(check_url("StatusCallback", u)?.to_string()),
        None => None,
    };
    // Repeated (as the helper libraries send it) or space-separated.
    let mut events: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "StatusCallbackEvent")
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_ascii_lowercase))
        .collect();
    if let Some(bad) = events
        .iter()
        .find(|e| !super::status::EVENTS.contains(&e.as_str()))
    {
        return Err(ApiError::bad(
            21626,
            format!(
                "StatusCallbackEvent {bad:?}: use {}",
                super::status::EVENTS.join(", ")
            ),
        ));
    }
    if events.is_empty() {
        // Twilio's default: only completed.
        events.push("completed".into());
    }
    let timeout = match get("Timeout").filter(|t| !t.is_empty()) {
        None => 60,
        Some(t) => t
            .trim()
            .parse::<u64>()
            .map_err(|_| ApiError::bad(21236, "Timeout must be a number of seconds"))?
            .clamp(5, 600),
    };
    let app = AppConfig {
        url,
        method: method_name(method),
        fallback_url,
        fallback_method: method_name(method_of("FallbackMethod", get("FallbackMethod"))?),
        status_callback,
        status_callback_method: method_name(method_of(
            "StatusCallbackMethod",
            get("StatusCallbackMethod"),
        )?),
        status_callback_event: events,
        twiml,
    };
    Ok(NewCall {
        sid: super::new_sid("CA"),
        to,
        from,
        app,
        timeout: Duration::from_secs(timeout),
    })
}

fn method_name(m: Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Post => "POST".into(),
    }
}

/// What `POST Calls/{Sid}.json` asks.
#[derive(Debug, Clone)]
pub enum Change {
    /// Run this document now, stopping the verb that runs.
    Redirect(AppTarget),
    /// `Status=completed` (any call) or `canceled` (only one still ringing).
    End { ringing_only: bool },
}

pub fn change(form: &[(String, String)]) -> Result<Change, ApiError> {
    let get = |k: &str| crate::messaging::form::get(form, k).filter(|v| !v.is_empty());
    let method = method_of("Method", get("Method"))?;
    match (get("Url"), get("Twiml"), get("Status")) {
        (Some(u), None, None) => Ok(Change::Redirect(AppTarget {
            document: Document::Url(check_url("Url", u)?),
            method,
        })),
        (None, Some(t), None) => Ok(Change::Redirect(AppTarget {
            document: Document::Inline(inline_twiml(t)?.into()),
            method,
        })),
        (None, None, Some("completed")) => Ok(Change::End {
            ringing_only: false,
        }),
        (None, None, Some("canceled")) => Ok(Change::End { ringing_only: true }),
        (None, None, Some(other)) => Err(ApiError::bad(
            21218,
            format!("Status {other:?}: use completed or canceled"),
        )),
        (None, None, None) => Err(ApiError::bad(21205, "give Url, Twiml or Status")),
        _ => Err(ApiError::bad(21205, "give one of Url, Twiml and Status")),
    }
}

/// What `POST Queues/{Sid}/Members/{CallSid}.json` asks: the document
/// the dequeued caller runs (`Url`, required; `Method`, POST unless GET).
pub fn dequeue_target(form: &[(String, String)]) -> Result<AppTarget, ApiError> {
    let get = |k: &str| crate::messaging::form::get(form, k).filter(|v| !v.is_empty());
    let method = method_of("Method", get("Method"))?;
    let url = get("Url").ok_or_else(|| ApiError::bad(21205, "Url is required"))?;
    Ok(AppTarget {
        document: Document::Url(check_url("Url", url)?),
        method,
    })
}

/// A call as the API shows it, live or from its record.
#[derive(Debug, Clone, PartialEq)]
pub struct CallView {
    pub sid: String,
    pub from: String,
    pub to: String,
    /// "inbound" or "outbound-api" (our other outbound legs: "outbound-dial").
    pub direction: &'static str,
    /// Twilio's: queued, ringing, in-progress, completed, busy, failed,
    /// no-answer, canceled.
    pub status: &'static str,
    pub created: SystemTime,
    pub answered: Option<SystemTime>,
    pub ended: Option<SystemTime>,
    /// The SIP Call-ID, for our own API.
    pub call_id: String,
}

/// Twilio's direction for a call of ours.
pub fn direction(ours: &str, api: bool) -> &'static str {
    match (ours, api) {
        ("inbound", _) => "inbound",
        (_, true) => "outbound-api",
        _ => "outbound-dial",
    }
}

impl CallView {
    /// From a call record (CDR).
    pub fn of_record(r: &crate::store::CallRecord) -> Option<CallView> {
        let sid = r.vars.get(super::CALL_SID_VAR)?.clone();
        let api = r.vars.contains_key(API_VAR);
        let status = match r.vars.get(STATUS_VAR).map(String::as_str) {
            Some(s) => final_status_name(s),
            None if r.answered_at.is_some() => "completed",
            None => match (r.outcome.as_str(), r.sip_status) {
                ("rejected", Some(486 | 600 | 603)) => "busy",
                ("timeout", _) => "no-answer",
                ("cancelled", _) => "canceled",
                _ => "failed",
            },
        };
        Some(CallView {
            sid,
            from: r.caller.clone(),
            to: r.did.clone(),
            direction: direction(r.direction, api),
            status,
            created: r.started_at,
            answered: r.answered_at,
            ended: Some(r.ended_at),
            call_id: r.call_id.clone(),
        })
    }

    /// Twilio's call resource.
    pub fn json(&self, account_sid: &str) -> Value {
        let duration = self.answered.zip(self.ended).map(|(a, e)| {
            e.duration_since(a)
                .unwrap_or_default()
                .as_secs()
                .to_string()
        });
        let uri = format!("/2010-04-01/Accounts/{account_sid}/Calls/{}.json", self.sid);
        json!({
            "sid": self.sid,
            "account_sid": account_sid,
            "api_version": "2010-04-01",
            "to": self.to,
            "to_formatted": self.to,
            "from": self.from,
            "from_formatted": self.from,
            "status": self.status,
            "direction": self.direction,
            "date_created": rfc2822(self.created),
            "date_updated": rfc2822(self.ended.or(self.answered).unwrap_or(self.created)),
            "start_time": self.answered.map(rfc2822),
            "end_time": self.ended.map(rfc2822),
            "duration": duration,
            "answered_by": null,
            "caller_name": null,
            "forwarded_from": null,
            "parent_call_sid": null,
            "phone_number_sid": null,
            "group_sid": null,
            "trunk_sid": null,
            "price": null,
            "price_unit": "USD",
            "queue_time": "0",
            "annotation": null,
            "uri": uri,
            "subresource_uris": {},
        })
    }
}

/// The record variable marking a call the Calls API placed.
pub const API_VAR: &str = "twilio_api";
/// The record variable holding an app call's final Twilio status.
pub const STATUS_VAR: &str = "twilio_status";

/// A stored status name as the static string the view holds.
fn final_status_name(s: &str) -> &'static str {
    const NAMES: [&str; 8] = [
        "queued",
        "ringing",
        "in-progress",
        "completed",
        "busy",
        "failed",
        "no-answer",
        "canceled",
    ];
    NAMES.iter().find(|n| **n == s).copied().unwrap_or("failed")
}

/// RFC 2822 in UTC, as Twilio writes dates: `Sat, 05 Dec 2026 14:54:58 +0000`.
pub fn rfc2822(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} +0000",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(m as usize).saturating_sub(1) % 12],
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day since 1970-01-01 (H. Hinnant's
/// algorithm).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// A list request: Twilio's paging and filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub page_size: usize,
    pub page: usize,
    /// Where the page starts (from `PageToken`, else page × size).
    pub offset: usize,
    pub to: Option<String>,
    pub from: Option<String>,
    pub status: Option<String>,
}

/// Twilio's default page and its largest.
pub const PAGE_SIZE: usize = 50;
pub const MAX_PAGE_SIZE: usize = 1000;

impl ListQuery {
    pub fn parse(query: &str) -> ListQuery {
        let pairs = crate::messaging::form::decode(query);
        let get = |k: &str| crate::messaging::form::get(&pairs, k).filter(|v| !v.is_empty());
        let page_size = get("PageSize")
            .and_then(|v| v.parse().ok())
            .unwrap_or(PAGE_SIZE)
            .clamp(1, MAX_PAGE_SIZE);
        let page = get("Page").and_then(|v| v.parse().ok()).unwrap_or(0usize);
        let offset = get("PageToken")
            .and_then(|t| t.strip_prefix("PA"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| page.saturating_mul(page_size));
        ListQuery {
            page_size,
            page,
            offset,
            to: get("To").map(str::to_string),
            from: get("From").map(str::to_string),
            status: get("Status").map(str::to_string),
        }
    }

    fn keeps(&self, c: &CallView) -> bool {
        self.to.as_ref().is_none_or(|t| *t == c.to)
            && self.from.as_ref().is_none_or(|f| *f == c.from)
            && self.status.as_ref().is_none_or(|s| *s == c.status)
    }

    /// The query string of page `page` (starting at `offset`).
    fn uri(&self, base: &str, page: usize, offset: Option<usize>) -> String {
        let mut pairs = vec![("PageSize".to_string(), self.page_size.to_string())];
        for (k, v) in [
            ("To", &self.to),
            ("From", &self.from),
            ("Status", &self.status),
        ] {
            if let Some(v) = v {
                pairs.push((k.into(), v.clone()));
            }
        }
        pairs.push(("Page".into(), page.to_string()));
        if let Some(offset) = offset {
            pairs.push(("PageToken".into(), format!("PA{offset}")));
        }
        format!("{base}?{}", crate::messaging::form::encode(&pairs))
    }
}

/// One page of `calls` (newest first after filtering), with Twilio's
/// paging keys; `base` is the list's path.
pub fn page(mut calls: Vec<CallView>, q: &ListQuery, base: &str, account_sid: &str) -> Value {
    calls.retain(|c| q.keeps(c));
    calls.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| b.sid.cmp(&a.sid)));
    page_of(&calls, |c| c.json(account_sid), "calls", q, base)
}

/// One page of `items` (in their order) under `key`, with Twilio's paging
/// keys; `base` is the list's path. Only the page's items are rendered.
pub fn page_of<T>(
    items: &[T],
    render: impl Fn(&T) -> Value,
    key: &str,
    q: &ListQuery,
    base: &str,
) -> Value {
    let start = q.offset.min(items.len());
    let end = start.saturating_add(q.page_size).min(items.len());
    let next = (end < items.len()).then(|| q.uri(base, q.page + 1, Some(end)));
    let previous = (start > 0).then(|| {
        q.uri(
            base,
            q.page.saturating_sub(1),
            Some(start.saturating_sub(q.page_size)),
        )
    });
    let shown: Vec<Value> = items
        .get(start..end)
        .unwrap_or_default()
        .iter()
        .map(render)
        .collect();
    json!({
        key: shown,
        "first_page_uri": q.uri(base, 0, None),
        "next_page_uri": next,
        "previous_page_uri": previous,
        "page": q.page,
        "page_size": q.page_size,
        "start": start,
        "end": end.saturating_sub(1).max(start),
        "uri": q.uri(base, q.page, (q.offset > 0).then_some(q.offset)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::form::owned as form;

    fn hosts() -> Vec<String> {
        vec!["pbx.example.com".into(), "127.0.0.1:5070".into()]
    }

    #[test]
    fn to_is_a_number_or_a_sip_uri_on_an_allowed_host() {
        assert_eq!(
            check_to("+1 (201) 555-0123", &hosts()),
            Ok(DialTo::Number("+12015550123".into()))
        );
        assert_eq!(
            check_to("sip:alice@pbx.example.com", &hosts()),
            Ok(DialTo::Sip("sip:alice@pbx.example.com".into()))
        );
        assert!(check_to("sip:alice@pbx.example.com:5080", &hosts()).is_ok());
        assert!(check_to("sip:alice@127.0.0.1:5070", &hosts()).is_ok());
        for bad in [
            "sip:x@evil.example;transport=tcp",
            "sip:x@pbx.example.com;transport=tcp",
            "sip:x@pbx.example.com?Route=%3Csip:evil%3E",
            "sip:x@pbx.example.com>;foo",
            "sip:x@evil.example",
            "sip:x@127.0.0.1:5071",
            "sip:pbx.example.com",
            "sip:a b@pbx.example.com",
            "+1234>;foo",
            "+1234@evil.example",
            "12015550123",
            "+",
            "tel:+12015550123",
        ] {
            let e = check_to(bad, &hosts()).expect_err(bad);
            assert_eq!(e.status, 400, "{bad}");
            assert!([21211, 13223].contains(&e.code), "{bad}: {e:?}");
        }
        assert_eq!(check_to("", &hosts()).map_err(|e| e.code), Err(21201));
    }

    #[test]
    fn from_is_a_number_or_a_user_name() {
        assert_eq!(check_from("+15550001111").as_deref(), Ok("+15550001111"));
        assert_eq!(check_from("crossline.bot").as_deref(), Ok("crossline.bot"));
        for bad in ["a@b", "x>;tag=1", "\"Eve\" <sip:x@y>", "a\r\nVia: x", ""] {
            assert!(check_from(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_new_call_takes_twilios_parameters() {
        let c = new_call(
            &form(&[
                ("To", "+12015550123"),
                ("From", "+15550001111"),
                ("Url", "http://app.example/voice"),
                ("StatusCallback", "http://app.example/status"),
                ("StatusCallbackEvent", "initiated"),
                ("StatusCallbackEvent", "ringing answered"),
                ("Timeout", "2"),
            ]),
            &hosts(),
        )
        .unwrap();
        assert!(super::super::is_call_sid(&c.sid));
        assert_eq!(
            c.app.status_callback_event,
            ["initiated", "ringing", "answered"]
        );
        assert_eq!(c.timeout, Duration::from_secs(5), "at least 5 s");
        let inline = new_call(
            &form(&[
                ("To", "+12015550123"),
                ("From", "x"),
                ("Twiml", "<Response><Say>Hi</Say></Response>"),
            ]),
            &hosts(),
        )
        .unwrap();
        assert!(inline.app.twiml.is_some() && inline.app.url.is_empty());
        assert_eq!(inline.app.status_callback_event, ["completed"]);
        for (bad, code) in [
            (vec![("To", "+12015550123"), ("From", "x")], 21205),
            (
                vec![
                    ("To", "+12015550123"),
                    ("From", "x"),
                    ("Url", "file:///etc/passwd"),
                ],
                21205,
            ),
            (
                vec![
                    ("To", "+12015550123"),
                    ("From", "x"),
                    ("Twiml", "<Response><Shout/></Response>"),
                ],
                12100,
            ),
            (
                vec![
                    ("To", "+12015550123"),
                    ("From", "x"),
                    ("Url", "http://a/"),
                    ("StatusCallbackEvent", "all"),
                ],
                21626,
            ),
        ] {
            assert_eq!(
                new_call(&form(&bad), &hosts())
                    .map(|_| ())
                    .map_err(|e| e.code),
                Err(code)
            );
        }
    }

    #[test]
    fn changes_are_a_redirect_or_an_end() {
        assert!(matches!(
            change(&form(&[
                ("Url", "http://app.example/next"),
                ("Method", "GET")
            ])),
            Ok(Change::Redirect(AppTarget {
                method: Method::Get,
                ..
            }))
        ));
        assert!(matches!(
            change(&form(&[("Status", "canceled")])),
            Ok(Change::End { ringing_only: true })
        ));
        assert!(matches!(
            change(&form(&[("Status", "completed")])),
            Ok(Change::End {
                ringing_only: false
            })
        ));
        assert!(change(&form(&[("Status", "paused")])).is_err());
        assert!(change(&form(&[])).is_err());
    }

    fn view(n: u64) -> CallView {
        CallView {
            sid: format!("CA{n:032x}"),
            from: "+15550001111".into(),
            to: if n % 2 == 0 {
                "+12015550123".into()
            } else {
                "+12015550199".into()
            },
            direction: "outbound-api",
            status: "completed",
            created: UNIX_EPOCH + Duration::from_secs(1_000 + n),
            answered: None,
            ended: None,
            call_id: String::new(),
        }
    }

    #[test]
    fn pages_follow_twilios_shape() {
        let calls: Vec<CallView> = (0..5).map(view).collect();
        let base = "/2010-04-01/Accounts/AC1/Calls.json";
        let q = ListQuery::parse("PageSize=2");
        let first = page(calls.clone(), &q, base, "AC1");
        assert_eq!(first["calls"].as_array().map(Vec::len), Some(2));
        assert_eq!(first["calls"][0]["sid"], view(4).sid, "newest first");
        let next = first["next_page_uri"].as_str().unwrap();
        let q2 = ListQuery::parse(next.split_once('?').unwrap().1);
        assert_eq!(q2.offset, 2);
        let second = page(calls.clone(), &q2, base, "AC1");
        assert_eq!(second["calls"][0]["sid"], view(2).sid);
        let q3 = ListQuery::parse(
            second["next_page_uri"]
                .as_str()
                .unwrap()
                .split_once('?')
                .unwrap()
                .1,
        );
        let third = page(calls.clone(), &q3, base, "AC1");
        assert_eq!(third["calls"].as_array().map(Vec::len), Some(1));
        assert!(third["next_page_uri"].is_null());
        let evens = page(calls, &ListQuery::parse("To=%2B12015550123"), base, "AC1");
        assert_eq!(evens["calls"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn dates_are_rfc_2822() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_482_498);
        assert_eq!(rfc2822(t), "Sat, 05 Dec 2026 14:54:58 +0000");
        assert_eq!(rfc2822(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
    }
}
