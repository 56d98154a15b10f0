#!/usr/bin/env python3
"""Writes the checked-in fuzz seeds under fuzz/seeds/<target>/.

Run from anywhere: python3 fuzz/seeds/generate.py. The outputs are committed;
rerun only to change them. Binary packets are built here byte by byte, SIP
and SDP with exact CRLFs and Content-Lengths. The SIP targets also get every
message in sip-fixtures/ at run time (scripts/fuzz.sh, src/fuzzing.rs's replay tests).
"""

import shutil
import struct
from pathlib import Path

SEEDS = Path(__file__).resolve().parent
ROOT = SEEDS.parent.parent


def write(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)


def crlf(text):
    return text.replace("\n", "\r\n")


# ---- SDP ----

OFFER = crlf("""v=0
o=user1 53655765 2353687637 IN IP4 192.0.2.1
s=-
c=IN IP4 192.0.2.1
t=0 0
m=audio 6000 RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=ptime:20
a=sendrecv
""")

write("sdp", "offer.sdp", OFFER)
write("sdp", "hold-v6.sdp", crlf("""v=0
o=- 1 2 IN IP6 2001:db8::1
s=hold
c=IN IP6 ::
t=0 0
m=audio 5004 RTP/AVP 8 96
a=rtpmap:96 telephone-event/8000
a=ptime:30
a=sendonly
"""))
write("sdp", "multi-media.sdp", """v=0
o=- 7 7 IN IP4 198.51.100.7
s=-
t=0 0
m=video 9000 RTP/AVP 96
a=rtpmap:96 H264/90000
m=audio 0 RTP/SAVP 0
m=audio 7000/2 RTP/AVP 18 0
c=IN IP4 198.51.100.8/127
a=rtpmap:18 G729/8000
a=inactive
""")

# ---- SIP (beyond sip-fixtures/) ----


def sip(head, body=""):
    head = crlf(head.strip("\n") + "\n")
    return (head + "Content-Length: %d\r\n\r\n" % len(body.encode()) + body).encode()


INVITE_AUTH = sip("""INVITE sip:1000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-seed-1;rport
Max-Forwards: 70
Record-Route: <sip:proxy.example.com;lr>, <sip:10.0.0.9:5060>
From: "Alice" <sip:alice@127.0.0.1:5070>;tag=a1
To: <sip:1000@127.0.0.1:5060>
Call-ID: seed-invite-auth@127.0.0.1
CSeq: 2 INVITE
Contact: <sip:alice@127.0.0.1:5070;transport=udp>
Proxy-Authorization: Digest username="alice", realm="crossline", nonce="00", uri="sip:1000@127.0.0.1:5060", response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="c1", nc=00000001, qop=auth
Supported: timer, 100rel
User-Agent: seed
Content-Type: application/sdp
""", OFFER)
write("sip_message", "invite-auth.sip", INVITE_AUTH)

# Session timers (compact Session-Expires) and reliable provisionals: the
# drive answers with a reliable 180 and a 200 granting the timer.
write("sip_message", "invite-timer-100rel.sip", sip("""INVITE sip:1000@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-seed-6;rport
Max-Forwards: 70
From: <sip:alice@127.0.0.1:5070>;tag=a6
To: <sip:1000@127.0.0.1:5060>
Call-ID: seed-timer@127.0.0.1
CSeq: 1 INVITE
Contact: <sip:alice@127.0.0.1:5070>
Require: 100rel, timer
x: 90;refresher=uas
Min-SE: 90
Allow: INVITE, ACK, BYE, CANCEL, UPDATE, PRACK
Content-Type: application/sdp
""", OFFER))

write("sip_message", "407.sip", sip("""SIP/2.0 407 Proxy Authentication Required
Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-seed-2;received=192.0.2.1;rport=5060
From: <sip:crossline@127.0.0.1>;tag=c1
To: <sip:1000@192.0.2.1>;tag=p1
Call-ID: seed-407@127.0.0.1
CSeq: 1 INVITE
Proxy-Authenticate: Digest realm="carrier", nonce="abc123", opaque="xyz", algorithm=SHA-256, qop="auth,auth-int", stale=false
"""))

