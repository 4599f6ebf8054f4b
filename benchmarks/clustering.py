"""S3 task clustering: quality against the demo's true task types, side by side with BERTopic, and scale.

    python benchmarks/clustering.py [--quality-calls 10000] [--scales 10000,30000,100000] [--no-public]

Quality: demo traffic is imported, collected and curated as the pipeline does, then clustered per
agent. ARI and NMI against the true task types (from the labels file the pipeline never reads),
for this pipeline and for BERTopic with library defaults fed the (curated) latest user turns.
BERTopic's default embedding model is the same all-MiniLM-L6-v2, passed as a local path since
nothing is downloaded here; everything else is BERTopic's default. Unclustered calls / outliers
count as one more group in ARI and NMI, as they go to the LLM.

Public traffic: BFCL's non-live categories (`benchmarks/bfcl.py`), curated by S2 and clustered as
one agent, at both granularities: the share of calls in clusters that reach the dataset minimum.

Scale: wall time and peak memory (max RSS of a fresh process) of `cluster_calls` on 10k, 30k and
100k curated calls (all three agents, each clustered on its own). Target (issue 4): 100,000 calls in 10 minutes or less; ARI >= 0.9 with at most twice as
many clusters as true task types.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

import polars as pl
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from slm_pipeline.core.cluster.pipeline import ClusteringConfig, cluster_calls
from slm_pipeline.core.cluster.stages import SentenceTransformerEmbedder
from slm_pipeline.core.collect import RAW_TABLE, collect_new_calls
from slm_pipeline.core.curate.analyzer import SegmentAnalyzer
from slm_pipeline.core.curate.pipeline import curate_calls
from slm_pipeline.core.demo import default_labels_path, write_demo_traffic
from slm_pipeline.core.demo.assistant import suite_of, assistant_suites
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.store import LogStore


def curated_demo(calls: int, work: Path, assistant_only: bool = False
                 ) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """Curated calls per agent for `calls` demo records, and the true task type of each call."""
    name = f"assistant-{calls}" if assistant_only else str(calls)
    cached = work / f"curated-{name}.parquet"
    traffic = work / f"traffic-{name}.jsonl"
    if not traffic.exists():
        write_demo_traffic(traffic, calls, seed=0, agents=assistant_suites() if assistant_only else None)
    with default_labels_path(traffic).open() as handle:
        truth = {row["call_id"]: row["task_type"] for row in csv.DictReader(handle)}
    if not cached.exists():
        with LogStore(f"sqlite:///{work / f'store-{name}.sqlite'}") as store:
            import_files(store, [traffic], work / "q")
            lake = Lake(str(work / f"lake-{name}"))
            analyzer = SegmentAnalyzer(cache_path=work / "pii-cache.sqlite")
            frames = []
            for agent in store.agents():
                collect_new_calls(store, lake, agent)
                frames.append(curate_calls(lake.read(RAW_TABLE, agent), analyzer, b"bench").curated)
            analyzer.close()
        pl.concat(frames).write_parquet(cached)
    curated = pl.read_parquet(cached)
    return {agent[0]: frame for agent, frame in curated.group_by("agent_id")}, truth


def scores(truth: list[str], predicted: list[str]) -> tuple[float, float]:
    return adjusted_rand_score(truth, predicted), normalized_mutual_info_score(truth, predicted)


def quality(calls: int, work: Path) -> None:
    by_agent, truth = curated_demo(calls, work)
    embedder = SentenceTransformerEmbedder()
    print(f"\nquality on {sum(f.height for f in by_agent.values()):,} curated calls of {calls:,} demo records")
    print(f"{'agent':<16} {'true':>5} | {'clusters':>8} {'ARI':>6} {'NMI':>6} {'s':>6} | "
          f"{'topics':>7} {'ARI':>6} {'NMI':>6} {'s':>6} | {'trainable':>9} {'(BERTopic)':>9}")
    pooled_truth, pooled_ours, pooled_bertopic = [], [], []
    totals = {"true": 0, "ours": 0, "bertopic": 0}
    for agent, frame in sorted(by_agent.items()):
        labels = [truth[c] for c in frame["call_id"]]
        started = time.perf_counter()
        result = cluster_calls(frame, agent, embedder)
        ours_s = time.perf_counter() - started
        ours = [c or "unclustered" for c in result.assignments["cluster_id"]]
        labels_in_order = [truth[c] for c in result.assignments["call_id"]]  # assignments are in arrival order

        from bertopic import BERTopic

        started = time.perf_counter()
        topics, _ = BERTopic(embedding_model=embedder.model).fit_transform(frame["user_turn"].to_list())
        bertopic_s = time.perf_counter() - started
        ours_ari, ours_nmi = scores(labels_in_order, ours)
        bt_ari, bt_nmi = scores(labels, [str(t) for t in topics])
        n_true, n_topics = len(set(labels)), len(set(topics) - {-1})
        print(f"{agent:<16} {n_true:>5} | {result.metrics['clusters']:>8} {ours_ari:>6.3f} {ours_nmi:>6.3f} "
              f"{ours_s:>6.1f} | {n_topics:>7} {bt_ari:>6.3f} {bt_nmi:>6.3f} {bertopic_s:>6.1f} | "
              f"{result.metrics['trainable_share']:>9.1%} {trainable_share([str(t) for t in topics], 50):>9.1%}")
        pooled_truth += labels_in_order
        pooled_ours += [f"{agent}/{c}" for c in ours]
        bt_by_call = dict(zip(frame["call_id"], topics))
        pooled_bertopic += [f"{agent}/{bt_by_call[c]}" for c in result.assignments["call_id"]]
        totals["true"] += n_true
        totals["ours"] += result.metrics["clusters"]
        totals["bertopic"] += n_topics
    ours_ari, ours_nmi = scores(pooled_truth, pooled_ours)
    bt_ari, bt_nmi = scores(pooled_truth, pooled_bertopic)
    print(f"{'all agents':<16} {totals['true']:>5} | {totals['ours']:>8} {ours_ari:>6.3f} {ours_nmi:>6.3f} {'':>6} | "
          f"{totals['bertopic']:>7} {bt_ari:>6.3f} {bt_nmi:>6.3f}")
    verdict = "meets" if ours_ari >= 0.9 and totals["ours"] <= 2 * totals["true"] else "MISSES"
    print(f"ARI {ours_ari:.3f} with {totals['ours']} clusters for {totals['true']} task types: {verdict} the target "
          f"(ARI >= 0.9, at most {2 * totals['true']} clusters); BERTopic defaults: ARI {bt_ari:.3f}, "
          f"{totals['bertopic']} topics")


def trainable_share(groups: list[str], minimum: int, noise: set[str] = frozenset({"unclustered", "-1"})) -> float:
    """Share of calls in groups of at least `minimum` calls (noise is never trainable)."""
    sizes = Counter(g for g in groups if g not in noise)
    return sum(n for n in sizes.values() if n >= minimum) / len(groups) if groups else 0.0


def worst_purity(truth: list[str], groups: list[str], noise: set[str] = frozenset({"unclustered", "-1"})) -> float:
    """The lowest share of a group's calls that belong to its most common true label."""
    members: dict[str, Counter] = {}
    for label, group in zip(truth, groups):
        if group not in noise:
            members.setdefault(group, Counter())[label] += 1
    return min((c.most_common(1)[0][1] / sum(c.values()) for c in members.values()), default=1.0)


