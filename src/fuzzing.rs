//! Entry points for the cargo-fuzz targets in `fuzz/`. Built only under
//! cargo-fuzz (`--cfg fuzzing`) and for this crate's unit tests, whose
//! `replay` module runs everything the fuzzers found through the same
//! functions: not part of the library's API.
//!
//! Each function takes arbitrary bytes and hands them to the code that reads
//! the same kind of bytes from peers, providers or operators. None of that
//! code may panic on any input. The asserts here are properties the code
//! itself promises (its unit tests check them on samples): a failing one is
//! a bug found, not a fuzzing artefact.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::media::dtmf::{digit_to_event, parse_event, DtmfReceiver, TelephoneEvent, EVENT_LEN};
use crate::media::jitter::{JitterBuffer, JitterConfig};
use crate::media::rtcp::{ntp_from_unix, parse_compound, RtcpSender};
use crate::media::rtp_packet::parse_rtp;
use crate::media::{g711, FRAME_SAMPLES};
use crate::messaging::{crypto, form, inbound};
use crate::sdp::{Codec, LocalMedia, SessionDescription};
use crate::sip::auth::{Challenge, DigestClient, DigestResponse};
use crate::sip::dialog::{Dialog, DialogId};
use crate::sip::endpoint::{Endpoint, EndpointConfig, Event, InboundTrunk};
use crate::sip::message::{
    bad_request_response, parse_message, Method, SipMessage, StreamFramer, Uri, Via,
};

/// One SIP datagram: the parser, what we read from a parsed message, and the
/// sans-IO endpoint's whole path for a UDP datagram (answering any call).
pub fn sip_message(data: &[u8]) {
    match parse_message(data) {
        Ok(msg) => {
            // Whatever we accept we must be able to write and read back
            // unchanged (the parser's own mutation test asserts the same).
            match parse_message(&msg.to_bytes()) {
                Ok(again) => assert_eq!(again, msg, "to_bytes round trip differs"),
                Err(e) => panic!("to_bytes output does not parse again: {e}"),
            }
            inspect(&msg);
        }
        Err(err) => {
            // The stateless 400 we would send back.
            if let Some(resp) = bad_request_response(data, &err) {
                let _ = parse_message(&resp.to_bytes());
            }
        }
    }
    let now = Instant::now();
    // Open to anyone, then a credentials-only trunk: INVITEs get digest checks.
    for config in [EndpointConfig::default(), digest_config()] {
        let mut ep = Endpoint::new(config, now);
        ep.handle_datagram(now, local_addr(), remote_addr(), data);
        drive(&mut ep, now);
    }
}

/// A TCP byte stream: the framer, cut at points set by the first byte, and
/// the endpoint's path for stream bytes.
pub fn sip_stream(data: &[u8]) {
    let Some(&first) = data.first() else {
        return;
    };
    // Small limits too, so oversize handling is reached: 512..=4096 bytes.
    let max = 512usize << (first >> 6);
    let (whole, whole_failed) = frame_all(max, std::iter::once(data));
    let (chunked, chunked_failed) = frame_all(max, chunks(data));
    // The framer resumes its search across pushes; where the bytes were cut
    // must not change what comes out.
    assert_eq!(chunked, whole, "frames depend on how the stream was cut");
    assert_eq!(chunked_failed, whole_failed, "errors depend on the cuts");
    for frame in &chunked {
        assert!(frame.len() <= max, "frame over the size limit");
        let _ = parse_message(frame);
    }
    let now = Instant::now();
    let mut ep = Endpoint::new(EndpointConfig::default(), now);
    for piece in chunks(data) {
        // false: the driver would close the connection.
        if !ep.handle_stream_bytes(now, 1, local_addr(), remote_addr(), piece) {
            break;
        }
    }
    drive(&mut ep, now);
}

/// An SDP body: parsed, then answered as an offer and accepted as an answer,
/// with IPv4 and IPv6 local media.
pub fn sdp(data: &[u8]) {
    // The endpoint drops bodies that aren't UTF-8 before parsing them.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sd) = SessionDescription::parse(text) else {
        return;
    };
    for local in [local_media(), local_media_v6()] {
        if let Ok((_, answer)) = crate::sdp::answer(&sd, &local) {
            let _ = SessionDescription::parse(&answer);
        }
        let _ = crate::sdp::accept_answer(&sd, &local);
    }
}

