"""GPU smoke benchmark, one rank of `torchrun` (bench/gpu_smoke.sh launches it on every
visible GPU): FSDP2 GAD and SeqKD steps on random-init models of Qwen2.5 shapes, built
from config values (trainer.plan.KNOWN), nothing downloaded.

For each shape it reports, from rank 0:
- step time and tokens/s of an adversarial GAD step (rollout, D scoring, D and G updates);
- update-phase MFU: SeqKD steps (SFT updates only), 6 x params x tokens per second over
  the GPUs' peak (PEAK_TFLOPS, default 989: H100/H200 dense bf16);
- rollout tokens/s (sampled tokens over the rollout's wall time);
- peak GPU memory against the planner's per-GPU estimate (python -m trainer plan);
- with vLLM installed and ROLLOUT=vllm: the largest gap between vLLM's log-probs of the
  sampled tokens and the trainer's, after a weight sync.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer import distributed  # noqa: E402
from trainer.config import from_dict, to_dict  # noqa: E402
from trainer.plan import KNOWN, Shape, estimate  # noqa: E402

SHAPES = {"0.5b": "Qwen/Qwen2.5-0.5B-Instruct", "1.5b": "Qwen/Qwen2.5-1.5B-Instruct",
          "7b": "Qwen/Qwen2.5-7B-Instruct"}  # fmt: skip
TINY = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096,
        "tie_word_embeddings": True}  # fmt: skip


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def build(work: Path, name: str, values: dict) -> Path:
    """A random-init Qwen2 model of that shape with a trained tiny tokenizer (rank 0)."""
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


def phase(cfg, shape, world, gpu_gb, steps, batch, kind, params, peak) -> dict:
    """Time ``steps`` steps of one phase (after the planner says it fits); its peak GPU
    memory against the planner's estimate."""
    from trainer.models import response_logprobs
    from trainer.recipes.gad import adversarial_step, start_adversarial_stage
    from trainer.recipes.seqkd import seqkd_step
    from trainer.recipes.setup import build_run
    from trainer.sequences import pack

    planned = estimate(cfg, shape, 1, world, gpu_gb or 80.0)
    out: dict = {f"{kind}_planned_gb": planned.peak_gb}
    if not planned.fits:
        out[f"{kind}_skipped"] = f"does not fit: {planned.advice}"
        return out
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    run, _ = build_run(cfg, None, with_disc=kind == "gad")
    if kind == "gad":
        start_adversarial_stage(run)
    times, tokens, rollout_s, sampled = [], [], [], []
    for i in range(steps):
        b = distributed.share(run.examples[i * batch : (i + 1) * batch])
        sync()
        t0 = time.perf_counter()
        rec = adversarial_step(run, b) if kind == "gad" else seqkd_step(run, b)
        sync()
        times.append(time.perf_counter() - t0)
        run.step += 1
        local = sum(len(e.prompt_ids) + len(e.teacher_ids or []) for e in b)
        tokens.append(distributed.all_sum(torch.tensor(float(rec.get("_tokens", local)))).item())
        if kind == "gad":
            rollout_s.append(rec["perf/rollout_s"])
            sampled.append(rec["len/student_mean"] * batch * cfg.group_size)
    k = slice(1, None) if steps > 1 else slice(None)  # the first step pays warm-up costs
    out[f"{kind}_step_s"] = statistics.median(times[k])
    out[f"{kind}_tokens_per_s"] = sum(tokens[k]) / sum(times[k])
    if kind == "sft":  # 6 x params FLOPs a token (forward + backward), attention left out
        out["update_mfu"] = 6 * params * sum(tokens[k]) / sum(times[k]) / (peak * world)
    else:
        out["rollout_tokens_per_s"] = sum(sampled[k]) / sum(rollout_s[k])
    if torch.cuda.is_available():
        out[f"{kind}_peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
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


def main() -> None:

    tiny = os.environ.get("SMOKE_TINY") == "1"
    steps, world = env_int("STEPS", 3), env_int("WORLD_SIZE", 1)
    batch = env_int("BATCH", 2 * world if tiny else 8 * world)
    group = env_int("GROUP", 2 if tiny else 8)
    resp = env_int("RESPONSE_TOKENS", 16 if tiny else 256)
    peak = float(os.environ.get("PEAK_TFLOPS", 989)) * 1e12
    gpu_gb = (
        torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0
    )
    work = Path(os.environ.get("SMOKE_DIR", "/tmp/gpu-smoke"))
    work.mkdir(parents=True, exist_ok=True)
    shapes = {"tiny": TINY} if tiny else {
        k: KNOWN[SHAPES[k]] for k in os.environ.get("SHAPES", "0.5b,1.5b,7b").split(",")
    }  # fmt: skip
    data = prompts(work, 4 * batch * steps)
    rows = []
    for label, values in shapes.items():
        model = build(work, label, values)
        shape = Shape.from_config(values)
        params = shape.params()
        common = {
            "student": str(model), "train_file": str(data), "batch_size": batch,
            "group_size": group, "max_prompt_tokens": 256, "max_response_tokens": resp,
            "save_every": 10**6, "sample_every": 10**6, "warmup": {"epochs": 0},
            "gradient_checkpointing": not tiny, "micro_batch_tokens": 8192,
            "rollout": {"backend": os.environ.get("ROLLOUT", "hf"),
                        "generation_batch_size": batch * group // world},
            "resume": "never",
        }  # fmt: skip
        row: dict = {"shape": label, "params_b": params / 1e9, "gpus": world}
        # Update phase: SeqKD steps are SFT updates alone (full fine-tune).
        cfg = from_dict(common | {"method": "seqkd", "output_dir": str(work / f"{label}-sft")})
        row |= phase(cfg, shape, world, gpu_gb, steps, batch, "sft", params, peak)
        # The adversarial step: rollout, scoring, D and G updates; LoRA where the full
        # fine-tune of G and D does not fit these GPUs (the planner decides).
        cfg = from_dict(common | {"method": "gad", "output_dir": str(work / f"{label}-gad")})
        if not estimate(cfg, shape, 1, world, gpu_gb or 80.0).fits:
            cfg = from_dict(to_dict(cfg) | {"lora": {"r": 16, "alpha": 32}})
            row["gad_lora"] = True
        row |= phase(cfg, shape, world, gpu_gb, steps, batch, "gad", params, peak)
        rows.append(row)
    if distributed.world().main:
        dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        # What ran: one process trains unsharded (no FSDP2 at WORLD_SIZE=1).
        ran = f"FSDP2 on {world} x {dev}" if world > 1 else f"one process (no FSDP2) on {dev}"
        print(f"\n{ran}; {batch} prompts x {group} samples, <= {resp} tokens")
        head = ["shape", "params", "SFT step", "update MFU", "SFT peak / planned GB",
                "GAD step", "GAD tokens/s", "rollout tok/s", "GAD peak / planned GB",
                "vLLM logp gap"]  # fmt: skip
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in rows:
            print("| " + " | ".join(_cells(r)) + " |")
        (work / "results.json").write_text(json.dumps(rows, indent=2))


def _cells(r: dict) -> list[str]:
    def num(key: str, fmt: str) -> str:
        return format(r[key], fmt) if key in r else "-"

    def mem(kind: str) -> str:
        if f"{kind}_skipped" in r:
            return f"skipped ({r[f'{kind}_planned_gb']:.0f} GB planned: {r[f'{kind}_skipped']})"
        return f"{num(f'{kind}_peak_gb', '.1f')} / {r[f'{kind}_planned_gb']:.1f}"

    gad = " (LoRA)" if r.get("gad_lora") else ""
    mfu = f"{100 * r['update_mfu']:.1f}%" if "update_mfu" in r else "-"
    return [
        r["shape"], f"{r['params_b']:.2f}B", num("sft_step_s", ".2f"), mfu, mem("sft"),
        num("gad_step_s", ".2f") + gad, num("gad_tokens_per_s", ",.0f"),
        num("rollout_tokens_per_s", ",.0f"), mem("gad"), num("vllm_logprob_gap", ".3g"),
    ]  # fmt: skip


if __name__ == "__main__":
    distributed.init("auto")
    try:
        main()
    finally:
        distributed.shutdown()
