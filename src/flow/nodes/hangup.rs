//! `hangup`: play the goodbye in full, then BYE.

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Hangup;
use crate::flow::template::render;
use crate::tts::TtsRequest;

pub async fn run(node: &Hangup, cx: &mut FlowCx) -> Result<Next, Ended> {
    let goodbye = if let Some(text) = &node.message {
        let req = TtsRequest {
            text: render(text, &cx.vars),
            language: node.language.clone(),
            voice: None,
            rate_wpm: None,
        };
        cx.speech(&req).await.ok()
    } else if let Some(file) = &node.file {
        cx.clip(file).await.ok()
    } else {
        None
    };
    if let Some(samples) = goodbye {
        cx.play(samples, false).await?;
    }
    cx.hangup()?;
    Ok(None)
}
