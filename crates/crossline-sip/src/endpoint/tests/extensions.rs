//! Session timers (RFC 4028), UPDATE (RFC 3311), reliable provisionals
//! (RFC 3262) and early media, with the fake clock.

use super::*;

const AGENT: &str = "127.0.0.1:5080";

/// A response from the peer to one of our requests.
fn answer_to(req: &Request, status: u16, tag: &str, extra: &[(&str, &str)], body: &str) -> String {
    let mut r = Response::for_request(req, status);
    if let Ok(mut to) = r.headers.to() {
        if to.tag().is_none() {
            to.set_tag(tag);
            r.headers.set("To", to.to_string());
        }
    }
    if (101..300).contains(&status) {
        r.headers.push("Contact", format!("<sip:agent@{AGENT}>"));
    }
    for (k, v) in extra {
        r.headers.push(k, *v);
    }
    if !body.is_empty() {
        r.headers.push("Content-Type", "application/sdp");
        r.body = bytes::Bytes::from(body.to_string());
    }
    String::from_utf8(r.to_bytes()).unwrap()
}

fn agent_answer(port: u16) -> String {
    format!("v=0\r\no=agent 5 5 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0\r\n")
}

impl T {
    /// A datagram from the agent we called.
    fn agent_says(&mut self, ms: u64, text: &str) {
        let now = self.at(ms);
        self.ep
            .handle_datagram(now, local(), AGENT.parse().unwrap(), text.as_bytes());
    }

    /// An INVITE with an offer and `extra` headers at 0: the call.
    fn offered(&mut self, call_id: &str, extra: &str) -> CallId {
        let branch = format!("z9hG4bK{call_id}");
        self.recv(0, &invite(&branch, call_id, &sdp_offer("0", ""), extra));
        let call = self.incoming_call();
        self.responses();
        call
    }

    /// The same, answered at 0 and ACKed at 10: the 200.
    fn established(&mut self, call_id: &str, extra: &str) -> (CallId, Response) {
        let call = self.offered(call_id, extra);
        self.ep.answer(self.at(0), call, media(20100)).unwrap();
        let ok = self.responses().remove(0);
        assert_eq!(ok.status, 200);
        self.recv(10, &ack_for(&ok, call_id, ""));
        assert!(matches!(self.events()[..], [Event::CallEstablished { .. }]));
        (call, ok)
    }

    fn methods(&mut self) -> Vec<Request> {
        self.requests().into_iter().map(|(_, r)| r).collect()
    }
}

fn names(reqs: &[Request]) -> Vec<&str> {
    reqs.iter().map(|r| r.method.as_str()).collect()
}

#[test]
fn a_session_interval_below_min_se_gets_422_and_garbage_400() {
    let mut t = T::new();
    let offer = sdp_offer("0", "");
    t.recv(
        0,
        &invite(
            "z9hG4bKs1",
            "s1",
            &offer,
            "Supported: timer\r\nSession-Expires: 60\r\n",
        ),
    );
    let r = t.responses();
    assert_eq!(statuses(&r), vec![422]);
    assert_eq!(r[0].headers.get("Min-SE"), Some("90"));
    assert!(t.events().is_empty(), "no call for the application");
    assert_eq!(t.ep.counters.session_interval_too_small, 1);
    // Asked again at our minimum: taken.
    t.recv(
        10,
        &invite(
            "z9hG4bKs2",
            "s2",
            &offer,
            "Supported: timer\r\nSession-Expires: 90\r\nMin-SE: 90\r\n",
        ),
    );
    assert_eq!(statuses(&t.responses()), vec![100]);
    t.incoming_call();
    for (i, bad) in [
        "Session-Expires: soon\r\n",
        "Session-Expires: 1800\r\nMin-SE: -1\r\n",
        "Session-Expires: 1800;refresher=both\r\n",
    ]
    .iter()
    .enumerate()
    {
        t.recv(
            20,
            &invite(&format!("z9hG4bKs3{i}"), &format!("s3{i}"), &offer, bad),
        );
        let r = t.responses();
        assert_eq!(statuses(&r), vec![400], "{bad}");
        assert!(r[0].reason.contains("malformed"), "{}", r[0].reason);
    }
    assert_eq!(t.ep.counters.session_timer_malformed, 3);
    assert!(t.events().is_empty());
}

