"""The data file: reading, typing and checking a province's data, and what it says.

`load_province("daknong")` reads `group_data/defaults.yml` (national defaults) and
`group_data/daknong.yml`, deep-merges them, validates the result against the typed option set and
the cross-field rules, and returns a `ProvinceConfig`. Every problem found is collected; if there is
any, `DataError` is raised carrying all of them, each naming file, line, key path, bad value and what
is allowed. Nothing here touches a host.

    schema.py, policy.py, text.py   the typed option set: sections, policies, text types and the
                                    escaping filter of each file syntax; hashes.py: password hashes
    yamldoc.py, typecheck.py        bounded YAML with lines; every type problem at once
    config.py, directory.py         the ProvinceConfig; the directory (accounts, lists, senders)
    naming.py, predecessors.py      the naming rule; a merged province's predecessors and old addresses
    rules.py                        cross-field rules (sizes, scores, TLS files)
    passwords.py, csvimport.py      passwords meeting the policy; people from a CSV
    facts.py                        what the data says as services, checks and commands need it
    docs.py                         the data-file reference (docs/data-file.md)

May import: host (the host's password rules, shared).
"""


from __future__ import annotations

import copy
import functools
import hashlib
import os
import pickle
import sys
import time
import weakref
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import ROLE_LOCAL_PARTS, ROOT, Account, DataError, MiB, Problem, ProvinceConfig, tls_path
from .config import fmt_path as _fmt_path
from .directory import build_directory
from .rules import check_policy, check_tls
from .typecheck import validate_all
from .yamldoc import Doc

# Re-exported: the rest of the package and the tests import these from here.
__all__ = ["MiB", "ROLE_LOCAL_PARTS", "ROOT", "Account", "DataError", "Problem", "ProvinceConfig", "tls_path",
           "available_provinces", "data_dir", "display_path", "load_province", "province_file"]


def data_dir() -> Path:
    return Path(os.environ.get("GOVMAIL_DATA_DIR", ROOT / "group_data"))


# ---------------------------------------------------------------------------- errors


# ---------------------------------------------------------------------------- YAML with lines


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = _deep_merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


# ---------------------------------------------------------------------------- derived config


# ---------------------------------------------------------------------------- loading


def province_file(key: str) -> Path:
    return data_dir() / f"{key}.yml"


def available_provinces() -> list[str]:
    return sorted(p.stem for p in data_dir().glob("*.yml") if p.stem != "defaults")


