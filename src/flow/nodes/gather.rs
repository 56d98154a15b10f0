//! `gather`: a DTMF menu with barge-in, digit and overall timeouts, retries
//! with an invalid-input prompt, and a branch per option.

use std::time::Duration;

use crate::flow::interp::{Ended, FlowCx, Next};
use crate::flow::model::Gather;
use crate::tts::TtsRequest;

pub async fn run(node: &Gather, cx: &mut FlowCx) -> Result<Next, Ended> {
    for attempt in 0..=node.retries {
        let input = collect(node, cx).await?;
        let valid =
            !input.is_empty() && (node.branches.is_empty() || node.branches.contains_key(&input));
        if valid {
            cx.vars.insert(node.var.clone(), input.clone());
            return Ok(match node.branches.get(&input) {
                Some(target) => Some(target.clone()),
                None => node.next.clone(),
            });
        }
        tracing::info!(call = %cx.label, node = %node.id, attempt, no_input = input.is_empty(), "gather: retry");
        if attempt < node.retries && !input.is_empty() {
            if let Some(text) = &node.invalid_prompt {
                say(cx, text, &node.language, false).await?;
            }
        }
    }
    // Out of attempts: on_failure, or the end of the flow (which hangs up).
    Ok(node.on_failure.clone())
}

/// Prompt (interruptible), then digits until max, terminator or timeout.
async fn collect(node: &Gather, cx: &mut FlowCx) -> Result<String, Ended> {
    if let Some(text) = &node.prompt {
        say(cx, text, &node.language, true).await?;
    } else if let Some(file) = &node.prompt_file {
        if let Ok(samples) = cx.clip(file).await {
            cx.play(samples, true).await?;
        }
    }
    let mut input = String::new();
    let mut wait = Duration::from_secs_f64(node.timeout_secs);
    while input.chars().count() < node.max_digits as usize {
        let Some(d) = cx.next_digit(wait).await? else {
            break;
        };
        if node.terminator.as_deref().is_some_and(|t| t.starts_with(d)) {
            break;
        }
        input.push(d);
        wait = Duration::from_secs_f64(node.inter_digit_timeout_secs);
    }
    Ok(input)
}

async fn say(cx: &mut FlowCx, text: &str, language: &str, barge_in: bool) -> Result<(), Ended> {
    let req = TtsRequest {
        text: crate::flow::template::render(text, &cx.vars),
        language: language.to_string(),
        voice: None,
        rate_wpm: None,
    };
    match cx.speech(&req).await {
        Ok(samples) => {
            cx.play(samples, barge_in).await?;
        }
        Err(e) => tracing::error!(call = %cx.label, %e, "gather: TTS failed"),
    }
    Ok(())
}