#[test]
fn the_peer_refreshes_by_update_and_an_unrefreshed_session_ends_with_bye() {
    let mut t = T::new();
    let (call, ok) = t.established(
        "p1",
        "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\nAllow: INVITE, ACK, BYE, UPDATE\r\n",
    );
    assert_eq!(ok.headers.get("Session-Expires"), Some("90;refresher=uac"));
    assert!(ok.headers.tokens("Require").contains(&"timer".to_string()));
    // The peer refreshes at 40 s with an UPDATE and no body.
    t.recv(
        40_000,
        &in_dialog(
            "UPDATE",
            &ok,
            "p1",
            2,
            "Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
            "",
        ),
    );
    let r = t.responses();
    assert_eq!(statuses(&r), vec![200]);
    assert_eq!(
        r[0].headers.get("Session-Expires"),
        Some("90;refresher=uac")
    );
    assert!(r[0].headers.get("Contact").is_some() && r[0].body.is_empty());
    assert_eq!(t.ep.counters.session_refreshes_received, 1);
    // The first deadline (60 s after the 200) passes: refreshed since.
    t.run_timers_until(99_999);
    assert!(t.methods().is_empty());
    // 40 s + 90 - min(32, 30) = 100 s: BYE.
    t.run_timers_until(100_000);
    assert_eq!(names(&t.methods()), ["BYE"]);
    assert_eq!(
        t.events(),
        vec![Event::CallEnded {
            call,
            cause: EndCause::SessionExpired
        }]
    );
    assert_eq!(t.ep.counters.sessions_expired, 1);
}

#[test]
fn we_refresh_at_half_by_update_when_allowed() {
    let mut t = T::new();
    let (_call, ok) = t.established(
        "r1",
        "Supported: timer\r\nSession-Expires: 90;refresher=uas\r\nAllow: INVITE, ACK, BYE, UPDATE\r\n",
    );
    assert_eq!(ok.headers.get("Session-Expires"), Some("90;refresher=uas"));
    t.run_timers_until(44_999);
    assert!(t.methods().is_empty(), "not before half the interval");
    t.run_timers_until(45_000);
    let reqs = t.methods();
    assert_eq!(names(&reqs), ["UPDATE"]);
    let update = &reqs[0];
    assert_eq!(
        update.headers.get("Session-Expires"),
        Some("90;refresher=uac")
    );
    assert_eq!(update.headers.get("Min-SE"), Some("90"));
    assert!(update.body.is_empty(), "a refresh changes no media");
    assert_eq!(update.headers.to().unwrap().tag(), Some("a1"));
    assert_eq!(t.ep.counters.session_refreshes_sent, 1);
    t.recv(
        45_100,
        &answer_to(
            update,
            200,
            "a1",
            &[("Session-Expires", "90;refresher=uac")],
            "",
        ),
    );
    // Refreshed at 45.1 s: the next one at 90.1 s.
    t.run_timers_until(90_099);
    assert!(t.methods().is_empty());
    t.run_timers_until(90_100);
    let reqs = t.methods();
    assert_eq!(names(&reqs), ["UPDATE"]);
    assert!(reqs[0].headers.cseq().unwrap().seq > update.headers.cseq().unwrap().seq);
    // A 2xx without Session-Expires turns the timer off.
    t.recv(90_200, &answer_to(&reqs[0], 200, "a1", &[], ""));
    t.run_timers_until(1_000_000);
    assert!(t.methods().is_empty());
    assert!(t.events().is_empty(), "the call goes on");
}

