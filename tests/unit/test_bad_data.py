"""The corpus of bad data files: each is refused with exactly the messages it names, in time.

tests/unit/bad_data/NNN-<what>.yml is a small province (base.yml.txt) with one fault; its header
says what the fault is and, on each `# expect:` line, one message it must get, as
`<file>:<line>: <key path>: <message>`. The file is loaded as a province's data file beside the shipped
defaults.yml: the messages must be exactly those (no fewer, no more, no traceback), each within
2 seconds, and the base itself must be valid (so every refusal comes from the fault).
"""

import shutil
import time
from pathlib import Path

import pytest

from govmail.data import DataError, load_province

HERE = Path(__file__).resolve().parent / "bad_data"
DEFAULTS = Path(__file__).resolve().parents[2] / "group_data" / "defaults.yml"
CASES = sorted(HERE.glob("[0-9][0-9][0-9]-*.yml"))


def expected(case: Path) -> list[str]:
    lines = case.read_bytes().split(b"\n")
    return [x.decode().removeprefix("# expect: ") for x in lines if x.startswith(b"# expect: ")]


@pytest.fixture
def province_dir(tmp_path):
    shutil.copy(DEFAULTS, tmp_path / "defaults.yml")
    return tmp_path


def test_the_corpus_holds_at_least_80_bad_files_each_with_its_message():
    assert len(CASES) >= 80
    assert all(expected(c) for c in CASES), [c.name for c in CASES if not expected(c)]


def test_the_corpus_base_is_valid(province_dir):
    shutil.copy(HERE / "base.yml.txt", province_dir / "corpus.yml")
    cfg = load_province(province_dir / "corpus.yml", cache=False)
    assert len(cfg.accounts) == 4 and not cfg.warnings


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.stem)
def test_bad_data_file_gets_exactly_its_message(case, province_dir):
    f = province_dir / "corpus.yml"
    shutil.copy(case, f)
    t = time.monotonic()
    with pytest.raises(DataError) as e:
        load_province(f, cache=False)
    took = time.monotonic() - t
    got = [f"{Path(p.file).name}:{p.line or '-'}: {p.path or '(top level)'}: {p.message}" for p in e.value.problems]
    assert got == expected(case)
    assert took < 2, f"{case.name}: {took:.1f} s"
    for p in e.value.problems:  # as printed: file:line: key.path: message
        assert str(p).startswith(f"{f}:{p.line}: " if p.line else f"{f}: ")
