//! `/v1`: the REST API. Operators read calls, conversations, breakouts,
//! leads and consents and write into live chats; admins also reload the
//! config. Every route is listed in `ROUTES` and documented in the
//! OpenAPI document at `/v1/openapi.json` (a test keeps the two in step).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Role;
use super::HttpState;
use crate::store::{
    BreakoutRecord, CallRecord, ConsentRecord, ConversationRecord, LeadRecord, MessageRecord,
    SendRecord,
};

/// Every /v1 route: method, path (OpenAPI template syntax), who may call it.
/// The unit test holds it against the OpenAPI document; the integration
/// test (tests/api.rs) holds the document against the running server.
#[cfg(test)]
pub const ROUTES: &[(&str, &str, Option<Role>)] = &[
    ("get", "/v1/openapi.json", None),
    ("get", "/v1/status", Some(Role::Viewer)),
    ("get", "/v1/flows", Some(Role::Operator)),
    ("get", "/v1/calls", Some(Role::Operator)),
    ("get", "/v1/calls/{call_id}", Some(Role::Operator)),
    ("post", "/v1/calls", Some(Role::Operator)),
    ("post", "/v1/calls/{call_id}", Some(Role::Operator)),
    ("get", "/v1/registrations", Some(Role::Operator)),
    ("get", "/v1/users", Some(Role::Admin)),
    ("post", "/v1/users", Some(Role::Admin)),
    ("get", "/v1/users/{name}", Some(Role::Admin)),
    ("put", "/v1/users/{name}", Some(Role::Admin)),
    ("patch", "/v1/users/{name}", Some(Role::Admin)),
    ("delete", "/v1/users/{name}", Some(Role::Admin)),
    ("get", "/v1/conversations", Some(Role::Operator)),
    ("get", "/v1/conversations/{id}", Some(Role::Operator)),
    (
        "post",
        "/v1/conversations/{id}/messages",
        Some(Role::Operator),
    ),
    ("get", "/v1/breakouts", Some(Role::Operator)),
    ("get", "/v1/breakouts/{id}", Some(Role::Operator)),
    ("get", "/v1/leads", Some(Role::Operator)),
    ("post", "/v1/leads", Some(Role::Operator)),
    ("get", "/v1/consents", Some(Role::Operator)),
    ("post", "/v1/consents", Some(Role::Operator)),
    ("post", "/v1/admin/reload", Some(Role::Admin)),
    (
        "post",
        "/v1/conversations/{id}/visitor-action",
        Some(Role::Operator),
    ),
    (
        "post",
        "/v1/conversations/{id}/reconnect",
        Some(Role::Operator),
    ),
    ("post", "/v1/leads/{id}/reconnect", Some(Role::Operator)),
    (
        "post",
        "/v1/conversations/{id}/switch",
        Some(Role::Operator),
    ),
    ("post", "/v1/conversations/{id}/close", Some(Role::Operator)),
    ("post", "/v1/console/session", None),
    ("delete", "/v1/console/session", None),
    ("post", "/v1/callbacks", Some(Role::Operator)),
    ("get", "/v1/callbacks/{id}", Some(Role::Operator)),
    ("get", "/v1/reports/escalations", Some(Role::Operator)),
    ("get", "/v1/trunks", Some(Role::Operator)),
    (
        "post",
        "/v1/calls/{call_id}/recording",
        Some(Role::Operator),
    ),
    ("get", "/v1/recordings", Some(Role::Operator)),
    ("get", "/v1/recordings/{id}", Some(Role::Operator)),
    ("delete", "/v1/recordings/{id}", Some(Role::Operator)),
    ("get", "/v1/queues", Some(Role::Viewer)),
    ("get", "/v1/agents", Some(Role::Viewer)),
    ("post", "/v1/agents/state", Some(Role::Operator)),
];

