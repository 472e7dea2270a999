"""Rollouts with vLLM colocated with training: one in-process engine per rank.

The pattern of TRL's colocate mode. Every trainer rank owns an engine built with
``distributed_executor_backend="external_launcher"`` (it joins torchrun's process group
instead of spawning workers, so the engine and its model live in this process) and
``enable_sleep_mode=True``: it sleeps, weights and KV cache released, while FSDP updates
the models, and wakes for generation. Before each generation the student's weights are
pushed into the engine's ``load_weights`` one decoder layer at a time, each tensor the
FSDP parameter's ``full_tensor()`` (LoRA merged on the fly), never the whole state dict.

With ``rollout.tensor_parallel_size`` k > 1, each group of k consecutive ranks shares one
engine sharded k ways: the group gathers its prompts, generates them together, and each
rank keeps its own answers.

Built against vLLM 0.32.x (the ``gpu`` extra pins the range). vLLM is not
installed on the development machines; ``tests/trainer/test_rollout.py`` checks the sync
against a fake engine, and ``bench/gpu_smoke.sh`` compares vLLM's log-probs with the
trainer's after a sync wherever vLLM is installed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any, cast

import torch
from torch import Tensor, nn

from trainer import distributed, fsdp
from trainer.errors import BadInput
from trainer.rollout.base import Rollout, SamplingSettings

WeightLoader = Callable[[list[tuple[str, Tensor]]], Any]


def layer_key(name: str) -> str:
    """The decoder layer a weight belongs to (``model.layers.3``), or the name itself."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layers" and parts[i + 1].isdigit():
            return ".".join(parts[: i + 2])
    return name


def layer_batches(model: nn.Module, dtype: torch.dtype) -> Iterator[list[tuple[str, Tensor]]]:
    """The model's weights in HF naming, grouped by decoder layer (embeddings, norm and
    head alone), each whole and in ``dtype``: at most one layer is gathered at a time."""
    batch: list[tuple[str, Tensor]] = []
    current = None
    for name, tensor in fsdp.iter_hf_weights(model, dtype):
        key = layer_key(name)
        if batch and key != current:
            yield batch
            batch = []
        current = key
        batch.append((name, tensor))
    if batch:
        yield batch


