#!/usr/bin/env bash
# GPU smoke benchmark: FSDP2 GAD and SeqKD steps on every visible GPU, on random-init
# models of the Qwen2.5 0.5B, 1.5B and 7B shapes (built from config values, nothing
# downloaded). Prints step time, tokens/s, update-phase MFU, rollout tokens/s, and peak
# GPU memory against the planner's estimate; with ROLLOUT=vllm (vLLM installed), the gap
# between vLLM's and the trainer's log-probs of the sampled tokens after a weight sync.
# Run on a GPU node from the repo root (bench/gpu_smoke.py holds the measurements):
#
#   bash bench/gpu_smoke.sh                     # all three shapes, about 10 minutes on 1 H100
#   SHAPES=7b STEPS=3 bash bench/gpu_smoke.sh   # one shape
#   SMOKE_TINY=1 bash bench/gpu_smoke.sh        # the same code path on a tiny shape (CPU: 2 gloo ranks)
#
# Env: PYTHON (default .venv/bin/python, else python3), SHAPES, STEPS (default 3),
# PEAK_TFLOPS (default 989: H100/H200 dense bf16), BATCH, GROUP, RESPONSE_TOKENS, ROLLOUT.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -eq 0 ]; then
  [ "${SMOKE_TINY:-0}" = 1 ] || { echo "no GPU visible: use SMOKE_TINY=1 for the CPU path" >&2; exit 2; }
  GPUS=2 OMP_NUM_THREADS=1
  export OMP_NUM_THREADS
fi
exec "$PY" -m torch.distributed.run --standalone --nproc-per-node "$GPUS" bench/gpu_smoke.py
