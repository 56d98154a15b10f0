//! The registrar against real phones: pjsua2 and baresip register with
//! digest and take a call a SIPp caller makes to their user; a phone that
//! vanishes is dropped when its registration lapses; password guesses get
//! 403 and a ban; a REGISTER flood is cut by the per-source rate.

mod common;

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use common::phones::*;
use common::*;

const OPERATOR: &str = "operator-secret-0123456";
const ADMIN: &str = "admin-secret-0123456789";

/// A gateway whose registrar serves alice and bob at crossline.test.
/// `extra` goes in the config too (other sections, registrar keys).
fn registrar_gateway(registrar: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "[http]\noperator_token = \"{OPERATOR}\"\nadmin_token = \"{ADMIN}\"\n\n\
         [registrar]\nenabled = true\ndomain = \"crossline.test\"\nmin_expires_secs = 2\n{registrar}\n\
         [[users]]\nname = \"alice\"\npassword = \"alice-pw-1\"\n\n\
         [[users]]\nname = \"bob\"\npassword = \"bob-pw-2\"\ntags = [\"sales\"]\n\n{extra}"
    ))
}

/// A call to `user` gets 480 Temporarily Unavailable: no device.
fn assert_unavailable(gw: &Gateway, user: &str) {
    let call = sipp(
        &["-sn", "uac", "-s", user, &gw.sip_addr(), "-m", "1"],
        Duration::from_secs(20),
    );
    assert!(!call.ok(), "{}", call.describe());
    assert!(call.error_log().contains("480"), "{}", call.describe());
}

