"""Targets: the one place that knows whether a province's hosts are lab containers or real machines.

`current()` reads the environment variable GOVMAIL_TARGET (nowhere else reads it):

- `lab` (default): the containers `govmail lab up` boots (govmail/lab/__init__.py), reached by address on
  the lab bridge with the lab's SSH key; the controller's own lab address is never banned by
  fail2ban; ClamAV's signature mirror is out of reach; what a province publishes in DNS is served
  by the lab resolver, refreshed whenever it changes;
- `hosts`: the host names of the data file (`hosts[].name`), reached by SSH as GOVMAIL_SSH_USER
  (default root) with the operator's SSH configuration (or the file GOVMAIL_SSH_CONFIG names, for
  `govmail` commands that run ssh themselves); the operator publishes the zone that
  `govmail dns` prints (read back from GOVMAIL_RESOLVER, else this machine's resolver).

A target answers: which hosts a province has and how pyinfra reaches them (`inventory`), the ssh
command for one host (`ssh`), where the controller keeps a province's secrets and published
records, where deploy logs go, the mail host's public address, where the hosts reach each other
(`private_addresses`), and target-neutral facts the services need (`trusted_clients`,
`signature_mirror`, `verifiable_tls`). Services receive these answers through
the engine's Context; they never import this module or the lab.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Optional

from .data import ProvinceConfig, load_province
from .service import Published

ENV = "GOVMAIL_TARGET"


class TargetError(Exception):
    pass


class ControllerRecords(Published):
    """What a province publishes, as the controller keeps it: the DKIM record its mail host made,
    in the province's secrets directory (not secret: it is published)."""

    def __init__(self, target: "Target"):
        self.target = target

    def path(self, cfg, domain: Optional[str] = None) -> Path:
        domain = domain or cfg.domain
        selector = dict(cfg.dkim_keys)[domain]
        return self.target.secrets_dir(cfg.key) / "dkim" / f"{domain}.{selector}.txt"

    def dkim_record(self, cfg, domain: Optional[str] = None) -> Optional[str]:
        try:
            return self.path(cfg, domain).read_text().strip() or None
        except OSError:
            return None

    def set_dkim_record(self, cfg, value: str, domain: Optional[str] = None) -> bool:
        """Keep `value` as the record of the domain's key (default: the province's domain); True when
        it changed (then the target publishes)."""
        value = value.strip()
        if not value.startswith("v=DKIM1"):
            raise TargetError(f"{cfg.mail_host}: not a DKIM record: {value[:60]!r}")
        if self.dkim_record(cfg, domain) == value:
            return False
        p = self.path(cfg, domain)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(value + "\n")
        self.target.records_changed(cfg)
        return True

    def forget(self, province: str) -> None:
        import shutil

        d = self.target.secrets_dir(province) / "dkim"
        if d.exists():
            shutil.rmtree(d)


