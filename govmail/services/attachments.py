"""The attachment inspector: programs found inside archives at any depth, by content as well as name.

govmail/host/inspector.py runs as govmail-inspect.service on 127.0.0.1:11339 (loopback only);
rspamd's GOVMAIL_ATTACHMENT rule (templates/rspamd/lua.local.d/govmail.lua.j2) sends it every
attachment and refuses, flags or passes the message on its verdict, the reply naming the file inside
the archive and the article (`policy.content`). Its rules are /etc/govmail/inspector/inspect.json,
checked by the inspector itself before they replace the live ones; a change reloads it (SIGHUP:
the next attachment is judged by the new rules, none is dropped). When it does not answer, rspamd
answers 4xx and the sender retries: no attachment goes through unchecked.
"""

from __future__ import annotations

import os

from ..host import contract
from ..render import render
from ..service import File, Service, Unit, Validator, json_bytes

RULES = contract.PATHS["inspector_rules"]


def rules(cfg) -> dict:
    c = cfg.policy.content
    return {
        "blocked": list(c.blocked_extensions),
        "allowed": list(c.allowed_extensions) if c.allowed_extensions is not None else None,
        "archives": c.inspect_archives,
        "depth": c.archive_depth,
        "too_deep": c.too_deep,
        "unreadable": c.unreadable_archives,
        "encrypted": c.encrypted_archives,
        "macros": c.office_macros,
        # No attachment is larger than the message size limit; the unpacked bound stops zip bombs.
        "max_bytes": max(256 * 1024 * 1024, 4 * cfg.message_size_limit),
        "max_members": 10000,
        "version": contract.DOCUMENTS["inspector_rules"],
    }


def service(ctx) -> Service:
    cfg = ctx.cfg
    return Service(
        name="attachments",
        packages=("7zip",),  # 7z archives (the inspector's `7z`); Debian's has no RAR unpacker (not free)
        files=[
            File(RULES, json_bytes(rules(cfg))),
            File("/etc/systemd/system/govmail-inspect.service", render("systemd/govmail-inspect.service.j2", cfg), action="restart"),
        ],
        validator=Validator(os.path.dirname(RULES),
                            f"python3 {contract.PATHS['lib']}/inspector check {{dir}}/{os.path.basename(RULES)}"),
        units=[Unit("govmail-inspect", ready=f"bash -c 'echo > /dev/tcp/127.0.0.1/{contract.PORTS['inspector']}' 2>/dev/null",
                    ready_timeout=30)],
        actions={"reload": "systemctl reload govmail-inspect", "restart": "systemctl restart govmail-inspect"},
        reacts={"host_tools": "restart"},
    )
