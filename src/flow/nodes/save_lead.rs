//! `save_lead`: keep who the visitor is (name, email, phone) with the
//! conversation, so an operator can reconnect with them later by SMS.

use std::time::SystemTime;

use crate::chat::{input, InputKind};
use crate::flow::interp::{Ended, FlowCx, Io, Next};
use crate::flow::model::SaveLead;
use crate::flow::template::render;
use crate::store::LeadRecord;

pub async fn run(node: &SaveLead, cx: &mut FlowCx) -> Result<Next, Ended> {
    let region = cx.services.chat.phone_region();
    let field = |template: &Option<String>, kind: InputKind| {
        let raw = render(template.as_deref()?, &cx.vars);
        match input::validate(kind, &raw, region) {
            Ok(v) => Some(v),
            Err(why) => {
                if !raw.trim().is_empty() {
                    tracing::info!(on = %cx.label, node = %node.id, why, "save_lead: value left out");
                }
                None
            }
        }
    };
    let email = field(&node.email, InputKind::Email);
    let phone = field(&node.phone, InputKind::Phone);
    let name = node
        .name
        .as_deref()
        .map(|t| {
            render(t, &cx.vars)
                .trim()
                .chars()
                .take(200)
                .collect::<String>()
        })
        .filter(|n| !n.is_empty());
    let conversation_id = match &cx.io {
        Io::Chat(c) => Some(c.conversation.id.clone()),
        Io::Voice(_) => None,
    };
    if email.is_none() && phone.is_none() {
        tracing::info!(on = %cx.label, node = %node.id, "save_lead: no email or phone; nothing kept");
        return Ok(node.next.clone());
    }
    let now = SystemTime::now();
    let record = LeadRecord {
        id: crate::chat::random_token(12),
        name,
        email,
        phone,
        conversation_id: conversation_id.clone(),
        created_at: now,
        updated_at: now,
    };
    if let Some(store) = cx.services.store.clone() {
        // Written through before the console is told, so it reads it back.
        let stored = match store.upsert_lead(record) {
            Ok(()) => store.flush().await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => {
                if let Some(id) = &conversation_id {
                    cx.services.chat.announce(id);
                }
            }
            Err(e) => {
                tracing::warn!(on = %cx.label, node = %node.id, %e, "save_lead: not stored")
            }
        }
    }
    Ok(node.next.clone())
}
