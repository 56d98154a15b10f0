//! Call recording with the real binary: SIPp callers streaming a 1 kHz
//! tone (and an RFC 4733 digit) while the flow plays 400 Hz; the files
//! read back through the API and analysed (Goertzel).

mod common;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::audio::*;
use common::*;
use serde_json::Value;
use sha2::Digest as _;

const OPERATOR: &str = "operator-token-0123456789";
const ADMIN: &str = "admin-token-0123456789abcdef";

/// The caller's scenario, streaming `tone` and pressing 1 after `dtmf_ms`.
fn caller_scenario(dir: &Path, tone: &Path, dtmf_ms: u64) -> String {
    let text = std::fs::read_to_string(scenario("uac_record.xml"))
        .unwrap()
        .replace("TONE_FILE", &path_str(tone))
        .replace("DTMF_AFTER_MS", &dtmf_ms.to_string());
    let file = dir.join("uac_record.xml");
    std::fs::write(&file, text).unwrap();
    path_str(&file)
}

fn caller_args<'a>(gw_addr: &'a str, scenario: &'a str, service: &'a str) -> Vec<&'a str> {
    vec!["-sf", scenario, gw_addr, "-s", service, "-m", "1"]
}

fn config(flows: &Path, recordings: &Path, extra: &str) -> String {
    format!(
        "[http]\noperator_token = \"{OPERATOR}\"\nadmin_token = \"{ADMIN}\"\n\n\
         [flows]\ndir = \"{}\"\n\n\
         [recording]\nrecordings_dir = \"{}\"\n{extra}",
        flows.display(),
        recordings.display()
    )
}

/// One raw HTTP request; binary bodies intact.
fn http_bytes(
    gw: &Gateway,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, raw[split + 4..].to_vec())
}

