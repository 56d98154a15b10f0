//! `send_sms`: a templated text to the caller (or `to`).

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::SendSms;
use crate::flow::send_log;
use crate::flow::template::render;
use crate::messaging::{MessageKind, OutboundMessage};
use crate::store::SendChannel;

pub async fn run(node: &SendSms, cx: &mut FlowCx) -> Result<Next, Ended> {
    let to = super::recipient(&node.to, cx);
    let Some(provider) = cx.services.sms.clone() else {
        tracing::error!(call = %cx.call, node = %node.id, "send_sms: no SMS provider configured");
        return Ok(node.on_error.clone().or_else(|| node.next.clone()));
    };
    let msg = OutboundMessage {
        to: to.clone(),
        from: node.from.as_ref().map(|f| render(f, &cx.vars)),
        kind: MessageKind::Text {
            body: render(&node.body, &cx.vars),
        },
        // One send per call and node, however often it is retried.
        idempotency_key: format!(
            "{}:{}",
            cx.vars.get("call_id").cloned().unwrap_or_default(),
            node.id
        ),
    };
    let result = provider.send(&msg).await;
    send_log::record(
        cx,
        SendChannel::Sms,
        provider.name(),
        &node.id,
        &msg,
        &result,
    );
    match result {
        Ok(receipt) => {
            tracing::info!(call = %cx.call, node = %node.id, to = %crate::mask::phone(&to), id = %receipt.provider_id, "SMS sent");
            cx.vars
                .insert(format!("{}.id", node.id), receipt.provider_id);
            Ok(node.next.clone())
        }
        Err(e) => {
            tracing::warn!(call = %cx.call, node = %node.id, to = %crate::mask::phone(&to), error = %e, "SMS failed");
            cx.vars.insert(format!("{}.error", node.id), e.to_string());
            Ok(node.on_error.clone().or_else(|| node.next.clone()))
        }
    }
}
