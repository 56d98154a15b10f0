//! Queues and agents over the API: `GET /v1/queues` (who waits, virtual
//! hold callers flagged, the longest wait, the service level, each
//! agent's state), `GET /v1/agents` (viewers may read both), and
//! `POST /v1/agents/state` (operators) to pause an agent or make them
//! available.

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{body, error};
use super::auth::Role;
use super::HttpState;
use crate::queue::acd::{AgentSnapshot, CallerSnapshot, QueueSnapshot};
use crate::queue::Queues;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/queues", get(queues))
        .route("/v1/agents", get(agents))
        .route("/v1/agents/state", post(set_state))
}

fn agent_json(queues: &Queues, a: &AgentSnapshot) -> Value {
    json!({
        "target": a.target,
        "display_name": queues.display_name(&a.target),
        "state": a.status.as_str(),
        "idle_secs": a.idle.map(|d| d.as_secs()),
        "state_secs": a.in_state.as_secs(),
        "answered": a.answered,
        "skills": a.skills,
    })
}

fn queue_json(queues: &Queues, q: &QueueSnapshot) -> Value {
    json!({
        "name": q.name,
        "strategy": q.strategy.as_str(),
        "waiting": q.waiting,
        "longest_wait_secs": q.longest_wait.as_secs(),
        "average_handle_secs": q.average_handle.as_secs(),
        "answered": q.stats.answered,
        "answered_within_sla": q.stats.answered_within_sla,
        "abandoned": q.stats.abandoned,
        "full": q.stats.full,
        "agents": q.agents.iter().map(|a| agent_json(queues, a)).collect::<Vec<_>>(),
        "callers": q.callers.iter().map(caller_json).collect::<Vec<_>>(),
    })
}

/// A waiting caller; `virtual`: hung up keeping their place (virtual hold).
fn caller_json(c: &CallerSnapshot) -> Value {
    json!({
        "entry": c.entry,
        "waited_secs": c.waited.as_secs(),
        "virtual": c.line.is_virtual(),
        "line": c.line.as_str(),
    })
}

async fn queues(State(s): State<HttpState>, h: HeaderMap) -> Response {
    guard!(s, h, Role::Viewer);
    let queues = &s.services.queues;
    let list: Vec<Value> = queues
        .snapshot()
        .iter()
        .map(|q| {
            let mut v = queue_json(queues, q);
            if let Some(c) = queues.config(&q.name) {
                v["sla_secs"] = c.sla_secs.into();
                v["max_callers"] = c.max_callers.into();
            }
            v
        })
        .collect();
    Json(json!({ "queues": list })).into_response()
}

async fn agents(State(s): State<HttpState>, h: HeaderMap) -> Response {
    guard!(s, h, Role::Viewer);
    let queues = &s.services.queues;
    let list: Vec<Value> = queues
        .agents()
        .iter()
        .map(|a| agent_json(queues, a))
        .collect();
    Json(json!({ "agents": list })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateBody {
    target: String,
    state: String,
}

async fn set_state(
    State(s): State<HttpState>,
    h: HeaderMap,
    b: Result<Json<StateBody>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let b = tri!(body(b));
    let paused = match b.state.as_str() {
        "paused" => true,
        "available" => false,
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "state must be available or paused",
            )
        }
    };
    if !s.services.queues.set_paused(&b.target, paused) {
        return error(StatusCode::NOT_FOUND, "no agent with that target");
    }
    tracing::info!(agent = %b.target, state = %b.state, "queue: agent state set");
    let agent = s
        .services
        .queues
        .agents()
        .into_iter()
        .find(|a| a.target == b.target);
    Json(json!({ "agent": agent.as_ref().map(|a| agent_json(&s.services.queues, a)) }))
        .into_response()
}
