"""A second opinion on curated calls: plain regexes, independent of Presidio, for structured identifiers.

S2 re-scans every curated call with these; anything they find that is not one of the call's own
replacements, not a non-personal value (`nonpersonal`) and not in the allow-list is a residual
identifier, and the call is quarantined. They are deliberately broad (any e-mail-shaped string,
any Luhn-valid 13-19 digit run, any IBAN with a valid checksum, any SSN-shaped number, any IPv4,
any vendor key prefix, any North-American phone layout).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from slm_pipeline.core.curate.nonpersonal import non_personal
from slm_pipeline.core.curate.recognizers import luhn_valid

PATTERNS: dict[str, re.Pattern[str]] = {
    "EMAIL_ADDRESS": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    "CREDIT_CARD": re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])"),
    "IBAN_CODE": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"),
    "US_SSN": re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
    "IP_ADDRESS": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "API_KEY": re.compile(r"\b(?:sk-(?:proj-)?[A-Za-z0-9_-]{20,}|(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|"
                          r"AKIA[A-Z0-9]{16}|gh[pousr]_[A-Za-z0-9]{30,})"),
    "PHONE_NUMBER": re.compile(r"(?<![\w+])(?:\+?1[-. ]?)?(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?!\d)"),
}


def _iban_valid(value: str) -> bool:
    compact = value.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    try:
        return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1
    except ValueError:
        return False


def identifier_matches(text: str, allowed: Iterable[str] = (), allow_list: Iterable[str] = ()
                       ) -> list[tuple[str, str]]:
    """(type, value) of the identifier-shaped values in `text` that are not inside an `allowed` value
    (the call's replacements), identify no one, or are in the `allow_list`."""
    allowed = [a for a in allowed if a]
    allow_list = list(allow_list)
    found: list[tuple[str, str]] = []
    for entity, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            value = match.group(0)
            if entity == "CREDIT_CARD" and not luhn_valid(re.sub(r"\D", "", value)):
                continue
            if entity == "IBAN_CODE" and not _iban_valid(value):
                continue
            if any(value in a for a in allowed) or non_personal(entity, value, allow_list):
                continue
            found.append((entity, value))
    return found


def find_structured_identifiers(text: str, allowed: Iterable[str] = (), allow_list: Iterable[str] = ()
                                ) -> Counter[str]:
    """Counts by type of identifier-shaped values in `text` (see `identifier_matches`)."""
    return Counter(entity for entity, _ in identifier_matches(text, allowed, allow_list))
