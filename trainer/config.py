"""Training configuration: validated dataclasses with the paper's defaults.

One source of truth for the CLI (`run --config FILE --set a.b=c`), the web app's launch form
(it introspects `fields()` and each field's `metadata["help"]`) and every checkpoint (which
stores `to_dict(config)`). Validation names the dotted key and the allowed range; unknown
keys are rejected with the list of valid ones.

Field metadata keys: `help` (text), `choices` (allowed values), `min` / `max` (inclusive),
`gt` (exclusive lower bound).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trainer.errors import BadInput

# The paper's response length cap (GAD.md "Defaults", max response tokens; its evaluation
# answers too): one value for every default that cuts or asks for an answer, in training,
# teacher collection, generation and the judge's reference answers.
MAX_RESPONSE_TOKENS = 1536


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with help text and validation metadata."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def _sub(cls: type, help: str) -> Any:
    return field(default_factory=cls, metadata={"help": help})


@dataclass
class WarmupConfig:
    epochs: int = _f(1, "Epochs of the warmup stage (G: SFT on teacher answers; D: BT).", min=0)
    generator: bool = _f(True, "Warm up the generator with SFT on teacher answers.")
    discriminator: bool = _f(True, "Warm up the discriminator on teacher vs G's samples.")
    d_only_steps: int = _f(10, "First warmup steps in which only D is updated.", min=0)
    lr: float = _f(1.0e-6, "Generator learning rate during warmup.", gt=0.0, max=1.0)


@dataclass
class GadConfig:
    epochs: int = _f(2, "Epochs of the adversarial (GAD) stage.", min=0)
    lr: float = _f(1.0e-6, "Generator learning rate in the adversarial stage.", gt=0.0, max=1.0)
    kl_coef: float = _f(0.001, "Beta of the k3 KL to the warmed-up student (0 disables).", min=0.0)
    clip_low: float = _f(0.2, "PPO ratio clip below 1.", min=0.0, max=1.0)
    clip_high: float = _f(0.2, "PPO ratio clip above 1.", min=0.0)
    dual_clip: float = _f(3.0, "Dual clip constant c for negative advantages (> 1).", gt=1.0)
    std_norm: bool = _f(True, "Divide group advantages by the group's reward std.")


@dataclass
class SeqkdConfig:
    epochs: int = _f(3, "Epochs of SFT on teacher answers (SeqKD baseline).", min=0)
    lr: float = _f(5.0e-6, "Learning rate of the SeqKD baseline.", gt=0.0, max=1.0)


@dataclass
class DiscConfig:
    loss: str = _f(
        "bradley_terry",
        "Discriminator loss: bradley_terry (paper) or cross_entropy (Table 4 ablation).",
        choices=["bradley_terry", "cross_entropy"],
    )
    update: str = _f(
        "on_policy",
        "on_policy (GAD) or frozen: the paper's off-policy discriminator (Fig. 6): D trains "
        "in the warmup exactly as in GAD, then stops learning while G trains against it.",
        choices=["on_policy", "frozen"],
    )
    frozen_epochs: int = _f(
        0,
        "update: frozen only, a variant of ours (not the paper's): extra epochs of D alone on "
        "the warmed-up student's samples before it is frozen. 0: the paper's ablation.",
        min=0,
    )
    lr: float = _f(1.0e-6, "Discriminator learning rate.", gt=0.0, max=1.0)


@dataclass
class OptimConfig:
    weight_decay: float = _f(0.01, "AdamW weight decay (G and D).", min=0.0)
    grad_clip: float = _f(0.2, "Gradient-norm clip for G and D (0 disables).", min=0.0)


@dataclass
class RolloutConfig:
    backend: str = _f(
        "hf", "Sampler: hf (transformers generate) or vllm (GPU).", choices=["hf", "vllm"]
    )
    generation_batch_size: int = _f(
        64, "hf backend: sequences per generate call (bounds KV-cache memory).", min=1
    )
    gpu_memory_utilization: float = _f(
        0.3, "vllm backend: fraction of GPU memory for vLLM.", gt=0.0, max=1.0
    )
    tensor_parallel_size: int = _f(
        1,
        "vllm backend: GPUs per colocated engine (a divisor of gpus_per_node); each group "
        "of that many ranks samples its prompts together.",
        min=1,
    )


@dataclass
class ParallelConfig:
    cpu_offload: bool = _f(
        False,
        "FSDP2: keep sharded weights, gradients and optimizer state in host memory "
        "(slower steps; for a model whose state does not fit the GPUs).",
    )
    gather: str = _f(
        "auto",
        "FSDP2: 'layer' gathers each decoder layer for its forward and again for its "
        "backward (least memory); 'model' keeps a model's gathered layers from its forward "
        "to its backward (one all-gather less per micro-batch; the whole model in the "
        "compute dtype during a backward); 'auto' is 'model' where the memory planner says "
        "that fits the process's GPU (or host memory on a CPU), else 'layer'.",
        choices=["auto", "layer", "model"],
    )


@dataclass
class LoraConfig:
    r: int = _f(16, "LoRA rank.", min=1)
    alpha: int = _f(32, "LoRA alpha.", min=1)
    dropout: float = _f(0.0, "LoRA dropout.", min=0.0, max=1.0)
    target_modules: list[str] = _f(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "Module names that get LoRA adapters.",
    )


@dataclass
class TrainConfig:
    method: str = _f("gad", "gad or seqkd.", choices=["gad", "seqkd"])
    student: str = _f("", "Student model: a local HF directory or a hub id.", required=True)
    discriminator: str | None = _f(
        None, "Discriminator init: null = from the student's starting weights, or a path."
    )
    train_file: str = _f("prompts.jsonl", "Prompt file (JSONL, CSV or Parquet).", required=True)
    output_dir: str = _f("runs/x", "Run directory (config, metrics, checkpoints).", required=True)
    seed: int = _f(0, "Random seed (data order, sampling, init of D's head).", min=0)
    device: str = _f("auto", "auto, cpu or cuda.", choices=["auto", "cpu", "cuda"])
    dtype: str = _f(
        "auto",
        "auto (bf16 on cuda, fp32 on cpu), float32, bfloat16 or float16.",
        choices=["auto", "float32", "bfloat16", "float16"],
    )
    batch_size: int = _f(256, "Prompts per optimizer step.", min=1)
    group_size: int = _f(8, "Student samples N per prompt (GRPO group).", min=2)
    temperature: float = _f(0.8, "Sampling temperature of the student.", gt=0.0)
    top_p: float = _f(1.0, "Nucleus sampling p.", gt=0.0, max=1.0)
    max_prompt_tokens: int = _f(2048, "Longer prompts are cut from the left.", min=1)
    max_response_tokens: int = _f(
        MAX_RESPONSE_TOKENS, "Student samples and teacher answers are cut here.", min=1
    )
    max_steps: int | None = _f(None, "Stop after this many optimizer steps (smoke runs).", min=1)
    save_every: int = _f(50, "Checkpoint interval in steps.", min=1)
    sample_every: int = _f(50, "Write samples.jsonl every this many steps.", min=1)
    micro_batch_tokens: int = _f(
        16384, "Gradient-accumulation bound (padded tokens per forward); memory stays flat.", min=1
    )
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    nodes: int = _f(1, "Nodes the job spans (each runs gpus_per_node trainer processes).", min=1)
    gpus_per_node: int = _f(1, "GPUs (trainer processes) per node; 0 runs on the CPU.", min=0)
    parallel: ParallelConfig = _sub(ParallelConfig, "Sharding (FSDP2) across the processes.")
    export_dtype: str = _f(
        "bfloat16",
        "dtype of the exported HF student and discriminator (resume state stays fp32).",
        choices=["float32", "bfloat16", "float16"],
    )
    keep_last: int = _f(
        2, "Checkpoints that keep their optimizer state (the ones a run resumes from).", min=1
    )
    keep_weights: str = _f(
        "all",
        "all: every checkpoint keeps its exported weights; final_and_marked: only the last "
        "and the marked ones (the KL reference, or a KEEP file).",
        choices=["all", "final_and_marked"],
    )
    warmup: WarmupConfig = _sub(WarmupConfig, "Warmup stage (GAD only).")
    gad: GadConfig = _sub(GadConfig, "Adversarial stage.")
    seqkd: SeqkdConfig = _sub(SeqkdConfig, "SeqKD baseline.")
    disc: DiscConfig = _sub(DiscConfig, "Discriminator.")
    optim: OptimConfig = _sub(OptimConfig, "Optimizer (AdamW, constant lr).")
    rollout: RolloutConfig = _sub(RolloutConfig, "Sampling backend.")
    lora: LoraConfig | None = field(
        default=None,
        metadata={"help": "null for full fine-tuning, or {r, alpha, target_modules}."},
    )
    resume: str = _f("auto", "auto (latest checkpoint in output_dir), never, or a checkpoint path.")
    report_to: list[str] = _f(
        [],
        "Trackers that also get the metrics: tensorboard (OUT/tensorboard), mlflow "
        "(MLFLOW_TRACKING_URI, else OUT/mlruns), wandb (WANDB_* variables).",
    )


# ---------------------------------------------------------------------------- introspection


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nested_class(tp: Any) -> type | None:
    """The config dataclass inside `tp` (`X` or `X | None`), else None."""
    for t in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(t):
            return t  # type: ignore[return-value]
    return None


def field_specs(cls: type = TrainConfig, prefix: str = "") -> list[dict[str, Any]]:
    """Flat list of every leaf field for building forms: key, type, default, help, limits."""
    specs: list[dict[str, Any]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        sub = _nested_class(hints[f.name])
        if sub is not None:
            specs.extend(field_specs(sub, key + "."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        else:
            assert f.default_factory is not dataclasses.MISSING  # every field has a default
            default = f.default_factory()
        specs.append({"key": key, "type": hints[f.name], "default": default, **f.metadata})
    return specs


def valid_keys(cls: type = TrainConfig, prefix: str = "") -> list[str]:
    return [s["key"] for s in field_specs(cls, prefix)]


# ---------------------------------------------------------------------------- validation


LARGEST_INT = 2**63 - 1


def _check_type(key: str, value: Any, tp: Any) -> tuple[Any, str | None]:
    """Coerce `value` to type `tp` where lossless (int -> float); return (value, error)."""
    args = typing.get_args(tp)
    if type(None) in args:  # Optional[X]
        if value is None:
            return None, None
        tp = next(a for a in args if a is not type(None))
    elif value is None:
        return None, f"{key}: must not be null"
    origin = typing.get_origin(tp)
    if origin is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value, None if ok else f"{key}: must be a list of strings (got {value!r})"
    if tp is bool:
        ok = isinstance(value, bool)
        return value, None if ok else f"{key}: must be true or false (got {value!r})"
    if tp is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return value, f"{key}: must be an integer (got {_shown(value)})"
        # Past int64 a count or a seed means nothing here, and it overflows the planner's
        # floats, torch's int64 tensors and a database's bigint.
        if abs(value) > LARGEST_INT:
            return value, f"{key}: {_shown(value)} is out of range (at most 2^63 - 1)"
        return value, None
    if tp is float:
        number: float | None = None
        try:
            if isinstance(value, int | float) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str):  # PyYAML reads "1e-6" (no dot) as a string
                number = float(value)
        except (ValueError, OverflowError):
            number = None
        if number is None:
            return value, f"{key}: must be a number (got {_shown(value)})"
        if not math.isfinite(number):  # NaN or infinity: no sampling or step is made of it
            return value, f"{key}: must be a finite number (got {_shown(value)})"
        return number, None
    if tp is str:
        ok = isinstance(value, str)
        return value, None if ok else f"{key}: must be a string (got {value!r})"
    return value, None


def _shown(value: Any) -> str:
    """The value for a message, cut short (a 5,000-digit number would fill the page)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_range(key: str, value: Any, meta: dict[str, Any]) -> str | None:
    if value is None:
        return None
    if "choices" in meta and value not in meta["choices"]:
        return f"{key}: must be one of {', '.join(meta['choices'])} (got {value!r})"
    if meta.get("required") and value == "":
        return f"{key}: is required"
    if "min" in meta and value < meta["min"]:
        return f"{key}: must be >= {meta['min']} (got {value!r})"
    if "max" in meta and value > meta["max"]:
        return f"{key}: must be <= {meta['max']} (got {value!r})"
    if "gt" in meta and value <= meta["gt"]:
        return f"{key}: must be > {meta['gt']} (got {value!r})"
    return None


