//! `queue` (and `transfer` to `queue:<name>`): wait in a `[[queues]]` queue
//! with its music, hear the place and estimated wait every
//! `announce_interval_secs`, ring the agents the queue offers, and bridge
//! the first that answers. Pressing 0 or waiting `max_wait_secs` leaves
//! for the queue's fallback flow. With `offer_callback_after_secs`, the
//! announcements offer virtual hold: pressing 1 hangs up and keeps the
//! caller's place, and the built-in callback flow's node takes it back
//! when they are called back and answer.

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
    if node.resume_callback {
        return called_back(&node.id, cx).await;
    }
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
    let ticket = match queues.join(queue, skills) {
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
    // Virtual hold only for a caller we can dial back (E.164) who came in
    // over a configured trunk: a From sent straight from the internet is
    // whatever the sender wrote, and the callback would dial it for them.
    let from_trunk = cx.vars.get("trunk").is_some_and(|t| !t.is_empty());
    let callback = config
        .offer_callback_after_secs
        .filter(|_| from_trunk)
        .zip(
            cx.vars
                .get("caller")
                .filter(|c| c.starts_with('+'))
                .cloned(),
        )
        .map(|(after, phone)| CallbackOffer {
            from: Instant::now() + Duration::from_secs(after),
            phone,
        });
    let waiting = Waiting {
        callback,
        greeted: false,
    };
    serve(node_id, &config, ticket, next, waiting, cx).await
}

/// The callback flow's node: the called-back customer answered. Tell them
/// who calls, then take their place back (first in line, an agent claimed
/// for them) and wait as any caller does.
async fn called_back(node_id: &str, cx: &mut FlowCx) -> Result<Next, Ended> {
    let queues = cx.services.queues.clone();
    let id = cx.vars.get("callback_id").cloned().unwrap_or_default();
    let Some(config) = queues
        .calling_back(&id)
        .and_then(|q| queues.config(&q).cloned())
    else {
        tracing::warn!(on = %cx.label, callback = %id, "queue: no place waits for this callback");
        return Ok(None);
    };
    let language = Language::parse(&config.language).unwrap_or(Language::En);
    let text = announce::callback_connecting(language);
    match cx
        .speech(&TtsRequest::new(text.to_string(), language.code()))
        .await
    {
        Ok(said) => {
            cx.play(said, false).await?;
        }
        Err(e) => tracing::warn!(on = %cx.label, %e, "queue: callback greeting not rendered"),
    }
    let Some(ticket) = queues.resume(&id) else {
        tracing::warn!(on = %cx.label, callback = %id, "queue: the place was given up meanwhile");
        return Ok(None);
    };
    tracing::info!(on = %cx.label, queue = %config.name, callback = %id, "queue: called-back caller is on the line");
    let greeted = Waiting {
        callback: None,
        greeted: true,
    };
    serve(node_id, &config, ticket, &None, greeted, cx).await
}

/// How a caller starts waiting.
struct Waiting {
    /// Virtual hold, when the caller may be offered it.
    callback: Option<CallbackOffer>,
    /// Just told what happens (a called-back caller): the first
    /// announcement waits a full interval.
    greeted: bool,
}

/// Virtual hold for one caller: offered from `from` on.
struct CallbackOffer {
    from: Instant,
    /// E.164, to call back.
    phone: String,
}

/// The caller's wait with `ticket`: music, announcements (with the
/// callback offer once due), agents rung as offered.
async fn serve(
    node_id: &str,
    config: &crate::queue::QueueConfig,
    mut ticket: crate::queue::Ticket,
    next: &Next,
    Waiting { callback, greeted }: Waiting,
    cx: &mut FlowCx,
) -> Result<Next, Ended> {
    let queue = config.name.as_str();
    let queues = cx.services.queues.clone();
    let language = Language::parse(&config.language).unwrap_or(Language::En);
    let music = cx.hold_music(node_id, &config.hold_music).await;
    let joined = Instant::now();
    let max_wait_at = joined + Duration::from_secs(config.max_wait_secs);
    let interval = Duration::from_secs(config.announce_interval_secs);
    let first = if greeted { joined + interval } else { joined };
    let mut announce_at = (!interval.is_zero()).then_some(first);
    // The offer is due (once) at `from`, then rides on each announcement.
    let mut offer_due = callback.as_ref().map(|c| c.from);
    let mut offered = false;
    let mut held = false;
    let leaving = loop {
        let now = Instant::now();
        let offer_now = offer_due.is_some_and(|at| at <= now);
        if announce_at.is_some_and(|at| at <= now) || offer_now {
            announce_at = Some(now + interval);
            offer_due = None;
            let offer = callback
                .as_ref()
                .filter(|c| c.from <= now && queues.can_call_back(&c.phone));
            if let Some(text) = ticket.position().map(|(place, wait)| {
                let place = announce::position(language, place, wait);
                match offer {
                    Some(_) => format!("{place} {}", announce::callback_offer(language)),
                    None => place,
                }
            }) {
                tracing::info!(on = %cx.label, %queue, %text, "queue: announcing the place");
                match cx.speech(&TtsRequest::new(text, language.code())).await {
                    // Said now; the next one replaces it before it repeats.
                    Ok(said) => {
                        metrics::counter!(names::QUEUE_ANNOUNCEMENTS, "queue" => queue.to_string(), "result" => "said").increment(1);
                        cx.hold(Some(said), Some(interval * 2), music.clone())?;
                        held = true;
                        if offer.is_some() {
                            offered = true;
                            metrics::counter!(names::QUEUE_CALLBACKS_OFFERED, "queue" => queue.to_string()).increment(1);
                        }
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
        let until = [announce_at, offer_due]
            .into_iter()
            .flatten()
            .fold(max_wait_at, Instant::min);
        let waited = cx.wait_for(ticket.next_offer(), until).await?;
        match waited {
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
            Waited::Digit('1') if offered => {
                let Some(phone) = callback.as_ref().map(|c| c.phone.as_str()) else {
                    continue;
                };
                match ticket.go_virtual(phone) {
                    Ok(()) => return confirm_callback(cx, queue, language, phone).await,
                    Err(back) => ticket = back,
                }
            }
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
    to_fallback(config, cx)
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

/// The caller pressed 1: their place is kept. Tell them the number they
/// will be called at, then hang up.
async fn confirm_callback(
    cx: &mut FlowCx,
    queue: &str,
    language: Language,
    phone: &str,
) -> Result<Next, Ended> {
    tracing::info!(on = %cx.label, %queue, phone = %crate::mask::phone(phone),
        "queue: caller chose a callback; their place is kept");
    let text = announce::callback_confirmed(language, phone);
    match cx.speech(&TtsRequest::new(text, language.code())).await {
        Ok(said) => {
            cx.play(said, false).await?;
        }
        Err(e) => tracing::warn!(on = %cx.label, %queue, %e, "queue: confirmation not rendered"),
    }
    Ok(None)
}
