//! Our registrar: digest, bindings, expiry and calls over the registered
//! flow, with the fake clock.

use super::*;
use crate::registrar::BindingLimits;

fn registrar_endpoint(failures_before_ban: u32) -> T {
    let t0 = Instant::now();
    let cfg = EndpointConfig {
        registrar: Some(RegistrarConfig {
            domain: "pbx.example".into(),
            users: vec![LocalUser {
                name: "alice".into(),
                password: "s3cret".into(),
            }],
            limits: BindingLimits {
                min_expires: 30,
                max_expires: 600,
                default_expires: 300,
                max_contacts: 3,
            },
            digest_algorithms: Vec::new(),
        }),
        admission: admission::AdmissionConfig {
            auth_failures_before_ban: failures_before_ban,
            ..Default::default()
        },
        ..EndpointConfig::default()
    };
    T {
        ep: Endpoint::new(cfg, t0),
        t0,
    }
}

fn register(seq: u32, user: &str, contact: &str, extra: &str) -> String {
    format!(
        "REGISTER sip:pbx.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKr{seq}{user};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{user}@pbx.example>;tag=r{user}\r\nTo: <sip:{user}@pbx.example>\r\nCall-ID: reg-{user}\r\nCSeq: {seq} REGISTER\r\nContact: {contact}\r\nUser-Agent: deskphone\r\n{extra}Content-Length: 0\r\n\r\n"
    )
}

/// Register `user` with `password` at `ms`: the 401, then the answer to it.
fn sign_in(
    t: &mut T,
    ms: u64,
    seq: u32,
    user: &str,
    password: &str,
    contact: &str,
    extra: &str,
) -> Response {
    t.recv(ms, &register(seq, user, contact, extra));
    let rs = t.responses();
    assert_eq!(statuses(&rs), vec![401]);
    // SHA-256 first, then MD5 (RFC 8760).
    let challenges: Vec<_> = rs[0].headers.get_all("WWW-Authenticate").collect();
    assert_eq!(challenges.len(), 2);
    let ch = crate::auth::Challenge::parse(challenges[1]).unwrap();
    assert_eq!(ch.algorithm, crate::auth::Algorithm::Md5);
    assert_eq!(ch.realm, "pbx.example");
    let auth = crate::auth::DigestClient::new(user, password).authorize(
        &ch,
        "REGISTER",
        "sip:pbx.example",
    );
    t.recv(
        ms + 1,
        &register(
            seq + 1,
            user,
            contact,
            &format!("{extra}Authorization: {auth}\r\n"),
        ),
    );
    let mut rs = t.responses();
    assert_eq!(rs.len(), 1);
    rs.remove(0)
}

#[test]
fn a_user_registers_with_digest_and_the_binding_lapses() {
    let mut t = registrar_endpoint(0);
    let ok = sign_in(
        &mut t,
        0,
        1,
        "alice",
        "s3cret",
        "<sip:alice@10.0.0.5:5062>;expires=60",
        "",
    );
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.headers.get("Contact"),
        Some("<sip:alice@10.0.0.5:5062>;expires=60")
    );
    assert!(matches!(&t.events()[..], [Event::BindingsChanged { user }] if user == "alice"));
    let list = t.ep.bindings_of("alice", t.at(1));
    assert_eq!(list.len(), 1);
    // The flow is where the REGISTER came from, not the Contact's host.
    assert_eq!(list[0].flow.remote, peer());
    assert_eq!(list[0].user_agent.as_deref(), Some("deskphone"));
    assert_eq!(t.ep.counters.bindings, 1);
    assert_eq!(t.ep.counters.registers[&RegisterOutcome::Ok], 1);
    // The endpoint wakes for the lapse and drops it.
    t.run_timers_until(59_900);
    assert_eq!(t.ep.counters.bindings, 1);
    assert!(t.ep.poll_timeout().is_some_and(|at| at <= t.at(61_001)));
    t.run_timers_until(61_001);
    assert!(matches!(&t.events()[..], [Event::BindingsChanged { user }] if user == "alice"));
    assert!(t.ep.bindings_of("alice", t.at(61_001)).is_empty());
    assert_eq!(t.ep.counters.bindings, 0);
}