pub fn router(state: &HttpState) -> Router<HttpState> {
    let r = Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/status", get(status))
        .route("/v1/flows", get(flows))
        .route("/v1/calls", get(calls).post(super::calls_api::v1_create))
        .route(
            "/v1/calls/{call_id}",
            get(call).post(super::calls_api::v1_modify),
        )
        .route("/v1/registrations", get(registrations))
        .route("/v1/conversations", get(conversations))
        .route("/v1/conversations/{id}", get(conversation))
        .route("/v1/conversations/{id}/messages", post(post_message))
        .route(
            "/v1/conversations/{id}/visitor-action",
            post(visitor_action),
        )
        .route(
            "/v1/conversations/{id}/reconnect",
            post(reconnect_conversation),
        )
        .route("/v1/leads/{id}/reconnect", post(reconnect_lead))
        .route("/v1/conversations/{id}/switch", post(switch_conversation))
        .route("/v1/conversations/{id}/close", post(close_conversation))
        .route("/v1/breakouts", get(breakouts))
        .route("/v1/breakouts/{id}", get(breakout))
        .route("/v1/leads", get(leads).post(post_lead))
        .route("/v1/consents", get(consents).post(post_consent))
        .route("/v1/admin/reload", post(reload))
        .route("/v1/trunks", get(trunks))
        .merge(super::callbacks::routes())
        .merge(super::recordings::routes())
        .merge(super::calls_api::routes())
        .merge(super::queues::routes())
        .merge(super::queues_api::routes())
        .merge(super::users::routes())
        // JSON bodies here are small (a message, a lead, a callback).
        .layer(axum::extract::DefaultBodyLimit::max(API_BODY))
        .layer(axum::middleware::map_response(no_store));
    if state.cors_origins.is_empty() {
        return r;
    }
    use axum::http::{header, HeaderValue, Method};
    let origins: Vec<HeaderValue> = state
        .cors_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    r.layer(
        tower_http::cors::CorsLayer::new()
            .allow_origin(origins)
            // Every method a /v1 route answers: users are changed with
            // PUT/PATCH and removed with DELETE, recordings deleted.
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// Largest body a /v1 route takes.
pub const API_BODY: usize = 32 * 1024;

/// Answers hold transcripts, leads' emails and numbers: no cache (browser
/// or proxy) keeps a copy.
async fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    r
}

pub fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A store call's answer, or the API's 500 when the store fails.
pub(super) async fn store_call<T>(
    call: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
) -> Result<T, Response> {
    call.await.map_err(|e| {
        tracing::error!(%e, "API: store call failed");
        error(StatusCode::INTERNAL_SERVER_ERROR, "store unavailable")
    })
}

// A refusal is a whole Response; it is the cold path.
#[allow(clippy::result_large_err)]
pub(super) fn body<T>(b: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    b.map(|Json(v)| v)
        .map_err(|e| error(e.status(), &e.body_text()))
}

#[derive(Deserialize)]
pub(super) struct ListQuery {
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    pub(super) call_id: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    /// Unix ms: the next page, before the last one's time (recordings).
    #[serde(default)]
    pub(super) before: Option<u64>,
}

impl ListQuery {
    pub(super) fn limit(&self) -> usize {
        self.limit.unwrap_or(50).clamp(1, 500)
    }
}

fn call_json(r: &CallRecord) -> Value {
    json!({
        "call_id": r.call_id, "direction": r.direction, "did": r.did, "caller": r.caller,
        "trunk": r.trunk, "flow": r.flow, "started_at": ms(r.started_at),
        "answered_at": r.answered_at.map(ms), "ended_at": ms(r.ended_at),
        "outcome": r.outcome, "sip_status": r.sip_status, "vars": r.vars,
    })
}

fn send_json(r: &SendRecord) -> Value {
    json!({
        "channel": r.channel.as_str(), "provider": r.provider, "recipient": r.recipient,
        "node": r.node, "status": r.status.as_str(), "provider_id": r.provider_id,
        "error_kind": r.error_kind, "error_code": r.error_code, "segments": r.segments,
        "created_at": ms(r.created_at),
    })
}

fn conversation_json(
    r: &ConversationRecord,
    live: bool,
    address: Option<&str>,
    lead: Option<&LeadRecord>,
) -> Value {
    json!({
        "id": r.id, "channel": r.channel, "origin": r.origin, "flow": r.flow,
        "breakout_id": r.breakout_id, "created_at": ms(r.created_at),
        "closed_at": r.closed_at.map(ms), "live": live,
        "address": address.map(crate::mask::phone),
        "lead": lead.map(|l| json!({ "id": l.id, "name": l.name, "email": l.email, "phone": l.phone })),
    })
}

/// The newest lead of each conversation named.
async fn leads_for(
    s: &HttpState,
    ids: Vec<String>,
) -> Result<std::collections::HashMap<String, LeadRecord>, Response> {
    store_call(async {
        let mut map = std::collections::HashMap::new();
        for id in ids {
            if let Some(l) = s.store.lead_for_conversation(&id).await? {
                map.insert(id, l);
            }
        }
        Ok(map)
    })
    .await
}

/// One live conversation as the list shows it.
pub async fn live_conversation_json(s: &HttpState, c: &crate::chat::Conversation) -> Value {
    let lead = store_call(s.store.lead_for_conversation(&c.id))
        .await
        .ok()
        .flatten();
    let (_, address) = c.active();
    conversation_json(
        &c.record(),
        !c.is_closed(),
        address.as_deref(),
        lead.as_ref(),
    )
}

fn bindings_json(b: &[crate::chat::Binding]) -> Value {
    Value::Array(
        b.iter()
            .map(|b| {
                json!({
                    "channel": b.channel.as_str(),
                    "address": b.address.as_deref().map(crate::mask::phone),
                    "started_at": ms(b.started_at), "ended_at": b.ended_at.map(ms),
                })
            })
            .collect(),
    )
}

fn switch_error(e: crate::chat::SwitchError) -> Response {
    use crate::chat::SwitchError as E;
    if e == E::OptedOut {
        // Operators may know why; the visitor-facing text stays vague.
        return (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "not sent: the recipient opted out (texted STOP on this channel); nothing was delivered",
                "error_kind": "opted_out",
            })),
        )
            .into_response();
    }
    let status = match e {
        E::Send(_) => StatusCode::BAD_GATEWAY,
        E::OptedOut => StatusCode::CONFLICT,
        E::NoPhone | E::Closed | E::TooLate | E::StillOpen => StatusCode::CONFLICT,
        E::BadPhone => StatusCode::UNPROCESSABLE_ENTITY,
        E::Unavailable(_) => StatusCode::CONFLICT,
        E::NotFound => StatusCode::NOT_FOUND,
        E::Refused(_) => StatusCode::TOO_MANY_REQUESTS,
        E::WrongCode | E::CodeExpired => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let text = match e {
        E::NoPhone => "no phone number for this conversation".to_string(),
        // Operators get the provider's reason; visitors never do.
        E::Send(detail) => format!("We could not send a message to that number: {detail}"),
        other => other.to_string(),
    };
    error(status, &text)
}

