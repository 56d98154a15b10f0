#!/usr/bin/env bash
# Signalling latency under load: OPTIONS round trips to a release crossline
# on loopback while it is idle, while web calls transcode, and while a
# SIGHUP reload renders prompts. See benches/README.md, section 6.
#
#   benches/signalling-latency.sh [CONDITION ...]   default: idle web reload
#
# Conditions (each starts a fresh gateway):
#   idle    nothing else going on
#   web     LEGS browser calls (examples/webrtc_load.rs: str0m peers doing
#           ICE, DTLS-SRTP, one Opus packet per 20 ms each way through the
#           gateway's transcoder; the flow loops wait music at each leg)
#   reload  PROMPTS [[prompts]] rendered with espeak-ng on a SIGHUP sent 2 s
#           into the OPTIONS run (TTS cache in memory, so every reload
#           renders them all)
#
# Env: COUNT (OPTIONS per run, default 2000), RATE (per second, default 100),
# LEGS (default 100), PROMPTS (default 50), RUNS (runs per condition,
# default 1), CROSSLINE_BIN (the binary under test, default
# target/release/crossline), SKIP_BUILD=1 (don't run cargo build),
# RAW_SEND ([media] raw_send; unset: the config default).
# Prints one line per run: condition, OPTIONS answered/lost, RTT p50/p90/
# p99/max (ms), crossline's CPU over the run (% of one core), and what the
# condition adds (web: legs up, Opus packets/s back from the gateway;
# reload: SIGHUP to "config reloaded", s).
set -euo pipefail
cd "$(dirname "$0")/.."
count=${COUNT:-2000}; rate=${RATE:-100}; legs=${LEGS:-100}; prompts=${PROMPTS:-50}
runs=${RUNS:-1}
conditions=("$@"); [ ${#conditions[@]} -gt 0 ] || conditions=(idle web reload)
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet --bin crossline --example sip_ping --example webrtc_load
fi
bin=${CROSSLINE_BIN:-target/release/crossline}
target_dir=${CARGO_TARGET_DIR:-target}
ping=$target_dir/release/examples/sip_ping
load=$target_dir/release/examples/webrtc_load
for b in "$bin" "$ping" "$load"; do [ -x "$b" ] || { echo "missing $b (build it)" >&2; exit 1; }; done
command -v espeak-ng >/dev/null || { echo "install espeak-ng: apt-get install -y espeak-ng" >&2; exit 1; }

work=$(mktemp -d)
gw=""; loader=""
cleanup() {
  [ -n "$loader" ] && kill "$loader" 2>/dev/null || true
  [ -n "$gw" ] && kill "$gw" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14+$15}' "/proc/$gw/stat"; }

mkdir -p "$work/flows"
cat >"$work/flows/web-load.toml" <<TOML
name = "web-load"

[[nodes]]
id = "music"
type = "play"
file = "$PWD/audio/wait-music.wav"
loop = true
TOML
cat >"$work/flows/web-chat.toml" <<TOML
name = "web-chat"
channel = "chat"

[[nodes]]
id = "hi"
type = "handoff"
TOML

# Start crossline with the base config plus "$1"; waits for "crossline ready".
start_gateway() {
  port=$(( 42000 + RANDOM % 8000 )); http_port=$(( port + 700 ))
  cat >"$work/crossline.toml" <<TOML
[sip]
udp = ["127.0.0.1:$port"]
tcp = []
[media]
rtp_port_min = 10000
rtp_port_max = 39999
rtp_timeout_secs = 0
${RAW_SEND:+raw_send = $RAW_SEND}
audio_dir = "$PWD/audio"
[http]
listen = "127.0.0.1:$http_port"
[store]
sqlite_path = "$work/crossline-$port.db"
[logging]
level = "info"
[flows]
dir = "$work/flows"
[chat]
web_flow = "web-chat"
[tts]
cache_dir = ""
[webrtc]
max_calls = $(( legs + 10 ))
[[routes]]
did = "webrtc"
flow = "web-load"
[[routes]]
flow = "demo"
$1
TOML
  "$bin" run --config "$work/crossline.toml" 2>"$work/gw.log" &
  gw=$!
  for _ in $(seq 1 1200); do
    grep -q "crossline ready" "$work/gw.log" && return 0
    kill -0 "$gw" 2>/dev/null || break
    sleep 0.1
  done
  echo "crossline did not start:" >&2; tail -20 "$work/gw.log" >&2; exit 1
}

stop_gateway() {
  [ -n "$loader" ] && { kill "$loader" 2>/dev/null || true; wait "$loader" 2>/dev/null || true; loader=""; }
  kill "$gw" 2>/dev/null || true; wait "$gw" 2>/dev/null || true; gw=""
  sleep 1
}

prompt_config() {
  local i
  for i in $(seq 1 "$prompts"); do
    printf '[[prompts]]\nname = "p%d"\ntext = "Prompt number %d. Thank you for calling. Your call is important to us; please stay on the line and an agent will be with you shortly."\n' "$i" "$i"
  done
}

ping_run() { # prints sip_ping's summary line
  "$ping" "127.0.0.1:$port" "$count" "$rate"
}

printf '%-7s %s\n' condition "result"
for run in $(seq 1 "$runs"); do
  for cond in "${conditions[@]}"; do
    extra=""
    case $cond in
      idle)
        start_gateway ""
        c0=$(cpu_ticks); t0=$(date +%s.%N)
        out=$(ping_run)
        ;;
      web)
        start_gateway ""
        secs=$(( count / rate + 30 ))
        "$load" "127.0.0.1:$http_port" "$legs" "$secs" >"$work/load.log" 2>&1 &
        loader=$!
        for _ in $(seq 1 600); do
          grep -qE "all [0-9]+ legs up|legs up:" "$work/load.log" && break
          sleep 0.1
        done
        sleep 5 # let every leg's audio settle
        c0=$(cpu_ticks); t0=$(date +%s.%N)
        out=$(ping_run)
        up=$(grep -oE "all [0-9]+ legs up|legs up: [0-9]+ of [0-9]+" "$work/load.log" | head -1)
        # Opus packets/s back to the "browsers" (median of the 5 s windows
        # after the first): 50 per leg when every downlink frame arrives.
        back=$(grep -oE "received/s=[0-9]+" "$work/load.log" | tail -n +2 | cut -d= -f2 | sort -n \
          | awk '{a[NR]=$1} END{if(NR) print "opus_back/s=" a[int((NR+1)/2)]}')
        dropped=$(curl -s "http://127.0.0.1:$http_port/metrics" \
          | awk -F'[{}"]' '/^crossline_webrtc_transcode_dropped_total/{s=s $3 ":" ($NF+0) " "} END{print (s=="" ? "0" : s)}')
        active=$(curl -s "http://127.0.0.1:$http_port/metrics" | awk '/^crossline_webrtc_calls_active /{print $2}')
        # Legs per core of crossline's CPU (the OPTIONS add ~1 %).
        per_core=$(echo "$active $(( $(cpu_ticks) - c0 )) $hz $(date +%s.%N) $t0" \
          | awk '{cpu=$2/$3/($4-$5); if (cpu>0) printf "%.0f", $1/cpu}')
        extra="web: [$up] active=$active $back transcode_dropped=[${dropped% }] legs_per_core=$per_core"
        ;;
      reload)
        start_gateway "$(prompt_config)"
        c0=$(cpu_ticks); t0=$(date +%s.%N)
        ping_run >"$work/ping.out" &
        pinger=$!
        sleep 2
        mark=$(wc -l <"$work/gw.log")
        h0=$(date +%s.%N)
        kill -HUP "$gw"
        reloaded=""
        for _ in $(seq 1 6000); do
          if tail -n +"$((mark + 1))" "$work/gw.log" | grep -qE "config reloaded|reload refused"; then
            reloaded=$(echo "$(date +%s.%N) - $h0" | bc -l); break
          fi
          sleep 0.01
        done
        wait "$pinger"
        out=$(cat "$work/ping.out")
        extra=$(printf 'reload: %s prompts, SIGHUP to "config reloaded" %.2f s' "$prompts" "${reloaded:-0}")
        tail -n +"$((mark + 1))" "$work/gw.log" | grep -q "reload refused" && extra="$extra (REFUSED)"
        ;;
      *) echo "unknown condition $cond" >&2; exit 2 ;;
    esac
    c1=$(cpu_ticks); t1=$(date +%s.%N)
    cpu=$(echo "($c1 - $c0) / $hz / ($t1 - $t0) * 100" | bc -l)
    printf '%-7s %s cpu=%.0f%% %s\n' "$cond" "$out" "$cpu" "$extra"
    stop_gateway
  done
done
