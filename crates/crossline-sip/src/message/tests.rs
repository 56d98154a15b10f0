use super::*;

const INVITE: &str = "INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

fn req(text: &str) -> Request {
    match parse_message(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => r,
        other => panic!("expected request, got {other:?}"),
    }
}

fn resp(text: &str) -> Response {
    match parse_message(text.as_bytes()) {
        Ok(SipMessage::Response(r)) => r,
        other => panic!("expected response, got {other:?}"),
    }
}

fn err_kind(text: &[u8]) -> ParseErrorKind {
    match parse_message(text) {
        Err(e) => e.kind,
        Ok(m) => panic!("expected error, parsed {m:?}"),
    }
}

#[test]
fn parses_basic_invite() {
    let r = req(INVITE);
    assert_eq!(r.method, Method::Invite);
    assert_eq!(r.uri.to_string(), "sip:bob@example.com");
    assert_eq!(&r.body[..], b"v=0\n");
    assert_eq!(r.headers.call_id(), Some("a84b4c76e66710@pc33.example.com"));
    let cseq = r.headers.cseq().unwrap();
    assert_eq!((cseq.seq, cseq.method), (314159, Method::Invite));
    assert_eq!(r.headers.from().unwrap().tag(), Some("1928301774"));
    assert_eq!(r.headers.from().unwrap().display.as_deref(), Some("Alice"));
    assert_eq!(r.headers.to().unwrap().display.as_deref(), Some("Bob"));
    assert_eq!(r.headers.to().unwrap().tag(), None);
    assert_eq!(r.headers.max_forwards().unwrap(), Some(70));
    assert_eq!(r.headers.content_type(), Some("application/sdp"));
    assert_eq!(
        r.headers.top_via().unwrap().branch(),
        Some("z9hG4bK776asdhds")
    );
    // Content-Length is framing, not kept as a header.
    assert_eq!(r.headers.get("Content-Length"), None);
    assert!(r.check_mandatory().is_ok());
}

#[test]
fn compact_headers_expand() {
    let r = req("OPTIONS sip:a@b SIP/2.0\r\n\
v: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
f: <sip:x@y>;tag=1\r\n\
t: <sip:a@b>\r\n\
i: cid\r\n\
CSEQ: 1 OPTIONS\r\n\
m: <sip:x@h>\r\n\
k: 100rel, timer\r\n\
c: text/plain\r\n\
s: hi\r\n\
o: presence\r\n\
u: presence, dialog\r\n\
e: gzip\r\n\
l: 0\r\n\r\n");
    let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Contact",
            "Supported",
            "Supported",
            "Content-Type",
            "Subject",
            "Event",
            "Allow-Events",
            "Allow-Events",
            "Content-Encoding"
        ]
    );
    // Lookups accept either form, any case.
    assert_eq!(r.headers.get("i"), Some("cid"));
    assert_eq!(r.headers.get("CALL-ID"), Some("cid"));
    assert_eq!(r.headers.get("v"), r.headers.get("via"));
    assert_eq!(r.headers.tokens("Supported"), ["100rel", "timer"]);
    assert_eq!(r.headers.tokens("k"), ["100rel", "timer"]);
}

