"""Scrub every text of a call: message contents (the system prompt included), tool-call arguments
(every JSON string value, the JSON kept valid), tool results and the teacher's answer.

Tool definitions (`request.tools`) are the agent's code, not user content: the SLM sees them at
serving time exactly as the agent sends them, so they are never rewritten. They are only searched
for secrets; a secret in one quarantines the call (`secret_in_tool_definition`).

Replacement is consistent within a call: the values found anywhere in the call are looked for
everywhere in it, so a name Presidio finds in the prompt is replaced in the tool arguments too,
and both get the same surrogate. Tool-argument keys add evidence of their own (`password`,
`api_key`, `guest_name`, `phone`, ...). A short tool-argument value (four words or fewer) is a
person's name only on that evidence (its key, or the same name found as a person in the conversation):
spaCy's small model, seeing a value alone, calls cities, song titles and job titles people.

Names as search terms (`director="..."`, `artist="..."`) are scrubbed by default: nothing tells a
public figure from a private person. `public_figures="keep"` keeps a name that is the whole value
of an argument whose key does not say it holds the user's own name (a search term), everywhere in
the call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from slm_pipeline.core.curate.analyzer import STRUCTURED_ENTITIES, Finding, SegmentAnalyzer
from slm_pipeline.core.curate.nonpersonal import all_place_names, has_name_part, non_personal
from slm_pipeline.core.curate.recognizers import API_KEY_PATTERNS
from slm_pipeline.core.curate.surrogates import Replacer

DEFAULT_MAX_TEXT_CHARS = 200_000

# Tool-argument keys whose whole value is an entity (matched on the lower-cased key).
KEY_HINTS: list[tuple[re.Pattern[str], str, Callable[[str], bool]]] = [
    (re.compile(r"(pass(word|wd|code|phrase)?|pwd|secret|pin)$"), "PASSWORD", lambda v: len(v) >= 3),
    (re.compile(r"(api_?key|apikey|access_?token|auth_?token|token|authorization|private_?key|"
                r"client_?secret|secret_?key)$"), "API_KEY", lambda v: len(v) >= 8),
    # A bare `key` is as often a dictionary key or a setting's name: only a secret-looking value counts.
    (re.compile(r"(^|_)key$"), "API_KEY",
     lambda v: len(v) >= 16 and " " not in v and all(re.search(c, v) for c in (r"[a-z]", r"[A-Z]", r"\d"))),
    (re.compile(r"(e_?mail|email_?address)$"), "EMAIL_ADDRESS", lambda v: "@" in v),
    (re.compile(r"(phone|phone_?number|mobile|tel|telephone|fax|cell)$"), "PHONE_NUMBER",
     lambda v: sum(c.isdigit() for c in v) >= 7),
    # The whole key: `city_name`, `song_name` and `product_name` hold no person.
    (re.compile(r"^(?:(guest|customer|passenger|contact|traveller|traveler|cardholder|holder|full|first|last|"
                r"patient|user|employee|recipient|sender)_?name|customer|passenger|traveller|traveler|name)$"),
     "PERSON", lambda v: bool(re.fullmatch(r"[A-Z][a-zA-Z'.-]+(?: [A-Z][a-zA-Z'.-]+){0,3}", v))
     and not non_personal("PERSON", v)),
    (re.compile(r"(ip|ip_?address|client_?ip)$"), "IP_ADDRESS", lambda v: "." in v or ":" in v),
    (re.compile(r"((shipping|billing|home|street|postal|mailing)_?address|address|street)$"), "STREET_ADDRESS",
     lambda v: any(c.isdigit() for c in v) and len(v) >= 8 and re.search(r"[A-Za-z]{2,}", v) is not None),
    (re.compile(r"(ssn|social_?security(_?number)?)$"), "US_SSN", lambda v: sum(c.isdigit() for c in v) == 9),
    (re.compile(r"(card|card_?number|credit_?card|pan)$"), "CREDIT_CARD", lambda v: sum(c.isdigit() for c in v) >= 12),
    (re.compile(r"iban$"), "IBAN_CODE", lambda v: len(v) >= 15),
    (re.compile(r"passport(_?(number|no))?$"), "US_PASSPORT", lambda v: len(v) >= 6),
    (re.compile(r"(dob|date_?of_?birth|birth_?date|birthday)$"), "DATE_OF_BIRTH", lambda v: len(v) >= 6),
    (re.compile(r"(account_?number|bank_?account)$"), "US_BANK_NUMBER", lambda v: sum(c.isdigit() for c in v) >= 6),
]


class UnscrubbableCall(ValueError):
    """A call whose texts cannot be analysed; it is quarantined with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def key_hint(key: str | None, value: str) -> str | None:
    if not key:
        return None
    lowered = key.lower()
    for pattern, entity, accept in KEY_HINTS:
        if pattern.search(lowered) and accept(value.strip()):
            return entity
    return None


