"""S3 task clustering: quality against the demo's true task types, side by side with BERTopic, and scale.

    python benchmarks/clustering.py [--quality-calls 10000] [--scales 10000,30000,100000]

Quality: demo traffic is imported, collected and curated as the pipeline does, then clustered per
agent. ARI and NMI against the true task types (from the labels file the pipeline never reads),
for this pipeline and for BERTopic with library defaults fed the (curated) latest user turns.
BERTopic's default embedding model is the same all-MiniLM-L6-v2, passed as a local path since
nothing is downloaded here; everything else is BERTopic's default. Unclustered calls / outliers
count as one more group in ARI and NMI, as they go to the LLM.

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
from pathlib import Path

import polars as pl
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from slm_pipeline.core.cluster.pipeline import ClusteringConfig, cluster_calls
from slm_pipeline.core.cluster.stages import SentenceTransformerEmbedder
from slm_pipeline.core.collect import RAW_TABLE, collect_new_calls
from slm_pipeline.core.curate.analyzer import SegmentAnalyzer
from slm_pipeline.core.curate.pipeline import curate_calls
from slm_pipeline.core.demo import default_labels_path, write_demo_traffic
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.store import LogStore


def curated_demo(calls: int, work: Path) -> tuple[dict[str, pl.DataFrame], dict[str, str]]:
    """Curated calls per agent for `calls` demo records, and the true task type of each call."""
    cached = work / f"curated-{calls}.parquet"
    traffic = work / f"traffic-{calls}.jsonl"
    if not traffic.exists():
        write_demo_traffic(traffic, calls, seed=0)
    with default_labels_path(traffic).open() as handle:
        truth = {row["call_id"]: row["task_type"] for row in csv.DictReader(handle)}
    if not cached.exists():
        with LogStore(f"sqlite:///{work / f'store-{calls}.sqlite'}") as store:
            import_files(store, [traffic], work / "q")
            lake = Lake(str(work / f"lake-{calls}"))
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
          f"{'topics':>7} {'ARI':>6} {'NMI':>6} {'s':>6}")
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
              f"{ours_s:>6.1f} | {n_topics:>7} {bt_ari:>6.3f} {bt_nmi:>6.3f} {bertopic_s:>6.1f}")
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
    parser.add_argument("--work", type=Path, default=None, help="folder to keep generated data between runs")
    parser.add_argument("--scale-run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scale_run:
        scale_run(args.scale_run)
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="slm_bench_cluster_"))
    work.mkdir(parents=True, exist_ok=True)
    quality(args.quality_calls, work)
    if args.scales:
        scale([int(s) for s in args.scales.split(",")], work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
