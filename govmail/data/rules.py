"""Cross-field rules of a province's policy and TLS files: values that are each valid, together not.

`check_policy(cfg, add)` and `check_tls(cfg, add)` run after the directory is built
(govmail/data/__init__.py); each problem goes to `add(path, message)` with its key path and what is allowed.

- spam: the refusal score is above the score that marks a message (`policy.spam`);
- inactivity: an action has the period it needs (`after_months`), a deletion an action before it;
- sizes: the largest attachment fits the message size limit by construction; that limit must fit
  the smallest mailbox of the province (a mailbox that cannot hold one message of the allowed
  size is a contradiction of the data, not a policy);
- TLS: the certificate and key files lie inside the data file's directory, parse as PEM, match
  each other, cover the mail host's name (and a merged province's old mail names, which its old
  users' clients and other servers keep using) and are not expired.
"""

from __future__ import annotations

import datetime
from pathlib import Path

from .config import MiB


def check_policy(cfg, add) -> None:
    pol = cfg.policy
    if pol.spam.reject_score <= pol.spam.add_header_score:
        add(("policy", "spam", "reject_score"),
            f"{pol.spam.reject_score} is not above add_header_score {pol.spam.add_header_score}: a message must be "
            f"marked as spam before it is refused; allowed: reject_score > add_header_score ({pol.spam.article})")
    ina = pol.inactivity
    if ina.action != "none" and ina.after_months is None:
        add(("policy", "inactivity", "action"),
            f"{ina.action!r} needs after_months (the months without login before it); without it the rule "
            f"would never apply ({ina.article})")
    if ina.action == "none":
        for k in ("after_months", "delete_after_notice_months"):
            if getattr(ina, k) is not None:
                add(("policy", "inactivity", k), f"{getattr(ina, k)} has no effect with action 'none'; give an action "
                    "(revoke, suspend) or leave it null")
    if ina.notify_superior and not ina.notify_agency:
        add(("policy", "inactivity", "notify_superior"),
            "the superior is told after the managing unit: set notify_agency too (LC Art. 8.1 tells both)")
    quotas = [(a.quota_mb, a.address) for a in cfg.accounts]
    if quotas:
        smallest, who = min(quotas)
        limit = cfg.message_size_limit
        if limit > smallest * MiB:
            key = ("policy", "attachment", "max_mb" if pol.attachment.max_mb else "message_size_mb")
            add(key, f"the message size limit ({limit:,} bytes) is larger than the smallest mailbox ({who}, "
                f"{smallest} MiB): it could never receive a message of the allowed size; allowed: attachment limit "
                f"<= message limit <= every mailbox's quota ({'; '.join(dict.fromkeys([pol.attachment.article, pol.quota.article]))})")


def check_tls(cfg, add) -> None:
    tls = cfg.model.tls
    if bool(tls.certificate) != bool(tls.key):
        add(("tls",), "give both `certificate` and `key`, or neither (self-signed)")
    base = cfg.file.parent.resolve()
    files = {}
    for k in ("certificate", "key"):
        v = getattr(tls, k)
        if not v:
            continue
        f = (base / v).resolve()
        if not f.is_relative_to(base):
            add(("tls", k), f"{v!r} leads outside the data file's directory (a link?); keep the files beside it")
        elif not f.is_file():
            add(("tls", k), f"{v!r}: no such file in the data file's directory")
        elif f.stat().st_size > 1024 * 1024:
            add(("tls", k), f"{v!r} is {f.stat().st_size:,} bytes; a PEM file is far smaller")
        else:
            files[k] = f
    if len(files) == 2:
        from .predecessors import mail_names

        for path, msg in tls_problems(files["certificate"], files["key"], cfg.mail_host, old_names=mail_names(cfg),
                                      mx_apart=[m for m in cfg.mx_hosts if m != cfg.mail_host]):
            add(("tls",) + path, msg)


def tls_problems(cert_file: Path, key_file: Path, host: str, now=None, old_names=(), mx_apart=()) -> list[tuple[tuple, str]]:
    """What is wrong with a given certificate and key for the province: the pair, the dates, and the names
    it must hold: the mail host's, the predecessors' old mail names, and each MX host apart's (the same
    certificate is installed on every host; other mail servers check an MX's name under MTA-STS)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtensionOID

    out = []
    try:
        certs = x509.load_pem_x509_certificates(cert_file.read_bytes())
    except ValueError as e:
        return [(("certificate",), f"not a PEM certificate chain ({e})")]
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (ValueError, TypeError) as e:
        return [(("key",), f"not an unencrypted PEM private key ({str(e).splitlines()[0]})")]
    leaf = certs[0]
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(serialization.Encoding.DER, pub) != key.public_key().public_bytes(
            serialization.Encoding.DER, pub):
        out.append((("key",), "does not match the certificate (another key pair); allowed: the key of the first "
                    "certificate in the chain"))
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if leaf.not_valid_after_utc < now:
        out.append((("certificate",), f"expired on {leaf.not_valid_after_utc:%Y-%m-%d}; give a current certificate"))
    elif leaf.not_valid_before_utc > now:
        out.append((("certificate",), f"not valid before {leaf.not_valid_before_utc:%Y-%m-%d}"))
    try:
        names = leaf.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        names = []
    if not any(_covers(n, host) for n in names):
        out.append((("certificate",), f"does not cover the mail host {host} (its names: {', '.join(names) or 'none'}); "
                    "allowed: a certificate whose subjectAltName holds the host's name"))
    missing = [o for o in old_names if not any(_covers(n, o) for n in names)]
    if missing:
        out.append((("certificate",), f"does not cover {', '.join(missing)}, the predecessors' mail names their users' "
                    "clients and other mail servers keep using (they reach this host once DNS is switched); allowed: "
                    f"a certificate whose subjectAltName also holds {', '.join(missing)} (its names: "
                    f"{', '.join(names) or 'none'})"))
    uncovered = [m for m in mx_apart if not any(_covers(n, m) for n in names)]
    if uncovered:
        out.append((("certificate",), f"does not cover the MX host{'s' * (len(uncovered) > 1)} "
                    f"{', '.join(uncovered)} (the same certificate serves every host of the province, and other "
                    "mail servers check an MX's name under MTA-STS); allowed: a certificate whose subjectAltName "
                    f"also holds {', '.join(uncovered)} or a wildcard for it (its names: {', '.join(names) or 'none'})"))
    return out


def _covers(pattern: str, host: str) -> bool:
    pattern = pattern.lower()
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host
