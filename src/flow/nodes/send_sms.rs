//! `send_sms`: a templated text to the caller (or `to`).

use super::{deliver, Delivery};
use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::SendSms;
use crate::flow::template::render;
use crate::messaging::MessageKind;
use crate::store::SendChannel;

pub async fn run(node: &SendSms, cx: &mut FlowCx) -> Result<Next, Ended> {
    let to = super::recipient(&node.to, cx);
    let from = node.from.as_ref().map(|f| render(f, &cx.vars));
    let kind = MessageKind::Text {
        body: render(&node.body, &cx.vars),
    };
    let delivery = Delivery {
        channel: SendChannel::Sms,
        label: "SMS",
        node_id: &node.id,
    };
    let provider = cx.services.sms.clone();
    let sent = deliver(delivery, provider, to, from, kind, cx).await;
    Ok(super::after_send(sent, &node.next, &node.on_error))
}
