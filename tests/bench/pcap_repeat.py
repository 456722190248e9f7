#!/usr/bin/env python3
"""Writes N back-to-back copies of an Ethernet/IPv4 pcap, each copy's clients
moved to their own address (10.K.K.K, the side whose port is not the server
port), so the copies are distinct connections to the analyzer. Timestamps
are shifted so the copies follow each other. Checksums are left as they are:
the analyzer never validates them.

    pcap_repeat.py IN OUT N [SERVER_PORT]
"""
import struct
import sys


def main():
    src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    server_port = int(sys.argv[4]) if len(sys.argv) > 4 else 5555
    data = open(src, "rb").read()
    magic = data[:4]
    if magic != b"\xd4\xc3\xb2\xa1":
        sys.exit("only little-endian microsecond pcap is handled")
    _, _, _, _, _, linktype = struct.unpack("<HHiIII", data[4:24])
    if linktype != 1:
        sys.exit("only Ethernet captures are handled")
    records = []
    off = 24
    while off + 16 <= len(data):
        sec, usec, incl, orig = struct.unpack("<IIII", data[off:off + 16])
        records.append((sec, usec, orig, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    first = records[0][0] * 1_000_000 + records[0][1]
    last = records[-1][0] * 1_000_000 + records[-1][1]
    span = last - first + 1_000_000
    with open(dst, "wb") as out:
        out.write(data[:24])
        for k in range(n):
            client = bytes([10, 100 + (k >> 16) % 100, (k >> 8) & 255, k & 255])
            for sec, usec, orig, frame in records:
                f = bytearray(frame)
                if len(f) >= 34 and f[12:14] == b"\x08\x00":
                    ihl = (f[14] & 15) * 4
                    t = 14 + ihl
                    if len(f) >= t + 4 and f[23] == 6:
                        sport, dport = struct.unpack(">HH", f[t:t + 4])
                        if sport != server_port:
                            f[26:30] = client
                        elif dport != server_port:
                            f[30:34] = client
                ts = sec * 1_000_000 + usec + k * span
                out.write(struct.pack("<IIII", ts // 1_000_000, ts % 1_000_000, len(f), orig))
                out.write(f)


if __name__ == "__main__":
    main()
