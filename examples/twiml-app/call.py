#!/usr/bin/env python3
"""Place a call through crossline's Calls API, standard library only: the
same request Twilio's helper libraries send (a form POST to Calls.json
with HTTP Basic auth: the account SID and its auth token).

    ACCOUNT_SID=AC0123456789abcdef0123456789abcdef \\
    AUTH_TOKEN=0123456789abcdef0123456789abcdef \\
    python3 examples/twiml-app/call.py http://127.0.0.1:8080 +12015550123 +15550001111 \\
        http://127.0.0.1:8000/voice

TO is E.164 (dialled through the outbound trunk) or sip:user@host with the
host in [twiml] api_sip_hosts. The last argument is the app's URL, or TwiML
itself ("<Response>...</Response>"). Prints the call as crossline answers
it (JSON: sid, status, ...); on a refusal prints Twilio's error and exits 1.

With the twilio library the same is:

    client = twilio.rest.Client(ACCOUNT_SID, AUTH_TOKEN)
    client.api.base_url = "http://127.0.0.1:8080"
    client.calls.create(to=TO, from_=FROM, url=URL)
"""

import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


def main():
    base, to, from_, app = sys.argv[1:5]
    account = os.environ["ACCOUNT_SID"]
    token = os.environ["AUTH_TOKEN"]
    form = {"To": to, "From": from_}
    form["Twiml" if app.lstrip().startswith("<") else "Url"] = app
    request = urllib.request.Request(
        f"{base.rstrip('/')}/2010-04-01/Accounts/{account}/Calls.json",
        data=urllib.parse.urlencode(form).encode(),
        headers={
            "Authorization": "Basic "
            + base64.b64encode(f"{account}:{token}".encode()).decode(),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            print(response.read().decode())
    except urllib.error.HTTPError as e:
        print(e.read().decode())
        sys.exit(1)


if __name__ == "__main__":
    main()
