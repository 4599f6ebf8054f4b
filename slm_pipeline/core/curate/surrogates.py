"""What a detected value becomes: a realistic surrogate of the same format, or a typed placeholder.

Surrogates are pseudonyms: derived from the value with a secret salt (HMAC), so the same value
becomes the same surrogate in the prompt, in the tool arguments and in the teacher's answer,
and across calls, while nobody without the salt can map a surrogate back. They keep the shape
of the original (layout of digits and separators, key prefixes, e-mail form, valid check
digits) so that a fine-tuned model learns to copy them as it would copy real values.
Placeholders (`<EMAIL_1>`) are numbered per call.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import random
import re
import string
from datetime import date, datetime, timedelta

from faker import Faker

from slm_pipeline.core.curate.recognizers import luhn_valid

PLACEHOLDER_NAMES = {
    "EMAIL_ADDRESS": "EMAIL", "PHONE_NUMBER": "PHONE", "CREDIT_CARD": "CARD", "IBAN_CODE": "IBAN",
    "US_SSN": "SSN", "IP_ADDRESS": "IP", "API_KEY": "API_KEY", "PERSON": "PERSON", "STREET_ADDRESS": "ADDRESS",
    "DATE_OF_BIRTH": "DOB", "PASSWORD": "PASSWORD", "US_PASSPORT": "PASSPORT", "US_BANK_NUMBER": "BANK_ACCOUNT",
}

_FAKER = Faker("en_US")
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%d/%m/%Y", "%m-%d-%Y", "%d.%m.%Y", "%B %d, %Y", "%b %d, %Y",
                 "%d %B %Y", "%B %d %Y")


def _same_shape(value: str, rng: random.Random, keep_prefix: int = 0) -> str:
    """Replace each digit with a digit and each letter with a letter of the same case."""
    out = list(value[:keep_prefix])
    for char in value[keep_prefix:]:
        if char.isdigit():
            out.append(rng.choice(string.digits))
        elif char.isupper():
            out.append(rng.choice(string.ascii_uppercase))
        elif char.islower():
            out.append(rng.choice(string.ascii_lowercase))
        else:
            out.append(char)
    return "".join(out)


def _card(value: str, rng: random.Random) -> str:
    digit_positions = [i for i, c in enumerate(value) if c.isdigit()]
    for _ in range(100):
        candidate = list(_same_shape(value, rng, keep_prefix=1))
        for check in "0123456789":
            candidate[digit_positions[-1]] = check
            if luhn_valid("".join(c for c in candidate if c.isdigit())):
                return "".join(candidate)
    return _same_shape(value, rng)


def _iban(value: str, rng: random.Random) -> str:
    compact = re.sub(r"\s", "", value).upper()
    country, bban = compact[:2], _same_shape(compact[4:], rng)
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = f"{98 - int(numeric) % 97:02d}"
    result = country + check + bban
    if " " in value:  # keep the printed grouping
        result = " ".join(result[i:i + 4] for i in range(0, len(result), 4))
    return result


def _ssn(value: str, rng: random.Random) -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    digits = f"{area:03d}{rng.randrange(1, 100):02d}{rng.randrange(1, 10000):04d}"
    out, it = [], iter(digits)
    for char in value:
        out.append(next(it, "0") if char.isdigit() else char)
    return "".join(out)


def _email(rng: random.Random) -> str:
    _FAKER.seed_instance(rng.random())
    return f"{_FAKER.user_name()}{rng.randrange(10, 99)}@{rng.choice(['example.com', 'example.org', 'example.net'])}"


def _person(value: str, rng: random.Random) -> str:
    _FAKER.seed_instance(rng.random())
    parts = value.split()
    if len(parts) == 1:
        return _FAKER.first_name() if value[:1].isupper() else _FAKER.first_name().lower()
    names = [_FAKER.first_name()] + [_FAKER.last_name() for _ in parts[1:]]
    return " ".join(names)


def _address(value: str, rng: random.Random) -> str:
    _FAKER.seed_instance(rng.random())
    pieces = [_FAKER.street_address()]
    commas = value.count(",")
    if commas >= 2:
        pieces += [_FAKER.city(), f"{_FAKER.state_abbr()} {_FAKER.postcode()}"]
    elif commas == 1:
        pieces.append(_FAKER.city())
    return ", ".join(pieces)


def _date_of_birth(value: str, rng: random.Random) -> str:
    for fmt in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(value, fmt).date()
        except ValueError:
            continue
        return (parsed + timedelta(days=rng.randrange(-900, 900) or 1)).strftime(fmt)
    return (date(1950, 1, 1) + timedelta(days=rng.randrange(0, 20000))).isoformat()


def _ip(value: str, rng: random.Random) -> str:
    try:
        version = ipaddress.ip_address(value).version
    except ValueError:
        version = 4
    if version == 6:
        return f"2001:db8::{rng.randrange(1, 0xFFFF):x}"
    return f"{rng.choice(['192.0.2', '198.51.100', '203.0.113'])}.{rng.randrange(1, 255)}"  # documentation ranges


def _api_key(value: str, rng: random.Random) -> str:
    prefix = re.match(r"^(sk-(?:proj-|svcacct-|admin-)?|(?:sk|pk|rk)_(?:live|test)_|gh[pousr]_|github_pat_|"
                      r"AKIA|ASIA|xox[abprs]-|AIza|eyJ)", value)
    return _same_shape(value, rng, keep_prefix=len(prefix.group(0)) if prefix else 0)


def surrogate(entity: str, value: str, rng: random.Random) -> str:
    """A realistic value of the same type and format as `value`."""
    if entity == "EMAIL_ADDRESS":
        return _email(rng)
    if entity == "PERSON":
        return _person(value, rng)
    if entity == "CREDIT_CARD":
        return _card(value, rng)
    if entity == "IBAN_CODE":
        return _iban(value, rng)
    if entity == "US_SSN":
        return _ssn(value, rng)
    if entity == "STREET_ADDRESS":
        return _address(value, rng)
    if entity == "DATE_OF_BIRTH":
        return _date_of_birth(value, rng)
    if entity == "IP_ADDRESS":
        return _ip(value, rng)
    if entity in ("API_KEY", "PASSWORD"):
        return _api_key(value, rng)
    return _same_shape(value, rng)  # phone numbers, passports, bank accounts, licences, ...


class Replacer:
    """The replacements of one call: consistent within it, and derived from a secret salt."""

    def __init__(self, salt: bytes, strategy: str = "surrogate") -> None:
        if strategy not in ("surrogate", "placeholder"):
            raise ValueError(f"unknown replacement strategy {strategy!r}: use 'surrogate' or 'placeholder'")
        self.salt = salt
        self.strategy = strategy
        self.mapping: dict[str, str] = {}
        self.kinds: dict[str, str] = {}  # value -> entity type
        self.counters: dict[str, int] = {}
        self.entities: dict[str, int] = {}

    def __call__(self, entity: str, value: str) -> str:
        if value in self.mapping:
            return self.mapping[value]
        self.entities[entity] = self.entities.get(entity, 0) + 1
        if self.strategy == "placeholder":
            label = PLACEHOLDER_NAMES.get(entity, entity)
            self.counters[label] = self.counters.get(label, 0) + 1
            replacement = f"<{label}_{self.counters[label]}>"
        else:
            seed = hmac.new(self.salt, f"{entity}\x00{value}".encode("utf-8", "surrogatepass"), hashlib.sha256)
            replacement = surrogate(entity, value, random.Random(seed.digest()))
            if replacement == value:  # vanishingly rare; never keep an original
                replacement = _same_shape(value + "x", random.Random(seed.digest()[::-1]))[:len(value)]
        self.mapping[value] = replacement
        self.kinds[value] = entity
        if entity == "PERSON" and self.strategy == "surrogate":  # "John Smith" -> "Mark Jones": "John" -> "Mark"
            for part, new in zip(value.split(), replacement.split()):
                if len(part) >= 3 and part[:1].isupper() and part not in self.mapping:
                    self.mapping[part], self.kinds[part] = new, entity
        return replacement

    @property
    def replacements(self) -> list[str]:
        return sorted(set(self.mapping.values()))
