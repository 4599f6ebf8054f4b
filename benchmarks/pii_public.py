"""PII recall on text nobody here wrote: presidio-evaluator's templates, ours beside vanilla Presidio.

    python benchmarks/pii_public.py [--size 2000] [--seed 42] [--ner-model PATH]     (make bench-pii-public)

The sentences come from the PyPI package `presidio-evaluator` (209 templates written by the
Presidio team, filled by its faker). Its wheel is fetched once with `pip download --no-deps` into
`~/.cache/slm-pipeline/presidio-evaluator` and unpacked there; only its sentence generator is used
(its dependencies are already this project's). The templates file writes line breaks as the two
characters backslash and n; they are turned into line breaks (signature and address blocks), for both
detectors. Both detectors use the embedded spaCy pipeline and the
same score threshold; vanilla Presidio has its stock recognizers only.

Scored on the types both detectors are meant to find (PERSON, EMAIL_ADDRESS, PHONE_NUMBER,
CREDIT_CARD, IBAN_CODE, US_SSN, IP_ADDRESS, STREET_ADDRESS; the templates' other types, such as
cities, organisations and dates, are not personal data here and are not scored):

* entity level: a gold span is found when a detection of the same type overlaps it (recall); a
  detection is right when it overlaps a gold span of its type (precision);
* token level: each word token carries the gold type and the detected type (presidio-research's method).

Targets (issue 17): recall >= 0.98 on e-mail, card, IBAN, SSN, IP; >= 0.95 on phone numbers;
>= 0.90 on PERSON; >= 0.85 on street addresses; precision >= 0.85 on each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import subprocess
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SCORED = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS",
          "STREET_ADDRESS")
CACHE = Path.home() / ".cache" / "slm-pipeline" / "presidio-evaluator"
VERSION = "0.3.2"
_TOKEN = re.compile(r"\w+|[^\w\s]")

Span = tuple[int, int, str]


def evaluator_path(cache: Path = CACHE, version: str = VERSION) -> Path:
    """presidio-evaluator's wheel, downloaded (no dependencies) and unpacked once; the folder to import from."""
    target = cache / f"presidio_evaluator-{version}"
    if (target / "presidio_evaluator").is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = list(cache.glob(f"presidio_evaluator-{version}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                        f"presidio-evaluator=={version}", "-d", str(cache)], check=True)
        wheels = list(cache.glob(f"presidio_evaluator-{version}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        wheel.extractall(target)
    return target


def sentences(size: int, seed: int) -> list[tuple[str, list[Span]]]:
    """`size` sentences from the templates with their gold spans, reproducible by seed."""
    sys.path.insert(0, str(evaluator_path()))
    from presidio_evaluator.data_generator import PresidioSentenceFaker

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        faker = PresidioSentenceFaker("en_US", lower_case_ratio=0.05, random_seed=seed)
        samples = faker.generate_new_fake_sentences(size)
    return [real_newlines(s.full_text, [(span.start_position, span.end_position, span.entity_type) for span in s.spans])
            for s in samples]


def real_newlines(text: str, spans: list[Span]) -> tuple[str, list[Span]]:
    """The templates file writes line breaks as the two characters `\\n`; make them line breaks (spans moved)."""
    new_index = []
    out = []
    i = 0
    while i < len(text):
        new_index.append(len(out))
        if text.startswith("\\n", i):
            new_index.append(len(out))
            out.append("\n")
            i += 2
        else:
            out.append(text[i])
            i += 1
    new_index.append(len(out))
    return "".join(out), [(new_index[s], new_index[e], t) for s, e, t in spans]


class Tally:
    def __init__(self) -> None:
        self.gold: Counter[str] = Counter()
        self.found: Counter[str] = Counter()
        self.predicted: Counter[str] = Counter()
        self.right: Counter[str] = Counter()
        self.tokens_gold: Counter[str] = Counter()
        self.tokens_pred: Counter[str] = Counter()
        self.tokens_both: Counter[str] = Counter()
        self.missed: dict[str, list[str]] = {}

    def add(self, text: str, gold: list[Span], predicted: list[Span]) -> None:
        gold = [g for g in gold if g[2] in SCORED]
        predicted = [p for p in predicted if p[2] in SCORED]
        overlap = lambda a, b: a[0] < b[1] and b[0] < a[1] and a[2] == b[2]  # noqa: E731
        for g in gold:
            self.gold[g[2]] += 1
            hit = any(overlap(g, p) for p in predicted)
            self.found[g[2]] += hit
            if not hit:
                self.missed.setdefault(g[2], []).append(text[g[0]:g[1]])
        for p in predicted:
            self.predicted[p[2]] += 1
            self.right[p[2]] += any(overlap(p, g) for g in gold)
        for match in _TOKEN.finditer(text):
            s, e = match.span()
            g = next((t for a, b, t in gold if a <= s and e <= b), None)
            p = next((t for a, b, t in predicted if a < e and s < b), None)
            if g:
                self.tokens_gold[g] += 1
            if p:
                self.tokens_pred[p] += 1
            if g and g == p:
                self.tokens_both[g] += 1

    def row(self, label: str) -> tuple[float, float, float, float, int]:
        pick = (lambda c: sum(c.values())) if label == "ALL" else (lambda c: c[label])
        recall = pick(self.found) / max(pick(self.gold), 1)
        precision = pick(self.right) / max(pick(self.predicted), 1) if pick(self.predicted) else 0.0
        t_recall = pick(self.tokens_both) / max(pick(self.tokens_gold), 1)
        t_precision = pick(self.tokens_both) / max(pick(self.tokens_pred), 1) if pick(self.tokens_pred) else 0.0
        return precision, recall, t_precision, t_recall, pick(self.gold)


def table(ours: Tally, vanilla: Tally) -> str:
    lines = [f"{'entity':<15} {'gold':>5} | {'entity P':>8} {'R':>5} {'token P':>8} {'R':>5} | "
             f"{'entity P':>8} {'R':>5} {'token P':>8} {'R':>5}",
             f"{'':<15} {'':>5} | {'ours':^30} | {'vanilla Presidio':^30}"]
    for label in (*SCORED, "ALL"):
        p, r, tp, tr, n = ours.row(label)
        vp, vr, vtp, vtr, _ = vanilla.row(label)
        lines.append(f"{label:<15} {n:>5} | {p:>8.3f} {r:>5.3f} {tp:>8.3f} {tr:>5.3f} | "
                     f"{vp:>8.3f} {vr:>5.3f} {vtp:>8.3f} {vtr:>5.3f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--ner-model", default=None, help="a transformers token-classification model (path)")
    parser.add_argument("--misses", type=int, default=8, help="missed values to print per type")
    args = parser.parse_args()

    from pii_quality import vanilla_presidio

    from slm_pipeline.core.curate.analyzer import AnalyzerConfig, SegmentAnalyzer
    from slm_pipeline.core.curate.scrub import resolve_overlaps

    started = time.monotonic()
    data = sentences(args.size, args.seed)
    config = AnalyzerConfig(ner_model=args.ner_model) if args.ner_model else AnalyzerConfig()
    analyzer = SegmentAnalyzer(config, workers=1)
    texts = [t for t, _ in data]
    ours_found = [[(s, e, t) for s, e, t, _ in resolve_overlaps(f, text)]
                  for text, f in zip(texts, analyzer.analyze(texts))]
    analyzer.close()
    engine = vanilla_presidio(config)
    entities = [e for e in SCORED if e in set(engine.get_supported_entities())]
    vanilla_found = [[(r.start, r.end, r.entity_type) for r in engine.analyze(t, language="en", entities=entities,
                                                                             score_threshold=config.score_threshold)]
                     for t in texts]
    ours, vanilla = Tally(), Tally()
    for (text, gold), mine, theirs in zip(data, ours_found, vanilla_found):
        ours.add(text, gold, mine)
        vanilla.add(text, gold, theirs)
    print(f"presidio-evaluator {VERSION} templates: {len(data)} sentences, seed {args.seed}"
          f"{', NER model ' + args.ner_model if args.ner_model else ''}")
    print(table(ours, vanilla))
    for label, values in ours.missed.items():
        print(f"  missed {label} ({len(values)}): {values[: args.misses]}")
    print(f"wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
