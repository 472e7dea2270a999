"""Rollout backends: sample N answers per prompt from the current student.

One small interface for both samplers. `hf` runs transformers' generate on the training
model itself (nothing to sync); `vllm` keeps a separate fast engine on GPU nodes whose
weights are refreshed from the trainer after every generator update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from torch import nn

if TYPE_CHECKING:
    from trainer.rollout.hf import SamplingSettings


@dataclass
class Rollout:
    """B*N samples, prompt-major: row b*N + i is sample i of prompt b."""

    responses: list[list[int]]  # token ids, up to and including EOS, or cut at the max length
    terminated: list[bool]  # ended with EOS (False: cut at max_response_tokens)
    logprobs: list[list[float]] | None = None  # sampling log-probs, when the backend has them

    @property
    def lengths(self) -> list[int]:
        return [len(r) for r in self.responses]


def row_seeds(seeds: list[int], n: int) -> list[int]:
    """The seed of each of the n samples of each prompt (prompt-major), from the prompts'."""
    from trainer.distributed import seed_of

    return [seed_of(s, i) for s in seeds for i in range(n)]


class RolloutBackend(Protocol):
    def sample(
        self,
        prompts: list[list[int]],
        n: int,
        greedy: bool = False,
        seeds: list[int] | None = None,
    ) -> Rollout:
        """N answers for each prompt (token ids of the rendered chat). ``seeds``: one per
        prompt; sample i of a prompt draws from (its seed, i) alone, so a prompt gets the
        same answers whatever else is in the batch and on whichever process."""
        ...

    def sync_weights(self, model: nn.Module) -> None:
        """Make the sampler use `model`'s current weights (after an optimizer step)."""
        ...


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