def push_weights(model: nn.Module, load: WeightLoader, dtype: torch.dtype) -> int:
    """Push every weight into an engine's ``load_weights``, one layer per call; every rank
    takes part (the gathers are collectives). Returns the number of calls."""
    calls = 0
    for batch in layer_batches(model, dtype):
        load(batch)
        calls += 1
    return calls


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
        self.model = model
        self.eos_id: int = tokenizer.eos_token_id
        world = distributed.world()
        self.tp = settings.tensor_parallel_size
        self.tp_group = None
        if world.parallel and self.tp > 1:
            # Consecutive ranks share an engine; new_subgroups_by_enumeration is collective.
            groups = [list(range(i, i + self.tp)) for i in range(0, world.size, self.tp)]
            self.tp_group, _ = torch.distributed.new_subgroups_by_enumeration(groups)
        hf = cast(Any, model)  # the transformers/peft API (trainer.models)
        base = hf.get_base_model() if hasattr(model, "get_base_model") else hf
        name = base.config._name_or_path
        # The engine in this process at every world size, as TRL and verl build it: with
        # multiprocessing on (vLLM's default) it runs in a child process, and
        # llm_engine.model_executor, whose load_weights the sync calls, does not exist.
        # The external launcher wants it off, and torchrun's variables (set here for a
        # single process started without torchrun).
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        _rendezvous_env()
        # vLLM seeds torch, random and numpy when its worker starts (set_random_seed): in
        # this process, the trainer's own generators. They are put back as they were.
        with _own_rng():
            self.llm = LLM(
                model=name,
                tokenizer=name,
                dtype=str(settings.dtype).removeprefix("torch."),
                gpu_memory_utilization=settings.gpu_memory_utilization,
                tensor_parallel_size=self.tp,
                distributed_executor_backend="external_launcher",
                enable_sleep_mode=True,
                seed=settings.seed,  # once: no seed per request (see sample)
                max_model_len=settings.max_model_len,
                enable_prefix_caching=True,  # the N samples of a prompt share its KV cache
                # No weights read from disk: the student's are pushed before each generation
                # (verl builds its rollout engines so too).
                load_format="dummy",
            )
        self.llm.sleep(level=2)  # weights are pushed before each generation

    def _load_weights(self) -> WeightLoader:
        """The engine's model's ``load_weights`` (in this process: external launcher)."""
        engine = self.llm.llm_engine
        for path in (
            "model_executor.driver_worker.worker.model_runner.model",  # V1
            "model_executor.driver_worker.model_runner.model",  # V0
        ):
            obj: Any = engine
            try:
                for attr in path.split("."):
                    obj = getattr(obj, attr)
            except AttributeError:
                continue
            return cast(WeightLoader, obj.load_weights)
        raise BadInput(
            "rollout.backend: vllm: this vLLM release does not expose its in-process model "
            "(llm_engine.model_executor.driver_worker...); use the pinned range of the "
            "gpu extra (docs/deployment.md)"
        )

    def sync_weights(self, model: nn.Module) -> None:
        """Remember the model: its weights are pushed when the engine next wakes up."""
        self.model = model

    def _wake_with_weights(self) -> None:
        # What the update phase left reserved in torch's caching allocator goes back to
        # the device first: vLLM maps its weights and KV cache back with its own
        # allocator, outside torch's cache (TRL empties the cache before every wake-up).
        torch.cuda.empty_cache()
        self.llm.wake_up(tags=["weights"])
        push_weights(self.model, self._load_weights(), self.settings.dtype)
        self.llm.wake_up(tags=["kv_cache"])
        self.llm.reset_prefix_cache()  # cached KV blocks were computed with the old weights

    def sample(
        self,
        prompts: list[list[int]],
        n: int,
        greedy: bool = False,
        seeds: list[int] | None = None,
    ) -> Rollout:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        s = self.settings
        # ``seeds`` (the hf sampler's per-prompt seeds) are not passed on. In 0.32 they
        # would no longer cost a Python loop (Model Runner V2 samples every request from
        # its own seed in one kernel), but they turn off FlashInfer's fused top-k/top-p
        # sampler (vllm/v1/worker/gpu/sample/sampler.py L307-312). A request without a
        # seed draws one from numpy's global generator in this process (states.py in the
        # same folder, L54-58), which the trainer seeds and _own_rng gives back, so runs
        # stay reproducible; samples then differ with the world size.
        del seeds
        mine = len(prompts)
        if self.tp_group is not None:  # the group's prompts, in rank order
            prompts, _ = _gather_group(self.tp_group, prompts, [0] * len(prompts))
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
        self._wake_with_weights()
        try:
            outs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False
            )
        finally:
            self.llm.sleep(level=2)
        if self.tp_group is not None:  # keep this rank's prompts
            rank = torch.distributed.get_rank(self.tp_group)
            outs = outs[rank * mine : (rank + 1) * mine]
        return self._rollout(outs)

    def _rollout(self, outs: list[Any]) -> Rollout:
        logprobs: list[list[float]] = []
        rollout = Rollout(responses=[], terminated=[], logprobs=logprobs)
        for out in outs:  # vLLM keeps the prompt order; each has n completions
            for c in out.outputs:
                # Exactly what was sampled: vLLM also stops at the EOS ids of the model's
                # generation_config.json (0.32: vllm/sampling_params.py L772-800), and an
                # EOS it did not sample, appended here with log-prob 0, would be trained
                # on by G and D.
                ids = list(c.token_ids)
                lps = [d[t].logprob for d, t in zip(c.logprobs or [], ids, strict=False)]
                terminated = c.finish_reason == "stop"
                rollout.responses.append(ids)
                rollout.terminated.append(terminated)
                logprobs.append(lps)
        return rollout


@contextlib.contextmanager
def _own_rng() -> Iterator[None]:
    """Leave the process's random generators as they were (vLLM's worker seeds torch,
    random and numpy in this process: 0.32, vllm/v1/worker/gpu_worker.py L522, and again
    after its warm-up, L1062-1064)."""
    import random

    import numpy as np

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _rendezvous_env() -> None:
    """torchrun's variables for a process it did not start (one GPU, ``python -m trainer
    run``): vLLM's external launcher reads RANK and LOCAL_RANK and joins (or creates) the
    process group from env://."""
    if "RANK" in os.environ:
        return
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for name, value in {
        "RANK": "0",
        "LOCAL_RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }.items():
        os.environ.setdefault(name, value)


def _gather_group(
    group: Any, prompts: list[list[int]], seeds: list[int]
) -> tuple[list[list[int]], list[int]]:
    parts = distributed.gather_json([prompts, seeds], group=group)
    return [p for ps, _ in parts for p in ps], [s for _, ss in parts for s in ss]
