"""Checkpoint retention: optimizer state for the last keep_last checkpoints only, weights
for every one unless keep_weights: final_and_marked; a pruned checkpoint is never resumed."""

from __future__ import annotations

import pytest
import torch

from tests.trainer.test_recipes import make_cfg
from trainer import checkpoint as ckpt_io
from trainer.errors import BadInput


def _fake_run(out):
    for step in (2, 4, 6, 8):
        path = ckpt_io.checkpoints_dir(out) / f"step-{step}"
        for part in (ckpt_io.MODEL_STATE, ckpt_io.OPTIM_STATE, "student", "discriminator"):
            (path / part).mkdir(parents=True)
        torch.save({"step": step}, path / ckpt_io.STATE_FILE)
    ckpt_io.mark(ckpt_io.checkpoints_dir(out) / "step-4", "the KL reference")
    return ckpt_io.checkpoints_dir(out)


def _parts(root, step):
    path = root / f"step-{step}"
    return {p for p in (ckpt_io.MODEL_STATE, ckpt_io.OPTIM_STATE, "student") if (path / p).exists()}


def test_retention_keeps_optimizer_state_for_the_last_checkpoints(tmp_path):
    root = _fake_run(tmp_path)
    ckpt_io.prune(tmp_path, keep_last=2, keep_weights="all")
    everything = {ckpt_io.MODEL_STATE, ckpt_io.OPTIM_STATE, "student"}
    assert _parts(root, 2) == {"student"}
    assert _parts(root, 4) == {ckpt_io.MODEL_STATE, "student"}  # marked: resume weights stay
    assert _parts(root, 6) == _parts(root, 8) == everything
    assert ckpt_io.latest_checkpoint(tmp_path) == root / "step-8"
    with pytest.raises(BadInput, match="keeps no optimizer state"):
        ckpt_io.resolve_resume(str(root / "step-2"), tmp_path)


def test_final_and_marked_keeps_the_weights_of_the_last_and_the_marked_only(tmp_path):
    root = _fake_run(tmp_path)
    ckpt_io.prune(tmp_path, keep_last=1, keep_weights="final_and_marked")
    assert _parts(root, 2) == _parts(root, 6) == set()
    assert _parts(root, 4) == {ckpt_io.MODEL_STATE, "student"}
    assert "student" in _parts(root, 8) and ckpt_io.OPTIM_STATE in _parts(root, 8)


def test_a_run_prunes_as_it_saves(tmp_path, tiny_model, prompts_file):
    from trainer.recipes.gad import run_gad

    cfg = make_cfg(tmp_path, tiny_model, prompts_file, save_every=1, keep_last=2, gad__epochs=2)
    assert run_gad(cfg) == "finished"
    root = ckpt_io.checkpoints_dir(cfg.output_dir)
    with_optim = sorted(
        int(p.name[5:]) for p in root.glob("step-*") if (p / ckpt_io.OPTIM_STATE).is_dir()
    )
    assert with_optim == [5, 6]
    assert (root / "step-2" / ckpt_io.KEEP_FILE).exists()  # the KL reference (after warmup)
    assert (root / "step-2" / ckpt_io.MODEL_STATE).is_dir()
    assert all((p / "student" / "config.json").exists() for p in root.glob("step-*"))
