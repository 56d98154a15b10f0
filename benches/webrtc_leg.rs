//! One web call's whole server-side media path per 20 ms, both ways, with
//! str0m doing SRTP (and its pacing and stats) as in production: a browser
//! stand-in (a second str0m) sends Opus in memory; the server leg decrypts,
//! decodes, resamples and µ-laws it (uplink), then µ-law → 48 kHz → Opus,
//! writes it and encrypts it (downlink). Only the server side is timed.
//! Legs per core = 20 ms ÷ that time.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use crossline::webrtc::transcode::{browser_like_opus, Downlink, Uplink, FRAME_8K};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// A datagram in flight: source, destination, bytes.
type Datagram = (SocketAddr, SocketAddr, Vec<u8>);

struct Peer {
    rtc: Rtc,
    addr: SocketAddr,
}

/// Run one side until it wants time; return what it sent and its media.
fn drain(p: &mut Peer) -> (Vec<Datagram>, Vec<Vec<u8>>, bool) {
    let mut sent = Vec::new();
    let mut media = Vec::new();
    let mut connected = false;
    while let Ok(out) = p.rtc.poll_output() {
        match out {
            Output::Timeout(_) => break,
            Output::Transmit(t) => sent.push((t.source, t.destination, t.contents.to_vec())),
            Output::Event(Event::MediaData(d)) => media.push(d.data.to_vec()),
            Output::Event(Event::Connected) => connected = true,
            Output::Event(_) => {}
        }
    }
    (sent, media, connected)
}

fn deliver(to: &mut Peer, now: Instant, packets: Vec<Datagram>) {
    for (src, dst, data) in packets {
        if let Ok(r) = Receive::new(Protocol::Udp, src, dst, &data) {
            let _ = to.rtc.handle_input(Input::Receive(now, r));
        }
    }
}

fn connected_pair() -> (Peer, Peer, Mid, Instant) {
    let mut now = Instant::now();
    let mut browser = Peer {
        rtc: Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(now),
        addr: "127.0.0.1:1000".parse().unwrap(),
    };
    let mut server = Peer {
        rtc: Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(now),
        addr: "127.0.0.1:2000".parse().unwrap(),
    };
    browser
        .rtc
        .add_local_candidate(Candidate::host(browser.addr, "udp").unwrap());
    server
        .rtc
        .add_local_candidate(Candidate::host(server.addr, "udp").unwrap());
    let mut change = browser.rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    let answer = server.rtc.sdp_api().accept_offer(offer).unwrap();
    browser
        .rtc
        .sdp_api()
        .accept_answer(pending, answer)
        .unwrap();
    let (mut up, mut down) = (false, false);
    for _ in 0..2000 {
        let (to_server, _, b) = drain(&mut browser);
        let (to_browser, _, s) = drain(&mut server);
        up |= b;
        down |= s;
        deliver(&mut server, now, to_server);
        deliver(&mut browser, now, to_browser);
        if up && down {
            break;
        }
        now += Duration::from_millis(5);
        let _ = browser.rtc.handle_input(Input::Timeout(now));
        let _ = server.rtc.handle_input(Input::Timeout(now));
    }
    assert!(up && down, "the in-memory pair never connected");
    (browser, server, mid, now)
}

fn opus_pt(rtc: &mut Rtc, mid: Mid) -> str0m::media::Pt {
    let w = rtc.writer(mid).expect("a writer");
    let pt = w
        .payload_params()
        .find(|p| p.spec().codec == str0m::format::Codec::Opus)
        .map(|p| p.pt())
        .expect("Opus negotiated");
    pt
}

