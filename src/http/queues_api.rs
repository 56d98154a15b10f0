//! The Twilio-compatible Queues API at `/2010-04-01/Accounts/{AccountSid}/
//! Queues.json`, `/Queues/{QueueSid}.json` and their `Members`, with the
//! Calls API's credentials, forms, JSON and errors: an app that drives
//! queues through Twilio's REST client drives crossline's unchanged.
//!
//! A queue is a crossline queue, configured (`[[queues]]`) or made at run
//! time (by `<Enqueue>` or by a create here). Its sid follows its name, as
//! `<Enqueue>`'s QueueSid does. Members are the app callers waiting in it
//! (a TOML flow's callers wait for the queue's agents and aren't listed);
//! updating one dequeues it: its `<Enqueue>` ends (its action hears
//! QueueResult=redirected) and the call runs the given document.
//!
//! Configured queues are the config file's: they can be read and their
//! members dequeued, not changed or deleted here.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::calls_api::{basic_auth, count, form_of, outcome, twilio_error};
use super::HttpState;
use crate::queue::acd::{QueueSnapshot, Unchanged};
use crate::queue::{Made, LARGEST_MAX_SIZE};
use crate::twiml::calls::{self, rfc2822, ApiError, ListQuery};
use crate::twiml::{queue_sid, QueueMember};

/// Twilio's limit on a queue's FriendlyName.
const MAX_NAME_CHARS: usize = 64;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Queues.json",
            get(list).post(create),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Queues/{sid}",
            get(fetch).post(update).delete(delete),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Queues/{sid}/Members.json",
            get(members),
        )
        .route(
            "/2010-04-01/Accounts/{account}/Queues/{sid}/Members/{member}",
            get(member).post(dequeue),
        )
}

fn not_found() -> ApiError {
    ApiError::new(404, 20404, "The requested resource was not found")
}

fn queue_path(account: &str, sid: &str) -> String {
    format!("/2010-04-01/Accounts/{account}/Queues/{sid}")
}

/// The queue whose sid is `sid` (with or without `.json`).
fn find(s: &HttpState, sid: &str) -> Result<QueueSnapshot, ApiError> {
    let sid = sid.strip_suffix(".json").unwrap_or(sid);
    s.services
        .queues
        .snapshot()
        .into_iter()
        .find(|q| queue_sid(&q.name) == sid)
        .ok_or_else(not_found)
}

fn queue_json(s: &HttpState, account: &str, q: &QueueSnapshot) -> Value {
    let sid = queue_sid(&q.name);
    let queues = &s.services.queues;
    let dates = queues.dates(&q.name);
    let waits: u64 = q.callers.iter().map(|c| c.waited.as_secs()).sum();
    let average = waits.checked_div(q.callers.len() as u64).unwrap_or(0);
    let path = queue_path(account, &sid);
    json!({
        "account_sid": account,
        "average_wait_time": average,
        "current_size": q.waiting,
        "date_created": rfc2822(dates.created),
        "date_updated": rfc2822(dates.updated),
        "friendly_name": q.name,
        "max_size": queues.max_size(&q.name).flatten(),
        "sid": sid,
        "uri": format!("{path}.json"),
        "subresource_uris": { "members": format!("{path}/Members.json") },
    })
}

/// The queue's app callers in their places (1: next), with how long each
/// has waited.
fn members_of(s: &HttpState, queue: &str) -> Vec<(QueueMember, usize, u64)> {
    let mut placed: Vec<_> = s
        .services
        .twiml
        .queue_members(queue)
        .into_iter()
        .filter_map(|m| {
            let standing = s.services.queues.standing(m.entry)?;
            Some((m, standing.position, standing.waited.as_secs()))
        })
        .collect();
    placed.sort_by_key(|(_, position, _)| *position);
    placed
}

fn member_json(
    account: &str,
    queue: &str,
    (m, position, waited): &(QueueMember, usize, u64),
) -> Value {
    let sid = queue_sid(queue);
    json!({
        "call_sid": m.call_sid,
        "date_enqueued": rfc2822(m.enqueued),
        "position": position,
        "queue_sid": sid,
        "uri": format!("{}/Members/{}.json", queue_path(account, &sid), m.call_sid),
        "wait_time": waited,
    })
}

