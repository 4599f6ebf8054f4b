"""Features, names and stable identity of task clusters."""

from collections import Counter

import numpy as np

from slm_pipeline.core.cluster.features import FeatureSpace, FeatureWeights, mask_text
from slm_pipeline.core.cluster.granularity import coarsen, job_key, size_figures, stratum_of, suite_key
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


def _blobs(sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in tight blobs, one blob (a function-level group) per size; label = blob index."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), 16))
    vectors = np.vstack([c + 0.05 * rng.normal(size=(n, 16)) for c, n in zip(centres, sizes)])
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True), labels


def test_small_function_groups_of_one_suite_merge_until_trainable_and_suites_stay_apart():
    # suite A: four functions of 20 calls; suite B: three of 15; suite C: two tasks of 80 (each trainable)
    sizes = [20, 20, 20, 20, 15, 15, 15, 80, 80]
    vectors, labels = _blobs(sizes)
    suite_of_blob = ["A"] * 4 + ["B"] * 3 + ["C"] * 2
    suites = [suite_key("sys", [f"{suite_of_blob[b]}_tool"]) for b in labels]
    jobs = [job_key("sys", ["any"], "tool_call")] * len(labels)
    labels[[0, 25]] = -1  # the embedding clustering left two calls of suite A out
    out = coarsen(vectors, labels, suites, jobs, min_size=50)
    final = {}
    for blob, label in zip(np.repeat(np.arange(len(sizes)), sizes), out.labels):
        final.setdefault(suite_of_blob[blob], set()).add(int(label))
    assert len(final["A"]) == 1 and len(final["B"]) == 1  # each suite one cluster: 80 and 45 calls
    assert final["A"].isdisjoint(final["B"]) and -1 not in final["A"]  # never across suites; left-out calls joined
    assert len(final["C"]) == 2  # groups that reach the minimum stay apart (one SLM per large task)
    assert out.joined.sum() == 2
    assert {level for _, _, level in out.merges} == {"suite"} and len(out.merges) == 3 + 2
    assert all(out.merged_into[b] in final[suite_of_blob[b]] for b in range(len(sizes)))


def test_tiny_groups_that_share_no_suite_pool_by_kind_of_job_but_never_across_shapes():
    # every call offers its own function (public benchmarks): 60 single calls of tool calls, 30 of text answers
    vectors, labels = _blobs([1] * 90)
    labels[:] = -1
    suites = [suite_key(None, [f"fn_{i}"]) for i in range(90)]
    shapes = ["tool_call"] * 60 + ["text"] * 30
    jobs = [job_key(None, [f"fn_{i}"], shape) for i, shape in enumerate(shapes)]
    out = coarsen(vectors, labels, suites, jobs, min_size=50)
    tool_labels, text_labels = Counter(out.labels[:60].tolist()), Counter(out.labels[60:].tolist())
    assert len(text_labels) == 1 and set(tool_labels).isdisjoint(text_labels)  # answer shapes never mix
    assert sum(n < 50 for n in tool_labels.values()) <= 1 and max(tool_labels.values()) >= 50
    figures = size_figures([60, 30], 90, 0, 50)
    assert figures["trainable_share"] == 60 / 90 and figures["trainable_clusters"] == 1
    assert figures["cluster_size_p50"] == 45 and figures["noise_fraction"] == 0


def test_impure_groups_and_free_text_left_outs_are_not_merged():
    vectors, labels = _blobs([10, 10, 30])
    suites = [suite_key("s", ["a"])] * 5 + [suite_key("s", ["b"])] * 5 + [suite_key("s", ["a"])] * 10 \
        + [None] * 30  # group 0 is half a, half b: impure, it may not merge on suite
    jobs = [job_key("s", ["a"], "tool_call")] * 20 + [job_key("s", [], "text")] * 30
    labels[40:45] = -1  # free text left out: stays out
    out = coarsen(vectors, labels, suites, jobs, min_size=50)
    assert (out.labels[40:45] == -1).all()
    assert out.labels[0] != out.labels[25]  # text never joins tool calls
    assert stratum_of(["a", "b"], "tool_call") == "a+b" and stratum_of([], "json") == "json"


def test_a_group_that_spans_suites_splits_and_each_part_joins_its_own_suite():
    vectors, labels = _blobs([36, 10, 120, 120])
    labels[36:46] = 0  # the embedding clustering put 10 calls of suite T with 36 of suite M
    suites = [suite_key("m", ["send"])] * 36 + [suite_key("t", ["verify"])] * 10 \
        + [suite_key("m", ["send"])] * 120 + [suite_key("t", ["verify"])] * 120
    jobs = [job_key(None, ["x"], "tool_call")] * len(suites)
    out = coarsen(vectors, labels, suites, jobs, min_size=50)
    assert out.labels[0] == out.labels[50] and out.labels[40] == out.labels[200]  # each with its suite
    assert out.labels[0] != out.labels[40]
