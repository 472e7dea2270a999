"""GPU smoke benchmark (`bash bench/gpu_smoke.sh` runs it): SeqKD and GAD steps on
random-init models of Qwen2.5 shapes, built from config values (trainer.plan.KNOWN,
nothing downloaded), on every visible GPU.

One file, two roles:

- **The driver** (no arguments). It asks the planner which shapes fit the visible GPUs
  and how: on one 80 GB card, 0.5B and 1.5B fully fine-tuned and 7B with LoRA; a shape
  that fits in no way is listed with the planner's reason and never built. It runs each
  shape in its own process (torchrun over the GPUs, one plain process on one GPU) within
  what is left of the time budget (SMOKE_BUDGET_S, default 480 s), so that running out
  of memory or time loses that shape's row only. It prints the table and writes it to
  $OUT/results.md, beside each shape's $OUT/<shape>.json and $OUT/<shape>.log.
- **One shape** (`--shape LABEL --sft full|lora|skip --gad full|lora|skip`). Rank 0
  rewrites $OUT/<shape>.json after each phase, so an out-of-memory GAD phase keeps the
  SeqKD numbers.

What a row measures (the first step of each phase is warm-up and is left out):
- step time and tokens/s of SeqKD steps (SFT updates alone) and of GAD steps (rollout,
  D's scoring, D's and G's updates); rollout tokens/s (sampled tokens over the rollout's
  wall time);
- model FLOP/s per GPU and MFU of the SeqKD update, as PaLM defines them (Chowdhery et
  al. 2022, appendix B): per token, 6 x the parameters that take part in matmuls (4 x
  with LoRA, whose backward skips the frozen weights' gradients), plus 12 x layers x
  heads x head_dim x the sequence length for attention. Activation recomputation is
  not counted (that would be hardware FLOPs), nor is the embedding lookup, and the LM head
  is counted only at the positions the trainer projects (the answer's tokens, not the
  prompt's). MFU is that over the GPUs' dense bf16 peak (PEAK_TFLOPS; H100 and H200: 989,
  A100: 312). It is shown only on the bf16 path (CUDA); on CPU the model FLOP/s are shown;
- memory: torch's peak reserved memory (`torch.cuda.max_memory_reserved`, the allocator's
  whole pool, not just live tensors) plus what the process holds outside that pool at
  the phase's end (nvidia-smi's figure for this process, else cudaMemGetInfo: the CUDA
  context, NCCL's buffers, vLLM's own allocations), against the planner's per-GPU peak;
- with ROLLOUT=vllm (vLLM installed): the largest gap between vLLM's log-probs of the
  sampled tokens and the trainer's, after a weight sync.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer import distributed  # noqa: E402
from trainer.config import TrainConfig, from_dict  # noqa: E402
from trainer.plan import KNOWN, Shape, estimate  # noqa: E402

GIB = 2**30
SHAPES = {"0.5b": "Qwen/Qwen2.5-0.5B-Instruct", "1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
          "7b": "Qwen/Qwen2.5-7B-Instruct"}  # fmt: skip
TINY = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096,
        "tie_word_embeddings": True}  # fmt: skip
PEAKS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0}  # TFLOP/s
LORA = {"r": 16, "alpha": 32}
RESERVE_S = 10  # of the budget, kept for the table


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def tiny() -> bool:
    return os.environ.get("SMOKE_TINY") == "1"


def out_dir() -> Path:
    path = Path(os.environ.get("OUT") or "/tmp/gpu-smoke/out")
    path.mkdir(parents=True, exist_ok=True)
    return path


def settings(world: int) -> dict[str, int]:
    small = tiny()
    batch = env_int("BATCH", 2 * world if small else 8 * world)
    return {
        "steps": env_int("STEPS", 3),
        "batch": batch,
        "group": env_int("GROUP", 2 if small else 8),
        "response": env_int("RESPONSE_TOKENS", 16 if small else 256),
    }


def config(
    student: str, method: str, how: str, world: int, output_dir: str, data: str = "prompts.jsonl"
) -> TrainConfig:
    s = settings(world)
    data: dict[str, Any] = {
        "student": student, "train_file": data, "method": method,
        "output_dir": output_dir, "batch_size": s["batch"], "group_size": s["group"],
        "max_prompt_tokens": 256, "max_response_tokens": s["response"],
        "save_every": 10**6, "sample_every": 10**6, "warmup": {"epochs": 0},
        "gradient_checkpointing": not tiny(), "micro_batch_tokens": 8192,
        "rollout": {"backend": os.environ.get("ROLLOUT", "hf"),
                    "generation_batch_size": s["batch"] * s["group"] // world},
        "resume": "never",
    }  # fmt: skip
    if how == "lora":
        data["lora"] = LORA
    return from_dict(data)


# ------------------------------------------------------------------------------------ driver


def choose(gpus: int, gpu_gb: float) -> list[dict[str, Any]]:
    """Each shape with how its SeqKD and GAD phases run on these GPUs: fully fine-tuned
    where the planner says that fits, else LoRA, else skipped with the planner's reason."""
    if tiny():
        return [{"shape": "tiny", "sft": "full", "gad": "full"}]
    labels = os.environ.get("SHAPES", ",".join(SHAPES)).split(",")
    rows = []
    for label in labels:
        shape = Shape.from_config(KNOWN[SHAPES[label]])
        row: dict[str, Any] = {"shape": label, "params_b": shape.params() / 1e9}
        for method, kind in (("seqkd", "sft"), ("gad", "gad")):
            row[kind] = "skip"
            for how in ("full", "lora"):
                plan = estimate(
                    config(SHAPES[label], method, how, gpus, "/unused"), shape, 1, gpus, gpu_gb
                )
                row[f"{kind}_planned_gb"] = plan.peak_gb
                if plan.fits:
                    row[kind] = how
                    break
            if row[kind] == "skip":
                row[f"{kind}_skipped"] = (
                    f"planned {row[f'{kind}_planned_gb']:.0f} GB a GPU with LoRA, "
                    f"{gpu_gb:.0f} GB there"
                )
        rows.append(row)
    return rows


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_shape(row: dict[str, Any], gpus: int, deadline: float, out: Path) -> dict[str, Any]:
    """One shape in its own process group, killed at the deadline; its row as the
    process wrote it, with the reason where it did not finish."""
    label = row["shape"]
    args = [str(ROOT / "bench" / "gpu_smoke.py"), "--shape", label, "--sft", row["sft"],
            "--gad", row["gad"]]  # fmt: skip
    procs = gpus if gpus > 1 else 1
    if procs > 1:
        argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc-per-node={procs}", *args]  # fmt: skip
    else:
        argv = [sys.executable, *args]
    (out / f"{label}.json").unlink(missing_ok=True)
    log = out / f"{label}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            why = None if rc == 0 else f"exited {rc}"
        except subprocess.TimeoutExpired:
            _kill(proc)
            why = "stopped: out of the time budget (SMOKE_BUDGET_S)"
    done = (
        json.loads((out / f"{label}.json").read_text()) if (out / f"{label}.json").exists() else {}
    )
    result = row | done
    if why:
        text = log.read_text(errors="replace")
        if "OutOfMemoryError" in text or "CUDA out of memory" in text:
            why = "out of GPU memory"
        result["error"] = f"{why}; see {label}.log"
    return result  # the driver writes it