/// `Front` or a CallSid, with or without `.json`.
fn pick<'a>(
    members: &'a [(QueueMember, usize, u64)],
    which: &str,
) -> Option<&'a (QueueMember, usize, u64)> {
    let which = which.strip_suffix(".json").unwrap_or(which);
    if which == "Front" {
        return members.first();
    }
    members.iter().find(|(m, _, _)| m.call_sid == which)
}

/// `MaxSize`: 1 to 5000.
fn max_size_of(form: &[(String, String)]) -> Result<Option<usize>, ApiError> {
    let Some(raw) = crate::messaging::form::get(form, "MaxSize").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=LARGEST_MAX_SIZE).contains(&n) => Ok(Some(n)),
        _ => Err(ApiError::bad(
            20001,
            format!("MaxSize must be a number from 1 to {LARGEST_MAX_SIZE}"),
        )),
    }
}

fn unchanged(why: Unchanged, what: &str) -> ApiError {
    match why {
        Unchanged::NoSuchQueue => not_found(),
        Unchanged::Occupied => ApiError::bad(20001, format!("{what}: the queue has callers in it")),
        Unchanged::Configured => ApiError::bad(
            20001,
            format!(
                "{what}: the queue is configured in the config file ([[queues]]); change it there"
            ),
        ),
    }
}

fn create_queue(
    s: &HttpState,
    account: &str,
    form: &[(String, String)],
) -> Result<Value, ApiError> {
    let name = crate::messaging::form::get(form, "FriendlyName")
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::bad(
                20001,
                "Missing required parameter FriendlyName in the post body",
            )
        })?;
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad(
            20001,
            format!("FriendlyName must be up to {MAX_NAME_CHARS} printable characters"),
        ));
    }
    let max = max_size_of(form)?.unwrap_or(crate::queue::DEFAULT_MAX_SIZE);
    match s.services.queues.make(name, max) {
        Made::Made => {}
        // The sid follows the name: two queues can't share one.
        Made::Exists => {
            return Err(ApiError::new(
                409,
                20409,
                format!("a queue named {name:?} exists already"),
            ))
        }
        Made::TooMany => {
            return Err(ApiError::new(
                429,
                20429,
                format!("{} queues are made already", crate::queue::MAX_MADE_QUEUES),
            ))
        }
    }
    tracing::info!(queue = %name, max, "Queues API: queue made");
    let q = find(s, &queue_sid(name))?;
    Ok(queue_json(s, account, &q))
}

fn update_queue(
    s: &HttpState,
    account: &str,
    sid: &str,
    form: &[(String, String)],
) -> Result<Value, ApiError> {
    let q = find(s, sid)?;
    let renamed = crate::messaging::form::get(form, "FriendlyName")
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != q.name);
    if renamed.is_some() {
        return Err(ApiError::bad(
            20001,
            "FriendlyName can't change: a queue's sid follows its name (make a new queue)",
        ));
    }
    if let Some(max) = max_size_of(form)? {
        s.services
            .queues
            .set_max_size(&q.name, max)
            .map_err(|why| unchanged(why, "MaxSize"))?;
    }
    let q = find(s, sid)?;
    Ok(queue_json(s, account, &q))
}

fn dequeue_member(
    s: &HttpState,
    account: &str,
    (sid, which): (&str, &str),
    form: &[(String, String)],
) -> Result<Value, ApiError> {
    let q = find(s, sid)?;
    let target = calls::dequeue_target(form)?;
    let members = members_of(s, &q.name);
    let m = pick(&members, which).ok_or_else(not_found)?;
    if !s.services.twiml.dequeue(m.0.entry, target) {
        // Left (or was taken by an agent) meanwhile.
        return Err(not_found());
    }
    tracing::info!(queue = %q.name, call = %m.0.call_sid, "Queues API: member dequeued");
    Ok(member_json(account, &q.name, m))
}

