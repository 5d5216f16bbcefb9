"""The operations and usage reports (`policy.operations_report`, `policy.usage_report`).

The host makes them itself (govmail/host/report.py gathers, report_render.py writes CSV and HTML
with matplotlib's charts and mails them): `govmail-report-monthly.timer` on the 1st of each month
(the last month's operations: TN Art. 16.4, DN Art. 11.1.g), `govmail-report-annual.timer` on 5
January (the last year's usage per agency: BN Art. 17). Both go to the province's administrators,
from the postmaster; `govmail report PROVINCE monthly|annual` makes one on demand. The deploy
writes what the host cannot know: who receives them, and each address's agency.
"""

from __future__ import annotations

import os

from ..data import validated_cache
from ..data.facts import report_recipients
from ..host import contract
from ..publish import portal
from ..render import render
from ..service import File, Service, Unit, directory, json_bytes
from . import monitor

UNITS = ("govmail-report-monthly.service", "govmail-report-monthly.timer", "govmail-report-annual.service",
         "govmail-report-annual.timer")


def units(cfg) -> dict[str, str]:
    """Each mailbox's unit, as the reports group them (the directory's units); suspended mailboxes
    are counted too (as inactive). Made once per validated data file (validated_cache.derived)."""
    out = {}
    for e in portal.entries(cfg):
        out[e.address] = e.unit
    for a in cfg.accounts:
        out.setdefault(a.address, portal.OTHER)
    return out


def settings(cfg, addresses: dict | None = None) -> dict:
    return {
        "province": cfg.key, "name": cfg.model.name, "sender": cfg.postmaster, "recipients": report_recipients(cfg),
        "articles": {"monthly": cfg.cite("operations_report"), "annual": cfg.cite("usage_report"),
                     "misuse": cfg.cite("misuse_report")},
        "units": validated_cache.derived(cfg, "report-units", units),
        # Where the monthly report reads availability as the monitor measured it (else: the journal).
        "monitor": ({"host": cfg.monitor_host, "prometheus": monitor.prometheus_url(cfg, addresses or {}),
                     "mail_host": cfg.mail_host, "scrape_seconds": monitor.SCRAPE_S} if cfg.monitor_host else None),
        "version": contract.DOCUMENTS["report_settings"],
    }


def service(ctx) -> Service | None:
    cfg = ctx.cfg
    # A store apart: the store apart's mail log goes to the mail host, whose reports count it.
    if ctx.host_name in cfg.stores_apart:
        return None
    return Service(
        name="reports",
        # Debian's matplotlib draws the charts, its Jinja2 fills the page (host code: the standard library
        # and Debian's python3 packages).
        packages=("python3-matplotlib", "python3-jinja2"),
        ensures=[directory(os.path.dirname(contract.PATHS["report_settings"]), 0o755),
                 directory(contract.PATHS["reports"], 0o750)],
        files=[File(contract.PATHS["report_settings"], json_bytes(settings(cfg, ctx.addresses)), mode=0o640, action=None),
               *[File(f"/etc/systemd/system/{u}", render(f"systemd/{u}.j2", cfg), action=None) for u in UNITS]],
        units=[Unit("govmail-report-monthly.timer"), Unit("govmail-report-annual.timer")],
    )
