"""Import throughput into Postgres and SQLite, against a naive row-at-a-time baseline.

    python benchmarks/import_throughput.py [--calls 100000] [--baseline-calls 10000]

Both sides parse and validate every record the same way; the baseline inserts
and commits one record at a time (what a simple logger does), the importer
batches inserts with ON CONFLICT DO NOTHING ... RETURNING. Each run uses fresh,
throw-away databases. Target (issue 2): 5,000 records/s into Postgres.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import sqlalchemy as sa

from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.importer import Importer, import_files
from slm_pipeline.core.store import LogStore

ADMIN_URL = os.environ.get("SLM_PIPELINE_TEST_POSTGRES_URL", "postgresql://slm_pipeline@127.0.0.1:5432/slm_pipeline")
TARGET_PG = 5000


class RowAtATime(Importer):
    """The baseline: the same parsing and validation, one INSERT and COMMIT per record."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, batch_size=1, **kwargs)


def head(source: Path, lines: int, target: Path) -> Path:
    with source.open("rb") as reader, target.open("wb") as writer:
        for _, line in zip(range(lines), reader):
            writer.write(line)
    return target


def timed(importer_class: type[Importer], url: str, path: Path, quarantine: Path) -> tuple[float, int]:
    with LogStore(url) as store:
        started = time.perf_counter()
        report = importer_class(store, quarantine).import_files([path])
        elapsed = time.perf_counter() - started
        assert report.reconciles and store.count() == report.imported, report
    return elapsed, report.read


class PostgresDatabases:
    def __init__(self) -> None:
        self.names: list[str] = []

    def make(self) -> str:
        name = f"slm_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.names.append(name)
        return sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            for name in self.names:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100_000, help="records imported by the batched importer")
    parser.add_argument("--baseline-calls", type=int, default=10_000, help="records imported by the baseline")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="slm_bench_import_"))
    traffic = work / "traffic.jsonl"
    started = time.perf_counter()
    write_demo_traffic(traffic, args.calls, args.seed)
    print(f"generated {args.calls:,} demo records ({traffic.stat().st_size / 2**20:.0f} MiB) "
          f"in {time.perf_counter() - started:.1f} s")
    baseline_file = head(traffic, args.baseline_calls, work / "baseline.jsonl")

    databases = PostgresDatabases()
    rows = []
    try:
        for backend in ("postgres", "sqlite"):
            def url(tag: str, backend: str = backend) -> str:
                return databases.make() if backend == "postgres" else f"sqlite:///{work / f'{tag}.sqlite'}"

            base_s, base_n = timed(RowAtATime, url("baseline"), baseline_file, work / "q")
            fast_s, fast_n = timed(Importer, url("batched"), traffic, work / "q")
            base_rate, fast_rate = base_n / base_s, fast_n / fast_s
            rows.append((backend, "row at a time (baseline)", base_n, base_s, base_rate, 1.0))
            rows.append((backend, "batched importer", fast_n, fast_s, fast_rate, fast_rate / base_rate))
            with LogStore(url("reimport")) as store:  # idempotency at scale: a second import stores nothing
                import_files(store, [traffic], work / "q")
                started = time.perf_counter()
                again = import_files(store, [traffic], work / "q")
                rows.append((backend, "re-import (all duplicate)", again.read, time.perf_counter() - started,
                             again.read / (time.perf_counter() - started), None))
                assert again.imported == 0 and again.duplicate == again.read
    finally:
        databases.drop_all()

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'backend':<9} {'method':<27} {'records':>9} {'seconds':>8} {'records/s':>10} {'vs baseline':>12}")
    for backend, method, n, seconds, rate, ratio in rows:
        shown = f"{ratio:.1f}x" if ratio is not None else ""
        print(f"{backend:<9} {method:<27} {n:>9,} {seconds:>8.1f} {rate:>10,.0f} {shown:>12}")
    pg_rate = next(r[4] for r in rows if r[0] == "postgres" and r[1] == "batched importer")
    verdict = "meets" if pg_rate >= TARGET_PG else "MISSES"
    print(f"\nPostgres: {pg_rate:,.0f} records/s {verdict} the target of {TARGET_PG:,} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
