#!/usr/bin/env bash
# Smoke test for deploy/kamailio/kamailio.cfg, on loopback only.
#
# Starts Kamailio on 127.0.0.1:$LB_PORT in front of two SIP backends, then:
#   1. OPTIONS to the proxy itself is answered 200;
#   2. $CALLS calls (UDP) are spread over both backends, and a few over TCP
#      (double Record-Route) succeed too;
#   3. backend B is killed and $FAILOVER_CALLS calls are placed at once: the
#      ones sent to B before it is detected fail over to A (none may fail);
#   4. once B is marked down, $FAILOVER_CALLS calls all go to A;
#   with SIPp backends only:
#   5. B comes back refusing INVITEs with 503 while its pings still answer
#      200 (the window before a drain is noticed): every call succeeds, on A;
#   6. B comes back healthy: calls spread over both again;
#   7. B dies with no traffic: the OPTIONS pings alone mark it down.
#
# Backends: by default two SIPp UASes the script starts itself. For real
# crossline nodes, start them first (SIP on 127.0.0.1:$BACKEND_A_PORT and
# 127.0.0.1:$BACKEND_B_PORT, routes that answer calls, e.g. the demo flow) and
# run with START_BACKENDS=0 KILL_PID=<pid of the node on BACKEND_B_PORT>.
# Without KILL_PID, phases 3 and 4 are skipped. KILL_SIGNAL=TERM makes B
# drain instead of die: crossline answers OPTIONS 503 while draining, so
# Kamailio keeps it out as if it had died.
#
# Environment (defaults):
#   LB_PORT=5070 BACKEND_A_PORT=5060 BACKEND_B_PORT=5062 UAC_PORT=5090
#   UAC_MEDIA_PORT=16020
#   CALLS=20 FAILOVER_CALLS=10 TCP_CALLS=4 RATE=10 (calls/s) HOLD_MS=500
#   PING_INTERVAL=2 (s) START_BACKENDS=1 KILL_PID= KILL_SIGNAL=KILL
#   KAMAILIO=kamailio KAMCMD=kamcmd SIPP=sipp KEEP_TMP=0
#
# Exits 0 when every check passes, 1 otherwise (the temp dir with the logs is
# kept on failure).
set -euo pipefail

HOST=127.0.0.1
LB_PORT=${LB_PORT:-5070}
BACKEND_A_PORT=${BACKEND_A_PORT:-5060}
BACKEND_B_PORT=${BACKEND_B_PORT:-5062}
UAC_PORT=${UAC_PORT:-5090}
UAC_MEDIA_PORT=${UAC_MEDIA_PORT:-16020}
CALLS=${CALLS:-20}
FAILOVER_CALLS=${FAILOVER_CALLS:-10}
TCP_CALLS=${TCP_CALLS:-4}
RATE=${RATE:-10}
HOLD_MS=${HOLD_MS:-500}
PING_INTERVAL=${PING_INTERVAL:-2}
START_BACKENDS=${START_BACKENDS:-1}
KILL_PID=${KILL_PID:-}
KILL_SIGNAL=${KILL_SIGNAL:-KILL}
KAMAILIO=${KAMAILIO:-kamailio}
KAMCMD=${KAMCMD:-kamcmd}
SIPP=${SIPP:-sipp}
KEEP_TMP=${KEEP_TMP:-0}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CFG=$HERE/kamailio.cfg
TMP=$(mktemp -d /tmp/crossline-lb-smoke.XXXXXX)
CTL=unixs:$TMP/kamailio_ctl
KLOG=$TMP/kamailio.log
A=$HOST:$BACKEND_A_PORT
B=$HOST:$BACKEND_B_PORT

KAM_PID=
UAS_A_PID=
UAS_B_PID=
FAILED=0
SUMMARY=()

