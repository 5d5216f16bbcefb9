"""Roles (govmail/data/roles.py): `mail` is its four parts on one host, byte for byte, and the layouts
govmail cannot deploy are refused before any host is touched (their messages: tests/unit/bad_data/)."""

from __future__ import annotations

import hashlib
import importlib
import re
import shutil

import pytest

from govmail.data import ROOT, DataError, load_province
from govmail.data.roles import compact, expand, has
from govmail.secrets import province_secrets
from govmail.service import Context
from govmail.services import SERVICES, for_roles

# What today's one-host mail host runs, in the order it installs and activates them. A change here is a
# change of every deployed province: make it on purpose. (`db` declares nothing while the store is SQLite,
# `etcd` nothing unless two hosts carry the store, `private_ports` nothing unless other hosts reach what it serves.)
ONE_HOST = ["system", "updates", "base", "host_tools", "tls", "private_ports", "etcd", "db", "accounts", "dovecot", "standby", "sieve_guard", "clamav",
            "attachments", "rspamd", "postfix", "passwd", "webmail", "web", "fail2ban", "logs", "backup", "reports",
            "exporters"]


def test_the_mail_host_runs_what_it_always_ran_whether_named_mail_or_by_its_parts():
    assert for_roles(["mail"]) == ONE_HOST
    assert for_roles(["db", "web", "store", "mx"]) == ONE_HOST
    assert for_roles(["backup", "monitor"]) == ["system", "updates", "private_ports", "etcd", "backup_host", "exporters",
                                                "monitor"]
    assert for_roles(["monitor"]) == ["system", "updates", "private_ports", "etcd", "exporters", "monitor"]
    # every service belongs to a role, and every role's host starts with its baseline
    assert set(ONE_HOST) | {"backup_host", "monitor"} == {n for names in SERVICES.values() for n in names}


def test_role_words():
    assert expand(["mail", "backup"]) == ["mx", "store", "web", "db", "backup"]
    assert compact(["store", "db", "mx", "web", "monitor"]) == ["mail", "monitor"]
    assert compact(["mx", "store"]) == ["mx", "store"]
    assert has(["mail"], "db") and has(["mx", "store", "web", "db"], "mail") and not has(["mx", "store"], "mail")


def declared(cfg, host: str, roles, secrets_dir) -> dict:
    """Everything a host's services declare: each file's bytes and owner, the packages, units, actions."""
    addresses = {h.name: f"10.9.0.{i + 2}" for i, h in enumerate(cfg.model.hosts)}
    ctx = Context(cfg, host, tuple(roles), {}, trusted_clients=("10.77.0.1",), addresses=addresses,
                  secrets=province_secrets(cfg, secrets_dir))
    out = {"services": for_roles(roles)}
    for name in out["services"]:
        svc = importlib.import_module(f"govmail.services.{name}").service(ctx)
        if svc is None:
            continue
        for f in svc.files:
            if f.consumed:  # initial passwords: made afresh each time
                continue
            out[f.dest] = (hashlib.sha256(f.content).hexdigest(), f.mode, f.user, f.group, f.action)
        out[name] = repr((svc.packages, svc.units, svc.actions, svc.ensures, svc.reacts))
    return out


@pytest.mark.parametrize("province", ["laichau", "lamdong"])
def test_a_province_whose_data_names_the_four_parts_deploys_byte_for_byte_as_with_mail(province, tmp_path):
    shutil.copytree(ROOT / "group_data", tmp_path / "data")
    one = load_province(tmp_path / "data" / f"{province}.yml", cache=False)
    f = tmp_path / "data" / f"{province}.yml"
    text = f.read_text()
    [mail] = re.findall(r"roles: \[mail(?:, proxy)?\]\n", text)
    f.write_text(text.replace(mail, mail.replace("mail", "db, web, store, mx")))
    four = load_province(f, cache=False)
    assert four.mail_host == one.mail_host and four.hosts_with("store") == one.hosts_with("store")
    for h in one.model.hosts:
        assert four.roles(h.name) == one.roles(h.name)
        want = declared(one, h.name, one.roles(h.name), tmp_path / "secrets")
        assert declared(four, h.name, four.roles(h.name), tmp_path / "secrets") == want
    raw = next(x.roles for x in four.model.hosts if x.name == one.mail_host)  # as written, not compacted
    assert raw[:4] == ["db", "web", "store", "mx"]
    assert declared(four, one.mail_host, raw, tmp_path / "secrets") == declared(one, one.mail_host, ["mail"],
                                                                                 tmp_path / "secrets")


