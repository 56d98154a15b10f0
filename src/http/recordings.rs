//! Recordings over the API: start, stop, pause or resume a live call's
//! recording (`POST /v1/calls/{call_id}/recording`), list them, download
//! one (with `Range`), delete one. Recordings are addressed by id only: the
//! file is found through its row, and never outside the recordings
//! directory.

use std::time::{Duration, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::api::{body, error, store_call, ListQuery};
use super::auth::Role;
use super::HttpState;
use crate::recording::{RecordAction, RecordError, RecordOptions};
use crate::store::RecordingFilter;

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/v1/calls/{call_id}/recording", post(control))
        .route("/v1/recordings", get(list))
        .route("/v1/recordings/{id}", get(download).delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlBody {
    action: String,
    #[serde(default)]
    channels: Option<crate::config::RecordChannels>,
    #[serde(default)]
    format: Option<crate::config::RecordFormat>,
}

async fn control(
    State(s): State<HttpState>,
    h: HeaderMap,
    Path(call_id): Path<String>,
    b: Result<Json<ControlBody>, JsonRejection>,
) -> Response {
    guard!(s, h, Role::Operator);
    let b = tri!(body(b));
    let options = RecordOptions {
        channels: b.channels,
        format: b.format,
    };
    let Some(action) = RecordAction::parse(&b.action, options) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "action must be start, stop, pause or resume",
        );
    };
    match s.services.recordings.command(call_id, action).await {
        Ok(state) => Json(json!({ "recording": state.name() })).into_response(),
        Err(e @ RecordError::NoCall) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e) => error(StatusCode::CONFLICT, &e.to_string()),
    }
}

async fn list(State(s): State<HttpState>, h: HeaderMap, Query(q): Query<ListQuery>) -> Response {
    guard!(s, h, Role::Operator);
    let filter = RecordingFilter {
        limit: q.limit(),
        call_id: q.call_id,
        before: q.before.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
    };
    let rows = tri!(store_call(s.store.recordings(&filter)).await);
    let next_before = (rows.len() == filter.limit)
        .then(|| rows.last())
        .flatten()
        .map(|r| crate::recording::json(r)["started_at"].clone());
    Json(json!({
        "recordings": rows.iter().map(crate::recording::json).collect::<Vec<_>>(),
        "next_before": next_before,
    }))
    .into_response()
}

/// What a `Range` header asks of a file of `len` bytes (RFC 9110 §14):
/// one range, inclusive; `Err` when it can't be satisfied (416).
fn byte_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        // Another unit: ignore the header, send it all.
        return Ok(None);
    };
    if spec.contains(',') {
        // Several ranges: we send the whole file instead (allowed).
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        // The last N bytes.
        let n: u64 = last.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = first.parse().map_err(|_| ())?;
        let end = match last {
            "" => len.saturating_sub(1),
            l => l.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1)),
        };
        if start >= len || end < start {
            return Err(());
        }
        (start, end)
    };
    Ok(Some(range))
}

/// Largest range served in one response (the rest: ask again).
const MAX_BODY: u64 = 64 * 1024 * 1024;

async fn download(State(s): State<HttpState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    guard!(s, h, Role::Operator);
    let row = tri!(store_call(s.store.recording(&id)).await);
    let Some(row) = row else {
        return error(StatusCode::NOT_FOUND, "no such recording");
    };
    let recordings = &s.services.recordings;
    let failed = |e: String| {
        tracing::warn!(recording = %row.id, %e, "recording: cannot read it");
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the recording",
        )
    };
    let len = match recordings.size(&row).await {
        Ok(Some(len)) => len,
        Ok(None) => return error(StatusCode::NOT_FOUND, "the recording's file is gone"),
        Err(e) => return failed(e),
    };
    let range = h.get(header::RANGE).and_then(|v| v.to_str().ok());
    let wanted = match range.map(|r| byte_range(r, len)) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(r))) => Some(r),
        Some(Err(())) => {
            let mut r = error(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return r;
        }
    };
    let (start, end) = wanted.unwrap_or((0, len.saturating_sub(1)));
    let end = end.min(start.saturating_add(MAX_BODY - 1));
    let bytes = if len == 0 {
        Vec::new()
    } else {
        match recordings.read(&row, start, end).await {
            Ok(b) => b,
            Err(e) => return failed(e),
        }
    };
    let content_type = match row.format.as_str() {
        "ogg" => "audio/ogg",
        _ => "audio/wav",
    };
    let status = match wanted {
        Some(_) => StatusCode::PARTIAL_CONTENT,
        None => StatusCode::OK,
    };
    let mut r = (status, Body::from(bytes)).into_response();
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if wanted.is_some() {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
            headers.insert(header::CONTENT_RANGE, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&row.sha256) {
        headers.insert("x-crossline-sha256", v);
    }
    r
}

async fn remove(State(s): State<HttpState>, h: HeaderMap, Path(id): Path<String>) -> Response {
    guard!(s, h, Role::Operator);
    match s.services.recordings.delete(&id, "api").await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, "no such recording"),
        Err(e) => {
            tracing::warn!(recording = %id, %e, "recording: cannot delete");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot delete the recording",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::byte_range;

    #[test]
    fn ranges_as_rfc_9110_reads_them() {
        assert_eq!(byte_range("bytes=0-99", 1000), Ok(Some((0, 99))));
        assert_eq!(byte_range("bytes=900-", 1000), Ok(Some((900, 999))));
        assert_eq!(byte_range("bytes=-100", 1000), Ok(Some((900, 999))));
        assert_eq!(byte_range("bytes=990-5000", 1000), Ok(Some((990, 999))));
        assert_eq!(byte_range("bytes=1000-", 1000), Err(()));
        assert_eq!(byte_range("bytes=5-2", 1000), Err(()));
        assert_eq!(byte_range("bytes=-0", 1000), Err(()));
        assert_eq!(byte_range("bytes=a-b", 1000), Err(()));
        assert_eq!(byte_range("bytes=0-1,5-6", 1000), Ok(None));
        assert_eq!(byte_range("pages=1-2", 1000), Ok(None));
    }
}
