//! TwiML's voice-AI verbs: `<Connect><Stream>` (the call talks with an
//! agent), `<Start><Stream>` / `<Stop><Stream>` (one-way forks) and
//! `<Gather input="speech">`. They run on the flow's own machinery
//! through [`FlowCx`]: the `stream` node's session and counters, and the
//! `gather` node's recognition, so an app and a flow behave alike.

use std::sync::Arc;

use super::exec::{resolve, Request, Step};
use super::fetch::{AppError, Apps};
use super::parse::{Connect, Gather, Say, Stream, VerbKind};
use crate::flow::interp::{Ended, FlowCx};
use crate::flow::nodes::gather::Got;
use crate::media_stream::session::StreamRequest;
use crate::speech::recognize::Failure;
use crate::tts::TtsRequest;

/// Prompt repeats a speech gather renders (a `loop="0"` prompt would be
/// hours of audio; the caller speaks or the timeout comes long before).
const MAX_PROMPT_LOOPS: u32 = 10;
/// Longest prompt rendered for a speech gather: ten minutes at 8 kHz.
const MAX_PROMPT_SAMPLES: usize = 8_000 * 600;

/// `<Say>` as a TTS request: our voices are chosen by language; Twilio's
/// voice names (alice, Polly.*) have no equivalent, so the primary
/// subtag picks.
pub(super) fn tts_request(say: &Say) -> TtsRequest {
    let language = say
        .language
        .split('-')
        .next()
        .unwrap_or("en")
        .to_ascii_lowercase();
    TtsRequest::new(say.text.clone(), language)
}

/// Run `<Stream>` as the `stream` node would: its failure is logged,
/// counted and kept with the record, and the document goes on.
async fn stream(
    cx: &mut FlowCx,
    call_sid: &str,
    s: &Stream,
    bidirectional: bool,
) -> Result<(), Ended> {
    let req = StreamRequest {
        url: s.url.clone(),
        tracks: s.track,
        bidirectional,
        parameters: s.parameters.clone(),
        identity: crate::flow::nodes::stream::identity(cx, call_sid.to_string()),
        name: s.name.clone(),
    };
    let what = if bidirectional {
        "<Connect>"
    } else {
        "<Start>"
    };
    if let Err(e) = crate::flow::nodes::stream::carry(cx, req, what).await? {
        cx.keep("stream_error", &e)?;
    }
    Ok(())
}

/// `<Connect><Stream>`: until the agent closes the socket (or the stream
/// fails); then the `action` if set, else the next verb, as on Twilio.
pub(super) async fn connect(
    cx: &mut FlowCx,
    call_sid: &str,
    c: &Connect,
    base: &reqwest::Url,
) -> Result<Result<Step, AppError>, Ended> {
    stream(cx, call_sid, &c.stream, true).await?;
    Ok(match &c.action {
        None => Ok(Step::Next),
        Some(action) => {
            resolve(base, action).map(|url| Step::Fetch(Request::to(url, c.method, Vec::new())))
        }
    })
}

/// `<Start><Stream>`: the fork runs beside the document until `<Stop>`
/// or the end of the call.
pub(super) async fn start(cx: &mut FlowCx, call_sid: &str, s: &Stream) -> Result<Step, Ended> {
    stream(cx, call_sid, s, false).await?;
    Ok(Step::Next)
}

/// `<Stop><Stream name>`: stop that fork (no name: every fork).
pub(super) fn stop(cx: &mut FlowCx, name: Option<&str>) -> Result<Step, Ended> {
    let stopped = cx.stop_forks(name)?;
    tracing::info!(name = name.unwrap_or("*"), stopped, "<Stop><Stream>");
    Ok(Step::Next)
}

