"""The discriminator D: the student's backbone plus a new linear head hidden -> 1.

D starts from the student's *starting* weights (GAD.md), so it reads text as well as G does
from step 0. The score of [prompt, answer] is the head's output at the last real token of
the answer: the EOS when the answer terminated, the last kept token when it was cut.
Teacher answers and student samples go through the same code path (`pack` sets
`last_index` for both), so D cannot learn "EOS vs no EOS" instead of quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from trainer.config import LoraConfig
from trainer.errors import BadInput
from trainer.models import check_model_ref, dtype_kwarg, load_error, prepare_trainable
from trainer.sequences import SeqBatch

HEAD_FILE = "score_head.safetensors"
META_FILE = "discriminator.json"


class Discriminator(nn.Module):
    def __init__(self, backbone: nn.Module, hidden_size: int, seed: int = 0):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        # Seeded, small init: scores start near 0 whatever the global RNG state is.
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(1, hidden_size, generator=gen) / hidden_size**0.5)
            self.head.bias.zero_()

    @property
    def config(self) -> Any:
        """The backbone's transformers config."""
        return cast(Any, self.backbone).config

    def forward(self, batch: SeqBatch) -> Tensor:
        """Scores [R] (float32) of the R sequences, read at `batch.last_index`."""
        hidden = self.backbone(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        last = hidden[rows, batch.last_index]  # [R, H]
        # fp32 head even under bf16 autocast: rewards differ by less than bf16's 1/128 step
        with torch.autocast(device_type=last.device.type, enabled=False):
            scores: Tensor = self.head(last.float())
            return scores.squeeze(-1)


def write_meta(out: Path, hidden_size: int, lora: bool) -> None:
    """What loading a saved D needs besides its weights (``build_discriminator``)."""
    (out / META_FILE).write_text(json.dumps({"hidden_size": hidden_size, "lora": lora}))


def _load_backbone(name_or_path: str) -> nn.Module:
    from transformers import AutoModel

    check_model_ref(name_or_path, "discriminator")
    try:
        backbone: nn.Module = AutoModel.from_pretrained(name_or_path, **dtype_kwarg(torch.float32))
    except (OSError, ValueError) as e:
        raise load_error(name_or_path, "discriminator", e) from e
    return backbone


def build_discriminator(
    init_from: str,
    device: torch.device,
    lora: LoraConfig | None = None,
    gradient_checkpointing: bool = False,
    seed: int = 0,
    base_model: str | None = None,
) -> Discriminator:
    """D from a student / HF model (new head) or from a saved discriminator directory.

    A saved LoRA discriminator holds only its adapter: `base_model` (the student it was
    initialized from) supplies the frozen weights.
    """
    saved = Path(init_from, HEAD_FILE).exists()
    meta = json.loads(Path(init_from, META_FILE).read_text()) if saved else {}
    backbone: nn.Module
    if device.type == "meta":  # structure only: FSDP's rank 0 sends the weights
        if saved:
            raise ValueError("a saved discriminator is loaded on every rank, not built empty")
        from trainer.models import apply_lora, empty_model

        backbone = empty_model(init_from, causal=False, what="discriminator")
        if lora is not None:
            backbone = apply_lora(backbone, lora)
        prepare_trainable(backbone, None, gradient_checkpointing)
        disc = Discriminator(backbone, cast(Any, backbone).config.hidden_size, seed=seed)
        disc.train()
        return disc
    if meta.get("lora"):
        from peft import PeftModel

        if base_model is None:
            raise BadInput(f"discriminator {init_from!r} is a LoRA adapter: set the student")
        backbone = PeftModel.from_pretrained(
            _load_backbone(base_model), init_from, is_trainable=True
        )
    else:
        backbone = _load_backbone(init_from)
        if lora is not None:
            from trainer.models import apply_lora

            backbone = apply_lora(backbone, lora)
    disc = Discriminator(backbone, cast(Any, backbone).config.hidden_size, seed=seed)
    if saved:
        disc.head.load_state_dict(load_file(str(Path(init_from, HEAD_FILE))))
    prepare_trainable(backbone, device, gradient_checkpointing)
    disc.head.to(device=device, dtype=torch.float32)
    disc.train()
    return disc