#[test]
fn we_refresh_by_reinvite_offering_the_same_sdp() {
    let mut t = T::new();
    let (call, ok) = t.established(
        "r2",
        "Supported: timer\r\nSession-Expires: 120;refresher=uas\r\n",
    );
    t.run_timers_until(60_000);
    let reqs = t.methods();
    assert_eq!(names(&reqs), ["INVITE"], "no UPDATE in the peer's Allow");
    let reinvite = &reqs[0];
    assert_eq!(reinvite.body, ok.body, "the same SDP, version unchanged");
    assert_eq!(
        reinvite.headers.get("Session-Expires"),
        Some("120;refresher=uac")
    );
    let seq = reinvite.headers.cseq().unwrap().seq;
    let answer = answer_to(
        reinvite,
        200,
        "a1",
        &[("Session-Expires", "120;refresher=uac")],
        &sdp_offer("0", ""),
    );
    t.recv(60_050, &answer);
    let reqs = t.methods();
    assert_eq!(names(&reqs), ["ACK"]);
    assert_eq!(
        reqs[0].headers.cseq().unwrap().seq,
        seq,
        "ACK for the re-INVITE"
    );
    assert!(matches!(t.events()[..], [Event::MediaChanged { call: c, .. }] if c == call));
    // A retransmitted 2xx is ACKed with the re-INVITE's CSeq too.
    t.recv(60_500, &answer);
    let reqs = t.methods();
    assert_eq!(names(&reqs), ["ACK"]);
    assert_eq!(reqs[0].headers.cseq().unwrap().seq, seq);
    // Next refresh 60 s after this one.
    t.run_timers_until(120_049);
    assert!(t.methods().is_empty());
    t.run_timers_until(120_050);
    assert_eq!(names(&t.methods()), ["INVITE"]);
}

#[test]
fn glare_gets_491_both_ways_and_a_481_to_a_refresh_ends_the_call() {
    let mut t = T::new();
    let (call, ok) = t.established(
        "g1",
        "Supported: timer\r\nSession-Expires: 90;refresher=uas\r\n",
    );
    t.run_timers_until(45_000);
    let ours = t.methods().remove(0);
    assert_eq!(ours.method, Method::Invite);
    // The peer's re-INVITE and offer-carrying UPDATE cross ours: 491.
    let offer = sdp_offer("0", "a=sendonly\r\n");
    let ct = "Content-Type: application/sdp\r\n";
    t.recv(45_010, &in_dialog("INVITE", &ok, "g1", 2, ct, &offer));
    assert_eq!(statuses(&t.responses()), vec![491]);
    t.recv(45_020, &in_dialog("UPDATE", &ok, "g1", 3, ct, &offer));
    assert_eq!(statuses(&t.responses()), vec![491]);
    assert_eq!(t.ep.counters.glare_refused, 2);
    // An UPDATE without an offer is no glare.
    t.recv(45_030, &in_dialog("UPDATE", &ok, "g1", 4, "", ""));
    assert_eq!(statuses(&t.responses()), vec![200]);
    // Ours gets 491 too: we try again within 2 s (we don't own the Call-ID).
    t.recv(45_040, &answer_to(&ours, 491, "a1", &[], ""));
    assert_eq!(names(&t.methods()), ["ACK"]);
    t.run_timers_until(47_040);
    let again = t.methods();
    let seq = again[0].headers.cseq().unwrap().seq;
    assert!(seq > ours.headers.cseq().unwrap().seq);
    assert!(
        again
            .iter()
            .all(|r| r.method == Method::Invite && r.headers.cseq().unwrap().seq == seq),
        "one new re-INVITE (and its retransmissions): {:?}",
        names(&again)
    );
    // 481: the peer has lost the dialog; we end it.
    t.recv(47_100, &answer_to(&again[0], 481, "a1", &[], ""));
    assert_eq!(names(&t.methods()), ["ACK", "BYE"]);
    assert_eq!(
        t.events(),
        vec![Event::CallEnded {
            call,
            cause: EndCause::SessionExpired
        }]
    );
}

