"""torch.distributed (DDP) set-up from the environment `torchrun` provides.

    torchrun --nproc_per_node N -m hldm train --stage all --config train/paper.toml

starts N processes with RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT set;
`init_distributed` joins them with NCCL on CUDA (one GPU per process, by
LOCAL_RANK) or gloo on CPU. Without those variables it is a single process and
every helper below is a no-op, so the training loop reads the same either way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, DistributedSampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # None: not distributed

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.backend is not None


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun described, or return a single-process DistInfo.

    `device` "cpu" forces CPU (and gloo) even where CUDA is present.
    """
    use_cuda = torch.cuda.is_available() and device != "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(device=torch.device("cuda" if use_cuda else "cpu"))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                device_id=dev if use_cuda else None)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Average scalar metrics over ranks (so the logged loss is the global batch's)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    return {k: v / info.world_size for k, v in zip(keys, t.tolist())}


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t)
    return t


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, info: DistInfo):
    """Rank 0's `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def make_sampler(dataset: Dataset, info: DistInfo, seed: int, shuffle: bool = True) -> DistributedSampler:
    """A per-epoch permutation (seeded by seed + epoch), each rank taking its strided share.

    Used with world size 1 too, so one run's batch order is a pure function of
    (seed, epoch), which is what lets a resume skip into the middle of an epoch.
    """
    return DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                              shuffle=shuffle, seed=seed, drop_last=True)


def wrap_ddp(module: nn.Module, info: DistInfo, find_unused: bool = True) -> nn.Module:
    """DDP-wrap the stage objective. Diffusion stages leave parameters unused in some
    steps (the null embedding when no condition is dropped), hence `find_unused`."""
    if not info.enabled:
        return module
    ids = [info.local_rank] if info.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


@torch.no_grad()
def assert_in_sync(model: nn.Module, info: DistInfo) -> None:
    """Raise if the replicas' weights have drifted apart (they must stay bit-identical under DDP)."""
    if not info.enabled:
        return
    total = torch.zeros((), dtype=torch.float64, device=info.device)
    for p in model.parameters():
        total += p.detach().double().sum()
    sums = gather_objects(float(total), info)
    if len(set(sums)) != 1:
        raise RuntimeError(f"DDP replicas out of sync: parameter sums per rank {sums}")
