"""Compliance checks (testinfra) of each province's lab hosts against its regulation, each clause on
the hosts it concerns (the mail host, every MX host, every host: govmail/compliance/clauses.py ON).

The clauses and their checks live in the package (govmail/compliance/), built from each province's
data file, so a fifth province gets its checks without code; `govmail verify` runs the same ones
against any host. The run ends with a per-province list of clauses and PASS/FAIL (see
conftest.pytest_terminal_summary).
"""

from __future__ import annotations

import functools

import pytest

from govmail import targets
from govmail.compliance.clauses import clauses
from govmail.compliance.verify import check_clause, probes_for
from govmail.data import load_province

from .conftest import PROVINCES

CASES = [
    pytest.param(p, c, id=f"{p}: {c.label}")
    for p in PROVINCES
    for c in clauses(load_province(p))
]


@functools.cache
def reached(province: str):
    """Every host of the province, reached once for all its clauses."""
    r = probes_for(load_province(province), targets.lab())
    assert not r.lost, r.lost
    return r


@pytest.mark.parametrize("province,clause", CASES)
def test_clause(province, clause, lab_hosts, record_property):
    record_property("province", province)
    record_property("clause", clause.label)
    cfg = lab_hosts[province].cfg
    r = check_clause(reached(province), cfg, clause)
    record_property("evidence", r.evidence)
    assert r.passed, r.evidence
    # Checked on each host it concerns, each named (a clause of every MX host also on mx2...).
    hosts = clause.hosts(cfg)
    assert r.evidence and (clause.on == "mail" or all(f"{h}: " in r.evidence for h in hosts)), r.evidence
