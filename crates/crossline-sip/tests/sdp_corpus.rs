//! The SDP corpus (sip-fixtures/sdp/): real-world offers from Asterisk,
//! FreeSWITCH, rtpengine, Cisco, Teams, Twilio, browsers, IMS and the RFCs,
//! each with the answer crossline must give (README.md there says how
//! they were made and what the policy is).

use std::path::PathBuf;

use crossline_sip::sdp::{answer, Codec, LocalMedia, SdpError, SessionDescription};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    #[allow(dead_code)]
    source: String,
    note: String,
    status: u16,
    codec: Option<String>,
    payload_type: Option<u8>,
    telephone_event: Option<u8>,
    remote: Option<String>,
    ptime: Option<u32>,
    direction: Option<String>,
    #[serde(default)]
    m: Vec<ExpectM>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectM {
    media: String,
    accepted: bool,
}

fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../sip-fixtures/sdp")
}

fn ours() -> LocalMedia {
    LocalMedia {
        address: "192.0.2.200".parse().unwrap(),
        rtp_port: 40_000,
        session_id: 7,
        session_version: 1,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        telephone_event_pt: 101,
        ptime_ms: 20,
    }
}

/// One case: `None` if our answer matches, else what differs.
fn check(name: &str, offer: &str, want: &Expect) -> Option<String> {
    let sd = match SessionDescription::parse(offer) {
        Ok(sd) => sd,
        // Every offer in the corpus is SDP: refusing to parse it is a 400.
        Err(e) => return Some(format!("did not parse ({e}): that would be a 400")),
    };
    let (n, text) = match answer(&sd, &ours()) {
        Ok(a) => a,
        Err(SdpError::NoCommonCodec | SdpError::MissingConnection) if want.status == 488 => {
            return None
        }
        Err(e) => return Some(format!("refused ({e}), want {}", want.status)),
    };
    if want.status != 200 {
        return Some(format!("answered, want {}:\n{text}", want.status));
    }
    let mut diffs = Vec::new();
    let mut same = |what: &str, got: String, want: Option<String>| {
        if want.as_deref() != Some(got.as_str()) {
            diffs.push(format!("{what}: got {got}, want {want:?}"));
        }
    };
    same("codec", n.codec.name().into(), want.codec.clone());
    same(
        "payload type",
        n.payload_type.to_string(),
        want.payload_type.map(|p| p.to_string()),
    );
    same(
        "telephone-event",
        format!("{:?}", n.telephone_event_pt),
        Some(format!("{:?}", want.telephone_event)),
    );
    same("remote", n.remote_rtp.to_string(), want.remote.clone());
    same(
        "ptime",
        n.ptime_ms.to_string(),
        want.ptime.map(|p| p.to_string()),
    );
    same(
        "direction",
        n.local_direction.as_attr().into(),
        want.direction.clone(),
    );
    // The answer itself: valid SDP, one m-line per offered one, in order,
    // ours with the chosen formats and our ptime, refused ones at port 0
    // with the offer's proto and formats.
    match SessionDescription::parse(&text) {
        Err(e) => diffs.push(format!("our answer does not parse: {e}")),
        Ok(back) => {
            if back.media.len() != sd.media.len() || back.media.len() != want.m.len() {
                diffs.push(format!(
                    "{} m-lines answered for {} offered ({} expected)",
                    back.media.len(),
                    sd.media.len(),
                    want.m.len()
                ));
            }
            for (i, ((a, o), w)) in back.media.iter().zip(&sd.media).zip(&want.m).enumerate() {
                if a.media != o.media || a.media != w.media {
                    diffs.push(format!(
                        "m-line {i}: {} for {} (want {})",
                        a.media, o.media, w.media
                    ));
                }
                if (a.port != 0) != w.accepted {
                    diffs.push(format!(
                        "m-line {i}: port {}, accepted should be {}",
                        a.port, w.accepted
                    ));
                }
                if a.port == 0 && (a.proto != o.proto || a.formats != o.formats) {
                    diffs.push(format!(
                        "m-line {i}: refused without echoing proto and formats"
                    ));
                }
                if a.port != 0 {
                    let mut formats = vec![n.payload_type.to_string()];
                    formats.extend(n.telephone_event_pt.map(|p| p.to_string()));
                    if a.formats != formats {
                        diffs.push(format!(
                            "m-line {i}: formats {:?}, want {formats:?}",
                            a.formats
                        ));
                    }
                    if a.ptime != Some(n.ptime_ms) {
                        diffs.push(format!(
                            "m-line {i}: a=ptime {:?}, we send {}",
                            a.ptime, n.ptime_ms
                        ));
                    }
                }
            }
        }
    }
    (!diffs.is_empty()).then(|| format!("{name}: {}\n  {}", want.note, diffs.join("\n  ")))
}

#[test]
fn every_offer_in_the_corpus_gets_its_answer() {
    let mut names: Vec<String> = std::fs::read_dir(corpus())
        .expect("sip-fixtures/sdp")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".sdp").map(str::to_string))
        .collect();
    names.sort();
    assert!(
        names.len() >= 30,
        "only {} offers in the corpus",
        names.len()
    );
    let (mut refused, mut failures) = (0, Vec::new());
    for name in &names {
        let offer = std::fs::read(corpus().join(format!("{name}.sdp"))).unwrap();
        let offer = String::from_utf8(offer).unwrap_or_else(|_| panic!("{name}.sdp is not UTF-8"));
        assert!(offer.ends_with("\r\n"), "{name}.sdp: CRLF line ends");
        let expect = std::fs::read_to_string(corpus().join(format!("{name}.expect.toml")))
            .unwrap_or_else(|_| panic!("{name}: no .expect.toml"));
        let want: Expect =
            toml::from_str(&expect).unwrap_or_else(|e| panic!("{name}.expect.toml: {e}"));
        assert!(
            [200, 488].contains(&want.status),
            "{name}: status {}",
            want.status
        );
        refused += usize::from(want.status == 488);
        failures.extend(check(name, &offer, &want));
    }
    assert!(refused >= 5, "the corpus should hold offers we must refuse");
    assert!(
        failures.is_empty(),
        "{} of {} offers:\n{}",
        failures.len(),
        names.len(),
        failures.join("\n")
    );
}