class Target:
    name = ""
    trusted_clients: tuple[str, ...] = ()
    signature_mirror = True
    # Whether other hosts' certificates can be verified (an alert relay's STARTTLS).
    verifiable_tls = True

    def __init__(self):
        self.published = ControllerRecords(self)

    def inventory(self, cfg: ProvinceConfig) -> list[tuple[str, dict]]:
        raise NotImplementedError

    def ssh(self, host_name: str) -> list[str]:
        """The ssh command that reaches a host (for a session that streams: migrate, testinfra)."""
        raise NotImplementedError

    def run(self, host_name: str, command: str, input: str | bytes | None = None, text: bool = True,
            capture: bool = True, timeout: float | None = 600) -> subprocess.CompletedProcess:
        """`command` (a shell command line) on a host: the one way the commands reach a host."""
        return subprocess.run([*self.ssh(host_name), command], input=input, text=text, capture_output=capture,
                              timeout=timeout)

    def secrets_base(self) -> Path:
        raise NotImplementedError

    def reboot(self, host_name: str, timeout: float = 600) -> None:
        """Reboot a host and return once it answers SSH again (a new boot: its boot id changed)."""
        def boot_id() -> str | None:
            try:
                r = self.run(host_name, "cat /proc/sys/kernel/random/boot_id", timeout=20)
            except subprocess.TimeoutExpired:
                return None
            return r.stdout.strip() if r.returncode == 0 else None

        before = boot_id()
        try:
            self.run(host_name, "systemctl reboot", timeout=30)
        except subprocess.TimeoutExpired:
            pass  # the connection went down with the host
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            now = boot_id()
            if now and now != before:
                return
            time.sleep(5)
        raise TargetError(f"{host_name} did not answer SSH within {timeout:.0f} s of its reboot")

    def provinces(self) -> list[str]:
        """The provinces this target has hosts for (what a command without a province acts on): every
        province with an inventory file (inventories/<province>.py)."""
        from .data import ROOT, available_provinces

        return [p for p in available_provinces() if (ROOT / "inventories" / f"{p}.py").exists()]

    def secrets_dir(self, province: str) -> Path:
        base = os.environ.get("GOVMAIL_SECRETS")
        return Path(base or self.secrets_base()) / province

    def log_dir(self) -> Path:
        return Path(os.environ.get("GOVMAIL_LOG_DIR") or "/tmp")

    def host_address(self, cfg: ProvinceConfig) -> Optional[str]:
        host = next(h for h in cfg.model.hosts if h.name == cfg.mail_host)
        return host.address

    def private_addresses(self, cfg: ProvinceConfig) -> dict[str, str]:
        """Where the province's hosts reach each other (the monitor scrapes there): each host's
        `private_address`, else its `address`, else its name."""
        return {h.name: h.private_address or h.address or h.name for h in cfg.model.hosts}

    def records_changed(self, cfg: ProvinceConfig) -> None:
        """A record the province publishes changed on the controller."""

    def resolver(self) -> str:
        """The DNS server to read what a province publishes from (`govmail verify`): GOVMAIL_RESOLVER,
        else this machine's own (/etc/resolv.conf)."""
        from .publish.dnsquery import system_resolver

        return os.environ.get("GOVMAIL_RESOLVER") or system_resolver()


class RealHosts(Target):
    name = "hosts"

    def inventory(self, cfg):
        user = os.environ.get("GOVMAIL_SSH_USER", "root")
        extra = {"ssh_config_file": os.environ["GOVMAIL_SSH_CONFIG"]} if os.environ.get("GOVMAIL_SSH_CONFIG") else {}
        return [(h.name, {"province": cfg.key, "roles": cfg.roles(h.name), "ssh_user": user, **extra})
                for h in cfg.model.hosts]

    def ssh(self, host_name):
        config = os.environ.get("GOVMAIL_SSH_CONFIG")  # e.g. a province's bastion (ProxyJump), other keys
        return ["ssh", *(["-F", config] if config else []), f"{os.environ.get('GOVMAIL_SSH_USER', 'root')}@{host_name}"]

    def secrets_base(self):
        return Path.home() / ".config" / "govmail" / "secrets"


