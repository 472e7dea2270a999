"""Checkpoints: OUT/checkpoints/step-N/{student, discriminator, trainer_state.pt}.

A checkpoint directory appears only complete: it is written under a temporary name and
renamed (atomic on one filesystem), so a reader or a resume never sees half of one.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
import yaml

from trainer.errors import BadInput

if TYPE_CHECKING:
    from torch import nn

    from trainer.discriminator import Discriminator

STATE_FILE = "trainer_state.pt"


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


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    student: nn.Module,
    tokenizer: Any,
    disc: Discriminator | None,
    state: dict[str, Any],
) -> Path:
    """Write step-`step` atomically; replace an existing one of the same step."""
    root = checkpoints_dir(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step}"
    tmp = root / f".tmp-step-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    cast(Any, student).save_pretrained(tmp / "student")  # transformers/peft API (models.py)
    tokenizer.save_pretrained(tmp / "student")
    if disc is not None:
        disc.save(tmp / "discriminator")
    torch.save(state, tmp / STATE_FILE)
    if "config" in state:  # readable copy; trainer_state.pt holds the same dict
        (tmp / "config.yaml").write_text(yaml.safe_dump(state["config"], sort_keys=False))
    if final.exists():  # same step saved twice (e.g. a resume right after the last save)
        old = root / f".old-step-{step}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    _point_final(Path(out_dir), final / "student")
    return final


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


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    root = checkpoints_dir(out_dir)
    if not root.is_dir():
        return None
    steps = []
    for p in root.iterdir():
        if p.name.startswith("step-") and (p / STATE_FILE).exists():
            try:
                steps.append((int(p.name.removeprefix("step-")), p))
            except ValueError:
                continue
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
    return path


def load_state(ckpt: Path) -> dict[str, Any]:
    # weights_only=False: the state holds python RNG tuples and numpy arrays, and we wrote it.
    return cast(
        "dict[str, Any]", torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=False)
    )