def _build(cls: type, data: Any, prefix: str, errors: list[tuple[str, str]]) -> Any:
    """Build dataclass `cls` from a mapping, appending (key, message) errors."""
    if not isinstance(data, dict):
        errors.append((prefix.rstrip(".") or "<root>", "must be a mapping of keys to values"))
        return cls()
    names = {f.name for f in dataclasses.fields(cls)}
    for k in data:
        if k not in names:
            key = prefix + str(k)
            valid = ", ".join(valid_keys(cls, prefix))
            errors.append((key, f"unknown key {key!r}; valid keys: {valid}"))
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key, value, tp = prefix + f.name, data[f.name], hints[f.name]
        sub = _nested_class(tp)
        if sub is not None:
            kwargs[f.name] = None if value is None else _build(sub, value, key + ".", errors)
            if value is None and sub is not LoraConfig:
                errors.append((key, f"{key}: must be a mapping, not null"))
            continue
        value, err = _check_type(key, value, tp)
        err = err or _check_range(key, value, dict(f.metadata))
        if err:
            errors.append((key, err))
        else:
            kwargs[f.name] = value
    return cls(**kwargs)


def _cross_checks(cfg: TrainConfig) -> list[tuple[str, str]]:
    errors = []
    unknown = [name for name in cfg.report_to if name not in ("tensorboard", "mlflow", "wandb")]
    if unknown:
        errors.append(
            (
                "report_to",
                f"report_to: {', '.join(map(repr, unknown))} is not a tracker; use "
                "tensorboard, mlflow or wandb",
            )
        )
    if cfg.rollout.backend == "vllm" and cfg.temperature > 2:
        # vLLM refuses it (vllm 0.32.0, vllm/sampling_params.py:667)
        errors.append(
            (
                "temperature",
                f"temperature: {cfg.temperature} is above 2, which rollout.backend: vllm "
                "refuses; lower it, or use rollout.backend: hf",
            )
        )
    frozen = cfg.method == "gad" and cfg.disc.update == "frozen"
    if (
        frozen
        and cfg.disc.frozen_epochs < 1
        and not (cfg.warmup.discriminator and cfg.warmup.epochs)
    ):
        errors.append(
            (
                "disc.frozen_epochs",
                "disc.frozen_epochs: disc.update: frozen with no discriminator warmup needs at "
                "least 1 epoch of D training (a frozen, never-trained discriminator gives "
                "random rewards); turn warmup.discriminator on, or set disc.frozen_epochs",
            )
        )
    return errors


