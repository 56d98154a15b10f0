//! `queue` (and `transfer` to `queue:<name>`): wait in a `[[queues]]` queue
//! with its music, hear the place and estimated wait every
//! `announce_interval_secs`, ring the agents the queue offers, and bridge
//! the first that answers. Pressing 0 or waiting `max_wait_secs` leaves
//! for the queue's fallback flow.

use std::time::Duration;

use tokio::time::Instant;

use crate::flow::interp::{
    Bridged, CallRequest, Ended, FlowCx, Next, TransferEvent, TransferRequest, Waited,
};
use crate::flow::model::{NodeKind, QueueNode};
use crate::queue::acd::{Left, Refused};
use crate::queue::announce::{self, Language};
use crate::queue::QueueConfig;
use crate::telemetry::names;
use crate::tts::TtsRequest;

pub async fn run(node: &QueueNode, cx: &mut FlowCx) -> Result<Next, Ended> {
    wait(&node.id, &node.queue, node.skills.clone(), &node.next, cx).await
}

/// The queues a node puts callers in, for `crossline check`.
pub fn queues_named(kind: &NodeKind) -> Vec<&str> {
    match kind {
        NodeKind::Queue(n) => vec![n.queue.as_str()],
        NodeKind::Transfer(t) => t
            .targets
            .iter()
            .filter_map(|t| t.strip_prefix("queue:"))
            .collect(),
        _ => Vec::new(),
    }
}

/// Why a caller left the queue without an agent.
#[derive(Debug, Clone, Copy)]
enum Leaving {
    PressedZero,
    MaxWait,
}

impl Leaving {
    fn as_str(self) -> &'static str {
        match self {
            Leaving::PressedZero => "pressed_0",
            Leaving::MaxWait => "max_wait",
        }
    }
}

/// Ring an offer's agents until one answers or all fail. Pressing 0 or
/// reaching `max_wait_at` meanwhile stops the ringing; the caller then
/// leaves (unless an agent answered in that moment).
async fn ring(
    cx: &mut FlowCx,
    req: TransferRequest,
    max_wait_at: Instant,
) -> Result<(TransferEvent, Option<Leaving>), Ended> {
    cx.request(CallRequest::Transfer(req))?;
    let mut leaving = None;
    loop {
        let until = leaving.is_none().then_some(max_wait_at);
        let stop = match cx.while_bridged(until).await? {
            Bridged::Transfer(event) => return Ok((event, leaving)),
            Bridged::Digit('0') => Some(Leaving::PressedZero),
            Bridged::Digit(_) => None,
            Bridged::TimeUp => Some(Leaving::MaxWait),
        };
        if let (None, Some(stop)) = (leaving, stop) {
            leaving = Some(stop);
            cx.request(CallRequest::HangUpAgent)?;
        }
    }
}

