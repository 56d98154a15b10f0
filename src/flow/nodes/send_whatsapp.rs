//! `send_whatsapp`: an approved template, its header, body and button
//! parameters filled from flow variables, or free-form `text` (only inside
//! the 24 h customer-service window: the provider is gated by
//! [`crate::messaging::window`]), to the caller (or `to`).

use super::{deliver, Delivery};
use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::SendWhatsApp;
use crate::flow::template::{render, Vars};
use crate::messaging::whatsapp_template::{self, Component};
use crate::messaging::MessageKind;
use crate::store::SendChannel;

/// The Cloud API's limit on a text message's body, in characters.
const MAX_TEXT: usize = 4096;

pub async fn run(node: &SendWhatsApp, cx: &mut FlowCx) -> Result<Next, Ended> {
    let to = super::recipient(&node.to, cx);
    let kind = message(node, &cx.vars);
    let delivery = Delivery {
        channel: SendChannel::WhatsApp,
        label: "WhatsApp",
        node_id: &node.id,
    };
    let provider = cx.services.whatsapp.clone();
    let sent = deliver(delivery, provider, to, None, kind, cx).await;
    Ok(super::after_send(sent, &node.next, &node.on_error))
}

/// What the node sends with these variables (a checked node has exactly
/// one of `text` and `template`).
pub(crate) fn message(node: &SendWhatsApp, vars: &Vars) -> MessageKind {
    let fill = |s: &str| render(s, vars);
    match &node.text {
        Some(text) => MessageKind::WhatsAppText { body: fill(text) },
        None => MessageKind::WhatsAppTemplate {
            name: node.template.clone().unwrap_or_default(),
            language: node.language.clone().unwrap_or_default(),
            components: components(node).iter().map(|c| c.filled(&fill)).collect(),
        },
    }
}

/// The components as written, `parameters` (the shorthand) as a body.
fn components(node: &SendWhatsApp) -> Vec<Component> {
    let shorthand = (!node.parameters.is_empty())
        .then(|| Component::body_texts(node.parameters.iter().cloned()));
    shorthand
        .into_iter()
        .chain(node.components.iter().cloned())
        .collect()
}

/// What `crossline check` reports, by property; each component's own
/// shape was checked as it was read.
pub(crate) fn problems(node: &SendWhatsApp) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match (&node.template, &node.text) {
        (Some(_), Some(_)) | (None, None) => out.push((
            "template",
            "give exactly one of template (any time) and text (inside the 24 h window)".into(),
        )),
        (None, Some(text)) => {
            if text.trim().is_empty() {
                out.push(("text", "the text is empty".into()));
            }
            if text.chars().count() > MAX_TEXT {
                out.push(("text", format!("longer than {MAX_TEXT} characters")));
            }
            if node.language.is_some() || !node.parameters.is_empty() || !node.components.is_empty()
            {
                out.push((
                    "text",
                    "a text message takes no language, parameters or components".into(),
                ));
            }
        }
        (Some(name), None) => {
            let has_body = node
                .components
                .iter()
                .any(|c| matches!(c, Component::Body(_)));
            let both = has_body && !node.parameters.is_empty();
            if both {
                out.push((
                    "parameters",
                    "body parameters go either in `parameters` or in a body component, not both"
                        .into(),
                ));
            }
            // Said once above: not again as "more than one body".
            let all = if both {
                node.components.clone()
            } else {
                components(node)
            };
            out.extend(whatsapp_template::problems(
                name,
                node.language.as_deref(),
                &all,
            ));
        }
    }
    out
}
