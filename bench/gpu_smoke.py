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
from trainer.config import from_dict  # noqa: E402
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


def main() -> None:
    from trainer.models import response_logprobs
    from trainer.recipes.gad import adversarial_step, start_adversarial_stage
    from trainer.recipes.seqkd import seqkd_step
    from trainer.recipes.setup import build_run
    from trainer.sequences import pack

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
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        # Update phase: SeqKD steps are SFT updates alone.
        cfg = from_dict(common | {"method": "seqkd", "output_dir": str(work / f"{label}-sft")})
        run, _ = build_run(cfg, None, with_disc=False)
        sft_times, sft_tokens = [], []
        for i in range(steps):
            b = distributed.share(run.examples[i * batch : (i + 1) * batch])
            sync()
            t0 = time.perf_counter()
            seqkd_step(run, b)
            sync()
            sft_times.append(time.perf_counter() - t0)
            run.step += 1
            local = sum(len(e.prompt_ids) + len(e.teacher_ids or []) for e in b)
            sft_tokens.append(distributed.all_sum(torch.tensor(float(local))).item())
        del run
        # The adversarial step: rollout, scoring, D and G updates.
        cfg = from_dict(common | {"method": "gad", "output_dir": str(work / f"{label}-gad")})
        run, _ = build_run(cfg, None, with_disc=True)
        start_adversarial_stage(run)
        times, tokens, rollout_s, sampled = [], [], [], []
        for i in range(steps):
            b = distributed.share(run.examples[i * batch : (i + 1) * batch])
            sync()
            t0 = time.perf_counter()
            rec = adversarial_step(run, b)
            sync()
            times.append(time.perf_counter() - t0)
            run.step += 1
            tokens.append(distributed.all_sum(torch.tensor(float(rec["_tokens"]))).item())
            rollout_s.append(rec["perf/rollout_s"])
            sampled.append(rec["len/student_mean"] * batch * group)
        gap = float("nan")
        if cfg.rollout.backend == "vllm":
            out = run.rollout.sample([e.prompt_ids for e in b], 1)
            with torch.no_grad():
                mb = pack([e.prompt_ids for e in b], out.responses, run.tokenizer.pad_token_id)
                logp, _ = response_logprobs(run.student, mb.to(run.device))
            gap = max(
                abs(float(logp[r, t]) - lp)
                for r, lps in enumerate(out.logprobs or [])
                for t, lp in enumerate(lps)
            )
        mem = (
            torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        )
        planned = estimate(cfg, shape, 1, world, gpu_gb or 80.0).peak_gb
        k = slice(1, None) if steps > 1 else slice(None)  # the first step pays warm-up costs
        mfu = 6 * params * sum(sft_tokens[k]) / sum(sft_times[k]) / (peak * world)
        rows.append({
            "shape": label, "params_b": params / 1e9, "gpus": world,
            "gad_step_s": statistics.median(times[k]),
            "tokens_per_s": sum(tokens[k]) / sum(times[k]),
            "update_mfu": mfu, "rollout_tokens_per_s": sum(sampled[k]) / sum(rollout_s[k]),
            "peak_gb": mem, "planned_gb": planned, "vllm_logprob_gap": gap,
        })  # fmt: skip
        del run
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    if distributed.world().main:
        dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(f"\nFSDP2 on {world} x {dev}; {batch} prompts x {group} samples, <= {resp} tokens")
        print(
            "| shape | params | GAD step | tokens/s | update MFU | rollout tok/s | peak GB | planned GB | vLLM logp gap |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['shape']} | {r['params_b']:.2f}B | {r['gad_step_s']:.2f} s | "
                  f"{r['tokens_per_s']:,.0f} | {100 * r['update_mfu']:.1f}% | "
                  f"{r['rollout_tokens_per_s']:,.0f} | {r['peak_gb']:.1f} | {r['planned_gb']:.1f} | "
                  f"{r['vllm_logprob_gap']:.3g} |")  # fmt: skip
        (work / "results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    distributed.init("auto")
    try:
        main()
    finally:
        distributed.shutdown()
