"""Personal data: detect and mask Taiwanese ID numbers in anything that leaves the process.

Detected by shape (see reference/domain.md §4), whatever the check digit: a mistyped
number is still a person's number, so a wrong check digit is masked too:

* national ID (國民身分證統一編號): a letter, ``1`` or ``2``, eight digits;
* resident certificate number (居留證統一證號), old format: two letters (second A–D),
  eight digits; new format (from 2021): a letter, ``8`` or ``9``, eight digits.

Masking follows 國發會 103.12.31: the last four characters become ``*``
(``A123456789`` → ``A12345****``).
"""

from __future__ import annotations

import re
from typing import Any

# Letter → two-digit code of the issuing region.
_LETTER_CODES = dict(
    zip(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        (
            10,
            11,
            12,
            13,
            14,
            15,
            16,
            17,
            34,
            18,
            19,
            20,
            21,
            22,
            35,
            23,
            24,
            25,
            26,
            27,
            28,
            29,
            32,
            30,
            31,
            33,
        ),
        strict=True,
    )
)
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 1, 1)
_CANDIDATE = re.compile(r"(?<![A-Za-z0-9])[A-Za-z][A-Da-d1289]\d{8}(?![A-Za-z0-9])")


def is_valid_id(text: str) -> bool:
    """Whether ``text`` is a checksum-valid national ID or resident certificate number."""
    if len(text) != 10:
        return False
    text = text.upper()
    first, second, rest = text[0], text[1], text[2:]
    if first not in _LETTER_CODES or not rest.isdigit() or not rest.isascii():
        return False
    if second in "ABCD":
        second_digit = _LETTER_CODES[second] % 10
    elif second in "1289":
        second_digit = int(second)
    else:
        return False
    code = _LETTER_CODES[first]
    digits = [second_digit, *map(int, rest)]
    total = (
        (code // 10) + (code % 10) * 9 + sum(w * d for w, d in zip(_WEIGHTS, digits, strict=True))
    )
    return total % 10 == 0


def mask_id(text: str) -> str:
    """``A123456789`` → ``A12345****``."""
    return text[:6] + "****"


def _mask_match(match: re.Match[str]) -> str:
    return mask_id(match.group(0))


def mask_text(text: str) -> str:
    """``text`` with every ID-shaped string in it masked (valid check digit or not)."""
    return _CANDIDATE.sub(_mask_match, text)


def find_ids(text: str) -> list[str]:
    """Every unmasked ID-shaped string in ``text`` (for checks and tests)."""
    return [m.group(0) for m in _CANDIDATE.finditer(text)]


def mask_value(value: Any) -> Any:
    """A JSON-like value with every string in it masked (dict keys included)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {mask_value(k): mask_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask_value(v) for v in value]
    return value
