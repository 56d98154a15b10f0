"""A PJSIP (pjsua2) agent phone: registers to a registrar with digest and
answers every call it gets.

Usage: pjsua_register.py <registrar-uri> <aor> <user> <password> <seconds>
                         [--expires SECS] [--vanish]

Registers <aor> (e.g. sip:alice@crossline.test) at <registrar-uri>, answers
incoming calls with 200 and stays up for <seconds>. --vanish quits right
after the first registration without unregistering (a phone that lost
power). Prints one line per event, flushed:
  reg <status> <expires>         (a REGISTER's final answer)
  incoming <from>                (a call arrived; answered at once)
  state <CONFIRMED|DISCONNECTED> <last status>
  media                          (the call's audio is up)
"""
import os
import sys
import time

import pjsua2 as pj

import pjsua_peer

args = sys.argv[1:]
registrar, aor, user, password, limit = args[0], args[1], args[2], args[3], float(args[4])
expires = int(args[args.index("--expires") + 1]) if "--expires" in args else 300
vanish = "--vanish" in args
calls = []


def say(line):
    print(line, flush=True)


class Answered(pj.Call):
    def onCallState(self, prm):
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            say(f"state CONFIRMED {info.lastStatusCode}")
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            say(f"state DISCONNECTED {info.lastStatusCode}")

    def onCallMediaState(self, prm):
        info = self.getInfo()
        for m in info.media:
            if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                say("media")


class Agent(pj.Account):
    def onRegState(self, prm):
        say(f"reg {prm.code} {prm.expiration}")
        if vanish and prm.code == 200:
            # Gone without a word: the binding must lapse on its own.
            os._exit(0)

    def onIncomingCall(self, prm):
        call = Answered(self, prm.callId)
        say(f"incoming {call.getInfo().remoteUri}")
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)
        calls.append(call)


ep = pjsua_peer.start_endpoint()
acc_cfg = pj.AccountConfig()
acc_cfg.idUri = aor
acc_cfg.regConfig.registrarUri = registrar
acc_cfg.regConfig.timeoutSec = expires
acc_cfg.regConfig.retryIntervalSec = 0
acc_cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
acc = Agent()
acc.create(acc_cfg)
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    ep.libHandleEvents(20)
calls.clear()
acc.shutdown()
ep.libDestroy()
