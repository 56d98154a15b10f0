//! Destinations by name, end to end: the real binary resolves them through
//! a real DNS server (dnsmasq on a loopback port) by RFC 3263 and calls
//! SIPp UASes on the ports its SRV records name. SRV priority and weight
//! share the calls, a 503 or a silent target fails over (and is backed
//! off), a cached answer lives for its TTL, NAPTR picks TCP, registrars
//! and transfer targets resolve by name, and a NAPTR loop, a name with no
//! records or a DNS server that never answers fail the call with 503 at
//! once. Calls we place follow a 302, and a 603 ends a parallel transfer.

mod common;

use std::time::{Duration, Instant};

use common::dns::{Dnsmasq, Uas};
use common::*;

/// A gateway using `dns` whose route `did` runs a flow that transfers the
/// caller to `targets` (in parallel when `parallel`); `sip` adds `[sip]`
/// keys and `extra` more config.
fn gateway(
    dns: &str,
    routes: &[(&str, &[&str], bool)],
    sip: &str,
    extra: &str,
) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    let mut route_lines = String::new();
    for (did, targets, parallel) in routes {
        let targets = targets
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let ring = if *parallel { "parallel" } else { "sequential" };
        std::fs::write(
            flows.join(format!("to-{did}.toml")),
            format!(
                "name = \"to-{did}\"\n\n[[nodes]]\nid = \"agent\"\ntype = \"transfer\"\ntargets = [{targets}]\nring = \"{ring}\"\nring_timeout_secs = 15\nnext = \"after\"\non_failure = \"sorry\"\n\n[[nodes]]\nid = \"after\"\ntype = \"hangup\"\n\n[[nodes]]\nid = \"sorry\"\ntype = \"hangup\"\n"
            ),
        )
        .unwrap();
        route_lines.push_str(&format!(
            "\n[[routes]]\ndid = \"{did}\"\nflow = \"to-{did}\"\n"
        ));
    }
    let gw = Gateway::start(&format!(
        "[sip]\ndns_servers = [\"{dns}\"]\ndns_timeout_ms = 300\nrandom_seed = 7\nt1_ms = 100\n{sip}\n\n\
         [media]\nhold_message = \"\"\n\n\
         [flows]\ndir = \"{}\"\n{extra}\n{route_lines}",
        flows.display()
    ));
    (gw, dir)
}

/// Callers for `did`: `n` calls, `rate` a second, each hanging up after
/// `hold_ms` (so every one must be bridged: a failed transfer hangs up on
/// the caller first, which fails the run).
fn callers(gw: &Gateway, did: &str, n: u32, rate: u32, hold_ms: u32) -> Sipp {
    let (n, rate, hold) = (n.to_string(), rate.to_string(), hold_ms.to_string());
    sipp(
        &[
            "-sf",
            &scenario("uac_hang_up.xml"),
            &gw.sip_addr(),
            "-s",
            did,
            "-m",
            &n,
            "-r",
            &rate,
            "-l",
            &n,
            "-d",
            &hold,
        ],
        Duration::from_secs(90),
    )
}

/// A SIPp agent that answers every call (rings 1 s) until dropped.
fn agent() -> Uas {
    Uas::start("uas_answer.xml", free_port(), &[])
}

/// Let the UASes write their statistics (once a second).
fn settle() {
    std::thread::sleep(Duration::from_millis(2_200));
}

fn srv(name: &str, host: &str, port: u16, priority: u16, weight: u16) -> String {
    format!("--srv-host={name},{host},{port},{priority},{weight}")
}

fn host(name: &str) -> String {
    format!("--host-record={name},127.0.0.1")
}

