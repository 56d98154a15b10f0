#!/usr/bin/env bash
# Run the gateway: installs what the build needs (libopus-dev and pkg-config
# for web calls' Opus, make for jemalloc), then builds and starts crossline. With no arguments
# it runs on the embedded defaults; otherwise the arguments go to
# `crossline run` (e.g. --config deploy/crossline.example.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
if ! pkg-config --exists opus 2>/dev/null; then missing+=("libopus-dev" "pkg-config"); fi
# make: jemalloc (the default allocator) is built from its C sources.
command -v make >/dev/null 2>&1 || missing+=("make")
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "run.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "run.sh: missing packages: ${missing[*]}" >&2
    echo "install them with: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

exec cargo run --release --locked -- run "$@"
