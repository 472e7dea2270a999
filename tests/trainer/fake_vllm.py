"""A stand-in for ``vllm`` (0.32.0, the release the ``gpu`` extra pins) that behaves as
the real one does where ``trainer.rollout.vllm`` touches it. Read in the 0.32.0 wheel:

- ``vllm/envs.py`` L1463-1465: ``VLLM_ENABLE_V1_MULTIPROCESSING`` defaults to 1;
  ``vllm/v1/engine/llm_engine.py`` L186-188 turns multiprocessing on from it, and
  L136-138 sets ``self.model_executor`` only when it is off: with it on, the engine runs
  in a child process and ``llm_engine.model_executor`` does not exist;
- ``vllm/v1/executor/uniproc_executor.py`` L180-183: the external launcher asserts
  "please set VLLM_ENABLE_V1_MULTIPROCESSING=0"; L195-196 read ``RANK`` and
  ``LOCAL_RANK`` from the environment (a KeyError without them);
- ``vllm/entrypoints/llm.py`` L836-885: ``sleep(level)`` and ``wake_up(tags)``, tags
  among ("weights", "kv_cache"); the engine is used again only once every tag is awake;
- ``vllm/v1/worker/gpu_worker.py`` L522: the worker calls ``set_random_seed(seed)``,
  which seeds torch, random and numpy, in this process with the external launcher;
- ``vllm/sampling_params.py`` L772-800: the EOS ids of the model's
  ``generation_config.json`` join the stop tokens; a completion may end with one of them
  (``LLM.generation_eos``), the token kept in ``token_ids`` with its log-prob;
- ``generate`` takes one SamplingParams for every prompt, or a list of them;
- memory: ``wake_up`` maps the weights back with vLLM's own allocator
  (``vllm/device_allocator/cumem.py`` L331-350, ``create_and_map``), outside torch's
  caching allocator, so what torch reserved during the update phase must be handed back
  first: TRL calls ``torch.cuda.empty_cache()`` before every wake-up
  (``trl/trainer/grpo_trainer.py``, "required to avoid OOM in some cases"). On the CPU
  that is an accounting check: a training step marks torch's cache as holding the
  update's peak, ``torch.cuda.empty_cache`` clears it, and a wake-up of the weights
  while it is held fails as the GPU would, out of memory.
"""

from __future__ import annotations

import os
import sys
import types
from contextlib import contextmanager
from types import SimpleNamespace

import torch


class Memory:
    """What torch's caching allocator holds (the accounting stand-in for the GPU)."""

    update_peak_cached = False

    @classmethod
    def training_step(cls) -> None:
        cls.update_peak_cached = True

    @classmethod
    def empty_cache(cls) -> None:
        cls.update_peak_cached = False


class FakeModel:
    def __init__(self) -> None:
        self.loads: list[list[str]] = []

    def load_weights(self, weights) -> None:
        self.loads.append([name for name, _ in weights])


class SamplingParams:
    def __init__(self, **kwargs) -> None:
        self.__dict__.update(kwargs)


def TokensPrompt(prompt_token_ids):  # noqa: N802 - vllm.inputs.TokensPrompt is a TypedDict
    return {"prompt_token_ids": prompt_token_ids}


class LLM:
    built: list[LLM] = []
    generation_eos: int | None = None  # an EOS of generation_config.json the samples end with

    def __init__(self, model, distributed_executor_backend=None, enable_sleep_mode=False, **kw):
        import random

        import numpy as np

        seed = kw.get("seed", 0)
        torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)  # set_random_seed
        multiprocessing = bool(int(os.getenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")))
        if distributed_executor_backend == "external_launcher":
            assert not multiprocessing, (
                "To use external launcher, please set VLLM_ENABLE_V1_MULTIPROCESSING=0"
            )
            int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
        self.kwargs = {
            "model": model,
            "distributed_executor_backend": distributed_executor_backend,
            **kw,
        }
        self.enable_sleep_mode = enable_sleep_mode
        self.llm_engine = SimpleNamespace()
        self.model = FakeModel()
        if not multiprocessing:
            worker = SimpleNamespace(model_runner=SimpleNamespace(model=self.model))
            self.llm_engine.model_executor = SimpleNamespace(
                driver_worker=SimpleNamespace(worker=worker)
            )
        self.asleep: set[str] = set()
        LLM.built.append(self)

    def sleep(self, level: int = 1) -> None:
        assert self.enable_sleep_mode
        self.asleep = {"weights", "kv_cache"}

    def wake_up(self, tags=None) -> None:
        tags = set(tags or ("weights", "kv_cache"))
        assert tags <= {"weights", "kv_cache"}, tags
        if "weights" in tags and Memory.update_peak_cached:
            raise torch.OutOfMemoryError(
                "CUDA out of memory (fake vLLM): torch's caching allocator still holds the "
                "update phase's peak while the weights are mapped back"
            )
        self.asleep -= tags

    def reset_prefix_cache(self) -> None:
        pass

    def generate(self, prompts, params, use_tqdm=True):
        assert not self.asleep, f"generate while {sorted(self.asleep)} sleep"
        self.params = params
        outs = []
        if not isinstance(params, list):
            params = [params] * len(prompts)
        for prompt, p in zip(prompts, params, strict=True):
            completions = []
            for i in range(p.n):
                stop = LLM.generation_eos if LLM.generation_eos is not None else p.stop_token_ids[0]
                ids = [5 + i, 6, stop]
                lps = [{t: SimpleNamespace(logprob=-0.5)} for t in ids]
                completions.append(
                    SimpleNamespace(token_ids=ids, logprobs=lps, finish_reason="stop")
                )
            outs.append(
                SimpleNamespace(prompt_token_ids=prompt["prompt_token_ids"], outputs=completions)
            )
        return outs


@contextmanager
def installed():
    """``import vllm`` finds this module (and ``vllm.inputs``) within the block; the
    environment and torch.cuda.empty_cache are restored after it."""
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams = LLM, SamplingParams
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt
    module.inputs = inputs
    saved = {k: sys.modules.get(k) for k in ("vllm", "vllm.inputs")}
    environ = dict(os.environ)
    empty_cache = torch.cuda.empty_cache
    sys.modules["vllm"], sys.modules["vllm.inputs"] = module, inputs
    torch.cuda.empty_cache = Memory.empty_cache
    Memory.update_peak_cached = False
    LLM.built.clear()
    LLM.generation_eos = None
    try:
        yield module
    finally:
        torch.cuda.empty_cache = empty_cache
        os.environ.clear()
        os.environ.update(environ)
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