#[test]
fn an_unanswered_refresh_ends_the_session_at_the_peers_deadline() {
    let mut t = T::new();
    let (call, _ok) = t.established(
        "u1",
        "Supported: timer\r\nSession-Expires: 90;refresher=uas\r\nAllow: UPDATE\r\n",
    );
    t.run_timers_until(45_000);
    assert_eq!(names(&t.methods()), ["UPDATE"]);
    // Retransmitted, unanswered, until 60 s: then BYE.
    t.run_timers_until(59_999);
    assert!(t.methods().iter().all(|r| r.method == Method::Update));
    t.run_timers_until(60_000);
    assert_eq!(names(&t.methods()), ["BYE"]);
    assert!(t.events().contains(&Event::CallEnded {
        call,
        cause: EndCause::SessionExpired
    }));
}

#[test]
fn update_with_and_without_sdp() {
    let mut t = T::new();
    let (call, ok) = t.established("up1", "");
    assert!(
        ok.headers.get("Session-Expires").is_none(),
        "no timer asked, none granted"
    );
    t.recv(100, &in_dialog("UPDATE", &ok, "up1", 2, "", ""));
    let r = t.responses();
    assert_eq!(statuses(&r), vec![200]);
    assert!(r[0].body.is_empty() && r[0].headers.get("Contact").is_some());
    assert!(t.events().is_empty());
    // Hold by UPDATE: answered recvonly, a new version.
    let ct = "Content-Type: application/sdp\r\n";
    let hold = sdp_offer("0", "a=sendonly\r\n");
    t.recv(200, &in_dialog("UPDATE", &ok, "up1", 3, ct, &hold));
    let r = t.responses();
    assert_eq!(statuses(&r), vec![200]);
    let body = std::str::from_utf8(&r[0].body).unwrap().to_string();
    assert!(
        body.contains("a=recvonly") && body.contains("o=crossline 42 2 IN IP4"),
        "{body}"
    );
    match t.events().as_slice() {
        [Event::MediaChanged { media, call: c }] => {
            assert_eq!(*c, call);
            assert!(media.remote_on_hold);
        }
        other => panic!("{other:?}"),
    }
    // The same offer again: the same answer, the same version.
    t.recv(300, &in_dialog("UPDATE", &ok, "up1", 4, ct, &hold));
    let r = t.responses();
    assert_eq!(std::str::from_utf8(&r[0].body).unwrap(), body);
    t.events();
    // An offer that doesn't parse: 488, the call goes on.
    t.recv(400, &in_dialog("UPDATE", &ok, "up1", 5, ct, "not sdp"));
    assert_eq!(statuses(&t.responses()), vec![488]);
    assert_eq!(t.ep.counters.updates_received, 4);
    assert_eq!(t.ep.active_calls(), 1);
}

