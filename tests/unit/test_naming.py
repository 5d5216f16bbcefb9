"""Addresses by each province's naming rule (BN Art. 4.b, DN Art. 5.1, LC Art. 5.2, TN Art. 3.5)."""

import unicodedata

import pytest

from govmail.data import load_province
from govmail.data.naming import NameClash, address_for, ascii_fold, import_people, person_local, unit_of

from .test_schema import copy_province, problems


@pytest.mark.parametrize(
    "name,local",
    [
        ("Nguyễn Văn Hậu", "haunv"),
        ("Đỗ Thị Đào", "daodt"),  # đ/Đ -> d; "Thị" is a middle name like any other
        ("Nguyễn Thị Minh Khai", "khaintm"),
        ("Hùng", "hung"),  # single-word name
        ("  Trần   Đức  Lương ", "luongtd"),  # stray spaces
        ("ĐẶNG VĂN ĐẠT", "datdv"),  # upper case
        ("Lê Nguyễn-Hoàng Anh", "anhlnh"),  # hyphenated part
        (unicodedata.normalize("NFD", "Nguyễn Văn Hậu"), "haunv"),  # combining diacritics
        ("Phạm Ngọc Ý", "ypn"),
    ],
)
def test_person_local_part(name, local):
    assert person_local(name) == local


def test_ascii_fold_drops_every_vietnamese_mark():
    assert ascii_fold("Ủy ban nhân dân tỉnh Đắk Nông") == "uy ban nhan dan tinh dak nong"


def test_a_name_without_letters_is_refused():
    with pytest.raises(ValueError):
        person_local(" - ")


def test_bac_ninh_example_from_the_regulation():
    cfg = load_province("bacninh")
    assert address_for("Nguyễn Văn Hậu", "stnmt", "bacninh.gov.vn", cfg.policy.naming, set()) == "haunv.stnmt@bacninh.gov.vn"


def test_thai_nguyen_addresses_have_no_agency_part():
    cfg = load_province("thainguyen")
    assert address_for("Nguyễn Văn Hậu", "stnmt", cfg.domain, cfg.policy.naming, set()) == "haunv@thainguyen.gov.vn"


def test_dak_nong_clash_appends_a_letter_to_the_name_part():
    n = load_province("daknong").policy.naming
    taken = {"haunv.stnmt@daknong.gov.vn", "haunva.stnmt@daknong.gov.vn"}
    assert address_for("Nguyễn Văn Hậu", "stnmt", "daknong.gov.vn", n, taken) == "haunvb.stnmt@daknong.gov.vn"


def test_thai_nguyen_clash_appends_one_or_two_characters():
    n = load_province("thainguyen").policy.naming
    taken = {"haunv@thainguyen.gov.vn"} | {f"haunv{i}@thainguyen.gov.vn" for i in range(1, 10)}
    assert address_for("Nguyễn Văn Hậu", "", "thainguyen.gov.vn", n, taken) == "haunv10@thainguyen.gov.vn"


@pytest.mark.parametrize("key,article", [("bacninh", "BN Art. 4.b"), ("laichau", "LC Art. 5.2")])
def test_bac_ninh_and_lai_chau_report_a_clash_for_a_decision(key, article):
    cfg = load_province(key)
    with pytest.raises(NameClash) as e:
        address_for("Nguyễn Văn Hậu", "stnmt", cfg.domain, cfg.policy.naming, {f"haunv.stnmt@{cfg.domain}"})
    assert article in str(e.value) and "decision" in str(e.value)


def test_dak_nong_district_department_staff_carry_department_and_district():
    assert unit_of("gianghia", "tnmt", {"gianghia"}) == "tnmt.gianghia"
    assert unit_of("stnmt", "vp", {"gianghia"}) == "stnmt"  # provincial agency: agency only
    cfg = load_province("daknong")
    assert cfg.account("binhtv.tnmt.gianghia@daknong.gov.vn").owner == "gianghia"


def test_an_address_that_breaks_the_rule_is_an_error_where_the_data_says_so(tmp_path):
    def edit(d):
        d["directory"]["people"][4]["address"] = "sep.stnmt@daknong.gov.vn"

    [p] = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert p.path == "directory.people[4].address" and "does not follow the naming rule" in p.message
    assert "DN Art. 5.1" in p.message


def test_an_address_that_breaks_the_rule_is_a_warning_where_the_data_says_so(tmp_path):
    def edit(d):
        d["policy"]["naming"]["check"] = "warning"
        d["directory"]["people"][4]["address"] = "sep.stnmt@daknong.gov.vn"

    cfg = load_province(copy_province(tmp_path, "daknong", edit=edit))
    [w] = cfg.warnings
    assert w.path == "directory.people[4].address" and "expected" in w.message


def test_import_assigns_addresses_resolves_clashes_and_reports_what_needs_a_decision():
    cfg = load_province("daknong")
    rows = [
        {"name": "Nguyễn Văn Hậu", "agency": "stnmt", "role": "user"},  # haunv, haunva taken
        {"name": "Nguyễn Văn Hậu", "agency": "STNMT", "role": ""},
        {"name": "Phạm Thị Mai", "agency": "gianghia", "department": "tnmt", "role": "admin"},
        {"name": "Lê Văn Tám", "agency": "nowhere", "role": "user"},
        {"name": "Lê Văn Tám", "agency": "stnmt", "role": "boss"},
    ]
    entries, found = import_people(cfg, rows)
    assert [e["address"] for e in entries] == [
        "haunvb.stnmt@daknong.gov.vn", "haunvc.stnmt@daknong.gov.vn", "maipt.tnmt.gianghia@daknong.gov.vn",
    ]
    assert entries[2]["role"] == "admin" and "role" not in entries[0]
    assert len(found) == 2 and "'nowhere'" in found[0] and "'boss'" in found[1]


def test_import_reports_clashes_for_a_decision_in_bac_ninh():
    cfg = load_province("bacninh")
    entries, found = import_people(cfg, [{"name": "Nguyễn Văn Hậu", "agency": "stnmt"}])
    assert not entries and "BN Art. 4.b" in found[0]


def test_a_department_that_is_not_in_the_agency_is_refused(tmp_path):
    def edit(d):
        d["directory"]["people"][4]["department"] = "nope"

    [p] = problems(copy_province(tmp_path, "daknong", edit=edit))
    assert p.path == "directory.people[4].department" and "'nope' is not a department" in p.message