#[test]
fn folded_lines_unfold() {
    let r = req("OPTIONS sip:a@b SIP/2.0\r\n\
Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
Subject: first\r\n  second\r\n\tthird\r\n\
From: <sip:x@y>\r\n ;tag=9\r\n\
To:\r\n <sip:a@b>\r\n\
Call-ID: c\r\n\
CSeq: 1\r\n OPTIONS\r\n\r\n");
    assert_eq!(r.headers.get("Subject"), Some("first second third"));
    assert_eq!(r.headers.from().unwrap().tag(), Some("9"));
    assert_eq!(r.headers.get("To"), Some("<sip:a@b>"));
    assert_eq!(r.headers.cseq().unwrap().seq, 1);
}

#[test]
fn comma_joined_vias_split() {
    let r = req("OPTIONS sip:a@b SIP/2.0\r\n\
Via: SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/TCP b.example.com:5070;branch=z9hG4bK2\r\n\
Via: SIP / 2.0 / tls c.example.com ; branch = z9hG4bK3 ; received=10.0.0.1\r\n\
From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n");
    assert_eq!(r.headers.get_all("Via").count(), 3);
    let vias = r.headers.vias().unwrap();
    assert_eq!(vias.len(), 3);
    assert_eq!(vias[0].host, "a.example.com");
    assert_eq!(
        (vias[1].transport.as_str(), vias[1].port),
        ("TCP", Some(5070))
    );
    assert_eq!(vias[2].transport, "TLS");
    assert_eq!(vias[2].branch(), Some("z9hG4bK3"));
    assert_eq!(vias[2].received(), Some("10.0.0.1"));
    assert_eq!(r.headers.top_via().unwrap(), vias[0]);
}

#[test]
fn auth_and_date_never_split() {
    let r = req("REGISTER sip:example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:x@example.com>;tag=1\r\nTo: <sip:x@example.com>\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
Authorization: Digest username=\"x\", realm=\"example.com\", nonce=\"n\", uri=\"sip:example.com\", response=\"r\"\r\n\
Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n\
WWW-Authenticate: Digest realm=\"a\", nonce=\"b\"\r\n\
X-Custom: a, b\r\n\r\n");
    assert_eq!(r.headers.get_all("Authorization").count(), 1);
    assert_eq!(r.headers.get_all("Date").count(), 1);
    assert_eq!(r.headers.get_all("WWW-Authenticate").count(), 1);
    assert_eq!(r.headers.get_all("x-custom").count(), 1);
}

#[test]
fn lf_only_message() {
    let text = INVITE.replace("\r\n", "\n");
    let r = req(&text);
    assert_eq!(r.method, Method::Invite);
    assert_eq!(&r.body[..], b"v=0\n");
    assert_eq!(r.headers, req(INVITE).headers);
    // Mixed line ends too.
    let mixed = INVITE.replacen("\r\n", "\n", 3);
    assert_eq!(req(&mixed), req(INVITE));
}

#[test]
fn round_trip_to_bytes() {
    for text in [
        INVITE,
        "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1;received=1.2.3.4;rport=5060\r\n\
From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n",
    ] {
        let m = parse_message(text.as_bytes()).unwrap();
        let again = parse_message(&m.to_bytes()).unwrap();
        assert_eq!(m, again);
    }

    // A message built in code.
    let mut r = Request::new(Method::Register, Uri::parse("sip:example.com").unwrap());
    let mut via = Via::parse("SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKx").unwrap();
    via.set_param("rport", None);
    r.headers.push("Via", via.to_string());
    let mut from = NameAddr::parse("\"A \\\"q\\\" B\" <sip:a@example.com>").unwrap();
    from.set_tag("t1");
    r.headers.push("From", from.to_string());
    r.headers.push("To", "<sip:a@example.com>");
    r.headers.push("Call-ID", "x@y");
    r.headers.push("CSeq", "5 REGISTER");
    r.headers.push("Content-Length", "999"); // ignored: rewritten from body
    r.body = bytes::Bytes::from_static(b"hello");
    let bytes = r.to_bytes();
    let text = String::from_utf8(bytes.clone()).unwrap();
    assert!(text.contains("Content-Length: 5\r\n\r\nhello"), "{text}");
    assert_eq!(text.matches("Content-Length").count(), 1);
    let back = match parse_message(&bytes).unwrap() {
        SipMessage::Request(b) => b,
        m => panic!("{m:?}"),
    };
    r.headers.remove("Content-Length");
    assert_eq!(back, r);
    assert_eq!(back.headers.from().unwrap(), from);
    assert_eq!(back.headers.top_via().unwrap(), via);
}

#[test]
fn to_bytes_flattens_injected_line_breaks() {
    let mut r = Response::new(200);
    r.reason = "OK\r\nX: y".into();
    r.headers.push("Subject", "a\r\nVia: evil");
    let text = String::from_utf8(r.to_bytes()).unwrap();
    assert_eq!(text.matches("\r\n").count(), 4, "{text}");
    assert!(!text.contains("\nVia"));
}

#[test]
fn response_for_request() {
    let r = req("INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP p1;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP p2;branch=z9hG4bK2\r\n\
Max-Forwards: 70\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:bob@example.com>\r\n\
Call-ID: c1\r\nCSeq: 1 INVITE\r\nContact: <sip:a@p2>\r\nContent-Length: 0\r\n\r\n");
    let resp = Response::for_request(&r, 486);
    assert_eq!(resp.status, 486);
    assert_eq!(resp.reason, "Busy Here");
    let names: Vec<&str> = resp.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["Via", "Via", "From", "To", "Call-ID", "CSeq"]);
    assert_eq!(resp.headers.vias().unwrap().len(), 2);
    assert!(resp.body.is_empty());
    let text = String::from_utf8(resp.to_bytes()).unwrap();
    assert!(text.starts_with("SIP/2.0 486 Busy Here\r\nVia: SIP/2.0/UDP p1;branch=z9hG4bK1\r\n"));
    assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
}

