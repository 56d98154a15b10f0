//! `say`: speak templated text with TTS.

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Say;
use crate::flow::template::render;
use crate::tts::TtsRequest;

pub async fn run(node: &Say, cx: &mut FlowCx) -> Result<Next, Ended> {
    let req = TtsRequest {
        text: render(&node.text, &cx.vars),
        language: node.language.clone(),
        voice: node.voice.clone(),
        rate_wpm: node.rate_wpm,
    };
    match cx.speech(&req).await {
        Ok(samples) => {
            cx.play(samples, false).await?;
        }
        // A broken TTS shouldn't strand the caller: log and go on.
        Err(e) => tracing::error!(call = %cx.label, node = %node.id, %e, "say: TTS failed"),
    }
    Ok(node.next.clone())
}
