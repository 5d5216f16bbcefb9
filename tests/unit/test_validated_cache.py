"""The controller keeps the results of validations that passed: used only for the same bytes and code."""

from __future__ import annotations

import shutil

import pytest

from govmail import data
from govmail.data import DataError, load_province


@pytest.fixture
def province(tmp_path, monkeypatch):
    shutil.copytree(data.ROOT / "group_data", tmp_path / "group_data")
    monkeypatch.setenv("GOVMAIL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(data, "_CACHE", {})
    calls = []
    real = data._load_province
    monkeypatch.setattr(data, "_load_province", lambda f: calls.append(f) or real(f))
    return tmp_path / "group_data" / "daknong.yml", calls


def again(file):
    data._CACHE.clear()  # a new run: only the kept result remains
    return load_province(file)


def test_a_data_file_validated_before_is_not_validated_again(province):
    file, calls = province
    first = load_province(file)
    second = again(file)
    assert len(calls) == 1 and [a.address for a in second.accounts] == [a.address for a in first.accounts]
    assert [w.message for w in second.warnings] == [w.message for w in first.warnings]


def test_one_changed_byte_is_validated_again_and_its_error_reported(province):
    file, calls = province
    load_province(file)
    file.write_text(file.read_text().replace("quota_mb: 100}", "quota_mb: 1000}", 1) + "\n")
    with pytest.raises(DataError):
        again(file)
    with pytest.raises(DataError):  # a failure is never kept
        again(file)
    assert len(calls) == 3


def test_other_govmail_code_validates_again(province, monkeypatch):
    file, calls = province
    load_province(file)
    monkeypatch.setitem(data.validated_cache.__dict__, "_code", b"other code")
    again(file)
    assert len(calls) == 2


def test_validate_always_validates_and_the_cache_can_be_turned_off(province, monkeypatch):
    file, calls = province
    load_province(file)
    data._CACHE.clear()
    load_province(file, cache=False)
    monkeypatch.setenv("GOVMAIL_CACHE_DIR", "off")
    again(file)
    assert len(calls) == 3


def test_a_certificate_replaced_or_expired_beside_an_unchanged_data_file_is_validated_again(province, monkeypatch):
    """The data file names its certificate; the result kept for it holds only for those bytes and
    until the certificate ends: a replacement that does not cover the host is refused at once."""
    import datetime

    from .test_schema import make_certificate

    file, calls = province
    make_certificate(file.parent / "certs", ["mail.daknong.gov.vn"])
    file.write_text(file.read_text() + "tls:\n  certificate: certs/cert.pem\n  key: certs/key.pem\n")
    load_province(file)
    again(file)
    assert len(calls) == 1
    make_certificate(file.parent / "certs", ["mail.elsewhere.gov.vn"])
    with pytest.raises(DataError, match="does not cover the mail host"):
        again(file)
    make_certificate(file.parent / "certs", ["mail.daknong.gov.vn"])
    again(file)
    assert data.validated_cache.load(file) is not None
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=400)
    monkeypatch.setattr(data.time, "time", later.timestamp)
    assert data.validated_cache.load(file) is None  # past the certificate's end: validated again (and refused)


def test_the_published_directory_is_made_once_per_data_file_and_anew_when_the_data_changes(province):
    # A no-change re-deploy of 50,000 mailboxes reads the directory pages back instead of making
    # them again (bench/directory_scale.py); a changed person must show in the next ones.
    from govmail.publish import portal

    file, _ = province
    made = []
    real = portal._files
    make = lambda cfg: made.append(cfg) or real(cfg)  # noqa: E731
    first = data.validated_cache.derived(load_province(file), "portal-test", make)
    again_cfg = again(file)
    assert data.validated_cache.derived(again_cfg, "portal-test", make) == first
    assert data.validated_cache.derived(again_cfg, "portal-test", make) == first
    assert len(made) == 1
    text = file.read_text()
    assert "{name: Nguyễn Văn Hậu," in text
    file.write_text(text.replace("{name: Nguyễn Văn Hậu,", "{name: Nguyễn Vân Hậu,", 1))
    changed = data.validated_cache.derived(again(file), "portal-test", make)
    assert len(made) == 2 and "Nguyễn Vân Hậu" in changed["directory.csv"].decode("utf-8-sig")
    # Without the cache it is made for each configuration, never taken from another's.
    data._CACHE.clear()
    uncached = load_province(file, cache=False)
    assert data.validated_cache.derived(uncached, "portal-test", make) == changed and len(made) == 3
