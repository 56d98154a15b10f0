//! `/v1/callbacks` (ask for a call to a visitor, follow it) and
//! `/v1/reports/escalations` (every callback, filtered, as JSON or CSV).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::api::{body, error, store_call};
use super::auth::Role;
use super::HttpState;
use crate::callback::{CallbackError, NewCallback};
use crate::store::CallbackFilter;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/callbacks", post(create))
        .route("/v1/callbacks/{id}", get(one))
        .route("/v1/reports/escalations", get(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Consent {
    given: bool,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCallbackBody {
    phone: String,
    #[serde(default)]
    flow: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    consent: Option<Consent>,
    #[serde(default)]
    context: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    conversation_id: Option<String>,
    #[serde(default)]
    bot: Option<String>,
}

fn refusal(e: CallbackError) -> Response {
    let (status, code) = match &e {
        CallbackError::ConsentMissing => (StatusCode::UNPROCESSABLE_ENTITY, "consent_required"),
        CallbackError::InvalidNumber(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_number"),
        CallbackError::FlowOrTarget | CallbackError::BadFlow(_) | CallbackError::BadTarget => {
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_request")
        }
        CallbackError::TooManyForPhone | CallbackError::TooManyForKey => {
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        }
        CallbackError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        CallbackError::Refused(r) => match r {
            crate::messaging::policy::Refusal::SourceBudget
            | crate::messaging::policy::Refusal::NumberBudget
            | crate::messaging::policy::Refusal::GlobalBudget
            | crate::messaging::policy::Refusal::ConversationAttempts => {
                (StatusCode::TOO_MANY_REQUESTS, r.as_str())
            }
            _ => (StatusCode::UNPROCESSABLE_ENTITY, r.as_str()),
        },
    };
    let mut r = (
        status,
        Json(json!({ "error": e.to_string(), "code": code })),
    )
        .into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
    }
    r
}

async fn create(
    State(s): State<HttpState>,
    h: HeaderMap,
    b: Result<Json<NewCallbackBody>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let req = tri!(body(b));
    if req.phone.len() > 64 || req.context.len() > 50 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "phone or context too large",
        );
    }
    let key = super::auth::key_name(&s, &h);
    let new = NewCallback {
        phone: req.phone,
        flow: req.flow,
        target: req.target,
        consent: req.consent.map(|c| (c.given, c.text)),
        context: req.context,
        conversation_id: req.conversation_id,
        bot: req.bot,
        source: None,
    };
    match s.services.place_callback(new, key) {
        Ok(record) => (StatusCode::CREATED, Json(crate::callback::json(&record))).into_response(),
        Err(e) => refusal(e),
    }
}

async fn one(State(s): State<HttpState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    guard!(s, h, Role::Operator);
    match s.services.callbacks.get(&id).await {
        Some(r) => Json(crate::callback::json(&r)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such callback"),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportQuery {
    #[serde(default)]
    bot: Option<String>,
    #[serde(default)]
    flow: Option<String>,
    /// Unix ms or YYYY-MM-DD (UTC), inclusive.
    #[serde(default)]
    from: Option<String>,
    /// Unix ms (exclusive) or YYYY-MM-DD (UTC, the whole day).
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    outcome: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// Unix ms, or a UTC date (its start; `end_of_day`: the next day's start).
fn parse_when(s: &str, end_of_day: bool) -> Option<SystemTime> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(UNIX_EPOCH + Duration::from_millis(ms));
    }
    let mut parts = s.split('-');
    let (y, m, d) = (
        parts.next()?.parse::<i64>().ok()?,
        parts.next()?.parse::<u32>().ok()?,
        parts.next()?.parse::<u32>().ok()?,
    );
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) || y < 1970 {
        return None;
    }
    let days = days_from_civil(y, m, d) + i64::from(end_of_day);
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(days).ok()? * 86_400))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-11-28T09:30:00Z` from unix ms.
fn iso(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = crate::twiml::calls::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// One CSV field, always quoted (RFC 4180, quotes doubled). Text that a
/// spreadsheet could read as a formula gets a leading `'` (OWASP CSV
/// injection); numbers are ours and stay as they are.
fn csv_field(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => csv_text(""),
        serde_json::Value::String(s) => csv_text(s),
        serde_json::Value::Number(n) => format!("\"{n}\""),
        other => csv_text(&other.to_string()),
    }
}

fn csv_text(text: &str) -> String {
    let defused = if formula_like(text) {
        format!("'{text}")
    } else {
        text.to_string()
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

/// Starts like a formula, also behind spaces or quotes (spreadsheets skip
/// them), or with a fullwidth sign some of them fold to ASCII.
fn formula_like(text: &str) -> bool {
    const TRIGGERS: [char; 10] = ['=', '+', '-', '@', '\t', '\r', '＝', '＋', '－', '＠'];
    text.starts_with(TRIGGERS)
        || text
            .trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '"' | '\''))
            .starts_with(TRIGGERS)
}

