"""Rollout backends: the hf sampler against the training forward; the vllm contract."""

import copy
import importlib.util
import os

import pytest
import torch

from trainer.models import load_student, response_logprobs
from trainer.rollout import SamplingSettings
from trainer.rollout.hf import HFRollout
from trainer.sequences import pack


@pytest.fixture(scope="module")
def student(tiny_model):
    return load_student(str(tiny_model), torch.device("cpu"))


def _prompts(tokenizer):
    chats = [[{"role": "user", "content": "hello cat"}], [{"role": "user", "content": "why"}]]
    texts = [
        tokenizer.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in chats
    ]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def test_samples_stop_at_eos_or_max_tokens(student, tokenizer):
    # A bias on EOS makes the random model end most of its answers early.
    model = copy.deepcopy(student)
    head = torch.nn.Linear(model.lm_head.in_features, model.lm_head.out_features, bias=True)
    head.weight = model.lm_head.weight
    with torch.no_grad():
        head.bias.zero_()
        head.bias[tokenizer.eos_token_id] = 5.0
    model.lm_head = head
    torch.manual_seed(0)
    settings = SamplingSettings(temperature=1.0, max_new_tokens=6, batch_size=5)
    rollout = HFRollout(model, tokenizer, settings).sample(_prompts(tokenizer), 8)
    assert len(rollout.responses) == 16
    eos = tokenizer.eos_token_id
    for resp, done in zip(rollout.responses, rollout.terminated, strict=True):
        assert 1 <= len(resp) <= 6
        assert (resp[-1] == eos) == done and eos not in resp[:-1]
    assert any(rollout.terminated) and not all(rollout.terminated)


def test_greedy_gives_identical_samples_within_a_group(student, tokenizer):
    settings = SamplingSettings(max_new_tokens=5, batch_size=3)
    rollout = HFRollout(student, tokenizer, settings).sample(_prompts(tokenizer), 2, greedy=True)
    r = rollout.responses
    assert len(r) == 4 and r[0] == r[1] and r[2] == r[3]


