"""A DNS TXT query over UDP with the standard library only (no resolver library needed): what a
province publishes, as a given resolver serves it. Used by `govmail verify` (the published DKIM
record) and the lab tests."""

from __future__ import annotations

import random
import socket
import struct


def system_resolver() -> str:
    """The first nameserver of this machine's /etc/resolv.conf (127.0.0.1 when none)."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parts[1]
    except OSError:
        pass
    return "127.0.0.1"


def txt_records(name: str, server: str, timeout: float = 5) -> list[str]:
    """The TXT strings (each record's strings joined) `server` answers for `name`."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode("idna") for p in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack(">HH", 16, 1)
    with socket.socket(socket.AF_INET6 if ":" in server else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(q, (server, 53))
        data, _ = s.recvfrom(4096)
    _, _flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
    pos = 12
    for _ in range(qd):  # skip the question
        while data[pos]:
            pos += data[pos] + 1
        pos += 5
    out = []
    for _ in range(an):
        pos += 2 if data[pos] & 0xC0 == 0xC0 else len(data[pos:].split(b"\0", 1)[0]) + 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", data[pos:pos + 10])
        pos += 10
        rdata, pos = data[pos:pos + rdlen], pos + rdlen
        if rtype == 16:
            parts, i = [], 0
            while i < len(rdata):
                parts.append(rdata[i + 1:i + 1 + rdata[i]].decode())
                i += 1 + rdata[i]
            out.append("".join(parts))
    return out
