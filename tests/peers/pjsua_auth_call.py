"""A PJSIP (pjsua2) caller with digest credentials.

Usage: pjsua_auth_call.py <sip-uri> <user> <password> <talk-seconds>

Calls <sip-uri> from a null sound device, answering 401/407 challenges as
PJSIP does (it picks the first challenge whose algorithm it supports),
hangs up after <talk-seconds> once answered and prints `state <NAME> <code>`
lines as the call moves.
"""
import sys
import time

import pjsua2 as pj

import pjsua_peer

target, user, password, talk = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
done = []
answered = []


def say(line):
    print(line, flush=True)


class Caller(pj.Call):
    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            say("state CONFIRMED")
            answered.append(time.monotonic())
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            say(f"state DISCONNECTED {info.lastStatusCode}")
            done.append(True)


ep = pjsua_peer.start_endpoint()
acc_cfg = pj.AccountConfig()
acc_cfg.idUri = f"sip:{user}@127.0.0.1"
acc_cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
acc = pj.Account()
acc.create(acc_cfg, True)
call = Caller(acc)
call.makeCall(target, pj.CallOpParam(True))
deadline = time.monotonic() + 30
hung_up = False
while not done and time.monotonic() < deadline:
    ep.libHandleEvents(20)
    if answered and not hung_up and time.monotonic() - answered[0] > talk:
        hung_up = True
        call.hangup(pj.CallOpParam(True))
if not done:
    say("state TIMEOUT")
del call
acc.shutdown()
ep.libDestroy()
