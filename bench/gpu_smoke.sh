#!/usr/bin/env bash
# GPU smoke benchmark: SeqKD and GAD steps on random-init models of the Qwen2.5 0.5B, 1.5B
# and 7B shapes (built from config values, nothing downloaded) on every visible GPU; the
# planner picks which shapes fit and how (full fine-tune or LoRA), each shape runs in its
# own process, and each result is written under $OUT as it finishes. bench/gpu_smoke.py
# says what each column measures. Run on a GPU node from the repo root:
#
#   bash bench/gpu_smoke.sh                     # the shapes the planner picks, <= 8 minutes
#   SHAPES=7b STEPS=3 bash bench/gpu_smoke.sh   # one shape
#   SMOKE_TINY=1 bash bench/gpu_smoke.sh        # the same code on a tiny shape (CPU: 2 gloo ranks)
#
# Env: OUT (results; default /tmp/gpu-smoke/out), SMOKE_DIR (built models; /tmp/gpu-smoke),
# SMOKE_BUDGET_S (480), PYTHON (default .venv/bin/python, else python3), SHAPES, STEPS (3),
# PEAK_TFLOPS (by GPU name: H100/H200 989), BATCH, GROUP, RESPONSE_TOKENS, ROLLOUT (hf|vllm).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${SMOKE_TINY:-0}" = 1 ]; then
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
fi
exec "$PY" bench/gpu_smoke.py
