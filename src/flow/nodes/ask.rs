//! `ask`: prompt for a typed value, check it (email, phone, number, text),
//! ask again with the retry prompt, store it in `var`.

use crate::chat::{input, InputKind, VisitorInput};
use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Ask;

fn default_retry(kind: InputKind) -> &'static str {
    match kind {
        InputKind::Email => "That doesn't look like an email address. Please try again.",
        InputKind::Phone => {
            "That doesn't look like a phone number. Please include the country code, e.g. +34 600 123 456."
        }
        InputKind::Number => "Please enter a number.",
        InputKind::Text | InputKind::Choice => "Please type an answer.",
    }
}

pub async fn run(node: &Ask, cx: &mut FlowCx) -> Result<Next, Ended> {
    for attempt in 0..=node.retries {
        let text = super::attempt_text(
            attempt,
            &node.text,
            &node.retry_prompt,
            default_retry(node.input),
            &cx.vars,
        );
        cx.typing_for(node.typing_ms)
            .await?
            .prompt(node.input, &text, Vec::new(), node.placeholder.clone())
            .ok_or(Ended)?;
        let raw = match cx.next_input().await? {
            VisitorInput::Answer { value, .. } => value,
            VisitorInput::Text(t) => t,
        };
        match input::validate(node.input, &raw, cx.services.chat.phone_region()) {
            Ok(value) => {
                cx.vars.insert(node.var.clone(), value);
                return Ok(node.next.clone());
            }
            Err(why) => {
                tracing::info!(on = %cx.label, node = %node.id, attempt, why, "ask: invalid answer");
            }
        }
    }
    Ok(node.on_failure.clone())
}