/// The gateway's recordings, once `n` are stored.
fn recordings(gw: &Gateway, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.api(OPERATOR, "GET", "/v1/recordings", None);
        assert_eq!(r.status, 200, "{}", r.body);
        let list = r.json()["recordings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if list.len() >= n {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{} recordings after 10 s, wanted {n}:\n{}",
            list.len(),
            gw.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Left and right channels of a dual-channel 8 kHz WAV.
fn channels(wav: &[u8]) -> (Vec<f64>, Vec<f64>) {
    let mut r = hound::WavReader::new(std::io::Cursor::new(wav)).unwrap();
    assert_eq!(r.spec().channels, 2, "dual channel");
    assert_eq!(r.spec().sample_rate, 8000);
    assert_eq!(r.spec().bits_per_sample, 16);
    let s: Vec<f64> = r.samples::<i16>().map(|x| f64::from(x.unwrap())).collect();
    let left = s.iter().step_by(2).copied().collect();
    let right = s.iter().skip(1).step_by(2).copied().collect();
    (left, right)
}

/// The longest run of 20 ms frames with every sample zero, both
/// channels: (first frame, frames).
fn longest_silence(left: &[f64], right: &[f64]) -> (usize, usize) {
    let silent: Vec<bool> = left
        .chunks(160)
        .zip(right.chunks(160))
        .map(|(l, r)| l.iter().chain(r).all(|x| *x == 0.0))
        .collect();
    let (mut best, mut run_start) = ((0, 0), 0);
    for (i, s) in silent.iter().enumerate() {
        if !s {
            run_start = i + 1;
        } else if i + 1 - run_start > best.1 {
            best = (run_start, i + 1 - run_start);
        }
    }
    best
}

/// A flows folder in `dir` and a 400 Hz WAV for them: with `talk_secs`,
/// a `talk` flow playing it that long, then hanging up.
fn flows_with_tone(dir: &Path, talk_secs: Option<f64>) -> (PathBuf, PathBuf) {
    let flows = dir.join("flows");
    std::fs::create_dir(&flows).unwrap();
    let tone400 = dir.join("tone400.wav");
    write_tone(&tone400, 400.0, 4.0, 8000.0, 8000);
    if let Some(secs) = talk_secs {
        std::fs::write(
            flows.join("talk.toml"),
            format!(
                "name = \"talk\"\n\n[[nodes]]\nid = \"talk\"\ntype = \"play\"\nfile = \"{}\"\nloop = true\nduration_secs = {secs:.1}\nnext = \"bye\"\n\n[[nodes]]\nid = \"bye\"\ntype = \"hangup\"\n",
                tone400.display()
            ),
        )
        .unwrap();
    }
    (flows, tone400)
}

/// Tone levels over `[from, to)` seconds of one channel.
fn levels(ch: &[f64], from: f64, to: f64) -> (f64, f64) {
    let part = &ch[(from * 8000.0) as usize..(to * 8000.0) as usize];
    (tone_level(part, 1000.0), tone_level(part, 400.0))
}

const FLOW: &str = r#"name = "rec"

[[nodes]]
id = "start"
type = "record"
action = "start"
next = "tone"

[[nodes]]
id = "tone"
type = "play"
file = "TONE400"
loop = true
duration_secs = 3.0
next = "card"

[[nodes]]
id = "card"
type = "record"
action = "pause"
next = "card_number"

[[nodes]]
id = "card_number"
type = "play"
file = "TONE400"
loop = true
duration_secs = 2.0
next = "resume"

[[nodes]]
id = "resume"
type = "record"
action = "resume"
next = "more"

[[nodes]]
id = "more"
type = "play"
file = "TONE400"
loop = true
duration_secs = 3.0
next = "bye"

[[nodes]]
id = "bye"
type = "hangup"
"#;

/// A dual-channel recording holds the caller's 1 kHz on the left and our
/// 400 Hz on the right; the pause holds digital silence (the caller's RFC
/// 4733 digit, sent during it, reached the flow but not the file); the
/// length is the call's within 1 %. Then the API: the list, a ranged
/// download (206, 416), the SHA-256, delete, and ids that
/// can't reach outside the directory.
#[test]
fn dual_channel_recording_with_a_pci_pause() {
    let dir = tempfile::tempdir().unwrap();
    let (flows, tone400) = flows_with_tone(dir.path(), None);
    std::fs::write(
        flows.join("rec.toml"),
        FLOW.replace("TONE400", &path_str(&tone400)),
    )
    .unwrap();
    let recs = dir.path().join("recs");
    let gw = Gateway::start(&format!(
        "{}\n[[routes]]\ndid = \"rec\"\nflow = \"rec\"\n",
        config(&flows, &recs, "")
    ));
    let tone = ulaw_tone(dir.path(), 1000, 20);
    let sc = caller_scenario(dir.path(), &tone, 3_800);
    let addr = gw.sip_addr();
    let run = sipp(&caller_args(&addr, &sc, "rec"), Duration::from_secs(40));
    assert!(run.ok(), "{}", run.describe());
    assert!(
        gw.log().contains("DTMF received (RFC 4733)"),
        "the digit reached the call during the pause"
    );

    let list = recordings(&gw, 1);
    let rec = &list[0];
    assert_eq!(rec["channels"], "dual");
    assert_eq!(rec["format"], "wav");
    assert_eq!(rec["complete"], true, "{rec}");
    let id = rec["id"].as_str().unwrap().to_string();
    let call_id = rec["call_id"].as_str().unwrap().to_string();

    // Length: the call's, answer to end, within 1 %.
    let call = gw.api(OPERATOR, "GET", &format!("/v1/calls/{call_id}"), None);
    let cdr = &call.json()["records"][0];
    let call_ms = cdr["ended_at"].as_f64().unwrap() - cdr["answered_at"].as_f64().unwrap();
    let rec_ms = rec["duration_ms"].as_f64().unwrap();
    assert!(
        (rec_ms - call_ms).abs() <= call_ms * 0.01,
        "recording {rec_ms} ms, call {call_ms} ms"
    );

    let (status, _, wav) = http_bytes(
        &gw,
        "GET",
        &format!("/v1/recordings/{id}"),
        &[("Authorization", &format!("Bearer {OPERATOR}"))],
    );
    assert_eq!(status, 200);
    assert_eq!(wav.len() as u64, rec["size_bytes"].as_u64().unwrap());
    assert_eq!(
        rec["sha256"].as_str().unwrap(),
        sha2::Sha256::digest(&wav)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let (left, right) = channels(&wav);
    let secs = left.len() as f64 / 8000.0;
    assert!(
        (secs * 1000.0 - rec_ms).abs() <= 20.0,
        "{secs} s of audio for {rec_ms} ms"
    );

    // The pause: about 2 s of digital silence, both channels, starting
    // about 3 s in (the digit was pressed 3.8 s after the answer).
    let (start, frames) = longest_silence(&left, &right);
    let (pause_from, pause_secs) = (start as f64 * 0.02, frames as f64 * 0.02);
    within("pause length", pause_secs, 1.8..2.2);
    within("pause start", pause_from, 2.8..3.4);

    // Before and after it: the caller left, our prompt right.
    for (from, to) in [
        (0.5, pause_from - 0.3),
        (pause_from + pause_secs + 0.3, secs - 0.5),
    ] {
        let (l1k, l400) = levels(&left, from, to);
        let (r1k, r400) = levels(&right, from, to);
        assert!(
            l1k > 4000.0 && l1k > 10.0 * l400,
            "left {from:.1}-{to:.1} s: 1 kHz {l1k:.0}, 400 Hz {l400:.0}"
        );
        assert!(
            r400 > 2000.0 && r400 > 10.0 * r1k,
            "right {from:.1}-{to:.1} s: 400 Hz {r400:.0}, 1 kHz {r1k:.0}"
        );
    }

    // Range: the header alone, then a range past the end.
    let auth = format!("Bearer {OPERATOR}");
    let (status, head, bytes) = http_bytes(
        &gw,
        "GET",
        &format!("/v1/recordings/{id}"),
        &[("Authorization", &auth), ("Range", "bytes=0-43")],
    );
    assert_eq!(status, 206, "{head}");
    assert_eq!(bytes, wav[..44]);
    assert!(
        head.contains(&format!("content-range: bytes 0-43/{}", wav.len())),
        "{head}"
    );
    let (status, _, tail) = http_bytes(
        &gw,
        "GET",
        &format!("/v1/recordings/{id}"),
        &[("Authorization", &auth), ("Range", "bytes=-100")],
    );
    assert_eq!(status, 206);
    assert_eq!(tail, wav[wav.len() - 100..]);
    let past = format!("bytes={}-", wav.len());
    let (status, head, _) = http_bytes(
        &gw,
        "GET",
        &format!("/v1/recordings/{id}"),
        &[("Authorization", &auth), ("Range", &past)],
    );
    assert_eq!(status, 416);
    assert!(
        head.contains(&format!("content-range: bytes */{}", wav.len())),
        "{head}"
    );

    // Only ids reach files: a path in the id is just an unknown id.
    for probe in [
        "..%2F..%2Fcrossline.db",
        "..%2Frecs%2F..%2Fflows%2Frec.toml",
        "%2Fetc%2Fpasswd",
    ] {
        let (status, _, body) = http_bytes(
            &gw,
            "GET",
            &format!("/v1/recordings/{probe}"),
            &[("Authorization", &auth)],
        );
        assert!(status == 404 || status == 400, "{probe}: {status}");
        assert!(
            !String::from_utf8_lossy(&body).contains("SQLite"),
            "{probe}"
        );
    }

    // Deleting takes a token, and takes the file with the row.
    let files = || std::fs::read_dir(&recs).unwrap().count();
    assert_eq!(files(), 1);
    let r = gw.api(
        "not-a-token",
        "DELETE",
        &format!("/v1/recordings/{id}"),
        None,
    );
    assert_eq!(r.status, 401);
    assert_eq!(files(), 1);
    let r = gw.api(OPERATOR, "DELETE", &format!("/v1/recordings/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(files(), 0);
    let r = gw.api(OPERATOR, "GET", &format!("/v1/recordings/{id}"), None);
    assert_eq!(r.status, 404);
    let metrics = gw.http_get("/metrics").1;
    assert_eq!(
        metric_value(
            &metrics,
            "crossline_recordings_finished_total{complete=\"true\"}"
        ),
        1.0
    );
}

/// A tmpfs too small for the recording; unmounted however the test ends.
struct TinyDisk(PathBuf);

impl TinyDisk {
    fn mount(at: &Path, size: &str) -> TinyDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "this test mounts a tiny tmpfs (a full disk) and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        TinyDisk(at.to_path_buf())
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `record = true` on the route: the announcement plays first, then the
/// recording starts with the flow. The disk fills two seconds in: the
/// caller still hears every packet of the flow's audio, paced, and the
/// recording is stored as incomplete.
#[test]
fn a_full_disk_leaves_the_call_intact_and_the_recording_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let (flows, _) = flows_with_tone(dir.path(), Some(6.0));
    let beep = dir.path().join("announce.wav");
    write_tone(&beep, 600.0, 1.0, 8000.0, 8000);
    // 64 KB: two seconds of dual-channel WAV.
    let recs = dir.path().join("full");
    let _disk = TinyDisk::mount(&recs, "64k");
    let gw = Gateway::start(&format!(
        "{}\n[[routes]]\ndid = \"full\"\nflow = \"talk\"\nrecord = true\n",
        config(
            &flows,
            &recs,
            &format!("announcement = \"{}\"\n", beep.display())
        )
    ));
    let tone = ulaw_tone(dir.path(), 1000, 20);
    let sc = caller_scenario(dir.path(), &tone, 500);
    let addr = gw.sip_addr();
    let c = capture_call(
        &gw,
        &caller_args(&addr, &sc, "full"),
        &[
            "rtp.seq",
            "frame.time_relative",
            "rtp.p_type",
            "rtp.payload",
        ],
    );
    assert!(c.run.ok(), "{}", c.run.describe());

    // What the caller heard: the announcement, then 6 s of 400 Hz, every
    // packet there and paced however the disk was doing.
    let audio: Vec<&Vec<String>> = c.rows.iter().filter(|r| r[2] == "0").collect();
    assert!(audio.len() >= 340, "{} packets for a 7 s call", audio.len());
    for w in audio.windows(2) {
        let (a, b): (u16, u16) = (w[0][0].parse().unwrap(), w[1][0].parse().unwrap());
        assert_eq!(b, a.wrapping_add(1), "no packet missing");
        let gap = w[1][1].parse::<f64>().unwrap() - w[0][1].parse::<f64>().unwrap();
        assert!(gap < 0.06, "a {gap:.3} s gap in the caller's audio");
    }
    let second = |i: usize| -> Vec<f64> {
        audio[i * 50..(i + 1) * 50]
            .iter()
            .flat_map(|r| pcmu_hex_to_linear(&r[3]))
            .collect()
    };
    let first = second(0);
    assert!(
        tone_level(&first, 600.0) > 10.0 * tone_level(&first, 400.0),
        "the announcement first"
    );
    for i in 2..6 {
        let s = second(i);
        assert!(
            tone_level(&s, 400.0) > 2000.0,
            "second {i}: the flow's 400 Hz, after the disk filled"
        );
    }

    let list = recordings(&gw, 1);
    let rec = &list[0];
    assert_eq!(rec["complete"], false, "{rec}");
    assert!(rec["duration_ms"].as_u64().unwrap() >= 5_000, "{rec}");
    let metrics = gw.http_get("/metrics").1;
    assert!(metric_value(&metrics, "crossline_recording_write_errors_total") >= 1.0);
    assert_eq!(
        metric_value(
            &metrics,
            "crossline_recordings_finished_total{complete=\"false\"}"
        ),
        1.0
    );
    assert!(gw.log().contains("recording: write failed"), "{}", gw.log());
    // The recording began after the announcement (about 1 s in).
    let call_id = rec["call_id"].as_str().unwrap();
    let call = gw.api(OPERATOR, "GET", &format!("/v1/calls/{call_id}"), None);
    let answered = call.json()["records"][0]["answered_at"].as_f64().unwrap();
    let started = rec["started_at"].as_f64().unwrap();
    within(
        "recording start after the answer",
        (started - answered) / 1000.0,
        0.9..1.5,
    );
}

const HOOK_SECRET: &str = "recording-webhook-secret";

/// Opus packets of an Ogg file decoded at 8 kHz: (channels, samples).
fn decode_ogg(bytes: &[u8]) -> (u8, Vec<f64>) {
    let mut reader = ogg::reading::PacketReader::new(std::io::Cursor::new(bytes));
    let head = reader.read_packet().unwrap().expect("OpusHead");
    assert_eq!(&head.data[..8], b"OpusHead");
    let channels = head.data[9];
    let tags = reader.read_packet().unwrap().expect("OpusTags");
    assert_eq!(&tags.data[..8], b"OpusTags");
    let mut decoder = audiopus::coder::Decoder::new(
        audiopus::SampleRate::Hz8000,
        if channels == 1 {
            audiopus::Channels::Mono
        } else {
            audiopus::Channels::Stereo
        },
    )
    .unwrap();
    let mut out = Vec::new();
    let mut pcm = [0i16; 960 * 2];
    let mut last_granule = 0;
    while let Some(p) = reader.read_packet().unwrap() {
        let data: &[u8] = &p.data;
        let n = decoder.decode(Some(data), &mut pcm[..], false).unwrap();
        out.extend(
            pcm[..n * usize::from(channels)]
                .iter()
                .map(|x| f64::from(*x)),
        );
        last_granule = p.absgp_page();
        if p.last_in_stream() {
            break;
        }
    }
    // 48 kHz granules: six to each 8 kHz sample.
    assert_eq!(
        last_granule,
        out.len() as u64 * 6,
        "the final granule position"
    );
    (channels, out)
}

/// The API drives a call's recording by SIP Call-ID: start a mono Ogg/Opus
/// recording, pause and resume it, stop it, start a WAV one that runs to
/// the call's end; refusals say why (404, 409, 422). Each finished
/// recording is POSTed, signed, to the webhook.
#[test]
fn the_api_records_a_live_call_and_the_webhook_hears_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (flows, _) = flows_with_tone(dir.path(), Some(8.0));
    let (hook_port, hooks, _) = standin::stand_in();
    let recs = dir.path().join("recs");
    let gw = Gateway::start(&format!(
        "{}\n[[routes]]\ndid = \"api\"\nflow = \"talk\"\n",
        config(
            &flows,
            &recs,
            &format!(
                "webhook_url = \"http://127.0.0.1:{hook_port}/hook/recordings\"\nwebhook_secret = \"{HOOK_SECRET}\"\n"
            )
        )
    ));
    let tone = ulaw_tone(dir.path(), 1000, 20);
    let sc = caller_scenario(dir.path(), &tone, 100);
    let addr = gw.sip_addr();
    let caller = {
        let (sc, addr) = (sc.clone(), addr.clone());
        std::thread::spawn(move || {
            let mut args = caller_args(&addr, &sc, "api");
            args.extend(["-cid_str", "rec-api-%u@crossline.test"]);
            sipp(&args, Duration::from_secs(40))
        })
    };
    let call = "/v1/calls/rec-api-1@crossline.test/recording";
    let act = |body: Value| gw.api(OPERATOR, "POST", call, Some(&body));
    let deadline = Instant::now() + Duration::from_secs(10);
    let started = loop {
        let r = act(serde_json::json!({ "action": "start", "channels": "mono", "format": "ogg" }));
        if r.status != 404 || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(started.status, 200, "{}", started.body);
    assert_eq!(started.json()["recording"], "recording");
    let again = act(serde_json::json!({ "action": "start" }));
    assert_eq!(again.status, 409, "{}", again.body);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        act(serde_json::json!({ "action": "pause" })).json()["recording"],
        "paused"
    );
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        act(serde_json::json!({ "action": "resume" })).json()["recording"],
        "recording"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        act(serde_json::json!({ "action": "stop" })).json()["recording"],
        "stopped"
    );
    assert_eq!(act(serde_json::json!({ "action": "stop" })).status, 409);
    assert_eq!(act(serde_json::json!({ "action": "rewind" })).status, 422);
    let nobody = gw.api(
        OPERATOR,
        "POST",
        "/v1/calls/nobody@crossline.test/recording",
        Some(&serde_json::json!({ "action": "start" })),
    );
    assert_eq!(nobody.status, 404);
    assert_eq!(act(serde_json::json!({ "action": "start" })).status, 200);
    let run = caller.join().unwrap();
    assert!(run.ok(), "{}", run.describe());

    let list = recordings(&gw, 2);
    // Newest first: the WAV, then the Ogg.
    let (wav, ogg) = (&list[0], &list[1]);
    assert_eq!(
        (wav["format"].as_str(), wav["channels"].as_str()),
        (Some("wav"), Some("dual"))
    );
    assert_eq!(
        (ogg["format"].as_str(), ogg["channels"].as_str()),
        (Some("ogg"), Some("mono"))
    );
    assert_eq!(ogg["complete"], true);
    assert_eq!(wav["call_id"], "rec-api-1@crossline.test");
    let auth = format!("Bearer {OPERATOR}");
    let (status, head, bytes) = http_bytes(
        &gw,
        "GET",
        &format!("/v1/recordings/{}", ogg["id"].as_str().unwrap()),
        &[("Authorization", &auth)],
    );
    assert_eq!(status, 200);
    assert!(head.contains("content-type: audio/ogg"), "{head}");
    let (channels, mono) = decode_ogg(&bytes);
    assert_eq!(channels, 1);
    let secs = mono.len() as f64 / 8000.0;
    within("Ogg recording length", secs, 3.7..4.4);
    // Mixed: the caller's 1 kHz and our 400 Hz, except in the pause.
    let quiet: Vec<bool> = mono
        .chunks(160)
        .map(|f| (f.iter().map(|x| x * x).sum::<f64>() / 160.0).sqrt() < 30.0)
        .collect();
    let paused = quiet.iter().filter(|q| **q).count() as f64 * 0.02;
    within("paused (quiet) time", paused, 0.8..1.3);
    let part = &mono[2_000..10_000];
    assert!(tone_level(part, 1000.0) > 2000.0 && tone_level(part, 400.0) > 1000.0);

    // The webhook: one signed POST per recording.
    let deadline = Instant::now() + Duration::from_secs(10);
    let posts = loop {
        let posts: Vec<standin::Seen> = hooks
            .lock()
            .unwrap()
            .iter()
            .filter(|x| x.path == "hook/recordings")
            .cloned()
            .collect();
        if posts.len() >= 2 || Instant::now() > deadline {
            break posts;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(posts.len(), 2);
    let mut ids = Vec::new();
    for p in &posts {
        let ts = p.headers.get("x-crossline-timestamp").expect("a timestamp");
        let want = format!(
            "sha256={}",
            standin::hmac_sha256_hex(
                HOOK_SECRET.as_bytes(),
                format!("{ts}.{}", p.body).as_bytes()
            )
        );
        assert_eq!(p.headers.get("x-crossline-signature"), Some(&want));
        let body: Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(body["event"], "recording.completed");
        ids.push(body["recording"]["id"].as_str().unwrap().to_string());
    }
    ids.sort();
    let mut listed: Vec<String> = list
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(ids, listed);
}

/// moto's S3 server on a loopback port, stopped with the test.
struct S3Server {
    child: std::process::Child,
    port: u16,
}

impl S3Server {
    fn start() -> S3Server {
        let python = peers::python("moto");
        let port = free_port();
        let child = Command::new(python)
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start moto_server");
        let server = S3Server { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server never listened");
            std::thread::sleep(Duration::from_millis(100));
        }
        server
    }

    /// An S3 call through boto3 (moto's own dependency), a client of its
    /// own: `get` writes the object to stdout, `head` exits 0 if it exists.
    fn boto(&self, op: &str, bucket: &str, key: &str) -> std::process::Output {
        let script = format!(
            "import sys, boto3\n\
             s3 = boto3.client('s3', endpoint_url='http://127.0.0.1:{}', region_name='us-east-1',\n\
                 aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             op, bucket, key = sys.argv[1:4]\n\
             if op == 'create': s3.create_bucket(Bucket=bucket)\n\
             elif op == 'get': sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=key)['Body'].read())\n\
             elif op == 'head': s3.head_object(Bucket=bucket, Key=key)\n",
            self.port
        );
        Command::new(peers::python("boto3"))
            .args(["-c", &script, op, bucket, key])
            .output()
            .unwrap()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `storage = "s3"`: the finished recording goes to the bucket (moto's S3
/// server) under the prefix and leaves recordings_dir; the row says where,
/// the object's SHA-256 is the row's, the API serves ranges from the
/// bucket, and deleting removes the object.
#[test]
fn recordings_go_to_an_s3_bucket() {
    let s3 = S3Server::start();
    let made = s3.boto("create", "call-recordings", "");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let (flows, _) = flows_with_tone(dir.path(), Some(3.0));
    let recs = dir.path().join("spool");
    let gw = Gateway::start_with_env(
        &format!(
            "{}\n[[routes]]\ndid = \"s3\"\nflow = \"talk\"\nrecord = true\n",
            config(
                &flows,
                &recs,
                &format!(
                    "storage = \"s3\"\ns3_bucket = \"call-recordings\"\ns3_endpoint = \"http://127.0.0.1:{}\"\ns3_prefix = \"calls/\"\n",
                    s3.port
                )
            )
        ),
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
    );
    let tone = ulaw_tone(dir.path(), 1000, 20);
    let sc = caller_scenario(dir.path(), &tone, 500);
    let addr = gw.sip_addr();
    let run = sipp(&caller_args(&addr, &sc, "s3"), Duration::from_secs(30));
    assert!(run.ok(), "{}", run.describe());

    let rec = recordings(&gw, 1).remove(0);
    assert_eq!(rec["storage"], "s3", "{rec}\n{}", gw.log());
    let id = rec["id"].as_str().unwrap();
    assert_eq!(
        std::fs::read_dir(&recs).unwrap().count(),
        0,
        "the local copy is gone once uploaded"
    );
    let got = s3.boto("get", "call-recordings", &format!("calls/{id}.wav"));
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    let object = got.stdout;
    assert_eq!(object.len() as u64, rec["size_bytes"].as_u64().unwrap());
    assert_eq!(
        rec["sha256"].as_str().unwrap(),
        sha2::Sha256::digest(&object)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let (left, right) = channels(&object);
    let (l1k, _) = levels(&left, 0.5, 2.5);
    let (_, r400) = levels(&right, 0.5, 2.5);
    assert!(
        l1k > 4000.0 && r400 > 2000.0,
        "left 1 kHz {l1k:.0}, right 400 Hz {r400:.0}"
    );

    let auth = format!("Bearer {OPERATOR}");
    let (status, head, bytes) = http_bytes(
        &gw,
        "GET",
        &format!("/v1/recordings/{id}"),
        &[("Authorization", &auth), ("Range", "bytes=100-199")],
    );
    assert_eq!(status, 206, "{head}");
    assert_eq!(bytes, object[100..200]);
    let r = gw.api(ADMIN, "DELETE", &format!("/v1/recordings/{id}"), None);
    assert_eq!(r.status, 204, "{}", r.body);
    let head = s3.boto("head", "call-recordings", &format!("calls/{id}.wav"));
    assert!(!head.status.success(), "the object is gone");
    assert!(String::from_utf8_lossy(&head.stderr).contains("404"));
}
