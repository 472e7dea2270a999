"""Rollout backends: sample N answers per prompt from the current student.

One small interface for both samplers. `hf` runs transformers' generate on the training
model itself (nothing to sync); `vllm` keeps a separate fast engine on GPU nodes whose
weights are refreshed from the trainer after every generator update.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainer.rollout.base import Rollout, RolloutBackend, SamplingSettings, row_seeds

__all__ = ["Rollout", "RolloutBackend", "SamplingSettings", "make_backend", "row_seeds"]


def make_backend(
    name: str, model: nn.Module, tokenizer: Any, settings: SamplingSettings
) -> RolloutBackend:
    """`settings`: temperature, top_p, max_new_tokens, batch_size, device, dtype, seed, ..."""
    if name == "hf":
        from trainer.rollout.hf import HFRollout

        return HFRollout(model, tokenizer, settings)
    if name == "vllm":
        from trainer.rollout.vllm import VLLMRollout

        return VLLMRollout(model, tokenizer, settings)
    raise ValueError(f"unknown rollout backend {name!r}")