/// RTP and RTCP as a stream's receive side handles them: the whole input as
/// one datagram on each port, then as a run of datagrams through one stream
/// (records of `[delay ms << 1 | is_rtcp] [length] [packet]`).
pub fn rtp(data: &[u8]) {
    let mut rx = MediaRx::new();
    rx.rtp(0, data);
    rx.rtcp(0, data);
    rx.finish(0);

    let mut rx = MediaRx::new();
    let mut now_ms = 0u64;
    let mut rest = data;
    while let [tag, len, tail @ ..] = rest {
        let (tag, len) = (*tag, usize::from(*len));
        let (packet, after) = tail.split_at(len.min(tail.len()));
        now_ms += u64::from(tag >> 1);
        if tag & 1 == 0 {
            rx.rtp(now_ms, packet);
        } else {
            rx.rtcp(now_ms, packet);
        }
        rest = after;
    }
    rx.finish(now_ms);
}

/// DTMF: a SIP INFO dtmf-relay body, one RFC 4733 telephone-event payload,
/// and a run of telephone-event packets (records of `[timestamp 4]
/// [marker 1] [payload 4]`) through one receiver.
pub fn dtmf(data: &[u8]) {
    if let Some((digit, _duration_ms)) = crate::sip::endpoint::parse_dtmf_relay(data) {
        // The digit goes on to flows and bridged legs, which send it as RFC 4733.
        assert!(
            digit_to_event(digit).is_some(),
            "dtmf-relay gave {digit:?}, which has no RFC 4733 event"
        );
    }
    if let Ok(ev) = parse_event(data) {
        // Writing drops only the R bit (RFC 4733 §2.3): read back, it's the same event.
        let mut wire = [0u8; EVENT_LEN];
        ev.write(&mut wire);
        assert_eq!(
            parse_event(&wire),
            Ok(TelephoneEvent {
                reserved: false,
                ..ev
            })
        );
    }
    let mut rx = DtmfReceiver::new();
    for record in data.chunks_exact(9) {
        if let [t0, t1, t2, t3, marker, payload @ ..] = record {
            let timestamp = u32::from_be_bytes([*t0, *t1, *t2, *t3]);
            let _ = rx.on_packet_with_end(timestamp, marker & 1 != 0, payload);
        }
    }
}

/// Provider webhook bodies: Twilio's SMS form and Meta's WhatsApp JSON, with
/// their signature checks (fixed key) and what the handlers do next.
pub fn webhook(data: &[u8]) {
    const KEY: &str = "fuzz-webhook-secret";
    const URL: &str = "https://gw.example.com/hooks/twilio/sms";
    // The Twilio handler refuses bodies that aren't UTF-8 before decoding.
    if let Ok(text) = std::str::from_utf8(data) {
        let params = form::decode(text);
        let good = inbound::twilio_signature(KEY, URL, &params);
        assert!(
            inbound::twilio_signature_ok(KEY, URL, &params, &good),
            "Twilio signature does not verify"
        );
        let _ = inbound::twilio_signature_ok(KEY, URL, &params, text);
        if let Ok(msg) = inbound::parse_twilio(&params) {
            let _ = inbound::opt_keyword(&msg.text);
            // Debug masks the number: that runs on the sender's text too.
            let _ = format!("{msg:?}");
        }
    }
    let good = crypto::signature(KEY.as_bytes(), data);
    assert!(
        inbound::whatsapp_signature_ok(KEY, data, &good),
        "WhatsApp signature does not verify"
    );
    let _ = inbound::whatsapp_signature_ok(KEY, data, &String::from_utf8_lossy(data));
    if let Ok(messages) = inbound::parse_whatsapp(data) {
        for msg in messages {
            let _ = inbound::opt_keyword(&msg.text);
            let _ = format!("{msg:?}");
        }
    }
}

