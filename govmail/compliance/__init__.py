"""Compliance: what a province's hosts must show to meet its regulation, checked on the hosts.

- `clauses.py`: the clauses of a province, built from its data file (each with its article);
- `checks.py`: one testinfra check per clause kind, named after what it verifies; each returns the
  evidence it found on the host and fails with the value it found;
- `verify.py`: runs them against any reachable host of a province (`govmail verify`) and the lab
  tests (`tests/lab/test_compliance.py`) run the same ones;
- `report.py`: the reports an inspector reads (HTML, Markdown, JUnit XML).

May import: data, host (the contract), monitoring (what the monitor is asked), publish, render.
"""
