"""The project's shape, checked: no import circle, host code on the standard library only, services
that know nothing of pyinfra or the lab, and a service = one module named in the service list."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "govmail"


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_module(name: str) -> bool:
    base = ROOT / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (function-level imports count)."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # `from . import lab` imports the module govmail.lab (its package is already loading);
            # `from .data import ROOT` imports govmail.data
            subs = [f"{mod}.{a.name}" for a in node.names]
            if node.module is None and all(_is_module(x) for x in subs):
                out.update(subs)
            else:
                out.add(mod)
                out.update(x for x in subs if _is_module(x))
    return out


def graph() -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in imports(p) if i in mods and i != m} for m, p in mods.items()}


def test_no_import_circle_in_the_package():
    g = graph()
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m):] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(g[m]):
            visit(n)
        stack.pop()

    for m in sorted(g):
        visit(m)
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_checker_finds_a_circle_when_there_is_one(tmp_path, monkeypatch):
    """The circle test above can fail: two modules importing each other are found."""
    pkg = tmp_path / "govmail"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from . import b\n")
    (pkg / "b.py").write_text("from .a import f\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PKG", pkg)
    with pytest.raises(AssertionError, match="govmail.a -> govmail.b -> govmail.a"):
        test_no_import_circle_in_the_package()


@pytest.mark.parametrize("path", sorted((PKG / "host").glob("*.py")), ids=lambda p: p.name)
def test_host_code_imports_only_the_standard_library(path):
    """Code that runs on a host has Debian's python3 and nothing else."""
    # ... and Debian's python3 packages a service installs: matplotlib and jinja2 (python3-matplotlib,
    # python3-jinja2: govmail/services/reports.py); psycopg2 (python3-psycopg2), imported only where the
    # account store is PostgreSQL (govmail/host/store_db.py)
    allowed = set(sys.stdlib_module_names) | {"__future__", "matplotlib", "jinja2", "psycopg2"}
    own = {p.stem for p in (PKG / "host").glob("*.py")}
    bad = sorted(m for m in imports(path) if m and m.split(".")[0] not in allowed
                 and m.split(".")[0] not in own and not m.startswith("govmail.host"))
    assert not bad, f"{path.name} imports {bad}: host code uses the standard library only"


SERVICES = sorted(p for p in (PKG / "services").glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.stem)
def test_a_service_knows_nothing_of_pyinfra_the_lab_or_the_targets(path):
    bad = sorted(m for m in imports(path)
                 if m.split(".")[0] == "pyinfra" or m in ("govmail.lab", "govmail.targets", "govmail.engine"))
    assert not bad, f"{path.name} imports {bad}: a service only declares (govmail/service.py)"


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.stem)
def test_a_service_only_declares_it_runs_no_program_while_declaring(path):
    """Secrets are made before the services declare (govmail/secrets.py) and handed in: a service that
    runs a program (ssh-keygen once did) or opens sockets while declaring is not a declaration."""
    bad = sorted(m for m in imports(path) if m.split(".")[0] in ("subprocess", "socket", "getpass", "secrets")
                 or m == "govmail.secrets")
    assert not bad, f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", SERVICES, ids=lambda p: p.stem)
def test_every_service_module_is_in_the_service_list_and_declares_a_service(path):
    from govmail.services import SERVICES

    assert any(path.stem in names for names in SERVICES.values()), f"{path.stem} is not in govmail.services.SERVICES"
    assert re.search(r"^def service\(ctx\)", path.read_text(), re.M), f"{path.name} has no service(ctx)"


def test_the_environment_chooses_the_target_in_one_place_only():
    readers = sorted(str(p.relative_to(ROOT)) for p in PKG.rglob("*.py") if "GOVMAIL_TARGET" in p.read_text()
                     and p.name != "targets.py")
    readers += sorted(str(p.relative_to(ROOT)) for p in PKG.rglob("*.py") if "lab_controller" in p.read_text())
    assert not readers, f"these modules know about targets themselves: {readers}"


def test_no_module_is_over_450_lines():
    big = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
           if (n := len(p.read_text().splitlines())) > 450}
    assert not big, f"split these by responsibility: {big}"


FOLDERS = sorted(p.parent.name for p in PKG.glob("*/__init__.py") if p.parent.name != "host")


def allowed_imports(folder: str) -> set[str]:
    """The layers a folder's __init__ docstring says it may import ("May import: data, host.")."""
    import ast as _ast

    doc = _ast.get_docstring(_ast.parse((PKG / folder / "__init__.py").read_text())) or ""
    m = re.search(r"^May import: (.*)$", doc, re.M)
    assert m, f"govmail/{folder}/__init__.py does not say what it may import (a line 'May import: ...')"
    text = m.group(1).rstrip(".")
    if text.startswith("every layer"):
        return {"*"}
    return {w.strip().split(" ")[0] for w in text.split(",")}


def layer(module: str) -> str:
    """govmail.data.config -> data; govmail.render -> render."""
    return module.split(".")[1] if module.count(".") else module


@pytest.mark.parametrize("folder", FOLDERS)
def test_each_folder_imports_only_the_layers_its_docstring_names(folder):
    allowed = allowed_imports(folder) | {folder}
    g = graph()
    bad = sorted(f"{m} -> {i}" for m, imps in g.items() if layer(m) == folder
                 for i in imps if "*" not in allowed and layer(i) not in allowed and i != "govmail")
    assert not bad, f"govmail/{folder}/ may import {sorted(allowed - {folder})}, but: {bad}"


def test_the_folder_rule_finds_a_forbidden_import(monkeypatch):
    """The rule above can fail: compliance importing a service module is found."""
    real = graph()
    monkeypatch.setattr(sys.modules[__name__], "graph",
                        lambda: {**real, "govmail.compliance.checks": real["govmail.compliance.checks"]
                                 | {"govmail.services.rspamd"}})
    with pytest.raises(AssertionError, match="govmail.compliance.checks -> govmail.services.rspamd"):
        test_each_folder_imports_only_the_layers_its_docstring_names("compliance")


def test_the_package_root_holds_about_ten_modules():
    root = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")
    assert len(root) <= 10, f"govmail/ holds {len(root)} modules beside its folders: {root}"
