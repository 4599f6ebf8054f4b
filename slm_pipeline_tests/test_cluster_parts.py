"""Features, names and stable identity of task clusters."""

from collections import Counter

import numpy as np

from slm_pipeline.core.cluster.features import FeatureSpace, FeatureWeights, mask_text
from slm_pipeline.core.cluster.identity import match_clusters
from slm_pipeline.core.cluster.naming import ctfidf_keywords, readable_label


def test_masking_removes_values_and_surrogates():
    assert mask_text("Where is ORD-123456 for Mark Jones?", ["Mark Jones"]) == "Where is ORD-0 for <value>?"
    assert mask_text("Where is ORD-654321 for Ann  Lee?", ["Ann Lee"]) != mask_text("Refund ORD-1", [])


def test_feature_space_weights_what_the_agent_did():
    space = FeatureSpace.fit(["s1", "s2"], [["a", "b"], ["a", "b"]], [["a"], []], FeatureWeights())
    categorical = space.categorical(["s1", "s1", "unknown"], [["a", "b"]] * 3, [["a"], ["b"], []],
                                    ["tool_call", "tool_call", "text"])
    text = np.tile(np.eye(4)[0], (3, 1))
    vectors = space.combine(text, categorical)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1)
    same_prompt_other_tool = vectors[0] @ vectors[1]
    assert same_prompt_other_tool < 0.6  # a different tool call is a different task, whatever the words
    assert FeatureSpace.from_dict(space.to_dict()) == space


def test_ctfidf_keywords_are_distinctive():
    keywords = ctfidf_keywords({
        "c1": ["where is my order", "order status please", "track my order"],
        "c2": ["refund my order", "I want a refund", "refund the money"],
    })
    assert keywords["c1"][0] in {"order", "track", "status"} and keywords["c2"][0] == "refund"
    assert readable_label(Counter({"lookup_order": 3}), Counter({"tool_call": 3}), ["order", "track"]) == \
        "lookup_order: order, track"
    assert readable_label(Counter(), Counter({"json": 2}), []) == "json"


def test_identity_continues_splits_merges_births_and_retires():
    previous = {"c001": {"a1", "a2", "a3", "a4"}, "c002": {"b1", "b2"}, "c003": {"x1", "x2"}, "c004": {"y1", "y2"}}
    new = {
        0: {"a1", "a2", "a3", "n1"},  # continues c001
        1: {"a4", "a9"},  # split off c001... but a9 is new: most of its known calls were c001
        2: {"x1", "x2", "y1", "y2"},  # merges c003 and c004
        3: {"z1", "z2", "z3"},  # born
    }
    result = match_clusters(new, previous)
    assert result.ids[0] == "c001"
    assert result.ids[2] in {"c003", "c004"}
    assert result.ids[3] not in previous and result.ids[1] not in previous
    kinds = Counter(e["event"] for e in result.events)
    assert kinds["continued"] == 2 and kinds["split"] == 1 and kinds["merge"] == 1 and kinds["birth"] == 1
    assert {e["cluster_id"] for e in result.events if e["event"] == "retired"} == {"c002"}
    assert len(set(result.ids.values())) == 4


def test_ids_are_never_reused():
    result = match_clusters({0: {"q"}}, {}, known_ids={"c001", "c007"})
    assert result.ids[0] == "c008"
    first = match_clusters({0: {"a"}, 1: {"b", "c"}}, {})
    assert first.ids == {1: "c001", 0: "c002"}  # the largest newborn gets the lowest id
