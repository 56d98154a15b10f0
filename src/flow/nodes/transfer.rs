//! `transfer`: ring a team or an agent with hold audio for the caller, then
//! bridge. No answer, busy or failure takes `on_failure`.

use std::time::Duration;

use tracing::Instrument;

use crate::flow::interp::{Ended, FlowCx, Next, TransferEvent, TransferRequest};
use crate::flow::model::{Ring, Transfer};
use crate::flow::template::render;
use crate::tts::TtsRequest;

pub async fn run(node: &Transfer, cx: &mut FlowCx) -> Result<Next, Ended> {
    if let Some(queue) = node.targets.first().and_then(|t| t.strip_prefix("queue:")) {
        return super::queue::wait(&node.id, queue, Vec::new(), &node.next, cx).await;
    }
    if node.refer {
        let target = node
            .targets
            .first()
            .map(|t| render(t, &cx.vars))
            .unwrap_or_default();
        let span = transfer_span(1, "refer");
        let event = cx.refer(target).instrument(span.clone()).await?;
        record_outcome(&span, &event);
        return match event {
            // The caller's side took over; crossline has hung up.
            TransferEvent::Bridged { target } => {
                cx.vars.insert(format!("{}.agent", node.id), target);
                Ok(None)
            }
            TransferEvent::Failed { status } => {
                cx.vars
                    .insert(format!("{}.status", node.id), status.to_string());
                Ok(node.on_failure.clone())
            }
            TransferEvent::AgentHungUp => Ok(None),
        };
    }
    let hold_message = match &node.hold_message {
        Some(text) => {
            let req = TtsRequest {
                text: render(text, &cx.vars),
                language: node.language.clone(),
                voice: None,
                rate_wpm: None,
            };
            cx.speech(&req).await.ok()
        }
        None => None,
    };
    let hold_music = cx.hold_music(&node.id, &node.hold_music).await;
    let req = TransferRequest {
        targets: node.targets.iter().map(|t| render(t, &cx.vars)).collect(),
        parallel: node.ring == Ring::Parallel,
        ring_timeout: Duration::from_secs_f64(node.ring_timeout_secs),
        trunk: node.trunk.clone(),
        hold_message,
        hold_music,
        repeat_interval: node.repeat_interval_secs.map(Duration::from_secs),
        caller_id: None,
    };
    let span = transfer_span(req.targets.len(), "bridge");
    let event = cx.transfer(req).instrument(span.clone()).await?;
    record_outcome(&span, &event);
    match event {
        TransferEvent::Bridged { target } => {
            cx.vars.insert(format!("{}.agent", node.id), target);
            if let Some(digits) = &node.send_digits_on_answer {
                let digits = super::send_digits::sendable(&render(digits, &cx.vars));
                if !digits.is_empty() {
                    // Not waited for: the agent hanging up must still end it.
                    cx.request(crate::flow::interp::CallRequest::SendDigits {
                        digits,
                        duration_ms: crate::flow::model::digit_ms(),
                        to_agent: true,
                    })?;
                }
            }
            // Connected: wait until the agent hangs up (the caller hanging
            // up ends the flow on its own).
            while cx.next_transfer_event().await? != TransferEvent::AgentHungUp {}
            Ok(node.next.clone())
        }
        TransferEvent::Failed { status } => {
            cx.vars
                .insert(format!("{}.status", node.id), status.to_string());
            Ok(node.on_failure.clone())
        }
        TransferEvent::AgentHungUp => Ok(node.next.clone()),
    }
}

/// From the request to the answer or the failure (not the bridged talk).
fn transfer_span(targets: usize, mode: &'static str) -> tracing::Span {
    tracing::info_span!(
        "transfer",
        targets = targets as i64,
        %mode,
        outcome = tracing::field::Empty,
        status = tracing::field::Empty,
    )
}

fn record_outcome(span: &tracing::Span, event: &TransferEvent) {
    match event {
        TransferEvent::Bridged { .. } => span.record("outcome", "bridged"),
        TransferEvent::Failed { status } => span
            .record("outcome", "failed")
            .record("status", i64::from(*status)),
        TransferEvent::AgentHungUp => span.record("outcome", "agent_hung_up"),
    };
}