/// The sum of `name`'s samples whose labels include every one of `labels`.
fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> u64 {
    let (_, text) = gw.http_get("/metrics");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// SRV: priority 10 holds two targets weighted 3:1, priority 20 one that
/// is only for when both fail. 40 calls to the name spread about 3:1 over
/// the first two and never reach the third.
#[test]
fn srv_priority_and_weight_share_the_calls() {
    let (a, b, c) = (agent(), agent(), agent());
    let dns = Dnsmasq::start(
        &[
            srv("_sip._udp.carrier.test", "a.carrier.test", a.port, 10, 3),
            srv("_sip._udp.carrier.test", "b.carrier.test", b.port, 10, 1),
            srv("_sip._udp.carrier.test", "c.carrier.test", c.port, 20, 1),
            host("a.carrier.test"),
            host("b.carrier.test"),
            host("c.carrier.test"),
        ],
        300,
    );
    let (gw, _dir) = gateway(
        &dns.server(),
        &[("pstn", &["sip:agent@carrier.test"], false)],
        "",
        "",
    );
    let run = callers(&gw, "pstn", 40, 10, 1_800);
    assert!(run.ok(), "{}", run.describe());
    settle();
    let (na, nb, nc) = (
        a.completed().unwrap_or(0),
        b.completed().unwrap_or(0),
        c.completed().unwrap_or(0),
    );
    assert_eq!(na + nb, 40, "every call to priority 10: {na}/{nb}/{nc}");
    assert_eq!(nc, 0, "priority 20 is for failover only");
    // Weight 3:1 → about 30/10; binomial spread (sd ≈ 2.7) well inside.
    assert!((22..=38).contains(&na), "weight 3 took {na} of 40");
    assert!(
        metric(
            &gw,
            "crossline_dns_lookups_total",
            &[("result", "ok"), ("type", "srv")]
        ) >= 1
    );
}

/// The first target answers 503 with Retry-After: the call goes to the
/// next, and for Retry-After the 503'd target is skipped. A target that
/// sends nothing at all is left after `failover_timeout_ms` (1.5 s here).
#[test]
fn a_503_or_a_silent_target_fails_over_and_is_backed_off() {
    let busy = Uas::start("uas_503.xml", free_port(), &["-key", "retry_after", "120"]);
    let next = agent();
    let silent_port = free_port();
    let dns = Dnsmasq::start(
        &[
            srv("_sip._udp.busy.test", "down.busy.test", busy.port, 10, 0),
            srv("_sip._udp.busy.test", "up.busy.test", next.port, 20, 0),
            srv(
                "_sip._udp.silent.test",
                "dead.silent.test",
                silent_port,
                10,
                0,
            ),
            srv("_sip._udp.silent.test", "up.silent.test", next.port, 20, 0),
            host("down.busy.test"),
            host("up.busy.test"),
            host("dead.silent.test"),
            host("up.silent.test"),
        ],
        300,
    );
    let (gw, _dir) = gateway(
        &dns.server(),
        &[
            ("busy", &["sip:agent@busy.test"], false),
            ("silent", &["sip:agent@silent.test"], false),
        ],
        "failover_timeout_ms = 1500",
        "",
    );
    for _ in 0..3 {
        let run = callers(&gw, "busy", 1, 1, 1_800);
        assert!(run.ok(), "{}", run.describe());
    }
    settle();
    assert_eq!(
        busy.started(),
        1,
        "503'd once, then skipped for its Retry-After"
    );
    assert_eq!(next.completed(), Some(3));
    assert!(gw.log().contains("failing over to the next target"));
    assert!(gw.log().contains("retry_after_secs=120"), "{}", gw.log());

    // The caller stays on long enough for the wait, the ring and a talk.
    let run = callers(&gw, "silent", 1, 1, 4_500);
    assert!(run.ok(), "{}", run.describe());
    settle();
    assert_eq!(next.completed(), Some(4));
    let log = gw.log();
    let at = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .map(seconds_of_day)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
    };
    let waited = at("reason=\"timeout\"") - at(&format!("target=127.0.0.1:{silent_port}"));
    assert!(
        (1.4..2.5).contains(&waited),
        "failed over after {waited} s, at failover_timeout_ms"
    );
    assert!(metric(&gw, "crossline_sip_failovers_total", &[("reason", "503")]) >= 1);
    assert!(
        metric(
            &gw,
            "crossline_sip_failovers_total",
            &[("reason", "timeout")]
        ) >= 1
    );
    assert!(
        metric(
            &gw,
            "crossline_sip_failovers_total",
            &[("reason", "backed_off")]
        ) >= 2
    );
}

/// An answer is cached for its TTL: after the records change, calls keep
/// going where the cache says until it runs out, then follow the change.
#[test]
fn new_records_take_over_when_the_ttl_runs_out() {
    let (old, new) = (agent(), agent());
    let records = |port| {
        vec![
            srv("_sip._udp.moving.test", "pbx.moving.test", port, 0, 0),
            host("pbx.moving.test"),
        ]
    };
    const TTL: Duration = Duration::from_secs(8);
    let mut dns = Dnsmasq::start(&records(old.port), TTL.as_secs() as u32);
    let (gw, _dir) = gateway(
        &dns.server(),
        &[("moving", &["sip:agent@moving.test"], false)],
        "",
        "",
    );
    let first = Instant::now();
    let run = callers(&gw, "moving", 1, 1, 1_500);
    assert!(run.ok(), "{}", run.describe());
    dns.restart(&records(new.port), TTL.as_secs() as u32);
    let run = callers(&gw, "moving", 1, 1, 1_500);
    assert!(run.ok(), "{}", run.describe());
    // The second call resolved about 3 s in, well within the TTL.
    assert!(first.elapsed() < TTL, "took {:?}", first.elapsed());
    std::thread::sleep(TTL.saturating_sub(first.elapsed()) + Duration::from_millis(700));
    let run = callers(&gw, "moving", 1, 1, 1_500);
    assert!(run.ok(), "{}", run.describe());
    settle();
    assert_eq!(old.completed(), Some(2), "twice from the cache");
    assert_eq!(new.completed(), Some(1), "then the new record");
}