write("sip_message", "info-dtmf.sip", sip("""INFO sip:crossline@127.0.0.1:5060 SIP/2.0
v: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-seed-3
f: <sip:alice@127.0.0.1>;tag=a1
t: <sip:crossline@127.0.0.1>;tag=b2
i: seed-info@127.0.0.1
CSeq: 3 INFO
c: application/dtmf-relay
""", "Signal=5\r\nDuration=160\r\n"))

# A TCP stream: a message with a body, a keep-alive ping, two more.
OPTIONS = sip("""OPTIONS sip:127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-seed-4
From: <sip:probe@127.0.0.1>;tag=o1
To: <sip:127.0.0.1>
Call-ID: seed-options@127.0.0.1
CSeq: 1 OPTIONS
Max-Forwards: 70
""")
BYE = sip("""BYE sip:crossline@127.0.0.1:5060 SIP/2.0
Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-seed-5
From: <sip:alice@127.0.0.1>;tag=a1
To: <sip:crossline@127.0.0.1>;tag=b2
Call-ID: seed-invite-auth@127.0.0.1
CSeq: 4 BYE
""")
write("sip_stream", "pipelined.sip", INVITE_AUTH + b"\r\n\r\n" + OPTIONS + BYE)
write("sip_stream", "lf-only.sip", OPTIONS.replace(b"\r\n", b"\n") + b"\n\n")

# ---- RTP / RTCP ----


def rtp(pt, seq, ts, ssrc, payload, marker=False, csrcs=(), ext=None, pad=0):
    b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext is not None else 0) | len(csrcs)
    b1 = (0x80 if marker else 0) | pt
    out = struct.pack("!BBHII", b0, b1, seq, ts, ssrc)
    for c in csrcs:
        out += struct.pack("!I", c)
    if ext is not None:
        profile, words = ext
        out += struct.pack("!HH", profile, len(words)) + b"".join(struct.pack("!I", w) for w in words)
    out += payload
    if pad:
        out += bytes(pad - 1) + bytes([pad])
    return out


def event(code, end, volume, duration):
    return struct.pack("!BBH", code, (0x80 if end else 0) | volume, duration)


def rtcp_header(count, pt, body, padding=False):
    length = (4 + len(body)) // 4 - 1
    return struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | count, pt, length) + body


def report_block(ssrc, lost=0, seq=1000, jitter=12, lsr=0, dlsr=0):
    return struct.pack("!IIIIII", ssrc, (5 << 24) | (lost & 0xFFFFFF), seq, jitter, lsr, dlsr)


def sdes_cname(ssrc, cname):
    chunk = struct.pack("!I", ssrc) + bytes([1, len(cname)]) + cname + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return rtcp_header(1, 202, chunk)


PEER = 0xCAFEBABE
US = 0x12345678
ULAW_SILENCE = bytes([0xFF]) * 160

write("rtp", "pcmu.rtp", rtp(0, 1000, 160000, PEER, ULAW_SILENCE, marker=True))
write("rtp", "pcma-30ms.rtp", rtp(8, 1001, 160160, PEER, bytes([0xD5]) * 240))
write("rtp", "csrc-ext-pad.rtp",
      rtp(0, 1002, 160400, PEER, ULAW_SILENCE, csrcs=(1, 2), ext=(0xBEDE, (0x10AA0000,)), pad=4))
write("rtp", "dtmf-start.rtp", rtp(101, 1003, 160560, PEER, event(5, False, 10, 160), marker=True))
SR = rtcp_header(1, 200, struct.pack("!IIIIII", PEER, 0xE8F1A2B3, 0x40000000, 160000, 50, 8000)
                 + report_block(US))
write("rtp", "sr-sdes.rtcp", SR + sdes_cname(PEER, b"peer@192.0.2.1"))
RR = rtcp_header(1, 201, struct.pack("!I", PEER) + report_block(US, lost=-3))
BYE_REASON = b"done"
bye_body = struct.pack("!I", PEER) + bytes([len(BYE_REASON)]) + BYE_REASON
bye_body += bytes(-len(bye_body) % 4)
write("rtp", "rr-bye.rtcp", RR + rtcp_header(1, 203, bye_body))
write("rtp", "app-padded.rtcp", RR + rtcp_header(0, 204, b"name" + bytes(3) + b"\x04", padding=True))


