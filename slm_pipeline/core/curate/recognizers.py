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
        return classes == 3 and shannon_entropy(pattern_text) >= 3.8


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
PHONE_CONTEXT = ["phone", "call", "tel", "telephone", "mobile", "cell", "contact", "reach", "number", "sms", "text"]


# A name where people introduce or sign themselves; spaCy's small model misses unusual surnames there.
_NAME = r"[A-Z][a-z]+(?:[-'][A-Z][a-z]+)?"
_NOT_A_NAME = r"(?!(?:My|I|The|Please|Our|Your|You|Use|Call|Ship|Send|Card|Thanks|Regards|Can|Could|And)\b)"
_FULL_NAME = rf"{_NOT_A_NAME}{_NAME}(?:\s{_NOT_A_NAME}{_NAME}){{0,2}}"
INTRODUCED_NAME_REGEXES = [
    rf"(?i:\bmy\s+name\s+is|\bmy\s+name's|\bi\s+am|\bi'm|\bname\s*:)\s+(?P<value>{_FULL_NAME})"
    r"(?=\s*(?:[,.!;)]|(?i:and|here|from)\b|$))",
    rf"(?i:\bthis\s+is)\s+(?P<value>{_FULL_NAME})\s+(?i:writing|speaking|here)\b",
    rf"(?i:\b(?:best\s+|kind\s+)?regards|\bthanks|\bcheers|\bsincerely|\bsigned|\bbest)\s*,\s+(?P<value>{_FULL_NAME})",
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


def custom_recognizers() -> list[EntityRecognizer]:
    """Every recognizer this project adds to Presidio's registry."""
    return [
        OfflineEmailRecognizer(),
        PatternRecognizer(supported_entity="API_KEY", name="ApiKeyRecognizer", patterns=API_KEY_PATTERNS),
        HighEntropyTokenRecognizer(),
        GroupPatternRecognizer("PASSWORD", [(PASSWORD_REGEX, 0.85)]),
        GroupPatternRecognizer("STREET_ADDRESS", [(STREET_ADDRESS_REGEX, 0.75), (PO_BOX_REGEX, 0.75)], flags=0),
        GroupPatternRecognizer("DATE_OF_BIRTH", [(DATE_OF_BIRTH_REGEX, 0.9)]),
        LuhnCardRecognizer(),
        # Presidio drops SSN-shaped numbers it deems invalid (111-11-1111); a leak is a leak.
        GroupPatternRecognizer("US_SSN", [(r"(?P<value>(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-]))", 0.5)],
                               name="SsnLayoutRecognizer", flags=0),
        GroupPatternRecognizer("PERSON", [(regex, 0.85) for regex in INTRODUCED_NAME_REGEXES],
                               name="IntroducedNameRecognizer", flags=0),
        GroupPatternRecognizer("PHONE_NUMBER", [(NANP_PHONE_REGEX, 0.5), (INTERNATIONAL_PHONE_REGEX, 0.5),
                                                (BARE_PHONE_REGEX, 0.3), (CUED_PHONE_REGEX, 0.7)],
                               name="LayoutPhoneRecognizer", flags=0, context=PHONE_CONTEXT),
    ]
