//! Replays every input a fuzz target once failed on (fuzz/regressions/), its
//! seeds (fuzz/seeds/) and, for the SIP targets, the messages in
//! sip-fixtures/, through the same functions the fuzzers call. A crash that
//! scripts/fuzz.sh found becomes a test by copying its artifact into
//! fuzz/regressions/<target>/.

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
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
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
    replay("sip_message", crossline::fuzzing::sip_message, true);
}

#[test]
fn sip_stream() {
    replay("sip_stream", crossline::fuzzing::sip_stream, true);
}

#[test]
fn sdp() {
    replay("sdp", crossline::fuzzing::sdp, false);
}

#[test]
fn rtp() {
    replay("rtp", crossline::fuzzing::rtp, false);
}

#[test]
fn dtmf() {
    replay("dtmf", crossline::fuzzing::dtmf, false);
}

#[test]
fn webhook() {
    replay("webhook", crossline::fuzzing::webhook, false);
}

#[test]
fn flow_config() {
    replay("flow_config", crossline::fuzzing::flow_config, false);
}