def record(is_rtcp, delay_ms, packet):
    assert len(packet) <= 255 and delay_ms <= 127
    return bytes([(delay_ms << 1) | int(is_rtcp), len(packet)]) + packet


# Records for the stream pass: 20 ms of audio, a digit 7 (three packets and
# a thrice-sent end), more audio, then the peer's SR and BYE.
stream = b""
seq, ts = 2000, 320000
for i in range(3):
    stream += record(False, 20, rtp(0, seq, ts, PEER, ULAW_SILENCE, marker=(i == 0)))
    seq, ts = seq + 1, ts + 160
for i, end in enumerate([False, False, True, True, True]):
    stream += record(False, 20 if i < 3 else 0,
                     rtp(101, seq, ts, PEER, event(7, end, 10, 160 * min(i + 1, 3)), marker=(i == 0)))
    seq += 1
ts += 480
for _ in range(3):
    stream += record(False, 20, rtp(0, seq, ts, PEER, ULAW_SILENCE))
    seq, ts = seq + 1, ts + 160
stream += record(True, 5, SR)
stream += record(True, 0, RR + rtcp_header(1, 203, struct.pack("!I", PEER)))
write("rtp", "stream.bin", stream)

# ---- DTMF ----

write("dtmf", "relay-5.txt", "Signal=5\r\nDuration=160\r\n")
write("dtmf", "relay-hash.txt", "Signal= 11\nDuration= 250\n")
write("dtmf", "event-flash.bin", event(16, True, 0, 800))
# Records of [timestamp 4][marker 1][payload 4]: a press of 9, then a long
# press of 1 in two segments (new timestamp without the marker).
events = b""
for i, end in enumerate([False, False, True, True, True]):
    events += struct.pack("!IB", 8000, int(i == 0)) + event(9, end, 10, 160 * min(i + 1, 3))
events += struct.pack("!IB", 16000, 1) + event(1, False, 10, 65535)
events += struct.pack("!IB", 16000 + 65535, 0) + event(1, False, 10, 160)
events += struct.pack("!IB", 16000 + 65535, 0) + event(1, True, 10, 320)
write("dtmf", "events.bin", events)

# ---- webhooks ----

write("webhook", "twilio-sms.form",
      "ToCountry=US&ToState=CA&SmsMessageSid=SM0123456789abcdef0123456789abcdef"
      "&NumMedia=0&ToCity=&FromZip=&SmsSid=SM0123456789abcdef0123456789abcdef"
      "&FromState=&SmsStatus=received&FromCity=&Body=Hola%2C+%C2%BFqu%C3%A9+tal%3F+STOP"
      "&FromCountry=ES&To=%2B15550100000&ToZip=&NumSegments=1"
      "&MessageSid=SM0123456789abcdef0123456789abcdef&AccountSid=AC0123456789abcdef0123456789abcdef"
      "&From=%2B34600123456&ApiVersion=2010-04-01")
write("webhook", "twilio-stop.form", "MessageSid=SM00000000000000000000000000000001&From=%2B15551234567&Body=stop&Body=twice&%zz=%4")
write("webhook", "whatsapp-text.json", """{
  "object": "whatsapp_business_account",
  "entry": [{
    "id": "102290129340398",
    "changes": [{
      "field": "messages",
      "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550100000", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Ana"}, "wa_id": "34600123456"}],
        "messages": [
          {"from": "34600123456", "id": "wamid.HBgLMzQ2MDAxMjM0NTYVAgASGBQzQUY2", "timestamp": "1700000000",
           "type": "text", "text": {"body": "Hola \\u00bfqu\\u00e9 tal?"}},
          {"from": "+34600123456", "id": "wamid.2", "timestamp": "1700000001",
           "type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "b1", "title": "Call me"}}},
          {"from": "34600123456", "id": "wamid.3", "timestamp": "1700000002",
           "type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "l1", "title": "Sales"}}},
          {"from": "34600123456", "id": "wamid.4", "timestamp": "1700000003",
           "type": "button", "button": {"payload": "p", "text": "START"}},
          {"from": "34600123456", "id": "wamid.5", "type": "image", "image": {"id": "i"}}
        ]
      }
    }]
  }]
}
""")
write("webhook", "whatsapp-status.json",
      '{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages",'
      '"value":{"messaging_product":"whatsapp","statuses":[{"id":"wamid.9","status":"delivered",'
      '"timestamp":"1700000000","recipient_id":"34600123456"}]}}]}]}')

