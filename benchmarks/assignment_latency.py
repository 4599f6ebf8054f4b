"""Online task-cluster assignment latency: one request at a time, as the gateway sends them.

    python benchmarks/assignment_latency.py [--calls 3000] [--requests 300]

Clusters demo traffic for each agent, then assigns held-out requests (another seed) one by one
with the request-only online assigner, embedding included. The baseline, side by side, is the
embedding alone: what any embedding-based router pays. Target (issue 4): <= 20 ms per call here.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path


from slm_pipeline.core.cluster.pipeline import cluster_calls
from slm_pipeline.core.cluster.stages import SentenceTransformerEmbedder
from slm_pipeline.core.collect import RAW_TABLE, collect_new_calls
from slm_pipeline.core.curate.analyzer import SegmentAnalyzer
from slm_pipeline.core.curate.pipeline import curate_calls
from slm_pipeline.core.demo import default_labels_path, generate, write_demo_traffic
from slm_pipeline.core.importer import import_files
from slm_pipeline.core.lake import Lake
from slm_pipeline.core.store import LogStore


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="slm_bench_assign_"))
    write_demo_traffic(work / "t.jsonl", args.calls, seed=0)
    with default_labels_path(work / "t.jsonl").open() as handle:
        truth = {row["call_id"]: row["task_type"] for row in csv.DictReader(handle)}
    embedder = SentenceTransformerEmbedder()
    analyzer = SegmentAnalyzer(workers=1)
    lake = Lake(str(work / "lake"))
    assigners = {}
    cluster_task: dict[tuple[str, str], str] = {}
    with LogStore(f"sqlite:///{work / 'store.sqlite'}") as store:
        import_files(store, [work / "t.jsonl"], work / "q")
        for agent in store.agents():
            collect_new_calls(store, lake, agent)
            curated = curate_calls(lake.read(RAW_TABLE, agent), analyzer, b"bench").curated
            result = cluster_calls(curated, agent, embedder)
            assigners[agent] = result.assigner
            for call_id, cluster_id in result.assignments.select("call_id", "cluster_id").iter_rows():
                if cluster_id:
                    cluster_task.setdefault((agent, cluster_id), truth[call_id])
    analyzer.close()

    held_out = [c for c in generate(args.requests * 2, seed=99) if not c.human_facing and c.variant == "ok"]
    held_out = held_out[:args.requests]
    embedder.encode(["warm up"])
    assign_ms, embed_ms, correct = [], [], 0
    for call in held_out:
        request = call.record["request"]
        started = time.perf_counter()
        [assignment] = assigners[call.agent_id].assign([request], embedder)
        assign_ms.append((time.perf_counter() - started) * 1000)
        started = time.perf_counter()
        embedder.encode([request["messages"][-1]["content"]])
        embed_ms.append((time.perf_counter() - started) * 1000)
        correct += cluster_task.get((call.agent_id, assignment.cluster_id or "")) == call.task_type

    def p(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1]

    print(f"{len(held_out)} held-out raw requests (seed 99), assigned one at a time")
    print(f"{'':<26} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    print(f"{'embedding alone (baseline)':<26} {p(embed_ms, 50):>7.1f} {p(embed_ms, 95):>7.1f} {p(embed_ms, 99):>7.1f}")
    print(f"{'online assignment':<26} {p(assign_ms, 50):>7.1f} {p(assign_ms, 95):>7.1f} {p(assign_ms, 99):>7.1f}")
    print(f"assignment / embedding at p50: {p(assign_ms, 50) / p(embed_ms, 50):.2f}x")
    print(f"routed to the cluster of their true task type: {correct / len(held_out):.1%}")
    verdict = "meets" if p(assign_ms, 95) <= 20 else "MISSES"
    print(f"p95 {p(assign_ms, 95):.1f} ms {verdict} the target of 20 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