def test_sampler_logprobs_equal_the_training_forward(student, tokenizer):
    """Left-padded generation and the right-padded training forward see the same model;
    rows are prompt-major (a wrong order would pair samples with the wrong prompt)."""
    torch.manual_seed(1)
    settings = SamplingSettings(temperature=1.0, max_new_tokens=5, batch_size=4, want_logprobs=True)
    prompts = _prompts(tokenizer)
    rollout = HFRollout(student, tokenizer, settings).sample(prompts, 2)
    rows = [p for p in prompts for _ in range(2)]
    with torch.no_grad():
        logp, _ = response_logprobs(student, pack(rows, rollout.responses, tokenizer.pad_token_id))
    for i, lps in enumerate(rollout.logprobs):
        torch.testing.assert_close(logp[i, : len(lps)], torch.tensor(lps), atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_backend_contract(tiny_model, tokenizer):  # pragma: no cover - GPU nodes only
    if not torch.cuda.is_available():
        pytest.skip("vllm needs a CUDA device")
    from trainer.rollout.vllm import VLLMRollout

    model = load_student(str(tiny_model), torch.device("cuda"))
    settings = SamplingSettings(max_new_tokens=6, dtype=torch.bfloat16, device="cuda")
    backend = VLLMRollout(model, tokenizer, settings)
    rollout = backend.sample(_prompts(tokenizer), 3)
    assert len(rollout.responses) == 6 and len(rollout.logprobs) == 6
    # A finished answer ends with an EOS it sampled: the tokenizer's, or one of the
    # generation config's (vLLM stops at those too).
    extra = getattr(model.generation_config, "eos_token_id", None)
    eos_ids = {tokenizer.eos_token_id} | set(extra if isinstance(extra, list) else [extra])
    for resp, done in zip(rollout.responses, rollout.terminated, strict=True):
        assert 1 <= len(resp) <= 6 and (not done or resp[-1] in eos_ids)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    backend.sync_weights(model)  # must not raise; sampling continues with the new weights
    assert len(backend.sample(_prompts(tokenizer), 1).responses) == 2


@pytest.mark.parametrize("temperature", [0.5, 0.8])
def test_greedy_sampler_and_trainer_report_the_same_logprobs_at_a_temperature(
    student, tokenizer, temperature
):
    """The sampler and the policy update describe one distribution, logits / T."""
    settings = SamplingSettings(
        temperature=temperature, max_new_tokens=5, batch_size=4, want_logprobs=True
    )
    prompts = _prompts(tokenizer)
    rollout = HFRollout(student, tokenizer, settings).sample(prompts, 1, greedy=True)
    with torch.no_grad():
        logp, _ = response_logprobs(
            student,
            pack(prompts, rollout.responses, tokenizer.pad_token_id),
            temperature=temperature,
        )
    for i, lps in enumerate(rollout.logprobs):
        torch.testing.assert_close(logp[i, : len(lps)], torch.tensor(lps), atol=1e-4, rtol=1e-4)


def test_the_policy_update_uses_the_rollout_temperature(monkeypatch):
    """Every generator log-prob of the update (current, reference) is taken at cfg.temperature."""
    from trainer.recipes import updates

    seen = []

    def spy(model, batch, want_entropy=False, temperature=1.0):
        seen.append(temperature)
        zeros = torch.zeros(batch.response_mask.shape, requires_grad=True)
        return zeros, zeros.detach()

    monkeypatch.setattr(updates, "response_logprobs", spy)
    monkeypatch.setattr(updates, "clip_and_step", lambda *a: 0.0)
    run = _fake_run(temperature=0.7)
    updates.policy_update(run, [[1, 2]], [[3, 4]], torch.tensor([1.0]))
    updates.sft_update(run, [_Example([1, 2], [3, 4])])
    assert seen == [0.7, 0.7, 1.0]  # policy: current and reference; SFT at 1


class _Example:
    def __init__(self, prompt_ids, teacher_ids):
        self.prompt_ids, self.teacher_ids = prompt_ids, teacher_ids


def _fake_run(temperature: float):
    from types import SimpleNamespace

    cfg = SimpleNamespace(
        temperature=temperature,
        micro_batch_tokens=1024,
        gad=SimpleNamespace(kl_coef=0.001, clip_low=0.2, clip_high=0.2, dual_clip=3.0),
        optim=SimpleNamespace(grad_clip=1.0),
    )
    opt = SimpleNamespace(param_groups=[{"lr": 1.0}])
    return SimpleNamespace(
        cfg=cfg,
        device=torch.device("cpu"),
        dtype=torch.float32,
        student=None,
        reference=object(),
        tokenizer=SimpleNamespace(pad_token_id=0),
        g_opt=opt,
        rollout=SimpleNamespace(sync_weights=lambda model: None),
    )


# ---------------------------------------------------------------------------- vLLM weight sync


def _layout(arch: str, tmp_path):
    """A tiny random model of the Qwen2 (tied embeddings, q/k/v biases) or Llama (untied
    head, no biases) layout, saved in HF format."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 128}  # fmt: skip
    config = (
        Qwen2Config(**small, tie_word_embeddings=True)
        if arch == "qwen2"
        else LlamaConfig(**small, tie_word_embeddings=False)
    )
    torch.manual_seed(0)
    path = tmp_path / arch
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    return path


def _expected(path):
    """What vLLM's load_weights of that architecture takes: the HF checkpoint's keys."""
    from safetensors.torch import load_file

    return {k: tuple(v.shape) for k, v in load_file(path / "model.safetensors").items()}


class FakeEngine:
    """Stands in for the in-process vLLM model: records each load_weights call."""

    def __init__(self):
        self.calls: list[list[tuple[str, tuple[int, ...], torch.dtype]]] = []
        self.values: dict[str, torch.Tensor] = {}

    def load_weights(self, weights):
        weights = list(weights)
        self.calls.append([(n, tuple(t.shape), t.dtype) for n, t in weights])
        self.values |= {n: t.float().cpu() for n, t in weights}


def _check_sync(model, path, lora) -> FakeEngine:
    from trainer.rollout.vllm import layer_key, push_weights

    engine = FakeEngine()
    calls = push_weights(model, engine.load_weights, torch.bfloat16)
    pushed = {n: s for call in engine.calls for n, s, _ in call}
    assert calls == len(engine.calls) and pushed == _expected(path)
    assert sum(len(c) for c in engine.calls) == len(pushed)  # each name once
    for call in engine.calls:  # one layer (or one non-layer tensor) per call, in bf16
        assert len({layer_key(n) for n, _, _ in call}) == 1
        assert all(dtype == torch.bfloat16 for _, _, dtype in call)
    assert sum(".layers." in c[0][0] for c in engine.calls) == 2
    return engine


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("arch", ["qwen2", "llama"])
def test_vllm_sync_pushes_the_hf_weights_one_layer_at_a_time(tmp_path, arch, lora):
    from trainer.config import LoraConfig

    path = _layout(arch, tmp_path)
    adapters = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]) if lora else None
    model = _trained(load_student(str(path), torch.device("cpu"), lora=adapters))
    engine = _check_sync(model, path, lora)
    _check_values(engine, model)


def _trained(model):
    """LoRA adapters as if trained: B != 0, so the merge shows in the pushed weights; A
    and B the same on every rank (peft draws A from each process's own RNG)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(std=0.5)
    return model


def _check_values(engine: FakeEngine, model) -> None:
    """The pushed values are the model's (LoRA merged), as they were when pushed."""
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    for name, value in merged.state_dict().items():
        if name in engine.values:
            torch.testing.assert_close(
                engine.values[name], value.to(torch.bfloat16).float(), msg=name
            )


def _sync_rank(rank: int, world: int, port: int, path: str, lora: bool) -> None:
    import copy
    import os

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    torch.set_num_threads(1)
    from pathlib import Path

    from trainer import distributed, fsdp
    from trainer.config import LoraConfig

    distributed.init("cpu")
    try:
        adapters = LoraConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"]) if lora else None
        model = _trained(load_student(path, torch.device("cpu"), lora=adapters))
        whole = copy.deepcopy(model)
        fsdp.shard(model, torch.float32)
        engine = _check_sync(model, Path(path), lora)  # every rank pushes to its own engine
        _check_values(engine, whole)  # each layer's values, though resharded since
        # In the compute dtype (no cast, no copy of its own): still valid after the walk.
        walked = dict(fsdp.iter_hf_weights(model, torch.float32))
        merged = whole.merge_and_unload() if lora else whole
        for name, value in merged.state_dict().items():
            torch.testing.assert_close(walked[name], value, msg=name)
    finally:
        distributed.shutdown()
    distributed.end_process(0)  # as `python -m trainer` does under torchrun


@pytest.mark.slow
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_vllm_sync_under_fsdp_gathers_each_layer_on_every_rank(tmp_path, lora):
    import socket

    path = _layout("llama", tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_sync_rank, args=(2, port, str(path), lora), nprocs=2, join=True)


def _gather_rank(rank: int, world: int, port: int, path: str) -> None:
    import os

    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})  # fmt: skip
    torch.set_num_threads(1)
    from torch.distributed.tensor import DTensor

    from trainer import distributed, fsdp

    def sharded(model) -> set[bool]:
        return {isinstance(p, DTensor) for p in model.parameters()}

    distributed.init("cpu")
    try:
        for keep in (False, True):
            model = fsdp.shard(load_student(path, torch.device("cpu")), torch.float32,
                               keep_gathered=keep)  # fmt: skip
            with torch.no_grad():
                model(input_ids=torch.tensor([[1, 2, 3, 4]]))
            # After a forward without backward, parallel.gather: layer leaves only the
            # root gathered (torch's default for it); model leaves every layer whole too,
            # and reshard frees them all.
            layers = {isinstance(p, DTensor) for p in model.model.layers.parameters()}
            root = {isinstance(p, DTensor) for p in model.model.embed_tokens.parameters()}
            assert (layers, root) == (({False}, {False}) if keep else ({True}, {False})), keep
            fsdp.reshard(model)
            assert sharded(model) == {True}, keep
    finally:
        distributed.shutdown()
    distributed.end_process(0)