/// A live transcript event in the shape of a stored message.
fn event_json(e: &crate::chat::Event) -> Value {
    let (role, kind, text, detail) = e.stored();
    let detail: Value = detail
        .and_then(|d| serde_json::from_str(&d).ok())
        .unwrap_or(Value::Null);
    json!({
        "seq": e.id(), "role": role.as_str(), "kind": kind, "text": text,
        "detail": detail, "at": e.at(),
    })
}

fn message_json(r: &MessageRecord) -> Value {
    let detail: Value = r
        .detail
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    json!({
        "seq": r.seq, "role": r.role, "kind": r.kind, "text": r.text,
        "detail": detail, "at": ms(r.created_at),
    })
}

fn breakout_json(r: &BreakoutRecord) -> Value {
    let result: Value = r
        .result
        .as_deref()
        .and_then(|d| serde_json::from_str(d).ok())
        .unwrap_or(Value::Null);
    json!({
        "id": r.id, "call_id": r.call_id, "flow": r.flow, "recipient": r.recipient,
        "state": r.state, "created_at": ms(r.created_at), "expires_at": ms(r.expires_at),
        "opened_at": r.opened_at.map(ms), "finished_at": r.finished_at.map(ms),
        "conversation_id": r.conversation_id, "result": result,
    })
}

fn lead_json(r: &LeadRecord) -> Value {
    json!({
        "id": r.id, "name": r.name, "email": r.email, "phone": r.phone,
        "conversation_id": r.conversation_id, "created_at": ms(r.created_at),
        "updated_at": ms(r.updated_at),
    })
}

fn consent_json(r: &ConsentRecord) -> Value {
    json!({
        "id": r.id, "subject": r.subject, "purpose": r.purpose, "text": r.text,
        "given": r.given, "conversation_id": r.conversation_id, "created_at": ms(r.created_at),
    })
}

async fn openapi() -> Response {
    Json(super::openapi::document()).into_response()
}