log() { printf '[smoke] %s\n' "$*"; }
fail() {
    log "FAIL: $*"
    FAILED=1
    SUMMARY+=("FAIL  $*")
}
pass() {
    log "ok: $*"
    SUMMARY+=("ok    $*")
}
die() {
    fail "$*"
    exit 1
}
check() { # truth (an arithmetic result: 1 or 0), message if true, message if false
    if (($1)); then pass "$2"; else fail "$3"; fi
}

stop_pid() { # pid: TERM, then KILL after 5 s
    local pid=$1
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    local rc=$?
    stop_pid "$UAS_A_PID"
    stop_pid "$UAS_B_PID"
    stop_pid "$KAM_PID"
    if [[ -n $KAM_PID ]]; then wait "$KAM_PID" 2>/dev/null || true; fi
    if ((${#SUMMARY[@]})); then
        echo
        echo "=============== summary ==============="
        printf '%s\n' "${SUMMARY[@]}"
    fi
    if ((rc != 0 || FAILED)); then
        echo "RESULT: FAIL (logs kept in $TMP)"
        exit 1
    fi
    echo "RESULT: PASS"
    if [[ $KEEP_TMP == 1 ]]; then
        echo "(logs kept in $TMP)"
    else
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM

for p in "$LB_PORT" "$BACKEND_A_PORT" "$BACKEND_B_PORT" "$UAC_PORT"; do
    if ! [[ $p =~ ^[0-9]+$ ]] || ((p < 1 || p > 65535)); then die "bad port: $p"; fi
done
command -v "$KAMAILIO" >/dev/null || die "kamailio not found (apt-get install kamailio)"
command -v "$KAMCMD" >/dev/null || die "kamcmd not found (part of the kamailio package)"
command -v "$SIPP" >/dev/null || die "sipp not found (apt-get install sip-tester)"

port_busy() { # port: is something listening on UDP 127.0.0.1:port?
    ss -Hlun "sport = :$1" 2>/dev/null | grep -q .
}
for p in "$LB_PORT" "$UAC_PORT"; do
    port_busy "$p" && die "UDP port $p is already in use"
done
if [[ $START_BACKENDS == 1 ]]; then
    for p in "$BACKEND_A_PORT" "$BACKEND_B_PORT"; do
        port_busy "$p" && die "UDP port $p is already in use (START_BACKENDS=0 to use running nodes)"
    done
fi

cd "$TMP"

# ---------------------------------------------------------------- scenarios
# The UAC follows the Record-Route set (SIPp's built-in uac does not), so ACK
# and BYE go through the proxy as a carrier's would.
cat >uac.xml <<'EOF'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac through a proxy">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
Subject: crossline-lb smoke
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 8
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="true" rrs="true"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
[routes]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
[routes]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>
</scenario>
EOF

cat >options.xml <<'EOF'
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="OPTIONS to the proxy">
  <send retrans="500"><![CDATA[
OPTIONS sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:monitor@[local_ip]:[local_port]>;tag=[pid]mon[call_number]
To: <sip:[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 OPTIONS
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
EOF

# Backend UAS: copies Record-Route into its responses like any real UA
# (SIPp's built-in uas does not). OPTIONS pings get 200 through -aa.
uas_xml() { # status reason: the final response to INVITE
    local status=$1 reason=$2
    cat <<EOF
<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas $status">
  <recv request="INVITE" crlf="true"/>
EOF
    if [[ $status == 200 ]]; then
        cat <<'EOF'
  <send><![CDATA[
SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Content-Type: application/sdp
Content-Length: [len]

v=0
o=sipp 1 1 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <timewait milliseconds="1000"/>
</scenario>
EOF
    else
        cat <<EOF
  <send retrans="500"><![CDATA[
SIP/2.0 $status $reason
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
Retry-After: 60
Content-Length: 0

]]></send>
  <recv request="ACK"/>
</scenario>
EOF
    fi
}
uas_xml 200 OK >uas.xml
uas_xml 503 "Service Unavailable" >uas-draining.xml

# ---------------------------------------------------------------- helpers
STARTED_PID=
start_uas() { # name port scenario media_port: sets STARTED_PID
    local out
    out=$("$SIPP" -sf "$3" -i "$HOST" -p "$2" -mp "$4" -bg -aa \
        -trace_stat -stf "$TMP/uas-$1.csv" -fd 1 \
        -trace_err -error_file "$TMP/uas-$1.err" 2>&1) || true
    [[ $out =~ PID=\[([0-9]+)\] ]] || die "SIPp UAS $1 on port $2 did not start: $out"
    STARTED_PID=${BASH_REMATCH[1]}
}

stat_col() { # csv column: that column of the last row of a SIPp stat file
    [[ -f $1 ]] || { echo 0; return; }
    awk -F';' -v col="$2" 'NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) c = i } END { print (c ? $c : 0) }' "$1"
}

UAC_OK=0
UAC_FAILED=0
run_uac() { # name calls [extra sipp args...]: sets UAC_OK / UAC_FAILED
    local name=$1 calls=$2
    shift 2
    "$SIPP" -sf uac.xml "$HOST:$LB_PORT" -i "$HOST" -p "$UAC_PORT" -mp "$UAC_MEDIA_PORT" \
        -m "$calls" -r "$RATE" -d "$HOLD_MS" -timeout 90s -nostdin \
        -trace_stat -stf "$TMP/uac-$name.csv" \
        -trace_err -error_file "$TMP/uac-$name.err" "$@" \
        </dev/null >"$TMP/uac-$name.out" 2>&1 || true
    UAC_OK=$(stat_col "$TMP/uac-$name.csv" 'SuccessfulCall(C)')
    UAC_FAILED=$(stat_col "$TMP/uac-$name.csv" 'FailedCall(C)')
}

klog_mark() { wc -l <"$KLOG"; }

answered_by() { # since_line backend: calls answered (2xx) by backend since the mark
    tail -n +"$(($1 + 1))" "$KLOG" | { grep -o "answered [^ ]* by [^ ]*" || true; } | sort -u |
        awk -v b="$2" '$4 == b { n++ } END { print n + 0 }'
}

failovers_since() { # since_line: INVITEs moved to the next node since the mark
    tail -n +"$(($1 + 1))" "$KLOG" | grep -c "<script>: node .* failed " || true
}

node_flags() { # backend -> dispatcher flags (AP active, IP inactive, TP trying...)
    { "$KAMCMD" -s "$CTL" dispatcher.list 2>/dev/null || true; } |
        awk -v u="sip:$1" '$1 == "URI:" { cur = $2 } $1 == "FLAGS:" && cur == u { print $2 }'
}

wait_flags() { # backend regex seconds
    local deadline=$((SECONDS + $3)) f
    while ((SECONDS < deadline)); do
        f=$(node_flags "$1")
        [[ $f =~ $2 ]] && return 0
        sleep 0.2
    done
    return 1
}

wait_uas_total() { # expected seconds: wait for the SIPp UAS stat files to add up
    local deadline=$((SECONDS + $2)) a b
    while ((SECONDS < deadline)); do
        a=$(stat_col "$TMP/uas-a.csv" 'SuccessfulCall(C)')
        b=$(stat_col "$TMP/uas-b.csv" 'SuccessfulCall(C)')
        ((a + b >= $1)) && break
        sleep 0.5
    done
    echo "$a $b"
}

# ---------------------------------------------------------------- start
if [[ $START_BACKENDS == 1 ]]; then
    start_uas a "$BACKEND_A_PORT" uas.xml 16000
    UAS_A_PID=$STARTED_PID
    start_uas b "$BACKEND_B_PORT" uas.xml 16010
    UAS_B_PID=$STARTED_PID
    log "SIPp UAS A on $A (pid $UAS_A_PID), B on $B (pid $UAS_B_PID)"
else
    log "using running backends on $A and $B"
fi

cat >dispatcher.list <<EOF
1 sip:$A 0 0 duid=node-a
1 sip:$B 0 0 duid=node-b
EOF

KAM_ARGS=(-f "$CFG" -Y "$TMP" -w "$TMP" -m 64 -M 8
    -A "LISTEN_IP=$HOST" -A "LISTEN_PORT=$LB_PORT"
    -A "DS_LIST=\"$TMP/dispatcher.list\"" -A "DS_PING_INTERVAL=$PING_INTERVAL"
    -A "CTL_SOCK=\"$CTL\"")
"$KAMAILIO" -c "${KAM_ARGS[@]}" >"$TMP/kamailio-check.log" 2>&1 ||
    { cat "$TMP/kamailio-check.log"; die "kamailio -c rejected $CFG"; }
pass "kamailio -c accepts kamailio.cfg"

"$KAMAILIO" "${KAM_ARGS[@]}" -DD -E -P "$TMP/kamailio.pid" >"$KLOG" 2>&1 &
KAM_PID=$!
log "kamailio on $HOST:$LB_PORT (udp+tcp), pid $KAM_PID"

# Both nodes must have answered their pings (A = active, P = probed).
for n in "$A" "$B"; do
    wait_flags "$n" '^AP$' 15 || die "node $n not up in kamailio (flags: $(node_flags "$n"))"
done
pass "both nodes up in dispatcher (OPTIONS pings answered)"

# ---------------------------------------------------------------- 1. OPTIONS
if "$SIPP" -sf options.xml "$HOST:$LB_PORT" -i "$HOST" -p "$UAC_PORT" -m 1 -timeout 10s \
    -nostdin </dev/null >"$TMP/options.out" 2>&1; then
    pass "OPTIONS to the proxy: 200"
else
    fail "OPTIONS to the proxy was not answered 200"
fi

# ---------------------------------------------------------------- 2. spread
mark=$(klog_mark)
run_uac spread "$CALLS"
na=$(answered_by "$mark" "$A")
nb=$(answered_by "$mark" "$B")
log "spread: $UAC_OK ok, $UAC_FAILED failed; answered by A: $na, by B: $nb"
check $((UAC_OK == CALLS && na + nb == CALLS && na >= CALLS / 4 && nb >= CALLS / 4)) \
    "spread: $CALLS/$CALLS calls ok, A answered $na, B answered $nb" \
    "spread: $UAC_OK/$CALLS ok, A answered $na, B answered $nb"
if [[ $START_BACKENDS == 1 ]]; then
    read -r sa sb < <(wait_uas_total "$CALLS" 10)
    log "spread: UAS stat files: A completed $sa calls, B $sb"
    check $((sa == na && sb == nb)) "spread: UAS stats agree (A $sa, B $sb)" \
        "spread: UAS stats (A $sa, B $sb) differ from kamailio's log (A $na, B $nb)"
fi

mark=$(klog_mark)
run_uac tcp "$TCP_CALLS" -t t1
check $((UAC_OK == TCP_CALLS)) "tcp: $TCP_CALLS/$TCP_CALLS calls ok over TCP (UDP to the nodes)" \
    "tcp: $UAC_OK/$TCP_CALLS ok over TCP"

# ---------------------------------------------------------------- 3. kill B
victim=${UAS_B_PID:-$KILL_PID}
if [[ $START_BACKENDS != 1 && -z $KILL_PID ]]; then
    log "no KILL_PID: failover phases skipped"
else
    kill -s "$KILL_SIGNAL" "$victim"
    t_kill=$SECONDS
    log "killed backend B (pid $victim, SIG$KILL_SIGNAL); placing $FAILOVER_CALLS calls at once"
    mark=$(klog_mark)
    run_uac detect "$FAILOVER_CALLS"
    na=$(answered_by "$mark" "$A")
    nf=$(failovers_since "$mark")
    log "during detection: $UAC_OK ok, $UAC_FAILED failed; $nf INVITEs sent to B failed over to A"
    check $((UAC_OK == FAILOVER_CALLS && na == FAILOVER_CALLS)) \
        "during detection: $FAILOVER_CALLS/$FAILOVER_CALLS ok, $nf of them failed over from B to A" \
        "during detection: $UAC_OK/$FAILOVER_CALLS ok ($UAC_FAILED failed), A answered $na"

    # ------------------------------------------------------------ 4. B down
    wait_flags "$B" '^I' $((PING_INTERVAL * 3 + 5)) ||
        fail "B not marked inactive (flags: $(node_flags "$B"))"
    log "B is $(node_flags "$B") in dispatcher, $((SECONDS - t_kill)) s after the kill"
    sleep "$PING_INTERVAL"
    mark=$(klog_mark)
    run_uac survivor "$FAILOVER_CALLS"
    na=$(answered_by "$mark" "$A")
    nf=$(failovers_since "$mark")
    check $((UAC_OK == FAILOVER_CALLS && na == FAILOVER_CALLS && nf == 0)) \
        "after detection: $FAILOVER_CALLS/$FAILOVER_CALLS ok, all on A, none sent to B" \
        "after detection: $UAC_OK/$FAILOVER_CALLS ok, A answered $na, $nf sent to B first"
    UAS_B_PID=
fi

if [[ $START_BACKENDS == 1 ]]; then
    # -------------------------------------------------------- 5. B draining
    start_uas b-draining "$BACKEND_B_PORT" uas-draining.xml 16010
    UAS_B_PID=$STARTED_PID
    wait_flags "$B" '^AP$' $((PING_INTERVAL * 3 + 5)) || fail "draining B not back in dispatcher"
    mark=$(klog_mark)
    run_uac draining "$CALLS"
    na=$(answered_by "$mark" "$A")
    nf=$(failovers_since "$mark")
    log "draining B: $UAC_OK ok, $UAC_FAILED failed; A answered $na; $nf INVITEs got 503 from B and moved to A"
    check $((UAC_OK == CALLS && na == CALLS)) \
        "B draining (503 to INVITE, 200 to OPTIONS): $CALLS/$CALLS ok on A, $nf retried after B's 503" \
        "B draining: $UAC_OK/$CALLS ok, A answered $na"
    stop_pid "$UAS_B_PID"

    # -------------------------------------------------------- 6. B back
    rm -f "$TMP/uas-b.csv"
    start_uas b "$BACKEND_B_PORT" uas.xml 16010
    UAS_B_PID=$STARTED_PID
    wait_flags "$B" '^AP$' $((PING_INTERVAL * 3 + 5)) || fail "B not back up in dispatcher"
    mark=$(klog_mark)
    run_uac recovered "$CALLS"
    na=$(answered_by "$mark" "$A")
    nb=$(answered_by "$mark" "$B")
    check $((UAC_OK == CALLS && na + nb == CALLS && nb >= CALLS / 4 && na >= CALLS / 4)) \
        "B back: $CALLS/$CALLS ok, A answered $na, B answered $nb" \
        "B back: $UAC_OK/$CALLS ok, A answered $na, B answered $nb"

    # -------------------------------------------------------- 7. pings only
    kill -KILL "$UAS_B_PID"
    UAS_B_PID=
    t0=$SECONDS
    if wait_flags "$B" '^I' $((PING_INTERVAL * 4 + 10)); then
        pass "pings alone: B marked inactive $((SECONDS - t0)) s after it died (no calls)"
    else
        fail "pings alone: B still $(node_flags "$B") $((SECONDS - t0)) s after it died"
    fi
fi

grep -E "node .* (down|up)$" "$KLOG" | sed 's/^.*<script>: /[kamailio] /' || true
exit "$FAILED"
