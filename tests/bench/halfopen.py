#!/usr/bin/env python3
"""Writes a pcap with N half-open HTTP connections to port 5555: each does the
handshake, sends a request head announcing a large body, part of that body,
and one segment out of order (so reassembly buffers it), then never finishes.

    halfopen.py OUT.pcap [N]      (default N = 100000)
"""
import struct
import sys


def csum_free_ipv4(src, dst, payload_len):
    total = 20 + payload_len
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 6, 0, src, dst)


def tcp(sport, dport, seq, ack, flags, payload=b""):
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + payload


def frame(src, dst, seg):
    eth = b"\x02\x00\x00\x00\x00\x02" + b"\x02\x00\x00\x00\x00\x01" + b"\x08\x00"
    return eth + csum_free_ipv4(src, dst, len(seg)) + seg


def main():
    out = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    server = bytes([10, 0, 0, 1])
    head = (b"POST /api/v1/uploads HTTP/1.1\r\nHost: api.example.com:5555\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n")
    body = b"{\"chunk\":\"" + b"x" * 1200
    later = b"y" * 1400
    SYN, ACK, PSH = 0x02, 0x10, 0x08
    with open(out, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        t = 1_700_000_000 * 1_000_000
        for i in range(n):
            client = bytes([10, 1 + (i >> 16) % 200, (i >> 8) & 255, i & 255])
            cport = 20000 + (i % 40000)
            cisn, sisn = (i * 7919) & 0xFFFFFFFF, (i * 104729) & 0xFFFFFFFF
            pkts = [
                (client, server, tcp(cport, 5555, cisn, 0, SYN)),
                (server, client, tcp(5555, cport, sisn, cisn + 1, SYN | ACK)),
                (client, server, tcp(cport, 5555, cisn + 1, sisn + 1, ACK)),
                (client, server, tcp(cport, 5555, cisn + 1, sisn + 1, ACK | PSH, head + body)),
                # A segment beyond a hole: buffered out of order.
                (client, server, tcp(cport, 5555, (cisn + 1 + len(head) + len(body) + 5000) & 0xFFFFFFFF,
                                     sisn + 1, ACK, later)),
            ]
            for src, dst, seg in pkts:
                data = frame(src, dst, seg)
                t += 10
                f.write(struct.pack("<IIII", t // 1_000_000, t % 1_000_000, len(data), len(data)))
                f.write(data)
    print(f"halfopen: {n} connections -> {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
