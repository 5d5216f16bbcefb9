"""Monitoring: what the monitor host's Prometheus alerts on, and how `govmail status` reads it.

- `alerts.py`: the alert rules, each naming the policy clause it protects (its article goes into the
  alert), with the runbook the docs print (docs/alerts.md, `govmail alerts --markdown`);
- `status.py`: `govmail status`, one screen per host from Prometheus and Alertmanager;
- `health.py`: whether one host is healthy (what `govmail reboot` waits for).

The services that run it: govmail/services/exporters.py (every host) and monitor.py (the monitor host).

May import: data, host (the contract).
"""
