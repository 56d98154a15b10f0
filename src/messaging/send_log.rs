//! Every provider send is counted and stored with how it ended, so "did the
//! caller get the SMS?" has an answer afterwards, whether a flow or the chat
//! switchboard sent it.

use std::time::SystemTime;

use super::{MessageKind, OutboundMessage, SendError, SendReceipt};
use crate::store::{SendChannel, SendRecord, SendStatus, Store};
use crate::telemetry::names;

/// Who asked for a send, for its stored record.
pub struct SendOrigin {
    pub call_id: Option<String>,
    pub flow: Option<String>,
    /// A flow node id, or "chat:<conversation>".
    pub node: String,
}

/// Count and store one finished send. Never fails the caller: a store
/// error is only logged.
pub fn record(
    store: Option<&dyn Store>,
    channel: SendChannel,
    provider: &'static str,
    origin: SendOrigin,
    msg: &OutboundMessage,
    result: &Result<SendReceipt, SendError>,
) {
    let status = match result {
        Ok(_) => SendStatus::Sent,
        Err(e) if e.never_sent() => SendStatus::Blocked,
        Err(_) => SendStatus::Failed,
    };
    metrics::counter!(
        names::PROVIDER_SENDS,
        "channel" => channel.as_str(),
        "provider" => provider,
        "status" => status.as_str()
    )
    .increment(1);
    let Some(store) = store else {
        return;
    };
    let (provider_id, error_kind, error_code, attempts) = match result {
        Ok(r) => (Some(r.provider_id.clone()), None, None, Some(r.attempts)),
        // SendError does not say how many attempts it took.
        Err(e) => (None, Some(e.kind().to_string()), e.provider_code(), None),
    };
    let node = origin.node;
    let record = SendRecord {
        idempotency_key: msg.idempotency_key.clone(),
        channel,
        provider: provider.to_string(),
        // The whole number: the database is the record; logs stay masked.
        recipient: msg.to.clone(),
        call_id: origin.call_id,
        flow: origin.flow,
        node: Some(node.clone()),
        status,
        provider_id,
        error_kind,
        error_code,
        attempts,
        segments: sms_segments(channel, &msg.kind),
        created_at: SystemTime::now(),
    };
    if let Err(e) = store.record_send(record) {
        tracing::warn!(%node, %e, "store: cannot queue send record");
    }
}

/// What an SMS text bills as; WhatsApp messages have no segments.
fn sms_segments(channel: SendChannel, kind: &MessageKind) -> Option<u32> {
    match (channel, kind) {
        (SendChannel::Sms, MessageKind::Text { body }) => Some(super::segments::count(body)),
        _ => None,
    }
}