# ---- flow files and config ----

for src in ["deploy/flows/ivr-en.toml", "deploy/flows/collect-email.toml",
            "deploy/flows/breakout-en.toml", "tests/flows/chat/ws.toml"]:
    write("flow_config", Path(src).name, (ROOT / src).read_bytes())

# A main config without [flows] dir, so checking it reads no other files.
write("flow_config", "config.toml", """[sip]
udp = ["127.0.0.1:5060"]
tcp = ["127.0.0.1:5060"]
max_message_size = 65535
t1_ms = 500

[http]
listen = "127.0.0.1:8080"

[media]
rtp_address = "127.0.0.1"
rtp_port_min = 20000
rtp_port_max = 29999
codecs = ["PCMU", "PCMA"]
telephone_event_payload_type = 101

[[trunks]]
name = "carrier"
inbound_cidrs = ["127.0.0.0/8", "2001:db8::/32"]
inbound_username = "carrier"
inbound_password = "secret"
outbound_proxy = "sip:127.0.0.1:5080"
outbound_transport = "udp"
caller_id = "+15550100000"

[[routes]]
did = "1?00"
caller = "+1*"
trunk = "carrier"
flow = "hold"
ring_ms = 500

[[routes]]
did = "*"
flow = "demo"
""")

# ---- TwiML documents (webhook apps) ----

write("twiml", "every-verb.xml", """<?xml version="1.0" encoding="UTF-8"?>
<Response>
  <Say voice="alice" language="en-US" loop="2">Hello &amp; welcome &#233;</Say>
  <Play loop="0" digits="ww12#">https://example.com/a.wav</Play>
  <Pause length="2"/>
  <Gather numDigits="3" action="/menu" method="GET" finishOnKey="*" timeout="7" input="dtmf speech" hints="a,b">
    <Say>Press keys</Say><Play>/beep.wav</Play><Pause/>
  </Gather>
  <Dial callerId="+15550100" timeout="10" action="/dialed" hangupOnStar="true" timeLimit="60">
    <Number sendDigits="w1">+1 (555) 123-4567</Number>
  </Dial>
  <Dial><Sip>sip:agent@example.com;transport=tcp</Sip></Dial>
  <Refer action="/refer"><Sip>sip:elsewhere@example.com</Sip></Refer>
  <Redirect method="GET">next?x=1&amp;y=2</Redirect>
  <Reject reason="busy"/>
  <Hangup/>
</Response>""")
write("twiml", "voice-ai.xml", """<Response>
  <Start><Stream name="fork" url="wss://agent.example.com/fork" track="both_tracks"><Parameter name="a" value="1"/></Stream></Start>
  <Gather input="speech" language="es-ES" hints="agente, SMS" speechTimeout="auto" bargeIn="false" action="/heard"><Say>Diga</Say></Gather>
  <Stop><Stream name="fork"/></Stop>
  <Connect action="/after"><Stream url="ws://127.0.0.1:9/media"><Parameter name="lang" value="es"/></Stream></Connect>
</Response>""")
write("twiml", "bomb.xml", """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<Response><Say>&lol2;</Say></Response>""")
write("twiml", "malformed.xml", "<Response>\n<Say>hi</Sey>\n<![CDATA[x]]></Response>trailing")
write("twiml", "unknown.xml", "<Response><Shout a='1'>hi</Shout><Say colour=\"red\">x</Say></Response>")

if __name__ == "__main__":
    for d in sorted(p for p in SEEDS.iterdir() if p.is_dir()):
        print(f"{d.name}: {len(list(d.iterdir()))} seeds")
