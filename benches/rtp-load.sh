#!/usr/bin/env bash
# Concurrent-call media load: N calls on hold (wait music with the hold
# message on repeat), placed by SIPp, their RTP sent to an RTP probe of our
# own on loopback (examples/rtp_probe.rs).
#
#   benches/rtp-load.sh [CALLS] [HOLD_SECS]        default 4000 60
#
# Env: RATE (call setup rate, default 200), AUDIO_THREADS (default 0 = one per
# core), OVERLOAD_THRESHOLD ([media] overload_threshold_percent; default 0 =
# off, so capacity runs admit every call), RECORD=1 to record every call
# (route record = true; RECORD_FORMAT wav or ogg, RECORD_CHANNELS dual or
# mono), which adds the disk written per second and the recording counters
# to the report. RTP_PROBE_ECHO=1 has the probe send every packet back to
# its stream, so the gateway also reads 50 packets a second per call (a
# caller who talks). STREAM=1 connects every call to a voice agent instead
# (a `stream` node, mode connect, to examples/stream_echo_agent.rs, which
# sends each media payload back) and the probe echoes the call's RTP back,
# so every call carries audio both ways: caller → crossline → agent →
# crossline → caller. SPEECH=1 puts every call in a speech gather instead,
# recognized back to back through the generic WebSocket protocol by the
# same program's /asr stand-in (benches/README.md section 14).
# QUEUE=1 puts every caller in a `[[queues]]` queue whose only agent is
# paused (every agent busy): wait music, and each caller's place and
# estimated wait spoken by espeak-ng every QUEUE_ANNOUNCE_SECS (default
# 10) and mixed into its audio (benches/README.md section 15).
# RAW_SEND=false sends each call's RTP through its own socket ([media]
# raw_send; unset: the config default, true, which needs root).
# MAX_SLEEP_US sets [media] loop_max_sleep_us (0: each loop sleeps to its
# 5 ms deadline in one go; unset: the config default).
# PERF_DATA=DIR records crossline over the plateau with `perf record -g`
# into DIR/perf-<calls>.data (frame pointers: build with
# RUSTFLAGS="-C force-frame-pointers=yes" for whole call chains).
# CROSSLINE_BIN runs another build (SKIP_BUILD=1 skips cargo). Reports:
# crossline CPU per core and per RTP packet sent, RSS per call, |Δ−20 ms|
# p50/p99/p99.9/max at the receiver, loss and timestamp drift, measured
# over the plateau when every call is up.
#
# Overload mode: offer more than the box carries with overload control on,
#   OVERLOAD_THRESHOLD=80 benches/rtp-load.sh 6000 40
# and the report adds the calls admitted and refused (503) and the loops'
# load. Every run also times 50 OPTIONS during the plateau (503 while
# overloaded): the signalling task must answer at once whatever the audio
# loops carry. The jitter and loss figures cover the admitted calls only.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sipp >/dev/null || { echo "install SIPp: apt-get install -y sip-tester" >&2; exit 1; }
calls=${1:-4000}; hold=${2:-60}; rate=${RATE:-200}
ramp=$(( calls / rate + 2 ))
measure=$(( hold - ramp - 5 ))
[ "$measure" -ge 10 ] || { echo "HOLD_SECS too short for the ramp ($ramp s)" >&2; exit 1; }

stream=${STREAM:-0}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
  cargo build --release --quiet --bin crossline --example rtp_probe --example stream_echo_agent
fi
bin=${CARGO_TARGET_DIR:-target}/release
gateway=${CROSSLINE_BIN:-$bin/crossline}
work=$(mktemp -d)
agent=""
trap 'kill $gw $probe $agent 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(( 41000 + RANDOM % 5000 )); probe_port=$(( port + 500 )); http_port=$(( port + 700 ))
agent_port=$(( port + 900 ))
flow=hold
mkdir -p "$work/flows"
if [ "${SPEECH:-0}" = 1 ]; then
  # Every call sits in a speech gather whose prompt is speech; the probe
  # echoes it back, so the caller "speaks" over it (barge-in), then the
  # silence ends the utterance, the stand-in answers "agent" and the gather
  # starts again: recognitions back to back on every call.
  stream=1
  flow=menu
  espeak-ng -v en-us -s 150 -w "$work/said.wav" "I would like to talk to an agent please"
  cat >"$work/flows/menu.toml" <<FLOW
name = "menu"
[[nodes]]
id = "menu"
type = "gather"
input = "speech"
prompt_file = "$work/said.wav"
timeout_secs = 5
speech_timeout_secs = 0.5
retries = 0
grammar = { agent = ["agent"] }
branches = { agent = "menu" }
on_failure = "menu"
FLOW
  asr_section="[asr]
provider = \"websocket\"
url = \"ws://127.0.0.1:$agent_port/asr\""
elif [ "${QUEUE:-0}" = 1 ]; then
  command -v espeak-ng >/dev/null || { echo "install espeak-ng: apt-get install -y espeak-ng" >&2; exit 1; }
  flow=waiting
  cat >"$work/flows/waiting.toml" <<FLOW
