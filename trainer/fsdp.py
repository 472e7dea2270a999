"""FSDP2: G, D and the reference sharded over the data-parallel processes.

Each model is ``fully_shard``-ed per decoder layer, then at its root (PyTorch's
``torch.distributed.fsdp.fully_shard``). Master weights stay fp32 and sharded; forwards
and backwards run in the compute dtype (``MixedPrecisionPolicy(param_dtype=bf16)`` on
GPUs) and gradients are reduce-scattered in fp32. With ``parallel.cpu_offload`` the
sharded weights, gradients and optimizer state live in host memory.

Gradients are *summed* over ranks, not averaged: every rank scales its losses by its
share of the global batch (``trainer.recipes.updates``), so the sum is exactly the
single-process gradient of the whole batch, and two processes train what one does.

Every forward of a sharded module all-gathers its weights, a collective: all ranks must
run the same number of forwards. The micro-batch loop pads with zero-weighted
micro-batches (``updates._micro_batches``); sampling runs on a plain copy that takes the
gathered weights once per update (``rollout.hf``) or in vLLM (``rollout.vllm``).

Without ``torchrun`` (one process) nothing here is used: the single-process trainer keeps
plain modules with fp32 weights and autocast, which compute the same maths.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn

from trainer import distributed

LOGPROBS_METHOD = "gad_response_logprobs"  # the registered forward method of a sharded LM


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks: the modules HF names as never to be split across devices
    (``_no_split_modules``: Qwen2DecoderLayer, LlamaDecoderLayer, ...)."""
    names: set[str] = set()
    for module in model.modules():
        names.update(getattr(module, "_no_split_modules", None) or [])
    if not names:
        names = {
            m.__class__.__name__ for m in model.modules() if "DecoderLayer" in type(m).__name__
        }
    return [m for m in model.modules() if type(m).__name__ in names]


def _policy(
    compute_dtype: torch.dtype, cpu_offload: bool, keep_gathered: bool = False
) -> dict[str, Any]:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy

    world = distributed.world()
    device_type = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    # Offloading to host memory means something only with GPUs (on the CPU everything
    # is in host memory already, and FSDP's offload needs an accelerator to pin for).
    offload = cpu_offload and device_type == "cuda"
    return {
        "mesh": init_device_mesh(device_type, (world.size,)),
        "mp_policy": MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32),
        "offload_policy": CPUOffloadPolicy() if offload else OffloadPolicy(),
        # parallel.gather: model keeps the layers whole from a forward to its backward
        # (one all-gather less per micro-batch); the backward reshards each as it ends.
        # None (layer): torch's default, which also keeps the root gathered to its
        # backward (True would free the embeddings and LM head after every forward).
        "reshard_after_forward": False if keep_gathered else None,
    }


def shard(
    model: nn.Module,
    compute_dtype: torch.dtype,
    cpu_offload: bool = False,
    fp32_modules: tuple[nn.Module, ...] = (),
    keep_gathered: bool = False,
) -> nn.Module:
    """Shard ``model`` in place (decoder layers, then the root) and return it.

    ``fp32_modules`` (D's score head) compute in fp32 whatever the compute dtype: their
    own shard group with an fp32 policy. A causal LM gets the registered forward method
    the trainer calls instead of ``forward``: the response log-probs. ``keep_gathered``:
    ``parallel.gather`` resolved to 'model' (``trainer.plan.keeps_gathered``).
    """
    from torch.distributed.fsdp import FSDPModule, fully_shard, register_fsdp_forward_method

    policy = _policy(compute_dtype, cpu_offload, keep_gathered)
    for layer in decoder_layers(model):
        fully_shard(layer, **policy)
    for module in fp32_modules:
        fully_shard(module, **(policy | _policy(torch.float32, cpu_offload, keep_gathered)))
    fully_shard(model, **policy)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # The ranks' losses are shares of the global batch: sum, do not average.
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # gloo has no PREMUL_SUM
    if hasattr(model, "generate"):
        from trainer.models import _response_logprobs

        setattr(model, LOGPROBS_METHOD, types.MethodType(_response_logprobs, model))
        register_fsdp_forward_method(model, LOGPROBS_METHOD)
    return model


def placement(cpu_offload: bool, compute: torch.device) -> tuple[torch.device, torch.device]:
    """(where a sharded model's parameters live, where its buffers live). Offloaded
    parameters live in host memory (FSDP2's ``CPUOffloadPolicy`` moves each shard to the
    GPU for its compute); buffers (rotary ``inv_freq``...) are not FSDP's to move: they
    stay on the compute device, where the forward reads them and where NCCL can
    broadcast them. Offloading means something with GPUs only (``_policy``)."""
    offload = cpu_offload and compute.type == "cuda"
    return (torch.device("cpu") if offload else compute), compute