#[test]
fn ipv6_via_and_uri() {
    let v = Via::parse(
        "SIP/2.0/UDP [2001:db8::9:1]:5061;branch=z9hG4bKa;received=2001:db8::9:255;rport",
    )
    .unwrap();
    assert_eq!(v.host, "[2001:db8::9:1]");
    assert_eq!(v.port, Some(5061));
    assert_eq!(v.received(), Some("2001:db8::9:255"));
    assert_eq!(v.rport(), Some(None));
    assert_eq!(Via::parse(&v.to_string()).unwrap(), v);
    let v = Via::parse("SIP/2.0/TCP [::1]").unwrap();
    assert_eq!((v.host.as_str(), v.port), ("[::1]", None));
    assert!(Via::parse("SIP/2.0/UDP [2001:db8::zz]").is_err());
    assert!(Via::parse("SIP/2.0/UDP [2001:db8::1").is_err());

    let u = Uri::parse("sips:alice@[2001:db8::1]:5061;transport=tcp").unwrap();
    assert_eq!(u.host, "[2001:db8::1]");
    assert_eq!(u.host_port(), "[2001:db8::1]:5061");
    assert_eq!(u.param("transport"), Some(Some("tcp")));
    assert_eq!(u.to_string(), "sips:alice@[2001:db8::1]:5061;transport=tcp");
}

