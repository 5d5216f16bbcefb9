"""The engine's rules, without a host: what a deploy installs, changes, reloads and restarts, and the
host-side program that validates and swaps files (run here on a scratch tree)."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from govmail.data import load_province
from govmail.plan import (
    INSTALL_DONE,
    PENDING,
    HostState,
    bundle,
    make_plan,
    probe_script,
    sections,
    state_script,
    warm_launch,
)
from govmail.service import Context, File, Refused, Service, Validator

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["base", "tls", "accounts", "dovecot", "clamav", "rspamd", "postfix", "passwd", "fail2ban", "logs"]


def declared(probes=None, names=NAMES, province="daknong", mirror=True):
    cfg = load_province(province)
    ctx = Context(cfg, cfg.mail_host, ("mail",), probes or {}, trusted_clients=("10.77.0.1",), signature_mirror=mirror)
    return [s for s in (importlib.import_module(f"govmail.services.{n}").service(ctx) for n in names) if s]


def bare() -> HostState:
    return HostState(files={}, installed=set(), units={}, checks={}, pending=set())


def up_to_date(services) -> HostState:
    files = {f.dest: (hashlib.sha1(f.content).hexdigest(), f.mode, f.user, f.group) for s in services for f in s.files}
    checks = {e.check: True for s in services for e in s.ensures}
    checks.update({u.ready: True for s in services for u in s.units if u.ready})
    units = {u.name: ("enabled" if u.running else "disabled", "active" if u.running else "inactive")
             for s in services for u in s.units}
    return HostState(files, {p for s in services for p in s.packages}, units, checks, set())


def changed_files(plan) -> dict[str, list[str]]:
    return {f.dest: marks for _, files in plan.changed for f, marks, _ in files}


def test_a_bare_host_gets_every_package_in_one_transaction_every_file_and_every_start():
    services = declared()
    plan = make_plan(services, bare())
    assert set(plan.missing_packages) == {p for s in services for p in s.packages}
    assert len(changed_files(plan)) == sum(len(s.files) for s in services)
    script = "\n".join(plan.activate)
    # The slow daemons start first, without waiting, once systemd has read the new unit files (their
    # drop-ins among them); the rest after; every daemon is waited for.
    first_slow = next(i for i, line in enumerate(plan.activate) if line.startswith("systemctl start --no-block"))
    assert "systemctl daemon-reload" in "\n".join(plan.activate[:first_slow])
    assert not any(line.startswith("systemctl start ") for line in plan.activate[:first_slow])
    assert first_slow < next(i for i, line in enumerate(plan.activate) if line == "systemctl start dovecot")
    assert "systemctl start --no-block rspamd" in script and "systemctl start dovecot" in script
    assert "11332" in script and "clamd.ctl" in script and "postfix status" in script
    # Started with the new files: no reload on top of the start.
    assert "systemctl reload dovecot" not in script and "postfix reload" not in script


def test_rspamd_warms_its_cache_during_the_install_and_starts_after_the_others_once_it_is_warm():
    services = declared()
    plan = make_plan(services, bare())
    assert [u.name for u in plan.warms] == ["rspamd"]
    launch = warm_launch(plan.warms[0])
    assert launch.startswith(f"rm -f {INSTALL_DONE}; nohup timeout") and "rspamadm lua" in launch
    script = "\n".join(plan.activate)
    wait_then_start = script.index("/run/govmail-warm-rspamd.pid")
    assert script.index("systemctl start dovecot") < wait_then_start < script.index("systemctl start --no-block rspamd")
    assert script.index("systemctl start --no-block clamav-daemon") < script.index("systemctl start dovecot")
    # rspamd already installed (only stopped): nothing to warm, started with the other slow daemons.
    state = up_to_date(services)
    state.units["rspamd"] = ("enabled", "inactive")
    plan = make_plan(services, state)
    assert plan.warms == [] and plan.activate[0] == "systemctl start --no-block rspamd"


def test_a_host_that_has_everything_gets_nothing_to_do():
    services = declared()
    plan = make_plan(services, up_to_date(services))
    assert (plan.missing_packages, plan.fixes, plan.changed, plan.meta_only, plan.activate) == ([], [], [], [], [])


def test_a_file_with_the_same_bytes_but_another_mode_is_only_chmodded():
    services = declared()
    state = up_to_date(services)
    sha, _, user, group = state.files["/etc/dovecot/dovecot.conf"]
    state.files["/etc/dovecot/dovecot.conf"] = (sha, 0o666, user, group)
    plan = make_plan(services, state)
    assert [f.dest for f in plan.meta_only] == ["/etc/dovecot/dovecot.conf"] and not plan.changed and not plan.activate


def test_a_new_certificate_reloads_postfix_and_dovecot_and_restarts_the_password_service(tmp_path, monkeypatch):
    tls = Service("tls", files=[File("/etc/govmail/tls/fullchain.pem", b"new", action="changed")])
    services = declared(names=["dovecot", "postfix", "passwd"])
    state = up_to_date(services)
    plan = make_plan([tls, *services], state)
    assert sorted(changed_files(plan)["/etc/govmail/tls/fullchain.pem"]) == \
        ["dovecot-reload", "passwd-restart", "postfix-reload"]
    script = "\n".join(plan.activate)
    assert "systemctl reload dovecot" in script and "postfix check && postfix reload" in script
    assert "systemctl restart govmail-passwd" in script and "systemctl restart postfix" not in script


def test_a_main_cf_change_reloads_postfix_and_only_a_restart_only_parameter_restarts_it():
    services = declared(names=["postfix"], probes={"postfix_restart_only": "all\nall"})
    state = up_to_date(services)
    state.files["/etc/postfix/main.cf"] = ("0" * 40, 0o644, "root", "root")
    plan = make_plan(services, state)
    assert changed_files(plan)["/etc/postfix/main.cf"] == ["postfix-reload"]
    assert "postfix reload" in "\n".join(plan.activate) and "systemctl restart postfix" not in "\n".join(plan.activate)

    services = declared(names=["postfix"], probes={"postfix_restart_only": "loopback-only\nall"})
    plan = make_plan(services, state)
    assert changed_files(plan)["/etc/postfix/main.cf"] == ["postfix-restart"]
    assert "postfix check && systemctl restart postfix" in "\n".join(plan.activate)


def test_a_marker_left_by_an_interrupted_deploy_is_acted_on_with_no_file_changed():
    services = declared(names=["dovecot"])
    state = up_to_date(services)
    state.pending = {"dovecot-reload"}
    plan = make_plan(services, state)
    assert not plan.changed
    assert any("systemctl reload dovecot" in line and f"rm -f {PENDING}/dovecot-reload" in line for line in plan.activate)


def test_a_daemon_found_stopped_is_started_and_its_pending_reload_dropped():
    services = declared(names=["dovecot"])
    state = up_to_date(services)
    state.units["dovecot"] = ("enabled", "failed")
    state.pending = {"dovecot-reload"}
    script = "\n".join(make_plan(services, state).activate)
    assert "systemctl start dovecot" in script and "systemctl reload dovecot" not in script
    assert f"rm -f {PENDING}/dovecot-reload" in script


def test_one_daemon_restarted_for_not_answering_leaves_its_siblings_to_the_services_restart():
    """The monitor's Alertmanager moved to another address (so its readiness check fails before the
    deploy) while Prometheus's flags changed too: restarting Alertmanager alone is not the service's
    restart, and Prometheus must get its own."""
    from govmail.service import Unit

    svc = Service(name="monitor", packages=(), files=[File("/etc/default/prometheus", b"ARGS='--new'\n", action="restart")],
                  units=[Unit("prometheus-alertmanager", ready="check-am"), Unit("prometheus", ready="check-prom")],
                  actions={"restart": "systemctl restart prometheus-alertmanager prometheus"})
    state = up_to_date([svc])
    state.files["/etc/default/prometheus"] = ("old", 0o644, "root", "root")
    state.checks["check-am"] = False
    script = "\n".join(make_plan([svc], state).activate)
    assert "systemctl restart prometheus-alertmanager\n" in script + "\n"
    assert "systemctl restart prometheus-alertmanager prometheus" in script, script
    # both found stopped and started: they read the new files, no restart after
    state.units = {"prometheus-alertmanager": ("enabled", "failed"), "prometheus": ("enabled", "inactive")}
    state.checks["check-am"] = True
    script = "\n".join(make_plan([svc], state).activate)
    assert "systemctl start prometheus\n" in script + "\n" and "systemctl restart" not in script, script


def test_a_unit_file_change_reloads_systemd_before_anything_starts():
    services = declared(names=["passwd"])
    state = up_to_date(services)
    state.files["/etc/systemd/system/govmail-passwd.service"] = None
    plan = make_plan(services, state)
    assert "systemd-daemon-reload" in changed_files(plan)["/etc/systemd/system/govmail-passwd.service"]
    assert "systemctl daemon-reload" in plan.activate[0] or "daemon-reload" in plan.activate[1]


def test_the_read_script_reports_files_checks_and_markers(tmp_path):
    present = tmp_path / "a.conf"
    present.write_text("x\n")
    os.chmod(present, 0o640)
    script = state_script([str(present), str(tmp_path / "missing")], [], [], ["true", "false"])
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True).stdout.splitlines()
    state = HostState.parse(sections(out), [str(present), str(tmp_path / "missing")], [], ["true", "false"])
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    assert state.files[str(present)][:2] == (hashlib.sha1(b"x\n").hexdigest(), 0o640)
    assert state.files[str(present)][2] == user and state.files[str(tmp_path / "missing")] is None
    assert state.checks == {"true": True, "false": False}


# ---------------------------------------------------------------------------- govmail/host/apply.py


def run_apply(tmp_path: Path, changed) -> subprocess.CompletedProcess:
    data = bundle(changed)
    stage = tmp_path / "stage"
    stage.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(stage)
    return subprocess.run([sys.executable, str(stage / "apply.py"), str(stage), "--root", str(tmp_path / "root")],
                          capture_output=True, text=True)


def owner() -> tuple[str, str]:
    import grp
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


@pytest.fixture
def live(tmp_path):
    conf = tmp_path / "root/etc/svc"
    conf.mkdir(parents=True)
    (conf / "svc.conf").write_text("good = 1\n")
    (conf / "other.conf").write_text("kept\n")
    return conf


def svc_with(content: bytes, name="svc") -> list:
    user, group = owner()
    # The validator refuses any line with "bad" in the service's configuration as it would be.
    v = Validator("/etc/svc", "! grep -rn bad {dir} || { echo 'bad setting found'; exit 1; }")
    s = Service(name, files=[File("/etc/svc/svc.conf", content, mode=0o640, user=user, group=group)],
                validator=v, actions={"reload": "true"})
    return [(s, [(f, [f"{name}-reload"], False) for f in s.files])]


def test_apply_swaps_a_validated_file_with_its_mode_and_leaves_a_marker(tmp_path, live):
    r = run_apply(tmp_path, svc_with(b"good = 2\n"))
    assert r.returncode == 0, r.stderr
    assert (live / "svc.conf").read_text() == "good = 2\n" and (live / "other.conf").read_text() == "kept\n"
    assert oct((live / "svc.conf").stat().st_mode & 0o777) == "0o640"
    assert (tmp_path / "root" / PENDING.lstrip("/") / "svc-reload").exists()
    assert not list(live.glob("*.govmail-new"))


def test_apply_refuses_a_file_that_does_not_validate_and_changes_nothing(tmp_path, live):
    first = svc_with(b"good = 3\n", name="first")
    first[0][0].files[0] = File("/etc/svc/first.conf", b"fine\n", user=owner()[0], group=owner()[1])
    first[0][1][0] = (first[0][0].files[0], ["first-reload"], True)
    r = run_apply(tmp_path, first + svc_with(b"bad = 1\n"))
    assert r.returncode == 1
    assert "/etc/svc/svc.conf NOT installed" in r.stderr and "bad setting found" in r.stderr
    assert (live / "svc.conf").read_text() == "good = 1\n" and not list(live.glob("*.govmail-new"))
    # The service before it was installed and keeps its marker: the next deploy reloads it.
    assert (live / "first.conf").read_text() == "fine\n"
    markers = sorted(p.name for p in (tmp_path / "root" / PENDING.lstrip("/")).iterdir())
    assert markers == ["first-reload"]


def test_the_bundle_holds_the_plan_the_files_and_the_program(tmp_path):
    data = bundle(svc_with(b"good = 2\n"))
    blob = hashlib.sha256(b"good = 2\n").hexdigest()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        plan = json.load(tar.extractfile("plan.json"))
        modes = {m.name: m.mode for m in tar.getmembers()}
    assert sorted(names) == ["apply.py", f"files/{blob}", "plan.json"]
    assert plan["services"][0]["files"][0]["dest"] == "/etc/svc/svc.conf" and modes[f"files/{blob}"] == 0o600


def extract(tmp_path: Path, data: bytes) -> Path:
    stage = tmp_path / "stage"
    stage.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(stage)
    return stage


def apply_stage(tmp_path: Path, stage: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(stage / "apply.py"), str(stage), "--root", str(tmp_path / "root")],
                          capture_output=True, text=True)


def test_apply_installs_nothing_from_a_bundle_whose_file_is_not_the_planned_one(tmp_path, live):
    """Two runs meeting in one staging directory once wrote Roundcube's config over main.cf: a file
    is installed only as the bytes the plan names (its SHA-256), and a missing one stops it all."""
    stage = extract(tmp_path, bundle(svc_with(b"good = 2\n")))
    blob = next((stage / "files").iterdir())
    blob.write_bytes(b"<?php // another service's file\n")
    r = apply_stage(tmp_path, stage)
    assert r.returncode == 1 and "not the planned file" in r.stderr and "nothing installed" in r.stderr
    assert (live / "svc.conf").read_text() == "good = 1\n"
    blob.unlink()
    r = apply_stage(tmp_path, stage)
    assert r.returncode == 1 and "/etc/svc/svc.conf: the transferred copy is missing" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and (live / "svc.conf").read_text() == "good = 1\n"


def test_apply_installs_nothing_when_another_declared_file_changed_since_the_host_was_read(tmp_path, live):
    """A deploy planned from a read made before another deploy (or a hand edit) changed a file it did
    not mean to send would leave the host half one, half the other: it stops instead."""
    expected = {"/etc/svc/other.conf": hashlib.sha1(b"kept\n").hexdigest()}
    (live / "other.conf").write_text("changed by another deploy\n")
    r = apply_stage(tmp_path, extract(tmp_path, bundle(svc_with(b"good = 2\n"), expected)))
    assert r.returncode == 1, r.stderr
    assert "/etc/svc/other.conf: changed on the host since this deploy read it" in r.stderr
    assert (live / "svc.conf").read_text() == "good = 1\n"
    (live / "other.conf").write_text("kept\n")
    shutil.rmtree(tmp_path / "stage")
    r = apply_stage(tmp_path, extract(tmp_path, bundle(svc_with(b"good = 2\n"), expected)))
    assert r.returncode == 0 and (live / "svc.conf").read_text() == "good = 2\n", r.stderr


def test_apply_records_every_declared_file_as_written_but_not_one_the_host_consumes(tmp_path, live):
    """What `govmail verify` compares the live files with (files_as_deployed)."""
    from govmail.host.contract import PATHS

    user, group = owner()
    expected = {"/etc/svc/other.conf": hashlib.sha1(b"kept\n").hexdigest()}
    changed = svc_with(b"good = 2\n")
    once = File("/etc/svc/new-passwords.json", b"{}", user=user, group=group, consumed=True)
    changed[0][1].append((once, [], False))
    r = apply_stage(tmp_path, extract(tmp_path, bundle(changed, expected)))
    assert r.returncode == 0, r.stderr
    record = json.loads((tmp_path / "root" / PATHS["deployed_files"].lstrip("/")).read_text())
    assert record == {"version": 1, "files": {"/etc/svc/other.conf": hashlib.sha1(b"kept\n").hexdigest(),
                                              "/etc/svc/svc.conf": hashlib.sha1(b"good = 2\n").hexdigest()},
                      "directories": []}


def test_a_host_that_gets_packages_is_checked_again_after_they_are_installed():
    """Read before the install, a bare host's checks and unit states say nothing of what the packages
    bring (a vacuous `! grep` on a file not there yet, a unit a package enables): every ensure is
    planned, each re-checked on the host, and units that must be off are turned off regardless."""
    services = declared(probes={}, mirror=False)  # freshclam off, as in the lab
    state = up_to_date(services)
    state.installed.discard("rsyslog")
    state.units.pop("clamav-freshclam")
    plan = make_plan(services, state)
    assert plan.missing_packages == ["rsyslog"]
    assert len(plan.fixes) + len(plan.late_fixes) == sum(len(s.ensures) for s in services)
    assert "systemctl disable -q --now clamav-freshclam" in "\n".join(plan.activate)


def test_a_fix_runs_only_while_its_check_fails_and_sets_its_markers_first(tmp_path):
    from govmail.plan import guarded
    from govmail.service import Ensure

    flag, count = tmp_path / "made", tmp_path / "count"
    e = Ensure("made once", f"test -e {flag}", f"echo x >> {count} && touch {flag}")
    script = guarded(e, []).replace("mkdir -p", "true")
    for _ in range(2):
        subprocess.run(["sh", "-c", script], check=True)
    assert count.read_text() == "x\n"
    failing = Ensure("broken", "false", "exit 3")
    r = subprocess.run(["sh", "-c", guarded(failing, [])], capture_output=True, text=True)
    assert r.returncode == 1 and "govmail: broken failed" in r.stderr


def test_the_stored_accounts_probe_reads_back_every_address_beside_the_next_probe(tmp_path, monkeypatch):
    from govmail.services import accounts

    users = tmp_path / "dovecot-users"
    addresses = [f"user{i}@daknong.gov.vn" for i in range(2000)]
    users.write_text("# header\n" + "".join(f"{a}:{{BLF-CRYPT}}x\n" for a in addresses))
    monkeypatch.setitem(accounts.contract.PATHS, "store", str(tmp_path / "absent.sqlite"))
    monkeypatch.setitem(accounts.contract.PATHS, "legacy_users", str(users))
    script = probe_script({**accounts.probes(load_province("daknong")), "next": "echo after"})
    out = sections(subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout.splitlines())
    assert accounts.stored_addresses("\n".join(out["stored_accounts"])) == set(addresses)
    assert out["next"] == ["after"]
    assert accounts.stored_addresses("") == set()
    with pytest.raises(Refused, match="unreadable"):  # a garbled answer stops the deploy, no guess
        accounts.stored_addresses("not base64 !")
    # A store that exists but does not answer (PostgreSQL down; here, no tool at all) is not read as
    # "no accounts" (which would issue every mailbox a new initial password): the deploy stops.
    dsn = tmp_path / "store.dsn"
    dsn.write_text("host=127.0.0.1 dbname=govmail\n")
    monkeypatch.setitem(accounts.contract.PATHS, "store_dsn", str(dsn))
    monkeypatch.setitem(accounts.contract.PATHS, "lib", str(tmp_path / "no-such-lib"))
    script = probe_script(accounts.probes(load_province("daknong")))
    out = sections(subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout.splitlines())
    assert out["store_engine"] == ["postgresql"]
    with pytest.raises(Refused, match="exists but did not answer"):
        accounts.stored_addresses("\n".join(out["stored_accounts"]))


def test_a_file_dropped_beside_govmails_is_found_and_one_govmail_debian_or_the_data_keeps_is_not(tmp_path):
    """contract.foreign_files_command, as the deploy's drift check and verify run it (here on a
    scratch directory: none of its files is a Debian package's)."""
    from govmail.host.contract import foreign_files_command

    d = tmp_path / "jail.d"
    d.mkdir()
    for name in ("govmail.local", "office.local", "wide-ignoreip.local", ".hidden.conf", "x.govmail-new"):
        (d / name).write_text("[DEFAULT]\n")
    (d / "sub").mkdir()
    (d / "dangling.conf").symlink_to(tmp_path / "nowhere")
    cmd = foreign_files_command(str(d), [str(d / "govmail.local"), str(d / "office.local")])
    found = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout.splitlines()
    assert sorted(found) == sorted(str(d / n) for n in (".hidden.conf", "dangling.conf", "wide-ignoreip.local"))
    # Several directories at once (as the deploy's first read asks), a name with a space, and a file a
    # Debian package ships (this machine's /etc/logrotate.d/apt, in dpkg's file list) left out.
    (d / "zz office.local").write_text("[DEFAULT]\n")
    e = tmp_path / "rsyslog.d"
    e.mkdir()
    (e / "00 quiet.conf").write_text("mail.* stop\n")
    cmd = foreign_files_command([str(d), str(e), "/etc/logrotate.d"], [str(d / "govmail.local")])
    found = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout.splitlines()
    assert str(d / "zz office.local") in found and str(e / "00 quiet.conf") in found and str(d / "office.local") in found
    if os.path.exists("/var/lib/dpkg/info/apt.list") and os.path.exists("/etc/logrotate.d/apt"):
        assert "/etc/logrotate.d/apt" not in found


