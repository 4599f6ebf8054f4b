"""Cluster names: c-TF-IDF keywords (as BERTopic computes them) and a short readable label."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.feature_extraction.text import CountVectorizer

_IGNORED = {"value", "please", "thanks", "thank", "hi", "hello", "hey", "need", "want", "like", "just", "quick"}


def ctfidf_keywords(documents: Mapping[str, Sequence[str]], top_n: int = 6) -> dict[str, list[str]]:
    """Top terms per cluster: term frequency in the cluster times log(1 + average words per cluster / frequency)."""
    ids = list(documents)
    if not ids:
        return {}
    joined = [" ".join(documents[i]) for i in ids]
    vectorizer = CountVectorizer(stop_words="english", token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z_]+\b")
    try:
        counts = vectorizer.fit_transform(joined).toarray().astype(float)
    except ValueError:  # nothing but stop words
        return {i: [] for i in ids}
    terms = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    average_words = counts.sum() / len(ids)
    idf = np.log(1 + average_words / np.maximum(counts.sum(axis=0), 1))
    scores = tf * idf
    out = {}
    for row, cluster_id in enumerate(ids):
        order = np.argsort(-scores[row])
        out[cluster_id] = [terms[j] for j in order if scores[row, j] > 0 and terms[j] not in _IGNORED][:top_n]
    return out


def readable_label(tools_called: Counter[str], shapes: Counter[str], keywords: Sequence[str]) -> str:
    """`lookup_order: order, status, arrived` for tool calls; `json: ticket, priority` otherwise."""
    shape = shapes.most_common(1)[0][0] if shapes else "text"
    head = tools_called.most_common(1)[0][0] if shape == "tool_call" and tools_called else shape
    if shape == "tool_call" and len(tools_called) > 1:  # a tool suite: its most called function and how many more
        head += f" +{len(tools_called) - 1} tools"
    return f"{head}: {', '.join(keywords[:3])}" if keywords else head
