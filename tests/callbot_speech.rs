//! The spoken callbot examples (deploy/flows/spoken/callbot-{en,es}.toml)
//! end to end, in both languages: espeak-ng says each grammar phrase to a
//! WAV, a pjsua2 caller plays it into the call over the menu prompt, the
//! recognizer stand-in (tests/peers/stt_standin.py) gets the caller's
//! audio as μ-law (matched against the WAV by correlation) and answers
//! the phrase, and the flow takes its branch: a transfer that a SIPp
//! agent answers, an SMS and a WhatsApp template through the provider
//! stand-ins (tests/common/standin.rs), or the goodbye. A key works too.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::standin::{form, stand_in, Log};
use common::voice::{phrase_match, spoken, Standin};
use common::*;

const CALLER: &str = "+15551234567";

/// What a phrase (or key) must lead to.
#[derive(Clone, Copy, Debug)]
enum Branch {
    Agent,
    Sms,
    WhatsApp,
    Goodbye,
}

/// One language's callbot with its peers.
struct Bot {
    gw: Gateway,
    stt: Standin,
    /// The stand-in's next transcript.
    transcript: PathBuf,
    messages: Log,
    /// The SIPp agent's port (the flow's first transfer target).
    agent_port: u16,
    /// espeak-ng's voice.
    voice: &'static str,
    flow: &'static str,
    _dir: tempfile::TempDir,
}

impl Bot {
    /// The example `file` in a flows folder of its own, its first
    /// transfer target moved to a free port for the SIPp agent.
    fn start(file: &str, flow: &'static str, voice: &'static str) -> Bot {
        require("espeak-ng", "espeak-ng");
        let dir = tempfile::tempdir().unwrap();
        let transcript = dir.path().join("transcript.txt");
        std::fs::write(&transcript, "").unwrap();
        let stt = Standin::start(
            "generic",
            "normal",
            &format!("@{}", transcript.display()),
            dir.path(),
        );
        let (messaging_port, messages, _) = stand_in();
        let agent_port = free_port();
        let flows = dir.path().join("flows");
        std::fs::create_dir_all(&flows).unwrap();
        let text = std::fs::read_to_string(repo().join("deploy/flows/spoken").join(file)).unwrap();
        assert!(
            text.contains("@127.0.0.1:5090\""),
            "the example's first agent"
        );
        std::fs::write(
            flows.join(file),
            text.replace("@127.0.0.1:5090\"", &format!("@127.0.0.1:{agent_port}\"")),
        )
        .unwrap();
        let gw = Gateway::start(&format!(
            "[asr]\nprovider = \"websocket\"\nurl = \"ws://127.0.0.1:{}/asr\"\napi_key = \"test-key\"\nresult_timeout_ms = 2000\n\n\
             [flows]\ndir = \"{}\"\n\n\
             [messaging.sms]\nprovider = \"twilio\"\nbase_url = \"http://127.0.0.1:{messaging_port}\"\naccount_sid = \"AC0123456789abcdef\"\nauth_token = \"secret-token\"\nfrom = \"+15550100000\"\n\n\
             [messaging.whatsapp]\nbase_url = \"http://127.0.0.1:{messaging_port}\"\napi_version = \"v21.0\"\nphone_number_id = \"106540352242922\"\naccess_token = \"wa-token\"\n\n\
             [[routes]]\nflow = \"{flow}\"\n",
            stt.port,
            flows.display(),
        ));
        Bot {
            gw,
            stt,
            transcript,
            messages,
            agent_port,
            voice,
            flow,
            _dir: dir,
        }
    }

