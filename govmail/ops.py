"""pyinfra operations and facts of our own.

`config_file` is how every service file reaches a host: nothing happens when the host's file
already has the same bytes; otherwise the new content goes to `<dest>.govmail-new`, is checked by
the service's own validator (`postconf`, `doveconf`), and only then replaces the live file. A
template that renders a broken configuration therefore stops the deploy with the validator's words
and leaves the running service and its live configuration untouched.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from io import BytesIO

from pyinfra import host
from pyinfra.api import FactBase, FileUploadCommand, operation
from pyinfra.facts.files import File, Sha1File


class FileMeta(FactBase):
    """Mode and owner of a file: `(mode, user, group)` or None."""

    def command(self, path):
        return f"stat -c '%a %U %G' {shlex.quote(path)} 2>/dev/null || true"

    def process(self, output):
        line = "".join(output).strip()
        if not line:
            return None
        mode, user, group = line.split()
        return int(mode, 8), user, group


@operation()
def config_file(dest: str, content: str | bytes, mode: int = 0o644, user: str = "root", group: str = "root",
                validate: str | None = None, pending: str | None = None):
    """Install `content` at `dest` if it differs, after `validate` accepts it.

    + dest: path on the host
    + content: the full new content
    + mode, user, group: ownership of the installed file
    + validate: shell command run on the staged copy; `{new}` is replaced by its path. A non-zero
      exit stops the deploy and the live file stays as it was.
    + pending: name of the service action this file needs (e.g. `dovecot`); a marker is left in
      PENDING_DIR when the file changes, and the service's activate step acts on it and removes it.
      So a deploy that stops between writing a file and the reload reloads on the next run.
    """
    data = content.encode() if isinstance(content, str) else content
    want_sha = hashlib.sha1(data).hexdigest()
    have_sha = host.get_fact(Sha1File, path=dest)
    meta = host.get_fact(FileMeta, path=dest)
    if have_sha == want_sha:
        if meta != (mode, user, group):
            yield f"chown {user}:{group} {shlex.quote(dest)} && chmod {mode:o} {shlex.quote(dest)}"
        else:
            host.noop(f"{dest} is up to date")
        return
    new = dest + ".govmail-new"
    qnew, qdest = shlex.quote(new), shlex.quote(dest)
    yield f"mkdir -p {shlex.quote(dest.rsplit('/', 1)[0] or '/')}"
    yield FileUploadCommand(BytesIO(data), new)
    yield f"chown {user}:{group} {qnew} && chmod {mode:o} {qnew}"
    if validate:
        check = validate.replace("{new}", qnew)
        yield (
            f"if ! out=$({{ {check} ; }} 2>&1); then rm -f {qnew}; "
            f"echo \"govmail: {dest} NOT installed, the new version does not validate "
            f"(live file and service unchanged):\" >&2; echo \"$out\" >&2; exit 1; fi"
        )
    if pending:
        yield f"mkdir -p {PENDING_DIR} && touch {PENDING_DIR}/{pending}"
    yield f"mv -f {qnew} {qdest}"


PENDING_DIR = "/var/lib/govmail/pending"


def pending(action: str) -> bool:
    """A reload/restart left undone by an earlier deploy that stopped before its activate step."""
    return file_exists(f"{PENDING_DIR}/{action}")


def done(action: str) -> str:
    return f"rm -f {PENDING_DIR}/{action}"


def reload_when(name: str, command: str, action: str, changed: list, also=lambda: True, started=None) -> None:
    """Run `command` when one of `changed` changed now, or an earlier deploy left `action` pending
    (see config_file's `pending`); clear the marker once it succeeded. `also`: an extra condition.
    `started`: the operation that starts the service; when it did (first deploy), the service read
    the new files as it started, and only the marker is cleared."""
    from pyinfra.operations import server

    left = pending(action)

    def needed() -> bool:
        return (left or any(op.did_change() for op in changed)) and also()

    def fresh() -> bool:
        return started is not None and started.did_change()

    server.shell(name=name, commands=[f"{command} && {done(action)}"], _if=lambda: needed() and not fresh())
    if started is not None:
        server.shell(name=f"{name}: not needed, it has just started", commands=[done(action)],
                     _if=lambda: needed() and fresh())


def postfix_validate(which: str) -> str:
    """Validator for a Postfix main.cf/master.cf: postconf on a copy of the config directory.

    postconf exits 0 on unknown parameters and only warns, so any output on stderr fails.
    """
    flag = "-n" if which == "main.cf" else "-M"
    return (
        "sh -c 'd=$(mktemp -d) && for f in main.cf master.cf; do touch \"$d/$f\"; "
        "[ -f /etc/postfix/$f ] && cp /etc/postfix/$f \"$d\"/; done; "
        f"cp \"$1\" \"$d\"/{which} && err=$(postconf -c \"$d\" {flag} 2>&1 >/dev/null); rc=$?; rm -rf \"$d\"; "
        "[ $rc -eq 0 ] && [ -z \"$err\" ] || { echo \"$err\"; exit 1; }' _ {new}"
    )


DOVECOT_VALIDATE = "doveconf -c {new} -n >/dev/null"


class StoredAccounts(FactBase):
    """Addresses that have a password in the host's account store (SQLite, or the passwd-file of
    earlier versions, which the next sync migrates), and deleted ones (no password to issue)."""

    @staticmethod
    def default():
        return set()

    def command(self, path):
        q = shlex.quote(path)
        legacy = shlex.quote(path.rsplit("/", 1)[0] + "/dovecot-users")
        return (
            f"if [ -f {q} ]; then python3 -c 'import sqlite3,sys; "
            "[print(r[0]) for r in sqlite3.connect(\"file:\"+sys.argv[1]+\"?mode=ro\", uri=True)"
            ".execute(\"SELECT address FROM accounts WHERE password IS NOT NULL OR status = ?\", (sys.argv[2],))]' "
            f"{q} deleted; elif [ -f {legacy} ]; then cut -d: -f1 {legacy} | grep -v '^#'; fi"
        )

    def process(self, output):
        return {line.strip() for line in output if line.strip()}


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode()


def file_exists(path: str) -> bool:
    return bool(host.get_fact(File, path=path))


class CommandSucceeds(FactBase):
    """True when a shell command exits 0 on the host."""

    def command(self, check):
        return f"if {check} >/dev/null 2>&1; then echo yes; else echo no; fi"

    def process(self, output):
        return "".join(output).strip() == "yes"


@operation()
def ensure_running(check: str, start: str):
    """Run `start` only when `check` fails: for services whose systemd unit does not tell."""
    if host.get_fact(CommandSucceeds, check=check):
        host.noop(f"`{check}` succeeds")
        return
    yield f"{start} && {check}"
