"""The memory planner: its parts add up to what a run measures, shipped configs fit, and
a plan that does not fit names the change that would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from tests.trainer.conftest import write_prompts
from trainer.config import load_config
from trainer.plan import KNOWN, model_shape, plan

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

# The peak of the process's resident memory (VmRSS: anonymous, and file-backed, since a
# LoRA run's frozen base weights may stay mapped from the safetensors file) over a run,
# above where it starts (the libraries are loaded by then). Checkpoint writes are left
# out: on a GPU node they gather into host memory (cpu_offload), which the plan does not
# count, and on CPU a LoRA run's merged export copy alone moved the peak by 30%.
MEASURE = """
import json, sys, threading, time
import torch
torch.set_num_threads(1)
import peft, transformers  # loaded before the baseline: not the run's memory
from trainer.config import from_dict
from trainer.recipes import saving
from trainer.recipes.gad import run_gad

def anon():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

peak, done, writing = [anon()], threading.Event(), threading.Event()
def watch():
    while not done.is_set():
        if not writing.is_set():
            peak[0] = max(peak[0], anon())
        time.sleep(0.005)

save = saving.save
def unmeasured_save(run):
    writing.set()
    try:
        return save(run)
    finally:
        writing.clear()
saving.save = unmeasured_save

base = anon()
watcher = threading.Thread(target=watch, daemon=True)
watcher.start()
run_gad(from_dict(json.loads(sys.argv[1])))
done.set()
watcher.join()
print(json.dumps({"peak_bytes": peak[0] - base}))
"""


@pytest.fixture(scope="module")
def mid_model(tmp_path_factory):
    """Big enough (24M parameters) that the model states dominate the process's memory."""
    from trainer.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("mid") / "model", layers=6, hidden=512, heads=8)