/// Wait in `queue` until an agent takes the call (then `next` once the
/// agent hangs up) or the caller leaves for the fallback.
pub(crate) async fn wait(
    node_id: &str,
    queue: &str,
    skills: Vec<String>,
    next: &Next,
    cx: &mut FlowCx,
) -> Result<Next, Ended> {
    let queues = cx.services.queues.clone();
    let Some(config) = queues.config(queue).cloned() else {
        // `crossline check` refuses this; a reload could still get here.
        tracing::error!(on = %cx.label, %queue, "no such queue");
        return Ok(None);
    };
    let language = Language::parse(&config.language).unwrap_or(Language::En);
    let music = cx.hold_music(node_id, &config.hold_music).await;
    let mut ticket = match queues.join(queue, skills) {
        Ok(ticket) => ticket,
        Err(Refused::Full) => {
            tracing::info!(on = %cx.label, %queue, "queue: full, caller turned away");
            cx.vars
                .insert(format!("{node_id}.left"), "full".to_string());
            if config.fallback_flow.is_some() {
                return to_fallback(&config, cx);
            }
            return busy(cx).await;
        }
        Err(Refused::NoSuchQueue) => {
            tracing::error!(on = %cx.label, %queue, "no such queue");
            return Ok(None);
        }
    };
    tracing::info!(on = %cx.label, %queue, "queue: caller waiting");
    let joined = Instant::now();
    let max_wait_at = joined + Duration::from_secs(config.max_wait_secs);
    let interval = Duration::from_secs(config.announce_interval_secs);
    let mut announce_at = (!interval.is_zero()).then_some(joined);
    let mut held = false;
    let leaving = loop {
        if let Some(at) = announce_at.filter(|at| *at <= Instant::now()) {
            announce_at = Some(at + interval);
            if let Some(text) = ticket
                .position()
                .map(|(place, wait)| announce::position(language, place, wait))
            {
                tracing::info!(on = %cx.label, %queue, %text, "queue: announcing the place");
                match cx.speech(&TtsRequest::new(text, language.code())).await {
                    // Said now; the next one replaces it before it repeats.
                    Ok(said) => {
                        metrics::counter!(names::QUEUE_ANNOUNCEMENTS, "queue" => queue.to_string(), "result" => "said").increment(1);
                        cx.hold(Some(said), Some(interval * 2), music.clone())?;
                        held = true;
                    }
                    Err(e) => {
                        metrics::counter!(names::QUEUE_ANNOUNCEMENTS, "queue" => queue.to_string(), "result" => "not_rendered").increment(1);
                        tracing::warn!(on = %cx.label, %queue, %e, "queue: announcement not rendered")
                    }
                }
            }
        }
        if !held {
            cx.hold(None, None, music.clone())?;
            held = true;
        }
        let until = announce_at.map_or(max_wait_at, |at| at.min(max_wait_at));
        match cx.wait_for(ticket.next_offer(), until).await? {
            Waited::Done(Some(offer)) => {
                let req = TransferRequest {
                    targets: offer.agents,
                    parallel: true,
                    ring_timeout: Duration::from_secs(config.ring_timeout_secs),
                    trunk: None,
                    hold_message: None,
                    hold_music: music.clone(),
                    repeat_interval: None,
                    caller_id: None,
                };
                match ring(cx, req, max_wait_at).await? {
                    (TransferEvent::Bridged { target }, _) => {
                        ticket.ring_result(Some(&target));
                        tracing::info!(on = %cx.label, %queue, agent = %target, "queue: bridged");
                        cx.vars.insert(format!("{node_id}.agent"), target);
                        while cx.next_transfer_event().await? != TransferEvent::AgentHungUp {}
                        tracing::info!(on = %cx.label, %queue, "queue: agent hung up");
                        // Leaving after an answer ends the agent's call.
                        ticket.finish(Left::Withdrawn);
                        return Ok(next.clone());
                    }
                    (_, leaving) => {
                        ticket.ring_result(None);
                        // The transfer left the caller in silence.
                        held = false;
                        if let Some(leaving) = leaving {
                            break leaving;
                        }
                    }
                }
            }
            Waited::Done(None) => {
                tracing::error!(on = %cx.label, %queue, "queue: the queue dropped the caller");
                return Ok(None);
            }
            Waited::Digit('0') => break Leaving::PressedZero,
            Waited::Digit(_) => {}
            Waited::TimeUp if Instant::now() >= max_wait_at => break Leaving::MaxWait,
            Waited::TimeUp => {}
        }
    };
    ticket.finish(Left::Abandoned);
    tracing::info!(on = %cx.label, %queue, why = %leaving.as_str(), "queue: caller left for the fallback");
    cx.vars
        .insert(format!("{node_id}.left"), leaving.as_str().to_string());
    cx.silence()?;
    to_fallback(&config, cx)
}

/// On to the queue's fallback flow; none: the call ends.
fn to_fallback(config: &QueueConfig, cx: &mut FlowCx) -> Result<Next, Ended> {
    let Some(name) = &config.fallback_flow else {
        return Ok(None);
    };
    match cx.services.flow(name) {
        Some(flow) => {
            let start = flow.start.clone();
            cx.flow = flow;
            Ok(Some(start))
        }
        None => {
            tracing::error!(on = %cx.label, flow = %name, "queue: fallback flow is gone (reload?)");
            Ok(None)
        }
    }
}

/// How long a caller turned away from a full queue hears the busy tone.
const BUSY_TONE: Duration = Duration::from_secs(3);

/// A full queue without a fallback: 486 Busy Here if the call isn't
/// answered yet, else the busy tone for a moment; then the call ends.
async fn busy(cx: &mut FlowCx) -> Result<Next, Ended> {
    if !cx.answered()? {
        cx.reject(486)?;
        return Ok(None);
    }
    cx.play_loop(crate::media::tones::busy())?;
    cx.sleep(BUSY_TONE).await?;
    Ok(None)
}
