"""Training-step time and peak memory: our GAD / SeqKD steps against TRL's trainers.

Same tiny model, prompts, group size and lengths for both sides:
- GAD step (sample N, score with D, update D, update G) vs TRL's GRPOTrainer step whose
  reward model is the same discriminator, frozen; our step with `disc.update: frozen`
  is the like-for-like row (no D update), the on-policy row shows what D's update costs.
- SeqKD step (SFT on teacher answers) vs TRL's SFTTrainer step (completion-only loss).

Each case runs in its own process so its peak memory is its own. `trl` is a benchmark-only
dependency (`pip install trl`). Not a test.

    .venv/bin/python bench/train_step.py [--steps 8] [--skip 2] [--rounds 2] [--no-write]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import step_config, table, write_section  # noqa: E402

PROMPTS, BATCH, GROUP, MAX_NEW, MAX_PROMPT = 16, 4, 4, 32, 64
MODEL = {"layers": 4, "hidden": 128, "heads": 4, "vocab": 1024}
CASES = ["ours_gad", "ours_gad_frozen", "trl_grpo", "ours_seqkd", "trl_sft"]
PEERS = {"ours_gad": "trl_grpo", "ours_gad_frozen": "trl_grpo", "ours_seqkd": "trl_sft"}


# ---------------------------------------------------------------------------- one case


def _prompt_records(n: int) -> list[dict]:
    from trainer.tiny import builtin_corpus

    lines = builtin_corpus(2 * n, seed=1)
    return [
        {"id": str(i), "prompt": lines[2 * i], "teacher_response": lines[2 * i + 1]}
        for i in range(n)
    ]


def _cfg(model: str, prompts: str, out: str, method: str, disc_update: str = "on_policy"):
    from trainer.config import from_dict

    more = {"method": method, "disc": {"update": disc_update}}
    return from_dict(step_config(model, prompts, out, BATCH, GROUP, MAX_NEW, MAX_PROMPT, **more))


def run_ours(case: str, model: str, prompts: str, steps: int) -> list[float]:
    from trainer.recipes.gad import adversarial_step, start_adversarial_stage
    from trainer.recipes.seqkd import seqkd_step
    from trainer.recipes.setup import build_run

    method = "seqkd" if case == "ours_seqkd" else "gad"
    update = "frozen" if case == "ours_gad_frozen" else "on_policy"
    cfg = _cfg(model, prompts, tempfile.mkdtemp(), method, update)
    run, _ = build_run(cfg, None, with_disc=method == "gad")
    if method == "gad":
        start_adversarial_stage(run)
    step = seqkd_step if method == "seqkd" else adversarial_step
    times = []
    for i in range(steps):
        batch = [run.examples[(i * BATCH + j) % len(run.examples)] for j in range(BATCH)]
        t0 = time.perf_counter()
        step(run, batch)
        _sync()
        times.append(time.perf_counter() - t0)
        run.step += 1
    return times


class _StepTimer:
    """A transformers TrainerCallback recording wall time per optimizer step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Timer(TrainerCallback):
            times: list[float] = []

            def on_step_begin(self, args, state, control, **kw):
                self.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                _sync()
                self.times.append(time.perf_counter() - self.t0)

        return Timer()


def _common_args(out: str, steps: int, lr: float) -> dict:
    import torch

    return {
        "output_dir": out,
        "max_steps": steps,
        "learning_rate": lr,
        "lr_scheduler_type": "constant",
        "weight_decay": 0.01,
        "max_grad_norm": 0.2,
        "gradient_checkpointing": False,
        "logging_steps": 10**6,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": not torch.cuda.is_available(),
        "bf16": torch.cuda.is_available(),
        "dataloader_num_workers": 0,
        "seed": 0,
    }


def _disc_reward(model: str):
    """The discriminator as a frozen reward function: score [prompt, completion] at its
    last real token, exactly as the GAD step scores samples."""
    import torch

    from trainer.discriminator import build_discriminator
    from trainer.models import load_tokenizer, resolve_device
    from trainer.sequences import pack

    device = resolve_device("auto")
    tok = load_tokenizer(model)
    disc = build_discriminator(model, device).eval().requires_grad_(False)

    def reward(prompts, completions, completion_ids, **kw):
        texts = [
            tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts
        ]
        prompt_ids = tok(texts, add_special_tokens=False)["input_ids"]
        responses = [list(c) or [tok.eos_token_id] for c in completion_ids]
        with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
            scores = disc(pack(prompt_ids, responses, tok.pad_token_id).to(device))
        return scores.float().cpu().tolist()

    return reward