/// A TwiML document as an app answers it: parsed and, when it parses,
/// every verb's errors and fields read.
pub fn twiml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match crate::twiml::parse::parse(text) {
        Ok(verbs) => {
            for v in &verbs {
                let _ = (v.kind.needs_media(), format!("{v:?}"));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// TOML as operators write it: a flow file, and a main config as `crossline
/// check` reads it, errors rendered as it prints them. A config naming a
/// `[flows] dir` makes the loader read that directory, as it would for real.
pub fn flow_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.toml");
    if let Err(errors) = crate::flow::parse_flow(text, file, Path::new("audio")) {
        for e in &errors {
            let _ = e.to_string();
        }
    }
    if let Err(errors) = crate::config::Config::parse(text, file) {
        let _ = errors.to_string();
    }
}

// ---- SIP helpers ----

/// What the gateway reads from a parsed message beyond the parser's checks.
fn inspect(msg: &SipMessage) {
    let h = msg.headers();
    let _ = h.vias();
    if let Ok(via) = h.top_via() {
        let _ = (via.branch(), via.rport(), via.received(), via.sent_by());
    }
    let _ = (h.call_id(), h.cseq(), h.max_forwards(), h.expires());
    for addr in [h.from(), h.to()].into_iter().flatten() {
        let _ = (addr.tag(), addr.to_string());
    }
    let _ = (h.contacts(), h.is_star_contact());
    let _ = (h.routes("Route"), h.routes("Record-Route"));
    let _ = (h.tokens("Require"), h.tokens("Supported"));
    // Session timers, as the UAS and the UAC read them.
    let _ = crate::sip::session_timer::negotiate_as_uas(h, &Default::default(), None);
    let _ = crate::sip::session_timer::from_response(h);
    for name in ["Authorization", "Proxy-Authorization"] {
        for value in h.get_all(name) {
            let _ = DigestResponse::parse(value);
        }
    }
    for name in ["WWW-Authenticate", "Proxy-Authenticate"] {
        for value in h.get_all(name) {
            if let Ok(challenge) = Challenge::parse(value) {
                // Our UAC's reply to a challenge.
                let mut client = DigestClient::new("alice", "secret");
                let _ = client.authorize(&challenge, "INVITE", "sip:bob@example.com");
            }
        }
    }
    let body = msg.body();
    let ct = h.content_type().unwrap_or("").trim().to_ascii_lowercase();
    if ct.starts_with("application/sdp") {
        if let Ok(text) = std::str::from_utf8(body) {
            let _ = SessionDescription::parse(text);
        }
    } else if ct.starts_with("application/dtmf-relay") {
        let _ = crate::sip::endpoint::parse_dtmf_relay(body);
    }
    match msg {
        SipMessage::Request(req) => {
            let _ = req.check_mandatory();
            let _ = DialogId::of_received(&req.headers);
            if let Ok(mut dialog) = Dialog::new_uas(req, "fuzztag", 1) {
                dialog.refresh_target(req);
                let _ = dialog.next_hop();
                // The BYE we would send in this dialog (route set, targets).
                if let Ok(via) = Via::parse("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKfuzz") {
                    let contact = Uri::sip(Some("crossline"), "127.0.0.1", Some(5060));
                    let bye = dialog.make_request(Method::Bye, &via, &contact, "crossline", None);
                    let _ = parse_message(&bye.to_bytes());
                }
            }
        }
        SipMessage::Response(resp) => {
            let _ = DialogId::of_response(&resp.headers);
        }
    }
}

fn local_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060)
}

fn remote_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5070)
}

/// Calls only from a trunk known by its credentials.
fn digest_config() -> EndpointConfig {
    EndpointConfig {
        inbound_trunks: vec![InboundTrunk {
            name: "fuzz".into(),
            cidrs: Vec::new(),
            credentials: Some(("alice".into(), "secret".into())),
            max_calls: 1,
            digest_algorithms: Vec::new(),
        }],
        ..EndpointConfig::default()
    }
}

fn local_media() -> LocalMedia {
    LocalMedia {
        address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        rtp_port: 20_000,
        session_id: 1,
        session_version: 1,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        telephone_event_pt: 101,
        ptime_ms: 20,
    }
}

/// Another shape: IPv6, A-law only, no telephone-event, odd ptime.
fn local_media_v6() -> LocalMedia {
    LocalMedia {
        address: IpAddr::V6(Ipv6Addr::LOCALHOST),
        rtp_port: 40_000,
        session_id: u64::MAX,
        session_version: u64::MAX,
        codecs: vec![Codec::Pcma],
        telephone_event_pt: 0,
        ptime_ms: 30,
    }
}

