//! `gather`: a DTMF menu with barge-in, digit and overall timeouts, retries
//! with an invalid-input prompt, and a branch per option.

use std::time::Duration;

use crate::flow::interp::{Ended, FlowCx, Heeded, Next};
use crate::flow::model::Gather;
use crate::speech::recognize::{Failure, Heard, Listen, Recognition};
use crate::telemetry::names;
use crate::tts::TtsRequest;
use metrics::counter;

/// What a speech gather got.
pub(crate) enum Got {
    Digits(String),
    Speech(Result<Recognition, Failure>),
}

/// The grammar value a transcript picks; without a grammar, the words
/// themselves.
fn meaning(node: &Gather, transcript: &str) -> Option<String> {
    if node.grammar.is_empty() {
        let said = crate::speech::grammar::normalize(transcript);
        return (!said.is_empty()).then_some(said);
    }
    crate::speech::grammar::pick(&node.grammar, transcript).map(str::to_string)
}

async fn collect_speech(node: &Gather, cx: &mut FlowCx) -> Result<Got, Ended> {
    let samples = prompt(node, cx).await;
    hear(node, samples, cx).await
}

/// Listen while `prompt` plays (speech or a key stops it when
/// `barge_in`), then for `timeout_secs` more; speech once started runs to
/// its end. A TwiML `<Gather input="speech">` listens through here too.
pub(crate) async fn hear(
    node: &Gather,
    prompt: Option<std::sync::Arc<[i16]>>,
    cx: &mut FlowCx,
) -> Result<Got, Ended> {
    let Some(asr) = cx.services.asr.clone() else {
        return Ok(Got::Speech(Err(Failure::Recognizer(
            "no [asr] provider".into(),
        ))));
    };
    let listen = Listen {
        language: node.language.clone(),
        hints: node.hints.clone(),
        phrases: node.grammar.values().flatten().cloned().collect(),
        speech_timeout: Duration::from_secs_f64(node.speech_timeout_secs),
        // The flow keeps the no-input clock: it starts when the prompt ends.
        no_input_timeout: Duration::from_secs(600),
        result_timeout: asr.result_timeout,
        connect_timeout: asr.connect_timeout,
    };
    let Some(mut listening) = cx.listen(listen)? else {
        return Ok(Got::Speech(Err(Failure::Recognizer(
            "no [asr] provider".into(),
        ))));
    };
    let mut playing = match prompt {
        Some(samples) => Some(cx.play_start(samples)?),
        None => None,
    };
    let timeout = Duration::from_secs_f64(node.timeout_secs);
    let mut deadline = playing
        .is_none()
        .then(|| tokio::time::Instant::now() + timeout);
    let mut speaking = false;
    loop {
        let keys = node.wants_dtmf() && (playing.is_none() || node.barge_in);
        match cx
            .heed(playing, keys, &mut listening.heard, deadline)
            .await?
        {
            Heeded::Finished => {
                playing = None;
                if !speaking {
                    deadline = Some(tokio::time::Instant::now() + timeout);
                }
            }
            Heeded::Heard(Heard::Started) => {
                speaking = true;
                deadline = None;
                if playing.is_some() && node.barge_in {
                    tracing::info!(call = %cx.label, node = %node.id, "gather: barge-in by speech");
                    cx.silence()?;
                    playing = None;
                }
            }
            Heeded::Heard(Heard::Done(result)) => {
                if playing.is_some() {
                    cx.silence()?;
                }
                cx.stop_listening(listening)?;
                return Ok(Got::Speech(result));
            }
            Heeded::Digit => {
                if playing.is_some() {
                    cx.silence()?;
                }
                cx.stop_listening(listening)?;
                return Ok(Got::Digits(digits(node, cx, timeout).await?));
            }
            Heeded::Timeout => {
                cx.stop_listening(listening)?;
                return Ok(Got::Speech(Err(Failure::NoInput)));
            }
        }
    }
}

/// The prompt's audio: TTS of `prompt`, or `prompt_file`.
async fn prompt(node: &Gather, cx: &mut FlowCx) -> Option<std::sync::Arc<[i16]>> {
    if let Some(text) = &node.prompt {
        let req = TtsRequest {
            text: crate::flow::template::render(text, &cx.vars),
            language: node.language.clone(),
            voice: None,
            rate_wpm: None,
        };
        match cx.speech(&req).await {
            Ok(samples) => return Some(samples),
            Err(e) => tracing::error!(call = %cx.label, %e, "gather: TTS failed"),
        }
    } else if let Some(file) = &node.prompt_file {
        return cx.clip(file).await.ok();
    }
    None
}

pub async fn run(node: &Gather, cx: &mut FlowCx) -> Result<Next, Ended> {
    for attempt in 0..=node.retries {
        let input = match node.wants_speech() {
            true => match collect_speech(node, cx).await? {
                Got::Digits(d) => d,
                Got::Speech(Ok(heard)) => {
                    cx.vars.insert("speech".into(), heard.transcript.clone());
                    cx.vars
                        .insert("confidence".into(), format!("{:.2}", heard.confidence));
                    match meaning(node, &heard.transcript) {
                        Some(value) => value,
                        None => {
                            counter!(names::ASR_NO_MATCH).increment(1);
                            tracing::info!(call = %cx.label, node = %node.id, "gather: speech matched nothing");
                            cx.vars
                                .insert(format!("{}.speech_error", node.id), "no_match".into());
                            // Like an invalid key: the invalid prompt, then again.
                            "\u{0}no-match".into()
                        }
                    }
                }
                Got::Speech(Err(failure)) => {
                    cx.vars
                        .insert(format!("{}.speech_error", node.id), failure.label().into());
                    if let Failure::Recognizer(e) = failure {
                        // A broken recognizer won't do better on a retry.
                        tracing::warn!(call = %cx.label, node = %node.id, error = %e, "gather: recognizer failed");
                        return Ok(node.on_failure.clone());
                    }
                    String::new()
                }
            },
            false => collect(node, cx).await?,
        };
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
    digits(node, cx, Duration::from_secs_f64(node.timeout_secs)).await
}

/// Digits until max, terminator or timeout (`first_wait` for the first).
async fn digits(node: &Gather, cx: &mut FlowCx, first_wait: Duration) -> Result<String, Ended> {
    let mut input = String::new();
    let mut wait = first_wait;
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
