"""The ManageSieve guard's readings, without a host: the Sieve source, mailto: URIs, the wire format.
(Pigeonhole's own reading, sievec and sieve-dump, runs on the lab hosts: tests/lab/test_forwarding.py.)"""

from __future__ import annotations

import struct

import pytest

from govmail.host import sieve_check as sc
from govmail.host.sieve_guard import Malformed, Stream, proxy_header


def sending(src):
    return [(n, sc._targets(n, a, "encoded-character" in src)[0]) for n, a in sc.commands(src) if n in sc.SENDING]


def test_the_source_reading_finds_every_sending_command_and_nothing_in_strings_or_comments():
    src = ('require ["copy", "enotify"];\n# redirect "a@gmail.com";\n/* redirect "b@gmail.com"; */\n'
           'if header :contains "subject" "redirect \\"c@gmail.com\\";" { redirect :copy "d@x.gov.vn"; }\n'
           'elsif false { notify :from "e@x.gov.vn" :importance "1" "mailto:f@x.gov.vn?cc=g@yahoo.com"; }\n'
           'REDIRECT text:\nh@outside.test\n..dot\n.\n;\n')
    assert sending(src) == [("redirect", "d@x.gov.vn"), ("notify", "mailto:f@x.gov.vn?cc=g@yahoo.com"),
                            ("redirect", "h@outside.test\r\n.dot\r\n")]


def test_encoded_characters_are_read_as_pigeonhole_reads_them_when_the_script_asks_for_them():
    assert sending('require "encoded-character"; redirect "a@gm${hex:61}il.com";') == [("redirect", "a@gmail.com")]
    assert sending('redirect "a@gm${hex:61}il.com";') == [("redirect", "a@gm${hex:61}il.com")]


def test_a_mailto_uri_sends_to_its_path_and_its_to_cc_and_bcc():
    assert sc.mailto_addresses("mailto:a@x.gov.vn,b%40y.vn?cc=c@z.com&bcc=d@w.com&subject=hi&body=e@v.com") == [
        "a@x.gov.vn", "b@y.vn", "c@z.com", "d@w.com"]
    assert sc.mailto_addresses("xmpp:a@x") is None


def test_state_domains_are_matched_whole():
    domains = ["*.gov.vn", "gov.vn"]
    assert sc.is_state("daknong.gov.vn", domains) and sc.is_state("GOV.VN.", domains)
    assert not sc.is_state("evilgov.vn", domains) and not sc.is_state("gov.vn.evil.com", domains)
    assert sc._domain('"x y"@gmail.com') == "gmail.com" and sc._domain("x@a.gov\r\n.vn") is None


class Wire:
    def __init__(self, data):
        self.data = data

    def recv(self, n):
        out, self.data = self.data[:n], self.data[n:]
        return out


@pytest.mark.parametrize("data,why", [
    (b'NOOP "x {5+}\r\nhello\r\n', "a quoted string without its end"),  # would hide a command from one side
    (b'PUTSCRIPT abc{5+}\r\nhello\r\n', "right after an argument"),
    (b'PUTSCRIPT "x" {5}\r\nhelloX\r\n', "right after an argument"),
    (b'PUTSCRIPT "a\\b" "c"\r\n', "an escape of another character"),
    (b'PUTSCRIPT "x" {5+} \r\nhello\r\n', "a literal not at the end of its line"),
    (b'PUTSCRIPT "x" "a\rb"\r\n', "a quoted string without its end"),
])
def test_the_wire_is_read_strictly_so_the_guard_and_dovecot_never_see_different_commands(data, why):
    with pytest.raises(Malformed, match=why):
        Stream(Wire(data)).item()


def test_a_literal_and_a_response_code_are_read_whole():
    raw, args = Stream(Wire(b'PUTSCRIPT "x" {12+}\r\nredirect "a"\r\nNOOP\r\n')).item()
    assert args == [b"PUTSCRIPT", b"x", b'redirect "a"'] and raw.endswith(b'"a"\r\n')
    assert Stream(Wire(b'OK (TAG "a\\"b") "Done."\r\n')).item()[1] == [b"OK", b"TAG", b'a"b', b"Done."]


def test_the_proxy_header_tells_dovecot_the_client_and_its_tls():
    h = proxy_header(("10.77.0.1", 40000), ("10.77.0.10", 4190))
    assert h[:12] == b"\r\n\r\n\x00\r\nQUIT\n" and h[12:14] == b"\x21\x11"
    length = struct.unpack("!H", h[14:16])[0]
    body = h[16:]
    assert len(body) == length and body[:8] == bytes([10, 77, 0, 1, 10, 77, 0, 10])
    assert struct.unpack("!HH", body[8:12]) == (40000, 4190) and body[12:] == b"\x20\x00\x05\x01\x00\x00\x00\x00"