/// NAPTR says SIP+D2T: the call goes over TCP to the SRV targets of
/// `_sip._tcp`. The first refuses the connection (a transport error,
/// failed over at once); the second is a SIPp UAS on TCP.
#[test]
fn naptr_picks_tcp_and_a_refused_connection_fails_over() {
    let tcp = Uas::start("uas_answer.xml", free_port(), &["-t", "t1"]);
    let closed = free_port();
    let dns = Dnsmasq::start(
        &[
            "--naptr-record=tcp.test,10,10,S,SIP+D2T,,_sip._tcp.tcp.test".into(),
            "--naptr-record=tcp.test,20,10,S,SIP+D2U,,_sip._udp.tcp.test".into(),
            srv("_sip._tcp.tcp.test", "closed.tcp.test", closed, 10, 0),
            srv("_sip._tcp.tcp.test", "open.tcp.test", tcp.port, 20, 0),
            host("closed.tcp.test"),
            host("open.tcp.test"),
        ],
        300,
    );
    let (gw, _dir) = gateway(
        &dns.server(),
        &[("tcp", &["sip:agent@tcp.test"], false)],
        "",
        "",
    );
    let t0 = Instant::now();
    let run = callers(&gw, "tcp", 1, 1, 1_500);
    assert!(run.ok(), "{}", run.describe());
    assert!(t0.elapsed() < Duration::from_secs(6), "no Timer B wait");
    settle();
    assert_eq!(tcp.completed(), Some(1), "answered over TCP");
    let log = gw.log();
    assert!(
        log.contains("cannot connect: treating it as a 503"),
        "{log}"
    );
    assert!(
        metric(
            &gw,
            "crossline_sip_failovers_total",
            &[("reason", "transport")]
        ) >= 1
    );
    assert!(
        metric(
            &gw,
            "crossline_dns_lookups_total",
            &[("result", "ok"), ("type", "naptr")]
        ) >= 1
    );
}

/// A registrar by name: REGISTER goes to the SRV target.
#[test]
fn a_registrar_by_name_gets_our_register() {
    let port = free_port();
    let dns = Dnsmasq::start(
        &[
            srv("_sip._udp.pbx.test", "reg.pbx.test", port, 0, 0),
            host("reg.pbx.test"),
        ],
        300,
    );
    let registrar = std::thread::spawn(move || sipp_registrar(port));
    std::thread::sleep(Duration::from_millis(300));
    let (mut gw, _dir) = gateway(
        &dns.server(),
        &[],
        "",
        "\n[[registrations]]\nregistrar = \"sip:pbx.test\"\naor = \"sip:crossline@pbx.test\"\nusername = \"crossline\"\npassword = \"s3cret\"\nexpires = 300\n",
    );
    // Registered (the registrar grants 4 s), refreshed, and taken down with
    // Expires: 0 at shutdown: its whole scenario.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.log().matches("Registered { expires: 4 }").count() < 3 {
        assert!(Instant::now() < deadline, "{}", gw.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1_100));
    assert_eq!(
        metric(
            &gw,
            "crossline_registration_up",
            &[("registrar", "sip:pbx.test")]
        ),
        1
    );
    gw.stop();
    let run = registrar.join().unwrap();
    assert!(run.ok(), "{}", run.describe());
    assert_eq!(run.stat("SuccessfulCall(C)"), Some(1));
}