/// `<Gather>` with `speech` in its `input`: the nested prompts play while
/// the recognizer listens; the action gets `SpeechResult` and
/// `Confidence` (or `Digits` when a key came first), as on Twilio.
pub(super) async fn gather_speech(
    cx: &mut FlowCx,
    apps: &Apps,
    g: &Gather,
    base: &reqwest::Url,
) -> Result<Result<Step, AppError>, Ended> {
    if cx.services.asr.is_none() {
        return Ok(Err(AppError::new(
            "no_asr",
            "<Gather input=\"speech\"> needs a recognizer ([asr] provider)",
        )));
    }
    let prompt = match prompt(cx, apps, g, base).await? {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let node = flow_gather(g);
    let (extra, heard) = match crate::flow::nodes::gather::hear(&node, prompt, cx).await? {
        Got::Digits(d) if !d.is_empty() => (vec![("Digits".to_string(), d)], true),
        Got::Digits(_) => (Vec::new(), false),
        Got::Speech(Ok(r)) if !r.transcript.trim().is_empty() => (
            vec![
                ("SpeechResult".to_string(), r.transcript),
                ("Confidence".into(), format!("{:.2}", r.confidence)),
            ],
            true,
        ),
        Got::Speech(Ok(_)) => (Vec::new(), false),
        Got::Speech(Err(failure)) => {
            if let Failure::Recognizer(e) = &failure {
                tracing::warn!(error = %e, "<Gather>: recognizer failed");
            }
            cx.keep("speech_error", failure.label())?;
            (Vec::new(), false)
        }
    };
    tracing::info!(heard, "<Gather input=speech> done");
    if !heard && !g.action_on_empty_result {
        // No input: on to the next verb, as on Twilio.
        return Ok(Ok(Step::Next));
    }
    let url = match &g.action {
        Some(a) => resolve(base, a),
        None => Ok(base.clone()),
    };
    Ok(url.map(|url| Step::Fetch(Request::to(url, g.method, extra))))
}

/// The `gather` node a TwiML speech gather listens as.
fn flow_gather(g: &Gather) -> crate::flow::model::Gather {
    let input = match g.dtmf {
        true => "dtmf speech",
        false => "speech",
    };
    crate::flow::model::Gather {
        id: "Gather".into(),
        kind: "gather".into(),
        prompt: None,
        prompt_file: None,
        language: g.language.clone(),
        max_digits: g.num_digits.unwrap_or(64),
        terminator: g.finish_on_key.map(String::from),
        timeout_secs: g.timeout_secs,
        inter_digit_timeout_secs: g.timeout_secs,
        retries: 0,
        invalid_prompt: None,
        branches: Default::default(),
        var: "digits".into(),
        next: None,
        on_failure: None,
        input: input.into(),
        hints: g.hints.clone(),
        grammar: Default::default(),
        speech_timeout_secs: g.speech_timeout_secs,
        barge_in: g.barge_in,
    }
}

/// The nested `<Say>`, `<Play>` and `<Pause>` as one clip, so speech can
/// stop it wherever it is. A `<Say>` TTS can't speak is left out, as a
/// plain `<Say>` is; a `<Play>` that can't be fetched is an app error.
async fn prompt(
    cx: &mut FlowCx,
    apps: &Apps,
    g: &Gather,
    base: &reqwest::Url,
) -> Result<Result<Option<Arc<[i16]>>, AppError>, Ended> {
    let mut clip: Vec<i16> = Vec::new();
    for p in &g.prompts {
        let (samples, loops): (Arc<[i16]>, u32) = match &p.kind {
            VerbKind::Say(say) => match cx.speech(&tts_request(say)).await {
                Ok(s) => (s, say.loops),
                Err(e) => {
                    tracing::error!(%e, "<Gather><Say>: TTS failed");
                    continue;
                }
            },
            VerbKind::Play(play) if !play.url.is_empty() => {
                let fetched = match resolve(base, &play.url) {
                    Ok(url) => cx.call_wait(apps.audio(&url)).await?,
                    Err(e) => Err(e),
                };
                match fetched {
                    Ok(s) => (s, play.loops),
                    Err(e) => {
                        return Ok(Err(AppError::new(
                            e.kind,
                            format!("line {}: {}", p.line, e.message),
                        )))
                    }
                }
            }
            VerbKind::Pause(secs) => {
                let n = (secs * 8_000.0) as usize;
                (vec![0i16; n.min(MAX_PROMPT_SAMPLES)].into(), 1)
            }
            _ => continue,
        };
        for _ in 0..loops.min(MAX_PROMPT_LOOPS) {
            if clip.len() + samples.len() > MAX_PROMPT_SAMPLES {
                break;
            }
            clip.extend_from_slice(&samples);
        }
    }
    Ok(Ok((!clip.is_empty()).then(|| clip.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_speech_gather_listens_as_a_flow_gather_would() {
        let doc = r#"<Response><Gather input="dtmf speech" numDigits="2" finishOnKey="*" timeout="4" language="es-ES" hints="agente" speechTimeout="auto"/></Response>"#;
        let verbs = super::super::parse::parse(doc).unwrap_or_else(|e| panic!("{e}"));
        let VerbKind::Gather(g) = &verbs[0].kind else {
            panic!("{verbs:?}");
        };
        let node = flow_gather(g);
        assert!(node.wants_speech() && node.wants_dtmf());
        assert_eq!(node.language, "es-ES");
        assert_eq!(node.max_digits, 2);
        assert_eq!(node.terminator.as_deref(), Some("*"));
        assert_eq!(node.timeout_secs, 4.0);
        assert_eq!(node.speech_timeout_secs, 1.0);
        assert_eq!(node.hints, vec!["agente".to_string()]);
        assert!(node.barge_in && node.grammar.is_empty());
        let say = Say {
            text: "hola".into(),
            voice: None,
            language: "es-MX".into(),
            loops: 1,
        };
        assert_eq!(tts_request(&say).language, "es");
    }
}
