"""A real browser for the lab tests: Debian's chromium and chromium-driver, driven by Selenium.

Chromium resolves the lab's names to the containers (`--host-resolver-rules`) and trusts exactly the
lab hosts' certificates (`--ignore-certificate-errors-spki-list`, their public keys' SHA-256), so
it reaches https://mail.<domain>/ as an official's browser would and no other certificate passes.
Screenshots go to GOVMAIL_ARTIFACTS (default `artifacts/` in the checkout), one per step, named
after the test and the step.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from govmail import lab

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("GOVMAIL_ARTIFACTS", ROOT / "artifacts")) / "screenshots"
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def spki_hashes(pems) -> list[str]:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the given certificates (the lab hosts' own)."""
    out = []
    for pem in pems:
        der = subprocess.run(["openssl", "x509", "-in", str(pem), "-pubkey", "-noout"], capture_output=True,
                             check=True).stdout
        key = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=der, capture_output=True,
                             check=True).stdout
        out.append(base64.b64encode(hashlib.sha256(key).digest()).decode())
    return out


def resolver_rules() -> str:
    hosts = lab.load_state()["hosts"]
    rules = []
    for name, h in hosts.items():
        rules.append(f"MAP {name} {h['ip']}")
        domain = name.split(".", 1)[1] if name.startswith("mail.") else None
        if domain:
            for sub in ("autoconfig", "autodiscover", "mta-sts"):
                rules.append(f"MAP {sub}.{domain} {h['ip']}")
    return ", ".join(rules + ["MAP * ~NOTFOUND"])


class Browser:
    """One Chromium session; `shot(step)` saves a screenshot named after the test and the step."""

    def __init__(self, test_name: str, pems):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="govmail-chromium-")
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1100",
                  "--lang=vi-VN", f"--user-data-dir={self.profile}", f"--host-resolver-rules={resolver_rules()}",
                  "--ignore-certificate-errors-spki-list=" + ",".join(spki_hashes(pems)),
                  "--no-first-run", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-features=Translate,OptimizationHints,MediaRouter"):
            opts.add_argument(a)
        opts.add_experimental_option("prefs", {"download.default_directory": self.profile})
        opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console: CSP violations show there
        self.driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)
        self.driver.set_page_load_timeout(60)
        self.name = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)[:80]
        self.step = 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def shot(self, what: str) -> Path:
        self.step += 1
        path = ARTIFACTS / f"{self.name}-{self.step:02d}-{re.sub(r'[^A-Za-z0-9_-]+', '_', what)}.png"
        self.driver.save_screenshot(str(path))
        return path

    def csp_violations(self) -> list[str]:
        """What the page's Content-Security-Policy refused since the last call (the browser's console)."""
        return [e["message"] for e in self.driver.get_log("browser") if "Content Security Policy" in e["message"]]

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
