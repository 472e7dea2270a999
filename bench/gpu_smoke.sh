#!/usr/bin/env bash
# GPU smoke benchmark: GAD and SeqKD steps on a random-init model of Qwen2.5-0.5B's shape
# (built from config values, nothing downloaded). Prints step time, tokens/s, MFU and
# peak GPU memory. Run on a GPU node from the repo root:
#
#   bash bench/gpu_smoke.sh                 # about 2-4 minutes on one H100/H200
#   SMOKE_TINY=1 bash bench/gpu_smoke.sh    # the same code path on a tiny shape (CPU ok)
#
# Env: PYTHON (default .venv/bin/python, else python3), STEPS (default 4),
# PEAK_TFLOPS (default 989: H100/H200 dense bf16), BATCH, GROUP, RESPONSE_TOKENS.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'EOF'
import json, os, statistics, tempfile, time
from pathlib import Path

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from trainer.tiny import CHAT_TEMPLATE, builtin_corpus, train_tokenizer
from trainer.config import from_dict
from trainer.recipes.gad import adversarial_step, start_adversarial_stage
from trainer.recipes.seqkd import seqkd_step
from trainer.recipes.setup import build_run

tiny = os.environ.get("SMOKE_TINY") == "1"
steps = int(os.environ.get("STEPS", 4))
batch = int(os.environ.get("BATCH", 2 if tiny else 16))
group = int(os.environ.get("GROUP", 2 if tiny else 8))
resp_tokens = int(os.environ.get("RESPONSE_TOKENS", 16 if tiny else 256))
peak_tflops = float(os.environ.get("PEAK_TFLOPS", 989))

work = Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
tok = train_tokenizer(builtin_corpus(4000), 4096)
shape = dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2) if tiny else dict(
    # Qwen2.5-0.5B-Instruct's config.json
    hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
    num_key_value_heads=2, rope_theta=1000000.0)
config = Qwen2Config(vocab_size=4096 if tiny else 151936, tie_word_embeddings=True,
                     max_position_embeddings=32768, rms_norm_eps=1e-6,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, **shape)
torch.manual_seed(0)
Qwen2ForCausalLM(config).save_pretrained(work / "model")
tok.save_pretrained(work / "model")
params = sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())

lines = builtin_corpus(4 * batch * steps + 8, seed=1)
with open(work / "prompts.jsonl", "w") as f:
    for i in range(2 * batch * steps):
        answer = " ".join(lines[j % len(lines)] for j in range(i, i + 12))  # ~resp_tokens
        f.write(json.dumps({"prompt": lines[i], "teacher_response": answer}) + "\n")

def make_run(method):
    cfg = from_dict({
        "method": method, "student": str(work / "model"), "train_file": str(work / "prompts.jsonl"),
        "output_dir": str(work / method), "batch_size": batch, "group_size": group,
        "max_prompt_tokens": 512, "max_response_tokens": resp_tokens,
        "save_every": 10**6, "sample_every": 10**6, "warmup": {"epochs": 0},
        "rollout": {"generation_batch_size": batch * group}, "resume": "never",
    })
    run, _ = build_run(cfg, None, with_disc=method == "gad")
    return run

def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()

def measure(method):
    run = make_run(method)
    if method == "gad":
        start_adversarial_stage(run)
    step_fn = adversarial_step if method == "gad" else seqkd_step
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times, flops, tokens, rollout = [], [], [], []
    for i in range(steps):
        b = run.examples[i * batch:(i + 1) * batch]
        sync(); t0 = time.perf_counter()
        rec = step_fn(run, b)
        sync(); times.append(time.perf_counter() - t0)
        run.step += 1
        p = sum(len(e.prompt_ids) for e in b)
        t = sum(len(e.teacher_ids) for e in b)
        if method == "gad":
            s = rec["len/student_mean"] * batch * group
            student_seq = group * p + s  # prompt + sample tokens of the B*N samples
            teacher_seq = p + t
            # 2N per token forward, 6N forward+backward (attention FLOPs left out)
            f = 2 * params * student_seq                    # rollout (prefill + decode)
            f += 2 * params * (student_seq + teacher_seq)   # D scores (rewards)
            f += 6 * params * (student_seq + teacher_seq)   # D update
            f += 6 * params * student_seq + 2 * params * student_seq  # G update + reference
            tokens.append(student_seq + teacher_seq)
            rollout.append(rec["perf/rollout_s"])
        else:
            f = 6 * params * (p + t)
            tokens.append(p + t)
        flops.append(f)
    k = slice(1, None) if steps > 1 else slice(None)  # the first step pays warm-up costs
    step_s = statistics.median(times[k])
    tps = sum(tokens[k]) / sum(times[k])
    mfu = sum(flops[k]) / sum(times[k]) / (peak_tflops * 1e12)
    mem = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    extra = f", rollout {statistics.median(rollout[k]):.2f}s" if rollout else ""
    print(f"{method:6s} step {step_s:.2f}s{extra}, {tps:,.0f} tokens/s, MFU {100 * mfu:.1f}% "
          f"(of {peak_tflops:.0f} TFLOP/s), peak GPU memory {mem:.1f} GiB", flush=True)
    del run
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
print(f"{'tiny' if tiny else 'Qwen2.5-0.5B'}-shaped random model, {params / 1e6:.0f}M params, "
      f"{dev}; {batch} prompts x {group} samples, <= {resp_tokens} response tokens")
measure("seqkd")
measure("gad")
EOF
