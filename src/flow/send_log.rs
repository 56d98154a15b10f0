//! Every provider send a flow makes is counted and stored with how it
//! ended, so "did the caller get the SMS?" has an answer after the call.

use std::time::SystemTime;

use super::interp::FlowCx;
use crate::messaging::{OutboundMessage, SendError, SendReceipt};
use crate::store::{SendChannel, SendRecord, SendStatus};

/// Count and store one finished send. Never fails the flow: a store error
/// is only logged.
pub(crate) fn record(
    cx: &FlowCx,
    channel: SendChannel,
    provider: &'static str,
    node: &str,
    msg: &OutboundMessage,
    result: &Result<SendReceipt, SendError>,
) {
    let status = match result {
        Ok(_) => SendStatus::Sent,
        Err(_) => SendStatus::Failed,
    };
    metrics::counter!(
        "crossline_provider_sends_total",
        "channel" => channel.as_str(),
        "provider" => provider,
        "status" => status.as_str()
    )
    .increment(1);
    let Some(store) = &cx.services.store else {
        return;
    };
    let (provider_id, error_kind, error_code, attempts) = match result {
        Ok(r) => (Some(r.provider_id.clone()), None, None, Some(r.attempts)),
        // SendError does not say how many attempts it took.
        Err(e) => (None, Some(e.kind().to_string()), e.provider_code(), None),
    };
    let record = SendRecord {
        idempotency_key: msg.idempotency_key.clone(),
        channel,
        provider: provider.to_string(),
        // The whole number: the database is the record; logs stay masked.
        recipient: msg.to.clone(),
        call_id: cx.vars.get("call_id").filter(|c| !c.is_empty()).cloned(),
        flow: Some(cx.flow.name.clone()),
        node: Some(node.to_string()),
        status,
        provider_id,
        error_kind,
        error_code,
        attempts,
        created_at: SystemTime::now(),
    };
    if let Err(e) = store.record_send(record) {
        tracing::warn!(call = %cx.label, node, %e, "store: cannot queue send record");
    }
}