@dataclass
class Slot:
    """One text of a call, where it came from, and how to write its scrubbed version back."""

    text: str
    key: str | None
    write: Callable[[str], None]


@dataclass
class CallTexts:
    slots: list[Slot] = field(default_factory=list)
    rewrites: list[Callable[[], None]] = field(default_factory=list)  # re-serialise JSON arguments


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffd]")


def _check(text: str, where: str, max_chars: int) -> None:
    if len(text) > max_chars:
        raise UnscrubbableCall("text_too_large", f"{where}: {len(text):,} characters exceed the limit of {max_chars:,}")
    head = text[:4096]
    if "\x00" in head or len(_CONTROL.findall(head)) > len(head) // 10:
        raise UnscrubbableCall("binary_content", f"{where}: binary content (NUL, control bytes or undecodable bytes)")


def _walk_json(value: Any, key: str | None, texts: CallTexts, set_value: Callable[[Any], None], where: str,
               max_chars: int) -> None:
    if isinstance(value, str):
        _check(value, where, max_chars)
        texts.slots.append(Slot(value, key, set_value))
    elif isinstance(value, dict):
        for k, v in value.items():
            _walk_json(v, str(k), texts, lambda new, d=value, k=k: d.__setitem__(k, new), f"{where}.{k}", max_chars)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _walk_json(v, key, texts, lambda new, lst=value, i=i: lst.__setitem__(i, new), f"{where}[{i}]", max_chars)
    elif isinstance(value, int) and not isinstance(value, bool) and key_hint(key, str(value)):
        # A number under an identifying key (a phone, an account number): scrubbed like text.
        texts.slots.append(Slot(str(value), key, lambda new: set_value(int(new) if new.isdigit() else new)))


def _json_text(owner: dict[str, Any], field_name: str, texts: CallTexts, where: str, max_chars: int,
               strict: bool) -> None:
    """A string that holds JSON (tool arguments, tool results): scrub its values, keep it valid JSON."""
    raw = owner[field_name]
    if isinstance(raw, (dict, list)):
        _walk_json(raw, None, texts, lambda new: owner.__setitem__(field_name, new), where, max_chars)
        return
    if not isinstance(raw, str):
        return
    _check(raw, where, max_chars)
    try:
        parsed = orjson.loads(raw) if raw.strip()[:1] in ("{", "[") else None
    except orjson.JSONDecodeError as exc:
        if strict:
            raise UnscrubbableCall("malformed_tool_arguments", f"{where}: not valid JSON ({exc})") from None
        parsed = None
    if parsed is None:
        if strict and raw.strip():
            raise UnscrubbableCall("malformed_tool_arguments", f"{where}: not a JSON object")
        texts.slots.append(Slot(raw, None, lambda new: owner.__setitem__(field_name, new)))
        return
    holder = {"value": parsed, "changed": False}
    first = len(texts.slots)
    _walk_json(parsed, None, texts, lambda new: holder.__setitem__("value", new), where, max_chars)
    for slot in texts.slots[first:]:  # note when a value inside is replaced, so unchanged JSON stays as written

        def write(new: str, inner: Callable[[str], None] = slot.write) -> None:
            holder["changed"] = True
            inner(new)

        slot.write = write
    spaced = '": ' in raw  # keep the writer's style: json.dumps' spaces, or compact

    def rewrite() -> None:
        if holder["changed"]:
            owner[field_name] = json.dumps(holder["value"], ensure_ascii=False) if spaced else \
                orjson.dumps(holder["value"]).decode()

    texts.rewrites.append(rewrite)


def _message_texts(message: dict[str, Any], texts: CallTexts, where: str, max_chars: int) -> None:
    content = message.get("content")
    if isinstance(content, str):
        if message.get("role") == "tool":
            _json_text(message, "content", texts, f"{where}.content", max_chars, strict=False)
        else:
            _check(content, f"{where}.content", max_chars)
            texts.slots.append(Slot(content, None, lambda new: message.__setitem__("content", new)))
    elif isinstance(content, list):
        for i, part in enumerate(content):
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                _check(part["text"], f"{where}.content[{i}]", max_chars)
                texts.slots.append(Slot(part["text"], None, lambda new, p=part: p.__setitem__("text", new)))
    for j, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and "arguments" in function:
            _json_text(function, "arguments", texts, f"{where}.tool_calls[{j}].arguments", max_chars, strict=True)


_SECRETS = [re.compile(p.regex) for p in API_KEY_PATTERNS]
SHORT_ARGUMENT_WORDS = 4


