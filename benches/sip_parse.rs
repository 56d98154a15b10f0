//! Parsing, and parsing plus transaction/UAS handling, of an INVITE.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use crossline::sip::endpoint::{Endpoint, EndpointConfig, Event};
use crossline::sip::message::{parse_message, SipMessage};

const SDP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn invite(n: u64) -> Vec<u8> {
    format!(
        "INVITE sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1-0\r\nFrom: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag001\r\nTo: service <sip:service@127.0.0.1:5060>\r\nCall-ID: {n}-4711@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
    .into_bytes()
}

fn ack(n: u64, to_tag: &str) -> Vec<u8> {
    format!(
        "ACK sip:service@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-{n}-1-0\r\nFrom: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag001\r\nTo: service <sip:service@127.0.0.1:5060>;tag={to_tag}\r\nCall-ID: {n}-4711@127.0.0.1\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let msg = invite(1);
    let mut g = c.benchmark_group("sip");
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse_invite", |b| {
        b.iter(|| black_box(parse_message(black_box(&msg)).is_ok()))
    });

    // One rejected call through the endpoint: INVITE in (parse, Via
    // stamping, server transaction, 100 Trying, dialog, IncomingCall event),
    // 486 out, then its ACK in, which moves the transaction to Confirmed.
    let local: SocketAddr = "127.0.0.1:5060".parse().unwrap();
    let peer: SocketAddr = "127.0.0.1:5061".parse().unwrap();
    let t0 = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default(), t0);
    let n = std::cell::Cell::new(0u64);
    g.bench_function("endpoint_invite_486_ack", |b| {
        b.iter_batched(
            || {
                n.set(n.get() + 1);
                invite(n.get())
            },
            |m| {
                // 1 ms of fake time per call, so old transactions expire.
                let now = t0 + std::time::Duration::from_millis(n.get());
                ep.handle_timeout(now);
                ep.handle_datagram(now, local, peer, &m);
                while ep.poll_transmit().is_some() {}
                let mut to_tag = String::new();
                while let Some(ev) = ep.poll_event() {
                    if let Event::IncomingCall(inc) = ev {
                        let _ = ep.reject(now, inc.call, 486);
                    }
                }
                while let Some(t) = ep.poll_transmit() {
                    if let Ok(SipMessage::Response(r)) = parse_message(&t.payload) {
                        if let Ok(to) = r.headers.to() {
                            to_tag = to.tag().unwrap_or_default().to_string();
                        }
                    }
                }
                let ack = ack(n.get(), &to_tag);
                ep.handle_datagram(now, local, peer, &ack);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