name = "waiting"
[[nodes]]
id = "wait"
type = "queue"
queue = "bench"
FLOW
  queue_section="[[queues]]
name = \"bench\"
agents = [{ target = \"sip:agent@127.0.0.1:9\" }]
announce_interval_secs = ${QUEUE_ANNOUNCE_SECS:-10}
max_wait_secs = 86400"
elif [ "$stream" = 1 ]; then
  flow=agent
  cat >"$work/flows/agent.toml" <<FLOW
name = "agent"
[[nodes]]
id = "agent"
type = "stream"
url = "ws://127.0.0.1:$agent_port/media"
FLOW
fi
if [ "$stream" = 1 ]; then
  ulimit -n 65536 2>/dev/null || true
  "$bin/examples/stream_echo_agent" "$agent_port" >"$work/agent.txt" &
  agent=$!
fi
cat >"$work/crossline.toml" <<TOML
[sip]
udp = ["127.0.0.1:$port"]
tcp = []
[media]
rtp_port_min = 10000
rtp_port_max = 39999
rtp_timeout_secs = 0
audio_threads = ${AUDIO_THREADS:-0}
overload_threshold_percent = ${OVERLOAD_THRESHOLD:-0}
${RAW_SEND:+raw_send = $RAW_SEND}
${MAX_SLEEP_US:+loop_max_sleep_us = $MAX_SLEEP_US}
audio_dir = "$PWD/audio"
[http]
listen = "127.0.0.1:$http_port"
operator_token = "rtp-load-operator"
[tts]
cache_dir = ""
[store]
sqlite_path = "$work/crossline.db"
${asr_section:-}
[logging]
level = "warn"
[flows]
dir = "$work/flows"
[recording]
recordings_dir = "$work/recs"
format = "${RECORD_FORMAT:-wav}"
channels = "${RECORD_CHANNELS:-dual}"
[[routes]]
flow = "$flow"
record = $( [ "${RECORD:-0}" = 1 ] && echo true || echo false )
${queue_section:-}
TOML
ulimit -n 65536 2>/dev/null || true
"$gateway" run --config "$work/crossline.toml" 2>"$work/gw.log" &
gw=$!
sleep 1
rss_kb() { awk '/VmRSS/{print $2}' "/proc/$gw/status"; }
if [ "${QUEUE:-0}" = 1 ]; then  # every agent busy: callers wait
  curl -sf -o /dev/null -H "Authorization: Bearer rtp-load-operator" -H "Content-Type: application/json" \
    -d '{"target":"sip:agent@127.0.0.1:9","state":"paused"}' "http://127.0.0.1:$http_port/v1/agents/state" \
    || { echo "could not pause the queue's agent" >&2; exit 1; }
fi
idle_rss=$(rss_kb)

[ "$stream" = 1 ] && export RTP_PROBE_ECHO=1
"$bin/examples/rtp_probe" "$probe_port" "$ramp" "$measure" >"$work/probe.txt" &
probe=$!
(cd "$work" && timeout $(( hold + ramp + 60 )) sipp -sf "$OLDPWD/benches/uac_hold.xml" "127.0.0.1:$port" \
   -key probe_port "$probe_port" -r "$rate" -m "$calls" -l "$calls" -d $(( hold * 1000 )) \
   -p $(( port + 1 )) -i 127.0.0.1 -nostdin -trace_stat -fd 5 -max_socket 4096 >/dev/null 2>&1) &
sipp_pid=$!

# Plateau: all calls up. Sample CPU per core and crossline's CPU over it.
sleep "$ramp"
# Per core: busy and idle ticks, and steal: time a VM's vCPU was ready
# but its host ran something else (late wake-ups follow it).
cpu_snap() { awk '/^cpu[0-9]/{print $1, $2+$3+$4+$6+$7+$8, $5, $9}' /proc/stat; }
gw_ticks() { awk '{print $14+$15}' "/proc/$gw/stat"; }
io_written() { awk '/^write_bytes/{print $2}' "/proc/$gw/io"; }
rtp_counts() {  # packets sent and received, and late loop wake-ups, so far
  curl -s "http://127.0.0.1:$http_port/metrics" |
    awk '$1=="crossline_rtp_packets_sent_total"{s=$2} $1=="crossline_rtp_packets_received_total"{r=$2}
         $1=="crossline_audio_late_wakeups_total"{w=$2} END{print s+0, r+0, w+0}'
}
read -r sent0 recv0 wake0 < <(rtp_counts)
agent_ticks() { [ -n "$agent" ] && awk '{print $14+$15}' "/proc/$agent/stat" || echo 0; }
a=$(cpu_snap); g0=$(gw_ticks); w0=$(io_written); t0=$(date +%s.%N); ag0=$(agent_ticks)
if [ -n "${PERF_DATA:-}" ]; then  # profile crossline over the plateau
  command -v perf >/dev/null || { echo "install perf: apt-get install -y linux-perf" >&2; exit 1; }
  mkdir -p "$PERF_DATA"
  perf record -q -F 499 -g -p "$gw" -o "$PERF_DATA/perf-$calls.data" 2>/dev/null &
  perf_pid=$!
fi
# Signalling under load: 50 OPTIONS, 100 ms apart, timed at the sender.
python3 - "$port" >"$work/options.txt" <<'PY' &
import socket, sys, time
port = int(sys.argv[1]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0)); s.settimeout(2.0); me = s.getsockname()[1]
rtts, codes = [], {}
for i in range(50):
    msg = (f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKbench{i}\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=b{i}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
           f"Call-ID: bench-options-{i}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
    t = time.monotonic(); s.sendto(msg, ("127.0.0.1", port))
    try:
        code = s.recv(65535)[8:11].decode(); rtts.append((time.monotonic() - t) * 1000)
    except socket.timeout:
        code = "timeout"
    codes[code] = codes.get(code, 0) + 1
    time.sleep(0.1)
rtts.sort()
pick = lambda q: rtts[min(len(rtts) - 1, int(q * len(rtts)))] if rtts else float("nan")
print(f"options answers={codes} rtt_ms p50={pick(0.5):.2f} p99={pick(0.99):.2f} max={pick(1.0):.2f}")
PY
sleep "$measure"
b=$(cpu_snap); g1=$(gw_ticks); w1=$(io_written); t1=$(date +%s.%N); ag1=$(agent_ticks)
if [ -n "${PERF_DATA:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
read -r sent1 recv1 wake1 < <(rtp_counts)
plateau_rss=$(rss_kb)
metrics=$(curl -s "http://127.0.0.1:$http_port/metrics" 2>/dev/null || true)
echo "$metrics" | grep -E "^crossline_audio|^crossline_rtp_send_errors|^crossline_overload|^crossline_calls_refused|^crossline_recording|^crossline_media_stream|^crossline_asr|^crossline_queue|^crossline_tts" || true
active=$(echo "$metrics" | awk '/^crossline_calls_active /{print $2}')
active=${active:-$calls}
[ "${active%.*}" -gt 0 ] 2>/dev/null || active=$calls
wait "$probe" || true
hz=$(getconf CLK_TCK)
echo "calls=$calls rate=$rate hold=${hold}s plateau=${measure}s"
paste <(echo "$a") <(echo "$b") | awk '{busy=$6-$2; idle=$7-$3; steal=$8-$4; t=busy+idle+steal;
  printf "cpu %s busy=%.1f%% steal=%.1f%%\n", $1, 100*busy/(busy+idle), 100*steal/t}'
echo "cpu_steal_pct=$(paste <(echo "$a") <(echo "$b") |
  awk '{s+=$8-$4; t+=($6-$2)+($7-$3)+($8-$4)} END{printf "%.1f", t ? 100*s/t : 0}')"
echo "crossline_cpu_pct_of_one_core=$(echo "($g1-$g0)/$hz/($t1-$t0)*100" | bc -l | xargs printf '%.1f')"
echo "calls_active_at_plateau=${active%.*}"
echo "rtp_sent_per_s=$(echo "($sent1-$sent0)/($t1-$t0)" | bc -l | xargs printf '%.0f') rtp_received_per_s=$(echo "($recv1-$recv0)/($t1-$t0)" | bc -l | xargs printf '%.0f')"
[ "$sent1" != "$sent0" ] && echo "crossline_cpu_us_per_rtp_packet_sent=$(echo "($g1-$g0)/$hz*1000000/($sent1-$sent0)" | bc -l | xargs printf '%.2f')"
# A loop woken over 1 ms late sends a whole sub-tick's streams late: the
# system's scheduling (a VM's vCPU), not the loop's work.
echo "late_wakeups_during_plateau=$(( ${wake1%.*} - ${wake0%.*} ))"
echo "rss_idle_kb=$idle_rss rss_plateau_kb=$plateau_rss rss_per_call_kb=$(( (plateau_rss - idle_rss) / ${active%.*} ))"
echo "disk_written_mb_per_s=$(echo "($w1-$w0)/1048576/($t1-$t0)" | bc -l | xargs printf '%.2f')"
cat "$work/probe.txt"
if [ -n "$agent" ]; then
  echo "agent: $(tail -n 1 "$work/agent.txt")"
  echo "agent_cpu_pct_of_one_core=$(echo "($ag1-$ag0)/$hz/($t1-$t0)*100" | bc -l | xargs printf '%.1f')"
fi
[ -s "$work/options.txt" ] && cat "$work/options.txt"
wait "$sipp_pid" || true
stat() { awk -F';' -v col="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==col) c=i} END{print $c}' "$work"/*_.csv 2>/dev/null || echo "?"; }
echo "sipp_successful_calls=$(stat 'SuccessfulCall(C)') sipp_failed_calls=$(stat 'FailedCall(C)')"
