"""Render templates/<service>/<file>.j2 for a province.

Templates mirror their target paths (templates/postfix/main.cf.j2 -> /etc/postfix/main.cf).
The same rendering is used by the deploy and by the unit tests, so what the tests check is what
the hosts get.

Every value a template writes goes through the filter of the syntax it lands in (govmail/data/text.py:
`comment`, `postconf`, `pcre`, `dovecot`, `ucl`, `lua`, `fail2ban`, `systemd`); a string that
reaches the output without one stops the render (`UnsafeValue`). govmail's own constants (paths,
the banner) are `Trusted`.
"""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

from .data import ROOT, ProvinceConfig
from .data.text import FILTERS, Trusted, finalize
from .host import contract

# GOVMAIL_TEMPLATES points at another copy of templates/ (a province's customised templates, or a
# test's deliberately broken one).
TEMPLATES = Path(os.environ.get("GOVMAIL_TEMPLATES", ROOT / "templates"))

# What templates know of a host: the host contract (govmail/host/contract.py), shared with the host tools.
_TRUSTED_PATHS = {k: Trusted(v) for k, v in contract.PATHS.items()}


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=finalize,
    )
    env.filters.update(FILTERS)
    return env


_ENV = None


def render(template: str, cfg: ProvinceConfig, **extra) -> str:
    global _ENV
    if _ENV is None:
        _ENV = _env()
    ctx = {
        "cfg": cfg,
        "paths": _TRUSTED_PATHS,
        "ports": contract.PORTS,
        "vmail_uid": contract.VMAIL_UID,
        "managed": Trusted(f"Managed by govmail from {template}; edits here are overwritten by the next deploy."),
        # Postfix's map type for the account store, and how to reach a PostgreSQL store (None: the
        # SQLite file; govmail/services/postfix.py gives it).
        "store_map": Trusted("pgsql" if cfg.store_engine == "postgresql" else "sqlite"),
        "store": None,
    }
    ctx.update(extra)
    return _ENV.get_template(template).render(**ctx)


_PAGES = None


def page(template: str, **values) -> str:
    """An HTML page (templates/**/*.html.j2): autoescaped, so every value is text and never markup.
    Pages take plain values (no escaping filters, no data-file config); a missing one stops the render."""
    global _PAGES
    if _PAGES is None:
        _PAGES = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                                    undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                    trim_blocks=True, lstrip_blocks=True)
    if not template.endswith(".html.j2"):
        raise ValueError(f"{template}: a page template's name ends in .html.j2")
    return _PAGES.get_template(template).render(**values)

