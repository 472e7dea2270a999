"""Loading the student, its tokenizer and the KL reference; response log-probs.

Precision: `dtype` is the *compute* dtype. Trainable weights stay float32 and forwards run
under autocast, because AdamW at the paper's lr (1e-6) rounds most bf16 weight updates away
(bf16 keeps 8 mantissa bits). Frozen models (reference, rollout copies) use the compute
dtype directly to save memory.
"""

from __future__ import annotations

import contextlib
import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from trainer.config import LoraConfig
from trainer.errors import BadInput
from trainer.sequences import SeqBatch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The transformers/peft API of a model (config, generate, save_pretrained,
# merge_and_unload, ...) is reached through nn.Module.__getattr__, which torch types as
# `Tensor | Module`; code calling that API goes through `cast(Any, model)`.

HEAD_CHUNK_TOKENS = 2048  # rows of the vocab projection materialized at once


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInput("device: cuda was requested but no CUDA device is visible")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[None]:
    """Mixed precision for forwards when the compute dtype is below fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def check_model_ref(name_or_path: str, what: str) -> None:
    """A path that looks local must exist; anything else may be a hub id ("org/name")."""
    if os.path.exists(name_or_path):
        return
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local or not name_or_path:
        raise BadInput(f"{what} {name_or_path!r}: no such directory")


def load_error(name_or_path: str, what: str, err: Exception) -> BadInput:
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    hint = " (HF_HUB_OFFLINE=1: only models already in the hub cache load)" if offline else ""
    return BadInput(
        f"{what} {name_or_path!r} could not be loaded{hint}: it is neither a local model "
        f"directory nor a reachable hub id ({type(err).__name__}: {err})"
    )


def load_tokenizer(name_or_path: str, what: str = "student") -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    check_model_ref(name_or_path, what)
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise load_error(name_or_path, what, e) from e
    if tok.eos_token_id is None:
        raise BadInput(f"the tokenizer of {what} {name_or_path!r} has no eos_token")
    if tok.pad_token_id is None:  # only used as filler under a zero attention mask
        tok.pad_token = tok.eos_token
    return tok


def dtype_kwarg(dtype: torch.dtype) -> dict[str, Any]:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def load_causal_lm(name_or_path: str, dtype: torch.dtype, what: str = "student") -> nn.Module:
    from transformers import AutoModelForCausalLM

    check_model_ref(name_or_path, what)
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, **dtype_kwarg(dtype))
    except (OSError, ValueError) as e:
        raise load_error(name_or_path, what, e) from e


def empty_model(name_or_path: str, causal: bool, what: str = "student") -> nn.Module:
    """The model's modules from its config alone, on the meta device (no weights)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    check_model_ref(name_or_path, what)
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError) as e:
        raise load_error(name_or_path, what, e) from e
    factory = AutoModelForCausalLM if causal else AutoModel
    with torch.device("meta"):
        model: nn.Module = factory.from_config(config, **dtype_kwarg(torch.float32))
    return model


def disable_dropout(model: nn.Module) -> None:
    """No dropout: train-mode forwards then equal the no-grad scoring and sampling passes
    (on-policy ratio exactly 1, cached D scores exact)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        # HF attention layers keep their dropout as a float passed to the kernel
        if isinstance(getattr(module, "attention_dropout", None), float):
            cast(Any, module).attention_dropout = 0.0
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "attention_dropout"):
        config.attention_dropout = 0.0


def apply_lora(model: nn.Module, lora: LoraConfig) -> nn.Module:
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    cfg = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )
    return get_peft_model(model, cfg)


def prepare_trainable(
    model: nn.Module, device: torch.device | None, gradient_checkpointing: bool
) -> nn.Module:
    """fp32 master weights on `device` (None: where they are, e.g. the meta device), no
    dropout, optional activation checkpointing."""
    if device is not None:
        model.to(device=device, dtype=torch.float32)
    disable_dropout(model)
    if gradient_checkpointing:
        # Non-reentrant: works with LoRA (frozen inputs) without enable_input_require_grads.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x name
            cast(Any, model).activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            cast(Any, model).gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    cast(Any, model).config.use_cache = False
    model.train()
    return model


def load_student(
    name_or_path: str,
    device: torch.device,
    lora: LoraConfig | None = None,
    gradient_checkpointing: bool = False,
    adapter_dir: str | Path | None = None,
) -> nn.Module:
    """The trainable student (optionally with LoRA; `adapter_dir` restores trained adapters).

    On the meta device (``device`` meta) only its structure is built, from the config:
    FSDP's ranks other than 0 receive their shards of rank 0's weights instead of each
    loading the whole model into host memory (``trainer.fsdp.shard_from_rank0``)."""
    if device.type == "meta":
        model = empty_model(name_or_path, causal=True)
        if lora is not None:
            model = apply_lora(model, lora)
        return prepare_trainable(model, None, gradient_checkpointing)
    model = load_causal_lm(name_or_path, torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)
    elif lora is not None:
        model = apply_lora(model, lora)
    return prepare_trainable(model, device, gradient_checkpointing)


def frozen_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A frozen snapshot (LoRA merged) in the compute dtype: the KL reference."""
    return as_reference(copy.deepcopy(model), dtype)


