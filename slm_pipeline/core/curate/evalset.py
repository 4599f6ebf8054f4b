"""A labelled evaluation set of agent-style texts, and Presidio-style scoring of a detector on it.

Texts are built from templates (user turns, tool arguments, tool results, log lines, tickets)
filled with Faker values whose spans are recorded as they are written. The templates are not
the demo traffic's, so the score says how the detector does on text it was not tuned on.
Scoring follows presidio-research: token-level precision and recall per entity type, and F2
(recall weighs more than precision: a missed value leaks, a spurious one only costs a token).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from faker import Faker

from slm_pipeline.core.curate.nonpersonal import non_personal_ip

LABELS = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "API_KEY",
          "STREET_ADDRESS", "DATE_OF_BIRTH", "PASSWORD", "US_PASSPORT")
STRUCTURED = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "API_KEY")


@dataclass(frozen=True)
class Sample:
    text: str
    spans: tuple[tuple[int, int, str], ...]  # (start, end, label)


class _Builder:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[tuple[int, int, str]] = []
        self.length = 0

    def text(self, value: str) -> None:
        self.parts.append(value)
        self.length += len(value)

    def entity(self, label: str, value: str) -> None:
        self.spans.append((self.length, self.length + len(value), label))
        self.text(value)

    def build(self) -> Sample:
        return Sample("".join(self.parts), tuple(self.spans))


_SLOT = re.compile(r"\{([A-Z_]+)\}")


def value_generators(fake: Faker, rng: random.Random, uk: Faker, de: Faker) -> dict[str, Callable[[], str]]:
    """A generator of realistic values per label (also the PII canaries of the reliability tests)."""
    def key() -> str:
        alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        pick = rng.randrange(5)
        if pick == 0:
            return "sk-proj-" + "".join(rng.choice(alnum) for _ in range(40))
        if pick == 1:
            return rng.choice(["sk_live_", "sk_test_", "rk_live_"]) + "".join(rng.choice(alnum) for _ in range(28))
        if pick == 2:
            return "ghp_" + "".join(rng.choice(alnum) for _ in range(36))
        if pick == 3:
            return "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
        return "".join(rng.choice(alnum) for _ in range(rng.choice([32, 40])))

    def card() -> str:
        number = fake.credit_card_number(card_type=rng.choice([None, "visa16", "mastercard", "amex", "discover"]))
        if len(number) == 16 and rng.random() < 0.4:
            return " ".join(number[i:i + 4] for i in range(0, 16, 4))
        return number

    def iban() -> str:
        value = rng.choice([fake, de, uk]).iban()
        return " ".join(value[i:i + 4] for i in range(0, len(value), 4)) if rng.random() < 0.3 else value

    def dob() -> str:
        day = fake.date_of_birth(minimum_age=18, maximum_age=90)
        return day.strftime(rng.choice(["%Y-%m-%d", "%m/%d/%Y", "%B %d, %Y", "%d %B %Y"]))

    def address() -> str:
        street = fake.street_address()
        return street if rng.random() < 0.5 else f"{street}, {fake.city()}, {fake.state_abbr()} {fake.postcode()}"

    def public_ipv6() -> str:
        while True:
            value = fake.ipv6()
            if not non_personal_ip(value):
                return value

    def password() -> str:
        return rng.choice([fake.password(length=rng.randrange(8, 16)), fake.word() + str(rng.randrange(10, 9999))])

    return {
        "PERSON": lambda: fake.name() if rng.random() < 0.7 else fake.first_name(),
        # Not Faker's default `email()`: its example.com/.org/.net domains are reserved and identify no one.
        "EMAIL_ADDRESS": lambda: rng.choice([fake.free_email, fake.company_email, lambda: fake.email(safe=False)])(),
        "PHONE_NUMBER": lambda: fake.phone_number() if rng.random() < 0.8 else uk.phone_number(),
        "CREDIT_CARD": card,
        "IBAN_CODE": iban,
        "US_SSN": fake.ssn,
        # Public addresses only: private and documentation ranges point at no one's machine.
        "IP_ADDRESS": lambda: fake.ipv4_public() if rng.random() < 0.85 else public_ipv6(),
        "API_KEY": key,
        "STREET_ADDRESS": address,
        "DATE_OF_BIRTH": dob,
        "PASSWORD": password,
        "US_PASSPORT": lambda: f"{rng.randrange(100000000, 999999999)}",
    }


TEMPLATES = [
    # user turns
    "Hi, I'm {PERSON} and my email is {EMAIL_ADDRESS}. Can you update my phone to {PHONE_NUMBER}?",
    "Please charge the card {CREDIT_CARD} for the upgrade, the account holder is {PERSON}.",
    "Wire the deposit to {IBAN_CODE} (account name {PERSON}).",
    "My social security number is {US_SSN}, I need it on the tax form.",
    "Reset the login for {EMAIL_ADDRESS}; the new password is {PASSWORD}",
    "Send the contract to {PERSON} at {STREET_ADDRESS} before Friday.",
    "I was born on {DATE_OF_BIRTH} and my passport number is {US_PASSPORT}.",
    "Call {PERSON} back on {PHONE_NUMBER} about order ORD-{NUM}.",
    "Can you check why requests from {IP_ADDRESS} are being blocked?",
    "Use this key for the export: {API_KEY}",
    "Our new office is at {STREET_ADDRESS}. Update the billing profile.",
    "{PERSON} asked for a refund of $129.99 to card {CREDIT_CARD}.",
    "Add {PERSON} ({EMAIL_ADDRESS}, {PHONE_NUMBER}) to the guest list.",
    "DOB: {DATE_OF_BIRTH}. SSN: {US_SSN}. Name: {PERSON}.",
    "Please book a table for 4 under the name {PERSON}.",
    "The webhook secret leaked in the logs: {API_KEY} - rotate it now.",
    "Forward the invoice for ORD-{NUM} to {EMAIL_ADDRESS} please.",
    "My bank details changed, new IBAN {IBAN_CODE}.",
    # tool arguments and results (JSON as text)
    '{"customer_name": "{PERSON}", "email": "{EMAIL_ADDRESS}", "phone": "{PHONE_NUMBER}"}',
    '{"card_number": "{CREDIT_CARD}", "amount": 49.5, "currency": "USD"}',
    '{"iban": "{IBAN_CODE}", "holder": "{PERSON}", "reference": "INV-{NUM}"}',
    '{"user": "{EMAIL_ADDRESS}", "password": "{PASSWORD}", "remember_me": true}',
    '{"status": "found", "customer": "{PERSON}", "address": "{STREET_ADDRESS}", "ssn_last4": "{NUM4}"}',
    '{"client_ip": "{IP_ADDRESS}", "api_key": "{API_KEY}"}',
    '{"passenger": "{PERSON}", "date_of_birth": "{DATE_OF_BIRTH}", "passport": "{US_PASSPORT}"}',
    # log lines and tickets
    "2026-10-02 11:04:12 WARN auth failed for {EMAIL_ADDRESS} from {IP_ADDRESS}",
    "Ticket #{NUM}: {PERSON} reports a duplicate charge on card {CREDIT_CARD}.",
    "Lead: {PERSON}, {STREET_ADDRESS}, tel. {PHONE_NUMBER}",
    "export AWS_ACCESS_KEY_ID={API_KEY}",
    "Patient {PERSON}, born {DATE_OF_BIRTH}, SSN {US_SSN}, follow-up in 2 weeks.",
]
NEGATIVES = [
    "Where is my order ORD-{NUM}? It was due on 2026-11-{DAY}.",
    "Show revenue by region for 2024 as a bar chart.",
    "Find flights from Paris to Tokyo on March {DAY}, 2027 for 2 passengers.",
    "SELECT region, SUM(revenue) AS total FROM facts WHERE year = 2025 GROUP BY region",
    '{"order_id": "ORD-{NUM}", "amount": 250.0, "reason": "damaged"}',
    "The Acme X200 blender costs $89.99 and ships in 3 days.",
    "Cancel booking K{NUM4}Q, the conference moved to Berlin.",
    "Summarise: signups last quarter {NUM}, this quarter {NUM}.",
    '{"metric": "order_count", "group_by": "channel", "chart_type": "line"}',
    "Update ticket priority to high and category to billing.",
]


def build_evalset(size: int = 2400, seed: int = 13) -> list[Sample]:
    """`size` labelled texts; about one in six holds no personal data at all."""
    rng = random.Random(seed)
    fake, uk, de = Faker("en_US"), Faker("en_GB"), Faker("de_DE")
    for index, generator in enumerate((fake, uk, de)):
        generator.seed_instance(seed + index)
    values = value_generators(fake, rng, uk, de)
    samples = []
    for i in range(size):
        template = NEGATIVES[i % len(NEGATIVES)] if i % 6 == 5 else TEMPLATES[rng.randrange(len(TEMPLATES))]
        builder = _Builder()
        position = 0
        for match in _SLOT.finditer(template):
            builder.text(template[position:match.start()])
            slot = match.group(1)
            if slot in values:
                builder.entity(slot, values[slot]())
            else:  # not personal: order numbers, days
                builder.text(str(rng.randrange(10, 28) if slot == "DAY" else
                                 rng.randrange(1000, 9999) if slot == "NUM4" else rng.randrange(100000, 999999)))
            position = match.end()
        builder.text(template[position:])
        samples.append(builder.build())
    return samples


_TOKEN = re.compile(r"\w+|[^\w\s]")


def _token_labels(text: str, spans: Iterable[tuple[int, int, str]]) -> list[str]:
    labels = []
    ordered = sorted(spans)
    for token in _TOKEN.finditer(text):
        label = "O"
        for start, end, entity in ordered:
            if start <= token.start() < end:
                label = entity
                break
        labels.append(label)
    return labels


@dataclass
class Scores:
    precision: dict[str, float]
    recall: dict[str, float]
    f2: dict[str, float]
    support: dict[str, int]  # gold tokens per label

    def row(self, label: str) -> tuple[float, float, float, int]:
        return self.precision[label], self.recall[label], self.f2[label], self.support[label]


def _f2(precision: float, recall: float) -> float:
    return 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0


def score(samples: list[Sample], predict: Callable[[list[str]], list[list[tuple[int, int, str]]]]) -> Scores:
    """Token-level precision, recall and F2 per label, plus `ALL` (any personal data vs none)."""
    predictions = predict([s.text for s in samples])
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    for sample, predicted in zip(samples, predictions):
        gold = _token_labels(sample.text, sample.spans)
        guess = _token_labels(sample.text, predicted)
        for g, p in zip(gold, guess):
            if g != "O" and p != "O":
                tp["ALL"] += 1
            elif g != "O":
                fn["ALL"] += 1
            elif p != "O":
                fp["ALL"] += 1
            if g == p and g != "O":
                tp[g] += 1
            else:
                if g != "O":
                    fn[g] += 1
                if p != "O" and p in LABELS:
                    fp[p] += 1
    result = Scores({}, {}, {}, {})
    for label in (*LABELS, "ALL"):
        precision = tp[label] / (tp[label] + fp[label]) if tp[label] + fp[label] else 1.0
        recall = tp[label] / (tp[label] + fn[label]) if tp[label] + fn[label] else 1.0
        result.precision[label], result.recall[label] = precision, recall
        result.f2[label] = _f2(precision, recall)
        result.support[label] = tp[label] + fn[label]
    return result