def display_path(p: Path) -> str:
    """A path as the operator would type it: relative to the working directory when below it."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p)


_CACHE: dict[tuple, ProvinceConfig] = {}


def load_province(key_or_path: str | os.PathLike, cache: bool = True) -> ProvinceConfig:
    """Load and validate a province. Memoised per file state within a process (the inventory and
    deploy.py of one pyinfra run validate a file once, not twice) and, with `cache`, across runs:
    a data file validated before, byte for byte, by the same govmail code, is not validated again
    (see `validated_cache`). Only data that passed is kept; `govmail validate` always validates."""
    p = Path(key_or_path)
    file = p if (p.suffix in (".yml", ".yaml") or os.sep in str(key_or_path)) else province_file(str(key_or_path))
    key = tuple((str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) if f.exists() else (str(f), None, None)
                for f in (file, file.parent / "defaults.yml"))
    if key not in _CACHE or not cache:
        cfg = validated_cache.load(file) if cache else None
        if cfg is None:
            cfg = _load_province(file)
            if cache:
                validated_cache.save(file, cfg)
        else:
            validated_cache.remember(cfg, validated_cache.entry_name(file))
        if len(_CACHE) >= 16:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = cfg
    return _CACHE[key]


class _ValidatedCache:
    """Results of validations that passed, kept on the controller between runs.

    A no-change re-deploy of a 50,000-mailbox province would otherwise spend 7 s of its 11 s
    validating the same bytes again. An entry is used only when everything the result depends on is
    the same: the data file's and defaults.yml's bytes and paths, the working directory (messages
    name files relative to it), the source of every govmail module, and the Python, PyYAML and
    pydantic versions; and for a province that brings its own certificate, those files' bytes and
    the clock (a certificate that has since expired is validated again, and refused). Kept in $GOVMAIL_CACHE_DIR or ~/.cache/govmail/validated (0700, the
    controller's own output, never data from elsewhere); GOVMAIL_CACHE_DIR=off turns it off. One
    entry per data file path, at most 64 (oldest dropped)."""

    KEEP = 64

    def _dir(self) -> Optional[Path]:
        d = os.environ.get("GOVMAIL_CACHE_DIR")
        if d == "off":
            return None
        return Path(d) if d else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "govmail" / "validated"

    @functools.cached_property
    def _code(self) -> bytes:
        import pydantic

        h = hashlib.sha256(f"{sys.version}|{yaml.__version__}|{pydantic.VERSION}".encode())
        package = Path(__file__).resolve().parent.parent  # all of govmail, not this folder only
        for src in sorted(package.rglob("*.py")):
            h.update(src.relative_to(package).as_posix().encode() + b"\0" + src.read_bytes())
        return h.digest()

    def _entry(self, file: Path) -> tuple[Optional[Path], bytes]:
        d = self._dir()
        if d is None:
            return None, b""
        h = hashlib.sha256(self._code)
        h.update(os.getcwd().encode() + b"\0")
        for f in (file, file.parent / "defaults.yml"):
            h.update(str(f.resolve()).encode() + b"\0")
            h.update(f.read_bytes() if f.exists() else b"\0missing\0")
        name = hashlib.sha256(f"{file.resolve()}|{os.getcwd()}".encode()).hexdigest()[:24]
        return d / f"{name}.pickle", h.digest()

    def __init__(self):
        # id(cfg) -> (the configuration, where its derived values are kept, those made in this process)
        self._made: dict[int, tuple] = {}

    def remember(self, cfg: ProvinceConfig, entry: Optional[Path]) -> None:
        """`cfg` came from (or went into) the cache entry `entry`: its derived values are kept there."""
        for k in [k for k, (ref, _, _) in self._made.items() if ref() is None]:
            del self._made[k]
        self._made[id(cfg)] = (weakref.ref(cfg), entry, {})

    def entry_name(self, file: Path) -> Optional[Path]:
        """Where the derived values of this file's validated entry are kept (its digest in the name)."""
        path, digest = self._entry(file)
        return path.with_name(f"{path.stem}.{digest.hex()[:32]}") if path else None

    def derived(self, cfg: ProvinceConfig, name: str, make):
        """`make(cfg)` for a value that depends on the validated data only (the published directory,
        the web mail's address book: a second or more at 50,000 mailboxes), made once per process and
        kept beside the validated entry it came from, so a no-change re-deploy reads it back. A
        configuration that did not come from the cache is computed every time."""
        ref, base, memo = self._made.get(id(cfg), (None, None, None))
        if ref is None or ref() is not cfg:
            base, memo = None, {}
            self._made[id(cfg)] = (weakref.ref(cfg), None, memo)
        if name in memo:
            return memo[name]
        path = base.with_name(f"{base.name}.{name}.pickle") if base else None
        value = None
        if path is not None:
            try:
                with open(path, "rb") as fh:
                    value = pickle.load(fh)
            except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
                value = None
        if value is None:
            value = make(cfg)
            if path is not None:
                try:
                    for old in path.parent.glob(f"{base.name.split('.')[0]}.*.{name}.pickle"):
                        old.unlink(missing_ok=True)
                    tmp = path.with_suffix(f".{os.getpid()}.tmp")
                    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)
                    os.replace(tmp, path)
                except (OSError, pickle.PicklingError, TypeError, AttributeError):
                    pass
        memo[name] = value
        return value

    def load(self, file: Path) -> Optional[ProvinceConfig]:
        try:
            path, digest = self._entry(file)
            if path is None or not path.exists():
                return None
            with open(path, "rb") as fh:
                if fh.read(32) != digest:
                    return None
                deps, until, cfg = pickle.load(fh)
            if time.time() >= until or any(_sha256(Path(f)) != h for f, h in deps):
                return None
            return cfg if isinstance(cfg, ProvinceConfig) else None
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError, ValueError):
            return None  # unreadable or from other code: validate

    def save(self, file: Path, cfg: ProvinceConfig) -> None:
        try:
            path, digest = self._entry(file)
            if path is None:
                return
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            deps, until = _tls_dependencies(cfg)
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                fh.write(digest)
                pickle.dump((deps, until, cfg), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, path)
            entries = sorted((q for q in path.parent.glob("*.pickle") if "." not in q.stem),
                             key=lambda q: q.stat().st_mtime)
            for old in entries[: max(0, len(entries) - self.KEEP)]:
                old.unlink(missing_ok=True)
                for made in old.parent.glob(f"{old.stem}.*.pickle"):
                    made.unlink(missing_ok=True)
            self.remember(cfg, self.entry_name(file))
        except (OSError, pickle.PicklingError, TypeError, AttributeError):
            pass  # a cache that cannot be written costs time, never correctness


