"""What both rollout backends share: their settings, the rollout they return, the
interface the recipes call, and each sample's seed. Below the package and the backends,
which import it, so that no backend imports the package that imports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from trainer.config import MAX_RESPONSE_TOKENS


@dataclass
class SamplingSettings:
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = MAX_RESPONSE_TOKENS
    batch_size: int = 64  # sequences per generate call: bounds the KV cache
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    seed: int = 0
    gpu_memory_utilization: float = 0.3  # vllm only
    tensor_parallel_size: int = 1  # vllm only
    max_model_len: int | None = None  # vllm only: prompt + answer tokens
    want_logprobs: bool = False


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
