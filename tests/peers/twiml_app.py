"""A webhook app for the TwiML tests, built on the official `twilio` helper
library: every document it serves is built with VoiceResponse (the bad
ones excepted, which no library would write), and every request crossline
makes is checked with RequestValidator.

    twiml_app.py PORT LOG AUTH_TOKEN TONE_WAV

Each request is logged as one JSON line in LOG: path, method, the form or
query parameters, whether the X-Twilio-Signature validated, and for audio
the If-None-Match it carried and the status served. A request whose
signature fails gets 403, so crossline takes its error path and the test
sees it. Prints "ready" once listening.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Dial, Gather, VoiceResponse

PORT = int(sys.argv[1])
LOG = sys.argv[2]
VALIDATOR = RequestValidator(sys.argv[3])
with open(sys.argv[4], "rb") as f:
    TONE = f.read()
TONE_ETAG = '"tone-v1"'
LOCK = threading.Lock()
FAILED_ONCE = set()

XML_BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<Response><Say>&lol9;</Say></Response>"""


def log(entry):
    with LOCK, open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


class App(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def base(self):
        return f"http://127.0.0.1:{PORT}"

    def do_GET(self):
        self.handle_request({})

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length).decode()
        self.handle_request(dict(parse_qsl(body, keep_blank_values=True)))

    def handle_request(self, form):
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if parts.path.startswith("/audio/"):
            return self.audio(parts.path)
        if parts.path == "/bad/loop":
            # Redirected requests carry the first one's signature: not checked.
            log({"path": parts.path, "method": self.command})
            return self.send(302, "text/plain", b"", [("Location", "/bad/loop")])
        url = f"http://{self.headers['Host']}{self.path}"
        valid = VALIDATOR.validate(url, form, self.headers.get("X-Twilio-Signature", ""))
        params = form if self.command == "POST" else query
        log({"path": parts.path, "method": self.command, "params": params, "valid": valid})
        if not valid:
            return self.send(403, "text/plain", b"bad signature")
        handler = getattr(self, "app_" + parts.path.strip("/").replace("/", "_").replace("-", "_"), None)
        if handler is None:
            return self.send(404, "text/plain", b"no such app")
        out = handler(query, form)
        if isinstance(out, VoiceResponse):
            self.send(200, "application/xml", str(out).encode())

    def send(self, status, content_type, body, headers=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def audio(self, path):
        seen = self.headers.get("If-None-Match")
        if path == "/audio/tone.wav":
            status = 304 if seen == TONE_ETAG else 200
            log({"path": path, "if_none_match": seen, "status": status})
            if status == 304:
                self.send_response(304)
                self.send_header("ETag", TONE_ETAG)
                self.end_headers()
                return
            return self.send(200, "audio/wav", TONE, [("ETag", TONE_ETAG)])
        if path == "/audio/page.html":
            log({"path": path, "status": 200})
            return self.send(200, "text/html", b"<html><body>not audio</body></html>")
        if path == "/audio/endless.wav":
            # A WAV header, then samples for ever (no Content-Length).
            log({"path": path, "status": 200})
            self.send_response(200)
            self.send_header("Content-Type", "audio/wav")
            self.end_headers()
            try:
                self.wfile.write(TONE[:44])
                chunk = bytes(64 * 1024)
                while True:
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return
        self.send(404, "text/plain", b"no such audio")

    # ---- the apps, by path ----

    def app_say_play(self, query, form):
        r = VoiceResponse()
        r.say("Welcome to the app.", voice="alice", language="en-US")
        r.play(f"{self.base()}/audio/tone.wav")
        r.hangup()
        return r

    def app_redirect(self, query, form):
        r = VoiceResponse()
        r.redirect("/say-play", method="GET")
        return r

    def app_gather(self, query, form):
        r = VoiceResponse()
        g = Gather(num_digits=1, action="/gathered", method="POST", timeout=10)
        g.say("Press a key.")
        r.append(g)
        r.say("We did not get your key.")
        r.hangup()
        return r

    def app_gathered(self, query, form):
        r = VoiceResponse()
        r.play(f"{self.base()}/audio/tone.wav")
        r.hangup()
        return r

    def app_gather_dead(self, query, form):
        r = VoiceResponse()
        g = Gather(num_digits=1, action=f"http://127.0.0.1:{query['dead']}/gone", timeout=10)
        g.say("Press a key.")
        r.append(g)
        return r

    def app_fallback(self, query, form):
        r = VoiceResponse()
        r.play(f"{self.base()}/audio/tone.wav")
        r.hangup()
        return r

    def app_reject(self, query, form):
        r = VoiceResponse()
        if query.get("pause"):
            r.pause(length=1)
        r.reject(reason=query.get("reason", "rejected"))
        return r

    def app_dial(self, query, form):
        r = VoiceResponse()
        d = Dial(action="/dialed", timeout=int(query.get("timeout", "30")), caller_id="+15550001111")
        if "limit" in query:
            d = Dial(action="/dialed", time_limit=int(query["limit"]), hangup_on_star=True)
        if "number" in query:
            d.number(query["number"])
        else:
            d.sip(query["uri"])
        r.append(d)
        return r

    def app_dialed(self, query, form):
        r = VoiceResponse()
        r.hangup()
        return r

    def app_bad_malformed(self, query, form):
        self.send(200, "application/xml", b"<Response>\n<Say>hi</Sey>\n</Response>")

    def app_bad_bomb(self, query, form):
        self.send(200, "application/xml", XML_BOMB.encode())

    def app_bad_unknown(self, query, form):
        self.send(200, "application/xml", b"<Response>\n  <Say>hi</Say>\n  <Shout>hi</Shout>\n</Response>")

    def app_bad_huge(self, query, form):
        # 10 MB and no Content-Length: the cap must hold as it streams in.
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.end_headers()
        try:
            self.wfile.write(b"<Response>")
            chunk = b"<Pause length=\"1\"/>" * 5000
            for _ in range(10_000_000 // len(chunk) + 1):
                self.wfile.write(chunk)
            self.wfile.write(b"</Response>")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def app_bad_notaudio(self, query, form):
        r = VoiceResponse()
        r.play(f"{self.base()}/audio/page.html")
        return r

    def app_bad_endless(self, query, form):
        r = VoiceResponse()
        r.play(f"{self.base()}/audio/endless.wav")
        return r

    def app_bad_500(self, query, form):
        self.send(500, "text/plain", b"oops")

    def app_status(self, query, form):
        # The first delivery of each call's answered event fails with 500:
        # crossline must retry it, and send nothing else twice.
        key = (form.get("CallSid"), form.get("CallStatus"))
        with LOCK:
            first = form.get("CallStatus") == "in-progress" and key not in FAILED_ONCE
            FAILED_ONCE.add(key)
        if first:
            return self.send(500, "text/plain", b"try again")
        self.send(204, "text/plain", b"")

    def app_bad_twiml_loop(self, query, form):
        # A <Redirect> to itself: crossline gives up after 10 documents.
        r = VoiceResponse()
        r.redirect("/bad/twiml-loop")
        return r

    def app_long_play(self, query, form):
        # The tone for ever: until the Calls API moves the call on.
        r = VoiceResponse()
        r.play(f"{self.base()}/audio/tone.wav", loop=0)
        return r

    def app_after_redirect(self, query, form):
        r = VoiceResponse()
        r.pause(length=1)
        r.hangup()
        return r

    def app_slow(self, query, form):
        time.sleep(float(query.get("secs", "8")))
        r = VoiceResponse()
        r.hangup()
        return r

    # ---- queues: <Enqueue>, its wait document, <Dial><Queue> ----

    def app_enqueue(self, query, form):
        r = VoiceResponse()
        wait = "/wait?leave=1" if query.get("leave") else "/wait"
        if query.get("bad"):
            wait = "/wait?bad=1"
        if query.get("nowait"):
            # The queue's own music and announcements.
            wait = None
        r.enqueue(query.get("q", "support"), action="/enqueue-left", wait_url=wait)
        return r

    def app_wait(self, query, form):
        r = VoiceResponse()
        if query.get("leave"):
            r.say("The line is closed.")
            r.leave()
        elif query.get("bad"):
            # No <Dial> in a wait document.
            r.say("Hold on.")
            r.dial("+15550001111")
        else:
            r.say("Please hold.")
            r.pause(length=2)
        return r

    def app_enqueue_left(self, query, form):
        r = VoiceResponse()
        r.hangup()
        return r

    def app_dequeue(self, query, form):
        r = VoiceResponse()
        d = Dial(action="/dequeued", timeout=int(query.get("timeout", "30")))
        if "limit" in query:
            d = Dial(action="/dequeued", time_limit=int(query["limit"]))
        d.queue(query.get("q", "support"), url="/about-to-connect")
        r.append(d)
        return r

    def app_about_to_connect(self, query, form):
        r = VoiceResponse()
        r.say("You are being connected.")
        return r

    def app_dequeued(self, query, form):
        r = VoiceResponse()
        r.hangup()
        return r


server = ThreadingHTTPServer(("127.0.0.1", PORT), App)
print("ready", flush=True)
server.serve_forever()