@pytest.mark.slow
def test_reshard_frees_every_layer_that_gather_model_kept_whole(tmp_path):
    import socket

    path = _layout("qwen2", tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_gather_rank, args=(2, port, str(path)), nprocs=2, join=True)


def test_a_one_gpu_vllm_rollout_runs_its_engine_in_process(student, tokenizer):
    """One process (no torchrun): the engine must still be in this process, or its
    model's load_weights cannot be reached and the first rollout dies. vLLM 0.32.0
    starts it in a child process unless VLLM_ENABLE_V1_MULTIPROCESSING=0
    (``vllm/envs.py`` L1463-1465, ``vllm/v1/engine/llm_engine.py`` L136-138, L186-188);
    the external launcher needs that and RANK/LOCAL_RANK
    (``vllm/v1/executor/uniproc_executor.py`` L180-183, L195-196). TRL and verl use the
    external launcher at every world size. The fake: tests/trainer/fake_vllm.py."""
    from tests.trainer.fake_vllm import LLM, installed

    with installed():
        os.environ.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
            os.environ.pop(name, None)
        from trainer.rollout.vllm import VLLMRollout

        settings = SamplingSettings(max_new_tokens=4)
        rollout = VLLMRollout(student, tokenizer, settings).sample(_prompts(tokenizer), 2)
        assert len(rollout.responses) == 4
        engine = LLM.built[-1]
        assert engine.kwargs["distributed_executor_backend"] == "external_launcher"
        assert engine.model.loads  # the student's weights were pushed before generating


