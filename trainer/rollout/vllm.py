"""Rollouts with vLLM on GPU nodes; weights are pushed from the trainer after each update.

Import-guarded: vLLM is an optional extra (`gad-studio[gpu]`) and cannot run on CPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn

from trainer.errors import BadInput
from trainer.rollout import Rollout
from trainer.rollout.hf import SamplingSettings


def hf_weights(model: nn.Module, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in plain HF naming; LoRA adapters are merged in on the fly."""
    if not hasattr(model, "merge_adapter"):
        for name, t in model.state_dict().items():
            yield name, t.to(dtype)
        return
    peft = cast(Any, model)  # the peft API (trainer.models)
    peft.merge_adapter()
    try:
        for name, t in peft.get_base_model().state_dict().items():
            if "lora_" in name:
                continue
            yield name.replace(".base_layer", ""), t.to(dtype)
    finally:
        peft.unmerge_adapter()


class VLLMRollout:
    def __init__(self, model: nn.Module, tokenizer: Any, settings: SamplingSettings):
        try:
            from vllm import LLM
        except ImportError as e:
            raise BadInput(
                "rollout.backend: vllm needs the vllm package (pip install 'gad-studio[gpu]') "
                "on a CUDA machine; use rollout.backend: hf otherwise"
            ) from e
        self.settings = settings
        self.eos_id: int = tokenizer.eos_token_id
        hf = cast(Any, model)  # the transformers/peft API (trainer.models)
        base = hf.get_base_model() if hasattr(model, "get_base_model") else hf
        self.llm = LLM(
            model=base.config._name_or_path,
            tokenizer=base.config._name_or_path,
            dtype=str(settings.dtype).removeprefix("torch."),
            gpu_memory_utilization=settings.gpu_memory_utilization,
            seed=settings.seed,
            enable_prefix_caching=True,  # the N samples of a prompt share its KV cache
        )
        self.sync_weights(model)

    def _engine_model(self) -> Any:
        """The engine's torch module; its location moved between vLLM releases."""
        engine = self.llm.llm_engine
        paths = (
            "model_executor.driver_worker.model_runner.model",
            "model_executor.driver_worker.worker.model_runner.model",
        )
        for path in paths:
            obj = engine
            try:
                for attr in path.split("."):
                    obj = getattr(obj, attr)
                return obj
            except AttributeError:
                continue
        return None

    def sync_weights(self, model: nn.Module) -> None:
        weights = list(hf_weights(model, self.settings.dtype))
        target = self._engine_model()
        if target is not None:
            target.load_weights(weights)
        else:  # vLLM V1 engine: workers live in other processes
            self.llm.collective_rpc(
                "load_weights", kwargs={"weights": weights}
            )  # needs a worker extension exposing load_weights
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def sample(self, prompts: list[list[int]], n: int, greedy: bool = False) -> Rollout:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        s = self.settings
        params = SamplingParams(
            n=n,
            temperature=0.0 if greedy else s.temperature,
            top_p=1.0 if greedy else s.top_p,
            top_k=-1,
            max_tokens=s.max_new_tokens,
            stop_token_ids=[self.eos_id],
            logprobs=0,  # the sampled token's log-prob only
            detokenize=False,
        )
        outs = self.llm.generate(
            [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
        )
        logprobs: list[list[float]] = []
        rollout = Rollout(responses=[], terminated=[], logprobs=logprobs)
        for out in outs:  # vLLM keeps the prompt order; each has n completions
            for c in out.outputs:
                ids = list(c.token_ids)
                lps = [d[t].logprob for d, t in zip(c.logprobs or [], ids, strict=False)]
                terminated = c.finish_reason == "stop"
                if terminated and (not ids or ids[-1] != self.eos_id):
                    ids.append(self.eos_id)  # some releases strip the stop token
                    lps.append(0.0)
                rollout.responses.append(ids)
                rollout.terminated.append(terminated)
                logprobs.append(lps)
        return rollout