@pytest.mark.parametrize("roles, message", [
    ("[mx]\n  - name: store.corpus.gov.vn\n    roles: [store, web, db]",
     "hosts: the mail roles are on 2 hosts (mail.corpus.gov.vn, store.corpus.gov.vn); the mail host keeps mx, "
     "store and web together"),
    ("[mx, store, web]", "hosts: no host has role 'db' (or `mail`): the account store needs a host"),
    ("[mx, store, web]\n  - name: db.corpus.gov.vn\n    roles: [db]",
     "hosts[1].roles: with `account_store.engine: sqlite` the account store is a file on the mail host"),
    ("[mx, store]\n  - name: web.corpus.gov.vn\n    roles: [web, db]",
     "hosts: the mail roles are on 2 hosts (mail.corpus.gov.vn, web.corpus.gov.vn); the mail host keeps mx, "
     "store and web together"),
    ("[mail, proxy]", "hosts[0].roles: 'proxy' routes to stores apart, and no host has `store` alone"),
    ("[mail, store]", "hosts[0].roles: 'store' is already given by `mail`; list each role once"),
    ("[mx, mx, store, web, db]", "hosts[0].roles: 'mx' is given twice; list each role once"),
    ("[mx, store, web, db, backup]", "hosts[0].roles: a host cannot back itself up"),
    ("[store, web, db, mx, monitor]", "hosts[0].roles: the mail host cannot watch itself"),
])
def test_a_layout_govmail_cannot_deploy_gets_one_message_naming_it(roles, message, tmp_path):
    with pytest.raises(DataError) as e:
        load_province(corpus(tmp_path, roles), cache=False)
    got = [f"{p.path or '(top level)'}: {p.message}" for p in e.value.problems]
    assert len(got) == 1 and got[0].startswith(message), got


def corpus(tmp_path, roles: str, engine: str = "sqlite", backup: str = "[backup]"):
    """The bad-data corpus's province with the mail host's `roles` (more hosts may follow in the text)."""
    base = (ROOT / "tests" / "unit" / "bad_data" / "base.yml.txt").read_text()
    assert base.count("roles: [mail]") == 1
    shutil.copy(ROOT / "group_data" / "defaults.yml", tmp_path / "defaults.yml")
    if "backup" in roles:  # the base's backup host would be a second one
        backup = "[monitor]"
    base = base.replace("roles: [backup]", f"roles: {backup}").replace("roles: [mail]", f"roles: {roles}")
    (tmp_path / "corpus.yml").write_text(base + f"account_store:\n  engine: {engine}\n")
    return tmp_path / "corpus.yml"


DB2 = "\n  - name: db2.corpus.gov.vn\n    roles: [db]"


@pytest.mark.parametrize("roles, backup, message", [
    (f"[mail]{DB2}", "[backup]", None),  # the witness: the backup host, which watches the province
    (f"[mx, store, web]\n  - name: db1.corpus.gov.vn\n    roles: [db]{DB2}", "[backup, monitor]", None),
    ("[mx, store, web]\n  - name: db1.corpus.gov.vn\n    roles: [db]", "[backup]", None),
    (f"[mail]{DB2}\n  - name: db3.corpus.gov.vn\n    roles: [db]", "[backup]",
     "hosts: 3 hosts have role 'db' (mail.corpus.gov.vn, db2.corpus.gov.vn, db3.corpus.gov.vn); at most 2"),
    ("[mail]", "[backup, db]",
     "hosts: two hosts have role 'db': etcd, which elects the primary, needs a third member on a host without `db`"),
])
def test_the_account_store_on_postgresql_may_have_hosts_of_its_own_and_two_need_a_witness(roles, backup, message,
                                                                                          tmp_path):
    f = corpus(tmp_path, roles, engine="postgresql", backup=backup)
    if message is None:
        cfg = load_province(f, cache=False)
        assert cfg.db_hosts == [h.name for h in cfg.model.hosts if "db" in expand(h.roles)]
        return
    with pytest.raises(DataError) as e:
        load_province(f, cache=False)
    got = [f"{p.path or '(top level)'}: {p.message}" for p in e.value.problems]
    assert len(got) == 1 and got[0].startswith(message), got


MX2 = "\n  - name: mx2.corpus.gov.vn\n    roles: [mx]"