def tool_definition_secret(tools: Any) -> str | None:
    """Where a secret sits in the tool definitions (`request.tools[0].function...`), or None.

    The definitions are never rewritten, so a secret in one cannot be scrubbed: the call is quarantined."""

    def walk(value: Any, where: str) -> str | None:
        if isinstance(value, str):
            for pattern in _SECRETS:
                if pattern.search(value):
                    return where
        elif isinstance(value, dict):
            for key, item in value.items():
                found = walk(item, f"{where}.{key}")
                if found:
                    return found
        elif isinstance(value, list):
            for i, item in enumerate(value):
                found = walk(item, f"{where}[{i}]")
                if found:
                    return found
        return None

    return walk(tools, "request.tools")


def call_texts(request: dict[str, Any], response: dict[str, Any], max_chars: int = DEFAULT_MAX_TEXT_CHARS
               ) -> CallTexts:
    """Every text of a call, in a fixed order, each with a way to write it back (mutates the dicts)."""
    texts = CallTexts()
    where = tool_definition_secret(request.get("tools") or [])
    if where:
        raise UnscrubbableCall("secret_in_tool_definition",
                               f"{where}: an API key or private key in a tool definition; tool definitions are "
                               f"never rewritten, so remove the secret from the agent's tool schema")
    for i, message in enumerate(request.get("messages") or []):
        if isinstance(message, dict):
            _message_texts(message, texts, f"request.messages[{i}]", max_chars)
    for k, choice in enumerate(response.get("choices") or []):
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            _message_texts(choice["message"], texts, f"response.choices[{k}].message", max_chars)
    return texts


# On the same span, at the same score, the likelier reading wins (a 10-digit number is a phone
# number more often than a UK NHS number).
_PRIORITY = {entity: rank for rank, entity in enumerate(STRUCTURED_ENTITIES + ("PERSON", "STREET_ADDRESS"))}


def resolve_overlaps(spans: Iterable[Finding], text: str | None = None) -> list[Finding]:
    """Non-overlapping spans: a span inside another goes; partial overlaps of one type merge. Partial
    overlaps of two types split where they meet (with `text`): the higher score keeps its span and the
    other keeps what lies outside it (`Lisa Douglas Apt` beside `Apt. 606 157 Mühle 88` is a name and an
    address); without `text`, or when nothing of a word is left, they merge (higher score's type)."""
    chosen: list[Finding] = []
    ordered = sorted(spans, key=lambda s: (s[0], -(s[1] - s[0]), -s[3], _PRIORITY.get(s[2], len(_PRIORITY))))
    for start, end, entity, score in ordered:
        if chosen and start < chosen[-1][1]:
            last = chosen[-1]
            if end <= last[1]:
                continue
            if text is not None and entity != last[2]:
                if score > last[3] and _has_word(text, last[0], start):
                    chosen[-1] = (last[0], _trim_end(text, last[0], start), last[2], last[3])
                    chosen.append((start, end, entity, score))
                    continue
                if score <= last[3] and _has_word(text, last[1], end):
                    chosen.append((_trim_start(text, last[1], end), end, entity, score))
                    continue
            kind = entity if score > last[3] else last[2]
            chosen[-1] = (last[0], end, kind, max(score, last[3]))
        else:
            chosen.append((start, end, entity, score))
    return chosen


def _has_word(text: str, start: int, end: int) -> bool:
    return any(c.isalnum() for c in text[start:end])


def _trim_end(text: str, start: int, end: int) -> int:
    while end > start and not text[end - 1].isalnum():
        end -= 1
    return end


def _trim_start(text: str, start: int, end: int) -> int:
    while start < end and not text[start].isalnum():
        start += 1
    return start


def _occurrences(text: str, values: list[str], kinds: dict[str, str]) -> list[Finding]:
    found = []
    for value in values:
        if value in text:
            for match in re.finditer(r"(?<!\w)" + re.escape(value) + r"(?!\w)", text):
                found.append((match.start(), match.end(), kinds[value], 1.0))
    return found


@dataclass
class ScrubbedCall:
    request: dict[str, Any]
    response: dict[str, Any]
    entities: dict[str, int]
    replacements: list[str]


def _person_key(key: str | None) -> bool:
    """The argument's key says it holds a person's own name (`guest_name`, `customer`, ...)."""
    return bool(key) and any(entity == "PERSON" and pattern.search(key.lower()) for pattern, entity, _ in KEY_HINTS)


