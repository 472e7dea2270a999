"""Data-parallel GAD steps: k FSDP2 trainer processes under torchrun against one process.

The same tiny model, prompts and global batch (8 prompts x 4 samples) for every row;
each row is a full `python -m trainer run` (one process, or `torchrun --standalone
--nproc-per-node k`), timed from its own metrics.jsonl: the median wall time between
consecutive adversarial steps, after the first two. On a CPU machine each process gets
one thread (gloo), so k processes can use k cores; on a GPU node each gets a GPU (NCCL).
Not a test.

    .venv/bin/python bench/data_parallel.py [--procs 1,2] [--steps 10] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import table, write_section  # noqa: E402

BATCH, GROUP, MAX_NEW, MAX_PROMPT = 8, 4, 32, 64
MODEL = {"layers": 4, "hidden": 128, "heads": 4, "vocab": 1024}


def _setup(root: Path) -> tuple[Path, Path]:
    from trainer.tiny import build_tiny, builtin_corpus

    model = build_tiny(root / "model", **MODEL)
    lines = builtin_corpus(128, seed=1)
    prompts = root / "prompts.jsonl"
    with open(prompts, "w") as f:
        for i in range(64):
            record = {"id": str(i), "prompt": lines[2 * i], "teacher_response": lines[2 * i + 1]}
            f.write(json.dumps(record) + "\n")
    return model, prompts


def _config(root: Path, model: Path, prompts: Path, procs: int, steps: int) -> Path:
    from trainer.config import from_dict, save_config

    cfg = from_dict(
        {
            "method": "gad",
            "student": str(model),
            "train_file": str(prompts),
            "output_dir": str(root / f"run-{procs}"),
            "batch_size": BATCH,
            "group_size": GROUP,
            "max_prompt_tokens": MAX_PROMPT,
            "max_response_tokens": MAX_NEW,
            "save_every": 10**6,
            "sample_every": 10**6,
            "warmup": {"epochs": 0},
            "gad": {"epochs": 100},
            "max_steps": steps,
            "resume": "never",
        }
    )
    path = root / f"cfg-{procs}.yaml"
    save_config(cfg, path)
    return path


def run(root: Path, model: Path, prompts: Path, procs: int, steps: int) -> list[float]:
    config = _config(root, model, prompts, procs, steps)
    argv = [sys.executable]
    if procs > 1:
        argv += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]
    argv += ["-m", "trainer", "run", "--config", str(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run(argv, check=True, env=env, capture_output=True)
    records = [json.loads(line) for line in open(root / f"run-{procs}" / "metrics.jsonl")]
    times = [r["time"] for r in records if "event" not in r]
    return [b - a for a, b in zip(times, times[1:], strict=False)][2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--procs", default="1,2", help="comma-separated process counts")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    procs = [int(p) for p in args.procs.split(",")]
    root = Path(tempfile.mkdtemp(prefix="gad-dp-"))
    model, prompts = _setup(root)
    medians = {k: statistics.median(run(root, model, prompts, k, args.steps)) for k in procs}
    base = medians[procs[0]]
    rows = [
        [k, f"{medians[k]:.3f}", f"{BATCH / medians[k]:.1f}", f"{base / medians[k]:.2f}x"]
        for k in procs
    ]
    body = table(["processes", "step (s, median)", "prompts/s", f"vs {procs[0]} process"], rows)
    device = "GPU (NCCL)" if _cuda() else "CPU (gloo, 1 thread per process)"
    body = (
        f"GAD adversarial steps, global batch {BATCH} prompts x {GROUP} samples, "
        f"{MAX_NEW} new tokens, tiny Qwen2 ({MODEL['layers']} layers, hidden "
        f"{MODEL['hidden']}), on {device}; {args.steps} steps per row, the first two "
        f"dropped.\n\n{body}\n\nEach process runs FSDP2 (G, D and the reference sharded "
        "over the processes): every forward all-gathers each layer and every backward "
        "reduce-scatters its gradients, so on a model this small the step is latency-bound "
        "by those collectives: a profile of rank 0 shows about 0.15 s a step waiting in them "
        "(each layer's all-gather waits for the slower rank, whose answers were longer), "
        "where the replaced scheme waited once per update. "
        "The hand-written data parallelism FSDP2 replaced (a full model copy per process, "
        "one bucketed all-reduce per update) measured 1.55x here on 2026-11-30: FSDP2 buys "
        "the memory that lets 7B-14B students train at all, at this cost on a tiny model. "
        "That the update is the same is tested (tests/trainer/test_distributed.py)."
    )
    print(body)
    if not args.no_write:
        write_section("data_parallel", "Data-parallel training: k processes vs one", body)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
