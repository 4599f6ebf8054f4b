from slm_pipeline.core.curate.filters import content_hash, failure_reason, near_duplicates
from slm_pipeline_tests.test_curate_scrub import call


def test_failure_reasons():
    _, ok = call("hi", {"a": 1})
    assert failure_reason(ok) is None
    assert failure_reason({"error": {"message": "rate limited"}}) == "failed_error"
    assert failure_reason({"choices": [{"message": {"role": "assistant", "content": "  "}}]}) == "failed_empty"
    assert failure_reason({"choices": []}) == "failed_empty"
    truncated = {"choices": [{"finish_reason": "length", "message": {"role": "assistant", "content": "Half an an"}}]}
    assert failure_reason(truncated) == "failed_truncated"


def test_content_hash_ignores_ids_whitespace_case_and_key_order():
    request, response = call("Where is ORD-1?", '{"order_id": "ORD-1", "x": 2}')
    again_request, again_response = call("where  is ord-1? ", '{"x": 2, "order_id": "ORD-1"}')
    again_response["id"] = "chatcmpl-other"
    again_response["choices"][0]["message"]["tool_calls"][0]["id"] = "other"
    assert content_hash(request, response) == content_hash(again_request, again_response)
    different_request, different_response = call("Where is ORD-2?", '{"order_id": "ORD-2", "x": 2}')
    assert content_hash(request, response) != content_hash(different_request, different_response)


def test_near_duplicates_catch_small_edits_not_other_tasks():
    texts = [
        "please process a refund of 25 dollars for order ORD-123456 because it arrived damaged thanks",
        "please process a refund of 25 dollars for order ORD-123456 because it arrived damaged thanks a lot",
        "please process a refund of 90 dollars for order ORD-654321 because it came too late",
        "show revenue by region for 2024 as a bar chart",
    ]
    assert near_duplicates(texts, threshold=0.8) == {1: 0}
    assert near_duplicates(texts, threshold=0.99) == {}
