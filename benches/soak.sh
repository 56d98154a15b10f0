#!/usr/bin/env bash
# Soak: many short calls in waves, to see whether memory, tasks or file
# descriptors pile up, and whether memory goes back once the calls are over.
#
#   benches/soak.sh [CALLS] [WAVES]          default 100000 10
#
# A release crossline answers every call with the demo flow (200 with SDP,
# then G.711 RTP from the audio loop until BYE); SIPp's built-in uac places
# CALLS/WAVES calls per wave at RATE per second (default 1000), each held
# HOLD_MS (default 1000), with PAUSE seconds (default 10) between waves and
# AFTER seconds (default 60) of quiet at the end. Every second it samples
# crossline's RSS (VmRSS, and RssAnon), threads, open fds, tokio tasks
# alive (crossline_runtime_tasks_alive), calls up (crossline_calls_active)
# and the allocator's live and resident bytes (crossline_allocator_*; 0
# with the system malloc), into $OUT/soak.csv, and draws $OUT/soak.svg.
#
# Env: OUT (default target/soak), RATE, HOLD_MS, PAUSE, AFTER, SETTLE (s
# from start to the first idle sample, default 15),
# CROSSLINE_BIN (a prebuilt binary; skips the build), and PRELOAD (a
# malloc to LD_PRELOAD, e.g. /usr/lib/x86_64-linux-gnu/libjemalloc.so.2,
# to compare allocators without a rebuild; MALLOC_CONF and friends pass
# through).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v sipp >/dev/null || { echo "install SIPp: apt-get install -y sip-tester" >&2; exit 1; }
calls=${1:-100000}; waves=${2:-10}
rate=${RATE:-1000}; hold=${HOLD_MS:-1000}; pause=${PAUSE:-10}; after=${AFTER:-60}
per_wave=$(( calls / waves ))
out=${OUT:-target/soak}; mkdir -p "$out"