#[test]
fn reliable_ringing_is_retransmitted_until_a_matching_prack() {
    let mut t = T::new();
    let call = t.offered("rel1", "Supported: 100rel\r\n");
    t.ep.ring(t.at(0), call).unwrap();
    let r = t.responses();
    assert_eq!(statuses(&r), vec![180]);
    let ringing = r[0].clone();
    assert!(ringing
        .headers
        .tokens("Require")
        .contains(&"100rel".to_string()));
    let rseq: u32 = ringing.headers.get("RSeq").unwrap().parse().unwrap();
    assert_eq!(t.ep.counters.reliable_provisionals_sent, 1);
    // T1, then doubling.
    let mut resent = Vec::new();
    for ms in [499, 500, 1_499, 1_500, 3_499, 3_500] {
        t.run_timers_until(ms);
        for r in t.responses() {
            assert_eq!(r.headers.get("RSeq"), Some(rseq.to_string().as_str()));
            resent.push(ms);
        }
    }
    assert_eq!(resent, [500, 1_500, 3_500]);
    // PRACKs that name something else: 481, counted.
    for (cseq, rack) in [
        (2, format!("{} 1 INVITE", rseq + 1)),
        (3, "soon".to_string()),
        (4, format!("{rseq} 9 INVITE")),
    ] {
        t.recv(
            3_600,
            &in_dialog(
                "PRACK",
                &ringing,
                "rel1",
                cseq,
                &format!("RAck: {rack}\r\n"),
                "",
            ),
        );
        assert_eq!(statuses(&t.responses()), vec![481], "{rack}");
    }
    assert_eq!(t.ep.counters.pracks_unmatched, 3);
    t.recv(
        3_700,
        &in_dialog(
            "PRACK",
            &ringing,
            "rel1",
            5,
            &format!("RAck: {rseq} 1 INVITE\r\n"),
            "",
        ),
    );
    assert_eq!(statuses(&t.responses()), vec![200]);
    assert_eq!(t.ep.counters.pracks_received, 1);
    t.run_timers_until(40_000);
    assert!(
        t.responses().is_empty(),
        "no retransmission after the PRACK"
    );
    // Acknowledged already: a second PRACK for it matches nothing.
    t.recv(
        40_000,
        &in_dialog(
            "PRACK",
            &ringing,
            "rel1",
            6,
            &format!("RAck: {rseq} 1 INVITE\r\n"),
            "",
        ),
    );
    assert_eq!(statuses(&t.responses()), vec![481]);
    // The next reliable provisional takes the next RSeq; the 200 needn't
    // wait for its PRACK (no SDP in it).
    t.ep.ring(t.at(40_100), call).unwrap();
    let r = t.responses();
    assert_eq!(
        r[0].headers.get("RSeq"),
        Some((rseq + 1).to_string().as_str())
    );
    t.ep.answer(t.at(40_200), call, media(20102)).unwrap();
    assert_eq!(statuses(&t.responses()), vec![200]);
    t.run_timers_until(41_000);
    assert!(
        t.responses().iter().all(|r| r.status == 200),
        "the 180 stopped"
    );
    // Its PRACK, already on the way, is still welcome.
    let rack = format!("RAck: {} 1 INVITE\r\n", rseq + 1);
    t.recv(41_000, &in_dialog("PRACK", &ringing, "rel1", 7, &rack, ""));
    assert_eq!(statuses(&t.responses()), vec![200]);
}

#[test]
fn early_media_goes_reliably_and_the_200_waits_for_its_prack() {
    let mut t = T::new();
    let call = t.offered("em1", "Require: 100rel\r\n");
    let early = t.ep.early_media(t.at(0), call, media(20104)).unwrap();
    assert_eq!(early.remote_rtp.port(), 6000);
    let r = t.responses();
    assert_eq!(statuses(&r), vec![183]);
    let progress = r[0].clone();
    assert!(std::str::from_utf8(&progress.body)
        .unwrap()
        .contains("m=audio 20104"));
    let rseq = progress.headers.get("RSeq").unwrap().to_string();
    assert_eq!(t.ep.counters.early_media_sent, 1);
    // Answered before the PRACK: the 200 waits (§3), and a second answer is refused.
    t.ep.answer_early(t.at(100), call).unwrap();
    assert!(t.responses().is_empty());
    assert_eq!(
        t.ep.answer(t.at(100), call, media(20106)),
        Err(EndpointError::BadState)
    );
    t.recv(
        150,
        &in_dialog(
            "PRACK",
            &progress,
            "em1",
            2,
            &format!("RAck: {rseq} 1 INVITE\r\n"),
            "",
        ),
    );
    let r = t.responses();
    assert_eq!(statuses(&r), vec![200, 200]);
    assert_eq!(r[0].headers.cseq().unwrap().method, Method::Prack);
    assert_eq!(r[1].headers.cseq().unwrap().method, Method::Invite);
    assert_eq!(r[1].body, progress.body, "the 200 repeats the 183's SDP");
    t.recv(200, &ack_for(&r[1], "em1", ""));
    assert_eq!(
        t.events(),
        vec![Event::CallEstablished { call, media: None }]
    );
}

