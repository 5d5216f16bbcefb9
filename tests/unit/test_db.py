"""A province whose account store is on PostgreSQL (`account_store.engine: postgresql`): what its
hosts are given (govmail/services/db.py), and that no password of the store lands in a file others
may read or in a diff."""

import dataclasses

import pytest

from govmail.data import load_province
from govmail.data.schema import AccountStore
from govmail.host import contract
from govmail.service import Refused

from .test_roles import declared


def on_postgresql(key: str):
    cfg = load_province(key)
    return dataclasses.replace(cfg, model=cfg.model.model_copy(update={"account_store": AccountStore(engine="postgresql")}))


def services(cfg, secrets_dir):
    import importlib

    from govmail.secrets import province_secrets
    from govmail.service import Context
    from govmail.services import for_roles

    ctx = Context(cfg, cfg.mail_host, ("mail",), {}, addresses={cfg.mail_host: "10.9.0.2"},
                  secrets=province_secrets(cfg, secrets_dir))
    out = {}
    for name in for_roles(["mail"]):
        svc = importlib.import_module(f"govmail.services.{name}").service(ctx)
        if svc is not None:
            out[name] = svc
    return out


def files(svcs):
    return {f.dest: f for s in svcs.values() for f in s.files}


def test_a_postgresql_province_gets_the_database_and_every_reader_reaches_it_with_its_own_role(tmp_path):
    cfg = on_postgresql("thainguyen")
    svcs = services(cfg, tmp_path)
    assert "postgresql-17" in svcs["db"].packages and "dovecot-pgsql" in svcs["dovecot"].packages
    assert "postfix-pgsql" in svcs["postfix"].packages and "postfix-sqlite" not in svcs["postfix"].packages
    f = files(svcs)
    writer = (tmp_path / "store-password-writer").read_text().strip()
    reader = (tmp_path / "store-password-reader").read_text().strip()
    assert writer != reader and len(writer) >= 32
    # The host tools: the writer, root only. Dovecot and Postfix: the reader, in files of their group.
    dsn = f[contract.PATHS["store_dsn"]]
    assert f"user=govmail password={writer}" in dsn.content.decode() and (dsn.mode, dsn.user) == (0o600, "root")
    inc = f[contract.PATHS["store_dovecot"]]
    assert f'password = "{reader}"' in inc.content.decode() and (inc.mode, inc.group) == (0o640, "dovecot")
    assert "sql_driver = pgsql" in f["/etc/dovecot/dovecot.conf"].content.decode()
    maps = f"{contract.PATHS['postfix_maps']}/mailboxes.cf"
    assert f"password = {reader}" in f[maps].content.decode() and f[maps].mode == 0o640
    assert "proxy:pgsql:" in f["/etc/postfix/main.cf"].content.decode()
    assert "proxy:sqlite:" not in f["/etc/postfix/main.cf"].content.decode() + f["/etc/postfix/master.cf"].content.decode()
    # Every file holding a store password is kept out of diffs; no other file holds one.
    for dest, fl in f.items():
        if writer.encode() in fl.content or reader.encode() in fl.content:
            assert fl.secret and fl.mode & 0o007 == 0, f"{dest}: secret={fl.secret}, mode {fl.mode:o}"
    hba = f["/etc/postgresql/17/main/pg_hba.conf"].content.decode()
    assert "trust" not in hba.split("# TYPE")[1] and "host    govmail  govmail,govmail_read  127.0.0.1/32  scram-sha-256" in hba


def test_a_sqlite_province_is_given_nothing_of_postgresql(tmp_path):
    svcs = services(load_province("daknong"), tmp_path)
    assert "db" not in svcs and not (tmp_path / "store-password-writer").exists()
    assert contract.PATHS["store_dsn"] not in files(svcs)


def test_a_store_password_edited_into_something_unsafe_is_refused_with_where_it_lives(tmp_path):
    cfg = on_postgresql("thainguyen")
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "store-password-reader").write_text("short pass'; DROP\n")
    with pytest.raises(Refused, match="store-password-reader of thainguyen is not 16 to 128 letters"):
        services(cfg, tmp_path)


