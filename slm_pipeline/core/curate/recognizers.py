"""Custom Presidio recognizers for what agents leak and stock Presidio misses.

* `API_KEY`: OpenAI, AWS, GitHub, Stripe, Slack, Google keys, JWTs, and generic high-entropy tokens;
* `PASSWORD`: a value introduced by "password", "passcode", "pin", ... (key-named tool arguments
  are handled by the scrubber);
* `STREET_ADDRESS`: US-style street addresses with the USPS street suffixes, unit and city/state/ZIP;
* `DATE_OF_BIRTH`: a date next to "born", "DOB", "date of birth", ...;
* `CREDIT_CARD`: any 12-19 digit run that passes the Luhn check (Presidio's own pattern wants 13+
  digits with a known prefix);
* `PHONE_NUMBER`: North-American layouts with extensions, which phonenumbers scores low;
* `PERSON`: a name where someone introduces or signs themselves ("my name is ...", "Regards, ..."),
  which spaCy's small model misses for unusual surnames;
* `US_SSN`: the ddd-dd-dddd layout, also for numbers Presidio rules out as not issued;
* `EMAIL_ADDRESS`: Presidio's recognizer with an offline public-suffix check (the stock one fetches
  the suffix list from the network on first use).
"""

from __future__ import annotations

import math
import re
from collections import Counter

import tldextract
from presidio_analyzer import AnalysisExplanation, EntityRecognizer, Pattern, PatternRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts
from presidio_analyzer.predefined_recognizers import EmailRecognizer

# tldextract's bundled snapshot of the public suffix list; never fetched, never cached to disk.
_OFFLINE_TLD = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, validating the domain against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        return _OFFLINE_TLD(pattern_text).fqdn != ""


class GroupPatternRecognizer(EntityRecognizer):
    """Regexes whose named group `value` is the entity; the rest of the match is context."""

    def __init__(self, entity: str, patterns: list[tuple[str, float]], name: str | None = None,
                 flags: int = re.IGNORECASE, context: list[str] | None = None) -> None:
        self.compiled = [(re.compile(regex, flags), score) for regex, score in patterns]
        super().__init__(supported_entities=[entity], name=name or f"{entity.title()}Recognizer",
                         supported_language="en", context=context)

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        results = []
        for regex, score in self.compiled:
            for match in regex.finditer(text):
                start, end = match.span("value")
                if end > start:
                    explanation = AnalysisExplanation(recognizer=self.name, original_score=score,
                                                      pattern=regex.pattern)
                    results.append(RecognizerResult(
                        self.supported_entities[0], start, end, score, analysis_explanation=explanation,
                        recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                              RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id},
                    ))
        return results


def shannon_entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


_CAMEL_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")


def code_identifier(token: str) -> bool:
    """A camel-case name made of words (`ExportInlinedObject1Instance`, `getUserById2`): code, not a
    secret. Random keys break into many short pieces and more digits."""
    parts = _CAMEL_PART.findall(token)
    words = [p for p in parts if p.isalpha()]
    return ("".join(parts) == token and sum(c.isdigit() for c in token) <= 2
            and all(w.lower() in _SHORT_WORDS or len(w) >= 3 and re.search(r"[aeiouy]", w, re.IGNORECASE)
                    for w in words))


_SHORT_WORDS = {"by", "id", "to", "of", "on", "in", "at", "is", "or", "as", "up", "io", "ui", "db"}


