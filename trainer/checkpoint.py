"""Checkpoints: OUT/checkpoints/step-N/.

    student/                the student in HF format (export_dtype, bf16 by default), LoRA
                            merged: what evaluation loads and users download
    student-adapter/        LoRA jobs: the adapter alone (peft format)
    discriminator/          D's backbone in HF format (its adapter, for LoRA) + score head
    trainer_state.pt        step, data position, stage, RNG, config, the KL reference
    state/model/            resume weights: G and D, fp32, sharded (torch.distributed.checkpoint)
    state/optim/            resume optimizer state, sharded (DCP); kept for the last
                            ``keep_last`` checkpoints only

The resume state reloads on any number of processes: DCP reshards it. Every rank writes
its own shards into the same directory (a shared filesystem across nodes); rank 0 writes
the rest. A checkpoint directory appears only complete: it is written under a temporary
name and renamed (atomic on one filesystem), so a reader or a resume never sees half of one.
"""

from __future__ import annotations

import copy
import os
import random
import shutil
from pathlib import Path
from typing import Any, cast

import torch
import yaml

from trainer.errors import BadInput

STATE_FILE = "trainer_state.pt"
MODEL_STATE = "state/model"
OPTIM_STATE = "state/optim"
KEEP_FILE = "KEEP"  # a checkpoint marked to keep: its weights survive keep_weights pruning


def checkpoints_dir(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])


def staging_dir(out_dir: str | Path, step: int) -> Path:
    """Where every rank writes step ``step`` before rank 0 publishes it (one name for all
    ranks, on all nodes)."""
    return checkpoints_dir(out_dir) / f".tmp-step-{step}"


def write_hf(
    out: Path,
    state: dict[str, torch.Tensor],
    config: Any,
    dtype: torch.dtype,
    tokenizer: Any = None,
) -> None:
    """An HF model directory from a full state dict (rank 0): safetensors shards of at
    most 5 GB with their index, the config (its dtype set), the tokenizer."""
    from huggingface_hub import save_torch_state_dict

    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    if getattr(config, "tie_word_embeddings", False):
        weights.pop("lm_head.weight", None)  # the embedding's; loaders tie it back
    save_torch_state_dict(weights, out, max_shard_size="5GB")
    config = copy.deepcopy(config)
    config.dtype = str(dtype).removeprefix("torch.")
    config.save_pretrained(out)
    generation = getattr(config, "_generation_config", None)
    if generation is not None:
        generation.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def write_adapter(
    out: Path, adapter: dict[str, torch.Tensor], peft_config: Any, tokenizer: Any = None
) -> None:
    """A peft adapter directory (adapter_config.json + adapter_model.safetensors)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in adapter.items()}, str(out / "adapter_model.safetensors")
    )
    peft_config.save_pretrained(str(out))
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


def publish(out_dir: str | Path, step: int) -> Path:
    """Rename the staged step ``step`` into place (replacing one of the same step) and
    point OUT/final at its student. Rank 0, after every rank wrote its shards."""
    root = checkpoints_dir(out_dir)
    tmp, final = staging_dir(out_dir, step), root / f"step-{step}"
    if final.exists():  # same step saved twice (e.g. a resume right after the last save)
        old = root / f".old-step-{step}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _point_final(Path(out_dir), final / "student")
    return final


def write_state(path: Path, state: dict[str, Any]) -> None:
    torch.save(state, path / STATE_FILE)
    if "config" in state:  # readable copy; trainer_state.pt holds the same dict
        (path / "config.yaml").write_text(yaml.safe_dump(state["config"], sort_keys=False))


def prune(out_dir: str | Path, keep_last: int, keep_weights: str) -> list[Path]:
    """Retention (rank 0, after a publish): optimizer state only in the last ``keep_last``
    checkpoints, resume weights with it (a checkpoint without its optimizer cannot be
    resumed from) unless the checkpoint is marked; with ``keep_weights:
    final_and_marked``, exported weights only in the last checkpoint and the marked ones
    (a KEEP file: the KL reference, or one a user chose). Returns what it removed."""
    root = checkpoints_dir(out_dir)
    steps = sorted(_steps(root))
    removed: list[Path] = []
    for n, (_, path) in enumerate(steps):
        recent = n >= len(steps) - keep_last
        marked = (path / KEEP_FILE).exists()
        doomed = [] if recent else [path / OPTIM_STATE] + ([] if marked else [path / MODEL_STATE])
        if keep_weights == "final_and_marked" and n < len(steps) - 1 and not marked:
            doomed += [path / "student", path / "student-adapter", path / "discriminator"]
        for target in doomed:
            if target.exists():
                shutil.rmtree(target, ignore_errors=True)
                removed.append(target)
    return removed


def mark(path: Path, why: str) -> None:
    (path / KEEP_FILE).write_text(why + "\n")


def _steps(root: Path) -> list[tuple[int, Path]]:
    steps = []
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith("step-") and (p / STATE_FILE).exists():
                try:
                    steps.append((int(p.name.removeprefix("step-")), p))
                except ValueError:
                    continue
    return steps


def _point_final(out_dir: Path, target: Path) -> None:
    """OUT/final -> the last checkpoint's student (relative link, swapped atomically)."""
    link = out_dir / "final"
    tmp = out_dir / f".final-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(target, out_dir), tmp)
    os.replace(tmp, link)


def remove_partial(out_dir: str | Path) -> list[Path]:
    """Remove what a killed run left half written (``.tmp-step-*``): it is never resumed
    from, and a 7B checkpoint's leftovers would fill the disk run after run."""
    root = checkpoints_dir(out_dir)
    removed = sorted(root.glob(".tmp-step-*")) if root.is_dir() else []
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
    return removed


def resumable(path: Path) -> bool:
    """A checkpoint a run can continue from: its resume weights and optimizer are kept."""
    return (path / STATE_FILE).exists() and (path / OPTIM_STATE).is_dir()


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The last checkpoint that can be resumed from (retention prunes older ones)."""
    steps = [(step, p) for step, p in _steps(checkpoints_dir(out_dir)) if resumable(p)]
    return max(steps)[1] if steps else None


def resolve_resume(resume: str, out_dir: str | Path) -> Path | None:
    """`auto`: the latest checkpoint if any; `never`: none; else that checkpoint path."""
    if resume == "never":
        return None
    if resume == "auto":
        return latest_checkpoint(out_dir)
    path = Path(resume)
    if not (path / STATE_FILE).exists():
        raise BadInput(f"resume: {resume!r} is not a checkpoint directory (no {STATE_FILE})")
    if not resumable(path):
        raise BadInput(
            f"resume: {resume!r} keeps no optimizer state (retention keeps it for the last "
            "keep_last checkpoints only); resume from a later checkpoint"
        )
    return path


def load_state(ckpt: Path) -> dict[str, Any]:
    # weights_only=False: the state holds python RNG tuples and numpy arrays, and we wrote it.
    return cast(
        "dict[str, Any]", torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
    )