def test_a_store_moved_to_postgresql_is_not_silently_read_from_sqlite_again(tmp_path):
    """The data set back to sqlite on a host whose store moved: refused before anything is touched
    (the tools would write PostgreSQL while Dovecot and Postfix read the old file)."""
    from govmail.secrets import province_secrets
    from govmail.service import Context
    from govmail.services import accounts

    cfg = load_province("daknong")
    ctx = Context(cfg, cfg.mail_host, ("mail",), {"store_engine": "postgresql\n"},
                  secrets=province_secrets(cfg, tmp_path))
    with pytest.raises(Refused, match="moving a store back is not supported"):
        accounts.service(ctx)
    assert accounts.service(dataclasses.replace(ctx, probes={"store_engine": "sqlite"})).name == "accounts"


def test_the_roles_of_mail_declare_the_same_as_the_four_parts_on_postgresql_too(tmp_path):
    cfg = on_postgresql("laichau")
    host = cfg.mail_host
    assert declared(cfg, host, ["mail"], tmp_path) == declared(cfg, host, ["db", "web", "store", "mx"], tmp_path)


def test_hosts_deploying_in_parallel_make_one_set_of_secrets_and_all_get_it(tmp_path):
    """The hosts of a province deploy in parallel, each asking for the secrets the first time."""
    from concurrent.futures import ThreadPoolExecutor

    from govmail.secrets import province_secrets

    cfg = on_postgresql("thainguyen")
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: province_secrets(cfg, tmp_path), range(8)))
    assert all(g == got[0] for g in got) and got[0]["ssh_public"].startswith(b"ssh-ed25519 ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup-passphrase", "backup-ssh-key", "backup-ssh-key.pub",
                                                          "store-password-reader", "store-password-writer"]


def on_two_db_hosts(key: str = "bacninh"):
    """The province with a second db host (Patroni's standby); its backup host is etcd's witness."""
    from govmail.data.schema import Host

    cfg = on_postgresql(key)
    hosts = [*cfg.model.hosts, Host(name=f"db2.{cfg.domain}", roles=["db"])]
    return dataclasses.replace(cfg, model=cfg.model.model_copy(update={"hosts": hosts}))


def host_services(cfg, host, secrets_dir):
    import importlib

    from govmail.secrets import province_secrets
    from govmail.service import Context
    from govmail.services import for_roles

    addresses = {h.name: f"10.9.0.{i + 2}" for i, h in enumerate(cfg.model.hosts)}
    ctx = Context(cfg, host, tuple(cfg.roles(host)), {}, addresses=addresses, secrets=province_secrets(cfg, secrets_dir))
    out = {}
    for name in for_roles(cfg.roles(host)):
        svc = importlib.import_module(f"govmail.services.{name}").service(ctx)
        if svc is not None:
            out[name] = svc
    return out


