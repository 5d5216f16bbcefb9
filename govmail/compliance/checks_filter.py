"""The compliance checks of mail filtering, each through the path mail takes where it can: rspamd
scoring and its actions, attachment rules and the archive inspector, the sender binding, the
antivirus, the outbound rate limit, DKIM signing. A file in rspamd's override.d turning one off, or
rspamd stopped, fails the clause it breaks."""

from __future__ import annotations

import json

from ..host import contract
from .base import check, postconf, running


@check
def spam_filter(h, cfg, _):
    running(h.ti, "rspamd")
    milters = (postconf(h.ti, "smtpd_milters"), postconf(h.ti, "milter_default_action"))
    assert milters == ("inet:127.0.0.1:11332", "tempfail"), f"smtpd_milters, milter_default_action: {milters}"
    actions = h.ti.check_output("rspamadm configdump actions").replace(".0;", ";").replace(";", "")
    sp = cfg.policy.spam
    for action, score in (("reject", sp.reject_score), ("add_header", sp.add_header_score)):
        assert f"{action} = {score:g}" in actions, f"rspamd actions: {' '.join(actions.split())}"
    return f"milter {milters[0]} ({milters[1]}); reject = {sp.reject_score:g}, add_header = {sp.add_header_score:g}"


@check
def no_content_sent_out(h, cfg, _):
    """rspamd's effective configuration (`rspamadm configdump`, every local.d and override.d file
    applied) sends no hash of a message's parts out: fuzzy_check is off."""
    dump = " ".join(h.ti.check_output("rspamadm configdump fuzzy_check").split())
    assert "enabled = false;" in dump, f"rspamd's fuzzy_check is on: {dump[:300]}"
    return "fuzzy_check off (rspamadm configdump fuzzy_check: enabled = false)"


@check
def attachment_rules(h, cfg, _):
    running(h.ti, "rspamd")
    rules = h.ti.file("/etc/rspamd/lua.local.d/govmail.lua").content_string
    missing = [e for e in cfg.policy.content.blocked_extensions if f'["{e}"] = true' not in rules]
    assert not missing, f"not in the blocked list: {missing}"
    assert f'local ENCRYPTED = "{cfg.policy.content.encrypted_archives}"' in rules and "GOVMAIL_ATTACHMENT" in rules
    return f"{len(cfg.policy.content.blocked_extensions)} extensions blocked by GOVMAIL_ATTACHMENT"


@check
def archive_inspection(h, cfg, _):
    """Through the path mail takes: rspamd, asked about a message carrying a program renamed .pdf in a
    zip in a zip, refuses it with govmail's GOVMAIL_ATTACHMENT (the inspector, which rspamd asks,
    finds it by content); rspamd or the inspector stopped fails it."""
    import base64
    import io
    import zipfile

    c, ti = cfg.policy.content, h.ti
    rules = json.loads(ti.file(contract.PATHS["inspector_rules"]).content_string)
    assert (rules["depth"], rules["blocked"]) == (c.archive_depth, c.blocked_extensions), f"inspect.json: {rules}"
    inner, outer = io.BytesIO(), io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("huong-dan.pdf", b"\x7fELF" + bytes(60))
    with zipfile.ZipFile(outer, "w") as z:
        z.writestr("tai-lieu.zip", inner.getvalue())
    data = base64.encodebytes(outer.getvalue()).decode()
    msg = (f"From: kiemtra@outside.example\nTo: {cfg.postmaster}\nSubject: govmail verify archives\n"
           "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
           "Tai lieu dinh kem.\n--b\nContent-Type: application/zip\nContent-Transfer-Encoding: base64\n"
           f"Content-Disposition: attachment; filename=govmail-check.zip\n\n{data}--b--\n")
    v = rspamd_verdict(ti, msg)
    symbols = v.get("symbols") or {}
    found = (symbols.get("GOVMAIL_ATTACHMENT") or {}).get("options") or []
    assert v.get("action") == "reject" and "GOVMAIL_ATTACHMENT" in symbols, \
        f"a program as .pdf in a zip in a zip: action {v.get('action')}, symbols {', '.join(sorted(symbols))[:300]}"
    return (f"depth {rules['depth']}; a program as .pdf in a zip in a zip, through rspamd: reject "
            f"(GOVMAIL_ATTACHMENT {' '.join(map(str, found))[:120]})")