    /// The caller says `phrase` (or presses `key`) over the menu; what the
    /// call did, checked against `branch`.
    fn call(&self, phrase: &str, key: Option<&str>, branch: Branch) {
        std::fs::write(&self.transcript, phrase).unwrap();
        let log_before = self.gw.log().len();
        let heard_before = self.stt.heard().len();
        let sent_before = self.messages.lock().unwrap().len();
        let agent = matches!(branch, Branch::Agent).then(|| {
            let port = self.agent_port;
            let handle = std::thread::spawn(move || {
                sipp_on(
                    &["-sf", &scenario("uas_agent.xml"), "-m", "1"],
                    Duration::from_secs(60),
                    port,
                    free_port(),
                )
            });
            std::thread::sleep(Duration::from_millis(400));
            handle
        });
        let wav = key
            .is_none()
            .then(|| spoken(self._dir.path(), self.voice, phrase));
        let target = format!("sip:{}@{}", self.flow, self.gw.sip_addr());
        let wav_arg = wav.as_deref().map(path_str).unwrap_or_default();
        // The welcome takes about 2 s; the caller speaks over the menu, its
        // RTP flowing through pauses too, so that the recognizer's audio
        // lines up with the WAV.
        let mut args = vec![target.as_str(), "30", "--from", CALLER, "--no-vad"];
        match key {
            Some(k) => args.extend(["--dtmf-at", "3.0", k]),
            None => args.extend(["--play", &wav_arg, "--play-once", "--play-at", "3.0"]),
        }
        let out = peers::run_script("pjsua2", "pjsua_call.py", &args, Duration::from_secs(60));
        let lines = String::from_utf8_lossy(&out.stdout).into_owned();
        let what = format!("{} {phrase:?} {key:?}", self.flow);
        assert!(lines.contains("state DISCONNECTED"), "{what}: {lines}");
        assert!(
            !lines.contains("hangup"),
            "{what}: the flow hung up: {lines}"
        );
        let log = self.gw.log()[log_before..].to_string();
        let nodes: &[&str] = match (branch, self.voice) {
            (Branch::Agent, _) => &["transfer: bridged"],
            (Branch::Sms, "en") => &["node=sms", "node=sms_ok", "node=goodbye"],
            (Branch::Sms, _) => &["node=sms", "node=sms_ok", "node=despedida"],
            (Branch::WhatsApp, "en") => &["node=whatsapp_ok", "node=goodbye"],
            (Branch::WhatsApp, _) => &["node=whatsapp_ok", "node=despedida"],
            (Branch::Goodbye, "en") => &["node=goodbye"],
            (Branch::Goodbye, _) => &["node=despedida"],
        };
        for n in nodes {
            assert!(log.contains(n), "{what}: {n} missing:\n{log}");
        }
        if let Some(wav) = &wav {
            assert!(log.contains("barge-in by speech"), "{what}:\n{log}");
            let heard = self.stt.heard();
            let r = phrase_match(&heard[heard_before..], wav);
            assert!(
                r > 0.6,
                "{what}: the recognizer's audio vs the WAV: r = {r:.2}"
            );
        }
        let sent: Vec<_> = self.messages.lock().unwrap()[sent_before..].to_vec();
        match branch {
            Branch::Sms => {
                assert_eq!(sent.len(), 1, "{what}: {sent:?}");
                assert!(sent[0].path.starts_with("twilio/"), "{what}: {sent:?}");
                assert_eq!(
                    form(&sent[0].body).get("To").map(String::as_str),
                    Some(CALLER)
                );
            }
            Branch::WhatsApp => {
                assert_eq!(sent.len(), 1, "{what}: {sent:?}");
                assert_eq!(sent[0].path, "whatsapp/106540352242922");
                let body: serde_json::Value = serde_json::from_str(&sent[0].body).unwrap();
                assert_eq!(body["to"], "15551234567", "{what}");
                assert_eq!(body["type"], "template", "{what}");
            }
            Branch::Agent | Branch::Goodbye => assert!(sent.is_empty(), "{what}: {sent:?}"),
        }
        if let Some(agent) = agent {
            let run = agent.join().unwrap();
            assert!(run.ok(), "{what}: the agent: {}", run.describe());
        }
    }
}

fn run_all(bot: &Bot, phrases: [(&str, Branch); 4]) {
    for (phrase, branch) in phrases {
        bot.call(phrase, None, branch);
    }
    assert_metric_at_least(
        &bot.gw,
        "crossline_asr_recognitions_total{provider=\"websocket\",result=\"recognized\"}",
        4.0,
    );
}

/// English: "agent", "text me", "WhatsApp" and "goodbye" each take their
/// branch; pressing 3 still sends the WhatsApp template.
#[test]
fn the_english_callbot_understands_each_phrase_and_a_key() {
    let bot = Bot::start("callbot-en.toml", "callbot-en", "en");
    run_all(
        &bot,
        [
            ("agent", Branch::Agent),
            ("text me", Branch::Sms),
            ("WhatsApp", Branch::WhatsApp),
            ("goodbye", Branch::Goodbye),
        ],
    );
    bot.call("", Some("3"), Branch::WhatsApp);
}

/// Spanish: "agente", "mándame un SMS", "WhatsApp" and "adiós"; pressing
/// 9 still says goodbye.
#[test]
fn the_spanish_callbot_understands_each_phrase_and_a_key() {
    let bot = Bot::start("callbot-es.toml", "callbot-voz-es", "es");
    run_all(
        &bot,
        [
            ("agente", Branch::Agent),
            ("mándame un SMS", Branch::Sms),
            ("WhatsApp", Branch::WhatsApp),
            ("adiós", Branch::Goodbye),
        ],
    );
    bot.call("", Some("9"), Branch::Goodbye);
}