/// Drain the endpoint as its driver does: ring, answer and hang up every
/// incoming call (SDP offer/answer, 2xx retransmission, BYE after ACK),
/// then run every timer that falls due within 64*T1.
fn drive(ep: &mut Endpoint, now: Instant) {
    let mut incoming = Vec::new();
    while let Some(event) = ep.poll_event() {
        if let Event::IncomingCall(call) = event {
            incoming.push(call.call);
        }
    }
    for call in incoming {
        let _ = ep.ring(now, call);
        let _ = ep.answer(now, call, local_media());
        let _ = ep.hangup(now, call);
    }
    let end = now + Duration::from_secs(70);
    // Bounded: each pass handles at least one due timer.
    for _ in 0..256 {
        match ep.poll_timeout() {
            Some(at) if at <= end => ep.handle_timeout(at),
            _ => break,
        }
        while ep.poll_transmit().is_some() {}
    }
    while ep.poll_event().is_some() {}
    while ep.poll_transmit().is_some() {}
}

/// Frame `pieces` pushed one after another; true if the framer failed.
fn frame_all<'a>(max: usize, pieces: impl Iterator<Item = &'a [u8]>) -> (Vec<Bytes>, bool) {
    let mut framer = StreamFramer::new(max);
    let mut frames = Vec::new();
    for piece in pieces {
        framer.push(piece);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
        let _ = (framer.take_pings(), framer.buffered());
    }
    (frames, false)
}

/// Cut `data` into pieces of 1..=32 bytes, sizes from a generator seeded by
/// its first byte (so the fuzzer controls the cuts without losing a byte).
fn chunks<'a>(data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut state = u32::from(data.first().copied().unwrap_or(0)) | 1;
    let mut rest = data;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((state >> 16) % 32) as usize + 1;
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        rest = tail;
        Some(piece)
    })
}

// ---- media helpers ----

const PT_PCMU: u8 = 0;
const PT_PCMA: u8 = 8;
const PT_TELEPHONE_EVENT: u8 = 101;

/// One stream's receive side as the audio loop keeps it, bridged: RTCP
/// statistics, the DTMF receiver, and decoded audio cut into 20 ms frames
/// through a jitter buffer that is played out every 20 ms.
struct MediaRx {
    rtcp: RtcpSender,
    dtmf: DtmfReceiver,
    jitter: Option<JitterBuffer>,
    partial: [i16; FRAME_SAMPLES],
    partial_len: usize,
    next_seq: u16,
    next_ts: u32,
    played_ms: u64,
}

impl MediaRx {
    fn new() -> MediaRx {
        MediaRx {
            rtcp: RtcpSender::new(0x1234_5678, "crossline"),
            dtmf: DtmfReceiver::new(),
            jitter: JitterBuffer::new(JitterConfig::default()).ok(),
            partial: [0; FRAME_SAMPLES],
            partial_len: 0,
            next_seq: 0,
            next_ts: 0,
            played_ms: 0,
        }
    }

    fn rtp(&mut self, now_ms: u64, data: &[u8]) {
        self.play_until(now_ms);
        let Ok(view) = parse_rtp(data) else {
            return;
        };
        self.rtcp
            .on_rtp_received(now_ms, view.ssrc, view.sequence, view.timestamp);
        match view.payload_type {
            PT_TELEPHONE_EVENT => {
                let _ = self
                    .dtmf
                    .on_packet_with_end(view.timestamp, view.marker, view.payload);
            }
            PT_PCMU | PT_PCMA => {
                let mut pcm = [0i16; 480];
                for chunk in view.payload.chunks(pcm.len()) {
                    let n = if view.payload_type == PT_PCMU {
                        g711::decode_ulaw(chunk, &mut pcm)
                    } else {
                        g711::decode_alaw(chunk, &mut pcm)
                    };
                    self.push_samples(now_ms, pcm.get(..n).unwrap_or_default());
                }
            }
            _ => {}
        }
    }

    fn rtcp(&mut self, now_ms: u64, data: &[u8]) {
        self.play_until(now_ms);
        if let Ok(packets) = parse_compound(data) {
            self.rtcp.on_rtcp_received(now_ms, &packets);
        }
        // Our next report carries what we learnt; then we send a frame.
        let rtp_now = (now_ms as u32).wrapping_mul(8);
        let mut out = [0u8; 512];
        if let Ok(n) = self
            .rtcp
            .build_report(ntp(now_ms), now_ms, rtp_now, &mut out)
        {
            let _ = parse_compound(out.get(..n).unwrap_or_default());
        }
        self.rtcp.on_rtp_sent(rtp_now, FRAME_SAMPLES);
    }