def test_a_file_a_package_reads_while_it_installs_is_written_before_the_packages(tmp_path):
    # postgresql-common reads createcluster.d while postgresql-17 installs: Patroni's db hosts must
    # have it before, or Debian makes a cluster Patroni did not (govmail/services/db.py).
    import subprocess

    from govmail.engine import early_write

    dest = tmp_path / "etc" / "postgresql-common" / "createcluster.d" / "govmail.conf"
    body = b"create_main_cluster = false\n# 'quotes' $(not run) \\ \n"
    line = early_write(str(dest), body, 0o644)
    assert subprocess.run(["sh", "-c", line]).returncode == 0
    assert dest.read_bytes() == body and oct(dest.stat().st_mode & 0o777) == "0o644"
    assert not list(dest.parent.glob("*.govmail-early"))


def test_a_daemon_the_next_services_need_is_waited_for_before_they_act():
    # The store's Patroni must answer before the accounts' sync writes to it (a one-host store
    # taken over by Patroni: PostgreSQL is down for the seconds of the takeover).
    from govmail.service import Unit

    db = Service("db", units=[Unit("patroni@17-main", ready="pg_isready -q", gate=True)])
    later = Service("accounts", files=[File("/etc/govmail/directory.json", b"{}", action="sync")],
                    actions={"sync": "accounts sync"})
    other = Service("dovecot", units=[Unit("dovecot", ready="doveadm who")])
    body = make_plan([db, later, other], bare()).activate
    start, wait, sync = (next(i for i, line in enumerate(body) if text in line)
                         for text in ("systemctl start patroni@17-main", "until pg_isready -q", "accounts sync"))
    assert start < wait < sync
    assert body.index(next(line for line in body if "until doveadm who" in line)) > sync  # the rest: at the end


def test_hosts_that_share_a_role_restart_in_turn_and_a_one_host_province_takes_no_turn():
    from govmail.turns import restarts, turns_of

    lam, dn = load_province("lamdong"), load_province("daknong")
    assert turns_of(lam, ["mail", "proxy"]) == ("db", "mx", "store")  # mx2 receives, db2 keeps the standby, store2
    assert turns_of(lam, ["mx"]) == ("mx",) and turns_of(lam, ["backup"]) == ()
    assert turns_of(dn, ["mail"]) == ()
    from govmail.plan import Plan

    def plan(what, packages=()):
        return Plan(activate_what=list(what), missing_packages=list(packages))

    assert restarts(plan(["postfix: restart"])) and restarts(plan(["restart dovecot (not answering)"]))
    assert not restarts(plan(["postfix: reload", "start rspamd", "stop postgresql@17-main"]))
    # A first deploy (packages to install) starts everything together: etcd's members need each other.
    assert not restarts(plan(["postfix: restart"], packages=["postfix"]))
