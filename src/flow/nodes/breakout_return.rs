//! `breakout_return` (Breakout: Return): hand the chosen variables back to
//! the call that sent the link, and tell the visitor how that went.

use crate::breakout::{ReturnOutcome, Returned};
use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::BreakoutReturn;
use crate::flow::template::render;

pub async fn run(node: &BreakoutReturn, cx: &mut FlowCx) -> Result<Next, Ended> {
    let values: Returned = node
        .vars
        .iter()
        .map(|k| (k.clone(), cx.vars.get(k).cloned().unwrap_or_default()))
        .collect();
    let Some(session) = cx.chat_side()?.breakout.clone() else {
        tracing::warn!(on = %cx.label, node = %node.id, "breakout_return outside a breakout chat");
        return Ok(node.next.clone());
    };
    let outcome = session.complete(values).await;
    tracing::info!(on = %cx.label, breakout = %session.id, ?outcome, "breakout returned");
    let text = match outcome {
        ReturnOutcome::Delivered => node
            .message
            .clone()
            .unwrap_or_else(|| "Thank you! You can go back to your call now.".into()),
        ReturnOutcome::CallerLeft => node.caller_left_message.clone().unwrap_or_else(|| {
            "Thank you! The call had already ended, but we have saved your answers.".into()
        }),
        ReturnOutcome::TooLate => node
            .too_late_message
            .clone()
            .unwrap_or_else(|| "Sorry, the time for this form has run out.".into()),
    };
    let text = render(&text, &cx.vars);
    // After a timeout the chat is closed already: nothing more to say.
    let _ = cx.bot_says(&text, 0).await;
    Ok(node.next.clone())
}