/// A NAPTR loop, a name with no records and a DNS server that never
/// answers each fail the transfer at once with 503 and a log line that
/// says why; the caller hears the flow's failure branch (our BYE), and
/// each failure is counted. A callback through a trunk whose proxy does
/// not resolve fails with 503 too.
#[test]
fn a_naptr_loop_an_empty_name_and_a_dns_timeout_fail_with_503_at_once() {
    let dns = Dnsmasq::start(
        &[
            "--naptr-record=loop.test,10,10,,,,hop.test".into(),
            "--naptr-record=hop.test,10,10,,,,loop.test".into(),
        ],
        300,
    );
    let (gw, _dir) = gateway(
        &dns.server(),
        &[
            ("loop", &["sip:agent@loop.test"], false),
            ("empty", &["sip:agent@empty.test"], false),
        ],
        "",
        "",
    );
    for (did, why) in [
        ("loop", "its NAPTR records loop"),
        ("empty", "no NAPTR, SRV or A/AAAA records"),
    ] {
        let t0 = Instant::now();
        let run = caller_waiting(&gw, did);
        assert!(run.ok(), "{did}: {}", run.describe());
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{did}: {:?}",
            t0.elapsed()
        );
        let log = gw.log();
        assert!(log.contains(why), "{did}: {log}");
    }
    let log = gw.log();
    assert_eq!(
        log.matches("cannot resolve the destination").count(),
        2,
        "{log}"
    );
    assert_eq!(log.matches("transfer failed").count(), 2);
    assert!(log
        .lines()
        .filter(|l| l.contains("transfer failed"))
        .all(|l| l.contains("status=503")));
    assert_eq!(
        metric(&gw, "crossline_dns_failures_total", &[("reason", "loop")]),
        1
    );
    assert_eq!(
        metric(
            &gw,
            "crossline_dns_failures_total",
            &[("reason", "not_found")]
        ),
        1
    );
    assert!(!log.contains("panicked"));

    // A server that takes queries and never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = silent.local_addr().unwrap().to_string();
    let (gw, _dir) = gateway(
        &server,
        &[("slow", &["sip:agent@slow.test"], false)],
        "",
        "\n[http]\noperator_token = \"operator-token-for-dns-tests\"\n\n\
         [messaging]\nper_source_per_hour = 100\n\n\
         [[trunks]]\nname = \"carrier\"\noutbound_proxy = \"sip:carrier.test\"\n",
    );
    let t0 = Instant::now();
    let run = caller_waiting(&gw, "slow");
    assert!(run.ok(), "{}", run.describe());
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    assert!(
        gw.log().contains("the DNS server did not answer in time"),
        "{}",
        gw.log()
    );
    assert!(
        metric(
            &gw,
            "crossline_dns_failures_total",
            &[("reason", "timeout")]
        ) >= 1
    );

    let r = gw.http(
        "POST",
        "/v1/callbacks",
        &[("Authorization", "Bearer operator-token-for-dns-tests")],
        Some(r#"{"phone": "+34 612 345 678", "flow": "hold", "consent": {"given": true, "text": "We may call you."}}"#),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    let done = loop {
        let r = gw.http(
            "GET",
            &format!("/v1/callbacks/{id}"),
            &[("Authorization", "Bearer operator-token-for-dns-tests")],
            None,
        );
        let v = r.json();
        if v["state"] == "failed" {
            break v;
        }
        assert!(Instant::now() < deadline, "callback stuck: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(done["sip_status"], 503, "{done}");
}

/// Calls we place follow a 302 to its Contact (a second SIPp agent).
#[test]
fn a_302_is_followed_to_its_contact() {
    let agent = agent();
    let port = agent.port.to_string();
    let moved = Uas::start("uas_302.xml", free_port(), &["-key", "contact_port", &port]);
    let dns = Dnsmasq::start(&[], 300);
    let target = format!("sip:agent@127.0.0.1:{}", moved.port);
    let (gw, _dir) = gateway(
        &dns.server(),
        &[("moved", &[target.as_str()], false)],
        "",
        "",
    );
    let run = callers(&gw, "moved", 1, 1, 1_800);
    assert!(run.ok(), "{}", run.describe());
    settle();
    assert_eq!(moved.completed(), Some(1));
    assert_eq!(agent.completed(), Some(1), "bridged to the Contact");
    assert!(gw.log().contains("following a redirect"));
    assert_eq!(
        metric(
            &gw,
            "crossline_sip_redirects_total",
            &[("result", "followed")]
        ),
        1
    );
}

/// Two agents ring at once; one declines with 603: the transfer ends at
/// once (the flow's failure branch hangs up on the caller) and the other
/// agent's INVITE is cancelled.
#[test]
fn a_603_from_one_parallel_target_ends_the_transfer() {
    let decline = Uas::start("uas_603.xml", free_port(), &[]);
    let ringing = Uas::start("uas_ring_cancel.xml", free_port(), &[]);
    let dns = Dnsmasq::start(&[], 300);
    let targets = [
        format!("sip:agent@127.0.0.1:{}", ringing.port),
        format!("sip:agent@127.0.0.1:{}", decline.port),
    ];
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let (gw, _dir) = gateway(&dns.server(), &[("both", &targets, true)], "", "");
    let t0 = Instant::now();
    let run = caller_waiting(&gw, "both");
    assert!(run.ok(), "{}", run.describe());
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "long before the 15 s ring timeout"
    );
    settle();
    assert_eq!(decline.completed(), Some(1));
    assert_eq!(ringing.completed(), Some(1), "CANCEL, 487, ACK");
    let log = gw.log();
    assert!(log.contains("a 6xx ends the whole transfer"), "{log}");
    assert!(log
        .lines()
        .any(|l| l.contains("transfer failed") && l.contains("status=603")));
    assert_eq!(metric(&gw, "crossline_sip_global_failures_total", &[]), 1);
}
