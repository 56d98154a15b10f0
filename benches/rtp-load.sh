#!/usr/bin/env bash
# Concurrent-call media load: N calls on hold (wait music with the hold
# message on repeat), placed by SIPp, their RTP sent to an RTP probe of our
# own on loopback (examples/rtp_probe.rs).
#
#   benches/rtp-load.sh [CALLS] [HOLD_SECS]        default 4000 60
#
# Env: RATE (call setup rate, default 200), AUDIO_THREADS (default 0 = one per
# core), RECORD=1 to record every call (route record = true; RECORD_FORMAT wav
# or ogg, RECORD_CHANNELS dual or mono), which adds the disk written per
# second and the recording counters to the report. Reports: crossline CPU per core, RSS per call, |Δ−20 ms| p50/p99/
# p99.9/max at the receiver, loss and timestamp drift, measured over the
# plateau when every call is up.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sipp >/dev/null || { echo "install SIPp: apt-get install -y sip-tester" >&2; exit 1; }
calls=${1:-4000}; hold=${2:-60}; rate=${RATE:-200}
ramp=$(( calls / rate + 2 ))
measure=$(( hold - ramp - 5 ))
[ "$measure" -ge 10 ] || { echo "HOLD_SECS too short for the ramp ($ramp s)" >&2; exit 1; }

cargo build --release --quiet --bin crossline --example rtp_probe
work=$(mktemp -d)
trap 'kill $gw $probe 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(( 41000 + RANDOM % 5000 )); probe_port=$(( port + 500 )); http_port=$(( port + 700 ))
cat >"$work/crossline.toml" <<TOML
[sip]
udp = ["127.0.0.1:$port"]
tcp = []
[media]
rtp_port_min = 10000
rtp_port_max = 39999
rtp_timeout_secs = 0
audio_threads = ${AUDIO_THREADS:-0}
audio_dir = "$PWD/audio"
[http]
listen = "127.0.0.1:$http_port"
[store]
sqlite_path = "$work/crossline.db"
[logging]
level = "warn"
[recording]
recordings_dir = "$work/recs"
format = "${RECORD_FORMAT:-wav}"
channels = "${RECORD_CHANNELS:-dual}"
[[routes]]
flow = "hold"
record = $( [ "${RECORD:-0}" = 1 ] && echo true || echo false )
TOML
ulimit -n 65536 2>/dev/null || true
target/release/crossline run --config "$work/crossline.toml" 2>"$work/gw.log" &
gw=$!
sleep 1
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$gw/status"; }
idle_rss=$(rss_kb)

target/release/examples/rtp_probe "$probe_port" "$ramp" "$measure" >"$work/probe.txt" &
probe=$!
(cd "$work" && timeout $(( hold + ramp + 60 )) sipp -sf "$OLDPWD/benches/uac_hold.xml" "127.0.0.1:$port" \
   -key probe_port "$probe_port" -r "$rate" -m "$calls" -l "$calls" -d $(( hold * 1000 )) \
   -p $(( port + 1 )) -i 127.0.0.1 -nostdin -trace_stat -fd 5 -max_socket 4096 >/dev/null 2>&1) &
sipp_pid=$!

# Plateau: all calls up. Sample CPU per core and crossline's CPU over it.
sleep "$ramp"
cpu_snap() { awk '/^cpu[0-9]/{print $1, $2+$3+$4+$6+$7+$8, $5}' /proc/stat; }
gw_ticks() { awk '{print $14+$15}' "/proc/$gw/stat"; }
io_written() { awk '/^write_bytes/{print $2}' "/proc/$gw/io"; }
a=$(cpu_snap); g0=$(gw_ticks); w0=$(io_written); t0=$(date +%s.%N)
sleep "$measure"
b=$(cpu_snap); g1=$(gw_ticks); w1=$(io_written); t1=$(date +%s.%N)
plateau_rss=$(rss_kb)
curl -s "http://127.0.0.1:$http_port/metrics" 2>/dev/null | grep -E "^crossline_audio|^crossline_rtp_send_errors|^crossline_recording" || true
active=$(grep -c . /dev/null || true)
wait "$probe" || true
hz=$(getconf CLK_TCK)
echo "calls=$calls rate=$rate hold=${hold}s plateau=${measure}s"
paste <(echo "$a") <(echo "$b") | awk '{busy=$5-$2; idle=$6-$3; printf "cpu %s busy=%.1f%%\n", $1, 100*busy/(busy+idle)}'
echo "crossline_cpu_pct_of_one_core=$(echo "($g1-$g0)/$hz/($t1-$t0)*100" | bc -l | xargs printf '%.1f')"
echo "disk_written_mb_per_s=$(echo "($w1-$w0)/1048576/($t1-$t0)" | bc -l | xargs printf '%.2f')"
echo "rss_idle_kb=$idle_rss rss_plateau_kb=$plateau_rss rss_per_call_kb=$(( (plateau_rss - idle_rss) / calls ))"
cat "$work/probe.txt"
wait "$sipp_pid" || true
ok=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="SuccessfulCall(C)") c=i} END{print $c}' "$work"/*_.csv 2>/dev/null || echo "?")
echo "sipp_successful_calls=$ok"