def test_two_db_hosts_run_the_store_under_patroni_with_etcd_on_them_and_the_witness(tmp_path):
    import yaml

    cfg = on_two_db_hosts()
    mail, backup, db2 = cfg.mail_host, cfg.backup_host, f"db2.{cfg.domain}"
    assert cfg.store_cluster and cfg.db_hosts == [mail, db2] and cfg.etcd_members == [mail, db2, backup]
    hosts = {h: host_services(cfg, h, tmp_path) for h in (mail, db2, backup)}
    # etcd: one member on each of the three, all naming the same three.
    for h in (mail, db2, backup):
        env = files(hosts[h])["/etc/default/etcd"].content.decode()
        assert "ETCD_INITIAL_CLUSTER=mail.bacninh.gov.vn=http://10.9.0.2:2380,db2.bacninh.gov.vn=http://10.9.0.4:2380," \
               "backup.bacninh.gov.vn=http://10.9.0.3:2380" in env
    assert "db" not in hosts[backup] and "accounts" not in hosts[db2]  # one host syncs the accounts: the store's
    for h, me in ((mail, "10.9.0.2"), (db2, "10.9.0.4")):
        db = hosts[h]["db"]
        assert {"patroni", "python3-etcd", "postgresql-17"} <= set(db.packages)
        f = files(hosts[h])
        doc = yaml.safe_load(f[contract.PATRONI["config"]].content)
        assert doc["scope"] == "17-main" and doc["name"] == h
        assert doc["etcd3"]["hosts"] == ["10.9.0.2:2379", "10.9.0.4:2379", "10.9.0.3:2379"]
        assert doc["postgresql"]["connect_address"] == f"{me}:5432"
        assert doc["bootstrap"]["dcs"]["synchronous_mode"] is True
        hba = doc["postgresql"]["pg_hba"]
        assert "host    replication  govmail_replication  10.9.0.4/32  scram-sha-256" in hba
        assert "host    replication  govmail_replication  10.9.0.2/32  scram-sha-256" in hba
        assert "host    replication  govmail_replication  127.0.0.1/32  scram-sha-256" in hba  # Patroni's own
        assert not any("trust" in line for line in hba)
        # Patroni writes pg_hba.conf and postgresql.conf: govmail does not (nor a cluster of Debian's own).
        assert "/etc/postgresql/17/main/pg_hba.conf" not in f
        assert f["/etc/postgresql-common/createcluster.d/govmail.conf"].early
        assert [(u.name, u.running) for u in db.units] == [("postgresql@17-main", False), ("patroni@17-main", True)]
        assert "restart" not in db.actions  # a restart of the primary would be a failover
        dropin = f["/etc/systemd/system/patroni@17-main.service.d/govmail.conf"].content.decode()
        assert ("db-wait-cluster" in dropin) == (h == db2)  # only the second waits for the cluster to exist
        assert f[contract.PATRONI["config"]].secret and f[contract.PATRONI["config"]].mode == 0o600
    # Every reader tries both db hosts; the host tools keep to the one that takes writes.
    f = files(hosts[mail])
    dsn = f[contract.PATHS["store_dsn"]].content.decode()
    assert "host=127.0.0.1,10.9.0.4 port=5432,5432" in dsn and "target_session_attrs=read-write" in dsn
    dovecot = f[contract.PATHS["store_dovecot"]].content.decode()
    assert dovecot.count("pgsql ") == 2 and dovecot.count("tcp_user_timeout = 5000") == 2
    postfix = f[f"{contract.PATHS['postfix_maps']}/mailboxes.cf"].content.decode()
    reader = (tmp_path / "store-password-reader").read_text().strip()
    assert f"hosts = postgresql://govmail_read:{reader}@127.0.0.1:5432/govmail?connect_timeout=5&keepalives_idle=5" in postfix
    assert f" postgresql://govmail_read:{reader}@10.9.0.4:5432/govmail?" in postfix and "tcp_user_timeout=5000" in postfix
    for role in ("replication", "rewind", "patroni"):
        assert len((tmp_path / f"store-password-{role}").read_text().strip()) >= 32


def test_one_db_host_makes_no_cluster_secret_and_no_etcd(tmp_path):
    cfg = on_postgresql("bacninh")
    assert not cfg.store_cluster and cfg.etcd_members == []
    svcs = host_services(cfg, cfg.mail_host, tmp_path)
    assert "etcd" not in svcs and "patroni" not in svcs["db"].packages
    assert not (tmp_path / "store-password-replication").exists()


