"""PII detection quality on the labelled evaluation set: this project's detector against vanilla Presidio.

    python benchmarks/pii_quality.py [--size 2400]

Both use the same spaCy pipeline (the embedded en_core_web_sm) and the same score threshold.
Vanilla Presidio has its stock recognizers only; ours adds the custom recognizers (API keys,
passwords, street addresses, dates of birth, Luhn card numbers, NANP phones) and resolves
overlapping findings as the scrubber does. Scores are token-level (presidio-research's method)
with F2. Targets (issue 3): recall >= 0.98 on each structured identifier, F2 >= 0.85 overall.
"""

from __future__ import annotations

import argparse
import sys

from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

from slm_pipeline.core.curate.analyzer import AnalyzerConfig, OfflineSpacyNlpEngine, SegmentAnalyzer
from slm_pipeline.core.curate.evalset import LABELS, STRUCTURED, Scores, build_evalset, score
from slm_pipeline.core.curate.recognizers import OfflineEmailRecognizer
from slm_pipeline.core.curate.scrub import resolve_overlaps


def vanilla_presidio(config: AnalyzerConfig) -> AnalyzerEngine:
    nlp_engine = OfflineSpacyNlpEngine(models=[{"lang_code": "en", "model_name": config.spacy_model}], fast=False)
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    registry.remove_recognizer("EmailRecognizer")
    registry.add_recognizer(OfflineEmailRecognizer())  # the stock one fetches the suffix list: keep it offline
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


def table(ours: Scores, vanilla: Scores) -> str:
    lines = [f"{'entity':<16} {'support':>7} | {'P':>5} {'R':>5} {'F2':>5} | {'P':>5} {'R':>5} {'F2':>5}",
             f"{'':<16} {'tokens':>7} | {'ours':^17} | {'vanilla Presidio':^17}"]
    for label in (*LABELS, "ALL"):
        p, r, f, n = ours.row(label)
        vp, vr, vf, _ = vanilla.row(label)
        lines.append(f"{label:<16} {n:>7} | {p:>5.3f} {r:>5.3f} {f:>5.3f} | {vp:>5.3f} {vr:>5.3f} {vf:>5.3f}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2400)
    args = parser.parse_args()
    samples = build_evalset(args.size)
    config = AnalyzerConfig()

    analyzer = SegmentAnalyzer(config, workers=1)

    def ours(texts: list[str]) -> list[list[tuple[int, int, str]]]:
        return [[(s, e, t) for s, e, t, _ in resolve_overlaps(found, text)]
                for text, found in zip(texts, analyzer.analyze(texts))]

    engine = vanilla_presidio(config)
    supported = set(engine.get_supported_entities())
    entities = [e for e in config.entities if e in supported]

    def vanilla(texts: list[str]) -> list[list[tuple[int, int, str]]]:
        out = []
        for text in texts:
            found = engine.analyze(text, language="en", entities=entities, score_threshold=config.score_threshold)
            out.append([(s, e, t) for s, e, t, _ in resolve_overlaps(((r.start, r.end, r.entity_type, r.score)
                                                                     for r in found), text)])
        return out

    mine, theirs = score(samples, ours), score(samples, vanilla)
    print(f"{len(samples):,} labelled texts, {sum(len(s.spans) for s in samples):,} entity spans\n")
    print(table(mine, theirs))
    structured_ok = all(mine.recall[label] >= 0.98 for label in STRUCTURED)
    print(f"\nstructured identifiers: minimum recall {min(mine.recall[label] for label in STRUCTURED):.3f} "
          f"({'meets' if structured_ok else 'MISSES'} >= 0.98)")
    print(f"overall F2 {mine.f2['ALL']:.3f} ({'meets' if mine.f2['ALL'] >= 0.85 else 'MISSES'} >= 0.85); "
          f"vanilla Presidio {theirs.f2['ALL']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
