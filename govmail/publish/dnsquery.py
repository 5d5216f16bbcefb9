"""What a province publishes, as a given resolver serves it: TXT records asked with dnspython (its
resolver retries over TCP when an answer is truncated, which a DKIM key of 4096 bits is, and
decodes every record as the RFCs say). Used by `govmail verify` (the published DKIM record) and
the lab tests."""

from __future__ import annotations

import dns.exception
import dns.resolver


def system_resolver() -> str:
    """The first nameserver of this machine's /etc/resolv.conf (127.0.0.1 when none)."""
    try:
        return dns.resolver.Resolver().nameservers[0]
    except (dns.resolver.NoResolverConfiguration, IndexError, OSError):
        return "127.0.0.1"


def txt_records(name: str, server: str, timeout: float = 5) -> list[str]:
    """The TXT strings (each record's strings joined) `server` answers for `name`; [] when it has
    none. OSError (TimeoutError) when the server does not answer in `timeout` seconds."""
    r = dns.resolver.Resolver(configure=False)
    r.nameservers = [server]
    r.lifetime = timeout
    try:
        answer = r.resolve(name, "TXT", raise_on_no_answer=False)
    except (dns.resolver.NXDOMAIN, dns.resolver.NoNameservers):
        return []
    except dns.exception.Timeout as e:
        raise TimeoutError(f"{server} did not answer for {name} in {timeout:g} s") from e
    return [b"".join(rd.strings).decode(errors="replace") for rd in answer]
