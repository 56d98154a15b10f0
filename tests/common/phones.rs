//! Agent phones for the registrar and queue tests: pjsua2 and baresip
//! registering to the gateway as `[[users]]` and answering its calls.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, path_str, peers, repo, require, scenario, sipp, sipp_on, Gateway, Sipp};

/// A peer process whose output goes to a file, killed (by its PID) when
/// dropped.
pub struct Peer {
    child: Child,
    out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Peer {
    pub fn output(&self) -> String {
        // baresip redraws its status line with \r: keep lines readable.
        std::fs::read(&self.out)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', "\n"))
            .unwrap_or_default()
    }

    pub fn wait_for(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.output().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the peer never printed {needle:?}:\n{}", self.output());
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_peer(mut cmd: Command) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("peer.out");
    let file = std::fs::File::create(&out).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start the peer");
    Peer {
        child,
        out,
        _dir: dir,
    }
}

/// pjsua2 registering `user` with `password`, answering every call.
pub fn pjsua_agent(gw: &Gateway, user: &str, password: &str, extra: &[&str]) -> Peer {
    pjsua_agent_via(&gw.sip_addr(), user, password, extra)
}

/// pjsua2 registering `user` at `registrar` ("ip:port": the gateway, or a
/// proxy in front of it), answering every call.
pub fn pjsua_agent_via(registrar: &str, user: &str, password: &str, extra: &[&str]) -> Peer {
    let mut cmd = Command::new(peers::python("pjsua2"));
    cmd.arg(repo().join("tests/peers/pjsua_register.py"))
        .arg(format!("sip:{registrar}"))
        .arg(format!("sip:{user}@crossline.test"))
        .args([user, password, "40"])
        .args(extra)
        .env("PYTHONUNBUFFERED", "1");
    spawn_peer(cmd)
}

/// baresip 1.x, headless: a config dir with one account that registers
/// through the gateway (`outbound`) and answers calls by itself, sending
/// a WAV file as its microphone.
pub fn baresip_agent(gw: &Gateway, user: &str, password: &str) -> (Peer, tempfile::TempDir) {
    require("baresip", "baresip-core");
    let conf = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        conf.path().join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{port}\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
             module_app account.so\nmodule_app menu.so\n\
             audio_source aufile,{}\n",
            repo().join("audio/welcome-en.wav").display()
        ),
    )
    .unwrap();
    std::fs::write(
        conf.path().join("accounts"),
        format!(
            "<sip:{user}@crossline.test>;auth_pass={password};outbound=\"sip:{}\";regint=300;answermode=auto\n",
            gw.sip_addr()
        ),
    )
    .unwrap();
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", "60", "baresip", "-f"])
        .arg(conf.path())
        .args(["-t", "50"]);
    (spawn_peer(cmd), conf)
}

/// A SIPp caller dialling `did` (a user, say) at the gateway, talking for
/// 2 s.
pub fn call_user(gw: &Gateway, did: &str) -> Sipp {
    sipp(
        &[
            "-sn",
            "uac",
            "-s",
            did,
            &gw.sip_addr(),
            "-m",
            "1",
            "-d",
            "2000",
        ],
        Duration::from_secs(30),
    )
}

/// A SIPp agent on its own port answering `calls` calls (each rings 2 s,
/// then plays audio for `talk_ms` and hangs up), in the background; its
/// target URI.
pub fn sipp_agent(calls: u32, talk_ms: u32) -> (String, std::thread::JoinHandle<Sipp>) {
    let port = free_port();
    let text = std::fs::read_to_string(scenario("uas_agent.xml"))
        .unwrap()
        .replace(
            "<pause milliseconds=\"3000\"/>",
            &format!("<pause milliseconds=\"{talk_ms}\"/>"),
        );
    let file = std::env::temp_dir().join(format!("queue-agent-{port}.xml"));
    std::fs::write(&file, text).unwrap();
    let handle = std::thread::spawn(move || {
        let sipp = sipp_on(
            &["-sf", &path_str(&file), "-m", &calls.to_string()],
            Duration::from_secs(90),
            port,
            free_port(),
        );
        let _ = std::fs::remove_file(&file);
        sipp
    });
    (format!("sip:agent@127.0.0.1:{port}"), handle)
}

/// A SIPp caller to `did` who stays until our BYE, in the background.
pub fn waiting_caller(gw: &Gateway, did: &str) -> std::thread::JoinHandle<Sipp> {
    let addr = gw.sip_addr();
    let did = did.to_string();
    std::thread::spawn(move || {
        super::sipp(
            &[
                "-sf",
                &scenario("uac_wait_bye.xml"),
                &addr,
                "-s",
                &did,
                "-m",
                "1",
            ],
            Duration::from_secs(60),
        )
    })
}