def drive() -> int:
    gpus = torch.cuda.device_count()
    if gpus == 0 and not tiny():
        print("no GPU visible: use SMOKE_TINY=1 for the CPU path", file=sys.stderr)
        return 2
    start = time.monotonic()
    deadline = start + env_int("SMOKE_BUDGET_S", 480) - RESERVE_S
    out = out_dir()
    procs = gpus if gpus else 2  # CPU: 2 gloo processes, the FSDP2 path
    gpu_gb = torch.cuda.get_device_properties(0).total_memory / GIB if gpus else 0.0
    rows = []
    for row in choose(procs, gpu_gb):
        if row["sft"] == "skip" and row["gad"] == "skip":
            row["error"] = "not built: the planner says no way of running it fits"
        elif deadline - time.monotonic() < 30:
            row["error"] = "not run: out of the time budget (SMOKE_BUDGET_S)"
        else:
            print(f"[{time.monotonic() - start:5.0f} s] {row['shape']}", flush=True)
            row = run_shape(row, procs, deadline, out)
        (out / f"{row['shape']}.json").write_text(json.dumps(row, indent=2))
        rows.append(row)
    device = torch.cuda.get_device_name() if gpus else "cpu"
    s = settings(procs)
    # What ran: one process trains unsharded (no FSDP2 at WORLD_SIZE=1).
    ran = f"FSDP2 on {procs} x {device}" if procs > 1 else f"one process (no FSDP2) on {device}"
    text = (
        f"{ran}; {s['batch']} prompts x {s['group']} samples, <= {s['response']} tokens, "
        f"{s['steps']} steps a phase (the first left out); "
        f"{time.monotonic() - start:.0f} s in all\n\n" + table(rows) + "\n"
    )
    print("\n" + text)
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    return 0


def table(rows: list[dict[str, Any]]) -> str:
    head = ["shape", "params", "SeqKD step s", "model TFLOP/s a GPU", "MFU",
            "SeqKD GB measured / planned", "GAD step s", "GAD tokens/s", "rollout tok/s",
            "GAD GB measured / planned", "vLLM logp gap", "notes"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join(_cells(r)) + " |")
    return "\n".join(lines)


