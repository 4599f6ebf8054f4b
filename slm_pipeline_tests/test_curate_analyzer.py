from pathlib import Path

from slm_pipeline.core.curate.analyzer import AnalyzerConfig, SegmentAnalyzer, build_analyzer, needs_ner
from slm_pipeline.core.curate.evalset import build_evalset


def test_worker_processes_find_the_same_as_one_process(pii_analyzer):
    texts = [s.text for s in build_evalset(120, seed=9)]
    parallel = SegmentAnalyzer(workers=2, parallel_threshold=10, chunk_size=30)
    try:
        assert parallel.analyze(texts) == pii_analyzer.analyze(texts)
    finally:
        parallel.close()


def test_each_distinct_text_is_analysed_once_and_the_cache_persists(tmp_path: Path):
    cache = tmp_path / "findings.sqlite"
    first = SegmentAnalyzer(workers=1, cache_path=cache)
    texts = ["Mail ann@gmail.com", "nothing here", "Mail ann@gmail.com"]
    found = first.analyze(texts)
    assert first.stats == {"texts": 3, "distinct": 2, "cached": 0, "analysed": 2}
    assert found[0] == found[2] and found[0][0][2] == "EMAIL_ADDRESS" and found[1] == []
    first.close()
    second = SegmentAnalyzer(workers=1, cache_path=cache)
    assert second.analyze(texts) == found and second.stats["analysed"] == 0
    second.close()
    assert b"ann@gmail.com" not in cache.read_bytes()  # hashes and offsets only


def test_the_fast_engine_finds_what_stock_presidio_finds():
    """Leaving out the parser and skipping NER on texts without capitals changes no finding."""
    config = AnalyzerConfig()
    fast, stock = build_analyzer(config, fast=True), build_analyzer(config, fast=False)

    def found(engine, text: str) -> set[tuple[int, int, str]]:
        return {(r.start, r.end, r.entity_type) for r in engine.analyze(
            text, language="en", entities=list(config.entities), score_threshold=config.score_threshold)}

    for sample in build_evalset(200, seed=4):
        fast_found, stock_found = found(fast, sample.text), found(stock, sample.text)
        # the fast engine drops non-names (identifiers, URLs) and 6-digit "phone numbers"; nothing else
        for start, end, entity in stock_found - fast_found:
            value = sample.text[start:end]
            assert entity in ("PERSON", "PHONE_NUMBER", "UK_NHS"), (entity, value, sample.text)
        assert not needs_ner("order ord-123 is late") and needs_ner("Ann is late")
