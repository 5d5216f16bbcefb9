"""TLS: the host presents the certificate the data file names, checked with openssl s_client."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from govmail import lab

ROOT = Path(__file__).resolve().parents[2]


def s_client(host, port, cafile, starttls=None) -> subprocess.CompletedProcess:
    cmd = ["openssl", "s_client", "-connect", f"{host.ip}:{port}", "-servername", host.name,
           "-verify_return_error", "-verify_hostname", host.name, "-CAfile", str(cafile), "-brief"]
    if starttls:
        cmd += ["-starttls", starttls]
    return subprocess.run(cmd, input="", capture_output=True, text=True, timeout=30)


def test_a_certificate_named_in_the_data_is_installed_and_served_on_every_tls_port(lab_hosts, tmp_path):
    province, h = next(iter(lab_hosts.items()))
    # A provincial CA and a certificate for the mail host, as an operator would bring them.
    ca_key, ca = tmp_path / "ca.key", tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-days", "30", "-subj", "/CN=Lab provincial CA", "-keyout", ca_key, "-out", ca], check=True,
                   capture_output=True)
    data = tmp_path / "group_data"
    shutil.copytree(ROOT / "group_data", data)
    (data / "certs").mkdir()
    key, csr, cert = data / "certs/mail.key", tmp_path / "mail.csr", data / "certs/mail.pem"
    subprocess.run(["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", f"/CN={h.name}", "-keyout", key, "-out", csr], check=True, capture_output=True)
    # Every name the data check asks for: the mail host, each MX host apart, a merged province's old names.
    from govmail.data.predecessors import mail_names

    from .conftest import LabHost

    apart = [m for m in h.cfg.mx_hosts if m != h.name]
    names = [h.name, *apart, *mail_names(h.cfg)]
    ext = tmp_path / "ext"
    ext.write_text("subjectAltName=" + ",".join(f"DNS:{n}" for n in names) + "\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                    "-days", "30", "-extfile", ext, "-out", cert], check=True, capture_output=True)
    f = data / f"{province}.yml"
    d = yaml.safe_load(f.read_text())
    d["tls"] = {"certificate": "certs/mail.pem", "key": "certs/mail.key"}
    f.write_text(yaml.safe_dump(d, allow_unicode=True, sort_keys=False))

    try:
        r = subprocess.run([sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"],
                           cwd=ROOT, env=dict(os.environ, GOVMAIL_DATA_DIR=str(data)), capture_output=True, text=True)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
        for port, starttls in ((465, None), (587, "smtp"), (25, "smtp"), (993, None), (995, None), (143, "imap")):
            c = s_client(h, port, ca, starttls)
            assert c.returncode == 0 and "Verification: OK" in c.stderr, f"port {port}: {c.stderr[-800:]}"
            assert "TLSv1.3" in c.stderr or "TLSv1.2" in c.stderr
        assert h.run("postfix status", check=False).returncode == 0
        state = lab.load_state()["hosts"]
        for mx in apart:  # the same certificate on the MX hosts apart, for their port 25
            c = s_client(LabHost(province, h.cfg, mx, state[mx]["ip"]), 25, ca, "smtp")
            assert c.returncode == 0 and "Verification: OK" in c.stderr, f"{mx} port 25: {c.stderr[-800:]}"
    finally:
        # Back to the shipped data: the hosts make their own self-signed certificates again.
        for mx in [h.name, *apart]:
            state = lab.load_state()["hosts"]
            subprocess.run(["ssh", *lab.ssh_options(), f"root@{state[mx]['ip']}",
                            "rm -f /etc/govmail/tls/fullchain.pem /etc/govmail/tls/privkey.pem"], check=True)
        r = subprocess.run([sys.executable, "-m", "pyinfra", "-y", f"inventories/{province}.py", "deploy.py"],
                           cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]


def test_the_self_signed_certificate_names_the_province_in_its_own_letters(host):
    """The organisation of the certificate the host made is the province's name as written, not its
    UTF-8 bytes read one by one ("Äáº¯k NÃ´ng" for Đắk Nông)."""
    if host.cfg.model.tls.certificate:
        return  # the province brings its own certificate (checked above)
    subject = host.run("openssl x509 -noout -subject -nameopt utf8,sep_comma_plus,dn_rev "
                       "-in /etc/govmail/tls/fullchain.pem").stdout.strip()
    assert f"O=govmail {host.cfg.model.name}" in subject, subject