bin=${CROSSLINE_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet --bin crossline
  bin=${CARGO_TARGET_DIR:-target}/release/crossline
fi
work=$(mktemp -d)
trap 'kill $gw $sampler 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(( 42000 + RANDOM % 8000 )); http_port=$(( port + 700 ))
cat >"$work/crossline.toml" <<TOML
[sip]
udp = ["127.0.0.1:$port"]
tcp = []
[media]
rtp_port_min = 10000
rtp_port_max = 39999
rtp_timeout_secs = 0
audio_dir = "$PWD/audio"
[http]
listen = "127.0.0.1:$http_port"
[store]
sqlite_path = "$work/crossline.db"
[logging]
level = "warn"
[[routes]]
flow = "demo"
TOML
ulimit -n 65536 2>/dev/null || true
LD_PRELOAD=${PRELOAD:-} "$bin" run --config "$work/crossline.toml" 2>"$work/gw.log" &
gw=$!
# Idle is sampled once start-up's freed memory has gone back (jemalloc
# returns freed pages after 10 s): earlier samples read 2-3 MB high.
sleep "${SETTLE:-15}"

metric() {  # the first sample of metric $1 in /metrics text $2, 0 if absent
  awk -v m="$1" '$1==m{printf "%.0f\n", $2; f=1; exit} END{if(!f) print 0}' <<<"$2"
}
phase=idle
echo idle >"$work/phase"
sample() {
  local t0; t0=$(date +%s.%N)
  echo "t_s,phase,rss_kb,rss_anon_kb,threads,fds,tasks,calls_active,alloc_kb,alloc_resident_kb" >"$out/soak.csv"
  while kill -0 "$gw" 2>/dev/null; do
    local st m; st=$(cat "/proc/$gw/status"); m=$(curl -s "http://127.0.0.1:$http_port/metrics")
    printf '%.1f,%s,%s,%s,%s,%s,%s,%s,%s,%s\n' \
      "$(echo "$(date +%s.%N) - $t0" | bc -l)" "$(cat "$work/phase")" \
      "$(awk '/^VmRSS/{print $2}' <<<"$st")" "$(awk '/^RssAnon/{print $2}' <<<"$st")" \
      "$(awk '/^Threads/{print $2}' <<<"$st")" "$(ls "/proc/$gw/fd" | wc -l)" \
      "$(metric crossline_runtime_tasks_alive "$m")" "$(metric crossline_calls_active "$m")" \
      "$(( $(metric crossline_allocator_allocated_bytes "$m") / 1024 ))" \
      "$(( $(metric crossline_allocator_resident_bytes "$m") / 1024 ))" >>"$out/soak.csv"
    sleep 1
  done
}
sample &
sampler=$!
sleep 10

failed_total=0
for w in $(seq 1 "$waves"); do
  echo "wave$w" >"$work/phase"
  (cd "$work" && rm -f ./*_.csv && timeout $(( per_wave / rate + 120 )) sipp -sn uac "127.0.0.1:$port" \
      -r "$rate" -m "$per_wave" -l $(( rate * (hold / 1000 + 3) )) -d "$hold" \
      -p $(( port + 1 )) -mp $(( port + 10 )) -i 127.0.0.1 -nostdin -trace_stat -fd 1 \
      -max_socket 2048 >/dev/null 2>&1) || true
  stat=$(ls "$work"/*_.csv | head -1)
  failed=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="FailedCall(C)") c=i} END{print $c}' "$stat")
  ok=$(awk -F';' 'NR==1{for(i=1;i<=NF;i++) if($i=="SuccessfulCall(C)") c=i} END{print $c}' "$stat")
  failed_total=$(( failed_total + failed ))
  echo "wave $w: $ok ok, $failed failed, RSS $(awk '/^VmRSS/{print $2}' "/proc/$gw/status") kB" >&2
  echo "pause$w" >"$work/phase"
  sleep "$pause"
done
echo after >"$work/phase"
sleep "$after"
kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true

# Summary: idle (median of the idle samples), peak, the last wave's
# median while calls are up, and the last sample, AFTER s after the end.
csv=$out/soak.csv
median() { sort -n | awk '{a[NR]=$1} END{print (NR ? a[int((NR+1)/2)] : 0)}'; }
last_wave=$(awk -F, '$2 ~ /^wave/ && $8>0 {w=$2} END{print w}' "$csv")
idle=$(awk -F, '$2=="idle"{print $3}' "$csv" | median)
plateau=$(awk -F, -v w="$last_wave" '$2==w && $8>0 {print $3}' "$csv" | median)
awk -F, -v failed="$failed_total" -v calls="$calls" -v idle="$idle" -v plateau="$plateau" -v after="$after" '
  NR==1 {next}
  $2=="idle" {it=$7; ith=$5; ifd=$6; ial=$9; ires=$10}
  $2 ~ /^wave/ && $8>0 {if($3>peak) peak=$3; if($8>maxcalls) maxcalls=$8}
  {last=$3; lt=$7; lth=$5; lfd=$6; lal=$9; lres=$10}
  END {
    printf "calls %d, failed %d\n", calls, failed
    printf "RSS idle %.1f MB, peak %.1f MB, last wave median %.1f MB, %d s after the last wave %.1f MB (%+.1f MB over idle)\n", idle/1024, peak/1024, plateau/1024, after, last/1024, (last-idle)/1024
    printf "RSS per call up at the peak: %.1f KB (%d calls up)\n", (peak-idle)/(maxcalls>0?maxcalls:1), maxcalls
    printf "threads %d -> %d, fds %d -> %d, tokio tasks %d -> %d\n", ith, lth, ifd, lfd, it, lt
    if (ial > 0) printf "allocator: live %.1f -> %.1f MB, resident %.1f -> %.1f MB\n", ial/1024, lal/1024, ires/1024, lres/1024
  }' "$csv" | tee "$out/summary.txt"

# The plot: RSS (MB) and calls up against time, one SVG, no dependencies.
awk -F, '
  NR==1 {next}
  {t[++n]=$1; r[n]=$3/1024; c[n]=$8; if($1>tmax) tmax=$1; if(r[n]>rmax) rmax=r[n]; if($8>cmax) cmax=$8}
  END {
    W=800; H=400; L=70; R=70; T=30; B=50; pw=W-L-R; ph=H-T-B
    rtop=(int(rmax/20)+1)*20; ctop=(cmax>0)?(int(cmax/500)+1)*500:1
    printf "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\" font-size=\"12\">\n", W, H
    printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
    printf "<text x=\"%d\" y=\"18\" text-anchor=\"middle\" font-size=\"14\">crossline soak: RSS and calls up over time</text>\n", W/2
    printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, T+ph, L+pw, T+ph
    printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L, T, L, T+ph
    printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", L+pw, T, L+pw, T+ph
    for(i=0;i<=5;i++){ y=T+ph-ph*i/5
      printf "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L, y, L+pw, y
      printf "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\" fill=\"#c00\">%g</text>\n", L-6, y+4, rtop*i/5
      printf "<text x=\"%d\" y=\"%.1f\" fill=\"#06c\">%g</text>\n", L+pw+6, y+4, ctop*i/5 }
    for(i=0;i<=5;i++){ x=L+pw*i/5
      printf "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%d</text>\n", x, T+ph+18, tmax*i/5 }
    printf "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">time (s)</text>\n", L+pw/2, H-8
    printf "<text x=\"16\" y=\"%d\" fill=\"#c00\" transform=\"rotate(-90 16 %d)\" text-anchor=\"middle\">RSS (MB)</text>\n", T+ph/2, T+ph/2
    printf "<text x=\"%d\" y=\"%d\" fill=\"#06c\" transform=\"rotate(90 %d %d)\" text-anchor=\"middle\">calls up</text>\n", W-14, T+ph/2, W-14, T+ph/2
    printf "<polyline fill=\"none\" stroke=\"#06c\" stroke-width=\"1\" points=\""
    for(i=1;i<=n;i++) printf "%.1f,%.1f ", L+pw*t[i]/tmax, T+ph-ph*c[i]/ctop
    printf "\"/>\n<polyline fill=\"none\" stroke=\"#c00\" stroke-width=\"2\" points=\""
    for(i=1;i<=n;i++) printf "%.1f,%.1f ", L+pw*t[i]/tmax, T+ph-ph*r[i]/rtop
    printf "\"/>\n</svg>\n"
  }' "$out/soak.csv" >"$out/soak.svg"
echo "samples: $out/soak.csv, plot: $out/soak.svg" >&2
