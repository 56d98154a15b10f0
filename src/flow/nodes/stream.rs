//! `stream`: the call's audio to a voice agent over WebSocket (Twilio
//! Media Streams). `connect` waits for the agent to close the socket;
//! `start` leaves a one-way copy running and goes on at once.

use metrics::counter;

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::StreamNode;
use crate::flow::template::render;
use crate::media_stream::protocol::{Identity, Tracks};
use crate::media_stream::session::{self, StreamRequest};
use crate::telemetry::names;

pub async fn run(node: &StreamNode, cx: &mut FlowCx) -> Result<Next, Ended> {
    let bidirectional = node.mode == "connect";
    let url = render(&node.url, &cx.vars);
    // The call's own CallSid (a flow started elsewhere: one from its Call-ID).
    let call_sid = match cx.vars.get(crate::twiml::CALL_SID_VAR) {
        Some(sid) => sid.clone(),
        None => crate::media_stream::call_sid(&cx.vars.get("call_id").cloned().unwrap_or_default()),
    };
    let req = StreamRequest {
        url,
        tracks: match bidirectional {
            true => Tracks::InboundTrack,
            false => node.track.unwrap_or(Tracks::InboundTrack),
        },
        bidirectional,
        parameters: node
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), render(v, &cx.vars)))
            .collect(),
        identity: identity(cx, call_sid),
        name: None,
    };
    cx.vars.insert(
        format!("{}.stream_sid", node.id),
        req.identity.stream_sid.clone(),
    );
    match carry(cx, req, &node.id).await? {
        Ok(()) => Ok(node.next.clone()),
        Err(e) => {
            cx.vars.insert(format!("{}.error", node.id), e);
            Ok(node.on_error.clone().or_else(|| node.next.clone()))
        }
    }
}

/// Who a new stream of the call belongs to.
pub(crate) fn identity(cx: &FlowCx, call_sid: String) -> Identity {
    Identity {
        account_sid: cx.services.media_streams.account_sid.clone(),
        call_sid,
        stream_sid: crate::media_stream::new_stream_sid(),
    }
}

/// Run the stream (a fork: start it), logged and counted as `what`
/// (the node, or the TwiML verb); Ok(Err(why)) when it failed.
pub(crate) async fn carry(
    cx: &mut FlowCx,
    req: StreamRequest,
    what: &str,
) -> Result<Result<(), String>, Ended> {
    let bidirectional = req.bidirectional;
    tracing::info!(node = %what, bidirectional, "media stream: connecting");
    match cx.media_stream(req).await? {
        Ok(ended) => {
            let outcome = match ended {
                session::Ended::Closed => "closed",
                session::Ended::Stopped => "stopped",
            };
            if bidirectional {
                counter!(names::MEDIA_STREAMS, "outcome" => outcome).increment(1);
                tracing::info!(node = %what, outcome, "media stream ended");
            }
            Ok(Ok(()))
        }
        Err(e) => {
            counter!(names::MEDIA_STREAMS, "outcome" => "failed").increment(1);
            tracing::warn!(node = %what, error = %e, "media stream failed");
            Ok(Err(e))
        }
    }
}