class HighEntropyTokenRecognizer(PatternRecognizer):
    """Long tokens that mix upper case, lower case and digits with high entropy: likely secrets."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="API_KEY",
            name="HighEntropyTokenRecognizer",
            # A full stop may end the sentence after the token ("Our API key is ...."), not continue it.
            patterns=[Pattern("token", r"(?<![\w/.@-])[A-Za-z0-9_\-+/]{24,}={0,2}(?![\w/@-]|\.[\w/])", 0.45)],
            context=["key", "token", "secret", "api", "auth", "bearer", "credential", "apikey"],
        )

    def validate_result(self, pattern_text: str) -> bool:
        classes = sum(bool(re.search(p, pattern_text)) for p in (r"[a-z]", r"[A-Z]", r"\d"))
        return classes == 3 and shannon_entropy(pattern_text) >= 3.8 and not code_identifier(pattern_text)


API_KEY_PATTERNS = [
    Pattern("openai", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", 0.95),
    Pattern("stripe", r"\b(?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{16,}\b", 0.95),
    Pattern("aws_access_key", r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b", 0.95),
    Pattern("github", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b", 0.95),
    Pattern("slack", r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b", 0.95),
    Pattern("google", r"\bAIza[0-9A-Za-z_-]{35}\b", 0.95),
    Pattern("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 0.95),
    Pattern("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----", 1.0),
]

# USPS street suffixes (Publication 28, C1), written out and abbreviated.
STREET_SUFFIXES = (
    "Alley Aly Annex Anx Arcade Arc Avenue Ave Av Bayou Byu Beach Bch Bend Bnd Bluff Blf Bluffs Blfs Bottom Btm "
    "Boulevard Blvd Branch Br Bridge Brg Brook Brk Brooks Brks Burg Bg Burgs Bgs Bypass Byp Camp Cp Canyon Cyn "
    "Cape Cpe Causeway Cswy Center Ctr Centers Ctrs Circle Cir Circles Cirs Cliff Clf Cliffs Clfs Club Clb "
    "Common Cmn Commons Cmns Corner Cor Corners Cors Course Crse Court Ct Courts Cts Cove Cv Coves Cvs Creek Crk "
    "Crescent Cres Crest Crst Crossing Xing Crossroad Xrd Curve Curv Dale Dl Dam Dm Divide Dv Drive Dr Drives "
    "Drs Estate Est Estates Ests Expressway Expy Extension Ext Extensions Exts Fall Falls Fls Ferry Fry Field "
    "Fld Fields Flds Flat Flt Flats Flts Ford Frd Fords Frds Forest Frst Forge Frg Forges Frgs Fork Frk Forks "
    "Frks Fort Ft Freeway Fwy Garden Gdn Gardens Gdns Gateway Gtwy Glen Gln Glens Glns Green Grn Greens Grns "
    "Grove Grv Groves Grvs Harbor Hbr Harbors Hbrs Haven Hvn Heights Hts Highway Hwy Hill Hl Hills Hls Hollow "
    "Holw Inlet Inlt Island Is Islands Iss Isle Junction Jct Junctions Jcts Key Ky Keys Kys Knoll Knl Knolls "
    "Knls Lake Lk Lakes Lks Land Landing Lndg Lane Ln Light Lgt Lights Lgts Loaf Lf Lock Lck Locks Lcks Lodge "
    "Ldg Loop Mall Manor Mnr Manors Mnrs Meadow Mdw Meadows Mdws Mews Mill Ml Mills Mls Mission Msn Motorway "
    "Mtwy Mount Mt Mountain Mtn Mountains Mtns Neck Nck Orchard Orch Oval Overpass Opas Park Parks Parkway Pkwy "
    "Parkways Pass Passage Psge Path Pike Pine Pne Pines Pnes Place Pl Plain Pln Plains Plns Plaza Plz Point Pt "
    "Points Pts Port Prt Ports Prts Prairie Pr Radial Radl Ramp Ranch Rnch Rapid Rpd Rapids Rpds Rest Rst Ridge "
    "Rdg Ridges Rdgs River Riv Road Rd Roads Rds Route Rte Row Rue Run Shoal Shl Shoals Shls Shore Shr Shores "
    "Shrs Skyway Skwy Spring Spg Springs Spgs Spur Spurs Square Sq Squares Sqs Station Sta Stravenue Stra "
    "Stream Strm Street St Streets Sts Summit Smt Terrace Ter Throughway Trwy Trace Trce Track Trak Trafficway "
    "Trfy Trail Trl Trailer Trlr Tunnel Tunl Turnpike Tpke Underpass Upas Union Un Unions Uns Valley Vly Valleys "
    "Vlys Viaduct Via Vw View Views Vws Village Vlg Villages Vlgs Ville Vl Vista Vis Walk Walks Wall Way Ways "
    "Well Wl Wells Wls"
).split()
_SUFFIX = "|".join(sorted(set(STREET_SUFFIXES), key=len, reverse=True))
STREET_ADDRESS_REGEX = (
    r"(?P<value>\b\d{1,6}[A-Za-z]?\s+(?:[NSEW]\.?\s+)?(?:[A-Z][A-Za-z'.-]*\s+){0,4}(?:" + _SUFFIX + r")\b\.?"
    r"(?:,?\s+(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|#)\s*[A-Za-z0-9-]+)?"
    r"(?:,\s*[A-Z][A-Za-z .'-]+,\s*[A-Z]{2}\s+\d{5}(?:-\d{4})?)?)"
)
PO_BOX_REGEX = r"(?P<value>\bP\.?\s?O\.?\s+Box\s+\d{1,6}\b)"
MILITARY_ADDRESS_REGEX = (r"(?P<value>\b(?:(?:PSC|CMR|Unit)\s+\d{3,5},?\s+Box\s+\d{3,5}|"
                          r"(?:USNS|USNV|USS|USCGC)\s+[A-Z][a-z]+)(?:,?\s+(?:APO|FPO|DPO)\s+A[AEP]\s+\d{5})?)")

_DATE = (
    r"(?:\d{4}-\d{2}-\d{2}|\d{1,2}[/.-]\d{1,2}[/.-]\d{2,4}|"
    r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?\s+\d{1,2}(?:st|nd|rd|th)?,?\s+\d{4}|"
    r"\d{1,2}(?:st|nd|rd|th)?\s+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?,?\s+\d{4})"
)
DATE_OF_BIRTH_REGEX = (
    r"(?:\b|_)(?:born(?:\s+on)?|date[\s_]*of[\s_]*birth|birth[\s_]*date|birthday|d\.?o\.?b\.?)(?:\b|_)"
    r"[\s:,=(\"'-]*(?:is\s+|was\s+|on\s+)?(?P<value>" + _DATE + r")"
)
PASSWORD_REGEX = (
    r"(?:\b|_)(?:password|passwd|pwd|passcode|passphrase|pin(?:\s+code)?)[\"']?"
    r"(?:\s+(?:is|was|=|:)|\s*[:=])\s*[\"']?(?P<value>[^\s\"',;]{4,64})"
)
LUHN_CANDIDATE = r"(?P<value>(?<![\w-])\d(?:[ -]?\d){11,18}(?![\w-]))"
NANP_PHONE_REGEX = (
    r"(?P<value>(?<![\w+])(?:\+?1[-. ]?|001[-. ]?)?(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}"
    r"(?:\s*(?:x|ext\.?)\s*\d{1,6})?(?!\d))"
)
INTERNATIONAL_PHONE_REGEX = r"(?P<value>(?<![\w+])\+\d{1,3}[\s.-]?(?:\(0\)\s?)?\(?\d{1,4}\)?(?:[\s.-]?\d{2,4}){2,4}(?!\d))"
BARE_PHONE_REGEX = r"(?P<value>(?<![\w.-])\d{10}(?![\w-]|\.\w))"  # a full stop may end the sentence
# "call me back on ...": spaCy counts "call" and "back" as stop words, so Presidio's context words never see them.
CUED_PHONE_REGEX = (r"(?i:\b(?:call|text|ring|reach|phone|contact)\s+(?:me|us)(?:\s+back)?\s+(?:on|at)\s+)"
                    r"(?P<value>\+?\d[\d\s().-]{7,16}\d)(?![\w-]|\.\w)")
PHONE_CONTEXT = ["phone", "call", "tel", "telephone", "mobile", "cell", "contact", "reach", "number", "sms", "text",
                 "fax", "office", "desk", "landline", "whatsapp", "ring", "dial", "answering", "registered", "hotline"]
# National layouts outside North America: a trunk 0 and an area code (`0380 7558505`, `(07700) 900123`,
# `0521 61 09 13`, `06-25013966`), and digit groups (`468 788 096`, `66 206 69 18`) that only count
# next to a phone context word. Digit totals are checked by `PhoneLayoutRecognizer`.
NATIONAL_PHONE_REGEX = (r"(?P<value>(?<![\w+(.,/-])(?:\(\d{1,4}\)|0\d{1,4})(?:[\s-]?\d{2,8}){1,4}"
                        r"(?![\w-]|\.\w|,\d))")
GROUPED_DIGITS_REGEX = (r"(?P<value>(?<![\w+(.,/-])(?!\d{3}-\d{2}-\d{4}(?!\d))\d{2,4}(?:[ -]\d{2,4}){1,4}"
                        r"(?![\w-]|\.\w|,\d))")
# Two groups with a long local number (`22 782310`, `9356 7285`): only next to a phone word.
AREA_AND_LOCAL_REGEX = r"(?P<value>(?<![\w+(.,/-])\d{2,4} \d{5,8}(?![\w-]|\.\w|,\d))"


# What may open a line of a block: indentation, quote marks, bullets, `}}` or `|` left by a template.
_LINE_PREFIX = r"[ \t>?*}|•-]*"
# A name where people introduce or sign themselves; spaCy's small model misses unusual surnames there.
_NAME = r"[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?"
_NOT_A_NAME = r"(?!(?:My|I|The|Please|Our|Your|You|Use|Call|Ship|Send|Card|Thanks|Regards|Can|Could|And)\b)"
_FULL_NAME = rf"{_NOT_A_NAME}{_NAME}(?:\s{_NOT_A_NAME}{_NAME}){{0,2}}"
INTRODUCED_NAME_REGEXES = [
    rf"(?i:\bmy\s+name\s+is|\bmy\s+name's|\bi\s+am|\bi'm|\bname\s*:|\bcalls?\s+me|"
    rf"\b(?:maiden|last|first|family|sur)\s*name(?:\s+is|\s*[:?]))\s+(?P<value>{_FULL_NAME})"
    r"(?=[ \t]*(?:[,.!;)\r\n]|(?i:and|here|from|but)\b|$))",
    rf"(?i:\bthis\s+is)\s+(?P<value>{_FULL_NAME})\s+(?i:writing|speaking|here)\b",
    rf"(?i:\b(?:best\s+|kind\s+)?regards|\bthanks|\bcheers|\bsincerely|\bsigned|\bbest)\s*,\s+(?P<value>{_FULL_NAME})",
]
# A title before a capitalised word (`ms. Tomasz`, `Dr. Okafor`): a person, whatever the name.
TITLED_NAME_REGEX = (r"(?i:\b(?:mr|mrs|ms|miss|dr|prof)\.?)[ \t]+"
                     r"(?P<value>[A-ZÀ-ÖØ-ÞĀ-Ž][^\W\d_]+(?:[-'][A-ZÀ-ÖØ-ÞĀ-Ž]?[^\W\d_]+)?"
                     r"(?:[ \t]+[A-Z]\.?)?(?:[ \t]+[A-ZÀ-ÖØ-ÞĀ-Ž][^\W\d_]+){0,2})")


_UPPER = "A-ZÀ-ÖØ-ÞĀ-Ž"
_WORD_NAME = rf"[{_UPPER}][^\W\d_]+(?:[-'][{_UPPER}]?[^\W\d_]+)?"
_TITLE = r"(?:(?:Mr|Mrs|Ms|Miss|Dr|Prof|Sir)\.?\s+)?"
FULL_NAME_REGEX = rf"(?P<value>\b{_TITLE}{_WORD_NAME}(?:[ \t]+[A-Z]\.?)?(?:[ \t]+{_WORD_NAME}){{1,2}})\b"
# A name alone on its line (after quote marks or bullets), with another line after it: a signature, a card.
NAME_LINE_REGEX = (rf"^{_LINE_PREFIX}(?P<value>{_TITLE}{_WORD_NAME}(?:[ \t]+{_WORD_NAME}){{0,2}})[ \t]*,?[ \t]*"
                   r"(?=[ \t]*\r?\n" + _LINE_PREFIX + r"\S)")
CUED_NAME_REGEX = (r"(?i:\b(?:on\s+behalf\s+of|behalf\s+of|directed\s+by|written\s+by|sung\s+by|performed\s+by|"
                   r"speak\s+to|speak\s+with|talk\s+to|follow\s+up\s+with|send\s+(?:it|this|the\s+\w+)\s+to|"
                   r"forward\s+(?:it|this|the\s+\w+)\s+to|add|called|named|under|change\s+it\s+to|"
                   r"ask\s+for|assistant\s+to|tribute\s+to|said|says|meet|met)(?:\s+(?:him|her|them))?\s*:?\s+)"
                   rf"(?P<value>{_TITLE}{_WORD_NAME}(?:[ \t]+[A-Z]\.?)?(?:\s+{_WORD_NAME}){{0,2}})")
# Street addresses outside the US: a street word with the house number after it (`Jakobstrasse 89`,
# `Olmstraat 69`, `ul. Zamkowa 33`, `Via Santa Maria 107`, `Avda. Explanada Barnuevo 69`), or a number
# before a Romance street word (`3 Rue Hedi Nooman`).
_STREET_WORDS_BEFORE = (r"(?:Via|Viale|Piazza|Piazzale|Corso|Largo|Borgo|Contrada|Rotonda|Vicolo|Strada|Rue|Avenue|"
                        r"Boulevard|Bd|Calle|C/|Avda\.?|Avenida|Av\.|Rua|Praça|Travessa|Carrer|Plaza|Paseo|Camino|Ronda|"
                        r"ul\.|ulica|al\.|Aleja|Chemin|Chaussée|Place|Quai|Impasse|Allée|Route|Rte|Via\.)"
                        r"(?:[ \t]+(?:de|du|des|de la|di|del|della|da|do|dos)\b)?")
_STREET_SUFFIXES = (r"(?i:strasse|straße|str\.|gasse|weg|platz|allee|ring|damm|ufer|laan|straat|gracht|plein|kade|"
                    r"dijk|singel|vej|gade|gatan|vägen|veien|gata|katu|tie|utca|út|tér|ulice|náměstí|cesta|"
                    r"steeg|hof|markt|pad|braut|vegur|stræti|sokak|sokağı|caddesi|bulvarı|aqq\.)")
_GREEK = "\u0370-\u03ff\u1f00-\u1fff"
_NOT_A_STREET = (r"(?!(?:Floor|Room|Level|Gate|Platform|Terminal|Chapter|Section|Page|Seat|Row|Table|Version|"
                 r"Release|Step|Part|Week|Day|Year|Grade|Class|Season|Episode|Volume|Vol|No|Nr)\b)")
_STREET_PHRASE = (rf"{_NOT_A_STREET}[{_UPPER}{_GREEK}][^\W\d_]*\.?(?:[ \t]+(?!(?i:at|to|in|on|and|or|of|for|the|by|with|from|is|"
                  rf"was|are|has|had|have|me|my|us|our|your)\b)[^\W\d_]+\.?){{0,3}}")
_HOUSE_NUMBER = r"\d{1,5}[a-zA-Z]?(?![\w:/-]|[.,]\d)\.?"
# Cues that a street follows in prose (`lives on`, `the north side of`, `the corner of`, `send it to`).
_STREET_CUE = (r"(?i:\b(?:(?:lives?|living|located|situated|resides?|address(?:\s+is)?|station\s+is|"
               r"restaurant\s+is|office\s+is|off|stop|return|sen[dt]|deliver(?:ed)?|ship(?:ped)?|mail(?:ed)?)"
               r"(?:\s+(?:it|this|them|the\s+\w+|a\s+new\s+one))?\s+(?:on|at|of|to|in)|(?:side|corner)\s+of)\s+)")
INTERNATIONAL_ADDRESS_REGEXES = [
    # A building number, a street name in any script and the house number (`307 Alvaro Cunqueiro 55`,
    # `0556 Rákóczi út 41.`, `7383 πλατεία Καραισκάκη 262`), a unit before it allowed (`Suite 940 99530 ...`).
    # Not a count of products (`Order 12 Pixel 8 cases`): one digit is a quantity, and a lower-case
    # noun after the number ends no address.
    rf"(?P<value>(?<![\w.,/+-])(?:(?:Apt\.?|Suite|Unit)[ \t]+\d{{1,5}}[ \t]+)?\d{{2,5}}[ \t]+{_STREET_PHRASE}[ \t]+"
    rf"{_HOUSE_NUMBER})(?![ \t]+(?!(?:in|on|at|for|after|before|until|near|is|was)\b)[a-z])",
    # A street name and house number after a cue (`lives on Metsanurga 48`, `the north side of Castelao 66`).
    rf"{_STREET_CUE}(?P<value>{_STREET_PHRASE}[ \t]+{_HOUSE_NUMBER})",
    # A street name and house number that the text calls a street (`Männiku 63 street`).
    rf"(?P<value>\b{_STREET_PHRASE}[ \t]+{_HOUSE_NUMBER})(?=[ \t]+(?i:street|road|avenue)\b)",
    # The second street of a corner (`the corner of Via Venezia 88 St. and Sari Mountain St.`).
    rf"(?i:\bcorner\s+of\s)[^\n]{{3,60}}?\s(?i:and)\s+"
    rf"(?P<value>[{_UPPER}][^\W\d_]+(?:[ \t]+[{_UPPER}][^\W\d_]+){{0,3}})",
    # A line of a block that is a street name and a house number (`Strojírenská 1006`), more lines after it.
    rf"(?m)^{_LINE_PREFIX}(?P<value>(?:\d{{1,5}}[ \t]+)?[{_UPPER}][^\W\d_'.]+(?:[ \t]+[^\W\d_'.]+\.?){{0,3}}[ \t]+"
    rf"\d{{1,5}}[a-zA-Z]?)[ \t]*,?[ \t]*(?=\r?\n{_LINE_PREFIX}\S)",
    rf"(?P<value>\b[{_UPPER}][\w-]*{_STREET_SUFFIXES}\s+\d{{1,5}}[a-zA-Z]?\b(?:\s*[/-]\s*\d{{1,4}})?)",
    rf"(?P<value>\b\d{{1,5}}(?:/\d{{1,5}})?,?\s+(?:[{_UPPER}][^\W\d_]+\s+){{1,3}}(?:Street|Road|Chowk|Marg|Nagar|Path|"
    rf"Lane|Colony|Ganj|Bazar|Bagh)\b)",
    rf"(?P<value>\b[{_UPPER}][^\W\d_]+[ \t]+(?:Chaussee|Straße|Strasse|Str\.|Weg|Allee|Platz|Ring|Gasse|Damm|Laan|"
    rf"Straat|Vej|Gade|Gata|Gatan|Vägen|Veien)[ \t]+\d{{1,5}}[a-zA-Z]?\b)",
    rf"(?P<value>\b(?i:{_STREET_WORDS_BEFORE})\s+(?:[{_UPPER}dl][^\W\d_'.]*\.?\s+|[{_UPPER}][^\W\d_]*'\s*){{0,4}}?"
    rf"[{_UPPER}][^\W\d_]*,?\s+\d{{1,5}}[a-zA-Z]?\b)",
    rf"(?P<value>\b\d{{1,5}}[a-zA-Z]?,?\s+(?i:{_STREET_WORDS_BEFORE})\s+(?:[{_UPPER}dl][^\W\d_'.]*\s?){{1,4}})",
    rf"(?P<value>\b[{_UPPER}][^\W\d_]+\s+\d{{1,5}}[a-zA-Z]?(?=\s*(?:,\s*|\r?\n\s*)\d{{4,5}}\s+[{_UPPER}]))",
]


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


class LuhnCardRecognizer(GroupPatternRecognizer):
    """12 to 19 digits (spaces or dashes between) that pass the Luhn check."""

    def __init__(self) -> None:
        super().__init__("CREDIT_CARD", [(LUHN_CANDIDATE, 0.6)], name="LuhnCardRecognizer", flags=0)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        return [r for r in super().analyze(text, entities, nlp_artifacts)
                if luhn_valid(re.sub(r"\D", "", text[r.start:r.end]))]


class PhoneLayoutRecognizer(GroupPatternRecognizer):
    """Phone layouts, kept when they hold 7 to 15 digits and are not a date. Six grouped digits
    (`35 88 32`, a short local number) count only with a phone word right beside them on their line."""

    def __init__(self, patterns: list[tuple[str, float]]) -> None:
        super().__init__("PHONE_NUMBER", patterns, name="LayoutPhoneRecognizer", flags=0, context=PHONE_CONTEXT)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        kept = []
        for result in super().analyze(text, entities, nlp_artifacts):
            value = text[result.start:result.end]
            digits = sum(c.isdigit() for c in _EXTENSION.sub("", value))
            labelled = " " in value and (_LABEL_BEFORE.search(text[max(0, result.start - 12):result.start])
                                         or _LABEL_AFTER.match(text[result.end:result.end + 12]))
            if _DATE_LIKE.fullmatch(value) or _YEAR_RANGE.fullmatch(value) or not (
                    7 <= digits <= 15 or digits == 6 and labelled):
                continue
            # Presidio's context words look only before a value; on cards and signatures they come after
            # (`650-555-0199 mobile`), so both sides count here.
            around = text[max(0, result.start - 40):result.start] + " " + text[result.end:result.end + 20]
            if result.score < 0.4 and _PHONE_WORDS.search(around):
                result.score = min(1.0, result.score + 0.35)
            kept.append(result)
        return kept


_PHONE_WORDS = re.compile(r"(?i)\b(?:" + "|".join(PHONE_CONTEXT) + r")")
_LABEL_BEFORE = re.compile(r"(?i)\b(?:" + "|".join(PHONE_CONTEXT) + r")\w*[ \t]*[:.]?[ \t]*$")
_LABEL_AFTER = re.compile(r"(?i)[ \t]*\(?(?:" + "|".join(PHONE_CONTEXT) + r")\b")
_EXTENSION = re.compile(r"\s*(?:x|ext\.?)\s*\d+$", re.IGNORECASE)
# A date has a day and a month (`2024-03-15`, `15/03/2024`, `3 15 24`); `994 27 783` and `35 88 32` are not dates.
_DAY, _MONTH = r"(?:0?[1-9]|[12]\d|3[01])", r"(?:0?[1-9]|1[0-2])"
_YEAR_RANGE = re.compile(r"(?:19|20)\d{2}\s*[-–/]\s*(?:(?:19|20)\d{2}|\d{2})")  # a season, `2019-2020`
_DATE_LIKE = re.compile(rf"\d{{4}}[-/ ]{_MONTH}[-/ ]{_DAY}|{_DAY}[-/ ]{_DAY}[-/ ](?:\d{{2}}|\d{{4}})")


# What may follow a street line in the same address: a unit, a city, a region or country, a postcode.
_ADDRESS_TAIL = re.compile(
    r"(?:[ \t]*,[ \t]*|(?:[ \t]*\r?\n" + _LINE_PREFIX + r"){1,2}|[ \t]+)"
    r"(?:(?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Floor|Fl\.|Box|#)[ \t]*[A-Za-z0-9-]+"
    r"|(?:(?:APO|FPO|DPO)[ \t]+A[AEP][ \t]+\d{5})"
    r"|[A-ZÀ-ÖØ-Þ][^\W\d_]+(?:[ \t-]+[A-ZÀ-ÖØ-Þ][^\W\d_]+){0,3}(?:,?[ \t]+(?:[A-Z]{2}[ \t]+)?\d{4,5}(?:-\d{4})?)?"
    r"|[A-Z]{2}[ \t]+\d{5}(?:-\d{4})?|\d{4,5}(?:-\d{4})?)"
    r"(?=[ \t]*(?:[,.;]|\r?\n|$))"
)
_ADDRESS_HEAD = re.compile(r"\b\d{1,5}[A-Za-z]?,?[ \t]+$")


class AddressBlockRecognizer(GroupPatternRecognizer):
    """A street line, extended over the lines or comma-separated parts of the same address that follow it
    (unit, city, region, country, postcode; four at most) and a house number before it."""

    def __init__(self, patterns: list[tuple[str, float]], name: str = "Street_AddressRecognizer") -> None:
        super().__init__("STREET_ADDRESS", patterns, name=name, flags=0)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        results = super().analyze(text, entities, nlp_artifacts)
        for result in results:
            head = _ADDRESS_HEAD.search(text[max(0, result.start - 8):result.start])
            if head:
                result.start -= len(head.group(0))
            for _ in range(4):
                tail = _ADDRESS_TAIL.match(text, result.end)
                if not tail or tail.end() - result.end > 60:
                    break
                result.end = tail.end()
        return results


class LexiconNameRecognizer(GroupPatternRecognizer):
    """Two or three capitalised words whose first is a known first name and last a known last name
    (Faker's lists in several languages), or a capitalised name on its own line that opens a signature
    or an address block, or the object of a cue (`on behalf of`, `directed by`, `speak to`, ...) with a
    known name in it."""

    def __init__(self) -> None:
        super().__init__("PERSON", [(FULL_NAME_REGEX, 0.6), (NAME_LINE_REGEX, 0.6), (CUED_NAME_REGEX, 0.6)],
                         name="LexiconNameRecognizer", flags=re.MULTILINE)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        from slm_pipeline.core.curate.nonpersonal import all_place_names, name_parts, place_names

        names, places, lone_places = name_parts(), all_place_names(), place_names()
        kept = []
        for result in super().analyze(text, entities, nlp_artifacts):
            value = text[result.start:result.end]
            words = [w.lower() for w in re.findall(r"[^\W\d_]+", value)]
            words = [w for w in words if w not in _TITLES]
            if not words or words[-1] in _NOT_NAMES or words[0] in _NOT_NAMES:
                continue
            # A place in it (`Washington D.C.`, `Real Madrid`, `Hilton New York`): a lexicon is no evidence.
            if any(w in lone_places for w in words) or any(
                    " ".join(words[i:j]) in places for i in range(len(words)) for j in range(i + 2, len(words) + 1)):
                continue
            pattern = result.analysis_explanation.pattern if result.analysis_explanation else ""
            if pattern == FULL_NAME_REGEX:
                if not (len(words) >= 2 and words[0] in names and words[-1] in names):
                    continue
            elif not any(w in names for w in words):
                continue
            kept.append(result)
        return kept


_TITLES = {"mr", "mrs", "ms", "miss", "dr", "prof", "sir", "madam", "mx"}
_NOT_NAMES = {"street", "road", "avenue", "park", "university", "college", "bank", "hospital", "school", "city",
              "county", "state", "company", "group", "inc", "ltd", "corp", "hotel", "station", "airport",
              "center", "centre", "museum", "church", "library", "river", "lake", "mount", "the", "dear",
              "regards", "thanks", "best", "kind", "hello", "hi", "bridge", "gate", "tower", "square", "hall",
              "house", "palace", "castle", "garden", "gardens", "beach", "island", "bay", "port", "valley",
              "hills", "bank", "fund", "capital", "partners", "holdings", "bros", "brothers", "co", "llc"}


def custom_recognizers() -> list[EntityRecognizer]:
    """Every recognizer this project adds to Presidio's registry."""
    return [
        OfflineEmailRecognizer(),
        PatternRecognizer(supported_entity="API_KEY", name="ApiKeyRecognizer", patterns=API_KEY_PATTERNS),
        HighEntropyTokenRecognizer(),
        GroupPatternRecognizer("PASSWORD", [(PASSWORD_REGEX, 0.85)]),
        AddressBlockRecognizer([(STREET_ADDRESS_REGEX, 0.75), (PO_BOX_REGEX, 0.75), (MILITARY_ADDRESS_REGEX, 0.75)]),
        GroupPatternRecognizer("DATE_OF_BIRTH", [(DATE_OF_BIRTH_REGEX, 0.9)]),
        LuhnCardRecognizer(),
        # Presidio drops SSN-shaped numbers it deems invalid (111-11-1111); a leak is a leak.
        GroupPatternRecognizer("US_SSN", [(r"(?P<value>(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-]))", 0.5)],
                               name="SsnLayoutRecognizer", flags=0),
        GroupPatternRecognizer("PERSON", [(regex, 0.85) for regex in (*INTRODUCED_NAME_REGEXES, TITLED_NAME_REGEX)],
                               name="IntroducedNameRecognizer", flags=0),
        PhoneLayoutRecognizer([(NANP_PHONE_REGEX, 0.5), (INTERNATIONAL_PHONE_REGEX, 0.5), (BARE_PHONE_REGEX, 0.3),
                               (CUED_PHONE_REGEX, 0.7), (NATIONAL_PHONE_REGEX, 0.4), (GROUPED_DIGITS_REGEX, 0.2),
                               (AREA_AND_LOCAL_REGEX, 0.2)]),
        AddressBlockRecognizer([(regex, 0.6) for regex in INTERNATIONAL_ADDRESS_REGEXES],
                               name="InternationalAddressRecognizer"),
        LexiconNameRecognizer(),
    ]