@pytest.mark.slow
@pytest.mark.parametrize("lora", [None, {"r": 8, "alpha": 16}], ids=["full", "lora"])
def test_the_plan_is_within_30_percent_of_a_measured_peak(tmp_path, mid_model, lora):
    prompts = write_prompts(tmp_path / "prompts.jsonl", n=4)
    cfg = {
        "method": "gad", "student": str(mid_model), "train_file": str(prompts),
        "output_dir": str(tmp_path / "run"), "device": "cpu", "batch_size": 2,
        "group_size": 2, "max_prompt_tokens": 64, "max_response_tokens": 8,
        "micro_batch_tokens": 256, "save_every": 1000, "sample_every": 1000,
        "warmup": {"epochs": 1, "d_only_steps": 0}, "gad": {"epochs": 1, "kl_coef": 0.1},
        "lora": lora,
    }  # fmt: skip
    env = {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, json.dumps(cfg)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    measured = json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"] / 1024**3
    from trainer.config import from_dict

    planned = plan(from_dict(cfg), 1, 1, 1e6, device="cpu").peak_gb
    assert planned == pytest.approx(measured, rel=0.30), (planned, measured)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_fits_on_the_hardware_it_names(path):
    cfg = load_config(path)
    result = plan(cfg, gpu_memory_gb=80)
    assert result.fits, result.table()
    assert (cfg.nodes, cfg.gpus_per_node) == (result.nodes, result.gpus_per_node)


def test_the_7b_and_14b_configs_run_where_the_issue_says():
    seven = load_config(ROOT / "configs" / "gad-7b-1node.yaml")
    assert (seven.student, seven.nodes, seven.gpus_per_node, seven.lora) == (
        "Qwen/Qwen2.5-7B-Instruct",
        1,
        8,
        None,
    )
    paper = load_config(ROOT / "configs" / "gad-paper.yaml")
    assert (paper.student, paper.nodes, paper.gpus_per_node) == ("Qwen/Qwen2.5-14B-Instruct", 2, 8)


def test_a_plan_that_does_not_fit_names_the_smallest_change():
    paper = load_config(ROOT / "configs" / "gad-paper.yaml")
    one_gpu = plan(paper, nodes=1, gpus_per_node=1, gpu_memory_gb=80)
    assert not one_gpu.fits and "run on 2 node(s) of 8 GPUs" in one_gpu.advice
    assert "does not fit: " + one_gpu.advice in one_gpu.table()
    # Full fine-tuning of 14B holds 16 bytes a parameter for G and D: one 8-GPU node
    # of 40 GB cannot, and the planner says what can.
    small = plan(paper, nodes=1, gpus_per_node=8, gpu_memory_gb=40)
    assert not small.fits and small.advice


def test_the_shapes_give_the_models_parameter_counts():
    """Qwen2.5-7B has 7.62B parameters, 14B 14.77B, 1.5B 1.54B (their model cards)."""
    counts = {"Qwen/Qwen2.5-7B-Instruct": 7.62, "Qwen/Qwen2.5-14B-Instruct": 14.77,
              "Qwen/Qwen2.5-1.5B-Instruct": 1.54}  # fmt: skip
    for name, billions in counts.items():
        assert model_shape(name).params() / 1e9 == pytest.approx(billions, rel=0.01), name
    assert set(counts) <= set(KNOWN)


def test_the_plan_cli_exits_3_when_it_does_not_fit_and_names_an_unknown_model(tmp_path):
    argv = [sys.executable, "-m", "trainer", "plan", "--config", str(CONFIGS[0])]
    fits = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    assert fits.returncode == 0 and fits.stdout.strip().endswith("fits")
    too_small = subprocess.run(
        [*argv, "--gpus-per-node", "1"], capture_output=True, text=True, cwd=ROOT
    )
    assert too_small.returncode == 3 and "does not fit: " in too_small.stdout
    unknown = subprocess.run(
        [*argv, "--set", "student=org/mystery"], capture_output=True, text=True, cwd=ROOT
    )
    assert unknown.returncode == 2 and "'org/mystery'" in unknown.stderr
    as_json = subprocess.run([*argv, "--json"], capture_output=True, text=True, cwd=ROOT)
    assert json.loads(as_json.stdout)["fits"] is True


def test_the_hardware_table_in_the_readme_and_the_docs_is_the_planners():
    import re

    from trainer.plan import hardware_table

    students = ["Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct",
                "Qwen/Qwen2.5-14B-Instruct"]  # fmt: skip
    table = hardware_table(
        students,
        [(1, 1, 80), (1, 8, 80), (2, 8, 80)],
        load_config(ROOT / "configs" / "gad-paper.yaml"),
    )
    for doc in ("README.md", "docs/deployment.md"):
        text = (ROOT / doc).read_text()
        block = re.search(r"<!-- plan:hardware -->(.*?)<!-- /plan:hardware -->", text, re.S)
        assert block and table in block[1], f"{doc}: regenerate the table from trainer.plan"


def _gathering(cfg, mode):
    return replace(cfg, parallel=replace(cfg.parallel, gather=mode))


def test_gather_auto_keeps_models_whole_only_with_15_percent_to_spare():
    from trainer.plan import keeps_gathered

    seven = load_config(ROOT / "configs" / "gad-7b-1node.yaml")
    paper = load_config(ROOT / "configs" / "gad-paper.yaml")
    # 7B on 8x80 GB: G whole in bf16 through a backward leaves more than 15% spare.
    auto7 = plan(seven, gpu_memory_gb=80)
    assert auto7.gather == "model" and auto7.peak_gb <= 0.85 * 80
    assert any("gathered model" in part for part in auto7.parts)
    assert auto7.update_gb > plan(_gathering(seven, "layer"), gpu_memory_gb=80).update_gb
    # 14B on 2x8x80 GB would fit kept whole (75 GB) but without the margin: by layer.
    assert plan(_gathering(paper, "model"), gpu_memory_gb=80).fits
    assert plan(paper, gpu_memory_gb=80).gather == "layer"
    assert plan(paper, gpu_memory_gb=80).as_dict()["gather"] == "layer"
    # The trainer asks the same question with its process's memory.
    assert keeps_gathered(seven, 8, 80, "cuda") and not keeps_gathered(paper, 16, 80, "cuda")
    assert not keeps_gathered(_gathering(seven, "layer"), 8, 80, "cuda")
    assert keeps_gathered(_gathering(paper, "model"), 16, 80, "cuda")
    unknown = replace(seven, student="someone/unknown-model")
    assert not keeps_gathered(unknown, 8, 80, "cuda")  # no shape: the least memory


def test_a_forced_gather_model_that_does_not_fit_is_told_to_gather_by_layer():
    seven = _gathering(load_config(ROOT / "configs" / "gad-7b-1node.yaml"), "model")
    # (56 GB: on 48 GB, 0.3 of it no longer holds vLLM's 7B weights either.)
    tight = plan(seven, gpu_memory_gb=56)
    assert not tight.fits and tight.advice.startswith("set parallel.gather: layer")
    assert plan(_gathering(seven, "layer"), gpu_memory_gb=56).peak_gb < tight.peak_gb


def test_the_14b_paper_shape_at_tensor_parallel_1_is_refused_naming_vllms_share():
    """Qwen2.5-14B in bf16 is 27.5 GiB; 0.3 of an 80 GB card is 24 GB. vLLM 0.32 sizes
    its KV cache as utilisation x total - (weights + profiling peak + non-torch memory
    + a CUDA graph estimate) (``vllm/v1/worker/utils.py`` L724-726,
    ``vllm/v1/worker/gpu_worker.py`` L740-744) and stops with "No available memory for
    the cache blocks" when that is <= 0 (``vllm/v1/core/kv_cache_utils.py``
    L1009-1011): the planner said "fits (55 GB)" for it, from the totals alone."""
    paper = load_config(ROOT / "configs" / "gad-paper.yaml")
    tp1 = replace(paper, rollout=replace(paper.rollout, tensor_parallel_size=1))
    result = plan(tp1, gpu_memory_gb=80)
    assert result.peak_gb < 80  # the totals alone would have said it fits
    assert not result.fits and not result.vllm_fits
    assert result.advice.startswith("vLLM's share (24.0 GB")
    assert "No available memory for the cache blocks" in result.advice
    assert "set rollout.tensor_parallel_size: 2" in result.advice
    assert "vLLM's share (gpu_memory_utilization): 24.00 GB" in result.table()
    # The shipped config splits each engine over two GPUs, and fits.
    shipped = plan(paper, gpu_memory_gb=80)
    assert paper.rollout.tensor_parallel_size == 2 and shipped.fits, shipped.table()
    weights = next(v for k, v in shipped.vllm_parts.items() if k.startswith("weights"))
    assert weights == pytest.approx(14.77e9 * 2 / 2 / 2**30, rel=0.01)


def test_a_hub_student_in_the_cache_is_planned_and_one_nowhere_is_refused_with_why(tmp_path):
    """Any hub id whose config.json is in the Hugging Face cache is planned from it (the
    CLI also downloads config.json alone where the Hub can be reached); one that is
    nowhere is refused, saying where the planner looked and what to do."""
    snapshot = tmp_path / "hub" / "models--org--mystery" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (tmp_path / "hub" / "models--org--mystery" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--mystery" / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text(json.dumps(KNOWN["Qwen/Qwen2.5-1.5B-Instruct"]))
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "trainer", "plan", "--config", str(CONFIGS[0]), "--json"]
    cached = subprocess.run(
        [*argv, "--set", "student=org/mystery"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert cached.returncode in (0, 3), cached.stderr
    assert json.loads(cached.stdout)["parts_gb"]
    nowhere = subprocess.run(
        [*argv, "--set", "student=org/nowhere"], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert nowhere.returncode == 2
    assert "not in the Hugging Face cache" in nowhere.stderr
    assert "huggingface-cli download org/nowhere config.json" in nowhere.stderr


def test_one_process_under_autocast_counts_its_activations_in_fp32():
    """One process keeps fp32 weights and runs bf16 autocast: the residual stream and
    what autograd saves of it stay fp32, about twice the bf16 figure the planner used
    (FSDP's mixed precision casts the parameters, so the sharded forward is bf16)."""
    from trainer.plan import _activations, model_shape

    cfg = load_config(ROOT / "configs" / "gad-7b-1node.yaml")
    shape = model_shape(cfg.student)
    one = plan(cfg, nodes=1, gpus_per_node=1, gpu_memory_gb=80)
    found = {k: v for k, v in one.parts.items() if k.startswith("activations")}
    assert list(found) == ["activations of one micro-batch (fp32 residual under autocast)"]
    assert next(iter(found.values())) == pytest.approx(2 * _activations(cfg, shape, 2) / 2**30)
    eight = plan(cfg, nodes=1, gpus_per_node=8, gpu_memory_gb=80)
    assert eight.parts["activations of one micro-batch"] == pytest.approx(
        _activations(cfg, shape, 2) / 2**30
    )
