//! One file per node type: each exposes `run(node, cx) -> Result<Next, Ended>`.

pub mod ask;
pub mod branch;
pub mod breakout;
pub mod breakout_return;
pub mod choice;
pub mod escalate;
pub mod gather;
pub mod handoff;
pub mod hangup;
pub mod http;
pub mod message;
pub mod pause;
pub mod play;
pub mod queue;
pub mod record;
pub mod save_lead;
pub mod say;
pub mod send_digits;
pub mod send_sms;
pub mod send_whatsapp;
pub mod set;
pub mod stream;
pub mod transfer;
pub mod webhook_app;

use super::interp::{FlowCx, Next};

/// `to` as written, or the caller's number when blank.
pub(crate) fn recipient(to: &str, cx: &FlowCx) -> String {
    let to = super::template::render(to, &cx.vars);
    if to.trim().is_empty() {
        cx.vars.get("caller").cloned().unwrap_or_default()
    } else {
        to.trim().to_string()
    }
}

/// What a chat prompt says on `attempt`: its text first, then the retry
/// prompt (or `default`), templated.
pub(crate) fn attempt_text(
    attempt: u32,
    text: &str,
    retry: &Option<String>,
    default: &str,
    vars: &super::template::Vars,
) -> String {
    let t = match (attempt, retry) {
        (0, _) => text,
        (_, Some(r)) => r.as_str(),
        (_, None) => default,
    };
    super::template::render(t, vars)
}

/// What send_sms, send_whatsapp and breakout share: send through
/// `provider` with a per-call-and-node idempotency key, record the send,
/// and store the provider id or the error (`<node>.error`,
/// `<node>.error_kind`) in variables. True when sent.
pub(crate) struct Delivery<'a> {
    pub channel: crate::store::SendChannel,
    pub label: &'static str,
    pub node_id: &'a str,
}

/// `next` after a send, else `on_error` (or `next` when that's unset).
pub(crate) fn after_send(sent: bool, next: &Option<String>, on_error: &Option<String>) -> Next {
    if sent {
        next.clone()
    } else {
        on_error.clone().or_else(|| next.clone())
    }
}

pub(crate) async fn deliver(
    d: Delivery<'_>,
    provider: Option<std::sync::Arc<dyn crate::messaging::MessagingProvider>>,
    to: String,
    from: Option<String>,
    kind: crate::messaging::MessageKind,
    cx: &mut FlowCx,
) -> bool {
    let Some(provider) = provider else {
        tracing::error!(call = %cx.label, node = %d.node_id, "{}: no provider configured", d.label);
        cx.vars.insert(
            format!("{}.error", d.node_id),
            "no provider configured".into(),
        );
        cx.vars
            .insert(format!("{}.error_kind", d.node_id), "config".into());
        return false;
    };
    let msg = crate::messaging::OutboundMessage {
        to: to.clone(),
        from,
        kind,
        // One send per visit of the node (a menu may come back to it),
        // however often that send is retried.
        idempotency_key: format!(
            "{}:{}:{}",
            cx.vars
                .get("call_id")
                .or_else(|| cx.vars.get("conversation_id"))
                .cloned()
                .unwrap_or_else(|| cx.label.to_string()),
            d.node_id,
            cx.visits.get(d.node_id).copied().unwrap_or(1)
        ),
    };
    let result = provider.send(&msg).await;
    crate::messaging::send_log::record(
        cx.services.store.as_deref(),
        d.channel,
        provider.name(),
        crate::messaging::send_log::SendOrigin {
            call_id: cx.vars.get("call_id").filter(|c| !c.is_empty()).cloned(),
            flow: Some(cx.flow.name.clone()),
            node: d.node_id.to_string(),
        },
        &msg,
        &result,
    );
    match result {
        Ok(receipt) => {
            tracing::info!(call = %cx.label, node = %d.node_id, to = %crate::mask::phone(&to), id = %receipt.provider_id, "{} sent", d.label);
            cx.vars
                .insert(format!("{}.id", d.node_id), receipt.provider_id);
            true
        }
        Err(e) => {
            tracing::warn!(call = %cx.label, node = %d.node_id, to = %crate::mask::phone(&to), error = %e, "{} failed", d.label);
            cx.vars
                .insert(format!("{}.error", d.node_id), e.to_string());
            cx.vars
                .insert(format!("{}.error_kind", d.node_id), e.kind().to_string());
            false
        }
    }
}