#[test]
fn a_reliable_provisional_never_pracked_fails_the_call_with_500() {
    let mut t = T::new();
    let call = t.offered("np1", "Require: 100rel\r\n");
    t.ep.ring(t.at(0), call).unwrap();
    t.run_timers_until(31_999);
    let sent = statuses(&t.responses());
    assert!(
        sent.len() >= 6 && sent.iter().all(|s| *s == 180),
        "{sent:?}"
    );
    t.run_timers_until(32_000);
    assert_eq!(statuses(&t.responses()), vec![500]);
    assert_eq!(t.ep.counters.prack_timeouts, 1);
    assert!(matches!(
        t.events()[..],
        [Event::CallEnded {
            cause: EndCause::Rejected { status: 500, .. },
            ..
        }]
    ));
}

#[test]
fn calls_we_place_offer_timers_and_prack_reliable_provisionals() {
    let mut t = T::new();
    let call = t.ep.invite(t.at(0), outgoing()).unwrap();
    let inv = t.methods().remove(0);
    assert_eq!(inv.headers.tokens("Supported"), ["100rel", "timer"]);
    assert_eq!(inv.headers.get("Session-Expires"), Some("1800"));
    assert_eq!(inv.headers.get("Min-SE"), Some("90"));
    let reliable = |rseq: &'static str| [("Require", "100rel"), ("RSeq", rseq)];
    let progress = answer_to(&inv, 183, "agent", &reliable("7"), &agent_answer(7000));
    t.agent_says(10, &progress);
    let reqs = t.methods();
    assert_eq!(names(&reqs), ["PRACK"]);
    let prack = &reqs[0];
    assert_eq!(prack.headers.get("RAck"), Some("7 1 INVITE"));
    assert_eq!(
        prack.uri.to_string(),
        format!("sip:agent@{AGENT}"),
        "to the 183's Contact"
    );
    assert_eq!(prack.headers.to().unwrap().tag(), Some("agent"));
    assert_eq!(prack.headers.cseq().unwrap().seq, 2);
    match t.events().as_slice() {
        [Event::EarlyMedia { media, .. }, Event::Progress { status: 183, .. }] => {
            assert_eq!(media.remote_rtp.port(), 7000)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(t.ep.counters.pracks_sent, 1);
    // A retransmission is not PRACKed again, nor is its SDP news.
    t.agent_says(20, &progress);
    assert!(t.methods().is_empty());
    assert_eq!(t.events(), vec![Event::Progress { call, status: 183 }]);
    t.agent_says(30, &answer_to(prack, 200, "agent", &[], ""));
    // The next one, in order.
    t.agent_says(40, &answer_to(&inv, 180, "agent", &reliable("8"), ""));
    let reqs = t.methods();
    assert_eq!(reqs[0].headers.get("RAck"), Some("8 1 INVITE"));
    assert_eq!(reqs[0].headers.cseq().unwrap().seq, 3);
    t.events();
    // The 200 has no SDP: the 183's answer stands.
    t.agent_says(50, &answer_to(&inv, 200, "agent", &[], ""));
    match t.events().as_slice() {
        [Event::CallEstablished { media: Some(m), .. }] => assert_eq!(m.remote_rtp.port(), 7000),
        other => panic!("{other:?}"),
    }
    let reqs = t.methods();
    assert_eq!(names(&reqs), ["ACK"]);
    assert_eq!(reqs[0].headers.cseq().unwrap().seq, 1);
    t.ep.hangup(t.at(60), call).unwrap();
    let bye = t.methods().remove(0);
    assert_eq!(
        bye.headers.cseq().unwrap().seq,
        4,
        "after the PRACKs' CSeqs"
    );
}

#[test]
fn a_422_to_our_invite_asks_again_and_the_answer_sets_the_refresher() {
    let mut t = T::new();
    let call = t.ep.invite(t.at(0), outgoing()).unwrap();
    let inv = t.methods().remove(0);
    t.agent_says(10, &answer_to(&inv, 422, "x", &[("Min-SE", "3600")], ""));
    let reqs = t.methods();
    assert_eq!(names(&reqs), ["ACK", "INVITE"]);
    let inv2 = &reqs[1];
    assert_eq!(inv2.headers.cseq().unwrap().seq, 2);
    assert_eq!(inv2.headers.get("Session-Expires"), Some("3600"));
    assert_eq!(inv2.headers.get("Min-SE"), Some("3600"));
    // The UAS picks us as refresher; it allows no UPDATE: re-INVITE.
    t.agent_says(
        20,
        &answer_to(
            inv2,
            200,
            "agent",
            &[("Session-Expires", "3600;refresher=uac")],
            &agent_answer(7002),
        ),
    );
    assert!(matches!(t.events()[..], [Event::CallEstablished { .. }]));
    t.methods();
    t.run_timers_until(1_800_019);
    assert!(t.methods().is_empty());
    t.run_timers_until(1_800_020);
    let reqs = t.methods();
    assert_eq!(names(&reqs), ["INVITE"]);
    assert_eq!(reqs[0].body, inv2.body, "our offer again, unchanged");
    // Never answered: when the re-INVITE times out (64*T1), BYE.
    t.run_timers_until(1_999_000);
    assert_eq!(names(&t.methods()).last(), Some(&"BYE"));
    assert!(t.events().contains(&Event::CallEnded {
        call,
        cause: EndCause::SessionExpired
    }));
    // A peer that refreshes itself but never does: BYE at 120 - 32 s.
    let call2 = t.ep.invite(t.at(2_000_000), outgoing()).unwrap();
    let inv = t.methods().remove(0);
    t.agent_says(
        2_000_010,
        &answer_to(
            &inv,
            200,
            "agent2",
            &[("Session-Expires", "120;refresher=uas")],
            &agent_answer(7004),
        ),
    );
    t.methods();
    t.events();
    t.run_timers_until(2_088_009);
    assert!(t.methods().is_empty());
    t.run_timers_until(2_088_010);
    assert_eq!(names(&t.methods()), ["BYE"]);
    assert!(t.events().contains(&Event::CallEnded {
        call: call2,
        cause: EndCause::SessionExpired
    }));
    // A 422 whose Min-SE is no longer: the call fails with it.
    let call3 = t.ep.invite(t.at(3_000_000), outgoing()).unwrap();
    let inv = t.methods().remove(0);
    t.agent_says(
        3_000_010,
        &answer_to(&inv, 422, "x", &[("Min-SE", "90")], ""),
    );
    assert!(t.events().contains(&Event::CallEnded {
        call: call3,
        cause: EndCause::Rejected {
            status: 422,
            reason: "Session Interval Too Small".into()
        }
    }));
}

#[test]
fn an_offerless_reinvite_gets_a_sendrecv_offer_whose_version_moves_only_on_change() {
    let mut t = T::new();
    let (_call, ok) = t.established("ol1", "");
    let ct = "Content-Type: application/sdp\r\n";
    // Held by the peer: our answer says recvonly (version 2).
    t.recv(
        100,
        &in_dialog(
            "INVITE",
            &ok,
            "ol1",
            2,
            ct,
            &sdp_offer("0", "a=sendonly\r\n"),
        ),
    );
    let held = t.responses().remove(0);
    t.recv(110, &ack_for(&held, "ol1", ""));
    // A PBX retrieving the call asks without an offer: we offer sendrecv,
    // a change, so version 3.
    t.recv(200, &in_dialog("INVITE", &ok, "ol1", 3, "", ""));
    let r = t.responses().remove(0);
    let offer = std::str::from_utf8(&r.body).unwrap().to_string();
    assert!(
        offer.contains("a=sendrecv") && offer.contains("o=crossline 42 3 "),
        "{offer}"
    );
    t.recv(210, &ack_for(&r, "ol1", &sdp_offer("0", "")));
    t.events();
    // Asked again: the same offer, the same version.
    t.recv(300, &in_dialog("INVITE", &ok, "ol1", 4, "", ""));
    let again = t.responses().remove(0);
    assert_eq!(std::str::from_utf8(&again.body).unwrap(), offer);
}
