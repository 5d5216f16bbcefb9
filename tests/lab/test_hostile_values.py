"""Hostile values in every text field never become syntax in a file that reaches a host.

Every text of Đắk Nông's data (the province's name, its articles, domains, host names, addresses,
networks, extensions, ...) gets a hostile tail - quotes and Lua code, variables of every syntax,
a line break followed by settings - bypassing the data validation, as if a value had slipped past
it. Each file either refuses to render (the deploy stops on the controller: nothing reaches the
host) or is checked on the lab's mail host with its own parser, in a scratch copy of the live
configuration: the service's validator (`postconf`, `doveconf`, `rspamadm configtest`,
`fail2ban-client -t`, `logrotate -d`, `nginx -t`, `php-fpm -t` and `php -l`) accepts it, the parser sees exactly the settings of the
clean rendering (no setting added, none lost), and the Lua payload never ran. systemd units are
compared through what `systemd-analyze verify` says of their syntax. No live file is touched.
"""

from __future__ import annotations

import base64
import io
import shlex
import sys
import tarfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile import MARKER, PAYLOADS, REFUSED, poisoned, rendered  # noqa: E402

# How each parser sees a configuration: the names of its settings, values left out (they differ).
VIEWS = {
    "postfix": "postconf -c {dir} -n | sed 's/ = .*//'",
    "dovecot": r"doveconf -c {dir}/dovecot.conf -n | sed -E '/^#/d; s/^( *[^ ]+) = .*/\1/; s/^( *[^ ]+ ).*\{$/\1{/'",
    "fail2ban": r"fail2ban-client -c {dir} -d | sed -E \"s/^(\['[a-z]+', '[^']+', '[a-z]+').*/\1/\" | sort -u",
    "rspamd": "true",
    "logs": "true",
    # nginx's own reading of the whole configuration: the directive of every line.
    "web": r"nginx -T -q -c {dir}/nginx.conf 2>/dev/null | grep -v '^#' | sed -E 's/^[[:space:]]*([^[:space:]]+).*/\1/'",
    # PHP's reading of Roundcube's configuration: the names of the settings it ends up with.
    "webmail": "php -r '$config = []; include \"{dir}/roundcube/config.inc.php\"; "
               "echo implode(\"\\n\", array_keys($config));'",
}
def check_script(b: str, validators: dict) -> str:
    """The host side: each service's validator and parser view on a scratch copy, clean and hostile."""
    q = shlex.quote
    lines = ["set -u", f"b={q(b)}", "out=$b/report; : > $out"]
    for side in ("clean", "hostile"):
        for name, (copy, command, view) in validators.items():
            d = f"{b}/{side}-{name}"
            lines += [
                f"rm -rf {d}; cp -a {copy} {d}; if [ -d $b/{side}{copy} ]; then cp -a $b/{side}{copy}/. {d}/; fi",
                f"if sh -c {q(command.replace('{dir}', d))} > {d}.check 2>&1; then echo '{side} {name} check ok' >> $out; "
                f"else echo \"{side} {name} check FAILED: $(tail -5 {d}.check | tr '\\n' ' ')\" >> $out; fi",
                f"sh -c {q(view.replace('{dir}', d))} > $b/{side}-{name}.view 2>&1",
            ]
        lines += [
            # systemd's own parser, one unit at a time; what it says of the file's syntax (a key or
            # section it does not know, a line that is no assignment), not of a value's meaning.
            f"for u in $b/{side}/etc/systemd/system/*; do [ -f \"$u\" ] || continue; n=$(basename $u); "
            f"mkdir -p $b/units-{side}-$n; cp $u $b/units-{side}-$n/; "
            f"systemd-analyze verify --man=no $b/units-{side}-$n/$n 2>&1 | sed \"s#$b/units-{side}-$n/##g\" "
            f"| grep -i 'unknown\\|section\\|assignment\\|missing .=\\|invalid line\\|continuation' "
            f"> $b/{side}-$n.view; done",
        ]
    lines += [
        "for v in $b/clean-*.view; do n=$(basename $v .view); n=${n#clean-}; [ -e $b/hostile-$n.view ] || continue; "
        "if cmp -s $v $b/hostile-$n.view; then echo \"$n view same\" >> $out; "
        "else echo \"$n view DIFFERS: $(diff $v $b/hostile-$n.view | head -8 | tr '\\n' ' ')\" >> $out; fi; done",
        f"if [ -e {MARKER} ]; then echo 'payload RAN' >> $out; fi",
        "cat $out",
    ]
    return "\n".join(lines) + "\n"


def _tar(files: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize("payload", list(PAYLOADS), ids=list(PAYLOADS))
def test_hostile_text_in_every_field_renders_inert_or_is_refused_before_the_host(lab_hosts, payload, tmp_path):
    h = lab_hosts.get("daknong") or next(iter(lab_hosts.values()))
    secrets = tmp_path / "secrets"
    clean, services = rendered(h.cfg, ("mail",), secrets_dir=secrets)
    hostile, _ = rendered(poisoned(h.cfg, PAYLOADS[payload]), ("mail",), secrets_dir=secrets)
    assert REFUSED not in clean.values()
    hostile = {d: hostile.get(d, REFUSED) for d in clean}
    checked = [s for s in services.values() if s and s.validator and s.name in VIEWS]
    # Only what rendered goes to the host (what refused stops a real deploy before the host).
    bundle = {}
    for side, files in (("clean", clean), ("hostile", hostile)):
        for dest, data in files.items():
            if data != REFUSED:
                bundle[f"{side}{dest}"] = data
    b = f"/tmp/govmail-hostile-{payload}"
    validators = {s.name: (s.validator.copy, s.validator.command, VIEWS[s.name]) for s in checked}
    bundle["check.sh"] = check_script(b, validators).encode()
    h.run(f"rm -rf {b} {MARKER}; mkdir -p {b}; cd {b} && base64 -d | tar xz",
          input=base64.b64encode(_tar(bundle)).decode())
    report = h.run(f"bash {b}/check.sh {b}").stdout.splitlines()
    h.run(f"rm -rf {b}")
    refused = sorted(d for d, v in hostile.items() if v == REFUSED)
    print(f"\n{payload}: refused before the host: {', '.join(refused) or 'none'}\n  " + "\n  ".join(report))
    assert "payload RAN" not in report
    for s in checked:
        assert f"clean {s.name} check ok" in report, report
        mine = [f for f in s.files if f.dest.startswith(s.validator.copy)]
        if all(hostile[f.dest] == REFUSED for f in mine):
            continue
        assert f"hostile {s.name} check ok" in report, report
        assert f"{s.name} view same" in report, report
    units = [d for d in clean if Path(d).parent == Path("/etc/systemd/system") and hostile[d] != REFUSED]
    for u in units:
        assert f"{Path(u).name} view same" in report, report
    # What the payload reaches in each syntax was really exercised: something rendered in each.
    assert any(hostile[f.dest] != REFUSED for s in checked for f in s.files)
