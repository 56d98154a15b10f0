#!/usr/bin/env python3
"""A TwiML voice app for crossline, standard library only: the same app
would run on Twilio. It greets the caller, offers a menu (Gather), and
either reads back the key, transfers (Dial) or says goodbye. Every request
is checked against X-Twilio-Signature first, as Twilio's RequestValidator
does; a request that fails gets 403.

    AUTH_TOKEN=0123456789abcdef0123456789abcdef python3 examples/twiml-app/app.py 8000

and in crossline.toml:

    [twiml]
    account_sid = "AC0123456789abcdef0123456789abcdef"
    auth_token = "0123456789abcdef0123456789abcdef"

    [[routes]]
    did = "4000"
    app = { url = "http://127.0.0.1:8000/voice", status_callback = "http://127.0.0.1:8000/status" }

then call it: sipp -sn uac -s 4000 127.0.0.1:5060 -m 1 -d 20000 -p 5070
Set AGENT (a SIP URI) to have key 2 dial it.
"""

import base64
import hashlib
import hmac
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

AUTH_TOKEN = os.environ.get("AUTH_TOKEN", "")
AGENT = os.environ.get("AGENT", "")


def signature(url, params):
    """Twilio's: base64 HMAC-SHA1 of the URL and each POST parameter
    (name then value) sorted by name, keyed with the auth token."""
    data = url + "".join(k + v for k, v in sorted(params.items()))
    digest = hmac.new(AUTH_TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def response(*verbs):
    return '<?xml version="1.0" encoding="UTF-8"?><Response>' + "".join(verbs) + "</Response>"


def say(text):
    return f'<Say language="en-US">{escape(text)}</Say>'


class App(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        params = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
        url = f"http://{self.headers['Host']}{self.path}"
        given = self.headers.get("X-Twilio-Signature", "")
        if not hmac.compare_digest(signature(url, params), given):
            self.reply(403, "text/plain", "bad signature")
            return
        path = urlsplit(self.path).path
        if path == "/voice":
            twiml = response(
                say("Welcome to the crossline example app."),
                '<Gather numDigits="1" action="/menu" timeout="8">',
                say("Press 1 to hear your key, 2 for an agent, or 3 to leave."),
                "</Gather>",
                say("We did not hear a key. Goodbye."),
                "<Hangup/>",
            )
        elif path == "/menu":
            digits = params.get("Digits", "")
            if digits == "2" and AGENT:
                twiml = response(
                    say("Connecting you."),
                    f'<Dial action="/after-dial" timeout="20"><Sip>{escape(AGENT)}</Sip></Dial>',
                )
            elif digits == "3":
                twiml = response(say("Goodbye."), "<Hangup/>")
            else:
                twiml = response(say(f"You pressed {' '.join(digits)}."), '<Redirect>/voice</Redirect>')
        elif path == "/after-dial":
            twiml = response(say(f"The call ended: {params.get('DialCallStatus', 'unknown')}. Goodbye."))
        elif path == "/status":
            print(f"status: {params.get('CallSid')} {params.get('CallStatus')}", flush=True)
            self.reply(204, "text/plain", "")
            return
        else:
            self.reply(404, "text/plain", "no such page")
            return
        self.reply(200, "application/xml", twiml)

    def reply(self, status, content_type, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    if len(AUTH_TOKEN) < 16:
        sys.exit("set AUTH_TOKEN to the [twiml] auth_token (at least 16 characters)")
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    server = ThreadingHTTPServer(("127.0.0.1", port), App)
    print(f"listening on http://127.0.0.1:{port}/voice", flush=True)
    server.serve_forever()
