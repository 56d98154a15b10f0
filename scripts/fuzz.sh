#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ for a bounded time each, then prints
# which ones crashed and where their inputs are.
#
# Usage: scripts/fuzz.sh [seconds-per-target, default 60] [target...]
#   Targets (default: all): sip_message sip_stream sdp rtp dtmf webhook twiml flow_config
#
# Needs the nightly toolchain (cargo-fuzz's sanitizers are nightly-only):
#   FUZZ_INSTALL_NIGHTLY=1  install it with rustup if it is missing
#   FUZZ_SANITIZER=none     build without AddressSanitizer (faster; finds
#                           panics, overflows and timeouts, not memory errors
#                           in C dependencies)
#
# Each target's corpus is fuzz/corpus/<target>/ (kept between runs, not in
# git): its seeds from fuzz/seeds/<target>/, its past crashes from
# fuzz/regressions/<target>/ and, for the SIP targets, every message in
# sip-fixtures/. A crash leaves its input in fuzz/artifacts/<target>/; copy it
# to fuzz/regressions/<target>/ and the replay tests in src/fuzzing.rs replay it
# from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

all_targets=(sip_message sip_stream sdp rtp dtmf webhook twiml flow_config)

secs=60
if [ $# -gt 0 ]; then
  secs=$1
  shift
fi
if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz.sh: seconds must be a positive integer, got '$secs'" >&2
  echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2
  exit 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=("${all_targets[@]}")
fi
for t in "${targets[@]}"; do
  if [[ " ${all_targets[*]} " != *" $t "* ]]; then
    echo "fuzz.sh: unknown target '$t'; known: ${all_targets[*]}" >&2
    exit 2
  fi
done

# Toolchain: nightly, cargo-fuzz, and what the gateway links (libopus).
if ! command -v rustup >/dev/null 2>&1; then
  echo "fuzz.sh: rustup not found; cargo-fuzz needs a rustup-managed nightly toolchain" >&2
  exit 1
fi
# `+nightly` needs the undated channel toolchain (nightly-<host>).
if ! rustup toolchain list | grep -Eq '^nightly-[^0-9]'; then
  if [ "${FUZZ_INSTALL_NIGHTLY:-0}" = 1 ]; then
    rustup toolchain install nightly --profile minimal
  else
    echo "fuzz.sh: no nightly toolchain (cargo-fuzz needs one). Install it with:" >&2
    echo "  rustup toolchain install nightly --profile minimal" >&2
    echo "or rerun with FUZZ_INSTALL_NIGHTLY=1." >&2
    exit 1
  fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi
if ! pkg-config --exists opus 2>/dev/null; then
  echo "fuzz.sh: libopus not found (the gateway links it). Install it with:" >&2
  echo "  sudo apt-get install -y libopus-dev pkg-config" >&2
  exit 1
fi

# Default: AddressSanitizer. The same flags on build, run and the hints below.
sanitizer=()
if [ "${FUZZ_SANITIZER:-}" = none ]; then
  sanitizer=(-s none)
fi
san=${sanitizer[*]+"${sanitizer[*]} "}

# Build the fuzz crate with the gateway's locked versions (every run: the
# gateway's dependencies change).
cp Cargo.lock fuzz/Cargo.lock

# Corpus: seeds, past crashes, and the SIP fixtures for the SIP targets.
for t in "${targets[@]}"; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  for dir in "fuzz/seeds/$t" "fuzz/regressions/$t"; do
    find "$dir" -type f ! -name '.*' -exec cp -f {} "$corpus/" \; 2>/dev/null || true
  done
  if [ "$t" = sip_message ] || [ "$t" = sip_stream ]; then
    # Every message file (not MANIFEST.tsv or notes), named by its path.
    while IFS= read -r -d '' f; do
      rel=${f#sip-fixtures/}
      cp -f "$f" "$corpus/fixture-${rel//\//-}"
    done < <(find sip-fixtures -type f ! -name '.*' ! -name '*.tsv' ! -name '*.md' -print0)
  fi
done

# Build first, so a compile error stops here instead of failing every run.
for t in "${targets[@]}"; do
  cargo +nightly fuzz build ${sanitizer[@]+"${sanitizer[@]}"} "$t"
done

logdir=$(mktemp -d "${TMPDIR:-/tmp}/crossline-fuzz.XXXXXX")
results=()
failed=()
crashes=()
for t in "${targets[@]}"; do
  echo "=== $t: ${secs}s ===" >&2
  marker="$logdir/$t.start"
  touch "$marker"
  log="$logdir/$t.log"
  set +e
  cargo +nightly fuzz run ${sanitizer[@]+"${sanitizer[@]}"} "$t" "$root/fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e
  new=()
  while IFS= read -r f; do
    new+=("$f")
  done < <(find "fuzz/artifacts/$t" -type f -newer "$marker" | sort)
  if [ "$rc" -eq 0 ]; then
    results+=("$t|ok")
  else
    failed+=("$t")
    if [ ${#new[@]} -gt 0 ]; then
      results+=("$t|CRASH (${#new[@]} input(s))")
      for f in "${new[@]}"; do
        crashes+=("$t|$f")
      done
    else
      results+=("$t|FAILED (exit $rc, no input saved; see $log)")
    fi
  fi
done

echo
printf '%-12s %s\n' target result
printf '%-12s %s\n' ------ ------
for r in "${results[@]}"; do
  printf '%-12s %s\n' "${r%%|*}" "${r#*|}"
done

if [ ${#crashes[@]} -gt 0 ]; then
  echo
  echo "Crashing inputs (logs in $logdir):"
  for c in "${crashes[@]}"; do
    t=${c%%|*}
    f=${c#*|}
    echo "  $f"
    echo "    reproduce:  cargo +nightly fuzz run $san$t $f"
    echo "    minimise:   cargo +nightly fuzz tmin $san$t $f"
    echo "    regression: cp $f fuzz/regressions/$t/   (then fix; cargo test --lib fuzzing::replay)"
  done
fi

if [ ${#failed[@]} -gt 0 ]; then
  echo
  echo "fuzz.sh: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
  exit 1
fi
echo
echo "fuzz.sh: no crashes in ${#targets[@]} target(s), ${secs}s each"
