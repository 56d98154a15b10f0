"""INVITE-to-200 times as the wire saw them, from a libpcap file of SIP over
UDP (benches/sipp-load.sh captures one with dumpcap when WIRE_RTT=1).

    python3 benches/wire_rtt.py CAPTURE.pcap

For each Call-ID: the first INVITE (a retransmission doesn't restart it)
to the first 200 whose CSeq is INVITE, by the kernel's capture timestamps.
SIPp's own figure is taken in its event loop, in 4 ms steps on a busy box,
and holds SIPp's queueing as well as the gateway's; this one is the
gateway's alone. Prints `wire_setups=N wire_p50_ms=… wire_p99_ms=…
wire_max_ms=…`.
"""

import struct
import sys


def packets(path):
    """(timestamp in seconds, UDP payload) of each IPv4 packet."""
    with open(path, "rb") as f:
        header = f.read(24)
        if len(header) < 24:
            return
        magic, = struct.unpack("<I", header[:4])
        scale = 1e9 if magic == 0xA1B23C4D else 1e6
        linktype, = struct.unpack("<I", header[20:24])
        # Ethernet (Linux lo), Linux cooked (any), else raw IP.
        link = {1: 14, 113: 16}.get(linktype, 0)
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            secs, frac, length, _ = struct.unpack("<IIII", record)
            data = f.read(length)
            if len(data) <= link:
                continue
            ip_header = (data[link] & 0x0F) * 4
            yield secs + frac / scale, data[link + ip_header + 8:]


def setups(path):
    invites, answers = {}, {}
    for at, payload in packets(path):
        first, _, rest = payload.decode("latin-1").partition("\r\n")
        call_id = cseq = None
        for line in rest.split("\r\n"):
            if not line:
                break
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name in ("call-id", "i"):
                call_id = value.strip()
            elif name == "cseq":
                cseq = value.strip().upper()
        if not call_id or not cseq or not cseq.endswith("INVITE"):
            continue
        if first.startswith("INVITE "):
            invites.setdefault(call_id, at)
        elif first.startswith("SIP/2.0 200"):
            answers.setdefault(call_id, at)
    return sorted(
        (answers[c] - invites[c]) * 1000 for c in answers if c in invites
    )


def main():
    times = setups(sys.argv[1])
    if not times:
        print("wire_setups=0")
        return
    at = lambda q: times[min(len(times) - 1, int(len(times) * q))]
    print(
        f"wire_setups={len(times)} wire_p50_ms={at(0.50):.2f} "
        f"wire_p99_ms={at(0.99):.2f} wire_max_ms={times[-1]:.2f}"
    )


main()