fn registrations(gw: &Gateway) -> Vec<serde_json::Value> {
    let r = gw.api(OPERATOR, "GET", "/v1/registrations", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["registrations"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// pjsua2 registers (its digest answers our SHA-256 + MD5 challenge) and
/// takes a call to its user: ringing, answer, audio, BYE.
#[test]
fn pjsua2_registers_with_digest_and_takes_a_call() {
    let gw = registrar_gateway("", "");
    // No device yet: Temporarily Unavailable.
    assert_unavailable(&gw, "alice");

    let phone = pjsua_agent(&gw, "alice", "alice-pw-1", &[]);
    phone.wait_for("reg 200", Duration::from_secs(15));
    let regs = registrations(&gw);
    assert_eq!(regs.len(), 1, "{regs:?}");
    assert_eq!(regs[0]["user"], "alice");
    assert_eq!(regs[0]["transport"], "udp");
    assert!(
        regs[0]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{regs:?}"
    );
    let left = regs[0]["expires_in"].as_u64().unwrap_or(0);
    assert!((200..=300).contains(&left), "{regs:?}");
    assert_eq!(
        wait_metric(
            &gw,
            "crossline_registrations_active",
            1.0,
            Duration::from_secs(3)
        ),
        1.0
    );

    let call = call_user(&gw, "alice");
    assert!(call.ok(), "{}\n{}", call.describe(), gw.log());
    phone.wait_for("state DISCONNECTED", Duration::from_secs(5));
    let out = phone.output();
    assert!(out.contains("incoming"), "{out}");
    assert!(out.contains("media"), "{out}");
    assert!(out.contains("state CONFIRMED 200"), "{out}");
    assert_metric_at_least(&gw, "crossline_user_calls_total{outcome=\"rung\"}", 1.0);
    assert_metric_at_least(&gw, "crossline_registers_total{outcome=\"ok\"}", 1.0);
}

/// baresip (Debian's 1.0) registers and auto-answers a call to its user.
/// It fails on a SHA-256 challenge that comes first, so its registrar
/// challenges with MD5 only, as an operator with such phones would.
#[test]
fn baresip_registers_with_digest_and_takes_a_call() {
    let gw = registrar_gateway("digest_algorithms = [\"MD5\"]\n", "");
    let (phone, _conf) = baresip_agent(&gw, "bob", "bob-pw-2");
    phone.wait_for("200 OK", Duration::from_secs(15));
    gw.wait_for_log("registered user=bob", Duration::from_secs(5));
    let call = call_user(&gw, "bob");
    assert!(call.ok(), "{}\n{}", call.describe(), phone.output());
    phone.wait_for("terminated", Duration::from_secs(5));
    let out = phone.output();
    assert!(out.contains("Call established"), "{out}");
    assert!(
        out.contains("incoming rtp for 'audio' established"),
        "{out}"
    );
}

/// A phone that vanishes (no unregister) is dropped when its short
/// registration lapses; calls to its user then get 480.
#[test]
fn an_expired_registration_is_dropped() {
    let gw = registrar_gateway("", "");
    let phone = pjsua_agent(&gw, "alice", "alice-pw-1", &["--expires", "3", "--vanish"]);
    phone.wait_for("reg 200 3", Duration::from_secs(15));
    assert_eq!(registrations(&gw).len(), 1);
    gw.wait_for_log("a registration lapsed", Duration::from_secs(6));
    assert!(registrations(&gw).is_empty());
    assert_unavailable(&gw, "alice");
    assert_metric_at_least(
        &gw,
        "crossline_user_calls_total{outcome=\"unavailable\"}",
        1.0,
    );
}

/// SIPp registering alice `times` times with `password` (MD5), each
/// expecting 401 then 403 (`register_guess.xml`).
fn register_with(gw: &Gateway, password: &str, times: u32) -> Sipp {
    sipp(
        &[
            "-sf",
            &scenario("register_guess.xml"),
            "-s",
            "alice",
            "-au",
            "alice",
            "-ap",
            password,
            &gw.sip_addr(),
            "-m",
            &times.to_string(),
            "-recv_timeout",
            "3000",
        ],
        Duration::from_secs(30),
    )
}

/// Wrong passwords: each gets the 401 challenge, then 403; the third
/// bans the source, whose REGISTERs are then dropped unanswered.
#[test]
fn password_guesses_get_403_then_a_ban() {
    let gw = registrar_gateway(
        "digest_algorithms = [\"MD5\"]\n",
        "[sip]\nauth_failures_before_ban = 3\nauth_ban_secs = 60\n",
    );
    let guesses = register_with(&gw, "wrong-guess", 3);
    assert!(guesses.ok(), "{}", guesses.describe());
    assert_eq!(guesses.stat("SuccessfulCall(C)"), Some(3));
    assert_metric_at_least(&gw, "crossline_registers_total{outcome=\"forbidden\"}", 3.0);
    assert_metric_at_least(&gw, "crossline_sip_bans_total{kind=\"source\"}", 1.0);
    assert_metric_at_least(&gw, "crossline_sip_bans_total{kind=\"user\"}", 1.0);
    // Banned: even the right password goes unanswered now.
    let banned = register_with(&gw, "alice-pw-1", 1);
    assert!(!banned.ok(), "{}", banned.describe());
    assert_metric_at_least(&gw, "crossline_sip_dropped_total{reason=\"banned\"}", 1.0);
    assert!(registrations(&gw).is_empty());
}

/// A REGISTER flood from one source is cut by its request rate; the
/// REGISTERs that got through were challenged, none bound anything.
#[test]
fn a_register_flood_is_rate_limited() {
    require("sipp", "sip-tester");
    let gw = registrar_gateway(
        "",
        "[sip]\nrate_limit_per_source = 10.0\nrate_limit_burst = 10.0\nexempt_sources = [\"127.0.0.1/32\"]\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "30",
            "sipp",
            "-sf",
            &scenario("register_flood.xml"),
        ])
        .args(["-s", "alice", &gw.sip_addr(), "-i", "127.0.0.2"])
        .args([
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
        ])
        .args(["-r", "200", "-m", "400", "-nostdin"])
        .current_dir(dir.path())
        .output()
        .expect("run the flood");
    // 0 or 1 (some REGISTERs went unanswered, as they should), not killed.
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let dropped = wait_metric(
        &gw,
        "crossline_sip_dropped_total{reason=\"rate_limited\"}",
        300.0,
        Duration::from_secs(3),
    );
    assert!(dropped >= 300.0, "dropped {dropped}");
    let challenged = metric_value(
        &gw.http_get("/metrics").1,
        "crossline_registers_total{outcome=\"challenged\"}",
    );
    assert!(
        (10.0..100.0).contains(&challenged),
        "challenged {challenged}"
    );
    assert!(registrations(&gw).is_empty());
    // A phone elsewhere (127.0.0.1) still registers meanwhile.
    let phone = pjsua_agent(&gw, "bob", "bob-pw-2", &[]);
    phone.wait_for("reg 200", Duration::from_secs(15));
}

/// An agent's phone calls in (a queue login code, say): its INVITE is
/// challenged with 407 for the user's digest and then reaches the route
/// for the number it dialled; a wrong password gets 403.
#[test]
fn a_registered_user_calls_in_with_its_digest() {
    let gw = registrar_gateway("", "[[routes]]\ndid = \"*77\"\nflow = \"hold\"\n");
    let call = peers::run_script(
        "pjsua2",
        "pjsua_auth_call.py",
        &[
            &format!("sip:*77@{}", gw.sip_addr()),
            "alice",
            "alice-pw-1",
            "1",
        ],
        Duration::from_secs(40),
    );
    let out = String::from_utf8_lossy(&call.stdout);
    assert!(
        out.contains("state CONFIRMED"),
        "pjsua2:\n{out}\n{}",
        gw.log()
    );
    gw.wait_for_log("flow=Some(\"hold\")", Duration::from_secs(2));
    let wrong = peers::run_script(
        "pjsua2",
        "pjsua_auth_call.py",
        &[&format!("sip:*77@{}", gw.sip_addr()), "alice", "guess", "1"],
        Duration::from_secs(40),
    );
    let out = String::from_utf8_lossy(&wrong.stdout);
    assert!(out.contains("state DISCONNECTED 403"), "pjsua2:\n{out}");
    assert_metric_at_least(
        &gw,
        "crossline_sip_auth_failures_total{reason=\"wrong\"}",
        1.0,
    );
}

/// Registrations are kept in the store: after a restart the gateway still
/// rings the phone, which has not registered again since.
#[test]
fn registrations_survive_a_restart() {
    let mut gw = registrar_gateway("", "");
    let phone = pjsua_agent(&gw, "alice", "alice-pw-1", &[]);
    phone.wait_for("reg 200", Duration::from_secs(15));
    gw.stop_and_restart();
    assert!(
        gw.log()
            .contains("registrations read back from the store restored=1"),
        "{}",
        gw.log()
    );
    assert_eq!(registrations(&gw).len(), 1);
    let call = call_user(&gw, "alice");
    assert!(call.ok(), "{}\n{}", call.describe(), gw.log());
    phone.wait_for("state CONFIRMED 200", Duration::from_secs(5));
    // One REGISTER (and its challenge) in all: the restored binding rang.
    assert_eq!(phone.output().matches("reg 200").count(), 1);
}

/// A flow's `transfer` to `user:alice` rings alice's registered phone,
/// with the caller on hold music meanwhile, and bridges it.
#[test]
fn a_transfer_to_a_user_rings_its_phone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("to-alice.toml"),
        "name = \"to-alice\"\n\n[[nodes]]\nid = \"agent\"\ntype = \"transfer\"\n\
         targets = [\"user:alice\"]\nring_timeout_secs = 10\non_failure = \"sorry\"\n\n\
         [[nodes]]\nid = \"sorry\"\ntype = \"hangup\"\n",
    )
    .unwrap();
    let gw = registrar_gateway(
        "",
        &format!(
            "[flows]\ndir = \"{}\"\n\n[[routes]]\ndid = \"500\"\nflow = \"to-alice\"\n",
            dir.path().display()
        ),
    );
    let phone = pjsua_agent(&gw, "alice", "alice-pw-1", &[]);
    phone.wait_for("reg 200", Duration::from_secs(15));
    let call = call_user(&gw, "500");
    assert!(call.ok(), "{}\n{}", call.describe(), gw.log());
    phone.wait_for("state CONFIRMED 200", Duration::from_secs(5));
    gw.wait_for_log("transfer: bridged", Duration::from_secs(2));
    assert!(gw
        .log()
        .contains("ringing a registered user user=alice devices=1"));
}