#[test]
fn too_brief_wrong_password_unknown_user_and_foreign_domain() {
    let mut t = registrar_endpoint(2);
    let brief = sign_in(
        &mut t,
        0,
        1,
        "alice",
        "s3cret",
        "<sip:alice@10.0.0.5>;expires=5",
        "",
    );
    assert_eq!(brief.status, 423);
    assert_eq!(brief.headers.get("Min-Expires"), Some("30"));
    // A wrong password is challenged, then forbidden.
    let wrong = sign_in(&mut t, 10, 11, "alice", "guess", "<sip:alice@10.0.0.5>", "");
    assert_eq!(wrong.status, 403);
    assert_eq!(t.ep.counters.auth_failures, 1);
    // An unknown user learns nothing more than a wrong password does.
    let unknown = sign_in(&mut t, 20, 21, "mallory", "x", "<sip:m@10.0.0.5>", "");
    assert_eq!(unknown.status, 403);
    // Two failures from this source: banned, dropped unanswered.
    assert_eq!(t.ep.counters.bans_sources, 1);
    t.recv(30, &register(31, "alice", "<sip:alice@10.0.0.5>", ""));
    assert!(t.responses().is_empty());
    assert_eq!(t.ep.counters.banned_dropped, 1);
    assert!(t.ep.bindings_of("alice", t.at(30)).is_empty());
    // Another domain is not ours.
    let mut t = registrar_endpoint(0);
    t.recv(
        0,
        &register(1, "alice", "<sip:alice@10.0.0.5>", "").replace(
            "To: <sip:alice@pbx.example>",
            "To: <sip:alice@elsewhere.example>",
        ),
    );
    assert_eq!(statuses(&t.responses()), vec![404]);
}

#[test]
fn several_devices_star_removal_and_path() {
    let mut t = registrar_endpoint(0);
    let ok = sign_in(
        &mut t,
        0,
        1,
        "alice",
        "s3cret",
        "<sip:alice@10.0.0.5>;q=0.5, <sip:alice@10.0.0.6>;expires=600000",
        "Supported: path\r\nPath: <sip:edge.example;lr>\r\n",
    );
    assert_eq!(ok.status, 200);
    let contacts: Vec<_> = ok.headers.get_all("Contact").collect();
    // The full list, best q first, the long one clamped to the maximum.
    assert_eq!(
        contacts,
        vec![
            "<sip:alice@10.0.0.6>;expires=600",
            "<sip:alice@10.0.0.5>;expires=300;q=0.500"
        ]
    );
    assert_eq!(ok.headers.get("Path"), Some("<sip:edge.example;lr>"));
    let list = t.ep.bindings_of("alice", t.at(2));
    assert_eq!(list[0].path, vec!["<sip:edge.example;lr>".to_string()]);
    t.events();
    let gone = sign_in(&mut t, 10, 11, "alice", "s3cret", "*", "Expires: 0\r\n");
    assert_eq!(gone.status, 200);
    assert!(gone.headers.get("Contact").is_none());
    assert!(t.ep.bindings_of("alice", t.at(12)).is_empty());
}

#[test]
fn a_call_to_a_registered_device_goes_over_its_flow() {
    let mut t = registrar_endpoint(0);
    sign_in(
        &mut t,
        0,
        1,
        "alice",
        "s3cret",
        "<sip:alice@203.0.113.66:5099>",
        "",
    );
    let binding = t.ep.bindings_of("alice", t.at(2)).remove(0);
    // The Contact names a foreign host; the INVITE still goes to the
    // REGISTER's source, and so does the BYE.
    let spec = OutgoingCall {
        target: binding.contact.clone(),
        destination: binding.flow.remote,
        transport: binding.flow.transport,
        flow: Some(binding.flow),
        ..outgoing()
    };
    let call = t.ep.invite(t.at(5), spec).unwrap();
    let reqs = t.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].0.remote, peer());
    assert_eq!(reqs[0].1.uri.host, "203.0.113.66");
    let inv = reqs[0].1.clone();
    let mut ok = Response::for_request(&inv, 200);
    let mut to = ok.headers.to().unwrap();
    to.set_tag("dev");
    ok.headers.set("To", to.to_string());
    ok.headers.push("Contact", "<sip:alice@203.0.113.66:5099>");
    ok.headers.push("Content-Type", "application/sdp");
    ok.body = bytes::Bytes::from(sdp_offer("0", ""));
    t.recv(10, std::str::from_utf8(&ok.to_bytes()).unwrap());
    t.ep.hangup(t.at(20), call).unwrap();
    let sent = t.requests();
    let bye = sent.iter().find(|(_, r)| r.method == Method::Bye).unwrap();
    assert_eq!(bye.0.remote, peer());
}