async fn status(State(s): State<HttpState>, h: HeaderMap) -> Response {
    guard!(s, h, Role::Viewer);
    let live = s.services.chat.list();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        // What the caller may do: the console shows a viewer no buttons.
        "role": super::auth::role(&s, &h).map(Role::as_str),
        "ready": s.ready.load(std::sync::atomic::Ordering::Relaxed),
        "chats_open": live.iter().filter(|c| !c.is_closed()).count(),
        // Where a chat can move to (SMS, WhatsApp), as configured.
        "channels": s.services.switchboard.channels().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// Every `[[trunks]]` entry and its keep-alive state.
async fn trunks(State(s): State<HttpState>, h: HeaderMap) -> Response {
    guard!(s, h, Role::Operator);
    let trunks = s.trunks.read().unwrap_or_else(|p| p.into_inner()).clone();
    Json(json!({ "trunks": trunks })).into_response()
}

async fn flows(State(s): State<HttpState>, h: HeaderMap) -> Response {
    guard!(s, h, Role::Operator);
    let set = s
        .services
        .flow_set
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let list: Vec<Value> = set
        .names()
        .into_iter()
        .filter_map(|n| set.get(n))
        .map(|f| json!({ "name": f.name, "channel": f.channel.as_str(), "nodes": f.nodes.len() }))
        .collect();
    Json(json!({ "flows": list })).into_response()
}

async fn calls(State(s): State<HttpState>, h: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    guard!(s, h, Role::Operator);
    let limit = q.limit();
    let rows = tri!(store_call(s.store.recent_calls(limit)).await);
    Json(json!({ "calls": rows.iter().map(call_json).collect::<Vec<_>>() })).into_response()
}

/// Devices registered to our registrar (every node's, with a shared store).
async fn registrations(State(s): State<HttpState>, h: HeaderMap) -> Response {
    guard!(s, h, Role::Operator);
    let rows = tri!(store_call(s.store.registrations()).await);
    let now = SystemTime::now();
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "user": r.user,
                "contact": r.contact,
                "source": r.source,
                "transport": r.transport,
                "expires_in": r.expires_at.duration_since(now).map(|d| d.as_secs()).unwrap_or(0),
                "expires_at": ms(r.expires_at),
                "user_agent": r.user_agent,
                "instance": r.instance,
                "path": r.path,
                "node": r.node,
            })
        })
        .collect();
    Json(json!({ "registrations": list })).into_response()
}

