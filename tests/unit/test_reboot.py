"""`govmail reboot`: the order hosts go in, and when the monitor's answer calls a host healthy
(govmail/cli/reboot.py, govmail/monitoring/health.py). The reboots themselves, under mail, are in
the lab: tests/lab/test_several_stores.py."""

import contextlib

import pytest

from govmail.cli import main as cli
from govmail.cli.reboot import order
from govmail.data import load_province
from govmail.monitoring import health

MAIL, DB2 = "mail.lamdong.gov.vn", "db2.lamdong.gov.vn"


def test_the_mail_host_goes_last_and_the_db_primary_after_its_standby():
    cfg = load_province("lamdong")
    assert order(cfg, primary=DB2) == ["backup.lamdong.gov.vn", DB2, "mx2.lamdong.gov.vn", "store2.lamdong.gov.vn", MAIL]
    one = load_province("daknong")
    assert order(one, primary=None) == [one.backup_host, one.mail_host]


def answer(**values):
    """A monitor's answer as the query program prints it: {key: [{metric, value}]}."""
    return {"values": {k: [{"metric": m, "value": [0, str(v)]} for m, v in rows] for k, rows in values.items()},
            "errors": []}


def healthy(host=DB2, started=1000.0, probed=1000.0, streaming=1):
    return dict(up=[({"host": host}, 1)], started=[({"host": host}, started)],
                probes=[({"host": host, "service": "smtp"}, 1)], probed=[({"host": host}, probed)], down=[],
                store=[({"host": host, "job": "patroni", "__name__": n}, v) for n, v in
                       (("up", 1), ("patroni_postgres_running", 1), ("patroni_primary", 0),
                        ("patroni_postgres_streaming", streaming))])


def test_a_host_is_healthy_only_with_every_sign_fresh_since_its_reboot():
    assert health.problems(answer(**healthy()), DB2, db=True, since=900) == []
    assert health.problems(answer(**healthy(started=800)), DB2, since=900) == ["no sample since its reboot yet"]
    assert health.problems(answer(**healthy(probed=800)), DB2, since=900) == \
        ["its services not probed since its reboot yet"]
    assert health.problems(answer(**healthy(streaming=0)), DB2, db=True) == \
        ["its PostgreSQL standby does not stream from the primary"]
    sick = healthy()
    sick["probes"] = [({"host": DB2, "service": "imaps"}, 0)]
    sick["down"] = [({"host": DB2, "name": "dovecot.service"}, 0)]
    assert health.problems(answer(**sick), DB2) == ["probes failing: imaps", "units down: dovecot.service"]
    assert health.problems(answer(up=[]), DB2) == ["its node exporter does not answer"]
    assert health.problems({"errors": ["timed out"], "values": {}}, DB2) == ["the monitor does not answer (timed out)"]
    assert health.primary(answer(store=[({"host": MAIL, "__name__": "patroni_primary"}, 1)])) == MAIL


@pytest.mark.parametrize("argv, says", [
    (["reboot", "lamdong", "--host", "nope.lamdong.gov.vn"], "not hosts of lamdong: nope.lamdong.gov.vn"),
    (["reboot", "../etc"], "is not a province key"),
])
def test_a_reboot_of_what_the_province_does_not_have_is_refused_before_any_host_is_touched(argv, says, capsys):
    with pytest.raises(SystemExit) if argv[1] == "../etc" else contextlib.nullcontext():
        assert cli(argv) == 2
    assert says in capsys.readouterr().err


def test_only_a_patroni_members_postgresql_is_checked():
    """A one-host province's mail host holds the account store in SQLite: no Patroni member to wait for
    (found in the lab: its reboot waited ten minutes for one)."""
    from govmail.cli.reboot import _patroni

    one, two = load_province("daknong"), load_province("lamdong")
    assert not _patroni(one, one.mail_host)
    assert _patroni(two, two.mail_host) and _patroni(two, DB2) and not _patroni(two, "mx2.lamdong.gov.vn")
