#!/usr/bin/env bash
# SIP setup-rate load test: crossline (release) answers with the demo flow,
# SIPp's built-in uac places calls at fixed rates on the same box.
#
#   benches/sipp-load.sh [RATE ...]        default rates: 200 500 1000
#
# Env: CALLS_PER_STEP (default 20 x rate, i.e. 20 s per step), HOLD_MS (how
# long each call stays up, default 1000), SIPP_TIMEOUT, RTT_DIR (a directory
# to keep each step's INVITE-to-200 samples in, SIPp's _rtt.csv).
# For each rate it prints: offered CPS, achieved CPS, calls ok/failed,
# SIPp retransmissions, setup time p50/p99 (INVITE to 200, from SIPp's RTD
# histogram), crossline CPU (% of one core), peak RSS, and with WIRE_RTT=1
# the setup time p50/p99 on the wire: dumpcap (Debian tshark) captures the
# INVITEs and 200s on loopback and benches/wire_rtt.py times each call by
# the kernel's timestamps. SIPp's figure holds SIPp's own queueing (and
# comes in 4 ms steps on a busy box); the wire's is the gateway's alone.
# CROSSLINE_BIN runs another build (SKIP_BUILD=1 skips cargo), for A/B runs.
# PERF_DATA=DIR records each step with `perf record` (DWARF call graphs) into
# DIR/perf-<rate>.data; `perf report -i ... --no-children` shows the top.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sipp >/dev/null || { echo "install SIPp: apt-get install -y sip-tester" >&2; exit 1; }
rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(200 500 1000)
hold=${HOLD_MS:-1000}

[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet
gateway=${CROSSLINE_BIN:-target/release/crossline}
work=$(mktemp -d)
trap 'kill $gw 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(( 40000 + RANDOM % 10000 ))
cat >"$work/crossline.toml" <<TOML
[sip]
udp = ["127.0.0.1:$port"]
tcp = []
[media]
rtp_port_min = 20000
rtp_port_max = 39999
rtp_timeout_secs = 0
audio_dir = "$PWD/audio"
[http]
listen = "127.0.0.1:$(( port + 700 ))"
[store]
sqlite_path = "$work/crossline.db"
[logging]
level = "warn"
[[routes]]
flow = "demo"
TOML
"$gateway" run --config "$work/crossline.toml" 2>"$work/gw.log" &
gw=$!
sleep 1

cpu_ticks() { awk '{print $14+$15}' "/proc/$gw/stat"; }
hz=$(getconf CLK_TCK)

wire=${WIRE_RTT:-0}
if [ "$wire" = 1 ] && ! command -v dumpcap >/dev/null; then
  echo "WIRE_RTT=1 needs dumpcap: apt-get install -y tshark" >&2; exit 1
fi
printf '%-8s %-9s %-9s %-7s %-8s %-9s %-9s %-9s %-8s %-9s %-9s\n' offered achieved ok failed retrans p50_ms p99_ms cpu_% rss_MB wire_p50 wire_p99
for rate in "${rates[@]}"; do
  calls=${CALLS_PER_STEP:-$(( rate * 20 ))}
  (cd "$work" && rm -f ./*_.csv ./*_rtt.csv)
  if [ "$wire" = 1 ]; then
    # Only INVITEs ("INVI") and 2xx ("SIP/" ... "2"), to and from the gateway.
    dumpcap -q -i lo -P -f "udp port $port and (udp[8:4]=0x494e5649 or (udp[8:4]=0x5349502f and udp[16:1]=0x32))" \
      -w "$work/sip-$rate.pcap" 2>"$work/dumpcap.log" &
    dumpcap_pid=$!
    sleep 1
  fi
  t0=$(date +%s.%N); c0=$(cpu_ticks)
  if [ -n "${PERF_DATA:-}" ]; then
    command -v perf >/dev/null || { echo "install perf: apt-get install -y linux-perf" >&2; exit 1; }
    perf record -q -F 499 --call-graph dwarf,16384 -p "$gw" -o "$PERF_DATA/perf-$rate.data" 2>/dev/null &
    perf_pid=$!
  fi
  (cd "$work" && timeout "${SIPP_TIMEOUT:-300}" sipp -sn uac "127.0.0.1:$port" -r "$rate" -m "$calls" \
      -l $(( rate * (hold / 1000 + 3) )) -d "$hold" -p $(( port + 1 )) -mp $(( port + 10 )) -i 127.0.0.1 \
      -nostdin -trace_stat -fd 1 -trace_rtt -rtt_freq 1 -max_socket 2048 -buff_size 4194304 >/dev/null 2>&1) || true
  t1=$(date +%s.%N); c1=$(cpu_ticks)
  if [ -n "${PERF_DATA:-}" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  wire_p50=-; wire_p99=-
  if [ "$wire" = 1 ]; then
    kill -INT "$dumpcap_pid"; wait "$dumpcap_pid" || true
    wire_out=$(python3 benches/wire_rtt.py "$work/sip-$rate.pcap")
    wire_p50=$(sed -n 's/.*wire_p50_ms=\([0-9.]*\).*/\1/p' <<<"$wire_out"); wire_p50=${wire_p50:--}
    wire_p99=$(sed -n 's/.*wire_p99_ms=\([0-9.]*\).*/\1/p' <<<"$wire_out"); wire_p99=${wire_p99:--}
    rm -f "$work/sip-$rate.pcap"
  fi
  stat=$(ls "$work"/*_.csv | head -1)
  col() { awk -F';' -v name="$1" 'NR==1{for(i=1;i<=NF;i++) if($i==name) c=i} END{print $c}' "$stat"; }
  ok=$(col 'SuccessfulCall(C)'); failed=$(col 'FailedCall(C)'); retrans=$(col 'Retransmissions(C)')
  elapsed=$(col 'ElapsedTime(C)')
  rtt=$(ls "$work"/*_rtt.csv | head -1)
  # scripts/bench-report.sh keeps each step's samples for its histograms.
  [ -n "${RTT_DIR:-}" ] && cp "$rtt" "$RTT_DIR/"
  # rtt.csv: Date_ms;response_time_ms;rtd_no
  read -r p50 p99 < <(awk -F';' 'NR>1{print $2}' "$rtt" | sort -n | awk '{a[NR]=$1} END{if(NR==0){print "- -"} else {print a[int(NR*0.5)+ (NR*0.5==int(NR*0.5)?0:1)], a[int(NR*0.99)+(NR*0.99==int(NR*0.99)?0:1)]}}')
  secs=$(echo "$t1 - $t0" | bc -l)
  achieved=$(echo "$ok / ($secs - $hold/1000)" | bc -l)
  cpu=$(echo "($c1 - $c0) / $hz / $secs * 100" | bc -l)
  rss=$(awk '/VmHWM/{print $2/1024}' "/proc/$gw/status")
  printf '%-8s %-9.0f %-9s %-7s %-8s %-9s %-9s %-9.0f %-8.1f %-9s %-9s\n' "$rate" "$achieved" "$ok" "$failed" "$retrans" "$p50" "$p99" "$cpu" "$rss" "$wire_p50" "$wire_p99"
  sleep 2
done