def place_buffers(model: nn.Module, device: torch.device) -> None:
    """Every buffer of ``model`` on ``device`` (in place of ``to_empty``'s guess)."""
    for module in model.modules():
        for name, buffer in list(module._buffers.items()):
            if buffer is not None and buffer.device != device:
                module._buffers[name] = buffer.to(device)


def shard_from_rank0(
    build: Callable[[torch.device], nn.Module],
    compute_dtype: torch.dtype,
    cpu_offload: bool = False,
    fp32_modules: Callable[[nn.Module], tuple[nn.Module, ...]] = lambda m: (),
    keep_gathered: bool = False,
) -> nn.Module:
    """A sharded model whose weights only rank 0 reads from disk: the other ranks build
    its modules on the meta device (no memory), all shard, and rank 0's whole state is
    broadcast so that each rank keeps its shards (``set_model_state_dict(...,
    broadcast_from_rank0=True)``), buffers too. A node's host memory then holds one copy
    of the model while loading, not one per GPU. ``build(device)`` makes the model on
    ``device``: the host for rank 0, meta for the others."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    world = distributed.world()
    model = build(torch.device("cpu") if world.main else torch.device("meta"))
    full = dict(model.state_dict()) if world.main else {}
    shard(model, compute_dtype, cpu_offload, fp32_modules(model), keep_gathered)
    on_gpu = dist.get_backend() == "nccl"
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    params_on, buffers_on = placement(cpu_offload, device)
    if not world.main:  # memory for the shards and buffers, filled below
        model.to_empty(device=params_on)
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, full, options=options)
    del full
    # to_empty put the buffers beside the parameters: in host memory when offloading,
    # where NCCL cannot broadcast them and the forward would not find them.
    place_buffers(model, buffers_on)
    for _, buffer in model.named_buffers():  # e.g. rotary frequencies: not in the state
        dist.broadcast(buffer, src=0)
    return model


def reshard(model: nn.Module | None) -> None:
    """Free the gathered weights a forward without backward left whole (every layer's
    with ``parallel.gather: model``; the root's where torch keeps it gathered) after
    scoring and the reference's forwards. Each FSDP unit reshards only its own."""
    if model is not None and is_sharded(model):
        from torch.distributed.fsdp import FSDPModule

        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()


@contextmanager
def forwards(*models: nn.Module | None, keep_gathered: bool = False) -> Iterator[None]:
    """A block of forwards (and their backwards) of ``models``: leaving it reshards them,
    so no unit stays gathered into an optimizer step (it would keep computing with its
    pre-step weights: its next forward finds it gathered and gathers nothing).

    ``keep_gathered``: the next block is the same model's update (a scored D), whose
    first forward then gathers nothing; that block reshards it. Nothing is resharded when
    the block raises (the process ends anyway, and FSDP ignores a reshard mid-forward),
    nor for plain modules (one process)."""
    yield
    if not keep_gathered:
        for model in models:
            reshard(model)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``; return
    the norm before scaling (``torch.nn.utils.clip_grad_norm_``'s contract).

    Under FSDP the gradients are DTensors whose shards partition every gradient, so the
    global squared norm is the sum over ranks of the local shards' squared norms: one
    all-reduce of a scalar, then each rank scales its own shards. (``clip_grad_norm_``
    on the DTensors computes the same, but dispatches every per-tensor op through DTensor,
    three times the cost of this step on a small model.)"""
    from torch.distributed.tensor import DTensor

    grads = [p.grad for p in params if p.grad is not None]
    if not any(isinstance(g, DTensor) for g in grads):
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    # Every gradient a shard (not a replica, which each rank would count again).
    if not all(isinstance(g, DTensor) and g.placements[0].is_shard() for g in grads):
        raise RuntimeError("clip_grad_norm: a gradient that FSDP does not shard")
    local = [cast(DTensor, g).to_local() for g in grads]
    squared = torch.nn.utils.get_total_norm(local, 2.0).double().square()
    total = float(distributed.all_sum(squared).sqrt())
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:  # as clip_grad_norm_: a factor clamped to 1
        for g in local:
            g.mul_(coef)
    return total


# ---------------------------------------------------------------------------- state dicts


def model_state(model: nn.Module) -> dict[str, Any]:
    """The model's state dict, sharded under FSDP (DTensors), for DCP."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model)


def optim_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, opt)


def set_model_state(model: nn.Module, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state)


def set_optim_state(model: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, opt, state)


def full_state(model: nn.Module) -> dict[str, Tensor]:
    """Every weight, gathered whole to rank 0's host memory (other ranks get {})."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return cast("dict[str, Tensor]", get_model_state_dict(model, options=options))


# ---------------------------------------------------------------------------- HF naming


def lora_scaling(model: nn.Module) -> float | None:
    """alpha / r of a peft model's adapter (alpha / sqrt(r) with rsLoRA); None otherwise."""
    config = getattr(model, "peft_config", None)
    if not config:
        return None
    c = config["default"]
    return float(c.lora_alpha / (c.r**0.5 if getattr(c, "use_rslora", False) else c.r))


def hf_name(name: str) -> str:
    """A (peft-wrapped) parameter name in plain HF naming."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


def merge_lora(state: dict[str, Tensor], scaling: float | None) -> dict[str, Tensor]:
    """A full state dict in plain HF naming, with W + scaling * B @ A merged in; the
    adapters' own tensors dropped. The identity (renaming aside) without LoRA."""
    out: dict[str, Tensor] = {}
    for name, t in state.items():
        if ".lora_" in name:
            continue
        if ".base_layer." in name and name.endswith(".weight") and scaling is not None:
            stem = name.removesuffix("base_layer.weight")
            a, b = state[stem + "lora_A.default.weight"], state[stem + "lora_B.default.weight"]
            t = t + scaling * (b.float() @ a.float()).to(t.dtype)
        out[hf_name(name)] = t
    return out


def adapter_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The LoRA adapter's tensors in peft's saved naming (``adapter_model.safetensors``)."""
    return {k.replace(".default.", "."): v for k, v in state.items() if ".lora_" in k}


def _owners(model: nn.Module) -> dict[str, Any]:
    """Each submodule's FSDP unit: its nearest sharded ancestor (or itself), by name."""
    from torch.distributed.fsdp import FSDPModule

    owners: dict[str, Any] = {}
    for prefix, module in model.named_modules():  # parents before their children
        sharded = isinstance(module, FSDPModule)
        owners[prefix] = module if sharded else owners[prefix.rpartition(".")[0]]
    return owners


def iter_hf_weights(model: nn.Module, dtype: torch.dtype) -> Iterator[tuple[str, Tensor]]:
    """(HF name, whole tensor) pairs, one module at a time, LoRA merged on the fly.

    Under FSDP each unit (a decoder layer) is gathered whole when the walk reaches it, in
    one coalesced all-gather (``FSDPModule.unshard``), and resharded when the walk leaves
    it; the root's weights (embeddings, final norm, head) stay gathered for the walk. So at
    most one layer is whole at once besides the root, and every rank must iterate (the
    gathers are collectives). The gathered weights are the compute-dtype copies FSDP runs
    forwards with (LoRA merged in fp32 from them); each tensor yielded has memory of its
    own, valid after the walk moves on. Frozen and trainable weights alike; tied weights
    once.
    """
    scaling = lora_scaling(model)
    seen: set[int] = set()
    owners = _owners(model) if is_sharded(model) else {}
    root = owners.get("")
    current: Any = None
    if root is not None:
        root.unshard()
    try:
        for prefix, module in model.named_modules():
            unit = owners.get(prefix)
            if unit is not None and unit is not root and unit is not current:
                if current is not None:
                    current.reshard()
                current = unit
                current.unshard()
            direct = dict(module.named_parameters(recurse=False)) | dict(
                module.named_buffers(recurse=False)
            )
            if hasattr(module, "base_layer") and scaling is not None:
                continue  # a LoRA Linear: its base_layer child yields the merged weight
            for local, tensor in direct.items():
                if id(tensor) in seen or ".lora_" in f".{prefix}." or local.startswith("lora_"):
                    continue
                if local in module._non_persistent_buffers_set:
                    continue  # e.g. rotary inv_freq: not in the checkpoint, not loaded
                seen.add(id(tensor))
                name = f"{prefix}.{local}" if prefix else local
                value = tensor.detach()
                if scaling is not None and prefix.endswith(".base_layer") and local == "weight":
                    lora = cast(Any, model.get_submodule(prefix.removesuffix(".base_layer")))
                    a = lora.lora_A["default"].weight.detach().float()
                    b = lora.lora_B["default"].weight.detach().float()
                    value = (value.float() + scaling * (b @ a)).to(dtype)
                elif value.is_floating_point():
                    # Its own memory: a gathered weight's is freed when its unit reshards.
                    value = value.to(dtype, copy=bool(owners))
                yield hf_name(name), value
    finally:
        for unit in (current, root):
            if unit is not None:
                unit.reshard()
