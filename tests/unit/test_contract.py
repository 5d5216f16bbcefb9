"""The controller and the host tools read one contract (govmail/host/contract.py)."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from govmail.data import available_provinces, load_province
from govmail.host import contract
from govmail.host.contract import PATHS
from govmail.services import host_tools
from govmail.services.accounts import directory_document


@pytest.mark.parametrize("key", available_provinces())
def test_the_directory_the_controller_writes_is_the_one_the_host_reads(key):
    doc = directory_document(load_province(key))
    assert set(doc) == set(contract.DIRECTORY_KEYS) and doc["version"] == contract.VERSION
    # Keys only some provinces write (`mail_host`, an account's `store`: stores apart) have defaults too.
    assert set(doc["policy"]) <= set(contract.POLICY_DEFAULTS), "a policy key without a host-side default"
    assert set(contract.POLICY_DEFAULTS) - set(doc["policy"]) <= {"mail_host"}
    for a in doc["accounts"]:
        assert set(contract.ACCOUNT_DEFAULTS) - {"store"} <= set(a) <= set(contract.ACCOUNT_DEFAULTS)
    assert contract.check_directory(doc)["policy"] == {"mail_host": None, **doc["policy"]}


def test_a_host_tool_refuses_a_directory_newer_than_itself_and_fills_defaults_of_an_older_one():
    with pytest.raises(contract.ContractError, match="newer than this tool"):
        contract.check_directory({"version": contract.VERSION + 1})
    with pytest.raises(contract.ContractError, match="unknown keys"):
        contract.check_directory({"version": contract.VERSION, "owner": "x"})
    old = contract.check_directory({"domain": "x.gov.vn", "accounts": [{"address": "a@x.gov.vn"}]})
    assert old["policy"]["inactivity_action"] == "none" and old["accounts"][0]["role"] == "user"


def test_the_controller_uses_the_host_contracts_paths():
    assert PATHS is contract.PATHS


@pytest.mark.parametrize("name,module", sorted(host_tools.COMMANDS.items()))
def test_every_host_command_runs_its_module_from_the_installed_package(tmp_path, name, module):
    """The command file host_tools installs, run against a copy of the package laid out as on a host."""
    pkg = tmp_path / contract.PACKAGE
    pkg.mkdir()
    for src in (host_tools.HOST).glob("*.py"):
        (pkg / src.name).write_bytes(src.read_bytes())
    cmd = host_tools.command(name, module).replace(repr(PATHS["lib"]), repr(str(tmp_path)))
    (tmp_path / name).write_text(cmd)
    r = subprocess.run([sys.executable, str(tmp_path / name), "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode in (0, 2) and "Traceback" not in r.stderr, r.stderr
    assert hasattr(importlib.import_module(f"govmail.host.{module}"), "main")


def test_a_document_of_another_version_is_refused_by_the_host_tool_that_reads_it(tmp_path):
    """Each document the deploy writes for a host tool carries its version; a tool that finds another
    refuses it, naming the file, rather than read it wrongly (an old tool, a new document)."""
    import pytest

    from govmail.host import contract, inspector

    doc = {"version": contract.DOCUMENTS["inspector_rules"], "depth": 2}
    assert contract.check_version(dict(doc), "inspector_rules")["depth"] == 2
    f = tmp_path / "inspect.json"
    f.write_text('{"version": 99, "depth": 2}')
    with pytest.raises(contract.ContractError, match="inspect.json: version 99, this tool reads version 1"):
        inspector.load_config(str(f))
    assert inspector.main(["check", str(f)]) == 1


def test_dovecots_quota_table_is_read_by_its_column_names_with_or_without_the_username():
    from govmail.host.contract import quota_table

    every = ("Username\tQuota name\tType\tValue\tLimit\t%\n"
             "a@x.gov.vn\tUser quota\tSTORAGE\t3\t1048576\t0\n"
             "a@x.gov.vn\tUser quota\tMESSAGE\t1\t-\t0\n"
             "b@x.gov.vn\tUser quota\tSTORAGE\t70\t-\t0\n")
    assert quota_table(every) == {"a@x.gov.vn": (3, 1048576), "b@x.gov.vn": (70, None)}
    one = "Quota name\tType\tValue\tLimit\t%\nUser quota\tSTORAGE\t512\t1024\t50\nUser quota\tMESSAGE\t9\t-\t0\n"
    assert quota_table(one, user="a@x.gov.vn") == {"a@x.gov.vn": (512, 1024)}
    assert quota_table("") == {} and quota_table("Quota name\tType\tValue\tLimit\t%") == {}  # a user that is gone


def test_the_metrics_tool_runs_on_a_host_that_has_only_the_modules_the_exporters_send_it(tmp_path):
    """The backup and monitor hosts get metrics.py and contract.py alone (govmail/services/exporters.py):
    the tool must write its facts there without importing anything else of the package."""
    from govmail.data import load_province
    from govmail.service import Context
    from govmail.services import exporters

    cfg = load_province("bacninh")
    svc = exporters.service(Context(cfg, cfg.backup_host, tuple(cfg.roles(cfg.backup_host)), {}))
    lib = PATHS["lib"]
    sent = {f.dest: f.content for f in svc.files if f.dest.startswith(lib + "/")}
    assert f"{lib}/{contract.PACKAGE}/store.py" not in sent
    for dest, content in sent.items():
        path = tmp_path / dest[len(lib) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    cmd = sent[f"{lib}/metrics"].decode().replace(repr(lib), repr(str(tmp_path)))
    (tmp_path / "metrics").write_text(cmd)
    r = subprocess.run([sys.executable, str(tmp_path / "metrics"), "--out", "-"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "govmail_metrics_timestamp_seconds" in r.stdout