fn bench(c: &mut Criterion) {
    let (mut browser, mut server, mid, now) = connected_pair();
    let b_pt = opus_pt(&mut browser.rtc, mid);
    let s_pt = opus_pt(&mut server.rtc, mid);
    // Browser audio: fullband Opus frames of a voice-like signal.
    let frames = browser_like_opus(100).unwrap();
    let mut rig = Rig {
        browser,
        server,
        mid,
        b_pt,
        s_pt,
        now,
        ts: 0,
        frames,
        next: 0,
        gateway_audio: (0..8000)
            .map(|i| {
                let t = f64::from(i) / 8000.0;
                let s = (t * 2.0 * std::f64::consts::PI * 310.0).sin() * 6000.0
                    + (t * 2.0 * std::f64::consts::PI * 1270.0).sin() * 3000.0;
                crossline::media::g711::linear_to_ulaw(s as i16)
            })
            .collect(),
        uplink: Uplink::new().unwrap(),
        downlink: Downlink::new(1).unwrap(),
    };
    // The path really carries audio both ways before it is timed.
    let (mut got_media, mut got_srtp) = (false, false);
    for _ in 0..10 {
        let f = rig.frame();
        got_media |= f.media_in;
        got_srtp |= f.srtp_out;
    }
    assert!(
        got_media && got_srtp,
        "media both ways: in {got_media}, out {got_srtp}"
    );
    let mut g = c.benchmark_group("webrtc");
    g.bench_function("leg_frame_both_ways_with_srtp", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| rig.frame().server_time).sum())
    });
    g.finish();
}

/// The browser stand-in, the server leg, and the audio they exchange.
struct Rig {
    browser: Peer,
    server: Peer,
    mid: Mid,
    b_pt: str0m::media::Pt,
    s_pt: str0m::media::Pt,
    now: Instant,
    ts: u64,
    frames: Vec<Vec<u8>>,
    next: usize,
    /// 1 s of the gateway's µ-law (two tones), for the downlink.
    gateway_audio: Vec<u8>,
    uplink: Uplink,
    downlink: Downlink,
}

struct Frame {
    /// Time spent on the server side only.
    server_time: Duration,
    media_in: bool,
    srtp_out: bool,
}

impl Rig {
    /// One 20 ms frame each way.
    fn frame(&mut self) -> Frame {
        self.now += Duration::from_millis(20);
        self.ts += 960;
        let time = MediaTime::new(self.ts, Frequency::FORTY_EIGHT_KHZ);
        // Browser side (not timed): one Opus packet out.
        let packet = self.frames[self.next % self.frames.len()].clone();
        self.next += 1;
        if let Some(w) = self.browser.rtc.writer(self.mid) {
            let _ = w.write(self.b_pt, self.now, time, packet);
        }
        let _ = self.browser.rtc.handle_input(Input::Timeout(self.now));
        let (to_server, _, _) = drain(&mut self.browser);
        // Server side (timed): decrypt + uplink, downlink + encrypt.
        let start = Instant::now();
        deliver(&mut self.server, self.now, to_server);
        let _ = self.server.rtc.handle_input(Input::Timeout(self.now));
        let (_, media, _) = drain(&mut self.server);
        for m in &media {
            self.uplink
                .push(Some(m), |f| {
                    black_box(f);
                })
                .unwrap();
        }
        let mut opus = [0u8; 1500];
        let at = (self.next % 50) * FRAME_8K;
        let n = self
            .downlink
            .push(&self.gateway_audio[at..at + FRAME_8K], &mut opus)
            .unwrap();
        if n > 0 {
            if let Some(w) = self.server.rtc.writer(self.mid) {
                let _ = w.write(self.s_pt, self.now, time, opus[..n].to_vec());
            }
        }
        let _ = self.server.rtc.handle_input(Input::Timeout(self.now));
        let (to_browser, _, _) = drain(&mut self.server);
        let server_time = start.elapsed();
        let srtp_out = to_browser.iter().any(|(_, _, d)| d.len() > 20);
        // Browser consumes (not timed).
        deliver(&mut self.browser, self.now, to_browser);
        let _ = drain(&mut self.browser);
        Frame {
            server_time,
            media_in: !media.is_empty(),
            srtp_out,
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
