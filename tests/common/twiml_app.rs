//! The TwiML tests' webhook app (tests/peers/twiml_app.py, on the official
//! `twilio` library): started on its own port, each request it gets
//! logged as one JSON line.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::audio::write_tone;
use super::{free_port, peers, repo, require};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "twiml-test-auth-token-0123456789";

/// The Python app, on its own port, logging each request it gets.
pub struct App {
    _child: Stopped,
    pub port: u16,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl App {
    pub fn start() -> App {
        require("espeak-ng", "espeak-ng");
        let python = peers::python("twilio");
        let dir = tempfile::tempdir().unwrap();
        // 1 kHz for 1 s: what <Play> plays.
        let tone = dir.path().join("tone.wav");
        write_tone(&tone, 1000.0, 1.0, 8000.0, 8000);
        let log = dir.path().join("requests.jsonl");
        std::fs::write(&log, "").unwrap();
        let port = free_port();
        let mut child = Command::new(python)
            .arg(repo().join("tests/peers/twiml_app.py"))
            .arg(port.to_string())
            .arg(&log)
            .arg(AUTH_TOKEN)
            .arg(&tone)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/peers/twiml_app.py");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the app did not start");
        App {
            _child: Stopped(child),
            port,
            log,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["path"] == path)
            .collect()
    }

    /// Every request crossline made passed the twilio library's validator.
    pub fn assert_all_signed(&self) {
        let requests = self.requests();
        assert!(!requests.is_empty());
        for r in requests.iter().filter(|r| r.get("valid").is_some()) {
            assert_eq!(r["valid"], true, "RequestValidator refused {r}");
        }
    }
}

/// A child process killed when dropped.
pub struct Stopped(pub Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
