//! `http`, the "API connection card": call an API with a templated request,
//! retry transient failures, map JSON reply fields to variables; any failure
//! takes `on_error`.

use std::time::Duration;

use tracing::Instrument;

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Http;
use crate::flow::template::{render, render_json};

pub async fn run(node: &Http, cx: &mut FlowCx) -> Result<Next, Ended> {
    // The URL is templated from the call's variables: not a span field.
    let span = tracing::info_span!("http", method = %node.method, status = tracing::field::Empty);
    let result = call(node, cx).instrument(span.clone()).await;
    if let Ok(status) = &result {
        span.record("status", i64::from(*status));
    }
    match result {
        Ok(status) => {
            cx.vars
                .insert(format!("{}.status", node.id), status.to_string());
            Ok(node.next.clone())
        }
        Err(e) => {
            tracing::warn!(call = %cx.label, node = %node.id, error = %e, "http node failed");
            cx.vars.insert(format!("{}.error", node.id), e);
            Ok(node.on_error.clone().or_else(|| node.next.clone()))
        }
    }
}

async fn call(node: &Http, cx: &mut FlowCx) -> Result<u16, String> {
    let url = render(&node.url, &cx.vars);
    let method = reqwest::Method::from_bytes(node.method.to_ascii_uppercase().as_bytes())
        .map_err(|e| e.to_string())?;
    let body = node.body.as_ref().map(|b| render_json(b, &cx.vars));
    if let Some(b) = &body {
        // Fail early on a template that doesn't render to JSON.
        serde_json::from_str::<serde_json::Value>(b)
            .map_err(|e| format!("body is not JSON: {e}"))?;
    }
    let mut attempt = 0;
    let reply = loop {
        attempt += 1;
        let mut req = cx
            .services
            .http
            .request(method.clone(), &url)
            .timeout(Duration::from_millis(node.timeout_ms));
        for (k, v) in &node.headers {
            req = req.header(k.as_str(), render(v, &cx.vars));
        }
        if let Some(b) = &body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.clone());
        }
        match req.send().await {
            Ok(resp) if resp.status().is_server_error() && attempt <= node.retries => {}
            Ok(resp) => break resp,
            Err(e) if attempt <= node.retries && (e.is_timeout() || e.is_connect()) => {}
            // The URL is templated from the call's variables: keep it out.
            Err(e) => return Err(crate::net::http_error_text(e)),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    };
    let status = reply.status().as_u16();
    if !reply.status().is_success() {
        return Err(format!("status {status}"));
    }
    if node.map.is_empty() {
        return Ok(status);
    }
    let json: serde_json::Value = reply
        .json()
        .await
        .map_err(|e| format!("reply is not JSON: {e}"))?;
    for (var, pointer) in &node.map {
        let value = match json.pointer(pointer) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        cx.vars.insert(var.clone(), value);
    }
    Ok(status)
}
