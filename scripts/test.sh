#!/usr/bin/env bash
# The whole test suite: installs the peers the tests drive, then runs every
# test. Usage: scripts/test.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need: the binary each provides, then the package.
needs=(
  "sipp sip-tester"
  "tshark tshark"
  "espeak-ng espeak-ng"
  "sox sox"
  "chromium chromium"
  "chromedriver chromium-driver"
  "kamailio kamailio"
  "openssl openssl"
  "curl curl"
  "dnsmasq dnsmasq-base"
  "baresip baresip-core"
)
missing=()
for pair in "${needs[@]}"; do
  read -r binary package <<<"$pair"
  command -v "$binary" >/dev/null 2>&1 || missing+=("$package")
done
# PostgreSQL (tests/cluster.rs, tests/store_backends.rs start their own
# throwaway server): its programs live off PATH, under /usr/lib/postgresql.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then missing+=("postgresql"); fi
# Python with venv + pip, for the PyPI peers (pjsua2) below.
if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then missing+=("python3" "python3-venv"); fi
# libopus-dev: audiopus (WebRTC legs) links the system libopus.
if ! pkg-config --exists opus 2>/dev/null; then missing+=("libopus-dev" "pkg-config"); fi
# make: jemalloc (the default allocator) is built from its C sources.
command -v make >/dev/null 2>&1 || missing+=("make")
# The embedded recognizer (cargo feature pocketsphinx, built below): the
# library and Debian's US English model.
if ! pkg-config --exists pocketsphinx 2>/dev/null; then missing+=("libpocketsphinx-dev"); fi
if [ ! -f /usr/share/pocketsphinx/model/en-us/en-us/mdef ]; then missing+=("pocketsphinx-en-us"); fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "test.sh: missing packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

# Python peers (pjsua2, ...) in a virtualenv of their own, from PyPI.
venv=target/peers-venv
if ! cmp -s tests/peers/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
  echo "test.sh: installing the Python peers into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/peers/requirements.txt
  cp tests/peers/requirements.txt "$venv/requirements.txt"
fi

# SIPp's uac_pcap scenario reads pcap/g711a.pcap relative to its cwd; the
# integration tests point it at Debian's copy.
export CROSSLINE_SIPP_PCAP_DIR=/usr/share/sip-tester

# Two cores: keep test binaries from fighting the gateway for CPU. Set via
# the environment, not `--test-threads`, because the criterion bench
# harnesses (run once each in test mode) reject libtest's flags.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}"

# The protocol cores are sans-IO: neither may pull in tokio, even through
# another dependency. Checked before the lints and tests.
for core in crossline-sip crossline-media; do
  tree=$(cargo tree -p "$core" -e normal --locked)
  tokio_lines=$(grep -c tokio <<<"$tree" || true)
  if [ "$tokio_lines" != 0 ]; then
    echo "test.sh: FAIL: $core depends on tokio; the cores must build without it:" >&2
    grep tokio <<<"$tree" >&2
    exit 1
  fi
done

# Optional features the suite covers: the embedded recognizer links a
# system library and adds no crates, so building it costs nothing extra.
features=(--features crossline/pocketsphinx)

# Lints: any clippy warning fails the run, in every crate and target.
cargo clippy --workspace --all-targets --locked "${features[@]}" -- -D warnings

# Every crate of the workspace: the cores' unit tests too.
cargo test --workspace --all-targets --locked "${features[@]}" "$@"
