//! Real DNS for the tests: dnsmasq (Debian's `dnsmasq-base`) serving a
//! `.test` zone of NAPTR, SRV and A records from its command line, on a
//! loopback port of its own; and SIPp UASes left running in the background
//! whose calls can be counted while they run.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, require, sipp_stat};

/// A dnsmasq answering for `.test` only (anything else is refused: no
/// upstream, no /etc/hosts), stopped by PID when dropped.
pub struct Dnsmasq {
    child: Child,
    pub port: u16,
}

impl Dnsmasq {
    /// Serve `records` (dnsmasq options such as `--srv-host=...`), each
    /// with a TTL of `ttl` seconds.
    pub fn start(records: &[String], ttl: u32) -> Dnsmasq {
        require("dnsmasq", "dnsmasq-base");
        let port = free_port();
        Dnsmasq {
            child: spawn(port, records, ttl),
            port,
        }
    }

    /// `[sip] dns_servers` for this server.
    pub fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stop and start again on the same port with other records (its
    /// answers so far live on only in the gateway's cache).
    pub fn restart(&mut self, records: &[String], ttl: u32) {
        self.stop();
        self.child = spawn(self.port, records, ttl);
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(port: u16, records: &[String], ttl: u32) -> Child {
    let child = Command::new("dnsmasq")
        .args([
            "--no-daemon",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--local=/test/",
            &format!("--local-ttl={ttl}"),
            "--log-queries",
            "--log-facility=-",
        ])
        .args(records)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dnsmasq");
    wait_for_dns(port);
    child
}

/// Until the server answers a query (any answer).
fn wait_for_dns(port: u16) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    // "ready.test" A, recursion desired.
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["ready", "test"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        let _ = sock.send_to(&query, ("127.0.0.1", port));
        if sock.recv(&mut buf).is_ok() {
            return;
        }
    }
    panic!("dnsmasq never answered on port {port}");
}

/// A SIPp UAS running `scenario` until dropped (killed by PID), with
/// every call it handled countable meanwhile.
pub struct Uas {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Uas {
    /// On `port`, over UDP unless `extra` says `-t t1`.
    pub fn start(scenario: &str, port: u16, extra: &[&str]) -> Uas {
        require("sipp", "sip-tester");
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("sipp")
            .args(["-sf", &super::scenario(scenario)])
            .args(extra)
            .args(["-p", &port.to_string(), "-mp", &free_port().to_string()])
            .args(["-i", "127.0.0.1", "-nostdin", "-trace_stat", "-fd", "1"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipp");
        let uas = Uas { child, dir, port };
        // Listening once its first statistics are out.
        let deadline = Instant::now() + Duration::from_secs(10);
        while uas.completed().is_none() {
            assert!(
                Instant::now() < deadline,
                "SIPp UAS on {port} never started"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        uas
    }

    /// Calls through the whole scenario, as of its last statistics (they
    /// are written once a second).
    pub fn completed(&self) -> Option<u64> {
        sipp_stat(self.dir.path(), "SuccessfulCall(C)")
    }

    /// Calls it took at all (its scenario ran, finished or not).
    pub fn started(&self) -> u64 {
        sipp_stat(self.dir.path(), "TotalCallCreated").unwrap_or(0)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