@check
def sender_bound(h, cfg, _):
    master = h.ti.check_output("postconf -P")
    for service in ("submission/inet", "submissions/inet"):
        line = f"{service}/smtpd_sender_restrictions = reject_non_fqdn_sender,reject_sender_login_mismatch"
        assert line in master, f"{service}: no reject_sender_login_mismatch"
    running(h.ti, "rspamd")
    rules = h.ti.file("/etc/rspamd/lua.local.d/govmail.lua").content_string
    assert 'name = "GOVMAIL_FROM"' in rules, "no GOVMAIL_FROM rule in rspamd"
    for address, logins in cfg.senders.items():
        assert f'["{address}"] = {{ ' + "".join(f'["{x}"] = true, ' for x in logins) + "}" in rules, address
    return f"reject_sender_login_mismatch on 587/465; GOVMAIL_FROM with {len(cfg.senders)} senders"


def rspamd_verdict(ti, message: str, *options: str) -> dict:
    """What the host's rspamd answers for `message` (`rspamc --json` on its normal worker, as Postfix's
    milter would ask): its action, symbols and the headers it would add. Nothing is delivered."""
    import shlex

    r = ti.run(f"printf %s {shlex.quote(message)} | rspamc --json -h 127.0.0.1:11333 {' '.join(options)}")
    assert r.rc == 0, f"rspamc: {(r.stderr or r.stdout).strip()[:300]}"
    out = json.loads(r.stdout)
    return out.get("default", out) if isinstance(out, dict) else {}


EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


@check
def antivirus(h, cfg, _):
    """Through the path mail takes: rspamd, asked about a message carrying the EICAR test file,
    answers reject with ClamAV's symbol (a file in rspamd's override.d turning the antivirus off, or
    rspamd or clamd stopped, fails it)."""
    assert cfg.policy.antivirus.enabled, "virus scanning is disabled in the province's data"
    running(h.ti, "clamav-daemon")
    import base64

    # As mail clients attach a file: base64 (a raw 7bit part keeps its last line break, and the file's
    # MD5 is then not EICAR's).
    msg = (f"From: kiemtra@outside.example\nTo: {cfg.postmaster}\nSubject: govmail verify antivirus\n"
           "MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain\n\n"
           "Tep dinh kem.\n--b\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n"
           "Content-Disposition: attachment; filename=cong-van.txt\n\n"
           f"{base64.b64encode(EICAR.encode()).decode()}\n--b--\n")
    v = rspamd_verdict(h.ti, msg)
    symbols = sorted(v.get("symbols") or {})
    assert v.get("action") == "reject" and "CLAM_VIRUS" in symbols, \
        f"the EICAR test file: action {v.get('action')}, symbols {', '.join(symbols)[:300]}"
    return "the EICAR test file, through rspamd: reject (CLAM_VIRUS)"


@check
def outbound_limit(h, cfg, _):
    running(h.ti, "redis-server")
    dump = h.ti.check_output("rspamadm configdump ratelimit")
    ob = cfg.policy.outbound
    assert f"{ob.messages_per_hour} / 1h" in dump and f"burst = {ob.burst}" in dump, \
        f"rspamd ratelimit: {' '.join(dump.split())[:300]}"
    return f"ratelimit {ob.messages_per_hour} / 1h, burst {ob.burst}"


@check
def dkim_signing(h, cfg, _):
    from ..data.facts import dkim_paths

    key, record = dkim_paths(cfg)
    k = h.ti.file(key)
    assert k.exists and k.mode == 0o640 and k.group == "_rspamd", f"{key}: exists {k.exists}"
    want = h.ti.file(record).content_string.strip()
    assert want.startswith("v=DKIM1; k=rsa; p="), f"{record}: {want[:60]}"
    name = f"{cfg.model.dkim.selector}._domainkey.{cfg.domain}"
    if h.txt:
        published = h.txt(name)
        assert published == [want], f"DNS serves {published!r} for {name}, the host signs with {want[:40]}…"
    # Through the path mail takes: rspamd signs a message a user of the domain submits.
    sender = cfg.postmaster
    v = rspamd_verdict(h.ti, f"From: {sender}\nTo: {sender}\nSubject: govmail verify dkim\n\nkiem tra\n",
                       "--user", sender, "--from", sender, "--ip", "127.0.0.1")
    sig = "".join(str(v.get("dkim-signature") or "").split())
    assert f"d={cfg.domain};" in sig and f"s={cfg.model.dkim.selector};" in sig, \
        f"a message {sender} submits is not signed for {cfg.domain} (rspamd's signature: {sig[:80] or 'none'})"
    said = f"a submitted message signed d={cfg.domain}, s={cfg.model.dkim.selector}"
    return f"{said}; {name} published as the host's record ({want[:32]}…)" if h.txt else f"{said}; key {key}"
