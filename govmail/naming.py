"""Vietnamese full name -> address local part, by the rule the provinces share.

Given name + initials of surname and middle names, diacritics removed, đ -> d, lower case
(BN Art. 4.b, DN Art. 5.1.a, LC Art. 5.2.a, TN Art. 3.5). Nguyễn Văn Hậu -> haunv.
"""

from __future__ import annotations

import unicodedata


def ascii_fold(text: str) -> str:
    """Lower-case ASCII form of Vietnamese text: diacritics dropped, đ/Đ -> d."""
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def person_local(full_name: str) -> str:
    """`Nguyễn Văn Hậu` -> `haunv`; a single-word name stays as it is."""
    words = [w for w in ascii_fold(full_name).replace("-", " ").split() if w.isalnum()]
    if not words:
        raise ValueError(f"no letters in name {full_name!r}")
    given, others = words[-1], words[:-1]
    return given + "".join(w[0] for w in others)


def person_address(full_name: str, domain: str, *suffixes: str) -> str:
    """`person_address("Nguyễn Văn Hậu", "bacninh.gov.vn", "stnmt")` -> haunv.stnmt@bacninh.gov.vn."""
    return ".".join([person_local(full_name), *[s for s in suffixes if s]]) + "@" + domain