async fn call(State(s): State<HttpState>, h: HeaderMap, Path(call_id): Path<String>) -> Response {
    guard!(s, h, Role::Operator);
    // A CallSid names the call as well as its SIP Call-ID.
    let call_id = match crate::twiml::is_call_sid(&call_id) {
        true => match tri!(super::calls_api::call_id_of(&s, &call_id).await) {
            Some(id) => id,
            None => return error(StatusCode::NOT_FOUND, "no such call"),
        },
        false => call_id,
    };
    let (records, sends, breakouts) = tri!(
        store_call(async {
            Ok((
                s.store.call_records(&call_id).await?,
                s.store.sends_for_call(&call_id).await?,
                s.store.breakouts(Some(&call_id), 100).await?,
            ))
        })
        .await
    );
    if records.is_empty() && sends.is_empty() && breakouts.is_empty() {
        return error(StatusCode::NOT_FOUND, "no such call");
    }
    Json(json!({
        "records": records.iter().map(call_json).collect::<Vec<_>>(),
        "sends": sends.iter().map(send_json).collect::<Vec<_>>(),
        "breakouts": breakouts.iter().map(breakout_json).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn conversations(
    State(s): State<HttpState>,
    h: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    guard!(s, h, Role::Operator);
    let limit = q.limit();
    let rows = tri!(store_call(s.store.conversations(limit)).await);
    let live = s.services.chat.list();
    let ids = live
        .iter()
        .map(|c| c.id.clone())
        .chain(rows.iter().map(|r| r.id.clone()))
        .collect();
    let mut leads = tri!(leads_for(&s, ids).await);
    // Live ones first-hand (the store may lag a write behind), then the rest.
    let mut seen = std::collections::HashSet::new();
    let mut list: Vec<(u64, Value)> = Vec::new();
    for c in live {
        let r = c.record();
        let (_, address) = c.active();
        seen.insert(r.id.clone());
        let lead = leads.remove(&r.id);
        list.push((
            ms(r.created_at),
            conversation_json(&r, !c.is_closed(), address.as_deref(), lead.as_ref()),
        ));
    }
    for r in rows.iter().filter(|r| !seen.contains(&r.id)) {
        let lead = leads.remove(&r.id);
        list.push((
            ms(r.created_at),
            conversation_json(r, false, None, lead.as_ref()),
        ));
    }
    list.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    list.truncate(limit);
    let list: Vec<Value> = list.into_iter().map(|(_, v)| v).collect();
    Json(json!({ "conversations": list })).into_response()
}

async fn conversation(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    guard!(s, h, Role::Operator);
    let key = &id;
    let (conv, stored, bindings, lead) = tri!(
        store_call(async {
            Ok((
                s.store.conversation(key).await?,
                s.store.messages(key, 0).await?,
                s.store.bindings(key).await?,
                s.store.lead_for_conversation(key).await?,
            ))
        })
        .await
    );
    let live = s.services.chat.get(&id);
    // Just created: the write may still be queued; the live copy answers.
    let record = live.as_ref().map(|c| c.record()).or(conv);
    let Some(record) = record else {
        return error(StatusCode::NOT_FOUND, "no such conversation");
    };
    let (address, bindings, messages) = match &live {
        Some(c) => (
            c.active().1,
            bindings_json(&c.bindings()),
            c.transcript().iter().map(|e| event_json(e)).collect::<Vec<_>>(),
        ),
        None => (
            None,
            Value::Array(
                bindings
                    .iter()
                    .map(|b| json!({
                        "channel": b.channel, "address": b.address.as_deref().map(crate::mask::phone),
                        "started_at": ms(b.started_at), "ended_at": b.ended_at.map(ms),
                    }))
                    .collect(),
            ),
            stored.iter().map(message_json).collect(),
        ),
    };
    let is_live = live.as_ref().is_some_and(|c| !c.is_closed());
    Json(json!({
        "conversation": conversation_json(&record, is_live, address.as_deref(), lead.as_ref()),
        "messages": messages,
        "bindings": bindings,
    }))
    .into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    text: String,
}

async fn post_message(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<NewMessage>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let m = tri!(body(b));
    let text = m.text.trim();
    if text.is_empty() || text.len() > 4000 {
        return error(StatusCode::BAD_REQUEST, "text must be 1 to 4000 bytes");
    }
    let Some(conv) = super::conversation(&s, &id, None).await else {
        return error(StatusCode::NOT_FOUND, "no live conversation with that id");
    };
    // Out on the conversation's current channel, as the agent.
    match s.services.switchboard.agent_message(&conv, text).await {
        Ok((seq, channel)) => (
            StatusCode::CREATED,
            Json(json!({ "seq": seq, "channel": channel.as_str() })),
        )
            .into_response(),
        Err(e) => switch_error(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CloseRequest {
    #[serde(default)]
    text: Option<String>,
}

/// An operator ends a live chat; the visitor sees `text`. A breakout
/// waiting on it lets its call go on at once.
async fn close_conversation(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<CloseRequest>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    // The body is optional.
    let req = match b {
        Ok(Json(r)) => r,
        Err(JsonRejection::MissingJsonContentType(_)) => CloseRequest::default(),
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.body_text()),
    };
    let text = req
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .unwrap_or("This conversation was closed by an agent.");
    if text.len() > 4000 {
        return error(StatusCode::BAD_REQUEST, "text must be at most 4000 bytes");
    }
    let Some(conv) = super::conversation(&s, &id, None).await else {
        return error(StatusCode::NOT_FOUND, "no live conversation with that id");
    };
    if conv.is_closed() {
        return error(StatusCode::CONFLICT, "the conversation is already closed");
    }
    conv.close(text);
    (StatusCode::OK, Json(json!({ "closed": true }))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelRequest {
    #[serde(default)]
    action: Option<String>,
    channel: String,
}

// A refusal is a whole Response; it is the cold path.
#[allow(clippy::result_large_err)]
fn phone_channel(c: &str) -> Result<crate::chat::ChannelKind, Response> {
    match crate::chat::ChannelKind::parse(c) {
        Some(k @ (crate::chat::ChannelKind::Sms | crate::chat::ChannelKind::WhatsApp)) => Ok(k),
        _ => Err(error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "channel must be sms or whatsapp",
        )),
    }
}

/// An open conversation, or 404.
// A refusal is a whole Response; it is the cold path.
#[allow(clippy::result_large_err)]
async fn live_conversation(
    s: &HttpState,
    id: &str,
) -> Result<std::sync::Arc<crate::chat::Conversation>, Response> {
    super::conversation(s, id, None)
        .await
        .filter(|c| !c.is_closed())
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no live conversation with that id"))
}

/// The visitor action command: ask the web visitor for a phone number,
/// then switch to `channel` when they answer.
async fn visitor_action(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<ChannelRequest>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let req = tri!(body(b));
    if req.action.as_deref() != Some("ask_phone") {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "action must be ask_phone");
    }
    let channel = tri!(phone_channel(&req.channel));
    if !s.services.switchboard.channels().contains(&channel) {
        return error(StatusCode::CONFLICT, "that channel is not configured");
    }
    let conv = tri!(live_conversation(&s, &id).await);
    if conv.active().0 != crate::chat::ChannelKind::Web {
        return error(StatusCode::CONFLICT, "the visitor is not in the web chat");
    }
    let text = format!(
        "Would you like to continue by {}? Type your mobile number, with the country code.",
        channel.label()
    );
    match conv.ask_phone(channel, &text) {
        Some(_) => (StatusCode::ACCEPTED, Json(json!({ "asked": true }))).into_response(),
        None => error(StatusCode::CONFLICT, "the conversation is closed"),
    }
}

/// An operator moves a conversation that is on a phone to the other phone
/// channel for the same number, or ("web") texts the visitor a link that
/// brings it back to the web chat when opened.
async fn switch_conversation(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<ChannelRequest>, JsonRejection>,
) -> Response {
    use crate::chat::{ChannelKind, SwitchBy};
    guard!(s, h, Role::Operator);
    let req = tri!(body(b));
    let Some(target) = req
        .action
        .is_none()
        .then(|| ChannelKind::parse(&req.channel))
        .flatten()
    else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "channel must be web, sms or whatsapp (and no action)",
        );
    };
    let conv = tri!(live_conversation(&s, &id).await);
    let board = &s.services.switchboard;
    let (on, to) = match conv.active() {
        (on @ (ChannelKind::Sms | ChannelKind::WhatsApp), Some(to)) => (on, to),
        _ => {
            return error(
                StatusCode::CONFLICT,
                "the visitor is in the web chat: ask for a phone number (visitor-action)",
            )
        }
    };
    let result = match target {
        ChannelKind::Web => board
            .send_web_link(&conv, on, &to, SwitchBy::Operator)
            .await
            .map(|()| StatusCode::ACCEPTED),
        t if t == on => {
            return error(
                StatusCode::CONFLICT,
                &format!("the conversation is already on {}", on.label()),
            )
        }
        t => board
            .switch_phone(&conv, t, &to, SwitchBy::Operator)
            .await
            .map(|_| StatusCode::OK),
    };
    match result {
        Ok(status) => (
            status,
            Json(json!({ "conversation": live_conversation_json(&s, &conv).await })),
        )
            .into_response(),
        Err(e) => switch_error(e),
    }
}

/// PH-2A: reconnect by SMS with a finished conversation whose lead has a
/// phone number.
async fn reconnect_conversation(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<ChannelRequest>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let req = tri!(body(b));
    let channel = tri!(phone_channel(&req.channel));
    let lead = tri!(store_call(s.store.lead_for_conversation(&id)).await);
    let phone = lead.and_then(|l| l.phone);
    let Some(conv) = super::conversation(&s, &id, None).await else {
        return error(StatusCode::NOT_FOUND, "no such conversation");
    };
    match s.services.switchboard.reconnect(conv, channel, phone).await {
        Ok(c) => {
            Json(json!({ "conversation": live_conversation_json(&s, &c).await })).into_response()
        }
        Err(e) => switch_error(e),
    }
}

/// PH-2B: reconnect by SMS with an offline lead: a new conversation.
async fn reconnect_lead(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(id): Path<String>,
    b: Result<Json<ChannelRequest>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let req = tri!(body(b));
    let channel = tri!(phone_channel(&req.channel));
    let Some(lead) = tri!(store_call(s.store.lead(&id)).await) else {
        return error(StatusCode::NOT_FOUND, "no such lead");
    };
    let live = match lead.phone.as_deref() {
        Some(p) => s.services.chat.by_address(channel, p).await,
        None => None,
    };
    if let Some(live) = live.filter(|c| !c.is_closed()) {
        return (
            StatusCode::CONFLICT,
            Json(json!({
                "error": "this lead is already in a live conversation on that channel",
                "conversation_id": live.id,
            })),
        )
            .into_response();
    }
    match s.services.switchboard.reconnect_lead(&lead, channel).await {
        Ok(c) => (
            StatusCode::CREATED,
            Json(json!({ "conversation": live_conversation_json(&s, &c).await })),
        )
            .into_response(),
        Err(e) => switch_error(e),
    }
}

async fn breakouts(
    State(s): State<HttpState>,
    h: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    guard!(s, h, Role::Operator);
    let limit = q.limit();
    let rows = tri!(store_call(s.store.breakouts(q.call_id.as_deref(), limit)).await);
    Json(json!({ "breakouts": rows.iter().map(breakout_json).collect::<Vec<_>>() })).into_response()
}

async fn breakout(State(s): State<HttpState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    guard!(s, h, Role::Operator);
    match tri!(store_call(s.store.breakout(&id)).await) {
        Some(r) => Json(breakout_json(&r)).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such breakout"),
    }
}

async fn leads(State(s): State<HttpState>, h: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    guard!(s, h, Role::Operator);
    let limit = q.limit();
    let rows = tri!(store_call(s.store.leads(limit)).await);
    Json(json!({ "leads": rows.iter().map(lead_json).collect::<Vec<_>>() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewLead {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    phone: Option<String>,
    #[serde(default)]
    conversation_id: Option<String>,
}

async fn post_lead(
    State(s): State<HttpState>,
    h: HeaderMap,
    b: Result<Json<NewLead>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let l = tri!(body(b));
    use crate::chat::{input::validate, InputKind};
    let region = s.services.chat.phone_region();
    let email = match l
        .email
        .as_deref()
        .map(|e| validate(InputKind::Email, e, region))
    {
        Some(Err(_)) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "email: not an email address",
            )
        }
        Some(Ok(e)) => Some(e),
        None => None,
    };
    let phone = match l
        .phone
        .as_deref()
        .map(|p| validate(InputKind::Phone, p, region))
    {
        Some(Err(why)) => return error(StatusCode::UNPROCESSABLE_ENTITY, &format!("phone: {why}")),
        Some(Ok(p)) => Some(p),
        None => None,
    };
    if email.is_none() && phone.is_none() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "give an email or a phone");
    }
    let now = SystemTime::now();
    let record = LeadRecord {
        id: crate::chat::random_token(12),
        name: l.name.map(|n| n.chars().take(200).collect()),
        email,
        phone,
        conversation_id: l.conversation_id,
        created_at: now,
        updated_at: now,
    };
    let id = record.id.clone();
    tri!(store_call(std::future::ready(s.store.upsert_lead(record))).await);
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}

async fn consents(
    State(s): State<HttpState>,
    h: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    guard!(s, h, Role::Operator);
    let limit = q.limit();
    let rows = tri!(store_call(s.store.consents(q.subject.as_deref(), limit)).await);
    Json(json!({ "consents": rows.iter().map(consent_json).collect::<Vec<_>>() })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewConsent {
    subject: String,
    purpose: String,
    text: String,
    given: bool,
    #[serde(default)]
    conversation_id: Option<String>,
}

async fn post_consent(
    State(s): State<HttpState>,
    h: HeaderMap,
    b: Result<Json<NewConsent>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let c = tri!(body(b));
    if c.subject.trim().is_empty() || c.purpose.trim().is_empty() || c.text.trim().is_empty() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "subject, purpose and text are required",
        );
    }
    let record = ConsentRecord {
        id: crate::chat::random_token(12),
        subject: c.subject.trim().to_string(),
        purpose: c.purpose,
        text: c.text,
        given: c.given,
        conversation_id: c.conversation_id,
        created_at: SystemTime::now(),
    };
    let id = record.id.clone();
    tri!(store_call(std::future::ready(s.store.record_consent(record))).await);
    (StatusCode::CREATED, Json(json!({ "id": id }))).into_response()
}

async fn reload(State(s): State<HttpState>, h: HeaderMap) -> Response {
    guard!(s, h, Role::Admin);
    // The gateway reloads on SIGHUP; one code path for both.
    // SAFETY: raising a signal at our own process has no memory effects.
    let rc = unsafe { libc::raise(libc::SIGHUP) };
    if rc == 0 {
        (StatusCode::ACCEPTED, Json(json!({ "reload": "requested" }))).into_response()
    } else {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not signal the reload",
        )
    }
}