def as_reference(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``model`` itself made a frozen reference (LoRA merged into its weights)."""
    if hasattr(model, "merge_and_unload"):
        model = cast(Any, model).merge_and_unload()
    return freeze(model, dtype)


def freeze(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """In place: the compute dtype, eval mode, no gradients, no activation checkpointing."""
    model.to(dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    if hasattr(model, "activation_checkpointing_disable"):  # transformers >= 5.x name
        cast(Any, model).activation_checkpointing_disable()
    elif getattr(model, "is_gradient_checkpointing", False):
        cast(Any, model).gradient_checkpointing_disable()
    return model


def load_reference(
    path: str, base_model: str, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """A saved student (full weights, or a LoRA adapter over `base_model`) as a frozen
    reference in the compute dtype."""
    model: nn.Module
    if Path(path, "adapter_config.json").exists():
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_causal_lm(base_model, torch.float32), path)
        model = model.merge_and_unload()
    else:
        model = load_causal_lm(path, torch.float32, what="reference model")
    model.to(device=device, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def backbone_and_head(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The transformer body and the vocab projection of a causal LM (LoRA-wrapped or not)."""
    hf = cast(Any, model)
    base = hf.get_base_model() if hasattr(model, "get_base_model") else hf
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def _head_logp(
    head: nn.Module, hidden: Tensor, targets: Tensor, want_entropy: bool, temperature: float
) -> tuple[Tensor, Tensor]:
    logits = head(hidden).float()  # log-softmax in fp32: bf16 loses the small log-probs
    if temperature != 1.0:
        logits = logits / temperature
    logz = torch.logsumexp(logits, dim=-1)
    logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logz
    if not want_entropy:
        return logp, torch.zeros_like(logp)
    with torch.no_grad():
        entropy = logz - (torch.softmax(logits, dim=-1) * logits).sum(-1)
    return logp, entropy


def response_logprobs(
    model: nn.Module, batch: SeqBatch, want_entropy: bool = False, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Log-prob (and entropy) of each response token; see ``_response_logprobs``.

    A model sharded with FSDP2 runs it as its registered forward method
    (``trainer.fsdp.shard``), which gathers the root's weights (embeddings, LM head) that
    calling the backbone and the head directly would skip.
    """
    registered = getattr(model, "gad_response_logprobs", None)  # trainer.fsdp.LOGPROBS_METHOD
    if registered is not None:
        return cast("tuple[Tensor, Tensor]", registered(batch, want_entropy, temperature))
    return _response_logprobs(model, batch, want_entropy, temperature)


def _response_logprobs(
    model: nn.Module, batch: SeqBatch, want_entropy: bool = False, temperature: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Log-prob (and entropy) of each response token under `model` at ``temperature``:
    ``log_softmax(logits / temperature)`` at the response tokens (GAD.md, "Temperature").

    The policy update passes the rollout's sampling temperature (for the current, old and
    reference log-probs and the entropy alike), so that the ratio, the KL and the entropy
    describe the distribution the samples were drawn from; SFT uses 1.

    batch: SeqBatch with R rows -> (logp [R, T], entropy [R, T]), 0 on padding.
    The vocab projection runs only on response positions, in chunks under activation
    checkpointing, so [tokens, vocab] logits (152k wide for Qwen) never sit in memory whole.
    """
    backbone, head = backbone_and_head(model)
    hidden = backbone(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
    ).last_hidden_state
    # token j of the response is predicted from the hidden state one position earlier
    pos = (batch.response_pos - 1).clamp(min=0)
    mask = batch.response_mask.bool()
    rows = torch.arange(hidden.shape[0], device=hidden.device).unsqueeze(1).expand_as(pos)
    h = hidden[rows[mask], pos[mask]]  # [n, H]
    targets = batch.response_ids[mask]
    parts_lp, parts_ent = [], []
    for start in range(0, h.shape[0], HEAD_CHUNK_TOKENS):
        hs, ts = h[start : start + HEAD_CHUNK_TOKENS], targets[start : start + HEAD_CHUNK_TOKENS]
        if torch.is_grad_enabled():
            lp, ent = checkpoint(
                _head_logp, head, hs, ts, want_entropy, temperature, use_reentrant=False
            )
        else:
            lp, ent = _head_logp(head, hs, ts, want_entropy, temperature)
        parts_lp.append(lp)
        parts_ent.append(ent)
    logp = torch.zeros(mask.shape, dtype=torch.float32, device=h.device)
    entropy = torch.zeros(mask.shape, dtype=torch.float32, device=h.device)
    logp = logp.masked_scatter(mask, torch.cat(parts_lp))
    entropy = entropy.masked_scatter(mask, torch.cat(parts_ent).detach())
    return logp, entropy
