"""Data parallelism on CPU (gloo): two FSDP2 processes train exactly what one process trains.

Samples are drawn from per-prompt seeds (the step and the prompt's place in the global
batch), so a 2-process run samples the same answers as a 1-process run; with G, D and the
reference sharded by FSDP2 and each rank's losses scaled by its share of the global
batch, the runs must end with the same G and D weights and log the same metrics — for
GAD and SeqKD, full fine-tuning and LoRA. A run through `torchrun` must finish, write
each step once and leave a loadable checkpoint.
"""

from __future__ import annotations

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


def _worker(rank: int, world: int, port: int, cfg_dict: dict) -> None:
    """One rank of a run (torch.multiprocessing.spawn target)."""
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
    from trainer.recipes.gad import run_gad
    from trainer.recipes.seqkd import run_seqkd

    cfg = from_dict(cfg_dict)
    try:
        (run_gad if cfg.method == "gad" else run_seqkd)(cfg)
    finally:
        distributed.shutdown()
    distributed.end_process(0)  # as `python -m trainer` does under torchrun


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
    weights = {}
    for part in ("student", "student-adapter", "discriminator"):
        for f in (last / part).glob("*.safetensors"):  # weights, adapters, D's head
            weights |= {f"{part}/{f.name}/{k}": v for k, v in load_file(f).items()}
    return weights


def assert_same_metrics(m1: list[dict], m2: list[dict]) -> None:
    assert [m["step"] for m in m1] == [m["step"] for m in m2]
    for r1, r2 in zip(m1, m2, strict=True):
        if "d/teacher_score" in r1:  # D's margin; its scores share the head bias's noise
            r1["d/margin"] = r1["d/teacher_score"] - r1["d/student_score"]
            r2["d/margin"] = r2["d/teacher_score"] - r2["d/student_score"]
        for key in ("d/loss", "d/acc", "d/margin", "g/sft_loss", "g/pg_loss", "g/kl",
                    "reward/std", "len/student_mean", "len/student_max", "len/teacher_mean",
                    "g/grad_norm", "d/grad_norm"):  # fmt: skip
            if key in r1:
                assert r2[key] == pytest.approx(r1[key], rel=1e-4, abs=1e-6), (r1["step"], key)


LORA = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
CASES = {  # parallel.gather: auto is 'model' for these tiny models; 'layer' is the default
    "gad-full": {"parallel__gather": "layer"},  # at scale, so it is tested too
    "gad-lora": {"lora": LORA, "gradient_checkpointing": True},  # checkpointing under FSDP2
    "seqkd-full": {"method": "seqkd", "seqkd__epochs": 3},
    "seqkd-lora": {"method": "seqkd", "seqkd__epochs": 3, "lora": LORA},
}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_exactly_what_one_does(tmp_path, tiny_model, case):
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=8)
    common = {
        "batch_size": 4,
        "group_size": 3,
        "micro_batch_tokens": 64,  # several micro-batches per update, unequal per rank
        "warmup__epochs": 1,
        "gad__epochs": 2,
        "gad__kl_coef": 0.1,
        **CASES[case],
    }
    one = make_cfg(tmp_path / "one", tiny_model, prompts, **common)
    two = make_cfg(tmp_path / "two", tiny_model, prompts, **common)
    _train(one, 1)
    _train(two, 2)

    a, b = _weights(tmp_path / "one" / "run"), _weights(tmp_path / "two" / "run")
    assert a.keys() == b.keys()
    assert any(k.startswith("discriminator/") for k in a) == (one.method == "gad")
    assert any(k.startswith("student-adapter/") for k in a) == (one.lora is not None)
    # D's head bias has a zero gradient under the Bradley-Terry loss (shift-invariant):
    # Adam turns its rounding noise into lr-sized steps, so only its bound is exact.
    bias = "discriminator/score_head.safetensors/bias"
    if bias in a:
        assert a.pop(bias).abs().max() <= 6 * 1e-3 and b.pop(bias).abs().max() <= 6 * 1e-3
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5, msg=name)

    m1 = read_jsonl(tmp_path / "one" / "run" / "metrics.jsonl")
    m2 = read_jsonl(tmp_path / "two" / "run" / "metrics.jsonl")
    assert [m["step"] for m in m2] == [m["step"] for m in m1] == list(range(1, 7))
    # The same samples (rank 0 shows the first prompts of the batch, as one process does):
    # per-prompt seeds, not per-rank streams.
    s1 = read_jsonl(tmp_path / "one" / "run" / "samples.jsonl")
    s2 = read_jsonl(tmp_path / "two" / "run" / "samples.jsonl")
    assert [r["samples"] for r in s2] == [r["samples"] for r in s1] and s1
    assert_same_metrics(m1, m2)
    # Only rank 0 writes: one samples record set per step, one data_stats file.
    assert (tmp_path / "two" / "run" / "data_stats.json").exists()
    steps = [r["step"] for r in s2]
    assert steps == sorted(steps) and len(steps) == len(set(steps)) * (
        2 if one.method == "gad" else 1
    )


