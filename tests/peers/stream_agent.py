"""A voice agent speaking the Twilio Media Streams protocol (the server
side), for tests: it checks what crossline sends and plays tones back.

Usage: stream_agent.py <port> <auth-token> <mode> <summary.json>

It takes one connection on ws://127.0.0.1:<port>/media and checks its
X-Twilio-Signature (HMAC-SHA1 of the URL, keyed by <auth-token>), then
the messages: connected, start (fields as Twilio documents them), media
(base64 μ-law, 20 ms, chunk and timestamp counting up), dtmf, stop.

Modes:
  talk   once the caller's 1 kHz tone is heard: send 3 s of 400 Hz as fast
         as it can, then mark "tone-end"; once that mark comes back, send
         5 s of 600 Hz, clear after 1 s, and close the socket 1.5 s later.
  fork   just listen (a one-way stream) until crossline sends stop.
  abuse  send a binary frame, invalid JSON, an unknown event, base64
         garbage and 60 s of 400 Hz at once; 2 s later a message over
         crossline's size limit; then listen until the socket closes.

It writes what it saw to <summary.json>; wall-clock times are time.time().
"""
import asyncio
import base64
import hashlib
import hmac
import json
import math
import sys
import time

import websockets
from websockets.asyncio.server import serve

port, token, mode, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
url = f"ws://127.0.0.1:{port}/media"
summary = {"mode": mode, "events": [], "errors": [], "tracks": {}, "dtmf": []}


def ulaw_to_linear(u):
    u = ~u & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


def linear_to_ulaw(s):
    sign = 0x80 if s < 0 else 0
    s = min(abs(s), 32635) + 0x84
    exp = 7
    mask = 0x4000
    while exp > 0 and not (s & mask):
        exp -= 1
        mask >>= 1
    mant = (s >> (exp + 3)) & 0x0F
    return ~(sign | (exp << 4) | mant) & 0xFF


def tone(freq, secs, amp=8000):
    n = int(8000 * secs)
    return bytes(linear_to_ulaw(int(amp * math.sin(2 * math.pi * freq * i / 8000))) for i in range(n))


def level(samples, freq):
    """Goertzel magnitude of freq, normalised by length."""
    k = 2 * math.cos(2 * math.pi * freq / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return math.sqrt(max(s1 * s1 + s2 * s2 - k * s1 * s2, 0)) / max(len(samples), 1) * 2


def fail(msg):
    summary["errors"].append(msg)


async def send_audio(ws, sid, audio, chunk=8000):
    for i in range(0, len(audio), chunk):
        payload = base64.b64encode(audio[i : i + chunk]).decode()
        await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": payload}}))


async def handler(ws):
    req = ws.request
    expected = base64.b64encode(hmac.new(token.encode(), url.encode(), hashlib.sha1).digest()).decode()
    summary["path"] = req.path
    summary["signature_ok"] = req.headers.get("X-Twilio-Signature") == expected
    sid = None
    seq = 0
    heard = []
    tracks_audio = {}
    talk_started = False
    mark_sent_at = None
    clear_task = None
    try:
        async for raw in ws:
            if isinstance(raw, bytes):
                fail("binary frame from crossline")
                continue
            msg = json.loads(raw)
            ev = msg.get("event")
            summary["events"].append(ev)
            if ev != "connected":
                n = int(msg.get("sequenceNumber", "0"))
                if n != seq + 1:
                    fail(f"sequenceNumber {n} after {seq}")
                seq = n
            if ev == "start":
                summary["started_at"] = time.time()
                st = msg["start"]
                sid = msg["streamSid"]
                summary["start"] = st
                if st.get("streamSid") != sid:
                    fail("start.streamSid differs")
                if st.get("mediaFormat") != {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}:
                    fail(f"mediaFormat {st.get('mediaFormat')}")
                if mode == "abuse":
                    await ws.send(b"\x00\x01binary")
                    await ws.send("{not json")
                    await ws.send(json.dumps({"event": "dance", "streamSid": sid}))
                    await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "%%%%"}}))
                    summary["flood_at"] = time.time()
                    await send_audio(ws, sid, tone(400, 60), chunk=16000)
                    await asyncio.sleep(2)
                    # Over crossline's max_message_kb: it drops the stream.
                    summary["oversize_at"] = time.time()
                    await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "A" * 400000}}))
            elif ev == "media":
                m = msg["media"]
                track = m["track"]
                t = summary["tracks"].setdefault(track, {"chunks": 0, "bytes": 0, "last_chunk": 0, "last_ts": -1})
                chunk, ts = int(m["chunk"]), int(m["timestamp"])
                if chunk != t["last_chunk"] + 1:
                    fail(f"{track} chunk {chunk} after {t['last_chunk']}")
                if ts <= t["last_ts"]:
                    fail(f"{track} timestamp {ts} after {t['last_ts']}")
                t["last_chunk"], t["last_ts"] = chunk, ts
                audio = base64.b64decode(m["payload"])
                t["bytes"] += len(audio)
                t["chunks"] += 1
                samples = [ulaw_to_linear(b) for b in audio]
                kept = tracks_audio.setdefault(track, [])
                kept.extend(samples)
                del kept[:-16000]
                if track == "inbound":
                    heard.extend(samples)
                    del heard[:-16000]
                    if mode == "talk" and not talk_started and len(heard) >= 4000:
                        window = heard[-4000:]
                        if level(window, 1000) > 1000:
                            talk_started = True
                            summary["tone_heard_at"] = time.time()
                            await send_audio(ws, sid, tone(400, 3))
                            await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {"name": "tone-end"}}))
                            mark_sent_at = time.time()
            elif ev == "mark":
                name = msg["mark"]["name"]
                summary["mark"] = {"name": name, "after": time.time() - (mark_sent_at or 0)}
                if mode == "talk" and name == "tone-end":

                    async def long_tone_then_clear():
                        await send_audio(ws, sid, tone(600, 5))
                        await asyncio.sleep(1.0)
                        summary["clear_at"] = time.time()
                        await ws.send(json.dumps({"event": "clear", "streamSid": sid}))
                        await asyncio.sleep(1.5)
                        await ws.close()

                    clear_task = asyncio.create_task(long_tone_then_clear())
            elif ev == "dtmf":
                summary["dtmf"].append(msg["dtmf"])
            elif ev == "stop":
                summary["stop"] = msg["stop"]
                break
    except websockets.ConnectionClosed:
        pass
    if clear_task:
        await asyncio.gather(clear_task, return_exceptions=True)
    # Tone levels over the last second of each track.
    summary["levels"] = {
        track: {str(f): level(samples[-8000:], f) for f in (400, 1000)} for track, samples in tracks_audio.items()
    }
    summary["closed_at"] = time.time()
    done.set_result(True)


async def main():
    global done
    done = asyncio.get_running_loop().create_future()
    async with serve(handler, "127.0.0.1", port, max_size=2**20):
        print("listening", flush=True)
        try:
            await asyncio.wait_for(done, 60)
        except asyncio.TimeoutError:
            fail("no stream ended within 60 s")
    with open(out, "w") as f:
        json.dump(summary, f)


asyncio.run(main())
