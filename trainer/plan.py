"""The memory planner: per-GPU memory of a job, part by part, before it is launched.

``python -m trainer plan --config X --nodes N --gpus-per-node G --gpu-memory-gb M`` and
the launch form use it. Torch-free (the web imports it): the model's shape comes from its
``config.json`` (a local directory) or from a table of common hub models.

What a training process holds, with P parameters and W = nodes x gpus_per_node processes
sharing them through FSDP2 (one process: plain modules, nothing sharded):

- resident, sharded over W: trainable weights as fp32 masters (4 B/param), their fp32
  gradients (4 B) and AdamW's two moments (8 B), for G and for D; frozen weights (LoRA's
  base, fp32 as the trainer loads them) at 4 B; the KL reference in the compute dtype;
- transient, whole on every rank: the layers FSDP has gathered (the current and the
  prefetched one, in the compute dtype, and their gradients before the reduce-scatter),
  and the root's embeddings and LM head, which stay gathered through a forward and its
  backward; with ``parallel.gather: model`` the whole model in the compute dtype instead,
  from a forward to its backward (``auto`` takes that where it fits with 15% to spare);
- activations of one micro-batch of ``micro_batch_tokens``: every layer's (about
  (8 h + 4 i) values a token) without activation checkpointing, or each layer's input
  plus one layer's worth with it; and the vocab projection, chunked in 2048 tokens;
- the rollout: vLLM's share of the GPU (``rollout.gpu_memory_utilization``, weights and
  KV cache) while it generates — it sleeps during the updates, so the peak is the larger
  of the update phase and the rollout phase, not their sum; or the hf sampler's KV cache
  (and, sharded, its whole copy of the student in the compute dtype, which it keeps
  between rollouts, so it counts in the update phase too).

The estimate is checked against measured peaks on the CPU (``tests/trainer/test_plan.py``).
It has not been checked on a GPU yet: ``bench/gpu_smoke.sh`` is written to, and has not
run on one (docs/benchmarks.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainer.config import TrainConfig

GIB = 1024**3
HEAD_CHUNK_TOKENS = 2048  # trainer.models: rows of the vocab projection at once
RUNTIME_OVERHEAD_GB = 2.5  # CUDA context, NCCL buffers, allocator slack (0 on CPU)
# parallel.gather: auto keeps models gathered (faster) only with 15% to spare, the error
# the planner allows itself; on the CPU it is within 30% of measured peaks
# (tests/trainer/test_plan.py), and it has not yet been measured on a GPU.
AUTO_MARGIN = 0.85

# Shapes of common students (config.json values), for hub ids the web host has not got.
KNOWN: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-0.5B-Instruct": {"hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "vocab_size": 151936, "tie_word_embeddings": True, "attention_bias": True},
    "Qwen/Qwen2.5-1.5B-Instruct": {"hidden_size": 1536, "intermediate_size": 8960,
        "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
        "vocab_size": 151936, "tie_word_embeddings": True, "attention_bias": True},
    "Qwen/Qwen2.5-3B-Instruct": {"hidden_size": 2048, "intermediate_size": 11008,
        "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
        "vocab_size": 151936, "tie_word_embeddings": True, "attention_bias": True},
    "Qwen/Qwen2.5-7B-Instruct": {"hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "vocab_size": 152064, "tie_word_embeddings": False, "attention_bias": True},
    "Qwen/Qwen2.5-14B-Instruct": {"hidden_size": 5120, "intermediate_size": 13824,
        "num_hidden_layers": 48, "num_attention_heads": 40, "num_key_value_heads": 8,
        "vocab_size": 152064, "tie_word_embeddings": False, "attention_bias": True},
    "meta-llama/Llama-3.1-8B-Instruct": {"hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "tie_word_embeddings": False, "attention_bias": False},
}  # fmt: skip
KNOWN |= {k.removesuffix("-Instruct"): v for k, v in KNOWN.items()}


class UnknownModel(ValueError):
    """The model's shape is not known here (no config.json, not in the table)."""


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool
    bias: bool
    head_dim: int = 0

    @classmethod
    def from_config(cls, c: dict[str, Any]) -> Shape:
        heads = int(c["num_attention_heads"])
        return cls(
            hidden=int(c["hidden_size"]),
            intermediate=int(c["intermediate_size"]),
            layers=int(c["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(c.get("num_key_value_heads") or heads),
            vocab=int(c["vocab_size"]),
            tied=bool(c.get("tie_word_embeddings", False)),
            bias=bool(c.get("attention_bias", c.get("model_type") == "qwen2")),
            head_dim=int(c.get("head_dim") or int(c["hidden_size"]) // heads),
        )

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_params(self) -> int:
        h, q = self.hidden, self.heads * self.head_dim
        attn = h * q + 2 * h * self.kv_dim + q * h + ((q + 2 * self.kv_dim) if self.bias else 0)
        return attn + 3 * h * self.intermediate + 2 * h

    def embed_params(self) -> int:
        return self.vocab * self.hidden

    def params(self, head: bool = True) -> int:
        """All parameters (the causal LM; without the LM head: D's backbone)."""
        lm_head = self.embed_params() if head and not self.tied else 0
        return self.layers * self.layer_params() + self.embed_params() + self.hidden + lm_head

    def lora_params(self, r: int, targets: list[str]) -> int:
        h, q, i, kv = self.hidden, self.heads * self.head_dim, self.intermediate, self.kv_dim
        dims = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}  # fmt: skip
        per_layer = sum(r * (a + b) for name, (a, b) in dims.items() if name in targets)
        return self.layers * per_layer


def model_shape(ref: str, download: bool = False) -> Shape:
    """The shape of a model: a local directory's config.json; a hub id's config.json from
    the Hugging Face cache, else the ids known by heart, else, with ``download`` (the
    CLI, never a web request) and where the Hub can be reached, config.json downloaded
    alone. UnknownModel says why none could be read."""
    path = Path(ref) / "config.json"
    if not path.is_file() and is_repo_id(ref):
        path = _hub_config(ref, download) or path
    try:
        if path.is_file():
            return Shape.from_config(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UnknownModel(f"{path}: not a causal LM config.json the planner reads ({e})") from e
    if ref in KNOWN:
        return Shape.from_config(KNOWN[ref])
    raise UnknownModel(
        f"the planner does not know the shape of {ref!r}: it is not a local model directory, "
        "its config.json is not in the Hugging Face cache and could not be downloaded "
        "(offline, or no such repository); download it first "
        f"(huggingface-cli download {ref} config.json) or use one of "
        f"{', '.join(sorted(KNOWN))}"
    )


def is_repo_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "/", "~"))


def _hub_config(repo_id: str, download: bool) -> Path | None:
    """config.json of a hub model: from the cache, else downloaded alone (online only)."""
    import os

    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    cached = try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return Path(cached)
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")
    if offline or not download:
        return None
    try:
        return Path(hf_hub_download(repo_id, "config.json"))
    except Exception:  # no such repository, gated, or the Hub unreachable
        return None


@dataclass
class Plan:
    """Per-GPU memory, part by part (GiB), and whether it fits."""

    nodes: int
    gpus_per_node: int
    gpu_memory_gb: float
    parts: dict[str, float] = field(default_factory=dict)
    rollout_gb: float = 0.0
    overhead_gb: float = 0.0
    advice: str = ""
    gather: str = "layer"  # parallel.gather as resolved (auto: model where that fits)
    # vLLM's own budget (rollout.backend: vllm): its share of the GPU, and what must fit
    # in it before any KV cache block is left (``vllm_parts``, GiB).
    vllm_share_gb: float = 0.0
    vllm_parts: dict[str, float] = field(default_factory=dict)

    @property
    def vllm_fits(self) -> bool:
        return not self.vllm_parts or sum(self.vllm_parts.values()) <= self.vllm_share_gb

    @property
    def processes(self) -> int:
        return self.nodes * max(self.gpus_per_node, 1)

    @property
    def update_gb(self) -> float:
        return sum(self.parts.values()) + self.overhead_gb

    @property
    def resident_gb(self) -> float:
        """What stays on the GPU while vLLM generates: the sharded model states."""
        return sum(v for k, v in self.parts.items() if k.startswith(RESIDENT)) + self.overhead_gb

    @property
    def peak_gb(self) -> float:
        return max(self.update_gb, self.resident_gb + self.rollout_gb)

    @property
    def fits(self) -> bool:
        return self.peak_gb <= self.gpu_memory_gb and self.vllm_fits

    def table(self) -> str:
        rows = [(name, gb) for name, gb in self.parts.items()]
        rows += [("runtime overhead (CUDA context, NCCL, allocator)", self.overhead_gb)]
        width = max(len(n) for n, _ in rows) + 2
        lines = [
            f"per-GPU memory on {self.nodes} node(s) x {self.gpus_per_node} GPU(s) "
            f"of {self.gpu_memory_gb:g} GB ({self.processes} process(es) share the weights)",
            "",
        ]
        lines += [f"  {n:<{width}}{gb:8.2f} GB" for n, gb in rows]
        lines += [
            f"  {'update phase':<{width}}{self.update_gb:8.2f} GB",
            f"  {'rollout phase (resident + rollout)':<{width}}"
            f"{self.resident_gb + self.rollout_gb:8.2f} GB",
            f"  {'peak':<{width}}{self.peak_gb:8.2f} GB",
        ]
        if self.vllm_parts:
            lines += ["", f"  vLLM's share (gpu_memory_utilization): {self.vllm_share_gb:.2f} GB"]
            lines += [f"    {n:<{width - 2}}{gb:8.2f} GB" for n, gb in self.vllm_parts.items()]
            need = sum(self.vllm_parts.values())
            lines.append(f"    {'needed before any KV cache':<{width - 2}}{need:8.2f} GB")
        lines += ["", "fits" if self.fits else f"does not fit: {self.advice}"]
        return "\n".join(lines)

    def vllm_problem(self) -> str:
        """Why vLLM's engine could not be built in its share, or ""."""
        if self.vllm_fits:
            return ""
        need = sum(self.vllm_parts.values())
        return (
            f"vLLM's share ({self.vllm_share_gb:.1f} GB, rollout.gpu_memory_utilization of "
            f"{self.gpu_memory_gb:g} GB) is less than its weights, profiling and one "
            f"request's KV cache ({need:.1f} GB): vLLM would stop with \"No available "
            'memory for the cache blocks"'
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "gpus_per_node": self.gpus_per_node,
            "gpu_memory_gb": self.gpu_memory_gb,
            "parts_gb": {k: round(v, 3) for k, v in self.parts.items()},
            "overhead_gb": round(self.overhead_gb, 3),
            "rollout_gb": round(self.rollout_gb, 3),
            "update_gb": round(self.update_gb, 3),
            "peak_gb": round(self.peak_gb, 3),
            "fits": self.fits,
            "advice": self.advice,
            "gather": self.gather,
            "vllm_share_gb": round(self.vllm_share_gb, 3),
            "vllm_parts_gb": {k: round(v, 3) for k, v in self.vllm_parts.items()},
        }


RESIDENT = "resident: "


def _bytes(dtype: str, device: str) -> int:
    if dtype == "auto":
        return 4 if device == "cpu" else 2
    return 4 if dtype == "float32" else 2


def estimate(
    cfg: TrainConfig,
    shape: Shape,
    nodes: int,
    gpus_per_node: int,
    gpu_memory_gb: float,
    device: str = "cuda",
) -> Plan:
    """The per-GPU plan of ``cfg`` (without advice; see ``plan``)."""
    if cfg.parallel.gather == "auto":  # keep models gathered where that fits
        hardware = (shape, nodes, gpus_per_node, gpu_memory_gb, device)
        by_layer = estimate(_gather(cfg, "layer"), *hardware)
        if by_layer.processes == 1:  # nothing sharded
            return by_layer
        kept = estimate(_gather(cfg, "model"), *hardware)
        return kept if kept.peak_gb <= AUTO_MARGIN * gpu_memory_gb else by_layer
    plan = Plan(nodes, gpus_per_node, gpu_memory_gb, gather=cfg.parallel.gather)
    world = plan.processes
    sharded = world > 1
    compute = _bytes(cfg.dtype, device)
    offload = cfg.parallel.cpu_offload and sharded
    gad = cfg.method == "gad"

    def states(params: int) -> tuple[float, float]:
        """(trainable bytes, frozen bytes) of one trainable model, whole."""
        if cfg.lora is None:
            return 16.0 * params, 0.0
        adapters = shape.lora_params(cfg.lora.r, list(cfg.lora.target_modules))
        return 16.0 * adapters, 4.0 * params

    resident = 0.0 if offload else 1.0  # CPU offload keeps the shards in host memory
    how = f"sharded over {world}" if sharded else "whole"
    g_train, g_frozen = states(shape.params())
    parts = {f"{RESIDENT}G weights, gradients, AdamW (fp32, {how})": resident * g_train / world}
    if g_frozen:
        parts[f"{RESIDENT}G frozen base (LoRA; fp32, {how})"] = resident * g_frozen / world
    if gad:
        d_train, d_frozen = states(shape.params(head=False))
        parts[f"{RESIDENT}D weights, gradients, AdamW (fp32, {how})"] = (
            resident * (d_train + d_frozen) / world
        )
        if cfg.gad.kl_coef > 0:
            parts[f"{RESIDENT}KL reference ({'bf16' if compute == 2 else 'fp32'}, {how})"] = (
                resident * compute * shape.params() / world
            )
    if sharded:
        layer = shape.layer_params()
        root = shape.embed_params() * (1 if shape.tied else 2)
        if plan.gather == "model":  # the biggest model (G) whole through its backward
            parts["gathered model, forward to backward (FSDP, gather: model)"] = (
                shape.params() * compute + 2 * layer * 4
            )
            if gad and cfg.gad.kl_coef > 0:  # beside it, the reference gathers by layer
                parts["the KL reference's gathered layers and root (FSDP)"] = (
                    2 * layer + root
                ) * compute
        else:
            parts["gathered layers and their gradients (FSDP)"] = 2 * layer * (compute + 4)
            parts["gathered embeddings and LM head"] = root * compute
    elif compute == 2:  # autocast's bf16 copies of the weights in a forward
        parts["autocast weight copies"] = 2.0 * shape.params()
    if sharded and cfg.rollout.backend == "hf":  # kept between rollouts, not only in them
        parts[f"{RESIDENT}hf sampler's copy of G ({'bf16' if compute == 2 else 'fp32'}, whole)"] = (
            compute * shape.params()
        )
    if sharded or compute == 4:
        parts["activations of one micro-batch"] = _activations(cfg, shape, compute)
    else:
        # One process: fp32 weights under autocast. Only the matmuls run in bf16; the
        # residual stream, the norms and what autograd keeps of them stay fp32.
        parts["activations of one micro-batch (fp32 residual under autocast)"] = _activations(
            cfg, shape, 4
        )
    tokens = min(cfg.micro_batch_tokens, HEAD_CHUNK_TOKENS)
    parts["vocab projection (one 2048-token chunk)"] = 3.0 * tokens * shape.vocab * 4
    plan.parts = {k: v / GIB for k, v in parts.items()}
    plan.overhead_gb = RUNTIME_OVERHEAD_GB if device != "cpu" else 0.0
    if cfg.rollout.backend == "vllm":
        plan.rollout_gb = cfg.rollout.gpu_memory_utilization * gpu_memory_gb
        plan.vllm_share_gb = plan.rollout_gb
        plan.vllm_parts = _vllm_parts(cfg, shape, compute)
    elif gad or cfg.method == "seqkd":
        seqs = cfg.rollout.generation_batch_size
        if cfg.method == "seqkd":  # samples only for the record: one prompt's group
            seqs = min(seqs, cfg.group_size)
        length = cfg.max_prompt_tokens + cfg.max_response_tokens
        kv = 2 * shape.layers * shape.kv_dim * compute * seqs * length
        plan.rollout_gb = kv / GIB  # sharded, on the copy counted above
    return plan


VLLM_PROFILE_TOKENS = 8192  # the batch vLLM profiles its activations with (rough)
VLLM_PROFILE_SEQS = 256  # sequences whose logits its sampler holds (max_num_seqs)
VLLM_NON_TORCH_GB = 1.0  # CUDA graphs and memory outside torch's allocator (rough)


def _vllm_parts(cfg: TrainConfig, shape: Shape, compute: int) -> dict[str, float]:
    """What vLLM (0.32) must hold inside its share before one KV cache block is left:
    it sizes the KV cache as the requested memory (``gpu_memory_utilization x total``)
    less what is not KV cache (weights, profiling peak, non-torch memory)
    (``vllm/v1/worker/gpu_worker.py`` L535, L740-744) and stops when that is <= 0 or below
    one request of ``max_model_len`` (``vllm/v1/core/kv_cache_utils.py`` L1003-1040). Weights and activations are split
    ``rollout.tensor_parallel_size`` ways; the profiling figures are rough."""
    tp = cfg.rollout.tensor_parallel_size
    length = cfg.max_prompt_tokens + cfg.max_response_tokens
    activations = VLLM_PROFILE_TOKENS * (4 * shape.hidden + 2 * shape.intermediate) * compute
    logits = VLLM_PROFILE_SEQS * shape.vocab * 4
    return {
        f"weights (1/{tp} of the model)": shape.params() * compute / tp / GIB,
        "profiling peak (rough)": (activations / tp + logits) / GIB,
        "CUDA graphs and non-torch memory (rough)": VLLM_NON_TORCH_GB,
        f"one request's KV cache ({length} tokens)": (
            2 * shape.layers * shape.kv_dim * compute * length / tp / GIB
        ),
    }


def _gather(cfg: TrainConfig, mode: str) -> TrainConfig:
    return replace(cfg, parallel=replace(cfg.parallel, gather=mode))


def keeps_gathered(cfg: TrainConfig, world: int, memory_gb: float, device: str) -> bool:
    """Whether a run of ``cfg`` on ``world`` processes with ``memory_gb`` each keeps its
    sharded models gathered from a forward to its backward (``parallel.gather``; for
    ``auto``, the planner's answer, 'layer' for a model whose shape it does not know)."""
    if cfg.parallel.gather != "auto":
        return cfg.parallel.gather == "model"
    try:
        shape = model_shape(cfg.student)
    except UnknownModel:
        return False
    return estimate(cfg, shape, 1, world, memory_gb, device).gather == "model"


def _activations(cfg: TrainConfig, shape: Shape, compute: int) -> float:
    t, h, i = cfg.micro_batch_tokens, shape.hidden, shape.intermediate
    per_layer = t * (8 * h + 4 * i) * compute  # the values autograd keeps for one layer
    if cfg.gradient_checkpointing:
        return shape.layers * t * h * compute + per_layer
    return shape.layers * per_layer


def plan(
    cfg: TrainConfig,
    nodes: int | None = None,
    gpus_per_node: int | None = None,
    gpu_memory_gb: float = 80.0,
    shape: Shape | None = None,
    device: str = "cuda",
) -> Plan:
    """The plan, with the smallest change that would make it fit when it does not."""
    nodes = nodes or cfg.nodes
    gpus = gpus_per_node if gpus_per_node is not None else cfg.gpus_per_node
    shape = shape or model_shape(cfg.student)
    result = estimate(cfg, shape, nodes, gpus, gpu_memory_gb, device)
    if not result.fits:
        result.advice = _advice(cfg, shape, nodes, gpus, gpu_memory_gb, device)
        if result.vllm_problem():
            result.advice = f"{result.vllm_problem()}; {result.advice}"
    return result


def _advice(
    cfg: TrainConfig, shape: Shape, nodes: int, gpus: int, memory: float, device: str
) -> str:
    """The smallest change that fits: one change if one does, else changes added in order
    (checkpointing, micro-batch, more GPUs, CPU offload, LoRA) until the plan fits."""

    def fits(c: Candidate) -> bool:
        return estimate(c[0], shape, c[1], c[2], memory, device).fits

    start: Candidate = (cfg, nodes, gpus)
    for text, candidate in _options(start, shape, memory, device):  # one change
        if fits(candidate):
            return text
    # Several: the config's own knobs first (cheap), then more or other hardware.
    applied: list[str] = []
    current = start
    for _ in range(8):
        options = _options(current, shape, memory, device)
        tweaks = [o for o in options if o[0].startswith(TWEAKS)]
        for text, candidate in options if not tweaks else tweaks:
            if fits(candidate):
                return "; ".join([*applied, text])
        if not options:
            break
        text, current = (tweaks or options)[0]
        applied.append(text)
    return "no change fits: a smaller student, or GPUs with more memory"


TWEAKS = ("set parallel.gather", "set gradient_checkpointing", "lower ")


def _options(c: Candidate, shape: Shape, memory: float, device: str) -> list[tuple[str, Candidate]]:
    return [o for o in _changes(*c, shape, memory, device) if o is not None]


Candidate = tuple[TrainConfig, int, int]


def _changes(
    cfg: TrainConfig, nodes: int, gpus: int, shape: Shape, memory: float, device: str
) -> list[tuple[str, Candidate] | None]:
    """Candidate changes in order of preference, each the best of its kind."""
    from trainer.config import LoraConfig

    def fits(c: Candidate) -> bool:
        return estimate(c[0], shape, c[1], c[2], memory, device).fits

    out: list[tuple[str, Candidate] | None] = []
    if cfg.parallel.gather == "model" and nodes * max(gpus, 1) > 1:
        out.append(("set parallel.gather: layer", (_gather(cfg, "layer"), nodes, gpus)))
    if not cfg.gradient_checkpointing:
        out.append(("set gradient_checkpointing: true",
                    (replace(cfg, gradient_checkpointing=True), nodes, gpus)))  # fmt: skip
    budgets = [b for b in (8192, 4096, 2048) if b < cfg.micro_batch_tokens]
    tries = [(replace(cfg, micro_batch_tokens=b), nodes, gpus) for b in budgets]
    best = next((c for c in tries if fits(c)), tries[-1] if tries else None)
    out.append(
        (f"lower micro_batch_tokens to {best[0].micro_batch_tokens}", best) if best else None
    )
    if cfg.rollout.backend == "hf" and cfg.rollout.generation_batch_size > 8:
        sizes = [b for b in (32, 16, 8) if b < cfg.rollout.generation_batch_size]
        gens = [(replace(cfg, rollout=replace(cfg.rollout, generation_batch_size=b)), nodes, gpus)
                for b in sizes]  # fmt: skip
        pick = next((c for c in gens if fits(c)), gens[-1])
        size = pick[0].rollout.generation_batch_size
        out.append((f"lower rollout.generation_batch_size to {size}", pick))
    if cfg.rollout.backend == "vllm":
        # vLLM's own share: its weights split over more GPUs, or a larger share.
        world = nodes * max(gpus, 1)
        tps = [t for t in (2, 4, 8) if t > cfg.rollout.tensor_parallel_size
               and t <= max(gpus, 1) and world % t == 0]  # fmt: skip
        sharded = [(replace(cfg, rollout=replace(cfg.rollout, tensor_parallel_size=t)), nodes, gpus)
                   for t in tps]  # fmt: skip
        split = next((c for c in sharded if fits(c)), None)
        if split is not None:
            out.append((f"set rollout.tensor_parallel_size: {split[0].rollout.tensor_parallel_size}",
                        split))  # fmt: skip
        shares = [round(u / 100, 2) for u in range(25, 95, 5)
                  if u / 100 > cfg.rollout.gpu_memory_utilization]  # fmt: skip
        larger = [(replace(cfg, rollout=replace(cfg.rollout, gpu_memory_utilization=u)), nodes, gpus)
                  for u in shares]  # fmt: skip
        share = next((c for c in larger if fits(c)), None)
        if share is not None:
            out.append((f"raise rollout.gpu_memory_utilization to "
                        f"{share[0].rollout.gpu_memory_utilization:g}", share))  # fmt: skip
        if cfg.rollout.gpu_memory_utilization > 0.2:
            rollout = replace(cfg.rollout, gpu_memory_utilization=0.2)
            out.append(("lower rollout.gpu_memory_utilization to 0.2",
                        (replace(cfg, rollout=rollout), nodes, gpus)))  # fmt: skip
    # More GPUs: the fewest nodes, then the fewest GPUs (nodes are the scarce unit).
    layouts = sorted(
        {(n, g) for n in range(nodes, nodes + 9) for g in {gpus, 2, 4, 8} if g >= gpus}
        - {(nodes, gpus)}
    )
    bigger = next(((cfg, n, g) for n, g in layouts if fits((cfg, n, g))), None)
    if bigger is not None:
        out.append((f"run on {bigger[1]} node(s) of {bigger[2]} GPUs "
                    f"(nodes: {bigger[1]}, gpus_per_node: {bigger[2]})", bigger))  # fmt: skip
    elif gpus < 8:
        out.append(("run on 8 GPUs per node (gpus_per_node: 8)", (cfg, nodes, 8)))
    if not cfg.parallel.cpu_offload:
        offload = replace(cfg, parallel=replace(cfg.parallel, cpu_offload=True))
        out.append(("set parallel.cpu_offload: true (slower steps)", (offload, nodes, gpus)))
    if cfg.lora is None:
        out.append(("train LoRA adapters (lora: {r: 16}) instead of the full model",
                    (replace(cfg, lora=LoraConfig()), nodes, gpus)))  # fmt: skip
    return out


def hardware_table(
    students: list[str], setups: list[tuple[int, int, float]], base: TrainConfig
) -> str:
    """Markdown: which student sizes fit which hardware (full fine-tune and LoRA), each
    with its least memory (``parallel.gather: layer``)."""
    from trainer.config import LoraConfig

    base = _gather(base, "layer")
    head = "| student | " + " | ".join(f"{n}×{g}×{m:g} GB" for n, g, m in setups) + " |"
    lines = [head, "|---" * (len(setups) + 1) + "|"]
    for student in students:
        cells = []
        for nodes, gpus, memory in setups:
            full = plan(replace(base, student=student), nodes, gpus, memory)
            lora = plan(replace(base, student=student, lora=LoraConfig()), nodes, gpus, memory)
            cell = f"full: {'fits' if full.fits else 'no'} ({full.peak_gb:.0f} GB)"
            cell += f"; LoRA: {'fits' if lora.fits else 'no'} ({lora.peak_gb:.0f} GB)"
            cells.append(cell)
        lines.append(f"| {student} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- GPU-hours

H100_BF16_FLOPS = 989e12  # dense bf16 of one H100 SXM (NVIDIA's datasheet)
TRAIN_MFU = 0.30  # share of it a training step uses, a rough figure for FSDP at this size
DECODE_MFU = 0.05  # sampling is memory-bound: a far smaller share


def rough_gpu_hours(
    cfg: TrainConfig, shape: Shape, prompts: int, prompt_tokens: float, answer_tokens: float
) -> dict[str, Any]:
    """A stated rough figure of a job's GPU-hours, from FLOPs (no step time is measured
    before a job runs): 6·P per trained token, 2·P per scored or sampled one, the
    discriminator the student's size; training at TRAIN_MFU and sampling at DECODE_MFU
    of an H100's bf16. ``prompt_tokens``/``answer_tokens``: averages per prompt."""
    p = shape.params()
    seq = prompt_tokens + answer_tokens
    n = cfg.group_size
    train = sample = 0.0
    if cfg.method == "seqkd":
        train = cfg.seqkd.epochs * prompts * 6 * p * seq
    else:
        warm = cfg.warmup.epochs * prompts
        gad = cfg.gad.epochs * prompts
        # Warmup: G's SFT on the teacher's answer, D on the teacher's and N samples.
        train += warm * (6 * p * seq * int(cfg.warmup.generator))
        train += warm * 6 * p * seq * (n + 1) * int(cfg.warmup.discriminator)
        # Adversarial: G's policy update on N samples (plus old and reference log-probs),
        # D's update and rewards on N samples and the teacher's answer.
        train += gad * n * seq * p * (6 + 2 + (2 if cfg.gad.kl_coef else 0))
        train += gad * (n + 1) * seq * p * (6 + 2)
        sample = (warm * int(cfg.warmup.discriminator) + gad) * n * answer_tokens * 2 * p
    seconds = train / (H100_BF16_FLOPS * TRAIN_MFU) + sample / (H100_BF16_FLOPS * DECODE_MFU)
    return {
        "gpu_hours": float(f"{seconds / 3600:.3g}"),
        "basis": (
            f"rough: {train + sample:.2e} FLOPs ({p / 1e9:.2f}B-parameter student, "
            f"~{seq:.0f} tokens per sequence, {prompts} prompts) at "
            f"{TRAIN_MFU:.0%} (training) and {DECODE_MFU:.0%} (sampling) of an H100's "
            "989 bf16 TFLOPS; no step time is measured before a job runs"
        ),
    }