def held_out_agreement(frame: pl.DataFrame, agent: str, embedder: SentenceTransformerEmbedder,
                       truth: dict[str, str], config: ClusteringConfig) -> tuple[float, float]:
    """Cluster the first 80% of calls, route the last 20% with the online assigner: the share routed to the
    cluster that holds most of their true suite, and the online assigner's p95 latency per call (ms)."""
    import orjson

    ordered = frame.sort("seq")
    cut = int(ordered.height * 0.8)
    fitted = cluster_calls(ordered.head(cut), agent, embedder, config)
    if fitted.assigner is None:
        return 0.0, 0.0
    home: dict[str, Counter] = {}
    for call_id, cluster_id in fitted.assignments.select("call_id", "cluster_id").iter_rows():
        if cluster_id is not None:
            home.setdefault(suite_of(truth[call_id]), Counter())[cluster_id] += 1
    suite_cluster = {suite: c.most_common(1)[0][0] for suite, c in home.items()}
    rest = ordered.tail(ordered.height - cut)
    requests = [orjson.loads(r) for r in rest["request"]]
    replacements = rest["replacements"].to_list()
    latencies = []
    for request, replaced in zip(requests[:200], replacements[:200]):
        started = time.perf_counter()
        fitted.assigner.assign([request], embedder, [replaced])
        latencies.append((time.perf_counter() - started) * 1000)
    routed = fitted.assigner.assign(requests, embedder, replacements)
    hits = [r.cluster_id is not None and r.cluster_id == suite_cluster.get(suite_of(truth[c]))
            for r, c in zip(routed, rest["call_id"])]
    return sum(hits) / len(hits), float(np.percentile(latencies, 95))


