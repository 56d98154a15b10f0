"""A speech recognizer stand-in speaking Deepgram's live transcription
protocol or crossline's generic one, for tests.

Usage: stt_standin.py <port> <deepgram|generic> <mode> <transcript> <summary.json> <audio.ulaw>

It serves ws://127.0.0.1:<port> (Deepgram: /v1/listen), checks how each
connection is set up (Deepgram: the query's encoding=mulaw and
sample_rate=8000 and `Authorization: Token test-key`; generic: a first
`start` message with encoding audio/x-mulaw and `Authorization: Bearer
test-key`), appends every binary audio frame to <audio.ulaw>, sends an
interim transcript once audio flows, and answers crossline's closing
message (Deepgram CloseStream, generic stop) by mode:
  normal   the final <transcript>, then close
  slow     the final only after 10 s
  drop     nothing: the socket is closed at the first audio frame
<transcript> may be @FILE: the transcript is read from FILE when it is
sent, so a test can change it between calls.
It writes what it saw to <summary.json> after each connection.
"""
import asyncio
import json
import sys
import time
from urllib.parse import parse_qs, urlparse

from websockets.asyncio.server import serve

port, proto, mode, transcript, out, audio_path = sys.argv[1:7]
summary = {"connections": []}


def said():
    if transcript.startswith("@"):
        with open(transcript[1:]) as f:
            return f.read().strip()
    return transcript


def results(text, final):
    if proto == "deepgram":
        return json.dumps({
            "type": "Results", "channel_index": [0, 1], "duration": 1.0, "start": 0.0,
            "is_final": final, "speech_final": final,
            "channel": {"alternatives": [{"transcript": text, "confidence": 0.87, "words": []}]},
        })
    return json.dumps({"transcript": text, "is_final": final, "confidence": 0.87})


async def handler(ws):
    conn = {"frames": 0, "bytes": 0, "errors": [], "opened_at": time.time()}
    summary["connections"].append(conn)
    req = ws.request
    auth = req.headers.get("Authorization")
    if proto == "deepgram":
        url = urlparse(req.path)
        q = parse_qs(url.query)
        conn["query"] = {k: v for k, v in q.items()}
        if url.path != "/v1/listen":
            conn["errors"].append(f"path {url.path}")
        if q.get("encoding") != ["mulaw"] or q.get("sample_rate") != ["8000"]:
            conn["errors"].append(f"query {url.query}")
        if auth != "Token test-key":
            conn["errors"].append(f"auth {auth}")
    elif auth != "Bearer test-key":
        conn["errors"].append(f"auth {auth}")
    first = True
    interim_sent = False
    try:
        async for msg in ws:
            if isinstance(msg, bytes):
                if proto == "generic" and first:
                    conn["errors"].append("audio before the start message")
                first = False
                conn["frames"] += 1
                conn["bytes"] += len(msg)
                with open(audio_path, "ab") as f:
                    f.write(msg)
                if mode == "drop":
                    conn["dropped_at"] = time.time()
                    await ws.close()
                    break
                if conn["frames"] == 25 and not interim_sent:
                    interim_sent = True
                    await ws.send(results((said().split() or [""])[0], False))
                continue
            m = json.loads(msg)
            if proto == "generic" and first:
                first = False
                conn["start"] = m
                if m.get("type") != "start" or m.get("encoding") != "audio/x-mulaw" or m.get("sample_rate") != 8000:
                    conn["errors"].append(f"start {m}")
                continue
            if m.get("type") in ("CloseStream", "stop"):
                conn["closing_at"] = time.time()
                if mode == "slow":
                    await asyncio.sleep(10)
                await ws.send(results(said(), True))
                await ws.close()
                break
    except Exception as e:  # a closed socket mid-send is the client's right
        conn["exception"] = repr(e)
    conn["closed_at"] = time.time()
    with open(out, "w") as f:
        json.dump(summary, f)


async def main():
    async with serve(handler, "127.0.0.1", int(port), max_size=2**20):
        print("listening", flush=True)
        await asyncio.sleep(120)


asyncio.run(main())
