"""Rollouts with transformers' generate: batched, KV cache, left padding, stop at EOS."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from trainer.models import autocast
from trainer.rollout import Rollout
from trainer.sequences import trim_at_eos

if TYPE_CHECKING:
    from transformers import GenerationConfig


@dataclass
class SamplingSettings:
    temperature: float = 0.8
    top_p: float = 1.0
    max_new_tokens: int = 1536
    batch_size: int = 64  # sequences per generate call: bounds the KV cache
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float32
    seed: int = 0
    gpu_memory_utilization: float = 0.3  # vllm only
    want_logprobs: bool = False


class HFRollout:
    def __init__(self, model: nn.Module, tokenizer: Any, settings: SamplingSettings):
        self.model = model
        self.settings = settings
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id

    def sync_weights(self, model: nn.Module) -> None:
        self.model = model  # generate runs on the training model itself

    def _generation_config(self, greedy: bool) -> GenerationConfig:
        from transformers import GenerationConfig

        s = self.settings
        # A fresh config, not the model's: Qwen ships top_k=20 / repetition_penalty=1.05
        # defaults that would silently change the sampling distribution. Only the
        # tokenizer's EOS stops a sample, the token teacher answers end with.
        sampling = {} if greedy else {"temperature": s.temperature, "top_p": s.top_p, "top_k": 0}
        return GenerationConfig(
            do_sample=not greedy,
            max_new_tokens=s.max_new_tokens,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            use_cache=True,
            output_scores=s.want_logprobs,
            return_dict_in_generate=True,
            **sampling,
        )

    @torch.no_grad()
    def sample(self, prompts: list[list[int]], n: int, greedy: bool = False) -> Rollout:
        rows = [p for p in prompts for _ in range(n)]
        out = Rollout(responses=[], terminated=[])
        out.logprobs = [] if self.settings.want_logprobs else None
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(rows), self.settings.batch_size):
                self._sample_chunk(rows[start : start + self.settings.batch_size], greedy, out)
        finally:
            self.model.train(was_training)
        return out

    def _sample_chunk(self, rows: list[list[int]], greedy: bool, out: Rollout) -> None:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's next token is at the end
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        device = self.settings.device
        with autocast(torch.device(device), self.settings.dtype):
            gen = cast(Any, self.model).generate(  # transformers API (trainer.models)
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=self._generation_config(greedy),
            )
        new = gen.sequences[:, width:].tolist()
        for i, tokens in enumerate(new):
            resp, done = trim_at_eos(tokens, self.eos_id, self.settings.max_new_tokens)
            if not resp:  # max_new_tokens >= 1, so only a degenerate backend gets here
                resp = [self.eos_id]
            out.responses.append(resp)
            out.terminated.append(done)
            if out.logprobs is not None:
                scores = torch.stack(gen.scores, dim=1)[i, : len(resp)].float()
                if greedy:  # raw logits: report them at the configured temperature too
                    scores = scores / self.settings.temperature
                idx = torch.tensor(resp, device=scores.device).unsqueeze(-1)
                lp = torch.log_softmax(scores, -1).gather(-1, idx)
                out.logprobs.append(lp.squeeze(-1).tolist())
