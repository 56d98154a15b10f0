"""A PJSIP (pjsua2) caller that reports the DTMF digits it hears.

Usage: pjsua_digits.py <sip-uri> <rfc4733|info> <seconds>

Calls <sip-uri> from a null sound device, and prints one line per digit:
`digit <d> <method> <monotonic-seconds>`, then `state DISCONNECTED <code>`
when the call ends. With `info`, telephone-event is stripped from the
offer, so the far end must fall back to SIP INFO.
"""
import sys
import time

import pjsua2 as pj

import pjsua_peer

target, mode, limit = sys.argv[1], sys.argv[2], float(sys.argv[3])
METHODS = {
    pj.PJSUA_DTMF_METHOD_RFC2833: "rfc4733",
    pj.PJSUA_DTMF_METHOD_SIP_INFO: "info",
}
done = []


def say(line):
    print(line, flush=True)


class Caller(pj.Call):
    def onDtmfDigit(self, prm):
        say(f"digit {prm.digit} {METHODS.get(prm.method, prm.method)} {time.monotonic():.3f}")

    def onCallSdpCreated(self, prm):
        if mode != "info":
            return
        lines = prm.sdp.wholeSdp.split("\r\n")
        dropped = {l.split(":")[1].split()[0] for l in lines if "telephone-event" in l}
        keep = []
        for l in lines:
            if any(l.startswith(f"a={a}:{pt}") for a in ("rtpmap", "fmtp") for pt in dropped):
                continue
            if l.startswith("m=audio"):
                l = " ".join(w for w in l.split(" ") if w not in dropped)
            keep.append(l)
        prm.sdp.wholeSdp = "\r\n".join(keep)

    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            say(f"state DISCONNECTED {info.lastStatusCode}")
            done.append(True)
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            say("state CONFIRMED")


ep = pjsua_peer.start_endpoint()
acc_cfg = pjsua_peer.account_config()
acc = pj.Account()
acc.create(acc_cfg, True)
call = Caller(acc)
prm = pj.CallOpParam(True)
call.makeCall(target, prm)
deadline = time.monotonic() + limit
while not done and time.monotonic() < deadline:
    ep.libHandleEvents(20)
if not done:
    say("state TIMEOUT")
    call.hangup(pj.CallOpParam(True))
    for _ in range(20):
        ep.libHandleEvents(20)
del call
acc.shutdown()
ep.libDestroy()
