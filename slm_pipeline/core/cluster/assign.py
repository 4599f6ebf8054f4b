"""Online assignment: which task cluster a new call belongs to, before the LLM has answered it.

The gateway routes a call before any answer exists, so the assigner sees only the request: the
masked latest user turn (embedded), the system prompt's fingerprint and the tools offered. A
multinomial logistic regression fitted on the clustered calls maps those to a cluster; a call
whose best probability is below `min_confidence`, or that is farther from its cluster's centroid
than the cluster's own members (`similarity_floor`), is assigned to none and stays on the LLM.
The artifact is two files with no pickled code: `assigner.json` (ids, labels, vocabularies,
settings) and `assigner.npz` (weights, centroids, floors).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from slm_pipeline.core.chat import latest_user_turn, offered_tools, system_fingerprint
from slm_pipeline.core.cluster.features import FeatureSpace, FeatureWeights, mask_text
from slm_pipeline.core.cluster.stages import Embedder


def request_parts(request: dict[str, Any]) -> tuple[str, str | None, list[str]]:
    """(latest user turn, system fingerprint, tools offered) of an OpenAI request."""
    return latest_user_turn(request), system_fingerprint(request), offered_tools(request)


def request_vectors(space: FeatureSpace, text_vectors: np.ndarray, systems: list[str | None],
                    offered: list[list[str]]) -> np.ndarray:
    """Request-only vectors: the answer's parts (tools called, shape) are not known yet."""
    request_space = FeatureSpace(FeatureWeights(space.weights.user_turn, space.weights.system_prompt,
                                                space.weights.tools_offered, 0.0, 0.0), space.systems, space.tools,
                                 space.aliases)
    categorical = request_space.categorical(systems, offered, [[] for _ in systems], ["text"] * len(systems))
    return request_space.combine(text_vectors, categorical)


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    exp = np.exp(scores)
    return exp / exp.sum(axis=1, keepdims=True)


@dataclass
class Assignment:
    cluster_id: str | None
    confidence: float
    similarity: float


@dataclass
class OnlineAssigner:
    cluster_ids: list[str]
    labels: list[str]
    space: FeatureSpace
    embedding_model: str
    coef: np.ndarray  # clusters x features
    intercept: np.ndarray  # clusters
    centroids: np.ndarray  # clusters x features (request-only space), unit length
    floors: np.ndarray  # per cluster: the similarity below which a call is not this cluster's
    min_confidence: float = 0.6

    @classmethod
    def fit(cls, vectors: np.ndarray, cluster_ids: list[str | None], labels: dict[str, str], space: FeatureSpace,
            embedding_model: str, min_confidence: float = 0.6, seed: int = 42) -> OnlineAssigner | None:
        """Fit on request-only vectors of the clustered calls; None when there is fewer than one cluster."""
        from sklearn.linear_model import LogisticRegression

        mask = np.array([c is not None for c in cluster_ids])
        ids = sorted({c for c in cluster_ids if c is not None})
        if not ids:
            return None
        x, y = vectors[mask], np.array([c for c in cluster_ids if c is not None])
        centroids = np.stack([vectors[mask][y == c].mean(axis=0) for c in ids])
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-9)
        floors = np.array([np.quantile(x[y == c] @ centroids[i], 0.01) - 0.05 for i, c in enumerate(ids)])
        if len(ids) == 1:
            coef, intercept = np.zeros((1, vectors.shape[1])), np.zeros(1)
        else:
            model = LogisticRegression(C=10.0, max_iter=2000, random_state=seed).fit(x, y)
            order = [list(model.classes_).index(c) for c in ids]
            coef, intercept = model.coef_, model.intercept_
            if len(ids) == 2:  # sklearn keeps one row for two classes
                coef, intercept = np.vstack([-coef, coef]) / 2, np.array([-intercept[0], intercept[0]]) / 2
            coef, intercept = coef[order], intercept[order]
        return cls(ids, [labels.get(c, c) for c in ids], space, embedding_model, coef, intercept, centroids,
                   floors, min_confidence)

    def assign_vectors(self, vectors: np.ndarray) -> list[Assignment]:
        probabilities = _softmax(vectors @ self.coef.T + self.intercept)
        similarities = vectors @ self.centroids.T
        out = []
        for row in range(len(vectors)):
            best = int(np.argmax(probabilities[row]))
            confidence, similarity = float(probabilities[row, best]), float(similarities[row, best])
            ok = confidence >= self.min_confidence and similarity >= self.floors[best]
            out.append(Assignment(self.cluster_ids[best] if ok else None, confidence, similarity))
        return out

    def assign(self, requests: list[dict[str, Any]], embedder: Embedder,
               replacements: list[list[str]] | None = None) -> list[Assignment]:
        """Clusters for OpenAI requests (or None each when no cluster fits)."""
        parts = [request_parts(r) for r in requests]
        masks = replacements or [[] for _ in requests]
        texts = embedder.encode([mask_text(user, masks[i]) for i, (user, _, _) in enumerate(parts)])
        vectors = request_vectors(self.space, texts, [p[1] for p in parts], [p[2] for p in parts])
        return self.assign_vectors(vectors)

    # --- the artifact ------------------------------------------------------------------------

    def to_files(self) -> dict[str, bytes]:
        meta = {"cluster_ids": self.cluster_ids, "labels": self.labels, "space": self.space.to_dict(),
                "embedding_model": self.embedding_model, "min_confidence": self.min_confidence}
        arrays = io.BytesIO()
        np.savez(arrays, coef=self.coef, intercept=self.intercept, centroids=self.centroids, floors=self.floors)
        return {"assigner.json": json.dumps(meta, indent=2).encode(), "assigner.npz": arrays.getvalue()}

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> OnlineAssigner:
        meta = json.loads(files["assigner.json"])
        arrays = np.load(io.BytesIO(files["assigner.npz"]), allow_pickle=False)
        return cls(meta["cluster_ids"], meta["labels"], FeatureSpace.from_dict(meta["space"]),
                   meta["embedding_model"], arrays["coef"], arrays["intercept"], arrays["centroids"],
                   arrays["floors"], meta["min_confidence"])
