"""Each province's password rule (DN Art. 12.1, LC Art. 4.1) and the hashes Dovecot verifies."""

import pytest

from govmail.data import available_provinces, load_province
from govmail.data.passwords import generate, hash_password, problems, verify


def policy(key):
    return load_province(key).policy.password


def test_dak_nong_requires_8_characters_with_upper_lower_and_special():
    p = policy("daknong")
    assert problems("Abc!defg", p) == []
    assert any("shorter than 8" in x and "DN Art. 12.1" in x for x in problems("Ab!defg", p))
    assert any("upper-case" in x for x in problems("abc!defgh", p))
    assert any("special" in x for x in problems("Abcdefgh1", p))


def test_lai_chau_requires_digits_too_and_10_characters_for_administrators():
    p = policy("laichau")
    assert problems("Abc!defg1", p) == []
    assert any("digit" in x and "LC Art. 4.1" in x for x in problems("Abc!defgh", p))
    assert any("shorter than 10" in x for x in problems("Abc!defg1", p, admin=True))
    assert problems("Abc!defgh12", p, admin=True) == []


def test_a_vietnamese_passphrase_counts_its_letters_and_specials():
    p = policy("daknong")
    assert problems("Mật-khẩu-Đẹp", p) == []
    assert problems("ĐẸP-ĐẼ-mật", p) == []  # upper case only in Vietnamese letters


@pytest.mark.parametrize("key", available_provinces())
@pytest.mark.parametrize("admin", [False, True])
def test_generated_initial_passwords_meet_the_policy(key, admin):
    p = policy(key)
    for _ in range(20):
        assert problems(generate(p, admin=admin), p, admin=admin) == []


def test_hash_is_bcrypt_in_dovecot_form_and_verifies():
    h = hash_password("Thử-nghiệm-1")
    assert h.startswith("{BLF-CRYPT}$2b$11$")
    assert verify("Thử-nghiệm-1", h) and not verify("thử-nghiệm-1", h)


def test_initial_passwords_are_random_enough_for_the_minimum_hash_cost():
    from govmail.data.passwords import INITIAL_ROUNDS, SPECIAL

    p = policy("daknong")
    pw = generate(p)
    alphabet = 26 + 26 + 10 + len(SPECIAL)
    assert len(pw) >= 14 and len(pw) * __import__("math").log2(alphabet) > 80
    h = hash_password(pw, rounds=INITIAL_ROUNDS)
    assert h.startswith("{BLF-CRYPT}$2b$04$") and verify(pw, h)