@pytest.mark.parametrize("roles, engine, message", [
    (f"[mail]{MX2}", "postgresql", None),
    (f"[mail]{MX2}\n  - name: mx3.corpus.gov.vn\n    roles: [mx]", "postgresql", None),
    (f"[mail]{MX2}", "sqlite", "hosts[1].roles: an MX host apart from the mail host reads the account store over "
                               "the network: set `account_store.engine: postgresql`"),
    # The mail host keeps its own Postfix (submission, Sieve's redirects).
    (f"[store, web, db]{MX2}", "postgresql", "hosts: the mail roles are on 2 hosts (mail.corpus.gov.vn, "
                                             "mx2.corpus.gov.vn); the mail host keeps mx, store and web together"),
    ("[mail]\n  - name: mx2.corpus.gov.vn\n    roles: [mx, db]", "postgresql",
     "hosts: the mail roles are on 2 hosts (mail.corpus.gov.vn, mx2.corpus.gov.vn)"),
])
def test_more_hosts_may_carry_mx_alone_beside_the_mail_host_on_postgresql(roles, engine, message, tmp_path):
    f = corpus(tmp_path, roles, engine=engine)
    if message is None:
        cfg = load_province(f, cache=False)
        assert cfg.mx_hosts[0] == cfg.mail_host == "mail.corpus.gov.vn" and "mx2.corpus.gov.vn" in cfg.mx_hosts
        return
    with pytest.raises(DataError) as e:
        load_province(f, cache=False)
    got = [f"{p.path or '(top level)'}: {p.message}" for p in e.value.problems]
    assert len(got) == 1 and got[0].startswith(message), got


STORE2 = "\n  - name: store2.corpus.gov.vn\n    roles: [store]"


@pytest.mark.parametrize("roles, engine, message", [
    (f"[mail, proxy]{STORE2}\n    agencies: [stnmt]", "postgresql", None),
    (f"[mail, proxy]{STORE2}", "postgresql", None),  # a store with no agency yet: every mailbox on the mail host
    (f"[mail]{STORE2}", "postgresql", "hosts[0].roles: store2.corpus.gov.vn holds mailboxes apart: the mail host "
                                      "routes logins and deliveries to it with Dovecot's proxy; add `proxy`"),
    (f"[mail, proxy]{STORE2}", "sqlite", "hosts[1].roles: a store apart from the mail host reads the account store "
                                         "over the network: set `account_store.engine: postgresql`"),
    ("[mail]\n  - name: store2.corpus.gov.vn\n    roles: [store, proxy]", "postgresql",
     "hosts: the mail roles are on 2 hosts"),
    (f"[mail, proxy]{STORE2}\n    agencies: [nope]", "postgresql",
     "hosts[1].agencies[0]: 'nope' is not an agency or district of the directory; known: stnmt"),
    (f"[mail, proxy]{STORE2}\n    agencies: [stnmt]\n  - name: store3.corpus.gov.vn\n    roles: [store]\n"
     "    agencies: [stnmt]", "postgresql",
     "hosts[2].agencies[0]: 'stnmt' is already held by store2.corpus.gov.vn; an agency's mailboxes stay together"),
    ("[mail, proxy]\n    agencies: [stnmt]" + STORE2, "postgresql",
     "hosts[0].agencies: only a store apart (roles: [store]) holds agencies' mailboxes"),
])
def test_stores_apart_sit_behind_the_mail_hosts_proxy_and_hold_the_agencies_named(roles, engine, message, tmp_path):
    f = corpus(tmp_path, roles, engine=engine)
    if message is None:
        cfg = load_province(f, cache=False)
        assert cfg.mail_host == "mail.corpus.gov.vn" and cfg.stores_apart == ["store2.corpus.gov.vn"]
        from govmail.services.accounts import accounts
        where = {a["address"]: a["store"] for a in accounts(cfg)}
        held = "store2.corpus.gov.vn" if "agencies" in roles else "mail.corpus.gov.vn"
        # the agency's people and its own mailbox; a mailbox of no agency stays on the mail host
        assert where["haunv.stnmt@corpus.gov.vn"] == where["stnmt@corpus.gov.vn"] == held
        assert set(where.values()) <= {held, "mail.corpus.gov.vn"}
        assert for_roles(cfg.roles("store2.corpus.gov.vn")) == [
            "system", "updates", "base", "host_tools", "tls", "private_ports", "accounts", "dovecot", "standby", "sieve_guard",
            "fail2ban", "logs", "backup", "reports", "exporters"]
        return
    with pytest.raises(DataError) as e:
        load_province(f, cache=False)
    got = [f"{p.path or '(top level)'}: {p.message}" for p in e.value.problems]
    assert len(got) == 1 and got[0].startswith(message), got
