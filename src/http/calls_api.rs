//! The Twilio-compatible Calls API at `/2010-04-01/Accounts/{AccountSid}/
//! Calls.json` and `/Calls/{CallSid}.json` (HTTP Basic: `[twiml]`'s
//! account SID and auth token, form bodies, Twilio's JSON and errors), and
//! the same operations under `/v1/calls` with our own bearer tokens.
//!
//! Calls are placed, ended and listed by call control (over the command
//! channel); a redirect goes straight to the call's running app. Listing
//! merges the live calls with the call records in the store.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{body, store_call};
use super::auth::Role;
use super::guard::ClientIp;
use super::HttpState;
use crate::callback::CallbackError;
use crate::recording::CallCommand;
use crate::telemetry::names;
use crate::twiml::calls::{self, ApiError, CallView, Change, DialTo, ListQuery, NewCall};

/// Call records a list or a fetch looks through (newest first).
const RECORDS_SEARCHED: usize = 1000;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Calls.json",
            get(twilio_list).post(twilio_create),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Calls/{sid}",
            get(twilio_fetch).post(twilio_modify),
        )
}

pub(super) fn count(op: &'static str, outcome: &'static str) {
    metrics::counter!(names::CALLS_API_REQUESTS, "op" => op, "outcome" => outcome).increment(1);
}

/// How a refused request is counted.
pub(super) fn outcome(e: &ApiError) -> &'static str {
    if e.status == 404 {
        "not_found"
    } else {
        "refused"
    }
}

pub(super) fn twilio_error(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut r = (status, Json(e.json())).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"Twilio API\""),
        );
    }
    r
}

fn v1_error(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(json!({ "error": e.message, "code": e.code }))).into_response()
}

/// The account's credentials in HTTP Basic, compared in constant time
/// (hashes of both); the path must name the same account.
// A refusal is a whole Response; it is the cold path.
#[allow(clippy::result_large_err)]
pub(super) fn basic_auth(s: &HttpState, h: &HeaderMap, account: &str) -> Result<(), Response> {
    let apps = &s.services.twiml;
    let Some(token) = apps.auth_token().filter(|_| !apps.account_sid.is_empty()) else {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => "disabled").increment(1);
        return Err(twilio_error(&ApiError::new(
            403,
            20003,
            "the REST API (Calls, Queues) is disabled: set [twiml] account_sid and auth_token",
        )));
    };
    let unauthorized = |reason: &'static str| {
        metrics::counter!(names::HTTP_AUTH_FAILURES, "reason" => reason).increment(1);
        twilio_error(&ApiError::new(401, 20003, "Authenticate"))
    };
    let Some((user, password)) = basic(h) else {
        return Err(unauthorized("missing"));
    };
    let same = |a: &str, b: &str| {
        crate::chat::same_hash(&crate::chat::secret_hash(a), &crate::chat::secret_hash(b))
    };
    // Both compared, always: the time taken says nothing of which was wrong.
    let user_ok = same(&user, &apps.account_sid);
    let password_ok = same(&password, token);
    if !(user_ok & password_ok) {
        return Err(unauthorized("wrong"));
    }
    if account != apps.account_sid {
        return Err(twilio_error(&ApiError::new(
            404,
            20404,
            "The requested resource was not found",
        )));
    }
    Ok(())
}

