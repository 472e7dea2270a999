"""Data parallelism: the process group, this process's share of a batch, metric gathers.

One trainer process per GPU, launched by ``torchrun`` (on several nodes, one torchrun per
node with a shared rendezvous). Weights, gradients and optimizer state are sharded by
FSDP2 (``trainer.fsdp``), which also reduces the gradients; this module holds only what
the recipes need around it:

- each rank takes an equal, contiguous share of each batch's prompts (``share``), and
  scales its losses by its share of the *global* batch (token-mean losses divide by the
  global response-token count, ``all_sum`` of the ranks' counts; D's pair-mean loss by
  the world size), so FSDP's summed gradient is the single-process gradient;
- GRPO advantages are per prompt group, and a group never spans ranks;
- metrics are computed from gathered scores and lengths (``gather``, ``gather_list``),
  so ``metrics.jsonl`` reads the same as one process's; only rank 0 writes files
  (metrics, samples, progress) while every rank writes its shard of a checkpoint.

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every function here is the identity and
nothing is initialized: the single-process trainer is unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from trainer.errors import BadInput

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1


_world = World()


def world() -> World:
    return _world


def init(device_name: str) -> World:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL
    on GPUs); each rank takes the GPU of its local rank. A no-op for one process."""
    global _world
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        _world = World()
        return _world
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    die_with_launcher()
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise BadInput(
                f"{size} trainer processes but only {torch.cuda.device_count()} visible "
                "GPU(s): start one process per GPU (torchrun --nproc-per-node)"
            )
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        # Rank 0 exports the student alone while the others wait at a barrier: a large
        # model's export on slow storage outlasts the 10-minute default.
        timeout = timedelta(seconds=int(os.environ.get("GAD_DIST_TIMEOUT_S", "7200")))
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    _world = World(rank, size, local)
    return _world


def die_with_launcher() -> None:
    """A rank whose launcher is gone (its worker killed, the node lost) must not keep
    writing into a run directory that another attempt resumes: be killed with it.
    Called as early as possible in a torchrun rank (the CLI), again by ``init``."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux


def end_process(code: int) -> NoReturn:
    """End a rank after ``shutdown``, skipping Python's teardown: it would destroy the
    communication backend's C++ objects still referenced by sharded modules (their
    device mesh) in an arbitrary order, and gloo's threads sometimes abort the process
    ("terminate called without an active exception") after a run that finished."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def shutdown() -> None:
    global _world
    if dist.is_initialized():
        dist.destroy_process_group()
    _world = World()


def device_for(device: torch.device) -> torch.device:
    """This rank's device: the GPU of its local rank when training on CUDA."""
    if device.type == "cuda" and _world.parallel:
        return torch.device("cuda", _world.local_rank)
    return device


def share(items: Sequence[T]) -> list[T]:
    """This rank's equal share of a batch (the batch size is a multiple of the world)."""
    if not _world.parallel:
        return list(items)
    if len(items) % _world.size:
        raise ValueError(f"a batch of {len(items)} does not split over {_world.size} ranks")
    per = len(items) // _world.size
    return list(items[_world.rank * per : (_world.rank + 1) * per])


def _comm_device() -> torch.device:
    return (
        torch.device("cuda", _world.local_rank)
        if dist.get_backend() == "nccl"
        else torch.device("cpu")
    )


def all_sum(values: Tensor) -> Tensor:
    """Element-wise sum over ranks (a new tensor on the input's device)."""
    if not _world.parallel:
        return values
    out = values.detach().to(_comm_device(), torch.float64).clone()
    dist.all_reduce(out)
    return out.to(values.device, values.dtype)


def all_max(value: float) -> float:
    if not _world.parallel:
        return value
    out = torch.tensor([value], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return float(out.item())


def gather(values: Tensor) -> Tensor:
    """Concatenate equal-shaped tensors of every rank along dim 0, in rank order."""
    if not _world.parallel:
        return values
    local = values.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(local) for _ in range(_world.size)]
    dist.all_gather(parts, local)
    return torch.cat(parts).to(values.device)


def gather_list(values: Sequence[T]) -> list[T]:
    """Concatenate small Python lists of every rank (numbers, strings, lists of them), in
    rank order."""
    if not _world.parallel:
        return list(values)
    parts = gather_json(list(values))
    return [v for part in parts for v in part]


def gather_json(value: Any, group: Any = None) -> list[Any]:
    """Every rank's ``value`` (anything JSON can hold), in rank order, through tensor
    collectives: the lengths first, then the padded UTF-8 bytes.

    Never ``all_gather_object``: it unpickles what peers send, so whoever reaches a
    rank's sockets could run code in it (docs/security.md, "Multi-node jobs"); JSON
    decodes to data only."""
    world = dist.get_world_size(group)
    device = _comm_device()
    data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8)
    length = torch.tensor([data.numel()], dtype=torch.int64, device=device)
    lengths = [torch.empty_like(length) for _ in range(world)]
    dist.all_gather(lengths, length, group=group)
    longest = max(int(n.item()) for n in lengths)
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[: data.numel()] = data.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return [
        json.loads(bytes(part[: int(n.item())].cpu().tolist()).decode())
        for part, n in zip(parts, lengths, strict=True)
    ]


def barrier() -> None:
    if _world.parallel:
        dist.barrier()


def sample_seed(seed: int, step: int, position: int) -> int:
    """The seed of one prompt's samples: a function of the run's seed, the step and the
    prompt's position in the *global* batch, never of the rank. A run then samples the
    same answers on 1 or k processes, and a resume onto another GPU count continues it."""
    return seed_of(seed, step, position)


def seed_of(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (not Python's salted hash)."""
    text = "/".join(map(str, parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def global_positions(count: int) -> range:
    """Positions in the global batch of this rank's ``count`` prompts (``share``)."""
    return range(_world.rank * count, (_world.rank + 1) * count)
