"""bench/gpu_smoke.sh on CPU (SMOKE_TINY=1): the same driver, shape processes and table a
GPU run uses, on a tiny shape over 2 gloo processes; and its pieces that decide what a GPU
run measures (the shapes the planner picks, the FLOP count behind MFU)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.plan import KNOWN, Shape

ROOT = Path(__file__).resolve().parents[2]


def smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", ROOT / "bench" / "gpu_smoke.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full = os.environ | {"SMOKE_TINY": "1", "OUT": str(tmp_path / "out"),
                         "SMOKE_DIR": str(tmp_path / "models"), "PYTHON": sys.executable} | env  # fmt: skip
    return subprocess.run(
        ["bash", "bench/gpu_smoke.sh"], cwd=ROOT, env=full, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


@pytest.mark.slow
def test_the_tiny_smoke_runs_both_phases_in_a_shape_process_and_writes_its_row(tmp_path):
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    row = json.loads((out / "tiny.json").read_text())
    assert row["gpus"] == 2 and row["sft"] == row["gad"] == "full"
    for key in ("sft_step_s", "gad_step_s", "gad_tokens_per_s", "rollout_tokens_per_s"):
        assert row[key] > 0, key
    assert row["model_tflops"] > 0
    # MFU is a bf16-path figure: none on CPU, and no GPU memory to measure
    assert "update_mfu" not in row and "sft_measured_gb" not in row
    assert row["sft_planned_gb"] > 0 and "error" not in row
    table = (out / "results.md").read_text()
    assert table.startswith("FSDP2 on 2 x cpu")
    assert "| tiny |" in table and table in done.stdout
    assert json.loads((out / "results.json").read_text())[0]["shape"] == "tiny"


@pytest.mark.slow
def test_a_shape_that_outlives_the_budget_loses_its_own_row_and_the_table_still_prints(tmp_path):
    # 31 s for the shape (10 kept back for the table); 400 steps a phase take minutes
    done = run_script(tmp_path, SMOKE_BUDGET_S="41", STEPS="400")
    assert done.returncode == 0, done.stderr
    row = json.loads((tmp_path / "out" / "tiny.json").read_text())
    assert row["error"].startswith("stopped: out of the time budget"), row
    assert "out of the time budget" in (tmp_path / "out" / "results.md").read_text()
    # no shape process is left behind
    left = subprocess.run(["pgrep", "-f", "gpu_smoke.py --shape"], capture_output=True)
    assert left.returncode == 1, left.stdout


def test_on_one_80_gb_gpu_the_planner_picks_small_shapes_full_and_7b_with_lora():
    rows = {r["shape"]: r for r in smoke().choose(1, 79.2)}
    assert (rows["0.5b"]["sft"], rows["0.5b"]["gad"]) == ("full", "full")
    assert (rows["1.5b"]["sft"], rows["1.5b"]["gad"]) == ("full", "full")
    assert rows["7b"]["sft"] == "lora"  # 16 bytes a parameter (122 GB) does not fit
    # GAD at 7B keeps a frozen fp32 base of G and of D and a KL reference: no way fits
    assert rows["7b"]["gad"] == "skip" and "79 GB there" in rows["7b"]["gad_skipped"]
    # eight GPUs shard the full fine-tune
    assert all(r["sft"] == r["gad"] == "full" for r in smoke().choose(8, 79.2))


def test_a_shape_no_way_fits_is_listed_and_never_built(tmp_path, monkeypatch):
    module = smoke()
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setenv("SHAPES", "7b")
    monkeypatch.setattr(module.torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(module.torch.cuda, "get_device_name", lambda *a: "NVIDIA A10")

    class Props:
        total_memory = 24 * 2**30

    monkeypatch.setattr(module.torch.cuda, "get_device_properties", lambda *a: Props)
    started = []
    monkeypatch.setattr(module, "run_shape", lambda *a: started.append(a))
    assert module.drive() == 0
    assert started == []
    row = json.loads((tmp_path / "7b.json").read_text())
    assert row["error"].startswith("not built: the planner says no way")
    assert "one process (no FSDP2) on NVIDIA A10" in (tmp_path / "results.md").read_text()


def test_mfu_counts_palm_flops_with_the_lm_head_only_where_it_projects():
    module = smoke()
    shape = Shape.from_config(KNOWN["Qwen/Qwen2.5-7B-Instruct"])
    body = shape.layers * shape.layer_params()
    head = shape.hidden * shape.vocab
    prompt, answer = 300, 200
    n = prompt + answer
    full = module.train_flops(shape, [(n, answer)], lora=False)
    attention = 12 * shape.layers * shape.hidden * n * n  # heads x head_dim = hidden here
    assert full == 6 * body * n + attention + 6 * head * answer
    # the prompt's positions are never projected onto the vocabulary
    assert full < module.train_flops(shape, [(n, n)], lora=False)
    # LoRA: the frozen weights' gradients are not computed
    assert module.train_flops(shape, [(n, answer)], lora=True) == (
        4 * body * n + attention + 4 * head * answer
    )