#[test]
fn via_params() {
    let mut v = Via::parse("SIP/2.0/udp 10.0.0.1:5060;branch=z9hG4bKabc;rport").unwrap();
    assert_eq!(v.transport, "UDP");
    assert_eq!(v.rport(), Some(None));
    v.set_param("rport", Some("4000"));
    v.set_param("received", Some("192.0.2.1"));
    assert_eq!(v.rport(), Some(Some(4000)));
    assert_eq!(
        v.to_string(),
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKabc;rport=4000;received=192.0.2.1"
    );
    assert_eq!(Via::parse("SIP/2.0/UDP h").unwrap().rport(), None);
    for bad in [
        "SIP/2.0/UDP",
        "SIP/2.0/UDP h;rport=x",
        "SIP/2.0/UDP h;;",
        "SIP/2.0/UDPh",
        "SIP/3.0/UDP h",
        "SIP/2.0/UDP h:99999",
        "SIP/2.0/UDP h;branch",
        "SIP/2.0/UDP h junk",
    ] {
        assert!(Via::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn uri_forms() {
    let u = Uri::parse("sip:user:pw@host.example.com:5060;transport=udp;lr?subject=x&h=y").unwrap();
    assert_eq!(u.user.as_deref(), Some("user"));
    assert_eq!(u.password.as_deref(), Some("pw"));
    assert_eq!(u.port, Some(5060));
    assert_eq!(u.param("lr"), Some(None));
    assert_eq!(u.param("LR"), Some(None));
    assert_eq!(u.param("maddr"), None);
    assert_eq!(u.headers.as_deref(), Some("subject=x&h=y"));
    assert_eq!(Uri::parse(&u.to_string()).unwrap(), u);

    let u = Uri::parse("SIP:%00@host").unwrap();
    assert_eq!((u.scheme.as_str(), u.user.as_deref()), ("sip", Some("%00")));

    for opaque in [
        "tel:+1-201-555-0123;phone-context=x",
        "im:alice@example.com",
        "urn:service:sos",
    ] {
        let u = Uri::parse(opaque).unwrap();
        assert_eq!(u.to_string(), opaque);
        assert_eq!(Uri::parse(&u.to_string()).unwrap(), u);
    }
    for bad in [
        "",
        "sip:",
        "nocolon",
        "sip:host:",
        "sip:host:70000",
        "sip:@host",
        "sip:a b@host",
        "sip:host;;x",
        "sip:us%zzer@host",
        "<sip:host>",
        " sip:host",
        "sip:host ",
        "1sip:host",
        "tel:",
        "sip:[::1",
    ] {
        assert!(Uri::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn name_addr_forms() {
    let n = NameAddr::parse("sip:a@b;tag=x").unwrap();
    assert_eq!((n.uri.params.len(), n.tag()), (0, Some("x")));
    let n = NameAddr::parse("<sip:a@b;tag=x>").unwrap();
    assert_eq!((n.uri.params.len(), n.tag()), (1, None));
    let n = NameAddr::parse("  John  Doe <sip:a@b> ; tag = 7 ; q=0.5").unwrap();
    assert_eq!(n.display.as_deref(), Some("John  Doe"));
    assert_eq!(n.tag(), Some("7"));
    let mut n = NameAddr::parse("\"\\\"Q\\\" \\\\ x\"<sip:a@b>;p=\"v w\"").unwrap();
    assert_eq!(n.display.as_deref(), Some("\"Q\" \\ x"));
    assert_eq!(n.params, vec![("p".to_string(), Some("v w".to_string()))]);
    n.set_tag("abc");
    assert_eq!(
        n.to_string(),
        "\"\\\"Q\\\" \\\\ x\" <sip:a@b>;p=\"v w\";tag=abc"
    );
    assert_eq!(NameAddr::parse(&n.to_string()).unwrap(), n);
    for bad in [
        "Bell, Alexander <sip:a@b>",
        "\"unterminated <sip:a@b>",
        "< sip:a@b>",
        "<sip:a@b >",
        "<sip:a@b",
        "sip:a@b?x=y",
        "<sip:a@b> junk",
        "<sip:a@b>;;",
        "\"x\" sip:a@b",
        "",
    ] {
        assert!(NameAddr::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn headers_editing() {
    let mut h = Headers::new();
    assert!(h.is_empty());
    h.push("v", "SIP/2.0/UDP b;branch=z9hG4bK2");
    h.push("From", "<sip:a@b>");
    h.push("Via", "SIP/2.0/UDP c;branch=z9hG4bK3");
    h.push_front("VIA", "SIP/2.0/UDP a;branch=z9hG4bK1");
    let vias: Vec<&str> = h.get_all("Via").collect();
    assert_eq!(vias.len(), 3);
    assert!(vias[0].contains(" a;"));
    assert_eq!(h.iter().next().unwrap().name, "Via");
    h.set("via", "SIP/2.0/UDP z;branch=z9hG4bKz");
    assert_eq!(h.len(), 2);
    assert_eq!(
        h.iter().next().unwrap().value,
        "SIP/2.0/UDP z;branch=z9hG4bKz"
    );
    h.set("Call-ID", "new");
    assert_eq!(h.iter().last().unwrap().name, "Call-ID");
    h.push_front("Route", "<sip:p;lr>");
    assert_eq!(h.iter().next().unwrap().name, "Route");
    h.remove("i");
    assert_eq!(h.call_id(), None);
    h.push("X-Odd-Name", "1");
    assert_eq!(h.get("x-odd-name"), Some("1"));
    assert_eq!(h.iter().last().unwrap().name, "X-Odd-Name");
    assert!(h.cseq().is_err());
    assert_eq!(h.cseq().unwrap_err().kind, ParseErrorKind::MissingHeader);
    assert_eq!(h.max_forwards().unwrap(), None);
    assert_eq!(h.expires().unwrap(), None);
}

#[test]
fn contacts_and_routes() {
    let r = req(
        "REGISTER sip:r SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@r>;tag=1\r\nTo: <sip:a@r>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
Contact: \"A, B\" <sip:a@h1>;expires=60, <sip:a@h2>;q=0.5\r\n\
Record-Route: <sip:p1;lr>, <sip:p2;lr>\r\nRoute: <sip:p3;lr>\r\nExpires: 3600\r\n\r\n",
    );
    let c = r.headers.contacts().unwrap();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].display.as_deref(), Some("A, B"));
    assert_eq!(c[0].param("expires"), Some(Some("60")));
    assert!(!r.headers.is_star_contact());
    assert_eq!(r.headers.routes("Record-Route").unwrap().len(), 2);
    assert_eq!(r.headers.routes("Route").unwrap()[0].uri.host, "p3");
    assert_eq!(r.headers.expires().unwrap(), Some(3600));

    let r = req(
        "REGISTER sip:r SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
From: <sip:a@r>;tag=1\r\nTo: <sip:a@r>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n\
Contact: *\r\nExpires: 0\r\n\r\n",
    );
    assert!(r.headers.is_star_contact());
    assert!(r.headers.contacts().unwrap().is_empty());
}

#[test]
fn body_framing_on_datagrams() {
    // Shorter Content-Length truncates the body.
    let text = INVITE.replace("Content-Length: 4", "Content-Length: 2");
    assert_eq!(&req(&text).body[..], b"v=");
    // Longer is an error (RFC 4475 clerr).
    let text = INVITE.replace("Content-Length: 4", "Content-Length: 5");
    assert_eq!(err_kind(text.as_bytes()), ParseErrorKind::ContentLength);
    // Missing: the rest of the datagram.
    let text = INVITE.replace("Content-Length: 4\r\n", "");
    assert_eq!(&req(&text).body[..], b"v=0\n");
    for bad in ["-1", "x", "4 4", "99999999999999999999", ""] {
        let text = INVITE.replace("Content-Length: 4", &format!("Content-Length: {bad}"));
        assert_eq!(
            err_kind(text.as_bytes()),
            ParseErrorKind::ContentLength,
            "{bad}"
        );
    }
    // Leading CRLFs are ignored.
    assert_eq!(req(&format!("\r\n\r\n{INVITE}")), req(INVITE));
}

#[test]
fn rejects_malformed() {
    let cases: &[(&str, ParseErrorKind)] = &[
        (
            "INVITE  sip:bob@example.com SIP/2.0",
            ParseErrorKind::StartLine,
        ),
        (
            "INVITE sip:bob@example.com SIP/2.0 ",
            ParseErrorKind::StartLine,
        ),
        ("INVITE sip:bob@example.com", ParseErrorKind::StartLine),
        ("INVITE <sip:bob@example.com> SIP/2.0", ParseErrorKind::Uri),
        (
            "INVITE sip:bob@example.com SIP/3.0",
            ParseErrorKind::Version,
        ),
        (
            "INV ITE sip:bob@example.com SIP/2.0",
            ParseErrorKind::StartLine,
        ),
        (
            "INVITE sip:bob@example.com?x=y SIP/2.0",
            ParseErrorKind::Uri,
        ),
    ];
    for (line, kind) in cases {
        let text = INVITE.replacen("INVITE sip:bob@example.com SIP/2.0", line, 1);
        assert_eq!(err_kind(text.as_bytes()), *kind, "{line}");
    }
    let swaps: &[(&str, &str, ParseErrorKind)] = &[
        (
            "CSeq: 314159 INVITE",
            "CSeq: 314159 BYE",
            ParseErrorKind::Header,
        ),
        (
            "CSeq: 314159 INVITE",
            "CSeq: 4294967296 INVITE",
            ParseErrorKind::Header,
        ),
        ("CSeq: 314159 INVITE\r\n", "", ParseErrorKind::MissingHeader),
        (
            "Max-Forwards: 70",
            "Max-Forwards: 256",
            ParseErrorKind::Header,
        ),
        (
            "Max-Forwards: 70",
            "Expires: 4294967296",
            ParseErrorKind::Header,
        ),
        (
            "Max-Forwards: 70",
            "Date: Fri, 01 Jan 2010 16:00:00 EST",
            ParseErrorKind::Header,
        ),
        (
            "To: Bob <sip:bob@example.com>",
            "To: \"Bob <sip:bob@example.com>",
            ParseErrorKind::Header,
        ),
        (
            "To: Bob <sip:bob@example.com>",
            "To: B@b <sip:bob@example.com>",
            ParseErrorKind::Header,
        ),
        (
            "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bK776asdhds\r\n",
            "",
            ParseErrorKind::MissingHeader,
        ),
        (
            "Via: SIP/2.0/UDP pc33.example.com;",
            "Via: SIP/2.0/UDP pc33.example.com;,;",
            ParseErrorKind::Header,
        ),
        (
            "Contact: <sip:alice@pc33.example.com>",
            "Contact: sip:a@b?x=1",
            ParseErrorKind::Header,
        ),
        (
            "Contact: <sip:alice@pc33.example.com>",
            "Contact: <sip:a@b>;expires=99999999999",
            ParseErrorKind::Header,
        ),
        (
            "Max-Forwards: 70",
            "Max-Forwards 70",
            ParseErrorKind::Header,
        ),
        (
            "Max-Forwards: 70",
            "Max Forwards: 70",
            ParseErrorKind::Header,
        ),
        (
            "Max-Forwards: 70",
            "Max-Forwards: 70\rX: y",
            ParseErrorKind::Header,
        ),
    ];
    for (from, to, kind) in swaps {
        let text = INVITE.replacen(from, to, 1);
        assert_ne!(text, INVITE);
        assert_eq!(err_kind(text.as_bytes()), *kind, "{to}");
    }
    // A folded line with nothing to continue.
    let text = INVITE.replacen("\r\nVia", "\r\n Via", 1);
    assert_eq!(err_kind(text.as_bytes()), ParseErrorKind::Header);
    // Non-UTF-8 header section.
    let mut bytes = INVITE.as_bytes().to_vec();
    bytes[30] = 0xff;
    assert_eq!(err_kind(&bytes), ParseErrorKind::Encoding);
    // ...but any bytes are fine in the body.
    let mut bytes = INVITE.as_bytes().to_vec();
    let n = bytes.len();
    bytes[n - 2] = 0xff;
    assert!(parse_message(&bytes).is_ok());
    assert_eq!(err_kind(b""), ParseErrorKind::StartLine);
    assert_eq!(err_kind(b"\r\n\r\n"), ParseErrorKind::StartLine);
}

#[test]
fn status_lines() {
    let base = "Via: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n";
    assert_eq!(resp(&format!("SIP/2.0 100 \r\n{base}")).reason, "");
    assert_eq!(resp(&format!("sip/2.0 100\r\n{base}")).reason, "");
    let r = resp(&format!("SIP/2.0 699 Whatever it is\r\n{base}"));
    assert_eq!((r.status, r.reason.as_str()), (699, "Whatever it is"));
    for bad in [
        "SIP/2.0 99 x",
        "SIP/2.0 700 x",
        "SIP/2.0 2000 x",
        "SIP/2.0 20x x",
        "SIP/2.1 200 OK",
    ] {
        assert!(
            parse_message(format!("{bad}\r\n{base}").as_bytes()).is_err(),
            "{bad}"
        );
    }
    // CSeq method need not match anything in a response.
    assert!(parse_message(
        format!("SIP/2.0 200 OK\r\n{}", base.replace("INVITE", "BYE")).as_bytes()
    )
    .is_ok());
}

#[test]
fn insufficient_headers_parse_but_fail_check() {
    let r = req(
        "INVITE sip:a@b SIP/2.0\r\nCSeq: 1 INVITE\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n",
    );
    assert_eq!(
        r.check_mandatory().unwrap_err().kind,
        ParseErrorKind::MissingHeader
    );
}

#[test]
fn bad_request_response_builds_400() {
    let text = INVITE.replacen("CSeq: 314159 INVITE", "CSeq: 314159 BYE", 1);
    let err = parse_message(text.as_bytes()).unwrap_err();
    let r = bad_request_response(text.as_bytes(), &err).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.reason.starts_with("Bad Request"), "{}", r.reason);
    assert!(r.reason.contains("CSeq"), "{}", r.reason);
    let names: Vec<&str> = r.headers.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["Via", "From", "To", "Call-ID", "CSeq"]);
    let tag = r.headers.to().unwrap().tag().map(str::to_string).unwrap();
    // Deterministic: a retransmission gets the same tag.
    let again = bad_request_response(text.as_bytes(), &err).unwrap();
    assert_eq!(again.headers.to().unwrap().tag(), Some(tag.as_str()));
    // The response itself serialises and parses.
    assert!(parse_message(&r.to_bytes()).is_ok());

    // Responses are never answered; nor requests missing what a reply needs.
    let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: x\r\n\r\n";
    let err = parse_message(resp.as_bytes()).unwrap_err();
    assert!(bad_request_response(resp.as_bytes(), &err).is_none());
    let text = INVITE.replacen("Call-ID: a84b4c76e66710@pc33.example.com\r\n", "", 1);
    let text = text.replacen("CSeq: 314159 INVITE", "CSeq: x", 1);
    let err = parse_message(text.as_bytes()).unwrap_err();
    assert!(bad_request_response(text.as_bytes(), &err).is_none());
    assert!(bad_request_response(b"", &err).is_none());
    assert!(bad_request_response(b"\xff\xfe", &err).is_none());
}

#[test]
fn methods_and_reasons() {
    assert_eq!(Method::from_token("INVITE"), Method::Invite);
    assert_eq!(
        Method::from_token("invite"),
        Method::Extension("invite".into())
    );
    for m in [
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "INFO",
        "REFER",
        "NOTIFY",
        "SUBSCRIBE",
        "UPDATE",
        "PRACK",
        "MESSAGE",
        "PUBLISH",
        "FOO",
    ] {
        assert_eq!(Method::from_token(m).as_str(), m);
        assert_eq!(Method::from_token(m).to_string(), m);
    }
    assert_eq!(reason_phrase(200), "OK");
    assert_eq!(reason_phrase(489), "Bad Event");
    assert_eq!(reason_phrase(491), "Request Pending");
    assert_eq!(reason_phrase(606), "Not Acceptable");
    assert_eq!(reason_phrase(499), "Client Error");
    let e = ParseError::new(ParseErrorKind::TooLarge, "x");
    assert_eq!(e.to_string(), "message too large: x");
}

// ---- StreamFramer ----

fn small(i: u32, body: &str) -> String {
    format!(
        "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK{i}\r\nFrom: <sip:x@y>;tag=1\r\n\
To: <sip:a@b>\r\nCall-ID: c{i}\r\nCSeq: {i} OPTIONS\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn drain(f: &mut StreamFramer) -> Result<Vec<bytes::Bytes>, ParseError> {
    let mut out = Vec::new();
    while let Some(frame) = f.next_frame()? {
        out.push(frame);
    }
    Ok(out)
}

#[test]
fn framer_two_messages_in_one_push() {
    let (a, b) = (small(1, "hello"), small(2, ""));
    let mut f = StreamFramer::new(4096);
    f.push(format!("{a}{b}").as_bytes());
    let frames = drain(&mut f).unwrap();
    assert_eq!(frames.len(), 2);
    assert_eq!(&frames[0][..], a.as_bytes());
    assert_eq!(&frames[1][..], b.as_bytes());
    assert_eq!(f.buffered(), 0);
    assert!(parse_message(&frames[0]).is_ok());
}

#[test]
fn framer_byte_by_byte() {
    let stream = format!(
        "{}{}{}",
        small(1, "abc"),
        small(2, ""),
        small(3, "body\r\n\r\nmore")
    );
    let mut f = StreamFramer::new(4096);
    let mut frames = Vec::new();
    for b in stream.as_bytes() {
        f.push(std::slice::from_ref(b));
        frames.extend(drain(&mut f).unwrap());
    }
    assert_eq!(frames.len(), 3);
    assert_eq!(&frames[2][..], small(3, "body\r\n\r\nmore").as_bytes());
    assert_eq!(f.buffered(), 0);
    // LF-only line ends frame too.
    let lf = small(4, "x").replace("\r\n", "\n");
    let mut f = StreamFramer::new(4096);
    for b in lf.as_bytes() {
        f.push(std::slice::from_ref(b));
        frames.extend(drain(&mut f).unwrap());
    }
    assert_eq!(frames.len(), 4);
    assert_eq!(&frames[3][..], lf.as_bytes());
}

#[test]
fn framer_skips_keepalives() {
    let mut f = StreamFramer::new(4096);
    f.push(b"\r\n\r\n");
    assert!(drain(&mut f).unwrap().is_empty());
    assert_eq!(f.buffered(), 0);
    assert_eq!(f.take_pings(), 1);
    f.push(b"\r\n");
    f.push(format!("{}\r\n\r\n\r\n{}", small(1, ""), small(2, "")).as_bytes());
    let frames = drain(&mut f).unwrap();
    assert_eq!(frames.len(), 2);
    assert!(frames[1].starts_with(b"OPTIONS"));
    assert_eq!(f.take_pings(), 1);
    assert_eq!(f.take_pings(), 0);
}

#[test]
fn framer_requires_content_length() {
    let text = small(1, "").replace("Content-Length: 0\r\n", "");
    let mut f = StreamFramer::new(4096);
    f.push(text.as_bytes());
    assert_eq!(
        f.next_frame().unwrap_err().kind,
        ParseErrorKind::ContentLength
    );
    // Unusable afterwards.
    f.push(small(2, "").as_bytes());
    assert!(f.next_frame().is_err());

    for bad in [
        "Content-Length: -1",
        "Content-Length: x",
        "l: 1\r\nContent-Length: 2",
    ] {
        let text = small(1, "").replace("Content-Length: 0", bad);
        let mut f = StreamFramer::new(4096);
        f.push(text.as_bytes());
        assert_eq!(
            f.next_frame().unwrap_err().kind,
            ParseErrorKind::ContentLength,
            "{bad}"
        );
    }
    // Compact form and agreeing duplicates are fine.
    let text = small(1, "ab").replace("Content-Length: 2", "l: 2\r\nContent-Length:  2");
    let mut f = StreamFramer::new(4096);
    f.push(text.as_bytes());
    assert_eq!(drain(&mut f).unwrap().len(), 1);
}

#[test]
fn framer_rejects_oversize() {
    // Declared body too big.
    let mut f = StreamFramer::new(300);
    f.push(
        small(1, "")
            .replace("Content-Length: 0", "Content-Length: 1000")
            .as_bytes(),
    );
    assert_eq!(f.next_frame().unwrap_err().kind, ParseErrorKind::TooLarge);
    // Endless headers.
    let mut f = StreamFramer::new(300);
    f.push(b"OPTIONS sip:a@b SIP/2.0\r\n");
    for _ in 0..20 {
        f.push(b"X-Filler: aaaaaaaaaaaaaaaaaaaa\r\n");
        if let Err(e) = f.next_frame() {
            assert_eq!(e.kind, ParseErrorKind::TooLarge);
            return;
        }
    }
    panic!("oversize header section not rejected");
}

// ---- hostile input ----

/// Deterministic xorshift so failures reproduce.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn no_panics_on_mangled_input() {
    let seeds = [
        INVITE.to_string(),
        small(7, "xyz"),
        format!("{}{}", small(1, ""), small(2, "q")),
    ];
    let alphabet = b"\r\n :;,<>\"\\@[]%=/?*\t\x00\xff0123456789aZ";
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for seed in &seeds {
        let bytes = seed.as_bytes();
        // Every truncation.
        for n in 0..=bytes.len() {
            let cut = &bytes[..n];
            if let Err(e) = parse_message(cut) {
                let _ = bad_request_response(cut, &e);
            }
        }
        // Random mutations through parser, 400 builder and framer.
        for _ in 0..3000 {
            let mut m = bytes.to_vec();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % m.len();
                let c = alphabet[(rng.next() as usize) % alphabet.len()];
                match rng.next() % 3 {
                    0 => m[i] = c,
                    1 => m.insert(i, c),
                    _ => {
                        m.remove(i);
                    }
                }
            }
            match parse_message(&m) {
                Ok(msg) => {
                    // Whatever we accept, we must be able to write and read back.
                    let again = parse_message(&msg.to_bytes());
                    assert_eq!(again.as_ref(), Ok(&msg), "{}", String::from_utf8_lossy(&m));
                }
                Err(e) => {
                    if let Some(r) = bad_request_response(&m, &e) {
                        assert_eq!(r.status, 400);
                        let _ = r.to_bytes();
                    }
                }
            }
            let mut f = StreamFramer::new(1024);
            for chunk in m.chunks(1 + (rng.next() % 7) as usize) {
                f.push(chunk);
                if f.next_frame().is_err() {
                    break;
                }
            }
        }
    }
}
