"""PII canaries: unique personal values seeded into demo traffic, and a scanner that looks for them in every
artifact the pipeline leaves behind (files of any kind, Parquet cells, SQLite and Postgres rows)."""

from __future__ import annotations

import random
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import sqlalchemy as sa
from faker import Faker
from faker.providers.person.en_US import Provider as UsNames

from slm_pipeline.core.curate.evalset import value_generators

TYPES = ("name", "email", "phone", "card", "iban", "ssn", "api_key", "address")
_EVALSET_LABEL = {"email": "EMAIL_ADDRESS", "phone": "PHONE_NUMBER", "card": "CREDIT_CARD", "iban": "IBAN_CODE",
                  "ssn": "US_SSN", "api_key": "API_KEY", "address": "STREET_ADDRESS"}
SENTENCES = {
    "name": ["My name is {}.", "This is {} writing.", "Regards, {}"],
    "email": ["You can reach me at {}.", "My email is {}."],
    "phone": ["My phone number is {}.", "Call me back on {}."],
    "card": ["Please charge my card {} for any fees.", "Card number: {}."],
    "iban": ["My bank account is {}.", "Use IBAN {} for the refund."],
    "ssn": ["My social security number is {}.", "SSN: {}."],
    "api_key": ["Our API key is {}.", "Use this key: {}"],
    "address": ["I live at {}.", "Ship anything to {}."],
}
# Tool arguments whose value (when the user wrote it) becomes a canary of that type in the request and the answer.
_ARGUMENT_TYPES = {"refund_to_iban": "iban", "address": "address", "api_key": "api_key", "email": "email",
                   "phone": "phone", "name": "name", "full_name": "name", "passenger_name": "name"}


def canary_values(per_type: int, seed: int = 2026) -> dict[str, list[str]]:
    """`per_type` unique values of each type. Names are a common first name with a surname that the S2
    surrogates (en_US names) never produce, so a surrogate can never be mistaken for a canary."""
    rng = random.Random(seed)
    fake, uk, de = Faker("en_US"), Faker("en_GB"), Faker("de_DE")
    for i, f in enumerate((fake, uk, de)):
        f.seed_instance(seed + i)
    generators = value_generators(fake, rng, uk, de)
    us_last = set(UsNames.last_names)
    first_names = sorted(set(UsNames.first_names_male) | set(UsNames.first_names_female))
    from faker.providers.person.de_DE import Provider as GermanNames

    surnames = sorted({n for n in GermanNames.last_names if n.isascii() and n.isalpha() and n not in us_last})
    values: dict[str, list[str]] = {}
    for kind in TYPES:
        seen: set[str] = set()
        while len(seen) < per_type:
            if kind == "name":
                value = f"{rng.choice(first_names)} {rng.choice(surnames)}"
            else:
                value = generators[_EVALSET_LABEL[kind]]()
            if kind == "email" and re.search(r"\d\d@example\.(com|org|net)$", value):
                continue  # the shape of S2's e-mail surrogates: never a canary
            if len(value) >= 8 and not any(value in other or other in value for other in seen):
                seen.add(value)
        values[kind] = sorted(seen)
    return values


@dataclass
class Seeded:
    values: dict[str, list[str]]  # what was seeded, by type
    calls: int  # records that carry at least one canary
    in_arguments: Counter = field(default_factory=Counter)  # canaries also in the teacher's tool arguments


def _user_turn(record: dict) -> dict | None:
    users = [m for m in record["request"].get("messages", []) if m.get("role") == "user"
             and isinstance(m.get("content"), str)]
    return users[-1] if users else None