def run_trl(case: str, model: str, prompts: str, steps: int) -> list[float]:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    records = [json.loads(line) for line in Path(prompts).read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(model)
    student = AutoModelForCausalLM.from_pretrained(model)
    timer = _StepTimer()
    out = tempfile.mkdtemp()
    if case == "trl_grpo":
        from trl import GRPOConfig, GRPOTrainer

        data = Dataset.from_list(
            [{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in records]
        )
        args = GRPOConfig(
            **_common_args(out, steps, 1e-6),
            per_device_train_batch_size=BATCH * GROUP,
            num_generations=GROUP,
            steps_per_generation=1,
            max_completion_length=MAX_NEW,
            temperature=0.8,
            top_p=1.0,
            beta=0.001,
            epsilon=0.2,
            loss_type="dapo",  # token-mean over the batch, like GAD's policy loss
            disable_dropout=True,
        )
        trainer = GRPOTrainer(
            model=student,
            reward_funcs=_disc_reward(model),
            args=args,
            train_dataset=data,
            processing_class=tok,
            callbacks=[timer],
        )
    else:
        from trl import SFTConfig, SFTTrainer

        data = Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": r["prompt"]}],
                    "completion": [{"role": "assistant", "content": r["teacher_response"]}],
                }
                for r in records
            ]
        )
        args = SFTConfig(
            **_common_args(out, steps, 5e-6),
            per_device_train_batch_size=BATCH,
            max_length=MAX_PROMPT + MAX_NEW,
            completion_only_loss=True,
            packing=False,
        )
        trainer = SFTTrainer(
            model=student, args=args, train_dataset=data, processing_class=tok, callbacks=[timer]
        )
    trainer.train()
    return list(timer.times)


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def one_case(case: str, model: str, prompts: str, steps: int, out_json: str) -> None:
    import torch

    torch.manual_seed(0)
    runner = run_trl if case.startswith("trl_") else run_ours
    times = runner(case, model, prompts, steps)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    Path(out_json).write_text(json.dumps({"times": times, "rss": peak_rss, "gpu": peak_gpu}))


# ---------------------------------------------------------------------------- driver


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--skip", type=int, default=2, help="first steps left out (warm-up)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--prompts", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        one_case(args.case, args.model, args.prompts, args.steps, args.json)
        return

    from trainer.tiny import build_tiny

    work = Path(tempfile.mkdtemp(prefix="bench-train-step-"))
    model = str(build_tiny(work / "model", **MODEL))
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in _prompt_records(PROMPTS)))
    # One intra-op thread per case: on a small shared CPU, two OpenMP threads spin against
    # other processes and step times swing by 5x; on GPU this changes nothing.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["OMP_NUM_THREADS"] = env.get("BENCH_THREADS", "1")
    # Rounds in alternating order: load from other processes on the machine lands on
    # every case rather than on whichever ran during it.
    results: dict[str, dict] = {}
    for r in range(args.rounds):
        for case in CASES if r % 2 == 0 else CASES[::-1]:
            out = work / f"{case}-{r}.json"
            cmd = [sys.executable, __file__, "--case", case, "--model", model]
            cmd += ["--prompts", str(prompts), "--steps", str(args.steps), "--json", str(out)]
            subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
            got = json.loads(out.read_text())
            prev = results.setdefault(case, {"times": [], "rss": 0.0, "gpu": None})
            prev["times"] += got["times"][args.skip :]
            prev["rss"] = max(prev["rss"], got["rss"])
            prev["gpu"] = max(prev["gpu"] or 0.0, got["gpu"]) if got["gpu"] else None
            print(f"round {r} {case}: median {statistics.median(got['times'][args.skip :]):.3f}s")
    body = report(results, args.skip, args.rounds)
    print(body)
    if not args.no_write:
        write_section("train_step", "Training step: GAD and SeqKD vs TRL", body)


def report(results: dict, skip: int, rounds: int) -> str:
    import torch

    med = {c: statistics.median(r["times"]) for c, r in results.items()}
    best = {c: min(r["times"]) for c, r in results.items()}
    rows = []
    for case in CASES:
        peer = PEERS.get(case)
        ratio = f"{med[case] / med[peer]:.2f}x {peer}" if peer else ""
        gpu = results[case]["gpu"]
        mem = f"{results[case]['rss']:.0f} MiB RSS" + (f", {gpu:.0f} MiB GPU" if gpu else "")
        best_ratio = f"{best[case] / best[peer]:.2f}x" if peer else ""
        rows.append(
            [case, f"{med[case] * 1000:.0f}", ratio, f"{best[case] * 1000:.0f}", best_ratio, mem]
        )
    import trl

    setup = (
        f"Tiny Qwen2 ({MODEL['layers']} layers, hidden {MODEL['hidden']}, vocab {MODEL['vocab']}), "
        f"{BATCH} prompts x {GROUP} samples, up to {MAX_NEW} new tokens, fp32 on "
        f"{'cuda' if torch.cuda.is_available() else 'cpu (1 thread)'}, torch {torch.__version__}, "
        f"trl {trl.__version__}. {rounds} rounds per case in alternating order; median and "
        f"best of the steps after the first {skip} of each round. "
        "Ratio < 1: ours is faster. TRL's GRPO reward is our discriminator, frozen; "
        "`ours_gad_frozen` is the like-for-like row, `ours_gad` adds D's own update."
    )
    headers = ["case", "median step ms", "ratio", "best step ms", "best ratio", "peak memory"]
    return setup + "\n\n" + table(headers, rows)


if __name__ == "__main__":
    main()