def _sha256(path: Path) -> Optional[str]:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _tls_dependencies(cfg: ProvinceConfig) -> tuple[list[tuple[str, Optional[str]]], float]:
    """The TLS files a validation read besides the data file (with their digests), and until when its
    result holds: the certificate's end of validity, else for good."""
    files = [f for f in (tls_path(cfg, "certificate"), tls_path(cfg, "key")) if f]
    until = float("inf")
    if files:
        try:
            from cryptography import x509

            until = x509.load_pem_x509_certificates(files[0].read_bytes())[0].not_valid_after_utc.timestamp()
        except (OSError, ValueError):
            until = 0.0
    return [(str(f), _sha256(f)) for f in files], until


validated_cache = _ValidatedCache()


def _load_province(file: Path, naming_check: Optional[str] = None) -> ProvinceConfig:
    """`naming_check`: how the naming rule is applied this time, instead of the data's
    `policy.naming.check` (`govmail readdress` reads a structure whose addresses it is to fix)."""
    defaults_file = file.parent / "defaults.yml"
    prov = Doc(file, display_path(file))
    problems = list(prov.problems)
    defaults = Doc(defaults_file, display_path(defaults_file)) if defaults_file.exists() else None
    if defaults:
        problems += defaults.problems
    if problems:
        raise DataError(problems)
    if not isinstance(prov.data, dict):
        raise DataError([Problem(prov.display, 1, "", "must be a mapping of keys (province, domain, policy, ...)")])
    merged = _deep_merge(defaults.data or {}, prov.data) if defaults else prov.data

    def where(path: tuple) -> tuple[str, Optional[int]]:
        if prov.has(path) or not defaults or not defaults.has(path):
            return prov.display, prov.line(path)
        return defaults.display, defaults.line(path)

    remap: dict[tuple, list[int]] = {}  # list path -> original index of each item left (see _validate_all)

    def original(path: tuple) -> tuple:
        out: tuple = ()
        for part in path:
            if isinstance(part, int) and out in remap:
                part = remap[out][part]
            out += (part,)
        return out

    schema_paths: set[tuple] = set()

    set_aside: set[str] = set()

    def add(path: tuple, message: str):
        path = original(path)
        if any(_related(path, q) for q in schema_paths):
            return  # a consequence of a problem already reported there (its value was set aside)
        f, line = where(path)
        problems.append(Problem(f, line, _fmt_path(path), message))

    model = validate_all(merged, add, original, remap, defaults.data if defaults else None, schema_paths, set_aside)
    if model is None:
        raise DataError(problems)
    if naming_check:
        naming = model.policy.naming.model_copy(update={"check": naming_check})
        model = model.model_copy(update={"policy": model.policy.model_copy(update={"naming": naming})})
    cfg = ProvinceConfig(model=model, file=file)
    if model.province != file.stem:
        add(("province",), f"{model.province!r} does not match the file name {file.stem!r}")

    def warn(path: tuple, message: str):
        f, line = where(path)
        cfg.warnings.append(Problem(f, line, _fmt_path(path), message))

    build_directory(cfg, add, warn, set_aside)
    check_policy(cfg, add)
    check_tls(cfg, add)
    if problems:
        raise DataError(problems)
    # The people are now cfg.accounts (with addresses, quotas and statuses resolved), the one list
    # the rest of govmail reads; the model's copy of the raw entries goes (half of what a
    # 50,000-mailbox province costs to keep and load).
    d = model.directory
    cfg.model = model.model_copy(update={"directory": d.model_copy(update={"people": []})})
    return cfg


def _related(path: tuple, bad: tuple) -> bool:
    """Whether a later problem at `path` follows from the schema problem at `bad`: one holds the
    other, or both are in one policy section (a bad `action` leaves its `after_months` meaningless)."""
    n = min(len(path), len(bad))
    if path[:n] == bad[:n]:
        return True
    return len(path) >= 2 and path[0] == "policy" and path[:2] == bad[:2]
