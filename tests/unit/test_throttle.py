"""The password service's throttle: attackers are slowed, an address's owner is never locked out."""

from __future__ import annotations

from govmail.host.passwd_service import LIMITS, WINDOW, Throttle

OWNER, ATTACKER = "10.0.0.5", "203.0.113.9"
USER = "haunv.stnmt@daknong.gov.vn"


def test_failures_from_one_client_never_refuse_the_owner_elsewhere():
    t = Throttle()
    for _ in range(LIMITS["pair"]):
        t.fail(USER, ATTACKER, now=100)
    assert t.refused(USER, ATTACKER, now=101)
    assert not t.refused(USER, OWNER, now=101)  # the owner, from their own machine
    assert not t.refused("other@daknong.gov.vn", ATTACKER, now=101)  # below the client's own limit
    assert not t.refused(USER, ATTACKER, now=100 + WINDOW + 1)  # aged out


def test_many_attackers_on_one_address_are_each_refused_but_the_owner_is_not():
    t = Throttle()
    attackers = [f"198.51.100.{i}" for i in range(LIMITS["account"] // LIMITS["attacker"])]
    for a in attackers:
        for _ in range(LIMITS["attacker"]):
            t.fail(USER, a, now=100)
    assert all(t.refused(USER, a, now=101) for a in attackers)
    assert not t.refused(USER, OWNER, now=101)
    t.fail(USER, OWNER, now=102)  # one typo of the owner's is not an attack
    assert not t.refused(USER, OWNER, now=103)


def test_a_client_failing_for_many_addresses_is_refused_for_all():
    t = Throttle()
    for i in range(LIMITS["client"]):
        t.fail(f"user{i}@daknong.gov.vn", ATTACKER, now=100)
    assert t.refused("new@daknong.gov.vn", ATTACKER, now=101)
    assert not t.refused("new@daknong.gov.vn", OWNER, now=101)
