// RFC 4475 torture tests against the SIP message parser and stream framer.
// Fixtures and their classes come from sip-fixtures/rfc4475/MANIFEST.tsv.
// (Plain comments, not `//!`: this file is also `include!`d by a scratch crate.)

use std::collections::BTreeSet;
use std::panic::catch_unwind;
use std::path::PathBuf;

use crossline::sip::message::*;
use sha2::{Digest, Sha256};

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sip-fixtures/rfc4475")
}

struct Entry {
    file: String,
    bytes: usize,
    sha256: String,
    class: String,
}

fn manifest() -> Vec<Entry> {
    let text =
        std::fs::read_to_string(fixture_dir().join("MANIFEST.tsv")).expect("read MANIFEST.tsv");
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.starts_with("file\t") || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "bad manifest line: {line}");
        out.push(Entry {
            file: cols[0].to_string(),
            bytes: cols[1].parse().expect("byte count"),
            sha256: cols[2].to_string(),
            class: cols[3].to_string(),
        });
    }
    out
}

/// Invalid per RFC 4475 §3.1.2, or the upstream extra that is malformed.
fn must_fail(e: &Entry) -> bool {
    e.class.starts_with("3.1.2") || e.file == "test.dat" || e.class.contains("malformed")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Content-Length header values as written in the raw header section.
fn declared_lengths(data: &[u8]) -> Vec<String> {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end])
        .split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (name, value) = l.split_once(':')?;
            let name = name.trim();
            (name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l"))
                .then(|| value.trim().to_string())
        })
        .collect()
}

#[test]
fn rfc4475_fixtures() {
    let entries = manifest();
    let mut failures: Vec<String> = Vec::new();
    let (mut ok_expected, mut err_expected, mut framed) = (0, 0, 0);

    // Every .dat in the directory must be listed.
    let listed: BTreeSet<&str> = entries.iter().map(|e| e.file.as_str()).collect();
    for f in std::fs::read_dir(fixture_dir()).expect("read fixture dir") {
        let name = f
            .expect("dir entry")
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".dat") && !listed.contains(name.as_str()) {
            failures.push(format!("{name}: not in MANIFEST.tsv"));
        }
    }

    for e in &entries {
        let data = match std::fs::read(fixture_dir().join(&e.file)) {
            Ok(d) => d,
            Err(err) => {
                failures.push(format!("{}: unreadable: {err}", e.file));
                continue;
            }
        };
        if data.len() != e.bytes {
            failures.push(format!(
                "{}: {} bytes, manifest says {}",
                e.file,
                data.len(),
                e.bytes
            ));
        }
        let digest = hex(&Sha256::digest(&data));
        if digest != e.sha256 {
            failures.push(format!("{}: sha256 {digest} != manifest", e.file));
        }

        let parsed = match catch_unwind(|| parse_message(&data)) {
            Ok(r) => r,
            Err(_) => {
                failures.push(format!("{}: parse_message panicked", e.file));
                continue;
            }
        };
        if must_fail(e) {
            match &parsed {
                Ok(_) => failures.push(format!(
                    "{} [{}]: parsed but must be rejected",
                    e.file, e.class
                )),
                Err(err) => {
                    err_expected += 1;
                    match catch_unwind(|| bad_request_response(&data, err)) {
                        Ok(Some(resp)) if resp.status != 400 => failures.push(format!(
                            "{}: bad_request_response gave {}",
                            e.file, resp.status
                        )),
                        Ok(_) => {}
                        Err(_) => {
                            failures.push(format!("{}: bad_request_response panicked", e.file))
                        }
                    }
                }
            }
        } else {
            match &parsed {
                Ok(msg) => {
                    ok_expected += 1;
                    // What we write must read back the same.
                    match parse_message(&msg.to_bytes()) {
                        Ok(again) if &again == msg => {}
                        Ok(_) => failures.push(format!("{}: to_bytes round trip differs", e.file)),
                        Err(err) => {
                            failures.push(format!("{}: to_bytes re-parse failed: {err}", e.file))
                        }
                    }
                }
                Err(err) => {
                    failures.push(format!("{} [{}]: must parse, got {err}", e.file, e.class))
                }
            }
        }

        // Stream framing, one byte at a time: never panics; a valid message
        // with one well-formed Content-Length comes out as the same message.
        let frame = catch_unwind(|| {
            let mut framer = StreamFramer::new(64 * 1024);
            let mut first = None;
            for b in &data {
                framer.push(std::slice::from_ref(b));
                match framer.next_frame() {
                    Ok(Some(f)) => {
                        first.get_or_insert(f);
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            first
        });
        let Ok(frame) = frame else {
            failures.push(format!("{}: StreamFramer panicked", e.file));
            continue;
        };
        let lengths = declared_lengths(&data);
        let single_valid_length = lengths.len() == 1 && lengths[0].parse::<u32>().is_ok();
        if let (Ok(msg), true) = (&parsed, single_valid_length) {
            match frame.map(|f| parse_message(&f)) {
                Some(Ok(m)) if &m == msg => framed += 1,
                Some(Ok(_)) => failures.push(format!("{}: framed message differs", e.file)),
                Some(Err(err)) => failures.push(format!("{}: framed message fails: {err}", e.file)),
                None => failures.push(format!("{}: StreamFramer produced no frame", e.file)),
            }
        }
    }

    println!(
        "rfc4475: {} fixtures, {} parsed as required, {} rejected as required, {} framed byte-by-byte, {} failures",
        entries.len(),
        ok_expected,
        err_expected,
        framed,
        failures.len()
    );
    for f in &failures {
        println!("FAIL {f}");
    }
    assert!(
        failures.is_empty(),
        "{} RFC 4475 failures (listed above)",
        failures.len()
    );
}
