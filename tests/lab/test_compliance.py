"""Compliance checks (testinfra) of each province's lab host against its regulation.

The clauses and their checks live in the package (govmail/compliance/), built from each province's
data file, so a fifth province gets its checks without code; `govmail verify` runs the same ones
against any host. The run ends with a per-province list of clauses and PASS/FAIL (see
conftest.pytest_terminal_summary).
"""

from __future__ import annotations

import functools

import pytest

from govmail import targets
from govmail.compliance.checks import CHECKS
from govmail.compliance.clauses import clauses
from govmail.compliance.verify import probe_for
from govmail.data import load_province

from .conftest import PROVINCES

CASES = [
    pytest.param(p, c, id=f"{p}: {c.label}")
    for p in PROVINCES
    for c in clauses(load_province(p))
]


@functools.cache
def probe(province: str):
    p, unreachable, _ = probe_for(load_province(province), targets.lab())
    assert not unreachable, unreachable
    return p


@pytest.mark.parametrize("province,clause", CASES)
def test_clause(province, clause, lab_hosts, record_property):
    record_property("province", province)
    record_property("clause", clause.label)
    evidence = CHECKS[clause.check](probe(province), lab_hosts[province].cfg, clause.arg)
    record_property("evidence", evidence)
    assert evidence, "a check returns the evidence it found"
