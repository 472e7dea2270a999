"""Packing prompt + response token lists into padded tensors for the training forwards.

Rows are right-padded: positions stay 0..len-1 without position ids, and a response's
tokens sit right after its prompt. Response-aligned tensors ([R, T], column j = j-th
response token) are what the losses take.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SeqBatch:
    input_ids: Tensor  # [R, L] prompt + response, right-padded
    attention_mask: Tensor  # [R, L]
    response_pos: Tensor  # [R, T] index in input_ids of each response token (0 on padding)
    response_ids: Tensor  # [R, T] response token ids (pad on padding)
    response_mask: Tensor  # [R, T] 1 on real response tokens
    last_index: Tensor  # [R] position of the last real response token (EOS or last kept)

    @property
    def num_tokens(self) -> int:
        return int(self.response_mask.sum())

    def to(self, device: torch.device | str) -> SeqBatch:
        return SeqBatch(*(t.to(device) for t in self.__dict__.values()))


def pack(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> SeqBatch:
    """Build a SeqBatch from per-row prompt and response ids (each response non-empty)."""
    rows = len(prompts)
    seq_len = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    resp_len = max(len(r) for r in responses)
    input_ids = torch.full((rows, seq_len), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((rows, seq_len), dtype=torch.long)
    response_pos = torch.zeros((rows, resp_len), dtype=torch.long)
    response_ids = torch.full((rows, resp_len), pad_id, dtype=torch.long)
    response_mask = torch.zeros((rows, resp_len), dtype=torch.long)
    last_index = torch.zeros(rows, dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses, strict=True)):
        if not r:
            raise ValueError(f"row {i}: empty response")
        n = len(p) + len(r)
        input_ids[i, :n] = torch.tensor(list(p) + list(r))
        attention_mask[i, :n] = 1
        response_pos[i, : len(r)] = torch.arange(len(p), n)
        response_ids[i, : len(r)] = torch.tensor(list(r))
        response_mask[i, : len(r)] = 1
        last_index[i] = n - 1
    return SeqBatch(
        input_ids, attention_mask, response_pos, response_ids, response_mask, last_index
    )


def trim_at_eos(tokens: list[int], eos_id: int, max_len: int) -> tuple[list[int], bool]:
    """Keep a sampled answer up to and including its first EOS; (ids, terminated)."""
    for i, t in enumerate(tokens[:max_len]):
        if t == eos_id:
            return tokens[: i + 1], True
    return tokens[:max_len], False