class LabTarget(Target):
    """The lab of systemd-nspawn containers (govmail/lab/__init__.py)."""

    name = "lab"
    signature_mirror = False  # lab hosts reach the Debian mirror only
    verifiable_tls = False  # lab certificates are self-signed: an alert relay's cannot be verified

    def __init__(self):
        super().__init__()
        from . import lab

        self.lab = lab
        self.trusted_clients = (lab.GATEWAY,)

    def inventory(self, cfg):
        inv = self.lab.load_inventory()
        out = []
        for h in cfg.model.hosts:
            entry = inv["hosts"].get(h.name)
            if entry is None:
                raise TargetError(
                    f"{h.name} is not in the lab ({self.lab.LAB_DIR / 'inventory.json'}). Start it with "
                    f"`govmail lab up {cfg.key}`, or deploy to the real hosts with {ENV}=hosts.")
            out.append((h.name, {
                "province": cfg.key, "roles": cfg.roles(h.name), "ssh_hostname": entry["ip"], "ssh_user": "root",
                "ssh_key": inv["ssh_key"], "ssh_known_hosts_file": "/dev/null",
                "ssh_strict_host_key_checking": "no",
            }))
        return out

    def provinces(self):
        """The provinces whose every host is up in the lab."""
        hosts = self.lab.load_state().get("hosts", {})
        return [p for p in super().provinces() if all(h.name in hosts for h in load_province(p).model.hosts)]

    def ssh(self, host_name):
        h = self.lab.load_state()["hosts"].get(host_name)
        if not h:
            raise TargetError(f"{host_name} is not in the lab (govmail lab up ...)")
        return ["ssh", *self.lab.ssh_options(), f"root@{h['ip']}"]

    def secrets_base(self):
        return self.lab.LAB_DIR / "secrets"

    def log_dir(self):
        if os.environ.get("GOVMAIL_LOG_DIR"):
            return Path(os.environ["GOVMAIL_LOG_DIR"])
        return self.lab.LAB_DIR / "logs" if os.geteuid() == 0 else Path("/tmp")

    def private_addresses(self, cfg):
        hosts = self.lab.load_state().get("hosts", {})
        return {h.name: (hosts.get(h.name) or {}).get("ip") or h.name for h in cfg.model.hosts}

    def host_address(self, cfg):
        return super().host_address(cfg) or (self.lab.load_state()["hosts"].get(cfg.mail_host) or {}).get("ip")

    def resolver(self):
        return self.lab.GATEWAY  # the lab resolver serves every province's zone

    def records_changed(self, cfg):
        # The lab resolver serves what `govmail dns` prints, so lab hosts verify each other's DKIM.
        self.lab.refresh_dns(records=self.dns_lines)

    def dns_lines(self, provinces: list[str]) -> list[str]:
        from .publish.dns import dnsmasq_lines

        out = []
        running = set(provinces)
        switched = set(self.lab.load_state().get("dns_switched", []))
        cfgs = {p: load_province(p) for p in provinces}
        # Domains a merged province in the lab has taken over (`govmail lab dns-switch`, the
        # runbook's DNS step): its old host no longer publishes them, only its DKIM key.
        taken = {x.domain for p in switched & running for x in cfgs[p].model.predecessors}
        for p, cfg in cfgs.items():
            # A predecessor whose own (old) lab host runs keeps its domain's mail until the switch.
            elsewhere = frozenset(x.domain for x in cfg.model.predecessors if x.key in running and p not in switched)
            if p not in switched:
                elsewhere |= {cfg.domain} & taken
            out += dnsmasq_lines(cfg, {d: self.published.dkim_record(cfg, d) for d, _ in cfg.dkim_keys}, elsewhere)
        return out

    # The lab's life cycle, with the province records the resolver serves.
    def up(self, provinces: list[str], fresh: bool = False) -> dict:
        return self.lab.up(provinces, fresh=fresh, records=self.dns_lines, new_mail_host=self._new_mail_host)

    def down(self, provinces: Optional[list[str]] = None, keep_image: bool = True) -> None:
        self.lab.down(provinces, keep_image=keep_image, records=self.dns_lines)

    def rebuild(self, host_name: str) -> None:
        self.lab.rebuild(host_name)

    def reboot(self, host_name: str, timeout: float = 600) -> None:
        self.lab.restart(host_name)

    def switch_dns(self, province: str, back: bool = False) -> None:
        """The runbook's DNS switch, in the lab: the predecessors' domains of a merged province are
        served by its host (MX, SPF, DMARC...) instead of their old hosts (`back`: undo)."""
        with self.lab.lab_lock("switching the lab's DNS"):
            state = self.lab.load_state()
            switched = set(state.get("dns_switched", []))
            switched = switched - {province} if back else switched | {province}
            state["dns_switched"] = sorted(switched)
            self.lab.save_state(state)
        self.lab.refresh_dns(records=self.dns_lines)
        domains = ", ".join(p.domain for p in load_province(province).model.predecessors)
        self.lab.log(f"DNS: {domains} {'back on their old hosts' if back else 'now on ' + load_province(province).mail_host}")

    def _new_mail_host(self, province: str) -> None:
        """A new lab mail host (made from the image, unlike `lab rebuild`) makes its own DKIM key;
        the record kept for the province's previous lab host belongs to a key that no longer
        exists, and a deploy would otherwise wait for a restore that will never bring it back."""
        if (self.secrets_dir(province) / "dkim").exists():
            self.lab.log(f"{province}: forgetting the DKIM record of its previous lab mail host")
            self.published.forget(province)


_TARGETS = {"lab": LabTarget, "hosts": RealHosts}
_current: dict[str, Target] = {}


def current() -> Target:
    name = os.environ.get(ENV, "lab")
    if name not in _TARGETS:
        raise TargetError(f"{ENV}={name!r}: allowed values are {', '.join(repr(k) for k in _TARGETS)}")
    if name not in _current:
        _current[name] = _TARGETS[name]()
    return _current[name]


def lab() -> LabTarget:
    """The lab target, whatever GOVMAIL_TARGET says (for `govmail lab ...` and the lab tests)."""
    if "lab" not in _current:
        _current["lab"] = LabTarget()
    return _current["lab"]  # type: ignore[return-value]


def is_lab() -> bool:
    return current().name == "lab"
