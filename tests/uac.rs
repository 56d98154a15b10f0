//! The UAC side of the sans-IO endpoint against SIPp as the far end, over
//! real UDP: answered calls, digest challenges, busy, and CANCEL.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use crossline::sdp::{Codec, LocalMedia};
use crossline::sip::endpoint::{
    CallId, EndCause, Endpoint, EndpointConfig, Event, OutgoingCall, Transport,
};
use crossline::sip::message::Uri;
use tokio::net::UdpSocket;

struct Driver {
    ep: Endpoint,
    sock: UdpSocket,
    events: Vec<Event>,
}

impl Driver {
    async fn new() -> Driver {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let local = sock.local_addr().unwrap();
        let cfg = EndpointConfig {
            udp_listeners: vec![local],
            tcp_listeners: vec![],
            ..EndpointConfig::default()
        };
        Driver {
            ep: Endpoint::new(cfg, Instant::now()),
            sock,
            events: Vec::new(),
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.ep.poll_transmit() {
            let _ = self.sock.send_to(&t.payload, t.peer.remote).await;
        }
    }

    /// Run the endpoint until `done` holds for some event (or time runs out).
    async fn run_until(&mut self, timeout: Duration, done: impl Fn(&Event) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let local = self.sock.local_addr().unwrap();
        let mut buf = vec![0u8; 65_535];
        loop {
            self.flush().await;
            while let Some(ev) = self.ep.poll_event() {
                let hit = done(&ev);
                self.events.push(ev);
                if hit {
                    self.flush().await;
                    return true;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            let wake = self.ep.poll_timeout().unwrap_or(deadline).min(deadline);
            tokio::select! {
                r = self.sock.recv_from(&mut buf) => {
                    if let Ok((n, from)) = r {
                        self.ep.handle_datagram(Instant::now(), local, from, &buf[..n]);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
            self.ep.handle_timeout(Instant::now());
        }
    }
}

fn call_to(port: u16, credentials: Option<(&str, &str)>) -> OutgoingCall {
    OutgoingCall {
        target: Uri::parse(&format!("sip:+15551234567@127.0.0.1:{port}")).unwrap(),
        destination: SocketAddr::from(([127, 0, 0, 1], port)),
        transport: Transport::Udp,
        from_user: "+15550100000".into(),
        from_display: Some("crossline".into()),
        local_media: LocalMedia {
            address: "127.0.0.1".parse().unwrap(),
            rtp_port: 40_000,
            session_id: 1,
            session_version: 1,
            codecs: vec![Codec::Pcmu, Codec::Pcma],
            telephone_event_pt: 101,
            ptime_ms: 20,
        },
        credentials: credentials.map(|(u, p)| (u.to_string(), p.into())),
        extra_headers: vec![("X-Test".into(), "uac".into())],
        flow: None,
        max_forwards: crossline::sip::endpoint::MAX_FORWARDS,
    }
}

fn ended(ev: &Event, call: CallId) -> Option<EndCause> {
    match ev {
        Event::CallEnded { call: c, cause } if *c == call => Some(cause.clone()),
        _ => None,
    }
}

/// Start SIPp as the far end on a free port, in a thread.
fn far_end(args: Vec<String>) -> (u16, std::thread::JoinHandle<Sipp>) {
    let port = free_port();
    let handle = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sipp_on(&args, Duration::from_secs(30), port, free_port())
    });
    std::thread::sleep(Duration::from_millis(400));
    (port, handle)
}

#[tokio::test(flavor = "current_thread")]
async fn uac_call_answered_by_sipp_then_bye() {
    let (port, sipp) = far_end(vec!["-sn".into(), "uas".into(), "-m".into(), "1".into()]);
    let mut d = Driver::new().await;
    let call = d.ep.invite(Instant::now(), call_to(port, None)).unwrap();
    assert!(
        d.run_until(Duration::from_secs(10), |e| matches!(
            e,
            Event::CallEstablished { .. }
        ))
        .await,
        "{:?}",
        d.events
    );
    assert!(d.events.contains(&Event::Progress { call, status: 180 }));
    match d.events.last() {
        Some(Event::CallEstablished { media: Some(m), .. }) => assert_eq!(m.payload_type, 0),
        other => panic!("{other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.ep.hangup(Instant::now(), call).unwrap();
    // Let the BYE transaction finish.
    d.run_until(Duration::from_secs(2), |_| false).await;
    assert!(d
        .events
        .iter()
        .any(|e| ended(e, call) == Some(EndCause::LocalHangup)));
    let run = sipp.join().unwrap();
    assert!(run.ok(), "{}", run.describe());
}

#[tokio::test(flavor = "current_thread")]
async fn uac_answers_401_challenge_from_sipp() {
    let (port, sipp) = far_end(vec![
        "-sf".into(),
        scenario("uas_auth.xml"),
        "-m".into(),
        "1".into(),
        "-trace_msg".into(),
    ]);
    let mut d = Driver::new().await;
    let call =
        d.ep.invite(
            Instant::now(),
            call_to(port, Some(("crossline", "trunkpw"))),
        )
        .unwrap();
    if !d
        .run_until(Duration::from_secs(10), |e| {
            matches!(e, Event::CallEstablished { .. })
        })
        .await
    {
        panic!("{:?}\n{}", d.events, sipp.join().unwrap().describe());
    }
    d.ep.hangup(Instant::now(), call).unwrap();
    d.run_until(Duration::from_secs(2), |_| false).await;
    let run = sipp.join().unwrap();
    assert!(run.ok(), "{}", run.describe());
}

#[tokio::test(flavor = "current_thread")]
async fn uac_busy_is_a_rejection_with_486() {
    let (port, sipp) = far_end(vec![
        "-sf".into(),
        scenario("uas_busy.xml"),
        "-m".into(),
        "1".into(),
    ]);
    let mut d = Driver::new().await;
    let call = d.ep.invite(Instant::now(), call_to(port, None)).unwrap();
    assert!(
        d.run_until(Duration::from_secs(10), |e| ended(e, call).is_some())
            .await
    );
    assert!(matches!(
        d.events.iter().find_map(|e| ended(e, call)),
        Some(EndCause::Rejected { status: 486, .. })
    ));
    let run = sipp.join().unwrap();
    assert!(run.ok(), "{}", run.describe());
}

#[tokio::test(flavor = "current_thread")]
async fn uac_cancel_while_ringing() {
    let (port, sipp) = far_end(vec![
        "-sf".into(),
        scenario("uas_ring_cancel.xml"),
        "-m".into(),
        "1".into(),
    ]);
    let mut d = Driver::new().await;
    let call = d.ep.invite(Instant::now(), call_to(port, None)).unwrap();
    if !d
        .run_until(Duration::from_secs(10), |e| {
            matches!(e, Event::Progress { status: 180, .. })
        })
        .await
    {
        // SIPp's error log names what it got instead (e.g. a stray request).
        panic!("{:?}\n{}", d.events, sipp.join().unwrap().describe());
    }
    d.ep.hangup(Instant::now(), call).unwrap();
    assert!(
        d.run_until(Duration::from_secs(10), |e| ended(e, call).is_some())
            .await
    );
    assert!(matches!(
        d.events.iter().find_map(|e| ended(e, call)),
        Some(EndCause::Rejected { status: 487, .. })
    ));
    d.run_until(Duration::from_millis(500), |_| false).await;
    let run = sipp.join().unwrap();
    assert!(run.ok(), "{}", run.describe());
}
