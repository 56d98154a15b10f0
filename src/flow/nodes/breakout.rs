//! `breakout` (Breakout: To chat): text the caller a link to a web chat,
//! hold the call with music and a repeated message while they fill it in,
//! then carry on with what Breakout: Return handed back, or go to the
//! timeout flow. A failed SMS takes `on_error` at once.

use std::time::Duration;

use tracing::Instrument;

use super::{deliver, Delivery};
use crate::breakout::{Notices, Outcome, WaitGuard};
use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Breakout;
use crate::flow::template::render;
use crate::messaging::MessageKind;
use crate::store::SendChannel;
use crate::tts::TtsRequest;

pub async fn run(node: &Breakout, cx: &mut FlowCx) -> Result<Next, Ended> {
    let to = super::recipient(&node.phone_number, cx);
    let call_id = cx.vars.get("call_id").cloned().unwrap_or_default();
    let timeout = Duration::from_secs(node.timeout_secs);
    let started = cx
        .services
        .breakouts
        .start(
            &call_id,
            &node.breakout_flow,
            &to,
            timeout,
            Notices {
                caller_left: render(&node.caller_left_message, &cx.vars),
                timed_out: render(&node.timeout_message, &cx.vars),
            },
        )
        .await;
    let session = started.session.clone();
    cx.vars
        .insert(format!("{}.id", node.id), session.id.clone());

    // The link always goes last, on its own, so no template can break it.
    let link = format!("{}/b/{}", cx.services.public_base_url, started.token);
    let text = render(&node.sms_message, &cx.vars);
    let body = if text.trim().is_empty() {
        link
    } else {
        format!("{} {link}", text.trim_end())
    };
    let from = node.from.as_ref().map(|f| render(f, &cx.vars));
    let provider = cx.services.sms.clone();
    let delivery = Delivery {
        channel: SendChannel::Sms,
        label: "breakout SMS",
        node_id: &node.id,
    };
    // Anyone can call in with any caller ID: the link's SMS is a public
    // path, so the outbound policy decides (E.164 numbers; others are the
    // flow author's own and go to the provider as they are).
    let refused = to.starts_with('+')
        && cx
            .services
            .policy
            .admit_any(
                std::time::Instant::now(),
                "sms",
                &to,
                crate::messaging::policy::Requester::default(),
            )
            .map_err(|r| {
                cx.vars
                    .insert(format!("{}.error_kind", node.id), "policy".into());
                cx.vars
                    .insert(format!("{}.error", node.id), r.as_str().into());
            })
            .is_err();
    if refused || !deliver(delivery, provider, to, from, MessageKind::Text { body }, cx).await {
        session.send_failed().await;
        cx.vars
            .insert(format!("{}.status", node.id), "send_failed".into());
        return Ok(node.on_error.clone().or_else(|| node.next.clone()));
    }

    let message = if node.hold_message.trim().is_empty() {
        None
    } else {
        let req = TtsRequest {
            text: render(&node.hold_message, &cx.vars),
            language: node.language.clone(),
            voice: None,
            rate_wpm: None,
        };
        match cx.speech(&req).await {
            Ok(samples) => Some(samples),
            // Music alone beats dead air.
            Err(e) => {
                tracing::error!(on = %cx.label, node = %node.id, %e, "breakout: hold message TTS failed");
                None
            }
        }
    };
    let music = cx.hold_music(&node.id, &node.hold_music).await;
    cx.hold(
        message,
        Some(Duration::from_secs(node.repeat_interval_secs)),
        music,
    )?;

    // If the caller hangs up, this task is dropped and the guard tells
    // the chat.
    let _guard = WaitGuard(session.clone());
    let mut returned = started.returned;
    let wait = tracing::info_span!("breakout_wait", timeout_secs = node.timeout_secs as i64);
    let outcome = cx
        .call_wait(session.wait(&mut returned, timeout))
        .instrument(wait)
        .await?;
    match outcome {
        // The chat closed without a Return: no point holding the caller.
        Outcome::Closed => {
            tracing::info!(on = %cx.label, node = %node.id, "breakout chat closed without a return: going on");
            cx.vars
                .insert(format!("{}.status", node.id), "closed".into());
            Ok(node.on_closed.clone().or_else(|| node.next.clone()))
        }
        Outcome::Returned(values) => {
            for (name, value) in values {
                cx.keep(&name, &value)?;
                cx.vars.insert(name, value);
            }
            cx.vars
                .insert(format!("{}.status", node.id), "returned".into());
            Ok(node.next.clone())
        }
        Outcome::TimedOut => {
            cx.vars
                .insert(format!("{}.status", node.id), "timeout".into());
            let Some(name) = &node.timeout_flow else {
                return Ok(node.next.clone());
            };
            match cx.services.flow(name) {
                Some(flow) => {
                    tracing::info!(on = %cx.label, flow = %name, "breakout timed out: on to the timeout flow");
                    let start = flow.start.clone();
                    cx.flow = flow;
                    Ok(Some(start))
                }
                None => {
                    tracing::error!(on = %cx.label, flow = %name, "breakout: timeout flow is gone (reload?)");
                    Ok(node.next.clone())
                }
            }
        }
    }
}