def seed_canaries(records: list[dict], values: dict[str, list[str]]) -> Seeded:
    """Put every canary into one record, in place: first where the user wrote a value the teacher copied into a
    tool argument (both become the canary), then as a sentence added to a user turn."""
    pools = {kind: list(reversed(vals)) for kind, vals in values.items()}
    seeded = Seeded(values, 0)
    touched: set[int] = set()
    for index, record in enumerate(records):  # canaries in arguments too, where the demo has such arguments
        user = _user_turn(record)
        if user is None:
            continue
        text = orjson.dumps(record).decode()
        for call in (record["response"].get("choices") or [{}])[0].get("message", {}).get("tool_calls") or []:
            try:
                arguments = orjson.loads(call["function"]["arguments"])
            except (KeyError, TypeError, orjson.JSONDecodeError):
                continue
            for name, value in arguments.items() if isinstance(arguments, dict) else ():
                kind = _ARGUMENT_TYPES.get(name)
                if kind and isinstance(value, str) and len(value) >= 6 and value in user["content"] and pools[kind]:
                    canary = pools[kind].pop()
                    text = text.replace(value, canary)
                    seeded.in_arguments[kind] += 1
                    touched.add(index)
        records[index] = orjson.loads(text)
    rng = random.Random(7)
    order = [i for i, r in enumerate(records) if _user_turn(r) is not None]
    rng.shuffle(order)
    slots = iter(order * 3)  # a few records get more than one sentence
    for kind in TYPES:
        while pools[kind]:
            index = next(slots)
            user = _user_turn(records[index])
            user["content"] = f"{user['content']} {rng.choice(SENTENCES[kind]).format(pools[kind].pop())}"
            touched.add(index)
    seeded.calls = len(touched)
    return seeded


# -- the scanner ----------------------------------------------------------------------------------------------

@dataclass
class Finding:
    canary: str
    kind: str
    where: str  # file (and table/column) or database table


@dataclass
class ScanReport:
    findings: list[Finding] = field(default_factory=list)
    scanned: Counter = field(default_factory=Counter)  # what was scanned, by kind: files, parquet cells, rows...
    skipped: Counter = field(default_factory=Counter)  # what could not be scanned, by why

    def summary(self) -> dict:
        return {"scanned": dict(self.scanned), "skipped": dict(self.skipped), "findings": len(self.findings),
                "examples": [f"{f.kind} {f.canary!r} in {f.where}" for f in self.findings[:20]]}


class Scanner:
    def __init__(self, values: dict[str, list[str]]) -> None:
        self.kinds = {v: kind for kind, vals in values.items() for v in vals}
        self.report = ScanReport()

    def _look(self, text: str, where: str) -> None:
        for canary, kind in self.kinds.items():
            if canary in text:
                self.report.findings.append(Finding(canary, kind, where))

    def scan_files(self, root: Path, exclude: Iterable[Path] = ()) -> None:
        excluded = [p.resolve() for p in exclude]
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            if any(path.resolve() == e or e in path.resolve().parents for e in excluded):
                continue
            self.scan_file(path)

    def scan_file(self, path: Path) -> None:
        suffix = path.suffix.lower()
        if suffix == ".parquet":
            self._parquet(path)
        elif suffix in (".db", ".sqlite", ".sqlite3") or path.name.endswith(".sqlite-journal"):
            self._sqlite(path)
        elif suffix in (".png", ".jpg", ".jpeg", ".svg", ".gif"):
            self.report.skipped["images (text rendered as pixels)"] += 1
        else:  # text, JSON, YAML, logs, safetensors, checkpoints, tokenizer files: their bytes as UTF-8
            self.report.scanned["files"] += 1
            self.report.scanned["file bytes"] += path.stat().st_size
            self._look(path.read_bytes().decode("utf-8", errors="replace"), str(path))

    def _parquet(self, path: Path) -> None:
        table = pq.read_table(path)
        self.report.scanned["parquet files"] += 1
        for name in table.column_names:
            column = table.column(name)
            values = [v for v in column.to_pylist() if v is not None]
            self.report.scanned["parquet cells"] += len(values)
            self._look("\n".join(str(v) for v in values), f"{path} [{name}]")

    def _sqlite(self, path: Path) -> None:
        self.report.scanned["sqlite databases"] += 1
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                rows = connection.execute(f'SELECT * FROM "{table}"').fetchall()
                self.report.scanned["sqlite rows"] += len(rows)
                self._look("\n".join(repr(r) for r in rows), f"{path} table {table}")

    def scan_postgres(self, url: str, label: str) -> None:
        """Every row of every table in the database's public schema, as text (JSON event bodies included)."""
        engine = sa.create_engine(url)
        try:
            with engine.connect() as connection:
                tables = connection.execute(sa.text(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars().all()
                for table in tables:
                    rows = connection.execute(sa.text(f'SELECT t::text FROM "{table}" t')).scalars().all()
                    self.report.scanned[f"{label} rows"] += len(rows)
                    self._look("\n".join(rows), f"{label} table {table}")
        finally:
            engine.dispose()

    def scan_text(self, text: str, where: str) -> None:
        self.report.scanned["console bytes"] += len(text)
        self._look(text, where)


def read_jsonl(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def write_jsonl(path: Path, records: Iterator[dict] | list[dict]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