# Keys that say their value is a thing with a title or a name (`song_title`, `recipeName`, `show`,
# `game`, `model`, `team_name`, `body2` of an astronomy tool): a person found that is the whole value is
# the title (`Mamma Mia`, `Chicken Alfredo`, `Gibson Les Paul`), not a person.
_THING_KEY = re.compile(r"(?:^|_)(?:title|song|track|album|movie|film|show|musical|play|book|novel|game|recipe|dish|"
                        r"meal|model|product|brand|item|season|genre|team|club|band|body|planet|object)s?\d*(?:_|$)")


def _thing_key(key: str | None) -> bool:
    return bool(key) and _THING_KEY.search(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()) is not None


def _short_value(slot: Slot) -> bool:
    return slot.key is not None and len(slot.text.split()) <= SHORT_ARGUMENT_WORDS


def _task_word(value: str, terms: list[str]) -> bool:
    """Part of a short task value, and no known name in it, or a place in it (`Sydney`, `Washington D.C.`)."""
    if not any(value in term for term in terms):
        return False
    places = all_place_names()
    return not has_name_part(value) or value.lower() in places or any(w.lower() in places for w in value.split())


def scrub_calls(
    payloads: list[tuple[dict[str, Any], dict[str, Any]]],
    analyzer: SegmentAnalyzer,
    salt: bytes,
    strategy: str = "surrogate",
    max_chars: int = DEFAULT_MAX_TEXT_CHARS,
    on_progress: Callable[[int, int], None] | None = None,
    public_figures: str = "scrub",
) -> list[ScrubbedCall | UnscrubbableCall]:
    """Scrub calls (request, response dicts, modified in place); unscrubbable ones come back as errors."""
    allow_list = analyzer.config.allow_list
    extracted: list[CallTexts | UnscrubbableCall] = []
    for request, response in payloads:
        try:
            extracted.append(call_texts(request, response, max_chars))
        except UnscrubbableCall as problem:
            extracted.append(problem)
    all_texts = [slot.text for item in extracted if isinstance(item, CallTexts) for slot in item.slots]
    findings = iter(analyzer.analyze(all_texts, on_progress))

    results: list[ScrubbedCall | UnscrubbableCall] = []
    for (request, response), item in zip(payloads, extracted):
        if isinstance(item, UnscrubbableCall):
            results.append(item)
            continue
        replacer = Replacer(salt, strategy)
        spans: list[list[Finding]] = []
        search_terms: set[str] = set()
        for slot in item.slots:  # first pass: what Presidio found, and what the argument keys say
            found = list(next(findings))
            hinted = key_hint(slot.key, slot.text)
            if hinted and slot.text.strip() and not non_personal(hinted, slot.text, allow_list):
                found.append((0, len(slot.text), hinted, 1.0))
            if _short_value(slot) and not _person_key(slot.key):
                # A value seen alone: spaCy's guess that it is a person is no evidence (cities, titles, songs).
                if any(f[2] == "PERSON" and f[0] == 0 and f[1] == len(slot.text.strip()) for f in found):
                    search_terms.add(slot.text.strip())
                found = [f for f in found if f[2] != "PERSON"]
            spans.append(resolve_overlaps(found, slot.text))
        # A "person" found in the conversation that is part of a short task value (a song title, a dish,
        # an amenity) and holds no known first or last name is the task's word, not a person.
        terms = [slot.text for slot in item.slots if _short_value(slot) and not _person_key(slot.key)]
        if terms:
            spans = [[f for f in found if not (f[2] == "PERSON" and _task_word(slot.text[f[0]:f[1]], terms))]
                     for slot, found in zip(item.slots, spans)]
        titles = {slot.text.strip() for slot in item.slots if _short_value(slot) and _thing_key(slot.key)}
        if titles:
            spans = [[f for f in found if not (f[2] == "PERSON" and slot.text[f[0]:f[1]].strip() in titles)]
                     for slot, found in zip(item.slots, spans)]
        if public_figures == "keep":
            spans = [[f for f in found if not (f[2] == "PERSON" and slot.text[f[0]:f[1]] in search_terms)]
                     for slot, found in zip(item.slots, spans)]
        for slot, found in zip(item.slots, spans):
            for start, end, entity, _ in found:
                replacer(entity, slot.text[start:end])
        values = sorted(replacer.mapping, key=len, reverse=True)
        for slot, found in zip(item.slots, spans):  # second pass: the same values wherever they recur
            final = resolve_overlaps(found + _occurrences(slot.text, values, replacer.kinds), slot.text)
            if final:
                text = slot.text
                for start, end, entity, _ in reversed(final):
                    text = text[:start] + replacer(entity, text[start:end]) + text[end:]
                slot.write(text)
        for rewrite in item.rewrites:
            rewrite()
        results.append(ScrubbedCall(request, response, dict(replacer.entities), replacer.replacements))
    return results