/// Authenticate, run `op`, count and answer: `created` is the status of
/// success (200, 201 or 204).
fn answer(
    s: &HttpState,
    h: &HeaderMap,
    account: &str,
    op: &'static str,
    created: StatusCode,
    run: impl FnOnce() -> Result<Value, ApiError>,
) -> Response {
    if let Err(r) = basic_auth(s, h, account) {
        count(op, "unauthorized");
        return r;
    }
    match run() {
        Ok(_) if created == StatusCode::NO_CONTENT => {
            count(op, "ok");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(v) => {
            count(op, "ok");
            (created, Json(v)).into_response()
        }
        Err(e) => {
            count(op, outcome(&e));
            twilio_error(&e)
        }
    }
}

async fn list(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(account): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(&s, &h, &account, "queue_list", StatusCode::OK, || {
        let q = ListQuery::parse(query.as_deref().unwrap_or(""));
        let queues = s.services.queues.snapshot();
        let base = format!("/2010-04-01/Accounts/{account}/Queues.json");
        let render = |queue: &QueueSnapshot| queue_json(&s, &account, queue);
        Ok(calls::page_of(&queues, render, "queues", &q, &base))
    })
}

async fn create(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(account): Path<String>,
    b: Bytes,
) -> Response {
    answer(
        &s,
        &h,
        &account,
        "queue_create",
        StatusCode::CREATED,
        || create_queue(&s, &account, &form_of(&b)),
    )
}

async fn fetch(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((account, sid)): Path<(String, String)>,
) -> Response {
    answer(&s, &h, &account, "queue_fetch", StatusCode::OK, || {
        Ok(queue_json(&s, &account, &find(&s, &sid)?))
    })
}

async fn update(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((account, sid)): Path<(String, String)>,
    b: Bytes,
) -> Response {
    answer(&s, &h, &account, "queue_update", StatusCode::OK, || {
        update_queue(&s, &account, &sid, &form_of(&b))
    })
}

async fn delete(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((account, sid)): Path<(String, String)>,
) -> Response {
    answer(
        &s,
        &h,
        &account,
        "queue_delete",
        StatusCode::NO_CONTENT,
        || {
            let q = find(&s, &sid)?;
            s.services
                .queues
                .remove(&q.name)
                .map_err(|why| unchanged(why, "delete"))?;
            tracing::info!(queue = %q.name, "Queues API: queue deleted");
            Ok(Value::Null)
        },
    )
}

async fn members(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((account, sid)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    answer(&s, &h, &account, "member_list", StatusCode::OK, || {
        let q = find(&s, &sid)?;
        let list = ListQuery::parse(query.as_deref().unwrap_or(""));
        let members = members_of(&s, &q.name);
        let base = format!("{}/Members.json", queue_path(&account, &queue_sid(&q.name)));
        let render = |m: &(QueueMember, usize, u64)| member_json(&account, &q.name, m);
        Ok(calls::page_of(
            &members,
            render,
            "queue_members",
            &list,
            &base,
        ))
    })
}

async fn member(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((account, sid, which)): Path<(String, String, String)>,
) -> Response {
    answer(&s, &h, &account, "member_fetch", StatusCode::OK, || {
        let q = find(&s, &sid)?;
        let members = members_of(&s, &q.name);
        let m = pick(&members, &which).ok_or_else(not_found)?;
        Ok(member_json(&account, &q.name, m))
    })
}

async fn dequeue(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path((account, sid, which)): Path<(String, String, String)>,
    b: Bytes,
) -> Response {
    answer(&s, &h, &account, "dequeue", StatusCode::OK, || {
        dequeue_member(&s, &account, (&sid, &which), &form_of(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messaging::form::owned as form;

    #[test]
    fn max_size_is_one_to_five_thousand() {
        assert_eq!(max_size_of(&form(&[])), Ok(None));
        assert_eq!(max_size_of(&form(&[("MaxSize", "5000")])), Ok(Some(5000)));
        assert_eq!(max_size_of(&form(&[("MaxSize", " 1 ")])), Ok(Some(1)));
        for bad in ["0", "5001", "-1", "ten", "1e3"] {
            let e = max_size_of(&form(&[("MaxSize", bad)])).expect_err(bad);
            assert_eq!((e.status, e.code), (400, 20001), "{bad}");
        }
    }

    #[test]
    fn front_is_the_first_member_and_a_call_sid_names_one() {
        let member = |sid: &str, entry| {
            (
                QueueMember {
                    entry,
                    call_sid: sid.to_string(),
                    enqueued: std::time::SystemTime::UNIX_EPOCH,
                },
                entry as usize,
                0,
            )
        };
        let members = [member("CA1", 1), member("CA2", 2)];
        assert_eq!(pick(&members, "Front").map(|m| m.0.entry), Some(1));
        assert_eq!(pick(&members, "Front.json").map(|m| m.0.entry), Some(1));
        assert_eq!(pick(&members, "CA2.json").map(|m| m.0.entry), Some(2));
        assert_eq!(pick(&members, "CA3"), None);
        assert_eq!(pick(&[], "Front"), None);
    }
}
