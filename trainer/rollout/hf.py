"""Rollouts with transformers' generate: batched, KV cache, left padding, stop at EOS.

Each sample draws its tokens from its own seed (``SeededSampler``), a function of the
prompt's seed and the sample's index, not from the process's RNG: the same prompt at the
same step gets the same answers in whatever batch, on whichever rank, on how many
processes (DESIGN.md, "Reproducible at any scale").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from trainer import distributed, fsdp
from trainer.models import autocast
from trainer.rollout.base import Rollout, SamplingSettings, row_seeds
from trainer.sequences import trim_at_eos

if TYPE_CHECKING:
    from transformers import GenerationConfig


_MASK64 = (1 << 64) - 1


def _shr(v: torch.Tensor, n: int) -> torch.Tensor:
    """Logical right shift of int64 tensors (torch's >> is arithmetic)."""
    return (v >> n) & ((1 << (64 - n)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer on int64 tensors (multiplication wraps around)."""
    x = (x ^ _shr(x, 30)) * -4658895280553007687  # 0xbf58476d1ce4e5b9 as int64
    x = (x ^ _shr(x, 27)) * -7723592293110705685  # 0x94d049bb133111eb as int64
    return x ^ _shr(x, 31)


def uniforms(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform in [0, 1) per row, a pure function of (row seed, decoding step)."""
    golden = torch.full_like(seeds, -7046029254386353131)  # 0x9e3779b97f4a7c15 as int64
    x = _mix(seeds + golden * (step + 1))
    return _shr(x, 11).double() / float(1 << 53)


class SeededSampler:
    """A logits processor that samples each row's next token itself, with the row's own
    uniform draw, and leaves only that token possible; ``generate`` then runs greedy
    over its output. Temperature and top-p are applied here (on fp32 logits), and the
    sampled token's log-prob under that distribution is recorded when asked for.

    Greedy rows take the argmax; their log-probs are reported at the temperature."""

    def __init__(
        self, seeds: list[int], width: int, settings: SamplingSettings, greedy: bool, logprobs: bool
    ):
        self.seeds = torch.tensor([s & (_MASK64 >> 1) for s in seeds], dtype=torch.long)
        self.width, self.s, self.greedy = width, settings, greedy
        self.logprobs: list[torch.Tensor] | None = [] if logprobs else None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.s.temperature
        if self.greedy:
            chosen = logits.argmax(-1)
            dist = logits
        else:
            dist = _top_p(logits, self.s.top_p)
            probs = torch.softmax(dist.double(), -1)
            u = uniforms(self.seeds, input_ids.shape[1] - self.width).to(probs.device)
            cdf = probs.cumsum(-1)
            chosen = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(-1)).squeeze(-1)
            chosen = chosen.clamp(max=probs.shape[-1] - 1)
        if self.logprobs is not None:
            lp = torch.log_softmax(dist, -1).gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
            self.logprobs.append(lp.cpu())
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(-1, chosen.unsqueeze(-1), 0.0)


def _dtype_kwarg(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """transformers' name for a model's dtype: ``dtype`` from 4.56 on, ``torch_dtype``
    before (the old name still works there, with a deprecation notice)."""
    import transformers
    from packaging.version import Version

    new = Version(transformers.__version__) >= Version("4.56")
    return {"dtype": dtype} if new else {"torch_dtype": dtype}


def _top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of tokens whose probability reaches top_p."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(-1, descending=True)
    probs = torch.softmax(sorted_logits, -1)
    drop = probs.cumsum(-1) - probs >= top_p  # the mass before a token already reaches p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


class HFRollout:
    def __init__(self, model: nn.Module, tokenizer: Any, settings: SamplingSettings):
        self.model = model
        self.settings = settings
        self.eos_id: int = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id
        self.calls = 0  # sample() calls without seeds: each gets seeds of its own
        self._copy: nn.Module | None = None  # FSDP: the plain generating copy
        self._stale = True

    def sync_weights(self, model: nn.Module) -> None:
        self.model = model  # generate runs on the training model itself (one process)
        self._stale = True  # under FSDP: the copy takes the new weights before sampling

    def _generation_config(self) -> GenerationConfig:
        from transformers import GenerationConfig

        # A fresh config, not the model's: Qwen ships top_k=20 / repetition_penalty=1.05
        # defaults that would silently change the sampling distribution. Only the
        # tokenizer's EOS stops a sample, the token teacher answers end with. Greedy
        # over the SeededSampler's output, which has already drawn the token.
        return GenerationConfig(
            do_sample=False,
            max_new_tokens=self.settings.max_new_tokens,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            use_cache=True,
            return_dict_in_generate=True,
        )

    @torch.no_grad()
    def sample(
        self,
        prompts: list[list[int]],
        n: int,
        greedy: bool = False,
        seeds: list[int] | None = None,
    ) -> Rollout:
        rows = [p for p in prompts for _ in range(n)]
        if seeds is None:
            self.calls += 1
            seeds = [
                distributed.sample_seed(self.settings.seed, -self.calls, i)
                for i in range(len(prompts))
            ]
        per_row = row_seeds(seeds, n)
        out = Rollout(responses=[], terminated=[])
        out.logprobs = [] if self.settings.want_logprobs else None
        generator = self._generator()
        was_training = generator.training
        generator.eval()
        size = self.settings.batch_size
        try:
            for start in range(0, len(rows), size):
                chunk = slice(start, start + size)
                self._sample_chunk(generator, rows[chunk], per_row[chunk], greedy, out)
        finally:
            generator.train(was_training)
        return out

    def _generator(self) -> nn.Module:
        """The module that generates: the training model itself, or under FSDP a plain
        copy in the compute dtype that takes the gathered weights (LoRA merged) after each
        update. Generating on the sharded model would all-gather every layer at every
        token, through FSDP's hooks; the copy runs at single-process speed, and ranks
        answer at their own pace (no collective while they generate)."""
        if not fsdp.is_sharded(self.model):
            return self.model
        if self._copy is None:
            from transformers import AutoModelForCausalLM

            hf = cast(Any, self.model)  # the transformers/peft API (trainer.models)
            base = hf.get_base_model() if hasattr(hf, "get_base_model") else hf
            # Built in the compute dtype: an fp32 build first would hold 4 bytes a
            # parameter (30 GB at 7B) before the cast.
            with torch.device(self.settings.device):
                copy = AutoModelForCausalLM.from_config(
                    base.config, **_dtype_kwarg(self.settings.dtype)
                )
            self._copy = copy.eval().requires_grad_(False)
            self._stale = True
        if self._stale:
            self._load_copy(self._copy)
            self._stale = False
        return self._copy

    def _load_copy(self, copy: nn.Module) -> None:
        """The gathered weights into the copy, one tensor at a time as they are gathered
        (never a second whole model beside it)."""
        targets = copy.state_dict()  # views of the copy's own tensors
        seen: set[str] = set()
        for name, tensor in fsdp.iter_hf_weights(self.model, self.settings.dtype):
            if name not in targets:
                raise RuntimeError(f"rollout copy: unexpected {name}")
            targets[name].copy_(tensor)
            seen.add(name)
            del tensor
        missing = set(targets) - seen - {"lm_head.weight"}  # tied to the embedding
        if missing:
            raise RuntimeError(f"rollout copy: missing {sorted(missing)[:5]}")

    def _sample_chunk(
        self,
        generator: nn.Module,
        rows: list[list[int]],
        seeds: list[int],
        greedy: bool,
        out: Rollout,
    ) -> None:
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # left padding: every row's next token is at the end
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
        from transformers import LogitsProcessorList

        device = self.settings.device
        sampler = SeededSampler(seeds, width, self.settings, greedy, out.logprobs is not None)
        with autocast(torch.device(device), self.settings.dtype):
            gen = cast(Any, generator).generate(  # transformers API (trainer.models)
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                generation_config=self._generation_config(),
                logits_processor=LogitsProcessorList([sampler]),
            )
        new = gen.sequences[:, width:].tolist()
        for i, tokens in enumerate(new):
            resp, done = trim_at_eos(tokens, self.eos_id, self.settings.max_new_tokens)
            if not resp:  # max_new_tokens >= 1, so only a degenerate backend gets here
                resp = [self.eos_id]
            out.responses.append(resp)
            out.terminated.append(done)
            if out.logprobs is not None and sampler.logprobs is not None:
                out.logprobs.append([float(step[i]) for step in sampler.logprobs[: len(resp)]])