fn users_api(gw: &Gateway, method: &str, path: &str, body: Option<serde_json::Value>) -> HttpReply {
    gw.api(ADMIN, method, path, body.as_ref())
}

/// pjsua2 registering `user` with `password` until its first final
/// answer: that status.
fn register_once(gw: &Gateway, user: &str, password: &str) -> String {
    let phone = pjsua_agent(gw, user, password, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if let Some(line) = phone.output().lines().find(|l| l.starts_with("reg ")) {
            return line.split(' ').nth(1).unwrap_or_default().to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("pjsua2 never got an answer:\n{}", phone.output());
}

/// A user made over `/v1/users` registers (pjsua2, digest) and takes a
/// call; after a password change the old password gets 403 after the
/// challenge and the new one registers; deleted, its registration is gone
/// and its REGISTERs get 403. Only HA1s are stored, and a config user's
/// name can't be taken over.
#[test]
fn a_user_made_over_the_api_registers_changes_password_and_is_deleted() {
    let gw = registrar_gateway("", "[sip]\nauth_failures_before_ban = 20\n");
    // Operators can't manage users; admins can.
    let r = gw.api(OPERATOR, "GET", "/v1/users", None);
    assert_eq!(r.status, 401, "{}", r.body);
    let r = users_api(
        &gw,
        "POST",
        "/v1/users",
        Some(json!({ "name": "carol", "password": "carol-first-pw", "tags": ["es"] })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["source"], "store");
    let r = users_api(
        &gw,
        "POST",
        "/v1/users",
        Some(json!({ "name": "alice", "password": "not-alices-pw" })),
    );
    assert_eq!(r.status, 409, "a [[users]] name wins: {}", r.body);
    let r = users_api(
        &gw,
        "POST",
        "/v1/users",
        Some(json!({ "name": "dave", "password": "short" })),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    let list = users_api(&gw, "GET", "/v1/users", None).json();
    let names: Vec<(&str, &str)> = list["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["name"].as_str().unwrap(), u["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        names,
        vec![("alice", "config"), ("bob", "config"), ("carol", "store")]
    );
    // The store has the digest HA1s, not the password.
    let mut db = std::fs::read(gw.db_path()).unwrap_or_default();
    db.extend(std::fs::read(gw.db_path().with_extension("db-wal")).unwrap_or_default());
    let db = String::from_utf8_lossy(&db);
    assert!(db.contains("carol"), "the user is in the file");
    assert!(!db.contains("carol-first-pw"));

    let phone = pjsua_agent(&gw, "carol", "carol-first-pw", &[]);
    phone.wait_for("reg 200", Duration::from_secs(15));
    let call = call_user(&gw, "carol");
    assert!(call.ok(), "{}\n{}", call.describe(), gw.log());
    phone.wait_for("state CONFIRMED 200", Duration::from_secs(5));
    drop(phone);

    let r = users_api(
        &gw,
        "PATCH",
        "/v1/users/carol",
        Some(json!({ "password": "carol-second-pw" })),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["tags"], json!(["es"]));
    assert_eq!(register_once(&gw, "carol", "carol-first-pw"), "403");
    assert_eq!(register_once(&gw, "carol", "carol-second-pw"), "200");
    assert!(registrations(&gw).iter().any(|r| r["user"] == "carol"));

    let r = users_api(&gw, "DELETE", "/v1/users/carol", None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert!(
        !registrations(&gw).iter().any(|r| r["user"] == "carol"),
        "its bindings went with it"
    );
    assert_eq!(register_once(&gw, "carol", "carol-second-pw"), "403");
    assert_eq!(users_api(&gw, "GET", "/v1/users/carol", None).status, 404);
    assert_eq!(
        users_api(&gw, "DELETE", "/v1/users/alice", None).status,
        409
    );
}