def test_every_wake_up_hands_torchs_cached_memory_back_first(student, tokenizer):
    """The second rollout follows an update phase whose peak torch's caching allocator
    still holds; vLLM maps its weights back outside that cache
    (``vllm/device_allocator/cumem.py`` L331-350), so without
    ``torch.cuda.empty_cache()`` first it runs out of memory (TRL empties the cache
    before every wake-up: ``trl/trainer/grpo_trainer.py``). The fake counts it."""
    from tests.trainer.fake_vllm import Memory, installed

    with installed():
        from trainer.rollout.vllm import VLLMRollout

        backend = VLLMRollout(student, tokenizer, SamplingSettings(max_new_tokens=4))
        backend.sample(_prompts(tokenizer), 1)
        Memory.training_step()  # the policy and discriminator update
        backend.sync_weights(student)
        assert len(backend.sample(_prompts(tokenizer), 1).responses) == 2


def test_vllm_samples_are_kept_as_sampled_from_one_seeded_engine(student, tokenizer):
    """vLLM 0.32 (tests/trainer/fake_vllm.py for the lines):
    - it also stops at the EOS ids of generation_config.json (``vllm/sampling_params.py``
      L772-800): a completion that ends with one is kept as sampled, never given the
      tokenizer's EOS with log-prob 0, a token the model did not sample that G and D
      would then train on;
    - one seed, the engine's: a seed per request turns off FlashInfer's fused
      top-k/top-p sampler (``vllm/v1/worker/gpu/sample/sampler.py`` L307-312), and a
      request without one draws it from numpy's generator, which the trainer seeds
      (``vllm/v1/worker/gpu/sample/states.py`` L54-58);
    - its worker seeds torch, random and numpy in this process
      (``vllm/v1/worker/gpu_worker.py`` L522): the trainer's generators are left as
      they were;
    - no weights read from disk: ``load_format="dummy"``, as verl does."""
    import random

    from tests.trainer.fake_vllm import LLM, installed

    with installed():
        from trainer.rollout.vllm import VLLMRollout

        torch.manual_seed(1234)
        random.seed(1234)
        expected = torch.rand(3), random.random()
        torch.manual_seed(1234)
        random.seed(1234)
        backend = VLLMRollout(student, tokenizer, SamplingSettings(max_new_tokens=4, seed=7))
        got = torch.rand(3), random.random()
        torch.testing.assert_close(got[0], expected[0])
        assert got[1] == expected[1]
        engine = LLM.built[-1]
        assert engine.kwargs["load_format"] == "dummy" and engine.kwargs["seed"] == 7

        other_eos = tokenizer.eos_token_id + 1
        LLM.generation_eos = other_eos
        rollout = backend.sample(_prompts(tokenizer), 2, seeds=[11, 12])
        for ids, lps, done in zip(
            rollout.responses, rollout.logprobs, rollout.terminated, strict=True
        ):
            assert ids[-1] == other_eos and done and len(lps) == len(ids)
            assert 0.0 not in lps  # every log-prob is one the model sampled
        assert not isinstance(engine.params, list)  # one SamplingParams for the batch
        assert getattr(engine.params, "seed", None) is None


def test_the_fsdp_sampler_copy_is_built_in_the_compute_dtype_and_filled_a_tensor_at_a_time(
    student, tokenizer, monkeypatch
):
    """Under FSDP the hf sampler generates on a plain copy of G. It was built in fp32
    (4 bytes a parameter: 30 GB at 7B) and each sync gathered the whole model into a
    dict beside it (a second whole model). Now: built in the compute dtype, and each
    gathered tensor copied in and dropped before the next is gathered."""
    import weakref

    from transformers import AutoModelForCausalLM

    from trainer import fsdp
    from trainer.rollout import hf as hf_rollout

    built: list[set[torch.dtype]] = []
    real = AutoModelForCausalLM.from_config

    def from_config(config, **kwargs):
        model = real(config, **kwargs)
        built.append({p.dtype for p in model.parameters()})
        return model

    alive: list[int] = []
    refs: list[weakref.ref] = []

    def weights(model, dtype):
        for name, tensor in student.state_dict().items():
            alive.append(sum(r() is not None for r in refs))  # earlier tensors still held
            out = tensor.detach().to(dtype).clone()
            refs.append(weakref.ref(out))
            yield name, out

    monkeypatch.setattr(AutoModelForCausalLM, "from_config", from_config)
    monkeypatch.setattr(fsdp, "is_sharded", lambda model: True)
    monkeypatch.setattr(fsdp, "iter_hf_weights", weights)
    settings = SamplingSettings(max_new_tokens=3, dtype=torch.bfloat16)
    backend = hf_rollout.HFRollout(student, tokenizer, settings)
    copy = backend._generator()
    assert built == [{torch.bfloat16}]  # never an fp32 model first
    assert max(alive) <= 1  # at most the tensor just copied in
    for name, value in student.state_dict().items():
        torch.testing.assert_close(copy.state_dict()[name], value.to(torch.bfloat16))
