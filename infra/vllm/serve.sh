#!/usr/bin/env bash
# Serve the base SLM and every champion LoRA adapter on a GPU with vLLM's multi-LoRA, under the same model
# names as `slm-pipeline serve`: the catalogue name for the base model, slm-<agent>-<cluster> per adapter.
#
#   infra/vllm/serve.sh [TARGET]     TARGET: where the adapters are exported (default: /srv/slm-vllm)
#
# Needs slm_pipeline (for the export: it reads the routing table from the lake and the adapters from the
# MLflow registry, so set SLM_PIPELINE_HOME, or SLM_PIPELINE_LAKE_URL and SLM_PIPELINE_MLFLOW_TRACKING_URI,
# and SLM_PIPELINE_CATALOGUE if you use your own catalogue) and vllm, on the GPU machine.
#
# Environment (all optional):
#   BASE_MODEL       catalogue name of the base model (default: the base model of the routing table's SLM routes)
#   BASE             what `vllm serve` loads (default: the catalogue entry's hub_id, else its local_path)
#   HOST, PORT       where to listen (default: 0.0.0.0, 8100, the port of `slm-pipeline serve`)
#   MAX_LORAS        adapters in one batch (default: 4); more are swapped in from CPU memory (--max-cpu-loras)
#   VLLM_EXTRA_ARGS  more `vllm serve` flags, e.g. "--max-model-len 8192 --gpu-memory-utilization 0.85"
set -euo pipefail

TARGET="${1:-/srv/slm-vllm}"
PYTHON="${PYTHON:-python}"

# 1. The champion adapters, as the routing table names them: TARGET/adapters/<serving_model>/,
#    TARGET/lora-modules.txt (one --lora-modules JSON value per line) and TARGET/vllm.json.
"$PYTHON" -m slm_pipeline.serving.export "$TARGET" ${BASE_MODEL:+--base-model "$BASE_MODEL"}

field() { "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$TARGET/vllm.json" "$1"; }
SERVED_NAME="$(field base_model)"
BASE="${BASE:-$(field base)}"
MAX_LORA_RANK="$(field max_lora_rank)"
mapfile -t LORA_MODULES < "$TARGET/lora-modules.txt"

# 2. vLLM: the base model under its catalogue name, each adapter under its serving model name, and tool calls
#    parsed from the Hermes format the SLMs are trained on (<tool_call>{"name": ..., "arguments": {...}}</tool_call>).
args=(serve "$BASE"
      --served-model-name "$SERVED_NAME"
      --host "${HOST:-0.0.0.0}" --port "${PORT:-8100}"
      --enable-lora --max-lora-rank "$MAX_LORA_RANK" --max-loras "${MAX_LORAS:-4}"
      --enable-auto-tool-choice --tool-call-parser hermes)
if ((${#LORA_MODULES[@]})); then
  args+=(--lora-modules "${LORA_MODULES[@]}")
fi
# shellcheck disable=SC2086  # VLLM_EXTRA_ARGS is a list of flags
exec vllm "${args[@]}" ${VLLM_EXTRA_ARGS:-}
