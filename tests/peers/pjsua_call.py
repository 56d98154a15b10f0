"""A PJSIP (pjsua2) caller that reports what happens to its call.

Usage: pjsua_call.py <sip-uri> <seconds> [--timer SECS] [--100rel] [--record WAV]
                     [--play WAV] [--play-once] [--play-at SECS] [--dtmf-at SECS DIGITS]
                     [--from USER] [--no-vad]

Calls <sip-uri> from a null sound device and hangs up after <seconds>.
--timer requires session timers (RFC 4028) with SECS as Session-Expires and
Min-SE; --100rel requires reliable provisional responses (RFC 3262);
--record writes what the far end sends (early media included) to WAV;
--play sends WAV (looped; once with --play-once) once media is up, or
--play-at SECS after the answer; --dtmf-at sends DIGITS
(RFC 4733) SECS after the call is answered; --from calls as
sip:USER@127.0.0.1 (default pjsua); --no-vad sends RTP through silence
(pjsua's silence detector otherwise sends none in pauses).
Prints one line per event, each with monotonic seconds at the end:
  state <EARLY|CONFIRMED|DISCONNECTED> <last status> <t>
  media <t>                      (audio became active)
  tsx <method> <status> <uac|uas> <t>   (a transaction of the call ended)
  hangup <t>                     (we hung up at <seconds>)
"""
import sys
import time

import pjsua2 as pj

import pjsua_peer

args = sys.argv[1:]
target, limit = args[0], float(args[1])
timer = int(args[args.index("--timer") + 1]) if "--timer" in args else None
rel100 = "--100rel" in args
record = args[args.index("--record") + 1] if "--record" in args else None
play = args[args.index("--play") + 1] if "--play" in args else None
play_once = "--play-once" in args
from_user = args[args.index("--from") + 1] if "--from" in args else None
play_at = float(args[args.index("--play-at") + 1]) if "--play-at" in args else None
audio_media = []
dtmf_at = None
if "--dtmf-at" in args:
    i = args.index("--dtmf-at")
    dtmf_at = (float(args[i + 1]), args[i + 2])
answered_at = []
player = None
done = []
seen_tsx = set()
recorder = None
STATES = {
    pj.PJSIP_INV_STATE_EARLY: "EARLY",
    pj.PJSIP_INV_STATE_CONFIRMED: "CONFIRMED",
    pj.PJSIP_INV_STATE_DISCONNECTED: "DISCONNECTED",
}


def say(line):
    print(f"{line} {time.monotonic():.3f}", flush=True)


def start_player(media):
    global player
    player = pj.AudioMediaPlayer()
    player.createPlayer(play, pj.PJMEDIA_FILE_NO_LOOP if play_once else 0)
    player.startTransmit(media)
    say("playing")


class Caller(pj.Call):
    def onCallState(self, prm):
        info = self.getInfo()
        name = STATES.get(info.state)
        if name:
            say(f"state {name} {info.lastStatusCode}")
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            answered_at.append(time.monotonic())
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            done.append(True)

    def onCallMediaState(self, prm):
        global recorder, player
        info = self.getInfo()
        for i, m in enumerate(info.media):
            if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                say("media")
                if record and recorder is None:
                    recorder = pj.AudioMediaRecorder()
                    recorder.createRecorder(record)
                    self.getAudioMedia(i).startTransmit(recorder)
                audio_media.append(self.getAudioMedia(i))
                if play and player is None and play_at is None:
                    start_player(audio_media[0])

    def onCallTsxState(self, prm):
        tsx = prm.e.body.tsxState.tsx
        if tsx.statusCode >= 200 and tsx.state >= pj.PJSIP_TSX_STATE_COMPLETED:
            role = "uac" if tsx.role == pj.PJSIP_ROLE_UAC else "uas"
            key = (tsx.method, role, str(tsx.pjTransaction), tsx.statusCode)
            if key not in seen_tsx:
                seen_tsx.add(key)
                say(f"tsx {tsx.method} {tsx.statusCode} {role}")


ep = pjsua_peer.start_endpoint(no_vad="--no-vad" in args)
acc_cfg = pjsua_peer.account_config()
if from_user:
    acc_cfg.idUri = f"sip:{from_user}@127.0.0.1"
if timer:
    acc_cfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_REQUIRED
    acc_cfg.callConfig.timerSessExpiresSec = timer
    acc_cfg.callConfig.timerMinSESec = timer
if rel100:
    acc_cfg.callConfig.prackUse = pj.PJSUA_100REL_MANDATORY
acc = pj.Account()
acc.create(acc_cfg, True)
call = Caller(acc)
call.makeCall(target, pj.CallOpParam(True))
deadline = time.monotonic() + limit
while not done and time.monotonic() < deadline:
    ep.libHandleEvents(20)
    if play and play_at is not None and player is None and audio_media and answered_at:
        if time.monotonic() >= answered_at[0] + play_at:
            start_player(audio_media[0])
    if dtmf_at and answered_at and time.monotonic() >= answered_at[0] + dtmf_at[0]:
        say(f"dtmf {dtmf_at[1]}")
        call.dialDtmf(dtmf_at[1])
        dtmf_at = None
if not done:
    say("hangup")
    call.hangup(pj.CallOpParam(True))
    for _ in range(50):
        ep.libHandleEvents(20)
        if done:
            break
recorder = None
player = None
del call
acc.shutdown()
ep.libDestroy()
