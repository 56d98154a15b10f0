"""A webhook app for the TwiML voice-AI tests (tests/twiml_voice_ai.rs),
built on the official `twilio` helper library: VoiceResponse writes every
document (Connect/Stream/Parameter, Start/Stop, Gather input="speech"),
and RequestValidator checks every request crossline signs.

    voice_ai_app.py PORT LOG AUTH_TOKEN TONE_WAV

Each request is logged as one JSON line in LOG: path, method, the form
parameters and whether the X-Twilio-Signature validated (a bad one gets
403). The agent's and recognizer's ports come in the query string.
Prints "ready" once listening.
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Connect, Gather, Start, Stop, VoiceResponse

PORT = int(sys.argv[1])
LOG = sys.argv[2]
VALIDATOR = RequestValidator(sys.argv[3])
with open(sys.argv[4], "rb") as f:
    TONE = f.read()
LOCK = threading.Lock()


def log(entry):
    with LOCK, open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


class App(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        parts = urlsplit(self.path)
        if parts.path == "/audio/tone.wav":
            return self.send(200, "audio/wav", TONE)
        self.send(404, "text/plain", b"no such audio")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        url = f"http://{self.headers['Host']}{self.path}"
        valid = VALIDATOR.validate(url, form, self.headers.get("X-Twilio-Signature", ""))
        log({"path": parts.path, "method": self.command, "params": form, "valid": valid})
        if not valid:
            return self.send(403, "text/plain", b"bad signature")
        handler = getattr(self, "app_" + parts.path.strip("/").replace("-", "_"), None)
        if handler is None:
            return self.send(404, "text/plain", b"no such app")
        self.send(200, "application/xml", str(handler(query, form)).encode())

    def send(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # ---- the apps, by path ----

    def app_connect(self, query, form):
        """The caller talks with the agent; its close brings /after-stream."""
        r = VoiceResponse()
        c = Connect(action="/after-stream")
        s = c.stream(url=f"ws://127.0.0.1:{query['agent']}/media")
        s.parameter(name="caller", value=form.get("From", ""))
        s.parameter(name="lang", value="es")
        r.append(c)
        r.say("This is never reached: the action runs instead.")
        return r

    def app_after_stream(self, query, form):
        r = VoiceResponse()
        r.pause(length=1)
        r.hangup()
        return r

    def app_fork(self, query, form):
        """A one-way fork of both tracks over a tone, stopped by name."""
        r = VoiceResponse()
        start = Start()
        start.stream(name="fork", url=f"ws://127.0.0.1:{query['agent']}/media", track="both_tracks")
        r.append(start)
        r.play("/audio/tone.wav", loop=4)
        stop = Stop()
        stop.stream(name="fork")
        r.append(stop)
        r.pause(length=2)
        r.hangup()
        return r

    def app_fork_gather(self, query, form):
        """A fork of the caller while a speech <Gather> listens."""
        r = VoiceResponse()
        start = Start()
        start.stream(name="fork", url=f"ws://127.0.0.1:{query['agent']}/media")
        r.append(start)
        g = Gather(input="speech", action="/fork-heard", speech_timeout="auto", timeout=6)
        g.play("/audio/tone.wav", loop=3)
        r.append(g)
        return r

    def app_fork_heard(self, query, form):
        r = VoiceResponse()
        r.pause(length=1)
        stop = Stop()
        stop.stream(name="fork")
        r.append(stop)
        r.pause(length=1)
        r.hangup()
        return r

    def app_speech(self, query, form):
        """A speech menu (keys too with ?keys=1): the prompt plays until the
        caller speaks."""
        r = VoiceResponse()
        keys = {"num_digits": 1} if query.get("keys") else {}
        g = Gather(
            input="dtmf speech" if keys else "speech",
            action="/heard",
            speech_timeout="auto",
            hints="agent, text me",
            language="en-US",
            timeout=6,
            **keys,
        )
        g.play("/audio/tone.wav", loop=3)
        r.append(g)
        r.say("We did not hear you.")
        r.hangup()
        return r

    def app_heard(self, query, form):
        r = VoiceResponse()
        r.pause(length=1)
        r.hangup()
        return r


server = ThreadingHTTPServer(("127.0.0.1", PORT), App)
print("ready", flush=True)
server.serve_forever()