/// `Authorization: Basic base64(user:password)`.
fn basic(h: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = h.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

pub(super) fn form_of(b: &Bytes) -> Vec<(String, String)> {
    crate::messaging::form::decode(&String::from_utf8_lossy(b))
}

fn client(ip: Option<Extension<ClientIp>>) -> Option<std::net::IpAddr> {
    ip.map(|Extension(ClientIp(ip))| ip)
}

fn base_path(account: &str) -> String {
    format!("/2010-04-01/Accounts/{account}/Calls.json")
}

/// The sid in `/Calls/{sid}` (`CA….json`).
fn sid_of(path: &str) -> Option<&str> {
    path.strip_suffix(".json")
        .filter(|s| crate::twiml::is_call_sid(s))
}

// ---- the operations, shared by both APIs ----------------------------

/// Check the limits and have call control dial; the call as created.
async fn create(
    s: &HttpState,
    form: &[(String, String)],
    source: Option<std::net::IpAddr>,
) -> Result<CallView, ApiError> {
    let hosts = &s.services.twiml.api_sip_hosts;
    let new: NewCall = calls::new_call(form, hosts)?;
    let phone = match &new.to {
        DialTo::Number(n) => Some(n.as_str()),
        DialTo::Sip(_) => None,
    };
    let account = s.services.twiml.account_sid.clone();
    s.services
        .callbacks
        .admit_api_call(phone, &account, source)
        .map_err(limit_error)?;
    let view = CallView {
        sid: new.sid.clone(),
        from: new.from.clone(),
        to: new.to.as_str().to_string(),
        direction: "outbound-api",
        status: "queued",
        created: std::time::SystemTime::now(),
        answered: None,
        ended: None,
        call_id: String::new(),
    };
    tracing::info!(sid = %new.sid, to = %crate::mask::phone(new.to.as_str()), "Calls API: new call");
    let placed = s
        .services
        .recordings
        .ask(|reply| CallCommand::Dial {
            call: Box::new(new),
            reply,
        })
        .await
        .unwrap_or_else(|| Err("the gateway is stopping".into()));
    match placed {
        Ok(()) => Ok(view),
        Err(why) => Err(ApiError::new(
            503,
            20503,
            format!("the call cannot be placed: {why}"),
        )),
    }
}

fn limit_error(e: CallbackError) -> ApiError {
    use crate::messaging::policy::Refusal;
    match e {
        CallbackError::TooManyForKey | CallbackError::TooManyForPhone => {
            ApiError::new(429, 20429, e.to_string())
        }
        CallbackError::Refused(
            Refusal::SourceBudget
            | Refusal::NumberBudget
            | Refusal::GlobalBudget
            | Refusal::ConversationAttempts,
        ) => ApiError::new(429, 20429, e.to_string()),
        CallbackError::Refused(Refusal::NotAPhoneNumber) => {
            ApiError::bad(21211, "Invalid 'To' Phone Number")
        }
        CallbackError::Refused(r) => {
            ApiError::bad(21215, format!("not permitted to call: {}", r.as_str()))
        }
        CallbackError::Unavailable(_) => ApiError::new(503, 20503, e.to_string()),
        other => ApiError::bad(21211, other.to_string()),
    }
}

/// The live calls, then the stored ones not live any more.
async fn all_calls(s: &HttpState) -> Result<Vec<CallView>, Response> {
    let mut views = s
        .services
        .recordings
        .ask(|reply| CallCommand::List { reply })
        .await
        .unwrap_or_default();
    let records = store_call(s.store.recent_calls(RECORDS_SEARCHED)).await?;
    for r in &records {
        if let Some(v) = CallView::of_record(r) {
            if !views.iter().any(|l| l.sid == v.sid) {
                views.push(v);
            }
        }
    }
    Ok(views)
}

async fn find(s: &HttpState, sid: &str) -> Result<Option<CallView>, Response> {
    Ok(all_calls(s).await?.into_iter().find(|c| c.sid == sid))
}

/// Redirect or end the call; the call as it is now.
async fn modify(s: &HttpState, sid: &str, form: &[(String, String)]) -> Result<CallView, ApiError> {
    let not_found = || {
        ApiError::new(
            404,
            20404,
            format!("The requested resource /Calls/{sid}.json was not found"),
        )
    };
    match calls::change(form)? {
        Change::Redirect(target) => {
            if s.services.twiml.live.redirect(sid, target) {
                let view = find(s, sid).await.ok().flatten().ok_or_else(not_found)?;
                return Ok(view);
            }
            match find(s, sid).await.ok().flatten() {
                // Twilio's 21220: only a call in progress can be redirected.
                Some(v) if v.ended.is_none() => Err(ApiError::bad(
                    21220,
                    "Call is not in-progress. Cannot redirect.",
                )),
                Some(_) => Err(ApiError::bad(
                    21220,
                    "Call is not in-progress. Cannot redirect.",
                )),
                None => Err(not_found()),
            }
        }
        Change::End { ringing_only } => {
            let sid = sid.to_string();
            let ended = s
                .services
                .recordings
                .ask(|reply| CallCommand::End {
                    sid: sid.clone(),
                    ringing_only,
                    reply,
                })
                .await
                .flatten();
            match ended {
                Some(view) => Ok(view),
                // Already over: as it ended.
                None => find(s, &sid).await.ok().flatten().ok_or_else(not_found),
            }
        }
    }
}

// ---- Twilio's paths ---------------------------------------------------

async fn twilio_create(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(account): Path<String>,
    ip: Option<Extension<ClientIp>>,
    b: Bytes,
) -> Response {
    if let Err(r) = basic_auth(&s, &h, &account) {
        count("create", "unauthorized");
        return r;
    }
    match create(&s, &form_of(&b), client(ip)).await {
        Ok(view) => {
            count("create", "ok");
            (StatusCode::CREATED, Json(view.json(&account))).into_response()
        }
        Err(e) => {
            count("create", "refused");
            tracing::info!(code = e.code, error = %e.message, "Calls API: call refused");
            twilio_error(&e)
        }
    }
}

async fn twilio_modify(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((account, path)): Path<(String, String)>,
    b: Bytes,
) -> Response {
    if let Err(r) = basic_auth(&s, &h, &account) {
        count("modify", "unauthorized");
        return r;
    }
    let Some(sid) = sid_of(&path) else {
        count("modify", "not_found");
        return twilio_error(&ApiError::new(
            404,
            20404,
            "The requested resource was not found",
        ));
    };
    match modify(&s, sid, &form_of(&b)).await {
        Ok(view) => {
            count("modify", "ok");
            Json(view.json(&account)).into_response()
        }
        Err(e) => {
            count("modify", outcome(&e));
            twilio_error(&e)
        }
    }
}

async fn twilio_fetch(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((account, path)): Path<(String, String)>,
) -> Response {
    if let Err(r) = basic_auth(&s, &h, &account) {
        count("fetch", "unauthorized");
        return r;
    }
    let found = match sid_of(&path) {
        Some(sid) => tri!(find(&s, sid).await),
        None => None,
    };
    match found {
        Some(view) => {
            count("fetch", "ok");
            Json(view.json(&account)).into_response()
        }
        None => {
            count("fetch", "not_found");
            twilio_error(&ApiError::new(
                404,
                20404,
                "The requested resource was not found",
            ))
        }
    }
}

async fn twilio_list(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = basic_auth(&s, &h, &account) {
        count("list", "unauthorized");
        return r;
    }
    let q = ListQuery::parse(query.as_deref().unwrap_or(""));
    let views = tri!(all_calls(&s).await);
    count("list", "ok");
    Json(calls::page(views, &q, &base_path(&account), &account)).into_response()
}

// ---- /v1 -----------------------------------------------------------------

/// `POST /v1/calls`: Twilio's parameters in snake case, as JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewCallBody {
    to: String,
    from: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    twiml: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    fallback_url: Option<String>,
    #[serde(default)]
    status_callback: Option<String>,
    #[serde(default)]
    status_callback_method: Option<String>,
    #[serde(default)]
    status_callback_event: Vec<String>,
    #[serde(default)]
    timeout: Option<u64>,
}

