from slm_pipeline.core.curate.evalset import LABELS, STRUCTURED, build_evalset, score
from slm_pipeline.core.curate.scrub import resolve_overlaps


def test_evalset_is_labelled_deterministic_and_large_enough():
    samples = build_evalset()
    assert len(samples) >= 2000 and samples == build_evalset()
    labels = {label for s in samples for _, _, label in s.spans}
    assert labels == set(LABELS)
    for sample in samples[:200]:
        for start, end, _ in sample.spans:
            assert 0 <= start < end <= len(sample.text)


def test_scoring_a_perfect_and_an_empty_detector():
    samples = build_evalset(300)
    perfect = score(samples, lambda texts: [list(s.spans) for s in samples])
    assert perfect.f2["ALL"] == 1.0 and perfect.recall["EMAIL_ADDRESS"] == 1.0
    empty = score(samples, lambda texts: [[] for _ in texts])
    assert empty.recall["ALL"] == 0.0


def test_detector_recall_on_structured_identifiers(pii_analyzer):
    """A smaller slice of the benchmark (benchmarks/pii_quality.py runs all of it)."""
    samples = build_evalset(600, seed=5)

    def ours(texts):
        return [[(s, e, t) for s, e, t, _ in resolve_overlaps(f, t)]
                for t, f in zip(texts, pii_analyzer.analyze(texts))]

    scores = score(samples, ours)
    for label in STRUCTURED:
        assert scores.recall[label] >= 0.97, (label, scores.recall[label])
    assert scores.f2["ALL"] >= 0.9
