#!/usr/bin/env bash
# One-command benchmark report: the criterion suites, a CPS sweep
# (benches/sipp-load.sh), a concurrency sweep with the RTP receiver
# (benches/rtp-load.sh), web calls under real load (str0m peers,
# benches/signalling-latency.sh web) and, with --soak, the soak
# (benches/soak.sh); the page opens with issue 19's targets, each judged
# from the steps that measure it.
# Writes target/bench-report/index.html (tables and SVG plots, one
# self-contained page), results.json and each step's log.
#
#   scripts/bench-report.sh                         everything, defaults
#   scripts/bench-report.sh --skip criterion --cps 500,1000 --calls 1000,2000
#   scripts/bench-report.sh --compare old/results.json   mark >10 % regressions (exit 2)
#   scripts/bench-report.sh --from target/bench-report/results.json   re-render only
#   scripts/bench-report.sh --help                  every option
#
# A full run takes about 15 minutes. Run it on a quiet box: the report
# shows the load average it started under.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v bc >/dev/null 2>&1 || missing+=(bc)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
# dumpcap times the CPS steps' setups on the wire (benches/sipp-load.sh).
command -v dumpcap >/dev/null 2>&1 || missing+=(tshark)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "bench-report.sh: missing packages; install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

cargo build --release --quiet -p crossline-bench-report --bin bench-report
cargo build --release --quiet --bin crossline --example rtp_probe
exec "${CARGO_TARGET_DIR:-target}/release/bench-report" "$@"