@pytest.mark.parametrize("worlds", [(2, 1), (1, 2)], ids=["2-to-1", "1-to-2"])
def test_a_run_resumes_on_another_number_of_processes(tmp_path, tiny_model, worlds):
    """The sharded DCP state saved by k processes reloads on m: stopped in the warmup
    (step 1) and in the adversarial stage (step 4), the run continues as if uninterrupted."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=8)
    common = {"batch_size": 4, "group_size": 3, "micro_batch_tokens": 64, "gad__epochs": 2}
    _train(make_cfg(tmp_path / "whole", tiny_model, prompts, **common), 1)
    for n, max_steps in enumerate((1, 4, None)):
        part = make_cfg(tmp_path / "parts", tiny_model, prompts, max_steps=max_steps, **common)
        _train(part, worlds[n % 2])
    expected = read_jsonl(tmp_path / "whole" / "run" / "metrics.jsonl")
    got = read_jsonl(tmp_path / "parts" / "run" / "metrics.jsonl")
    assert [m["step"] for m in got] == list(range(1, 7))
    assert_same_metrics(expected, got)
    saved = {p.name for p in (tmp_path / "parts" / "run" / "checkpoints").iterdir()}
    assert {"step-1", "step-2", "step-4", "step-6"} <= saved  # step 2: the KL reference


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
    from trainer.recipes.run import Run

    run = Run.__new__(Run)
    run.cfg = make_cfg(tmp_path, tiny_model, tmp_path / "p.jsonl", batch_size=4)
    run.examples = list(range(11))  # 2 full batches + 3
    try:
        for size, kept, steps in ((1, 11, 3), (2, 10, 3), (4, 8, 2), (3, 11, 3)):
            distributed._world = distributed.World(0, size, 0)
            assert (run.epoch_examples(), run.steps_per_epoch()) == (kept, steps), size
        # A one-process checkpoint saved before the short third batch, resumed on 4
        # processes (2 batches an epoch): that epoch is over, the next one starts.
        from trainer.recipes.run import Position, restore

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


def test_no_rank_unpickles_what_a_peer_sends():
    """torch's object collectives (all_gather_object, broadcast_object_list, ...) unpickle
    peers' bytes: whoever reaches a rank's sockets could run code in it. The trainer
    gathers through tensors and JSON (distributed.gather_json) instead."""
    import re

    root = Path(__file__).resolve().parents[2] / "trainer"
    pattern = re.compile(r"\b(all_gather_object|gather_object|broadcast_object_list|"
                         r"scatter_object_list|send_object_list|recv_object_list)\b")  # fmt: skip
    found = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line) and not line.lstrip().startswith("#")
    ]
    assert found == [] or all("distributed.py" in f for f in found), found


def test_gather_json_hands_back_each_ranks_value_in_order(tmp_path):
    """Two gloo processes gather values of different lengths (and unicode)."""
    import json

    script = tmp_path / "gather.py"
    script.write_text(
        "import json, os, sys, torch.distributed as dist\n"
        "from trainer import distributed\n"
        "distributed.init('cpu')\n"
        "rank = dist.get_rank()\n"
        "got = distributed.gather_json([rank, 'é' * (rank + 1), list(range(rank * 3))])\n"
        "flat = distributed.gather_list([rank] * (rank + 1))\n"
        "if rank == 0: print(json.dumps([got, flat]), flush=True)\n"
        "dist.destroy_process_group()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", str(script)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got, flat = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == [[0, "é", []], [1, "éé", [0, 1, 2]]]
    assert flat == [0, 1, 1]


def _load_ranks(rank: int, world: int, port: int, student: str, out: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )  # fmt: skip
    torch.set_num_threads(1)
    from trainer import distributed, fsdp
    from trainer.models import load_student

    distributed.init("cpu")
    try:
        model = fsdp.shard_from_rank0(lambda on: load_student(student, on), torch.float32, True)
        params_on, buffers_on = fsdp.placement(True, torch.device("cpu"))
        found = {
            "params": sorted({str(p.to_local().device) for p in model.parameters()}),
            "buffers": {
                n: [str(b.device), b.float().sum().item()] for n, b in model.named_buffers()
            },
            "expected": [str(params_on), str(buffers_on)],
        }
        Path(out, f"rank{rank}.json").write_text(__import__("json").dumps(found))
    finally:
        distributed.shutdown()


def test_cpu_offload_places_parameters_and_buffers_where_the_policy_says(tmp_path, tiny_model):
    """``parallel.cpu_offload``: offloaded parameters in host memory, buffers (rotary
    ``inv_freq``, not in the state dict) on the compute device. Before, ranks other than
    0 built every tensor with ``to_empty(cpu)``, so their buffers stayed on the CPU and
    the NCCL broadcast of them failed at load (NCCL sends only CUDA tensors; that
    failure itself cannot run on this machine). Here: the policy for a GPU, and a
    2-rank gloo load with offload on, every tensor where the policy puts it and every
    rank's buffers rank 0's."""
    import json

    from trainer.fsdp import placement

    cuda = torch.device("cuda", 3)
    assert placement(True, cuda) == (torch.device("cpu"), cuda)
    assert placement(False, cuda) == (cuda, cuda)
    torch.multiprocessing.spawn(
        _load_ranks, args=(2, _free_port(), str(tiny_model), str(tmp_path)), nprocs=2, join=True
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for found in ranks:
        assert found["params"] == [found["expected"][0]]
        assert found["buffers"] and all(
            d == found["expected"][1] for d, _ in found["buffers"].values()
        )
    assert ranks[0]["buffers"] == ranks[1]["buffers"]  # broadcast: rank 0's values
