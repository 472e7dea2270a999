"""Data parallelism on CPU (gloo): two processes train exactly what one process trains.

With the rollouts fixed (a deterministic stand-in for sampling, the only thing that
legitimately differs between ranks), a 2-process GAD run must end with the same G and D
weights and log the same metrics as a 1-process run of the same config: the sharded
losses, the global token counts and the gradient sum are then exactly the math of one
process. A run through `torchrun` with real sampling must finish, write each step once
and leave a loadable checkpoint.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.trainer.conftest import write_prompts
from tests.trainer.test_recipes import make_cfg, read_jsonl

pytestmark = pytest.mark.slow


def fixed_rollout(prompts: list[list[int]], n: int, greedy: bool = False):
    """Sample i of a prompt: a few token ids derived from the prompt (no randomness)."""
    from trainer.rollout import Rollout

    responses, terminated = [], []
    for p in prompts:
        for i in range(n):
            length = 2 + (sum(p) + i) % 4
            responses.append([(p[-1] + 7 * i + k) % 200 + 3 for k in range(length)])
            terminated.append(length < 5)
    return Rollout(responses, terminated)


def _worker(rank: int, world: int, port: int, cfg_dict: dict) -> None:
    """One rank of a run with fixed rollouts (torch.multiprocessing.spawn target)."""
    os.environ.update(
        {
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    from trainer import distributed
    from trainer.config import from_dict
    from trainer.recipes import gad
    from trainer.rollout.hf import HFRollout

    HFRollout.sample = lambda self, prompts, n, greedy=False: fixed_rollout(prompts, n)
    try:
        gad.run_gad(from_dict(cfg_dict))
    finally:
        distributed.shutdown()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(cfg, world: int) -> None:
    from trainer.config import to_dict

    # Both runs in child processes: the stand-in sampler must not leak into other tests.
    torch.multiprocessing.spawn(
        _worker, args=(world, _free_port(), to_dict(cfg)), nprocs=world, join=True
    )


def _weights(out: Path) -> dict[str, torch.Tensor]:
    last = sorted((out / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:]))[-1]
    weights = load_file(last / "student" / "model.safetensors")
    disc = last / "discriminator"
    for f in disc.glob("*.safetensors"):  # the backbone and the head
        weights |= {f"d/{f.name}/{k}": v for k, v in load_file(f).items()}
    return weights


def test_two_processes_train_exactly_what_one_does(tmp_path, tiny_model):
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=8)
    common = {
        "batch_size": 4,
        "group_size": 3,
        "micro_batch_tokens": 64,  # several micro-batches per update
        "warmup__epochs": 1,
        "gad__epochs": 2,
        "gad__kl_coef": 0.1,
    }
    one = make_cfg(tmp_path / "one", tiny_model, prompts, **common)
    two = make_cfg(tmp_path / "two", tiny_model, prompts, **common)
    _train(one, 1)
    _train(two, 2)

    a, b = _weights(tmp_path / "one" / "run"), _weights(tmp_path / "two" / "run")
    assert a.keys() == b.keys() and any(k.startswith("d/") for k in a)
    # D's head bias has a zero gradient under the Bradley-Terry loss (shift-invariant):
    # Adam turns its rounding noise into lr-sized steps, so only its bound is exact.
    bias = "d/score_head.safetensors/bias"
    assert a.pop(bias).abs().max() <= 6 * 1e-3 and b.pop(bias).abs().max() <= 6 * 1e-3
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)

    m1 = read_jsonl(tmp_path / "one" / "run" / "metrics.jsonl")
    m2 = read_jsonl(tmp_path / "two" / "run" / "metrics.jsonl")
    assert [m["step"] for m in m2] == [m["step"] for m in m1] == list(range(1, 7))
    for r1, r2 in zip(m1, m2, strict=True):
        for key in ("d/loss", "d/acc", "g/sft_loss", "g/pg_loss", "g/kl", "reward/mean",
                    "reward/std", "len/student_mean", "len/student_max", "len/teacher_mean",
                    "g/grad_norm", "d/grad_norm"):  # fmt: skip
            if key in r1:
                assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-6), (r1["step"], key)
    # Only rank 0 writes: one samples record set per step, one data_stats file.
    assert (tmp_path / "two" / "run" / "data_stats.json").exists()
    steps = [json.loads(line)["step"] for line in open(tmp_path / "two" / "run" / "samples.jsonl")]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) * 2


def test_torchrun_with_real_sampling_finishes_and_a_bad_batch_size_is_named(tmp_path, tiny_model):
    from trainer.config import save_config

    prompts = write_prompts(tmp_path / "prompts.jsonl", n=8)
    cfg = make_cfg(tmp_path, tiny_model, prompts, batch_size=4, gad__epochs=1, save_every=2)
    save_config(cfg, tmp_path / "cfg.yaml")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    argv += ["--master-port", str(_free_port()), "-m", "trainer", "run"]
    done = subprocess.run(
        [*argv, "--config", str(tmp_path / "cfg.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = tmp_path / "run"
    assert [m["step"] for m in read_jsonl(out / "metrics.jsonl")] == [1, 2, 3, 4]
    assert "data parallel: 2 processes, 2 prompts each per step" in done.stderr
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out / "final").num_parameters() > 0

    bad = yaml.safe_load((tmp_path / "cfg.yaml").read_text()) | {"batch_size": 3}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    done = subprocess.run(
        [*argv, "--config", str(tmp_path / "bad.yaml")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode != 0
    assert "batch_size: 3 prompts do not split over 2 processes" in done.stderr
    assert "Traceback" not in done.stderr.split("batch_size: 3")[0][-200:]


def test_a_short_last_batch_is_cut_to_a_multiple_of_the_processes(tmp_path, tiny_model):
    from trainer import distributed
    from trainer.recipes.common import Run

    run = Run.__new__(Run)
    run.cfg = make_cfg(tmp_path, tiny_model, tmp_path / "p.jsonl", batch_size=4)
    run.examples = list(range(11))  # 2 full batches + 3
    try:
        for size, kept, steps in ((1, 11, 3), (2, 10, 3), (4, 8, 2), (3, 11, 3)):
            distributed._world = distributed.World(0, size, 0)
            assert (run.epoch_examples(), run.steps_per_epoch()) == (kept, steps), size
        # A one-process checkpoint saved before the short third batch, resumed on 4
        # processes (2 batches an epoch): that epoch is over, the next one starts.
        from trainer.recipes.common import Position, restore

        distributed._world = distributed.World(0, 4, 0)
        run.plan = [("warmup", 2), ("gad", 1)]
        run.g_opt, run.d_opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1), None
        state = {"step": 2, "position": {"stage": 0, "epoch": 0, "batch": 2}}
        restore(run, state | {"g_opt": run.g_opt.state_dict()})
        assert run.pos == Position(stage=0, epoch=1, batch=0)
        restore(
            run,
            state
            | {"position": {"stage": 0, "epoch": 1, "batch": 2}, "g_opt": run.g_opt.state_dict()},
        )
        assert run.pos == Position(stage=1, epoch=0, batch=0)
    finally:
        distributed._world = distributed.World()


def test_a_cancel_under_torchrun_stops_every_rank_after_a_save(tmp_path, tiny_model):
    """What the worker's cancel does to a multi-GPU job: SIGTERM to the ranks, which
    finish the step together, save, and exit 0; torchrun then exits 0 too."""
    import time

    from trainer.config import save_config
    from worker.runner import TrainerProcess, trainer_argv

    prompts = write_prompts(tmp_path / "prompts.jsonl", n=8)
    cfg = make_cfg(tmp_path, tiny_model, prompts, batch_size=4, gad__epochs=500, save_every=1000)
    save_config(cfg, tmp_path / "cfg.yaml")
    argv = trainer_argv(tmp_path / "cfg.yaml", gpus=2)
    assert argv[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = TrainerProcess(argv, tmp_path, tmp_path / "log.txt", env, launcher=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
        assert time.monotonic() < deadline, "no training steps"
        time.sleep(0.3)
    proc.terminate()
    while proc.poll() is None:
        assert not proc.kill_if_overdue(120), "the ranks did not stop"
        time.sleep(0.3)
    log = (tmp_path / "log.txt").read_text()
    assert proc.poll() == 0, log[-3000:]
    last = read_jsonl(metrics)[-1]
    assert last["event"] == "stopped"
    saved = [int(p.name[5:]) for p in (tmp_path / "run" / "checkpoints").glob("step-*")]
    assert last["step"] in saved and last["step"] < cfg.gad.epochs
    assert "SignalException" not in log
