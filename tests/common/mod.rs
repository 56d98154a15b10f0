//! Test harness: start the real `crossline` binary on free loopback ports and
//! drive it with real peers (SIPp, tshark) over real sockets.
#![allow(dead_code)]

pub mod audio;
pub mod browser;
pub mod chat;
pub mod dns;
pub mod lossy;
pub mod peers;
pub mod phones;
pub mod postgres;
pub mod standin;
pub mod twiml_app;
pub mod voice;

use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fail loudly, with the install command, when a peer tool is missing.
pub fn require(binary: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {binary}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{binary}` is missing: install it with `apt-get install -y {package}` (scripts/test.sh does this when run as root)"
    );
}

/// The flows in `folder` (under the repo) with every `HOOK` replaced by
/// `hook` (a stand-in's URL), in a fresh folder.
pub fn flows_with_hook(folder: &str, hook: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join(folder)).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            dir.path().join(path.file_name().unwrap()),
            text.replace("HOOK", hook),
        )
        .unwrap();
    }
    dir
}

/// A port free for both UDP and TCP right now, and handed to no other test
/// process on this machine in the last [`PORT_LEASE`].
///
/// Chosen below the kernel's ephemeral range (32768+), so an outgoing
/// connection elsewhere cannot take it between this check and the bind.
/// The lease matters because a free port is not a quiet one: a peer of the
/// test that had it before (a gateway retransmitting a BYE, an OPTIONS
/// ping, a SIPp left to its timeout) may still send to it, and one stray
/// request ends a `sipp -m 1` scenario before its call comes.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u16 = 15_000;
    const SPAN: u16 = 15_000;
    let leases = PortLeases::open();
    // Each process starts somewhere else; ports are multiples of 4, so a
    // port's +2 (SIPp's second media port) is never handed out itself.
    let start = (std::process::id().wrapping_mul(2_654_435_761) % u32::from(SPAN)) & !3;
    for _ in 0..SPAN / 4 {
        let step = u32::from(NEXT.fetch_add(4, Ordering::Relaxed));
        let port = LOW + ((start + step) % u32::from(SPAN)) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
            && UdpSocket::bind(("127.0.0.1", port + 2)).is_ok()
            && leases.take(port)
        {
            return port;
        }
    }
    panic!("no free port");
}

/// How long a port handed out stays out of other test processes' reach:
/// longer than SIP's 32 s transaction timeout and SIPp's usual time limit.
const PORT_LEASE: Duration = Duration::from_secs(90);

/// Machine-wide leases of test ports: a file per port under the temp dir,
/// written under a lock, so concurrent test processes (this suite's other
/// binaries, other checkouts) never share a port or reuse one too soon.
struct PortLeases {
    dir: PathBuf,
    _lock: std::fs::File,
}

impl PortLeases {
    fn open() -> PortLeases {
        let dir = std::env::temp_dir().join("crossline-test-ports");
        std::fs::create_dir_all(&dir).unwrap();
        let lock = std::fs::File::create(dir.join(".lock")).unwrap();
        // Released when the file closes (File::lock needs Rust 1.89).
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns.
        assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
        PortLeases { dir, _lock: lock }
    }

    /// Lease `port` unless another lease on it is still running.
    fn take(&self, port: u16) -> bool {
        let path = self.dir.join(port.to_string());
        let held = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age < PORT_LEASE);
        !held && std::fs::write(&path, std::process::id().to_string()).is_ok()
    }
}

/// A block of `n` RTP ports nobody else in this test run uses.
pub fn rtp_range(n: u16) -> (u16, u16) {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let pid_base = 30_000 + (std::process::id() % 50) as u16 * 400;
    let start = pid_base + NEXT.fetch_add(n + 2, Ordering::Relaxed);
    (start, start + n)
}

pub struct HttpReply {
    pub status: u16,
    /// The status line and headers, lower-cased.
    pub headers: String,
    /// The same, as sent.
    pub raw_headers: String,
    pub body: String,
}

impl HttpReply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The Set-Cookie values as one Cookie header (keys are case-sensitive,
    /// so from the raw headers); empty when none were set.
    pub fn cookie_header(&self) -> String {
        self.raw_headers
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("set-cookie")
                    .then(|| v.trim().split(';').next().unwrap_or("").to_string())
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The conversation a chat page is for (its meta tag).
    pub fn conversation_id(&self) -> String {
        self.body
            .split("name=\"crossline-conversation\" content=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("not a chat page: {}", self.body))
            .to_string()
    }
}

pub struct Gateway {
    child: Child,
    pub sip_port: u16,
    pub http_port: u16,
    pub rtp_range: (u16, u16),
    pub dir: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    /// Extra environment for the process (kept for restarts).
    env: Vec<(String, String)>,
}

impl Gateway {
    /// Start with the given config body; `{sip}` and `{rtp_min}`/`{rtp_max}`
    /// placeholders are filled in with free ports.
    pub fn start(extra: &str) -> Gateway {
        Gateway::start_with_env(extra, &[])
    }

    /// As [`Gateway::start`], with these environment variables set too.
    pub fn start_with_env(extra: &str, env: &[(&str, &str)]) -> Gateway {
        // Another process can still grab a port between the check and the
        // bind; start again on fresh ports rather than fail the test.
        for _ in 0..3 {
            let gw = Gateway::spawn(extra, env);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline && !gw.log().contains("crossline ready") {
                if gw.log().contains("Address already in use") {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if gw.log().contains("Address already in use") {
                eprintln!("gateway ports were taken; retrying:\n{}", gw.log());
                continue;
            }
            gw.wait_for_log("crossline ready", Duration::from_secs(1));
            return gw;
        }
        panic!("gateway could not bind free ports three times");
    }

    fn spawn(extra: &str, env: &[(&str, &str)]) -> Gateway {
        let sip_port = free_port();
        let http_port = free_port();
        let (rtp_min, rtp_max) = rtp_range(300);
        let audio = repo().join("audio");
        let dir = tempfile::tempdir().unwrap();
        let base = format!(
            "[sip]\nudp = [\"127.0.0.1:{sip_port}\"]\ntcp = [\"127.0.0.1:{sip_port}\"]\nshutdown_grace_secs = 2\n\n\
             [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
             [store]\nsqlite_path = \"{db}\"\n\n\
             [tts]\ncache_dir = \"{tts}\"\n\n\
             [media]\nrtp_port_min = {rtp_min}\nrtp_port_max = {rtp_max}\naudio_dir = \"{audio}\"\nrtp_timeout_secs = 0\n\n",
            db = dir.path().join("crossline.db").display(),
            tts = dir.path().join("tts-cache").display(),
            audio = audio.display(),
        );
        let mut body = extra.replace("{sip}", &sip_port.to_string());
        if !body.contains("[[routes]]") {
            body.push_str("\n[[routes]]\nflow = \"demo\"\n");
        }
        let config = dir.path().join("crossline.toml");
        std::fs::write(&config, format!("{}{}", merge_sections(&base, &body), "")).unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let child = launch(&config, log.clone(), &env);
        Gateway {
            child,
            sip_port,
            http_port,
            rtp_range: (rtp_min, rtp_max),
            dir,
            log,
            env,
        }
    }

    /// Kill the process outright (SIGKILL: no drain, no goodbye) and start
    /// it again on the same config, ports and database. The log keeps the
    /// first run's lines; waits for the new run's "crossline ready".
    pub fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.relaunch("killed");
    }

    /// Stop the process as an operator does (SIGTERM: calls drain, the
    /// store flushes) and start it again on the same config, ports and
    /// database.
    pub fn stop_and_restart(&mut self) {
        self.stop();
        self.relaunch("stopped");
    }

    /// SIGTERM, and a clean exit within 10 s (the store flushed).
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "exit {status:?}:\n{}",
            self.log()
        );
    }

    /// Start again after the process ended; waits for "crossline ready".
    fn relaunch(&mut self, how: &str) {
        let mark = {
            let mut l = self.log.lock().unwrap();
            l.push_str(&format!("=== {how}; starting again ===\n"));
            l.len()
        };
        self.child = launch(
            &self.dir.path().join("crossline.toml"),
            self.log.clone(),
            &self.env,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.log()[mark..].contains("crossline ready") {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the restarted gateway never got ready:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sip_addr(&self) -> String {
        format!("127.0.0.1:{}", self.sip_port)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("crossline.db")
    }

    /// GET over plain HTTP/1.1; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let r = self.http("GET", path, &[], None);
        (r.status, r.body)
    }

    /// One HTTP/1.1 request (Connection: close) to the sidecar.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> HttpReply {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.http_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(b) = body {
            req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                b.len()
            ));
        }
        req.push_str("\r\n");
        req.push_str(body.unwrap_or(""));
        s.write_all(req.as_bytes()).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        HttpReply {
            status,
            headers: head.to_ascii_lowercase(),
            raw_headers: head.to_string(),
            body: body.to_string(),
        }
    }

    /// A `/v1` call as an operator or admin holding `token`, with an
    /// optional JSON body.
    pub fn api(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> HttpReply {
        let auth = format!("Bearer {token}");
        let text = body.map(serde_json::Value::to_string);
        self.http(
            method,
            path,
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json"),
            ],
            text.as_deref(),
        )
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn wait_for_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway log never showed {needle:?}:\n{}", self.log());
    }

    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Run the binary on `config`, its stderr appended to `log` line by line.
fn launch(config: &Path, log: Arc<Mutex<String>>, env: &[(String, String)]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crossline"))
        .arg("run")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info,crossline=debug")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn crossline");
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let mut l = log.lock().unwrap();
            l.push_str(&line);
            l.push('\n');
        }
    });
    child
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- crossline log ----\n{}", self.log());
        }
    }
}

/// Append extra TOML, merging keys into existing [sip]/[media] sections
/// when the extra text starts with such a header.
fn merge_sections(base: &str, extra: &str) -> String {
    let mut out = base.to_string();
    let mut current = String::new();
    let mut section_extra: Vec<(String, String)> = Vec::new();
    let mut rest = String::new();
    for line in extra.lines() {
        let t = line.trim();
        if t.starts_with("[[") {
            current = String::from("__array__");
            rest.push_str(line);
            rest.push('\n');
        } else if t.starts_with('[') {
            current = t.to_string();
            if !base.contains(&current) {
                rest.push_str(line);
                rest.push('\n');
                current = String::from("__new__");
            }
        } else if current.starts_with('[') {
            section_extra.push((current.clone(), line.to_string()));
        } else {
            rest.push_str(line);
            rest.push('\n');
        }
    }
    for (section, line) in section_extra {
        let Some(pos) = out.find(&section) else {
            continue;
        };
        // A key the base already sets in this section is replaced.
        let key = line.split('=').next().unwrap_or("").trim().to_string();
        let section_end = out[pos + section.len()..]
            .find("\n[")
            .map_or(out.len(), |i| pos + section.len() + i);
        let existing = (!key.is_empty())
            .then(|| {
                out[pos..section_end]
                    .lines()
                    .find(|l| l.split('=').next().is_some_and(|k| k.trim() == key))
                    .map(str::to_string)
            })
            .flatten();
        match existing {
            Some(old) => {
                let at = pos + out[pos..].find(&old).unwrap_or(0);
                out.replace_range(at..at + old.len(), &line);
            }
            None => {
                let insert_at = pos + section.len() + 1;
                out.insert_str(insert_at, &format!("{line}\n"));
            }
        }
    }
    out.push_str(&rest);
    out
}

pub struct Sipp {
    pub output: Output,
    pub dir: tempfile::TempDir,
    /// SIPp's RTP port (-mp): where the caller receives our audio.
    pub media_port: u16,
}

impl Sipp {
    pub fn ok(&self) -> bool {
        self.output.status.success()
    }

    pub fn describe(&self) -> String {
        format!(
            "sipp exit {:?}\nstdout:\n{}\nstderr:\n{}\nerrors:\n{}",
            self.output.status.code(),
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr),
            self.error_log()
        )
    }

    /// SIPp's error log (unexpected messages etc.), if it wrote one.
    pub fn error_log(&self) -> String {
        let mut s = String::new();
        if let Ok(rd) = std::fs::read_dir(self.dir.path()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.contains("_errors.log") || name.contains("_messages.log") {
                    s.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        s
    }

    /// The last value of a column in the `-trace_stat` CSV.
    pub fn stat(&self, column: &str) -> Option<u64> {
        sipp_stat(self.dir.path(), column)
    }
}

/// The last value of a column in the `-trace_stat` CSV SIPp writes in
/// `dir` (once a second with `-fd 1`, so a running SIPp can be read).
pub fn sipp_stat(dir: &Path, column: &str) -> Option<u64> {
    let rd = std::fs::read_dir(dir).ok()?;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with("_.csv") {
            let text = std::fs::read_to_string(e.path()).ok()?;
            let mut lines = text.lines();
            let header: Vec<&str> = lines.next()?.split(';').collect();
            let idx = header.iter().position(|h| *h == column)?;
            let last = text.lines().last()?;
            return last.split(';').nth(idx)?.trim().parse().ok();
        }
    }
    None
}

/// Run SIPp to completion in its own temp dir, with a hard timeout.
/// `args` must not include -p/-mp; free ports are chosen here.
pub fn sipp(args: &[&str], timeout: Duration) -> Sipp {
    sipp_with_media_port(args, timeout, free_port())
}

pub fn sipp_with_media_port(args: &[&str], timeout: Duration, media_port: u16) -> Sipp {
    sipp_on(args, timeout, free_port(), media_port)
}

/// SIPp as a registrar (UAS) on `port`, for one registration dialogue.
pub fn sipp_registrar(port: u16) -> Sipp {
    sipp_on(
        &["-sf", &scenario("registrar.xml"), "-m", "1"],
        Duration::from_secs(40),
        port,
        free_port(),
    )
}

pub fn sipp_on(args: &[&str], timeout: Duration, port: u16, media_port: u16) -> Sipp {
    require("sipp", "sip-tester");
    let dir = tempfile::tempdir().unwrap();
    let pcap_dir =
        std::env::var("CROSSLINE_SIPP_PCAP_DIR").unwrap_or_else(|_| "/usr/share/sip-tester".into());
    let _ = std::os::unix::fs::symlink(&pcap_dir, dir.path().join("pcap"));
    let port = port.to_string();
    let media_port_s = media_port.to_string();
    let mut cmd = Command::new("timeout");
    cmd.arg("-s")
        .arg("KILL")
        .arg(timeout.as_secs().to_string())
        .arg("sipp")
        .args(args)
        .args(["-p", &port, "-mp", &media_port_s, "-i", "127.0.0.1"])
        .args(["-nostdin", "-trace_err", "-trace_stat", "-fd", "1"])
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let output = cmd.output().expect("run sipp");
    Sipp {
        output,
        dir,
        media_port,
    }
}

/// One SIPp caller for `did` who stays until our BYE (uac_wait_bye.xml).
pub fn caller_waiting(gw: &Gateway, did: &str) -> Sipp {
    sipp(
        &[
            "-sf",
            &scenario("uac_wait_bye.xml"),
            &gw.sip_addr(),
            "-s",
            did,
            "-m",
            "1",
        ],
        Duration::from_secs(60),
    )
}

pub fn scenario(name: &str) -> String {
    repo()
        .join("tests/sipp")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

// ---- packet capture with tshark ----

pub struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

pub fn start_capture(filter: &str) -> Capture {
    require("tshark", "tshark");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cap.pcapng");
    let mut child = Command::new("tshark")
        .args(["-i", "lo", "-f", filter, "-w"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tshark");
    // Wait until the capture is live.
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let mut seen = String::new();
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if seen.contains("Capturing on") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("tshark did not start capturing on lo (are you root?)");
    Capture {
        child,
        file,
        _dir: dir,
    }
}

impl Capture {
    pub fn stop(mut self) -> (std::path::PathBuf, tempfile::TempDir) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGINT);
        }
        let _ = self.child.wait();
        (self.file, self._dir)
    }
}

pub fn tshark_fields(
    file: &std::path::Path,
    decode_as: &[String],
    filter: &str,
    fields: &[&str],
) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r").arg(file);
    for d in decode_as {
        cmd.args(["-d", d]);
    }
    cmd.args(["-Y", filter, "-T", "fields", "-E", "separator=,"]);
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark -r");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// A SIPp call captured on loopback.
pub struct CallCapture {
    /// tshark field rows of the RTP crossline sent to the caller.
    pub rows: Vec<Vec<String>>,
    pub run: Sipp,
    pub file: PathBuf,
    pub caller_port: u16,
    pub our_port: u16,
    _dir: tempfile::TempDir,
}

/// Run a SIPp caller against `gw` while capturing loopback, then return the
/// RTP crossline sent to the caller's RTP port (read from the INVITE's SDP),
/// as tshark `fields` rows, plus SIPp's result.
pub fn call_rtp_to_caller(
    gw: &Gateway,
    sipp_args: &[&str],
    fields: &[&str],
) -> (Vec<Vec<String>>, Sipp) {
    let c = capture_call(gw, sipp_args, fields);
    (c.rows, c.run)
}

pub fn capture_call(gw: &Gateway, sipp_args: &[&str], fields: &[&str]) -> CallCapture {
    let cap = start_capture(&format!(
        "udp port {} or udp src portrange {}-{}",
        gw.sip_port, gw.rtp_range.0, gw.rtp_range.1
    ));
    let run = sipp(sipp_args, Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let (file, dir) = cap.stop();
    let sip_decode = vec![format!("udp.port=={},sip", gw.sip_port)];
    let first_port = |filter: String| -> Option<u16> {
        tshark_fields(&file, &sip_decode, &filter, &["sdp.media.port"])
            .first()
            .and_then(|r| r.first())
            .and_then(|p| p.parse().ok())
    };
    let caller_port = first_port(format!(
        "sip.Method == \"INVITE\" && udp.dstport == {}",
        gw.sip_port
    ))
    .unwrap_or(0);
    let our_port = first_port(format!(
        "sip.Status-Code == 200 && sdp && udp.srcport == {}",
        gw.sip_port
    ))
    .unwrap_or(0);
    let rtp_decode = vec![format!("udp.port=={caller_port},rtp")];
    let rows = tshark_fields(
        &file,
        &rtp_decode,
        &format!("udp.dstport == {caller_port} && udp.srcport == {our_port} && rtp"),
        fields,
    );
    CallCapture {
        rows,
        run,
        file,
        caller_port,
        our_port,
        _dir: dir,
    }
}

/// Fail unless `secs` (a measured delay) lies in `range`.
pub fn within(what: &str, secs: f64, range: std::ops::Range<f64>) {
    assert!(
        range.contains(&secs),
        "{what}: {secs:.2} s, expected {range:?}"
    );
}

// ---- metrics ----

/// The value of one metric series (`name` or `name{labels}`), 0 if absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Wait until `series` on the gateway's /metrics reaches `min` (metrics are
/// exported periodically); its last value either way.
pub fn wait_metric(gw: &Gateway, series: &str, min: f64, timeout: Duration) -> f64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = metric_value(&gw.http_get("/metrics").1, series);
        if v >= min || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn assert_metric_at_least(gw: &Gateway, series: &str, min: f64) -> f64 {
    let v = wait_metric(gw, series, min, Duration::from_secs(4));
    assert!(
        v >= min,
        "{series} = {v}, expected at least {min}\n{}",
        gw.http_get("/metrics").1
    );
    v
}

/// PII masking: a whole run's log (debug level included) must not hold
/// any of `values` (phone numbers, emails, link tokens) in any usual
/// spelling: as given, digits only, without the country code (the last
/// nine digits), or an email's local part.
pub fn assert_no_pii(log: &str, values: &[&str]) {
    for value in values {
        let mut forms = vec![value.to_string()];
        let digits: String = value.chars().filter(char::is_ascii_digit).collect();
        if value.starts_with('+') && digits.len() >= 9 {
            forms.push(digits.clone());
            forms.push(digits[digits.len() - 9..].to_string());
        }
        if let Some((local, _)) = value.split_once('@') {
            forms.push(format!("{local}@"));
        }
        for form in forms {
            assert!(
                !log.contains(&form),
                "the log holds {form:?} (from {value:?}):\n{}",
                log.lines()
                    .filter(|l| l.contains(&form))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

/// The seconds of the day (UTC) a gateway log line was written at.
pub fn seconds_of_day(line: &str) -> f64 {
    let t = line
        .split('T')
        .nth(1)
        .and_then(|r| r.split('Z').next())
        .unwrap();
    let mut p = t.split(':').map(|x| x.parse::<f64>().unwrap());
    p.next().unwrap() * 3600.0 + p.next().unwrap() * 60.0 + p.next().unwrap()
}
