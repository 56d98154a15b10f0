//! `send_whatsapp`: an approved template to the caller (or `to`).

use super::{deliver, Delivery};
use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::SendWhatsApp;
use crate::flow::template::render;
use crate::messaging::MessageKind;
use crate::store::SendChannel;

pub async fn run(node: &SendWhatsApp, cx: &mut FlowCx) -> Result<Next, Ended> {
    let to = super::recipient(&node.to, cx);
    let kind = MessageKind::WhatsAppTemplate {
        name: node.template.clone(),
        language: node.language.clone(),
        parameters: node
            .parameters
            .iter()
            .map(|p| render(p, &cx.vars))
            .collect(),
    };
    let delivery = Delivery {
        channel: SendChannel::WhatsApp,
        label: "WhatsApp",
        node_id: &node.id,
    };
    let provider = cx.services.whatsapp.clone();
    let sent = deliver(delivery, provider, to, None, kind, cx).await;
    Ok(super::after_send(sent, &node.next, &node.on_error))
}
