//! `escalate_to_call`, the "API connection card": Chat or Phone? For
//! Phone: the legal notice, the number (raw, as typed), a callback through
//! the trunk, and then what the carrier said. A number it refuses (SIP 404,
//! 484, 604) or that can't be one is asked for again; busy or no answer
//! offers another try; an answer moves on to `next`.
//!
//! Sets `<id>.outcome` (answered, chat, invalid_number, busy, no_answer,
//! declined, rate_limited, failed, gave_up), `<id>.callback_id`,
//! `<id>.phone` and `<id>.sip_status`.

use crate::callback::{CallbackError, NewCallback};
use crate::chat::{Choice, InputKind, VisitorInput};
use crate::flow::interp::{Ended, FlowCx, Io, Next};
use crate::flow::model::EscalateToCall;
use crate::flow::template::render;
use crate::store::CallbackRecord;

/// One question with buttons; the value picked, if any.
async fn ask(cx: &mut FlowCx, text: &str, choices: Vec<Choice>) -> Result<Option<String>, Ended> {
    cx.typing_for(0)
        .await?
        .prompt(InputKind::Choice, text, choices.clone(), None)
        .ok_or(Ended)?;
    let raw = match cx.next_input().await? {
        VisitorInput::Answer { value, .. } | VisitorInput::Text(value) => value,
    };
    Ok(super::choice::pick(&choices, &raw).and_then(|i| choices.get(i).map(|c| c.value.clone())))
}

/// Wait for the callback to be answered or to end (or the chat to close).
async fn follow(cx: &mut FlowCx, id: &str) -> Result<CallbackRecord, Ended> {
    let callbacks = cx.services.callbacks.clone();
    let Some(mut rx) = callbacks.watch(id) else {
        return callbacks.get(id).await.ok_or(Ended);
    };
    let mut closed = cx.chat_side()?.conversation.closed_watch();
    loop {
        {
            let now = rx.borrow_and_update();
            if matches!(now.state.as_str(), "answered" | "failed" | "completed") {
                return Ok(now.clone());
            }
        }
        let gone = tokio::select! {
            changed = rx.changed() => changed.is_err(),
            _ = closed.wait_for(|c| *c) => return Err(Ended),
        };
        if gone {
            return callbacks.get(id).await.ok_or(Ended);
        }
    }
}

fn choice(label: &str, value: &str, cx: &FlowCx) -> Choice {
    Choice {
        label: render(label, &cx.vars),
        value: value.into(),
    }
}

pub async fn run(node: &EscalateToCall, cx: &mut FlowCx) -> Result<Next, Ended> {
    let id = node.id.clone();
    let set = |cx: &mut FlowCx, key: &str, value: &str| {
        cx.vars.insert(format!("{id}.{key}"), value.to_string());
    };
    let question = render(&node.text, &cx.vars);
    let options = vec![
        choice(&node.chat_label, "chat", cx),
        choice(&node.phone_label, "phone", cx),
    ];
    if ask(cx, &question, options).await?.as_deref() != Some("phone") {
        set(cx, "outcome", "chat");
        return Ok(node.on_chat.clone());
    }
    let (conversation_id, source) = match &cx.io {
        Io::Chat(c) => (Some(c.conversation.id.clone()), c.conversation.source()),
        Io::Voice(_) => (None, None),
    };
    let bot = cx.flow.name.clone();
    let mut redial: Option<String> = None;
    let mut notice_shown = false;
    for _ in 0..node.max_attempts {
        let raw = match redial.take() {
            Some(number) => number,
            None => {
                if !notice_shown {
                    // Giving the number under this notice is the consent.
                    cx.bot_says(&render(&node.legal_notice, &cx.vars), 0)
                        .await?;
                    notice_shown = true;
                }
                let prompt = render(&node.phone_prompt, &cx.vars);
                cx.typing_for(0)
                    .await?
                    .prompt(InputKind::Phone, &prompt, Vec::new(), None)
                    .ok_or(Ended)?;
                match cx.next_input().await? {
                    VisitorInput::Answer { value, .. } | VisitorInput::Text(value) => value,
                }
            }
        };
        let mut context = serde_json::Map::new();
        if let Some(c) = &conversation_id {
            context.insert("conversation_id".into(), c.clone().into());
        }
        context.insert("bot".into(), bot.clone().into());
        let request = NewCallback {
            phone: raw.clone(),
            flow: node.flow.clone(),
            target: node.target.clone(),
            consent: Some((true, render(&node.legal_notice, &cx.vars))),
            context,
            conversation_id: conversation_id.clone(),
            bot: Some(bot.clone()),
            source,
        };
        let placed = cx.services.place_callback(request, &format!("flow:{bot}"));
        let record = match placed {
            Ok(r) => r,
            Err(CallbackError::InvalidNumber(why)) => {
                tracing::info!(on = %cx.label, node = %id, why, "escalate: not a number");
                set(cx, "outcome", "invalid_number");
                let text = render(&node.invalid_number_message, &cx.vars);
                cx.bot_says(&text, 0).await?;
                continue;
            }
            Err(CallbackError::Refused(r)) => {
                set(cx, "outcome", "refused");
                cx.bot_says(&format!("Sorry, {r}."), 0).await?;
                return Ok(node.on_failure.clone());
            }
            Err(e @ (CallbackError::TooManyForPhone | CallbackError::TooManyForKey)) => {
                set(cx, "outcome", "rate_limited");
                cx.bot_says(&e.to_string(), 0).await?;
                return Ok(node.on_failure.clone());
            }
            Err(e) => {
                tracing::warn!(on = %cx.label, node = %id, error = %e, "escalate: no callback");
                set(cx, "outcome", "failed");
                return Ok(node.on_failure.clone());
            }
        };
        set(cx, "callback_id", &record.id);
        set(cx, "phone", &record.phone);
        let calling = render(&node.calling_message, &cx.vars);
        cx.bot_says(&calling, 0).await?;
        let done = follow(cx, &record.id).await?;
        let outcome = crate::callback::outcome(&done);
        set(cx, "outcome", outcome);
        set(
            cx,
            "sip_status",
            &done.sip_status.map(|s| s.to_string()).unwrap_or_default(),
        );
        match outcome {
            "answered" | "completed" => {
                let text = render(&node.connected_message, &cx.vars);
                cx.bot_says(&text, 0).await?;
                return Ok(node.next.clone());
            }
            "invalid_number" => {
                let text = render(&node.invalid_number_message, &cx.vars);
                cx.bot_says(&text, 0).await?;
            }
            "busy" | "no_answer" | "declined" => {
                let text = render(&node.unreachable_message, &cx.vars);
                let options = vec![
                    choice(&node.retry_label, "retry", cx),
                    choice(&node.keep_chatting_label, "chat", cx),
                ];
                if ask(cx, &text, options).await?.as_deref() != Some("retry") {
                    return Ok(node.on_chat.clone());
                }
                redial = Some(raw);
            }
            _ => return Ok(node.on_failure.clone()),
        }
    }
    set(cx, "outcome", "gave_up");
    Ok(node.on_failure.clone())
}
