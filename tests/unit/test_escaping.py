"""Each value is written in the syntax of the file it lands in, by one filter per syntax.

The filters of govmail/data/text.py, one by one, and the guarantee that holds them together: a string
that reaches a template without one stops the render. The lab test
tests/lab/test_hostile_values.py checks the same renderings with each file's own parser.
"""

import sys
from pathlib import Path

import jinja2
import pytest

from govmail.data import available_provinces, load_province
from govmail.data.text import (
    FILTERS,
    Trusted,
    UnsafeValue,
    comment,
    dovecot,
    fail2ban,
    finalize,
    lua,
    pcre,
    postconf,
    systemd,
    ucl,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hostile import PAYLOADS, REFUSED, poisoned, rendered  # noqa: E402


def test_postfix_values_double_dollars_and_refuse_line_breaks_and_list_splitting():
    assert postconf("a $relayhost b") == "a $$relayhost b"
    with pytest.raises(UnsafeValue):
        postconf("x\nrelayhost = [evil]:25")
    with pytest.raises(UnsafeValue):
        postconf("daknong.gov.vn, evil.example", word=True)


def test_pcre_literals_escape_every_metacharacter_and_the_delimiter():
    import re

    s = pcre("a.b/c(d)*$")
    assert s == r"a\.b\/c\(d\)\*\$" and re.fullmatch(s.replace(r"\/", "/"), "a.b/c(d)*$")


def test_lua_strings_escape_quotes_backslashes_and_every_control_byte():
    assert lua('x"); os.execute("id") --') == 'x\\"); os.execute(\\"id\\") --'
    assert lua("a\\b\nc\0") == "a\\\\b\\010c\\000"
    assert lua("Đắk Nông") == "Đắk Nông"


def test_ucl_and_dovecot_strings_escape_quotes_and_refuse_their_variables():
    assert ucl('say "hi" \\ now') == 'say \\"hi\\" \\\\ now'
    assert dovecot('a"b\\c') == 'a\\"b\\\\c'
    for f, bad in ((ucl, "${CONFDIR}"), (dovecot, "%{user}")):
        with pytest.raises(UnsafeValue):
            f(bad)


def test_fail2ban_and_systemd_values_escape_percent_and_refuse_what_they_cannot_carry():
    assert fail2ban("100%") == "100%%" and systemd("50% %n") == "50%% %%n"
    for f, bad in ((fail2ban, "x\nignorecommand = id"), (systemd, "x\nExecStartPre=/bin/id"), (systemd, "a\\")):
        with pytest.raises(UnsafeValue):
            f(bad)
    with pytest.raises(UnsafeValue):
        fail2ban("203.0.113.7 198.51.100.1", word=True)


def test_comments_turn_line_breaks_and_controls_into_spaces():
    assert comment("a\nrelayhost = x\r\u2028b") == "a relayhost = x  b"


def test_a_string_that_reaches_a_template_without_a_filter_stops_the_render():
    env = jinja2.Environment(finalize=finalize)
    env.filters.update(FILTERS)
    with pytest.raises(UnsafeValue):
        env.from_string("name = {{ v }}").render(v="Đắk Nông")
    assert env.from_string("name = {{ v | postconf }}").render(v="Đắk Nông") == "name = Đắk Nông"
    assert env.from_string("n = {{ n }}; p = {{ p }}").render(n=25, p=Trusted("/etc/govmail")) == "n = 25; p = /etc/govmail"


@pytest.mark.parametrize("payload", list(PAYLOADS))
@pytest.mark.parametrize("key", available_provinces())
def test_every_file_renders_hostile_values_inert_or_refuses_them(key, payload, tmp_path):
    """Every file of every service, with every text of the data poisoned: either it renders - and
    the payload's line break, if any, never starts a line of a configuration file - or it refuses
    with UnsafeValue (no other exception)."""
    cfg = load_province(key)
    bad = poisoned(cfg, PAYLOADS[payload])
    for roles in (("mail",), ("backup",)):
        files, _ = rendered(bad, roles, secrets_dir=tmp_path)
        for dest, data in files.items():
            if data == REFUSED or dest.endswith(".json"):
                continue
            text = data.decode()
            for line in text.splitlines():
                assert not line.startswith(("relayhost", "ignorecommand", "ExecStartPre", "os.execute", "[evil]")), \
                    (dest, line)


def test_the_shipped_data_renders_every_file_of_every_province(tmp_path):
    for key in available_provinces():
        for roles in (("mail",), ("backup",)):
            files, _ = rendered(load_province(key), roles, secrets_dir=tmp_path / key)
            assert files and REFUSED not in files.values()


def test_postgresql_values_double_quotes_and_refuse_what_would_split_a_field():
    from govmail.data.text import postgresql

    assert postgresql("it's") == "it''s" and postgresql("a\\b") == "a\\\\b"
    assert postgresql("10.0.0.7", word=True) == "10.0.0.7"
    for bad in ("10.0.0.7 all", "a,b", "x#y", "x'y", "x\nhost all all 0.0.0.0/0 trust"):
        with pytest.raises(UnsafeValue):
            postgresql(bad, word=True)