def both_granularities(frame: pl.DataFrame, agent: str, embedder: SentenceTransformerEmbedder
                       ) -> dict[str, tuple[list[str], list[str], int, float]]:
    """The calls clustered at trainable (default) and function-level granularity: per name, the call ids,
    their groups ("unclustered" for none), the number of clusters and the seconds it took."""
    rows = {}
    for name, config in (("ours (trainable)", ClusteringConfig()),
                         ("function-level", ClusteringConfig(granularity="function"))):
        started = time.perf_counter()
        result = cluster_calls(frame, agent, embedder, config)
        seconds = time.perf_counter() - started
        ids = result.assignments["call_id"].to_list()
        groups = [c or "unclustered" for c in result.assignments["cluster_id"]]
        rows[name] = (ids, groups, result.metrics["clusters"], seconds)
    return rows


def assistant_quality(calls: int, work: Path, public: Path | None = None) -> None:
    """The general assistant (8 tool suites, multi-turn, functions called rarely): ARI against suites and
    functions, calls in trainable clusters and purity by suite, for trainable (default) and function-level
    granularity and BERTopic's defaults."""
    by_agent, truth = curated_demo(calls, work, assistant_only=True)
    frame = by_agent["general-assistant"]
    embedder = SentenceTransformerEmbedder()
    minimum = ClusteringConfig().trainable_min
    functions = Counter(truth[c] for c in frame["call_id"])
    suites = Counter(suite_of(t) for t in functions.elements())
    print(f"\ngeneral assistant: {frame.height:,} curated calls of {calls:,} records; {len(suites)} suites "
          f"({min(suites.values())}-{max(suites.values())} calls each), {len(functions)} functions "
          f"({min(functions.values())}-{max(functions.values())} calls each); dataset minimum {minimum}")
    print(f"{'clustering':<22} {'clusters':>8} {'ARI suite':>9} {'ARI fn':>7} {'NMI suite':>9} {'trainable':>9} "
          f"{'noise':>6} {'min purity':>10} {'s':>6}")
    rows = both_granularities(frame, "general-assistant", embedder)
    from bertopic import BERTopic

    started = time.perf_counter()
    topics, _ = BERTopic(embedding_model=embedder.model).fit_transform(frame["user_turn"].to_list())
    rows["BERTopic defaults"] = (frame["call_id"].to_list(), [str(t) for t in topics], len(set(topics) - {-1}),
                                 time.perf_counter() - started)
    for name, (ids, groups, clusters, seconds) in rows.items():
        fn_truth = [truth[c] for c in ids]
        suite_truth = [suite_of(t) for t in fn_truth]
        ari_suite, nmi_suite = scores(suite_truth, groups)
        ari_fn, _ = scores(fn_truth, groups)
        noise = sum(g in ("unclustered", "-1") for g in groups) / len(groups)
        print(f"{name:<22} {clusters:>8} {ari_suite:>9.3f} {ari_fn:>7.3f} {nmi_suite:>9.3f} "
              f"{trainable_share(groups, minimum):>9.1%} {noise:>6.1%} {worst_purity(suite_truth, groups):>10.3f} "
              f"{seconds:>6.1f}")
    ids, groups, *_ = rows["ours (trainable)"]
    suite_truth = [suite_of(truth[c]) for c in ids]
    ari_suite, _ = scores(suite_truth, groups)
    share, purity = trainable_share(groups, minimum), worst_purity(suite_truth, groups)
    verdict = "meets" if ari_suite >= 0.85 and share >= 0.8 and purity >= 0.9 else "MISSES"
    print(f"target (ARI vs suites >= 0.85, >= 80% of calls in trainable clusters, every cluster >= 0.9 pure by "
          f"suite): {verdict}")
    agreement, p95 = held_out_agreement(frame, "general-assistant", embedder, truth, ClusteringConfig())
    print(f"online assigner on the last 20% (clustered on the first 80%): {agreement:.1%} routed to their true "
          f"suite's cluster; p95 {p95:.1f} ms per single request (target <= 20 ms)")