@pytest.mark.parametrize("layout", ["one db host", "two db hosts"])
def test_every_postfix_store_map_is_one_setting_per_line_with_each_host_whole(layout, tmp_path):
    # A loop in the template once glued `dbname` to the hosts line ("hosts = 127.0.0.1:5432dbname =
    # govmail"): every lookup of Thái Nguyên failed with "requires dbname setting".
    import re

    cfg = on_postgresql("thainguyen") if layout == "one db host" else on_two_db_hosts()
    f = files(host_services(cfg, cfg.mail_host, tmp_path))
    maps = [d for d in f if d.startswith(contract.PATHS["postfix_maps"] + "/") and d.endswith(".cf")]
    assert len(maps) >= 4
    host = re.compile(r"(127\.0\.0\.1|10\.9\.0\.\d+):5432|postgresql://govmail_read:[A-Za-z0-9_-]+@(127\.0\.0\.1|10\.9\.0\.\d+)"
                      r":5432/govmail\?connect_timeout=5(&[a-z_]+=\d+)+")
    for dest in maps:
        settings = {}
        for line in f[dest].content.decode().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            key, sep, value = line.partition(" = ")
            assert sep and re.fullmatch(r"[a-z_]+", key) and key not in settings, (dest, line)
            settings[key] = value
        assert {"hosts", "query"} <= set(settings), (dest, settings.keys())
        hosts = settings["hosts"].split()
        assert len(hosts) == len(cfg.db_hosts) and all(host.fullmatch(h) for h in hosts), (dest, settings["hosts"])
        assert ("dbname" in settings) == (layout == "one db host"), dest  # a URI carries its own


def test_a_db_host_of_its_own_listens_on_its_own_private_address_for_the_readers(tmp_path):
    """One db host apart from the mail host: PostgreSQL listens on the loopback and on the db host's
    own address (not a reader's, which it cannot bind), and lets the readers' addresses in."""
    from govmail.data.schema import Host

    cfg = on_postgresql("bacninh")
    hosts = [Host(name="mail.bacninh.gov.vn", roles=["mx", "store", "web"]), Host(name="db.bacninh.gov.vn", roles=["db"]),
             *[h for h in cfg.model.hosts if "mail" not in h.roles]]
    cfg = dataclasses.replace(cfg, model=cfg.model.model_copy(update={"hosts": hosts}))
    f = files(host_services(cfg, "db.bacninh.gov.vn", tmp_path))  # mail 10.9.0.2, db 10.9.0.3
    assert "listen_addresses = '127.0.0.1,10.9.0.3'\n" in f["/etc/postgresql/17/main/conf.d/govmail.conf"].content.decode()
    assert "10.9.0.2/32" in f["/etc/postgresql/17/main/pg_hba.conf"].content.decode()
    one = files(services(on_postgresql("thainguyen"), tmp_path / "one"))  # every reader on the db host itself
    assert "listen_addresses = '127.0.0.1'\n" in one["/etc/postgresql/17/main/conf.d/govmail.conf"].content.decode()


def test_the_cluster_ports_answer_the_provinces_hosts_only_and_a_one_host_store_opens_none(tmp_path):
    """Two db hosts: PostgreSQL, Patroni's REST API and etcd on the db hosts, etcd on the witness,
    each in an nft table that lets the province's hosts in and drops everyone else on those ports."""
    cfg = on_two_db_hosts()  # mail 10.9.0.2, backup 10.9.0.3 (the witness), db2 10.9.0.4
    allowed = "ip saddr { 10.9.0.2, 10.9.0.3, 10.9.0.4 } accept"
    for host, ports in (("mail.bacninh.gov.vn", "5432, 8008, 2379, 2380"), ("db2.bacninh.gov.vn", "5432, 8008, 2379, 2380"),
                        ("backup.bacninh.gov.vn", "2379, 2380")):
        f = files(host_services(cfg, host, tmp_path))
        nft = f["/etc/govmail/private_ports/private.nft"].content.decode()
        assert f"tcp dport {{ {ports} }} {allowed}" in nft, (host, nft)
        assert f"tcp dport {{ {ports} }} counter drop" in nft and "delete table inet govmail_private" in nft
        unit = f["/etc/systemd/system/govmail-private-ports.service"].content.decode()
        assert "Before=etcd.service postgresql@17-main.service patroni@17-main.service dovecot.service" in unit
    one = services(on_postgresql("thainguyen"), tmp_path / "one")  # read on the loopback only
    assert "private_ports" not in one
