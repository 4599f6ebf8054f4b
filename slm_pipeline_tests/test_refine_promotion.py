from __future__ import annotations

import pytest

from slm_pipeline.core.refine.promotion import PromotionConfig, Score, decide, wilson_lower_bound


@pytest.mark.parametrize(("successes", "trials", "expected"), [
    (20, 20, 0.839), (19, 20, 0.764), (29, 30, 0.833), (95, 100, 0.888), (0, 10, 0.0)])
def test_wilson_lower_bound_matches_the_textbook_values(successes, trials, expected):
    assert wilson_lower_bound(successes, trials) == pytest.approx(expected, abs=1e-3)


def test_wilson_bound_tightens_with_more_calls_and_is_zero_without_any():
    assert wilson_lower_bound(100, 100) > wilson_lower_bound(20, 20)
    assert wilson_lower_bound(0, 0) == 0.0


def test_a_candidate_that_holds_up_is_promoted_with_the_reason():
    decision = decide(Score("v2", 30, 30), None)
    assert decision.promote and decision.lower_bound == pytest.approx(0.886, abs=1e-3)
    assert decision.summary().startswith("agreement 1.000 (30/30)")


@pytest.mark.parametrize(("candidate", "champion", "reason"), [
    (Score("v2", 19, 19), None, "only 19 test calls, fewer than min_test_calls=20"),
    (Score("v2", 27, 30), None, "agreement 0.900 (27/30) is below the threshold 0.95"),
    (Score("v2", 19, 20), None, "the 95% Wilson lower bound 0.764 is below 0.8"),
    (Score("v2", 30, 30), Score("v1", 30, 30), "it does not beat the champion v1 (1.000 <= 1.000)"),
])
def test_each_failed_condition_is_named(candidate, champion, reason):
    decision = decide(candidate, champion)
    assert not decision.promote and reason in decision.reasons


def test_beating_the_champion_promotes_and_nothing_to_promote_says_so():
    assert decide(Score("v2", 30, 30), Score("v1", 28, 30)).promote
    assert decide(None, None).reasons == ["no fine-tuned candidate finished training"]
    lenient = PromotionConfig(threshold=0.5, min_test_calls=5, min_lower_bound=0.0)
    assert decide(Score("v2", 4, 6), None, lenient).promote


def test_a_cluster_whose_training_learned_nothing_stays_on_the_llm_in_the_report_with_the_reason(tmp_path):
    import json

    from slm_pipeline.core.finetune import FineTuneJob, FineTuneOutcome, record_finetuned
    from slm_pipeline.core.lake import Lake, cluster_partition
    from slm_pipeline.core.refine.report import _cluster_entry
    from slm_pipeline.core.task_data import DATASETS_TABLE

    lake = Lake(str(tmp_path / "lake"))
    lake.put_file(DATASETS_TABLE, cluster_partition("a", "c1"), "dataset.json",
                  json.dumps({"status": "ready", "reason": "120 examples"}).encode())
    job = FineTuneJob("a", "c1", "smollm2-135m-instruct", tmp_path / "run", tmp_path / "spec.json", "r1", False)
    reason = "the training loss did not fall: 2.1 at the first step; raise learning_rate or max_steps"
    record = record_finetuned(lake, "a", "c1", [FineTuneOutcome(job, "learned_nothing", reason)])
    assert record["models"] == [] and record["failures"][0]["status"] == "learned_nothing"
    entry = _cluster_entry(lake, "a", {"cluster_id": "c1", "label": "refunds", "size": 120}, None, False, None,
                           minimum=50)
    assert entry["status"] == "stays_on_llm"
    assert entry["reason"] == f"training smollm2-135m-instruct learned_nothing: {reason}"
