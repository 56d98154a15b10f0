//! `send_whatsapp`: an approved template to the caller (or `to`).

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::SendWhatsApp;
use crate::flow::send_log;
use crate::flow::template::render;
use crate::messaging::{MessageKind, OutboundMessage};
use crate::store::SendChannel;

pub async fn run(node: &SendWhatsApp, cx: &mut FlowCx) -> Result<Next, Ended> {
    let to = super::recipient(&node.to, cx);
    let Some(provider) = cx.services.whatsapp.clone() else {
        tracing::error!(call = %cx.call, node = %node.id, "send_whatsapp: no WhatsApp provider configured");
        return Ok(node.on_error.clone().or_else(|| node.next.clone()));
    };
    let msg = OutboundMessage {
        to: to.clone(),
        from: None,
        kind: MessageKind::WhatsAppTemplate {
            name: node.template.clone(),
            language: node.language.clone(),
            parameters: node
                .parameters
                .iter()
                .map(|p| render(p, &cx.vars))
                .collect(),
        },
        idempotency_key: format!(
            "{}:{}",
            cx.vars.get("call_id").cloned().unwrap_or_default(),
            node.id
        ),
    };
    let result = provider.send(&msg).await;
    send_log::record(
        cx,
        SendChannel::WhatsApp,
        provider.name(),
        &node.id,
        &msg,
        &result,
    );
    match result {
        Ok(receipt) => {
            tracing::info!(call = %cx.call, node = %node.id, to = %crate::mask::phone(&to), id = %receipt.provider_id, "WhatsApp sent");
            cx.vars
                .insert(format!("{}.id", node.id), receipt.provider_id);
            Ok(node.next.clone())
        }
        Err(e) => {
            tracing::warn!(call = %cx.call, node = %node.id, to = %crate::mask::phone(&to), error = %e, "WhatsApp failed");
            cx.vars.insert(format!("{}.error", node.id), e.to_string());
            Ok(node.on_error.clone().or_else(|| node.next.clone()))
        }
    }
}