    fn finish(&mut self, now_ms: u64) {
        let _ = (
            self.rtcp.rtt_ms(),
            self.rtcp.reception(),
            self.rtcp.peer_left(),
        );
        let mut out = [0u8; 512];
        let _ = self.rtcp.build_report(ntp(now_ms), now_ms, 0, &mut out);
        let _ = self.rtcp.build_bye(Some("bye"), &mut out);
        if let Some(j) = &self.jitter {
            let _ = j.stats();
        }
    }

    /// Queue decoded audio of any length as 20 ms frames (BridgeEnd does this).
    fn push_samples(&mut self, now_ms: u64, samples: &[i16]) {
        for &x in samples {
            if let Some(slot) = self.partial.get_mut(self.partial_len) {
                *slot = x;
                self.partial_len += 1;
            }
            if self.partial_len == FRAME_SAMPLES {
                if let Some(j) = &mut self.jitter {
                    let _ = j.push(now_ms, self.next_seq, self.next_ts, &self.partial);
                }
                self.next_seq = self.next_seq.wrapping_add(1);
                self.next_ts = self.next_ts.wrapping_add(FRAME_SAMPLES as u32);
                self.partial_len = 0;
            }
        }
    }

    /// The audio loop pops one frame per 20 ms tick.
    fn play_until(&mut self, now_ms: u64) {
        let mut out = [0i16; FRAME_SAMPLES];
        while self.played_ms + 20 <= now_ms {
            self.played_ms += 20;
            if let Some(j) = &mut self.jitter {
                let _ = j.pop(self.played_ms, &mut out);
            }
        }
    }
}

/// A wall-clock NTP time `now_ms` after a fixed start.
fn ntp(now_ms: u64) -> u64 {
    let nanos = u32::try_from((now_ms % 1000) * 1_000_000).unwrap_or(0);
    ntp_from_unix(1_700_000_000 + now_ms / 1000, nanos)
}

/// Replays every input a fuzz target once failed on (fuzz/regressions/), its
/// seeds (fuzz/seeds/) and, for the SIP targets, the messages in
/// sip-fixtures/, through the same functions the fuzzers call. A crash that
/// scripts/fuzz.sh found becomes a test by copying its artifact into
/// fuzz/regressions/<target>/.
#[cfg(test)]
mod replay {
    use std::path::{Path, PathBuf};

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// Inputs under `dir`, recursively: not dotfiles (.gitkeep), not the
    /// fixtures' MANIFEST.tsv or notes, not the seed generator.
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                collect(&path, out);
            } else if !matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("tsv" | "md" | "py")
            ) {
                out.push(path);
            }
        }
    }

    fn replay(target: &str, run: fn(&[u8]), with_sip_fixtures: bool) {
        let mut files = Vec::new();
        collect(&root().join("fuzz/regressions").join(target), &mut files);
        collect(&root().join("fuzz/seeds").join(target), &mut files);
        if with_sip_fixtures {
            collect(&root().join("sip-fixtures"), &mut files);
        }
        files.sort();
        for file in &files {
            let data =
                std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            // Printed first: if `run` panics, the captured output names the input.
            println!("{target}: {}", file.display());
            run(&data);
        }
        println!("{target}: {} inputs replayed", files.len());
        assert!(
            !files.is_empty(),
            "{target}: no inputs found (fuzz/seeds/{target}/ missing?)"
        );
    }

    #[test]
    fn sip_message() {
        replay("sip_message", super::sip_message, true);
    }

    #[test]
    fn sip_stream() {
        replay("sip_stream", super::sip_stream, true);
    }

    #[test]
    fn sdp() {
        replay("sdp", super::sdp, false);
    }

    #[test]
    fn twiml() {
        replay("twiml", super::twiml, false);
    }

    #[test]
    fn rtp() {
        replay("rtp", super::rtp, false);
    }

    #[test]
    fn dtmf() {
        replay("dtmf", super::dtmf, false);
    }

    #[test]
    fn webhook() {
        replay("webhook", super::webhook, false);
    }

    #[test]
    fn flow_config() {
        replay("flow_config", super::flow_config, false);
    }
}