/// `POST /v1/calls/{call_id}` (a CallSid): one of url, twiml, status.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangeBody {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    twiml: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

/// Named values as the Twilio form names them (None left out).
fn pairs(fields: &[(&str, Option<String>)]) -> Vec<(String, String)> {
    fields
        .iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v)))
        .collect()
}

/// The call as our API shows it: Twilio's resource and the SIP Call-ID.
fn v1_json(view: &CallView, account: &str) -> Value {
    let mut v = view.json(account);
    v["call_id"] = json!(view.call_id);
    v
}

pub(super) async fn v1_create(
    State(s): State<HttpState>,
    h: HeaderMap,
    ip: Option<Extension<ClientIp>>,
    b: Result<Json<NewCallBody>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let req = tri!(body(b));
    let mut form = pairs(&[
        ("To", Some(req.to)),
        ("From", Some(req.from)),
        ("Url", req.url),
        ("Twiml", req.twiml),
        ("Method", req.method),
        ("FallbackUrl", req.fallback_url),
        ("StatusCallback", req.status_callback),
        ("StatusCallbackMethod", req.status_callback_method),
        ("Timeout", req.timeout.map(|t| t.to_string())),
    ]);
    for e in req.status_callback_event {
        form.push(("StatusCallbackEvent".into(), e));
    }
    let account = s.services.twiml.account_sid.clone();
    match create(&s, &form, client(ip)).await {
        Ok(view) => {
            count("create", "ok");
            (StatusCode::CREATED, Json(v1_json(&view, &account))).into_response()
        }
        Err(e) => {
            count("create", "refused");
            v1_error(&e)
        }
    }
}

pub(super) async fn v1_modify(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(sid): Path<String>,
    b: Result<Json<ChangeBody>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let req = tri!(body(b));
    let form = pairs(&[
        ("Url", req.url),
        ("Twiml", req.twiml),
        ("Method", req.method),
        ("Status", req.status),
    ]);
    let account = s.services.twiml.account_sid.clone();
    match modify(&s, &sid, &form).await {
        Ok(view) => {
            count("modify", "ok");
            Json(v1_json(&view, &account)).into_response()
        }
        Err(e) => {
            count("modify", outcome(&e));
            v1_error(&e)
        }
    }
}

/// The SIP Call-ID of the call with this CallSid (live or recorded).
pub async fn call_id_of(s: &HttpState, sid: &str) -> Result<Option<String>, Response> {
    Ok(find(s, sid)
        .await?
        .map(|v| v.call_id)
        .filter(|c| !c.is_empty()))
}