const CSV_COLUMNS: &[&str] = &[
    "id",
    "created_at",
    "bot",
    "flow",
    "target",
    "conversation_id",
    "phone",
    "state",
    "outcome",
    "sip_status",
    "wait_secs",
    "talk_secs",
];

async fn report(
    State(s): State<HttpState>,
    h: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Response {
    guard!(s, h, Role::Operator);
    let from = match q.from.as_deref().map(|f| parse_when(f, false)) {
        Some(None) => return error(StatusCode::BAD_REQUEST, "from: unix ms or YYYY-MM-DD"),
        other => other.flatten(),
    };
    let to = match q.to.as_deref().map(|t| parse_when(t, true)) {
        Some(None) => return error(StatusCode::BAD_REQUEST, "to: unix ms or YYYY-MM-DD"),
        other => other.flatten(),
    };
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return error(StatusCode::BAD_REQUEST, "format: json or csv"),
    };
    let filter = CallbackFilter {
        bot: q.bot,
        flow: q.flow,
        from,
        to,
        limit: q.limit.unwrap_or(1000).clamp(1, 10_000),
    };
    let rows = tri!(store_call(s.store.callbacks(&filter)).await);
    let rows: Vec<serde_json::Value> = rows
        .iter()
        // Live ones answer first-hand: the store may be a write behind.
        .map(|r| {
            s.services
                .callbacks
                .live(&r.id)
                .unwrap_or_else(|| r.clone())
        })
        .filter(|r| {
            q.outcome
                .as_deref()
                .is_none_or(|o| crate::callback::outcome(r) == o)
        })
        .map(|r| {
            let mut v = crate::callback::json(&r);
            // Reports travel further than the API: mask the number.
            v["phone"] = json!(crate::mask::phone(&r.phone));
            v
        })
        .collect();
    if !csv {
        return Json(json!({ "escalations": rows })).into_response();
    }
    let mut out = CSV_COLUMNS.join(",");
    out.push_str("\r\n");
    for row in &rows {
        let fields: Vec<String> = CSV_COLUMNS
            .iter()
            .map(|c| match *c {
                "created_at" => csv_text(&row["created_at"].as_u64().map(iso).unwrap_or_default()),
                c => csv_field(&row[c]),
            })
            .collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"escalations.csv\"",
            ),
        ],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_both_ways() {
        let t = parse_when("2026-11-28", false).unwrap();
        let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert_eq!(iso(ms), "2026-11-28T00:00:00Z");
        let end = parse_when("2026-11-28", true).unwrap();
        assert_eq!(end.duration_since(t).unwrap(), Duration::from_secs(86_400));
        assert_eq!(iso(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso(1_764_322_245_000), "2025-11-28T09:30:45Z");
        assert_eq!(
            parse_when("1764322245000", false).unwrap(),
            UNIX_EPOCH + Duration::from_millis(1_764_322_245_000)
        );
        for bad in [
            "2026-13-01",
            "2026-11",
            "yesterday",
            "2026-11-28-1",
            "1969-12-31",
        ] {
            assert!(parse_when(bad, false).is_none(), "{bad}");
        }
    }

    #[test]
    fn csv_fields_are_quoted_and_defused() {
        assert_eq!(csv_field(&json!("plain")), "\"plain\"");
        assert_eq!(csv_field(&json!("a,b")), "\"a,b\"");
        assert_eq!(csv_field(&json!("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field(&json!("line\nbreak")), "\"line\nbreak\"");
        assert_eq!(csv_field(&json!(null)), "\"\"");
        assert_eq!(csv_field(&json!(484)), "\"484\"");
        assert_eq!(csv_field(&json!(-3)), "\"-3\"");
        assert_eq!(csv_field(&json!(true)), "\"true\"");
        // Formula starts, plain or hidden, get a leading quote.
        for (raw, want) in [
            ("=cmd()", "\"'=cmd()\""),
            ("+1+1", "\"'+1+1\""),
            ("-2+3", "\"'-2+3\""),
            ("@SUM(A1)", "\"'@SUM(A1)\""),
            ("\t=1", "\"'\t=1\""),
            ("\r=1", "\"'\r=1\""),
            ("\tplain", "\"'\tplain\""),
            ("  =HYPERLINK(\"x\")", "\"'  =HYPERLINK(\"\"x\"\")\""),
            ("\"=1\"", "\"'\"\"=1\"\"\""),
            ("'@x", "\"''@x\""),
            ("＝cmd()", "\"'＝cmd()\""),
            ("＋1", "\"'＋1\""),
            ("－1", "\"'－1\""),
            ("＠x", "\"'＠x\""),
            ("\u{3000}＝1", "\"'\u{3000}＝1\""),
        ] {
            assert_eq!(csv_field(&json!(raw)), want, "{raw:?}");
        }
        // Signs later in the text are harmless.
        assert_eq!(csv_field(&json!("a=b-c")), "\"a=b-c\"");
        assert_eq!(csv_field(&json!("ana@x.com")), "\"ana@x.com\"");
    }
}
