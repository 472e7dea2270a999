"""Data parallelism: one trainer process per GPU, launched by ``torchrun``.

Every rank holds a full copy of G and D and takes an equal share of each batch's prompts
(``shard``); a step's gradients are summed over ranks before clipping (``sum_grads``),
and each rank scales its losses by its share of the *global* batch, so the summed
gradient is exactly the single-process gradient of the whole batch:

- token-mean losses (SFT, policy loss, KL) divide by the global response-token count
  (``all_sum`` of the ranks' counts) instead of the local one;
- D's pair-mean loss is a mean over equal shares, so each rank's gradient is scaled by
  ``1 / world size``;
- GRPO advantages are per prompt group and a group never spans ranks.

After the reduction all ranks clip the same gradient and take the same optimizer step,
so their weights stay identical (they start identical: rank 0's are broadcast). Metrics
are computed from gathered scores and lengths, so ``metrics.jsonl`` reads the same as
one process's; only rank 0 writes files (metrics, samples, checkpoints, progress).

Without ``torchrun`` (``WORLD_SIZE`` unset or 1) every function here is the identity and
nothing is initialized: the single-process trainer is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn

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
BUCKET = 25_000_000  # gradient elements per all-reduce


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
        # Rank 0 saves checkpoints alone while the others wait at a barrier: a large
        # model's save on slow storage outlasts the 10-minute default.
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


def shard(items: Sequence[T]) -> list[T]:
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
    """Concatenate small Python lists of every rank, in rank order."""
    if not _world.parallel:
        return list(values)
    parts: list[list[T] | None] = [None] * _world.size
    dist.all_gather_object(parts, list(values))
    filled = cast("list[list[T]]", parts)  # all_gather_object filled every slot
    return [v for part in filled for v in part]


def sum_grads(params: Sequence[nn.Parameter]) -> None:
    """Sum every parameter's gradient over ranks, in flat buckets (one collective per
    ~25M elements rather than one per tensor). A parameter with no gradient on this
    rank counts as zeros, so every rank takes part in the same collectives."""
    if not _world.parallel:
        return
    bucket: list[nn.Parameter] = []
    size = 0
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        if p.numel() >= BUCKET:  # large (an embedding): in place, no copy into a bucket
            dist.all_reduce(p.grad)
            continue
        bucket.append(p)
        size += p.numel()
        if size >= BUCKET:
            _reduce_bucket(bucket)
            bucket, size = [], 0
    if bucket:
        _reduce_bucket(bucket)


def _reduce_bucket(params: list[nn.Parameter]) -> None:
    grads = [cast(Tensor, p.grad) for p in params]  # sum_grads gave every parameter one
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = p.numel()
        g.copy_(flat[offset : offset + n].view_as(g))
        offset += n


def broadcast_params(model: nn.Module) -> None:
    """Rank 0's weights (trainable and frozen) to every rank."""
    if not _world.parallel:
        return
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def barrier() -> None:
    if _world.parallel:
        dist.barrier()


def reseed(seed: int, step: int) -> None:
    """Ranks other than 0 sample with a stream of their own (models are built with the
    same seed everywhere, so D's new head starts identical). Rank 0 keeps the stream a
    checkpoint restores, so a one-process run resumes exactly as before."""
    if _world.parallel and not _world.main:
        torch.manual_seed(hash((seed, step, _world.rank)) & 0x7FFF_FFFF_FFFF_FFFF)
