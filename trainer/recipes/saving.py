"""Saving and resuming a run: the sharded resume state (DCP) and the HF exports.

A save runs on every rank. Each writes its shards of G's and D's fp32 weights and of the
optimizers with ``torch.distributed.checkpoint`` into the step's staging directory; the
weights are then gathered whole to rank 0 (``get_model_state_dict(full_state_dict=True,
cpu_offload=True)``), which writes the HF exports and ``trainer_state.pt``, publishes the
directory and applies retention. One process saves the same layout (DCP without a
process group), so a run resumes on any number of processes.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from trainer import checkpoint as ckpt_io
from trainer import distributed, fsdp
from trainer.config import to_dict
from trainer.models import resolve_dtype
from trainer.recipes.run import Run

# A single-process run saves and loads its DCP state in one process by design; DCP's
# warning that it assumes so would fill every job log once per checkpoint.
warnings.filterwarnings(
    "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
)


def trainer_state(run: Run) -> dict[str, Any]:
    return {
        "step": run.step,
        "position": vars(run.pos).copy(),
        "stage": run.stage,
        # An optimizer that has not stepped yet (the fresh one of the adversarial stage)
        # is saved as such: DCP would first initialize its state with a zero step.
        "g_opt_fresh": not run.g_opt.state,
        "d_opt_fresh": run.d_opt is None or not run.d_opt.state,
        "rng": ckpt_io.rng_state(),
        "reference_path": run.reference_path,
        "reference_step": run.reference_step,
        "world_size": distributed.world().size,
        "config": to_dict(run.cfg),
    }


def _models(run: Run) -> dict[str, nn.Module]:
    return {"student": run.student} | ({"disc": run.disc} if run.disc is not None else {})


def _optimizers(run: Run) -> dict[str, Any]:
    pairs = [("g_opt", run.student, run.g_opt)]
    if run.disc is not None and run.d_opt is not None:
        pairs.append(("d_opt", run.disc, run.d_opt))
    return {name: fsdp.optim_state(model, opt) for name, model, opt in pairs if opt.state}


def save(run: Run) -> Path:
    """Write checkpoint step-N (every rank takes part); return its path."""
    import torch.distributed.checkpoint as dcp

    world = distributed.world()
    staging = ckpt_io.staging_dir(run.out_dir, run.step)
    if world.main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    distributed.barrier()
    dcp.save(
        {k: fsdp.model_state(m) for k, m in _models(run).items()},
        checkpoint_id=staging / ckpt_io.MODEL_STATE,
    )
    dcp.save(_optimizers(run), checkpoint_id=staging / ckpt_io.OPTIM_STATE)
    export(run, staging)  # gathers on every rank, writes on rank 0
    path = ckpt_io.checkpoints_dir(run.out_dir) / f"step-{run.step}"
    if world.main:
        ckpt_io.write_state(staging, trainer_state(run))
        if run.reference_step == run.step:
            ckpt_io.mark(staging, "the KL reference of the adversarial stage")
        path = ckpt_io.publish(run.out_dir, run.step)
        for removed in ckpt_io.prune(run.out_dir, run.cfg.keep_last, run.cfg.keep_weights):
            if run.progress:
                run.progress.log(f"retention: removed {removed}")
    distributed.barrier()
    run.last_saved_step = run.step
    if run.progress:
        run.progress.log(f"saved checkpoint {path}")
    return path


def export(run: Run, out: Path) -> None:
    """The student (LoRA merged; plus the adapter alone) and D in HF format, in
    ``export_dtype``. Every rank gathers; rank 0 writes."""
    dtype = resolve_dtype(run.cfg.export_dtype, run.device)
    student = fsdp.full_state(run.student)
    if distributed.world().main:
        hf = cast(Any, run.student)  # the transformers/peft API (trainer.models)
        base = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
        scaling = fsdp.lora_scaling(run.student)
        ckpt_io.write_hf(
            out / "student", fsdp.merge_lora(student, scaling), base.config, dtype, run.tokenizer
        )
        if scaling is not None:
            adapter = fsdp.adapter_state(student)
            ckpt_io.write_adapter(
                out / "student-adapter", adapter, hf.peft_config["default"], run.tokenizer
            )
    del student
    if run.disc is not None:
        disc = fsdp.full_state(run.disc)
        if distributed.world().main:
            _export_disc(run, out / "discriminator", disc, dtype)


def _export_disc(run: Run, out: Path, state: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
    from safetensors.torch import save_file

    from trainer.discriminator import HEAD_FILE, write_meta

    assert run.disc is not None
    backbone = {
        k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")
    }
    head = {
        k.removeprefix("head."): v.contiguous() for k, v in state.items() if k.startswith("head.")
    }
    lora = hasattr(run.disc.backbone, "peft_config")
    if lora:
        peft = cast(Any, run.disc.backbone)
        ckpt_io.write_adapter(out, fsdp.adapter_state(backbone), peft.peft_config["default"])
    else:
        ckpt_io.write_hf(out, backbone, run.disc.config, dtype)
    save_file(head, str(out / HEAD_FILE))  # fp32: the head computes in fp32
    write_meta(out, run.disc.head.in_features, lora)


# ---------------------------------------------------------------------------- resuming


def load_weights(ckpt: Path, models: dict[str, nn.Module]) -> None:
    """Resume weights from a checkpoint's DCP state into (sharded or plain) models, on
    however many processes this run has."""
    import torch.distributed.checkpoint as dcp

    states = {k: fsdp.model_state(m) for k, m in models.items()}
    dcp.load(states, checkpoint_id=ckpt / ckpt_io.MODEL_STATE)
    for name, model in models.items():
        fsdp.set_model_state(model, states[name])


def load_optimizers(run: Run, ckpt: Path, state: dict[str, Any]) -> None:
    import torch.distributed.checkpoint as dcp

    pairs = []
    if not state.get("g_opt_fresh"):
        pairs.append(("g_opt", run.student, run.g_opt))
    if run.disc is not None and run.d_opt is not None and not state.get("d_opt_fresh", True):
        pairs.append(("d_opt", run.disc, run.d_opt))
    if not pairs:
        return
    states = {name: fsdp.optim_state(model, opt) for name, model, opt in pairs}
    dcp.load(states, checkpoint_id=ckpt / ckpt_io.OPTIM_STATE)
    for name, model, opt in pairs:
        fsdp.set_optim_state(model, opt, states[name])