def validate_dict(data: dict[str, Any]) -> tuple[TrainConfig | None, list[tuple[str, str]]]:
    """Validate a config mapping; return (config, []) or (None, [(key, message), ...])."""
    errors: list[tuple[str, str]] = []
    cfg = _build(TrainConfig, data, "", errors)
    for key in ("student", "train_file", "output_dir"):
        if isinstance(data, dict) and key not in data:
            errors.append((key, f"{key}: is required"))
    if not errors:
        errors = _cross_checks(cfg)
    return (None, errors) if errors else (cfg, [])


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Like validate_dict but raises BadInput with every problem listed."""
    cfg, errors = validate_dict(data)
    if errors:
        raise BadInput("invalid config: " + "; ".join(msg for _, msg in errors))
    assert cfg is not None
    return cfg


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------- files, overrides


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=c` strings (values parsed as YAML: 3, 1e-6, true, null, [x, y])."""
    data = dict(data)
    for item in overrides:
        if "=" not in item:
            raise BadInput(f"--set {item!r}: expected key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):
            value = raw  # keep strings verbatim (paths with ':' or '#')
        parts = key.strip().split(".")
        node = data
        for p in parts[:-1]:
            child = node.get(p)
            node[p] = dict(child) if isinstance(child, dict) else {}
            node = node[p]
        node[parts[-1]] = value
    return data


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise BadInput(f"cannot read config file {path}: {e.strerror or e}") from e
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise BadInput(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise BadInput(f"config file {path} must be a mapping of keys to values")
    data = apply_overrides(data, overrides or [])
    try:
        return from_dict(data)
    except BadInput as e:
        raise BadInput(f"{path}: {e}") from e


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def parallel_problems(cfg: TrainConfig, processes: int) -> list[tuple[str, str]]:
    """What data parallelism over ``processes`` (one per GPU) needs of a config, as
    (key, message) pairs; empty when it can run (always for one process)."""
    if processes <= 1:
        return []
    problems = []
    if cfg.batch_size % processes:
        problems.append(
            (
                "batch_size",
                f"batch_size: {cfg.batch_size} prompts do not split over {processes} "
                f"processes (one per GPU); use a multiple of {processes}",
            )
        )
    tp = cfg.rollout.tensor_parallel_size
    if cfg.rollout.backend == "vllm" and processes % tp:
        problems.append(
            (
                "rollout.tensor_parallel_size",
                f"rollout.tensor_parallel_size: {tp} does not divide the {processes} "
                "processes; use a divisor of gpus_per_node",
            )
        )
    return problems