def public_quality(work: Path) -> None:
    """BFCL's non-live categories (issue 17's loader), curated by S2 and clustered as one agent: calls in
    trainable clusters at trainable (default) and function-level granularity. Target (issue 18): >= 70%."""
    from bfcl import bfcl_records
    from public_traffic import curate

    records = bfcl_records()
    cached = work / "bfcl-curated.parquet"
    if cached.exists():
        frame = pl.read_parquet(cached)
    else:
        _, result = curate(records, work / "bfcl", "scrub")
        frame = result.curated
        frame.write_parquet(cached)
    embedder = SentenceTransformerEmbedder()
    minimum = ClusteringConfig().trainable_min
    print(f"\npublic traffic (BFCL non-live, {len(records):,} records): {frame.height:,} curated calls; dataset "
          f"minimum {minimum}")
    print(f"{'clustering':<22} {'clusters':>8} {'trainable':>9} {'noise':>6} {'sizes (min/median/max)':>24} {'s':>6}")
    shares = {}
    for name, (_, groups, _, seconds) in both_granularities(frame, "bfcl", embedder).items():
        sizes = sorted(Counter(g for g in groups if g != "unclustered").values())
        noise = groups.count("unclustered") / len(groups)
        shares[name] = trainable_share(groups, minimum)
        spread = f"{sizes[0]} / {sizes[len(sizes) // 2]} / {sizes[-1]}" if sizes else "-"
        print(f"{name:<22} {len(sizes):>8} {shares[name]:>9.1%} {noise:>6.1%} {spread:>24} {seconds:>6.1f}")
    print(f"target (>= 70% of the calls in trainable clusters): "
          f"{'meets' if shares['ours (trainable)'] >= 0.7 else 'MISSES'}")


def scale_run(path: Path) -> None:
    """In a fresh process: cluster every agent of a curated frame; print seconds and peak memory as JSON."""
    frame = pl.read_parquet(path)
    embedder = SentenceTransformerEmbedder()
    started = time.perf_counter()
    stages: dict[str, float] = {}
    clusters = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as progress:
        for (agent,), calls in frame.group_by("agent_id"):
            task = progress.add_task(f"embedding {agent}", total=None)
            result = cluster_calls(calls, agent, embedder, ClusteringConfig(),
                                   on_progress=lambda d, t, task=task: progress.update(task, completed=d, total=t))
            clusters += result.metrics["clusters"]
            for name, seconds in result.stages.items():
                stages[name] = round(stages.get(name, 0) + seconds, 1)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"calls": frame.height, "seconds": seconds, "peak_mib": peak, "clusters": clusters,
                      "stages": stages}))


def scale(sizes: list[int], work: Path) -> None:
    largest = max(sizes)
    records = int(largest / 0.75)  # curation keeps about 78% of demo records
    by_agent, _ = curated_demo(records, work)
    everything = pl.concat(by_agent.values()).sort("seq")
    if everything.height < largest:
        raise SystemExit(f"{records:,} demo records gave only {everything.height:,} curated calls")
    print(f"\nscale: the first N curated calls (by arrival) of {records:,} demo records")
    print(f"{'calls':>8} {'seconds':>8} {'peak MiB':>9} {'clusters':>9}  seconds by stage")
    for size in sizes:
        subset = work / f"subset-{size}.parquet"
        everything.head(size).write_parquet(subset)
        out = subprocess.run([sys.executable, __file__, "--scale-run", str(subset)], capture_output=True, text=True,
                             check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{row['calls']:>8,} {row['seconds']:>8.1f} {row['peak_mib']:>9.0f} {row['clusters']:>9}  {row['stages']}")
        if size >= 100_000:
            print(f"  100k target (<= 600 s): {'meets' if row['seconds'] <= 600 else 'MISSES'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quality-calls", type=int, default=10_000)
    parser.add_argument("--scales", default="10000,30000,100000")
    parser.add_argument("--assistant-calls", type=int, default=1300,
                        help="records of the general assistant's traffic (0: skip)")
    parser.add_argument("--public", action=argparse.BooleanOptionalAction, default=True,
                        help="cluster BFCL's public traffic too (downloads the bfcl-eval wheel once)")
    parser.add_argument("--work", type=Path, default=None, help="folder to keep generated data between runs")
    parser.add_argument("--scale-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_run:
        scale_run(args.scale_run)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="slm_bench_cluster_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.assistant_calls:
        assistant_quality(args.assistant_calls, work)
    if args.public:
        public_quality(work)
    if args.quality_calls:
        quality(args.quality_calls, work)
    if args.scales:
        scale([int(s) for s in args.scales.split(",")], work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