def _cells(r: dict[str, Any]) -> list[str]:
    def num(key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "-"

    def mem(kind: str) -> str:
        if r.get(kind) == "skip":
            return "skipped"
        planned = f"{r[f'{kind}_planned_gb']:.1f}" if f"{kind}_planned_gb" in r else "-"
        return f"{num(f'{kind}_measured_gb', '.1f')} / {planned}"

    def how(kind: str) -> str:
        return " (LoRA)" if r.get(kind) == "lora" else ""

    notes = [f"{k}: {r[f'{k}_skipped']}" for k in ("sft", "gad") if r.get(k) == "skip"]
    notes += [r["error"]] if "error" in r else []
    mfu = f"{100 * r['update_mfu']:.1f}%" if "update_mfu" in r else "-"
    return [
        r["shape"], _params(r.get("params_b")), num("sft_step_s", ".2f") + how("sft"),
        num("model_tflops", ".3g"), mfu, mem("sft"), num("gad_step_s", ".2f") + how("gad"),
        num("gad_tokens_per_s", ",.0f"), num("rollout_tokens_per_s", ",.0f"), mem("gad"),
        num("vllm_logprob_gap", ".3g"), "; ".join(notes).replace("|", "/"),
    ]  # fmt: skip


def _params(billions: float | None) -> str:
    if billions is None:
        return "-"
    return f"{billions:.2f}B" if billions >= 0.1 else f"{billions * 1e3:.1f}M"


# ---------------------------------------------------------------------------- one shape


def train_flops(shape: Shape, seqs: list[tuple[int, int]], lora: bool) -> float:
    """Model FLOPs of one forward and backward over sequences of (length, projected
    positions), as PaLM counts them (see the module docstring)."""
    per_param = 4 if lora else 6
    body = shape.layers * shape.layer_params()
    attention = 12 * shape.layers * shape.heads * shape.head_dim
    head = shape.hidden * shape.vocab
    return float(
        sum(
            per_param * body * n + attention * n * n + per_param * head * projected
            for n, projected in seqs
        )
    )


def peak_flops() -> float | None:
    """The GPUs' dense bf16 peak (FLOP/s), where known or given."""
    if "PEAK_TFLOPS" in os.environ:
        return float(os.environ["PEAK_TFLOPS"]) * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((t * 1e12 for key, t in PEAKS.items() if key in name), None)


def outside_torch_gb() -> float:
    """What this process holds on its GPU outside torch's allocator pool, now."""
    reserved = torch.cuda.memory_reserved()
    try:
        lines = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.splitlines()  # fmt: skip
        used = [float(b) * 2**20 for a, b in (x.split(",") for x in lines) if int(a) == os.getpid()]
        if used:
            return max(0.0, used[0] - reserved) / GIB
    except (OSError, subprocess.SubprocessError, ValueError):
        pass  # no nvidia-smi, or this process not listed (a container's PID namespace)
    free, total = torch.cuda.mem_get_info()
    return max(0.0, total - free - reserved) / GIB


def build(work: Path, name: str, values: dict[str, Any]) -> Path:
    """A random-init Qwen2 model of that shape with a trained tiny tokenizer (rank 0);
    kept in SMOKE_DIR for the next run."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from trainer.tiny import builtin_corpus, train_tokenizer

    out = work / name
    if distributed.world().main and not (out / "config.json").exists():
        tok = train_tokenizer(builtin_corpus(4000), 4096)
        config = Qwen2Config(
            **values, max_position_embeddings=32768, rms_norm_eps=1e-6,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )  # fmt: skip
        torch.manual_seed(0)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Qwen2ForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        del model
    distributed.barrier()
    return out


def prompts(work: Path, n: int) -> Path:
    from trainer.tiny import builtin_corpus

    path = work / "prompts.jsonl"
    if distributed.world().main:
        lines = builtin_corpus(2 * n + 16, seed=1)
        with open(path, "w") as f:
            for i in range(n):
                answer = " ".join(lines[j % len(lines)] for j in range(i, i + 12))
                f.write(json.dumps({"prompt": lines[i], "teacher_response": answer}) + "\n")
    distributed.barrier()
    return path


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def phase(cfg: TrainConfig, shape: Shape, kind: str, steps: int, batch: int) -> dict[str, Any]:
    """Time ``steps`` steps of one phase; its memory against the planner's estimate."""
    from trainer.models import resolve_dtype, response_logprobs
    from trainer.recipes.gad import adversarial_step, start_adversarial_stage
    from trainer.recipes.seqkd import seqkd_step
    from trainer.recipes.setup import build_run
    from trainer.sequences import pack

    world = distributed.world().size
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    run, _ = build_run(cfg, None, with_disc=kind == "gad")
    if kind == "gad":
        start_adversarial_stage(run)
    times, tokens, flops, rollout_s, sampled = [], [], [], [], []
    for i in range(steps):
        b = distributed.share(run.examples[i * batch : (i + 1) * batch])
        sync()
        t0 = time.perf_counter()
        rec = adversarial_step(run, b) if kind == "gad" else seqkd_step(run, b)
        sync()
        times.append(time.perf_counter() - t0)
        run.step += 1
        seqs = [(len(e.prompt_ids) + len(e.teacher_ids or []), len(e.teacher_ids or [])) for e in b]
        local = sum(n for n, _ in seqs)
        tokens.append(distributed.all_sum(torch.tensor(float(rec.get("_tokens", local)))).item())
        flops.append(
            distributed.all_sum(torch.tensor(train_flops(shape, seqs, cfg.lora is not None))).item()
        )
        if kind == "gad":
            rollout_s.append(rec["perf/rollout_s"])
            sampled.append(rec["len/student_mean"] * batch * cfg.group_size)
    k = slice(1, None) if steps > 1 else slice(None)  # the first step pays warm-up costs
    out: dict[str, Any] = {
        f"{kind}_step_s": statistics.median(times[k]),
        f"{kind}_tokens_per_s": sum(tokens[k]) / sum(times[k]),
    }
    if kind == "sft":
        achieved = sum(flops[k]) / sum(times[k]) / world
        out["model_tflops"] = achieved / 1e12
        peak = peak_flops()
        bf16 = resolve_dtype(cfg.dtype, run.device) == torch.bfloat16
        if peak and run.device.type == "cuda" and bf16:
            out["update_mfu"] = achieved / peak
    else:
        out["rollout_tokens_per_s"] = sum(sampled[k]) / sum(rollout_s[k])
    if torch.cuda.is_available():
        out[f"{kind}_reserved_gb"] = torch.cuda.max_memory_reserved() / GIB
        out[f"{kind}_allocated_gb"] = torch.cuda.max_memory_allocated() / GIB
        out[f"{kind}_outside_torch_gb"] = outside_torch_gb()
        out[f"{kind}_measured_gb"] = out[f"{kind}_reserved_gb"] + out[f"{kind}_outside_torch_gb"]
    if kind == "gad" and cfg.rollout.backend == "vllm":
        answers = run.rollout.sample([e.prompt_ids for e in b], 1)
        with torch.no_grad():
            mb = pack([e.prompt_ids for e in b], answers.responses, run.tokenizer.pad_token_id)
            logp, _ = response_logprobs(run.student, mb.to(run.device))
        out["vllm_logprob_gap"] = max(
            abs(float(logp[r, t]) - lp)
            for r, lps in enumerate(answers.logprobs or [])
            for t, lp in enumerate(lps)
        )
    del run
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def one_shape(label: str, ways: dict[str, str]) -> None:
    world = distributed.world().size
    s = settings(world)
    values = TINY if label == "tiny" else KNOWN[SHAPES[label]]
    shape = Shape.from_config(values)
    work = Path(os.environ.get("SMOKE_DIR") or "/tmp/gpu-smoke")
    work.mkdir(parents=True, exist_ok=True)
    data = prompts(work, 4 * s["batch"] * s["steps"])
    model = str(build(work, label, values))
    gpu_gb = (
        torch.cuda.get_device_properties(0).total_memory / GIB if torch.cuda.is_available() else 0
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"
    row: dict[str, Any] = {"shape": label, "params_b": shape.params() / 1e9, "gpus": world}
    row |= {kind: how for kind, how in ways.items()}
    path = out_dir() / f"{label}.json"
    for method, kind in (("seqkd", "sft"), ("gad", "gad")):
        if ways[kind] == "skip":
            continue
        cfg = config(model, method, ways[kind], world, str(work / f"{label}-{kind}"), str(data))
        row[f"{kind}_planned_gb"] = estimate(cfg, shape, 1, world, gpu_gb or 80.0, device).peak_gb
        row |= phase(cfg, shape, kind, s["steps"], s["batch"])
        if distributed.world().main:  # as each phase ends: an OOM later keeps this
            path.write_text(json.dumps(row, indent=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", help="run one shape (the driver runs each in a process)")
    for kind in ("sft", "gad"):
        parser.add_argument(f"--{kind}", choices=["full", "lora", "skip"], default="full")
    args = parser.parse_args()
    if args.shape is None:
        return drive()
    if args.shape not in SHAPES and args.shape != "tiny":
        parser.error(f"--shape: one of tiny, {', '.join(SHAPES)}")
    distributed.init("auto")
    try:
        one_shape(args.shape, {"sft": args.sft, "gad": args.gad})
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