#[test]
fn a_call_from_a_user_must_answer_its_digest() {
    let mut t = registrar_endpoint(0);
    let from_alice = |branch: &str, call_id: &str, extra: &str| {
        invite(branch, call_id, &sdp_offer("0", ""), extra).replace(
            "From: \"Alice\" <sip:alice@127.0.0.1:5061>",
            "From: \"Alice\" <sip:alice@pbx.example>",
        )
    };
    t.recv(0, &from_alice("z9hG4bKu1", "u1", ""));
    let rs = t.responses();
    assert_eq!(statuses(&rs), vec![407]);
    let challenges: Vec<_> = rs[0].headers.get_all("Proxy-Authenticate").collect();
    let ch = crate::auth::Challenge::parse(challenges[0]).unwrap();
    assert_eq!(ch.realm, "pbx.example");
    assert!(t.events().is_empty());
    // A wrong password: 403, counted.
    let wrong = crate::auth::DigestClient::new("alice", "nope").authorize(
        &ch,
        "INVITE",
        "sip:1000@127.0.0.1:5060",
    );
    t.recv(
        10,
        &from_alice(
            "z9hG4bKu2",
            "u2",
            &format!("Proxy-Authorization: {wrong}\r\n"),
        ),
    );
    assert_eq!(statuses(&t.responses()), vec![403]);
    assert_eq!(t.ep.counters.auth_failures, 1);
    // The right one: the call comes in as alice's, on no trunk.
    let right = crate::auth::DigestClient::new("alice", "s3cret").authorize(
        &ch,
        "INVITE",
        "sip:1000@127.0.0.1:5060",
    );
    t.recv(
        20,
        &from_alice(
            "z9hG4bKu3",
            "u3",
            &format!("Proxy-Authorization: {right}\r\n"),
        ),
    );
    assert_eq!(statuses(&t.responses()), vec![100]);
    let inc = t
        .events()
        .into_iter()
        .find_map(|e| match e {
            Event::IncomingCall(i) => Some(i),
            _ => None,
        })
        .unwrap();
    assert_eq!(inc.user.as_deref(), Some("alice"));
    assert_eq!(inc.trunk, None);
    assert_eq!(inc.did, "1000");
}

fn stored(name: &str, realm: &str, password: &str) -> StoredUser {
    use crate::auth::Algorithm;
    StoredUser {
        name: name.into(),
        realm: realm.into(),
        ha1_md5: Algorithm::Md5.ha1(name, realm, password).into(),
        ha1_sha256: Algorithm::Sha256.ha1(name, realm, password).into(),
    }
}

/// A user from the store signs in with the HA1s kept for it; a new
/// password counts from the next REGISTER; a config user of the same name
/// wins; removing the user drops its bindings (an event for the store).
#[test]
fn a_stored_user_signs_in_by_its_ha1s_and_removal_drops_its_bindings() {
    let mut t = registrar_endpoint(0);
    assert!(!t.ep.is_local_user("carol"));
    t.ep.set_stored_user("carol", Some(stored("carol", "pbx.example", "first")));
    assert!(t.ep.is_local_user("carol"));
    let ok = sign_in(
        &mut t,
        0,
        1,
        "carol",
        "first",
        "<sip:carol@10.0.0.5:5062>",
        "",
    );
    assert_eq!(ok.status, 200);
    t.events();
    assert_eq!(t.ep.bindings_of("carol", t.at(2)).len(), 1);
    // The password changed: the old one is refused after the challenge.
    t.ep.set_stored_user("carol", Some(stored("carol", "pbx.example", "second")));
    let old = sign_in(
        &mut t,
        10,
        3,
        "carol",
        "first",
        "<sip:carol@10.0.0.5:5062>",
        "",
    );
    assert_eq!(old.status, 403);
    let new = sign_in(
        &mut t,
        20,
        5,
        "carol",
        "second",
        "<sip:carol@10.0.0.5:5062>",
        "",
    );
    assert_eq!(new.status, 200);
    t.events();
    // HA1s of another realm (the domain changed since) never match.
    t.ep.set_stored_user("dave", Some(stored("dave", "old.example", "pw")));
    let other_realm = sign_in(&mut t, 30, 1, "dave", "pw", "<sip:dave@10.0.0.6>", "");
    assert_eq!(other_realm.status, 403);
    // A config user's password wins over a stored one of the same name.
    t.ep.set_stored_user("alice", Some(stored("alice", "pbx.example", "stored")));
    let stored_pw = sign_in(&mut t, 40, 1, "alice", "stored", "<sip:alice@10.0.0.7>", "");
    assert_eq!(stored_pw.status, 403);
    // Deleted: its bindings go, and the store hears (BindingsChanged).
    t.ep.set_stored_user("carol", None);
    assert!(!t.ep.is_local_user("carol"));
    assert!(t.ep.bindings_of("carol", t.at(50)).is_empty());
    assert!(t
        .events()
        .iter()
        .any(|e| matches!(e, Event::BindingsChanged { user } if user == "carol")));
    // A full reload keeps only those still there.
    t.ep.set_stored_users(vec![stored("erin", "pbx.example", "pw")]);
    assert!(t.ep.is_local_user("erin") && !t.ep.is_local_user("dave"));
    assert_eq!(t.ep.stored_user_count(), 1);
}
