"""The lab resolver serves each province's published records, as `govmail dns` prints them."""

from __future__ import annotations

import random
import socket
import struct
import subprocess

from govmail import lab

from .conftest import PROVINCES


def txt_records(name: str, server: str = lab.GATEWAY) -> list[str]:
    """A DNS TXT query over UDP with the standard library only: the answers' strings, joined."""
    qid = random.randrange(65536)
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    q += struct.pack(">HH", 16, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(q, (server, 53))
        data, _ = s.recvfrom(4096)
    _, flags, qd, an, _, _ = struct.unpack(">HHHHHH", data[:12])
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


def test_the_lab_resolver_serves_spf_and_dmarc_as_govmail_dns_prints_them(lab_hosts):
    for p in PROVINCES:
        cfg = lab_hosts[p].cfg
        zone = subprocess.run(["govmail", "dns", p], capture_output=True, text=True, check=True).stdout
        assert txt_records(cfg.domain) == ["v=spf1 mx -all"] and '"v=spf1 mx -all"' in zone
        [dmarc] = txt_records("_dmarc." + cfg.domain)
        assert dmarc.startswith("v=DMARC1; p=reject") and dmarc in zone
    assert txt_records("gmail.com") == []  # nothing outside the lab zones
